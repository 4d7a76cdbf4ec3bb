use crate::both_backends;
use crate::common::*;
use serde_json::{json, Value};

both_backends!(smoke_file_and_read_back, |app: TestApp| async move {
    let raw = email("Draft settlement", Some("<smoke-1@acme.com>"), &[("Draft.pdf", "application/pdf", noise(5000, 1))]);
    let tok = app.token("alice@a.test");
    let resp = app.post_filing(&tok, &filing_body(&raw, &["matter:M-1"])).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    let id = body["filings"][0]["id"].as_str().unwrap().to_string();
    let got = app.get(&tok, &format!("/v1/filings/{id}/raw")).await.bytes().await.unwrap();
    assert_eq!(&got[..], &raw[..]);
    let _ = json!({});
});
