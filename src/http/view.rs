//! "View" links from the add-on's filed card: a read-only page of one filing, opened in a
//! browser tab without a Google session. The link carries a capability sealed with the
//! master key (tenant, filing, user, expiry); it expires after 30 minutes and answers only
//! while that user is still active.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::filings::{download, read_blob};
use super::AppState;
use crate::error::{AppError, AppResult};
use crate::filing::{self, FilingView};
use crate::tenancy::Tenant;

pub const LINK_TTL_SECS: u64 = 30 * 60;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/view/filings/{id}", get(page))
        .route("/view/filings/{id}/raw", get(raw))
        .route("/view/filings/{id}/attachments/{n}", get(attachment))
}

#[derive(Serialize, Deserialize)]
struct Capability {
    tenant: String,
    filing: String,
    user: String,
    exp: u64,
}

/// `{public_url}/view/filings/{id}?t=…` for `user` of `tenant`.
pub fn filing_link(
    state: &AppState,
    public_url: &str,
    tenant: &str,
    filing: &str,
    user: &str,
) -> String {
    let cap = Capability {
        tenant: tenant.into(),
        filing: filing.into(),
        user: user.into(),
        exp: jsonwebtoken::get_current_timestamp() + LINK_TTL_SECS,
    };
    let token = state
        .catalog
        .seal_link(&serde_json::to_vec(&cap).expect("plain data"));
    format!("{public_url}/view/filings/{filing}?t={token}")
}

#[derive(Deserialize)]
struct LinkQuery {
    t: String,
}

/// The link's `t`; a link without one is a clear problem, not axum's plain-text rejection.
fn link_token(q: LinkQ) -> AppResult<String> {
    q.map(|Query(q)| q.t).map_err(|_| {
        AppError::bad_request(
            "invalid-link",
            "this View link is incomplete (its `t` parameter is missing): open the filing again from Gmail",
        )
    })
}

type LinkQ = Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>;

fn expired() -> AppError {
    AppError::not_found("this link has expired or is not valid; open the filing again from Gmail")
}

async fn authorise(
    state: &AppState,
    id: &str,
    t: &str,
) -> AppResult<(std::sync::Arc<Tenant>, String, FilingView)> {
    let cap: Capability = state
        .catalog
        .open_link(t)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(expired)?;
    if cap.filing != id || cap.exp < jsonwebtoken::get_current_timestamp() {
        return Err(expired());
    }
    let tenant = state.catalog.tenant(&cap.tenant).await?;
    let user = crate::directory::user_by_id(&tenant.db, &cap.user).await?;
    if !tenant.is_active() || user.is_none_or(|u| u.status != "active") {
        return Err(expired());
    }
    // The link's user must still be allowed to see the record (teams, ethical walls).
    let view = filing::load_filing(&tenant.db, &cap.user, id)
        .await?
        .ok_or_else(expired)?;
    Ok((tenant, cap.user, view))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn people(list: &[crate::mail::Mailbox]) -> String {
    list.iter()
        .map(|m| match (&m.name, &m.address) {
            (Some(n), Some(a)) => format!("{n} <{a}>"),
            (None, Some(a)) => a.clone(),
            (Some(n), None) => n.clone(),
            (None, None) => String::new(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: LinkQ,
) -> AppResult<Response> {
    let t = link_token(q)?;
    let (_, _, f) = authorise(&state, &id, &t).await?;
    let t = esc(&t);
    let m = &f.message;
    let row = |k: &str, v: &str| format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    let mut rows = String::new();
    rows += &row(
        "Filed to",
        &format!("{}:{} · {}", f.target.kind, f.target.id, f.target.title),
    );
    rows += &row("Filed by", &f.filed_by);
    rows += &row("Filed at", &f.filed_at);
    if let Some(n) = &f.note {
        rows += &row("Note", n);
    }
    rows += &row("From", &people(&m.from));
    rows += &row("To", &people(&m.to));
    rows += &row("Cc", &people(&m.cc));
    rows += &row("Date", m.date.as_deref().unwrap_or(""));
    rows += &row("Message-ID", m.message_id.as_deref().unwrap_or("(none)"));
    rows += &row("Size", &format!("{} bytes", m.size));
    rows += &row("SHA-256", &m.sha256);
    let atts: String = if f.attachments.is_empty() {
        "<p>No attachments were kept with this filing.</p>".into()
    } else {
        let items: String = f
            .attachments
            .iter()
            .map(|a| {
                format!(
                    "<li><a href=\"/view/filings/{id}/attachments/{}?t={t}\">{}</a> <span>{} · {} bytes · SHA-256 {}</span></li>",
                    a.index,
                    esc(&a.name),
                    esc(&a.content_type),
                    a.size,
                    esc(&a.sha256)
                )
            })
            .collect();
        format!("<ul>{items}</ul>")
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{subject} · docket</title><style>body{{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1f1f1f}}\
th{{text-align:left;padding:.2rem 1rem .2rem 0;color:#555;font-weight:500;vertical-align:top}}td{{word-break:break-word}}span{{color:#666;font-size:13px}}</style></head>\
<body><h1>{subject}</h1><table>{rows}</table><h2>Attachments</h2>{atts}\
<p><a href=\"/view/filings/{id}/raw?t={t}\">Download the original message (.eml)</a></p>\
<p><small>This link expires 30 minutes after it was created.</small></p></body></html>",
        subject = esc(m.subject.as_deref().unwrap_or("(no subject)")),
    );
    let mut resp = Html(html).into_response();
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"),
    );
    Ok(resp)
}

async fn raw(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: LinkQ,
) -> AppResult<Response> {
    let (tenant, _, f) = authorise(&state, &id, &link_token(q)?).await?;
    let blob = read_blob(&state, &tenant, f.message.sha256.clone()).await?;
    Ok(download(blob, "message/rfc822", "message.eml"))
}

async fn attachment(
    State(state): State<AppState>,
    Path((id, n)): Path<(String, i64)>,
    q: LinkQ,
) -> AppResult<Response> {
    let (tenant, user, _) = authorise(&state, &id, &link_token(q)?).await?;
    let (blob, name) = filing::attachment_of(&tenant.db, &user, &id, n)
        .await?
        .ok_or_else(|| AppError::not_found("no such attachment in this filing"))?;
    let blob = read_blob(&state, &tenant, blob).await?;
    Ok(download(blob, "application/octet-stream", &name))
}
