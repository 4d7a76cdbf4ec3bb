//! A tenant's people and records: users (Google identities with a role) and the record
//! catalogue (matters, cases, contracts with their contacts). Every change is audited in the
//! same transaction.

use std::fmt;
use std::str::FromStr;

use sqlx::{AnyConnection, AnyPool, Row};

use crate::access::{self, NamedPrincipal, Principal, PrincipalKind, SYSTEM_USER};
use crate::audit::{self, AuditEvent};
use crate::error::{AppError, AppResult};
use crate::time_fmt::now_rfc3339;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
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

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
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

pub fn valid_email(e: &str) -> bool {
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
    let d = create_user(pool, email, display_name, role, &[], actor).await?;
    user_by_id(pool, &d.id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("user vanished")))
}

/// Every user but the internal `system` user (automatic filing), by email.
pub async fn list_users(pool: &AnyPool) -> AppResult<Vec<User>> {
    let rows = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users WHERE id <> '{SYSTEM_USER}' ORDER BY email"
    ))
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

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Record {
    pub id: String,
    pub kind: RecordKind,
    pub reference: String,
    pub title: String,
    pub client: String,
    /// `open` or `closed`.
    pub status: String,
    /// Addresses (`a@acme.com`) and domains (`acme.com`).
    pub contacts: Vec<String>,
    /// Visible to everyone in the firm (unless excluded); else to its team only.
    pub firm_wide: bool,
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
    let d = create_record(
        pool,
        &NewRecord {
            kind,
            reference: reference.to_string(),
            title: title.to_string(),
            client: client.to_string(),
            contacts: contacts.to_vec(),
            firm_wide: true,
            members: Vec::new(),
            excluded: Vec::new(),
        },
        actor,
    )
    .await?;
    find_record(pool, kind, &d.reference)
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
        firm_wide: r.try_get::<i64, _>("firm_wide")? != 0,
    })
}

pub async fn find_record(
    pool: &AnyPool,
    kind: RecordKind,
    reference: &str,
) -> AppResult<Option<Record>> {
    let sql = record_with_contacts_sql("1 = 1");
    let rows = sqlx::query(&sql)
        .bind(kind.as_str())
        .bind(reference)
        .fetch_all(pool)
        .await?;
    Ok(record_with_contacts(&rows)?.map(|(record, _)| record))
}

/// As [`find_record`], and whether `viewer` (a user id) may see the record
/// ([`access::visible_sql`]: teams and walls), in the same query.
pub async fn find_record_seen_by(
    pool: &AnyPool,
    kind: RecordKind,
    reference: &str,
    viewer: &str,
) -> AppResult<Option<(Record, bool)>> {
    let sql = record_with_contacts_sql(&access::visible_sql("r", 3));
    let rows = sqlx::query(&sql)
        .bind(kind.as_str())
        .bind(reference)
        .bind(viewer)
        .fetch_all(pool)
        .await?;
    record_with_contacts(&rows)
}

/// One record (`$1` kind, `$2` reference) with its contacts, one row per contact (at least
/// one row), and `visible`: whether `condition` holds for it.
fn record_with_contacts_sql(condition: &str) -> String {
    format!(
        "SELECT r.id, r.kind, r.reference, r.title, r.client, r.status, r.firm_wide, \
         c.value AS contact, CAST(CASE WHEN {condition} THEN 1 ELSE 0 END AS BIGINT) AS visible \
         FROM records r LEFT JOIN record_contacts c ON c.record_id = r.id \
         WHERE r.kind = $1 AND r.reference = $2 ORDER BY c.kind, c.value"
    )
}

/// The record of [`record_with_contacts_sql`]'s rows, and its `visible`.
fn record_with_contacts(rows: &[sqlx::any::AnyRow]) -> AppResult<Option<(Record, bool)>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let contacts = rows
        .iter()
        .map(|r| r.try_get::<Option<String>, _>("contact"))
        .filter_map(Result::transpose)
        .collect::<Result<Vec<_>, _>>()?;
    let visible = first.try_get::<i64, _>("visible")? == 1;
    Ok(Some((record_from_row(first, contacts)?, visible)))
}

pub async fn list_records(pool: &AnyPool) -> AppResult<Vec<Record>> {
    let rows = sqlx::query(
        "SELECT id, kind, reference, title, client, status, firm_wide FROM records ORDER BY kind, reference",
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

// ---- people administration: users with their groups, groups with their members ----------

fn conflict(detail: impl Into<String>) -> AppError {
    AppError::new(axum::http::StatusCode::CONFLICT, "exists", detail)
}

fn clean_display_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(AppError::unprocessable(
            "invalid-display-name",
            "a display name is at most 200 characters, without control characters",
        ));
    }
    Ok(name.to_string())
}

/// A group as a user's membership shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct GroupRef {
    pub id: String,
    pub name: String,
}

/// A user with the groups they belong to.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UserDetail {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    /// `active`, `suspended` or `disabled`.
    pub status: String,
    pub created_at: String,
    pub groups: Vec<GroupRef>,
}

/// A group member as a group shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct UserRef {
    pub id: String,
    pub email: String,
    pub display_name: String,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub members: Vec<UserRef>,
}

async fn groups_of_users(
    conn: &mut AnyConnection,
) -> AppResult<std::collections::HashMap<String, Vec<GroupRef>>> {
    let rows = sqlx::query(
        "SELECT gm.user_id, g.id, g.name FROM group_members gm JOIN groups g ON g.id = gm.group_id ORDER BY g.name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut map: std::collections::HashMap<String, Vec<GroupRef>> = Default::default();
    for r in rows {
        map.entry(r.get(0)).or_default().push(GroupRef {
            id: r.get(1),
            name: r.get(2),
        });
    }
    Ok(map)
}

fn detail_of(u: User, groups: Vec<GroupRef>) -> UserDetail {
    UserDetail {
        id: u.id,
        email: u.email,
        display_name: u.display_name,
        role: u.role,
        status: u.status,
        created_at: u.created_at,
        groups,
    }
}

/// Every user (but `system`) with their groups, by email.
pub async fn list_user_details(pool: &AnyPool) -> AppResult<Vec<UserDetail>> {
    let users = list_users(pool).await?;
    let mut conn = pool.acquire().await?;
    let mut groups = groups_of_users(&mut conn).await?;
    Ok(users
        .into_iter()
        .map(|u| {
            let g = groups.remove(&u.id).unwrap_or_default();
            detail_of(u, g)
        })
        .collect())
}

async fn user_detail_on(conn: &mut AnyConnection, id: &str) -> AppResult<Option<UserDetail>> {
    if id == SYSTEM_USER {
        return Ok(None);
    }
    let Some(row) = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let user = user_from_row(&row)?;
    let groups = sqlx::query(
        "SELECT g.id, g.name FROM group_members gm JOIN groups g ON g.id = gm.group_id WHERE gm.user_id = $1 ORDER BY g.name",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| GroupRef {
        id: r.get(0),
        name: r.get(1),
    })
    .collect();
    Ok(Some(detail_of(user, groups)))
}

/// One user with their groups; `None` for unknown ids and for the internal `system` user.
pub async fn user_detail(pool: &AnyPool, id: &str) -> AppResult<Option<UserDetail>> {
    let mut conn = pool.acquire().await?;
    user_detail_on(&mut conn, id).await
}

/// Checks that every group id exists (422 otherwise); sorted and deduplicated.
async fn known_groups(conn: &mut AnyConnection, ids: &[String]) -> AppResult<Vec<String>> {
    let mut out: Vec<String> = ids.iter().map(|g| g.trim().to_string()).collect();
    out.sort();
    out.dedup();
    for g in &out {
        if sqlx::query("SELECT 1 FROM groups WHERE id = $1")
            .bind(g)
            .fetch_optional(&mut *conn)
            .await?
            .is_none()
        {
            return Err(AppError::unprocessable(
                "unknown-group",
                format!("there is no group with id {g:?}"),
            ));
        }
    }
    Ok(out)
}

/// Checks that every user id exists and is a person (not `system`); sorted, deduplicated.
async fn known_users(conn: &mut AnyConnection, ids: &[String]) -> AppResult<Vec<String>> {
    let mut out: Vec<String> = ids.iter().map(|u| u.trim().to_string()).collect();
    out.sort();
    out.dedup();
    for u in &out {
        if u == SYSTEM_USER
            || sqlx::query("SELECT 1 FROM users WHERE id = $1")
                .bind(u)
                .fetch_optional(&mut *conn)
                .await?
                .is_none()
        {
            return Err(AppError::unprocessable(
                "unknown-user",
                format!("there is no user with id {u:?}"),
            ));
        }
    }
    Ok(out)
}

async fn set_user_groups(
    conn: &mut AnyConnection,
    user_id: &str,
    groups: &[String],
) -> AppResult<()> {
    sqlx::query("DELETE FROM group_members WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for g in groups {
        sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)")
            .bind(g)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Adds a user (active) with a role and groups, audited as `user.added`.
pub async fn create_user(
    pool: &AnyPool,
    email: &str,
    display_name: &str,
    role: Role,
    groups: &[String],
    actor: &str,
) -> AppResult<UserDetail> {
    let email = email.trim().to_ascii_lowercase();
    if !valid_email(&email) {
        return Err(AppError::unprocessable(
            "invalid-email",
            format!("{email:?} is not an email address"),
        ));
    }
    let display_name = clean_display_name(display_name)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    if sqlx::query("SELECT 1 FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await?
        .is_some()
    {
        return Err(conflict(format!("user {email} already exists")));
    }
    let groups = known_groups(&mut tx, groups).await?;
    sqlx::query("INSERT INTO users (id, email, display_name, role, status, created_at) VALUES ($1, $2, $3, $4, 'active', $5)")
        .bind(&id)
        .bind(&email)
        .bind(&display_name)
        .bind(role.as_str())
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
    set_user_groups(&mut tx, &id, &groups).await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "user.added", &id).detail(serde_json::json!({
            "email": email, "role": role.as_str(), "display_name": display_name, "groups": groups,
        })),
    )
    .await?;
    let detail = user_detail_on(&mut tx, &id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("user vanished")))?;
    tx.commit().await?;
    Ok(detail)
}

/// What an admin may change about a user (absent fields are left alone).
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub display_name: Option<String>,
    pub role: Option<Role>,
    /// Group ids: the user's complete set of groups.
    pub groups: Option<Vec<String>>,
}

fn user_essentials(u: &UserDetail) -> serde_json::Value {
    serde_json::json!({
        "display_name": u.display_name,
        "role": u.role.as_str(),
        "groups": u.groups.iter().map(|g| &g.id).collect::<Vec<_>>(),
    })
}

/// Changes a user's name, role or groups, audited as `user.updated` with before/after.
/// The last active admin keeps the admin role (409 `last-admin`).
pub async fn update_user(
    pool: &AnyPool,
    id: &str,
    patch: &UserPatch,
    actor: &str,
) -> AppResult<UserDetail> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let before = user_detail_on(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such user"))?;
    if let Some(name) = &patch.display_name {
        let name = clean_display_name(name)?;
        sqlx::query("UPDATE users SET display_name = $1 WHERE id = $2")
            .bind(&name)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(role) = patch.role {
        if before.role == Role::Admin && role != Role::Admin && before.status == "active" {
            let others: i64 = sqlx::query(
                "SELECT COUNT(*) FROM users WHERE role = 'admin' AND status = 'active' AND id <> $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
            if others == 0 {
                return Err(AppError::new(
                    axum::http::StatusCode::CONFLICT,
                    "last-admin",
                    format!(
                        "{} is the last active administrator; make someone else an admin first",
                        before.email
                    ),
                ));
            }
        }
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(groups) = &patch.groups {
        let groups = known_groups(&mut tx, groups).await?;
        set_user_groups(&mut tx, id, &groups).await?;
    }
    let after = user_detail_on(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("user vanished")))?;
    let (b, a) = (user_essentials(&before), user_essentials(&after));
    if b != a {
        audit::append(
            &mut tx,
            &AuditEvent::new(actor, "user.updated", id)
                .detail(serde_json::json!({"email": after.email, "before": b, "after": a})),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(after)
}

fn clean_group_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AppError::unprocessable(
            "invalid-group-name",
            "a group name is 1-100 characters, without control characters",
        ));
    }
    Ok(name.to_string())
}

async fn group_on(conn: &mut AnyConnection, id: &str) -> AppResult<Option<Group>> {
    let Some(row) = sqlx::query("SELECT id, name, created_at FROM groups WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let members = sqlx::query(
        "SELECT u.id, u.email, u.display_name FROM group_members gm JOIN users u ON u.id = gm.user_id \
         WHERE gm.group_id = $1 ORDER BY u.email",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| UserRef {
        id: r.get(0),
        email: r.get(1),
        display_name: r.get(2),
    })
    .collect();
    Ok(Some(Group {
        id: row.get(0),
        name: row.get(1),
        created_at: row.get(2),
        members,
    }))
}

pub async fn group(pool: &AnyPool, id: &str) -> AppResult<Option<Group>> {
    let mut conn = pool.acquire().await?;
    group_on(&mut conn, id).await
}

/// Every group with its members, by name.
pub async fn list_groups(pool: &AnyPool) -> AppResult<Vec<Group>> {
    let rows = sqlx::query("SELECT id, name, created_at FROM groups ORDER BY name")
        .fetch_all(pool)
        .await?;
    let members = sqlx::query(
        "SELECT gm.group_id, u.id, u.email, u.display_name FROM group_members gm JOIN users u ON u.id = gm.user_id ORDER BY u.email",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let id: String = r.get(0);
            Group {
                members: members
                    .iter()
                    .filter(|m| m.get::<String, _>(0) == id)
                    .map(|m| UserRef {
                        id: m.get(1),
                        email: m.get(2),
                        display_name: m.get(3),
                    })
                    .collect(),
                id,
                name: r.get(1),
                created_at: r.get(2),
            }
        })
        .collect())
}

async fn group_name_taken(conn: &mut AnyConnection, name: &str, except: &str) -> AppResult<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM groups WHERE LOWER(name) = LOWER($1) AND id <> $2")
            .bind(name)
            .bind(except)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// Adds a group (names are unique, case-insensitively: 409), audited as `group.added`.
pub async fn create_group(pool: &AnyPool, name: &str, actor: &str) -> AppResult<Group> {
    let name = clean_group_name(name)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    if group_name_taken(&mut tx, &name, "").await? {
        return Err(conflict(format!("a group named {name:?} already exists")));
    }
    sqlx::query("INSERT INTO groups (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&id)
        .bind(&name)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "group.added", &id).detail(serde_json::json!({"name": name})),
    )
    .await?;
    let g = group_on(&mut tx, &id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("group vanished")))?;
    tx.commit().await?;
    Ok(g)
}

/// Renames a group (409 when another group has the name), audited as `group.renamed`.
pub async fn rename_group(pool: &AnyPool, id: &str, name: &str, actor: &str) -> AppResult<Group> {
    let name = clean_group_name(name)?;
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let before = group_on(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such group"))?;
    if group_name_taken(&mut tx, &name, id).await? {
        return Err(conflict(format!("a group named {name:?} already exists")));
    }
    if before.name != name {
        sqlx::query("UPDATE groups SET name = $1 WHERE id = $2")
            .bind(&name)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit::append(
            &mut tx,
            &AuditEvent::new(actor, "group.renamed", id)
                .detail(serde_json::json!({"before": before.name, "after": name})),
        )
        .await?;
    }
    let g = group_on(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("group vanished")))?;
    tx.commit().await?;
    Ok(g)
}

/// Replaces a group's members, audited as `group.members_set` with before/after.
pub async fn set_group_members(
    pool: &AnyPool,
    id: &str,
    user_ids: &[String],
    actor: &str,
) -> AppResult<Group> {
    edit_group_members(pool, id, actor, |ids| *ids = user_ids.to_vec()).await
}

/// Changes a group's members from what they are inside the same transaction (the audit
/// chain's lock serialises it with every other change), so two admins adding and removing
/// at once both count. `edit` gets the member ids. Audited like [`set_group_members`].
pub async fn edit_group_members(
    pool: &AnyPool,
    id: &str,
    actor: &str,
    edit: impl FnOnce(&mut Vec<String>),
) -> AppResult<Group> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let before = group_on(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such group"))?;
    let mut user_ids: Vec<String> = before.members.iter().map(|m| m.id.clone()).collect();
    edit(&mut user_ids);
    let users = known_users(&mut tx, &user_ids).await?;
    sqlx::query("DELETE FROM group_members WHERE group_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    for u in &users {
        sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)")
            .bind(id)
            .bind(u)
            .execute(&mut *tx)
            .await?;
    }
    let after = group_on(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("group vanished")))?;
    let emails = |g: &Group| {
        g.members
            .iter()
            .map(|m| m.email.clone())
            .collect::<Vec<_>>()
    };
    if emails(&before) != emails(&after) {
        audit::append(
            &mut tx,
            &AuditEvent::new(actor, "group.members_set", id).detail(serde_json::json!({
                "name": after.name, "before": emails(&before), "after": emails(&after),
            })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(after)
}

// ---- record catalogue administration: create, edit, close, teams, CSV import -----------

/// A record as the admin catalogue shows it: metadata and team (never its filings).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RecordDetail {
    pub id: String,
    pub kind: RecordKind,
    pub reference: String,
    pub title: String,
    pub client: String,
    /// `open` or `closed`.
    pub status: String,
    pub contacts: Vec<String>,
    pub firm_wide: bool,
    /// Users and groups on the record's team.
    pub members: Vec<NamedPrincipal>,
    /// Users and groups walled off the record (beats every grant).
    pub excluded: Vec<NamedPrincipal>,
    pub created_at: String,
    pub updated_at: Option<String>,
}

/// Validated record fields: reference, title, client and typed contacts.
struct RecordFields {
    reference: String,
    title: String,
    client: String,
    contacts: Vec<(&'static str, String)>,
}

/// Every problem with a record's fields (slug, message), or the cleaned fields.
fn check_record_fields(
    reference: &str,
    title: &str,
    client: &str,
    contacts: &[String],
) -> Result<RecordFields, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let reference = reference.trim();
    if !valid_reference(reference) {
        errors.push((
            "invalid-reference",
            format!("{reference:?} is not a valid reference (1-64 letters, digits and -_./#)"),
        ));
    }
    let title = title.trim();
    if title.is_empty() || title.chars().count() > 300 || title.chars().any(char::is_control) {
        errors.push((
            "invalid-title",
            "a title must be 1-300 characters of text".to_string(),
        ));
    }
    let client = client.trim();
    if client.chars().count() > 300 || client.chars().any(char::is_control) {
        errors.push((
            "invalid-client",
            "a client is at most 300 characters of text".to_string(),
        ));
    }
    let mut typed = Vec::new();
    for c in contacts {
        // Lowercased as the suggestion model lowercases participants (Unicode), so that
        // `suggest::model::contacts` can match stored values exactly, through the index.
        let c = c.trim().to_lowercase();
        if c.is_empty() {
            continue;
        }
        match contact_kind(&c) {
            Some(k) => typed.push((k, c)),
            None => errors.push((
                "invalid-contact",
                format!("{c:?} is neither an email address nor a domain"),
            )),
        }
    }
    if typed.len() > 500 {
        errors.push((
            "invalid-contact",
            "a record has at most 500 contacts".to_string(),
        ));
    }
    typed.sort();
    typed.dedup();
    if errors.is_empty() {
        Ok(RecordFields {
            reference: reference.to_string(),
            title: title.to_string(),
            client: client.to_string(),
            contacts: typed,
        })
    } else {
        Err(errors)
    }
}

fn first_error(errors: Vec<(&'static str, String)>) -> AppError {
    let (slug, msg) = errors
        .into_iter()
        .next()
        .unwrap_or(("invalid-record", "the record is not valid".into()));
    AppError::unprocessable(slug, msg)
}

async fn write_contacts(
    conn: &mut AnyConnection,
    id: &str,
    contacts: &[(&'static str, String)],
) -> AppResult<()> {
    sqlx::query("DELETE FROM record_contacts WHERE record_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for (k, v) in contacts {
        sqlx::query("INSERT INTO record_contacts (record_id, kind, value) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(*k)
            .bind(v)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn record_detail_on(conn: &mut AnyConnection, id: &str) -> AppResult<Option<RecordDetail>> {
    let Some(row) = sqlx::query(
        "SELECT id, kind, reference, title, client, status, firm_wide, created_at, updated_at FROM records WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let contacts: Vec<String> =
        sqlx::query("SELECT value FROM record_contacts WHERE record_id = $1 ORDER BY kind, value")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    let rec = record_from_row(&row, contacts)?;
    let team = access::team_of(conn, id).await?;
    Ok(Some(RecordDetail {
        id: rec.id,
        kind: rec.kind,
        reference: rec.reference,
        title: rec.title,
        client: rec.client,
        status: rec.status,
        contacts: rec.contacts,
        firm_wide: team.firm_wide,
        members: team.members,
        excluded: team.excluded,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    }))
}

/// One record of the catalogue with its team (admin view: metadata only).
pub async fn record_detail(pool: &AnyPool, id: &str) -> AppResult<Option<RecordDetail>> {
    let mut conn = pool.acquire().await?;
    record_detail_on(&mut conn, id).await
}

/// Filters for the admin catalogue.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// Substring of the reference, title, client or a contact (case-insensitive).
    pub q: Option<String>,
    pub status: Option<String>,
    pub kind: Option<RecordKind>,
}

/// The admin catalogue: every record matching the filter (metadata only, whatever the
/// admin's own team memberships), by kind and reference; at most `limit`.
pub async fn search_catalogue(
    pool: &AnyPool,
    filter: &RecordFilter,
    limit: i64,
) -> AppResult<Vec<Record>> {
    let q = filter.q.as_deref().map(str::trim).unwrap_or("");
    let like = crate::suggest::contains_pattern(q);
    let rows = sqlx::query(
        "SELECT r.id, r.kind, r.reference, r.title, r.client, r.status, r.firm_wide FROM records r \
         WHERE ($1 = '' OR r.status = $1) AND ($2 = '' OR r.kind = $2) AND \
         ($3 = '%%' OR LOWER(r.reference) LIKE $3 ESCAPE '\\' OR LOWER(r.title) LIKE $3 ESCAPE '\\' \
          OR LOWER(r.client) LIKE $3 ESCAPE '\\' OR EXISTS (SELECT 1 FROM record_contacts c \
          WHERE c.record_id = r.id AND c.value LIKE $3 ESCAPE '\\')) \
         ORDER BY r.kind, r.reference LIMIT $4",
    )
    .bind(filter.status.as_deref().unwrap_or(""))
    .bind(filter.kind.map(|k| k.as_str()).unwrap_or(""))
    .bind(&like)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut contacts: std::collections::HashMap<String, Vec<String>> = Default::default();
    for chunk in ids.chunks(500) {
        if chunk.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT record_id, value FROM record_contacts WHERE record_id IN ({}) ORDER BY kind, value",
            (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        for r in query.fetch_all(pool).await? {
            contacts.entry(r.get(0)).or_default().push(r.get(1));
        }
    }
    rows.iter()
        .map(|r| {
            let id: String = r.get(0);
            let cs = contacts.remove(&id).unwrap_or_default();
            record_from_row(r, cs)
        })
        .collect()
}

/// A new record with its team.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub kind: RecordKind,
    pub reference: String,
    pub title: String,
    pub client: String,
    pub contacts: Vec<String>,
    pub firm_wide: bool,
    pub members: Vec<Principal>,
    pub excluded: Vec<Principal>,
}

fn team_json(firm_wide: bool, members: &[Principal], excluded: &[Principal]) -> serde_json::Value {
    let ids = |l: &[Principal]| -> Vec<String> {
        l.iter()
            .map(|p| format!("{}:{}", p.kind.as_str(), p.id))
            .collect()
    };
    serde_json::json!({"firm_wide": firm_wide, "members": ids(members), "excluded": ids(excluded)})
}

/// A validated record to insert.
struct RecordInsert {
    kind: RecordKind,
    fields: RecordFields,
    status: String,
    firm_wide: bool,
    members: Vec<Principal>,
    excluded: Vec<Principal>,
}

/// Inserts a validated record inside the caller's transaction, audited as `record.added`.
async fn insert_record(
    conn: &mut AnyConnection,
    rec: &RecordInsert,
    actor: &str,
    source: &str,
) -> AppResult<String> {
    let RecordInsert {
        kind,
        fields: f,
        status,
        firm_wide,
        members,
        excluded,
    } = rec;
    let (kind, firm_wide) = (*kind, *firm_wide);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let now = now_rfc3339();
    sqlx::query("INSERT INTO records (id, kind, reference, title, client, status, created_at, updated_at, firm_wide) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)")
        .bind(&id)
        .bind(kind.as_str())
        .bind(&f.reference)
        .bind(&f.title)
        .bind(&f.client)
        .bind(status)
        .bind(&now)
        .bind(firm_wide as i64)
        .execute(&mut *conn)
        .await?;
    write_contacts(conn, &id, &f.contacts).await?;
    crate::suggest::terms::write_record_terms(conn, &id, &f.title, &f.client).await?;
    access::write_team(conn, &id, firm_wide, members, excluded).await?;
    audit::append(
        conn,
        &AuditEvent::new(actor, "record.added", &id).detail(serde_json::json!({
            "kind": kind.as_str(), "reference": f.reference, "title": f.title, "client": f.client,
            "status": status,
            "contacts": f.contacts.iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "team": team_json(firm_wide, members, excluded),
            "source": source,
        })),
    )
    .await?;
    Ok(id)
}

async fn record_exists(
    conn: &mut AnyConnection,
    kind: RecordKind,
    reference: &str,
) -> AppResult<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM records WHERE kind = $1 AND reference = $2")
            .bind(kind.as_str())
            .bind(reference)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// Adds a record with its team (409 when kind+reference exists; 422 for bad fields, unknown
/// principals, or a principal both member and excluded).
pub async fn create_record(
    pool: &AnyPool,
    new: &NewRecord,
    actor: &str,
) -> AppResult<RecordDetail> {
    let fields = check_record_fields(&new.reference, &new.title, &new.client, &new.contacts)
        .map_err(first_error)?;
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    if record_exists(&mut tx, new.kind, &fields.reference).await? {
        return Err(conflict(format!(
            "{}:{} already exists",
            new.kind, fields.reference
        )));
    }
    access::validate_team(&mut tx, &new.members, &new.excluded).await?;
    let id = insert_record(
        &mut tx,
        &RecordInsert {
            kind: new.kind,
            fields,
            status: "open".into(),
            firm_wide: new.firm_wide,
            members: new.members.clone(),
            excluded: new.excluded.clone(),
        },
        actor,
        "manual",
    )
    .await?;
    let d = record_detail_on(&mut tx, &id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("record vanished")))?;
    tx.commit().await?;
    Ok(d)
}

/// What an admin may change about a record (absent fields are left alone).
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordPatch {
    pub title: Option<String>,
    pub client: Option<String>,
    /// `open` or `closed` (closing keeps the filings; nobody can file to it until reopened).
    pub status: Option<String>,
    /// The complete list of contacts (addresses and domains).
    pub contacts: Option<Vec<String>>,
    pub firm_wide: Option<bool>,
}

fn record_essentials(d: &RecordDetail) -> serde_json::Value {
    serde_json::json!({
        "title": d.title, "client": d.client, "status": d.status, "contacts": d.contacts,
        "firm_wide": d.firm_wide,
    })
}

/// Edits, closes or reopens a record, audited as `record.updated` with before/after.
pub async fn update_record(
    pool: &AnyPool,
    id: &str,
    patch: &RecordPatch,
    actor: &str,
) -> AppResult<RecordDetail> {
    if let Some(s) = &patch.status {
        if s != "open" && s != "closed" {
            return Err(AppError::unprocessable(
                "invalid-status",
                format!("unknown status {s:?}: expected open or closed"),
            ));
        }
    }
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let before = record_detail_on(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such record"))?;
    let fields = check_record_fields(
        &before.reference,
        patch.title.as_deref().unwrap_or(&before.title),
        patch.client.as_deref().unwrap_or(&before.client),
        patch.contacts.as_deref().unwrap_or(&before.contacts),
    )
    .map_err(first_error)?;
    sqlx::query(
        "UPDATE records SET title = $1, client = $2, status = $3, firm_wide = $4 WHERE id = $5",
    )
    .bind(&fields.title)
    .bind(&fields.client)
    .bind(patch.status.as_deref().unwrap_or(&before.status))
    .bind(patch.firm_wide.unwrap_or(before.firm_wide) as i64)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if patch.contacts.is_some() {
        write_contacts(&mut tx, id, &fields.contacts).await?;
    }
    crate::suggest::terms::write_record_terms(&mut tx, id, &fields.title, &fields.client).await?;
    let mut after = record_detail_on(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("record vanished")))?;
    let (b, a) = (record_essentials(&before), record_essentials(&after));
    if b != a {
        let now = now_rfc3339();
        sqlx::query("UPDATE records SET updated_at = $1 WHERE id = $2")
            .bind(&now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Retention runs from the closure (crate::retention).
        if before.status != after.status {
            sqlx::query("UPDATE records SET closed_at = $1 WHERE id = $2")
                .bind((after.status == "closed").then_some(&now))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        after.updated_at = Some(now);
        let action = match (before.status.as_str(), after.status.as_str()) {
            ("open", "closed") => "record.closed",
            ("closed", "open") => "record.reopened",
            _ => "record.updated",
        };
        audit::append(
            &mut tx,
            &AuditEvent::new(actor, action, id).detail(serde_json::json!({
                "record": format!("{}:{}", after.kind, after.reference), "before": b, "after": a,
            })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(after)
}

/// Replaces a record's team, audited as `record.team_changed` with before/after.
pub async fn set_record_team(
    pool: &AnyPool,
    id: &str,
    firm_wide: bool,
    members: &[Principal],
    excluded: &[Principal],
    actor: &str,
) -> AppResult<RecordDetail> {
    edit_record_team(pool, id, actor, |t| {
        *t = TeamEdit {
            firm_wide,
            members: members.to_vec(),
            excluded: excluded.to_vec(),
        };
    })
    .await
}

/// A record's team as an edit sees it.
#[derive(Debug, Clone)]
pub struct TeamEdit {
    pub firm_wide: bool,
    pub members: Vec<Principal>,
    pub excluded: Vec<Principal>,
}

fn principals_of(list: &[access::NamedPrincipal]) -> Vec<Principal> {
    list.iter()
        .map(|p| Principal {
            kind: p.kind,
            id: p.id.clone(),
        })
        .collect()
}

/// Changes a record's team from what it is inside the same transaction (the audit chain's
/// lock serialises it with every other change), so a wall added by one admin is never
/// lost to another admin's simultaneous edit. Validated and audited like
/// [`set_record_team`].
pub async fn edit_record_team(
    pool: &AnyPool,
    id: &str,
    actor: &str,
    edit: impl FnOnce(&mut TeamEdit),
) -> AppResult<RecordDetail> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let before = record_detail_on(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such record"))?;
    let mut t = TeamEdit {
        firm_wide: before.firm_wide,
        members: principals_of(&before.members),
        excluded: principals_of(&before.excluded),
    };
    edit(&mut t);
    let (firm_wide, members, excluded) = (t.firm_wide, &t.members, &t.excluded);
    access::validate_team(&mut tx, members, excluded).await?;
    let team_before = access::team_of(&mut tx, id).await?;
    access::write_team(&mut tx, id, firm_wide, members, excluded).await?;
    let team_after = access::team_of(&mut tx, id).await?;
    if team_before != team_after {
        sqlx::query("UPDATE records SET updated_at = $1 WHERE id = $2")
            .bind(now_rfc3339())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit::append(
            &mut tx,
            &AuditEvent::new(actor, "record.team_changed", id).detail(serde_json::json!({
                "record": format!("{}:{}", before.kind, before.reference),
                "before": team_before.audit_json(), "after": team_after.audit_json(),
            })),
        )
        .await?;
    }
    let after = record_detail_on(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("record vanished")))?;
    tx.commit().await?;
    Ok(after)
}

pub const IMPORT_MAX_BYTES: usize = 5 * 1024 * 1024;
pub const IMPORT_MAX_ROWS: usize = 10_000;
const IMPORT_COLUMNS: [&str; 9] = [
    "kind",
    "reference",
    "title",
    "client",
    "status",
    "contacts",
    "firm_wide",
    "members",
    "excluded",
];

/// One data row of an import and what was wrong with it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ImportRow {
    /// The row's line in the file (the header is line 1).
    pub line: u64,
    pub reference: String,
    pub ok: bool,
    pub errors: Vec<String>,
}

/// The per-row report of a CSV import.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub rows: Vec<ImportRow>,
    /// Records created (0 when anything was invalid and `import_valid_rows` was false).
    pub imported: usize,
    pub valid: usize,
    pub invalid: usize,
}

fn split_list(s: &str) -> Vec<String> {
    s.split(';')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Imports records from CSV (header `kind,reference,title,client,status,contacts,firm_wide,
/// members,excluded`; only kind, reference and title are required columns and values).
/// Lists are `;`-separated; members and exclusions are user emails or group names. One
/// transaction: when any row is invalid nothing is written unless `import_valid_rows`.
/// Whole-file problems (not CSV, bad header, too large, too many rows) are errors.
pub async fn import_records_csv(
    pool: &AnyPool,
    bytes: &[u8],
    import_valid_rows: bool,
    actor: &str,
) -> AppResult<ImportReport> {
    if bytes.len() > IMPORT_MAX_BYTES {
        return Err(AppError::too_large(format!(
            "the file is {} bytes; the limit is {IMPORT_MAX_BYTES} (5 MB)",
            bytes.len()
        )));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let header = reader
        .byte_headers()
        .map_err(|e| AppError::unprocessable("invalid-csv", format!("not a CSV file: {e}")))?
        .clone();
    let header: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_ascii_lowercase())
        .collect();
    if header.iter().all(|h| h.is_empty()) {
        return Err(AppError::unprocessable(
            "invalid-csv",
            format!(
                "the file is empty; its first line must be the header {}",
                IMPORT_COLUMNS.join(",")
            ),
        ));
    }
    let mut col: std::collections::HashMap<&str, usize> = Default::default();
    for (i, h) in header.iter().enumerate() {
        let Some(known) = IMPORT_COLUMNS.iter().find(|c| **c == h.as_str()) else {
            return Err(AppError::unprocessable(
                "invalid-csv-header",
                format!(
                    "unknown column {h:?}; the columns are {}",
                    IMPORT_COLUMNS.join(",")
                ),
            ));
        };
        if col.insert(known, i).is_some() {
            return Err(AppError::unprocessable(
                "invalid-csv-header",
                format!("column {h:?} appears twice"),
            ));
        }
    }
    for required in ["kind", "reference", "title"] {
        if !col.contains_key(required) {
            return Err(AppError::unprocessable(
                "invalid-csv-header",
                format!(
                    "the header lacks the required column {required:?}; the columns are {}",
                    IMPORT_COLUMNS.join(",")
                ),
            ));
        }
    }

    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let users: std::collections::HashMap<String, String> =
        sqlx::query("SELECT email, id FROM users WHERE id <> $1")
            .bind(SYSTEM_USER)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| (r.get::<String, _>(0).to_ascii_lowercase(), r.get(1)))
            .collect();
    let groups: std::collections::HashMap<String, String> =
        sqlx::query("SELECT name, id FROM groups")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| (r.get::<String, _>(0).to_lowercase(), r.get(1)))
            .collect();
    let resolve = |name: &str| -> Result<Principal, String> {
        if name.contains('@') {
            users
                .get(&name.to_ascii_lowercase())
                .map(|id| Principal {
                    kind: PrincipalKind::User,
                    id: id.clone(),
                })
                .ok_or_else(|| format!("no user with email {name:?}"))
        } else {
            groups
                .get(&name.to_lowercase())
                .map(|id| Principal {
                    kind: PrincipalKind::Group,
                    id: id.clone(),
                })
                .ok_or_else(|| format!("no group named {name:?}"))
        }
    };

    let mut rows: Vec<ImportRow> = Vec::new();
    let mut candidates: Vec<Option<RecordInsert>> = Vec::new();
    let mut seen: std::collections::HashMap<(RecordKind, String), u64> = Default::default();
    let mut record = csv::ByteRecord::new();
    // Line numbers from byte offsets: the csv crate counts a CRLF file's lines wrongly
    // (BurntSushi/rust-csv#395). Records come in order, so count newlines incrementally.
    let mut counted = (0usize, 1u64);
    let mut line_of = |byte: u64| -> u64 {
        // A CRLF record ends at its `\r`: skip the terminator left before the next record.
        let mut byte = (byte as usize).min(bytes.len());
        while byte < bytes.len() && matches!(bytes[byte], b'\r' | b'\n') {
            byte += 1;
        }
        if byte >= counted.0 {
            counted.1 += bytes[counted.0..byte]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            counted.0 = byte;
        }
        counted.1
    };
    loop {
        let line_hint = line_of(reader.position().byte());
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // A malformed row (e.g. an unterminated quote) ends what can be read.
                rows.push(ImportRow {
                    line: e.position().map(|p| line_of(p.byte())).unwrap_or(line_hint),
                    reference: String::new(),
                    ok: false,
                    errors: vec![format!("not valid CSV: {e}")],
                });
                candidates.push(None);
                break;
            }
        }
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        if rows.len() >= IMPORT_MAX_ROWS {
            return Err(AppError::unprocessable(
                "too-many-rows",
                format!("the file has more than {IMPORT_MAX_ROWS} rows; split it"),
            ));
        }
        let line = record
            .position()
            .map(|p| line_of(p.byte()))
            .unwrap_or(line_hint);
        let mut errors: Vec<String> = Vec::new();
        let mut field = |name: &str| -> String {
            let Some(i) = col.get(name) else {
                return String::new();
            };
            match record.get(*i) {
                None => String::new(),
                Some(b) => match std::str::from_utf8(b) {
                    Ok(s) => s.trim().to_string(),
                    Err(_) => {
                        errors.push(format!("{name}: not UTF-8 text"));
                        String::new()
                    }
                },
            }
        };
        let (kind_s, reference, title, client, status_s, contacts_s, firm_s, members_s, excl_s) = (
            field("kind"),
            field("reference"),
            field("title"),
            field("client"),
            field("status"),
            field("contacts"),
            field("firm_wide"),
            field("members"),
            field("excluded"),
        );
        if record.len() != header.len() {
            errors.push(format!(
                "the row has {} fields; the header has {}",
                record.len(),
                header.len()
            ));
        }
        let kind: Option<RecordKind> = match kind_s.to_ascii_lowercase().parse() {
            Ok(k) => Some(k),
            Err(e) => {
                errors.push(if kind_s.is_empty() {
                    "kind is required (matter, case or contract)".to_string()
                } else {
                    e
                });
                None
            }
        };
        let status = match status_s.to_ascii_lowercase().as_str() {
            "" | "open" => "open".to_string(),
            "closed" => "closed".to_string(),
            other => {
                errors.push(format!(
                    "unknown status {other:?}: expected open, closed or empty"
                ));
                "open".to_string()
            }
        };
        let firm_wide = match firm_s.to_ascii_lowercase().as_str() {
            "" | "true" => true,
            "false" => false,
            other => {
                errors.push(format!(
                    "firm_wide must be true, false or empty, not {other:?}"
                ));
                true
            }
        };
        let fields =
            match check_record_fields(&reference, &title, &client, &split_list(&contacts_s)) {
                Ok(f) => Some(f),
                Err(es) => {
                    errors.extend(es.into_iter().map(|(_, m)| m));
                    None
                }
            };
        let mut members = Vec::new();
        for name in split_list(&members_s) {
            match resolve(&name) {
                Ok(p) => members.push(p),
                Err(e) => errors.push(format!("members: {e}")),
            }
        }
        let mut excluded = Vec::new();
        for name in split_list(&excl_s) {
            match resolve(&name) {
                Ok(p) if members.contains(&p) => {
                    errors.push(format!("{name} cannot be both a member and excluded"))
                }
                Ok(p) => excluded.push(p),
                Err(e) => errors.push(format!("excluded: {e}")),
            }
        }
        if let (Some(k), Some(f)) = (kind, &fields) {
            match seen.get(&(k, f.reference.clone())) {
                Some(first) => errors.push(format!(
                    "duplicate of line {first}: {k}:{} appears twice in the file",
                    f.reference
                )),
                None => {
                    seen.insert((k, f.reference.clone()), line);
                    if record_exists(&mut tx, k, &f.reference).await? {
                        errors.push(format!("{k}:{} already exists", f.reference));
                    }
                }
            }
        }
        let ok = errors.is_empty();
        rows.push(ImportRow {
            line,
            reference: reference.clone(),
            ok,
            errors,
        });
        candidates.push(match (ok, kind, fields) {
            (true, Some(kind), Some(fields)) => Some(RecordInsert {
                kind,
                fields,
                status,
                firm_wide,
                members,
                excluded,
            }),
            _ => None,
        });
    }
    let valid = rows.iter().filter(|r| r.ok).count();
    let invalid = rows.len() - valid;
    let mut report = ImportReport {
        rows,
        imported: 0,
        valid,
        invalid,
    };
    if invalid > 0 && !import_valid_rows {
        tx.rollback().await?;
        return Ok(report);
    }
    let mut imported = Vec::new();
    for c in candidates.into_iter().flatten() {
        insert_record(&mut tx, &c, actor, "csv-import").await?;
        imported.push(format!("{}:{}", c.kind, c.fields.reference));
    }
    report.imported = imported.len();
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "records.imported", "records").detail(serde_json::json!({
            "imported": imported.len(), "invalid_rows_skipped": invalid,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(report)
}
