//! Request extractors: JSON bodies whose errors are problem+json, and the verified tenant
//! context (handlers never see a tenant id taken from the request).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};

use super::AppState;
use crate::accounts::tokens::{self, Scope};
use crate::audit::{self, AuditEvent};
use crate::auth::google::TokenError;
use crate::config::GOOGLE_ISSUERS;
use crate::directory::{self, IdentityRejection, User};
use crate::error::AppError;
use crate::tenancy::Tenant;

/// `Json<T>` whose rejections are precise problem+json answers.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

pub(crate) fn json_rejection(rej: JsonRejection) -> AppError {
    match rej {
        JsonRejection::MissingJsonContentType(_) => AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the body as `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(e) => AppError::bad_request(
            "invalid-json",
            format!("the body is not valid JSON: {}", inner_text(&e.body_text())),
        ),
        JsonRejection::JsonDataError(e) => {
            AppError::unprocessable("invalid-request", inner_text(&e.body_text()))
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            AppError::too_large("the request body is larger than the configured limit")
        }
        other => AppError::bad_request("invalid-body", other.body_text()),
    }
}

/// axum prefixes serde's message with its own sentence; keep serde's precise part.
fn inner_text(s: &str) -> String {
    s.split_once(": ")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| s.to_string())
}

/// The verified caller: a tenant (from signed claims) and an active user of it.
pub struct TenantCtx {
    pub tenant: Arc<Tenant>,
    pub user: User,
}

pub fn bearer(parts: &Parts) -> Result<&str, AppError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        AppError::unauthorized("an `Authorization: Bearer <Google ID token>` header is required")
    })?;
    let value = value
        .to_str()
        .map_err(|_| AppError::unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| AppError::unauthorized("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AppError::unauthorized(
            "the Authorization scheme must be Bearer",
        ));
    }
    Ok(token.trim())
}

pub fn token_error(e: TokenError) -> AppError {
    match e {
        TokenError::KeysUnavailable => AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "keys-unavailable",
            "token signing keys cannot be fetched right now; try again shortly",
        ),
        other => AppError::unauthorized(other.to_string()),
    }
}

impl FromRequestParts<AppState> for TenantCtx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let writes = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        tenant_ctx(parts, state, writes).await
    }
}

/// The verified caller of an endpoint that only reads, whatever its method (e.g.
/// `POST /v1/addon/context`, a POST only because the message travels in the body): an
/// access token with any scope may call it.
pub struct ReaderCtx(pub TenantCtx);

impl FromRequestParts<AppState> for ReaderCtx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(ReaderCtx(tenant_ctx(parts, state, false).await?))
    }
}

async fn tenant_ctx(parts: &Parts, state: &AppState, writes: bool) -> Result<TenantCtx, AppError> {
    let token = bearer(parts)?;
    if token.starts_with(tokens::PREFIX) {
        return access_token_user(parts, state, token, writes).await;
    }
    verify_user(state, token, &state.config.google.client_ids).await
}

/// A personal access token (`dkt_...`) → its tenant and active owner. Changes (filing) need
/// the `file` or `admin` scope; reads any scope.
async fn access_token_user(
    parts: &Parts,
    state: &AppState,
    secret: &str,
    writes: bool,
) -> Result<TenantCtx, AppError> {
    let client = super::admin::ctx::client_of(parts, Some(&state.config.admin));
    let (tenant, user, t) = super::admin::ctx::token_owner(state, secret, &client).await?;
    let allowed = if writes {
        t.has(Scope::File) || t.has(Scope::Admin)
    } else {
        t.has(Scope::Read) || t.has(Scope::File) || t.has(Scope::Admin)
    };
    if !allowed {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "insufficient-scope",
            "this token lacks the `file` (or `admin`) scope needed to file messages",
        ));
    }
    Ok(TenantCtx { tenant, user })
}

/// A user ID token (for one of `audiences`) → the tenant and active user it identifies.
pub async fn verify_user(
    state: &AppState,
    token: &str,
    audiences: &[String],
) -> Result<TenantCtx, AppError> {
    let claims = state
        .verifier
        .verify(token, audiences)
        .await
        .map_err(token_error)?;
    let email = match (&claims.email, claims.email_verified()) {
        (Some(e), true) => e.to_ascii_lowercase(),
        _ => {
            return Err(AppError::unauthorized(
                "the token's email is missing or not verified",
            ))
        }
    };
    // Tenant from the signed `hd` claim, else an explicit address mapping.
    let mut tenant_id = None;
    if let Some(hd) = &claims.hd {
        tenant_id = state.catalog.tenant_id_for_domain(hd).await?;
    }
    if tenant_id.is_none() {
        tenant_id = state.catalog.tenant_id_for_address(&email).await?;
    }
    let Some(tenant_id) = tenant_id else {
        tracing::info!(hd = ?claims.hd, "token maps to no tenant");
        return Err(AppError::forbidden(
            "this Google account does not belong to any docket tenant",
        ));
    };
    let tenant = state.catalog.tenant(&tenant_id).await?;
    if !tenant.is_active() {
        return Err(AppError::forbidden("this tenant is not active"));
    }
    // Google issues both spellings of its issuer for the same accounts: bind one of them.
    let iss = if GOOGLE_ISSUERS.contains(&claims.iss.as_str()) {
        GOOGLE_ISSUERS[0]
    } else {
        claims.iss.as_str()
    };
    let resolved = directory::resolve_google_user(&tenant.db, iss, &claims.sub, &email).await?;
    match resolved {
        Ok(user) => Ok(TenantCtx { tenant, user }),
        Err(why) => {
            let reason = match &why {
                IdentityRejection::NotRegistered => "not a registered user".to_string(),
                IdentityRejection::BoundToOtherAccount => {
                    "email is bound to another Google account".to_string()
                }
                IdentityRejection::Inactive(s) => format!("user is {s}"),
            };
            audit::record(
                &tenant.db,
                &[
                    AuditEvent::new(&email, "auth.rejected", &claims.sub).detail(
                        serde_json::json!({
                            "reason": reason, "iss": iss,
                        }),
                    ),
                ],
            )
            .await?;
            Err(AppError::forbidden(match why {
                IdentityRejection::NotRegistered => {
                    "you are not a user of this firm's docket; ask an administrator to add you"
                        .to_string()
                }
                IdentityRejection::BoundToOtherAccount => {
                    "this email is registered to a different Google account".to_string()
                }
                IdentityRejection::Inactive(s) => format!("your docket account is {s}"),
            }))
        }
    }
}
