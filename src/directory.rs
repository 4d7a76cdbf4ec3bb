//! A tenant's people and records: users (Google identities with a role) and the record
//! catalogue (matters, cases, contracts with their contacts). Every change is audited in the
//! same transaction.

use std::fmt;
use std::str::FromStr;

use sqlx::{AnyPool, Row};

use crate::audit::{self, AuditEvent};
use crate::error::{AppError, AppResult};
use crate::time_fmt::now_rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Filer,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Filer => "filer",
            Role::Viewer => "viewer",
        }
    }
    pub fn can_file(self) -> bool {
        matches!(self, Role::Admin | Role::Filer)
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "filer" => Ok(Role::Filer),
            "viewer" => Ok(Role::Viewer),
            _ => Err(format!(
                "unknown role {s:?}: expected admin, filer or viewer"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Matter,
    Case,
    Contract,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Matter => "matter",
            RecordKind::Case => "case",
            RecordKind::Contract => "contract",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "matter" => Ok(RecordKind::Matter),
            "case" => Ok(RecordKind::Case),
            "contract" => Ok(RecordKind::Contract),
            _ => Err(format!(
                "unknown record kind {s:?}: expected matter, case or contract"
            )),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub status: String,
    pub created_at: String,
}

fn user_from_row(r: &sqlx::any::AnyRow) -> AppResult<User> {
    let role: String = r.try_get("role")?;
    Ok(User {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        display_name: r.try_get("display_name")?,
        role: role
            .parse()
            .map_err(|e: String| AppError::internal(anyhow::anyhow!(e)))?,
        status: r.try_get("status")?,
        created_at: r.try_get("created_at")?,
    })
}

const USER_COLS: &str = "id, email, display_name, role, status, created_at, google_iss, google_sub";

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && e.len() <= 254
        && domain.contains('.')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub async fn add_user(
    pool: &AnyPool,
    email: &str,
    display_name: &str,
    role: Role,
    actor: &str,
) -> AppResult<User> {
    let email = email.trim().to_ascii_lowercase();
    if !valid_email(&email) {
        return Err(AppError::unprocessable(
            "invalid-email",
            format!("{email:?} is not an email address"),
        ));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut tx = pool.begin().await?;
    audit::lock_chain(&mut tx).await?;
    if sqlx::query("SELECT 1 FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await?
        .is_some()
    {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "exists",
            format!("user {email} already exists"),
        ));
    }
    sqlx::query("INSERT INTO users (id, email, display_name, role, status, created_at) VALUES ($1, $2, $3, $4, 'active', $5)")
        .bind(&id)
        .bind(&email)
        .bind(display_name.trim())
        .bind(role.as_str())
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "user.added", &id)
            .detail(serde_json::json!({"email": email, "role": role.as_str()})),
    )
    .await?;
    tx.commit().await?;
    user_by_id(pool, &id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("user vanished")))
}

pub async fn list_users(pool: &AnyPool) -> AppResult<Vec<User>> {
    let rows = sqlx::query(&format!("SELECT {USER_COLS} FROM users ORDER BY email"))
        .fetch_all(pool)
        .await?;
    rows.iter().map(user_from_row).collect()
}

pub async fn user_by_id(pool: &AnyPool, id: &str) -> AppResult<Option<User>> {
    let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

pub async fn user_by_email(pool: &AnyPool, email: &str) -> AppResult<Option<User>> {
    let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE email = $1"))
        .bind(email.trim().to_ascii_lowercase())
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// Why a verified Google identity is not a usable user of this tenant.
#[derive(Debug)]
pub enum IdentityRejection {
    NotRegistered,
    BoundToOtherAccount,
    Inactive(String),
}

/// The user for a verified Google identity: by `iss`+`sub`, else by email on first sign-in
/// (which binds `iss`+`sub` to the user from then on).
pub async fn resolve_google_user(
    pool: &AnyPool,
    iss: &str,
    sub: &str,
    email: &str,
) -> AppResult<Result<User, IdentityRejection>> {
    let by_sub = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users WHERE google_iss = $1 AND google_sub = $2"
    ))
    .bind(iss)
    .bind(sub)
    .fetch_optional(pool)
    .await?;
    let row = match by_sub {
        Some(r) => r,
        None => {
            let Some(r) = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE email = $1"))
                .bind(email.to_ascii_lowercase())
                .fetch_optional(pool)
                .await?
            else {
                return Ok(Err(IdentityRejection::NotRegistered));
            };
            // Bound meanwhile by a concurrent first sign-in of this same identity: not a
            // rejection (the re-read below finds it).
            let bound_iss: Option<String> = r.try_get("google_iss")?;
            let bound_sub: Option<String> = r.try_get("google_sub")?;
            if bound_sub.is_some()
                && (bound_sub.as_deref() != Some(sub) || bound_iss.as_deref() != Some(iss))
            {
                return Ok(Err(IdentityRejection::BoundToOtherAccount));
            }
            let id: String = r.try_get("id")?;
            sqlx::query("UPDATE users SET google_iss = $1, google_sub = $2 WHERE id = $3 AND google_sub IS NULL")
                .bind(iss)
                .bind(sub)
                .bind(&id)
                .execute(pool)
                .await?;
            // Concurrent first sign-ins of the same identity all end here: re-read by
            // identity, so only a *different* identity that won the bind is refused.
            match sqlx::query(&format!(
                "SELECT {USER_COLS} FROM users WHERE google_iss = $1 AND google_sub = $2"
            ))
            .bind(iss)
            .bind(sub)
            .fetch_optional(pool)
            .await?
            {
                Some(r) => r,
                None => return Ok(Err(IdentityRejection::BoundToOtherAccount)),
            }
        }
    };
    let user = user_from_row(&row)?;
    if user.status != "active" {
        return Ok(Err(IdentityRejection::Inactive(user.status)));
    }
    Ok(Ok(user))
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    pub id: String,
    pub kind: RecordKind,
    pub reference: String,
    pub title: String,
    pub client: String,
    pub status: String,
    pub contacts: Vec<String>,
}

fn valid_reference(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 64
        && r.chars()
            .all(|c| c.is_alphanumeric() || "-_./#".contains(c))
}

/// A contact is an address (`a@acme.com`) or a domain (`acme.com`).
fn contact_kind(c: &str) -> Option<&'static str> {
    if c.contains('@') {
        valid_email(c).then_some("address")
    } else {
        (c.contains('.')
            && c.len() <= 253
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.'))
        .then_some("domain")
    }
}

pub async fn add_record(
    pool: &AnyPool,
    kind: RecordKind,
    reference: &str,
    title: &str,
    client: &str,
    contacts: &[String],
    actor: &str,
) -> AppResult<Record> {
    let reference = reference.trim();
    if !valid_reference(reference) {
        return Err(AppError::unprocessable(
            "invalid-reference",
            format!("{reference:?} is not a valid reference (1-64 letters, digits and -_./#)"),
        ));
    }
    let title = title.trim();
    if title.is_empty() || title.len() > 300 {
        return Err(AppError::unprocessable(
            "invalid-title",
            "a title must be 1-300 characters",
        ));
    }
    let mut typed = Vec::new();
    for c in contacts {
        let c = c.trim().to_ascii_lowercase();
        let k = contact_kind(&c).ok_or_else(|| {
            AppError::unprocessable(
                "invalid-contact",
                format!("{c:?} is neither an email address nor a domain"),
            )
        })?;
        typed.push((k, c));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut tx = pool.begin().await?;
    audit::lock_chain(&mut tx).await?;
    if sqlx::query("SELECT 1 FROM records WHERE kind = $1 AND reference = $2")
        .bind(kind.as_str())
        .bind(reference)
        .fetch_optional(&mut *tx)
        .await?
        .is_some()
    {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "exists",
            format!("{kind}:{reference} already exists"),
        ));
    }
    sqlx::query("INSERT INTO records (id, kind, reference, title, client, status, created_at) VALUES ($1, $2, $3, $4, $5, 'open', $6)")
        .bind(&id)
        .bind(kind.as_str())
        .bind(reference)
        .bind(title)
        .bind(client.trim())
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
    typed.sort();
    typed.dedup();
    for (k, v) in &typed {
        sqlx::query("INSERT INTO record_contacts (record_id, kind, value) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(*k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
    }
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "record.added", &id).detail(serde_json::json!({
            "kind": kind.as_str(), "reference": reference, "title": title,
            "contacts": typed.iter().map(|(_, v)| v).collect::<Vec<_>>(),
        })),
    )
    .await?;
    tx.commit().await?;
    find_record(pool, kind, reference)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("record vanished")))
}

fn record_from_row(r: &sqlx::any::AnyRow, contacts: Vec<String>) -> AppResult<Record> {
    let kind: String = r.try_get("kind")?;
    Ok(Record {
        id: r.try_get("id")?,
        kind: kind
            .parse()
            .map_err(|e: String| AppError::internal(anyhow::anyhow!(e)))?,
        reference: r.try_get("reference")?,
        title: r.try_get("title")?,
        client: r.try_get("client")?,
        status: r.try_get("status")?,
        contacts,
    })
}

async fn contacts_of(pool: &AnyPool, record_id: &str) -> AppResult<Vec<String>> {
    let rows =
        sqlx::query("SELECT value FROM record_contacts WHERE record_id = $1 ORDER BY kind, value")
            .bind(record_id)
            .fetch_all(pool)
            .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

pub async fn find_record(
    pool: &AnyPool,
    kind: RecordKind,
    reference: &str,
) -> AppResult<Option<Record>> {
    let Some(row) = sqlx::query("SELECT id, kind, reference, title, client, status FROM records WHERE kind = $1 AND reference = $2")
        .bind(kind.as_str())
        .bind(reference)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let id: String = row.try_get("id")?;
    let contacts = contacts_of(pool, &id).await?;
    record_from_row(&row, contacts).map(Some)
}

pub async fn list_records(pool: &AnyPool) -> AppResult<Vec<Record>> {
    let rows = sqlx::query(
        "SELECT id, kind, reference, title, client, status FROM records ORDER BY kind, reference",
    )
    .fetch_all(pool)
    .await?;
    let contacts = sqlx::query("SELECT record_id, value FROM record_contacts ORDER BY kind, value")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            let cs = contacts
                .iter()
                .filter(|c| c.get::<String, _>(0) == id)
                .map(|c| c.get::<String, _>(1))
                .collect();
            record_from_row(r, cs)
        })
        .collect()
}
