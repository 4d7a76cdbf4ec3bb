//! The audit chain: what is recorded, and that verification pinpoints edits, deletions and
//! reordering on both backends; appends from separate processes stay contiguous.

use crate::both_backends;
use crate::common::*;
use docket::audit::{self, ChainStatus};
use serde_json::Value;

/// seq, at, actor, action, subject, detail, prev_hash, hash, version, salts.
type AuditRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
);

async fn file_some(app: &TestApp, n: usize) {
    let tok = app.token("alice@a.test");
    for i in 0..n {
        let raw = email(
            &format!("audit {i}"),
            Some(&format!("<audit-{i}@acme.com>")),
            &[],
        );
        assert_eq!(
            app.post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
                .await
                .status(),
            201
        );
    }
}

async fn exec(t: &docket::tenancy::Tenant, sql: &str) {
    sqlx::query(sql).execute(&t.db).await.unwrap();
}

fn broken_at(s: ChainStatus) -> i64 {
    match s {
        ChainStatus::Broken { seq, .. } => seq,
        ChainStatus::Intact { .. } => panic!("tampering went unnoticed"),
    }
}

both_backends!(chain_records_what_happened, |app: TestApp| async move {
    file_some(&app, 1).await;
    let t = app.tenant(&app.firm_a).await;
    let actions: Vec<String> =
        sqlx::query_scalar::<_, String>("SELECT action FROM audit_log ORDER BY seq")
            .fetch_all(&t.db)
            .await
            .unwrap();
    assert_eq!(actions[0], "tenant.created");
    for a in ["user.added", "record.added", "filing.created"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    let entries = audit::list(&t.db, 1).await.unwrap();
    assert_eq!(entries[0].actor, "alice@a.test");
    let detail: Value = serde_json::from_str(&entries[0].detail).unwrap();
    assert_eq!(detail["target"], "matter:M-1");
    assert!(matches!(
        audit::verify(&t.db).await.unwrap(),
        ChainStatus::Intact { .. }
    ));
});

both_backends!(
    verify_catches_edit_delete_reorder_and_truncation,
    |app: TestApp| async move {
        file_some(&app, 3).await;
        let t = app.tenant(&app.firm_a).await;
        let ChainStatus::Intact { entries, .. } = audit::verify(&t.db).await.unwrap() else {
            panic!("should start intact")
        };
        assert!(entries >= 8);

        // Edit: change an entry's detail.
        exec(
            &t,
            "UPDATE audit_log SET detail = '{\"target\":\"matter:OTHER\"}' WHERE seq = 5",
        )
        .await;
        assert_eq!(broken_at(audit::verify(&t.db).await.unwrap()), 5);
        exec(&t, "DELETE FROM audit_log").await;

        // Rebuild a clean chain in a second tenant for each remaining case.
        let b = app.tenant(&app.firm_b).await;
        let bob = app.token("bob@b.test");
        for i in 0..4 {
            let raw = email(&format!("b {i}"), Some(&format!("<b-{i}@x.com>")), &[]);
            app.post_filing(&bob, &filing_body(&raw, &["matter:B-9"]))
                .await;
        }
        let snapshot: Vec<AuditRow> = sqlx::query_as(
        "SELECT seq, at, actor, action, subject, detail, prev_hash, hash, version, salts FROM audit_log ORDER BY seq",
    )
    .fetch_all(&b.db)
    .await
    .unwrap();
        let n = snapshot.len() as i64;
        let restore = || async {
            exec(&b, "DELETE FROM audit_log").await;
            for r in &snapshot {
                sqlx::query("INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash, version, salts) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)")
                .bind(r.0).bind(&r.1).bind(&r.2).bind(&r.3).bind(&r.4).bind(&r.5).bind(&r.6).bind(&r.7).bind(r.8).bind(&r.9)
                .execute(&b.db).await.unwrap();
            }
            assert!(matches!(
                audit::verify(&b.db).await.unwrap(),
                ChainStatus::Intact { .. }
            ));
        };
        restore().await;

        // Delete a middle entry.
        exec(&b, "DELETE FROM audit_log WHERE seq = 3").await;
        assert_eq!(broken_at(audit::verify(&b.db).await.unwrap()), 3);
        restore().await;

        // Reorder: swap the contents of two entries (keep seq numbers contiguous).
        exec(&b, "UPDATE audit_log SET seq = -1 WHERE seq = 4").await;
        exec(&b, "UPDATE audit_log SET seq = 4 WHERE seq = 5").await;
        exec(&b, "UPDATE audit_log SET seq = 5 WHERE seq = -1").await;
        assert_eq!(broken_at(audit::verify(&b.db).await.unwrap()), 4);
        restore().await;

        // Truncate the tail: the recorded head no longer matches.
        exec(&b, &format!("DELETE FROM audit_log WHERE seq = {n}")).await;
        assert_eq!(broken_at(audit::verify(&b.db).await.unwrap()), n);
        restore().await;

        // Recompute-a-hash forgery: fixing the edited entry's own hash still breaks the next link.
        let r = &snapshot[2];
        let forged_detail = "{\"forged\":true}";
        let salts: serde_json::Map<String, Value> =
            serde_json::from_str(r.9.as_deref().unwrap()).unwrap();
        let digest = |f: &str, v: &str| audit::field_digest(salts[f].as_str().unwrap(), v);
        let d = [
            digest("actor", &r.2),
            digest("subject", &r.4),
            digest("detail", forged_detail),
        ];
        let forged = audit::entry_hash_v2(&r.6, r.0, &r.1, &r.3, [&d[0], &d[1], &d[2]]);
        sqlx::query("UPDATE audit_log SET detail = $1, hash = $2 WHERE seq = $3")
            .bind(forged_detail)
            .bind(forged)
            .bind(r.0)
            .execute(&b.db)
            .await
            .unwrap();
        assert_eq!(broken_at(audit::verify(&b.db).await.unwrap()), r.0 + 1);
    }
);

// Two independent catalogues (as two server processes would have) appending to one tenant
// concurrently: the chain stays contiguous and intact.
both_backends!(
    appends_from_two_processes_stay_contiguous,
    |app: TestApp| async move {
        let key = docket::config::parse_master_key(secrecy::ExposeSecret::expose_secret(
            app.config.master_key.as_ref().unwrap(),
        ))
        .unwrap();
        let other = docket::tenancy::Catalog::open(
            &app.config.data_dir,
            &app.config.database,
            docket::storage::crypto::Key::from_bytes(&key),
        )
        .await
        .unwrap();
        let t1 = app.tenant(&app.firm_a).await;
        let t2 = other.tenant(&app.firm_a.id).await.unwrap();
        let user = docket::directory::user_by_email(&t1.db, "alice@a.test")
            .await
            .unwrap()
            .unwrap();
        let limits = app.config.limits.clone();
        let mut tasks = Vec::new();
        for i in 0..24 {
            let t = if i % 2 == 0 { t1.clone() } else { t2.clone() };
            let (user, limits) = (user.clone(), limits.clone());
            tasks.push(tokio::spawn(async move {
                let raw = email(&format!("p{i}"), Some(&format!("<p-{i}@acme.com>")), &[]);
                docket::filing::file_message(
                    &t,
                    &limits,
                    &user,
                    docket::filing::FilingInput {
                        raw,
                        gmail_message_id: None,
                        gmail_thread_id: None,
                        targets: vec![docket::filing::TargetRef {
                            kind: "matter".into(),
                            id: "M-1".into(),
                        }],
                        attachments: Default::default(),
                        note: None,
                    },
                )
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let ChainStatus::Intact { entries, .. } = audit::verify(&t1.db).await.unwrap() else {
            panic!("broken chain")
        };
        let seqs: Vec<i64> = sqlx::query_scalar::<_, i64>("SELECT seq FROM audit_log ORDER BY seq")
            .fetch_all(&t1.db)
            .await
            .unwrap();
        assert_eq!(seqs, (1..=entries).collect::<Vec<_>>());
        other.close().await;
    }
);

/// Rewrites a tenant's chain in format 1, as a database from before format 2 holds it;
/// returns the old head's hash.
async fn to_format_1(t: &docket::tenancy::Tenant) -> String {
    use sqlx::Row;
    let rows =
        sqlx::query("SELECT seq, at, actor, action, subject, detail FROM audit_log ORDER BY seq")
            .fetch_all(&t.db)
            .await
            .unwrap();
    let mut prev = audit::GENESIS_HASH.to_string();
    for r in &rows {
        let (seq, at, actor, action, subject, detail): (
            i64,
            String,
            String,
            String,
            String,
            String,
        ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        let hash = audit::entry_hash(&prev, seq, &at, &actor, &action, &subject, &detail);
        sqlx::query("UPDATE audit_log SET version = 1, salts = NULL, erased = NULL, prev_hash = $1, hash = $2 WHERE seq = $3")
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
    prev
}

both_backends!(
    a_format_1_chain_is_upgraded_on_open_and_erased_fields_keep_it_verifying,
    |app: TestApp| async move {
        use docket::audit::anchor;
        use sqlx::Row;
        file_some(&app, 2).await;
        let catalog = &app.state.catalog;
        let id = app.firm_a.id.clone();
        let t = app.tenant(&app.firm_a).await;
        let old_head = to_format_1(&t).await;
        // A format-1 row carrying an `erased` marker (nothing can be erased in format 1) does
        // not stop the upgrade.
        exec(
            &t,
            "UPDATE audit_log SET erased = '{\"actor\":\"00\"}' WHERE seq = 1",
        )
        .await;
        anchor::reset(catalog, &t).await.unwrap();
        let ChainStatus::Intact { entries: n, .. } = audit::verify(&t.db).await.unwrap() else {
            panic!("a format-1 chain verifies")
        };
        drop(t);
        catalog.evict(&id).await;
        let t = catalog.tenant(&id).await.unwrap();
        let v1: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log WHERE version < 2")
            .fetch_one(&t.db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(v1, 0);
        let last = &audit::list(&t.db, 1).await.unwrap()[0];
        assert_eq!(last.action, "audit.upgraded");
        let detail: Value = serde_json::from_str(&last.detail).unwrap();
        assert_eq!(detail["entries"].as_i64(), Some(n));
        assert!(
            !last.detail.contains(&old_head),
            "no unsalted commitment to the old entries"
        );
        let (status, a) = anchor::verify(catalog, &t).await.unwrap();
        assert!(matches!(status, ChainStatus::Intact { .. }), "{status:?}");
        assert_eq!(a.unwrap().seq, n + 1, "anchored anew at the upgrade");

        // Erase alice from the first filing's entry: it reads [erased], the chain verifies.
        let seq: i64 = sqlx::query("SELECT MIN(seq) FROM audit_log WHERE action = 'filing.created' AND actor = 'alice@a.test'")
            .fetch_one(&t.db).await.unwrap().get(0);
        // An erasure without its record in the catalogue is what someone with the tenant's
        // database could do: the chain alone accepts it, its check against the catalogue not.
        let mut tx = docket::tenancy::db::begin(&t.db).await.unwrap();
        audit::lock_chain(&mut tx).await.unwrap();
        audit::erase_fields(&mut tx, seq, &["actor", "detail"])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(matches!(
            audit::verify(&t.db).await.unwrap(),
            ChainStatus::Intact { .. }
        ));
        let (status, _) = anchor::verify(catalog, &t).await.unwrap();
        assert_eq!(broken_at(status.clone()), seq, "{status:?}");
        // Recorded, as an erasure does first, it verifies.
        anchor::record_erasures(catalog.pool(), &t.id, &[(seq, "actor"), (seq, "detail")])
            .await
            .unwrap();
        let r = sqlx::query("SELECT actor, detail, salts, erased FROM audit_log WHERE seq = $1")
            .bind(seq)
            .fetch_one(&t.db)
            .await
            .unwrap();
        assert_eq!(
            (
                r.get::<String, _>(0).as_str(),
                r.get::<String, _>(1).as_str()
            ),
            (audit::ERASED, audit::ERASED)
        );
        let salts: Value = serde_json::from_str(&r.get::<String, _>(2)).unwrap();
        assert!(salts.get("actor").is_none() && salts.get("subject").is_some());
        assert!(matches!(
            anchor::verify(catalog, &t).await.unwrap().0,
            ChainStatus::Intact { .. }
        ));
        // Writing into an erased field is caught.
        exec(
            &t,
            &format!("UPDATE audit_log SET actor = 'mallory@a.test' WHERE seq = {seq}"),
        )
        .await;
        assert_eq!(broken_at(audit::verify(&t.db).await.unwrap()), seq);
        exec(
            &t,
            &format!("UPDATE audit_log SET actor = '[erased]' WHERE seq = {seq}"),
        )
        .await;

        // A format-1 chain that does not verify is not upgraded (and says where it breaks).
        let b = app.tenant(&app.firm_b).await;
        to_format_1(&b).await;
        exec(&b, "UPDATE audit_log SET detail = '{}' WHERE seq = 1").await;
        drop(b);
        catalog.evict(&app.firm_b.id).await;
        let b = catalog.tenant(&app.firm_b.id).await.unwrap();
        let v1: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log WHERE version < 2")
            .fetch_one(&b.db)
            .await
            .unwrap()
            .get(0);
        assert!(v1 > 0, "left as it was");
        assert_eq!(broken_at(audit::verify(&b.db).await.unwrap()), 1);
    }
);
