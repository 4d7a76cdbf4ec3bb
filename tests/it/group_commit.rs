//! Group commit (`tenancy::group`): concurrent pieces of work share a transaction on SQLite;
//! a piece that fails is rolled back alone and answered with its error, every other piece
//! is committed and answered after the COMMIT. On PostgreSQL each piece has its own
//! transaction, with the same answers.

use crate::both_backends;
use crate::common::*;
use docket::audit::AuditEvent;
use docket::tenancy::group::Answer;
use sqlx::Executor;

both_backends!(
    a_failing_piece_is_rolled_back_alone,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        t.db.execute("CREATE TABLE scratch (n BIGINT PRIMARY KEY)")
            .await
            .unwrap();
        let pieces = (0..40i64).map(|n| {
            let t = t.clone();
            async move {
                t.group_commit::<i64>(Box::new(move |tx, batch| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO scratch (n) VALUES ($1)")
                            .bind(n)
                            .execute(&mut **tx)
                            .await?;
                        // Each piece appends to the chain through the batch's head in memory.
                        let event = AuditEvent::new("test", "test.piece", n.to_string());
                        batch.append_audit(&event);
                        // Writes sent when the piece is done: one fails, after this piece
                        // already wrote a row (above) and an audit entry (in the same query).
                        let write = "INSERT INTO scratch (n) VALUES ($1)";
                        batch.writes.push(write, vec![(n + 1000).into()]);
                        if n % 10 == 7 {
                            batch.writes.push(write, vec![n.into()]);
                            batch.writes.push(write, vec![(n + 2000).into()]);
                        }
                        Ok(Box::new(n) as Answer)
                    })
                }))
                .await
            }
        });
        let answers = futures::future::join_all(pieces).await;
        for (n, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(got) => assert_eq!((got, n % 10 != 7), (n as i64, true)),
                Err(e) => assert_eq!(n % 10, 7, "piece {n} failed: {e}"),
            }
        }
        let rows: Vec<i64> = sqlx::query_scalar("SELECT n FROM scratch WHERE n < 1000 ORDER BY n")
            .fetch_all(&t.db)
            .await
            .unwrap();
        let expected: Vec<i64> = (0..40).filter(|n| n % 10 != 7).collect();
        assert_eq!(
            rows, expected,
            "the failed pieces left nothing, the others everything"
        );
        // The rolled-back pieces' entries went with them, the head in memory too: the chain
        // holds the others' entries and still verifies.
        let mut logged: Vec<i64> =
            sqlx::query_scalar("SELECT subject FROM audit_log WHERE action = 'test.piece'")
                .fetch_all(&t.db)
                .await
                .unwrap()
                .into_iter()
                .map(|s: String| s.parse().unwrap())
                .collect();
        logged.sort();
        assert_eq!(logged, expected);
        let written: Vec<i64> =
            sqlx::query_scalar("SELECT n - 1000 FROM scratch WHERE n >= 1000 ORDER BY n")
                .fetch_all(&t.db)
                .await
                .unwrap();
        assert_eq!(
            written, expected,
            "each piece's writes, none of a failed piece's"
        );
        assert!(matches!(
            docket::audit::verify(&t.db).await.unwrap(),
            docket::audit::ChainStatus::Intact { .. }
        ));
    }
);

both_backends!(
    a_batch_whose_last_piece_fails_still_writes_the_chain_head,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        // On SQLite the head row is written with the last piece's writes: when those fail,
        // it must be written on its own, or the next entry would reuse a sequence number.
        // Holding the writer lock queues every piece into one batch, in order.
        let writer = t.write_guard().await;
        let mut running = Vec::new();
        for n in 0..4i64 {
            let t2 = t.clone();
            running.push(tokio::spawn(async move {
                t2.group_commit::<i64>(Box::new(move |_tx, batch| {
                    Box::pin(async move {
                        let event = AuditEvent::new("test", "test.piece", n.to_string());
                        batch.append_audit(&event);
                        if n == 3 {
                            batch
                                .writes
                                .push("INSERT INTO no_such_table VALUES ($1)", vec![n.into()]);
                        }
                        Ok(Box::new(n) as Answer)
                    })
                }))
                .await
            }));
            if writer.is_some() {
                while t.queued() < n as usize + 1 {
                    tokio::task::yield_now().await;
                }
            }
        }
        drop(writer);
        let mut failed = Vec::new();
        for (n, r) in running.into_iter().enumerate() {
            if r.await.unwrap().is_err() {
                failed.push(n);
            }
        }
        assert_eq!(failed, vec![3], "only the last piece failed");
        let head: i64 = sqlx::query_scalar("SELECT seq FROM audit_head WHERE id = 1")
            .fetch_one(&t.db)
            .await
            .unwrap();
        let last: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM audit_log")
            .fetch_one(&t.db)
            .await
            .unwrap();
        assert_eq!(head, last, "the head row names the last entry written");
        docket::audit::record(&t.db, &[AuditEvent::new("test", "test.after", "x")])
            .await
            .unwrap();
        assert!(matches!(
            docket::audit::verify(&t.db).await.unwrap(),
            docket::audit::ChainStatus::Intact { .. }
        ));
    }
);
