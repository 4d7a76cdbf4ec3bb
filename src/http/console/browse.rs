//! Console pages: the filings browser (with the message body sanitised by ammonia and shown
//! in a sandboxed iframe under its own strict CSP) and the audit log.

use crate::http::filings::HeldBlob;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::{render, render_status, Chrome, ConsoleCtx, ConsoleForm};
use crate::error::{AppError, AppResult};
use crate::filing::FilingView;
use crate::http::admin::browse::{
    attachment_download, chain_report, export_csv, search_audit, search_filings, visible_filing,
    AuditQuery, AuditRow, ChainReport, FilingQuery, FilingRow,
};
use crate::http::filings::{download, read_blob};
use crate::http::AppState;

/// The message body frame: nothing may run or load from outside; only inline styles and
/// data: images survive.
pub(crate) const BODY_CSP: &str =
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'";

#[derive(Template)]
#[template(path = "console/browse_filings.html")]
struct FilingsPage {
    chrome: Chrome,
    rows: Vec<FilingRow>,
    record: String,
    q: String,
    next_offset: Option<i64>,
    export_query: String,
}

async fn filings(
    ctx: ConsoleCtx,
    query: Result<Query<FilingQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Response> {
    let Query(mut q) = query.map_err(|e| AppError::bad_request("invalid-query", e.body_text()))?;
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    q.limit = Some(limit);
    let rows = search_filings(&ctx.tenant.db, &ctx.user.id, &q).await?;
    let next_offset = (rows.len() as i64 == limit).then(|| q.offset.unwrap_or(0) + limit);
    let record = q.record.clone().unwrap_or_default();
    let words = q.q.clone().unwrap_or_default();
    let export_query =
        serde_urlencoded::to_string([("record", &record), ("q", &words)]).unwrap_or_default();
    Ok(render(&FilingsPage {
        chrome: Chrome::new(&ctx, "filings"),
        rows,
        record,
        q: words,
        next_offset,
        export_query,
    }))
}

async fn filings_csv(
    ctx: ConsoleCtx,
    query: Result<Query<FilingQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Response> {
    let Query(mut q) = query.map_err(|e| AppError::bad_request("invalid-query", e.body_text()))?;
    q.limit = Some(1000);
    q.offset = None;
    export_csv(&search_filings(&ctx.tenant.db, &ctx.user.id, &q).await?)
}

#[derive(Template)]
#[template(path = "console/browse_filing.html")]
struct FilingPage {
    chrome: Chrome,
    f: FilingView,
    from: String,
    to: String,
    cc: String,
    kept: Vec<i64>,
    /// Why the last removal was refused, and the reason the admin typed.
    error: Option<String>,
    reason: String,
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

async fn filing(ctx: ConsoleCtx, Path(id): Path<String>) -> AppResult<Response> {
    Ok(render(&filing_page(&ctx, &id, None, String::new()).await?))
}

async fn filing_page(
    ctx: &ConsoleCtx,
    id: &str,
    error: Option<String>,
    reason: String,
) -> AppResult<FilingPage> {
    let f = visible_filing(&ctx.tenant.db, &ctx.user.id, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such filing"))?;
    Ok(FilingPage {
        chrome: Chrome::new(ctx, "filings"),
        from: people(&f.message.from),
        to: people(&f.message.to),
        cc: people(&f.message.cc),
        kept: f.attachments.iter().map(|a| a.index).collect(),
        f,
        error,
        reason,
    })
}

#[derive(serde::Deserialize)]
struct RemoveForm {
    #[serde(default)]
    reason: String,
}

/// Removes the filing with the admin's reason, then shows its audit entries; a refusal (no
/// reason, a legal hold) shows the filing again with why.
async fn remove_filing(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm(ctx, form): ConsoleForm<RemoveForm>,
) -> AppResult<Response> {
    let err = match crate::http::admin::browse::removal(&state, &ctx, &id, &form.reason).await {
        Ok(_) => return Ok(Redirect::to(&format!("/console/audit?subject={id}")).into_response()),
        Err(e) => e,
    };
    let status = err.status();
    if !status.is_client_error() || status == axum::http::StatusCode::NOT_FOUND {
        return Err(err);
    }
    let detail = match &err {
        AppError::Problem { detail, .. } => detail.clone(),
        AppError::Internal(_) => return Err(err),
    };
    let page = filing_page(&ctx, &id, Some(detail), form.reason).await?;
    Ok(render_status(status, &page))
}

/// The message body as sanitised HTML (the text part, escaped, when there is no HTML).
/// Blocking and CPU-bound: run it through [`crate::mail::guard::isolated`].
pub fn sanitised_body(raw: &[u8]) -> String {
    let ceiling = crate::mail::guard::ceiling_limits();
    crate::mail::guard::with_message(raw, &ceiling, |msg| Ok(body_html(raw, msg)))
        .unwrap_or_else(|_| "<p>(this message could not be read)</p>".into())
}

fn body_html(raw: &[u8], msg: &mail_parser::Message) -> String {
    use crate::mail::content::{body_htmls, body_texts};
    if let Some(html) = body_htmls(raw, msg, 1).into_iter().next() {
        ammonia::Builder::default()
            .url_schemes(["http", "https", "mailto"].into())
            .link_rel(Some("noopener noreferrer nofollow"))
            // Remote images are tracking beacons: drop their source (the alt text stays).
            .attribute_filter(|element, attribute, value| {
                if element == "img" && attribute == "src" {
                    None
                } else {
                    Some(value.into())
                }
            })
            .clean(&html)
            .to_string()
    } else if let Some(text) = body_texts(raw, msg, 1).into_iter().next() {
        format!(
            "<pre style=\"white-space: pre-wrap; font: 14px/1.45 system-ui, sans-serif\">{}</pre>",
            ammonia::clean_text(&text)
        )
    } else {
        "<p>(no body)</p>".into()
    }
}

async fn filing_body(
    State(state): State<AppState>,
    ctx: ConsoleCtx,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let f = visible_filing(&ctx.tenant.db, &ctx.user.id, &id)
        .await?
        .ok_or_else(|| AppError::not_found("no such filing"))?;
    let HeldBlob { bytes: raw, held } = read_blob(&state, &ctx.tenant, f.message.sha256).await?;
    let body = crate::mail::guard::isolated(move || Ok(sanitised_body(&raw))).await?;
    drop(held);
    let mut r = Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"></head><body>{body}</body></html>"
    ))
    .into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(BODY_CSP),
    );
    Ok(r)
}

async fn filing_raw(
    State(state): State<AppState>,
    ctx: ConsoleCtx,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let f = visible_filing(&ctx.tenant.db, &ctx.user.id, &id)
        .await?
        .ok_or_else(|| AppError::not_found("no such filing"))?;
    let blob = read_blob(&state, &ctx.tenant, f.message.sha256).await?;
    Ok(download(blob, "message/rfc822", "message.eml"))
}

async fn filing_attachment(
    State(state): State<AppState>,
    ctx: ConsoleCtx,
    Path((id, index)): Path<(String, String)>,
) -> AppResult<Response> {
    attachment_download(&state, &ctx, &id, &index).await
}

/// An audit entry as the page shows it: a sentence, and the raw entry behind a disclosure.
struct AuditLine {
    row: AuditRow,
    sentence: String,
    /// The detail as indented JSON.
    detail: String,
}

#[derive(Template)]
#[template(path = "console/browse_audit.html")]
struct AuditPage {
    chrome: Chrome,
    rows: Vec<AuditLine>,
    chain: ChainReport,
    action: String,
    actor: String,
    subject: String,
    since: String,
    older: Option<String>,
}

async fn audit(
    State(state): State<AppState>,
    ctx: ConsoleCtx,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Response> {
    let Query(q) = query.map_err(|e| AppError::bad_request("invalid-query", e.body_text()))?;
    let rows = search_audit(&ctx.tenant.db, &q).await?;
    let chain = chain_report(&state.catalog, &ctx.tenant).await?;
    let limit = q.limit.unwrap_or(100);
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    let older = match rows.last() {
        Some(last) if rows.len() as i64 == limit => Some(
            serde_urlencoded::to_string([
                ("action", s(&q.action)),
                ("actor", s(&q.actor)),
                ("subject", s(&q.subject)),
                ("since", s(&q.since)),
                ("before", last.seq.to_string()),
            ])
            .unwrap_or_default(),
        ),
        _ => None,
    };
    let names = super::audit_words::Names::load(&ctx.tenant.db, &rows, &ctx.user.id).await?;
    let rows = rows
        .into_iter()
        .map(|row| AuditLine {
            sentence: super::audit_words::sentence(&row, &names),
            detail: serde_json::to_string_pretty(&row.detail).unwrap_or_default(),
            row,
        })
        .collect();
    Ok(render(&AuditPage {
        chrome: Chrome::new(&ctx, "audit"),
        rows,
        chain,
        action: s(&q.action),
        actor: s(&q.actor),
        subject: s(&q.subject),
        since: s(&q.since),
        older,
    }))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/filings", get(filings))
        .route("/console/filings/export.csv", get(filings_csv))
        .route("/console/filings/{id}", get(filing))
        .route("/console/filings/{id}/body", get(filing_body))
        .route("/console/filings/{id}/raw", get(filing_raw))
        .route("/console/filings/{id}/remove", post(remove_filing))
        .route(
            "/console/filings/{id}/attachments/{index}",
            get(filing_attachment),
        )
        .route("/console/audit", get(audit))
}
