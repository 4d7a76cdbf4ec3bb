//! The filing path end to end: metadata, idempotency, dedup across targets, concurrency,
//! attachment selection and downloads.

use crate::both_backends;
use crate::common::*;
use docket::audit::{self, ChainStatus};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn threaded_email() -> Vec<u8> {
    use mail_builder::MessageBuilder;
    MessageBuilder::new()
        .from(("Dana Client", "dana@acme.com"))
        .to(vec![("Alice", "alice@a.test"), ("Ann", "ann@a.test")])
        .cc(vec![("Carl", "carl@acme.com")])
        .subject("Re: Draft settlement")
        .date(1_763_000_000i64)
        .message_id("reply-2@acme.com")
        .in_reply_to("orig-1@acme.com")
        .references(vec!["root-0@acme.com", "orig-1@acme.com"])
        .text_body("See attached.\r\n")
        .attachment("application/pdf", "Draft v2.pdf", noise(4000, 7))
        .attachment("image/png", "Scan.png", noise(3000, 8))
        .write_to_vec()
        .unwrap()
}

both_backends!(
    filing_shows_everything_and_reads_back_byte_identical,
    |app: TestApp| async move {
        let raw = threaded_email();
        let tok = app.token("alice@a.test");
        let mut body = filing_body(&raw, &["matter:M-1"]);
        body["note"] = json!("Client's counter-offer");
        body["gmail_message_id"] = json!("17088a2c5b91b2fe");
        body["gmail_thread_id"] = json!("17088a2c5b91b2f0");
        let resp = app.post_filing(&tok, &body).await;
        assert_eq!(resp.status(), 201);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let out: Value = resp.json().await.unwrap();
        let f = &out["filings"][0];
        assert_eq!(f["created"], true);
        assert_eq!(
            location,
            format!("/v1/filings/{}", f["id"].as_str().unwrap())
        );
        assert_eq!(
            f["target"],
            json!({"kind": "matter", "id": "M-1", "title": "Acme v. Widget"})
        );
        assert_eq!(f["filed_by"], "alice@a.test");
        assert_eq!(f["note"], "Client's counter-offer");
        assert!(docket::time_fmt::parse(f["filed_at"].as_str().unwrap()).is_some());
        let m = &f["message"];
        assert_eq!(m["subject"], "Re: Draft settlement");
        assert_eq!(m["message_id"], "reply-2@acme.com");
        assert_eq!(
            m["from"],
            json!([{"name": "Dana Client", "address": "dana@acme.com"}])
        );
        assert_eq!(m["to"][1]["address"], "ann@a.test");
        assert_eq!(m["cc"][0]["address"], "carl@acme.com");
        assert_eq!(m["in_reply_to"], json!(["orig-1@acme.com"]));
        assert_eq!(
            m["references"],
            json!(["root-0@acme.com", "orig-1@acme.com"])
        );
        assert_eq!(m["date"], "2025-11-13T02:13:20.000Z");
        assert_eq!(m["size"], raw.len());
        assert_eq!(m["sha256"], sha(&raw));
        assert_eq!(m["gmail_thread_id"], "17088a2c5b91b2f0");
        let atts = f["attachments"].as_array().unwrap();
        assert_eq!(atts.len(), 2);
        assert_eq!(atts[0]["name"], "Draft v2.pdf");
        assert_eq!(atts[0]["content_type"], "application/pdf");
        assert_eq!(atts[0]["size"], 4000);
        assert_eq!(atts[0]["sha256"], sha(&noise(4000, 7)));
        assert_eq!(atts[1]["sha256"], sha(&noise(3000, 8)));

        // Reading back: the same view, the raw bytes, each attachment byte-identical.
        let id = f["id"].as_str().unwrap();
        let shown: Value = app
            .get(&tok, &format!("/v1/filings/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(shown["message"], f["message"]);
        let raw_resp = app.get(&tok, &format!("/v1/filings/{id}/raw")).await;
        assert_eq!(raw_resp.status(), 200);
        assert_eq!(raw_resp.headers()["x-content-type-options"], "nosniff");
        assert_eq!(&raw_resp.bytes().await.unwrap()[..], &raw[..]);
        for (n, expected) in [(0, noise(4000, 7)), (1, noise(3000, 8))] {
            let r = app
                .get(&tok, &format!("/v1/filings/{id}/attachments/{n}"))
                .await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "application/octet-stream");
            assert_eq!(r.headers()["x-content-type-options"], "nosniff");
            let cd = r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(cd.starts_with("attachment; filename=\""), "{cd}");
            assert!(cd.contains("filename*=UTF-8''"), "{cd}");
            assert_eq!(&r.bytes().await.unwrap()[..], &expected[..]);
        }
        // A viewer reads too.
        let vera = app.token("vera@a.test");
        assert_eq!(
            app.get(&vera, &format!("/v1/filings/{id}")).await.status(),
            200
        );
        // Unknown ids and indices: 404 problem.
        let (s, _) = problem(
            app.get(&tok, "/v1/filings/0123456789abcdef0123456789abcdef")
                .await,
        )
        .await;
        assert_eq!(s, 404);
        let (s, _) = problem(
            app.get(&tok, &format!("/v1/filings/{id}/attachments/2"))
                .await,
        )
        .await;
        assert_eq!(s, 404);
        let (s, _) = problem(app.get(&tok, "/v1/filings/..%2F..%2Fetc/raw").await).await;
        assert_eq!(s, 404);
    }
);

both_backends!(
    same_message_again_returns_the_existing_filing,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        let t = app.tenant(&app.firm_a).await;
        let raw = email(
            "Hello",
            Some("<idem-1@acme.com>"),
            &[("a.pdf", "application/pdf", noise(1000, 1))],
        );
        let r1 = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await;
        assert_eq!(r1.status(), 201);
        let v1: Value = r1.json().await.unwrap();
        let before = counts(&t).await;
        let blobs_before = blob_files(&t);

        let r2 = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await;
        assert_eq!(r2.status(), 200);
        let v2: Value = r2.json().await.unwrap();
        assert_eq!(v2["filings"][0]["id"], v1["filings"][0]["id"]);
        assert_eq!(v2["filings"][0]["created"], false);

        // Same Message-ID, different bytes (e.g. Gmail re-serialised it): still the same message.
        let mut reencoded = raw.clone();
        reencoded.extend_from_slice(b"\r\n");
        let r3 = app
            .post_filing(&tok, &filing_body(&reencoded, &["matter:M-1"]))
            .await;
        assert_eq!(r3.status(), 200);
        let v3: Value = r3.json().await.unwrap();
        assert_eq!(v3["filings"][0]["id"], v1["filings"][0]["id"]);

        let after = counts(&t).await;
        assert_eq!(
            (after.0, after.1, after.3),
            (before.0, before.1, before.3),
            "no new message, filing or attachment rows"
        );
        assert_eq!(after.2, before.2 + 2, "each duplicate attempt is audited");
        assert_eq!(blob_files(&t), blobs_before, "no new blobs");
        let dups: i64 = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'filing.duplicate'",
        )
        .fetch_one(&t.db)
        .await
        .unwrap();
        assert_eq!(dups, 2);
    }
);

both_backends!(
    message_without_message_id_dedups_by_canonical_bytes,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        let crlf =
            b"From: x@acme.com\r\nTo: alice@a.test\r\nSubject: no id\r\n\r\nbody line\r\n".to_vec();
        let lf = b"From: x@acme.com\nTo: alice@a.test\nSubject: no id\n\nbody line\n".to_vec();
        let r1 = app
            .post_filing(&tok, &filing_body(&crlf, &["case:C-1"]))
            .await;
        assert_eq!(r1.status(), 201);
        let r2 = app
            .post_filing(&tok, &filing_body(&lf, &["case:C-1"]))
            .await;
        assert_eq!(r2.status(), 200, "LF and CRLF copies are one message");
        let other =
            b"From: x@acme.com\r\nTo: alice@a.test\r\nSubject: no id\r\n\r\nanother body\r\n"
                .to_vec();
        let r3 = app
            .post_filing(&tok, &filing_body(&other, &["case:C-1"]))
            .await;
        assert_eq!(r3.status(), 201, "different content is a different message");
    }
);

both_backends!(
    one_message_to_two_targets_is_stored_once_and_linked_twice,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        let t = app.tenant(&app.firm_a).await;
        let raw = email(
            "Two places",
            Some("<two@acme.com>"),
            &[("a.bin", "application/octet-stream", noise(2000, 3))],
        );
        let blobs0 = blob_files(&t);
        let r = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1", "contract:K-1"]))
            .await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        let fs = v["filings"].as_array().unwrap();
        assert_eq!(fs.len(), 2);
        assert_ne!(fs[0]["id"], fs[1]["id"]);
        assert_eq!(fs[0]["message"]["id"], fs[1]["message"]["id"]);
        let (messages, filings, _, atts) = counts(&t).await;
        assert_eq!((messages, filings, atts), (1, 2, 1));
        assert_eq!(blob_files(&t), blobs0 + 2, "raw + one attachment, once");

        // Adding a third target later: 201 for the new one, the old ones reported as existing.
        let r = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1", "case:C-1"]))
            .await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        let created: Vec<(String, bool)> = v["filings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["target"]["id"].as_str().unwrap().to_string(),
                    f["created"].as_bool().unwrap(),
                )
            })
            .collect();
        assert!(
            created.contains(&("M-1".into(), false)) && created.contains(&("C-1".into(), true)),
            "{created:?}"
        );
        assert_eq!(counts(&t).await.0, 1);

        // Listing by target shows it under each record.
        for target in ["matter:M-1", "contract:K-1", "case:C-1"] {
            let l: Value = app
                .get(&tok, &format!("/v1/filings?target={target}"))
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(l["filings"].as_array().unwrap().len(), 1, "{target}");
        }
        let (s, _) = problem(app.get(&tok, "/v1/filings?target=nonsense").await).await;
        assert_eq!(s, 400);
        let (s, _) = problem(app.get(&tok, "/v1/filings?limit=100000").await).await;
        assert_eq!(s, 400);
    }
);

both_backends!(
    sixteen_concurrent_identical_filings_make_one_message,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let raw = email(
            "Race",
            Some("<race@acme.com>"),
            &[("r.pdf", "application/pdf", noise(20_000, 9))],
        );
        let body = filing_body(&raw, &["matter:M-1", "case:C-1"]);
        let (_, _, audit0, _) = counts(&t).await;
        // Two different users race as well.
        let toks = [app.token("alice@a.test"), app.token("adam@a.test")];
        let futs = (0..16).map(|i| app.post_filing(&toks[i % 2], &body));
        let statuses: Vec<u16> = futures::future::join_all(futs)
            .await
            .iter()
            .map(|r| r.status().as_u16())
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 201).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            15,
            "{statuses:?}"
        );
        let (messages, filings, audit1, atts) = counts(&t).await;
        assert_eq!((messages, filings, atts), (1, 2, 1));
        assert_eq!(
            audit1 - audit0,
            2 + 15 * 2,
            "2 created + 30 duplicate attempts"
        );
        match audit::verify(&t.db).await.unwrap() {
            ChainStatus::Intact { entries, .. } => assert_eq!(entries, audit1),
            broken => panic!("chain broken: {broken:?}"),
        }
        let seqs: Vec<i64> = sqlx::query_scalar::<_, i64>("SELECT seq FROM audit_log ORDER BY seq")
            .fetch_all(&t.db)
            .await
            .unwrap();
        assert_eq!(seqs, (1..=audit1).collect::<Vec<_>>(), "seq is contiguous");
    }
);

both_backends!(
    attachment_selection_keeps_only_chosen_attachments,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        let t = app.tenant(&app.firm_a).await;
        let raw = email(
            "Three",
            Some("<three@acme.com>"),
            &[
                ("one.pdf", "application/pdf", noise(100, 1)),
                ("two.pdf", "application/pdf", noise(200, 2)),
                ("three.pdf", "application/pdf", noise(300, 3)),
            ],
        );
        let before = counts(&t).await;
        let mut bad = filing_body(&raw, &["matter:M-1"]);
        bad["attachments"] = json!([5]);
        let (s, p) = problem(app.post_filing(&tok, &bad).await).await;
        assert_eq!(s, 422);
        assert!(
            p["detail"].as_str().unwrap().contains("attachment 5"),
            "{p}"
        );
        assert_eq!(
            counts(&t).await,
            before,
            "nothing written for a bad selection"
        );

        let mut body = filing_body(&raw, &["matter:M-1"]);
        body["attachments"] = json!([1]);
        let v: Value = app.post_filing(&tok, &body).await.json().await.unwrap();
        let f = &v["filings"][0];
        let kept: Vec<&str> = f["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(kept, ["two.pdf"]);
        assert_eq!(
            f["message"]["attachments"].as_array().unwrap().len(),
            3,
            "the message still lists all three"
        );
        let id = f["id"].as_str().unwrap();
        assert_eq!(
            app.get(&tok, &format!("/v1/filings/{id}/attachments/0"))
                .await
                .status(),
            404
        );
        let got = app
            .get(&tok, &format!("/v1/filings/{id}/attachments/1"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], &noise(200, 2)[..]);

        // A second record may keep a different selection of the same message.
        let mut body = filing_body(&raw, &["case:C-1"]);
        body["attachments"] = json!("all");
        let v: Value = app.post_filing(&tok, &body).await.json().await.unwrap();
        assert_eq!(v["filings"][0]["attachments"].as_array().unwrap().len(), 3);
        let mut body = filing_body(&raw, &["contract:K-1"]);
        body["attachments"] = json!([]);
        let v: Value = app.post_filing(&tok, &body).await.json().await.unwrap();
        assert_eq!(v["filings"][0]["attachments"].as_array().unwrap().len(), 0);
        assert_eq!(counts(&t).await.0, 1);
    }
);

both_backends!(
    the_answer_to_a_new_filing_is_what_reads_back,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        let raw = email(
            "Entwurf — Vergleich ☂",
            Some("fresh-view@acme.com"),
            &[
                ("Schriftsatz ü.pdf", "application/pdf", noise(300, 1)),
                ("two.pdf", "application/pdf", noise(200, 2)),
                ("notes.txt", "text/plain", b"caf\xe9".to_vec()),
            ],
        );
        // A new message to two records, with a selection, a note and Gmail ids: the answer
        // is built from what was written. Then the same message to a new record and an old
        // one: read back. Every answer equals what GET /v1/filings/{id} shows.
        let mut body = filing_body(&raw, &["matter:M-1", "case:C-1"]);
        body["attachments"] = json!([0, 2]);
        body["note"] = json!("für die Akte");
        body["gmail_message_id"] = json!("17088a2c5b91b2fe");
        body["gmail_thread_id"] = json!("17088a2c5b91b2f0");
        let first: Value = app.post_filing(&tok, &body).await.json().await.unwrap();
        let body = filing_body(&raw, &["contract:K-1", "matter:M-1"]);
        let second: Value = app.post_filing(&tok, &body).await.json().await.unwrap();
        let answers = first["filings"].as_array().unwrap().iter();
        let answers: Vec<&Value> = answers
            .chain(second["filings"].as_array().unwrap())
            .collect();
        assert_eq!(answers.len(), 4);
        for f in answers {
            let id = f["id"].as_str().unwrap();
            let resp = app.get(&tok, &format!("/v1/filings/{id}")).await;
            assert_eq!(resp.status(), 200);
            let mut shown: Value = resp.json().await.unwrap();
            shown["created"] = f["created"].clone();
            assert_eq!(&shown, f);
        }
        let kept = first["filings"][0]["attachments"].as_array().unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0]["name"], "Schriftsatz ü.pdf");
        assert_eq!(second["filings"][0]["created"], true);
        assert_eq!(second["filings"][1]["created"], false);
    }
);

both_backends!(
    two_spellings_of_one_record_file_once,
    |app: TestApp| async move {
        let tok = app.token("alice@a.test");
        let raw = email("Spellings", Some("spellings@acme.com"), &[]);
        let body = json!({
            "raw": b64url(&raw),
            "targets": [{"kind": "matter", "id": "M-1"}, {"kind": "matter", "id": " M-1 "}],
        });
        let resp = app.post_filing(&tok, &body).await;
        assert_eq!(resp.status(), 201);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["filings"].as_array().unwrap().len(), 1, "{v}");
        let t = app.tenant(&app.firm_a).await;
        let (messages, filings, _, _) = counts(&t).await;
        assert_eq!((messages, filings), (1, 1));
    }
);

// The filing list answers "my recent filings" and "filed mail about …", each filing with a
// link to its read-only page (the add-on's homepage uses both), within what the caller may
// see.
both_backends!(
    filings_can_be_listed_by_filer_and_by_words_with_view_links,
    |app: TestApp| async move {
        let alice = app.token("alice@a.test");
        let adam = app.token("adam@a.test");
        let lease = email("Lease renewal terms", Some("<lease@acme.com>"), &[]);
        let draft = email("Draft settlement", Some("<draft@acme.com>"), &[]);
        assert_eq!(
            app.post_filing(&alice, &filing_body(&lease, &["contract:K-1"]))
                .await
                .status(),
            201
        );
        assert_eq!(
            app.post_filing(&adam, &filing_body(&draft, &["matter:M-1"]))
                .await
                .status(),
            201
        );
        let list = |tok: String, q: &'static str| {
            let app = &app;
            async move {
                let v: Value = app
                    .get(&tok, &format!("/v1/filings?{q}"))
                    .await
                    .json()
                    .await
                    .unwrap();
                v["filings"].as_array().unwrap().clone()
            }
        };
        let subjects = |fs: &[Value]| -> Vec<String> {
            fs.iter()
                .map(|f| f["message"]["subject"].as_str().unwrap().to_string())
                .collect()
        };
        // Mine: only alice's own.
        let mine = list(alice.clone(), "mine=true").await;
        assert_eq!(subjects(&mine), ["Lease renewal terms"]);
        assert_eq!(subjects(&list(alice.clone(), "").await).len(), 2);
        // Words: subject, record reference or title, sender; any case.
        assert_eq!(
            subjects(&list(alice.clone(), "q=SETTLEMENT").await),
            ["Draft settlement"]
        );
        assert_eq!(
            subjects(&list(alice.clone(), "q=k-1").await),
            ["Lease renewal terms"]
        );
        assert_eq!(list(alice.clone(), "q=nothing%20like%20it").await.len(), 0);
        assert_eq!(
            subjects(&list(adam.clone(), "mine=true&q=lease").await).len(),
            0
        );
        // Each has a View link that opens for its caller.
        let path = mine[0]["view_path"].as_str().unwrap();
        assert!(path.starts_with(&format!(
            "/view/filings/{}?t=",
            mine[0]["id"].as_str().unwrap()
        )));
        let page = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        // Bob of another firm sees none of it.
        assert_eq!(list(app.token("bob@b.test"), "q=settlement").await.len(), 0);
    }
);
