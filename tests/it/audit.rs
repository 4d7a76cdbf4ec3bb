//! The audit chain: what is recorded, and that verification pinpoints edits, deletions and
//! reordering on both backends; appends from separate processes stay contiguous.

use crate::both_backends;
use crate::common::*;
use docket::audit::{self, ChainStatus};
use serde_json::Value;

/// seq, at, actor, action, subject, detail, prev_hash, hash.
type AuditRow = (i64, String, String, String, String, String, String, String);

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
        "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log ORDER BY seq",
    )
    .fetch_all(&b.db)
    .await
    .unwrap();
        let n = snapshot.len() as i64;
        let restore = || async {
            exec(&b, "DELETE FROM audit_log").await;
            for r in &snapshot {
                sqlx::query("INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)")
                .bind(r.0).bind(&r.1).bind(&r.2).bind(&r.3).bind(&r.4).bind(&r.5).bind(&r.6).bind(&r.7)
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
        let forged = audit::entry_hash(&r.6, r.0, &r.1, &r.2, &r.3, &r.4, forged_detail);
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
