//! Admin-mediated password resets. There is no self-service reset: "forgot password" files a
//! request for the tenant's admins; an admin (or the operator CLI) issues a one-time link,
//! `/console/reset/<tenant id>.<256-bit secret>`, whose SHA-256 alone is stored and which
//! expires after `admin.reset_link_minutes`. Every step is audited in the same transaction.

use sqlx::{AnyPool, Row};
use time::{Duration, OffsetDateTime};

use super::session::truncate;
use super::{hash_secret, random_secret};
use crate::audit::{self, AuditEvent};
use crate::directory::{self, User};
use crate::error::{AppError, AppResult};
use crate::tenancy::Tenant;
use crate::time_fmt::{format_utc, now_rfc3339, parse};

/// Where a set-password link points (the token follows).
pub const LINK_PATH: &str = "/console/reset/";

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ResetRequest {
    pub id: String,
    /// The address as typed by the requester (lower-cased).
    pub email: String,
    /// The user it names, when there is one.
    pub user_id: Option<String>,
    pub requested_at: String,
    pub ip: String,
    pub user_agent: String,
    /// `open`, `issued`, `dismissed` or `used`.
    pub status: String,
    pub handled_by: Option<String>,
    pub handled_at: Option<String>,
    /// When an issued link stops working.
    pub expires_at: Option<String>,
    pub used_at: Option<String>,
}

impl ResetRequest {
    /// Whether an issued link for this request can still be used.
    pub fn link_is_live(&self) -> bool {
        self.status == "issued"
            && self
                .expires_at
                .as_deref()
                .and_then(parse)
                .is_some_and(|e| e > OffsetDateTime::now_utc())
    }
}

/// A freshly issued link: shown once to the admin, never stored in the clear.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct IssuedLink {
    /// The request the link belongs to.
    pub request_id: String,
    pub user_id: String,
    pub email: String,
    /// `/console/reset/<token>`: give it to the user through a channel you trust.
    pub link: String,
    pub expires_at: String,
}

const COLS: &str = "id, email, user_id, requested_at, ip, user_agent, status, handled_by, \
                    handled_at, expires_at, used_at";

fn from_row(r: &sqlx::any::AnyRow) -> ResetRequest {
    ResetRequest {
        id: r.get("id"),
        email: r.get("email"),
        user_id: r.get("user_id"),
        requested_at: r.get("requested_at"),
        ip: r.get("ip"),
        user_agent: r.get("user_agent"),
        status: r.get("status"),
        handled_by: r.get("handled_by"),
        handled_at: r.get("handled_at"),
        expires_at: r.get("expires_at"),
        used_at: r.get("used_at"),
    }
}

/// Splits a link token into (tenant id, secret) when it has the right shape.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let (tenant, secret) = token.split_once('.')?;
    let ok_tenant = tenant.len() == 32 && tenant.bytes().all(|b| b.is_ascii_hexdigit());
    let ok_secret = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (ok_tenant && ok_secret).then_some((tenant, secret))
}

/// Files a "forgot password" request. Does the same work whether or not `email` names a
/// user (one lookup, one insert, one audit entry), so the answer reveals nothing.
/// Open requests one IP address may file per hour; more are answered alike but not recorded.
pub const MAX_REQUESTS_PER_IP_HOUR: i64 = 20;

/// Files a reset request for the tenant's admins. `None` when nothing was recorded: the
/// email already has an open request, or this IP filed [`MAX_REQUESTS_PER_IP_HOUR`] in the
/// last hour (so nobody can flood the admins' queue). The caller answers alike either way.
pub async fn request(
    tenant: &Tenant,
    email: &str,
    ip: &str,
    user_agent: &str,
) -> AppResult<Option<ResetRequest>> {
    let email = truncate(&email.trim().to_ascii_lowercase(), 254);
    let hour_ago =
        crate::time_fmt::format_utc(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    let from_ip: i64 =
        sqlx::query("SELECT COUNT(*) FROM reset_requests WHERE ip = $1 AND requested_at >= $2")
            .bind(ip)
            .bind(&hour_ago)
            .fetch_one(&tenant.db)
            .await?
            .get(0);
    let already_open =
        sqlx::query("SELECT 1 FROM reset_requests WHERE email = $1 AND status = 'open'")
            .bind(&email)
            .fetch_optional(&tenant.db)
            .await?
            .is_some();
    if already_open || from_ip >= MAX_REQUESTS_PER_IP_HOUR {
        tracing::info!(tenant = %tenant.id, %ip, already_open, from_ip, "reset request not recorded");
        return Ok(None);
    }
    let user_id = directory::user_by_email(&tenant.db, &email)
        .await?
        .filter(|u| u.id != "system")
        .map(|u| u.id);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let _guard = tenant.write_guard().await;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    sqlx::query(
        "INSERT INTO reset_requests (id, email, user_id, requested_at, ip, user_agent, status) \
         VALUES ($1, $2, $3, $4, $5, $6, 'open')",
    )
    .bind(&id)
    .bind(&email)
    .bind(user_id.clone())
    .bind(now_rfc3339())
    .bind(ip)
    .bind(truncate(user_agent, 300))
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(&email, "reset.requested", &id).detail(serde_json::json!({
            "email": email, "known_user": user_id.is_some(), "ip": ip,
        })),
    )
    .await?;
    tx.commit().await?;
    get(&tenant.db, &id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("reset request vanished")))
        .map(Some)
}

pub async fn get(pool: &AnyPool, id: &str) -> AppResult<Option<ResetRequest>> {
    let row = sqlx::query(&format!("SELECT {COLS} FROM reset_requests WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// Requests, newest first, optionally of one status.
pub async fn list(
    pool: &AnyPool,
    status: Option<&str>,
    limit: i64,
) -> AppResult<Vec<ResetRequest>> {
    if let Some(s) = status {
        if !matches!(s, "open" | "issued" | "dismissed" | "used") {
            return Err(AppError::bad_request(
                "invalid-query",
                "`status` must be open, issued, dismissed or used",
            ));
        }
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM reset_requests WHERE ($1 = '' OR status = $1) \
         ORDER BY requested_at DESC, id LIMIT $2"
    ))
    .bind(status.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(from_row).collect())
}

fn new_link(tenant_id: &str) -> (String, String) {
    let token = format!("{tenant_id}.{}", random_secret());
    let hash = hash_secret(&token);
    (token, hash)
}

async fn active_user(pool: &AnyPool, user_id: Option<&str>) -> AppResult<User> {
    let user = match user_id {
        Some(id) => directory::user_by_id(pool, id).await?,
        None => None,
    };
    let user = user.ok_or_else(|| {
        AppError::new(
            axum::http::StatusCode::CONFLICT,
            "unknown-user",
            "this request names no user of this firm; dismiss it",
        )
    })?;
    if user.status != "active" {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "user-not-active",
            format!(
                "{} is {}: reactivate the account before issuing a link",
                user.email, user.status
            ),
        ));
    }
    Ok(user)
}

/// Issues a one-time link for an open request naming an active user.
pub async fn issue(
    tenant: &Tenant,
    request_id: &str,
    actor: &str,
    minutes: u64,
) -> AppResult<IssuedLink> {
    let req = get(&tenant.db, request_id)
        .await?
        .ok_or_else(|| AppError::not_found("no such reset request"))?;
    if req.status != "open" {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "not-open",
            format!("this request is already {}", req.status),
        ));
    }
    let user = active_user(&tenant.db, req.user_id.as_deref()).await?;
    let (token, hash) = new_link(&tenant.id);
    let now = OffsetDateTime::now_utc();
    let expires = format_utc(now + Duration::minutes(minutes as i64));
    let _guard = tenant.write_guard().await;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    let n = sqlx::query(
        "UPDATE reset_requests SET status = 'issued', handled_by = $1, handled_at = $2, \
         token_hash = $3, expires_at = $4 WHERE id = $5 AND status = 'open'",
    )
    .bind(actor)
    .bind(format_utc(now))
    .bind(&hash)
    .bind(&expires)
    .bind(request_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "not-open",
            "this request was handled by someone else meanwhile",
        ));
    }
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "reset.issued", request_id).detail(serde_json::json!({
            "user_id": user.id, "email": user.email, "expires_at": expires,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedLink {
        request_id: request_id.to_string(),
        user_id: user.id,
        email: user.email,
        link: format!("{LINK_PATH}{token}"),
        expires_at: expires,
    })
}

/// Issues a set-password link for a user directly (a new admin's first password, or the
/// operator helping an admin who lost theirs): a request row born `issued`.
pub async fn issue_for_user(
    tenant: &Tenant,
    user_id: &str,
    actor: &str,
    minutes: u64,
    ip: &str,
) -> AppResult<IssuedLink> {
    let user = directory::user_by_id(&tenant.db, user_id)
        .await?
        .filter(|u| u.id != "system")
        .ok_or_else(|| AppError::not_found("no such user"))?;
    let user = active_user(&tenant.db, Some(&user.id)).await?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (token, hash) = new_link(&tenant.id);
    let now = OffsetDateTime::now_utc();
    let expires = format_utc(now + Duration::minutes(minutes as i64));
    let _guard = tenant.write_guard().await;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    sqlx::query(
        "INSERT INTO reset_requests (id, email, user_id, requested_at, ip, user_agent, status, \
         handled_by, handled_at, token_hash, expires_at) \
         VALUES ($1, $2, $3, $4, $5, '', 'issued', $6, $4, $7, $8)",
    )
    .bind(&id)
    .bind(&user.email)
    .bind(&user.id)
    .bind(format_utc(now))
    .bind(ip)
    .bind(actor)
    .bind(&hash)
    .bind(&expires)
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "reset.issued", &id).detail(serde_json::json!({
            "user_id": user.id, "email": user.email, "expires_at": expires, "direct": true,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedLink {
        request_id: id,
        user_id: user.id,
        email: user.email,
        link: format!("{LINK_PATH}{token}"),
        expires_at: expires,
    })
}

/// Kills every issued, unused set-password link of a user (suspension): the link's hash
/// is dropped and it expires now, so it cannot work again after a reactivation. Returns
/// how many links were revoked.
pub async fn revoke_links_for_user(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE reset_requests SET token_hash = NULL, expires_at = $1 \
         WHERE user_id = $2 AND status = 'issued' AND token_hash IS NOT NULL",
    )
    .bind(now_rfc3339())
    .bind(user_id)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Dismisses an open request.
pub async fn dismiss(tenant: &Tenant, request_id: &str, actor: &str) -> AppResult<ResetRequest> {
    let _guard = tenant.write_guard().await;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    let n = sqlx::query(
        "UPDATE reset_requests SET status = 'dismissed', handled_by = $1, handled_at = $2 \
         WHERE id = $3 AND status = 'open'",
    )
    .bind(actor)
    .bind(now_rfc3339())
    .bind(request_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n != 1 {
        let status = sqlx::query("SELECT status FROM reset_requests WHERE id = $1")
            .bind(request_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get::<String, _>(0));
        return Err(match status {
            None => AppError::not_found("no such reset request"),
            Some(s) => AppError::new(
                axum::http::StatusCode::CONFLICT,
                "not-open",
                format!("this request is already {s}"),
            ),
        });
    }
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "reset.dismissed", request_id),
    )
    .await?;
    tx.commit().await?;
    drop(_guard);
    get(&tenant.db, request_id)
        .await?
        .ok_or_else(|| AppError::not_found("no such reset request"))
}

/// The request behind a live link (issued, unexpired, unused), if any.
pub async fn find_link(tenant: &Tenant, token: &str) -> AppResult<Option<ResetRequest>> {
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM reset_requests WHERE token_hash = $1"
    ))
    .bind(hash_secret(token))
    .fetch_optional(&tenant.db)
    .await?;
    Ok(row
        .as_ref()
        .map(from_row)
        .filter(ResetRequest::link_is_live))
}

pub fn link_gone() -> AppError {
    AppError::new(
        axum::http::StatusCode::GONE,
        "link-invalid",
        "this link is no longer valid: ask your firm's administrator for a new one",
    )
}

/// Uses a link: sets the password (policy checked by `password::set_password`, which also
/// ends the user's sessions) and marks the request used, all in one transaction, so a
/// rejected password leaves the link usable. Returns the user.
pub async fn complete(tenant: &Tenant, token: &str, password: &str, ip: &str) -> AppResult<User> {
    let req = find_link(tenant, token).await?.ok_or_else(link_gone)?;
    let user = match req.user_id.as_deref() {
        Some(id) => directory::user_by_id(&tenant.db, id).await?,
        None => None,
    }
    .filter(|u| u.status == "active")
    .ok_or_else(link_gone)?;
    let _guard = tenant.write_guard().await;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    // Claim the link first: of two concurrent uses, only one gets past here.
    let n = sqlx::query(
        "UPDATE reset_requests SET status = 'used', used_at = $1 \
         WHERE id = $2 AND status = 'issued' AND token_hash = $3",
    )
    .bind(now_rfc3339())
    .bind(&req.id)
    .bind(hash_secret(token))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(link_gone());
    }
    super::password::set_password(&mut tx, &user.id, password).await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(&user.email, "reset.completed", &req.id)
            .detail(serde_json::json!({ "user_id": user.id, "ip": ip })),
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}
