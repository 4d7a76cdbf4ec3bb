//! Account security in the admin API: personal access tokens, the sign-in audit, reset
//! requests and set-password links, and tenant closure. Also the two public password-reset
//! endpoints (the "forgot password" request and completing an issued link).

use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::ctx::{client_of, csrf_error, same_origin, AdminCtx, Client};
use crate::accounts::reset::{self, IssuedLink, ResetRequest};
use crate::accounts::tokens::{self, AccessToken, Scope};
use crate::audit::{self, AuditEvent};
use crate::error::{AppError, AppResult};
use crate::http::extract::ApiJson;
use crate::http::AppState;
use crate::tenancy::{Closure, Tenant};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(list_tokens, create_token))
        .routes(utoipa_axum::routes!(revoke_token))
        .routes(utoipa_axum::routes!(sign_ins))
        .routes(utoipa_axum::routes!(sign_in_ips))
        .routes(utoipa_axum::routes!(reset_requests))
        .routes(utoipa_axum::routes!(issue_reset))
        .routes(utoipa_axum::routes!(dismiss_reset))
        .routes(utoipa_axum::routes!(password_link))
        .routes(utoipa_axum::routes!(tenant_facts))
        .routes(utoipa_axum::routes!(close_tenant))
        .routes(utoipa_axum::routes!(request_reset))
        .routes(utoipa_axum::routes!(complete_reset))
}

/// The client (IP honouring trusted proxies) of a request that needs no credentials.
pub struct PublicClient(pub Client);

impl FromRequestParts<AppState> for PublicClient {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if !same_origin(parts) {
            return Err(csrf_error());
        }
        Ok(PublicClient(client_of(parts, Some(&state.config.admin))))
    }
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> AppResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| AppError::bad_request("invalid-query", e.body_text()))
}

// ---- access tokens ----------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<AccessToken>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for (1-100 characters).
    pub name: String,
    pub scopes: Vec<Scope>,
    /// 1..=366.
    pub expires_in_days: u32,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// The secret: shown this once, stored only as a hash.
    pub token: String,
    #[serde(flatten)]
    pub info: AccessToken,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// `true`: every token of the firm, not only the caller's.
    #[serde(default)]
    pub all: bool,
}

/// The caller's access tokens (or with `all=true` every token of the firm), live and past,
/// newest first.
#[utoipa::path(get, path = "/v1/admin/tokens", params(TokenQuery),
    responses((status = 200, description = "The tokens", body = TokenList)),
    tag = "tokens")]
async fn list_tokens(
    ctx: AdminCtx,
    q: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<TokenList>> {
    let tokens = if query(q)?.all {
        tokens::list_all(&ctx.tenant.db).await?
    } else {
        tokens::list_for_user(&ctx.tenant.db, &ctx.user.id).await?
    };
    Ok(Json(TokenList { tokens }))
}

/// Creates a token for the caller (a person's session with a recent sign-in only); the
/// secret is in this answer only.
#[utoipa::path(post, path = "/v1/admin/tokens", request_body = NewToken,
    responses((status = 201, description = "Created; `token` is shown once", body = CreatedToken),
        (status = 403, description = "`session-required` (an access token) or `reauth-required`")),
    tag = "tokens")]
async fn create_token(ctx: AdminCtx, ApiJson(req): ApiJson<NewToken>) -> AppResult<Response> {
    ctx.person("creating an access token")?;
    let (token, info) = tokens::create(
        &ctx.tenant.db,
        &ctx.tenant.id,
        &ctx.user.id,
        &req.name,
        &req.scopes,
        req.expires_in_days,
        &ctx.actor(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })).into_response())
}

/// Revokes any token of the firm, the caller's or another person's (an `admin` token may
/// do this too: revoking only takes power away).
#[utoipa::path(delete, path = "/v1/admin/tokens/{id}",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "Revoked", body = AccessToken),
        (status = 404, description = "No such token in this firm")),
    tag = "tokens")]
async fn revoke_token(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<Json<AccessToken>> {
    Ok(Json(
        tokens::revoke(&ctx.tenant.db, &id, &ctx.actor()).await?,
    ))
}

// ---- sign-in audit ----------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignIn {
    pub id: String,
    /// UTC.
    pub at: String,
    pub email: String,
    pub user_id: Option<String>,
    pub result: String,
    pub reason: String,
    pub ip: String,
    pub user_agent: String,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SignInQuery {
    /// Only attempts for this address.
    #[serde(default)]
    pub email: Option<String>,
    /// Only attempts with this result.
    #[serde(default)]
    pub result: Option<String>,
    /// 1..=1000, default 100.
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct SignInList {
    pub sign_ins: Vec<SignIn>,
}

/// Sign-in attempts, newest first.
pub async fn list_sign_ins(pool: &AnyPool, q: &SignInQuery) -> AppResult<Vec<SignIn>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::bad_request(
            "invalid-query",
            "`limit` must be 1..=1000",
        ));
    }
    let email = q.email.as_deref().unwrap_or("").trim().to_ascii_lowercase();
    let result = q.result.as_deref().unwrap_or("").trim().to_string();
    let rows = sqlx::query(
        "SELECT id, at, email, user_id, result, reason, ip, user_agent FROM login_attempts \
         WHERE ($1 = '' OR email = $1) AND ($2 = '' OR result = $2) \
         ORDER BY at DESC, id DESC LIMIT $3",
    )
    .bind(email)
    .bind(result)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| SignIn {
            id: r.get("id"),
            at: r.get("at"),
            email: r.get("email"),
            user_id: r.get("user_id"),
            result: r.get("result"),
            reason: r.get("reason"),
            ip: r.get("ip"),
            user_agent: r.get("user_agent"),
        })
        .collect())
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IpSummary {
    pub ip: String,
    pub attempts: i64,
    pub successes: i64,
    pub failures: i64,
    /// How many different addresses were tried from this IP.
    pub distinct_emails: i64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Serialize, ToSchema)]
pub struct IpList {
    pub ips: Vec<IpSummary>,
}

/// The addresses users sign in from, most recently seen first (at most 1000).
pub async fn list_ips(pool: &AnyPool) -> AppResult<Vec<IpSummary>> {
    let rows = sqlx::query(
        "SELECT ip, COUNT(*) AS attempts, \
                SUM(CASE WHEN result = 'success' THEN 1 ELSE 0 END) AS successes, \
                COUNT(DISTINCT email) AS emails, MIN(at) AS first_seen, MAX(at) AS last_seen \
         FROM login_attempts GROUP BY ip ORDER BY MAX(at) DESC, ip LIMIT 1000",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let attempts: i64 = r.get("attempts");
            let successes: i64 = r.try_get("successes").unwrap_or(0);
            IpSummary {
                ip: r.get("ip"),
                attempts,
                successes,
                failures: attempts - successes,
                distinct_emails: r.get("emails"),
                first_seen: r.get("first_seen"),
                last_seen: r.get("last_seen"),
            }
        })
        .collect())
}

/// Every sign-in attempt: email, time (UTC), result, reason, IP, user agent.
#[utoipa::path(get, path = "/v1/admin/sign-ins", params(SignInQuery),
    responses((status = 200, description = "Attempts, newest first", body = SignInList)),
    tag = "sign-ins")]
async fn sign_ins(
    ctx: AdminCtx,
    q: Result<Query<SignInQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<SignInList>> {
    let q = query(q)?;
    Ok(Json(SignInList {
        sign_ins: list_sign_ins(&ctx.tenant.db, &q).await?,
    }))
}

/// The IP addresses sign-ins come from, with counts.
#[utoipa::path(get, path = "/v1/admin/sign-ins/ips",
    responses((status = 200, description = "Per IP address", body = IpList)),
    tag = "sign-ins")]
async fn sign_in_ips(ctx: AdminCtx) -> AppResult<Json<IpList>> {
    Ok(Json(IpList {
        ips: list_ips(&ctx.tenant.db).await?,
    }))
}

// ---- reset requests ---------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResetQuery {
    /// open, issued, dismissed or used.
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ResetList {
    pub requests: Vec<ResetRequest>,
}

/// Password reset requests, newest first.
#[utoipa::path(get, path = "/v1/admin/reset-requests", params(ResetQuery),
    responses((status = 200, description = "Requests", body = ResetList)),
    tag = "resets")]
async fn reset_requests(
    ctx: AdminCtx,
    q: Result<Query<ResetQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<ResetList>> {
    let q = query(q)?;
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    Ok(Json(ResetList {
        requests: reset::list(&ctx.tenant.db, status, 1000).await?,
    }))
}

/// Issues a one-time set-password link for an open request naming an active user (a
/// person's session with a recent sign-in only: the link is shown to that admin alone).
#[utoipa::path(post, path = "/v1/admin/reset-requests/{id}/issue",
    params(("id" = String, Path, description = "Request id")),
    responses((status = 200, description = "The link, shown once", body = IssuedLink),
        (status = 403, description = "`session-required` or `reauth-required`"),
        (status = 409, description = "Not open, or no active user")),
    tag = "resets")]
async fn issue_reset(
    State(state): State<AppState>,
    ctx: AdminCtx,
    Path(id): Path<String>,
) -> AppResult<Json<IssuedLink>> {
    ctx.person("issuing a set-password link")?;
    Ok(Json(
        reset::issue(
            &ctx.tenant,
            &id,
            &ctx.actor(),
            state.config.admin.reset_link_minutes,
        )
        .await?,
    ))
}

/// Dismisses an open request.
#[utoipa::path(post, path = "/v1/admin/reset-requests/{id}/dismiss",
    params(("id" = String, Path, description = "Request id")),
    responses((status = 200, description = "Dismissed", body = ResetRequest)),
    tag = "resets")]
async fn dismiss_reset(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<Json<ResetRequest>> {
    Ok(Json(reset::dismiss(&ctx.tenant, &id, &ctx.actor()).await?))
}

/// Issues a set-password link for a user directly (e.g. a new admin's first password); a
/// person's session with a recent sign-in only.
#[utoipa::path(post, path = "/v1/admin/users/{id}/password-link",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The link, shown once", body = IssuedLink),
        (status = 403, description = "`session-required` or `reauth-required`")),
    tag = "resets")]
async fn password_link(
    State(state): State<AppState>,
    ctx: AdminCtx,
    Path(id): Path<String>,
) -> AppResult<Json<IssuedLink>> {
    ctx.person("issuing a set-password link")?;
    Ok(Json(
        reset::issue_for_user(
            &ctx.tenant,
            &id,
            &ctx.actor(),
            state.config.admin.reset_link_minutes,
            &ctx.client.ip.to_string(),
        )
        .await?,
    ))
}

// ---- public reset endpoints -------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetAsk {
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub struct ResetAccepted {
    pub status: &'static str,
    pub message: &'static str,
}

pub const RESET_ACCEPTED: ResetAccepted = ResetAccepted {
    status: "received",
    message: "If this address belongs to a docket account, your request has been passed to \
              your firm's administrators. They will contact you.",
};

/// Every answer to a reset request takes at least this long, whatever was (not) found.
const RESET_FLOOR: Duration = Duration::from_millis(250);

/// Files a reset request for whichever tenant the address maps to (if any). Both lookups
/// always run and a matching tenant always gets a row, known user or not; the caller pads
/// the answer to [`RESET_FLOOR`].
pub async fn file_reset_request(state: &AppState, email: &str, client: &Client) -> AppResult<()> {
    let email = email.trim().to_ascii_lowercase();
    let domain = match email.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty() && domain.contains('.') && email.len() <= 254 =>
        {
            domain.to_string()
        }
        _ => {
            return Err(AppError::unprocessable(
                "invalid-email",
                "give the email address you sign in with",
            ))
        }
    };
    let by_domain = state.catalog.tenant_id_for_domain(&domain).await?;
    let by_address = state.catalog.tenant_id_for_address(&email).await?;
    let Some(tenant_id) = by_domain.or(by_address) else {
        return Ok(());
    };
    let tenant = state.catalog.tenant(&tenant_id).await?;
    if !tenant.is_active() {
        return Ok(());
    }
    reset::request(&tenant, &email, &client.ip.to_string(), &client.user_agent).await?;
    Ok(())
}

/// Hands back `r` once [`RESET_FLOOR`] has passed since `start` (uniform answer times).
pub async fn padded<T>(start: Instant, r: T) -> T {
    if let Some(left) = RESET_FLOOR.checked_sub(start.elapsed()) {
        tokio::time::sleep(left).await;
    }
    r
}

/// "Forgot password": passes the request to the firm's administrators. Always the same
/// answer, whether or not the account exists.
#[utoipa::path(post, path = "/v1/password-reset", request_body = ResetAsk,
    responses((status = 202, description = "Received (always)", body = ResetAccepted)),
    security(()),
    tag = "resets")]
async fn request_reset(
    State(state): State<AppState>,
    PublicClient(client): PublicClient,
    ApiJson(req): ApiJson<ResetAsk>,
) -> AppResult<Response> {
    let start = Instant::now();
    let r = file_reset_request(&state, &req.email, &client).await;
    padded(start, r).await?;
    Ok((StatusCode::ACCEPTED, Json(RESET_ACCEPTED)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetComplete {
    /// The token part of the link (after `/console/reset/`).
    pub token: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct ResetDone {
    pub email: String,
}

/// The tenant of a link token, when the token is well formed and the tenant active.
pub async fn tenant_of_link(
    state: &AppState,
    token: &str,
) -> AppResult<Option<std::sync::Arc<crate::tenancy::Tenant>>> {
    let Some((tenant_id, _)) = reset::split_token(token) else {
        return Ok(None);
    };
    if !state.catalog.tenant_exists(tenant_id).await? {
        return Ok(None);
    }
    let tenant = state.catalog.tenant(tenant_id).await?;
    Ok(tenant.is_active().then_some(tenant))
}

/// Uses an issued link: sets the password. 410 when the link is expired, used or unknown;
/// 422 (link still usable) when the password is refused.
#[utoipa::path(post, path = "/v1/password-reset/complete", request_body = ResetComplete,
    responses((status = 200, description = "Password set", body = ResetDone),
        (status = 410, description = "The link is no longer valid"),
        (status = 422, description = "Password refused by the policy")),
    security(()),
    tag = "resets")]
async fn complete_reset(
    State(state): State<AppState>,
    PublicClient(client): PublicClient,
    ApiJson(req): ApiJson<ResetComplete>,
) -> AppResult<Json<ResetDone>> {
    let tenant = tenant_of_link(&state, &req.token)
        .await?
        .ok_or_else(reset::link_gone)?;
    let user = reset::complete(&tenant, &req.token, &req.password, &client.ip.to_string()).await?;
    Ok(Json(ResetDone { email: user.email }))
}

// ---- the tenant and its closure ---------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct TenantFacts {
    pub id: String,
    pub name: String,
    pub status: String,
    pub created_at: String,
    pub domains: Vec<String>,
    pub closure: Option<Closure>,
}

pub async fn tenant_facts_of(state: &AppState, ctx: &AdminCtx) -> AppResult<TenantFacts> {
    let info = state
        .catalog
        .tenant_info(&ctx.tenant.id)
        .await?
        .ok_or_else(|| AppError::not_found("no such tenant"))?;
    Ok(TenantFacts {
        closure: state.catalog.closure(&info.id).await?,
        id: info.id,
        name: info.name,
        status: info.status,
        created_at: info.created_at,
        domains: info.domains,
    })
}

/// The caller's tenant: name, status, domains, closure dates if any.
#[utoipa::path(get, path = "/v1/admin/tenant",
    responses((status = 200, description = "The tenant", body = TenantFacts)),
    tag = "tenant")]
async fn tenant_facts(
    State(state): State<AppState>,
    ctx: AdminCtx,
) -> AppResult<Json<TenantFacts>> {
    Ok(Json(tenant_facts_of(&state, &ctx).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseTenant {
    /// The caller's password.
    pub password: String,
    /// A current authenticator (TOTP) code.
    pub code: String,
    /// The tenant's name, typed exactly.
    pub confirm_name: String,
}

#[derive(Serialize, ToSchema)]
pub struct Closed {
    pub terminated_at: String,
    /// Data is deleted on or after this date.
    pub purge_after: String,
}

/// Closes the tenant after re-authentication in this request: audits `tenant.closed`, ends
/// every session, revokes every token and terminates the tenant in the catalogue (which
/// records the purge date).
pub async fn close(
    state: &AppState,
    ctx: &AdminCtx,
    password: &str,
    code: &str,
    confirm_name: &str,
) -> AppResult<Closure> {
    let Some(session) = ctx.session() else {
        return Err(super::ctx::session_required("closing the firm's docket"));
    };
    if confirm_name.trim() != ctx.tenant.name {
        return Err(AppError::unprocessable(
            "confirm-name",
            format!(
                "type the firm's name exactly ({:?}) to confirm the closure",
                ctx.tenant.name
            ),
        ));
    }
    crate::accounts::login::reauthenticate(&ctx.tenant, &ctx.user, session, password, code).await?;
    let detail = serde_json::json!({ "name": ctx.tenant.name, "ip": ctx.client.ip.to_string() });
    let retention = state.config.admin.retention_days;
    terminate_tenant(&state.catalog, retention, &ctx.tenant, &ctx.actor(), detail).await
}

/// Terminates a tenant (a firm's admin closing its docket, or an operator): audits
/// `tenant.closed` (with `detail` and what was ended), ends every session, revokes every
/// token, then terminates the tenant in the catalogue, which records the purge date
/// (`retention_days`, the setting `admin.retention_days`, later).
pub async fn terminate_tenant(
    catalog: &crate::tenancy::Catalog,
    retention: u64,
    tenant: &Tenant,
    actor: &str,
    mut detail: serde_json::Value,
) -> AppResult<Closure> {
    // A tenant suspended since before an upgrade was never migrated (suspended ones are
    // not, in case of a restore); a terminated one is never restored, so bring it up to date.
    crate::tenancy::db::migrate_tenant(&tenant.db, tenant.backend)
        .await
        .map_err(AppError::internal)?;
    {
        let _guard = tenant.write_guard().await;
        let mut tx = tenant.begin().await?;
        audit::lock_chain(&mut tx).await?;
        let sessions = sqlx::query("DELETE FROM sessions")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let revoked =
            sqlx::query("UPDATE access_tokens SET revoked_at = $1 WHERE revoked_at IS NULL")
                .bind(crate::time_fmt::now_rfc3339())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        detail["retention_days"] = retention.into();
        detail["sessions_ended"] = sessions.into();
        detail["tokens_revoked"] = revoked.into();
        audit::append(
            &mut tx,
            &AuditEvent::new(actor, "tenant.closed", &tenant.id).detail(detail),
        )
        .await?;
        tx.commit().await?;
    }
    Ok(catalog.terminate(&tenant.id, actor, retention).await?)
}

/// Closes the firm's docket (session only; password + authenticator code in this request,
/// and the tenant's name typed). Data is purged `retention_days` (90) later.
#[utoipa::path(post, path = "/v1/admin/tenant/close", request_body = CloseTenant,
    responses((status = 200, description = "Terminated", body = Closed),
        (status = 403, description = "Not a session"),
        (status = 422, description = "The name does not match")),
    tag = "tenant")]
async fn close_tenant(
    State(state): State<AppState>,
    ctx: AdminCtx,
    ApiJson(req): ApiJson<CloseTenant>,
) -> AppResult<Json<Closed>> {
    let c = close(&state, &ctx, &req.password, &req.code, &req.confirm_name).await?;
    Ok(Json(Closed {
        terminated_at: c.terminated_at,
        purge_after: c.purge_after,
    }))
}
