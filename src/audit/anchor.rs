//! Audit anchoring: each tenant's chain head (sequence number and hash) copied into the
//! catalogue (`audit_anchors`), outside the tenant's own database, so that what the chain
//! cannot show about itself is caught: the chain truncated together with its head, the
//! database rolled back to an old copy without `docket backup restore`, or the chain
//! rewritten with fresh hashes.
//!
//! The anchor follows the chain and never leads it: it is taken from the tenant's committed
//! head, after the commit, and only ever moves forward (a write with a lower sequence number
//! is ignored, whichever process makes it), only onto a chain that still holds the entry
//! anchored before, and only while the tenant is active (so a
//! suspended tenant being restored is left alone). `docket serve` anchors the tenants open
//! in it every [`INTERVAL`]; every process anchors its open tenants when it closes its
//! catalogue (so each CLI command anchors what it wrote); `docket backup restore` resets
//! the anchor to the restored chain, with notice (`backup_runs`, `backup.restored`).
//!
//! Entries appended after the last anchoring (at most about [`INTERVAL`] in a running
//! server) are covered by the chain alone until they are anchored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, Row};

use super::ChainStatus;
use crate::tenancy::{Catalog, Tenant};
use crate::time_fmt::now_rfc3339;

/// How often `docket serve` anchors the tenants open in it.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// A tenant's anchored chain head.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
    /// When it was anchored (RFC 3339 UTC).
    pub anchored_at: String,
}

/// The tenant's anchor, if it has one.
pub async fn read(catalog: &AnyPool, tenant_id: &str) -> sqlx::Result<Option<Anchor>> {
    let row = sqlx::query("SELECT seq, hash, anchored_at FROM audit_anchors WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(catalog)
        .await?;
    row.map(|r| {
        Ok(Anchor {
            seq: r.try_get("seq")?,
            hash: r.try_get("hash")?,
            anchored_at: r.try_get("anchored_at")?,
        })
    })
    .transpose()
}

/// The tenant's committed chain head: (sequence number, hash).
async fn head(tenant: &Tenant) -> sqlx::Result<(i64, String)> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&tenant.db)
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Anchors the tenant's current head, if it is further than its anchor, the chain still
/// holds the anchored entry (an anchor never moves onto a chain that was cut or rewritten
/// behind it) and the tenant is active. Returns the head read.
pub async fn advance(catalog: &Catalog, tenant: &Tenant) -> sqlx::Result<(i64, String)> {
    let (seq, hash) = head(tenant).await?;
    let current = read(catalog.pool(), &tenant.id).await?;
    if let Some(a) = &current {
        if a.seq >= seq {
            return Ok((seq, hash));
        }
        let held: Option<String> = sqlx::query("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(a.seq)
            .fetch_optional(&tenant.db)
            .await?
            .map(|r| r.get(0));
        if held.as_deref() != Some(a.hash.as_str()) {
            tracing::error!(tenant = %tenant.id, anchored = a.seq, "the audit chain no longer holds its anchored entry: not anchored further (docket audit verify)");
            return Ok((seq, hash));
        }
    }
    // Compare and set: only over the anchor just checked (another process may have moved it).
    let (was_seq, was_hash) = current
        .map(|a| (a.seq, a.hash))
        .unwrap_or((-1, String::new()));
    sqlx::query(
        "INSERT INTO audit_anchors (tenant_id, seq, hash, anchored_at) \
         SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $5 AND status = 'active') \
         ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
         anchored_at = excluded.anchored_at \
         WHERE audit_anchors.seq = $6 AND audit_anchors.hash = $7 AND audit_anchors.seq < excluded.seq",
    )
    .bind(&tenant.id)
    .bind(seq)
    .bind(&hash)
    .bind(now_rfc3339())
    .bind(&tenant.id)
    .bind(was_seq)
    .bind(&was_hash)
    .execute(catalog.pool())
    .await?;
    Ok((seq, hash))
}

/// Sets the anchor to the tenant's current head, wherever it was: after a restore (the
/// chain was rolled back with notice) or a new tenant's first entry.
pub async fn reset(catalog: &Catalog, tenant: &Tenant) -> sqlx::Result<()> {
    let (seq, hash) = head(tenant).await?;
    sqlx::query(
        "INSERT INTO audit_anchors (tenant_id, seq, hash, anchored_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
         anchored_at = excluded.anchored_at",
    )
    .bind(&tenant.id)
    .bind(seq)
    .bind(&hash)
    .bind(now_rfc3339())
    .execute(catalog.pool())
    .await?;
    Ok(())
}

/// Verifies the tenant's chain against itself and against its anchor (read first); when it
/// is intact, anchors its head. Returns the status and the anchor it was checked against
/// (`None`: not anchored before, anchored now).
pub async fn verify(
    catalog: &Catalog,
    tenant: &Tenant,
) -> sqlx::Result<(ChainStatus, Option<Anchor>)> {
    let anchor = read(catalog.pool(), &tenant.id).await?;
    let erasures = erasures(catalog.pool(), &tenant.id).await?;
    let status = super::verify_against(&tenant.db, anchor.as_ref(), Some(&erasures)).await?;
    if matches!(status, ChainStatus::Intact { .. }) {
        advance(catalog, tenant).await?;
    }
    Ok((status, anchor))
}

/// The erased audit fields the catalogue recorded for a tenant.
pub async fn erasures(catalog: &AnyPool, tenant_id: &str) -> sqlx::Result<super::Erasures> {
    let rows = sqlx::query("SELECT seq, field FROM audit_erasures WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_all(catalog)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Records, before the tenant's transaction that erases them commits, the audit fields an
/// erasure is about to erase (an extra row for an erasure that then fails is harmless).
pub async fn record_erasures(
    catalog: &AnyPool,
    tenant_id: &str,
    fields: &[(i64, &str)],
) -> sqlx::Result<()> {
    let at = now_rfc3339();
    for (seq, field) in fields {
        sqlx::query(
            "INSERT INTO audit_erasures (tenant_id, seq, field, erased_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, seq, field) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(seq)
        .bind(field)
        .bind(&at)
        .execute(catalog)
        .await?;
    }
    Ok(())
}

/// Copies a tenant's recorded erasures to another (a restore as a new tenant).
pub async fn copy_erasures(catalog: &AnyPool, from: &str, to: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_erasures (tenant_id, seq, field, erased_at) \
         SELECT $1, seq, field, erased_at FROM audit_erasures WHERE tenant_id = $2 \
         ON CONFLICT (tenant_id, seq, field) DO NOTHING",
    )
    .bind(to)
    .bind(from)
    .execute(catalog)
    .await?;
    Ok(())
}

/// Anchors every active tenant open in this process (best effort: a failure is logged).
/// `last` remembers what was anchored, so an unchanged head costs one small read.
pub async fn advance_open(catalog: &Catalog, last: &mut HashMap<String, i64>) {
    for t in catalog.open_tenants().await {
        if !t.is_active() {
            continue;
        }
        let seen = last.get(&t.id).copied();
        match head(&t).await {
            Ok((seq, _)) if Some(seq) == seen => {}
            Ok(_) => match advance(catalog, &t).await {
                Ok((seq, _)) => drop(last.insert(t.id.clone(), seq)),
                Err(e) => {
                    tracing::warn!(tenant = %t.id, error = %e, "anchoring the audit chain failed")
                }
            },
            Err(e) => tracing::warn!(tenant = %t.id, error = %e, "reading the audit head failed"),
        }
    }
}

/// `docket serve`'s anchoring: the open tenants every [`INTERVAL`].
pub fn spawn_schedule(catalog: Arc<Catalog>) {
    tokio::spawn(async move {
        let mut last = HashMap::new();
        loop {
            tokio::time::sleep(INTERVAL).await;
            advance_open(&catalog, &mut last).await;
        }
    });
}
