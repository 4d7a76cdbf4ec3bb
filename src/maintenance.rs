//! Maintenance: the sweep that removes what failed filings leave behind — half-written
//! `.tmp-*` blob files and blobs that no row refers to (their filing never committed).
//!
//! It never races a filing: in this process it holds the tenant's blob lease exclusively,
//! which a filing holds shared from its first blob write to its commit; and it only touches
//! blobs older than the grace period, which a filing reusing a blob refreshes (a local file
//! is touched, an object is written again) for other processes on the same data.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sqlx::Row;

use crate::storage::{Leftover, Store};
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
    let listed = list_old(store.clone(), cutoff).await?;
    let mut report = SweepReport {
        tenants: 1,
        ..Default::default()
    };
    if listed.is_empty() {
        return Ok(report);
    }
    // From here no filing of this process is between its blob writes and its commit.
    let _lease = tenant.blob_lease.write().await;
    let referenced = referenced_blobs(tenant).await?;
    let doomed: Vec<Leftover> = listed
        .into_iter()
        .filter(|c| !matches!(c, Leftover::Blob(id) if referenced.contains(id)))
        .collect();
    let removed = tokio::task::spawn_blocking(move || -> anyhow::Result<(usize, usize)> {
        let (mut temp, mut blobs) = (0, 0);
        for c in &doomed {
            // Looked at again: a filing elsewhere may have reused the blob since the listing.
            if store
                .remove_if_older(c, cutoff)
                .with_context(|| format!("removing {c:?}"))?
            {
                match c {
                    Leftover::Temp(_) => temp += 1,
                    Leftover::Blob(_) => blobs += 1,
                }
            }
        }
        Ok((temp, blobs))
    })
    .await
    .context("sweep task failed")??;
    (report.temp_files, report.orphan_blobs) = removed;
    if report.temp_files + report.orphan_blobs > 0 {
        tracing::info!(tenant = %tenant.id, temp_files = report.temp_files,
            orphan_blobs = report.orphan_blobs, "swept");
    }
    Ok(report)
}

async fn referenced_blobs(tenant: &Tenant) -> anyhow::Result<HashSet<String>> {
    let rows =
        sqlx::query("SELECT raw_sha256 FROM messages UNION SELECT sha256 FROM message_attachments")
            .fetch_all(&tenant.db)
            .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
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
