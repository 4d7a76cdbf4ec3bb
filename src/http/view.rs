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
        .route("/view/filings/{id}/body", get(body))
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

/// The read-only page of one filing, laid out like the console's filing page.
#[derive(askama::Template)]
#[template(path = "view/filing.html")]
struct FilingPage {
    f: FilingView,
    /// The link's capability, for the page's own links.
    t: String,
    tenant_name: String,
    subject: String,
    filed_at: String,
    filed_by: String,
    note: Option<String>,
    from: String,
    to: String,
    cc: String,
    date: Option<String>,
    size: String,
}

/// `n` bytes as people read it (`48 KB`, `1.2 MB`).
fn human_bytes(n: i64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{} KB", n >> 10),
        n => format!("{n} bytes"),
    }
}

async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: LinkQ,
) -> AppResult<Response> {
    use askama::Template;
    let t = link_token(q)?;
    let (tenant, _, f) = authorise(&state, &id, &t).await?;
    let m = &f.message;
    let filer = crate::directory::user_by_email(&tenant.db, &f.filed_by).await?;
    let filed_by = match filer.as_ref().map(|u| u.display_name.trim()) {
        Some(name) if !name.is_empty() => format!("{name} ({})", f.filed_by),
        _ => f.filed_by.clone(),
    };
    let tz = crate::http::admin::ctx::firm_time_zone(&tenant).await?;
    let page = FilingPage {
        t,
        tenant_name: tenant.name.clone(),
        subject: m.subject.clone().unwrap_or_else(|| "(no subject)".into()),
        filed_at: crate::time_fmt::human_in(&f.filed_at, &tz),
        filed_by,
        note: f.note.clone().filter(|n| !n.trim().is_empty()),
        from: people(&m.from),
        to: people(&m.to),
        cc: people(&m.cc),
        date: m.date.as_deref().map(|d| crate::time_fmt::human_in(d, &tz)),
        size: human_bytes(m.size),
        f,
    };
    let html = page
        .render()
        .map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    let mut resp = Html(html).into_response();
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; frame-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"),
    );
    Ok(resp)
}

/// The message body, sanitised as in the console, for the page's sandboxed frame.
async fn body(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: LinkQ,
) -> AppResult<Response> {
    let (tenant, _, f) = authorise(&state, &id, &link_token(q)?).await?;
    let blob = read_blob(&state, &tenant, f.message.sha256.clone()).await?;
    let crate::http::filings::HeldBlob { bytes: raw, held } = blob;
    let html = crate::mail::guard::isolated(move || {
        Ok(crate::http::console::browse::sanitised_body(&raw))
    })
    .await?;
    drop(held);
    let mut r = Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"></head><body>{html}</body></html>"
    ))
    .into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::http::console::browse::BODY_CSP),
    );
    Ok(r)
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
