//! `docket backup restore`: a checked backup written back, into an empty place only.
//!
//! - **In place** (`--tenant T`): the tenant is suspended, and its database is gone (SQLite:
//!   no `tenant.db`; PostgreSQL: no database). The snapshot becomes its database, and its
//!   blobs are copied back as stored where the store lacks them (or holds another size).
//! - **As a new tenant** (`--as NAME`): a new tenant (new id, new data key, no domains) gets
//!   the snapshot as its database; every blob and TOTP secret is sealed anew for it, and
//!   the copy's sessions, access tokens and reset requests are dropped.
//!
//! Either way the restored chain gets a `backup.restored` entry, and the run is recorded in
//! the catalogue's `backup_runs`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Serialize;
use sqlx::{Executor, Row};

use super::verify::{check, open_data_key};
use super::{read_manifest, record_result, Manifest, DATABASE};
use crate::audit::{self, AuditEvent};
use crate::storage::crypto::{backup_aad, blob_aad, Key};
use crate::storage::sha256_hex;
use crate::tenancy::db::{self, Backend};
use crate::tenancy::{Catalog, Tenant};
use crate::time_fmt::now_rfc3339;

/// A tenant restored from a backup.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub tenant_id: String,
    pub backup_id: String,
    pub facts: super::Facts,
    pub blobs_written: usize,
    pub seconds: f64,
}

/// Restores `snapshot` (a backup of tenant `tenant_id`) in place, or as a new tenant named
/// `as_name`; records the run. Errors: the backup fails its check, the tenant is not
/// suspended (in place), its database exists (in place), or a write fails (nothing is
/// left half-restored: the new database is removed).
pub async fn restore(
    catalog: &Catalog,
    snapshot: &Path,
    tenant_id: &str,
    as_name: Option<&str>,
) -> anyhow::Result<Restored> {
    let started = now_rfc3339();
    let clock = std::time::Instant::now();
    let result = restore_inner(catalog, snapshot, tenant_id, as_name, clock).await;
    let target = match &result {
        Ok(r) => r.tenant_id.as_str(),
        Err(_) => tenant_id,
    };
    let location = snapshot.display().to_string();
    record_result(catalog, target, "restore", &started, &location, &result).await?;
    result
}

async fn restore_inner(
    catalog: &Catalog,
    snapshot: &Path,
    tenant_id: &str,
    as_name: Option<&str>,
    clock: std::time::Instant,
) -> anyhow::Result<Restored> {
    let m = read_manifest(snapshot)?;
    if m.tenant_id != tenant_id {
        bail!(
            "{} is a backup of tenant {}, not of {tenant_id}",
            snapshot.display(),
            m.tenant_id
        );
    }
    check(catalog, snapshot, &m, clock)
        .await
        .context("the backup does not pass its check; nothing was restored")?;
    let key = open_data_key(catalog, snapshot, &m).await?;
    let sealed = std::fs::read(snapshot.join(DATABASE))?;
    let plain = zeroize::Zeroizing::new(
        key.open(&sealed, &backup_aad(&m.tenant_id, &m.backup_id, "database"))
            .map_err(|_| anyhow::anyhow!("{DATABASE} does not open"))?,
    );
    let root = snapshot
        .parent()
        .context("a backup lies in its tenant's directory")?;
    let (t, blobs_written) = match as_name {
        None => in_place(catalog, &m, &plain, root).await?,
        Some(name) => as_new(catalog, &m, name, &plain, root, &key).await?,
    };
    catalog.evict(&t.id).await;
    Ok(Restored {
        tenant_id: t.id.clone(),
        backup_id: m.backup_id.clone(),
        facts: m.facts.clone(),
        blobs_written,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// Into the suspended tenant's own, empty place.
async fn in_place(
    catalog: &Catalog,
    m: &Manifest,
    plain: &[u8],
    root: &Path,
) -> anyhow::Result<(Arc<Tenant>, usize)> {
    let id = &m.tenant_id;
    let info = catalog.tenant_info(id).await?.context("no such tenant")?;
    if info.status != "suspended" {
        bail!(
            "tenant {} is {}: suspend it first (docket tenant suspend --tenant {id}), so that no \
             docket process writes to it while it is restored",
            info.name,
            info.status
        );
    }
    let _lock = match catalog.backend() {
        Backend::Sqlite => Some(crate::tenancy::lock_for_restore(catalog.data_dir())?),
        Backend::Postgres => None,
    };
    catalog.evict(id).await;
    // Blobs first: extra blobs are harmless, a database without its blobs is not.
    let written = copy_blobs_back(catalog.blob_store(id), m, root).await?;
    write_database(catalog, id, &m.backend, plain, false).await?;
    match open_restored(catalog, id, m).await {
        Ok(t) => Ok((t, written)),
        Err(e) => {
            // Nothing half-restored stays: the place is empty again for a retry.
            if let Err(undo) = remove_database(catalog, id).await {
                tracing::error!(
                    error = format!("{undo:#}"),
                    "cannot remove a half-restored database"
                );
            }
            Err(e)
        }
    }
}

/// Opens the restored tenant, upgrades its database and records the restore in its chain.
async fn open_restored(catalog: &Catalog, id: &str, m: &Manifest) -> anyhow::Result<Arc<Tenant>> {
    let t = catalog.tenant(id).await?;
    db::migrate_tenant(&t.db, t.backend).await?;
    let event = AuditEvent::new("operator", "backup.restored", &t.id).detail(serde_json::json!({
        "backup": m.backup_id, "from_tenant": m.tenant_id, "taken_at": m.created_at,
    }));
    audit::record(&t.db, &[event]).await?;
    // The chain was rolled back with notice: its anchor follows it.
    audit::anchor::reset(catalog, &t).await?;
    Ok(t)
}

/// Removes tenant `id`'s database (after a failed in-place restore).
async fn remove_database(catalog: &Catalog, id: &str) -> anyhow::Result<()> {
    catalog.evict(id).await;
    match catalog.backend() {
        Backend::Sqlite => {
            let path = catalog.tenant_db_path(id);
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            Ok(())
        }
        Backend::Postgres => {
            let name = catalog
                .tenant_database_url(id)
                .await?
                .username()
                .to_string();
            let admin =
                db::open_pg(catalog.pg_admin_url().context("not on PostgreSQL")?, 1).await?;
            let dropped = db::drop_pg_tenant_database(&admin, &name).await;
            admin.close().await;
            dropped
        }
    }
}

/// Into a new tenant, every secret sealed anew for it.
async fn as_new(
    catalog: &Catalog,
    m: &Manifest,
    name: &str,
    plain: &[u8],
    root: &Path,
    old_key: &Key,
) -> anyhow::Result<(Arc<Tenant>, usize)> {
    // Born suspended: nothing else opens it while its database files are replaced.
    let info = catalog.create_suspended_tenant(name, "operator").await?;
    let made = async {
        write_database(catalog, &info.id, &m.backend, plain, true).await?;
        catalog.evict(&info.id).await;
        let t = catalog.tenant(&info.id).await?;
        db::migrate_tenant(&t.db, t.backend).await?;
        let written = reseal_blobs(&t, m, root, old_key).await?;
        reseal_secrets(&t, &m.tenant_id, old_key).await?;
        for table in ["sessions", "access_tokens", "reset_requests"] {
            t.db.execute(format!("DELETE FROM {table}").as_str())
                .await?;
        }
        // The copy's chain keeps the erasures recorded for the original.
        audit::anchor::copy_erasures(catalog.pool(), &m.tenant_id, &info.id).await?;
        open_restored(catalog, &info.id, m).await?;
        catalog.set_status(&info.id, "active").await?;
        let t = catalog.tenant(&info.id).await?;
        Ok::<_, anyhow::Error>((t, written))
    }
    .await;
    if made.is_err() {
        if let Err(e) = catalog.discard_tenant(&info.id).await {
            tracing::error!(error = format!("{e:#}"), tenant = %info.id, "cannot remove a half-restored tenant");
        }
    }
    made
}

/// Writes the snapshot as tenant `id`'s database. `replace`: the (new, empty) database
/// there is replaced; otherwise there must be none.
async fn write_database(
    catalog: &Catalog,
    id: &str,
    backend: &str,
    plain: &[u8],
    replace: bool,
) -> anyhow::Result<()> {
    match (catalog.backend(), backend) {
        (Backend::Sqlite, "sqlite") => write_sqlite(&catalog.tenant_db_path(id), plain, replace),
        (Backend::Postgres, "postgres") => write_pg(catalog, id, plain, replace).await,
        (_, other) => bail!("a {other} backup cannot be restored into this instance's database"),
    }
}

fn write_sqlite(path: &Path, plain: &[u8], replace: bool) -> anyhow::Result<()> {
    let side = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    if replace {
        for p in [path.to_path_buf(), side("-wal"), side("-shm")] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    if path.exists() || side("-wal").exists() {
        bail!(
            "{} exists: restore writes only into an empty place (move it, with its -wal and -shm files, aside first)",
            path.display()
        );
    }
    let dir = path.parent().context("a database has a directory")?;
    crate::tenancy::create_private_dir(dir)?;
    let tmp = side(".restoring");
    let _ = std::fs::remove_file(&tmp);
    super::write_durable(&tmp, plain)?;
    // A hard link never replaces: a database that appeared meanwhile is kept, and we stop.
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    linked.with_context(|| format!("{} appeared while restoring", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

async fn write_pg(catalog: &Catalog, id: &str, plain: &[u8], replace: bool) -> anyhow::Result<()> {
    let url = catalog.tenant_database_url(id).await?;
    let name = url.username().to_string();
    let admin_url = catalog.pg_admin_url().context("not on PostgreSQL")?;
    let admin = db::open_pg(admin_url, 1).await?;
    let result = async {
        let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&admin)
            .await?
            .is_some();
        match (exists, replace) {
            (true, false) => bail!(
                "the tenant's database {name} exists: restore writes only into an empty place (drop or rename it first)"
            ),
            (true, true) => db::drop_pg_tenant_database(&admin, &name).await?,
            (false, _) => {}
        }
        let password = url.password().context("the tenant's URL has its password")?;
        db::create_pg_tenant_db_for_role(&admin, &name, password).await?;
        let restored = async {
            let file = tempfile::NamedTempFile::new()?;
            std::fs::write(file.path(), plain)?;
            let path = file.path().to_str().context("temp path")?.to_string();
            super::snapshot::run_pg_tool(
                "pg_restore",
                &url,
                &["--no-owner", "--no-privileges", "--exit-on-error", &path],
            )
            .await
        }
        .await;
        if restored.is_err() {
            if let Err(e) = db::drop_pg_tenant_database(&admin, &name).await {
                tracing::error!(error = format!("{e:#}"), database = %name, "cannot drop a half-restored database");
            }
        }
        restored
    }
    .await;
    admin.close().await;
    result
}

/// Copies the backup's sealed blobs into the tenant's store where it lacks them (same
/// tenant: same key, same binding). Returns how many were written.
async fn copy_blobs_back(
    store: crate::storage::Store,
    m: &Manifest,
    root: &Path,
) -> anyhow::Result<usize> {
    let (ids, root) = (m.blobs.clone(), root.to_path_buf());
    if let Some(dir) = store.local_root() {
        crate::tenancy::create_private_dir(dir)?;
    }
    tokio::task::spawn_blocking(move || {
        let mut written = 0;
        for id in &ids {
            let sealed = std::fs::read(root.join(super::blob_path(id)))?;
            if store.sealed_len(id)? == Some(sealed.len() as u64) {
                continue;
            }
            store.write_sealed(id, sealed.len() as u64, &mut |w| w.write_all(&sealed))?;
            written += 1;
        }
        Ok(written)
    })
    .await?
}

/// Opens each blob with the backup's key and stores it for the new tenant.
async fn reseal_blobs(t: &Tenant, m: &Manifest, root: &Path, old: &Key) -> anyhow::Result<usize> {
    let (blobs, ids, root, old) = (
        t.blobs.clone(),
        m.blobs.clone(),
        root.to_path_buf(),
        old.clone(),
    );
    let from = m.tenant_id.clone();
    tokio::task::spawn_blocking(move || {
        for id in &ids {
            let sealed = std::fs::read(root.join(super::blob_path(id)))?;
            let plain = old
                .open(&sealed, &blob_aad(&from, id))
                .map_err(|_| anyhow::anyhow!("blob {id} does not decrypt"))?;
            anyhow::ensure!(sha256_hex(&plain) == *id, "blob {id} is not its content");
            blobs.put(&plain)?;
        }
        Ok(ids.len())
    })
    .await?
}

/// TOTP secrets sealed for the old tenant, sealed again for the new one.
async fn reseal_secrets(t: &Tenant, from: &str, old: &Key) -> anyhow::Result<()> {
    let rows = sqlx::query(
        "SELECT user_id, totp_secret_enc, totp_pending_enc FROM local_accounts \
         WHERE totp_secret_enc IS NOT NULL OR totp_pending_enc IS NOT NULL",
    )
    .fetch_all(&t.db)
    .await?;
    for r in rows {
        let user: String = r.get(0);
        let purpose = crate::accounts::totp::purpose(&user);
        let reseal = |sealed: Option<Vec<u8>>| -> anyhow::Result<Option<Vec<u8>>> {
            sealed
                .map(|s| {
                    let plain = old
                        .open(&s, &crate::storage::secret_aad(from, &purpose))
                        .map_err(|_| {
                            anyhow::anyhow!("a TOTP secret of user {user} does not open")
                        })?;
                    Ok(t.blobs.seal_secret(&purpose, &plain))
                })
                .transpose()
        };
        let (active, pending) = (reseal(r.get(1))?, reseal(r.get(2))?);
        sqlx::query("UPDATE local_accounts SET totp_secret_enc = $1, totp_pending_enc = $2 WHERE user_id = $3")
            .bind(active)
            .bind(pending)
            .bind(&user)
            .execute(&t.db)
            .await?;
    }
    Ok(())
}
