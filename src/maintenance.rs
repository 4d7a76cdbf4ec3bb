//! Maintenance: the sweep that removes what failed filings leave behind — half-written
//! `.tmp-*` blob files and blobs that no row refers to (their filing never committed).
//!
//! It never races a filing: in this process it holds the tenant's blob lease exclusively,
//! which a filing holds shared from its first blob write to its commit; and it only touches
//! files older than the grace period, which a filing reusing a blob refreshes (for other
//! processes on the same data).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sqlx::Row;

use crate::storage::TMP_PREFIX;
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
        let root = catalog.blob_root(&info.id);
        let result = async {
            // Tenants with nothing old on disk are not even opened.
            if !has_old_files(root, grace).await? {
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

async fn has_old_files(root: PathBuf, grace: Duration) -> anyhow::Result<bool> {
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .context("grace period too long")?;
    let listed = tokio::task::spawn_blocking(move || old_files(&root, cutoff))
        .await
        .context("sweep task failed")??;
    Ok(!listed.is_empty())
}

enum Candidate {
    Temp(PathBuf),
    Blob(String, PathBuf),
}

/// Sweeps one tenant's blob store.
pub async fn sweep_tenant(tenant: &Arc<Tenant>, grace: Duration) -> anyhow::Result<SweepReport> {
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .context("grace period too long")?;
    let root = tenant.blobs.root().to_path_buf();
    let listed = tokio::task::spawn_blocking(move || old_files(&root, cutoff))
        .await
        .context("sweep task failed")??;
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
    for c in listed {
        let (path, is_temp) = match c {
            Candidate::Temp(p) => (p, true),
            Candidate::Blob(id, _) if referenced.contains(&id) => continue,
            Candidate::Blob(_, p) => (p, false),
        };
        // Looked at again: a filing elsewhere may have reused the blob since the listing.
        if !older_than(&path, cutoff) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) if is_temp => report.temp_files += 1,
            Ok(()) => report.orphan_blobs += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
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

fn older_than(path: &Path, cutoff: SystemTime) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t < cutoff)
}

/// Temp files and blobs (by their content-address name) modified before `cutoff`.
fn old_files(root: &Path, cutoff: SystemTime) -> anyhow::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    let shards = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    for shard in shards {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(shard.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !entry.file_type()?.is_file() || !older_than(&path, cutoff) {
                continue;
            }
            if name.starts_with(TMP_PREFIX) {
                out.push(Candidate::Temp(path));
            } else if is_blob_id(&name) {
                out.push(Candidate::Blob(name, path));
            }
        }
    }
    Ok(out)
}

fn is_blob_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
