//! The record catalogue: `/v1/admin/records` (tag "records"): list, create, edit, close,
//! teams and ethical walls, CSV import with a per-row report. Admins see every record's
//! metadata here (to manage it) whatever their own team; filings stay behind the walls.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AdminCtx;
use crate::access::Principal;
use crate::directory::{
    self, ImportReport, NewRecord, Record, RecordDetail, RecordFilter, RecordKind, RecordPatch,
    IMPORT_MAX_BYTES,
};
use crate::error::{AppError, AppResult};
use crate::http::extract::ApiJson;
use crate::http::AppState;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    /// Words in the reference, title, client or a contact.
    pub q: Option<String>,
    /// `open` or `closed`.
    pub status: Option<String>,
    /// `matter`, `case` or `contract`.
    pub kind: Option<String>,
    /// At most this many (1..=5000, default 1000).
    pub limit: Option<i64>,
}

/// Parses the catalogue filters (400 `invalid-query` when they make no sense).
pub fn filter_of(q: &RecordQuery) -> AppResult<(RecordFilter, i64)> {
    let status = match q.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s @ ("open" | "closed")) => Some(s.to_string()),
        Some(s) => {
            return Err(AppError::bad_request(
                "invalid-query",
                format!("unknown status {s:?}: expected open or closed"),
            ))
        }
    };
    let kind = match q.kind.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(k) => Some(
            k.parse::<RecordKind>()
                .map_err(|e| AppError::bad_request("invalid-query", e))?,
        ),
    };
    let limit = q.limit.unwrap_or(1000);
    if !(1..=5000).contains(&limit) {
        return Err(AppError::bad_request(
            "invalid-query",
            "`limit` must be 1..=5000",
        ));
    }
    Ok((
        RecordFilter {
            q: q.q.clone(),
            status,
            kind,
        },
        limit,
    ))
}

/// The catalogue, filtered.
#[utoipa::path(get, path = "/v1/admin/records", params(RecordQuery),
    responses((status = 200, description = "Records by kind and reference", body = Vec<Record>)), tag = "records")]
async fn list_records(
    ctx: AdminCtx,
    query: Result<Query<RecordQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<Vec<Record>>> {
    let Query(q) = query.map_err(|e| AppError::bad_request("invalid-query", e.body_text()))?;
    let (filter, limit) = filter_of(&q)?;
    Ok(Json(
        directory::search_catalogue(&ctx.tenant.db, &filter, limit).await?,
    ))
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRecordBody {
    pub kind: RecordKind,
    pub reference: String,
    pub title: String,
    #[serde(default)]
    pub client: String,
    /// Addresses (`a@acme.com`) and domains (`acme.com`).
    #[serde(default)]
    pub contacts: Vec<String>,
    /// Visible to everyone (unless excluded); default true.
    #[serde(default = "yes")]
    pub firm_wide: bool,
    #[serde(default)]
    pub members: Vec<Principal>,
    #[serde(default)]
    pub excluded: Vec<Principal>,
}

/// Adds a record with its team.
#[utoipa::path(post, path = "/v1/admin/records", request_body = NewRecordBody,
    responses((status = 201, description = "The new record", body = RecordDetail),
        (status = 409, description = "kind+reference exists"),
        (status = 422, description = "Invalid field, unknown user/group, or both member and excluded")),
    tag = "records")]
async fn add_record(
    ctx: AdminCtx,
    ApiJson(req): ApiJson<NewRecordBody>,
) -> AppResult<(StatusCode, Json<RecordDetail>)> {
    let d = directory::create_record(
        &ctx.tenant.db,
        &NewRecord {
            kind: req.kind,
            reference: req.reference,
            title: req.title,
            client: req.client,
            contacts: req.contacts,
            firm_wide: req.firm_wide,
            members: req.members,
            excluded: req.excluded,
        },
        &ctx.actor(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(d)))
}

fn no_record() -> AppError {
    AppError::not_found("no such record")
}

/// One record with its team.
#[utoipa::path(get, path = "/v1/admin/records/{id}", params(("id" = String, Path, description = "Record id")),
    responses((status = 200, description = "The record", body = RecordDetail), (status = 404, description = "No such record")),
    tag = "records")]
async fn get_record(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<Json<RecordDetail>> {
    directory::record_detail(&ctx.tenant.db, &id)
        .await?
        .map(Json)
        .ok_or_else(no_record)
}

/// Edits a record: title, client, contacts, firm-wide, and status (`closed` closes it,
/// `open` reopens it).
#[utoipa::path(patch, path = "/v1/admin/records/{id}", params(("id" = String, Path, description = "Record id")),
    request_body = RecordPatch,
    responses((status = 200, description = "The record", body = RecordDetail), (status = 404, description = "No such record"),
        (status = 422, description = "Invalid field")), tag = "records")]
async fn patch_record(
    ctx: AdminCtx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RecordPatch>,
) -> AppResult<Json<RecordDetail>> {
    Ok(Json(
        directory::update_record(&ctx.tenant.db, &id, &req, &ctx.actor()).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessBody {
    pub firm_wide: bool,
    #[serde(default)]
    pub members: Vec<Principal>,
    #[serde(default)]
    pub excluded: Vec<Principal>,
}

/// Replaces a record's team: firm-wide flag, members and exclusions (an exclusion beats
/// every grant, firm-wide included).
#[utoipa::path(put, path = "/v1/admin/records/{id}/access", params(("id" = String, Path, description = "Record id")),
    request_body = AccessBody,
    responses((status = 200, description = "The record", body = RecordDetail), (status = 404, description = "No such record"),
        (status = 422, description = "Unknown user/group, or both member and excluded")), tag = "records")]
async fn set_access(
    ctx: AdminCtx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AccessBody>,
) -> AppResult<Json<RecordDetail>> {
    Ok(Json(
        directory::set_record_team(
            &ctx.tenant.db,
            &id,
            req.firm_wide,
            &req.members,
            &req.excluded,
            &ctx.actor(),
        )
        .await?,
    ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Import the valid rows even when some rows have errors (default false: nothing is
    /// imported when any row is invalid).
    #[serde(default)]
    pub import_valid_rows: bool,
}

/// The import's answer: 200 with the report, or 422 (problem+json with the report's fields)
/// when rows were invalid and nothing was imported.
pub fn import_response(report: &ImportReport) -> Response {
    if report.invalid > 0 && report.imported == 0 {
        let mut body = serde_json::to_value(report).unwrap_or_default();
        body["type"] = "urn:docket:problem:invalid-rows".into();
        body["title"] = "Unprocessable Entity".into();
        body["status"] = 422.into();
        body["detail"] = format!(
            "{} of {} rows have errors; nothing was imported (fix them, or ask to import the valid rows)",
            report.invalid,
            report.invalid + report.valid
        )
        .into();
        let mut resp = (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    } else {
        Json(report).into_response()
    }
}

/// Imports records from a CSV body (`Content-Type: text/csv`, at most 5 MB and 10,000 rows).
/// Header: `kind,reference,title,client,status,contacts,firm_wide,members,excluded`
/// (only kind, reference and title are required); lists are `;`-separated; members and
/// exclusions are user emails or group names. All or nothing unless `import_valid_rows`.
#[utoipa::path(post, path = "/v1/admin/records/import", params(ImportQuery),
    request_body(content = String, content_type = "text/csv", description = "The CSV file"),
    responses((status = 200, description = "Imported; the per-row report", body = ImportReport),
        (status = 422, description = "Rows have errors and nothing was imported; the report is in the problem body", body = ImportReport),
        (status = 413, description = "Larger than 5 MB"), (status = 415, description = "Not text/csv")),
    tag = "records")]
async fn import_records(
    ctx: AdminCtx,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> AppResult<Response> {
    let Query(q) = query.map_err(|e| AppError::bad_request("invalid-query", e.body_text()))?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("text/csv") {
        return Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the file as `Content-Type: text/csv`",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::too_large(format!(
                "the file is larger than the limit of {IMPORT_MAX_BYTES} bytes (5 MB)"
            ))
        } else {
            AppError::bad_request("invalid-body", e.body_text())
        }
    })?;
    let report =
        directory::import_records_csv(&ctx.tenant.db, &body, q.import_valid_rows, &ctx.actor())
            .await?;
    Ok(import_response(&report))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_records, add_record))
        .routes(routes!(get_record, patch_record))
        .routes(routes!(set_access))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(import_records))
                .layer(DefaultBodyLimit::max(IMPORT_MAX_BYTES + 64 * 1024)),
        )
}
