//! The admin console: server-rendered pages (askama templates, no script), one module per
//! area. Every page needs a complete admin session; every form post carries the session's
//! CSRF token (checked by [`ConsoleForm`] / [`ConsoleUpload`]) and must be same-origin.

pub mod account;
pub mod audit_words;
pub mod browse;
pub mod dashboard;
pub mod pager;
pub mod people;
pub mod privacy;
pub mod records;
pub mod retention;
pub mod rules;
pub mod security;
pub mod settings;

use std::collections::HashMap;

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::admin::ctx::{authenticate_admin, csrf_error, same_origin, AdminCtx, Denied};
use super::AppState;
use crate::accounts::same;
use crate::error::AppError;

/// The console's own CSP: no script at all, styles and images from here only, forms post
/// only here, frames only for the sandboxed message body.
pub const CONSOLE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What every page's frame shows: who is signed in, where, and the CSRF token for forms.
pub struct Chrome {
    pub tenant_name: String,
    pub user_email: String,
    pub csrf: String,
    /// The nav entry to highlight (`users`, `records`, `rules`, ...).
    pub section: &'static str,
    /// A one-line message (e.g. "Record created").
    pub flash: Option<String>,
    /// The firm's time zone: dates on pages are shown in it.
    pub tz: String,
}

impl Chrome {
    pub fn new(ctx: &AdminCtx, section: &'static str) -> Chrome {
        Chrome {
            tenant_name: ctx.tenant.name.clone(),
            user_email: ctx.user.email.clone(),
            csrf: ctx.csrf().to_string(),
            section,
            flash: None,
            tz: ctx.tz.clone(),
        }
    }
    pub fn flash(mut self, msg: impl Into<String>) -> Chrome {
        self.flash = Some(msg.into());
        self
    }
}

/// Renders a page with the console's CSP.
pub fn render(t: &impl Template) -> Response {
    render_status(StatusCode::OK, t)
}

pub fn render_status(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => {
            let mut r = (status, Html(html)).into_response();
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONSOLE_CSP),
            );
            r
        }
        Err(e) => AppError::internal(anyhow::anyhow!("template: {e}")).into_response(),
    }
}

/// A signed-in admin on a console page. Anyone else is sent to sign in (or to finish the
/// second factor).
pub struct ConsoleCtx(pub AdminCtx);

impl std::ops::Deref for ConsoleCtx {
    type Target = AdminCtx;
    fn deref(&self) -> &AdminCtx {
        &self.0
    }
}

pub enum ConsoleReject {
    Redirect(&'static str),
    Problem(AppError),
}

impl IntoResponse for ConsoleReject {
    fn into_response(self) -> Response {
        match self {
            ConsoleReject::Redirect(to) => Redirect::to(to).into_response(),
            ConsoleReject::Problem(e) => e.into_response(),
        }
    }
}

impl FromRequestParts<AppState> for ConsoleCtx {
    type Rejection = ConsoleReject;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, ConsoleReject> {
        if !same_origin(parts) {
            return Err(ConsoleReject::Problem(csrf_error()));
        }
        // Console pages take the session cookie only (no bearer tokens in a browser).
        parts.headers.remove(header::AUTHORIZATION);
        match authenticate_admin(parts, state, false).await {
            Ok(c) => Ok(ConsoleCtx(c)),
            Err(Denied::NoCredentials) => Err(ConsoleReject::Redirect("/console/login")),
            Err(Denied::Pending) => Err(ConsoleReject::Redirect("/console/login/second-factor")),
            Err(Denied::Problem(e)) => Err(ConsoleReject::Problem(e)),
        }
    }
}

/// For console actions that need a recent sign-in ([`AdminCtx::person`]): `None` when the
/// session has one, else the step-up form (403), which returns to `back` afterwards.
pub fn step_up(ctx: &ConsoleCtx, what: &str, back: &str) -> Option<Response> {
    let e = ctx.person(what).err()?;
    let detail = match &e {
        AppError::Problem { detail, .. } => Some(detail.clone()),
        AppError::Internal(_) => None,
    };
    Some(account::reauth_page(ctx, e.status(), detail, back))
}

/// The second step of a destructive button: a page that says what will happen, with the
/// button that does it (`confirm=yes` added to the same form) and a way back. No script.
#[derive(Template)]
#[template(path = "console/confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub question: String,
    pub consequence: String,
    /// Where the confirmed form posts (the same URL as the first step).
    pub action: String,
    /// The first step's other fields, carried over.
    pub fields: Vec<(String, String)>,
    pub button: String,
    pub back: String,
}

/// The one person `who` names in a picker: their address, or a display name only one person
/// has (both case-insensitive). `None` when no one, or several, match.
pub async fn person_named(
    db: &sqlx::AnyPool,
    who: &str,
) -> crate::error::AppResult<Option<crate::directory::User>> {
    let who = who.trim();
    let users = crate::directory::list_users(db).await?;
    let mut hits = users.into_iter().filter(|u| {
        u.email.eq_ignore_ascii_case(who)
            || (!who.contains('@') && u.display_name.eq_ignore_ascii_case(who))
    });
    Ok(match (hits.next(), hits.next()) {
        (Some(u), None) => Some(u),
        _ => None,
    })
}

/// Whether a destructive form carries its confirmation (`confirm=yes`).
pub fn confirmed(confirm: &Option<String>) -> bool {
    confirm.as_deref() == Some("yes")
}

/// A console form post: the admin, and the form (`T`) whose `csrf` field matched.
pub struct ConsoleForm<T>(pub ConsoleCtx, pub T);

#[derive(serde::Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

impl<T: serde::de::DeserializeOwned + Send> FromRequest<AppState> for ConsoleForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let ctx = ConsoleCtx::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let bytes = axum::body::to_bytes(body, 4 * 1024 * 1024)
            .await
            .map_err(|_| AppError::too_large("the form is too large").into_response())?;
        let token: CsrfOnly =
            serde_urlencoded::from_bytes(&bytes).map_err(|_| csrf_error().into_response())?;
        if !same(&token.csrf, ctx.csrf()) {
            return Err(csrf_error().into_response());
        }
        let form: T = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            AppError::unprocessable("invalid-form", format!("the form is not valid: {e}"))
                .into_response()
        })?;
        Ok(ConsoleForm(ctx, form))
    }
}

/// One uploaded field: its file name (if a file) and bytes.
pub struct Upload {
    pub file_name: Option<String>,
    pub bytes: Vec<u8>,
}

/// A multipart console post (file uploads), checked for the `csrf` field. Fields by name.
pub struct ConsoleUpload(pub ConsoleCtx, pub HashMap<String, Upload>);

impl ConsoleUpload {
    pub fn text(&self, name: &str) -> Option<String> {
        self.1
            .get(name)
            .map(|u| String::from_utf8_lossy(&u.bytes).into_owned())
    }
}

impl FromRequest<AppState> for ConsoleUpload {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let ctx = ConsoleCtx::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let req = Request::from_parts(parts, body);
        let mut mp = Multipart::from_request(req, state)
            .await
            .map_err(|e| AppError::bad_request("invalid-upload", e.body_text()).into_response())?;
        let mut fields = HashMap::new();
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| AppError::bad_request("invalid-upload", e.body_text()).into_response())?
        {
            let name = field.name().unwrap_or("").to_string();
            let file_name = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.map_err(|e| {
                AppError::bad_request("invalid-upload", e.body_text()).into_response()
            })?;
            fields.insert(
                name,
                Upload {
                    file_name,
                    bytes: bytes.to_vec(),
                },
            );
        }
        let sent = fields
            .get("csrf")
            .map(|u| String::from_utf8_lossy(&u.bytes).into_owned())
            .unwrap_or_default();
        if !same(&sent, ctx.csrf()) {
            return Err(csrf_error().into_response());
        }
        Ok(ConsoleUpload(ctx, fields))
    }
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../templates/console/console.css"),
    )
        .into_response()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(dashboard::home))
        .route("/console/static/console.css", get(css))
        .merge(account::router())
        .merge(people::router())
        .merge(privacy::router())
        .merge(records::router())
        .merge(retention::router())
        .merge(rules::router())
        .merge(browse::router())
        .merge(security::router())
        .merge(settings::router())
}
