//! Admins' views: the filings browser (metadata, attachments, raw message, CSV export, and
//! the removal of a filing with a reason) and the audit log (filters, chain verification).
//! Filings of records the admin is walled off from (see `crate::access`) are invisible here
//! too.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AdminCtx;
use crate::audit::{self, ChainStatus};
use crate::error::{AppError, AppResult};
use crate::filing::{self, FilingView};
use crate::http::filings::{download, read_blob};
use crate::http::AppState;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FilingQuery {
    /// Record id, `kind:reference` (e.g. `matter:M-1`) or a bare reference (`M-1`).
    pub record: Option<String>,
    /// Words in the subject, sender or record title.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FilingRow {
    pub id: String,
    pub filed_at: String,
    pub filed_by: String,
    pub record_id: String,
    pub record_kind: String,
    pub record_reference: String,
    pub record_title: String,
    pub subject: Option<String>,
    pub from: String,
    pub sent_at: Option<String>,
    pub attachments: i64,
}

/// Filings the user may see, newest first.
pub async fn search_filings(
    pool: &AnyPool,
    user_id: &str,
    q: &FilingQuery,
) -> AppResult<Vec<FilingRow>> {
    let limit = q.limit.unwrap_or(50);
    let offset = q.offset.unwrap_or(0);
    if !(1..=1000).contains(&limit) || offset < 0 {
        return Err(AppError::bad_request(
            "invalid-query",
            "`limit` must be 1..=1000 and `offset` ≥ 0",
        ));
    }
    let mut sql = format!(
        "SELECT f.id, f.filed_at, u.email, r.id, r.kind, r.reference, r.title, m.subject, m.from_addr, m.sent_at, \
         (SELECT COUNT(*) FROM filing_attachments fa WHERE fa.filing_id = f.id) \
         FROM filings f JOIN messages m ON m.id = f.message_id JOIN records r ON r.id = f.record_id \
         JOIN users u ON u.id = f.filed_by WHERE {}",
        crate::access::visible_sql("r", 1)
    );
    let mut binds: Vec<String> = vec![user_id.to_string()];
    if let Some(rec) = q.record.as_deref().filter(|s| !s.trim().is_empty()) {
        let rec = rec.trim();
        if let Some((kind, reference)) = rec.split_once(':') {
            binds.push(kind.to_string());
            binds.push(reference.to_string());
            sql.push_str(&format!(
                " AND r.kind = ${} AND r.reference = ${}",
                binds.len() - 1,
                binds.len()
            ));
        } else {
            // A record id, or a bare reference (`M-2024-017`, any letter case).
            binds.push(rec.to_string());
            let n = binds.len();
            sql.push_str(&format!(
                " AND (r.id = ${n} OR UPPER(r.reference) = UPPER(${n}))"
            ));
        }
    }
    if let Some(words) = q.q.as_deref().filter(|s| !s.trim().is_empty()) {
        binds.push(crate::suggest::contains_pattern(words));
        let n = binds.len();
        sql.push_str(&format!(
            " AND (LOWER(COALESCE(m.subject, '')) LIKE ${n} ESCAPE '\\' OR LOWER(COALESCE(m.from_addr, '')) LIKE ${n} ESCAPE '\\' \
             OR LOWER(r.title) LIKE ${n} ESCAPE '\\' OR LOWER(r.reference) LIKE ${n} ESCAPE '\\')"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY f.filed_at DESC, f.id LIMIT {limit} OFFSET {offset}"
    ));
    let mut query = sqlx::query(&sql);
    for b in &binds {
        query = query.bind(b);
    }
    let rows = query.fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| FilingRow {
            id: r.get(0),
            filed_at: r.get(1),
            filed_by: r.get(2),
            record_id: r.get(3),
            record_kind: r.get(4),
            record_reference: r.get(5),
            record_title: r.get(6),
            subject: r.get(7),
            from: r.get::<Option<String>, _>(8).unwrap_or_default(),
            sent_at: r.get(9),
            attachments: r.get(10),
        })
        .collect())
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One filing, when it exists in this tenant and the user may see its record.
pub async fn visible_filing(
    pool: &AnyPool,
    user_id: &str,
    filing_id: &str,
) -> AppResult<Option<FilingView>> {
    if !valid_id(filing_id) {
        return Ok(None);
    }
    filing::load_filing(pool, user_id, filing_id).await
}

fn no_filing() -> AppError {
    AppError::not_found("no such filing")
}

/// Filings the caller may see, newest first.
#[utoipa::path(get, path = "/v1/admin/filings", params(FilingQuery),
    responses((status = 200, description = "Filings, newest first", body = Vec<FilingRow>)), tag = "filings")]
async fn list_filings(
    ctx: AdminCtx,
    query: Result<Query<FilingQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<Vec<FilingRow>>> {
    let Query(q) = query.map_err(|e| AppError::bad_request("invalid-query", e.body_text()))?;
    Ok(Json(
        search_filings(&ctx.tenant.db, &ctx.user.id, &q).await?,
    ))
}

/// The filings list as CSV (same filters and visibility).
#[utoipa::path(get, path = "/v1/admin/filings/export", params(FilingQuery),
    responses((status = 200, description = "text/csv of the filings", content_type = "text/csv")), tag = "filings")]
async fn export_filings(
    ctx: AdminCtx,
    query: Result<Query<FilingQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Response> {
    let Query(mut q) = query.map_err(|e| AppError::bad_request("invalid-query", e.body_text()))?;
    q.limit = Some(q.limit.unwrap_or(1000));
    let rows = search_filings(&ctx.tenant.db, &ctx.user.id, &q).await?;
    export_csv(&rows)
}

/// CSV of filing rows, as an attachment download.
pub fn export_csv(rows: &[FilingRow]) -> AppResult<Response> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let internal = |e: csv::Error| AppError::internal(anyhow::Error::new(e));
    w.write_record([
        "filing_id",
        "filed_at",
        "filed_by",
        "record",
        "record_title",
        "subject",
        "from",
        "sent_at",
        "attachments",
    ])
    .map_err(internal)?;
    for r in rows {
        w.write_record([
            r.id.as_str(),
            &r.filed_at,
            &r.filed_by,
            &format!("{}:{}", r.record_kind, r.record_reference),
            // Spreadsheet formula injection: neutralise leading = + - @.
            &csv_safe(&r.record_title),
            &csv_safe(r.subject.as_deref().unwrap_or("")),
            &csv_safe(&r.from),
            r.sent_at.as_deref().unwrap_or(""),
            &r.attachments.to_string(),
        ])
        .map_err(internal)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| AppError::internal(anyhow::anyhow!("csv: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"filings.csv\"",
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Where a spreadsheet may start a new cell: the separators of every locale's CSV dialect
/// (`,` `;`), tab- and pipe-separated imports, and line breaks.
const CELL_BREAKS: [char; 6] = [',', ';', '\t', '|', '\r', '\n'];
/// What makes a spreadsheet read a cell as a formula (with the full-width forms).
const FORMULA_STARTS: [char; 10] = ['=', '+', '-', '@', '\t', '\r', '＝', '＋', '－', '＠'];

/// Spreadsheet formula injection: every place a spreadsheet could start a cell (the text's
/// start, and after any separator a locale or import dialog may split on, spaces skipped)
/// gets a `'` before a formula character, so no split of the text starts a formula.
pub fn csv_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    let mut cell_start = true;
    for c in s.chars() {
        if cell_start && FORMULA_STARTS.contains(&c) {
            out.push('\'');
        }
        out.push(c);
        cell_start = CELL_BREAKS.contains(&c) || (cell_start && c == ' ');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cell a spreadsheet would see when splitting `line` on `sep`, trimmed.
    fn cells(line: &str, sep: u8) -> Vec<String> {
        csv::ReaderBuilder::new()
            .delimiter(sep)
            .has_headers(false)
            .flexible(true)
            .from_reader(line.as_bytes())
            .records()
            .flat_map(|r| {
                r.unwrap()
                    .iter()
                    .map(|c| c.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn no_separator_a_spreadsheet_uses_exposes_a_formula() {
        let hostile = [
            "=2+2",
            "x;=2+2",
            "a|@SUM(A1)",
            "b\t-1",
            "c, +cmd|' /C calc'!A0",
            "d;\n=HYPERLINK(\"http://evil.test\")",
            "e;  ＝1+1",
            "Re: Q3 - budget",
        ];
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(hostile.iter().map(|h| csv_safe(h))).unwrap();
        let out = String::from_utf8(w.into_inner().unwrap()).unwrap();
        for sep in [b',', b';', b'\t', b'|'] {
            for cell in cells(&out, sep) {
                let cell = cell.trim_start_matches('"').trim_start();
                assert!(
                    !cell.starts_with(FORMULA_STARTS),
                    "split on {:?}: {cell:?} in {out:?}",
                    sep as char
                );
            }
        }
        // Ordinary text is left as it was.
        assert_eq!(csv_safe("Re: Q3 - budget"), "Re: Q3 - budget");
        assert_eq!(csv_safe("x;=2+2"), "x;'=2+2");
    }
}

/// One filing: metadata, the message's attachments and which ones the filing kept.
#[utoipa::path(get, path = "/v1/admin/filings/{id}", params(("id" = String, Path, description = "Filing id")),
    responses((status = 200, description = "The filing"), (status = 404, description = "No such filing here")), tag = "filings")]
async fn show_filing(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<Response> {
    let view = visible_filing(&ctx.tenant.db, &ctx.user.id, &id)
        .await?
        .ok_or_else(no_filing)?;
    Ok(Json(view).into_response())
}

/// Why an admin removes a filing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// Why (1 to 2,000 characters), kept in the audit entry `filing.removed`.
    #[serde(default)]
    pub reason: String,
}

/// Removes a filing, however old, with a reason: the filing goes, and its message too when no
/// other filing refers to it (its blobs are swept once nothing refers to them). Refused
/// while a legal hold covers it. Audited as `filing.removed`.
#[utoipa::path(delete, path = "/v1/admin/filings/{id}", params(("id" = String, Path, description = "Filing id")),
    request_body = RemoveRequest,
    responses((status = 200, description = "Removed", body = filing::remove::Removed),
        (status = 404, description = "No such filing here"),
        (status = 409, description = "`legal-hold`: a hold covers it"),
        (status = 422, description = "`reason-required`")), tag = "filings")]
async fn remove_filing(
    State(state): State<AppState>,
    ctx: AdminCtx,
    Path(id): Path<String>,
    crate::http::extract::ApiJson(req): crate::http::extract::ApiJson<RemoveRequest>,
) -> AppResult<Json<filing::remove::Removed>> {
    removal(&state, &ctx, &id, &req.reason).await.map(Json)
}

/// An admin's removal of filing `id` (the API's and the console's).
pub async fn removal(
    state: &AppState,
    ctx: &AdminCtx,
    id: &str,
    reason: &str,
) -> AppResult<filing::remove::Removed> {
    if !valid_id(id) {
        return Err(no_filing());
    }
    let actor = ctx.actor();
    let who = filing::remove::Remover::Admin {
        user: &ctx.user,
        actor: &actor,
        reason,
    };
    let removed = filing::remove::remove(&ctx.tenant, id, &who).await?;
    if removed.message_removed {
        crate::maintenance::sweep_soon(state, &ctx.tenant);
    }
    Ok(removed)
}

/// The filed message exactly as received (`message/rfc822` download).
#[utoipa::path(get, path = "/v1/admin/filings/{id}/raw", params(("id" = String, Path, description = "Filing id")),
    responses((status = 200, description = "The raw message", content_type = "message/rfc822")), tag = "filings")]
async fn raw_filing(
    State(state): State<AppState>,
    ctx: AdminCtx,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let view = visible_filing(&ctx.tenant.db, &ctx.user.id, &id)
        .await?
        .ok_or_else(no_filing)?;
    let blob = read_blob(&state, &ctx.tenant, view.message.sha256).await?;
    Ok(download(blob, "message/rfc822", "message.eml"))
}

/// A kept attachment (`application/octet-stream`, `Content-Disposition: attachment`).
#[utoipa::path(get, path = "/v1/admin/filings/{id}/attachments/{index}",
    params(("id" = String, Path, description = "Filing id"), ("index" = i64, Path, description = "Attachment index")),
    responses((status = 200, description = "The attachment", content_type = "application/octet-stream")), tag = "filings")]
async fn filing_attachment(
    State(state): State<AppState>,
    ctx: AdminCtx,
    Path((id, index)): Path<(String, String)>,
) -> AppResult<Response> {
    attachment_download(&state, &ctx, &id, &index).await
}

pub async fn attachment_download(
    state: &AppState,
    ctx: &AdminCtx,
    id: &str,
    index: &str,
) -> AppResult<Response> {
    let none = || AppError::not_found("no such attachment in this filing");
    let index: i64 = index.parse().map_err(|_| none())?;
    visible_filing(&ctx.tenant.db, &ctx.user.id, id)
        .await?
        .ok_or_else(no_filing)?;
    let (blob, name) = filing::attachment_of(&ctx.tenant.db, &ctx.user.id, id, index)
        .await?
        .ok_or_else(none)?;
    let blob = read_blob(state, &ctx.tenant, blob).await?;
    Ok(download(blob, "application/octet-stream", &name))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Action, or a prefix ending in `.` (e.g. `login.`).
    pub action: Option<String>,
    /// Part of the actor (usually an email).
    pub actor: Option<String>,
    /// Exact subject id.
    pub subject: Option<String>,
    /// Only entries at or after this time (RFC 3339 or `YYYY-MM-DD`).
    pub since: Option<String>,
    /// Only entries before this sequence number (paging backwards).
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: serde_json::Value,
    pub hash: String,
}

/// Audit entries, newest first, filtered.
pub async fn search_audit(pool: &AnyPool, q: &AuditQuery) -> AppResult<Vec<AuditRow>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::bad_request(
            "invalid-query",
            "`limit` must be 1..=1000",
        ));
    }
    let mut sql = String::from(
        "SELECT seq, at, actor, action, subject, detail, hash FROM audit_log WHERE 1 = 1",
    );
    let mut binds: Vec<String> = Vec::new();
    if let Some(a) = q.action.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        if a.ends_with('.') {
            binds.push(format!("{}%", a.replace(['%', '_'], "")));
            sql.push_str(&format!(" AND action LIKE ${}", binds.len()));
        } else {
            binds.push(a.to_string());
            sql.push_str(&format!(" AND action = ${}", binds.len()));
        }
    }
    if let Some(a) = q.actor.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        binds.push(crate::suggest::contains_pattern(a));
        sql.push_str(&format!(
            " AND LOWER(actor) LIKE ${} ESCAPE '\\'",
            binds.len()
        ));
    }
    if let Some(s) = q
        .subject
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        binds.push(s.to_string());
        sql.push_str(&format!(" AND subject = ${}", binds.len()));
    }
    if let Some(since) = q.since.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let t = crate::time_fmt::parse(since)
            .or_else(|| crate::time_fmt::parse(&format!("{since}T00:00:00Z")))
            .ok_or_else(|| {
                AppError::bad_request(
                    "invalid-query",
                    "`since` must be a date (YYYY-MM-DD) or RFC 3339 time",
                )
            })?;
        binds.push(crate::time_fmt::format_utc(t));
        sql.push_str(&format!(" AND at >= ${}", binds.len()));
    }
    if let Some(before) = q.before {
        sql.push_str(&format!(" AND seq < {before}"));
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT {limit}"));
    let mut query = sqlx::query(&sql);
    for b in &binds {
        query = query.bind(b);
    }
    let rows = query.fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let detail: String = r.get(5);
            AuditRow {
                seq: r.get(0),
                at: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                subject: r.get(4),
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
                hash: r.get(6),
            }
        })
        .collect())
}

/// Audit entries, newest first.
#[utoipa::path(get, path = "/v1/admin/audit", params(AuditQuery),
    responses((status = 200, description = "Audit entries", body = Vec<AuditRow>)), tag = "audit")]
async fn list_audit(
    ctx: AdminCtx,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<Vec<AuditRow>>> {
    let Query(q) = query.map_err(|e| AppError::bad_request("invalid-query", e.body_text()))?;
    Ok(Json(search_audit(&ctx.tenant.db, &q).await?))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChainReport {
    /// `intact` or `broken`.
    pub status: &'static str,
    pub entries: Option<i64>,
    pub head: Option<String>,
    pub broken_at: Option<i64>,
    pub reason: Option<String>,
}

/// Verifies the tenant's chain, against itself and its anchor in the catalogue.
pub async fn chain_report(
    catalog: &crate::tenancy::Catalog,
    tenant: &crate::tenancy::Tenant,
) -> AppResult<ChainReport> {
    Ok(match audit::anchor::verify(catalog, tenant).await?.0 {
        ChainStatus::Intact { entries, head } => ChainReport {
            status: "intact",
            entries: Some(entries),
            head: Some(head),
            broken_at: None,
            reason: None,
        },
        ChainStatus::Broken { seq, reason } => ChainReport {
            status: "broken",
            entries: None,
            head: None,
            broken_at: Some(seq),
            reason: Some(reason),
        },
    })
}

/// Verifies the whole audit chain.
#[utoipa::path(get, path = "/v1/admin/audit/verify",
    responses((status = 200, description = "Chain status", body = ChainReport)), tag = "audit")]
async fn verify_audit(
    State(state): State<AppState>,
    ctx: AdminCtx,
) -> AppResult<Json<ChainReport>> {
    Ok(Json(chain_report(&state.catalog, &ctx.tenant).await?))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_filings))
        .routes(routes!(export_filings))
        .routes(routes!(show_filing, remove_filing))
        .routes(routes!(raw_filing))
        .routes(routes!(filing_attachment))
        .routes(routes!(list_audit))
        .routes(routes!(verify_audit))
}
