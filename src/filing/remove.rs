//! Taking a filing back: the filer's **undo** within the grace period
//! (`filing.undo_grace_minutes`, 10 by default), and an admin's **removal** of any filing
//! later, with a reason.
//!
//! Either way, in one transaction with the audit chain locked: the filing and its kept
//! attachments go; the message (its attachments' rows and its parties) goes too when no
//! other filing refers to it ([`crate::retention::delete_filing`]); an audit entry
//! (`filing.undone` or `filing.removed`) says who, what and why. The message's blobs stay
//! while any row still refers to them; the sweep removes the rest later
//! ([`crate::maintenance::sweep_soon`]). Nothing under a legal hold is removed (409
//! `legal-hold`), and "already filed" reads the tables, so it changes at once.
//!
//! An undo is refused (409 `filing-shared`) once someone else has filed the same message to
//! the same record and was told "already filed": that filing is theirs too now.
//!
//! An undo also takes back the filings the firm's rules made with that click (the system
//! user's filings of the message at the same instant) once no person's filing of the
//! message is left, each audited under its own id; a rule's filing someone else was told
//! about, one the user may not see, and one under a hold stay.

use axum::http::StatusCode;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use crate::access;
use crate::audit::{self, AuditEvent};
use crate::directory::User;
use crate::error::{AppError, AppResult};
use crate::tenancy::Tenant;

/// What went: the filing asked for, and the rules' filings that went with it (undo only).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Removed {
    /// The filing's id.
    pub id: String,
    /// Its record, as `kind:reference` (e.g. `matter:M-2024-017`).
    pub target: String,
    /// The record's title.
    pub title: String,
    /// Filings the firm's rules made with it, taken back too (`kind:reference` of each).
    pub also_removed: Vec<String>,
    /// The stored message's id.
    pub message_id: String,
    /// Whether the message itself went (no other filing referred to it).
    pub message_removed: bool,
}

/// Who takes a filing back, and on what grounds.
pub enum Remover<'a> {
    /// The filer, at `now`, within `grace` of filing.
    Filer {
        user: &'a User,
        grace: std::time::Duration,
        now: OffsetDateTime,
    },
    /// An admin (`actor` as the audit names them: the person, or their token), with a
    /// reason (1 to 2,000 characters).
    Admin {
        user: &'a User,
        actor: &'a str,
        reason: &'a str,
    },
}

impl Remover<'_> {
    fn user(&self) -> &User {
        match self {
            Remover::Filer { user, .. } | Remover::Admin { user, .. } => user,
        }
    }
}

/// The longest removal reason, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

/// The filing as the transaction reads it.
struct Row_ {
    message_id: String,
    record_id: String,
    target: String,
    title: String,
    filed_by: String,
    filed_at: String,
    lists: [String; 3],
}

/// Takes filing `id` back as `who` may. Errors: 404 `not-found` (no such filing, one behind
/// the user's wall or, for an undo, someone else's), 409 `undo-expired` (the grace period is
/// over), 409 `undo-off` (a grace period of 0), 409 `filing-shared` (an undo of a filing
/// someone else was since told is filed), 409 `legal-hold`, 422 `reason-required` (an
/// admin's removal without a reason), 403 for a role that may not file.
pub async fn remove(tenant: &Tenant, id: &str, who: &Remover<'_>) -> AppResult<Removed> {
    check_asker(who)?;
    let mut tx = crate::tenancy::db::begin(&tenant.db).await?;
    audit::lock_chain(&mut tx).await?;
    let row = read(&mut tx, id, who.user()).await?;
    check_may(&row, who)?;
    if let Remover::Filer { user, .. } = who {
        check_not_shared(&mut tx, id, &user.email).await?;
    }
    check_holds(&mut tx, &row).await?;
    crate::retention::delete_filing(&mut tx, id, &row.message_id).await?;
    let rules = match who {
        Remover::Filer { user, .. } => take_back_rules(&mut tx, &row, user).await?,
        Remover::Admin { .. } => Vec::new(),
    };
    let message_removed = message_gone(&mut tx, &row.message_id).await?;
    let removed = Removed {
        id: id.to_string(),
        target: row.target.clone(),
        title: row.title.clone(),
        also_removed: rules.iter().map(|(_, t)| t.clone()).collect(),
        message_id: row.message_id.clone(),
        message_removed,
    };
    audit::append(&mut tx, &audit_event(id, &row, &removed, who)).await?;
    for (rule_filing, target) in &rules {
        let detail = serde_json::json!({"target": target, "message": row.message_id, "with": id, "rule": true});
        let ev = AuditEvent::new(&who.user().email, "filing.undone", rule_filing).detail(detail);
        audit::append(&mut tx, &ev).await?;
    }
    tx.commit().await?;
    Ok(removed)
}

/// 409 `filing-shared` when someone other than `email` filed the message to the record
/// since and was answered with this filing ("already filed": `filing.duplicate`).
async fn check_not_shared(tx: &mut AnyConnection, id: &str, email: &str) -> AppResult<()> {
    let other = sqlx::query(
        "SELECT actor FROM audit_log WHERE subject = $1 AND action = 'filing.duplicate' AND actor <> $2 LIMIT 1",
    )
    .bind(id)
    .bind(email)
    .fetch_optional(&mut *tx)
    .await?;
    match other {
        None => Ok(()),
        Some(_) => Err(AppError::new(
            StatusCode::CONFLICT,
            "filing-shared",
            "someone else has filed this message to the same record since; ask an admin to remove it",
        )),
    }
}

fn check_asker(who: &Remover<'_>) -> AppResult<()> {
    let user = who.user();
    if !user.role.can_file() {
        return Err(AppError::forbidden(format!(
            "your role ({}) may not file or take back filings",
            user.role.as_str()
        )));
    }
    if let Remover::Admin { reason, .. } = who {
        let n = reason.trim().chars().count();
        if n == 0 || n > MAX_REASON_CHARS {
            return Err(AppError::unprocessable(
                "reason-required",
                format!("say why the filing is removed (1 to {MAX_REASON_CHARS} characters)"),
            ));
        }
    }
    Ok(())
}

/// The filing, if `user` may see its record (one 404 for unknown and walled off).
async fn read(tx: &mut AnyConnection, id: &str, user: &User) -> AppResult<Row_> {
    let row = sqlx::query(&format!(
        "SELECT f.message_id, f.record_id, r.kind, r.reference, r.title, f.filed_by, f.filed_at, \
         m.from_json, m.to_json, m.cc_json FROM filings f JOIN records r ON r.id = f.record_id \
         JOIN messages m ON m.id = f.message_id WHERE f.id = $1 AND {}",
        access::visible_sql("r", 2)
    ))
    .bind(id)
    .bind(&user.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| AppError::not_found("no such filing"))?;
    Ok(Row_ {
        message_id: row.try_get(0)?,
        record_id: row.try_get(1)?,
        target: format!(
            "{}:{}",
            row.try_get::<String, _>(2)?,
            row.try_get::<String, _>(3)?
        ),
        title: row.try_get(4)?,
        filed_by: row.try_get(5)?,
        filed_at: row.try_get(6)?,
        lists: [row.try_get(7)?, row.try_get(8)?, row.try_get(9)?],
    })
}

/// An undo: the user's own filing, within the grace period.
fn check_may(row: &Row_, who: &Remover<'_>) -> AppResult<()> {
    let Remover::Filer { user, grace, now } = who else {
        return Ok(());
    };
    if grace.is_zero() {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "undo-off",
            "filings cannot be undone on this docket; ask an admin to remove it",
        ));
    }
    if row.filed_by != user.id {
        // Someone else's filing is not the user's to undo, and says nothing more.
        return Err(AppError::not_found("no such filing of yours"));
    }
    let filed = crate::time_fmt::parse(&row.filed_at)
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("bad filed_at {}", row.filed_at)))?;
    if *now - filed > *grace {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "undo-expired",
            format!(
                "a filing can be undone for {} minutes after it was made; ask an admin to remove it",
                grace.as_secs() / 60
            ),
        ));
    }
    Ok(())
}

async fn check_holds(tx: &mut AnyConnection, row: &Row_) -> AppResult<()> {
    let holds = crate::retention::holds_in_force(tx).await?;
    let [from, to, cc] = &row.lists;
    if holds.covers(&row.record_id, [from, to, cc]) {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "legal-hold",
            format!(
                "this filing to {} is under a legal hold and cannot be removed until the hold is released",
                row.target
            ),
        ));
    }
    Ok(())
}

/// The rules' filings made with the undone one (same message, same instant, by the system
/// user) once no person's filing of the message is left (the rules would have filed it for
/// them): (id, `kind:reference`) of each taken back. Those the user may not see, those
/// anyone was told were already filed, and those under a legal hold stay.
async fn take_back_rules(
    tx: &mut AnyConnection,
    row: &Row_,
    user: &User,
) -> AppResult<Vec<(String, String)>> {
    let a_person_filed =
        sqlx::query("SELECT 1 FROM filings WHERE message_id = $1 AND filed_by <> $2 LIMIT 1")
            .bind(&row.message_id)
            .bind(access::SYSTEM_USER)
            .fetch_optional(&mut *tx)
            .await?;
    if a_person_filed.is_some() {
        return Ok(Vec::new());
    }
    let rules = sqlx::query(&format!(
        "SELECT f.id, f.record_id, r.kind, r.reference FROM filings f \
         JOIN records r ON r.id = f.record_id \
         WHERE f.message_id = $1 AND f.filed_at = $2 AND f.filed_by = $3 AND {} \
         AND NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.subject = f.id AND a.action = 'filing.duplicate') \
         ORDER BY r.reference",
        access::visible_sql("r", 4)
    ))
    .bind(&row.message_id)
    .bind(&row.filed_at)
    .bind(access::SYSTEM_USER)
    .bind(&user.id)
    .fetch_all(&mut *tx)
    .await?;
    let holds = crate::retention::holds_in_force(tx).await?;
    let [from, to, cc] = &row.lists;
    let mut gone = Vec::new();
    for r in rules {
        let (fid, rid): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        if holds.covers(&rid, [from, to, cc]) {
            continue;
        }
        crate::retention::delete_filing(tx, &fid, &row.message_id).await?;
        let target = format!(
            "{}:{}",
            r.try_get::<String, _>(2)?,
            r.try_get::<String, _>(3)?
        );
        gone.push((fid, target));
    }
    Ok(gone)
}

async fn message_gone(tx: &mut AnyConnection, message_id: &str) -> AppResult<bool> {
    Ok(sqlx::query("SELECT 1 FROM messages WHERE id = $1")
        .bind(message_id)
        .fetch_optional(&mut *tx)
        .await?
        .is_none())
}

fn audit_event(id: &str, row: &Row_, removed: &Removed, who: &Remover<'_>) -> AuditEvent {
    let common = serde_json::json!({
        "target": row.target,
        "message": row.message_id,
        "filed_at": row.filed_at,
        "also_removed": removed.also_removed,
        "message_removed": removed.message_removed,
    });
    let mut detail = common;
    match who {
        Remover::Filer { user, .. } => {
            AuditEvent::new(&user.email, "filing.undone", id).detail(detail)
        }
        Remover::Admin { actor, reason, .. } => {
            detail["reason"] = reason.trim().into();
            detail["filed_by"] = row.filed_by.clone().into();
            AuditEvent::new(*actor, "filing.removed", id).detail(detail)
        }
    }
}
