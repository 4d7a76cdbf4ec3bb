//! Maintenance: the sweep that removes what failed filings leave behind — half-written
//! `.tmp-*` blob files and blobs that no row refers to (their filing never committed).
//!
//! It never races a filing: in this process it holds the tenant's blob lease exclusively,
//! which a filing holds shared from its first blob write to its commit; other processes'
//! filings it keeps off through the tenant's sweep epoch ([`crate::sweep_epoch`]). And it
//! only touches blobs older than the grace period, which a filing reusing a blob refreshes
//! (a local file is touched, an object is written again).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sqlx::Row;

use crate::storage::{Leftover, Store};
use crate::sweep_epoch::SweepPhase;
use crate::tenancy::{Catalog, Tenant};

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    pub tenants: usize,
    pub temp_files: usize,
    pub orphan_blobs: usize,
    /// Tenants whose sweep failed (logged).
    pub failed: usize,
}

/// Sweeps every active tenant.
pub async fn sweep(catalog: &Catalog, grace: Duration) -> anyhow::Result<SweepReport> {
    let mut total = SweepReport::default();
    for info in catalog.list_tenants().await? {
        if info.status != "active" {
            continue;
        }
        let store = catalog.blob_store(&info.id);
        let result = async {
            // Tenants with nothing old in their store are not even opened.
            if list_old(store, cutoff(grace)?).await?.is_empty() {
                return Ok(SweepReport {
                    tenants: 1,
                    ..Default::default()
                });
            }
            sweep_tenant(&catalog.tenant(&info.id).await?, grace).await
        }
        .await;
        match result {
            Ok(r) => {
                total.tenants += 1;
                total.temp_files += r.temp_files;
                total.orphan_blobs += r.orphan_blobs;
            }
            Err(e) => {
                total.failed += 1;
                tracing::error!(tenant = %info.id, error = format!("{e:#}"), "sweep failed");
            }
        }
    }
    tracing::info!(
        tenants = total.tenants,
        temp_files = total.temp_files,
        orphan_blobs = total.orphan_blobs,
        failed = total.failed,
        "sweep done"
    );
    Ok(total)
}

fn cutoff(grace: Duration) -> anyhow::Result<SystemTime> {
    SystemTime::now()
        .checked_sub(grace)
        .context("grace period too long")
}

async fn list_old(store: Store, cutoff: SystemTime) -> anyhow::Result<Vec<Leftover>> {
    let listed = tokio::task::spawn_blocking(move || store.list_old(cutoff))
        .await
        .context("sweep task failed")?
        .with_context(|| "listing blobs")?;
    Ok(listed)
}

/// Sweeps one tenant's blob store.
pub async fn sweep_tenant(tenant: &Arc<Tenant>, grace: Duration) -> anyhow::Result<SweepReport> {
    let cutoff = cutoff(grace)?;
    let store = tenant.blobs.store().clone();
    let mut report = SweepReport {
        tenants: 1,
        ..Default::default()
    };
    let listed = list_old(store.clone(), cutoff).await?;
    // From here no filing of this process is between its blob writes and its commit.
    let mut _lease = tenant.blob_lease.write().await;
    let candidates = unreferenced(tenant, listed).await?;
    if candidates.is_empty() {
        return Ok(report);
    }
    // Other processes' filings: see `sweep_epoch`. Deleted in short phases (filings
    // elsewhere wait while one is open), the references read again at the start of each.
    let mut left = candidates;
    while !left.is_empty() {
        let Some(phase) = SweepPhase::begin(tenant).await? else {
            tracing::info!(tenant = %tenant.id, "another process is sweeping this tenant");
            break;
        };
        let removed = match unreferenced(tenant, left).await {
            Ok(doomed) => remove(store.clone(), doomed, cutoff, &phase).await,
            Err(e) => Err(e),
        };
        phase.end(tenant).await?;
        let removed = removed?;
        report.temp_files += removed.temp_files;
        report.orphan_blobs += removed.blobs;
        left = removed.left;
        if !left.is_empty() {
            // Filings waiting here and elsewhere go through before the next phase.
            drop(_lease);
            tokio::time::sleep(PHASE_GAP).await;
            _lease = tenant.blob_lease.write().await;
        }
    }
    if report.temp_files + report.orphan_blobs > 0 {
        tracing::info!(tenant = %tenant.id, temp_files = report.temp_files,
            orphan_blobs = report.orphan_blobs, "swept");
    }
    Ok(report)
}

/// The leftovers no row refers to (temp files never are).
async fn unreferenced(tenant: &Tenant, listed: Vec<Leftover>) -> anyhow::Result<Vec<Leftover>> {
    if listed.is_empty() {
        return Ok(listed);
    }
    let referenced = referenced_blobs(tenant).await?;
    Ok(listed
        .into_iter()
        .filter(|c| !matches!(c, Leftover::Blob(id) if referenced.contains(id)))
        .collect())
}

/// What one phase of a sweep removed, and what it had no time for.
struct Removed {
    temp_files: usize,
    blobs: usize,
    left: Vec<Leftover>,
}

/// A half-written temp file is removed only once it is this old (the least grace period).
const MIN_TEMP_AGE: Duration = Duration::from_secs(crate::config::MIN_SWEEP_GRACE_MINUTES * 60);

/// The pause between two phases of a sweep, for the filings they kept waiting.
const PHASE_GAP: Duration = Duration::from_secs(1);

/// Deletes what is still older than `cutoff` for [`crate::sweep_epoch::DELETE_WINDOW`]
/// (at least one). Takes the open phase: deletes happen only inside one.
async fn remove(
    store: Store,
    doomed: Vec<Leftover>,
    cutoff: SystemTime,
    _open: &SweepPhase,
) -> anyhow::Result<Removed> {
    let deadline = std::time::Instant::now() + crate::sweep_epoch::DELETE_WINDOW;
    tokio::task::spawn_blocking(move || -> anyhow::Result<Removed> {
        let mut out = Removed {
            temp_files: 0,
            blobs: 0,
            left: Vec::new(),
        };
        let mut doomed = doomed.into_iter();
        // A temp file's writer never shows in the sweep epoch: only old ones go, whatever
        // the grace period asked for.
        let temp_cutoff = cutoff.min(SystemTime::now() - MIN_TEMP_AGE);
        for c in doomed.by_ref() {
            let cutoff = match c {
                Leftover::Temp(_) => temp_cutoff,
                Leftover::Blob(_) => cutoff,
            };
            // Looked at again: a filing elsewhere may have reused the blob since the listing.
            if store
                .remove_if_older(&c, cutoff)
                .with_context(|| format!("removing {c:?}"))?
            {
                match c {
                    Leftover::Temp(_) => out.temp_files += 1,
                    Leftover::Blob(_) => out.blobs += 1,
                }
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
        }
        out.left = doomed.collect();
        Ok(out)
    })
    .await
    .context("sweep task failed")?
}

async fn referenced_blobs(tenant: &Tenant) -> anyhow::Result<HashSet<String>> {
    let rows =
        sqlx::query("SELECT raw_sha256 FROM messages UNION SELECT sha256 FROM message_attachments")
            .fetch_all(&tenant.db)
            .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

/// Sweeps one tenant in the background now (after a disposition or an erasure left blobs
/// no row refers to), with the configured grace period; failures are logged.
pub fn sweep_soon(state: &crate::http::AppState, tenant: &Arc<Tenant>) {
    let grace = Duration::from_secs(state.config.maintenance.sweep_grace_minutes * 60);
    let tenant = tenant.clone();
    tokio::spawn(async move {
        if let Err(e) = sweep_tenant(&tenant, grace).await {
            tracing::warn!(tenant = %tenant.id, error = format!("{e:#}"), "sweep after deletion failed");
        }
    });
}

/// `docket serve`'s schedule: a sweep at start-up, then one every `interval`.
pub fn spawn_schedule(catalog: Arc<Catalog>, interval: Duration, grace: Duration) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = sweep(&catalog, grace).await {
                tracing::error!(error = format!("{e:#}"), "sweep failed");
            }
            tokio::time::sleep(interval).await;
        }
    });
}
