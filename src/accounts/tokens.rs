//! Personal access tokens for scripts and apps: `dkt_<tenant id>_<256-bit secret>`, shown
//! once, stored as SHA-256, named, scoped, expiring, revocable, with last use recorded.

use std::fmt;
use std::str::FromStr;

use sqlx::{AnyPool, Row};
use time::{Duration, OffsetDateTime};

use super::{hash_secret, random_secret};
use crate::audit::{self, AuditEvent};
use crate::error::{AppError, AppResult};
use crate::time_fmt::{format_utc, now_rfc3339, parse};

pub const PREFIX: &str = "dkt_";
pub const MAX_DAYS: u32 = 366;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read-only admin API (GET).
    Read,
    /// File messages (`POST /v1/filings`) as the token's owner.
    File,
    /// Everything the owner can do in the admin API.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::File => "file",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Scope::Read),
            "file" => Ok(Scope::File),
            "admin" => Ok(Scope::Admin),
            _ => Err(format!("unknown scope {s:?}: expected read, file or admin")),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AccessToken {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
}

impl AccessToken {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
    pub fn is_live(&self) -> bool {
        self.revoked_at.is_none()
            && parse(&self.expires_at).is_some_and(|e| e > OffsetDateTime::now_utc())
    }
}

const COLS: &str =
    "id, user_id, name, scopes, created_at, expires_at, revoked_at, last_used_at, last_used_ip";

fn from_row(r: &sqlx::any::AnyRow) -> AccessToken {
    let scopes: String = r.get("scopes");
    AccessToken {
        id: r.get("id"),
        user_id: r.get("user_id"),
        name: r.get("name"),
        scopes: scopes.split(',').filter_map(|s| s.parse().ok()).collect(),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        revoked_at: r.get("revoked_at"),
        last_used_at: r.get("last_used_at"),
        last_used_ip: r.get("last_used_ip"),
    }
}

/// The tenant id a token names, when it has the token shape at all.
pub fn tenant_of(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(PREFIX)?;
    let (tenant, key) = rest.split_once('_')?;
    (tenant.len() == 32 && tenant.bytes().all(|b| b.is_ascii_hexdigit()) && key.len() == 43)
        .then_some(tenant)
}

/// Creates a token; returns the secret (shown once) and its record.
pub async fn create(
    pool: &AnyPool,
    tenant_id: &str,
    user_id: &str,
    name: &str,
    scopes: &[Scope],
    expires_in_days: u32,
    actor: &str,
) -> AppResult<(String, AccessToken)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::unprocessable(
            "invalid-name",
            "a token name must be 1-100 characters",
        ));
    }
    if scopes.is_empty() {
        return Err(AppError::unprocessable(
            "invalid-scopes",
            "choose at least one scope: read, file or admin",
        ));
    }
    if expires_in_days == 0 || expires_in_days > MAX_DAYS {
        return Err(AppError::unprocessable(
            "invalid-expiry",
            format!("a token must expire within 1..={MAX_DAYS} days"),
        ));
    }
    let mut scopes: Vec<Scope> = scopes.to_vec();
    scopes.sort_by_key(|s| s.as_str());
    scopes.dedup();
    let secret = format!("{PREFIX}{tenant_id}_{}", random_secret());
    let id = uuid::Uuid::new_v4().simple().to_string();
    let now = OffsetDateTime::now_utc();
    let scope_text = scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    sqlx::query(
        "INSERT INTO access_tokens (id, user_id, name, token_hash, scopes, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(user_id)
    .bind(name)
    .bind(hash_secret(&secret))
    .bind(&scope_text)
    .bind(format_utc(now))
    .bind(format_utc(now + Duration::days(expires_in_days as i64)))
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "token.created", &id).detail(serde_json::json!({
            "name": name, "scopes": scope_text, "owner": user_id, "days": expires_in_days,
        })),
    )
    .await?;
    tx.commit().await?;
    let t = get(pool, &id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("token vanished")))?;
    Ok((secret, t))
}

pub async fn get(pool: &AnyPool, id: &str) -> AppResult<Option<AccessToken>> {
    let row = sqlx::query(&format!("SELECT {COLS} FROM access_tokens WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// The live token for `secret`, recording this use (time and client IP).
pub async fn authenticate(
    pool: &AnyPool,
    secret: &str,
    ip: &str,
) -> AppResult<Option<AccessToken>> {
    let Some(row) = sqlx::query(&format!(
        "SELECT {COLS} FROM access_tokens WHERE token_hash = $1"
    ))
    .bind(hash_secret(secret))
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let t = from_row(&row);
    if !t.is_live() {
        return Ok(None);
    }
    // Recorded at most once a minute per address, so scripts do not write on every call.
    let recent = t
        .last_used_at
        .as_deref()
        .and_then(parse)
        .is_some_and(|at| OffsetDateTime::now_utc() - at < Duration::minutes(1));
    if recent && t.last_used_ip.as_deref() == Some(ip) {
        return Ok(Some(t));
    }
    sqlx::query("UPDATE access_tokens SET last_used_at = $1, last_used_ip = $2 WHERE id = $3")
        .bind(now_rfc3339())
        .bind(ip)
        .bind(&t.id)
        .execute(pool)
        .await?;
    Ok(Some(t))
}

/// A user's tokens (live and past), newest first.
pub async fn list_for_user(pool: &AnyPool, user_id: &str) -> AppResult<Vec<AccessToken>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM access_tokens WHERE user_id = $1 ORDER BY created_at DESC"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Every live token of the firm but `user_id`'s, with its owner's email, newest first
/// (so an admin can revoke anyone's token during an incident).
pub async fn list_others_live(
    pool: &AnyPool,
    user_id: &str,
) -> AppResult<Vec<(AccessToken, String)>> {
    let cols = COLS
        .split(", ")
        .map(|c| format!("t.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "SELECT {cols}, u.email AS owner_email FROM access_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.user_id <> $1 AND t.revoked_at IS NULL ORDER BY t.created_at DESC"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (from_row(r), r.get("owner_email")))
        .filter(|(t, _)| t.is_live())
        .collect())
}

/// Every token of the firm (live and past), newest first.
pub async fn list_all(pool: &AnyPool) -> AppResult<Vec<AccessToken>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM access_tokens ORDER BY created_at DESC"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Revokes any token of the firm (the caller's own or another person's, so an admin can
/// act during an incident); 404 when there is no such token. Revoking a revoked token
/// changes nothing. Audited `token.revoked` with the owner.
pub async fn revoke(pool: &AnyPool, id: &str, actor: &str) -> AppResult<AccessToken> {
    let t = get(pool, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such access token"))?;
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let n = sqlx::query(
        "UPDATE access_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
    )
    .bind(now_rfc3339())
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        audit::append(
            &mut tx,
            &AuditEvent::new(actor, "token.revoked", id)
                .detail(serde_json::json!({ "owner": t.user_id, "name": t.name })),
        )
        .await?;
    }
    tx.commit().await?;
    get(pool, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such access token"))
}

/// Revokes every live token of a user (suspension, closure); returns how many.
pub async fn revoke_all_for_user(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE access_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
    )
    .bind(now_rfc3339())
    .bind(user_id)
    .execute(conn)
    .await?
    .rows_affected())
}
