//! Signing in to the admin API (and console) with a password and TOTP, the caller's own
//! account (`/v1/admin/me`, re-authentication, recovery codes), and suspending,
//! reactivating and signing out other users.
//!
//! Sign-in steps run on a *pending* session ([`PendingCtx`]), which does not check CSRF
//! itself: every state-changing handler here compares `X-CSRF-Token` with the session's token
//! (returned by `POST /v1/admin/session`).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;

use super::ctx::{self, csrf_error, AdminCtx, Client, PendingCtx, CSRF_HEADER};
use crate::accounts::login::{self, LoginError, Next};
use crate::accounts::session::{self, Session};
use crate::accounts::{same, totp};
use crate::directory::{self, Role, User};
use crate::error::{AppError, AppResult};
use crate::http::extract::ApiJson;
use crate::http::AppState;

/// The client's address (trusted proxies honoured) for a request without a session; refuses
/// cross-site posts (login CSRF).
pub struct SignInClient(pub Client);

impl FromRequestParts<AppState> for SignInClient {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        if !ctx::same_origin(parts) {
            return Err(csrf_error());
        }
        Ok(SignInClient(ctx::client_of(
            parts,
            Some(&state.config.admin),
        )))
    }
}

/// CSRF check for handlers on a pending session.
pub fn check_csrf_header(headers: &HeaderMap, session: &Session) -> AppResult<()> {
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if same(sent, &session.csrf) {
        Ok(())
    } else {
        Err(csrf_error())
    }
}

fn admin_only(user: &User) -> AppResult<()> {
    if user.role == Role::Admin {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::FORBIDDEN,
            "not-an-admin",
            "only administrators can sign in to the docket console",
        ))
    }
}

fn with_cookie(
    state: &AppState,
    tenant_id: &str,
    token: &str,
    body: impl IntoResponse,
) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        ctx::set_session_cookie(state, tenant_id, token),
    );
    r
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct SignInBody {
    pub email: String,
    pub password: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SignInReply {
    /// `second_factor`: send a code to `/v1/admin/session/second-factor`; `enrol`: set up an
    /// authenticator with `/v1/admin/session/totp/enrol` and `/confirm`.
    pub next: Next,
    /// Send as `X-CSRF-Token` on the next steps.
    pub csrf: String,
}

/// Step 1 of signing in: email and password. Sets the (pending) session cookie.
#[utoipa::path(post, path = "/v1/admin/session", request_body = SignInBody,
    responses(
        (status = 200, description = "Password accepted; the second factor comes next", body = SignInReply),
        (status = 401, description = "`invalid-credentials` (unknown address or wrong password, alike)"),
        (status = 403, description = "`account-suspended`, `account-disabled` or `not-an-admin`"),
        (status = 429, description = "`throttled`: too many failures from this address (see `Retry-After`)")),
    security(()),
    tag = "session")]
async fn create_session(
    State(state): State<AppState>,
    SignInClient(client): SignInClient,
    ApiJson(body): ApiJson<SignInBody>,
) -> Result<Response, LoginError> {
    let s = login::sign_in(&state, &body.email, &body.password, &client).await?;
    Ok(with_cookie(
        &state,
        &s.tenant.id,
        &s.token,
        Json(SignInReply {
            next: s.next,
            csrf: s.session.csrf.clone(),
        }),
    ))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct CodeBody {
    /// The 6-digit code from the authenticator app, or a recovery code.
    pub code: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SignedInReply {
    /// The new session's CSRF token (send as `X-CSRF-Token` on changes).
    pub csrf: String,
}

/// Step 2: the authenticator code (or a recovery code). Replaces the session cookie with a
/// complete session's.
#[utoipa::path(post, path = "/v1/admin/session/second-factor", request_body = CodeBody,
    responses(
        (status = 200, description = "Signed in", body = SignedInReply),
        (status = 401, description = "`invalid-code`"),
        (status = 403, description = "`csrf`, or `account-suspended` after the third failure"),
        (status = 409, description = "`not-enrolled` or `already-signed-in`"),
        (status = 429, description = "`throttled`")),
    tag = "session")]
async fn second_factor(
    State(state): State<AppState>,
    ctx: PendingCtx,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Response, LoginError> {
    check_csrf_header(&headers, &ctx.session)?;
    admin_only(&ctx.user)?;
    let (token, s) = login::second_factor(
        &state,
        &ctx.tenant,
        &ctx.user,
        &ctx.session,
        &body.code,
        &ctx.client,
    )
    .await?;
    Ok(with_cookie(
        &state,
        &ctx.tenant.id,
        &token,
        Json(SignedInReply { csrf: s.csrf }),
    ))
}

/// Enrolment, step 1 (pending session of an admin without an authenticator): a new secret.
#[utoipa::path(post, path = "/v1/admin/session/totp/enrol",
    responses(
        (status = 200, description = "Scan the QR code or type the secret, then confirm with a code", body = totp::Enrolment),
        (status = 409, description = "`already-enrolled`")),
    tag = "session")]
async fn totp_enrol(ctx: PendingCtx, headers: HeaderMap) -> AppResult<Json<totp::Enrolment>> {
    check_csrf_header(&headers, &ctx.session)?;
    admin_only(&ctx.user)?;
    Ok(Json(totp::begin_enrolment(&ctx.tenant, &ctx.user).await?))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EnrolledReply {
    /// Ten one-time recovery codes: shown only now.
    pub recovery_codes: Vec<String>,
    pub csrf: String,
}

/// Enrolment, step 2: the first code confirms the authenticator; returns the recovery codes
/// and completes the session (new cookie).
#[utoipa::path(post, path = "/v1/admin/session/totp/confirm", request_body = CodeBody,
    responses(
        (status = 200, description = "Enrolled and signed in", body = EnrolledReply),
        (status = 422, description = "`invalid-code`"),
        (status = 409, description = "`already-enrolled` or `no-enrolment`")),
    tag = "session")]
async fn totp_confirm(
    State(state): State<AppState>,
    ctx: PendingCtx,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CodeBody>,
) -> AppResult<Response> {
    check_csrf_header(&headers, &ctx.session)?;
    admin_only(&ctx.user)?;
    let (codes, token, s) = login::confirm_enrolment(
        &state,
        &ctx.tenant,
        &ctx.user,
        &ctx.session,
        &body.code,
        &ctx.client,
    )
    .await?;
    Ok(with_cookie(
        &state,
        &ctx.tenant.id,
        &token,
        Json(EnrolledReply {
            recovery_codes: codes,
            csrf: s.csrf,
        }),
    ))
}

/// Signs out: ends this session and clears the cookie.
#[utoipa::path(delete, path = "/v1/admin/session",
    responses((status = 204, description = "Signed out"), (status = 401, description = "No session")),
    tag = "session")]
async fn delete_session(
    State(state): State<AppState>,
    ctx: PendingCtx,
    headers: HeaderMap,
) -> AppResult<Response> {
    check_csrf_header(&headers, &ctx.session)?;
    login::logout(&ctx.tenant, &ctx.user, &ctx.session).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, ctx::clear_session_cookie(&state))],
    )
        .into_response())
}

/// A user as the admin API shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub display_name: String,
    /// `admin`, `filer` or `viewer`
    pub role: String,
    /// `active`, `suspended` or `disabled`
    pub status: String,
    pub created_at: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            role: u.role.as_str().to_string(),
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            status: u.status,
            created_at: u.created_at,
        }
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MeReply {
    pub user: UserView,
    /// `session` or `token`
    pub via: String,
    /// The current session (absent for access tokens).
    pub session: Option<Session>,
    /// The session's CSRF token for `X-CSRF-Token` (empty for access tokens).
    pub csrf: String,
    pub totp_enrolled: bool,
    pub recovery_codes_left: i64,
}

/// Who is calling.
#[utoipa::path(get, path = "/v1/admin/me",
    responses((status = 200, description = "The signed-in admin", body = MeReply)),
    tag = "session")]
async fn me(ctx: AdminCtx) -> AppResult<Json<MeReply>> {
    let db = &ctx.tenant.db;
    Ok(Json(MeReply {
        totp_enrolled: totp::is_enrolled(db, &ctx.user.id).await?,
        recovery_codes_left: totp::recovery_codes_left(db, &ctx.user.id).await?,
        via: if ctx.session().is_some() {
            "session"
        } else {
            "token"
        }
        .into(),
        session: ctx.session().cloned(),
        csrf: ctx.csrf().to_string(),
        user: ctx.user.clone().into(),
    }))
}

fn session_only<'a>(ctx: &'a AdminCtx, what: &str) -> AppResult<&'a Session> {
    ctx.session().ok_or_else(|| ctx::session_required(what))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct ReauthBody {
    pub password: String,
    /// A 6-digit authenticator code or a recovery code.
    pub code: String,
}

/// Re-enter password and code: sensitive actions are allowed for 5 minutes afterwards.
#[utoipa::path(post, path = "/v1/admin/reauth", request_body = ReauthBody,
    responses((status = 204, description = "Re-authenticated"),
        (status = 403, description = "`reauth-failed`, `session-required`, or `account-suspended` after the third failure")),
    tag = "session")]
async fn reauth(ctx: AdminCtx, ApiJson(body): ApiJson<ReauthBody>) -> AppResult<StatusCode> {
    let s = session_only(&ctx, "re-authentication")?;
    login::reauthenticate(&ctx.tenant, &ctx.user, s, &body.password, &body.code).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RecoveryCodesReply {
    /// Ten new one-time codes (the old ones no longer work): shown only now.
    pub recovery_codes: Vec<String>,
}

/// New recovery codes (needs a sign-in or re-authentication within the last 5 minutes).
#[utoipa::path(post, path = "/v1/admin/me/recovery-codes",
    responses((status = 200, description = "New codes", body = RecoveryCodesReply),
        (status = 403, description = "`reauth-required` or `session-required`")),
    tag = "session")]
async fn regenerate_codes(ctx: AdminCtx) -> AppResult<Json<RecoveryCodesReply>> {
    ctx.person("regenerating recovery codes")?;
    Ok(Json(RecoveryCodesReply {
        recovery_codes: totp::regenerate_recovery_codes(&ctx.tenant, &ctx.user.id, &ctx.actor())
            .await?,
    }))
}

/// Ends one of the caller's own sessions by its public id.
#[utoipa::path(delete, path = "/v1/admin/me/sessions/{id}",
    params(("id" = String, Path, description = "Public session id (12 hex digits)")),
    responses((status = 204, description = "Ended"), (status = 404, description = "No such session of yours")),
    tag = "session")]
async fn end_my_session(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<StatusCode> {
    if session::end_by_public_id(&ctx.tenant.db, &ctx.user.id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found("no such session"))
    }
}

async fn user_in_tenant(ctx: &AdminCtx, id: &str) -> AppResult<User> {
    directory::user_by_id(&ctx.tenant.db, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such user"))
}

/// Suspends a user: sessions end, sign-in and access tokens stop working until reactivated.
#[utoipa::path(post, path = "/v1/admin/users/{id}/suspend",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "Suspended", body = UserView),
        (status = 404, description = "No such user in this tenant"),
        (status = 422, description = "`cannot-suspend-self`")),
    tag = "users")]
async fn suspend_user(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<Json<UserView>> {
    let u = user_in_tenant(&ctx, &id).await?;
    if u.id == ctx.user.id {
        return Err(AppError::unprocessable(
            "cannot-suspend-self",
            "you cannot suspend your own account; ask another administrator",
        ));
    }
    Ok(Json(
        login::suspend(&ctx.tenant.db, &u.id, &ctx.actor())
            .await?
            .into(),
    ))
}

/// Reactivates a suspended (e.g. locked-out) user and clears its failed sign-ins (a
/// person's session with a recent sign-in only).
#[utoipa::path(post, path = "/v1/admin/users/{id}/reactivate",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "Active again", body = UserView),
        (status = 403, description = "`session-required` or `reauth-required`"),
        (status = 404, description = "No such user in this tenant")),
    tag = "users")]
async fn reactivate_user(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<Json<UserView>> {
    ctx.person("reactivating a user")?;
    let u = user_in_tenant(&ctx, &id).await?;
    Ok(Json(
        login::reactivate(&ctx.tenant.db, &u.id, &ctx.actor())
            .await?
            .into(),
    ))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
}

/// A user's live sessions, newest first.
#[utoipa::path(get, path = "/v1/admin/users/{id}/sessions",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "Sessions", body = SessionList),
        (status = 404, description = "No such user in this tenant")),
    tag = "users")]
async fn user_sessions(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<Json<SessionList>> {
    let u = user_in_tenant(&ctx, &id).await?;
    Ok(Json(SessionList {
        sessions: session::list_for_user(&ctx.tenant.db, &u.id).await?,
    }))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Ended {
    pub ended: u64,
}

/// Ends all of a user's sessions.
#[utoipa::path(delete, path = "/v1/admin/users/{id}/sessions",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "How many ended", body = Ended),
        (status = 404, description = "No such user in this tenant")),
    tag = "users")]
async fn end_user_sessions(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<Json<Ended>> {
    let u = user_in_tenant(&ctx, &id).await?;
    Ok(Json(Ended {
        ended: login::end_sessions(&ctx.tenant.db, &u.id, &ctx.actor()).await?,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(create_session, delete_session))
        .routes(utoipa_axum::routes!(second_factor))
        .routes(utoipa_axum::routes!(totp_enrol))
        .routes(utoipa_axum::routes!(totp_confirm))
        .routes(utoipa_axum::routes!(me))
        .routes(utoipa_axum::routes!(reauth))
        .routes(utoipa_axum::routes!(regenerate_codes))
        .routes(utoipa_axum::routes!(end_my_session))
        .routes(utoipa_axum::routes!(suspend_user))
        .routes(utoipa_axum::routes!(reactivate_user))
        .routes(utoipa_axum::routes!(user_sessions, end_user_sessions))
}
