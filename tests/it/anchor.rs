//! Audit anchoring (`src/audit/anchor.rs`): the chain head copied into the catalogue
//! catches what the chain alone cannot: truncation together with the head, a rollback that
//! then goes on, and a chain rewritten with fresh hashes. `docket serve` anchors by itself,
//! the anchor never moves back, and a restore resets it with notice.

use docket::audit::{self, anchor, entry_hash_v2, field_digest, ChainStatus};
use sqlx::Row;

use crate::both_backends;
use crate::common::*;

async fn file_some(app: &TestApp, tag: &str, n: usize) {
    let tok = app.token("alice@a.test");
    for i in 0..n {
        let raw = email(&format!("{tag} {i}"), None, &[]);
        let r = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await;
        assert_eq!(r.status(), 201);
    }
}

async fn head(t: &docket::tenancy::Tenant) -> (i64, String) {
    let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&t.db)
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

async fn hash_of(t: &docket::tenancy::Tenant, seq: i64) -> String {
    sqlx::query("SELECT hash FROM audit_log WHERE seq = $1")
        .bind(seq)
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get(0)
}

/// Cuts the chain after entry `keep`, head included, as someone with the database could.
async fn truncate(t: &docket::tenancy::Tenant, keep: i64) {
    let hash = hash_of(t, keep).await;
    sqlx::query("DELETE FROM audit_log WHERE seq > $1")
        .bind(keep)
        .execute(&t.db)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(keep)
        .bind(&hash)
        .execute(&t.db)
        .await
        .unwrap();
}

fn broken(s: ChainStatus) -> (i64, String) {
    match s {
        ChainStatus::Broken { seq, reason } => (seq, reason),
        intact => panic!("expected a broken chain, got {intact:?}"),
    }
}

both_backends!(
    truncation_with_its_head_and_a_rollback_that_goes_on_are_caught,
    |app: TestApp| async move {
        let catalog = &app.state.catalog;
        let t = app.tenant(&app.firm_a).await;
        file_some(&app, "anchored", 4).await;
        let (n, _) = anchor::advance(catalog, &t).await.unwrap();
        let (status, a) = anchor::verify(catalog, &t).await.unwrap();
        assert!(matches!(status, ChainStatus::Intact { .. }), "{status:?}");
        assert_eq!(a.unwrap().seq, n);

        truncate(&t, n - 2).await;
        // The chain alone cannot tell: it ends where its head says.
        assert!(matches!(
            audit::verify(&t.db).await.unwrap(),
            ChainStatus::Intact { .. }
        ));
        let (seq, reason) = broken(anchor::verify(catalog, &t).await.unwrap().0);
        assert_eq!(seq, n - 1);
        assert!(reason.contains(&format!("anchored entry {n}")), "{reason}");
        // The anchor is not moved back by anything but a restore: anchoring again, by hand
        // or by the server, leaves it where it was.
        anchor::advance(catalog, &t).await.unwrap();
        assert_eq!(
            anchor::read(catalog.pool(), &t.id)
                .await
                .unwrap()
                .unwrap()
                .seq,
            n
        );

        // Rolled back and going on: the chain is as long as before, with other entries.
        file_some(&app, "after the rollback", 3).await;
        assert!(matches!(
            audit::verify(&t.db).await.unwrap(),
            ChainStatus::Intact { .. }
        ));
        // The chain is longer than the anchor again, but no longer holds the anchored entry:
        // the anchor is not moved onto it (by hand here; the server's loop does the same).
        anchor::advance(catalog, &t).await.unwrap();
        assert_eq!(
            anchor::read(catalog.pool(), &t.id)
                .await
                .unwrap()
                .unwrap()
                .seq,
            n
        );
        let (seq, reason) = broken(anchor::verify(catalog, &t).await.unwrap().0);
        assert_eq!(seq, n);
        assert!(reason.contains("rewritten"), "{reason}");
        // The console's and the API's chain status say the same.
        let report = docket::http::admin::browse::chain_report(catalog, &t)
            .await
            .unwrap();
        assert_eq!((report.status, report.broken_at), ("broken", Some(n)));
        // Firm B's chain is its own.
        let b = app.tenant(&app.firm_b).await;
        assert!(matches!(
            anchor::verify(catalog, &b).await.unwrap().0,
            ChainStatus::Intact { .. }
        ));
    }
);

both_backends!(
    a_chain_rewritten_with_fresh_hashes_is_caught,
    |app: TestApp| async move {
        let catalog = &app.state.catalog;
        let t = app.tenant(&app.firm_a).await;
        file_some(&app, "rewritten", 3).await;
        let (n, _) = anchor::advance(catalog, &t).await.unwrap();
        // Someone with the database edits entry 2 and recomputes every hash after it.
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, subject, detail, salts FROM audit_log ORDER BY seq",
        )
        .fetch_all(&t.db)
        .await
        .unwrap();
        let mut prev = audit::GENESIS_HASH.to_string();
        for r in &rows {
            let seq: i64 = r.get(0);
            let actor: String = match seq {
                2 => "mallory@a.test".into(),
                _ => r.get(2),
            };
            let (at, action, subject, detail): (String, String, String, String) =
                (r.get(1), r.get(3), r.get(4), r.get(5));
            let salts: serde_json::Value = serde_json::from_str(&r.get::<String, _>(6)).unwrap();
            let d = |f: &str, v: &str| field_digest(salts[f].as_str().unwrap(), v);
            let digests = [
                d("actor", &actor),
                d("subject", &subject),
                d("detail", &detail),
            ];
            let hash = entry_hash_v2(
                &prev,
                seq,
                &at,
                &action,
                [&digests[0], &digests[1], &digests[2]],
            );
            sqlx::query(
                "UPDATE audit_log SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            )
            .bind(&actor)
            .bind(&prev)
            .bind(&hash)
            .bind(seq)
            .execute(&t.db)
            .await
            .unwrap();
            prev = hash;
        }
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(&prev)
            .execute(&t.db)
            .await
            .unwrap();
        assert!(matches!(
            audit::verify(&t.db).await.unwrap(),
            ChainStatus::Intact { .. }
        ));
        let (seq, reason) = broken(anchor::verify(catalog, &t).await.unwrap().0);
        assert_eq!(seq, n);
        assert!(reason.contains("rewritten"), "{reason}");
    }
);

both_backends!(
    serve_anchors_by_itself_and_a_restore_resets_the_anchor,
    |app: TestApp| async move {
        let catalog = &app.state.catalog;
        let t = app.tenant(&app.firm_a).await;
        file_some(&app, "before the backup", 2).await;
        let dir = tempfile::tempdir().unwrap();
        let b = docket::backup::create(catalog, &app.firm_a.id, dir.path())
            .await
            .unwrap();
        file_some(&app, "lost with the database", 2).await;
        // The server anchors the chain by itself, within a few of its intervals.
        let target = head(&t).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let a = anchor::read(catalog.pool(), &t.id).await.unwrap();
            if a.as_ref()
                .is_some_and(|a| (a.seq, &a.hash) == (target.0, &target.1))
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not anchored: {a:?} vs {target:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Restored as a new tenant (the same path as in place, without stopping the server):
        // the copy's chain is shorter than what was anchored for firm A, and its own anchor
        // is its restored head.
        let r = docket::backup::restore(catalog, &b.location, &app.firm_a.id, Some("Firm A copy"))
            .await
            .unwrap();
        let copy = catalog.tenant(&r.tenant_id).await.unwrap();
        let (status, a) = anchor::verify(catalog, &copy).await.unwrap();
        assert!(matches!(status, ChainStatus::Intact { .. }), "{status:?}");
        let a = a.expect("anchored by the restore");
        assert_eq!((a.seq, a.hash), head(&copy).await);
        assert_eq!(a.seq, b.facts.audit_entries + 1, "plus backup.restored");
        assert!(matches!(
            anchor::verify(catalog, &t).await.unwrap().0,
            ChainStatus::Intact { .. }
        ));
    }
);

/// The literal case: the tenant's SQLite file replaced by an older copy of itself (no
/// restore, no notice). The copy's chain fits itself; its anchor gives it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_rolled_back_to_an_old_copy_without_a_restore_is_caught() {
    let mut app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    file_some(&app, "before the copy", 2).await;
    let t = app.tenant(&app.firm_a).await;
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("old-copy.db");
    sqlx::query(&format!("VACUUM INTO '{}'", copy.display()))
        .execute(&t.db)
        .await
        .unwrap();
    file_some(&app, "after the copy", 2).await;
    anchor::advance(&app.state.catalog, &t).await.unwrap();
    let db_path = app.state.catalog.tenant_db_path(&app.firm_a.id);
    drop(t);
    app.stop().await;
    std::fs::copy(&copy, &db_path).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
    app.start_again().await;
    let t = app.tenant(&app.firm_a).await;
    assert!(
        matches!(
            audit::verify(&t.db).await.unwrap(),
            ChainStatus::Intact { .. }
        ),
        "the old copy fits itself"
    );
    let (_, reason) = broken(anchor::verify(&app.state.catalog, &t).await.unwrap().0);
    assert!(reason.contains("rolled back"), "{reason}");
}
