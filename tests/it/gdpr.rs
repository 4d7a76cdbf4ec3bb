//! GDPR (`src/gdpr.rs`): a person's access export (zip with a manifest and the original
//! messages) and their erasure (filings not under legal hold, account, sign-ins, their
//! mentions in the audit chain), through the admin API and the console; the chain still
//! verifies and holds its anchor afterwards.

use std::io::Read;

use docket::audit::{anchor, ChainStatus};
use docket::retention::{self, HoldOn};
use serde_json::Value;
use sqlx::Row;

use crate::both_backends;
use crate::common::*;

const VERA: &str = "vera@a.test";

/// Files a message with these headers to `target`; returns (message raw bytes, filing id).
async fn file_raw(app: &TestApp, headers: &str, tag: &str, target: &str) -> (Vec<u8>, String) {
    let raw = format!("{headers}Subject: {tag}\r\nMessage-ID: <{tag}@test>\r\n\r\nAbout {tag}\r\n")
        .into_bytes();
    let r = app
        .post_filing(&app.token("alice@a.test"), &filing_body(&raw, &[target]))
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (raw, v["filings"][0]["id"].as_str().unwrap().to_string())
}

async fn api(
    app: &TestApp,
    cookie: &str,
    csrf: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut rb = app
        .http
        .request(method, format!("{}{}", app.base, path))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    rb.send().await.unwrap()
}

/// alice, who is not walled off from case C-1.
fn tok_for_walled(app: &TestApp) -> String {
    app.token("alice@a.test")
}

async fn scalar(t: &docket::tenancy::Tenant, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(&t.db).await.unwrap().get(0)
}

both_backends!(
    a_person_is_exported_then_erased_and_the_chain_still_verifies,
    |app: TestApp| async move {
        let catalog = &app.state.catalog;
        let t = app.tenant(&app.firm_a).await;
        let (raw_from, _) = file_raw(
            &app,
            &format!("From: Vera <{VERA}>\r\nTo: alice@a.test\r\n"),
            "from-vera",
            "contract:K-1",
        )
        .await;
        let (raw_cc, held_filing) = file_raw(
            &app,
            "From: cfo@globex.com\r\nTo: alice@a.test\r\nCc: VERA@A.TEST\r\n",
            "cc-vera",
            "matter:M-1",
        )
        .await;
        let (_, other) = file_raw(
            &app,
            "From: cfo@globex.com\r\nTo: alice@a.test\r\n",
            "no-vera",
            "matter:M-1",
        )
        .await;
        // Someone who merely shares a prefix is someone else.
        file_raw(
            &app,
            "From: avera@a.test\r\nTo: alice@a.test\r\n",
            "other-person",
            "case:C-1",
        )
        .await;
        retention::place_hold(
            &t.db,
            &HoldOn::Record(
                docket::directory::find_record(&t.db, "matter".parse().unwrap(), "M-1")
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
            ),
            "Acme litigation",
            "adam@a.test",
        )
        .await
        .unwrap();
        sqlx::query("INSERT INTO login_attempts (id, at, email, user_id, result, reason, ip, user_agent) \
                     VALUES ('la1', '2026-11-30T10:00:00.000Z', $1, NULL, 'failure', 'bad password', '192.0.2.7', 'test')")
            .bind(VERA).execute(&t.db).await.unwrap();
        // A record adam is walled off from, with mail of vera's: not his to export or erase.
        let (_, walled_filing) = file_raw(
            &app,
            &format!("From: {VERA}\r\nTo: alice@a.test\r\n"),
            "walled-vera",
            "case:C-1",
        )
        .await;
        let c1 = docket::directory::find_record(&t.db, "case".parse().unwrap(), "C-1")
            .await
            .unwrap()
            .unwrap()
            .id;
        let adam = user_id(&t, "adam@a.test").await;
        let wall = docket::access::Principal {
            kind: docket::access::PrincipalKind::User,
            id: adam,
        };
        docket::directory::set_record_team(&t.db, &c1, true, &[], &[wall], "test")
            .await
            .unwrap();
        // The address as a record's contact.
        sqlx::query("INSERT INTO record_contacts (record_id, kind, value) VALUES ($1, 'address', 'Vera@A.test')")
            .bind(&c1)
            .execute(&t.db)
            .await
            .unwrap();
        let (cookie, csrf) = admin_session(&app, &t, "adam@a.test").await;

        let s: Value = api(
            &app,
            &cookie,
            &csrf,
            reqwest::Method::GET,
            &format!("/v1/admin/subjects?email={VERA}"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(
            (s["filings"].as_u64(), s["filings_on_hold"].as_u64()),
            (Some(2), Some(1)),
            "{s}"
        );
        assert_eq!(
            (s["has_user_account"].as_bool(), s["sign_ins"].as_u64()),
            (Some(true), Some(1)),
            "{s}"
        );
        assert!(s["audit_entries"].as_u64().unwrap() >= 1, "{s}");
        assert_eq!(
            (s["filings_walled"].as_u64(), s["record_contacts"].as_u64()),
            (Some(1), Some(1)),
            "{s}"
        );

        // The access export: a manifest and each message byte for byte.
        let r = api(
            &app,
            &cookie,
            &csrf,
            reqwest::Method::GET,
            &format!("/v1/admin/subjects/export?email={VERA}"),
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/zip");
        let bytes = r.bytes().await.unwrap();
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
        let mut manifest = String::new();
        zip.by_name("manifest.json")
            .unwrap()
            .read_to_string(&mut manifest)
            .unwrap();
        let m: Value = serde_json::from_str(&manifest).unwrap();
        assert_eq!(m["subject"], VERA);
        let filings = m["filings"].as_array().unwrap();
        assert_eq!(filings.len(), 2);
        assert_eq!(m["user"]["email"], VERA);
        assert_eq!(m["sign_ins"][0]["ip"], "192.0.2.7");
        for (f, raw) in filings.iter().zip([&raw_from, &raw_cc]) {
            let mut eml = Vec::new();
            zip.by_name(f["eml"].as_str().unwrap())
                .unwrap()
                .read_to_end(&mut eml)
                .unwrap();
            assert_eq!(&eml, raw);
        }
        assert_eq!(filings[1]["as_participant"], serde_json::json!(["cc"]));
        assert_eq!(filings[1]["on_hold"], true);

        // An admin's account is not erased (change the role first); nor is docket's own user.
        docket::directory::add_user(
            &t.db,
            "root@a.test",
            "",
            docket::directory::Role::Admin,
            "test",
        )
        .await
        .unwrap();
        for email in ["root@a.test", "system@docket.invalid"] {
            let r = api(
                &app,
                &cookie,
                &csrf,
                reqwest::Method::POST,
                "/v1/admin/subjects/erase",
                Some(serde_json::json!({"email": email})),
            )
            .await;
            assert_eq!(r.status().as_u16(), 422, "{email}");
        }
        // Not oneself; not a non-address.
        for (email, code) in [("adam@a.test", 422), ("not an address", 422)] {
            let r = api(
                &app,
                &cookie,
                &csrf,
                reqwest::Method::POST,
                "/v1/admin/subjects/erase",
                Some(serde_json::json!({"email": email})),
            )
            .await;
            assert_eq!(r.status().as_u16(), code, "{email}");
        }
        let r = api(
            &app,
            &cookie,
            &csrf,
            reqwest::Method::POST,
            "/v1/admin/subjects/erase",
            Some(serde_json::json!({"email": VERA, "request": "DSR-14"})),
        )
        .await;
        assert_eq!(r.status(), 200);
        let e: Value = r.json().await.unwrap();
        assert_eq!(
            (e["filings_deleted"].as_i64(), e["filings_held"].as_i64()),
            (Some(1), Some(1)),
            "{e}"
        );
        assert_eq!(
            (
                e["user_anonymised"].as_bool(),
                e["sign_ins_deleted"].as_i64()
            ),
            (Some(true), Some(1)),
            "{e}"
        );
        assert!(
            e["audit_entries_erased"].as_i64().unwrap() >= 2,
            "the user's addition and the export: {e}"
        );
        assert_eq!(
            (
                e["filings_walled"].as_i64(),
                e["record_contacts_removed"].as_i64()
            ),
            (Some(1), Some(1)),
            "{e}"
        );
        assert_eq!(
            scalar(
                &t,
                "SELECT COUNT(*) FROM record_contacts WHERE LOWER(value) = 'vera@a.test'"
            )
            .await,
            0
        );
        assert_eq!(
            app.get(
                &tok_for_walled(&app),
                &format!("/v1/filings/{walled_filing}/raw")
            )
            .await
            .status(),
            200,
            "the walled filing is left for another admin"
        );

        // Gone: her address anywhere in the tenant's database but the held message.
        assert_eq!(
            scalar(
                &t,
                "SELECT COUNT(*) FROM users WHERE LOWER(email) = 'vera@a.test'"
            )
            .await,
            0
        );
        assert_eq!(scalar(&t, "SELECT COUNT(*) FROM login_attempts").await, 0);
        // The suggestion index forgets the address, also for the held and walled messages.
        assert_eq!(
            scalar(
                &t,
                "SELECT COUNT(*) FROM message_parties WHERE address = 'vera@a.test'"
            )
            .await,
            0
        );
        assert!(
            scalar(
                &t,
                "SELECT COUNT(*) FROM message_parties WHERE address = 'cfo@globex.com'"
            )
            .await
                > 0
        );
        assert_eq!(scalar(&t, "SELECT COUNT(*) FROM audit_log WHERE LOWER(actor || subject || detail) LIKE '%vera@a.test%' AND detail NOT LIKE '%avera@a.test%'").await, 0);
        assert_eq!(scalar(&t, "SELECT COUNT(*) FROM messages WHERE LOWER(from_json || to_json || cc_json) LIKE '%vera@a.test%' AND from_json NOT LIKE '%avera%'").await, 2, "the held one and the walled one");
        let tok = app.token("alice@a.test");
        assert_eq!(
            app.get(&tok, &format!("/v1/filings/{held_filing}/raw"))
                .await
                .status(),
            200
        );
        assert_eq!(
            app.get(&tok, &format!("/v1/filings/{other}/raw"))
                .await
                .status(),
            200
        );
        assert_eq!(
            scalar(
                &t,
                "SELECT COUNT(*) FROM messages WHERE from_json LIKE '%avera@a.test%'"
            )
            .await,
            1
        );
        // The chain verifies, holds its anchor, and says what was done without the address.
        let (status, _) = anchor::verify(catalog, &t).await.unwrap();
        assert!(matches!(status, ChainStatus::Intact { .. }), "{status:?}");
        let last = &docket::audit::list(&t.db, 1).await.unwrap()[0];
        assert_eq!(last.action, "subject.erased");
        assert!(
            last.detail.contains("DSR-14") && !last.detail.contains("vera"),
            "{}",
            last.detail
        );
    }
);

#[tokio::test]
async fn the_console_looks_up_exports_and_erases_on_a_second_page() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    file_raw(
        &app,
        &format!("From: {VERA}\r\nTo: alice@a.test\r\n"),
        "console-vera",
        "matter:M-1",
    )
    .await;
    let (cookie, csrf) = admin_session(&app, &t, "adam@a.test").await;
    let (s, html) = page(&app, &cookie, &format!("/console/privacy?email={VERA}")).await;
    assert_eq!(s, 200);
    assert!(
        html.contains("Download export") && html.contains("Erase…"),
        "{html}"
    );
    let (s, html) = page(&app, &cookie, "/console/privacy?email=nobody").await;
    assert_eq!(s, 200);
    assert!(html.contains("is not an email address"), "{html}");
    let r = app
        .http
        .get(format!("{}/console/privacy/export?email={VERA}", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["content-type"].to_str().unwrap()
        ),
        (200, "application/zip")
    );
    let (s, html) = page(
        &app,
        &cookie,
        &format!("/console/privacy/erase?email={VERA}"),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        html.contains("This cannot be undone. It deletes 1 filing(s)"),
        "{html}"
    );
    let (s, _) = post_form(&app, &cookie, "/console/privacy/erase", &[("email", VERA)]).await;
    assert_eq!(s, 403, "no CSRF token, nothing erased");
    assert_eq!(scalar(&t, "SELECT COUNT(*) FROM filings").await, 1);
    let (s, to) = post_form(
        &app,
        &cookie,
        "/console/privacy/erase",
        &[("csrf", &csrf), ("email", VERA), ("request", "DSR-1")],
    )
    .await;
    assert_eq!(s, 303);
    assert!(to.starts_with("/console/privacy?done=erased"), "{to}");
    assert_eq!(scalar(&t, "SELECT COUNT(*) FROM filings").await, 0);
    let (_, html) = page(&app, &cookie, &to).await;
    assert!(html.contains("Personal data erased"), "{html}");
}

both_backends!(
    a_contact_with_non_ascii_letters_is_found_and_erased,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        // Stored lowercased as the suggestion model lowercases participants (Unicode).
        docket::directory::add_record(
            &t.db,
            docket::directory::RecordKind::Matter,
            "M-80",
            "Ünal estate",
            "Ünal",
            &["Jürgen.ÜNAL@Probate.example".to_string()],
            "test",
        )
        .await
        .unwrap();
        let (cookie, csrf) = admin_session(&app, &t, "adam@a.test").await;
        let asked = "JÜRGEN.ünal@probate.example";
        let q: String = url::form_urlencoded::byte_serialize(asked.as_bytes()).collect();
        let s: Value = api(
            &app,
            &cookie,
            &csrf,
            reqwest::Method::GET,
            &format!("/v1/admin/subjects?email={q}"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(s["record_contacts"].as_u64(), Some(1), "{s}");
        let r = api(
            &app,
            &cookie,
            &csrf,
            reqwest::Method::POST,
            "/v1/admin/subjects/erase",
            Some(serde_json::json!({"email": asked, "request": "DSR-15"})),
        )
        .await;
        assert_eq!(r.status(), 200);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["record_contacts_removed"].as_i64(), Some(1), "{e}");
        assert_eq!(
            scalar(
                &t,
                "SELECT COUNT(*) FROM record_contacts c JOIN records r ON r.id = c.record_id \
                 WHERE r.reference = 'M-80'"
            )
            .await,
            0,
            "no contact left"
        );
    }
);
