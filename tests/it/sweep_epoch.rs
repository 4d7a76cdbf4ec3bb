//! The sweep and filings in different processes (`src/sweep_epoch.rs`): a second `Catalog`
//! on the same database and blob store plays the other process — its blob lease is its
//! own, as another process's would be — and sweeps with no grace period at all, so every
//! blob a filing here has written but not yet committed is fair game to it.

use std::sync::Arc;
use std::time::Duration;

use docket::sweep_epoch::{self, SweepPhase};
use docket::tenancy::{Catalog, Tenant};
use serde_json::Value;
use sqlx::Row;

use crate::common::*;
use crate::{all_stores, both_backends};

/// The same data as `app`'s, opened again as another process would.
async fn other_process(app: &TestApp) -> (Catalog, Arc<Tenant>) {
    let key = docket::app::master_key(&app.config, docket::Mode::Serve, false).unwrap();
    let catalog = docket::app::open_catalog(&app.config, key).await.unwrap();
    let t = catalog.tenant(&app.firm_a.id).await.unwrap();
    (catalog, t)
}

async fn epoch(t: &Tenant) -> (i64, i64) {
    let row = sqlx::query("SELECT epoch, started_at FROM blob_sweep WHERE id = 1")
        .fetch_one(&t.db)
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn file(app: &TestApp, raw: &[u8]) -> reqwest::Response {
    let tok = app.token("alice@a.test");
    app.post_filing(&tok, &filing_body(raw, &["matter:M-1"]))
        .await
}

all_stores!(
    a_sweep_elsewhere_never_deletes_what_a_filing_here_committed,
    |app: TestApp| async move {
        let (_other, there) = other_process(&app).await;
        let (mut sweeps, mut removed) = (0, 0);
        // Filings here, four at a time, each with blobs of its own, while the other process
        // sweeps twice.
        let mut filed: Vec<(Vec<u8>, Vec<u8>, Value)> = Vec::new();
        let mut busy = 0;
        for round in 0..10u8 {
            let mut tasks = Vec::new();
            for i in 0..4u8 {
                let att = noise(3000 + i as usize, round * 4 + i);
                let raw = email(
                    &format!("raced {round}-{i}"),
                    Some(&format!("<raced-{round}-{i}@acme.com>")),
                    &[("a.bin", "application/octet-stream", att.clone())],
                );
                let app = &app;
                tasks.push(async move { (file(app, &raw).await, raw, att) });
            }
            let sweeping = async {
                for _ in 0..2 {
                    tokio::task::yield_now().await;
                    let r = docket::maintenance::sweep_tenant(&there, Duration::ZERO)
                        .await
                        .unwrap();
                    (sweeps, removed) = (sweeps + 1, removed + r.orphan_blobs);
                }
            };
            let (answers, ()) = tokio::join!(futures::future::join_all(tasks), sweeping);
            for (r, raw, att) in answers {
                match r.status().as_u16() {
                    201 => filed.push((raw, att, r.json().await.unwrap())),
                    _ => {
                        let (status, p) = problem(r).await;
                        assert_eq!(
                            (status, p["type"].as_str()),
                            (503, Some("urn:docket:problem:sweep-in-progress")),
                            "{p}"
                        );
                        busy += 1;
                    }
                }
            }
        }
        eprintln!("{} filed, {busy} answered sweep-in-progress; {sweeps} sweeps elsewhere removed {removed} blobs", filed.len());
        assert!(
            filed.len() >= 20,
            "most filings get through: {} of 40",
            filed.len()
        );
        // Every acknowledged filing is whole.
        let tok = app.token("alice@a.test");
        for (raw, att, v) in &filed {
            let id = v["filings"][0]["id"].as_str().unwrap();
            let r = app.get(&tok, &format!("/v1/filings/{id}/raw")).await;
            assert_eq!(r.status(), 200, "the raw message of filing {id}");
            assert_eq!(&r.bytes().await.unwrap()[..], &raw[..]);
            let r = app
                .get(&tok, &format!("/v1/filings/{id}/attachments/0"))
                .await;
            assert_eq!(r.status(), 200, "the attachment of filing {id}");
            assert_eq!(&r.bytes().await.unwrap()[..], &att[..]);
        }
        let here = app.tenant(&app.firm_a).await;
        let (e, _) = epoch(&here).await;
        assert_eq!(e % 2, 0, "no sweep is left open");
    }
);

both_backends!(
    a_filing_waits_for_a_sweep_elsewhere_and_then_goes_through,
    |app: TestApp| async move {
        let (_other, there) = other_process(&app).await;
        let here = app.tenant(&app.firm_a).await;
        let before = counts(&here).await;
        let phase = SweepPhase::begin(&there)
            .await
            .unwrap()
            .expect("no sweep yet");
        // The sweep stays open longer than a filing waits: 503, Retry-After, nothing filed.
        let raw = email(
            "waits",
            Some("<waits@acme.com>"),
            &[("w.bin", "application/octet-stream", noise(500, 9))],
        );
        let r = file(&app, &raw).await;
        assert_eq!(
            r.headers()["retry-after"],
            sweep_epoch::RETRY_AFTER_SECS.to_string().as_str()
        );
        let (status, p) = problem(r).await;
        assert_eq!(status, 503);
        assert_eq!(p["type"], "urn:docket:problem:sweep-in-progress");
        assert_eq!(counts(&here).await, before);
        // A second sweep does not open a phase over the first one.
        assert!(SweepPhase::begin(&here).await.unwrap().is_none());
        phase.end(&there).await.unwrap();
        assert_eq!(file(&app, &raw).await.status(), 201);
    }
);

both_backends!(
    a_dead_sweeps_epoch_is_closed_after_its_lease,
    |app: TestApp| async move {
        let here = app.tenant(&app.firm_a).await;
        // A sweep that made the epoch odd and died, longer ago than the lease.
        let long_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - sweep_epoch::LEASE.as_secs() as i64
            - 60;
        sqlx::query("UPDATE blob_sweep SET epoch = 7, started_at = $1 WHERE id = 1")
            .bind(long_ago)
            .execute(&here.db)
            .await
            .unwrap();
        let raw = email("after a dead sweep", Some("<dead@acme.com>"), &[]);
        assert_eq!(file(&app, &raw).await.status(), 201);
        assert_eq!(epoch(&here).await.0, 8);
        // And a sweep finds the same: it closes the dead one and runs.
        sqlx::query("UPDATE blob_sweep SET epoch = 9, started_at = $1 WHERE id = 1")
            .bind(long_ago)
            .execute(&here.db)
            .await
            .unwrap();
        let orphan = put_blob(&here, b"left by a failed filing").await;
        let r = docket::maintenance::sweep_tenant(&here, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(r.orphan_blobs, 1);
        assert!(!here.blobs.exists(&orphan).unwrap());
        assert_eq!(
            epoch(&here).await.0,
            12,
            "closed (10), opened (11), ended (12)"
        );
    }
);

both_backends!(
    a_filing_that_a_sweep_elsewhere_overlapped_is_not_committed,
    |app: TestApp| async move {
        let (_other, there) = other_process(&app).await;
        let here = app.tenant(&app.firm_a).await;
        // What a filing does: the epoch, then its blob...
        let seen = sweep_epoch::settled(&here).await.unwrap();
        let id = put_blob(&here, b"written, not yet committed").await;
        // ...while a sweep elsewhere deletes it, unreferenced as it still is.
        let r = docket::maintenance::sweep_tenant(&there, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(r.orphan_blobs, 1);
        assert!(!here.blobs.exists(&id).unwrap());
        // Its transaction finds the epoch moved, and must not commit.
        let mut tx = here.begin().await.unwrap();
        docket::audit::lock_chain(&mut tx).await.unwrap();
        let now = sweep_epoch::in_tx(&mut tx).await.unwrap();
        let e = sweep_epoch::check(now, seen).unwrap_err();
        assert!(sweep_epoch::raced(&e), "{e}");
        tx.rollback().await.unwrap();
        // A filing read afterwards is fine.
        let seen = sweep_epoch::settled(&here).await.unwrap();
        let mut tx = here.begin().await.unwrap();
        docket::audit::lock_chain(&mut tx).await.unwrap();
        let now = sweep_epoch::in_tx(&mut tx).await.unwrap();
        sweep_epoch::check(now, seen).unwrap();
        tx.rollback().await.unwrap();
    }
);
