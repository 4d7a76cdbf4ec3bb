//! Blobs in S3-compatible object storage (`storage.backend = "s3"`), against a real S3
//! server (moto's server mode, started by `scripts/test`; `DOCKET_TEST_S3`): big blobs go up
//! in parts, a store that cannot be reached is a clear 503 with nothing half-filed, and the
//! sweep works on objects. The storage suite (`storage.rs`) also runs on this store.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

/// The object key of a tenant's blob in its bucket.
fn object_key(tenant_id: &str, blob: &str) -> String {
    format!("tenants/{tenant_id}/blobs/{}/{blob}", &blob[..2])
}

/// The `ETag` of an object, read straight from the S3 server.
async fn etag(app: &TestApp, key: &str) -> String {
    use object_store::ObjectStoreExt;
    let s3 = &app.config.storage.s3;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.endpoint.as_deref().unwrap())
        .with_bucket_name(s3.bucket.as_deref().unwrap())
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_allow_http(true)
        .build()
        .unwrap();
    let meta = store
        .head(&key.into())
        .await
        .expect("the object is in the bucket");
    meta.e_tag.expect("S3 gives every object an ETag")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_blobs_go_up_in_parts_and_come_back_whole() {
    let Some(app) = TestApp::spawn_s3(Backend::Sqlite).await else {
        return;
    };
    let tok = app.token("alice@a.test");
    // Sealed, well over the single-PUT limit: a multipart upload of several parts.
    let big = noise(
        docket::storage::object::SINGLE_PUT_MAX as usize + 3_000_000,
        7,
    );
    let small = noise(5_000, 8);
    let raw = email(
        "Big exhibit",
        Some("<big-exhibit@acme.com>"),
        &[
            ("exhibit.bin", "application/octet-stream", big.clone()),
            ("note.bin", "application/octet-stream", small.clone()),
        ],
    );
    let r = app
        .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let f = &v["filings"][0];
    let (big_id, small_id) = (
        f["attachments"][0]["sha256"].as_str().unwrap(),
        f["attachments"][1]["sha256"].as_str().unwrap(),
    );
    // S3 gives multipart objects an ETag of the form "<md5 of part md5s>-<part count>".
    let parts = etag(&app, &object_key(&app.firm_a.id, big_id)).await;
    assert!(
        parts.trim_matches('"').ends_with("-3"),
        "multipart ETag: {parts}"
    );
    let single = etag(&app, &object_key(&app.firm_a.id, small_id)).await;
    assert!(!single.contains('-'), "single PUT ETag: {single}");
    let id = f["id"].as_str().unwrap();
    for (i, want) in [(0, &big), (1, &small)] {
        let back = app
            .get(&tok, &format!("/v1/filings/{id}/attachments/{i}"))
            .await;
        assert_eq!(back.status(), 200);
        assert!(
            back.bytes().await.unwrap()[..] == want[..],
            "attachment {i}"
        );
    }
    let back = app.get(&tok, &format!("/v1/filings/{id}/raw")).await;
    assert!(back.bytes().await.unwrap()[..] == raw[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_store_is_a_503_and_nothing_is_filed() {
    // Needs no S3 server, but runs with the object-storage tests.
    if s3_endpoint().is_none() {
        return;
    }
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.storage = s3_storage(&dead, "nowhere");
    })
    .await
    .unwrap();
    let tok = app.token("alice@a.test");
    let t = app.tenant(&app.firm_a).await;
    let before = counts(&t).await;
    let raw = email(
        "Store down",
        Some("<store-down@acme.com>"),
        &[("a.pdf", "application/pdf", noise(4000, 3))],
    );
    let r = app
        .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
        .await;
    assert_eq!(r.headers()["retry-after"], "30");
    let (status, p) = problem(r).await;
    assert_eq!(
        (status, p["type"].as_str()),
        (503, Some("urn:docket:problem:storage-unavailable")),
        "{p}"
    );
    assert!(!p.to_string().contains("127.0.0.1"), "no internals: {p}");
    assert_eq!(counts(&t).await, before, "nothing half-filed");
    let health = app.http.get(format!("{}/healthz", app.base)).send().await;
    assert_eq!(health.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_removes_unreferenced_objects_only() {
    let Some(app) = TestApp::spawn_s3(Backend::Sqlite).await else {
        return;
    };
    let tok = app.token("alice@a.test");
    let raw = email(
        "kept",
        Some("<kept-s3@acme.com>"),
        &[("k.bin", "application/octet-stream", noise(2000, 1))],
    );
    let r = app
        .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let id = v["filings"][0]["id"].as_str().unwrap().to_string();
    let t = app.tenant(&app.firm_a).await;
    let orphan = put_blob(&t, b"never committed").await;
    // Young objects are left alone.
    let hour = Duration::from_secs(3600);
    let report = docket::maintenance::sweep(&app.state.catalog, hour)
        .await
        .unwrap();
    assert_eq!(report.orphan_blobs, 0, "{report:?}");
    // With no grace, everything written before now is old (S3 dates objects to the second
    // or millisecond, never later than the write).
    let report = docket::maintenance::sweep_tenant(&t, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(report.orphan_blobs, 1, "{report:?}");
    let store = t.blobs.store().clone();
    let gone = tokio::task::spawn_blocking(move || store.sealed_len(&orphan).unwrap());
    assert_eq!(gone.await.unwrap(), None);
    for path in [
        format!("/v1/filings/{id}/raw"),
        format!("/v1/filings/{id}/attachments/0"),
    ] {
        assert_eq!(app.get(&tok, &path).await.status(), 200, "{path}");
    }
}
