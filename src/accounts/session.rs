//! Console/API sessions. The cookie carries `<tenant id>.<256-bit random token>`; the tenant
//! part only picks the database, where the token's SHA-256 is looked up. A session is
//! *pending* (`mfa = false`) until the second factor is passed or enrolled; only a complete
//! session reaches admin pages. Idle and absolute limits come from `[admin]`.

use sqlx::{AnyConnection, AnyPool, Row};
use time::{Duration, OffsetDateTime};

use super::{hash_secret, random_secret};
use crate::config::AdminConfig;
use crate::error::AppResult;
use crate::time_fmt::{format_utc, parse};

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Session {
    #[serde(skip)]
    pub id_hash: String,
    /// A short public id (first 12 hex digits of the token hash) to name it in lists.
    pub id: String,
    pub user_id: String,
    #[serde(skip)]
    pub csrf: String,
    /// Whether the second factor was passed in this session.
    pub mfa: bool,
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
    /// Last time the password (and TOTP) were re-entered in this session.
    pub reauth_at: Option<String>,
    pub ip: String,
    pub user_agent: String,
}

impl Session {
    /// Whether the user re-authenticated within the last `minutes`.
    pub fn reauthenticated_within(&self, minutes: i64) -> bool {
        self.reauth_at
            .as_deref()
            .and_then(parse)
            .is_some_and(|t| OffsetDateTime::now_utc() - t <= Duration::minutes(minutes))
    }
}

const COLS: &str =
    "id_hash, user_id, csrf, mfa, created_at, last_seen_at, expires_at, reauth_at, ip, user_agent";

fn from_row(r: &sqlx::any::AnyRow) -> Session {
    let id_hash: String = r.get("id_hash");
    let mfa: i64 = r.get("mfa");
    Session {
        id: id_hash[..12].to_string(),
        id_hash,
        user_id: r.get("user_id"),
        csrf: r.get("csrf"),
        mfa: mfa != 0,
        created_at: r.get("created_at"),
        last_seen_at: r.get("last_seen_at"),
        expires_at: r.get("expires_at"),
        reauth_at: r.get("reauth_at"),
        ip: r.get("ip"),
        user_agent: r.get("user_agent"),
    }
}

/// The cookie value for a tenant and token.
pub fn cookie_value(tenant_id: &str, token: &str) -> String {
    format!("{tenant_id}.{token}")
}

/// Splits a cookie value into (tenant id, token).
pub fn split_cookie(value: &str) -> Option<(&str, &str)> {
    let (t, tok) = value.split_once('.')?;
    let ok = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (ok(t, 64) && ok(tok, 64)).then_some((t, tok))
}

/// Starts a session; returns the token to put in the cookie.
pub async fn create(
    conn: &mut AnyConnection,
    user_id: &str,
    mfa: bool,
    ip: &str,
    user_agent: &str,
    cfg: &AdminConfig,
) -> AppResult<(String, Session)> {
    let token = random_secret();
    let now = OffsetDateTime::now_utc();
    let expires = now + Duration::hours(cfg.session_absolute_hours as i64);
    let id_hash = hash_secret(&token);
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, csrf, mfa, created_at, last_seen_at, expires_at, reauth_at, ip, user_agent) \
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)",
    )
    .bind(&id_hash)
    .bind(user_id)
    .bind(random_secret())
    .bind(mfa as i64)
    .bind(format_utc(now))
    .bind(format_utc(expires))
    .bind(mfa.then(|| format_utc(now)))
    .bind(ip)
    .bind(truncate(user_agent, 300))
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(&format!("SELECT {COLS} FROM sessions WHERE id_hash = $1"))
        .bind(&id_hash)
        .fetch_one(&mut *conn)
        .await?;
    Ok((token, from_row(&row)))
}

pub fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The live session for `token`, refreshing its idle clock. Expired ones are deleted.
pub async fn find(pool: &AnyPool, token: &str, cfg: &AdminConfig) -> AppResult<Option<Session>> {
    let id_hash = hash_secret(token);
    let Some(row) = sqlx::query(&format!("SELECT {COLS} FROM sessions WHERE id_hash = $1"))
        .bind(&id_hash)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let s = from_row(&row);
    let now = OffsetDateTime::now_utc();
    let idle_limit = Duration::minutes(cfg.session_idle_minutes as i64);
    let last = parse(&s.last_seen_at).unwrap_or(now - idle_limit - Duration::SECOND);
    let expires = parse(&s.expires_at).unwrap_or(now);
    if now >= expires || now - last > idle_limit {
        end(pool, &id_hash).await?;
        return Ok(None);
    }
    // Touch at most every 30 s to keep reads cheap.
    if now - last > Duration::seconds(30) {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
            .bind(format_utc(now))
            .bind(&id_hash)
            .execute(pool)
            .await?;
    }
    Ok(Some(s))
}

/// Completes a pending session after the second factor: the old token dies and a new one
/// (returned) takes its place, so a token seen before sign-in finished is worthless.
pub async fn complete_mfa(
    conn: &mut AnyConnection,
    old: &Session,
    cfg: &AdminConfig,
) -> AppResult<(String, Session)> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(&old.id_hash)
        .execute(&mut *conn)
        .await?;
    create(conn, &old.user_id, true, &old.ip, &old.user_agent, cfg).await
}

/// Records a successful re-authentication (password + TOTP) in this session.
pub async fn mark_reauth(pool: &AnyPool, id_hash: &str) -> AppResult<()> {
    sqlx::query("UPDATE sessions SET reauth_at = $1 WHERE id_hash = $2")
        .bind(crate::time_fmt::now_rfc3339())
        .bind(id_hash)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn end(pool: &AnyPool, id_hash: &str) -> AppResult<()> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends every session of a user (logout everywhere, suspension, password change).
pub async fn end_all_for_user(conn: &mut AnyConnection, user_id: &str) -> sqlx::Result<u64> {
    Ok(sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Ends every session of a user but `keep` (an `id_hash`): a password change from that
/// session signs out everywhere else.
pub async fn end_others_for_user(
    conn: &mut AnyConnection,
    user_id: &str,
    keep: &str,
) -> sqlx::Result<u64> {
    Ok(
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_hash <> $2")
            .bind(user_id)
            .bind(keep)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// A user's live sessions, newest first.
pub async fn list_for_user(pool: &AnyPool, user_id: &str) -> AppResult<Vec<Session>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM sessions WHERE user_id = $1 ORDER BY created_at DESC"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Ends one session of a user by its public id; false when there is none.
pub async fn end_by_public_id(pool: &AnyPool, user_id: &str, id: &str) -> AppResult<bool> {
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(false);
    }
    let n = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_hash LIKE $2")
        .bind(user_id)
        .bind(format!("{id}%"))
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n > 0)
}
