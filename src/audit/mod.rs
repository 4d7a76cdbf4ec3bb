//! The per-tenant audit chain. Each entry's hash covers the previous hash and the entry's
//! fields, length-prefixed, so editing, deleting or reordering entries breaks the chain and
//! `verify` names the first entry that no longer fits.

pub mod anchor;

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::time_fmt::now_rfc3339;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What to append; `detail` is a compact JSON object.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor: String,
    pub action: &'static str,
    pub subject: String,
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn new(actor: impl Into<String>, action: &'static str, subject: impl Into<String>) -> Self {
        AuditEvent {
            actor: actor.into(),
            action,
            subject: subject.into(),
            detail: serde_json::json!({}),
        }
    }
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// `SHA-256(prev_hash ‖ len‖seq ‖ len‖at ‖ len‖actor ‖ len‖action ‖ len‖subject ‖ len‖detail)`,
/// lengths as 8-byte big-endian.
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> String {
    let mut h = Sha256::new();
    let seq_s = seq.to_string();
    for field in [prev_hash, &seq_s, at, actor, action, subject, detail] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Takes the tenant's append lock inside the current transaction. Must be the first
/// statement of any transaction that appends (so SQLite takes its write lock up front and
/// PostgreSQL holds the head row until commit).
pub async fn lock_chain(conn: &mut AnyConnection) -> sqlx::Result<()> {
    sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends one entry. Call after [`lock_chain`] in the same transaction.
pub async fn append(conn: &mut AnyConnection, ev: &AuditEvent) -> sqlx::Result<AuditEntry> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let prev_seq: i64 = row.try_get("seq")?;
    let prev_hash: String = row.try_get("hash")?;
    let seq = prev_seq + 1;
    let at = now_rfc3339();
    let detail = ev.detail.to_string();
    let hash = entry_hash(
        &prev_hash,
        seq,
        &at,
        &ev.actor,
        ev.action,
        &ev.subject,
        &detail,
    );
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(&at)
    .bind(&ev.actor)
    .bind(ev.action)
    .bind(&ev.subject)
    .bind(&detail)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    Ok(AuditEntry {
        seq,
        at,
        actor: ev.actor.clone(),
        action: ev.action.to_string(),
        subject: ev.subject.clone(),
        detail,
        prev_hash,
        hash,
    })
}

/// Appends entries in a transaction of their own.
pub async fn record(pool: &AnyPool, events: &[AuditEvent]) -> sqlx::Result<()> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    lock_chain(&mut tx).await?;
    for ev in events {
        append(&mut tx, ev).await?;
    }
    tx.commit().await
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum ChainStatus {
    /// Every entry fits; `entries` counted, ending at `head`.
    Intact { entries: i64, head: String },
    /// The first entry that does not fit, and why.
    Broken { seq: i64, reason: String },
}

/// Walks the whole chain in order (streaming, constant memory). This checks the chain
/// against itself only; [`anchor::verify`] checks it against its anchor as well.
pub async fn verify(pool: &AnyPool) -> sqlx::Result<ChainStatus> {
    verify_against(pool, None).await
}

/// Walks the whole chain in order, and, with `anchor` (read before the walk), checks that
/// the chain still holds the anchored entry: not shorter, and that entry's hash unchanged.
pub async fn verify_against(
    pool: &AnyPool,
    anchor: Option<&anchor::Anchor>,
) -> sqlx::Result<ChainStatus> {
    use futures_util::TryStreamExt;
    let mut conn = pool.acquire().await?;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let head_seq: i64 = head.try_get("seq")?;
    let head_hash: String = head.try_get("hash")?;
    let mut expected_seq = 1i64;
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut rows = sqlx::query(
        "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log ORDER BY seq",
    )
    .fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        let seq: i64 = row.try_get("seq")?;
        if seq != expected_seq {
            let reason = if seq > expected_seq {
                format!("entry {expected_seq} is missing (next present is {seq})")
            } else {
                format!("sequence out of order at {seq}")
            };
            return Ok(ChainStatus::Broken {
                seq: expected_seq,
                reason,
            });
        }
        let stored_prev: String = row.try_get("prev_hash")?;
        if stored_prev != prev_hash {
            return Ok(ChainStatus::Broken {
                seq,
                reason:
                    "prev_hash does not match the previous entry (entries removed or reordered)"
                        .into(),
            });
        }
        let computed = entry_hash(
            &prev_hash,
            seq,
            &row.try_get::<String, _>("at")?,
            &row.try_get::<String, _>("actor")?,
            &row.try_get::<String, _>("action")?,
            &row.try_get::<String, _>("subject")?,
            &row.try_get::<String, _>("detail")?,
        );
        let stored: String = row.try_get("hash")?;
        if computed != stored {
            return Ok(ChainStatus::Broken {
                seq,
                reason: "content does not match its hash (entry edited)".into(),
            });
        }
        if let Some(a) = anchor.filter(|a| a.seq == seq && a.hash != stored) {
            return Ok(ChainStatus::Broken {
                seq,
                reason: format!(
                    "entry {seq} is not the entry the catalogue anchored on {} (the chain was rewritten, or rolled back and continued)",
                    a.anchored_at
                ),
            });
        }
        prev_hash = stored;
        expected_seq += 1;
    }
    drop(rows);
    let last = expected_seq - 1;
    if last != head_seq || prev_hash != head_hash {
        return Ok(ChainStatus::Broken {
            seq: last + 1,
            reason: format!("chain ends at {last} but the recorded head is entry {head_seq} (trailing entries removed)"),
        });
    }
    if let Some(a) = anchor.filter(|a| a.seq > last) {
        return Ok(ChainStatus::Broken {
            seq: last + 1,
            reason: format!(
                "the chain ends at entry {last} but the catalogue anchored entry {} on {}: entries were removed, or the database was rolled back without a restore",
                a.seq, a.anchored_at
            ),
        });
    }
    Ok(ChainStatus::Intact {
        entries: last,
        head: prev_hash,
    })
}

/// Recent entries, newest first.
pub async fn list(pool: &AnyPool, limit: i64) -> sqlx::Result<Vec<AuditEntry>> {
    let rows = sqlx::query(
        "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log ORDER BY seq DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                seq: r.try_get("seq")?,
                at: r.try_get("at")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                subject: r.try_get("subject")?,
                detail: r.try_get("detail")?,
                prev_hash: r.try_get("prev_hash")?,
                hash: r.try_get("hash")?,
            })
        })
        .collect()
}
