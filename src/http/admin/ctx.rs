//! Who is calling the admin API or console: a signed-in admin (session cookie, second factor
//! passed) or a personal access token. Handlers never see a tenant id from the request body
//! or path: the tenant comes from the verified session or token only.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};

use crate::accounts::session::{self, Session};
use crate::accounts::tokens::{self, AccessToken, Scope};
use crate::accounts::{client_ip, same};
use crate::directory::{self, Role, User};
use crate::error::{AppError, AppResult};
use crate::http::AppState;
use crate::tenancy::Tenant;

pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the caller authenticated.
pub enum Via {
    Session(Session),
    Token(AccessToken),
}

/// The request's network facts, for audit rows and throttling.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: IpAddr,
    pub user_agent: String,
}

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(client_of(parts, Some(&state.config.admin)))
    }
}

/// Client facts, honouring trusted proxies when the config is at hand.
pub fn client_of(parts: &Parts, cfg: Option<&crate::config::AdminConfig>) -> Client {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let ip = match cfg {
        Some(c) => client_ip(peer, &parts.headers, c),
        None => peer.ip().to_canonical(),
    };
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| session::truncate(s, 300))
        .unwrap_or_default();
    Client { ip, user_agent }
}

/// A signed-in admin (complete session or access token).
pub struct AdminCtx {
    pub tenant: Arc<Tenant>,
    pub user: User,
    pub via: Via,
    pub client: Client,
    /// The firm's time zone for dates on pages (IANA name; `UTC` unless set).
    pub tz: String,
}

impl AdminCtx {
    /// The audit actor: the admin's email (and token id when a token acted).
    pub fn actor(&self) -> String {
        match &self.via {
            Via::Session(_) => self.user.email.clone(),
            Via::Token(t) => format!("{} (token {})", self.user.email, t.id),
        }
    }
    pub fn session(&self) -> Option<&Session> {
        match &self.via {
            Via::Session(s) => Some(s),
            Via::Token(_) => None,
        }
    }
    /// The CSRF token of a session (for rendering forms); empty for tokens.
    pub fn csrf(&self) -> &str {
        self.session().map(|s| s.csrf.as_str()).unwrap_or("")
    }
    /// For actions that create or strengthen a credential or a person's powers: a person's
    /// session whose sign-in or step-up (password and code) is at most [`REAUTH_MINUTES`]
    /// old. A token is refused (403 `session-required`), a stale session is asked to step up
    /// (403 `reauth-required`). `what` names the action in the answer.
    pub fn person(&self, what: &str) -> AppResult<&Session> {
        let s = self.session().ok_or_else(|| session_required(what))?;
        if !s.reauthenticated_within(REAUTH_MINUTES) {
            return Err(reauth_required(what));
        }
        Ok(s)
    }
}

/// Minutes a full sign-in or a step-up (`POST /v1/admin/reauth`) counts as recent.
pub const REAUTH_MINUTES: i64 = 5;

pub fn session_required(what: &str) -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "session-required",
        format!(
            "{what} needs an administrator signed in to a console session, not an access \
             token: the firm's policy allows such actions only from a person"
        ),
    )
}

pub fn reauth_required(what: &str) -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "reauth-required",
        format!(
            "{what} needs a recent sign-in: confirm it is you by re-entering your password and \
             authenticator code (POST /v1/admin/reauth, or the console's prompt), then retry \
             within {REAUTH_MINUTES} minutes"
        ),
    )
}

/// The session cookie's name: `__Host-` prefixed when cookies are Secure.
pub fn cookie_name(state: &AppState) -> &'static str {
    if state.config.secure_cookies() {
        "__Host-docket_session"
    } else {
        "docket_session"
    }
}

/// `Set-Cookie` for a session (HttpOnly, SameSite=Strict, Path=/, Secure when TLS). The
/// cookie lives as long as the absolute limit; the server enforces idle expiry.
pub fn set_session_cookie(state: &AppState, tenant_id: &str, token: &str) -> HeaderValue {
    let max_age = state.config.admin.session_absolute_hours * 3600;
    let secure = if state.config.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        cookie_name(state),
        session::cookie_value(tenant_id, token)
    ))
    .expect("cookie is ASCII")
}

pub fn clear_session_cookie(state: &AppState) -> HeaderValue {
    let secure = if state.config.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        cookie_name(state)
    ))
    .expect("cookie is ASCII")
}

fn session_cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Any live session (complete or pending) with its tenant and user, or `None`.
pub async fn any_session(
    parts: &Parts,
    state: &AppState,
) -> AppResult<Option<(Arc<Tenant>, User, Session)>> {
    let Some(value) = session_cookie(parts, cookie_name(state)) else {
        return Ok(None);
    };
    let Some((tenant_id, token)) = session::split_cookie(value) else {
        return Ok(None);
    };
    if !state.catalog.tenant_exists(tenant_id).await? {
        return Ok(None);
    }
    let tenant = state.catalog.tenant(tenant_id).await?;
    if !tenant.is_active() {
        return Ok(None);
    }
    let Some(s) = session::find(&tenant.db, token, &state.config.admin).await? else {
        return Ok(None);
    };
    let Some(user) = directory::user_by_id(&tenant.db, &s.user_id).await? else {
        return Ok(None);
    };
    if user.status != "active" {
        session::end(&tenant.db, &s.id_hash).await?;
        return Ok(None);
    }
    Ok(Some((tenant, user, s)))
}

/// Why a request is not an admin's.
pub enum Denied {
    /// No (live) credentials at all.
    NoCredentials,
    /// A session that has not passed (or enrolled) its second factor.
    Pending,
    Problem(AppError),
}

impl From<anyhow::Error> for Denied {
    fn from(e: anyhow::Error) -> Self {
        Denied::Problem(AppError::internal(e))
    }
}

impl From<AppError> for Denied {
    fn from(e: AppError) -> Self {
        Denied::Problem(e)
    }
}

fn unsafe_method(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A bearer access token, when the request carries one.
fn bearer_token(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A personal access token → its tenant, its active owner and the token (last use
/// recorded). The tenant comes from the token only; every failure is a 401/403 problem.
pub async fn token_owner(
    state: &AppState,
    secret: &str,
    client: &Client,
) -> AppResult<(Arc<Tenant>, User, AccessToken)> {
    let invalid = || AppError::unauthorized("invalid, expired or revoked access token");
    let tenant_id = tokens::tenant_of(secret).ok_or_else(invalid)?;
    if !state.catalog.tenant_exists(tenant_id).await? {
        return Err(invalid());
    }
    let tenant = state.catalog.tenant(tenant_id).await?;
    if !tenant.is_active() {
        return Err(AppError::forbidden("this tenant is not active"));
    }
    let t = tokens::authenticate(&tenant.db, secret, &client.ip.to_string())
        .await?
        .ok_or_else(invalid)?;
    let user = directory::user_by_id(&tenant.db, &t.user_id)
        .await?
        .filter(|u| u.status == "active")
        .ok_or_else(|| AppError::forbidden("the token's owner is not active"))?;
    Ok((tenant, user, t))
}

/// Authenticates an admin request. `check_csrf_header`: session callers must echo the
/// session's CSRF token in `X-CSRF-Token` on unsafe methods (the JSON API); console forms
/// check the token in the form body instead.
pub async fn authenticate_admin(
    parts: &Parts,
    state: &AppState,
    check_csrf_header: bool,
) -> Result<AdminCtx, Denied> {
    let client = client_of(parts, Some(&state.config.admin));
    if let Some(secret) = bearer_token(parts) {
        let (tenant, user, t) = token_owner(state, secret, &client).await?;
        if user.role != Role::Admin {
            return Err(AppError::forbidden("the admin API is for administrators").into());
        }
        let needed_ok = if unsafe_method(&parts.method) {
            t.has(Scope::Admin)
        } else {
            t.has(Scope::Admin) || t.has(Scope::Read)
        };
        if !needed_ok {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                "insufficient-scope",
                if unsafe_method(&parts.method) {
                    "this token lacks the `admin` scope needed to change anything"
                } else {
                    "this token lacks the `read` or `admin` scope"
                },
            )
            .into());
        }
        let tz = firm_time_zone(&tenant).await?;
        return Ok(AdminCtx {
            tenant,
            user,
            via: Via::Token(t),
            client,
            tz,
        });
    }
    let Some((tenant, user, s)) = any_session(parts, state).await? else {
        return Err(Denied::NoCredentials);
    };
    if !s.mfa {
        return Err(Denied::Pending);
    }
    if user.role != Role::Admin {
        return Err(AppError::forbidden("the admin console is for administrators").into());
    }
    if check_csrf_header && unsafe_method(&parts.method) {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same(sent, &s.csrf) {
            return Err(csrf_error().into());
        }
    }
    let tz = firm_time_zone(&tenant).await?;
    Ok(AdminCtx {
        tenant,
        user,
        via: Via::Session(s),
        client,
        tz,
    })
}

/// The firm's time zone setting (`time_zone`), `UTC` when unset.
pub async fn firm_time_zone(tenant: &Tenant) -> Result<String, AppError> {
    Ok(crate::suggest::setting(&tenant.db, TIME_ZONE_SETTING)
        .await?
        .unwrap_or_else(|| "UTC".to_string()))
}

/// The settings key of the firm's time zone.
pub const TIME_ZONE_SETTING: &str = "time_zone";

pub fn csrf_error() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "csrf",
        "missing or wrong CSRF token: reload the page and try again",
    )
}

/// Refuses cross-site unsafe requests outright (defence in depth beside SameSite=Strict and
/// the token): a browser sends `Sec-Fetch-Site` / `Origin` with every form post.
pub fn same_origin(parts: &Parts) -> bool {
    if !unsafe_method(&parts.method) {
        return true;
    }
    // Browsers that send Fetch Metadata say exactly where a request came from.
    if let Some(site) = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        return matches!(site, "same-origin" | "none");
    }
    // Otherwise compare Origin with Host; `Origin: null` (opaque origins) is refused.
    if let (Some(origin), Some(host)) = (
        parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok()),
        parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok()),
    ) {
        if origin == "null" {
            return false;
        }
        let o = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        return o.eq_ignore_ascii_case(host);
    }
    // Neither header: not a browser (scripts, curl); the CSRF token still applies to sessions.
    true
}

impl FromRequestParts<AppState> for AdminCtx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if !same_origin(parts) {
            return Err(csrf_error());
        }
        match authenticate_admin(parts, state, true).await {
            Ok(c) => Ok(c),
            Err(Denied::NoCredentials) => Err(AppError::unauthorized(
                "sign in (session cookie) or send `Authorization: Bearer <docket access token>`",
            )),
            Err(Denied::Pending) => Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                "second-factor-required",
                "finish signing in: enter your authenticator code (or enrol one) first",
            )),
            Err(Denied::Problem(e)) => Err(e),
        }
    }
}

/// A live session that may still be pending its second factor (sign-in and enrolment steps).
pub struct PendingCtx {
    pub tenant: Arc<Tenant>,
    pub user: User,
    pub session: Session,
    pub client: Client,
}

impl FromRequestParts<AppState> for PendingCtx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if !same_origin(parts) {
            return Err(csrf_error());
        }
        let client = client_of(parts, Some(&state.config.admin));
        match any_session(parts, state).await? {
            Some((tenant, user, session)) => Ok(PendingCtx {
                tenant,
                user,
                session,
                client,
            }),
            None if bearer_token(parts).is_some() => Err(session_required(
                "signing in and enrolling an authenticator",
            )),
            None => Err(AppError::unauthorized("sign in first")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn post(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/console/login");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn same_origin_trusts_fetch_metadata_then_origin() {
        // Chromium under a no-referrer policy: Origin is null, Fetch Metadata is precise.
        assert!(same_origin(&post(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "null"),
            ("host", "d.test")
        ])));
        assert!(!same_origin(&post(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://d.test"),
            ("host", "d.test")
        ])));
        assert!(!same_origin(&post(&[
            ("sec-fetch-site", "same-site"),
            ("host", "d.test")
        ])));
        assert!(same_origin(&post(&[
            ("origin", "https://d.test"),
            ("host", "d.test")
        ])));
        assert!(!same_origin(&post(&[
            ("origin", "https://evil.test"),
            ("host", "d.test")
        ])));
        assert!(!same_origin(&post(&[
            ("origin", "null"),
            ("host", "d.test")
        ])));
        assert!(same_origin(&post(&[])));
    }
}
