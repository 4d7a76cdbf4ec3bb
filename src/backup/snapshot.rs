//! Consistent database snapshots of a tenant, and scratch databases to check them in.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Executor, Row};

use crate::tenancy::db::{self, Backend};
use crate::tenancy::{Catalog, Tenant};

/// What a snapshot holds, read from the snapshot itself: row counts and the audit head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub messages: i64,
    pub filings: i64,
    pub attachments: i64,
    pub audit_entries: i64,
    pub audit_head_seq: i64,
    pub audit_head_hash: String,
}

/// A snapshot taken: its plain file (to be sealed), its facts and the blobs it refers to.
pub struct Snapshot {
    pub plain: PathBuf,
    pub facts: Facts,
    pub blobs: BTreeSet<String>,
}

/// Takes a consistent snapshot of `t`'s database into `dest` (plain: seal it, then remove).
pub async fn take(catalog: &Catalog, t: &Tenant, dest: &Path) -> anyhow::Result<Snapshot> {
    let (facts, blobs) = match t.backend {
        Backend::Sqlite => sqlite(t, dest).await?,
        Backend::Postgres => postgres(catalog, t, dest).await?,
    };
    Ok(Snapshot {
        plain: dest.to_path_buf(),
        facts,
        blobs,
    })
}

/// The facts and referenced blobs, read on one connection (one snapshot).
pub async fn facts(conn: &mut AnyConnection) -> anyhow::Result<(Facts, BTreeSet<String>)> {
    let mut n = Vec::new();
    for sql in [
        "SELECT COUNT(*) FROM messages",
        "SELECT COUNT(*) FROM filings",
        "SELECT COUNT(*) FROM message_attachments",
        "SELECT COUNT(*) FROM audit_log",
    ] {
        n.push(
            sqlx::query(sql)
                .fetch_one(&mut *conn)
                .await?
                .get::<i64, _>(0),
        );
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let blobs =
        sqlx::query("SELECT raw_sha256 FROM messages UNION SELECT sha256 FROM message_attachments")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect();
    let facts = Facts {
        messages: n[0],
        filings: n[1],
        attachments: n[2],
        audit_entries: n[3],
        audit_head_seq: head.get(0),
        audit_head_hash: head.get(1),
    };
    Ok((facts, blobs))
}

/// `VACUUM INTO`: a transactionally consistent copy, written by SQLite itself.
async fn sqlite(t: &Tenant, dest: &Path) -> anyhow::Result<(Facts, BTreeSet<String>)> {
    let path = dest.to_str().context("a backup path must be UTF-8")?;
    sqlx::query(&format!("VACUUM INTO '{}'", path.replace('\'', "''")))
        .execute(&t.db)
        .await
        .context("VACUUM INTO")?;
    let pool = db::open_sqlite(dest, 1, 1000).await?;
    let result = async {
        let mut conn = pool.acquire().await?;
        facts(&mut conn).await
    }
    .await;
    // The last connection closing folds the write-ahead log back into the file.
    pool.close().await;
    result
}

/// `pg_dump` of a snapshot exported by a repeatable-read transaction, in which the facts
/// are read too.
async fn postgres(
    catalog: &Catalog,
    t: &Tenant,
    dest: &Path,
) -> anyhow::Result<(Facts, BTreeSet<String>)> {
    let url = catalog.tenant_database_url(&t.id).await?;
    let mut conn = t.db.acquire().await?;
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let snapshot: String = sqlx::query("SELECT pg_export_snapshot()")
        .fetch_one(&mut *conn)
        .await?
        .get(0);
    let dest_s = dest.to_str().context("a backup path must be UTF-8")?;
    run_pg_tool(
        "pg_dump",
        &url,
        &[
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            &format!("--snapshot={snapshot}"),
            &format!("--file={dest_s}"),
        ],
    )
    .await?;
    let read = facts(&mut conn).await?;
    conn.execute("COMMIT").await?;
    Ok(read)
}

/// Runs `pg_dump` / `pg_restore` against `url`, the password passed in the environment.
pub(super) async fn run_pg_tool(tool: &str, url: &url::Url, args: &[&str]) -> anyhow::Result<()> {
    let mut bare = url.clone();
    let _ = bare.set_password(None);
    let mut cmd = tokio::process::Command::new(tool);
    // Only what the tool needs: not docket's own settings (master key, database URL).
    cmd.env_clear();
    for keep in ["PATH", "LANG", "LC_ALL", "TZ", "HOME"] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.args(args).arg(format!("--dbname={bare}"));
    if let Some(pw) = url.password() {
        let pw = percent_encoding::percent_decode_str(pw).decode_utf8_lossy();
        cmd.env("PGPASSWORD", pw.as_ref());
    }
    let out = cmd
        .output()
        .await
        .with_context(|| format!("cannot run {tool} (install the PostgreSQL client tools)"))?;
    // Its first line only: later ones can quote the tenant's rows.
    let said = String::from_utf8_lossy(&out.stderr);
    let first: String = said
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect();
    anyhow::ensure!(
        out.status.success(),
        "{tool} failed ({}): {first}",
        out.status
    );
    Ok(())
}

/// A database holding a snapshot, to check it; dropped by [`Scratch::remove`].
pub struct Scratch {
    pub pool: AnyPool,
    /// PostgreSQL: the scratch database's name and the server's admin URL.
    pg: Option<(String, url::Url)>,
    _dir: Option<tempfile::TempDir>,
}

impl Scratch {
    /// Loads a plain snapshot (`backend`: `sqlite` or `postgres`) into a scratch database.
    pub async fn load(catalog: &Catalog, backend: &str, plain: &[u8]) -> anyhow::Result<Scratch> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("snapshot");
        std::fs::write(&file, plain)?;
        match backend {
            "sqlite" => {
                let pool = db::open_sqlite(&file, 2, 1000).await?;
                Ok(Scratch {
                    pool,
                    pg: None,
                    _dir: Some(dir),
                })
            }
            "postgres" => {
                let admin_url = catalog
                    .pg_admin_url()
                    .context("a PostgreSQL backup is checked on a PostgreSQL catalogue's server")?
                    .clone();
                let name = format!("docket_check_{}", hex::encode(rand::random::<[u8; 8]>()));
                let admin = db::open_pg(&admin_url, 1).await?;
                admin
                    .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                    .await?;
                let mut url = admin_url.clone();
                url.set_path(&format!("/{name}"));
                let pool = match db::open_pg(&url, 2).await {
                    Ok(p) => p,
                    Err(e) => {
                        let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let _ = admin.execute(drop.as_str()).await;
                        admin.close().await;
                        return Err(e);
                    }
                };
                admin.close().await;
                let scratch = Scratch {
                    pool,
                    pg: Some((name, admin_url)),
                    _dir: None,
                };
                let file_s = file.to_str().context("temp path")?.to_string();
                let restored = run_pg_tool(
                    "pg_restore",
                    &url,
                    &["--no-owner", "--no-privileges", "--exit-on-error", &file_s],
                )
                .await;
                drop(dir);
                if let Err(e) = restored {
                    scratch.remove().await;
                    return Err(e);
                }
                Ok(scratch)
            }
            other => anyhow::bail!("unknown backend {other:?} in the manifest"),
        }
    }

    /// SQLite's own check of the whole file (`PRAGMA integrity_check`); PostgreSQL's
    /// `pg_restore --exit-on-error` already refused a damaged archive.
    pub async fn integrity(&self) -> anyhow::Result<()> {
        if self.pg.is_some() {
            return Ok(());
        }
        let rows = sqlx::query("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await?;
        let said: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        anyhow::ensure!(
            said == ["ok"],
            "SQLite integrity check: {}",
            said.join("; ")
        );
        Ok(())
    }

    pub async fn remove(self) {
        self.pool.close().await;
        if let Some((name, admin_url)) = self.pg {
            if let Ok(admin) = db::open_pg(&admin_url, 1).await {
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                if let Err(e) = admin.execute(sql.as_str()).await {
                    tracing::warn!(error = %e, database = %name, "cannot drop a scratch database");
                }
                admin.close().await;
            }
        }
    }
}
