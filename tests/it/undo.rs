//! Taking a filing back: the filer's undo within the grace period (`DELETE /v1/filings/{id}`),
//! an admin's removal with a reason (`DELETE /v1/admin/filings/{id}`, the console's form),
//! legal holds, the rules' filings made with it, shared messages and blobs, the audit.

use crate::both_backends;
use crate::common::*;
use docket::accounts::tokens::Scope;
use docket::audit::{self, ChainStatus};
use docket::retention::{self, HoldOn};
use serde_json::{json, Value};
use sqlx::Row;

/// Files `raw` as `email` to `targets`; the answer.
async fn file(app: &TestApp, email: &str, raw: &[u8], targets: &[&str]) -> Value {
    let resp = app
        .post_filing(&app.token(email), &filing_body(raw, targets))
        .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap()
}

async fn delete(app: &TestApp, bearer: &str, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = app
        .http
        .delete(format!("{}{}", app.base, path))
        .bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn audit_of(t: &docket::tenancy::Tenant, subject: &str) -> Vec<(String, String, Value)> {
    sqlx::query("SELECT action, actor, detail FROM audit_log WHERE subject = $1 ORDER BY seq")
        .bind(subject)
        .fetch_all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let d: String = r.get(2);
            (r.get(0), r.get(1), serde_json::from_str(&d).unwrap())
        })
        .collect()
}

async fn assert_chain_intact(t: &docket::tenancy::Tenant) {
    assert!(
        matches!(
            audit::verify(&t.db).await.unwrap(),
            ChainStatus::Intact { .. }
        ),
        "the audit chain must verify"
    );
}

/// Messages, filings, attachments and filing audit entries: what a refusal must not move
/// (signing in and creating tokens add other audit entries).
async fn filing_state(t: &docket::tenancy::Tenant) -> (i64, i64, i64, i64) {
    let (m, f, _, att) = counts(t).await;
    let audited: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log WHERE action LIKE 'filing.%'")
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get(0);
    (m, f, att, audited)
}

/// Alice files a message with this subject and Message-ID to M-1; the new filing's id.
async fn filed_to_m1(app: &TestApp, subject: &str, message_id: &str) -> String {
    let raw = email(subject, Some(message_id), &[]);
    id_of(&file(app, "alice@a.test", &raw, &["matter:M-1"]).await, 0)
}

fn id_of(out: &Value, n: usize) -> String {
    out["filings"][n]["id"].as_str().unwrap().to_string()
}

both_backends!(
    the_filer_undoes_their_filing_within_the_grace_period,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let raw = email(
            "Wrong matter",
            Some("undo-1@acme.com"),
            &[("a.pdf", "application/pdf", noise(3000, 1))],
        );
        let before = counts(&t).await;
        let out = file(&app, "alice@a.test", &raw, &["matter:M-1"]).await;
        let fid = id_of(&out, 0);
        // Nine minutes on: still within the default ten.
        app.state
            .catalog
            .clock()
            .advance(time::Duration::minutes(9));
        let r = delete(
            &app,
            &app.token("alice@a.test"),
            &format!("/v1/filings/{fid}"),
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
        let removed: Value = r.json().await.unwrap();
        assert_eq!(removed["id"], fid.as_str());
        assert_eq!(removed["target"], "matter:M-1");
        assert_eq!(removed["title"], "Acme v. Widget");
        assert_eq!(removed["message_removed"], true);
        assert_eq!(removed["also_removed"], json!([]));

        // Gone everywhere: the filing, the message and its rows; one audit entry more.
        let tok = app.token("alice@a.test");
        assert_eq!(
            app.get(&tok, &format!("/v1/filings/{fid}")).await.status(),
            404
        );
        let (m, f, a, att) = counts(&t).await;
        assert_eq!((m, f, att), (before.0, before.1, before.3));
        assert_eq!(a, before.2 + 2, "filing.created and filing.undone");
        let parties: i64 = sqlx::query("SELECT COUNT(*) FROM message_parties")
            .fetch_one(&t.db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(parties, 0);
        let entries = audit_of(&t, &fid).await;
        let actions: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(actions, ["filing.created", "filing.undone"]);
        assert_eq!(entries[1].1, "alice@a.test");
        assert_eq!(entries[1].2["target"], "matter:M-1");
        assert_eq!(entries[1].2["message_removed"], true);
        assert_chain_intact(&t).await;

        // "Already filed" changes at once: filing it again is a new filing, not a duplicate.
        let again = app
            .post_filing(&tok, &filing_body(&raw, &["matter:M-1"]))
            .await;
        assert_eq!(again.status(), 201);
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["filings"][0]["created"], true);
        // Undoing twice: the first one is gone.
        let r = delete(&app, &tok, &format!("/v1/filings/{fid}"), None).await;
        assert_eq!(problem(r).await.0, 404);
    }
);

both_backends!(
    undo_is_refused_after_the_grace_period_and_for_anyone_elses_filing,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let raw = email("Kept", Some("undo-2@acme.com"), &[]);
        let out = file(&app, "alice@a.test", &raw, &["matter:M-1"]).await;
        let fid = id_of(&out, 0);
        let path = format!("/v1/filings/{fid}");
        let before = filing_state(&t).await;

        // Someone else of the firm (an admin too), another firm's user, a viewer, a bad id.
        for who in ["adam@a.test", "bob@b.test"] {
            let (status, p) = problem(delete(&app, &app.token(who), &path, None).await).await;
            assert_eq!(status, 404, "{who}: {p}");
        }
        let (status, _) = problem(delete(&app, &app.token("vera@a.test"), &path, None).await).await;
        assert_eq!(status, 403);
        let (status, _) = problem(
            delete(
                &app,
                &app.token("alice@a.test"),
                "/v1/filings/not-an-id",
                None,
            )
            .await,
        )
        .await;
        assert_eq!(status, 404);
        // A read-only token may not undo.
        let read = access_token(&t, "alice@a.test", &[Scope::Read]).await;
        assert_eq!(delete(&app, &read, &path, None).await.status(), 403);

        // Eleven minutes on: too late for the filer.
        app.state
            .catalog
            .clock()
            .advance(time::Duration::minutes(11));
        let (status, p) =
            problem(delete(&app, &app.token("alice@a.test"), &path, None).await).await;
        assert_eq!(status, 409);
        assert!(p["type"].as_str().unwrap().ends_with("undo-expired"), "{p}");
        assert!(p["detail"].as_str().unwrap().contains("10 minutes"), "{p}");
        assert_eq!(
            filing_state(&t).await,
            before,
            "nothing changes on a refusal"
        );
    }
);

both_backends!(
    a_legal_hold_keeps_the_filing_from_undo_and_from_an_admin,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let m1 = record_id(&t, "matter", "M-1").await;
        let fid = filed_to_m1(&app, "Held", "undo-3@acme.com").await;
        let hold = retention::place_hold(&t.db, &HoldOn::Record(m1), "Litigation", "adam@a.test")
            .await
            .unwrap();
        let before = filing_state(&t).await;
        let (status, p) = problem(
            delete(
                &app,
                &app.token("alice@a.test"),
                &format!("/v1/filings/{fid}"),
                None,
            )
            .await,
        )
        .await;
        assert_eq!(status, 409);
        assert!(p["type"].as_str().unwrap().ends_with("legal-hold"), "{p}");
        let admin = access_token(&t, "adam@a.test", &[Scope::Admin]).await;
        let admin_path = format!("/v1/admin/filings/{fid}");
        let body = Some(json!({"reason": "Misfiled"}));
        let (status, _) = problem(delete(&app, &admin, &admin_path, body.clone()).await).await;
        assert_eq!(status, 409);
        assert_eq!(filing_state(&t).await, before);

        // A hold on a person in the message (dana@acme.com sent it) holds it just the same.
        retention::release_hold(&t.db, &hold.id, "adam@a.test")
            .await
            .unwrap();
        retention::place_hold(
            &t.db,
            &HoldOn::Person("Dana@Acme.com".into()),
            "Subject",
            "adam@a.test",
        )
        .await
        .unwrap();
        let (status, _) = problem(delete(&app, &admin, &admin_path, body).await).await;
        assert_eq!(status, 409);
        assert_eq!(filing_state(&t).await, before);
    }
);

both_backends!(
    an_admin_removes_any_filing_later_with_a_reason,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let raw = email("Privileged by mistake", Some("undo-4@acme.com"), &[]);
        let out = file(&app, "alice@a.test", &raw, &["matter:M-1", "case:C-1"]).await;
        let to = |reference: &str| {
            let f = out["filings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["target"]["id"] == reference);
            f.unwrap()["id"].as_str().unwrap().to_string()
        };
        let (f_m1, f_c1) = (to("M-1"), to("C-1"));
        app.state.catalog.clock().advance(time::Duration::days(30));
        let admin = access_token(&t, "adam@a.test", &[Scope::Admin]).await;
        let path = format!("/v1/admin/filings/{f_m1}");
        let before = filing_state(&t).await;

        // A reason is required; a filer's token and the filer themselves may not.
        for body in [
            json!({}),
            json!({"reason": "  "}),
            json!({"reason": "x".repeat(2001)}),
        ] {
            let (status, p) = problem(delete(&app, &admin, &path, Some(body.clone())).await).await;
            assert_eq!(status, 422, "{body}: {p}");
            assert!(
                p["type"].as_str().unwrap().ends_with("reason-required"),
                "{body}: {p}"
            );
        }
        let filer = access_token(&t, "alice@a.test", &[Scope::File]).await;
        assert_eq!(
            delete(&app, &filer, &path, Some(json!({"reason": "mine"})))
                .await
                .status(),
            403
        );
        assert_eq!(filing_state(&t).await, before);

        let r = delete(
            &app,
            &admin,
            &path,
            Some(json!({"reason": "Privileged; filed by mistake"})),
        )
        .await;
        assert_eq!(r.status(), 200);
        let removed: Value = r.json().await.unwrap();
        assert_eq!(removed["target"], "matter:M-1");
        assert_eq!(
            removed["message_removed"], false,
            "C-1 still has the message"
        );
        let entries = audit_of(&t, &f_m1).await;
        let last = entries.last().unwrap();
        assert_eq!(last.0, "filing.removed");
        assert!(last.1.starts_with("adam@a.test"), "{}", last.1);
        assert_eq!(last.2["reason"], "Privileged; filed by mistake");
        assert_eq!(
            last.2["filed_by"],
            user_id(&t, "alice@a.test").await.as_str()
        );
        assert_chain_intact(&t).await;

        // The other filing of the message, its raw message and attachments are untouched.
        let tok = app.token("alice@a.test");
        let raw_back = app.get(&tok, &format!("/v1/filings/{f_c1}/raw")).await;
        assert_eq!(raw_back.status(), 200);
        assert_eq!(raw_back.bytes().await.unwrap().as_ref(), raw.as_slice());
        assert_eq!(
            app.get(&tok, &format!("/v1/filings/{f_m1}")).await.status(),
            404
        );
    }
);

both_backends!(
    undo_takes_back_the_rules_filings_made_with_it,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let admin = access_token(&t, "adam@a.test", &[Scope::Admin]).await;
        let rule = app
            .http
            .post(format!("{}/v1/admin/rules", app.base))
            .bearer_auth(&admin)
            .json(&json!({
                "name": "Acme contracts",
                "conditions": [{"field": "from", "op": "domain", "value": "acme.com"}],
                "action": "auto_file",
                "targets": ["contract:K-1"],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(rule.status(), 201);
        let raw = email("Two records and a rule", Some("undo-5@acme.com"), &[]);
        let out = file(&app, "alice@a.test", &raw, &["matter:M-1", "case:C-1"]).await;
        assert_eq!(out["auto_filed"][0]["target"]["id"], "K-1", "{out}");
        let tok = app.token("alice@a.test");

        // The first undo leaves the rule's filing: the user's C-1 filing of that action stays.
        let r: Value = delete(&app, &tok, &format!("/v1/filings/{}", id_of(&out, 0)), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(r["also_removed"], json!([]), "{r}");
        // The last one takes the rule's filing with it, and the message goes.
        let r: Value = delete(&app, &tok, &format!("/v1/filings/{}", id_of(&out, 1)), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(r["also_removed"], json!(["contract:K-1"]), "{r}");
        assert_eq!(r["message_removed"], true);
        let (m, f, _, _) = counts(&t).await;
        assert_eq!((m, f), (0, 0));
        // The rule's filing has its own entry.
        let rule_filing = out["auto_filed"][0]["filing_id"].as_str().unwrap();
        let entries = audit_of(&t, rule_filing).await;
        assert_eq!(entries.last().unwrap().0, "filing.undone");
        assert_eq!(entries.last().unwrap().2["rule"], true);
        assert_chain_intact(&t).await;

        // Someone else's filing of the message keeps the rule's: the rule would file it for
        // them too.
        let raw = email("A rule's filing shared", Some("undo-5b@acme.com"), &[]);
        let out = file(&app, "alice@a.test", &raw, &["matter:M-1"]).await;
        file(&app, "adam@a.test", &raw, &["case:C-1"]).await;
        let r: Value = delete(&app, &tok, &format!("/v1/filings/{}", id_of(&out, 0)), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(r["also_removed"], json!([]), "{r}");
        assert_eq!(r["message_removed"], false, "{r}");
        let left: i64 = sqlx::query("SELECT COUNT(*) FROM filings")
            .fetch_one(&t.db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 2, "adam's C-1 and the rule's K-1 stay");
    }
);

both_backends!(
    a_filing_someone_else_was_told_about_is_not_undone,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let raw = email("Shared", Some("undo-8@acme.com"), &[]);
        let out = file(&app, "alice@a.test", &raw, &["matter:M-1"]).await;
        let fid = id_of(&out, 0);
        // Alice filing it again herself does not stop her undo; adam being told "already
        // filed" does.
        file(&app, "alice@a.test", &raw, &["matter:M-1"]).await;
        let again = file(&app, "adam@a.test", &raw, &["matter:M-1"]).await;
        assert_eq!(again["filings"][0]["id"], fid.as_str());
        assert_eq!(again["filings"][0]["created"], false);
        let before = filing_state(&t).await;
        let path = format!("/v1/filings/{fid}");
        let (status, p) =
            problem(delete(&app, &app.token("alice@a.test"), &path, None).await).await;
        assert_eq!(status, 409);
        assert!(
            p["type"].as_str().unwrap().ends_with("filing-shared"),
            "{p}"
        );
        assert_eq!(filing_state(&t).await, before);
    }
);

both_backends!(a_walled_off_filer_cannot_undo, |app: TestApp| async move {
    let t = app.tenant(&app.firm_a).await;
    let raw = email("Walled", Some("undo-9@acme.com"), &[]);
    let fid = id_of(&file(&app, "alice@a.test", &raw, &["matter:M-1"]).await, 0);
    let m1 = record_id(&t, "matter", "M-1").await;
    let alice = user_id(&t, "alice@a.test").await;
    let admin = access_token(&t, "adam@a.test", &[Scope::Admin]).await;
    let wall =
        json!({"firm_wide": true, "members": [], "excluded": [{"kind": "user", "id": alice}]});
    let r = app
        .http
        .put(format!("{}/v1/admin/records/{m1}/access", app.base))
        .bearer_auth(&admin)
        .json(&wall)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = filing_state(&t).await;
    let path = format!("/v1/filings/{fid}");
    let (status, _) = problem(delete(&app, &app.token("alice@a.test"), &path, None).await).await;
    assert_eq!(status, 404);
    assert_eq!(filing_state(&t).await, before);
});

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undo_off_refuses_every_undo() {
    let off = |c: &mut docket::config::Config| c.filing.undo_grace_minutes = 0;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, off).await else {
        return;
    };
    let raw = email("Off", Some("undo-10@acme.com"), &[]);
    let fid = id_of(&file(&app, "alice@a.test", &raw, &["matter:M-1"]).await, 0);
    let path = format!("/v1/filings/{fid}");
    let (status, p) = problem(delete(&app, &app.token("alice@a.test"), &path, None).await).await;
    assert_eq!(status, 409);
    assert!(p["type"].as_str().unwrap().ends_with("undo-off"), "{p}");
}

both_backends!(
    blobs_stay_while_anything_refers_to_them_and_go_after,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let shared = noise(5000, 9);
        let a = email(
            "First",
            Some("undo-6a@acme.com"),
            &[("same.pdf", "application/pdf", shared.clone())],
        );
        let b = email(
            "Second",
            Some("undo-6b@acme.com"),
            &[("same.pdf", "application/pdf", shared.clone())],
        );
        let fa = id_of(&file(&app, "alice@a.test", &a, &["matter:M-1"]).await, 0);
        let fb = id_of(&file(&app, "alice@a.test", &b, &["matter:M-1"]).await, 0);
        // Two raw messages and one attachment (stored once).
        assert_eq!(blob_files(&t), 3);
        let tok = app.token("alice@a.test");
        assert_eq!(
            delete(&app, &tok, &format!("/v1/filings/{fa}"), None)
                .await
                .status(),
            200
        );
        // The sweep removes the first message's raw blob only; the attachment is still b's.
        let report = docket::maintenance::sweep_tenant(&t, std::time::Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(blob_files(&t), 2, "{report:?}");
        let att = app
            .get(&tok, &format!("/v1/filings/{fb}/attachments/0"))
            .await;
        assert_eq!(att.status(), 200);
        assert_eq!(att.bytes().await.unwrap().as_ref(), shared.as_slice());
        let back = app.get(&tok, &format!("/v1/filings/{fb}/raw")).await;
        assert_eq!(back.bytes().await.unwrap().as_ref(), b.as_slice());
    }
);

both_backends!(
    the_console_removes_a_filing_with_a_reason,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let fid = filed_to_m1(&app, "Console", "undo-7@acme.com").await;
        let (cookie, csrf) = admin_session(&app, &t, "adam@a.test").await;
        let (status, page_html) = page(&app, &cookie, &format!("/console/filings/{fid}")).await;
        assert_eq!(status, 200);
        assert!(page_html.contains(&format!("action=\"/console/filings/{fid}/remove\"")));

        // No reason: the page again, saying why; nothing removed.
        let path = format!("/console/filings/{fid}/remove");
        let (status, body) =
            post_form(&app, &cookie, &path, &[("csrf", &csrf), ("reason", "")]).await;
        assert_eq!(status, 422);
        assert!(body.contains("say why the filing is removed"), "{body}");
        // A wrong CSRF token is refused.
        let (status, _) =
            post_form(&app, &cookie, &path, &[("csrf", "nope"), ("reason", "x")]).await;
        assert_eq!(status, 403);
        assert_eq!(counts(&t).await.1, 1);

        let (status, to) = post_form(
            &app,
            &cookie,
            &path,
            &[("csrf", &csrf), ("reason", "Client's personal mail")],
        )
        .await;
        assert_eq!(status, 303);
        assert_eq!(to, format!("/console/audit?subject={fid}"));
        let (_, audit_html) = page(&app, &cookie, &to).await;
        assert!(
            audit_html.contains("removed the filing of a message to"),
            "{audit_html}"
        );
        assert!(audit_html.contains("personal mail"));
        assert_eq!(counts(&t).await.1, 0);
    }
);
