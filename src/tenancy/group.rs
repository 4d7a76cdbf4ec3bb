//! Group commit: the write transactions of concurrent filings to one SQLite tenant share a
//! single transaction, so one COMMIT (one fsync of the write-ahead log) and one turn of the
//! tenant's writer lock serve many filings.
//!
//! Each caller queues its work and spawns a runner; the runner that gets the writer lock
//! takes whatever is queued (up to [`MAX_BATCH`]) and runs each piece inside a savepoint of
//! one transaction: a piece that fails is rolled back to its savepoint alone and answered
//! with its error, the others go on. Every caller is answered only after the COMMIT; if the
//! COMMIT (or a savepoint's rollback) fails, every piece of the batch gets that error —
//! nothing is acknowledged that was not durably committed. Runners are spawned tasks, so a
//! request that goes away cannot cut a batch short.
//!
//! What every piece would otherwise read and write again is done once per batch ([`Batch`]):
//! the audit chain's lock and head (each piece appends after the one before, in memory; the
//! head row is written once, with the last piece's writes) and the sweep epoch, read on
//! SQLite in the statement that takes the lock. A piece's writes are collected and sent
//! together when it is done ([`super::script`]), with the next piece's savepoint. A piece
//! that fails, or whose writes fail, is rolled back to its savepoint, and the head in memory
//! is put back with it (when that was the last piece, the head is written on its own).
//!
//! On PostgreSQL there is no writer lock and no batching: each piece runs in its own
//! transaction (the server orders writers on the audit head's row lock and groups commits
//! itself).

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::script::Script;
use super::{db::Tx, Tenant};
use crate::audit;
use crate::error::{AppError, AppResult};

/// At most this many pieces of work share one transaction.
pub const MAX_BATCH: usize = 64;

/// A piece of work to run inside the shared transaction, after the audit chain is locked.
pub type Work = Box<
    dyn for<'a> FnOnce(
            &'a mut Tx,
            &'a mut Batch,
        ) -> Pin<Box<dyn Future<Output = AppResult<Answer>> + Send + 'a>>
        + Send,
>;

/// What the pieces of one transaction share, read once after the audit chain is locked.
pub struct Batch {
    /// The chain's head, in memory: append with [`Batch::append_audit`].
    head: audit::Head,
    /// The blob sweep epoch (no sweep can move it while the chain is locked).
    pub sweep_epoch: i64,
    /// The running piece's writes, sent when it is done (see [`super::script`]).
    pub writes: Script,
}

impl Batch {
    /// Appends an audit entry after the running piece's others (its insert in `writes`).
    pub fn append_audit(&mut self, ev: &audit::AuditEvent) -> audit::AuditEntry {
        self.head.append_to(&mut self.writes, ev)
    }
}

/// What a piece of work returns, type-erased so one queue serves any caller.
pub type Answer = Box<dyn Any + Send>;

struct Pending {
    work: Work,
    done: oneshot::Sender<AppResult<Answer>>,
}

/// A tenant's queue of work waiting for a transaction.
#[derive(Default)]
pub struct Queue(Mutex<Vec<Pending>>);

impl Tenant {
    /// Runs `work` in a write transaction shared with concurrent callers, and answers once
    /// that transaction has committed. `T` is the type `work` boxes in its [`Answer`].
    pub async fn group_commit<T: 'static>(self: &Arc<Self>, work: Work) -> AppResult<T> {
        let (done, answer) = oneshot::channel();
        self.queue
            .0
            .lock()
            .expect("group commit queue")
            .push(Pending { work, done });
        let tenant = self.clone();
        tokio::spawn(async move { tenant.run_queued().await });
        let answer = answer.await.map_err(|_| {
            AppError::internal(anyhow::anyhow!("the group commit ended without an answer"))
        })??;
        answer
            .downcast::<T>()
            .map(|t| *t)
            .map_err(|_| AppError::internal(anyhow::anyhow!("group commit answer of a wrong type")))
    }

    /// How many pieces of work wait for a transaction.
    pub fn queued(&self) -> usize {
        self.queue.0.lock().expect("group commit queue").len()
    }

    /// Takes the writer lock, then whatever is queued; nothing when another runner took it.
    async fn run_queued(&self) {
        let _writer = self.write_guard().await;
        let most = match self.backend {
            super::Backend::Sqlite => MAX_BATCH,
            super::Backend::Postgres => 1,
        };
        let batch: Vec<Pending> = {
            let mut queue = self.queue.0.lock().expect("group commit queue");
            let n = queue.len().min(most);
            queue.drain(..n).collect()
        };
        if !batch.is_empty() {
            self.run_batch(batch).await;
        }
    }

    async fn run_batch(&self, batch: Vec<Pending>) {
        let (mut tx, mut shared) = match self.begin_locked().await {
            Ok(begun) => begun,
            Err(e) => return fail_all(batch.into_iter().map(|p| p.done), &e),
        };
        let mut answers = Vec::with_capacity(batch.len());
        let last = batch.len() - 1;
        let mut head_stored = false;
        for (i, p) in batch.into_iter().enumerate() {
            let then = match i < last {
                true => Then::NextPiece,
                false => Then::StoreHead,
            };
            match self.run_piece(&mut tx, &mut shared, p.work, then).await {
                Ok(answer) => {
                    head_stored = i == last && answer.is_ok();
                    answers.push((p.done, answer));
                }
                Err(e) => {
                    // The transaction's state is unknown: dropping `tx` closes the connection.
                    drop(tx);
                    let all = answers.into_iter().map(|(d, _)| d).chain([p.done]);
                    return fail_all(all, &e);
                }
            }
        }
        let stored = match head_stored {
            true => Ok(()),
            false => shared.head.store(&mut tx).await,
        };
        let committed = match stored {
            Ok(()) => tx.commit().await,
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            return fail_all(answers.into_iter().map(|(d, _)| d), &e.into());
        }
        for (done, answer) in answers {
            let _ = done.send(answer);
        }
    }

    /// The transaction, the chain locked, and the first piece's savepoint: on SQLite in two
    /// round trips (`BEGIN IMMEDIATE`, then one query for the rest).
    async fn begin_locked(&self) -> AppResult<(Tx, Batch)> {
        use sqlx::Executor;
        let (tx, head, sweep_epoch) = match self.backend {
            super::Backend::Sqlite => {
                let mut tx = self.begin_immediate().await?;
                let (head, epoch) =
                    audit::Head::lock_sqlite_with_epoch(&mut tx, "SAVEPOINT docket_piece").await?;
                (tx, head, epoch)
            }
            super::Backend::Postgres => {
                let mut tx = self.begin().await?;
                let head = audit::Head::lock(&mut tx).await?;
                // A statement of its own, after the lock: a subquery of the locking statement
                // would read the snapshot from before it waited for the lock, and miss a sweep
                // that committed meanwhile (test `sweep_epoch::a_sweep_elsewhere_never_...`).
                let epoch = crate::sweep_epoch::in_tx(&mut tx).await?;
                tx.execute("SAVEPOINT docket_piece").await?;
                (tx, head, epoch)
            }
        };
        let writes = Script::default();
        Ok((
            tx,
            Batch {
                head,
                sweep_epoch,
                writes,
            },
        ))
    }

    /// Runs one piece in its savepoint, then sends its writes and `then` (the next piece's
    /// savepoint, or the chain's head after the last piece) in one round trip. `Ok(Err(_))`:
    /// the piece failed and was rolled back alone, the chain's head in memory with it (and
    /// not stored); `Err(_)`: the rollback itself failed, and with it the whole transaction.
    async fn run_piece(
        &self,
        tx: &mut Tx,
        shared: &mut Batch,
        work: Work,
        then: Then,
    ) -> AppResult<AppResult<Answer>> {
        use sqlx::Executor;
        let head = shared.head.clone();
        let mut answer = work(tx, shared).await;
        if answer.is_ok() {
            let then = match then {
                Then::NextPiece => NEXT_PIECE,
                Then::StoreHead => {
                    shared.head.store_to(&mut shared.writes);
                    ""
                }
            };
            if let Err(e) = shared.writes.run(tx, self.backend, then).await {
                answer = Err(e.into());
            }
        }
        if answer.is_err() {
            shared.writes.clear();
            shared.head = head;
            tx.execute("ROLLBACK TO docket_piece").await?;
        }
        Ok(answer)
    }
}

/// What a piece's writes are sent with.
#[derive(Clone, Copy)]
enum Then {
    /// The next piece's savepoint ([`NEXT_PIECE`]).
    NextPiece,
    /// The chain's head (after the batch's last piece).
    StoreHead,
}

/// Ends a piece that went through and opens the next one's savepoint.
const NEXT_PIECE: &str = "RELEASE docket_piece; SAVEPOINT docket_piece";

fn fail_all(dones: impl Iterator<Item = oneshot::Sender<AppResult<Answer>>>, e: &AppError) {
    tracing::error!(error = %e, "a group commit failed; every filing in it is answered 5xx");
    for done in dones {
        let _ = done.send(Err(AppError::internal(anyhow::anyhow!(
            "the transaction did not commit: {e}"
        ))));
    }
}
