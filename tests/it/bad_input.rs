//! Every bad input gets a precise problem+json 4xx and writes nothing.

use crate::both_backends;
use crate::common::*;
use serde_json::{json, Value};

/// Sends `body` (raw bytes, with content type) and checks status, problem kind, and that
/// Firm A's rows and blobs did not move.
async fn rejected(
    app: &TestApp,
    content_type: &str,
    body: Vec<u8>,
    status: u16,
    kind: &str,
) -> Value {
    let t = app.tenant(&app.firm_a).await;
    let before = (counts(&t).await, blob_files(&t));
    let resp = app
        .http
        .post(format!("{}/v1/filings", app.base))
        .bearer_auth(app.token("alice@a.test"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let (s, p) = problem(resp).await;
    assert_eq!(s, status, "{p}");
    assert_eq!(p["type"], format!("urn:docket:problem:{kind}"), "{p}");
    assert!(!p["detail"].as_str().unwrap_or("").is_empty());
    assert_eq!(
        (counts(&t).await, blob_files(&t)),
        before,
        "nothing may be written ({kind})"
    );
    p
}

async fn rejected_json(app: &TestApp, body: Value, status: u16, kind: &str) -> Value {
    rejected(
        app,
        "application/json",
        serde_json::to_vec(&body).unwrap(),
        status,
        kind,
    )
    .await
}

fn ok_email() -> Vec<u8> {
    email("fine", Some("<fine@acme.com>"), &[])
}

both_backends!(malformed_requests, |app: TestApp| async move {
    rejected(
        &app,
        "application/json",
        b"{\"raw\": ".to_vec(),
        400,
        "invalid-json",
    )
    .await;
    rejected(
        &app,
        "text/plain",
        b"{}".to_vec(),
        415,
        "unsupported-media-type",
    )
    .await;
    let p = rejected_json(
        &app,
        json!({"targets": [{"kind": "matter", "id": "M-1"}]}),
        422,
        "invalid-request",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("raw"), "{p}");
    let mut body = filing_body(&ok_email(), &["matter:M-1"]);
    body["surprise"] = json!(1);
    let p = rejected_json(&app, body, 422, "invalid-request").await;
    assert!(p["detail"].as_str().unwrap().contains("surprise"), "{p}");
    let mut body = filing_body(&ok_email(), &["matter:M-1"]);
    body["targets"][0]["extra"] = json!("x");
    rejected_json(&app, body, 422, "invalid-request").await;
    let mut body = filing_body(&ok_email(), &["matter:M-1"]);
    body["attachments"] = json!("some");
    rejected_json(&app, body, 422, "invalid-request").await;
    rejected_json(
        &app,
        json!({"raw": "!!!not base64!!!", "targets": [{"kind": "matter", "id": "M-1"}]}),
        400,
        "invalid-base64",
    )
    .await;
    rejected_json(
        &app,
        json!({"raw": b64url(&ok_email()), "targets": []}),
        422,
        "no-targets",
    )
    .await;
    let (mut body, long) = (filing_body(&ok_email(), &["matter:M-1"]), "x".repeat(2001));
    body["note"] = json!(long);
    rejected_json(&app, body, 422, "invalid-note").await;
});

both_backends!(
    unknown_and_foreign_targets_are_404,
    |app: TestApp| async move {
        for target in ["matter:NOPE", "matter:B-9"] {
            let p =
                rejected_json(&app, filing_body(&ok_email(), &[target]), 404, "not-found").await;
            assert!(p["detail"].as_str().unwrap().contains(target), "{p}");
        }
        // A kind docket does not know is a malformed request, not a missing record.
        let p = rejected_json(
            &app,
            filing_body(&ok_email(), &["widget:M-1"]),
            422,
            "invalid-target",
        )
        .await;
        assert!(p["detail"].as_str().unwrap().contains("widget"), "{p}");
        // One bad target among good ones: nothing is filed at all.
        rejected_json(
            &app,
            filing_body(&ok_email(), &["matter:M-1", "matter:B-9"]),
            404,
            "not-found",
        )
        .await;
    }
);

both_backends!(not_an_email, |app: TestApp| async move {
    for bytes in [
        b"This is a simple message not having headers.\r\nJust text.\r\n".to_vec(),
        noise(4096, 42),
        b"\r\n\r\n".to_vec(),
    ] {
        rejected_json(
            &app,
            json!({"raw": b64url(&bytes), "targets": [{"kind": "matter", "id": "M-1"}]}),
            422,
            "not-an-email",
        )
        .await;
    }
    rejected_json(
        &app,
        json!({"raw": "", "targets": [{"kind": "matter", "id": "M-1"}]}),
        422,
        "not-an-email",
    )
    .await;
});

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn size_part_and_depth_limits() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.max_message_bytes = 64 * 1024;
        c.limits.max_parts = 50;
        c.limits.max_depth = 8;
    })
    .await
    .unwrap();
    // Decoded size above the limit.
    let big = email(
        "big",
        Some("<big@acme.com>"),
        &[("b.bin", "application/octet-stream", noise(70 * 1024, 1))],
    );
    rejected_json(&app, filing_body(&big, &["matter:M-1"]), 413, "too-large").await;
    // A request body far beyond what any allowed message needs: cut off by the body limit.
    let huge = format!(
        "{{\"raw\": \"{}\", \"targets\": []}}",
        "A".repeat(2 * 1024 * 1024)
    );
    rejected(
        &app,
        "application/json",
        huge.into_bytes(),
        413,
        "too-large",
    )
    .await;

    // 60 parts > 50.
    let mut parts = String::from("From: a@acme.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
    for i in 0..60 {
        parts.push_str(&format!(
            "--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
        ));
    }
    parts.push_str("--b--\r\n");
    rejected_json(
        &app,
        filing_body(parts.as_bytes(), &["matter:M-1"]),
        422,
        "too-many-parts",
    )
    .await;

    // 12 nested multiparts > depth 8.
    let deep = nested(12);
    rejected_json(
        &app,
        filing_body(deep.as_bytes(), &["matter:M-1"]),
        422,
        "too-deep",
    )
    .await;
    // Within limits both are fine.
    let shallow = nested(4);
    let resp = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(shallow.as_bytes(), &["matter:M-1"]),
        )
        .await;
    assert_eq!(resp.status(), 201);
}

fn nested(depth: usize) -> String {
    let mut s = String::from("From: a@acme.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n");
    for i in 0..depth {
        s.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    s.push_str("Content-Type: text/plain\r\n\r\ninnermost\r\n");
    for i in (0..depth).rev() {
        s.push_str(&format!("--b{i}--\r\n"));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_limits_reject_thousand_deep_and_many_parts() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    rejected_json(
        &app,
        filing_body(nested(1000).as_bytes(), &["matter:M-1"]),
        422,
        "too-deep",
    )
    .await;
    let mut parts = String::from("From: a@acme.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
    for _ in 0..20_000 {
        parts.push_str("--b\r\n\r\nx\r\n");
    }
    parts.push_str("--b--\r\n");
    rejected_json(
        &app,
        filing_body(parts.as_bytes(), &["matter:M-1"]),
        422,
        "too-many-parts",
    )
    .await;
    // The server is still up and filing.
    let ok = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(&ok_email(), &["matter:M-1"]),
        )
        .await;
    assert_eq!(ok.status(), 201);
}

both_backends!(
    padded_and_unpadded_base64url_both_work,
    |app: TestApp| async move {
        use base64::Engine;
        let tok = app.token("alice@a.test");
        // Length chosen so that padding is present.
        let raw = email("pad", Some("<pad@acme.com>"), &[]);
        let raw = if raw.len().is_multiple_of(3) {
            [raw, b"\r\n".to_vec()].concat()
        } else {
            raw
        };
        let padded = base64::engine::general_purpose::URL_SAFE.encode(&raw);
        assert!(padded.ends_with('='));
        let r = app
            .post_filing(
                &tok,
                &json!({"raw": padded, "targets": [{"kind": "matter", "id": "M-1"}]}),
            )
            .await;
        assert_eq!(r.status(), 201);
        let r = app
            .post_filing(
                &tok,
                &json!({"raw": b64url(&raw), "targets": [{"kind": "matter", "id": "M-1"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
);

both_backends!(
    hostile_attachment_names_are_sanitised_and_never_paths,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        let long = format!("{}.pdf", "n".repeat(400));
        let names = [
            "../../etc/passwd",
            "/abs/path.txt",
            "C:\\Windows\\evil.exe",
            "a\u{0}b\u{7}c.txt",
            "invoice\u{202E}fdp.exe",
            "CON",
            "report.pdf. . ",
            &long,
        ];
        let atts: Vec<(&str, &str, Vec<u8>)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, "application/octet-stream", noise(50, i as u8)))
            .collect();
        let raw = email("names", Some("<names@acme.com>"), &atts);
        let r = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        let shown: Vec<String> = v["filings"][0]["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(shown[0], "passwd");
        assert_eq!(shown[1], "path.txt");
        assert_eq!(shown[2], "evil.exe");
        assert_eq!(shown[3], "abc.txt");
        assert_eq!(shown[4], "invoicefdp.exe");
        assert_eq!(shown[5], "_CON");
        assert_eq!(shown[6], "report.pdf");
        assert!(shown[7].len() <= 255 && shown[7].ends_with(".pdf"));
        for n in &shown {
            assert!(
                !n.contains('/') && !n.contains('\\') && !n.chars().any(|c| c.is_control()),
                "{n:?}"
            );
        }
        // Downloads carry the sanitised name, RFC 6266 encoded.
        let id = v["filings"][0]["id"].as_str().unwrap();
        let r = app
            .get(&tok, &format!("/v1/filings/{id}/attachments/4"))
            .await;
        let cd = r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            cd,
            "attachment; filename=\"invoicefdp.exe\"; filename*=UTF-8''invoicefdp.exe"
        );
        // Stored files are named by content hash only.
        let t = app.tenant(&app.firm_a).await;
        let mut stack = vec![t.blobs.root().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if e.path().is_dir() {
                    assert!(
                        name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()),
                        "{name}"
                    );
                    stack.push(e.path());
                } else {
                    assert!(
                        name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()),
                        "{name}"
                    );
                }
            }
        }
    }
);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

both_backends!(
    nasty_hand_written_messages_file_cleanly,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        for (file, check) in [
            ("encoded-word-crlf-nul.eml", "subject"),
            ("rfc2231-traversal-name.eml", "name"),
            ("no-message-id.eml", "none"),
            ("duplicate-message-id.eml", "none"),
            ("wrong-charset.eml", "none"),
        ] {
            let raw = fixture(file);
            let r = app
                .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
                .await;
            assert_eq!(r.status(), 201, "{file}");
            let v: Value = r.json().await.unwrap();
            let f = &v["filings"][0];
            match check {
                "subject" => {
                    let s = f["message"]["subject"].as_str().unwrap();
                    assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
                    assert!(s.contains("Injected"), "{s:?}");
                }
                "name" => {
                    let n = f["attachments"][0]["name"].as_str().unwrap();
                    assert_eq!(n, "evil.sh");
                }
                _ => {}
            }
            let id = f["id"].as_str().unwrap();
            let back = app
                .get(&tok, &format!("/v1/filings/{id}/raw"))
                .await
                .bytes()
                .await
                .unwrap();
            assert_eq!(&back[..], &raw[..], "{file}");
        }
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mime4j_corpus_files_without_5xx_and_reads_back() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/mime4j");
    if !dir.exists() {
        if std::env::var_os("CI").is_some() {
            panic!("the shared corpus is required in CI: {}", dir.display());
        }
        eprintln!("SKIP: {} not found", dir.display());
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let tok = app.token("alice@a.test");
    let mut filed = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "msg"))
        .collect();
    files.sort();
    assert!(files.len() > 20);
    for path in files {
        let raw = std::fs::read(&path).unwrap();
        let r = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await;
        let status = r.status().as_u16();
        assert!(status < 500, "{}: {status}", path.display());
        if status == 201 || status == 200 {
            let v: Value = r.json().await.unwrap();
            let id = v["filings"][0]["id"].as_str().unwrap();
            let back = app
                .get(&tok, &format!("/v1/filings/{id}/raw"))
                .await
                .bytes()
                .await
                .unwrap();
            if status == 201 {
                assert_eq!(&back[..], &raw[..], "{}", path.display());
            }
            for a in v["filings"][0]["attachments"].as_array().unwrap() {
                let n = a["index"].as_i64().unwrap();
                let r = app
                    .get(&tok, &format!("/v1/filings/{id}/attachments/{n}"))
                    .await;
                assert_eq!(r.status(), 200, "{}", path.display());
            }
            filed += 1;
        } else {
            let (_, p) = problem(r).await;
            assert_eq!(status, 422, "{}: {p}", path.display());
        }
    }
    assert!(filed >= 25, "most of the corpus files ({filed})");
}
