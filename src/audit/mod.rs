//! The per-tenant audit chain. Each entry's hash covers the previous hash and the entry's
//! fields, length-prefixed, so editing, deleting or reordering entries breaks the chain and
//! `verify` names the first entry that no longer fits.
//!
//! **Format 2** (every entry since the GDPR work; older chains are upgraded when their
//! tenant is opened, see [`upgrade_chain`]): the fields that can hold personal data
//! (`actor`, `subject`, `detail`) enter the hash only through a salted digest,
//! `SHA-256(salt ‖ value)`, with a random salt per field of each entry (`salts`). Erasing a
//! person ([`erase_fields`]) replaces such a field with `[erased]`, keeps its digest
//! (`erased`) and deletes its salt: the chain still verifies, and the digest alone cannot
//! confirm a guess of what was there.

pub mod anchor;

use std::collections::BTreeMap;

use anyhow::Context;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::tenancy::script::Script;
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

/// The fields of an entry that may hold personal data, in hashing order.
pub const PERSONAL_FIELDS: [&str; 3] = ["actor", "subject", "detail"];
/// What an erased field reads as.
pub const ERASED: &str = "[erased]";

/// `SHA-256(salt ‖ value)` as hex, `salt` given as hex: how a format-2 entry commits to one
/// of its [`PERSONAL_FIELDS`].
pub fn field_digest(salt_hex: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(hex::decode(salt_hex).unwrap_or_default());
    h.update(value.as_bytes());
    hex::encode(h.finalize())
}

/// Format 2: `SHA-256(prev_hash ‖ "2" ‖ seq ‖ at ‖ action ‖ digest(actor) ‖ digest(subject) ‖
/// digest(detail))`, each length-prefixed (8-byte big-endian), digests by [`field_digest`].
pub fn entry_hash_v2(
    prev_hash: &str,
    seq: i64,
    at: &str,
    action: &str,
    digests: [&str; 3],
) -> String {
    let mut h = Sha256::new();
    let seq_s = seq.to_string();
    for field in [
        prev_hash, "2", &seq_s, at, action, digests[0], digests[1], digests[2],
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

fn new_salts() -> BTreeMap<String, String> {
    PERSONAL_FIELDS
        .iter()
        .map(|f| {
            let mut salt = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut salt);
            (f.to_string(), hex::encode(salt))
        })
        .collect()
}

/// A format-2 entry's digests of its personal fields: the kept digest of an erased field
/// (which must read [`ERASED`]), else the digest of its value with its salt (`None` when
/// neither holds).
fn digests(
    values: [&str; 3],
    salts: &BTreeMap<String, String>,
    erased: &BTreeMap<String, String>,
) -> Option<[String; 3]> {
    let one = |i: usize| -> Option<String> {
        let f = PERSONAL_FIELDS[i];
        match erased.get(f) {
            Some(d) if values[i] == ERASED => Some(d.clone()),
            Some(_) => None,
            None => salts.get(f).map(|salt| field_digest(salt, values[i])),
        }
    };
    Some([one(0)?, one(1)?, one(2)?])
}

fn json_map(s: Option<String>) -> BTreeMap<String, String> {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
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
    let mut head = Head::read(conn).await?;
    let entry = head.append(conn, ev).await?;
    head.store(conn).await?;
    Ok(entry)
}

const INSERT_ENTRY: &str = "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash, version, salts) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 2, $9)";

/// The chain's head kept in memory by a transaction that appends several entries (a group
/// commit's batch): read once, advanced by each [`Head::append`], written back once by
/// [`Head::store`] before the commit. Only valid inside the transaction that locked it.
#[derive(Debug, Clone)]
pub struct Head {
    seq: i64,
    hash: String,
}

impl Head {
    /// Takes the append lock (as [`lock_chain`]: the transaction's first statement) and
    /// reads the head, in one statement.
    pub async fn lock(conn: &mut AnyConnection) -> sqlx::Result<Head> {
        let row = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Head {
            seq: row.try_get(0)?,
            hash: row.try_get(1)?,
        })
    }

    /// As [`Head::lock`] on SQLite, in a transaction begun with `BEGIN IMMEDIATE` (so it
    /// holds the database's write lock and reads the latest commit), also reading the blob
    /// sweep epoch ([`crate::sweep_epoch`]) and then running `then` (statements without
    /// values), all in one round trip. Not for PostgreSQL: there a subquery of the locking
    /// statement reads the snapshot from before it waited for the row lock.
    pub async fn lock_sqlite_with_epoch(
        conn: &mut AnyConnection,
        then: &str,
    ) -> sqlx::Result<(Head, i64)> {
        let sql = format!(
            "UPDATE audit_head SET seq = seq WHERE id = 1 \
             RETURNING seq, hash, (SELECT epoch FROM blob_sweep WHERE id = 1); {then}"
        );
        let rows = sqlx::query(&sql).fetch_all(&mut *conn).await?;
        let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
        let head = Head {
            seq: row.try_get(0)?,
            hash: row.try_get(1)?,
        };
        Ok((head, row.try_get(2)?))
    }

    /// The head as stored, in a transaction that already holds the lock.
    async fn read(conn: &mut AnyConnection) -> sqlx::Result<Head> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Head {
            seq: row.try_get("seq")?,
            hash: row.try_get("hash")?,
        })
    }

    /// Inserts the entry after this head and advances the head to it (in memory only).
    pub async fn append(
        &mut self,
        conn: &mut AnyConnection,
        ev: &AuditEvent,
    ) -> sqlx::Result<AuditEntry> {
        let (entry, salts) = self.next(ev);
        sqlx::query(INSERT_ENTRY)
            .bind(entry.seq)
            .bind(&entry.at)
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(&entry.subject)
            .bind(&entry.detail)
            .bind(&entry.prev_hash)
            .bind(&entry.hash)
            .bind(salts)
            .execute(&mut *conn)
            .await?;
        Ok(entry)
    }

    /// As [`Head::append`], the entry's insert added to `script` (see [`crate::tenancy::script`]).
    pub fn append_to(&mut self, script: &mut Script, ev: &AuditEvent) -> AuditEntry {
        let (entry, salts) = self.next(ev);
        let e = &entry;
        script.push(
            INSERT_ENTRY,
            vec![
                e.seq.into(),
                (&e.at).into(),
                (&e.actor).into(),
                (&e.action).into(),
                (&e.subject).into(),
                (&e.detail).into(),
                (&e.prev_hash).into(),
                (&e.hash).into(),
                salts.into(),
            ],
        );
        entry
    }

    /// The entry after this head, and its salts (JSON); the head moves to it.
    fn next(&mut self, ev: &AuditEvent) -> (AuditEntry, String) {
        let seq = self.seq + 1;
        let at = now_rfc3339();
        let detail = ev.detail.to_string();
        let salts = new_salts();
        let d = digests([&ev.actor, &ev.subject, &detail], &salts, &BTreeMap::new())
            .expect("every salt is there");
        let hash = entry_hash_v2(&self.hash, seq, &at, ev.action, [&d[0], &d[1], &d[2]]);
        let prev_hash = std::mem::replace(&mut self.hash, hash.clone());
        self.seq = seq;
        let entry = AuditEntry {
            seq,
            at,
            actor: ev.actor.clone(),
            action: ev.action.to_string(),
            subject: ev.subject.clone(),
            detail,
            prev_hash,
            hash,
        };
        (
            entry,
            serde_json::to_string(&salts).expect("salts are JSON"),
        )
    }

    /// Writes the head back (the last entry appended).
    pub async fn store(&self, conn: &mut AnyConnection) -> sqlx::Result<()> {
        sqlx::query(STORE_HEAD)
            .bind(self.seq)
            .bind(&self.hash)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// As [`Head::store`], added to `script`.
    pub fn store_to(&self, script: &mut Script) {
        script.push(STORE_HEAD, vec![self.seq.into(), (&self.hash).into()]);
    }
}

const STORE_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";

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
/// against itself only; [`anchor::verify`] checks it against its anchor and the recorded
/// erasures as well.
pub async fn verify(pool: &AnyPool) -> sqlx::Result<ChainStatus> {
    verify_against(pool, None, None).await
}

/// The erased fields a tenant's chain may have: (sequence number, field), as the catalogue
/// recorded them (`audit_erasures`).
pub type Erasures = std::collections::HashSet<(i64, String)>;

/// Walks the whole chain in order, and, with `anchor` (read before the walk), checks that
/// the chain still holds the anchored entry: not shorter, and that entry's hash unchanged;
/// with `erasures`, that every erased field is one of them.
pub async fn verify_against(
    pool: &AnyPool,
    anchor: Option<&anchor::Anchor>,
    erasures: Option<&Erasures>,
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
        "SELECT seq, at, actor, action, subject, detail, prev_hash, hash, version, salts, erased \
         FROM audit_log ORDER BY seq",
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
        if let Some(allowed) = erasures {
            let erased = json_map(row.try_get("erased")?);
            if let Some(f) = erased
                .keys()
                .find(|f| !allowed.contains(&(seq, f.to_string())))
            {
                return Ok(ChainStatus::Broken {
                    seq,
                    reason: format!("its {f} is marked erased, but no erasure of it is recorded in the catalogue (entry edited)"),
                });
            }
        }
        let Some(computed) = computed_hash(&row, &prev_hash)? else {
            return Ok(ChainStatus::Broken {
                seq,
                reason:
                    "an erased field was written to, or a field's salt is missing (entry edited)"
                        .into(),
            });
        };
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

/// The hash an entry's row should have after `prev_hash`, by its format; `None` when a
/// format-2 entry lacks the salt of a field that is not erased.
fn computed_hash(row: &sqlx::any::AnyRow, prev_hash: &str) -> sqlx::Result<Option<String>> {
    let seq: i64 = row.try_get("seq")?;
    let at: String = row.try_get("at")?;
    let action: String = row.try_get("action")?;
    let (actor, subject, detail): (String, String, String) = (
        row.try_get("actor")?,
        row.try_get("subject")?,
        row.try_get("detail")?,
    );
    if row.try_get::<i64, _>("version")? < 2 {
        return Ok(Some(entry_hash(
            prev_hash, seq, &at, &actor, &action, &subject, &detail,
        )));
    }
    let salts = json_map(row.try_get("salts")?);
    let erased = json_map(row.try_get("erased")?);
    Ok(digests([&actor, &subject, &detail], &salts, &erased)
        .map(|d| entry_hash_v2(prev_hash, seq, &at, &action, [&d[0], &d[1], &d[2]])))
}

/// Erases `fields` (of [`PERSONAL_FIELDS`]) of format-2 entry `seq`: each reads
/// [`ERASED`] from now on, its digest is kept and its salt deleted, so the chain still
/// verifies. Call inside a transaction that holds [`lock_chain`]. Refuses a format-1 entry
/// (upgrade the chain first) and an entry whose erased fields no longer fit their hash.
pub async fn erase_fields(
    conn: &mut AnyConnection,
    seq: i64,
    fields: &[&str],
) -> anyhow::Result<()> {
    let row = sqlx::query(
        "SELECT seq, at, actor, action, subject, detail, prev_hash, hash, version, salts, erased \
         FROM audit_log WHERE seq = $1",
    )
    .bind(seq)
    .fetch_one(&mut *conn)
    .await?;
    anyhow::ensure!(
        row.try_get::<i64, _>("version")? >= 2,
        "entry {seq} is in format 1: upgrade the chain first"
    );
    let prev: String = row.try_get("prev_hash")?;
    let stored: String = row.try_get("hash")?;
    anyhow::ensure!(
        computed_hash(&row, &prev)?.as_deref() == Some(stored.as_str()),
        "entry {seq} does not fit its hash: not erased"
    );
    let mut salts = json_map(row.try_get("salts")?);
    let mut erased = json_map(row.try_get("erased")?);
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    for f in PERSONAL_FIELDS {
        values.insert(f, row.try_get(f)?);
    }
    for f in fields {
        anyhow::ensure!(PERSONAL_FIELDS.contains(f), "{f} is not a personal field");
        if let Some(salt) = salts.remove(*f) {
            erased.insert(f.to_string(), field_digest(&salt, &values[f]));
            values.insert(f, ERASED.to_string());
        }
    }
    sqlx::query("UPDATE audit_log SET actor = $1, subject = $2, detail = $3, salts = $4, erased = $5 WHERE seq = $6")
        .bind(&values["actor"])
        .bind(&values["subject"])
        .bind(&values["detail"])
        .bind(serde_json::to_string(&salts)?)
        .bind(serde_json::to_string(&erased)?)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Upgrades a chain with format-1 entries to format 2 (see the module docs), in one
/// transaction: the chain is checked as it stands (and against `anchor`, when given), every
/// entry gets salts and is hashed anew, and an `audit.upgraded` entry records how many
/// entries there were and the old head's hash. Returns the number of entries upgraded
/// (`0`: nothing to do). A chain that does not verify is left as it is, and an error says
/// where it breaks.
pub async fn upgrade_chain(
    pool: &AnyPool,
    anchor: Option<&anchor::Anchor>,
) -> anyhow::Result<usize> {
    let old: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log WHERE version < 2")
        .fetch_one(pool)
        .await?
        .get(0);
    if old == 0 {
        return Ok(0);
    }
    let mut tx = crate::tenancy::db::begin(pool).await?;
    lock_chain(&mut tx).await?;
    // Another process may have upgraded it while this one waited for the lock.
    let still: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log WHERE version < 2")
        .fetch_one(&mut *tx)
        .await?
        .get(0);
    if still == 0 {
        return Ok(0);
    }
    let rows = sqlx::query(
        "SELECT seq, at, actor, action, subject, detail, prev_hash, hash, version, salts, erased \
         FROM audit_log ORDER BY seq",
    )
    .fetch_all(&mut *tx)
    .await?;
    let (mut old_prev, mut new_prev) = (GENESIS_HASH.to_string(), GENESIS_HASH.to_string());
    for (i, row) in rows.iter().enumerate() {
        let seq: i64 = row.try_get("seq")?;
        let stored: String = row.try_get("hash")?;
        let fits = row.try_get::<String, _>("prev_hash")? == old_prev
            && computed_hash(row, &old_prev)?.as_deref() == Some(stored.as_str())
            && seq == i as i64 + 1
            && anchor.is_none_or(|a| a.seq != seq || a.hash == stored);
        anyhow::ensure!(
            fits,
            "the audit chain does not verify at entry {seq}: not upgraded"
        );
        let mut salts = json_map(row.try_get("salts")?);
        let mut erased = json_map(row.try_get("erased")?);
        if row.try_get::<i64, _>("version")? < 2 {
            // A format-1 entry has nothing erased, whatever its `erased` column says.
            salts = new_salts();
            erased.clear();
        }
        let values: [String; 3] = [
            row.try_get("actor")?,
            row.try_get("subject")?,
            row.try_get("detail")?,
        ];
        let d = digests([&values[0], &values[1], &values[2]], &salts, &erased)
            .with_context(|| format!("entry {seq} lacks a salt: not upgraded"))?;
        let at: String = row.try_get("at")?;
        let action: String = row.try_get("action")?;
        let hash = entry_hash_v2(&new_prev, seq, &at, &action, [&d[0], &d[1], &d[2]]);
        sqlx::query("UPDATE audit_log SET version = 2, salts = $1, erased = $2, prev_hash = $3, hash = $4 WHERE seq = $5")
            .bind(serde_json::to_string(&salts)?)
            .bind((!erased.is_empty()).then(|| serde_json::to_string(&erased)).transpose()?)
            .bind(&new_prev)
            .bind(&hash)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        old_prev = stored;
        new_prev = hash;
    }
    anyhow::ensure!(
        anchor.is_none_or(|a| a.seq <= rows.len() as i64),
        "the audit chain ends before its anchor: not upgraded"
    );
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    anyhow::ensure!(
        head.try_get::<i64, _>(0)? == rows.len() as i64
            && head.try_get::<String, _>(1)? == old_prev,
        "the audit chain does not end at its recorded head: not upgraded"
    );
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&new_prev)
        .execute(&mut *tx)
        .await?;
    let ev = AuditEvent::new("system@docket.invalid", "audit.upgraded", "audit_log").detail(
        // Not the old head's hash: an unsalted commitment to every earlier entry would let
        // anyone confirm a guess of a field erased later.
        serde_json::json!({ "entries": rows.len(), "format": 2 }),
    );
    append(&mut tx, &ev).await?;
    tx.commit().await?;
    Ok(rows.len())
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
