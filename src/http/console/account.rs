//! Console sign-in (password, then the authenticator code or its enrolment), sign-out,
//! "My security" (TOTP status, recovery codes, own sessions) and the suspend / reactivate /
//! end-sessions buttons of the user page.
//!
//! The sign-in pages run before the session is complete, so they check the form's `csrf`
//! against the pending session here (the [`ConsoleForm`] extractor needs a complete one).

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};

use super::{render, render_status, Chrome, ConsoleCtx, ConsoleForm};
use crate::accounts::login::{self, LoginError, Next};
use crate::accounts::session::{self, Session};
use crate::accounts::{same, totp};
use crate::directory::{self, Role, User};
use crate::error::AppError;
use crate::http::admin::account::SignInClient;
use crate::http::admin::ctx::{self, csrf_error};
use crate::http::AppState;
use crate::tenancy::Tenant;

/// Any live session (pending or complete), for the sign-in steps.
pub struct MaybeSession(pub Option<(Arc<Tenant>, User, Session)>, pub ctx::Client);

impl FromRequestParts<AppState> for MaybeSession {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if !ctx::same_origin(parts) {
            return Err(csrf_error().into_response());
        }
        let client = ctx::client_of(parts, Some(&state.config.admin));
        let s = ctx::any_session(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(MaybeSession(s, client))
    }
}

fn with_cookie(mut r: Response, cookie: HeaderValue) -> Response {
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r
}

fn redirect(to: &str) -> Response {
    Redirect::to(to).into_response()
}

#[derive(Template)]
#[template(path = "console/account_login.html")]
struct LoginPage {
    email: String,
    error: Option<String>,
}

async fn login_page(MaybeSession(s, _): MaybeSession) -> Response {
    match s {
        Some((_, _, s)) if s.mfa => redirect("/console"),
        Some(_) => redirect("/console/login/second-factor"),
        None => render(&LoginPage {
            email: String::new(),
            error: None,
        }),
    }
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

fn login_error(email: &str, e: &LoginError) -> Response {
    let mut r = render_status(
        e.status(),
        &LoginPage {
            email: email.trim().to_string(),
            error: Some(e.message()),
        },
    );
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

async fn login_post(
    State(state): State<AppState>,
    SignInClient(client): SignInClient,
    Form(f): Form<LoginForm>,
) -> Response {
    match login::sign_in(&state, &f.email, &f.password, &client).await {
        Ok(s) => {
            let to = match s.next {
                Next::SecondFactor => "/console/login/second-factor",
                Next::Enrol => "/console/totp/enrol",
            };
            with_cookie(
                redirect(to),
                ctx::set_session_cookie(&state, &s.tenant.id, &s.token),
            )
        }
        Err(e) => login_error(&f.email, &e),
    }
}

#[derive(Template)]
#[template(path = "console/account_second_factor.html")]
struct SecondFactorPage {
    email: String,
    csrf: String,
    error: Option<String>,
}

async fn second_factor_page(MaybeSession(s, _): MaybeSession) -> Response {
    let Some((tenant, user, s)) = s else {
        return redirect("/console/login");
    };
    if s.mfa {
        return redirect("/console");
    }
    match totp::is_enrolled(&tenant.db, &user.id).await {
        Ok(true) => {}
        Ok(false) => return redirect("/console/totp/enrol"),
        Err(e) => return e.into_response(),
    }
    render(&SecondFactorPage {
        email: user.email,
        csrf: s.csrf,
        error: None,
    })
}

#[derive(serde::Deserialize)]
struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

async fn second_factor_post(
    State(state): State<AppState>,
    MaybeSession(s, client): MaybeSession,
    Form(f): Form<CodeForm>,
) -> Response {
    let Some((tenant, user, s)) = s else {
        return redirect("/console/login");
    };
    if !same(&f.csrf, &s.csrf) {
        return csrf_error().into_response();
    }
    if s.mfa {
        return redirect("/console");
    }
    if user.role != Role::Admin {
        return AppError::new(
            StatusCode::FORBIDDEN,
            "not-an-admin",
            "only administrators can sign in to the docket console",
        )
        .into_response();
    }
    match login::second_factor(&state, &tenant, &user, &s, &f.code, &client).await {
        Ok((token, _)) => with_cookie(
            redirect("/console"),
            ctx::set_session_cookie(&state, &tenant.id, &token),
        ),
        // The session is gone: back to the start, with the reason.
        Err(e) if e.slug() == "account-suspended" => login_error(&user.email, &e),
        Err(e) => {
            let mut r = render_status(
                e.status(),
                &SecondFactorPage {
                    email: user.email.clone(),
                    csrf: s.csrf.clone(),
                    error: Some(e.message()),
                },
            );
            if let Some(secs) = e.retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            r
        }
    }
}

#[derive(Template)]
#[template(path = "console/account_enrol.html")]
struct EnrolPage {
    email: String,
    csrf: String,
    qr_data_url: String,
    secret: String,
    error: Option<String>,
}

fn enrol_page(user: &User, s: &Session, e: totp::Enrolment, error: Option<String>) -> EnrolPage {
    EnrolPage {
        email: user.email.clone(),
        csrf: s.csrf.clone(),
        qr_data_url: totp::svg_data_url(&e.qr_svg),
        secret: e.secret,
        error,
    }
}

async fn enrol_get(MaybeSession(s, _): MaybeSession) -> Response {
    let Some((tenant, user, s)) = s else {
        return redirect("/console/login");
    };
    if s.mfa {
        return redirect("/console");
    }
    match totp::is_enrolled(&tenant.db, &user.id).await {
        Ok(false) => {}
        Ok(true) => return redirect("/console/login/second-factor"),
        Err(e) => return e.into_response(),
    }
    // The same secret on reload, so a scanned code stays valid.
    let e = match totp::pending_enrolment(&tenant, &user).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => totp::begin_enrolment(&tenant, &user).await,
        Err(e) => Err(e),
    };
    match e {
        Ok(e) => render(&enrol_page(&user, &s, e, None)),
        Err(e) => e.into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/account_recovery_codes.html")]
struct RecoveryCodesPage {
    codes: Vec<String>,
}

async fn enrol_post(
    State(state): State<AppState>,
    MaybeSession(s, client): MaybeSession,
    Form(f): Form<CodeForm>,
) -> Response {
    let Some((tenant, user, s)) = s else {
        return redirect("/console/login");
    };
    if !same(&f.csrf, &s.csrf) {
        return csrf_error().into_response();
    }
    if s.mfa {
        return redirect("/console");
    }
    if user.role != Role::Admin {
        return AppError::new(
            StatusCode::FORBIDDEN,
            "not-an-admin",
            "only administrators can sign in to the docket console",
        )
        .into_response();
    }
    match login::confirm_enrolment(&state, &tenant, &user, &s, &f.code, &client).await {
        Ok((codes, token, _)) => with_cookie(
            render(&RecoveryCodesPage { codes }),
            ctx::set_session_cookie(&state, &tenant.id, &token),
        ),
        Err(err) if err.slug() == "invalid-code" => {
            match totp::pending_enrolment(&tenant, &user).await {
                Ok(Some(e)) => render_status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &enrol_page(&user, &s, e, Some(err.to_string())),
                ),
                Ok(None) => redirect("/console/totp/enrol"),
                Err(e) => e.into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    MaybeSession(s, _): MaybeSession,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Some((tenant, user, s)) = s else {
        return with_cookie(
            redirect("/console/login"),
            ctx::clear_session_cookie(&state),
        );
    };
    if !same(&f.csrf, &s.csrf) {
        return csrf_error().into_response();
    }
    if let Err(e) = login::logout(&tenant, &user, &s).await {
        return e.into_response();
    }
    with_cookie(
        redirect("/console/login"),
        ctx::clear_session_cookie(&state),
    )
}

struct SessionRow {
    id: String,
    created_at: String,
    last_seen_at: String,
    ip: String,
    user_agent: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "console/account_security.html")]
struct SecurityPage {
    chrome: Chrome,
    enrolled: bool,
    codes_left: i64,
    new_codes: Vec<String>,
    error: Option<String>,
    password_error: Option<String>,
    sessions: Vec<SessionRow>,
}

#[derive(serde::Deserialize)]
struct Done {
    done: Option<String>,
}

async fn security_page_for(
    ctx: &ConsoleCtx,
    flash: Option<&str>,
    new_codes: Vec<String>,
    error: Option<String>,
) -> Result<SecurityPage, AppError> {
    let db = &ctx.tenant.db;
    let current = ctx.session().map(|s| s.id.clone()).unwrap_or_default();
    let sessions = session::list_for_user(db, &ctx.user.id)
        .await?
        .into_iter()
        .map(|s| SessionRow {
            current: s.id == current,
            id: s.id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            ip: s.ip,
            user_agent: s.user_agent,
        })
        .collect();
    let mut chrome = Chrome::new(ctx, "security");
    if let Some(f) = flash {
        chrome = chrome.flash(f);
    }
    Ok(SecurityPage {
        chrome,
        enrolled: totp::is_enrolled(db, &ctx.user.id).await?,
        codes_left: totp::recovery_codes_left(db, &ctx.user.id).await?,
        new_codes,
        error,
        password_error: None,
        sessions,
    })
}

async fn security(
    ctx: ConsoleCtx,
    q: Result<Query<Done>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let flash = match q.ok().and_then(|q| q.0.done).as_deref() {
        Some("session-ended") => Some("Session ended"),
        Some("password-changed") => {
            Some("Password changed. Your other sessions were signed out; this one stays.")
        }
        _ => None,
    };
    match security_page_for(&ctx, flash, Vec::new(), None).await {
        Ok(p) => render(&p),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ReauthForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
}

async fn regenerate_codes(ConsoleForm(ctx, f): ConsoleForm<ReauthForm>) -> Response {
    let Some(s) = ctx.session() else {
        return AppError::forbidden("sign in to the console first").into_response();
    };
    let result = async {
        login::reauthenticate(&ctx.tenant, &ctx.user, s, &f.password, &f.code).await?;
        totp::regenerate_recovery_codes(&ctx.tenant, &ctx.user.id, &ctx.actor()).await
    }
    .await;
    let (status, page) = match result {
        Ok(codes) => (
            StatusCode::OK,
            security_page_for(&ctx, None, codes, None).await,
        ),
        Err(AppError::Problem { status, detail, .. }) => (
            status,
            security_page_for(&ctx, None, Vec::new(), Some(detail)).await,
        ),
        Err(e) => return e.into_response(),
    };
    match page {
        Ok(p) => render_status(status, &p),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    repeat_password: String,
}

/// `POST /console/security/password`: the user's own password change (current one first).
async fn change_password(ConsoleForm(ctx, f): ConsoleForm<PasswordForm>) -> Response {
    let Some(s) = ctx.session() else {
        return AppError::forbidden("sign in to the console first").into_response();
    };
    let (current, new) = (&f.current_password, &f.new_password);
    match login::change_password(&ctx.tenant, &ctx.user, s, current, new, &f.repeat_password).await
    {
        Ok(()) => redirect("/console/security?done=password-changed"),
        // A 3rd wrong password suspends the account: the session is gone, say so plainly.
        Err(e) if e.slug() == "account-suspended" => e.into_response(),
        Err(AppError::Problem { status, detail, .. }) => {
            match security_page_for(&ctx, None, Vec::new(), None).await {
                Ok(mut p) => {
                    p.password_error = Some(detail);
                    render_status(status, &p)
                }
                Err(e) => e.into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/account_reenrol.html")]
struct ReenrolPage {
    chrome: Chrome,
    qr_data_url: String,
    secret: String,
    error: Option<String>,
}

const REENROL: &str = "/console/security/authenticator";

fn reenrol_page(ctx: &ConsoleCtx, e: totp::Enrolment, error: Option<String>) -> ReenrolPage {
    ReenrolPage {
        chrome: Chrome::new(ctx, "security"),
        qr_data_url: totp::svg_data_url(&e.qr_svg),
        secret: e.secret,
        error,
    }
}

/// `GET /console/security/authenticator`: after a step-up (password and a code from the
/// old app or a recovery code), the QR code of a new authenticator.
async fn reenrol_get(ctx: ConsoleCtx) -> Response {
    if let Some(r) = super::step_up(&ctx, "replacing your authenticator", REENROL) {
        return r;
    }
    match totp::begin_reenrolment(&ctx.tenant, &ctx.user).await {
        Ok(e) => render(&reenrol_page(&ctx, e, None)),
        Err(e) => e.into_response(),
    }
}

/// `POST /console/security/authenticator`: a code from the new app swaps it in and shows
/// the new recovery codes.
async fn reenrol_post(ConsoleForm(ctx, f): ConsoleForm<ReauthForm>) -> Response {
    if let Some(r) = super::step_up(&ctx, "replacing your authenticator", REENROL) {
        return r;
    }
    let actor = ctx.actor();
    match totp::confirm_reenrolment(&ctx.tenant, &ctx.user, &f.code, &actor).await {
        Ok(codes) => {
            match security_page_for(&ctx, Some("Authenticator replaced"), codes, None).await {
                Ok(p) => render(&p),
                Err(e) => e.into_response(),
            }
        }
        Err(err) if err.slug() == "invalid-code" => {
            match totp::pending_reenrolment(&ctx.tenant, &ctx.user).await {
                Ok(Some(e)) => render_status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &reenrol_page(&ctx, e, Some(err.to_string())),
                ),
                Ok(None) => redirect(REENROL),
                Err(e) => e.into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/account_reauth.html")]
struct ReauthPage {
    chrome: Chrome,
    error: Option<String>,
    next: String,
    minutes: i64,
}

/// Where a step-up returns to: a console path, never another site.
fn console_path(next: &str) -> &str {
    let ok = next.starts_with("/console")
        && !next.starts_with("//")
        && !next.contains(['\\', '\r', '\n']);
    if ok {
        next
    } else {
        "/console"
    }
}

/// The step-up form (password and code), answering `status`, returning to `next` after.
pub fn reauth_page(
    ctx: &ConsoleCtx,
    status: StatusCode,
    error: Option<String>,
    next: &str,
) -> Response {
    render_status(
        status,
        &ReauthPage {
            chrome: Chrome::new(ctx, "security"),
            error,
            next: console_path(next).to_string(),
            minutes: ctx::REAUTH_MINUTES,
        },
    )
}

#[derive(serde::Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

async fn reauth_get(
    ctx: ConsoleCtx,
    q: Result<Query<NextQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let next = q.map(|q| q.0.next).unwrap_or_default();
    reauth_page(&ctx, StatusCode::OK, None, &next)
}

#[derive(serde::Deserialize)]
struct StepUpForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    next: String,
}

async fn reauth_post(ConsoleForm(ctx, f): ConsoleForm<StepUpForm>) -> Response {
    let Some(s) = ctx.session() else {
        return AppError::forbidden("sign in to the console first").into_response();
    };
    match login::reauthenticate(&ctx.tenant, &ctx.user, s, &f.password, &f.code).await {
        Ok(()) => redirect(console_path(&f.next)),
        Err(AppError::Problem { status, detail, .. }) => {
            reauth_page(&ctx, status, Some(detail), &f.next)
        }
        Err(e) => e.into_response(),
    }
}

async fn end_my_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfForm>,
) -> Response {
    let current = ctx.session().is_some_and(|s| s.id == id);
    match session::end_by_public_id(&ctx.tenant.db, &ctx.user.id, &id).await {
        Ok(true) if current => with_cookie(
            redirect("/console/login"),
            ctx::clear_session_cookie(&state),
        ),
        Ok(true) => redirect("/console/security?done=session-ended"),
        Ok(false) => error_page(
            &ctx,
            StatusCode::NOT_FOUND,
            "that session has already ended".into(),
            "/console/security",
        ),
        Err(e) => e.into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/account_error.html")]
struct ErrorPage {
    chrome: Chrome,
    message: String,
    back: String,
}

fn error_page(ctx: &ConsoleCtx, status: StatusCode, message: String, back: &str) -> Response {
    render_status(
        status,
        &ErrorPage {
            chrome: Chrome::new(ctx, "users"),
            message,
            back: back.to_string(),
        },
    )
}

#[derive(Clone, Copy)]
enum UserAction {
    Suspend,
    Reactivate,
    EndSessions,
}

async fn user_action(ctx: ConsoleCtx, id: String, action: UserAction) -> Response {
    let back = format!("/console/users/{}", urlencode(&id));
    if let UserAction::Reactivate = action {
        if let Some(r) = super::step_up(&ctx, "reactivating a user", &back) {
            return r;
        }
    }
    let user = match directory::user_by_id(&ctx.tenant.db, &id).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return error_page(
                &ctx,
                StatusCode::NOT_FOUND,
                "no such user".into(),
                "/console/users",
            )
        }
        Err(e) => return e.into_response(),
    };
    let actor = ctx.actor();
    let db = &ctx.tenant.db;
    let result = match action {
        UserAction::Suspend if user.id == ctx.user.id => Err(AppError::unprocessable(
            "cannot-suspend-self",
            "you cannot suspend your own account; ask another administrator",
        )),
        UserAction::Suspend => login::suspend(db, &user.id, &actor)
            .await
            .map(|_| "suspended"),
        UserAction::Reactivate => login::reactivate(db, &user.id, &actor)
            .await
            .map(|_| "reactivated"),
        UserAction::EndSessions => login::end_sessions(db, &user.id, &actor)
            .await
            .map(|_| "sessions-ended"),
    };
    match result {
        Ok(done) => redirect(&format!("{back}?done={done}")),
        Err(AppError::Problem { status, detail, .. }) => error_page(&ctx, status, detail, &back),
        Err(e) => e.into_response(),
    }
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[derive(serde::Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    #[allow(dead_code)]
    csrf: String,
    /// `yes` on the confirmation page's form.
    #[serde(default)]
    confirm: Option<String>,
}

async fn suspend_user(
    Path(id): Path<String>,
    ConsoleForm(ctx, form): ConsoleForm<ConfirmForm>,
) -> Response {
    if !super::confirmed(&form.confirm) {
        let back = format!("/console/users/{}", urlencode(&id));
        let user = match directory::user_by_id(&ctx.tenant.db, &id).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                let msg = "no such user".to_string();
                return error_page(&ctx, StatusCode::NOT_FOUND, msg, "/console/users");
            }
            Err(e) => return e.into_response(),
        };
        return render(&super::ConfirmPage {
            chrome: Chrome::new(&ctx, "users"),
            question: format!("Suspend {}?", user.email),
            consequence: "They are signed out everywhere, their access tokens and set-password \
                          links stop working, and they cannot use docket until an administrator \
                          reactivates them. What they filed stays."
                .into(),
            action: format!("/console/users/{}/suspend", urlencode(&id)),
            fields: vec![],
            button: "Suspend user".into(),
            back,
        });
    }
    user_action(ctx, id, UserAction::Suspend).await
}

async fn reactivate_user(
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfForm>,
) -> Response {
    user_action(ctx, id, UserAction::Reactivate).await
}

async fn end_user_sessions(
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfForm>,
) -> Response {
    user_action(ctx, id, UserAction::EndSessions).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/login", get(login_page).post(login_post))
        .route(
            "/console/login/second-factor",
            get(second_factor_page).post(second_factor_post),
        )
        .route("/console/totp/enrol", get(enrol_get).post(enrol_post))
        .route("/console/logout", post(logout))
        .route("/console/security", get(security))
        .route("/console/security/recovery-codes", post(regenerate_codes))
        .route("/console/security/password", post(change_password))
        .route(REENROL, get(reenrol_get).post(reenrol_post))
        .route("/console/reauth", get(reauth_get).post(reauth_post))
        .route("/console/security/sessions/{id}/end", post(end_my_session))
        .route("/console/users/{id}/suspend", post(suspend_user))
        .route("/console/users/{id}/reactivate", post(reactivate_user))
        .route("/console/users/{id}/end-sessions", post(end_user_sessions))
}
