//! The purge of terminated tenants: `purge_after` (set at termination, 90 days by default:
//! `admin.retention_days`) has come, so everything of the tenant goes, whatever the reason
//! for the termination.
//!
//! A purge runs in steps, each one idempotent, its progress recorded in the catalogue's
//! tombstone (`tenant_tombstones`), so a purge that is interrupted (a crash, a store that is
//! down) is finished by the next run:
//!
//! 1. **inventory**: the tombstone is written with what there is: the database's counts and
//!    size, the audit chain's head, the blobs (count, bytes), the backups (count, bytes);
//! 2. **keys**: the tenant's wrapped data key, backup key, database password and delegation
//!    key are deleted from the catalogue. From here on nothing of the tenant can be read: its
//!    blobs, its database dump inside any backup, wherever a copy is (crypto-shredding);
//! 3. **blobs**: every object or file of its blob store;
//! 4. **database**: the SQLite file (with its directory) or the PostgreSQL database and role;
//! 5. **backups**: its backups in the object store (`docket backup push`), and every backup
//!    directory the catalogue recorded for it (`backup_runs`) that this machine can reach;
//!    copies elsewhere are unreadable after step 2;
//! 6. **tombstone**: the tenant's catalogue rows (tenant, domains, addresses, audit anchor) go and the
//!    tombstone gets its `purged_at`, in one transaction.
//!
//! Due purges run from `docket serve` every `maintenance.purge_interval_minutes` (60) and on
//! demand with `docket tenant purge-due`. The date is judged by the catalogue's
//! [`crate::clock::Clock`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::tenancy::db::{self, Backend};
use crate::tenancy::Catalog;
use crate::time_fmt::format_utc;

/// What a tenant had when its purge began, and which steps are done: the tombstone's
/// `detail`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Rows of the tenant's database by table (`messages`, `filings`, `message_attachments`,
    /// `audit_log`, `users`, `records`); empty when the database was already gone.
    pub rows: std::collections::BTreeMap<String, i64>,
    /// The database's size in bytes (SQLite file with its log; PostgreSQL
    /// `pg_database_size`).
    pub database_bytes: u64,
    /// The audit chain's last entry (sequence number, hash), so the tombstone still says
    /// what the chain was.
    pub audit_head: Option<(i64, String)>,
    /// Files (objects) in the blob store and their total size in bytes.
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Backup directories found, their files and total size in bytes.
    pub backup_dirs: Vec<String>,
    pub backup_files: u64,
    pub backup_bytes: u64,
    /// Backups in the object store (`docket backup push`): objects and bytes.
    #[serde(default)]
    pub bucket_backup_objects: u64,
    #[serde(default)]
    pub bucket_backup_bytes: u64,
    /// Backup locations the catalogue recorded that this machine could not reach: unreadable
    /// after the keys went, but not deleted by docket.
    pub backups_unreachable: Vec<String>,
    /// What could not be counted when the purge began, and why (the purge went on).
    #[serde(default)]
    pub not_counted: Vec<String>,
    /// Steps done, in order: `keys`, `blobs`, `database`, `backups`.
    pub done: Vec<String>,
}

/// A tombstone: a purged (or purging) tenant, without any of its data.
#[derive(Debug, Clone, Serialize)]
pub struct Tombstone {
    pub tenant_id: String,
    pub name: String,
    pub created_at: String,
    pub terminated_at: String,
    pub terminated_by: String,
    pub purge_after: String,
    pub purge_started_at: String,
    /// `None` while the purge is under way.
    pub purged_at: Option<String>,
    pub inventory: Inventory,
}

/// A step a purge can be stopped before, for tests of an interrupted purge.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Keys,
    Blobs,
    Database,
    Backups,
    Tombstone,
}

/// Purges every terminated tenant whose `purge_after` has come (by the catalogue's clock),
/// and finishes purges that were interrupted. Returns the tombstones of the tenants purged
/// by this run. A tenant whose purge fails is logged and retried on the next run; the others
/// go on.
pub async fn purge_due(catalog: &Catalog) -> anyhow::Result<Vec<Tombstone>> {
    let now = format_utc(catalog.clock().now());
    let due: Vec<String> = sqlx::query(
        "SELECT id FROM tenants WHERE status = 'terminated' AND purge_after IS NOT NULL \
         AND purge_after <= $1 ORDER BY purge_after",
    )
    .bind(&now)
    .fetch_all(catalog.pool())
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    let mut purged = Vec::new();
    let mut first_error = None;
    for id in due {
        match purge_tenant(catalog, &id, None).await {
            Ok(t) => purged.push(t),
            Err(e) => {
                tracing::error!(tenant = %id, error = format!("{e:#}"), "purge failed; the next run goes on with it");
                first_error.get_or_insert(e.context(format!("purging tenant {id}")));
            }
        }
    }
    match first_error {
        Some(e) if purged.is_empty() => Err(e),
        _ => Ok(purged),
    }
}

/// Purges one terminated tenant whose purge date has come (see the module docs for the
/// steps), or finishes its interrupted purge. `stop_before` ends the run before that step
/// (tests). Refuses a tenant that is not terminated or not yet due.
pub async fn purge_tenant(
    catalog: &Catalog,
    id: &str,
    stop_before: Option<Step>,
) -> anyhow::Result<Tombstone> {
    let mut stone = match tombstone(catalog.pool(), id).await? {
        Some(t) if t.purged_at.is_some() => return Ok(t),
        Some(t) => t,
        None => begin(catalog, id).await?,
    };
    catalog.evict(id).await;
    for (step, name) in [
        (Step::Keys, "keys"),
        (Step::Blobs, "blobs"),
        (Step::Database, "database"),
        (Step::Backups, "backups"),
    ] {
        if stop_before == Some(step) {
            return Ok(stone);
        }
        if stone.inventory.done.iter().any(|d| d == name) {
            continue;
        }
        run_step(catalog, id, step, &stone.inventory)
            .await
            .with_context(|| format!("purge step {name:?}"))?;
        stone.inventory.done.push(name.to_string());
        save(catalog.pool(), id, &stone.inventory).await?;
    }
    if stop_before == Some(Step::Tombstone) {
        return Ok(stone);
    }
    finish(catalog, id, &stone.inventory).await?;
    let stone = tombstone(catalog.pool(), id)
        .await?
        .context("tombstone vanished")?;
    tracing::info!(tenant = %id, name = %stone.name, inventory = ?stone.inventory, "tenant purged");
    Ok(stone)
}

async fn run_step(catalog: &Catalog, id: &str, step: Step, inv: &Inventory) -> anyhow::Result<()> {
    match step {
        Step::Keys => shred_keys(catalog, id).await,
        Step::Blobs => {
            let store = catalog.blob_store(id);
            tokio::task::spawn_blocking(move || store.remove_all()).await??;
            Ok(())
        }
        Step::Database => drop_database(catalog, id).await,
        Step::Backups => {
            if let Some(storage) = catalog.object_storage() {
                crate::backup::remote::remove_tenant(storage, id).await?;
            }
            for dir in &inv.backup_dirs {
                match std::fs::remove_dir_all(dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {dir}"))
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        Step::Tombstone => Ok(()),
    }
}

/// Writes the tombstone with the tenant's inventory (step 1). Refuses a tenant that is not
/// terminated or not due yet.
async fn begin(catalog: &Catalog, id: &str) -> anyhow::Result<Tombstone> {
    let row = sqlx::query(
        "SELECT name, created_at, status, terminated_at, terminated_by, purge_after FROM tenants WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(catalog.pool())
    .await?
    .with_context(|| format!("no tenant {id}"))?;
    let status: String = row.get("status");
    let purge_after: Option<String> = row.get("purge_after");
    let now = format_utc(catalog.clock().now());
    anyhow::ensure!(
        status == "terminated",
        "tenant {id} is {status}, not terminated"
    );
    let purge_after = purge_after.context("no purge date")?;
    anyhow::ensure!(
        purge_after <= now,
        "tenant {id} is due for purge only after {purge_after}"
    );
    let inventory = take_inventory(catalog, id).await?;
    sqlx::query(
        "INSERT INTO tenant_tombstones (tenant_id, name, created_at, terminated_at, terminated_by, \
         purge_after, purge_started_at, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(id)
    .bind(row.get::<String, _>("name"))
    .bind(row.get::<String, _>("created_at"))
    .bind(row.get::<Option<String>, _>("terminated_at").unwrap_or_default())
    .bind(row.get::<Option<String>, _>("terminated_by").unwrap_or_default())
    .bind(&purge_after)
    .bind(&now)
    .bind(serde_json::to_string(&inventory)?)
    .execute(catalog.pool())
    .await?;
    // Another process may have begun first: its inventory stands.
    tombstone(catalog.pool(), id)
        .await?
        .context("tombstone vanished")
}

async fn take_inventory(catalog: &Catalog, id: &str) -> anyhow::Result<Inventory> {
    // What cannot be counted (a damaged database, a store that is down) is noted, never a
    // reason to keep the keys: the purge goes on.
    let mut inv = Inventory::default();
    if let Err(e) = database_inventory(catalog, id, &mut inv).await {
        inv.not_counted.push(format!("database: {e:#}"));
    }
    let store = catalog.blob_store(id);
    match tokio::task::spawn_blocking(move || store.inventory()).await? {
        Ok((n, bytes)) => (inv.blobs, inv.blob_bytes) = (n, bytes),
        Err(e) => inv.not_counted.push(format!("blobs: {e}")),
    }
    if let Some(storage) = catalog.object_storage() {
        match crate::backup::remote::inventory(storage, id).await {
            Ok((n, bytes)) => (inv.bucket_backup_objects, inv.bucket_backup_bytes) = (n, bytes),
            Err(e) => inv
                .not_counted
                .push(format!("backups in the bucket: {e:#}")),
        }
    }
    for location in backup_locations(catalog, id).await? {
        match backup_root(&location, id) {
            Some(root) if root.is_dir() => {
                let (files, bytes) = tree_size(&root);
                inv.backup_files += files;
                inv.backup_bytes += bytes;
                push_unique(&mut inv.backup_dirs, root.display().to_string());
            }
            _ => push_unique(&mut inv.backups_unreachable, location),
        }
    }
    Ok(inv)
}

fn push_unique(list: &mut Vec<String>, s: String) {
    if !list.contains(&s) {
        list.push(s);
    }
}

/// Counts, size and audit head of the tenant's database, when it is there.
async fn database_inventory(
    catalog: &Catalog,
    id: &str,
    inv: &mut Inventory,
) -> anyhow::Result<()> {
    if !database_exists(catalog, id).await? {
        return Ok(());
    }
    if catalog.backend() == Backend::Sqlite {
        let path = catalog.tenant_db_path(id);
        for suffix in ["", "-wal"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            inv.database_bytes += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
    }
    let tenant = catalog.tenant(id).await?;
    let pool = &tenant.db;
    for table in [
        "messages",
        "filings",
        "message_attachments",
        "audit_log",
        "users",
        "records",
    ] {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(pool)
            .await?
            .get(0);
        inv.rows.insert(table.to_string(), n);
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(pool)
        .await?;
    inv.audit_head = Some((head.get(0), head.get(1)));
    if catalog.backend() == Backend::Postgres {
        let size: i64 = sqlx::query("SELECT pg_database_size(current_database())::BIGINT")
            .fetch_one(pool)
            .await?
            .get(0);
        inv.database_bytes = size as u64;
    }
    drop(tenant);
    catalog.evict(id).await;
    Ok(())
}

/// Whether the tenant's database is there (a restore that failed may have left none).
async fn database_exists(catalog: &Catalog, id: &str) -> anyhow::Result<bool> {
    if catalog.backend() == Backend::Sqlite {
        return Ok(catalog.tenant_db_path(id).exists());
    }
    let found = sqlx::query(
        "SELECT 1 FROM pg_database WHERE datname = (SELECT db_name FROM tenants WHERE id = $1)",
    )
    .bind(id)
    .fetch_optional(catalog.pool())
    .await?;
    Ok(found.is_some())
}

/// Where `docket backup create` put the tenant's backups, as the catalogue recorded them.
async fn backup_locations(catalog: &Catalog, id: &str) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query(
        "SELECT DISTINCT location FROM backup_runs WHERE tenant_id = $1 AND kind = 'create' ORDER BY location",
    )
    .bind(id)
    .fetch_all(catalog.pool())
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// The tenant's own directory of a recorded backup location (`DIR/<id>/<backup id>` or,
/// for a failed run, `DIR/<id>`): only a directory named after the tenant is ever removed.
fn backup_root(location: &str, id: &str) -> Option<PathBuf> {
    let path = Path::new(location);
    if !path.is_absolute() {
        return None;
    }
    [Some(path), path.parent()]
        .into_iter()
        .flatten()
        .find(|p| p.file_name().is_some_and(|n| n == id))
        .map(Path::to_path_buf)
}

/// Files under `dir` and their total size in bytes.
fn tree_size(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                let (f, b) = tree_size(&e.path());
                files += f;
                bytes += b;
            }
            Ok(_) => {
                files += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
            Err(_) => {}
        }
    }
    (files, bytes)
}

/// Step 2: the wrapped keys go (crypto-shredding). The data key's column cannot be NULL, so
/// it is left empty.
async fn shred_keys(catalog: &Catalog, id: &str) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE tenants SET dek_enc = $1, backup_key_enc = NULL, db_password_enc = NULL, \
         delegation_key_enc = NULL WHERE id = $2",
    )
    .bind(Vec::<u8>::new())
    .bind(id)
    .execute(catalog.pool())
    .await?;
    catalog.evict(id).await;
    Ok(())
}

/// Step 4: the PostgreSQL database and role, and the tenant's directory (its SQLite
/// database, local blobs).
async fn drop_database(catalog: &Catalog, id: &str) -> anyhow::Result<()> {
    let db_name: Option<String> = sqlx::query("SELECT db_name FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(catalog.pool())
        .await?
        .and_then(|r| r.get(0));
    if let (Some(name), Some(url)) = (db_name, catalog.pg_admin_url()) {
        let admin = db::open_pg(url, 1).await?;
        let dropped = db::drop_pg_tenant_db(&admin, &name).await;
        admin.close().await;
        dropped?;
    }
    match std::fs::remove_dir_all(catalog.tenant_dir(id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Step 6: the tenant's catalogue rows go and the tombstone is sealed, in one transaction.
async fn finish(catalog: &Catalog, id: &str, inv: &Inventory) -> anyhow::Result<()> {
    let mut tx = db::begin(catalog.pool()).await?;
    for sql in [
        "DELETE FROM tenant_domains WHERE tenant_id = $1",
        "DELETE FROM tenant_addresses WHERE tenant_id = $1",
        "DELETE FROM audit_anchors WHERE tenant_id = $1",
        "DELETE FROM audit_erasures WHERE tenant_id = $1",
        "DELETE FROM tenants WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    }
    sqlx::query("UPDATE tenant_tombstones SET purged_at = $1, detail = $2 WHERE tenant_id = $3")
        .bind(format_utc(catalog.clock().now()))
        .bind(serde_json::to_string(inv)?)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn save(pool: &AnyPool, id: &str, inv: &Inventory) -> anyhow::Result<()> {
    sqlx::query("UPDATE tenant_tombstones SET detail = $1 WHERE tenant_id = $2")
        .bind(serde_json::to_string(inv)?)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The tombstone of tenant `id`, if its purge has begun.
pub async fn tombstone(pool: &AnyPool, id: &str) -> anyhow::Result<Option<Tombstone>> {
    Ok(tombstones_where(pool, Some(id)).await?.pop())
}

/// Every tombstone, oldest purge first.
pub async fn tombstones(pool: &AnyPool) -> anyhow::Result<Vec<Tombstone>> {
    tombstones_where(pool, None).await
}

async fn tombstones_where(pool: &AnyPool, id: Option<&str>) -> anyhow::Result<Vec<Tombstone>> {
    let select = "SELECT tenant_id, name, created_at, terminated_at, terminated_by, purge_after, \
         purge_started_at, purged_at, detail FROM tenant_tombstones";
    let rows = match id {
        Some(id) => {
            sqlx::query(&format!("{select} WHERE tenant_id = $1"))
                .bind(id)
                .fetch_all(pool)
                .await?
        }
        None => {
            sqlx::query(&format!("{select} ORDER BY purge_started_at"))
                .fetch_all(pool)
                .await?
        }
    };
    rows.iter()
        .map(|r| {
            Ok(Tombstone {
                tenant_id: r.get("tenant_id"),
                name: r.get("name"),
                created_at: r.get("created_at"),
                terminated_at: r.get("terminated_at"),
                terminated_by: r.get("terminated_by"),
                purge_after: r.get("purge_after"),
                purge_started_at: r.get("purge_started_at"),
                purged_at: r.get("purged_at"),
                inventory: serde_json::from_str(&r.get::<String, _>("detail"))
                    .context("a tombstone's detail is not JSON")?,
            })
        })
        .collect()
}

/// One line on what a purge deleted, for the CLI and logs.
pub fn summary(inv: &Inventory) -> String {
    let rows = |t: &str| inv.rows.get(t).copied().unwrap_or(0);
    let mut s = format!(
        "{} filings of {} messages, {} audit entries, {} users; database {} bytes; {} blob files ({} bytes); {} backup files ({} bytes)",
        rows("filings"),
        rows("messages"),
        rows("audit_log"),
        rows("users"),
        inv.database_bytes,
        inv.blobs,
        inv.blob_bytes,
        inv.backup_files,
        inv.backup_bytes,
    );
    if inv.bucket_backup_objects > 0 {
        s.push_str(&format!(
            "; {} backup object(s) in the bucket ({} bytes)",
            inv.bucket_backup_objects, inv.bucket_backup_bytes
        ));
    }
    if !inv.backups_unreachable.is_empty() {
        s.push_str(&format!(
            "; {} backup location(s) not reachable here, unreadable without the keys: {}",
            inv.backups_unreachable.len(),
            inv.backups_unreachable.join(", ")
        ));
    }
    s
}

/// `docket serve`'s schedule: due purges at start-up, then every `interval`.
pub fn spawn_schedule(catalog: Arc<Catalog>, interval: Duration) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = purge_due(&catalog).await {
                tracing::error!(error = format!("{e:#}"), "purge run failed");
            }
            tokio::time::sleep(interval).await;
        }
    });
}
