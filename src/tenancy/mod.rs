//! Tenancy: the catalogue (which tenants exist, where their data lives, their wrapped keys)
//! and, per tenant, its own database pool and blob store, opened lazily and cached.

pub mod db;
pub mod group;
pub mod script;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rand::RngCore;
use sqlx::{AnyPool, Row};
use tokio::sync::RwLock;

use crate::audit::{self, AuditEvent};
use crate::storage::crypto::{db_password_aad, dek_aad, delegation_aad, Key};
use crate::storage::TenantBlobs;
use crate::time_fmt::now_rfc3339;
use db::Backend;

/// A tenant as the catalogue knows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantInfo {
    pub id: String,
    pub name: String,
    pub status: String,
    pub created_at: String,
    pub domains: Vec<String>,
}

/// A terminated tenant's closure record.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Closure {
    pub terminated_at: String,
    pub terminated_by: String,
    /// The tenant's database, blobs and keys are deleted on or after this date.
    pub purge_after: String,
}

/// How long a process trusts the tenant status it read from the catalogue: a tenant
/// suspended or terminated elsewhere (another replica, the CLI) is refused here at most this
/// long after. One small catalogue read per tenant per period.
pub const TENANT_STATUS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// An open tenant: its own database and its own blob store.
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// `active`, `suspended` or `terminated`, as last read from the catalogue, and when:
    /// re-read at most [`TENANT_STATUS_TTL`] after (another replica, or the CLI, may have
    /// changed it).
    status: std::sync::RwLock<(String, std::time::Instant)>,
    pub db: AnyPool,
    pub backend: Backend,
    pub blobs: TenantBlobs,
    /// Serialises this process's writers to a SQLite tenant, so they queue on a fair lock
    /// instead of SQLite's sleep-and-retry busy handler (which dominates tail latency).
    write_lock: tokio::sync::Mutex<()>,
    /// Whether the database took its last write.
    pub health: Arc<db::WriteHealth>,
    /// Held shared by a filing from its first blob write to its commit, and exclusively by
    /// the sweep while it deletes unreferenced blobs: the sweep never races a filing.
    pub blob_lease: tokio::sync::RwLock<()>,
    /// Filings waiting for a shared transaction ([`group`]).
    queue: group::Queue,
}

impl Tenant {
    /// Held for the length of a write transaction on SQLite; a no-op on PostgreSQL, where
    /// the audit head's row lock orders writers (across processes too).
    pub async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.status() == "active"
    }

    /// The tenant's status as last read from the catalogue (at most [`TENANT_STATUS_TTL`]
    /// old when the tenant came from [`Catalog::tenant`]).
    pub fn status(&self) -> String {
        self.status.read().expect("status lock").0.clone()
    }

    /// A transaction on the tenant's database whose outcome feeds [`Tenant::health`].
    pub async fn begin(&self) -> sqlx::Result<db::Tx> {
        db::begin_tracked(&self.db, &self.health).await
    }

    /// [`Tenant::begin`] with SQLite's `BEGIN IMMEDIATE`: the write lock is taken at once,
    /// so every read in the transaction sees the latest commit. SQLite only.
    pub async fn begin_immediate(&self) -> sqlx::Result<db::Tx> {
        db::begin_tracked_with(&self.db, &self.health, Some("BEGIN IMMEDIATE")).await
    }

    /// Commits a small real write (the audit head, moved and moved back) unless the last write is known
    /// to have succeeded; `Err` says why the database cannot be written.
    pub async fn check_writable(&self) -> Result<(), String> {
        if self.health.seen() == db::Seen::Writable {
            return Ok(());
        }
        let probe = async {
            let _writer = self.write_guard().await;
            let mut tx = self.begin().await?;
            audit::lock_chain(&mut tx).await?;
            // A real change (SQLite skips writing a row rewritten with identical content).
            for sql in [
                "UPDATE audit_head SET seq = seq + 1 WHERE id = 1",
                "UPDATE audit_head SET seq = seq - 1 WHERE id = 1",
            ] {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            tx.commit().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(tenant = %self.id, error = %e, "the tenant's database cannot be written");
                Err(e.to_string())
            }
            Err(_) => Err("a write did not finish within 5 s".into()),
        }
    }
}

pub struct Catalog {
    pool: AnyPool,
    backend: Backend,
    kek: Key,
    data_dir: PathBuf,
    /// PostgreSQL: the catalogue URL (used to reach the server for tenant databases).
    pg_url: Option<url::Url>,
    tenant_pool_size: u32,
    /// SQLite: `PRAGMA wal_autocheckpoint` of every connection, in pages.
    wal_autocheckpoint: u32,
    storage: crate::storage::Storage,
    open: RwLock<HashMap<String, Arc<Tenant>>>,
    /// Decides when terminated tenants are due for purge ([`crate::purge`]).
    clock: crate::clock::Clock,
}

/// Whether `d` is a plausible DNS name: lowercase-insensitive LDH labels of 1..=63
/// characters, at least two of them, 253 characters at most (RFC 1035 §2.3.1).
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl Catalog {
    /// Opens (creating if needed) and migrates the catalogue.
    pub async fn open(
        data_dir: &Path,
        database: &crate::config::DatabaseConfig,
        kek: Key,
    ) -> anyhow::Result<Catalog> {
        let database_url = database.url.as_deref();
        let wal_autocheckpoint = database.sqlite_wal_autocheckpoint_pages;
        // The catalogue holds wrapped keys: keep the data dir private to the service account.
        create_private_dir(data_dir)?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve data dir {}", data_dir.display()))?;
        let (pool, backend, pg_url) = match database_url {
            None => {
                let path = data_dir.join("catalog.db");
                (
                    db::open_sqlite(&path, 4, wal_autocheckpoint).await?,
                    Backend::Sqlite,
                    None,
                )
            }
            Some(url) => {
                let parsed = url::Url::parse(url).context("DOCKET_DATABASE__URL is not a URL")?;
                db::ensure_pg_database(&parsed).await?;
                (
                    db::open_pg(&parsed, 8).await?,
                    Backend::Postgres,
                    Some(parsed),
                )
            }
        };
        db::migrate_catalog(&pool, backend).await?;
        Ok(Catalog {
            pool,
            backend,
            kek,
            data_dir,
            pg_url,
            tenant_pool_size: database.max_connections_per_tenant,
            wal_autocheckpoint,
            storage: crate::storage::Storage::Local,
            open: RwLock::new(HashMap::new()),
            clock: Default::default(),
        })
    }

    /// Keeps tenants' blobs in `storage` instead of the data dir.
    pub fn with_storage(mut self, storage: crate::storage::Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Where a tenant's sealed blobs are kept (whether or not the tenant is open).
    /// The object store, when blobs go to one (`storage.backend = "s3"`).
    pub fn object_storage(&self) -> Option<&crate::storage::object::ObjectStorage> {
        match &self.storage {
            crate::storage::Storage::Object(o) => Some(o),
            crate::storage::Storage::Local => None,
        }
    }

    pub fn blob_store(&self, id: &str) -> crate::storage::Store {
        use crate::storage::{local::LocalBlobs, Storage, Store};
        match &self.storage {
            Storage::Local => Store::Local(LocalBlobs::new(self.blob_root(id))),
            Storage::Object(o) => Store::Object(o.tenant(id)),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The clock purge dates are set and judged by.
    pub fn clock(&self) -> &crate::clock::Clock {
        &self.clock
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The tenant's directory under the data dir (`tenants/<id>`): its SQLite database and
    /// local blobs.
    pub fn tenant_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("tenants").join(id)
    }

    /// SQLite: the tenant's database file.
    pub fn tenant_db_path(&self, id: &str) -> PathBuf {
        self.tenant_dir(id).join("tenant.db")
    }

    /// Where a tenant's blobs live (whether or not the tenant is open).
    pub fn blob_root(&self, id: &str) -> PathBuf {
        self.tenant_dir(id).join("blobs")
    }

    /// Name of a tenant's PostgreSQL database and role: derived from the catalogue
    /// database's name so several deployments (and test runs) can share one server.
    fn pg_name_for(&self, id: &str) -> anyhow::Result<String> {
        let url = self.pg_url.as_ref().context("not on PostgreSQL")?;
        let cat = url.path().trim_start_matches('/');
        let name = format!("{}_t_{}", cat, &id[..12]).to_ascii_lowercase();
        if name.len() > 63 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("cannot derive a tenant database name from catalogue database {cat:?}");
        }
        Ok(name)
    }

    /// Creates a tenant: its database (and role, on PostgreSQL), its data key, its storage
    /// root, and the first entry of its audit chain. Nothing is left behind on failure.
    pub async fn create_tenant(
        &self,
        name: &str,
        domains: &[String],
        actor: &str,
    ) -> anyhow::Result<TenantInfo> {
        self.create_tenant_as(name, domains, actor, "active").await
    }

    /// As [`Catalog::create_tenant`], born `suspended`: no background task (retention,
    /// sweeps, anchoring) and no request opens it until [`Catalog::set_status`] makes it
    /// active. A restore into a new tenant replaces its database files first, which must
    /// not happen under a connection opened meanwhile.
    pub async fn create_suspended_tenant(
        &self,
        name: &str,
        actor: &str,
    ) -> anyhow::Result<TenantInfo> {
        self.create_tenant_as(name, &[], actor, "suspended").await
    }

    async fn create_tenant_as(
        &self,
        name: &str,
        domains: &[String],
        actor: &str,
        status: &str,
    ) -> anyhow::Result<TenantInfo> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            bail!("tenant name must be 1..=200 characters");
        }
        let domains: Vec<String> = domains
            .iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        for d in &domains {
            if !valid_domain(d) {
                bail!("{d:?} is not a valid domain name");
            }
            if self.tenant_id_for_domain(d).await?.is_some() {
                bail!("domain {d} already belongs to a tenant");
            }
        }
        if sqlx::query("SELECT 1 FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .is_some()
        {
            bail!("a tenant named {name:?} already exists");
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (_, dek_raw) = Key::generate();
        let dek_enc = self.kek.seal(dek_raw.as_ref(), &dek_aad(&id));
        let dir = self.tenant_dir(&id);
        create_private_dir(&dir.join("blobs"))?;

        let (db_name, pw_enc) = match self.backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => {
                let db_name = self.pg_name_for(&id)?;
                let mut pw = [0u8; 24];
                rand::rngs::OsRng.fill_bytes(&mut pw);
                let password = hex::encode(pw);
                let admin = db::open_pg(self.pg_url.as_ref().expect("pg"), 1).await?;
                if let Err(e) = db::create_pg_tenant_db(&admin, &db_name, &password).await {
                    let _ = db::drop_pg_tenant_db(&admin, &db_name).await;
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
                admin.close().await;
                let enc = self.kek.seal(password.as_bytes(), &db_password_aad(&id));
                (Some(db_name), Some(enc))
            }
        };

        let result: anyhow::Result<()> = async {
            let tenant_pool = self.connect_tenant_db(&id, db_name.as_deref(), pw_enc.as_deref()).await?;
            db::migrate_tenant(&tenant_pool, self.backend).await?;
            audit::record(
                &tenant_pool,
                &[AuditEvent::new(actor, "tenant.created", &id)
                    .detail(serde_json::json!({ "name": name, "domains": domains }))],
            )
            .await?;
            tenant_pool.close().await;
            let mut tx = crate::tenancy::db::begin(&self.pool).await?;
            sqlx::query(
                "INSERT INTO tenants (id, name, status, created_at, db_name, db_password_enc, dek_enc) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(name)
            .bind(status)
            .bind(now_rfc3339())
            .bind(db_name.clone())
            .bind(pw_enc.clone())
            .bind(dek_enc)
            .execute(&mut *tx)
            .await?;
            for d in &domains {
                sqlx::query("INSERT INTO tenant_domains (domain, tenant_id) VALUES ($1, $2)")
                    .bind(d)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            if let Some(db_name) = &db_name {
                if let Ok(admin) = db::open_pg(self.pg_url.as_ref().expect("pg"), 1).await {
                    let _ = db::drop_pg_tenant_db(&admin, db_name).await;
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        self.tenant_info(&id)
            .await?
            .context("tenant vanished after creation")
    }

    async fn connect_tenant_db(
        &self,
        id: &str,
        db_name: Option<&str>,
        pw_enc: Option<&[u8]>,
    ) -> anyhow::Result<AnyPool> {
        match self.backend {
            Backend::Sqlite => {
                db::open_sqlite(
                    &self.tenant_db_path(id),
                    self.tenant_pool_size,
                    self.wal_autocheckpoint,
                )
                .await
            }
            Backend::Postgres => {
                let url = self.pg_tenant_url(id, db_name, pw_enc)?;
                db::open_pg(&url, self.tenant_pool_size).await
            }
        }
    }

    /// The URL of a tenant's PostgreSQL database, as its own role (password included).
    fn pg_tenant_url(
        &self,
        id: &str,
        db_name: Option<&str>,
        pw_enc: Option<&[u8]>,
    ) -> anyhow::Result<url::Url> {
        let db_name = db_name.context("tenant has no database name")?;
        let pw = self
            .kek
            .open(
                pw_enc.context("tenant has no database password")?,
                &db_password_aad(id),
            )
            .context("cannot unwrap the tenant's database password (wrong master key?)")?;
        let mut url = self.pg_url.clone().context("not on PostgreSQL")?;
        url.set_username(db_name)
            .map_err(|_| anyhow::anyhow!("bad url"))?;
        url.set_password(Some(std::str::from_utf8(&pw)?))
            .map_err(|_| anyhow::anyhow!("bad url"))?;
        url.set_path(&format!("/{db_name}"));
        Ok(url)
    }

    /// PostgreSQL: the URL of tenant `id`'s own database, as its own role (for `pg_dump`).
    pub async fn tenant_database_url(&self, id: &str) -> anyhow::Result<url::Url> {
        let row = sqlx::query("SELECT db_name, db_password_enc FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .with_context(|| format!("no tenant {id}"))?;
        let (name, pw): (Option<String>, Option<Vec<u8>>) = (row.get(0), row.get(1));
        self.pg_tenant_url(id, name.as_deref(), pw.as_deref())
    }

    /// PostgreSQL: the catalogue's URL (its role may create databases).
    pub fn pg_admin_url(&self) -> Option<&url::Url> {
        self.pg_url.as_ref()
    }

    /// The tenant's data key, unwrapped (for sealing it into a backup).
    pub async fn data_key(&self, id: &str) -> anyhow::Result<zeroize::Zeroizing<[u8; 32]>> {
        let dek_enc: Vec<u8> = sqlx::query("SELECT dek_enc FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .with_context(|| format!("no tenant {id}"))?
            .get(0);
        self.kek
            .open_key(&dek_enc, &dek_aad(id))
            .map_err(|_| anyhow::anyhow!("cannot unwrap the tenant's data key (wrong master key?)"))
    }

    /// The tenant's backup key (`src/backup.rs`), created on first use. `None` when the
    /// tenant is not in the catalogue (its backups cannot be opened).
    pub async fn backup_key(&self, id: &str, create: bool) -> anyhow::Result<Option<Key>> {
        let aad = format!("docket/backup-key/v1\0{id}").into_bytes();
        let row = sqlx::query("SELECT backup_key_enc FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Option<Vec<u8>> = match (row.get::<Option<Vec<u8>>, _>(0), create) {
            (Some(s), _) => Some(s),
            (None, false) => None,
            (None, true) => {
                let (_, raw) = Key::generate();
                let sealed = self.kek.seal(raw.as_ref(), &aad);
                // Whoever stores first wins; everyone then reads the stored one.
                sqlx::query("UPDATE tenants SET backup_key_enc = $1 WHERE id = $2 AND backup_key_enc IS NULL")
                    .bind(sealed)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                return Box::pin(self.backup_key(id, false)).await;
            }
        };
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let raw = self.kek.open_key(&sealed, &aad).map_err(|_| {
            anyhow::anyhow!("cannot unwrap the tenant's backup key (wrong master key?)")
        })?;
        Ok(Some(Key::from_bytes(&raw)))
    }

    /// One address mapped to a tenant, for each of its explicit mappings.
    pub async fn tenant_addresses(&self, id: &str) -> anyhow::Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT email FROM tenant_addresses WHERE tenant_id = $1 ORDER BY email")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn tenant_id_for_domain(&self, domain: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT tenant_id FROM tenant_domains WHERE domain = $1")
            .bind(domain.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    pub async fn tenant_id_for_address(&self, email: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT tenant_id FROM tenant_addresses WHERE email = $1")
            .bind(email.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Whether `email` could ever sign in to tenant `id`: its domain is one of the tenant's
    /// (Google signs the Workspace domain into the `hd` claim) or the address is mapped to
    /// the tenant (`docket tenant map-address`), the two ways a sign-in finds its firm.
    /// `Ok(Err(why))` says, in words for whoever is adding the user, what stands in the way.
    pub async fn sign_in_obstacle(
        &self,
        id: &str,
        email: &str,
    ) -> anyhow::Result<Result<(), String>> {
        let email = email.trim().to_ascii_lowercase();
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if self.tenant_id_for_domain(domain).await?.as_deref() == Some(id)
            || self.tenant_id_for_address(&email).await?.as_deref() == Some(id)
        {
            return Ok(Ok(()));
        }
        let domains = self
            .tenant_info(id)
            .await?
            .map(|t| t.domains)
            .unwrap_or_default();
        let theirs = match domains.as_slice() {
            [] => "the firm has no domain".to_string(),
            [one] => format!("the firm's domain is {one}"),
            many => format!("the firm's domains are {}", many.join(", ")),
        };
        Ok(Err(format!(
            "{email} could never sign in to this firm: {domain} is not one of its domains \
             ({theirs}) and the address is not mapped to it. The operator can map the address \
             to the firm (`docket tenant map-address`)"
        )))
    }

    /// Adds a sign-in domain to a tenant; `false` (nothing written) when any tenant already
    /// has it. The caller validates the name ([`valid_domain`]).
    pub async fn add_domain(&self, tenant_id: &str, domain: &str) -> anyhow::Result<bool> {
        let domain = domain.trim().to_ascii_lowercase();
        if self.tenant_id_for_domain(&domain).await?.is_some() {
            return Ok(false);
        }
        let r = sqlx::query("INSERT INTO tenant_domains (domain, tenant_id) VALUES ($1, $2)")
            .bind(&domain)
            .bind(tenant_id)
            .execute(&self.pool)
            .await;
        match r {
            Ok(_) => Ok(true),
            // Taken between the check and the insert.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether an address in `domain` is mapped to a tenant other than `tenant_id` (such a
    /// person signs in to that other firm, which a domain claim must not take over).
    pub async fn domain_has_others_addresses(
        &self,
        tenant_id: &str,
        domain: &str,
    ) -> anyhow::Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM tenant_addresses WHERE email LIKE $1 AND tenant_id <> $2 LIMIT 1",
        )
        .bind(format!("%@{}", domain.trim().to_ascii_lowercase()))
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Removes a sign-in domain of a tenant; `false` when the tenant does not have it.
    pub async fn remove_domain(&self, tenant_id: &str, domain: &str) -> anyhow::Result<bool> {
        let n = sqlx::query("DELETE FROM tenant_domains WHERE domain = $1 AND tenant_id = $2")
            .bind(domain.trim().to_ascii_lowercase())
            .bind(tenant_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Removes one address mapping of a tenant; `false` when there is none.
    pub async fn unmap_address(&self, tenant_id: &str, email: &str) -> anyhow::Result<bool> {
        let n = sqlx::query("DELETE FROM tenant_addresses WHERE email = $1 AND tenant_id = $2")
            .bind(email.trim().to_ascii_lowercase())
            .bind(tenant_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Maps one address (e.g. an account without `hd`) to a tenant.
    pub async fn map_address(&self, tenant_id: &str, email: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO tenant_addresses (email, tenant_id) VALUES ($1, $2)")
            .bind(email.trim().to_ascii_lowercase())
            .bind(tenant_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn tenant_exists(&self, id: &str) -> anyhow::Result<bool> {
        if self.open.read().await.contains_key(id) {
            return Ok(true);
        }
        Ok(sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    pub async fn tenant_info(&self, id: &str) -> anyhow::Result<Option<TenantInfo>> {
        Ok(self.list_tenants().await?.into_iter().find(|t| t.id == id))
    }

    pub async fn list_tenants(&self) -> anyhow::Result<Vec<TenantInfo>> {
        let rows = sqlx::query("SELECT id, name, status, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let domains = sqlx::query("SELECT domain, tenant_id FROM tenant_domains ORDER BY domain")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get("id");
                TenantInfo {
                    domains: domains
                        .iter()
                        .filter(|d| d.get::<String, _>("tenant_id") == id)
                        .map(|d| d.get("domain"))
                        .collect(),
                    name: r.get("name"),
                    status: r.get("status"),
                    created_at: r.get("created_at"),
                    id,
                }
            })
            .collect())
    }

    /// Finds a tenant by id, exact name or one of its domains (for the operator CLI).
    pub async fn find_tenant(&self, key: &str) -> anyhow::Result<TenantInfo> {
        let all = self.list_tenants().await?;
        let key_l = key.to_ascii_lowercase();
        all.into_iter()
            .find(|t| t.id == key || t.name == key || t.domains.contains(&key_l))
            .with_context(|| format!("no tenant with id, name or domain {key:?}"))
    }

    /// The open tenant (pool + blobs), opening it on first use.
    pub async fn tenant(&self, id: &str) -> anyhow::Result<Arc<Tenant>> {
        let cached = self.open.read().await.get(id).cloned();
        if let Some(t) = cached {
            // A tenant whose status changed is opened anew (it may have been restored).
            if self.refresh_status(&t).await? {
                return Ok(t);
            }
            self.evict(id).await;
        }
        let mut open = self.open.write().await;
        if let Some(t) = open.get(id) {
            return Ok(t.clone());
        }
        let row = sqlx::query(
            "SELECT id, name, status, db_name, db_password_enc, dek_enc FROM tenants WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .with_context(|| format!("no tenant {id}"))?;
        let db_name: Option<String> = row.get("db_name");
        let pw_enc: Option<Vec<u8>> = row.get("db_password_enc");
        let status: String = row.get("status");
        let dek_enc: Vec<u8> = row.get("dek_enc");
        if dek_enc.is_empty() {
            bail!("tenant {id} is being purged: its data key is deleted (crypto-shredded)");
        }
        // A lost database is reported, never silently replaced by an empty one.
        if self.backend == Backend::Sqlite && !self.tenant_db_path(id).exists() {
            bail!(
                "the database of tenant {id} is missing ({}): restore it from a backup (docket backup restore)",
                self.tenant_db_path(id).display()
            );
        }
        let dek = self
            .kek
            .open_key(&dek_enc, &dek_aad(id))
            .context("cannot unwrap the tenant's data key (wrong master key?)")?;
        let pool = self
            .connect_tenant_db(id, db_name.as_deref(), pw_enc.as_deref())
            .await?;
        // Only an active tenant is upgraded: a suspended one may be in the middle of a
        // restore. (A tenant is reopened when its status changes.)
        let upgrade_chain = status == "active";
        if upgrade_chain {
            db::migrate_tenant(&pool, self.backend).await?;
        }
        let tenant = Arc::new(Tenant {
            id: id.to_string(),
            name: row.get("name"),
            status: std::sync::RwLock::new((status, std::time::Instant::now())),
            db: pool,
            backend: self.backend,
            blobs: TenantBlobs::new(id, self.blob_store(id), Key::from_bytes(&dek)),
            write_lock: tokio::sync::Mutex::new(()),
            health: Default::default(),
            blob_lease: Default::default(),
            queue: Default::default(),
        });
        open.insert(id.to_string(), tenant.clone());
        // Not under the lock of every open tenant: a long chain's upgrade holds up only its
        // own tenant's writers (through the chain's lock), and appends meanwhile are fine.
        drop(open);
        if upgrade_chain {
            self.upgrade_audit_chain(&tenant).await;
            // A failed rebuild costs suggestions, not the tenant: logged, tried at next open.
            match crate::suggest::terms::ensure_index(&tenant.db).await {
                Ok(true) => tracing::info!(tenant = %tenant.id, "suggestion index rebuilt"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(tenant = %tenant.id, error = %e, "suggestion index not rebuilt")
                }
            }
        }
        Ok(tenant)
    }

    /// Upgrades the tenant's audit chain to format 2 if it still has older entries
    /// ([`audit::upgrade_chain`]), then anchors it anew. A chain that does not verify is
    /// left as it is (logged; `docket audit verify` names where it breaks).
    async fn upgrade_audit_chain(&self, tenant: &Tenant) {
        let upgraded = async {
            let anchor = audit::anchor::read(&self.pool, &tenant.id).await?;
            let n = audit::upgrade_chain(&tenant.db, anchor.as_ref()).await?;
            if n > 0 {
                audit::anchor::reset(self, tenant).await?;
                tracing::info!(tenant = %tenant.id, entries = n, "audit chain upgraded to format 2");
            }
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = upgraded.await {
            tracing::error!(tenant = %tenant.id, error = format!("{e:#}"), "audit chain not upgraded");
        }
    }

    /// Stores (or with `None` removes) the tenant's service-account key for domain-wide
    /// delegation, sealed with the master key.
    pub async fn set_delegation_key(
        &self,
        tenant_id: &str,
        key_json: Option<&str>,
    ) -> anyhow::Result<()> {
        let sealed = key_json.map(|k| self.kek.seal(k.as_bytes(), &delegation_aad(tenant_id)));
        let done = sqlx::query("UPDATE tenants SET delegation_key_enc = $1 WHERE id = $2")
            .bind(sealed)
            .bind(tenant_id)
            .execute(&self.pool)
            .await?;
        anyhow::ensure!(done.rows_affected() == 1, "no tenant {tenant_id}");
        Ok(())
    }

    /// Seals a short capability (e.g. a "view this filing" link) with the master key.
    pub fn seal_link(&self, payload: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.kek.seal(payload, b"docket/link/v1"))
    }

    /// Opens a capability sealed by [`Catalog::seal_link`]; `None` if forged or altered.
    pub fn open_link(&self, token: &str) -> Option<Vec<u8>> {
        use base64::Engine;
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        self.kek.open(&sealed, b"docket/link/v1").ok()
    }

    /// Whether thread filing is configured for the tenant (no unsealing).
    pub async fn has_delegation(&self, tenant_id: &str) -> anyhow::Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM tenants WHERE id = $1 AND delegation_key_enc IS NOT NULL")
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// The tenant's delegation key, if one is configured.
    pub async fn delegation_key(&self, tenant_id: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT delegation_key_enc FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(sealed) = row.and_then(|r| r.get::<Option<Vec<u8>>, _>(0)) else {
            return Ok(None);
        };
        let plain = self
            .kek
            .open(&sealed, &delegation_aad(tenant_id))
            .context("cannot unseal the tenant's delegation key (wrong master key?)")?;
        Ok(Some(String::from_utf8(plain)?))
    }

    /// The tenants this process has open.
    pub async fn open_tenants(&self) -> Vec<Arc<Tenant>> {
        self.open.read().await.values().cloned().collect()
    }

    /// Re-reads an open tenant's status once the one it holds is [`TENANT_STATUS_TTL`] old.
    /// `false` when it changed: the caller opens the tenant anew.
    async fn refresh_status(&self, t: &Tenant) -> anyhow::Result<bool> {
        let read_at = t.status.read().expect("status lock").1;
        if read_at.elapsed() < TENANT_STATUS_TTL {
            return Ok(true);
        }
        let status: String = sqlx::query("SELECT status FROM tenants WHERE id = $1")
            .bind(&t.id)
            .fetch_optional(&self.pool)
            .await?
            .with_context(|| format!("no tenant {}", t.id))?
            .get(0);
        let changed = *t.status.read().expect("status lock").0 != status;
        *t.status.write().expect("status lock") = (status, std::time::Instant::now());
        Ok(!changed)
    }

    /// Suspends (`suspended`) or resumes (`active`) a tenant; a terminated one stays so.
    /// Every docket process reopens it within [`TENANT_STATUS_TTL`].
    pub async fn set_status(&self, id: &str, status: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            status == "active" || status == "suspended",
            "a tenant is set active or suspended"
        );
        let done =
            sqlx::query("UPDATE tenants SET status = $1 WHERE id = $2 AND status <> 'terminated'")
                .bind(status)
                .bind(id)
                .execute(&self.pool)
                .await?;
        anyhow::ensure!(
            done.rows_affected() == 1,
            "tenant {id} is terminated, or does not exist"
        );
        self.evict(id).await;
        Ok(())
    }

    /// Removes a tenant that never served (a restore that failed half-way): its database
    /// (and role), its directory and its catalogue row.
    pub async fn discard_tenant(&self, id: &str) -> anyhow::Result<()> {
        self.evict(id).await;
        let db_name: Option<String> = sqlx::query("SELECT db_name FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .and_then(|r| r.get(0));
        if let (Some(name), Some(url)) = (db_name, &self.pg_url) {
            let admin = db::open_pg(url, 1).await?;
            db::drop_pg_tenant_db(&admin, &name).await?;
            admin.close().await;
        }
        match std::fs::remove_dir_all(self.tenant_dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        for sql in [
            "DELETE FROM tenant_domains WHERE tenant_id = $1",
            "DELETE FROM tenant_addresses WHERE tenant_id = $1",
            "DELETE FROM tenants WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Forgets the open tenant so the next use re-reads its catalogue row (status changes).
    /// Requests still holding it finish on it; its pool closes with the last of them.
    pub async fn evict(&self, id: &str) {
        self.open.write().await.remove(id);
    }

    /// Terminates a tenant: no one can use it from now on, and its data is due for purge
    /// `retention_days` later. Returns the purge date. Idempotent: a second call keeps the
    /// first dates.
    pub async fn terminate(
        &self,
        id: &str,
        by: &str,
        retention_days: u64,
    ) -> anyhow::Result<Closure> {
        let now = self.clock.now();
        let purge = now + time::Duration::days(retention_days as i64);
        sqlx::query(
            "UPDATE tenants SET status = 'terminated', terminated_at = $1, terminated_by = $2, purge_after = $3 \
             WHERE id = $4 AND terminated_at IS NULL",
        )
        .bind(crate::time_fmt::format_utc(now))
        .bind(by)
        .bind(crate::time_fmt::format_utc(purge))
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.evict(id).await;
        self.closure(id)
            .await?
            .context("tenant vanished during termination")
    }

    /// When a terminated tenant was closed and when its data is purged.
    pub async fn closure(&self, id: &str) -> anyhow::Result<Option<Closure>> {
        let row = sqlx::query(
            "SELECT terminated_at, terminated_by, purge_after FROM tenants WHERE id = $1 AND terminated_at IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Closure {
            terminated_at: r.get(0),
            terminated_by: r.get(1),
            purge_after: r.get(2),
        }))
    }

    /// Anchors the audit chains of the open tenants ([`crate::audit::anchor`]), then closes
    /// every pool.
    pub async fn close(&self) {
        audit::anchor::advance_open(self, &mut HashMap::new()).await;
        for (_, t) in self.open.write().await.drain() {
            t.db.close().await;
        }
        self.pool.close().await;
    }

    /// Every tenant database name on PostgreSQL (for tooling and test clean-up).
    pub async fn pg_tenant_databases(&self) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT db_name FROM tenants WHERE db_name IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }
}

/// `data_dir/serve.lock`: `docket serve` holds it shared while it serves a SQLite data dir
/// ([`lock_serving`]); an in-place restore takes it exclusively ([`lock_for_restore`]).
fn serve_lock(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("serve.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // Whatever the umask.
    set_private_mode(&path, 0o600)?;
    Ok(f)
}

/// Held by a serving process for its lifetime (SQLite). Errors: a restore holds it.
pub fn lock_serving(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let f = serve_lock(data_dir)?;
    f.try_lock_shared().map_err(|_| {
        anyhow::anyhow!(
            "a restore is writing into {}: start docket once it has finished",
            data_dir.display()
        )
    })?;
    Ok(f)
}

/// Held by an in-place restore (SQLite). Errors: `docket serve` is running on the data dir.
pub fn lock_for_restore(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let f = serve_lock(data_dir)?;
    f.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "docket serve is running on {}: stop it before restoring a SQLite tenant in place \
             (its open connections would go on writing to the database being replaced)",
            data_dir.display()
        )
    })?;
    Ok(f)
}

/// Creates a directory (and parents) readable by the service account only: mode 0700 for
/// every directory created, whatever the umask.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_private_dir(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if !(e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir()) => {
            return Err(e).with_context(|| format!("cannot create {}", dir.display()))
        }
        Err(_) => return Ok(()),
        Ok(()) => {}
    }
    set_private_mode(dir, 0o700)
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

/// Sets `path`'s permission bits to `mode` if it exists and they differ.
pub fn set_private_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o7777 != mode => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
