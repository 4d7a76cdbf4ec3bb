//! Blobs at rest: encrypted, content-addressed per tenant, tamper and cross-tenant swaps
//! detected, and a failed blob write leaves nothing behind.

use crate::common::*;
use crate::{all_stores, both_backends};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn blob_path(root: &std::path::Path, id: &str) -> std::path::PathBuf {
    root.join(&id[..2]).join(id)
}

/// Files a message with one PDF attachment to `matter:M-1` as alice (201 expected): the
/// raw message and the answer.
async fn file_with_pdf(app: &TestApp, subject: &str, mid: &str, pdf: Vec<u8>) -> (Vec<u8>, Value) {
    let raw = email(subject, Some(mid), &[("a.pdf", "application/pdf", pdf)]);
    let tok = app.token("alice@a.test");
    let r = app
        .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
        .await;
    assert_eq!(r.status(), 201);
    (raw, r.json().await.unwrap())
}

all_stores!(blobs_are_encrypted_at_rest, |app: TestApp| async move {
    let tok = app.token("alice@a.test");
    let marker = "PLAINTEXT-MARKER-7f3a";
    let raw = email(
        marker,
        Some("<enc@acme.com>"),
        &[("m.txt", "text/plain", marker.repeat(10).into_bytes())],
    );
    let v: Value = app
        .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
        .await
        .json()
        .await
        .unwrap();
    let t = app.tenant(&app.firm_a).await;
    let raw_id = v["filings"][0]["message"]["sha256"].as_str().unwrap();
    let on_disk = sealed_blob(&t, raw_id).await;
    assert_ne!(on_disk, raw);
    assert!(
        !on_disk
            .windows(marker.len())
            .any(|w| w == marker.as_bytes()),
        "plaintext found on disk"
    );
    assert_eq!(
        &on_disk[..4],
        b"DKT2",
        "blobs are sealed segment by segment"
    );
    // Two encryptions of the same content use different nonces (random 96-bit).
    let (key, _) = docket::storage::crypto::Key::generate();
    assert_ne!(key.seal(b"x", b"a")[4..16], key.seal(b"x", b"a")[4..16]);
});

all_stores!(
    tampered_blob_is_detected_not_served,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        let raw = email(
            "tamper me",
            Some("<tamper@acme.com>"),
            &[("t.pdf", "application/pdf", noise(3000, 5))],
        );
        let v: Value = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await
            .json()
            .await
            .unwrap();
        let id = v["filings"][0]["id"].as_str().unwrap().to_string();
        let t = app.tenant(&app.firm_a).await;
        let att_id = v["filings"][0]["attachments"][0]["sha256"]
            .as_str()
            .unwrap();
        let mut bytes = sealed_blob(&t, att_id).await;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        overwrite_blob(&t, att_id, bytes.clone()).await;
        let r = app
            .get(&tok, &format!("/v1/filings/{id}/attachments/0"))
            .await;
        let (status, p) = problem(r).await;
        assert_eq!(status, 500);
        assert!(!p.to_string().contains("decrypt"), "no internals leak: {p}");
        // Truncation is caught as well.
        overwrite_blob(&t, att_id, bytes[..10].to_vec()).await;
        assert_eq!(
            app.get(&tok, &format!("/v1/filings/{id}/attachments/0"))
                .await
                .status(),
            500
        );
        // The rest still works: the raw message is intact.
        let back = app.get(&tok, &format!("/v1/filings/{id}/raw")).await;
        assert_eq!(back.status(), 200);
        assert_eq!(&back.bytes().await.unwrap()[..], &raw[..]);
        // A blob gone from the store is a 500 too, and the rest still reads.
        let (store, gone) = (t.blobs.store().clone(), att_id.to_string());
        let deleted = tokio::task::spawn_blocking(move || store.delete(&gone).unwrap());
        assert!(deleted.await.unwrap());
        let r = app
            .get(&tok, &format!("/v1/filings/{id}/attachments/0"))
            .await;
        assert_eq!(problem(r).await.0, 500);
        let back = app.get(&tok, &format!("/v1/filings/{id}/raw")).await;
        assert_eq!(back.status(), 200);
    }
);

all_stores!(
    blob_swapped_in_from_another_tenant_fails_to_decrypt,
    |app: TestApp| async move {
        // The same message filed in both tenants: same content address, separate blobs and keys.
        let raw = email("shared", Some("<shared@acme.com>"), &[]);
        let va: Value = app
            .post_filing(
                &app.token("alice@a.test"),
                &filing_body(&raw, &["matter:M-1"]),
            )
            .await
            .json()
            .await
            .unwrap();
        let vb: Value = app
            .post_filing(
                &app.token("bob@b.test"),
                &filing_body(&raw, &["matter:M-1"]),
            )
            .await
            .json()
            .await
            .unwrap();
        let blob = va["filings"][0]["message"]["sha256"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            blob,
            vb["filings"][0]["message"]["sha256"].as_str().unwrap()
        );
        let (a, b) = (app.tenant(&app.firm_a).await, app.tenant(&app.firm_b).await);
        let (da, db) = (a.blobs.store().describe(), b.blobs.store().describe());
        assert_ne!(da, db);
        assert!(!da.starts_with(&db) && !db.starts_with(&da), "{da} / {db}");
        let (sa, sb) = (sealed_blob(&a, &blob).await, sealed_blob(&b, &blob).await);
        assert_ne!(sa, sb, "each tenant encrypts its own copy");
        overwrite_blob(&b, &blob, sa).await;
        let bid = vb["filings"][0]["id"].as_str().unwrap();
        let r = app
            .get(&app.token("bob@b.test"), &format!("/v1/filings/{bid}/raw"))
            .await;
        assert_eq!(
            r.status(),
            500,
            "a blob from tenant A must not decrypt in tenant B"
        );
        // Directly: the AAD binds tenant and blob id, so even the right key fails under another id.
        let bb = b.blobs.clone();
        assert!(tokio::task::spawn_blocking(move || bb.get(&blob).is_err())
            .await
            .unwrap());
    }
);

both_backends!(
    failed_blob_write_leaves_nothing_and_retry_succeeds,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        let t = app.tenant(&app.firm_a).await;
        let raw = email("fault", Some("<fault@acme.com>"), &[]);
        let id = hex::encode(Sha256::digest(&raw));
        // A file where the blob's shard directory must go: the write fails (ENOTDIR).
        std::fs::create_dir_all(t.blobs.root()).unwrap();
        let shard = t.blobs.root().join(&id[..2]);
        std::fs::write(&shard, b"in the way").unwrap();
        let before = counts(&t).await;
        let r = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await;
        let (status, _) = problem(r).await;
        assert_eq!(status, 500);
        assert_eq!(
            counts(&t).await,
            before,
            "no rows when the blob could not be stored"
        );
        std::fs::remove_file(&shard).unwrap();
        let r = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await;
        assert_eq!(
            r.status(),
            201,
            "the identical request succeeds once storage works"
        );
        let v: Value = r.json().await.unwrap();
        let fid = v["filings"][0]["id"].as_str().unwrap();
        assert_eq!(
            &app.get(&tok, &format!("/v1/filings/{fid}/raw"))
                .await
                .bytes()
                .await
                .unwrap()[..],
            &raw[..]
        );
        // No stray temp files remain.
        let leftovers: Vec<_> = std::fs::read_dir(t.blobs.root().join(&id[..2]))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
);

fn age(path: &std::path::Path, secs: u64) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
    std::fs::File::options()
        .append(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn every_blob(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(root).unwrap().flatten() {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out
}

both_backends!(
    sweep_removes_leftovers_and_unreferenced_blobs_only,
    |app: TestApp| async move {
        let hour = std::time::Duration::from_secs(3600);
        let tok = app.token("alice@a.test");
        let raw = email(
            "kept",
            Some("<kept@acme.com>"),
            &[("k.bin", "application/octet-stream", noise(2000, 1))],
        );
        let v: Value = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await
            .json()
            .await
            .unwrap();
        let id = v["filings"][0]["id"].as_str().unwrap().to_string();
        let t = app.tenant(&app.firm_a).await;
        let root = t.blobs.root().to_path_buf();
        // Everything old: the filing's blobs stay because rows refer to them.
        for p in every_blob(&root) {
            age(&p, 7200);
        }
        let orphan = put_blob(&t, b"never committed").await;
        let young = put_blob(&t, b"committing right now").await;
        let reused = put_blob(&t, b"reused by a filing").await;
        age(&blob_path(&root, &orphan), 7200);
        age(&blob_path(&root, &reused), 7200);
        // A filing storing the same content again makes the old blob fresh.
        put_blob(&t, b"reused by a filing").await;
        let shard = blob_path(&root, &orphan).parent().unwrap().to_path_buf();
        let old_tmp = shard.join(".tmp-half-written");
        let young_tmp = shard.join(".tmp-being-written");
        std::fs::write(&old_tmp, b"half").unwrap();
        std::fs::write(&young_tmp, b"half").unwrap();
        age(&old_tmp, 7200);

        let report = docket::maintenance::sweep(&app.state.catalog, hour)
            .await
            .unwrap();
        assert_eq!(
            (report.temp_files, report.orphan_blobs),
            (1, 1),
            "{report:?}"
        );
        assert!(!blob_path(&root, &orphan).exists());
        assert!(!old_tmp.exists());
        assert!(blob_path(&root, &young).exists());
        assert!(blob_path(&root, &reused).exists());
        assert!(young_tmp.exists());
        let r = app.get(&tok, &format!("/v1/filings/{id}/raw")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(&r.bytes().await.unwrap()[..], &raw[..]);
        let r = app
            .get(&tok, &format!("/v1/filings/{id}/attachments/0"))
            .await;
        assert_eq!(r.status(), 200);
    }
);

both_backends!(
    sweep_waits_for_filings_in_progress,
    |app: TestApp| async move {
        let hour = std::time::Duration::from_secs(3600);
        let t = app.tenant(&app.firm_a).await;
        let root = t.blobs.root().to_path_buf();
        let orphan = put_blob(&t, b"written by a filing not yet committed").await;
        age(&blob_path(&root, &orphan), 7200);
        // A filing between its blob writes and its commit holds the lease.
        let lease = t.blob_lease.read().await;
        let sweeping = {
            let t = t.clone();
            tokio::spawn(async move { docket::maintenance::sweep_tenant(&t, hour).await })
        };
        let mut sweeping = sweeping;
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(300), &mut sweeping).await;
        assert!(waited.is_err(), "the sweep did not wait for the filing");
        assert!(blob_path(&root, &orphan).exists());
        drop(lease);
        let report = sweeping.await.unwrap().unwrap();
        assert_eq!(report.orphan_blobs, 1);
        assert!(!blob_path(&root, &orphan).exists());
    }
);

/// Downloads take their share of the message budget: with it spent, a download is a 503
/// `busy` (with `Retry-After`); once free it is served whole, and the share comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downloads_hold_their_share_of_the_message_budget() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let tok = app.token("alice@a.test");
    let (raw, v) = file_with_pdf(
        &app,
        "Download budget",
        "<download-budget@acme.com>",
        noise(200_000, 9),
    )
    .await;
    let id = v["filings"][0]["id"].as_str().unwrap().to_string();
    let full = app.state.budget.available_kib();
    let spent = app.state.budget.try_reserve(usize::MAX).unwrap();
    for path in [
        format!("/v1/filings/{id}/raw"),
        format!("/v1/filings/{id}/attachments/0"),
    ] {
        let r = app.get(&tok, &path).await;
        assert_eq!(r.headers()["retry-after"], "2", "{path}");
        let (status, p) = problem(r).await;
        assert_eq!(
            (status, p["type"].as_str()),
            (503, Some("urn:docket:problem:busy"))
        );
    }
    drop(spent);
    let r = app.get(&tok, &format!("/v1/filings/{id}/raw")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], raw.len().to_string());
    assert_eq!(r.bytes().await.unwrap()[..], raw[..]);
    let att = app
        .get(&tok, &format!("/v1/filings/{id}/attachments/0"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(att[..], noise(200_000, 9)[..]);
    assert_eq!(app.state.budget.available_kib(), full, "shares given back");
}

// A stored blob damaged (cut short) is written again when the same content is stored
// again, instead of being trusted: the earlier filing reads back whole afterwards.
all_stores!(
    a_damaged_blob_is_written_again_when_its_content_comes_again,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        let pdf = noise(131_073, 4);
        let (_, v) = file_with_pdf(&app, "First", "<damaged-first@acme.com>", pdf.clone()).await;
        let id = v["filings"][0]["id"].as_str().unwrap().to_string();
        let att = v["filings"][0]["attachments"][0]["sha256"]
            .as_str()
            .unwrap();
        let t = app.tenant(&app.firm_a).await;
        let sealed = sealed_blob(&t, att).await;
        overwrite_blob(&t, att, sealed[..100].to_vec()).await;
        let path_of = format!("/v1/filings/{id}/attachments/0");
        assert_eq!(app.get(&tok, &path_of).await.status(), 500);
        // Another message carrying the same attachment.
        file_with_pdf(&app, "Second", "<damaged-second@acme.com>", pdf.clone()).await;
        assert_eq!(sealed_blob(&t, att).await.len(), sealed.len());
        let back = app.get(&tok, &path_of).await;
        assert_eq!(back.status(), 200);
        assert_eq!(back.bytes().await.unwrap()[..], pdf[..]);
    }
);
