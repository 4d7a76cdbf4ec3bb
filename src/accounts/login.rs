//! Signing in to the console and admin API: password, then the TOTP second factor (or its
//! enrolment). Protection: the 3rd consecutive failure suspends the account until another
//! admin reactivates it; a per-IP throttle refuses (429) a client with too many recent
//! failures so one attacker cannot cheaply lock out everyone. Every attempt writes a
//! `login_attempts` row and an audit entry in the tenant's database.
//!
//! Unknown tenant, unknown user, user without a password and wrong password all answer the
//! same 401 `invalid-credentials`, after the same Argon2 work. An address that maps to no
//! tenant leaves no `login_attempts` row (there is no tenant database to write it to); it is
//! logged (without the address) instead.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sqlx::{AnyConnection, AnyPool, Row};
use time::{Duration, OffsetDateTime};

use super::session::{self, Session};
use super::{password, totp};
use crate::audit::{self, AuditEvent};
use crate::config::AdminConfig;
use crate::directory::{self, Role, User};
use crate::error::{AppError, AppResult};
use crate::http::admin::ctx::Client;
use crate::http::AppState;
use crate::tenancy::Tenant;
use crate::time_fmt::{format_utc, now_rfc3339, parse};

/// Consecutive failures that suspend an account.
pub const MAX_FAILURES: i64 = 3;

/// What the user must do after a correct password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Next {
    /// Enter the code from the authenticator app (or a recovery code).
    SecondFactor,
    /// Set up an authenticator app first (admins must have one).
    Enrol,
}

/// A correct password: a pending session (`mfa = false`) and what comes next.
pub struct SignedIn {
    pub tenant: Arc<Tenant>,
    pub user: User,
    /// The session token for the cookie.
    pub token: String,
    pub session: Session,
    pub next: Next,
}

/// A refused sign-in step: the problem, and for 429 how long to wait (`Retry-After`).
#[derive(Debug)]
pub struct LoginError {
    pub error: AppError,
    pub retry_after: Option<u64>,
}

impl LoginError {
    pub fn status(&self) -> StatusCode {
        self.error.status()
    }
    pub fn slug(&self) -> &'static str {
        self.error.slug()
    }
    /// The text to show the user (internal errors say nothing specific).
    pub fn message(&self) -> String {
        match &self.error {
            AppError::Problem { detail, .. } => detail.clone(),
            AppError::Internal(_) => "something went wrong on our side; try again".into(),
        }
    }
}

impl From<AppError> for LoginError {
    fn from(error: AppError) -> Self {
        LoginError {
            error,
            retry_after: None,
        }
    }
}

impl From<sqlx::Error> for LoginError {
    fn from(e: sqlx::Error) -> Self {
        AppError::from(e).into()
    }
}

impl From<anyhow::Error> for LoginError {
    fn from(e: anyhow::Error) -> Self {
        AppError::internal(e).into()
    }
}

impl IntoResponse for LoginError {
    fn into_response(self) -> Response {
        let retry = self.retry_after;
        let mut r = self.error.into_response();
        if let Some(s) = retry {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// The one answer for every kind of wrong credentials.
pub fn invalid_credentials() -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "the email address or password is not correct",
    )
}

pub fn account_suspended() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "account-suspended",
        "this account is suspended (for example after 3 failed sign-ins): ask another \
         administrator to reactivate it",
    )
}

fn invalid_code() -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "invalid-code",
        "that code is not correct (or was already used): enter the current 6-digit code \
         from your authenticator app, or an unused recovery code",
    )
}

/// Concurrent guesses used up the account's attempts: nothing was checked.
fn no_attempts_left() -> AppError {
    AppError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "attempts-exhausted",
        "too many sign-in attempts for this account failed or are in progress: it is locked, \
         or about to be; ask another administrator if you cannot sign in",
    )
}

/// Finds the tenant for a sign-in address: an explicit address mapping, else its domain.
async fn tenant_for(state: &AppState, email: &str) -> anyhow::Result<Option<Arc<Tenant>>> {
    let mut id = state.catalog.tenant_id_for_address(email).await?;
    if id.is_none() {
        if let Some((_, domain)) = email.rsplit_once('@') {
            if !domain.is_empty() {
                id = state.catalog.tenant_id_for_domain(domain).await?;
            }
        }
    }
    let Some(id) = id else { return Ok(None) };
    let t = state.catalog.tenant(&id).await?;
    Ok(t.is_active().then_some(t))
}

struct Account {
    hash: String,
}

async fn account(pool: &AnyPool, user_id: &str) -> AppResult<Option<Account>> {
    let row = sqlx::query("SELECT password_hash FROM local_accounts WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| Account {
        hash: r.get("password_hash"),
    }))
}

/// One sign-in attempt for the login audit.
struct Attempt<'a> {
    email: &'a str,
    user_id: Option<&'a str>,
    result: &'static str,
    reason: &'static str,
    ip: String,
    user_agent: &'a str,
}

async fn write_attempt(conn: &mut AnyConnection, a: &Attempt<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO login_attempts (id, at, email, user_id, result, reason, ip, user_agent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::new_v4().simple().to_string())
    .bind(now_rfc3339())
    .bind(session::truncate(a.email, 254))
    .bind(a.user_id)
    .bind(a.result)
    .bind(a.reason)
    .bind(&a.ip)
    .bind(session::truncate(a.user_agent, 300))
    .execute(conn)
    .await?;
    Ok(())
}

fn attempt_event(action: &'static str, a: &Attempt<'_>) -> AuditEvent {
    AuditEvent::new(
        session::truncate(a.email, 254),
        action,
        a.user_id.unwrap_or(a.email),
    )
    .detail(serde_json::json!({
        "result": a.result, "reason": a.reason, "ip": a.ip,
        "user_agent": session::truncate(a.user_agent, 300),
    }))
}

/// Writes an attempt row and its audit entry in one transaction.
async fn record(pool: &AnyPool, action: &'static str, a: &Attempt<'_>) -> AppResult<()> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    write_attempt(&mut tx, a).await?;
    audit::append(&mut tx, &attempt_event(action, a)).await?;
    tx.commit().await?;
    Ok(())
}

/// Seconds until this IP may try again, when its recent failures reached the limit.
async fn throttled(pool: &AnyPool, ip: &str, cfg: &AdminConfig) -> AppResult<Option<u64>> {
    let limit = cfg.throttle_failures_per_ip.max(1) as i64;
    let window = Duration::minutes(cfg.throttle_window_minutes.max(1) as i64);
    let now = OffsetDateTime::now_utc();
    let rows = sqlx::query(
        "SELECT at FROM login_attempts WHERE ip = $1 AND result = 'failure' AND at >= $2 \
         ORDER BY at DESC LIMIT $3",
    )
    .bind(ip)
    .bind(format_utc(now - window))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    if (rows.len() as i64) < limit {
        return Ok(None);
    }
    // The limit-th most recent failure leaves the window first.
    let oldest: String = rows[rows.len() - 1].get("at");
    let until = parse(&oldest).unwrap_or(now) + window;
    Ok(Some((until - now).whole_seconds().max(1) as u64))
}

fn throttle_error(secs: u64) -> LoginError {
    let minutes = secs.div_ceil(60);
    LoginError {
        error: AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            format!(
                "too many failed sign-ins from your network address: try again in {minutes} \
                 minute{}",
                if minutes == 1 { "" } else { "s" }
            ),
        ),
        retry_after: Some(secs),
    }
}

/// Refuses (429) and records the attempt when the client's IP is throttled.
async fn check_throttle(
    tenant: &Tenant,
    cfg: &AdminConfig,
    email: &str,
    user_id: Option<&str>,
    client: &Client,
) -> Result<(), LoginError> {
    if let Some(secs) = throttled(&tenant.db, &client.ip.to_string(), cfg).await? {
        record(
            &tenant.db,
            "login.throttled",
            &Attempt {
                email,
                user_id,
                result: "throttled",
                reason: "too-many-failures-from-ip",
                ip: client.ip.to_string(),
                user_agent: &client.user_agent,
            },
        )
        .await?;
        crate::metrics::global().signin_throttled();
        return Err(throttle_error(secs));
    }
    Ok(())
}

/// Claims one of the account's remaining attempts *before* a password or code is checked:
/// the failure counter goes up first, in one conditional statement (atomic on SQLite and
/// PostgreSQL alike), so concurrent guesses cannot check more than [`MAX_FAILURES`] between
/// them. A wrong answer keeps the claim (it is the failure); a right one clears the counter
/// or gives the claim back ([`release_attempt`]). False: no attempt left, check nothing.
async fn claim_attempt(pool: &AnyPool, user_id: &str) -> AppResult<bool> {
    let n = sqlx::query(
        "UPDATE local_accounts SET failed_logins = failed_logins + 1 \
         WHERE user_id = $1 AND failed_logins < $2",
    )
    .bind(user_id)
    .bind(MAX_FAILURES)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Gives back a claimed attempt whose answer was right but does not end the sign-in (a
/// correct password: the second factor still counts against the same budget).
async fn release_attempt(pool: &AnyPool, user_id: &str) -> AppResult<()> {
    sqlx::query(
        "UPDATE local_accounts SET failed_logins = failed_logins - 1 \
         WHERE user_id = $1 AND failed_logins > 0",
    )
    .bind(user_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// A failure. When `claimed` (the attempt was claimed with [`claim_attempt`], so it already
/// counts), the third one suspends the account; returns whether this failure did. Writes
/// the audit entry `action` (and the attempt row when given).
async fn failure(
    pool: &AnyPool,
    user: Option<&User>,
    claimed: bool,
    action: &'static str,
    attempt: Option<&Attempt<'_>>,
    actor_email: &str,
    reason: &'static str,
) -> AppResult<bool> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let mut locked = false;
    let mut failures = None;
    if let (true, Some(u)) = (claimed, user) {
        let n: i64 = sqlx::query("SELECT failed_logins FROM local_accounts WHERE user_id = $1")
            .bind(&u.id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .unwrap_or(0);
        failures = Some(n);
        if n >= MAX_FAILURES {
            let changed = sqlx::query(
                "UPDATE users SET status = 'suspended' WHERE id = $1 AND status = 'active'",
            )
            .bind(&u.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 1 {
                sqlx::query("UPDATE local_accounts SET locked_at = $1 WHERE user_id = $2")
                    .bind(now_rfc3339())
                    .bind(&u.id)
                    .execute(&mut *tx)
                    .await?;
                let ended = session::end_all_for_user(&mut tx, &u.id).await?;
                let links = super::reset::revoke_links_for_user(&mut tx, &u.id).await?;
                audit::append(
                    &mut tx,
                    &AuditEvent::new(actor_email, "account.locked", &u.id).detail(
                        serde_json::json!({
                            "email": u.email, "failures": n, "sessions_ended": ended,
                            "links_revoked": links, "ip": attempt.map(|a| a.ip.clone()),
                        }),
                    ),
                )
                .await?;
                locked = true;
            }
        }
    }
    match attempt {
        Some(a) => {
            write_attempt(&mut tx, a).await?;
            let mut ev = attempt_event(action, a);
            ev.detail["failures"] = serde_json::json!(failures);
            audit::append(&mut tx, &ev).await?;
        }
        None => {
            let subject = user.map(|u| u.id.as_str()).unwrap_or(actor_email);
            audit::append(
                &mut tx,
                &AuditEvent::new(actor_email, action, subject)
                    .detail(serde_json::json!({"reason": reason, "failures": failures})),
            )
            .await?;
        }
    }
    tx.commit().await?;
    crate::metrics::global().signin_failed(reason, locked);
    Ok(locked)
}

/// What checking a sign-in password found.
enum PasswordCheck {
    Right {
        needs_rehash: bool,
    },
    /// Wrong, or no such user or password; `claimed`: it counts toward the lockout.
    Wrong {
        claimed: bool,
    },
    /// The account has no attempt left (concurrent guesses in flight): nothing was checked.
    NoAttemptsLeft,
}

/// Checks a password, claiming one of an active account's attempts first. A suspended
/// account's password is still checked (nothing there leads to a session; its owner learns
/// the account is suspended). Unknown users and exhausted accounts cost the same Argon2 work.
async fn check_password(
    pool: &AnyPool,
    user: Option<&User>,
    acct: Option<&Account>,
    candidate: &str,
) -> AppResult<PasswordCheck> {
    let counted = match (user, acct) {
        (Some(u), Some(_)) if u.status == "active" => Some(u.id.as_str()),
        _ => None,
    };
    if let Some(id) = counted {
        if !claim_attempt(pool, id).await? {
            let _ = password::verify_blocking(candidate, password::dummy_hash()).await;
            return Ok(PasswordCheck::NoAttemptsLeft);
        }
    }
    let stored = acct
        .map(|a| a.hash.as_str())
        .unwrap_or(password::dummy_hash());
    let v = password::verify_blocking(candidate, stored).await;
    if acct.is_some() && v.ok && !candidate.is_empty() {
        if let Some(id) = counted {
            release_attempt(pool, id).await?;
        }
        return Ok(PasswordCheck::Right {
            needs_rehash: v.needs_rehash,
        });
    }
    Ok(PasswordCheck::Wrong {
        claimed: counted.is_some(),
    })
}

/// Normalised sign-in address (trimmed, lowercase); over-long input cannot match a user.
fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Step 1: the password. Creates a pending session (the second factor or its enrolment
/// comes next). Errors: 401 `invalid-credentials` (unknown tenant/user, no password, wrong
/// password: all alike), 429 `throttled` (with `retry_after`), 403 `account-suspended`
/// (right password, suspended account), 403 `account-disabled`, 403 `not-an-admin`.
pub async fn sign_in(
    state: &AppState,
    email: &str,
    password: &str,
    client: &Client,
) -> Result<SignedIn, LoginError> {
    let cfg = &state.config.admin;
    let email = normalise_email(email);
    // Anything longer than the policy allows cannot be anyone's password; it still costs
    // one Argon2 verification like every other answer.
    let candidate = if password.chars().count() <= password::MAX_CHARS {
        password
    } else {
        ""
    };
    let tenant = if email.len() <= 254 {
        tenant_for(state, &email).await?
    } else {
        None
    };
    let Some(tenant) = tenant else {
        let _ = password::verify_blocking(candidate, password::dummy_hash()).await;
        tracing::info!(ip = %client.ip, "sign-in for an address that maps to no tenant");
        return Err(invalid_credentials().into());
    };
    let user = directory::user_by_email(&tenant.db, &email).await?;
    let user_id = user.as_ref().map(|u| u.id.as_str());
    check_throttle(&tenant, cfg, &email, user_id, client).await?;
    let acct = match &user {
        Some(u) => account(&tenant.db, &u.id).await?,
        None => None,
    };
    let check = check_password(&tenant.db, user.as_ref(), acct.as_ref(), candidate).await?;
    let attempt = |result: &'static str, reason: &'static str| Attempt {
        email: &email,
        user_id,
        result,
        reason,
        ip: client.ip.to_string(),
        user_agent: &client.user_agent,
    };
    let (Some(user), PasswordCheck::Right { needs_rehash }) = (&user, &check) else {
        let (claimed, reason) = match (&check, &user, &acct) {
            (PasswordCheck::NoAttemptsLeft, _, _) => (false, "no-attempts-left"),
            (_, None, _) => (false, "unknown-user"),
            (_, Some(_), None) => (false, "no-password"),
            // Not counted (the account was already suspended or disabled when read): not one
            // of the three wrong passwords that lock it.
            (PasswordCheck::Wrong { claimed: false }, Some(u), _) if u.status == "suspended" => {
                (false, "account-suspended")
            }
            (PasswordCheck::Wrong { claimed: false }, Some(_), _) => (false, "account-disabled"),
            (PasswordCheck::Wrong { claimed }, _, _) => (*claimed, "wrong-password"),
            (PasswordCheck::Right { .. }, _, _) => (false, "wrong-password"),
        };
        failure(
            &tenant.db,
            user.as_ref(),
            claimed,
            "login.failed",
            Some(&attempt("failure", reason)),
            &email,
            reason,
        )
        .await?;
        return Err(invalid_credentials().into());
    };
    if user.status != "active" {
        let (result, reason, err) = if user.status == "suspended" {
            ("suspended", "account-suspended", account_suspended())
        } else {
            (
                "failure",
                "account-disabled",
                AppError::new(
                    StatusCode::FORBIDDEN,
                    "account-disabled",
                    "this account is disabled",
                ),
            )
        };
        record(&tenant.db, "login.failed", &attempt(result, reason)).await?;
        return Err(err.into());
    }
    if user.role != Role::Admin {
        record(
            &tenant.db,
            "login.failed",
            &attempt("failure", "not-an-admin"),
        )
        .await?;
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "not-an-admin",
            "only administrators can sign in to the docket console; use the Gmail add-on",
        )
        .into());
    }
    let new_hash = if *needs_rehash {
        Some(password::hash_blocking(password).await?)
    } else {
        None
    };
    let enrolled = totp::is_enrolled(&tenant.db, &user.id).await?;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    if let Some(h) = &new_hash {
        sqlx::query("UPDATE local_accounts SET password_hash = $1 WHERE user_id = $2")
            .bind(h)
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
    }
    let (token, session) = session::create(
        &mut tx,
        &user.id,
        false,
        &client.ip.to_string(),
        &client.user_agent,
        cfg,
    )
    .await?;
    let a = attempt("success", "password");
    write_attempt(&mut tx, &a).await?;
    let mut ev = attempt_event("login.succeeded", &a);
    ev.detail["stage"] = "password".into();
    ev.detail["rehashed"] = new_hash.is_some().into();
    audit::append(&mut tx, &ev).await?;
    tx.commit().await?;
    Ok(SignedIn {
        user: user.clone(),
        tenant,
        token,
        session,
        next: if enrolled {
            Next::SecondFactor
        } else {
            Next::Enrol
        },
    })
}

/// Completes a pending session: failures clear, the session is replaced by a complete one
/// (new token returned), and the attempt is recorded.
async fn finish(
    tenant: &Tenant,
    user: &User,
    session: &Session,
    reason: &'static str,
    client: &Client,
    cfg: &AdminConfig,
) -> AppResult<(String, Session)> {
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    sqlx::query("UPDATE local_accounts SET failed_logins = 0 WHERE user_id = $1")
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    let done = session::complete_mfa(&mut tx, session, cfg).await?;
    let a = Attempt {
        email: &user.email,
        user_id: Some(&user.id),
        result: "success",
        reason,
        ip: client.ip.to_string(),
        user_agent: &client.user_agent,
    };
    write_attempt(&mut tx, &a).await?;
    let mut ev = attempt_event("login.succeeded", &a);
    ev.detail["stage"] = "second-factor".into();
    audit::append(&mut tx, &ev).await?;
    tx.commit().await?;
    Ok(done)
}

fn already_complete() -> AppError {
    AppError::new(
        StatusCode::CONFLICT,
        "already-signed-in",
        "this session is already signed in",
    )
}

/// Step 2: a TOTP code or recovery code for a pending session. Returns the new (complete)
/// session's token. A wrong code counts toward the lockout (401 `invalid-code`, or 403
/// `account-suspended` when it was the third failure).
pub async fn second_factor(
    state: &AppState,
    tenant: &Tenant,
    user: &User,
    session: &Session,
    code: &str,
    client: &Client,
) -> Result<(String, Session), LoginError> {
    let cfg = &state.config.admin;
    if session.mfa {
        return Err(already_complete().into());
    }
    check_throttle(tenant, cfg, &user.email, Some(&user.id), client).await?;
    if !totp::is_enrolled(&tenant.db, &user.id).await? {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "not-enrolled",
            "set up an authenticator app first",
        )
        .into());
    }
    let claimed = claim_attempt(&tenant.db, &user.id).await?;
    let checked = if claimed {
        totp::verify(tenant, user, code).await?
    } else {
        None
    };
    if let Some(f) = checked {
        let reason = match f {
            totp::Factor::Totp => "totp",
            totp::Factor::RecoveryCode => "recovery-code",
        };
        return Ok(finish(tenant, user, session, reason, client, cfg).await?);
    }
    let reason = if claimed {
        "wrong-code"
    } else {
        "no-attempts-left"
    };
    let a = Attempt {
        email: &user.email,
        user_id: Some(&user.id),
        result: "failure",
        reason,
        ip: client.ip.to_string(),
        user_agent: &client.user_agent,
    };
    let locked = failure(
        &tenant.db,
        Some(user),
        claimed,
        "login.failed",
        Some(&a),
        &user.email,
        reason,
    )
    .await?;
    Err(match (locked, claimed) {
        (true, _) => account_suspended(),
        (false, true) => invalid_code(),
        (false, false) => no_attempts_left(),
    }
    .into())
}

/// Enrolment, step 2: the first code from the new authenticator confirms it, the session
/// becomes complete. Returns the recovery codes (shown once) and the new session token.
pub async fn confirm_enrolment(
    state: &AppState,
    tenant: &Tenant,
    user: &User,
    session: &Session,
    code: &str,
    client: &Client,
) -> AppResult<(Vec<String>, String, Session)> {
    if session.mfa {
        return Err(already_complete());
    }
    let codes = totp::confirm_enrolment(tenant, user, code, &user.email).await?;
    let (token, s) = finish(
        tenant,
        user,
        session,
        "totp-enrolled",
        client,
        &state.config.admin,
    )
    .await?;
    Ok((codes, token, s))
}

/// Re-authentication inside a complete session for sensitive actions: the password AND a
/// TOTP or recovery code. Failures count toward the lockout; audited `reauth.succeeded` /
/// `reauth.failed`. Errors: 403 `reauth-failed`, 403 `account-suspended` (3rd failure).
pub async fn reauthenticate(
    tenant: &Tenant,
    user: &User,
    session: &Session,
    password: &str,
    code: &str,
) -> AppResult<()> {
    if !claim_attempt(&tenant.db, &user.id).await? {
        let why = "no-attempts-left";
        failure(
            &tenant.db,
            Some(user),
            false,
            "reauth.failed",
            None,
            &user.email,
            why,
        )
        .await?;
        return Err(no_attempts_left());
    }
    let pw_ok = password_matches(&tenant.db, &user.id, password).await?;
    // The code is only tried after the password, so a wrong password cannot burn a
    // recovery code.
    let code_ok = pw_ok && totp::verify(tenant, user, code).await?.is_some();
    if !code_ok {
        let reason = if pw_ok {
            "wrong-code"
        } else {
            "wrong-password"
        };
        let locked = failure(
            &tenant.db,
            Some(user),
            true,
            "reauth.failed",
            None,
            &user.email,
            reason,
        )
        .await?;
        if locked {
            return Err(account_suspended());
        }
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "reauth-failed",
            "the password or the authenticator code is not correct",
        ));
    }
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    sqlx::query("UPDATE local_accounts SET failed_logins = 0 WHERE user_id = $1")
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(&user.email, "reauth.succeeded", &user.id)
            .detail(serde_json::json!({"session": session.id})),
    )
    .await?;
    tx.commit().await?;
    session::mark_reauth(&tenant.db, &session.id_hash).await
}

/// A user changing their own password from a complete session: the current password
/// (each wrong one counts toward the lockout like a failed sign-in; audited
/// `password.change_failed`), then the new one, typed twice and policy checked before
/// anything is counted. Every other session of the user ends; this one stays. Audited
/// `password.changed`. Errors: 422 `passwords-differ`, `same-password`, `weak-password`;
/// 403 `wrong-password`; 403 `account-suspended` (3rd failure); 429 `attempts-exhausted`.
pub async fn change_password(
    tenant: &Tenant,
    user: &User,
    session: &Session,
    current: &str,
    new: &str,
    repeat: &str,
) -> AppResult<()> {
    check_new_password(user, current, new, repeat)?;
    if !claim_attempt(&tenant.db, &user.id).await? {
        let why = "no-attempts-left";
        let action = "password.change_failed";
        failure(
            &tenant.db,
            Some(user),
            false,
            action,
            None,
            &user.email,
            why,
        )
        .await?;
        return Err(no_attempts_left());
    }
    if !password_matches(&tenant.db, &user.id, current).await? {
        let action = "password.change_failed";
        let reason = "wrong-password";
        if failure(
            &tenant.db,
            Some(user),
            true,
            action,
            None,
            &user.email,
            reason,
        )
        .await?
        {
            return Err(account_suspended());
        }
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "wrong-password",
            "the current password is not correct",
        ));
    }
    // Argon2 takes a while: never while holding the firm's write lock.
    let hashed = password::hash_blocking(new).await?;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    password::store_changed_password(&mut tx, &user.id, &hashed, &session.id_hash).await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(&user.email, "password.changed", &user.id)
            .detail(serde_json::json!({"session": session.id})),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The checks on a new password that need no secret: typed the same twice, not the
/// current one, and within the policy.
fn check_new_password(user: &User, current: &str, new: &str, repeat: &str) -> AppResult<()> {
    if new != repeat {
        return Err(AppError::unprocessable(
            "passwords-differ",
            "the new password and its repetition differ: type the same new password twice",
        ));
    }
    if new == current {
        return Err(AppError::unprocessable(
            "same-password",
            "the new password is the current one: choose a different password",
        ));
    }
    password::check_policy(new, &[&user.email, &user.display_name])
        .map_err(|m| AppError::unprocessable("weak-password", m))
}

/// Whether `pw` is the user's password (Argon2 work done even without an account).
async fn password_matches(pool: &AnyPool, user_id: &str, pw: &str) -> AppResult<bool> {
    let stored = account(pool, user_id).await?;
    let hash = stored
        .as_ref()
        .map(|a| a.hash.as_str())
        .unwrap_or(password::dummy_hash());
    Ok(stored.is_some()
        && pw.chars().count() <= password::MAX_CHARS
        && password::verify_blocking(pw, hash).await.ok)
}

async fn user_or_404(conn: &mut AnyConnection, user_id: &str) -> AppResult<String> {
    let row = sqlx::query("SELECT status FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| AppError::not_found("no such user"))?;
    Ok(row.get("status"))
}

async fn reload(pool: &AnyPool, user_id: &str) -> AppResult<User> {
    directory::user_by_id(pool, user_id)
        .await?
        .ok_or_else(|| AppError::not_found("no such user"))
}

/// Suspends a user: no sign-in, no access tokens honoured, every session ended, every
/// issued set-password link revoked. Audited
/// `user.suspended`. 404 for an unknown id; 409 `user-disabled` for a disabled user.
/// Suspending an already suspended user changes nothing.
pub async fn suspend(pool: &AnyPool, user_id: &str, actor: &str) -> AppResult<User> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let status = user_or_404(&mut tx, user_id).await?;
    match status.as_str() {
        "suspended" => {}
        "active" => {
            sqlx::query("UPDATE users SET status = 'suspended' WHERE id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            let ended = session::end_all_for_user(&mut tx, user_id).await?;
            let links = super::reset::revoke_links_for_user(&mut tx, user_id).await?;
            audit::append(
                &mut tx,
                &AuditEvent::new(actor, "user.suspended", user_id)
                    .detail(serde_json::json!({"sessions_ended": ended, "links_revoked": links})),
            )
            .await?;
        }
        _ => {
            return Err(AppError::new(
                StatusCode::CONFLICT,
                "user-disabled",
                "this user is disabled; suspension does not apply",
            ))
        }
    }
    tx.commit().await?;
    reload(pool, user_id).await
}

/// Reactivates a suspended (or locked-out) user and clears the failure counter and lock.
/// Audited `user.reactivated`. 404 for an unknown id; 409 `user-disabled` for a disabled
/// user. Reactivating an active user only clears its failure counter.
pub async fn reactivate(pool: &AnyPool, user_id: &str, actor: &str) -> AppResult<User> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let status = user_or_404(&mut tx, user_id).await?;
    if status == "disabled" {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "user-disabled",
            "this user is disabled; reactivation does not apply",
        ));
    }
    sqlx::query("UPDATE users SET status = 'active' WHERE id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE local_accounts SET failed_logins = 0, locked_at = NULL WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    if status == "suspended" {
        audit::append(
            &mut tx,
            &AuditEvent::new(actor, "user.reactivated", user_id),
        )
        .await?;
    }
    tx.commit().await?;
    reload(pool, user_id).await
}

/// Ends every session of a user (an admin's "sign out everywhere"). Audited
/// `sessions.ended`; returns how many ended.
pub async fn end_sessions(pool: &AnyPool, user_id: &str, actor: &str) -> AppResult<u64> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    user_or_404(&mut tx, user_id).await?;
    let n = session::end_all_for_user(&mut tx, user_id).await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "sessions.ended", user_id).detail(serde_json::json!({"count": n})),
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Signs out: the session ends. Audited `logout`.
pub async fn logout(tenant: &Tenant, user: &User, session: &Session) -> AppResult<()> {
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(&session.id_hash)
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(&user.email, "logout", &user.id)
            .detail(serde_json::json!({"session": session.id})),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
