//! `docket backup verify`: a backup restored into a scratch place and checked whole.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

use super::snapshot::{self, Scratch};
use super::{hash_file, read_manifest, record_result, Manifest, DATABASE, DATA_KEY, TENANT};
use crate::audit::{self, ChainStatus};
use crate::storage::crypto::{backup_aad, blob_aad, Key};
use crate::storage::sha256_hex;
use crate::tenancy::Catalog;
use crate::time_fmt::now_rfc3339;

/// A backup that passed every check.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub location: PathBuf,
    pub tenant_id: String,
    pub backup_id: String,
    pub facts: super::Facts,
    pub files: usize,
    pub seconds: f64,
}

/// Checks one backup (a `DIR/<tenant>/<backup id>` directory) and records the result in the
/// catalogue. `Err` names the first check that failed:
/// 1. every file the manifest names is there, with its size and SHA-256;
/// 2. the data key opens with the tenant's backup key, and the catalogue entry with it;
/// 3. the database opens and restores into a scratch database that passes its integrity
///    check;
/// 4. its counts and audit head equal the manifest's, and the audit chain verifies;
/// 5. the blobs it refers to are those of the manifest, each decrypting to its address.
pub async fn verify(catalog: &Catalog, snapshot: &Path) -> anyhow::Result<Verified> {
    let started = now_rfc3339();
    let clock = std::time::Instant::now();
    let manifest = read_manifest(snapshot);
    let result = match &manifest {
        Ok(m) => check(catalog, snapshot, m, clock).await,
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    let tenant = match &manifest {
        Ok(m) => m.tenant_id.clone(),
        Err(_) => tenant_of(snapshot),
    };
    let location = snapshot.display().to_string();
    record_result(catalog, &tenant, "verify", &started, &location, &result).await?;
    result
}

/// The tenant a backup directory belongs to, by its place (`DIR/<tenant>/<backup id>`).
fn tenant_of(snapshot: &Path) -> String {
    snapshot
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) async fn check(
    catalog: &Catalog,
    snapshot: &Path,
    m: &Manifest,
    clock: std::time::Instant,
) -> anyhow::Result<Verified> {
    let root = snapshot
        .parent()
        .context("a backup lies in its tenant's directory")?;
    check_files(root, m).await?;
    let data_key = open_data_key(catalog, snapshot, m).await?;
    let aad = |part| backup_aad(&m.tenant_id, &m.backup_id, part);
    let entry = std::fs::read(snapshot.join(TENANT))?;
    let entry = data_key
        .open(&entry, &aad("tenant"))
        .map_err(|_| anyhow::anyhow!("{TENANT} does not open with the backup's data key"))?;
    serde_json::from_slice::<super::TenantEntry>(&entry)
        .with_context(|| format!("{TENANT} is not a catalogue entry"))?;
    let sealed = std::fs::read(snapshot.join(DATABASE))?;
    let plain = zeroize::Zeroizing::new(
        data_key
            .open(&sealed, &aad("database"))
            .map_err(|_| anyhow::anyhow!("{DATABASE} does not open with the backup's data key"))?,
    );
    let scratch = Scratch::load(catalog, &m.backend, &plain)
        .await
        .context("the database does not restore")?;
    let checked = check_database(&scratch, m).await;
    scratch.remove().await;
    checked?;
    check_blobs(root, m, &data_key).await?;
    Ok(Verified {
        location: snapshot.to_path_buf(),
        tenant_id: m.tenant_id.clone(),
        backup_id: m.backup_id.clone(),
        facts: m.facts.clone(),
        files: m.files.len(),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

async fn check_files(root: &Path, m: &Manifest) -> anyhow::Result<()> {
    let (root, files) = (root.to_path_buf(), m.files.clone());
    tokio::task::spawn_blocking(move || {
        for (rel, want) in &files {
            let path = root.join(rel);
            if !path.is_file() {
                bail!("file {rel} is missing");
            }
            let got = hash_file(&path)?;
            if got.size != want.size {
                bail!(
                    "file {rel} is {} bytes, the manifest says {}",
                    got.size,
                    want.size
                );
            }
            if got.sha256 != want.sha256 {
                bail!("file {rel} does not match its SHA-256 in the manifest (altered or damaged)");
            }
        }
        Ok(())
    })
    .await?
}

pub(super) async fn open_data_key(
    catalog: &Catalog,
    snapshot: &Path,
    m: &Manifest,
) -> anyhow::Result<Key> {
    let backup_key = catalog.backup_key(&m.tenant_id, false).await?.with_context(|| {
        format!(
            "the catalogue holds no backup key for tenant {} (purged, or a backup of another catalogue)",
            m.tenant_id
        )
    })?;
    let sealed = std::fs::read(snapshot.join(DATA_KEY))?;
    let raw = backup_key
        .open_key(&sealed, &backup_aad(&m.tenant_id, &m.backup_id, "data-key"))
        .map_err(|_| anyhow::anyhow!("{DATA_KEY} does not open with the tenant's backup key"))?;
    Ok(Key::from_bytes(&raw))
}

async fn check_database(scratch: &Scratch, m: &Manifest) -> anyhow::Result<()> {
    scratch.integrity().await?;
    let mut conn = scratch.pool.acquire().await?;
    let (facts, blobs) = snapshot::facts(&mut conn).await?;
    drop(conn);
    if facts != m.facts {
        bail!(
            "the database holds other counts than the manifest: {} (manifest: {})",
            serde_json::to_string(&facts)?,
            serde_json::to_string(&m.facts)?
        );
    }
    match audit::verify(&scratch.pool).await? {
        ChainStatus::Intact { .. } => {}
        ChainStatus::Broken { seq, reason } => bail!("audit chain broken at entry {seq}: {reason}"),
    }
    if blobs != m.blobs {
        bail!("the database refers to other blobs than the manifest lists");
    }
    Ok(())
}

async fn check_blobs(root: &Path, m: &Manifest, key: &Key) -> anyhow::Result<()> {
    let (root, m, key) = (root.to_path_buf(), m.clone(), key.clone());
    tokio::task::spawn_blocking(move || {
        for id in &m.blobs {
            let rel = super::blob_path(id);
            if !m.files.contains_key(&rel) {
                bail!("blob {id} is not in the manifest's files");
            }
            let sealed =
                std::fs::read(root.join(&rel)).with_context(|| format!("blob {id} is missing"))?;
            let plain = key
                .open(&sealed, &blob_aad(&m.tenant_id, id))
                .map_err(|_| anyhow::anyhow!("blob {id} does not decrypt"))?;
            if sha256_hex(&plain) != *id {
                bail!("blob {id} decrypts to other content than its address");
            }
        }
        Ok(())
    })
    .await?
}
