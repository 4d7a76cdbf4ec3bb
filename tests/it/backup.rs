//! Backups (`src/backup/`): taken while docket serves, checked by restoring them into a
//! scratch place, incremental for blobs; damage of every kind is named by the check; a
//! backup taken during a filing load is consistent; the results reach `/metrics`.

use std::path::{Path, PathBuf};

use docket::backup;
use serde_json::Value;
use sqlx::Row;

use crate::both_backends;
use crate::common::*;

/// Files `n` messages (each with an attachment of its own) as alice; returns their bodies.
async fn file_some(app: &TestApp, tag: &str, n: usize) -> Vec<Value> {
    let tok = app.token("alice@a.test");
    let mut out = Vec::new();
    for i in 0..n {
        let raw = email(
            &format!("{tag} {i}"),
            Some(&format!("<{tag}-{i}@acme.com>")),
            &[("a.pdf", "application/pdf", noise(5000 + i, seed(tag, i)))],
        );
        let r = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await;
        assert_eq!(r.status(), 201);
        out.push(r.json().await.unwrap());
    }
    out
}

/// A noise seed of its own for each (tag, index).
fn seed(tag: &str, i: usize) -> u8 {
    tag.bytes()
        .fold(i as u8, |a, b| a.wrapping_mul(31).wrapping_add(b))
}

async fn back_up(app: &TestApp, dir: &Path) -> backup::Created {
    backup::create(&app.state.catalog, &app.firm_a.id, dir)
        .await
        .unwrap()
}

async fn verify_err(app: &TestApp, snapshot: &Path) -> String {
    let e = backup::verify(&app.state.catalog, snapshot)
        .await
        .expect_err("the check must fail");
    format!("{e:#}")
}

both_backends!(
    a_backup_taken_while_serving_verifies_and_copies_only_new_blobs,
    |app: TestApp| async move {
        let dir = tempfile::tempdir().unwrap();
        file_some(&app, "first", 3).await;
        let one = back_up(&app, dir.path()).await;
        assert_eq!((one.facts.messages, one.facts.filings), (3, 3));
        assert_eq!(one.blobs_total, 6, "3 raw messages and 3 attachments");
        assert_eq!(one.blobs_copied, 6);
        let v = backup::verify(&app.state.catalog, &one.location)
            .await
            .unwrap();
        assert_eq!(v.facts, one.facts);
        // Nothing new: nothing copied. Two more filings: only their blobs.
        assert_eq!(back_up(&app, dir.path()).await.blobs_copied, 0);
        file_some(&app, "second", 2).await;
        let three = back_up(&app, dir.path()).await;
        assert_eq!((three.blobs_copied, three.blobs_total), (4, 10));
        assert_eq!(three.facts.messages, 5);
        // The whole directory: each tenant's newest backup, which is the third.
        let newest = backup::resolve(dir.path());
        assert_eq!(newest, vec![three.location.clone()]);
        backup::verify(&app.state.catalog, &newest[0])
            .await
            .unwrap();
        // Nothing in the backup is plaintext: no attachment's bytes appear in any file.
        let needle = &noise(5000, seed("first", 0))[..64];
        for f in files_under(dir.path()) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext",
                f.display()
            );
        }
        // The catalogue knows.
        let s = backup::status(&app.state.catalog).await.unwrap();
        let a = s.iter().find(|s| s.tenant_id == app.firm_a.id).unwrap();
        assert!(a.last_backup.is_some() && a.last_verify.is_some());
        assert!(!a.backup_failing && !a.verify_failing);
        let b = s.iter().find(|s| s.tenant_id == app.firm_b.id).unwrap();
        assert!(b.last_backup.is_none());
    }
);

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        match e.path().is_dir() {
            true => out.extend(files_under(&e.path())),
            false => out.push(e.path()),
        }
    }
    out
}

both_backends!(
    verify_names_a_damaged_file_a_missing_blob_and_an_edited_audit_row,
    |app: TestApp| async move {
        let dir = tempfile::tempdir().unwrap();
        file_some(&app, "damage", 2).await;
        // A damaged file.
        let b = back_up(&app, dir.path()).await;
        let db = b.location.join("database.sealed");
        let mut bytes = std::fs::read(&db).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&db, &bytes).unwrap();
        let e = verify_err(&app, &b.location).await;
        assert!(
            e.contains("database.sealed") && e.contains("SHA-256"),
            "{e}"
        );
        std::fs::remove_dir_all(dir.path().join(&app.firm_a.id)).unwrap();
        // A missing blob.
        let b = back_up(&app, dir.path()).await;
        let m = backup::read_manifest(&b.location).unwrap();
        let blob = m.blobs.iter().next().unwrap().clone();
        let rel = format!("blobs/{}/{blob}", &blob[..2]);
        std::fs::remove_file(dir.path().join(&app.firm_a.id).join(&rel)).unwrap();
        let e = verify_err(&app, &b.location).await;
        assert!(e.contains(&format!("file {rel} is missing")), "{e}");
        std::fs::remove_dir_all(dir.path().join(&app.firm_a.id)).unwrap();
        // An audit row edited in the database before the backup: every hash in the
        // manifest is right, and the chain still gives it away.
        let t = app.tenant(&app.firm_a).await;
        sqlx::query("UPDATE audit_log SET actor = 'mallory@a.test' WHERE seq = 2")
            .execute(&t.db)
            .await
            .unwrap();
        let b = back_up(&app, dir.path()).await;
        let e = verify_err(&app, &b.location).await;
        assert!(e.contains("audit chain broken at entry 2"), "{e}");
        // A backup without its manifest is not a backup.
        std::fs::remove_file(b.location.join("manifest.json")).unwrap();
        let e = verify_err(&app, &b.location).await;
        assert!(e.contains("manifest.json"), "{e}");
        // Each failure is recorded: the tenant's latest check failed.
        let s = backup::status(&app.state.catalog).await.unwrap();
        let a = s.iter().find(|s| s.tenant_id == app.firm_a.id).unwrap();
        assert!(a.verify_failing && a.last_verify.is_none());
        let runs: i64 = sqlx::query(
            "SELECT COUNT(*) FROM backup_runs WHERE tenant_id = $1 AND kind = 'verify' AND ok = 0",
        )
        .bind(&app.firm_a.id)
        .fetch_one(app.state.catalog.pool())
        .await
        .unwrap()
        .get(0);
        assert_eq!(runs, 4);
    }
);

both_backends!(
    a_backup_taken_during_a_filing_load_is_consistent,
    |app: TestApp| async move {
        let dir = tempfile::tempdir().unwrap();
        file_some(&app, "before", 2).await;
        let tok = app.token("alice@a.test");
        let load = async {
            let mut filed = 0;
            for i in 0..24u8 {
                let raw = email(
                    &format!("load {i}"),
                    Some(&format!("<load-{i}@acme.com>")),
                    &[("l.bin", "application/octet-stream", noise(20_000, i))],
                );
                let r = app
                    .post_filing(&tok, &filing_body(&raw, &["matter:M-1", "case:C-1"]))
                    .await;
                assert_eq!(r.status(), 201);
                filed += 1;
            }
            filed
        };
        let taking = async {
            let mut taken = Vec::new();
            for _ in 0..3 {
                tokio::task::yield_now().await;
                taken.push(back_up(&app, dir.path()).await);
            }
            taken
        };
        let (filed, taken) = tokio::join!(load, taking);
        assert_eq!(filed, 24);
        for b in &taken {
            // Two filings per message: a snapshot never holds half of one.
            assert_eq!(
                b.facts.filings,
                2 + 2 * (b.facts.messages - 2),
                "{:?}",
                b.facts
            );
            backup::verify(&app.state.catalog, &b.location)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:#}", b.location.display()));
        }
        let last = back_up(&app, dir.path()).await;
        assert_eq!(last.facts.messages, 26);
        backup::verify(&app.state.catalog, &last.location)
            .await
            .unwrap();
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_results_reach_the_metrics_without_naming_a_tenant() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let last = r#"docket_backup_last_success_timestamp_seconds{kind="create"}"#;
    let checked = r#"docket_backup_last_success_timestamp_seconds{kind="verify"}"#;
    let failing = r#"docket_backup_failing_tenants{kind="verify"}"#;
    // Never backed up: the oldest last backup is "never".
    assert_eq!(scraped(&app, last).await, 0.0);
    let dir = tempfile::tempdir().unwrap();
    let a = back_up(&app, dir.path()).await;
    assert_eq!(scraped(&app, last).await, 0.0, "firm B has none yet");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let b = backup::create(&app.state.catalog, &app.firm_b.id, dir.path())
        .await
        .unwrap();
    let at = scraped(&app, last).await;
    assert!((now - 60.0..=now + 60.0).contains(&at), "{at} vs {now}");
    // A failed check shows; a good one for every tenant clears it.
    std::fs::remove_file(a.location.join("tenant.sealed")).unwrap();
    assert!(backup::verify(&app.state.catalog, &a.location)
        .await
        .is_err());
    assert_eq!(scraped(&app, failing).await, 1.0);
    assert_eq!(scraped(&app, checked).await, 0.0);
    backup::verify(&app.state.catalog, &b.location)
        .await
        .unwrap();
    let a2 = back_up(&app, dir.path()).await;
    backup::verify(&app.state.catalog, &a2.location)
        .await
        .unwrap();
    assert_eq!(scraped(&app, failing).await, 0.0);
    assert!(scraped(&app, checked).await > 0.0);
    // No tenant id, name or domain anywhere in the scrape.
    let text = scrape_text(&app).await;
    for secret in [app.firm_a.id.as_str(), &app.firm_b.id, "Firm A", "a.test"] {
        assert!(!text.contains(secret), "{secret} in the scrape");
    }
}

/// Each filing's raw message and attachments, as served.
async fn served(app: &TestApp, filings: &[Value]) -> Vec<(u16, Vec<u8>)> {
    let tok = app.token("alice@a.test");
    let mut out = Vec::new();
    for f in filings {
        let id = f["filings"][0]["id"].as_str().unwrap();
        for path in [
            format!("/v1/filings/{id}/raw"),
            format!("/v1/filings/{id}/attachments/0"),
        ] {
            let r = app.get(&tok, &path).await;
            out.push((r.status().as_u16(), r.bytes().await.unwrap().to_vec()));
        }
    }
    out
}

/// What a lost disk leaves: no database and no blobs of firm A.
async fn lose_firm_a(app: &TestApp) {
    let catalog = &app.state.catalog;
    let id = &app.firm_a.id;
    match app.backend {
        Backend::Sqlite => {
            std::fs::remove_dir_all(catalog.data_dir().join("tenants").join(id)).unwrap();
        }
        Backend::Postgres => {
            let url = catalog.tenant_database_url(id).await.unwrap();
            let admin = docket::tenancy::db::open_pg(catalog.pg_admin_url().unwrap(), 1)
                .await
                .unwrap();
            docket::tenancy::db::drop_pg_tenant_db(&admin, url.username())
                .await
                .unwrap();
            admin.close().await;
            std::fs::remove_dir_all(catalog.blob_root(id)).unwrap();
        }
    }
}

both_backends!(
    a_tenant_restored_in_place_serves_the_same_filings_byte_for_byte,
    |app: TestApp| async move {
        let mut app = app;
        let dir = tempfile::tempdir().unwrap();
        let filings = file_some(&app, "kept", 3).await;
        let before = served(&app, &filings).await;
        assert!(before.iter().all(|(s, _)| *s == 200));
        let b = back_up(&app, dir.path()).await;
        let catalog = &app.state.catalog;
        let id = app.firm_a.id.clone();
        // A filing after the backup, anchored: the restore rolls the chain back behind its
        // anchor, with notice.
        file_some(&app, "lost", 1).await;
        let t = app.tenant(&app.firm_a).await;
        docket::audit::anchor::advance(catalog, &t).await.unwrap();
        drop(t);
        // Not while the tenant is active, and not over a database that is there.
        let e = backup::restore(catalog, &b.location, &id, None)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("suspend it first"), "{e:#}");
        catalog.set_status(&id, "suspended").await.unwrap();
        if app.backend == Backend::Sqlite {
            // On SQLite, not while docket serves that data dir: its connections would go
            // on writing to the database being replaced.
            let e = backup::restore(catalog, &b.location, &id, None)
                .await
                .unwrap_err();
            assert!(
                format!("{e:#}").contains("docket serve is running"),
                "{e:#}"
            );
            app.stop().await;
        }
        // The operator's own process, as `docket backup restore` would be.
        let key = docket::app::master_key(&app.config, docket::Mode::Serve, false).unwrap();
        let cli = docket::app::open_catalog(&app.config, key).await.unwrap();
        let catalog = &cli;
        let e = backup::restore(catalog, &b.location, &id, None)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("empty place"), "{e:#}");
        // The disk is lost: docket says so rather than serve an empty firm.
        lose_firm_a(&app).await;
        catalog.set_status(&id, "active").await.unwrap();
        if app.backend == Backend::Sqlite {
            let e = catalog.tenant(&id).await.err().expect("a missing database");
            assert!(format!("{e:#}").contains("missing"), "{e:#}");
        }
        catalog.set_status(&id, "suspended").await.unwrap();
        let r = backup::restore(catalog, &b.location, &id, None)
            .await
            .unwrap();
        assert_eq!((r.tenant_id.as_str(), r.blobs_written), (id.as_str(), 6));
        catalog.set_status(&id, "active").await.unwrap();
        if app.backend == Backend::Sqlite {
            app.start_again().await;
        }
        assert_eq!(served(&app, &filings).await, before);
        let t = app.tenant(&app.firm_a).await;
        assert_eq!(counts(&t).await.0, 3);
        match docket::audit::verify(&t.db).await.unwrap() {
            docket::audit::ChainStatus::Intact { entries, .. } => {
                assert_eq!(entries, b.facts.audit_entries + 1, "plus backup.restored")
            }
            broken => panic!("{broken:?}"),
        }
        let anchored = docket::audit::anchor::verify(&app.state.catalog, &t)
            .await
            .unwrap();
        assert!(
            matches!(anchored.0, docket::audit::ChainStatus::Intact { .. }),
            "the restore reset the anchor: {anchored:?}"
        );
        // The restored firm files again.
        file_some(&app, "after", 1).await;
        // The restore is recorded.
        let ok: i64 = sqlx::query(
            "SELECT ok FROM backup_runs WHERE kind = 'restore' ORDER BY finished_at DESC LIMIT 1",
        )
        .fetch_one(app.state.catalog.pool())
        .await
        .unwrap()
        .get(0);
        assert_eq!(ok, 1);
    }
);

both_backends!(
    a_backup_restored_as_a_new_tenant_holds_the_same_filings_under_keys_of_its_own,
    |app: TestApp| async move {
        let dir = tempfile::tempdir().unwrap();
        file_some(&app, "copied", 2).await;
        let t = app.tenant(&app.firm_a).await;
        // An enrolled authenticator: its secret is sealed for this tenant.
        let adam = user_id(&t, "adam@a.test").await;
        let secret = t
            .blobs
            .seal_secret(&docket::accounts::totp::purpose(&adam), b"JBSWY3DPEHPK3PXP");
        sqlx::query("INSERT INTO local_accounts (user_id, password_hash, totp_secret_enc, password_set_at) VALUES ($1, 'x', $2, '2026-11-30T00:00:00Z')")
            .bind(&adam)
            .bind(secret)
            .execute(&t.db)
            .await
            .unwrap();
        admin_session(&app, &t, "adam@a.test").await;
        let b = back_up(&app, dir.path()).await;
        let catalog = &app.state.catalog;
        let r = backup::restore(
            catalog,
            &b.location,
            &app.firm_a.id,
            Some("Firm A (restored)"),
        )
        .await
        .unwrap();
        assert_ne!(r.tenant_id, app.firm_a.id);
        let info = catalog.tenant_info(&r.tenant_id).await.unwrap().unwrap();
        assert_eq!(info.name, "Firm A (restored)");
        assert!(
            info.domains.is_empty(),
            "the domains stay with the original"
        );
        let copy = catalog.tenant(&r.tenant_id).await.unwrap();
        // Every message and attachment reads back identical, under the copy's own key.
        let rows = sqlx::query(
            "SELECT raw_sha256 FROM messages UNION SELECT sha256 FROM message_attachments",
        )
        .fetch_all(&t.db)
        .await
        .unwrap();
        assert_eq!(rows.len(), 4);
        for row in rows {
            let id: String = row.get(0);
            let (orig, new) = (t.blobs.clone(), copy.blobs.clone());
            let (a, b) = tokio::task::spawn_blocking(move || {
                (orig.get(&id).unwrap(), new.get(&id).unwrap())
            })
            .await
            .unwrap();
            assert_eq!(a, b);
        }
        assert_eq!(counts(&copy).await.0, 2);
        // The authenticator opens for the copy; the original's sessions do not carry over.
        let sealed: Vec<u8> =
            sqlx::query("SELECT totp_secret_enc FROM local_accounts WHERE user_id = $1")
                .bind(&adam)
                .fetch_one(&copy.db)
                .await
                .unwrap()
                .get(0);
        let purpose = docket::accounts::totp::purpose(&adam);
        assert_eq!(
            copy.blobs.open_secret(&purpose, &sealed).unwrap(),
            b"JBSWY3DPEHPK3PXP"
        );
        let sessions: i64 = sqlx::query("SELECT COUNT(*) FROM sessions")
            .fetch_one(&copy.db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(sessions, 0);
        assert!(matches!(
            docket::audit::verify(&copy.db).await.unwrap(),
            docket::audit::ChainStatus::Intact { .. }
        ));
        // The copy's own backups check out.
        let c = backup::create(catalog, &r.tenant_id, dir.path())
            .await
            .unwrap();
        backup::verify(catalog, &c.location).await.unwrap();
    }
);

/// Rewrites `rel`'s entry in the manifest of `snapshot` to the file as it is now: damage
/// made by someone who also fixed the hashes, which only the deeper checks can find.
fn rehash(snapshot: &Path, rel: &str) {
    use sha2::Digest;
    let root = snapshot.parent().unwrap();
    let bytes = std::fs::read(root.join(rel)).unwrap();
    let mut m = backup::read_manifest(snapshot).unwrap();
    let e = m.files.get_mut(rel).unwrap();
    e.size = bytes.len() as u64;
    e.sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    std::fs::write(
        snapshot.join("manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
}

both_backends!(
    verify_opens_every_key_and_blob_even_when_the_hashes_were_fixed,
    |app: TestApp| async move {
        let dir = tempfile::tempdir().unwrap();
        file_some(&app, "deep", 2).await;
        let one = back_up(&app, dir.path()).await;
        let two = back_up(&app, dir.path()).await;
        let id = &one
            .location
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // Another backup's data key: sealed for that backup, it does not open here.
        std::fs::copy(
            two.location.join("data-key.sealed"),
            one.location.join("data-key.sealed"),
        )
        .unwrap();
        rehash(&one.location, &format!("{id}/data-key.sealed"));
        let e = verify_err(&app, &one.location).await;
        assert!(e.contains("data-key.sealed does not open"), "{e}");
        // A blob swapped for another one of the same tenant: each is bound to its address.
        let m = backup::read_manifest(&two.location).unwrap();
        let mut blobs = m.blobs.iter();
        let (a, b) = (blobs.next().unwrap(), blobs.next().unwrap());
        let rel = |x: &str| format!("blobs/{}/{x}", &x[..2]);
        let root = dir.path().join(&app.firm_a.id);
        std::fs::remove_file(root.join(rel(a))).unwrap();
        std::fs::copy(root.join(rel(b)), root.join(rel(a))).unwrap();
        rehash(&two.location, &rel(a));
        let e = verify_err(&app, &two.location).await;
        assert!(e.contains(&format!("blob {a} does not decrypt")), "{e}");
    }
);

/// Benchmark (run by hand, in release): `DOCKET_BENCH_FILINGS` (100,000) messages filed to
/// one firm straight through the filing flow (32 at a time, a 2 KB attachment each), then
/// a backup, a second (incremental) backup and a check, each timed, with the sizes.
/// `DOCKET_BENCH_PG=1` runs it on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run by hand"]
async fn backup_bench() {
    use docket::filing::{self, AttachmentSelection, FilingInput, TargetRef};
    let n: usize = std::env::var("DOCKET_BENCH_FILINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let backend = match std::env::var_os("DOCKET_BENCH_PG") {
        Some(_) => Backend::Postgres,
        None => Backend::Sqlite,
    };
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let t = app.tenant(&app.firm_a).await;
    let alice = docket::directory::user_by_email(&t.db, "alice@a.test")
        .await
        .unwrap()
        .unwrap();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = std::time::Instant::now();
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (t, alice, next) = (t.clone(), alice.clone(), next.clone());
            let limits = app.config.limits.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let mut att = noise(2000, (i % 251) as u8);
                    att.extend_from_slice(&i.to_be_bytes());
                    let raw = email(
                        &format!("bench {i}"),
                        Some(&format!("<bench-{i}@acme.com>")),
                        &[("a.bin", "application/octet-stream", att)],
                    );
                    let input = FilingInput {
                        raw,
                        gmail_message_id: None,
                        gmail_thread_id: None,
                        targets: vec![TargetRef::parse("matter:M-1").unwrap()],
                        attachments: AttachmentSelection::All,
                        note: None,
                    };
                    filing::file_message(&t, &limits, &alice, input)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let filed = t0.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let t1 = std::time::Instant::now();
    let one = back_up(&app, dir.path()).await;
    let first = t1.elapsed();
    let t2 = std::time::Instant::now();
    let two = back_up(&app, dir.path()).await;
    let second = t2.elapsed();
    let t3 = std::time::Instant::now();
    backup::verify(&app.state.catalog, &two.location)
        .await
        .unwrap();
    let check = t3.elapsed();
    let db = std::fs::metadata(two.location.join("database.sealed"))
        .unwrap()
        .len();
    eprintln!(
        "{backend:?}: {n} filings in {:.0} s; backup {:.1} s ({} blobs copied, {} bytes in all, database {} bytes sealed); \
         second backup {:.1} s ({} copied); verify {:.1} s",
        filed.as_secs_f64(),
        first.as_secs_f64(),
        one.blobs_copied,
        one.bytes,
        db,
        second.as_secs_f64(),
        two.blobs_copied,
        check.as_secs_f64()
    );
}

/// Backups pushed to the object store copy only what the bucket lacks, come back whole with
/// `pull` and verify; the purge deletes them from the bucket too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_pushed_to_the_bucket_pull_back_verify_and_go_with_the_purge() {
    use docket::backup::remote;
    let Some(app) = TestApp::spawn_s3(Backend::Sqlite).await else {
        return;
    };
    let catalog = app.state.catalog.clone();
    let storage = catalog.object_storage().expect("an object store");
    let id = app.firm_a.id.clone();
    let dir = tempfile::tempdir().unwrap();
    file_some(&app, "pushed", 2).await;
    let one = back_up(&app, dir.path()).await;
    let first = remote::push(storage, dir.path(), None).await.unwrap();
    let local_files = files_under(dir.path()).len() as u64;
    assert_eq!(first.files, local_files, "{first:?}");
    assert_eq!(first.unchanged, 0);
    // Nothing new: nothing copied. A second backup: only its files and its new blobs.
    assert_eq!(
        remote::push(storage, dir.path(), None).await.unwrap().files,
        0
    );
    file_some(&app, "pushed later", 1).await;
    let two = back_up(&app, dir.path()).await;
    let second = remote::push(storage, dir.path(), Some(&id)).await.unwrap();
    assert_eq!(
        second.files,
        4 + 2,
        "manifest, database, catalogue entry, data key and 2 blobs: {second:?}"
    );
    // Back from the bucket into an empty directory: the same files, and they verify.
    let back = tempfile::tempdir().unwrap();
    let pulled = remote::pull(storage, back.path(), None).await.unwrap();
    assert_eq!(pulled.files, files_under(dir.path()).len() as u64);
    for snapshot in [&one.location, &two.location] {
        let rel = snapshot.strip_prefix(dir.path()).unwrap();
        for f in ["manifest.json", "database.sealed"] {
            assert_eq!(
                std::fs::read(snapshot.join(f)).unwrap(),
                std::fs::read(back.path().join(rel).join(f)).unwrap()
            );
        }
        backup::verify(&catalog, &back.path().join(rel))
            .await
            .unwrap();
    }
    assert_eq!(
        remote::pull(storage, back.path(), None)
            .await
            .unwrap()
            .files,
        0
    );
    // The purge deletes the tenant's backups from the bucket (and firm B's stay).
    assert!(remote::inventory(storage, &id).await.unwrap().0 > 0);
    let t = app.tenant(&app.firm_a).await;
    docket::http::admin::security::terminate_tenant(&catalog, 90, &t, "ops", serde_json::json!({}))
        .await
        .unwrap();
    drop(t);
    catalog.clock().advance(time::Duration::days(90));
    let purged = docket::purge::purge_due(&catalog).await.unwrap();
    assert!(purged[0].inventory.bucket_backup_objects > 0);
    assert_eq!(remote::inventory(storage, &id).await.unwrap(), (0, 0));
}
