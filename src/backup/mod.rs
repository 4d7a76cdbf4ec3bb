//! Backups of a tenant, taken while docket serves, and their checks.
//!
//! Layout under the backup directory (`docket backup create --to DIR`):
//!
//! ```text
//! DIR/<tenant id>/blobs/<aa>/<sha-256>     the tenant's sealed blobs, as stored (never
//!                                          decrypted); shared by its backups: a backup
//!                                          copies only blobs not there yet
//! DIR/<tenant id>/<backup id>/manifest.json  written last: a backup without it is unfinished
//! DIR/<tenant id>/<backup id>/database.sealed  the database snapshot, sealed with the data key
//! DIR/<tenant id>/<backup id>/tenant.sealed    the catalogue entry (JSON), sealed likewise
//! DIR/<tenant id>/<backup id>/data-key.sealed  the data key, sealed with the backup key
//! ```
//!
//! The backup id is the UTC time it was taken (`20261130T140501.123456Z-…`), so names sort by
//! age. The manifest names every file with its size and SHA-256, the blobs the snapshot
//! refers to, and the snapshot's counts and audit head ([`Facts`]).
//!
//! Keys: everything in a backup is sealed (AES-256-GCM) under the tenant's data key, which
//! the backup holds sealed under the tenant's **backup key**. That key lives only in the
//! catalogue (sealed with the master key); deleting it makes every copy of the tenant's
//! backups unreadable (crypto-shredding). Opening a backup therefore needs the master key
//! and the catalogue the backup was taken from.
//!
//! Snapshots are consistent: SQLite through `VACUUM INTO` (one read transaction),
//! PostgreSQL through `pg_dump --snapshot` of a snapshot exported by a repeatable-read
//! transaction that also reads the counts and the referenced blobs. Blobs are copied after
//! the snapshot; a referenced blob is never deleted, so every one is still there.

pub mod remote;
mod restore;
mod snapshot;
mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::Row;

pub use restore::{restore, Restored};
pub use snapshot::Facts;
pub use verify::{verify, Verified};

use crate::storage::crypto::{backup_aad, Key};
use crate::storage::sha256_hex;
use crate::tenancy::db::Backend;
use crate::tenancy::{create_private_dir, Catalog, Tenant};
use crate::time_fmt::now_rfc3339;

/// The manifest's format version.
pub const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const DATABASE: &str = "database.sealed";
const TENANT: &str = "tenant.sealed";
const DATA_KEY: &str = "data-key.sealed";

/// `manifest.json`: what a backup holds (module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub tenant_id: String,
    pub backup_id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// `sqlite` (the database is an SQLite file) or `postgres` (a `pg_dump` custom-format
    /// archive).
    pub backend: String,
    pub facts: Facts,
    /// Every blob the snapshot refers to (SHA-256 of the plaintext).
    pub blobs: BTreeSet<String>,
    /// Every file, by path relative to the tenant's backup directory.
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub size: u64,
    pub sha256: String,
}

/// The catalogue entry kept in a backup (`tenant.sealed`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantEntry {
    pub id: String,
    pub name: String,
    pub status: String,
    pub created_at: String,
    pub domains: Vec<String>,
    pub addresses: Vec<String>,
}

/// What `create` did for one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub tenant_id: String,
    pub location: PathBuf,
    pub facts: Facts,
    /// Blobs copied now; the others were already in the backup directory.
    pub blobs_copied: usize,
    pub blobs_total: usize,
    /// Bytes of every file the backup names (shared blobs included).
    pub bytes: u64,
    pub seconds: f64,
}

/// Backs up tenant `id` into `to/<id>/`, recording the run in the catalogue.
pub async fn create(catalog: &Catalog, id: &str, to: &Path) -> anyhow::Result<Created> {
    // Recorded as an absolute path, so the purge finds it whatever directory it runs in.
    let to = &std::path::absolute(to)
        .with_context(|| format!("{} is not a usable path", to.display()))?;
    let started = now_rfc3339();
    let clock = std::time::Instant::now();
    let result = create_inner(catalog, id, to, clock).await;
    let location = match &result {
        Ok(c) => c.location.clone(),
        Err(_) => to.join(id),
    };
    let location = location.display().to_string();
    record_result(catalog, id, "create", &started, &location, &result).await?;
    result
}

async fn create_inner(
    catalog: &Catalog,
    id: &str,
    to: &Path,
    clock: std::time::Instant,
) -> anyhow::Result<Created> {
    let t = catalog.tenant(id).await?;
    let backup_id = new_backup_id();
    let root = to.join(id);
    remove_stale(&root, ".partial-");
    remove_stale(catalog.data_dir(), ".backup-");
    let partial = root.join(format!(".partial-{backup_id}"));
    create_private_dir(&partial)?;
    // The plain snapshot stays in the data dir, never in the backup directory.
    let scratch = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(catalog.data_dir())?;
    let made = async {
        let snap = snapshot::take(catalog, &t, &scratch.path().join("database.plain")).await?;
        seal_parts(catalog, &t, &partial, &backup_id, &snap.plain).await?;
        let (blobs_copied, blob_files) = copy_blobs(&t, &root, &snap.blobs).await?;
        let mut files = hash_files(&partial, &backup_id, &[DATABASE, TENANT, DATA_KEY])?;
        files.extend(blob_files);
        let manifest = Manifest {
            format: FORMAT,
            tenant_id: id.to_string(),
            backup_id: backup_id.clone(),
            created_at: now_rfc3339(),
            backend: backend_name(t.backend).into(),
            facts: snap.facts,
            blobs: snap.blobs,
            files,
        };
        write_durable(
            &partial.join(MANIFEST),
            &serde_json::to_vec_pretty(&manifest)?,
        )?;
        let done = root.join(&backup_id);
        fs::rename(&partial, &done)?;
        fs::File::open(&root)?.sync_all()?;
        Ok::<_, anyhow::Error>((manifest, blobs_copied, done))
    }
    .await;
    let (manifest, blobs_copied, location) = match made {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    Ok(Created {
        tenant_id: id.to_string(),
        location,
        facts: manifest.facts.clone(),
        blobs_copied,
        blobs_total: manifest.blobs.len(),
        bytes: manifest.files.values().map(|f| f.size).sum(),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// Removes what a killed backup left behind (`prefix*` entries of `dir` older than a day).
fn remove_stale(dir: &Path, prefix: &str) {
    let day = std::time::Duration::from_secs(86_400);
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > day));
        if old && e.file_name().to_string_lossy().starts_with(prefix) {
            if let Err(err) = fs::remove_dir_all(e.path()) {
                tracing::warn!(error = %err, path = %e.path().display(), "cannot remove a leftover of a backup");
            }
        }
    }
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// `20261130T140501.123456Z-1a2b3c`: sortable by age (to the microsecond), unique.
fn new_backup_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year][month][day]T[hour][minute][second].[subsecond digits:6]Z"
    );
    let stamp = now.format(&fmt).expect("a UTC time formats");
    format!("{stamp}-{}", hex::encode(rand::random::<[u8; 3]>()))
}

/// Seals the snapshot, the catalogue entry and the data key into `dir`, then removes the
/// plain snapshot.
async fn seal_parts(
    catalog: &Catalog,
    t: &Tenant,
    dir: &Path,
    backup_id: &str,
    plain: &Path,
) -> anyhow::Result<()> {
    let dek = catalog.data_key(&t.id).await?;
    let backup_key = catalog
        .backup_key(&t.id, true)
        .await?
        .context("the tenant has no catalogue entry")?;
    let info = catalog
        .tenant_info(&t.id)
        .await?
        .context("the tenant has no catalogue entry")?;
    let entry = TenantEntry {
        id: info.id,
        name: info.name,
        status: info.status,
        created_at: info.created_at,
        domains: info.domains,
        addresses: catalog.tenant_addresses(&t.id).await?,
    };
    let data_key = Key::from_bytes(&dek);
    let aad = |part| backup_aad(&t.id, backup_id, part);
    let (dir, plain) = (dir.to_path_buf(), plain.to_path_buf());
    let sealed_dek = backup_key.seal(dek.as_ref(), &aad("data-key"));
    let sealed_entry = data_key.seal(&serde_json::to_vec(&entry)?, &aad("tenant"));
    let db_aad = aad("database");
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        write_durable(&dir.join(DATA_KEY), &sealed_dek)?;
        write_durable(&dir.join(TENANT), &sealed_entry)?;
        let bytes = zeroize::Zeroizing::new(fs::read(&plain)?);
        write_durable(&dir.join(DATABASE), &data_key.seal(&bytes, &db_aad))?;
        fs::remove_file(&plain)?;
        Ok(())
    })
    .await?
}

/// Copies every blob in `ids` not yet in `root/blobs` from the tenant's store, as stored.
/// Returns how many were copied and the manifest entry of each blob.
async fn copy_blobs(
    t: &Arc<Tenant>,
    root: &Path,
    ids: &BTreeSet<String>,
) -> anyhow::Result<(usize, BTreeMap<String, FileEntry>)> {
    let known = previous_blob_entries(root);
    let (store, root, ids) = (t.blobs.store().clone(), root.to_path_buf(), ids.clone());
    tokio::task::spawn_blocking(move || {
        let mut copied = 0;
        let mut files = BTreeMap::new();
        for id in &ids {
            let rel = blob_path(id);
            let path = root.join(&rel);
            let size = fs::metadata(&path).map(|m| m.len()).ok();
            let entry = match (size, known.get(&rel)) {
                (Some(s), Some(e)) if e.size == s => e.clone(),
                (Some(_), _) => hash_file(&path)?,
                (None, _) => {
                    let sealed = store
                        .read_sealed(id)
                        .with_context(|| format!("reading blob {id} from the store"))?;
                    create_private_dir(path.parent().expect("a blob path has a shard"))?;
                    match write_new(&path, &sealed)? {
                        true => {
                            copied += 1;
                            FileEntry {
                                size: sealed.len() as u64,
                                sha256: sha256_hex(&sealed),
                            }
                        }
                        // A backup running at the same time placed it first: keep theirs.
                        false => hash_file(&path)?,
                    }
                }
            };
            files.insert(rel, entry);
        }
        Ok((copied, files))
    })
    .await?
}

/// `blobs/<aa>/<id>`.
fn blob_path(id: &str) -> String {
    format!("blobs/{}/{id}", &id[..2])
}

/// The blob entries of the newest finished backup in `root`, to skip hashing them again.
fn previous_blob_entries(root: &Path) -> BTreeMap<String, FileEntry> {
    let Some(latest) = snapshots(root).pop() else {
        return BTreeMap::new();
    };
    read_manifest(&latest)
        .map(|m| {
            m.files
                .into_iter()
                .filter(|(k, _)| k.starts_with("blobs/"))
                .collect()
        })
        .unwrap_or_default()
}

/// The backups `path` names: itself if it is one; the newest of a tenant's backup
/// directory; or the newest of each tenant's in a whole backup directory.
pub fn resolve(path: &Path) -> Vec<PathBuf> {
    if path.join(MANIFEST).is_file() {
        return vec![path.to_path_buf()];
    }
    if let Some(newest) = snapshots(path).pop() {
        return vec![newest];
    }
    let mut tenants: Vec<PathBuf> = fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    tenants.sort();
    tenants.iter().filter_map(|t| snapshots(t).pop()).collect()
}

/// The finished backups in a tenant's backup directory, oldest first.
pub fn snapshots(tenant_root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(tenant_root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(MANIFEST).is_file())
        .collect();
    out.sort();
    out
}

pub fn read_manifest(snapshot: &Path) -> anyhow::Result<Manifest> {
    let bytes = fs::read(snapshot.join(MANIFEST))
        .with_context(|| format!("no readable {MANIFEST} in {}", snapshot.display()))?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{MANIFEST} in {} is not a manifest", snapshot.display()))?;
    anyhow::ensure!(m.format == FORMAT, "unknown manifest format {}", m.format);
    Ok(m)
}

fn hash_files(
    dir: &Path,
    backup_id: &str,
    names: &[&str],
) -> anyhow::Result<BTreeMap<String, FileEntry>> {
    names
        .iter()
        .map(|n| Ok((format!("{backup_id}/{n}"), hash_file(&dir.join(n))?)))
        .collect()
}

fn hash_file(path: &Path) -> anyhow::Result<FileEntry> {
    use sha2::Digest;
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let size = std::io::copy(&mut f, &mut h)?;
    Ok(FileEntry {
        size,
        sha256: hex::encode(h.finalize()),
    })
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file: fsynced, renamed, the
/// directory fsynced.
fn write_durable(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a file has a directory")?;
    let tmp = dir.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Writes `bytes` to `path` like [`write_durable`], but never replaces a file already
/// there (a hard link, not a rename): `false` when one was.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<bool> {
    let dir = path.parent().context("a file has a directory")?;
    let tmp = dir.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
    write_durable(&tmp, bytes)?;
    let linked = fs::hard_link(&tmp, path);
    fs::remove_file(&tmp)?;
    match linked {
        Ok(()) => {
            fs::File::open(dir)?.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

/// Records how a run ended in `backup_runs`: its outcome as the detail, or its first
/// failure.
async fn record_result<T: Serialize>(
    catalog: &Catalog,
    tenant_id: &str,
    kind: &str,
    started_at: &str,
    location: &str,
    result: &anyhow::Result<T>,
) -> anyhow::Result<()> {
    let detail = match result {
        Ok(v) => serde_json::to_value(v)?,
        Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
    };
    record_run(
        catalog,
        tenant_id,
        kind,
        started_at,
        result.is_ok(),
        location,
        &detail,
    )
    .await
}

/// Records one backup, verify or restore in the catalogue's `backup_runs`.
pub async fn record_run(
    catalog: &Catalog,
    tenant_id: &str,
    kind: &str,
    started_at: &str,
    ok: bool,
    location: &str,
    detail: &serde_json::Value,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO backup_runs (id, tenant_id, kind, started_at, finished_at, ok, location, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::new_v4().simple().to_string())
    .bind(tenant_id)
    .bind(kind)
    .bind(started_at)
    .bind(now_rfc3339())
    .bind(ok as i64)
    .bind(location)
    .bind(detail.to_string())
    .execute(catalog.pool())
    .await?;
    Ok(())
}

/// A tenant's backup state, as the catalogue records it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub tenant_id: String,
    pub tenant_name: String,
    pub tenant_status: String,
    /// When the last successful backup / verify finished (RFC 3339), if ever.
    pub last_backup: Option<String>,
    pub last_verify: Option<String>,
    /// The latest run of each kind failed.
    pub backup_failing: bool,
    pub verify_failing: bool,
}

/// Every tenant's backup state.
pub async fn status(catalog: &Catalog) -> anyhow::Result<Vec<Status>> {
    let rows = sqlx::query(
        "SELECT tenant_id, kind, finished_at, ok FROM backup_runs \
         WHERE kind IN ('create', 'verify') ORDER BY finished_at",
    )
    .fetch_all(catalog.pool())
    .await?;
    let mut out = Vec::new();
    for t in catalog.list_tenants().await? {
        let mut s = Status {
            tenant_id: t.id.clone(),
            tenant_name: t.name,
            tenant_status: t.status,
            last_backup: None,
            last_verify: None,
            backup_failing: false,
            verify_failing: false,
        };
        for r in rows.iter().filter(|r| r.get::<String, _>(0) == t.id) {
            let (kind, at, ok): (String, String, i64) = (r.get(1), r.get(2), r.get(3));
            let (last, failing) = match kind.as_str() {
                "create" => (&mut s.last_backup, &mut s.backup_failing),
                _ => (&mut s.last_verify, &mut s.verify_failing),
            };
            *failing = ok == 0;
            if ok == 1 {
                *last = Some(at);
            }
        }
        out.push(s);
    }
    Ok(out)
}
