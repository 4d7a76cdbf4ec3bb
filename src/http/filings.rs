//! `/v1/filings`: file a message (the add-on webhook) and read filings back.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::Deserialize;

use super::extract::TenantCtx;
use super::intake::{CarriesMessage, MessageJson, RawField};
use super::AppState;
use crate::directory::RecordKind;
use crate::error::{AppError, AppResult};
use crate::filing::{self, AttachmentSelection, FilingInput, TargetRef};
use crate::mail::names::content_disposition;
use crate::tenancy::Tenant;

/// `intake`: the budget and body deadline for requests that carry a message.
pub fn router(intake: std::sync::Arc<super::intake::Intake>) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/filings",
            post(create)
                .layer::<_, std::convert::Infallible>(axum::Extension(intake))
                .get(list),
        )
        .route("/v1/filings/{id}", get(show).delete(undo))
        .route("/v1/filings/{id}/raw", get(raw))
        .route("/v1/filings/{id}/attachments/{n}", get(attachment))
}

/// base64url, padded or not (Gmail and Apps Script differ).
pub(crate) const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn decode_raw(raw: &str, max: usize) -> AppResult<Vec<u8>> {
    // Trailing ASCII white space only, as the in-place decoder of the intake does.
    let text = raw.trim_end_matches(|c: char| c.is_ascii_whitespace());
    check_encoded_len(text.len(), max)?;
    let bytes = B64URL.decode(text).map_err(invalid_base64)?;
    check_decoded(bytes, max)
}

/// Cheap size check of `raw`'s text before decoding anything: 413 when it cannot fit `max`.
pub(crate) fn check_encoded_len(len: usize, max: usize) -> AppResult<()> {
    if len / 4 * 3 > max + 3 {
        return Err(AppError::too_large(format!(
            "the message is larger than the limit of {max} bytes"
        )));
    }
    Ok(())
}

/// 400 `invalid-base64`, with the decoder's complaint.
pub(crate) fn invalid_base64(e: impl std::fmt::Display) -> AppError {
    AppError::bad_request("invalid-base64", format!("`raw` is not base64url: {e}"))
}

/// The decoded message: 413 over `max`, 422 `not-an-email` when empty.
pub(crate) fn check_decoded(bytes: Vec<u8>, max: usize) -> AppResult<Vec<u8>> {
    if bytes.len() > max {
        return Err(AppError::too_large(format!(
            "the message is {} bytes; the limit is {max}",
            bytes.len()
        )));
    }
    if bytes.is_empty() {
        return Err(AppError::unprocessable("not-an-email", "`raw` is empty"));
    }
    Ok(bytes)
}

/// A message to file, and where.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateFiling {
    /// The whole message (RFC 5322 bytes) in base64url, padded or not: Gmail API's
    /// `users.messages.get?format=raw` `raw` field, as it comes.
    #[schema(value_type = String)]
    raw: RawField,
    #[serde(default)]
    gmail_message_id: Option<String>,
    #[serde(default)]
    gmail_thread_id: Option<String>,
    /// The records to file it to (1 to 20).
    targets: Vec<TargetRef>,
    #[serde(default)]
    attachments: AttachmentSelection,
    /// A note kept with each filing (at most 2,000 characters).
    #[serde(default)]
    note: Option<String>,
}

impl CarriesMessage for CreateFiling {
    fn take_raw(&mut self) -> RawField {
        std::mem::take(&mut self.raw)
    }
}

/// Files a message to one or more records. Exactly once: filing the same message to the
/// same record again answers 200 with the existing filing.
#[utoipa::path(post, path = "/v1/filings", request_body = CreateFiling,
    responses(
        (status = 201, description = "Filed (at least one new filing); `Location` names the first", body = filing::FilingOutcome),
        (status = 200, description = "Everything was already filed", body = filing::FilingOutcome),
        (status = 400, description = "Malformed JSON or `raw` not base64url"),
        (status = 401, description = "No valid bearer token"),
        (status = 403, description = "The user may not file (viewer, suspended)"),
        (status = 404, description = "A target is not a record the user may see"),
        (status = 409, description = "A target is closed"),
        (status = 413, description = "Over `limits.max_message_bytes`"),
        (status = 422, description = "Not a message docket can file (too deep, too many parts, header block too large, bad targets or attachment indices)"),
        (status = 503, description = "Busy (`Retry-After`): the bytes-in-flight budget is spent"),
    ),
    security(("google_id_token" = []), ("access_token" = [])), tag = "filings")]
pub(crate) async fn create(
    State(state): State<AppState>,
    ctx: TenantCtx,
    headers: axum::http::HeaderMap,
    body: MessageJson<CreateFiling>,
) -> AppResult<Response> {
    let (req, raw) = (body.value, body.raw);
    if req.targets.is_empty() {
        return Err(AppError::unprocessable(
            "no-targets",
            "`targets` must name at least one record",
        ));
    }
    let outcome = filing::file_message(
        &ctx.tenant,
        &state.config.limits,
        &ctx.user,
        FilingInput {
            raw,
            gmail_message_id: req.gmail_message_id,
            gmail_thread_id: req.gmail_thread_id,
            targets: req.targets,
            attachments: req.attachments,
            note: req.note,
        },
    )
    .await;
    let client = crate::metrics::Client::of_api_caller(&headers);
    crate::metrics::global().filed(client, outcome.as_ref());
    let outcome = outcome?;
    let status = outcome.status();
    let mut resp = (status, Json(&outcome)).into_response();
    if status == StatusCode::CREATED {
        if let Some(first) = outcome.filings.first() {
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/filings/{}", first.id)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
        }
    }
    Ok(resp)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only filings to this record, as kind:reference (e.g. `matter:M-2024-017`).
    target: Option<String>,
    /// 1 to 200; default 50.
    limit: Option<i64>,
    /// Filings to skip (newest first); default 0.
    offset: Option<i64>,
    /// `true`: only the caller's own filings.
    mine: Option<bool>,
    /// Only filings whose subject, sender, record reference or title contains this text.
    q: Option<String>,
}

/// A page of filings the caller may see, newest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct FilingList {
    filings: Vec<ListedFiling>,
}

/// A filing in a list, with a link to its read-only page.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ListedFiling {
    #[serde(flatten)]
    filing: filing::FilingView,
    /// `/view/filings/{id}?t=…`: the filing's read-only page for the caller, valid 30
    /// minutes (put docket's address before it).
    view_path: String,
}

/// The filings of the records the caller may see (teams and walls applied), newest first.
#[utoipa::path(get, path = "/v1/filings", params(ListQuery),
    responses((status = 200, description = "A page of filings", body = FilingList),
        (status = 400, description = "`invalid-query`"),
        (status = 401, description = "No valid bearer token")),
    security(("google_id_token" = []), ("access_token" = [])), tag = "filings")]
pub(crate) async fn list(
    State(state): State<AppState>,
    ctx: TenantCtx,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Response> {
    let Query(q) = query.map_err(|e| AppError::bad_request("invalid-query", e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) || q.offset.is_some_and(|o| o < 0) {
        return Err(AppError::bad_request(
            "invalid-query",
            "`limit` must be 1..=200 and `offset` ≥ 0",
        ));
    }
    let target = match &q.target {
        None => None,
        Some(t) => {
            let parsed = TargetRef::parse(t).ok_or_else(|| {
                AppError::bad_request("invalid-query", "`target` must look like matter:M-2024-017")
            })?;
            let kind: RecordKind = parsed
                .kind
                .parse()
                .map_err(|e: String| AppError::bad_request("invalid-query", e))?;
            Some((kind, parsed.id))
        }
    };
    let filter = filing::FilingFilter {
        target: target.as_ref().map(|(k, r)| (*k, r.as_str())),
        filed_by: q.mine.unwrap_or(false).then_some(ctx.user.id.as_str()),
        text: q.q.as_deref(),
    };
    let offset = q.offset.unwrap_or(0);
    let filings = filing::list_filings(&ctx.tenant.db, &ctx.user.id, &filter, limit, offset)
        .await?
        .into_iter()
        .map(|f| ListedFiling {
            view_path: super::view::filing_link(&state, "", &ctx.tenant.id, &f.id, &ctx.user.id),
            filing: f,
        })
        .collect();
    Ok(Json(FilingList { filings }).into_response())
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One filing, with its message and attachments.
#[utoipa::path(get, path = "/v1/filings/{id}", params(("id" = String, Path, description = "Filing id (32 hex digits)")),
    responses((status = 200, description = "The filing", body = filing::FilingView),
        (status = 404, description = "No such filing, or not one the caller may see")),
    security(("google_id_token" = []), ("access_token" = [])), tag = "filings")]
pub(crate) async fn show(ctx: TenantCtx, Path(id): Path<String>) -> AppResult<Response> {
    let view = if valid_id(&id) {
        filing::load_filing(&ctx.tenant.db, &ctx.user.id, &id).await?
    } else {
        None
    };
    let view = view.ok_or_else(|| AppError::not_found("no such filing"))?;
    Ok(Json(view).into_response())
}

/// Undoes one of the caller's own filings within `filing.undo_grace_minutes` of filing it
/// (10 by default): the filing goes, with the filings the firm's rules made with it, and the
/// message too when nothing else refers to it. Audited as `filing.undone`. Later, an admin
/// removes it (`DELETE /v1/admin/filings/{id}`).
#[utoipa::path(delete, path = "/v1/filings/{id}", params(("id" = String, Path, description = "Filing id (32 hex digits)")),
    responses((status = 200, description = "Undone", body = filing::remove::Removed),
        (status = 401, description = "No valid bearer token"),
        (status = 403, description = "The user may not file (viewer, suspended)"),
        (status = 404, description = "No such filing of the caller's"),
        (status = 409, description = "`undo-expired`: the grace period is over; `undo-off`: undo is turned off; `filing-shared`: someone else has filed the message to the record since; `legal-hold`: a hold covers it")),
    security(("google_id_token" = []), ("access_token" = [])), tag = "filings")]
pub(crate) async fn undo(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let removed = undo_filing(&state, &ctx, &id).await?;
    Ok(Json(removed).into_response())
}

/// [`undo`], for the API and the add-on's card: the caller's own filing, at the catalogue's
/// clock. The blobs a removed message leaves are younger than the sweep's grace period, so
/// the scheduled sweep removes them, not one started here.
pub(crate) async fn undo_filing(
    state: &AppState,
    ctx: &TenantCtx,
    id: &str,
) -> AppResult<filing::remove::Removed> {
    if !valid_id(id) {
        return Err(AppError::not_found("no such filing of yours"));
    }
    let who = filing::remove::Remover::Filer {
        user: &ctx.user,
        grace: std::time::Duration::from_secs(state.config.filing.undo_grace_minutes * 60),
        now: state.catalog.clock().now(),
    };
    filing::remove::remove(&ctx.tenant, id, &who).await
}

/// A blob read into memory, with its share of the message budget ([`crate::budget`]).
pub struct HeldBlob {
    pub bytes: Vec<u8>,
    pub held: crate::budget::Reservation,
}

/// Reads and decrypts a tenant's blob off the async runtime, under the message budget: its
/// share (by the sealed file's size) is taken first, and a 503 `busy` answers when the
/// budget cannot cover it. Integrity failures are logged and answered as a 500 (never the
/// bytes).
pub(crate) async fn read_blob(
    state: &AppState,
    tenant: &Tenant,
    blob_id: String,
) -> AppResult<HeldBlob> {
    let blobs = tenant.blobs.clone();
    let (b, id) = (blobs.clone(), blob_id.clone());
    let size = blocking(move || b.sealed_len(&id)).await?.unwrap_or(0) as usize;
    let held = state.budget.try_reserve(size).ok_or_else(AppError::busy)?;
    let bytes = blocking(move || blobs.get(&blob_id)).await.map_err(|e| {
        if !matches!(&e, AppError::Problem { .. }) {
            tracing::error!(tenant = %tenant.id, error = %e, "blob integrity failure");
        }
        e
    })?;
    Ok(HeldBlob { bytes, held })
}

/// Runs a blob store call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::storage::BlobError> + Send + 'static,
) -> AppResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("blob task: {e}")))?
        .map_err(|e| AppError::storage(e, "reading a blob"))
}

/// A download: `Content-Disposition: attachment` (RFC 6266), `nosniff`, not cached. The
/// body goes out in 64 KiB pieces, and the blob and its budget share are held until the
/// last piece is taken or the connection goes (a client that stops reading is cut off by
/// `limits.send_stall_timeout_secs`).
pub(crate) fn download(blob: HeldBlob, content_type: &'static str, name: &str) -> Response {
    const PIECE: usize = 64 * 1024;
    let HeldBlob { bytes, held } = blob;
    let total = bytes.len();
    let pieces =
        futures_util::stream::unfold((bytes, 0usize, held), |(bytes, at, held)| async move {
            if at >= bytes.len() {
                return None;
            }
            let end = (at + PIECE).min(bytes.len());
            let piece = axum::body::Bytes::copy_from_slice(&bytes[at..end]);
            Some((Ok::<_, std::convert::Infallible>(piece), (bytes, end, held)))
        });
    let mut resp = Response::new(Body::from_stream(pieces));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    resp
}

/// The original message, byte for byte, as filed (`message.eml`).
#[utoipa::path(get, path = "/v1/filings/{id}/raw", params(("id" = String, Path, description = "Filing id")),
    responses((status = 200, description = "The message", content_type = "message/rfc822", body = Vec<u8>),
        (status = 404, description = "No such filing, or not one the caller may see"),
        (status = 503, description = "Busy (`Retry-After`)")),
    security(("google_id_token" = []), ("access_token" = [])), tag = "filings")]
pub(crate) async fn raw(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let blob = if valid_id(&id) {
        filing::raw_blob_of(&ctx.tenant.db, &ctx.user.id, &id).await?
    } else {
        None
    };
    let blob = blob.ok_or_else(|| AppError::not_found("no such filing"))?;
    let blob = read_blob(&state, &ctx.tenant, blob).await?;
    Ok(download(blob, "message/rfc822", "message.eml"))
}

/// One attachment the filing kept, byte for byte (its SHA-256 is in the filing).
#[utoipa::path(get, path = "/v1/filings/{id}/attachments/{n}",
    params(("id" = String, Path, description = "Filing id"), ("n" = i64, Path, description = "The attachment's `index`")),
    responses((status = 200, description = "The attachment", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such attachment in a filing the caller may see"),
        (status = 503, description = "Busy (`Retry-After`)")),
    security(("google_id_token" = []), ("access_token" = [])), tag = "filings")]
pub(crate) async fn attachment(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path((id, n)): Path<(String, String)>,
) -> AppResult<Response> {
    let n: i64 = n
        .parse()
        .map_err(|_| AppError::not_found("no such attachment"))?;
    let found = if valid_id(&id) {
        filing::attachment_of(&ctx.tenant.db, &ctx.user.id, &id, n).await?
    } else {
        None
    };
    let (blob, name) =
        found.ok_or_else(|| AppError::not_found("no such attachment in this filing"))?;
    let blob = read_blob(&state, &ctx.tenant, blob).await?;
    Ok(download(blob, "application/octet-stream", &name))
}
