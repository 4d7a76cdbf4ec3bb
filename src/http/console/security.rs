//! Console pages for account security: access tokens, sign-ins, reset requests; and the
//! public "forgot password" and set-password pages.

use std::time::Instant;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::{render, render_status, step_up, Chrome, ConsoleCtx, ConsoleForm};
use crate::accounts::reset::{self, IssuedLink, ResetRequest};
use crate::accounts::tokens::{self, AccessToken, Scope};
use crate::error::AppError;
use crate::http::admin::security::{self as api, IpSummary, PublicClient, SignIn, SignInQuery};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/tokens", get(tokens_page).post(create_token))
        .route("/console/tokens/{id}/revoke", post(revoke_token))
        .route("/console/sign-ins", get(sign_ins_page))
        .route("/console/resets", get(resets_page))
        .route("/console/resets/{id}/issue", post(issue_reset))
        .route("/console/resets/{id}/dismiss", post(dismiss_reset))
        .route("/console/users/{id}/password-link", post(password_link))
        .route("/console/forgot", get(forgot_page).post(forgot))
        .route("/console/reset/{token}", get(reset_page).post(reset))
}

/// The message of a problem, for showing on a page.
pub(super) fn message(e: &AppError) -> String {
    match e {
        AppError::Problem { detail, .. } => detail.clone(),
        AppError::Internal(_) => "something went wrong on our side; it has been logged".into(),
    }
}

#[derive(Deserialize, Default)]
struct Done {
    #[serde(default)]
    done: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

fn flash_for(chrome: Chrome, done: &Done) -> Chrome {
    match done.done.as_deref() {
        Some("revoked") => chrome.flash("Token revoked"),
        Some("dismissed") => chrome.flash("Request dismissed"),
        _ => chrome,
    }
}

// ---- tokens -----------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/security_tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<AccessToken>,
    pager: super::pager::Pager,
    /// Other people's live tokens with their owner's email (any admin may revoke them).
    others: Vec<(AccessToken, String)>,
    new_secret: Option<String>,
    new_name: String,
    error: Option<String>,
    form_name: String,
    form_read: bool,
    form_file: bool,
    form_admin: bool,
    form_days: String,
}

impl TokensPage {
    async fn load(
        ctx: &ConsoleCtx,
        chrome: Chrome,
        page_no: Option<usize>,
    ) -> Result<TokensPage, AppError> {
        let db = &ctx.tenant.db;
        let mine = tokens::list_for_user(db, &ctx.user.id).await?;
        let (mine, pager) = super::pager::Pager::slice(mine, page_no, "/console/tokens", &[]);
        let mut page = TokensPage::new(chrome, mine);
        page.pager = pager;
        page.others = tokens::list_others_live(db, &ctx.user.id).await?;
        Ok(page)
    }

    fn new(chrome: Chrome, tokens: Vec<AccessToken>) -> TokensPage {
        TokensPage {
            chrome,
            tokens,
            pager: Default::default(),
            others: Vec::new(),
            new_secret: None,
            new_name: String::new(),
            error: None,
            form_name: String::new(),
            form_read: true,
            form_file: false,
            form_admin: false,
            form_days: "30".into(),
        }
    }
}

async fn tokens_page(ctx: ConsoleCtx, done: Result<Query<Done>, QueryRejection>) -> Response {
    let done = done.map(|q| q.0).unwrap_or_default();
    let chrome = flash_for(Chrome::new(&ctx, "tokens"), &done);
    match TokensPage::load(&ctx, chrome, done.page).await {
        Ok(page) => render(&page),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope_read: Option<String>,
    #[serde(default)]
    scope_file: Option<String>,
    #[serde(default)]
    scope_admin: Option<String>,
    #[serde(default)]
    days: String,
}

async fn create_token(ConsoleForm(ctx, form): ConsoleForm<TokenForm>) -> Response {
    if let Some(r) = step_up(&ctx, "creating an access token", "/console/tokens") {
        return r;
    }
    let mut scopes = Vec::new();
    for (on, s) in [
        (&form.scope_read, Scope::Read),
        (&form.scope_file, Scope::File),
        (&form.scope_admin, Scope::Admin),
    ] {
        if on.is_some() {
            scopes.push(s);
        }
    }
    let created = match form.days.trim().parse::<u32>() {
        Ok(days) => {
            tokens::create(
                &ctx.tenant.db,
                &ctx.tenant.id,
                &ctx.user.id,
                &form.name,
                &scopes,
                days,
                &ctx.actor(),
            )
            .await
        }
        Err(_) => Err(AppError::unprocessable(
            "invalid-expiry",
            format!("a token must expire within 1..={} days", tokens::MAX_DAYS),
        )),
    };
    let mut page = match TokensPage::load(&ctx, Chrome::new(&ctx, "tokens"), None).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match created {
        Ok((secret, t)) => {
            page.chrome = page.chrome.flash("Token created");
            page.new_secret = Some(secret);
            page.new_name = t.name;
            render(&page)
        }
        Err(e) if e.status().is_client_error() => {
            page.error = Some(message(&e));
            page.form_name = form.name;
            page.form_read = form.scope_read.is_some();
            page.form_file = form.scope_file.is_some();
            page.form_admin = form.scope_admin.is_some();
            page.form_days = form.days;
            render_status(e.status(), &page)
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {}

async fn revoke_token(
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfForm>,
) -> Response {
    match tokens::revoke(&ctx.tenant.db, &id, &ctx.actor()).await {
        Ok(_) => Redirect::to("/console/tokens?done=revoked").into_response(),
        Err(e) => e.into_response(),
    }
}

// ---- sign-ins ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/security_sign_ins.html")]
struct SignInsPage {
    chrome: Chrome,
    email: String,
    result: String,
    limit: i64,
    attempts: Vec<SignIn>,
    pager: super::pager::Pager,
    ips: Vec<IpSummary>,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct SignInForm {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

async fn sign_ins_page(ctx: ConsoleCtx, q: Result<Query<SignInForm>, QueryRejection>) -> Response {
    let f = q.map(|q| q.0).unwrap_or_default();
    let mut error = None;
    let limit = match f.limit.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => 1000,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                error = Some("“Look through the newest” must be a number from 1 to 1000".into());
                1000
            }
        },
    };
    let q = SignInQuery {
        email: f.email.clone(),
        result: f.result.clone(),
        limit: Some(limit),
    };
    let (attempts, ips) = match (
        api::list_sign_ins(&ctx.tenant.db, &q).await,
        api::list_ips(&ctx.tenant.db).await,
    ) {
        (Ok(a), Ok(i)) => (a, i),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let (email, result, depth) = (
        f.email.clone().unwrap_or_default(),
        f.result.clone().unwrap_or_default(),
        f.limit.clone().unwrap_or_default(),
    );
    let params = [
        ("email", email.as_str()),
        ("result", &result),
        ("limit", &depth),
    ];
    let (attempts, pager) =
        super::pager::Pager::slice(attempts, f.page, "/console/sign-ins", &params);
    let page = SignInsPage {
        chrome: Chrome::new(&ctx, "sign-ins"),
        pager,
        email: f.email.unwrap_or_default(),
        result: f.result.unwrap_or_default(),
        limit,
        attempts,
        ips,
        error,
    };
    if page.error.is_some() {
        render_status(StatusCode::BAD_REQUEST, &page)
    } else {
        render(&page)
    }
}

// ---- reset requests ---------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/security_resets.html")]
struct ResetsPage {
    chrome: Chrome,
    minutes: u64,
    origin: String,
    issued: Option<IssuedLink>,
    error: Option<String>,
    open: Vec<ResetRequest>,
    handled: Vec<ResetRequest>,
    pager: super::pager::Pager,
}

async fn resets_view(
    state: &AppState,
    ctx: &ConsoleCtx,
    chrome: Chrome,
    issued: Option<IssuedLink>,
    error: Option<&AppError>,
    page_no: Option<usize>,
) -> Response {
    let all = match reset::list(&ctx.tenant.db, None, 500).await {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let (open, handled): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r.status == "open");
    let (handled, pager) = super::pager::Pager::slice(handled, page_no, "/console/resets", &[]);
    let page = ResetsPage {
        chrome,
        minutes: state.config.admin.reset_link_minutes,
        origin: state
            .config
            .addon
            .public_url
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_string(),
        issued,
        error: error.map(message),
        open,
        handled,
        pager,
    };
    match error {
        Some(e) => render_status(e.status(), &page),
        None => render(&page),
    }
}

async fn resets_page(
    State(state): State<AppState>,
    ctx: ConsoleCtx,
    done: Result<Query<Done>, QueryRejection>,
) -> Response {
    let done = done.map(|q| q.0).unwrap_or_default();
    let chrome = flash_for(Chrome::new(&ctx, "resets"), &done);
    resets_view(&state, &ctx, chrome, None, None, done.page).await
}

async fn issued_or_error(
    state: &AppState,
    ctx: &ConsoleCtx,
    r: Result<IssuedLink, AppError>,
) -> Response {
    match r {
        Ok(link) => {
            let chrome =
                Chrome::new(ctx, "resets").flash(format!("Link issued for {}", link.email));
            resets_view(state, ctx, chrome, Some(link), None, None).await
        }
        Err(e) if e.status().is_client_error() => {
            resets_view(state, ctx, Chrome::new(ctx, "resets"), None, Some(&e), None).await
        }
        Err(e) => e.into_response(),
    }
}

async fn issue_reset(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfForm>,
) -> Response {
    if let Some(r) = step_up(&ctx, "issuing a set-password link", "/console/resets") {
        return r;
    }
    let r = reset::issue(
        &ctx.tenant,
        &id,
        &ctx.actor(),
        state.config.admin.reset_link_minutes,
    )
    .await;
    issued_or_error(&state, &ctx, r).await
}

async fn password_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfForm>,
) -> Response {
    let back = format!("/console/users/{id}");
    if let Some(r) = step_up(&ctx, "issuing a set-password link", &back) {
        return r;
    }
    let r = reset::issue_for_user(
        &ctx.tenant,
        &id,
        &ctx.actor(),
        state.config.admin.reset_link_minutes,
        &ctx.client.ip.to_string(),
    )
    .await;
    issued_or_error(&state, &ctx, r).await
}

async fn dismiss_reset(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfForm>,
) -> Response {
    match reset::dismiss(&ctx.tenant, &id, &ctx.actor()).await {
        Ok(_) => Redirect::to("/console/resets?done=dismissed").into_response(),
        Err(e) if e.status().is_client_error() => {
            resets_view(
                &state,
                &ctx,
                Chrome::new(&ctx, "resets"),
                None,
                Some(&e),
                None,
            )
            .await
        }
        Err(e) => e.into_response(),
    }
}

// ---- public pages: forgot password, set password ----------------------------------------

#[derive(Template)]
#[template(path = "console/security_public.html")]
struct PublicPage {
    title: &'static str,
    mode: &'static str,
    message: Option<String>,
    error: Option<String>,
    token: String,
    email: String,
}

impl PublicPage {
    fn new(title: &'static str, mode: &'static str) -> PublicPage {
        PublicPage {
            title,
            mode,
            message: None,
            error: None,
            token: String::new(),
            email: String::new(),
        }
    }
}

async fn forgot_page() -> Response {
    render(&PublicPage::new("Forgot your password?", "forgot"))
}

#[derive(Deserialize)]
struct ForgotForm {
    #[serde(default)]
    email: String,
}

async fn forgot(
    State(state): State<AppState>,
    PublicClient(client): PublicClient,
    Form(form): Form<ForgotForm>,
) -> Response {
    let start = Instant::now();
    let r = api::file_reset_request(&state, &form.email, &client).await;
    match api::padded(start, r).await {
        Ok(()) => {
            let mut page = PublicPage::new("Request received", "done");
            page.message = Some(
                "We've passed your request to your firm's administrators. If the address \
                 belongs to a docket account, one of them will contact you with a link to \
                 set a new password."
                    .into(),
            );
            render_status(StatusCode::ACCEPTED, &page)
        }
        Err(e) if e.status().is_client_error() => {
            let mut page = PublicPage::new("Forgot your password?", "forgot");
            page.error = Some(message(&e));
            render_status(e.status(), &page)
        }
        Err(e) => e.into_response(),
    }
}

fn link_gone_page() -> Response {
    let mut page = PublicPage::new("This link is no longer valid", "gone");
    page.error = Some(
        "This link is no longer valid: it has expired, has already been used, or never \
         existed. Ask your firm's administrator for a new one."
            .into(),
    );
    render_status(StatusCode::GONE, &page)
}

/// The live request behind a link token and its tenant, or `None`.
async fn live_link(
    state: &AppState,
    token: &str,
) -> Result<Option<(std::sync::Arc<crate::tenancy::Tenant>, ResetRequest)>, AppError> {
    let Some(tenant) = api::tenant_of_link(state, token).await? else {
        return Ok(None);
    };
    Ok(reset::find_link(&tenant, token).await?.map(|r| (tenant, r)))
}

async fn reset_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    match live_link(&state, &token).await {
        Ok(Some((_, req))) => {
            let mut page = PublicPage::new("Set your password", "reset");
            page.token = token;
            page.email = req.email;
            render(&page)
        }
        Ok(None) => link_gone_page(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

async fn reset(
    State(state): State<AppState>,
    PublicClient(client): PublicClient,
    Path(token): Path<String>,
    Form(form): Form<ResetForm>,
) -> Response {
    let (tenant, req) = match live_link(&state, &token).await {
        Ok(Some(found)) => found,
        Ok(None) => return link_gone_page(),
        Err(e) => return e.into_response(),
    };
    let again = |msg: String| {
        let mut page = PublicPage::new("Set your password", "reset");
        page.token = token.clone();
        page.email = req.email.clone();
        page.error = Some(msg);
        render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
    };
    if form.password != form.confirm {
        return again("The two passwords differ: type the same password twice.".into());
    }
    match reset::complete(&tenant, &token, &form.password, &client.ip.to_string()).await {
        Ok(user) => {
            let mut page = PublicPage::new("Password set", "done");
            page.message = Some(format!(
                "The password for {} is set. You can sign in now.",
                user.email
            ));
            render(&page)
        }
        Err(e) if e.status() == StatusCode::GONE => link_gone_page(),
        Err(e) if e.status().is_client_error() => again(message(&e)),
        Err(e) => e.into_response(),
    }
}
