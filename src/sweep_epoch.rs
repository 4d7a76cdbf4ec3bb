//! The sweep epoch: how a sweep in one process and a filing in another never lose a blob.
//!
//! A filing writes its blobs before its transaction; the sweep deletes blobs no row refers
//! to. In one process the tenant's blob lease keeps them apart. Across processes (replicas
//! on one PostgreSQL and one object store, or a `docket maintenance sweep` beside a server)
//! the tenant database's one-row table `blob_sweep` does:
//!
//! - the sweep makes the epoch odd, committed under the audit chain's lock, *before* it
//!   reads which blobs are referenced and deletes the others; it makes it even again after
//!   its last delete ([`SweepPhase`]);
//! - a filing reads the epoch (waiting while it is odd) before its first blob write
//!   ([`settled`]) and again inside its transaction, under the same lock ([`in_tx`], [`check`]). It
//!   commits only when the two are the same even value; otherwise a sweep may have deleted
//!   a blob it wrote, and it writes its blobs again.
//!
//! Why this holds: a filing that committed before the epoch went odd is seen by the sweep's
//! reading of the references, which comes after; a filing that commits after it finds the
//! epoch moved. The epoch only grows, so no sweep goes unnoticed.
//!
//! The sweep deletes in short phases (one starts no delete after [`DELETE_WINDOW`]), so a
//! filing elsewhere waits at most a few seconds ([`FILING_WAIT`], then 503
//! `sweep-in-progress`). A sweep that dies while odd would stop every filing of the tenant:
//! once [`LEASE`] has passed since it began, the next filing or sweep closes it. Each delete
//! is bounded by the store's timeout (at most 120 s a request, `storage.s3.timeout_secs`,
//! retried for at most 10 s), so a live phase ends well within the lease.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use sqlx::Row;

use crate::error::{AppError, AppResult};
use crate::tenancy::db::{Backend, Tx};
use crate::tenancy::Tenant;

/// After this long (by the database's clock) an odd epoch is a dead sweep's, and is closed
/// by whoever finds it.
pub const LEASE: Duration = Duration::from_secs(15 * 60);
/// A sweep's phase starts no delete after this long since it began deleting.
pub const DELETE_WINDOW: Duration = Duration::from_secs(1);
/// How long a filing waits for a sweep to end before answering 503 `sweep-in-progress`.
pub const FILING_WAIT: Duration = Duration::from_secs(5);
/// `Retry-After` of a 503 `sweep-in-progress`, in seconds.
pub const RETRY_AFTER_SECS: u64 = 5;
const POLL: Duration = Duration::from_millis(50);

/// The even epoch a filing read before its first blob write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(i64);

/// The 503 a filing gets when a sweep does not end in time (with `Retry-After`).
pub fn in_progress() -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "sweep-in-progress",
        "docket is removing this firm's unused files; nothing was filed, try again in a few seconds",
    )
}

/// Whether `e` says a sweep ran between a filing's blob writes and its transaction.
pub fn raced(e: &AppError) -> bool {
    e.slug() == "sweep-raced"
}

/// The epoch, once no sweep is deleting (a dead sweep's closed). Errors: the database, or
/// 503 `sweep-in-progress` after [`FILING_WAIT`].
pub async fn settled(tenant: &Tenant) -> AppResult<Epoch> {
    let start = Instant::now();
    loop {
        let (epoch, started_at, now) = read(tenant).await?;
        if epoch % 2 == 0 {
            return Ok(Epoch(epoch));
        }
        if is_stale(started_at, now) {
            close_stale(tenant, epoch).await?;
            continue;
        }
        if start.elapsed() >= FILING_WAIT {
            return Err(in_progress());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The epoch as read inside a transaction after the audit chain is locked: no sweep can
/// move it until that transaction ends, so one read serves every filing of a group commit.
pub async fn in_tx(tx: &mut Tx) -> AppResult<i64> {
    Ok(sqlx::query("SELECT epoch FROM blob_sweep WHERE id = 1")
        .fetch_one(&mut **tx)
        .await?
        .get(0))
}

/// `Err` (`sweep-raced`, for the filing to write its blobs again) when the epoch read in
/// the transaction ([`in_tx`]) is not the one `seen` before the blob writes.
pub fn check(now: i64, seen: Epoch) -> AppResult<()> {
    match now == seen.0 {
        true => Ok(()),
        false => Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sweep-raced",
            "a sweep ran while this filing wrote its blobs",
        )),
    }
}

/// The database's clock in Unix seconds, as SQL: one clock for every process.
fn db_now(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "CAST(strftime('%s', 'now') AS INTEGER)",
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)",
    }
}

/// (epoch, started_at, the database's now).
async fn read(tenant: &Tenant) -> sqlx::Result<(i64, i64, i64)> {
    let sql = format!(
        "SELECT epoch, started_at, {} FROM blob_sweep WHERE id = 1",
        db_now(tenant.backend)
    );
    let row = sqlx::query(&sql).fetch_one(&tenant.db).await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

fn is_stale(started_at: i64, now: i64) -> bool {
    now - started_at > LEASE.as_secs() as i64
}

/// Ends a dead sweep's odd `epoch` (a no-op if it has moved since).
async fn close_stale(tenant: &Tenant, epoch: i64) -> sqlx::Result<()> {
    tracing::warn!(tenant = %tenant.id, epoch, "closing the blob sweep of a process that did not finish it");
    let _writer = tenant.write_guard().await;
    sqlx::query("UPDATE blob_sweep SET epoch = epoch + 1 WHERE id = 1 AND epoch = $1")
        .bind(epoch)
        .execute(&tenant.db)
        .await?;
    Ok(())
}

/// A sweep's odd epoch: its deletes happen while it is held (for at most [`DELETE_WINDOW`]
/// of deletes a phase). Dropped without
/// [`SweepPhase::end`] (a sweep cancelled mid-phase), it is ended by a spawned task.
#[derive(Debug)]
pub struct SweepPhase {
    epoch: i64,
    db: sqlx::AnyPool,
    ended: bool,
}

const END_SQL: &str = "UPDATE blob_sweep SET epoch = epoch + 1 WHERE id = 1 AND epoch = $1";

impl Drop for SweepPhase {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let (db, epoch) = (self.db.clone(), self.epoch);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = sqlx::query(END_SQL).bind(epoch).execute(&db).await {
                    tracing::error!(error = %e, "cannot end a cancelled sweep's phase; it closes after the lease");
                }
            });
        }
    }
}

impl SweepPhase {
    /// Makes the epoch odd (committed). `None` when another process's sweep is in progress.
    pub async fn begin(tenant: &Tenant) -> anyhow::Result<Option<SweepPhase>> {
        let (epoch, started_at, now) = read(tenant).await?;
        if epoch % 2 == 1 && is_stale(started_at, now) {
            close_stale(tenant, epoch).await?;
        }
        let _writer = tenant.write_guard().await;
        let mut tx = tenant.begin().await?;
        crate::audit::lock_chain(&mut tx).await?;
        let sql = format!(
            "UPDATE blob_sweep SET epoch = epoch + 1, started_at = {} \
             WHERE id = 1 AND epoch % 2 = 0 RETURNING epoch",
            db_now(tenant.backend)
        );
        let row = sqlx::query(&sql).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        Ok(row.map(|r| SweepPhase {
            epoch: r.get(0),
            db: tenant.db.clone(),
            ended: false,
        }))
    }

    /// Makes the epoch even again: filings go on. Tried three times: a phase left open
    /// refuses the tenant's filings everywhere until the lease ends.
    pub async fn end(mut self, tenant: &Tenant) -> anyhow::Result<()> {
        let mut last = None;
        for wait in [0, 100, 500] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let _writer = tenant.write_guard().await;
            match sqlx::query(END_SQL)
                .bind(self.epoch)
                .execute(&tenant.db)
                .await
            {
                Ok(done) => {
                    self.ended = true;
                    if done.rows_affected() == 0 {
                        tracing::warn!(tenant = %tenant.id, "a sweep ended after another process closed it");
                    }
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts").into())
    }
}
