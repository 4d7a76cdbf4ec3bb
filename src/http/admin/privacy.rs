//! GDPR requests in the admin API: what docket holds about an address, its access export
//! (zip) and its erasure. See [`crate::gdpr`].

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AdminCtx, Via};
use crate::accounts::tokens::Scope;
use crate::error::AppError;
use crate::error::AppResult;
use crate::gdpr::{self, Erased};
use crate::http::extract::ApiJson;
use crate::http::AppState;
use axum::http::StatusCode;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(summary))
        .routes(routes!(export))
        .routes(routes!(erase))
}

#[derive(Deserialize, IntoParams)]
pub struct SubjectQuery {
    /// The person's email address.
    pub email: String,
}

/// Counts of what docket holds about an address.
#[derive(Serialize, ToSchema)]
pub struct SubjectSummary {
    pub email: String,
    pub filings: usize,
    /// Of those, covered by a legal hold (an erasure keeps them).
    pub filings_on_hold: usize,
    /// Filings in records the asking admin is walled off from (not exported, not erased by
    /// them).
    pub filings_walled: usize,
    /// Records listing the address as a contact.
    pub record_contacts: usize,
    pub has_user_account: bool,
    pub sign_ins: usize,
    pub reset_requests: usize,
    pub audit_entries: usize,
}

pub async fn summarise(ctx: &AdminCtx, email: &str) -> AppResult<SubjectSummary> {
    let f = gdpr::find(&ctx.tenant.db, email, Some(&ctx.user.id)).await?;
    Ok(SubjectSummary {
        filings_on_hold: f.filings.iter().filter(|x| x.on_hold).count(),
        filings: f.filings.len(),
        filings_walled: f.filings_walled,
        record_contacts: f.record_contacts.len(),
        has_user_account: f.user.is_some(),
        sign_ins: f.sign_ins.len(),
        reset_requests: f.reset_requests.len(),
        audit_entries: f.audit_entries.len(),
        email: f.email,
    })
}

/// What docket holds about an address (counts).
#[utoipa::path(get, path = "/v1/admin/subjects", params(SubjectQuery),
    responses((status = 200, description = "Counts", body = SubjectSummary),
        (status = 422, description = "Not an email address")), tag = "gdpr")]
async fn summary(ctx: AdminCtx, Query(q): Query<SubjectQuery>) -> AppResult<Json<SubjectSummary>> {
    Ok(Json(summarise(&ctx, &q.email).await?))
}

/// The zip answered to a subject access request.
pub fn zip_download(bytes: Vec<u8>, email: &str) -> Response {
    let name = format!("subject-access-{}.zip", email.replace(['@', '.'], "-"));
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A subject access export: a zip with `manifest.json` and the messages as `.eml` files.
/// Audited as `subject.exported`.
#[utoipa::path(get, path = "/v1/admin/subjects/export", params(SubjectQuery),
    responses((status = 200, description = "The export", content_type = "application/zip"),
        (status = 422, description = "Not an email address")), tag = "gdpr")]
async fn export(
    State(state): State<AppState>,
    ctx: AdminCtx,
    Query(q): Query<SubjectQuery>,
) -> AppResult<Response> {
    // It hands out filed mail: a token needs the `admin` scope, not only `read`.
    if let Via::Token(t) = &ctx.via {
        if !t.has(Scope::Admin) {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                "insufficient-scope",
                "a subject access export needs a token with the `admin` scope",
            ));
        }
    }
    let viewer = Some(ctx.user.id.as_str());
    let bytes = gdpr::export(&state.budget, &ctx.tenant, &q.email, viewer, &ctx.actor()).await?;
    Ok(zip_download(bytes, &q.email))
}

#[derive(Deserialize, ToSchema)]
pub struct EraseRequest {
    pub email: String,
    /// The firm's reference for the request (kept in the audit entry).
    #[serde(default)]
    pub request: String,
}

/// Erases a person's personal data (filings not under legal hold, user account, sign-ins,
/// their mentions in the audit chain, which still verifies). Audited as `subject.erased`.
#[utoipa::path(post, path = "/v1/admin/subjects/erase", request_body = EraseRequest,
    responses((status = 200, description = "What was erased", body = Erased),
        (status = 422, description = "Not an email address, or the caller's own")), tag = "gdpr")]
async fn erase(
    State(state): State<AppState>,
    ctx: AdminCtx,
    ApiJson(req): ApiJson<EraseRequest>,
) -> AppResult<Json<Erased>> {
    if ctx.session().is_none() {
        return Err(super::ctx::session_required("erasing a person's data"));
    }
    let actor = ctx.actor();
    let ask = gdpr::ErasureRequest {
        email: &req.email,
        request: &req.request,
        actor: &actor,
        caller: &ctx.user.email,
        viewer: Some(&ctx.user.id),
    };
    let done = gdpr::erase(&state.catalog, &ctx.tenant, &ask).await?;
    crate::maintenance::sweep_soon(&state, &ctx.tenant);
    Ok(Json(done))
}
