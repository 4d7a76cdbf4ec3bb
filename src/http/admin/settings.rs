//! The admin API for the firm's settings and the caller's own credentials: the same acts as
//! the console's "Firm settings" and "My security" pages ([`crate::firm_settings`],
//! [`crate::accounts::login::change_password`], [`crate::accounts::totp`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::ctx::{session_required, AdminCtx};
use crate::accounts::{login, totp};
use crate::error::AppResult;
use crate::firm_settings::{self as settings, FirmSettings, Found};
use crate::http::extract::ApiJson;
use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(get_settings))
        .routes(utoipa_axum::routes!(add_domain))
        .routes(utoipa_axum::routes!(remove_domain))
        .routes(utoipa_axum::routes!(map_address))
        .routes(utoipa_axum::routes!(unmap_address))
        .routes(utoipa_axum::routes!(set_subject_pattern))
        .routes(utoipa_axum::routes!(test_subject_pattern))
        .routes(utoipa_axum::routes!(set_gmail_labels))
        .routes(utoipa_axum::routes!(set_time_zone))
        .routes(utoipa_axum::routes!(change_password))
        .routes(utoipa_axum::routes!(replace_authenticator))
        .routes(utoipa_axum::routes!(confirm_authenticator))
}

/// The firm's sign-in domains, mapped addresses and subject pattern.
#[utoipa::path(get, path = "/v1/admin/tenant/settings",
    responses((status = 200, description = "The settings", body = FirmSettings)), tag = "tenant")]
async fn get_settings(
    State(state): State<AppState>,
    ctx: AdminCtx,
) -> AppResult<Json<FirmSettings>> {
    Ok(Json(settings::load(&state.catalog, &ctx.tenant).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainBody {
    /// A DNS name, e.g. `example-law.com`.
    pub domain: String,
}

/// Adds a sign-in domain. Changing who signs in needs a person (not an access token) whose
/// sign-in or step-up is recent.
#[utoipa::path(post, path = "/v1/admin/tenant/domains", request_body = DomainBody,
    responses((status = 204, description = "Added"), (status = 409, description = "`domain-taken`"),
        (status = 422, description = "`invalid-domain`")), tag = "tenant")]
async fn add_domain(
    State(state): State<AppState>,
    ctx: AdminCtx,
    ApiJson(b): ApiJson<DomainBody>,
) -> AppResult<StatusCode> {
    ctx.person("adding a sign-in domain")?;
    settings::add_domain(&state.catalog, &ctx.tenant, &b.domain, &ctx.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a sign-in domain; refused while active people sign in through it.
#[utoipa::path(delete, path = "/v1/admin/tenant/domains/{domain}",
    params(("domain" = String, Path, description = "The domain")),
    responses((status = 204, description = "Removed"), (status = 404, description = "Not the firm's"),
        (status = 409, description = "`domain-in-use`")), tag = "tenant")]
async fn remove_domain(
    State(state): State<AppState>,
    ctx: AdminCtx,
    Path(domain): Path<String>,
) -> AppResult<StatusCode> {
    ctx.person("removing a sign-in domain")?;
    settings::remove_domain(&state.catalog, &ctx.tenant, &domain, &ctx.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    /// An e-mail address outside the firm's domains.
    pub email: String,
}

/// Maps one address to the firm (needs a recent person's session, as domains do).
#[utoipa::path(post, path = "/v1/admin/tenant/addresses", request_body = AddressBody,
    responses((status = 204, description = "Mapped"), (status = 409, description = "`address-taken`"),
        (status = 422, description = "`invalid-address` or `address-in-domain`")), tag = "tenant")]
async fn map_address(
    State(state): State<AppState>,
    ctx: AdminCtx,
    ApiJson(b): ApiJson<AddressBody>,
) -> AppResult<StatusCode> {
    ctx.person("mapping an address to the firm")?;
    settings::map_address(&state.catalog, &ctx.tenant, &b.email, &ctx.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an address mapping; refused while an active person signs in with it.
#[utoipa::path(delete, path = "/v1/admin/tenant/addresses/{email}",
    params(("email" = String, Path, description = "The mapped address")),
    responses((status = 204, description = "Removed"), (status = 404, description = "Not mapped"),
        (status = 409, description = "`address-in-use`")), tag = "tenant")]
async fn unmap_address(
    State(state): State<AppState>,
    ctx: AdminCtx,
    Path(email): Path<String>,
) -> AppResult<StatusCode> {
    ctx.person("removing an address mapping")?;
    settings::unmap_address(&state.catalog, &ctx.tenant, &email, &ctx.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternBody {
    /// A regular expression (Rust `regex` syntax, 500 characters at most); empty for
    /// docket's default.
    pub pattern: String,
}

/// Sets the subject pattern.
#[utoipa::path(put, path = "/v1/admin/tenant/subject-pattern", request_body = PatternBody,
    responses((status = 204, description = "Saved"), (status = 422, description = "`invalid-pattern`")),
    tag = "tenant")]
async fn set_subject_pattern(
    ctx: AdminCtx,
    ApiJson(b): ApiJson<PatternBody>,
) -> AppResult<StatusCode> {
    settings::set_subject_pattern(&ctx.tenant, &b.pattern, &ctx.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GmailLabelsBody {
    /// The label before the record's reference (`Filed` makes `Filed/M-2024-017`); `null`
    /// or empty turns the labels off.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// Turns the "Filed" labels in the filers' Gmail on (with a prefix) or off. The add-on
/// needs the `gmail.modify` scope for them.
#[utoipa::path(put, path = "/v1/admin/tenant/gmail-labels", request_body = GmailLabelsBody,
    responses((status = 204, description = "Saved"), (status = 422, description = "`invalid-label`")),
    tag = "tenant")]
async fn set_gmail_labels(
    ctx: AdminCtx,
    ApiJson(b): ApiJson<GmailLabelsBody>,
) -> AppResult<StatusCode> {
    settings::set_gmail_label_prefix(&ctx.tenant, b.prefix.as_deref(), &ctx.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternTestBody {
    pub pattern: String,
    /// A subject to try the pattern on.
    pub subject: String,
}

/// What a pattern finds in a subject, and which records each reference names. Saves nothing.
#[utoipa::path(post, path = "/v1/admin/tenant/subject-pattern/test", request_body = PatternTestBody,
    responses((status = 200, description = "What it finds", body = Vec<Found>),
        (status = 422, description = "`invalid-pattern`")), tag = "tenant")]
async fn test_subject_pattern(
    ctx: AdminCtx,
    ApiJson(b): ApiJson<PatternTestBody>,
) -> AppResult<Json<Vec<Found>>> {
    Ok(Json(
        settings::test_subject_pattern(&ctx.tenant, &b.pattern, &b.subject).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeZoneBody {
    /// An IANA time zone name, e.g. `Europe/London`.
    pub time_zone: String,
}

/// Sets the firm's time zone (dates on the console's pages).
#[utoipa::path(put, path = "/v1/admin/tenant/time-zone", request_body = TimeZoneBody,
    responses((status = 204, description = "Saved"), (status = 422, description = "`invalid-time-zone`")),
    tag = "tenant")]
async fn set_time_zone(ctx: AdminCtx, ApiJson(b): ApiJson<TimeZoneBody>) -> AppResult<StatusCode> {
    let tz = b.time_zone.trim();
    if !crate::time_fmt::valid_time_zone(tz) {
        return Err(crate::error::AppError::unprocessable(
            "invalid-time-zone",
            format!("“{tz}” is not a time zone: give an IANA name such as Europe/London"),
        ));
    }
    let key = super::ctx::TIME_ZONE_SETTING;
    crate::suggest::set_setting(&ctx.tenant.db, key, tz, &ctx.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    pub current_password: String,
    pub new_password: String,
}

/// Changes the caller's own password (a session only); every other session of the caller
/// ends. A wrong current password counts toward the lockout.
#[utoipa::path(post, path = "/v1/admin/me/password", request_body = PasswordBody,
    responses((status = 204, description = "Changed"),
        (status = 403, description = "`wrong-password`, `session-required` or `account-suspended`"),
        (status = 422, description = "`weak-password` or `same-password`")), tag = "session")]
async fn change_password(
    ctx: AdminCtx,
    ApiJson(b): ApiJson<PasswordBody>,
) -> AppResult<StatusCode> {
    let s = ctx
        .session()
        .ok_or_else(|| session_required("changing a password"))?;
    let new = &b.new_password;
    login::change_password(&ctx.tenant, &ctx.user, s, &b.current_password, new, new).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replacing the caller's authenticator, step 1 (needs a recent sign-in or step-up, with the
/// old app's code or a recovery code): the new secret. The old app works until step 2.
#[utoipa::path(post, path = "/v1/admin/me/totp/replace",
    responses((status = 200, description = "Scan it, then confirm", body = totp::Enrolment),
        (status = 403, description = "`reauth-required` or `session-required`")), tag = "session")]
async fn replace_authenticator(ctx: AdminCtx) -> AppResult<Json<totp::Enrolment>> {
    ctx.person("replacing your authenticator")?;
    Ok(Json(totp::begin_reenrolment(&ctx.tenant, &ctx.user).await?))
}

/// Replacing the caller's authenticator, step 2: a code from the new app swaps it in;
/// returns ten new recovery codes (shown only now).
#[utoipa::path(post, path = "/v1/admin/me/totp/replace/confirm", request_body = super::account::CodeBody,
    responses((status = 200, description = "Replaced", body = super::account::RecoveryCodesReply),
        (status = 422, description = "`invalid-code`"), (status = 409, description = "`no-enrolment`")),
    tag = "session")]
async fn confirm_authenticator(
    ctx: AdminCtx,
    ApiJson(b): ApiJson<super::account::CodeBody>,
) -> AppResult<Json<super::account::RecoveryCodesReply>> {
    ctx.person("replacing your authenticator")?;
    let codes = totp::confirm_reenrolment(&ctx.tenant, &ctx.user, &b.code, &ctx.actor()).await?;
    Ok(Json(super::account::RecoveryCodesReply {
        recovery_codes: codes,
    }))
}
