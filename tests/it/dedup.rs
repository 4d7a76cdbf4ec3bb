//! Deduplication never drops a different message (issue 8 §3): a Message-ID alone does not
//! decide; exactly-once still holds for true duplicates (same bytes, CRLF vs LF, another
//! transfer encoding of the same content), also under concurrency and for messages stored
//! before content fingerprints existed.

use base64::Engine;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::*;

fn offer(date: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Dana Fakeperson <dana@acme.com>\r\nTo: alice@a.test\r\nSubject: Offer\r\n\
         Date: {date}\r\nMessage-ID: <reused-id@acme.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn a() -> Vec<u8> {
    offer(
        "Fri, 06 Nov 2026 10:00:00 +0000",
        "First version of the offer: 100.",
    )
}

fn b() -> Vec<u8> {
    offer(
        "Fri, 06 Nov 2026 11:00:00 +0000",
        "A different message reusing the id: 250.",
    )
}

/// `a` with its body base64-encoded instead of 8bit, and LF line endings: the same message.
fn a_reencoded() -> Vec<u8> {
    let body =
        base64::engine::general_purpose::STANDARD.encode("First version of the offer: 100.\r\n");
    format!(
        "From: Dana Fakeperson <dana@acme.com>\nTo: alice@a.test\nSubject: Offer\n\
         Date: Fri, 06 Nov 2026 10:00:00 +0000\nMessage-ID: <reused-id@acme.com>\nMIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n{body}\n"
    )
    .into_bytes()
}

async fn file(app: &TestApp, raw: &[u8]) -> (u16, Value) {
    let resp = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(raw, &["matter:M-1"]),
        )
        .await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Files `raw` to `target` as alice in a task of its own; the task answers the status.
fn spawn_filing(app: &TestApp, raw: Vec<u8>, target: &'static str) -> tokio::task::JoinHandle<u16> {
    let (base, token) = (app.base.clone(), app.token("alice@a.test"));
    let http = app.http.clone();
    tokio::spawn(async move {
        let resp = http
            .post(format!("{base}/v1/filings"))
            .bearer_auth(token)
            .json(&filing_body(&raw, &[target]))
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    })
}

async fn raw_of(app: &TestApp, filing: &Value) -> Vec<u8> {
    let id = filing["filings"][0]["id"].as_str().unwrap();
    let resp = app
        .get(&app.token("alice@a.test"), &format!("/v1/filings/{id}/raw"))
        .await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

both_backends!(
    a_reused_message_id_never_drops_the_second_message,
    |app: TestApp| async move {
        let (s, fa) = file(&app, &a()).await;
        assert_eq!(s, 201, "{fa}");
        assert!(fa.get("message_id_reused").is_none(), "{fa}");

        let (s, fb) = file(&app, &b()).await;
        assert_eq!(s, 201, "b is its own message: {fb}");
        assert_eq!(fb["message_id_reused"], true, "{fb}");
        assert!(fb["notice"]
            .as_str()
            .unwrap()
            .contains("different message used the same Message-ID"));
        assert_ne!(
            fa["filings"][0]["message"]["id"],
            fb["filings"][0]["message"]["id"]
        );
        assert_eq!(raw_of(&app, &fa).await, a(), "a's bytes");
        assert_eq!(raw_of(&app, &fb).await, b(), "b's bytes, stored too");

        // Each is a true duplicate of itself: 200, nothing new.
        for (raw, first) in [(b(), &fb), (a(), &fa), (a_reencoded(), &fa)] {
            let (s, again) = file(&app, &raw).await;
            assert_eq!(s, 200, "{again}");
            assert_eq!(
                again["filings"][0]["id"], first["filings"][0]["id"],
                "{again}"
            );
        }
        let t = app.tenant(&app.firm_a).await;
        let (messages, filings, _, _) = counts(&t).await;
        assert_eq!((messages, filings), (2, 2));
    }
);

both_backends!(
    the_card_context_tells_them_apart,
    |app: TestApp| async move {
        let (s, _) = file(&app, &a()).await;
        assert_eq!(s, 201);
        let context = |raw: Vec<u8>| {
            let app = &app;
            async move {
                let resp = app
                    .http
                    .post(format!("{}/v1/addon/context", app.base))
                    .bearer_auth(app.token("alice@a.test"))
                    .json(&json!({ "raw": b64url(&raw) }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.json::<Value>().await.unwrap()
            }
        };
        let ca = context(a_reencoded()).await;
        assert_eq!(ca["already_filed"].as_array().unwrap().len(), 1, "{ca}");
        assert_eq!(ca["message_id_reused"], false);
        let cb = context(b()).await;
        assert_eq!(cb["already_filed"], json!([]), "b is not filed: {cb}");
        assert_eq!(cb["message_id_reused"], true);
        assert!(cb["notice"]
            .as_str()
            .unwrap()
            .contains("<reused-id@acme.com>"));
    }
);

both_backends!(
    concurrent_different_messages_with_one_id_are_both_kept,
    |app: TestApp| async move {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let raw = if i % 2 == 0 { a() } else { b() };
            tasks.push(spawn_filing(&app, raw, "matter:M-1"));
        }
        let mut created = 0;
        for t in tasks {
            let s = t.await.unwrap();
            assert!(s == 200 || s == 201, "{s}");
            created += (s == 201) as usize;
        }
        assert_eq!(created, 2, "one new filing for a, one for b");
        let t = app.tenant(&app.firm_a).await;
        let (messages, filings, _, _) = counts(&t).await;
        assert_eq!((messages, filings), (2, 2));
        let (_, fb) = file(&app, &b()).await;
        assert_eq!(raw_of(&app, &fb).await, b());
        let (_, fa) = file(&app, &a()).await;
        assert_eq!(raw_of(&app, &fa).await, a());
    }
);

both_backends!(
    messages_stored_before_fingerprints_are_compared_by_content,
    |app: TestApp| async move {
        let (s, fa) = file(&app, &a()).await;
        assert_eq!(s, 201);
        let t = app.tenant(&app.firm_a).await;
        // As stored by a docket without content fingerprints.
        sqlx::query("UPDATE messages SET content_sha256 = NULL")
            .execute(&t.db)
            .await
            .unwrap();
        let (s, again) = file(&app, &a_reencoded()).await;
        assert_eq!(s, 200, "the same message, re-encoded: {again}");
        let (s, fb) = file(&app, &b()).await;
        assert_eq!(s, 201, "{fb}");
        assert_eq!(fb["message_id_reused"], true);
        assert_eq!(raw_of(&app, &fa).await, a());
        assert_eq!(raw_of(&app, &fb).await, b());
        let filled: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE content_sha256 IS NOT NULL")
                .fetch_one(&t.db)
                .await
                .unwrap();
        assert_eq!(filled, 2, "the old row's fingerprint was filled in");
    }
);

both_backends!(
    a_message_stored_after_its_lookup_is_stored_once,
    |app: TestApp| async move {
        // Three filings of one new message pass the lookup (nothing stored) before any of
        // them commits; on SQLite, holding the writer lock queues all three into one batch.
        // Each INSERT after the first meets the stored row; that filing looks again and
        // uses the stored message: one message, one filing per record, nothing answered 5xx.
        let t = app.tenant(&app.firm_a).await;
        let writer = t.write_guard().await;
        let mut tasks = Vec::new();
        for (n, target) in ["matter:M-1", "case:C-1", "matter:M-1"]
            .into_iter()
            .enumerate()
        {
            tasks.push(spawn_filing(&app, a(), target));
            if writer.is_some() {
                while t.queued() < n + 1 {
                    tokio::task::yield_now().await;
                }
            }
        }
        drop(writer);
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.unwrap());
        }
        statuses.sort();
        assert_eq!(statuses, vec![200, 201, 201]);
        let (messages, filings, _, _) = counts(&t).await;
        assert_eq!((messages, filings), (1, 2));
        let (_, f) = file(&app, &a()).await;
        assert_eq!(raw_of(&app, &f).await, a());
        assert!(matches!(
            docket::audit::verify(&t.db).await.unwrap(),
            docket::audit::ChainStatus::Intact { .. }
        ));
    }
);
