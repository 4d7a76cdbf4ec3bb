//! Opening and migrating databases. One code path for both backends through sqlx's `Any`
//! driver (queries use `$n` placeholders, which SQLite accepts too); only DDL differs, and it
//! lives in `migrations/<catalog|tenant>/<sqlite|postgres>/`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use sqlx::any::{AnyPoolOptions, AnyTransactionManager};
use sqlx::migrate::Migrator;
use sqlx::pool::{PoolConnection, PoolConnectionMetadata};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, TransactionManager};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

static CATALOG_SQLITE: Migrator = sqlx::migrate!("migrations/catalog/sqlite");
static CATALOG_PG: Migrator = sqlx::migrate!("migrations/catalog/postgres");
static TENANT_SQLITE: Migrator = sqlx::migrate!("migrations/tenant/sqlite");
static TENANT_PG: Migrator = sqlx::migrate!("migrations/tenant/postgres");

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

/// A SQLite file with WAL, `synchronous=FULL` (a commit survives power loss), foreign keys
/// and a generous busy timeout (writers queue on the file lock rather than fail);
/// `wal_autocheckpoint_pages` is SQLite's `PRAGMA wal_autocheckpoint` (pages of 4 KiB).
pub async fn open_sqlite(
    path: &Path,
    max_connections: u32,
    wal_autocheckpoint_pages: u32,
) -> anyhow::Result<AnyPool> {
    install_drivers();
    if let Some(dir) = path.parent() {
        super::create_private_dir(dir)?;
    }
    // A database file docket creates gets its mode from docket, not from the umask; one it
    // finds keeps the operator's mode, and if that is read-only the operator is told.
    let created = Arc::new(std::sync::atomic::AtomicBool::new(!path.exists()));
    if !created.load(Ordering::Relaxed) && !is_writable(path) {
        tracing::error!(
            path = %path.display(),
            "the database file is read-only: nothing can be filed into it until it is made \
             writable again (chmod 600); docket picks the change up without a restart"
        );
    }
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db_path = path.to_path_buf();
    AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(30))
        // No ping on every acquire: it is a round trip to the connection's worker thread,
        // and an embedded database has no far end to hang up. A worker thread only dies on
        // a panic inside sqlx; the other ways a connection goes bad leave a transaction open,
        // and `sqlite_connection_is_clean` closes those on release.
        .test_before_acquire(false)
        .after_release(sqlite_connection_is_clean)
        .after_connect(move |conn, _| {
            let (db_path, created) = (db_path.clone(), created.clone());
            Box::pin(async move {
                fix_sqlite_modes(&db_path, &created);
                let autocheckpoint =
                    format!("PRAGMA wal_autocheckpoint = {wal_autocheckpoint_pages}");
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA synchronous = FULL",
                    "PRAGMA foreign_keys = ON",
                    "PRAGMA busy_timeout = 30000",
                    &autocheckpoint,
                ] {
                    conn.execute(pragma).await?;
                }
                fix_sqlite_modes(&db_path, &created);
                Ok(())
            })
        })
        .connect(&url)
        .await
        .with_context(|| format!("cannot open SQLite database {}", path.display()))
}

/// Whether this process can open `path` for writing (what SQLite will try).
pub fn is_writable(path: &Path) -> bool {
    std::fs::OpenOptions::new().write(true).open(path).is_ok()
}

/// Mode 0600 for the database when docket created it, and always for its `-wal` and `-shm`:
/// SQLite creates those with the database's mode of the moment, so a database once found
/// read-only would otherwise leave them read-only after it is fixed, across restarts.
fn fix_sqlite_modes(db: &Path, created: &std::sync::atomic::AtomicBool) {
    let mut files = vec![
        PathBuf::from(format!("{}-wal", db.display())),
        PathBuf::from(format!("{}-shm", db.display())),
    ];
    if db.exists() && created.swap(false, Ordering::Relaxed) {
        files.push(db.to_path_buf());
    }
    for f in files {
        if let Err(e) = super::set_private_mode(&f, 0o600) {
            tracing::warn!(path = %f.display(), error = %e, "cannot set the file's mode to 0600");
        }
    }
}

pub async fn open_pg(url: &url::Url, max_connections: u32) -> anyhow::Result<AnyPool> {
    install_drivers();
    AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(30))
        .after_release(pg_connection_is_clean)
        // No NOTICE messages: sqlx logs each one, and the only ones docket's statements
        // raise are noise, such as the migrator's `CREATE TABLE IF NOT EXISTS
        // _sqlx_migrations` answering "already exists, skipping" once per database at every
        // start. Warnings and errors still come through.
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET client_min_messages = warning").await?;
                Ok(())
            })
        })
        .connect(url.as_str())
        .await
        .with_context(|| {
            let mut shown = url.clone();
            let _ = shown.set_password(None);
            format!("cannot connect to PostgreSQL at {shown}")
        })
}

/// A write transaction on a pooled connection. The one way docket's code opens a transaction
/// (`Pool::begin` is disallowed in `clippy.toml`): a connection whose transaction did not end
/// in a commit or rollback known to have succeeded is closed, never handed out again.
///
/// Why: sqlx counts transaction depth only when COMMIT/ROLLBACK succeed. After a failed
/// COMMIT (disk full, I/O error) SQLite may or may not have rolled back by itself; sqlx then
/// believes it is still inside a transaction, turns the next `BEGIN` into a `SAVEPOINT`, and
/// later "commits" only release savepoints of a transaction that never commits.
pub struct Tx {
    conn: PoolConnection<Any>,
    ended: bool,
    health: Option<Arc<WriteHealth>>,
}

/// Opens a transaction on a connection from `pool`.
pub async fn begin(pool: &AnyPool) -> sqlx::Result<Tx> {
    begin_with(pool, None).await
}

/// [`begin`] with the database's own statement for it (`BEGIN IMMEDIATE` on SQLite).
async fn begin_with(pool: &AnyPool, statement: Option<&'static str>) -> sqlx::Result<Tx> {
    let mut conn = pool.acquire().await?;
    if let Err(e) = AnyTransactionManager::begin(&mut conn, statement.map(Into::into)).await {
        conn.close_on_drop();
        return Err(e);
    }
    Ok(Tx {
        conn,
        ended: false,
        health: None,
    })
}

/// [`begin`], reporting how the transaction ends to `health`.
pub async fn begin_tracked(pool: &AnyPool, health: &Arc<WriteHealth>) -> sqlx::Result<Tx> {
    begin_tracked_with(pool, health, None).await
}

/// [`begin_tracked`] with the database's own statement for it (see [`begin_with`]).
pub async fn begin_tracked_with(
    pool: &AnyPool,
    health: &Arc<WriteHealth>,
    statement: Option<&'static str>,
) -> sqlx::Result<Tx> {
    let mut tx = begin_with(pool, statement)
        .await
        .inspect_err(|e| health.failed(e))?;
    tx.health = Some(health.clone());
    Ok(tx)
}

impl Tx {
    /// Commits; `Ok` only when the database reported the commit done.
    pub async fn commit(mut self) -> sqlx::Result<()> {
        let done = AnyTransactionManager::commit(&mut self.conn).await;
        if let Some(h) = &self.health {
            match &done {
                Ok(()) => h.writable(),
                Err(e) => h.failed(e),
            }
        }
        done?;
        self.ended = true;
        Ok(())
    }

    pub async fn rollback(mut self) -> sqlx::Result<()> {
        AnyTransactionManager::rollback(&mut self.conn).await?;
        self.ended = true;
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.ended {
            // A failed statement, commit or rollback, or an early return: the state is not
            // known, so the connection is closed (which rolls back whatever is open).
            self.conn.close_on_drop();
            if let Some(h) = &self.health {
                h.unsure();
            }
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// What docket last saw of a database's ability to commit a write.
#[derive(Debug, Default)]
pub struct WriteHealth(Mutex<Seen>);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not seen yet, or a transaction ended without a commit since the last one.
    #[default]
    Unknown,
    Writable,
    /// The last commit (or write probe) failed; why, for the operator.
    Failing(String),
}

impl WriteHealth {
    pub fn seen(&self) -> Seen {
        self.0.lock().expect("health lock").clone()
    }
    pub fn writable(&self) {
        *self.0.lock().expect("health lock") = Seen::Writable;
    }
    pub fn failed(&self, why: &dyn std::fmt::Display) {
        *self.0.lock().expect("health lock") = Seen::Failing(why.to_string());
    }
    fn unsure(&self) {
        let mut s = self.0.lock().expect("health lock");
        if *s == Seen::Writable {
            *s = Seen::Unknown;
        }
    }
}

/// Pool check on every returned SQLite connection: sqlx's idea of the transaction depth is 0.
/// Anything else (a COMMIT or ROLLBACK that failed, see [`Tx`]) is closed.
///
/// In-process, with no statement: it runs on every release (a dozen per filing), and a round
/// trip to the connection's worker thread costs two context switches each way. It used to
/// also ask SQLite (`BEGIN; ROLLBACK`); SQLite can only be inside a transaction that sqlx
/// does not count after a bare `BEGIN` statement, and docket opens every SQLite transaction
/// through [`begin`] or sqlx's transaction manager (`Pool::begin` is refused by clippy).
/// The failures that do leave the two apart, a COMMIT refused or failed after SQLite rolled
/// back, leave sqlx's depth above 0 and are caught here (see the tests below).
fn sqlite_connection_is_clean(
    conn: &mut AnyConnection,
    _: PoolConnectionMetadata,
) -> BoxFuture<'_, sqlx::Result<bool>> {
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("closing a database connection left inside a transaction");
    }
    Box::pin(std::future::ready(Ok(clean)))
}

/// The PostgreSQL version: a statement that begins its own transaction has
/// `statement_timestamp() = transaction_timestamp()`, so outside a transaction it is true.
/// Sent as a simple query (one protocol message): under the extended protocol PostgreSQL
/// starts the transaction at Parse and restamps the statement at Bind and Execute, so the two
/// differ even outside a transaction, and every connection was closed after one use.
fn pg_connection_is_clean(
    conn: &mut AnyConnection,
    _: PoolConnectionMetadata,
) -> BoxFuture<'_, sqlx::Result<bool>> {
    Box::pin(async move {
        use sqlx::Row;
        // A bare string with no arguments: sqlx sends it as a simple query.
        let outside = conn
            .fetch_one("SELECT statement_timestamp() = transaction_timestamp()")
            .await
            .and_then(|row| row.try_get::<bool, _>(0))
            .unwrap_or(false);
        let clean = outside && !conn.is_in_transaction();
        if !clean {
            tracing::warn!("closing a database connection left inside a transaction");
        }
        Ok(clean)
    })
}

fn check_ident(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "unsafe database identifier {name:?}"
    );
    Ok(())
}

/// Creates the catalogue database named in `url` if it does not exist yet.
pub async fn ensure_pg_database(url: &url::Url) -> anyhow::Result<()> {
    let name = url.path().trim_start_matches('/').to_string();
    check_ident(&name)
        .context("the catalogue database name must be lowercase letters, digits and _")?;
    let mut admin_url = url.clone();
    admin_url.set_path("/postgres");
    let admin = open_pg(&admin_url, 1).await?;
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&admin)
        .await?
        .is_some();
    if !exists {
        let r = admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await;
        // Lost a race with another process creating it: fine.
        if let Err(e) = r {
            if !e.to_string().contains("already exists") {
                return Err(e.into());
            }
        }
    }
    admin.close().await;
    Ok(())
}

/// A tenant's own role (login, no other powers) owning its own database, which nobody else
/// may connect to.
pub async fn create_pg_tenant_db(
    admin: &AnyPool,
    name: &str,
    password: &str,
) -> anyhow::Result<()> {
    check_ident(name)?;
    anyhow::ensure!(
        password.bytes().all(|b| b.is_ascii_alphanumeric()),
        "unsafe password"
    );
    admin
        .execute(format!("CREATE ROLE \"{name}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}'").as_str())
        .await?;
    create_pg_database(admin, name).await
}

/// The database `name`, owned by the role of the same name; nobody else may connect.
async fn create_pg_database(admin: &AnyPool, name: &str) -> anyhow::Result<()> {
    check_ident(name)?;
    admin
        .execute(format!("CREATE DATABASE \"{name}\" OWNER \"{name}\"").as_str())
        .await?;
    admin
        .execute(format!("REVOKE ALL ON DATABASE \"{name}\" FROM PUBLIC").as_str())
        .await?;
    Ok(())
}

/// Drops a tenant's database only (its role stays), closing its connections.
pub async fn drop_pg_tenant_database(admin: &AnyPool, name: &str) -> anyhow::Result<()> {
    check_ident(name)?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await?;
    Ok(())
}

/// A tenant's database (owned by its role, which is created if missing), for a restore.
pub async fn create_pg_tenant_db_for_role(
    admin: &AnyPool,
    name: &str,
    password: &str,
) -> anyhow::Result<()> {
    let role = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(name)
        .fetch_optional(admin)
        .await?;
    match role {
        None => create_pg_tenant_db(admin, name, password).await,
        Some(_) => create_pg_database(admin, name).await,
    }
}

pub async fn drop_pg_tenant_db(admin: &AnyPool, name: &str) -> anyhow::Result<()> {
    drop_pg_tenant_database(admin, name).await?;
    admin
        .execute(format!("DROP ROLE IF EXISTS \"{name}\"").as_str())
        .await?;
    Ok(())
}

pub async fn migrate_catalog(pool: &AnyPool, backend: Backend) -> anyhow::Result<()> {
    let m = match backend {
        Backend::Sqlite => &CATALOG_SQLITE,
        Backend::Postgres => &CATALOG_PG,
    };
    m.run(pool).await.context("catalogue migration failed")
}

pub async fn migrate_tenant(pool: &AnyPool, backend: Backend) -> anyhow::Result<()> {
    let m = match backend {
        Backend::Sqlite => &TENANT_SQLITE,
        Backend::Postgres => &TENANT_PG,
    };
    m.run(pool).await.context("tenant migration failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn scratch(dir: &Path, pool_size: u32) -> AnyPool {
        let pool = open_sqlite(&dir.join("t.db"), pool_size, 1000)
            .await
            .unwrap();
        pool.execute(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
             CREATE TABLE child (p INTEGER REFERENCES parent(id)); \
             CREATE TABLE t (v INTEGER)",
        )
        .await
        .unwrap();
        pool
    }

    async fn count_elsewhere(dir: &Path) -> i64 {
        let other = open_sqlite(&dir.join("t.db"), 1, 1000).await.unwrap();
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&other)
            .await
            .unwrap();
        other.close().await;
        n
    }

    /// The silent loss, reproduced without a disk: a COMMIT that fails after SQLite
    /// already ended the transaction (as it does on SQLITE_FULL / SQLITE_IOERR), then a
    /// commit refused with the transaction left open. Through sqlx's own transactions, the
    /// pool's check must keep later commits real.
    #[tokio::test]
    #[allow(clippy::disallowed_methods)]
    async fn the_pool_never_reuses_a_connection_left_in_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let pool = scratch(dir.path(), 1).await;
        // Failure 1: SQLite rolled back by itself, then COMMIT fails.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (0)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.execute("ROLLBACK").await.unwrap();
        assert!(tx.commit().await.is_err());
        // Failure 2: COMMIT refused (deferred foreign key), the transaction stays open.
        let mut tx = pool.begin().await.unwrap();
        tx.execute("PRAGMA defer_foreign_keys = ON").await.unwrap();
        tx.execute("INSERT INTO child VALUES (42)").await.unwrap();
        assert!(tx.commit().await.is_err());
        // Later commits report success: they must be durable and visible to others.
        for v in 1..=3 {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO t VALUES ($1)")
                .bind(v)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        assert_eq!(count_elsewhere(dir.path()).await, 3);
    }

    /// The same through docket's own [`Tx`], and a failed commit does not stop the next.
    #[tokio::test]
    async fn commits_after_failed_commits_through_tx_are_real() {
        let dir = tempfile::tempdir().unwrap();
        let pool = scratch(dir.path(), 1).await;
        let mut tx = begin(&pool).await.unwrap();
        tx.execute("ROLLBACK").await.unwrap();
        assert!(tx.commit().await.is_err());
        let mut tx = begin(&pool).await.unwrap();
        tx.execute("PRAGMA defer_foreign_keys = ON").await.unwrap();
        tx.execute("INSERT INTO child VALUES (42)").await.unwrap();
        assert!(tx.commit().await.is_err());
        let mut tx = begin(&pool).await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count_elsewhere(dir.path()).await, 1);
    }

    /// A connection marked with a TEMP table (which lives and dies with its connection).
    async fn mark(pool: &AnyPool) {
        pool.execute("CREATE TEMP TABLE IF NOT EXISTS marker (x)")
            .await
            .unwrap();
    }
    async fn marked(pool: &AnyPool) -> bool {
        sqlx::query("SELECT 1 FROM temp.sqlite_master WHERE name = 'marker'")
            .fetch_optional(pool)
            .await
            .unwrap()
            .is_some()
    }

    /// A transaction that ends without a commit (a failed statement, an early return) closes
    /// its connection, whatever SQLite says about it: a connection opened read-only, for
    /// one, looks clean but can never write.
    #[tokio::test]
    async fn a_transaction_that_does_not_commit_closes_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let pool = scratch(dir.path(), 1).await;
        mark(&pool).await;
        let mut tx = begin(&pool).await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)").await.unwrap();
        tx.commit().await.unwrap();
        assert!(
            marked(&pool).await,
            "a committed transaction keeps its connection"
        );
        let mut tx = begin(&pool).await.unwrap();
        assert!(tx.execute("INSERT INTO nowhere VALUES (1)").await.is_err());
        drop(tx);
        assert!(!marked(&pool).await, "the connection was reused");
        mark(&pool).await;
        let tx = begin(&pool).await.unwrap();
        tx.rollback().await.unwrap();
        assert!(marked(&pool).await, "a clean rollback keeps its connection");
    }
}
