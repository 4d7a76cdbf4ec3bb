//! Opening and migrating databases. One code path for both backends through sqlx's `Any`
//! driver (queries use `$n` placeholders, which SQLite accepts too); only DDL differs, and it
//! lives in `migrations/<catalog|tenant>/<sqlite|postgres>/`.

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

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
/// and a generous busy timeout (writers queue on the file lock rather than fail).
pub async fn open_sqlite(path: &Path, max_connections: u32) -> anyhow::Result<AnyPool> {
    install_drivers();
    if let Some(dir) = path.parent() {
        super::create_private_dir(dir)?;
    }
    let url = format!("sqlite://{}?mode=rwc", path.display());
    AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _| {
            Box::pin(async move {
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA synchronous = FULL",
                    "PRAGMA foreign_keys = ON",
                    "PRAGMA busy_timeout = 30000",
                ] {
                    conn.execute(pragma).await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
        .with_context(|| format!("cannot open SQLite database {}", path.display()))
}

pub async fn open_pg(url: &url::Url, max_connections: u32) -> anyhow::Result<AnyPool> {
    install_drivers();
    AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url.as_str())
        .await
        .with_context(|| {
            let mut shown = url.clone();
            let _ = shown.set_password(None);
            format!("cannot connect to PostgreSQL at {shown}")
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
    admin
        .execute(format!("CREATE DATABASE \"{name}\" OWNER \"{name}\"").as_str())
        .await?;
    admin
        .execute(format!("REVOKE ALL ON DATABASE \"{name}\" FROM PUBLIC").as_str())
        .await?;
    Ok(())
}

pub async fn drop_pg_tenant_db(admin: &AnyPool, name: &str) -> anyhow::Result<()> {
    check_ident(name)?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await?;
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
