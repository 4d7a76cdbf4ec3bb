//! Purge after termination (`src/purge.rs`): nothing goes at +89 days, everything at +90
//! (database, blobs, keys, backups) on every backend and store, a tombstone proves it, the
//! backups left elsewhere are unreadable, an interrupted purge finishes on the next run, and
//! `docket serve` runs due purges by itself.

use std::path::Path;
use std::sync::Arc;

use docket::purge::{self, Step};
use docket::tenancy::{Catalog, Tenant};
use serde_json::json;
use sqlx::Row;

use crate::common::*;
use crate::{all_stores, both_backends};

async fn terminate(catalog: &Catalog, t: &Tenant) {
    docket::http::admin::security::terminate_tenant(catalog, 90, t, "ops@docket.test", json!({}))
        .await
        .unwrap();
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

/// Whether the tenant's database is still there (SQLite file, or PostgreSQL database and
/// role).
async fn database_there(app: &TestApp, id: &str, db_name: &Option<String>) -> bool {
    let catalog = &app.state.catalog;
    match db_name {
        None => catalog.tenant_db_path(id).exists(),
        Some(name) => {
            let found = |sql: &'static str| async move {
                sqlx::query(sql)
                    .bind(name)
                    .fetch_optional(catalog.pool())
                    .await
                    .unwrap()
                    .is_some()
            };
            let db = found("SELECT 1 FROM pg_database WHERE datname = $1").await;
            let role = found("SELECT 1 FROM pg_roles WHERE rolname = $1").await;
            assert_eq!(db, role, "database and role go together");
            db
        }
    }
}

async fn db_name(catalog: &Catalog, id: &str) -> Option<String> {
    sqlx::query("SELECT db_name FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_one(catalog.pool())
        .await
        .unwrap()
        .get(0)
}

/// The tenant's blob files or objects (count), looked at through a store of its own.
async fn blobs_left(catalog: &Catalog, id: &str) -> u64 {
    let store = catalog.blob_store(id);
    tokio::task::spawn_blocking(move || store.inventory().unwrap().0)
        .await
        .unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        match e.file_type().unwrap().is_dir() {
            true => copy_tree(&e.path(), &target),
            false => drop(std::fs::copy(e.path(), target).unwrap()),
        }
    }
}

all_stores!(
    nothing_is_purged_at_89_days_and_everything_at_90,
    |app: TestApp| async move {
        let catalog = app.state.catalog.clone();
        let (a, id) = (app.tenant(&app.firm_a).await, app.firm_a.id.clone());
        let tok = app.token("alice@a.test");
        for i in 0..3 {
            let raw = email(
                &format!("Purge {i}"),
                None,
                &[("a.pdf", "application/pdf", noise(4000 + i, i as u8))],
            );
            let r = app
                .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
                .await;
            assert_eq!(r.status(), 201);
        }
        let backups = tempfile::tempdir().unwrap();
        let backup = docket::backup::create(&catalog, &id, backups.path())
            .await
            .unwrap();
        // A copy docket does not know of (an offsite copy): it must become unreadable.
        let offsite = tempfile::tempdir().unwrap();
        let offsite_root = offsite.path().join(&id);
        copy_tree(&backups.path().join(&id), &offsite_root);
        let offsite_snapshot = offsite_root.join(backup.location.file_name().unwrap());
        let name = db_name(&catalog, &id).await;
        let blobs_before = blobs_left(&catalog, &id).await;
        assert_eq!(blobs_before, 6, "3 raw messages and 3 attachments");

        terminate(&catalog, &a).await;
        drop(a);
        catalog.clock().advance(days(89));
        assert!(purge::purge_due(&catalog).await.unwrap().is_empty());
        assert!(purge::tombstone(catalog.pool(), &id)
            .await
            .unwrap()
            .is_none());
        assert!(catalog.tenant_exists(&id).await.unwrap());
        assert!(database_there(&app, &id, &name).await);
        assert_eq!(blobs_left(&catalog, &id).await, blobs_before);
        assert!(backup.location.join("manifest.json").exists());
        // Asking for it by name is refused too.
        let early = purge::purge_tenant(&catalog, &id, None).await.unwrap_err();
        assert!(
            format!("{early:#}").contains("due for purge only after"),
            "{early:#}"
        );

        catalog.clock().advance(days(1));
        let purged = purge::purge_due(&catalog).await.unwrap();
        assert_eq!(purged.len(), 1, "only firm A is due");
        let stone = &purged[0];
        assert_eq!(stone.tenant_id, id);
        assert_eq!(stone.name, app.firm_a.name);
        assert_eq!(stone.terminated_by, "ops@docket.test");
        assert!(stone.purged_at.is_some());
        let inv = &stone.inventory;
        assert_eq!((inv.rows["filings"], inv.rows["messages"]), (3, 3));
        assert!(inv.rows["audit_log"] >= 4, "{inv:?}");
        assert!(inv.database_bytes > 0 && inv.blob_bytes > 0, "{inv:?}");
        assert_eq!(inv.blobs, 6);
        assert!(inv.backup_files >= 9 && inv.backup_bytes > 0, "{inv:?}");
        assert_eq!(inv.done, ["keys", "blobs", "database", "backups"]);
        assert_eq!(
            inv.audit_head.as_ref().map(|h| h.0),
            Some(inv.rows["audit_log"]),
            "the tombstone keeps the chain's last entry"
        );

        // Gone: the catalogue rows, the database (and role), the blobs, the backups.
        assert!(!catalog.tenant_exists(&id).await.unwrap());
        assert!(catalog
            .tenant_id_for_domain("a.test")
            .await
            .unwrap()
            .is_none());
        assert!(!database_there(&app, &id, &name).await);
        assert_eq!(blobs_left(&catalog, &id).await, 0);
        assert!(!catalog.tenant_dir(&id).exists());
        assert!(!backups.path().join(&id).exists());
        // The copy elsewhere is still there, and cannot be opened: its key is gone.
        let e = docket::backup::verify(&catalog, &offsite_snapshot)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("key"), "{e:#}");
        // The tombstone stays; a second run has nothing to do.
        assert!(purge::purge_due(&catalog).await.unwrap().is_empty());
        let all = purge::tombstones(catalog.pool()).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].inventory, *inv);
        // Firm B is untouched and still files.
        let tok_b = app.token("bob@b.test");
        let raw = email("After the purge", None, &[]);
        let r = app
            .post_filing(&tok_b, &filing_body(&raw, &["matter:B-9"]))
            .await;
        assert_eq!(r.status(), 201);
    }
);

/// A tenant of its own (with one blob), terminated.
async fn doomed(catalog: &Catalog, n: usize) -> (String, Arc<Tenant>) {
    let info = catalog
        .create_tenant(&format!("Doomed {n}"), &[format!("doomed{n}.test")], "ops")
        .await
        .unwrap();
    let t = catalog.tenant(&info.id).await.unwrap();
    put_blob(&t, format!("evidence {n}").as_bytes()).await;
    terminate(catalog, &t).await;
    (info.id, t)
}

both_backends!(
    a_purge_interrupted_before_any_step_finishes_on_the_next_run,
    |app: TestApp| async move {
        let catalog = app.state.catalog.clone();
        let steps = [
            Step::Keys,
            Step::Blobs,
            Step::Database,
            Step::Backups,
            Step::Tombstone,
        ];
        let mut ids = Vec::new();
        for (n, _) in steps.iter().enumerate() {
            ids.push(doomed(&catalog, n).await);
        }
        catalog.clock().advance(days(90));
        for ((id, _), step) in ids.iter().zip(steps) {
            let name = db_name(&catalog, id).await;
            let part = purge::purge_tenant(&catalog, id, Some(step)).await.unwrap();
            assert!(part.purged_at.is_none(), "{step:?}: not finished");
            assert!(catalog.tenant_exists(id).await.unwrap(), "{step:?}");
            assert_eq!(part.inventory.blobs, 1, "{step:?}: {:?}", part.inventory);
            // Once the keys are gone, the tenant can no longer be opened, on any path.
            if step != Step::Keys {
                let e = catalog.tenant(id).await.err().expect("no data key");
                assert!(format!("{e:#}").contains("being purged"), "{step:?}: {e:#}");
            }
            assert_eq!(
                blobs_left(&catalog, id).await,
                matches!(step, Step::Keys | Step::Blobs) as u64,
                "{step:?}"
            );
            assert_eq!(
                database_there(&app, id, &name).await,
                matches!(step, Step::Keys | Step::Blobs | Step::Database),
                "{step:?}"
            );
        }
        // The next run (scheduled or by hand) finishes every one, keeping each inventory.
        let finished = purge::purge_due(&catalog).await.unwrap();
        assert_eq!(finished.len(), steps.len());
        for (id, _) in &ids {
            let stone = purge::tombstone(catalog.pool(), id).await.unwrap().unwrap();
            assert!(stone.purged_at.is_some());
            assert_eq!(stone.inventory.blobs, 1);
            assert_eq!(
                stone.inventory.done,
                ["keys", "blobs", "database", "backups"]
            );
            assert!(!catalog.tenant_exists(id).await.unwrap());
            assert_eq!(blobs_left(&catalog, id).await, 0);
        }
        // The firms that were never terminated are untouched.
        assert!(catalog.tenant_exists(&app.firm_a.id).await.unwrap());
        assert_eq!(
            purge::tombstones(catalog.pool()).await.unwrap().len(),
            steps.len()
        );
    }
);

both_backends!(serve_runs_due_purges_by_itself, |app: TestApp| async move {
    let catalog = app.state.catalog.clone();
    let (id, t) = doomed(&catalog, 7).await;
    drop(t);
    catalog.clock().advance(days(90));
    purge::spawn_schedule(catalog.clone(), std::time::Duration::from_millis(50));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stone = purge::tombstone(catalog.pool(), &id).await.unwrap();
        if stone.is_some_and(|s| s.purged_at.is_some()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not purged within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!catalog.tenant_exists(&id).await.unwrap());
});

/// A tenant whose database cannot be read is still purged: its keys go first, whatever
/// could not be counted is noted in the tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_database_does_not_keep_the_keys_alive() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let catalog = app.state.catalog.clone();
    let (id, t) = doomed(&catalog, 9).await;
    drop(t);
    catalog.evict(&id).await;
    std::fs::write(catalog.tenant_db_path(&id), b"not a database at all").unwrap();
    catalog.clock().advance(days(90));
    let purged = purge::purge_due(&catalog).await.unwrap();
    assert_eq!(purged.len(), 1);
    let inv = &purged[0].inventory;
    assert!(
        inv.not_counted.iter().any(|n| n.starts_with("database")),
        "{inv:?}"
    );
    assert_eq!(inv.blobs, 1, "the blobs were still counted");
    assert!(!catalog.tenant_exists(&id).await.unwrap());
    assert!(!catalog.tenant_dir(&id).exists());
}
