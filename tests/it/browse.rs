//! The admin filings browser and audit log: visibility, downloads, sanitised bodies, CSV
//! export, audit filters and chain status, the OpenAPI document, console security headers.

use crate::both_backends;
use crate::common::*;
use docket::accounts::tokens::Scope;
use docket::directory;
use serde_json::{json, Value};

async fn admin_token(app: &TestApp, info: &docket::tenancy::TenantInfo, email: &str) -> String {
    access_token(&*app.tenant(info).await, email, &[Scope::Admin]).await
}

fn html_email() -> Vec<u8> {
    use mail_builder::MessageBuilder;
    MessageBuilder::new()
        .from(("Dana Client", "dana@acme.com"))
        .to(vec![("Alice", "alice@a.test")])
        .subject("=SUM(A1) settlement draft")
        .message_id("browse-1@acme.com")
        .date(1_763_000_000i64)
        .html_body("<p onclick=\"steal()\">Hello <b>there</b></p><script>alert(1)</script><img src=\"https://tracker.example/p.gif\">")
        .attachment("application/pdf", "Draft.pdf", noise(2000, 3))
        .write_to_vec()
        .unwrap()
}

async fn get(app: &TestApp, tok: &str, path: &str) -> reqwest::Response {
    app.get(tok, path).await
}

both_backends!(
    filings_browser_lists_shows_downloads_and_exports,
    |app: TestApp| async move {
        let raw = html_email();
        let resp = app
            .post_filing(
                &app.token("alice@a.test"),
                &filing_body(&raw, &["matter:M-1"]),
            )
            .await;
        assert_eq!(resp.status(), 201);
        let filed: Value = resp.json().await.unwrap();
        let id = filed["filings"][0]["id"].as_str().unwrap().to_string();
        let tok = admin_token(&app, &app.firm_a, "adam@a.test").await;

        let list: Value = get(&app, &tok, "/v1/admin/filings?q=settlement")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list[0]["id"], id.as_str());
        assert_eq!(list[0]["record_reference"], "M-1");
        assert_eq!(list[0]["attachments"], 1);
        let none: Value = get(&app, &tok, "/v1/admin/filings?record=case:C-1")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(none, json!([]));

        let one = get(&app, &tok, &format!("/v1/admin/filings/{id}")).await;
        assert_eq!(one.status(), 200);
        let raw_back = get(&app, &tok, &format!("/v1/admin/filings/{id}/raw")).await;
        assert_eq!(raw_back.headers()["content-type"], "message/rfc822");
        assert_eq!(raw_back.bytes().await.unwrap().as_ref(), raw.as_slice());
        let att = get(&app, &tok, &format!("/v1/admin/filings/{id}/attachments/0")).await;
        assert_eq!(att.status(), 200);
        assert_eq!(att.headers()["content-type"], "application/octet-stream");
        assert!(att.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment"));
        assert_eq!(
            att.bytes().await.unwrap().as_ref(),
            noise(2000, 3).as_slice()
        );

        // CSV export neutralises spreadsheet formulas.
        let csv = get(&app, &tok, "/v1/admin/filings/export").await;
        assert_eq!(csv.status(), 200);
        assert!(csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        let text = csv.text().await.unwrap();
        assert!(text.contains("'=SUM(A1) settlement draft"), "{text}");

        // Another tenant's admin sees none of it.
        let b_tok = admin_token_b(&app).await;
        for path in [
            format!("/v1/admin/filings/{id}"),
            format!("/v1/admin/filings/{id}/raw"),
            format!("/v1/admin/filings/{id}/attachments/0"),
        ] {
            let r = get(&app, &b_tok, &path).await;
            assert_eq!(r.status(), 404, "{path}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        let b_list: Value = get(&app, &b_tok, "/v1/admin/filings")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(b_list, json!([]));
    }
);

async fn admin_token_b(app: &TestApp) -> String {
    let t = app.tenant(&app.firm_b).await;
    directory::add_user(&t.db, "boss@b.test", "", directory::Role::Admin, "test")
        .await
        .unwrap();
    admin_token(app, &app.firm_b, "boss@b.test").await
}

#[tokio::test]
async fn sanitised_body_drops_script_handlers_and_remote_loads_stay_blocked() {
    let html = docket::http::console::browse::sanitised_body(&html_email());
    assert!(html.contains("<b>there</b>"), "{html}");
    assert!(!html.contains("script"), "{html}");
    assert!(!html.contains("onclick"), "{html}");
    assert!(!html.contains("tracker.example"), "{html}");
}

both_backends!(audit_log_filters_and_verifies, |app: TestApp| async move {
    let tok = admin_token(&app, &app.firm_a, "adam@a.test").await;
    let all: Value = get(&app, &tok, "/v1/admin/audit?limit=1000")
        .await
        .json()
        .await
        .unwrap();
    let all = all.as_array().unwrap().clone();
    assert!(all.len() >= 5);
    assert!(all
        .windows(2)
        .all(|w| w[0]["seq"].as_i64() > w[1]["seq"].as_i64()));
    let users: Value = get(&app, &tok, "/v1/admin/audit?action=user.added")
        .await
        .json()
        .await
        .unwrap();
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 3, "{users:?}");
    assert!(users.iter().all(|e| e["action"] == "user.added"));
    let prefixed: Value = get(&app, &tok, "/v1/admin/audit?action=record.")
        .await
        .json()
        .await
        .unwrap();
    assert!(prefixed
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"].as_str().unwrap().starts_with("record.")));
    let page: Value = get(
        &app,
        &tok,
        &format!("/v1/admin/audit?limit=2&before={}", all[0]["seq"]),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(page[0]["seq"], all[1]["seq"]);
    let bad = get(&app, &tok, "/v1/admin/audit?since=yesterday").await;
    assert_eq!(bad.status(), 400);

    let ok: Value = get(&app, &tok, "/v1/admin/audit/verify")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok["status"], "intact", "{ok}");
    // Edit an entry behind docket's back: verification names it.
    let t = app.tenant(&app.firm_a).await;
    sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
        .execute(&t.db)
        .await
        .unwrap();
    let broken: Value = get(&app, &tok, "/v1/admin/audit/verify")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(broken["status"], "broken");
    assert_eq!(broken["broken_at"], 2);
});

#[tokio::test]
async fn openapi_document_describes_the_admin_api() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let r = app
        .http
        .get(format!("{}/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/admin/filings",
        "/v1/admin/audit",
        "/v1/admin/audit/verify",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    assert!(doc["components"]["securitySchemes"]["access_token"].is_object());
}

/// Paths of the routes declared with `.route("…", …)` under `src/http` that make up the
/// API: `/v1/…`, the add-on's `/addon/…` and the health checks (not console pages, the View
/// page, dev-only routes or static files). Routes declared with utoipa's `routes!` are in
/// the document by construction.
fn declared_api_routes() -> Vec<String> {
    let mut files = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/http")];
    let mut found = Vec::new();
    while let Some(f) = files.pop() {
        if f.is_dir() {
            files.extend(std::fs::read_dir(&f).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if f.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for piece in text.split(".route(").skip(1) {
            let Some(path) = piece
                .trim_start()
                .strip_prefix('"')
                .and_then(|p| p.split('"').next())
            else {
                continue;
            };
            let api = path.starts_with("/v1/") || path.starts_with("/addon/");
            if (api || path == "/healthz" || path == "/readyz") && path != "/v1/openapi.json" {
                found.push(path.to_string());
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Every `$ref` in `v` (a JSON document), recursively.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_document_covers_every_public_endpoint() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let doc: Value = app
        .http
        .get(format!("{}/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let declared = declared_api_routes();
    assert!(declared.len() >= 10, "{declared:?}");
    for p in &declared {
        assert!(
            paths.contains_key(p),
            "{p} is served but not in /v1/openapi.json: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    // The filing endpoints say what they take and give, and how to authenticate.
    let create = &paths["/v1/filings"]["post"];
    let body = &create["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/CreateFiling", "{create}");
    let schemas = &doc["components"]["schemas"];
    for field in ["raw", "targets", "attachments", "note"] {
        assert!(
            schemas["CreateFiling"]["properties"][field].is_object(),
            "{field}"
        );
    }
    assert_eq!(
        create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/FilingOutcome"
    );
    for status in ["401", "413", "422", "503"] {
        assert!(
            create["responses"][status].is_object(),
            "{status}: {create}"
        );
    }
    assert!(paths["/v1/filings"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "target"));
    assert!(paths["/v1/addon/context"]["post"].is_object());
    assert!(paths["/v1/records"]["get"].is_object());
    assert!(doc["components"]["securitySchemes"]["google_id_token"].is_object());
    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(schemas[name].is_object(), "{r} does not resolve");
    }
}

#[tokio::test]
async fn admin_api_and_console_refuse_anonymous_callers_with_security_headers() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let r = app
        .http
        .get(format!("{}/v1/admin/audit", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/console/filings", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    // A Google ID token is not an admin credential.
    let r = app.get(&app.token("adam@a.test"), "/v1/admin/audit").await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn csv_export_exposes_no_formula_whatever_separator_the_spreadsheet_splits_on() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    use mail_builder::MessageBuilder;
    let raw = MessageBuilder::new()
        .from(("Eve;=HYPERLINK(\"http://evil.test\")", "eve@acme.com"))
        .to(vec![("Alice", "alice@a.test")])
        .subject("Q3;=2+2|@SUM(A1), +cmd")
        .message_id("csv-split@acme.com")
        .date(1_763_000_000i64)
        .text_body("hi")
        .write_to_vec()
        .unwrap();
    let r = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(&raw, &["matter:M-1"]),
        )
        .await;
    assert_eq!(r.status(), 201);
    let tok = admin_token(&app, &app.firm_a, "adam@a.test").await;
    let text = get(&app, &tok, "/v1/admin/filings/export")
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("Q3;'=2+2|'@SUM(A1)"), "{text}");
    for sep in [b',', b';', b'\t', b'|'] {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(sep)
            .flexible(true)
            .from_reader(text.as_bytes());
        for rec in reader.records() {
            for cell in rec.unwrap().iter() {
                let cell = cell.trim_start_matches('"').trim_start();
                assert!(
                    !cell.starts_with(['=', '+', '-', '@']),
                    "split on {:?} gives the formula cell {cell:?}",
                    sep as char
                );
            }
        }
    }
}

#[tokio::test]
async fn every_error_is_a_problem_including_method_not_allowed() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let send =
        |m: reqwest::Method, path: &str| app.http.request(m, format!("{}{path}", app.base)).send();
    // axum's 405 answers (any route, any method it lacks) keep `Allow` and become problems.
    for (m, path) in [
        (reqwest::Method::DELETE, "/v1/filings"),
        (reqwest::Method::POST, "/healthz"),
        (reqwest::Method::PUT, "/console/login"),
    ] {
        let r = send(m, path).await.unwrap();
        assert!(r.headers().contains_key("allow"), "{path}");
        assert_eq!(r.headers()["referrer-policy"], "same-origin");
        let (s, body) = problem(r).await;
        assert_eq!(s, 405, "{path}");
        assert_eq!(body["type"], "urn:docket:problem:method-not-allowed");
    }
    // A View link without its `t`, and a path that does not parse, are problems too.
    let fid = "0123456789abcdef0123456789abcdef";
    let (s, body) = problem(
        send(reqwest::Method::GET, &format!("/view/filings/{fid}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["type"].as_str()),
        (400, Some("urn:docket:problem:invalid-link"))
    );
    let (s, _) = problem(
        send(
            reqwest::Method::GET,
            &format!("/view/filings/{fid}/attachments/x?t=y"),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn hsts_is_sent_when_tls_is_configured() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.admin.hsts = Some(true))
        .await
        .unwrap();
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .contains("max-age="));
    let plain = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let r = plain
        .http
        .get(format!("{}/healthz", plain.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("strict-transport-security").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walled_admin_sees_neither_the_filings_nor_their_export() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let raw = html_email();
    let filed: Value = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(&raw, &["matter:M-1"]),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = filed["filings"][0]["id"].as_str().unwrap().to_string();
    let t = app.tenant(&app.firm_a).await;
    let adam = directory::user_by_email(&t.db, "adam@a.test")
        .await
        .unwrap()
        .unwrap();
    let m1: String = sqlx::query_scalar("SELECT id FROM records WHERE reference = 'M-1'")
        .fetch_one(&t.db)
        .await
        .unwrap();
    let tok = admin_token(&app, &app.firm_a, "adam@a.test").await;
    let wall = app
        .http
        .put(format!("{}/v1/admin/records/{m1}/access", app.base))
        .bearer_auth(&tok)
        .json(&json!({"firm_wide": true, "members": [], "excluded": [{"kind": "user", "id": adam.id}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(wall.status(), 200);
    let list: Value = get(&app, &tok, "/v1/admin/filings")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!([]));
    assert_eq!(
        get(&app, &tok, &format!("/v1/admin/filings/{id}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        get(&app, &tok, &format!("/v1/admin/filings/{id}/attachments/0"))
            .await
            .status(),
        404
    );
    let csv = get(&app, &tok, "/v1/admin/filings/export")
        .await
        .text()
        .await
        .unwrap();
    assert!(!csv.contains(&id), "{csv}");
    // The record itself stays manageable in the catalogue.
    assert_eq!(
        get(&app, &tok, &format!("/v1/admin/records/{m1}"))
            .await
            .status(),
        200
    );
}

/// The logo both add-on manifests name (`logoUrl`) is served, as a cacheable PNG.
#[tokio::test]
async fn the_add_on_logo_is_served() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    for manifest in [
        "addon/http/deployment.json",
        "addon/apps-script/appsscript.json",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{manifest}")).unwrap();
        assert!(text.contains("/static/docket-logo.png\""), "{manifest}");
    }
    let r = app
        .http
        .get(format!("{}/static/docket-logo.png", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["cache-control"], "public, max-age=86400");
    let png = r.bytes().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(
        png[..],
        std::fs::read(format!("{root}/static/docket-logo.png")).unwrap()[..]
    );
}

both_backends!(
    the_audit_log_reads_as_sentences_linking_to_what_they_name,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        directory::add_user(
            &a.db,
            "bea@a.test",
            "Bea <Brown>",
            directory::Role::Filer,
            "adam@a.test",
        )
        .await
        .unwrap();
        let raw = email(
            "Re: draft <b>settlement</b>",
            Some("sentences-1@acme.com"),
            &[],
        );
        let r = app
            .post_filing(
                &app.token("alice@a.test"),
                &filing_body(&raw, &["matter:M-1"]),
            )
            .await;
        assert_eq!(r.status(), 201);
        let fid = r.json::<Value>().await.unwrap()["filings"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let rec = directory::find_record(&a.db, directory::RecordKind::Matter, "M-1")
            .await
            .unwrap()
            .unwrap();
        let alice = user_id(&a, "alice@a.test").await;
        let bea = user_id(&a, "bea@a.test").await;
        let (cookie, _) = admin_session(&app, &a, "adam@a.test").await;
        let (s, html) = page(&app, &cookie, "/console/audit").await;
        assert_eq!(s, 200);
        // "Alice filed <subject> to M-1": the person, the message and the record link.
        let filed = format!(
            "<a href=\"/console/users/{alice}\" title=\"alice@a.test\">alice@a.test</a> filed \
             <em><a href=\"/console/filings/{fid}\">Re: draft &lt;b&gt;settlement&lt;/b&gt;</a></em> \
             to <a href=\"/console/records/{}\">M-1 “Acme v. Widget”</a>",
            rec.id
        );
        assert!(html.contains(&filed), "{filed}\nnot in\n{html}");
        // Names are escaped.
        let added =
            format!("</a> added <a href=\"/console/users/{bea}\">Bea &lt;Brown&gt;</a> as filer");
        assert!(html.contains(&added), "{added}\nnot in\n{html}");
        // The raw entry stays one click away, closed.
        assert!(html.contains("<details><summary>Raw entry</summary>"));
        assert!(html.contains("<dd><code>filing.created</code></dd>"));
        assert!(
            html.contains("&#34;raw_sha256&#34;") || html.contains("&quot;raw_sha256&quot;"),
            "the detail JSON is shown escaped"
        );
        assert!(!html.contains("<details open"));
        assert!(
            !html.contains("<b>settlement"),
            "nothing from the mail is markup"
        );
        // A wall binds admins in the audit log too: the subject of a filing they may not
        // see is not shown.
        let adam = user_id(&a, "adam@a.test").await;
        let wall = [docket::access::Principal {
            kind: docket::access::PrincipalKind::User,
            id: adam,
        }];
        directory::set_record_team(&a.db, &rec.id, true, &[], &wall, "test")
            .await
            .unwrap();
        let (_, html) = page(&app, &cookie, "/console/audit").await;
        assert!(!html.contains("draft &lt;b&gt;settlement"), "{html}");
        assert!(
            html.contains(&format!("<a href=\"/console/filings/{fid}\">a message</a>")),
            "{html}"
        );
    }
);
