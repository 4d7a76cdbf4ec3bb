//! Retention policies, legal holds and disposition, per tenant.
//!
//! - A **retention policy** per record kind: "delete the filings of a `contract` N years
//!   after the record was closed" (`retention_policies`). No policy: kept for good.
//! - A **legal hold** on a record, or on a person (an email address): while it holds,
//!   nothing under it is deleted by disposition, nor by a subject's erasure
//!   (`legal_holds`). A filing is under a person's hold when that address is in its
//!   message's From, To or Cc. Holds are placed and released only by admins, audited.
//! - **Disposition**: [`evaluate`] (daily in `docket serve`, or `docket retention
//!   evaluate`) lists the closed records whose retention has run out and which are not on
//!   hold, as a *pending* disposition list (`dispositions`, `disposition_items`). Nothing is
//!   deleted until an admin approves the list in the console; then each record's filings
//!   are deleted, except those under a hold placed since, and messages filed nowhere else
//!   go with them (their blobs are removed by the sweep, started at once). Every step is
//!   audited: `retention.policy_set`, `disposition.listed`, `disposition.approved` or
//!   `disposition.rejected`, `record.disposed` per record, `hold.placed`, `hold.released`.
//!
//! Dates are judged by the catalogue's [`crate::clock::Clock`].

use std::collections::HashSet;

use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};
use time::OffsetDateTime;

use crate::audit::{self, AuditEvent};
use crate::error::{AppError, AppResult};
use crate::time_fmt::{format_utc, now_rfc3339, parse};

/// Record kinds a policy can name.
pub const KINDS: [&str; 3] = ["matter", "case", "contract"];
/// The longest retention a policy may set, in years.
pub const MAX_YEARS: i64 = 100;

/// A retention policy: filings of records of `kind` are due for disposition `years` after
/// the record was closed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Policy {
    pub kind: String,
    pub years: i64,
    pub updated_at: String,
    pub updated_by: String,
}

/// Every policy, by kind.
pub async fn policies(pool: &AnyPool) -> AppResult<Vec<Policy>> {
    let rows = sqlx::query(
        "SELECT kind, years, updated_at, updated_by FROM retention_policies ORDER BY kind",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Policy {
                kind: r.try_get("kind")?,
                years: r.try_get("years")?,
                updated_at: r.try_get("updated_at")?,
                updated_by: r.try_get("updated_by")?,
            })
        })
        .collect()
}

/// Sets (`Some(years)`, 1..=100) or removes (`None`) the policy of a record kind; audited
/// as `retention.policy_set` with before and after.
pub async fn set_policy(
    pool: &AnyPool,
    kind: &str,
    years: Option<i64>,
    actor: &str,
) -> AppResult<()> {
    if !KINDS.contains(&kind) {
        return Err(AppError::unprocessable(
            "invalid-kind",
            format!("unknown record kind {kind:?}: expected matter, case or contract"),
        ));
    }
    if let Some(y) = years.filter(|y| !(1..=MAX_YEARS).contains(y)) {
        return Err(AppError::unprocessable(
            "invalid-retention",
            format!(
                "a retention of {y} years: give 1 to {MAX_YEARS} years, or none to keep for good"
            ),
        ));
    }
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let before: Option<i64> = sqlx::query("SELECT years FROM retention_policies WHERE kind = $1")
        .bind(kind)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get(0));
    sqlx::query("DELETE FROM retention_policies WHERE kind = $1")
        .bind(kind)
        .execute(&mut *tx)
        .await?;
    if let Some(y) = years {
        sqlx::query(
            "INSERT INTO retention_policies (kind, years, updated_at, updated_by) VALUES ($1, $2, $3, $4)",
        )
        .bind(kind)
        .bind(y)
        .bind(now_rfc3339())
        .bind(actor)
        .execute(&mut *tx)
        .await?;
    }
    if before != years {
        let ev = AuditEvent::new(actor, "retention.policy_set", kind).detail(
            serde_json::json!({ "kind": kind, "before_years": before, "after_years": years }),
        );
        audit::append(&mut tx, &ev).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A legal hold.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub id: String,
    /// `record` or `person`.
    pub scope: String,
    /// A record hold: the record's id and `kind:reference`.
    pub record_id: Option<String>,
    pub record: Option<String>,
    /// A person hold: the address (lower case).
    pub email: Option<String>,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: String,
    pub released_by: Option<String>,
    pub released_at: Option<String>,
}

/// What a hold is placed on.
#[derive(Debug, Clone)]
pub enum HoldOn {
    /// A record, by id.
    Record(String),
    /// A person: every filing whose message has this address in From, To or Cc.
    Person(String),
}

/// Holds, newest first; released ones too when `all`.
pub async fn holds(pool: &AnyPool, all: bool) -> AppResult<Vec<Hold>> {
    let sql = format!(
        "SELECT h.id, h.scope, h.record_id, r.kind || ':' || r.reference AS record, h.email, h.reason, \
         h.placed_by, h.placed_at, h.released_by, h.released_at \
         FROM legal_holds h LEFT JOIN records r ON r.id = h.record_id {} ORDER BY h.placed_at DESC",
        if all { "" } else { "WHERE h.released_at IS NULL" }
    );
    let rows = sqlx::query(&sql).fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(Hold {
                id: r.try_get("id")?,
                scope: r.try_get("scope")?,
                record_id: r.try_get("record_id")?,
                record: r.try_get("record")?,
                email: r.try_get("email")?,
                reason: r.try_get("reason")?,
                placed_by: r.try_get("placed_by")?,
                placed_at: r.try_get("placed_at")?,
                released_by: r.try_get("released_by")?,
                released_at: r.try_get("released_at")?,
            })
        })
        .collect()
}

/// Places a legal hold (a reason is required); audited as `hold.placed`.
pub async fn place_hold(pool: &AnyPool, on: &HoldOn, reason: &str, actor: &str) -> AppResult<Hold> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(AppError::unprocessable(
            "invalid-reason",
            "give the hold's reason (1 to 500 characters), e.g. the litigation it is for",
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let (scope, record_id, email, subject) = match on {
        HoldOn::Record(rid) => {
            let label = record_label(&mut tx, rid)
                .await?
                .ok_or_else(|| AppError::not_found("no such record"))?;
            ("record", Some(rid.clone()), None, label)
        }
        HoldOn::Person(e) => {
            let e = e.trim().to_ascii_lowercase();
            if !crate::directory::valid_email(&e) {
                return Err(AppError::unprocessable(
                    "invalid-email",
                    format!("{e:?} is not an email address"),
                ));
            }
            ("person", None, Some(e.clone()), e)
        }
    };
    sqlx::query(
        "INSERT INTO legal_holds (id, scope, record_id, email, reason, placed_by, placed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(scope)
    .bind(&record_id)
    .bind(&email)
    .bind(reason)
    .bind(actor)
    .bind(now_rfc3339())
    .execute(&mut *tx)
    .await?;
    let ev = AuditEvent::new(actor, "hold.placed", &id)
        .detail(serde_json::json!({ "scope": scope, "on": subject, "reason": reason }));
    audit::append(&mut tx, &ev).await?;
    tx.commit().await?;
    hold(pool, &id).await
}

async fn hold(pool: &AnyPool, id: &str) -> AppResult<Hold> {
    holds(pool, true)
        .await?
        .into_iter()
        .find(|h| h.id == id)
        .ok_or_else(|| AppError::not_found("no such hold"))
}

/// Releases a hold; audited as `hold.released`. Releasing a released hold is refused.
pub async fn release_hold(pool: &AnyPool, id: &str, actor: &str) -> AppResult<Hold> {
    let h = hold(pool, id).await?;
    if h.released_at.is_some() {
        return Err(AppError::unprocessable(
            "hold-released",
            "this hold is already released",
        ));
    }
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let done = sqlx::query(
        "UPDATE legal_holds SET released_by = $1, released_at = $2 WHERE id = $3 AND released_at IS NULL",
    )
    .bind(actor)
    .bind(now_rfc3339())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(AppError::unprocessable(
            "hold-released",
            "this hold is already released",
        ));
    }
    let on = h.record.clone().or(h.email.clone()).unwrap_or_default();
    let ev = AuditEvent::new(actor, "hold.released", id)
        .detail(serde_json::json!({ "scope": h.scope, "on": on, "reason": h.reason }));
    audit::append(&mut tx, &ev).await?;
    tx.commit().await?;
    hold(pool, id).await
}

async fn record_label(conn: &mut AnyConnection, id: &str) -> AppResult<Option<String>> {
    Ok(
        sqlx::query("SELECT kind, reference FROM records WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| format!("{}:{}", r.get::<String, _>(0), r.get::<String, _>(1))),
    )
}

/// The holds in force: held record ids and held addresses.
pub struct HoldsInForce {
    records: HashSet<String>,
    people: HashSet<String>,
}

impl HoldsInForce {
    /// Whether a hold covers a filing to `record_id` of a message with these From, To and Cc
    /// lists (JSON).
    pub fn covers(&self, record_id: &str, lists: [&str; 3]) -> bool {
        self.records.contains(record_id) || involves(&self.people, lists)
    }
}

/// The holds in force now.
pub async fn holds_in_force(conn: &mut AnyConnection) -> AppResult<HoldsInForce> {
    let rows = sqlx::query("SELECT record_id, email FROM legal_holds WHERE released_at IS NULL")
        .fetch_all(&mut *conn)
        .await?;
    let mut f = HoldsInForce {
        records: HashSet::new(),
        people: HashSet::new(),
    };
    for r in rows {
        if let Some(id) = r.try_get::<Option<String>, _>(0)? {
            f.records.insert(id);
        }
        if let Some(e) = r.try_get::<Option<String>, _>(1)? {
            f.people.insert(e);
        }
    }
    Ok(f)
}

/// Whether any address in a message's From, To and Cc (JSON lists of mailboxes) is held.
fn involves(people: &HashSet<String>, lists: [&str; 3]) -> bool {
    !people.is_empty() && participants(lists).iter().any(|a| people.contains(a))
}

/// The lower-cased addresses of a message's From, To and Cc (JSON lists of mailboxes).
pub fn participants(lists: [&str; 3]) -> Vec<String> {
    let mut out = Vec::new();
    for list in lists {
        let parsed: serde_json::Value = serde_json::from_str(list).unwrap_or_default();
        for m in parsed.as_array().into_iter().flatten() {
            if let Some(a) = m.get("address").and_then(|a| a.as_str()) {
                out.push(a.trim().to_ascii_lowercase());
            }
        }
    }
    out
}

/// A disposition list.
#[derive(Debug, Clone, Serialize)]
pub struct Disposition {
    pub id: String,
    pub created_at: String,
    /// `pending`, `approved` (carried out), or `rejected`.
    pub status: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub items: Vec<Item>,
}

/// One record on a disposition list.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub record_id: String,
    /// `kind:reference`.
    pub record: String,
    pub title: String,
    pub closed_at: String,
    /// When its retention ran out.
    pub due_at: String,
    /// Filings when listed.
    pub filings: i64,
    /// Filings now (what an approval would consider).
    pub filings_now: i64,
    /// After approval: filings deleted, and filings kept because a hold was placed since.
    pub disposed: Option<i64>,
    pub held: Option<i64>,
}

/// Lists the closed records whose retention has run out by `now`, not on hold, not on a
/// pending list already and with filings left, as a new pending disposition list (audited
/// as `disposition.listed`). `None` when there is nothing to list.
pub async fn evaluate(
    pool: &AnyPool,
    now: OffsetDateTime,
    actor: &str,
) -> AppResult<Option<Disposition>> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let holds = holds_in_force(&mut tx).await?;
    let rows = sqlx::query(
        "SELECT r.id, r.kind, r.reference, r.title, r.closed_at, p.years, \
         (SELECT COUNT(*) FROM filings f WHERE f.record_id = r.id) AS filings \
         FROM records r JOIN retention_policies p ON p.kind = r.kind \
         WHERE r.status = 'closed' AND r.closed_at IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM disposition_items i JOIN dispositions d ON d.id = i.disposition_id \
                         WHERE i.record_id = r.id AND d.status = 'pending') \
         ORDER BY r.closed_at",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut items = Vec::new();
    for r in rows {
        let id: String = r.try_get("id")?;
        let closed_at: String = r.try_get("closed_at")?;
        let years: i64 = r.try_get("years")?;
        let filings: i64 = r.try_get("filings")?;
        let Some(due) = parse(&closed_at).and_then(|c| add_years(c, years)) else {
            continue;
        };
        if due > now || filings == 0 || holds.records.contains(&id) {
            continue;
        }
        items.push(Item {
            record: format!(
                "{}:{}",
                r.try_get::<String, _>("kind")?,
                r.try_get::<String, _>("reference")?
            ),
            title: r.try_get("title")?,
            closed_at,
            due_at: format_utc(due),
            filings,
            filings_now: filings,
            disposed: None,
            held: None,
            record_id: id,
        });
    }
    if items.is_empty() {
        return Ok(None);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let created_at = format_utc(now);
    sqlx::query("INSERT INTO dispositions (id, created_at, status) VALUES ($1, $2, 'pending')")
        .bind(&id)
        .bind(&created_at)
        .execute(&mut *tx)
        .await?;
    for it in &items {
        sqlx::query(
            "INSERT INTO disposition_items (disposition_id, record_id, closed_at, due_at, filings) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(&it.record_id)
        .bind(&it.closed_at)
        .bind(&it.due_at)
        .bind(it.filings)
        .execute(&mut *tx)
        .await?;
    }
    let listed: Vec<&str> = items.iter().map(|i| i.record.as_str()).collect();
    let ev = AuditEvent::new(actor, "disposition.listed", &id).detail(serde_json::json!({
        "records": listed, "filings": items.iter().map(|i| i.filings).sum::<i64>(),
    }));
    audit::append(&mut tx, &ev).await?;
    tx.commit().await?;
    disposition(pool, &id).await
}

/// `t` plus `years` calendar years (29 February goes to 28 February).
fn add_years(t: OffsetDateTime, years: i64) -> Option<OffsetDateTime> {
    let year = t.year() + i32::try_from(years).ok()?;
    let date = t
        .date()
        .replace_year(year)
        .or_else(|_| t.date().replace_day(28).and_then(|d| d.replace_year(year)))
        .ok()?;
    Some(t.replace_date(date))
}

/// Disposition lists, newest first.
pub async fn dispositions(pool: &AnyPool) -> AppResult<Vec<Disposition>> {
    let ids: Vec<String> = sqlx::query("SELECT id FROM dispositions ORDER BY created_at DESC, id")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for id in ids {
        if let Some(d) = disposition(pool, &id).await? {
            out.push(d);
        }
    }
    Ok(out)
}

/// One disposition list with its items.
pub async fn disposition(pool: &AnyPool, id: &str) -> AppResult<Option<Disposition>> {
    let Some(d) = sqlx::query(
        "SELECT id, created_at, status, decided_by, decided_at FROM dispositions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT i.record_id, r.kind || ':' || r.reference AS record, r.title, i.closed_at, i.due_at, \
         i.filings, i.disposed, i.held, \
         (SELECT COUNT(*) FROM filings f WHERE f.record_id = i.record_id) AS filings_now \
         FROM disposition_items i JOIN records r ON r.id = i.record_id \
         WHERE i.disposition_id = $1 ORDER BY i.due_at, record",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(Item {
                record_id: r.try_get("record_id")?,
                record: r.try_get("record")?,
                title: r.try_get("title")?,
                closed_at: r.try_get("closed_at")?,
                due_at: r.try_get("due_at")?,
                filings: r.try_get("filings")?,
                filings_now: r.try_get("filings_now")?,
                disposed: r.try_get("disposed")?,
                held: r.try_get("held")?,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(Some(Disposition {
        id: d.try_get("id")?,
        created_at: d.try_get("created_at")?,
        status: d.try_get("status")?,
        decided_by: d.try_get("decided_by")?,
        decided_at: d.try_get("decided_at")?,
        items,
    }))
}

/// Rejects a pending list: nothing is deleted (audited as `disposition.rejected`). The
/// records come back on the next evaluation unless their policy changes or a hold is placed.
pub async fn reject(pool: &AnyPool, id: &str, actor: &str) -> AppResult<Disposition> {
    decide(pool, id, actor, None).await
}

/// Approves a pending list and carries it out in one transaction: each record still closed
/// since the closure it was listed for, still due at `now` by its kind's policy as it is
/// then, and not on hold has its filings deleted, except those under a person's hold, and the
/// messages filed nowhere else go with them. Audited as `disposition.approved` and
/// `record.disposed` per record. The blobs no row refers to any more are removed by the
/// sweep.
pub async fn approve(
    pool: &AnyPool,
    id: &str,
    actor: &str,
    now: OffsetDateTime,
) -> AppResult<Disposition> {
    decide(pool, id, actor, Some(now)).await
}

/// `approved_at`: `Some(now)` approves, `None` rejects.
async fn decide(
    pool: &AnyPool,
    id: &str,
    actor: &str,
    approved_at: Option<OffsetDateTime>,
) -> AppResult<Disposition> {
    let approve = approved_at.is_some();
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let done = sqlx::query(
        "UPDATE dispositions SET status = $1, decided_by = $2, decided_at = $3 WHERE id = $4 AND status = 'pending'",
    )
    .bind(if approve { "approved" } else { "rejected" })
    .bind(actor)
    .bind(now_rfc3339())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(match disposition(pool, id).await? {
            None => AppError::not_found("no such disposition list"),
            Some(d) => AppError::unprocessable(
                "disposition-decided",
                format!(
                    "this list was already {} by {}",
                    d.status,
                    d.decided_by.unwrap_or_default()
                ),
            ),
        });
    }
    let (mut disposed, mut held) = (0i64, 0i64);
    if approve {
        let holds = holds_in_force(&mut tx).await?;
        let records: Vec<String> =
            sqlx::query("SELECT record_id FROM disposition_items WHERE disposition_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
        let now = approved_at.expect("approving");
        for rid in records {
            let (d, h) = dispose_record(&mut tx, id, &rid, &holds, actor, now).await?;
            disposed += d;
            held += h;
        }
    }
    let action = if approve {
        "disposition.approved"
    } else {
        "disposition.rejected"
    };
    let ev = AuditEvent::new(actor, action, id)
        .detail(serde_json::json!({ "filings_disposed": disposed, "filings_held": held }));
    audit::append(&mut tx, &ev).await?;
    tx.commit().await?;
    disposition(pool, id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("disposition vanished")))
}

/// Deletes one record's filings (those not under a hold) and the messages left filed
/// nowhere; returns (deleted, kept under hold). A record reopened or held since it was
/// listed keeps everything.
async fn dispose_record(
    tx: &mut AnyConnection,
    disposition_id: &str,
    record_id: &str,
    holds: &HoldsInForce,
    actor: &str,
    now: OffsetDateTime,
) -> AppResult<(i64, i64)> {
    let still_due = still_due(tx, disposition_id, record_id, now).await?;
    let rows = sqlx::query(
        "SELECT f.id, f.message_id, m.from_json, m.to_json, m.cc_json FROM filings f \
         JOIN messages m ON m.id = f.message_id WHERE f.record_id = $1",
    )
    .bind(record_id)
    .fetch_all(&mut *tx)
    .await?;
    let whole_record_kept = !still_due || holds.records.contains(record_id);
    let (mut disposed, mut held) = (0i64, 0i64);
    for r in &rows {
        let lists: [String; 3] = [r.get(2), r.get(3), r.get(4)];
        if whole_record_kept || involves(&holds.people, [&lists[0], &lists[1], &lists[2]]) {
            held += 1;
            continue;
        }
        delete_filing(tx, &r.get::<String, _>(0), &r.get::<String, _>(1)).await?;
        disposed += 1;
    }
    sqlx::query(
        "UPDATE disposition_items SET disposed = $1, held = $2 WHERE disposition_id = $3 AND record_id = $4",
    )
    .bind(disposed)
    .bind(held)
    .bind(disposition_id)
    .bind(record_id)
    .execute(&mut *tx)
    .await?;
    let label = record_label(tx, record_id).await?.unwrap_or_default();
    let ev = AuditEvent::new(actor, "record.disposed", record_id).detail(serde_json::json!({
        "record": label, "disposition": disposition_id, "filings_disposed": disposed, "filings_held": held,
    }));
    audit::append(tx, &ev).await?;
    Ok((disposed, held))
}

/// Whether a listed record is still due at `now`: closed since the closure it was listed
/// for (not reopened and closed again), and its kind's policy (as it is now) has run out.
async fn still_due(
    tx: &mut AnyConnection,
    disposition_id: &str,
    record_id: &str,
    now: OffsetDateTime,
) -> AppResult<bool> {
    let row = sqlx::query(
        "SELECT r.status, r.closed_at, i.closed_at AS listed_closed_at, p.years FROM records r \
         JOIN disposition_items i ON i.record_id = r.id AND i.disposition_id = $1 \
         LEFT JOIN retention_policies p ON p.kind = r.kind WHERE r.id = $2",
    )
    .bind(disposition_id)
    .bind(record_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(r) = row else { return Ok(false) };
    let status: String = r.try_get("status")?;
    let closed_at: Option<String> = r.try_get("closed_at")?;
    let listed: String = r.try_get("listed_closed_at")?;
    let years: Option<i64> = r.try_get("years")?;
    let due = match (closed_at.as_deref().and_then(parse), years) {
        (Some(c), Some(y)) => add_years(c, y).is_some_and(|d| d <= now),
        _ => false,
    };
    Ok(status == "closed" && closed_at.as_deref() == Some(listed.as_str()) && due)
}

/// Deletes a filing and, when no other filing refers to its message, the message.
pub async fn delete_filing(
    tx: &mut AnyConnection,
    filing_id: &str,
    message_id: &str,
) -> AppResult<()> {
    for sql in [
        "DELETE FROM filing_attachments WHERE filing_id = $1",
        "DELETE FROM filings WHERE id = $1",
    ] {
        sqlx::query(sql).bind(filing_id).execute(&mut *tx).await?;
    }
    let others = sqlx::query("SELECT 1 FROM filings WHERE message_id = $1 LIMIT 1")
        .bind(message_id)
        .fetch_optional(&mut *tx)
        .await?;
    if others.is_none() {
        for sql in [
            "DELETE FROM message_attachments WHERE message_id = $1",
            "DELETE FROM message_parties WHERE message_id = $1",
            "DELETE FROM messages WHERE id = $1",
        ] {
            sqlx::query(sql).bind(message_id).execute(&mut *tx).await?;
        }
    }
    Ok(())
}

/// `docket serve`'s schedule: every active tenant evaluated once every `interval` (a day),
/// the first time one interval after start-up (opening every tenant at start-up would
/// make one tenant's unwritable database fail the server's readiness before anyone used
/// it). Each new list waits for an admin's approval.
pub fn spawn_schedule(
    catalog: std::sync::Arc<crate::tenancy::Catalog>,
    interval: std::time::Duration,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            evaluate_all(&catalog).await;
        }
    });
}

/// Evaluates every active tenant (failures are logged); returns the lists made.
pub async fn evaluate_all(catalog: &crate::tenancy::Catalog) -> Vec<(String, Disposition)> {
    let mut out = Vec::new();
    let now = catalog.clock().now();
    for info in catalog.list_tenants().await.unwrap_or_default() {
        if info.status != "active" {
            continue;
        }
        let made = async {
            let t = catalog.tenant(&info.id).await.map_err(AppError::internal)?;
            evaluate(&t.db, now, "system@docket.invalid").await
        };
        match made.await {
            Ok(Some(d)) => out.push((info.id, d)),
            Ok(None) => {}
            Err(e) => tracing::error!(tenant = %info.id, error = %e, "retention evaluation failed"),
        }
    }
    out
}
