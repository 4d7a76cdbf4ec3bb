//! Routing rules: the admin API (CRUD, moves, validation, audit), the dry run by upload and
//! by filing id, tenant isolation, and the console pages.

use crate::both_backends;
use crate::common::*;
use base64::Engine;
use docket::accounts::tokens::{self, Scope};
use docket::directory::{self, Role};
use docket::tenancy::{Tenant, TenantInfo};
use serde_json::{json, Value};
use sqlx::Row;

/// An admin access token for `email` in `info`'s tenant.
async fn admin_token(app: &TestApp, info: &TenantInfo, email: &str) -> String {
    let t = app.tenant(info).await;
    if directory::user_by_email(&t.db, email)
        .await
        .unwrap()
        .is_none()
    {
        directory::add_user(&t.db, email, "", Role::Admin, "test")
            .await
            .unwrap();
    }
    access_token(&t, email, &[Scope::Admin]).await
}

struct Api<'a> {
    app: &'a TestApp,
    token: String,
}

impl Api<'_> {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .app
            .http
            .request(method, format!("{}{}", self.app.base, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }
    async fn get(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::DELETE, path, None).await
    }
    async fn create(&self, body: Value) -> Value {
        let resp = self.post("/v1/admin/rules", body).await;
        assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
        resp.json().await.unwrap()
    }
}

async fn api<'a>(app: &'a TestApp) -> Api<'a> {
    Api {
        app,
        token: admin_token(app, &app.firm_a, "adam@a.test").await,
    }
}

async fn audit_actions(t: &Tenant, subject: &str) -> Vec<String> {
    sqlx::query("SELECT action FROM audit_log WHERE subject = $1 ORDER BY seq")
        .bind(subject)
        .fetch_all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn rule_count(t: &Tenant) -> (i64, i64) {
    let q = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(&t.db)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    (
        q("SELECT COUNT(*) FROM rules").await,
        q("SELECT COUNT(*) FROM audit_log").await,
    )
}

fn acme_rule(name: &str) -> Value {
    json!({
        "name": name,
        "conditions": [{"field": "from", "op": "domain", "value": "acme.com"}],
        "action": "suggest",
        "targets": ["matter:M-1"],
    })
}

fn names(list: &Value) -> Vec<String> {
    list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}:{}", r["position"], r["name"].as_str().unwrap()))
        .collect()
}

both_backends!(api_round_trip_with_audit, |app: TestApp| async move {
    let a = api(&app).await;
    let t = app.tenant(&app.firm_a).await;
    let c1 = record_id(&t, "case", "C-1").await;

    let r1 = a.create(acme_rule("Acme")).await;
    assert_eq!(r1["position"], 1);
    assert_eq!(r1["enabled"], true);
    assert_eq!(r1["stop"], false);
    assert_eq!(r1["targets"][0]["kind"], "matter");
    assert_eq!(r1["targets"][0]["reference"], "M-1");
    assert_eq!(r1["targets"][0]["title"], "Acme v. Widget");
    assert_eq!(r1["targets"][0]["status"], "open");
    assert_eq!(
        r1["conditions"],
        json!([{"field": "from", "op": "domain", "value": "acme.com", "negate": false}])
    );
    // Targets by record id work too.
    let r2 = a
        .create(json!({
            "name": "PDFs",
            "conditions": [{"field": "attachment_name", "op": "glob", "value": "*.pdf"}],
            "action": "auto_file",
            "targets": [c1],
            "stop": true,
        }))
        .await;
    assert_eq!(r2["position"], 2);
    assert_eq!(r2["targets"][0]["id"], c1.as_str());
    let r3 = a
        .create(json!({
            "name": "Confidential",
            "enabled": false,
            "conditions": [{"field": "subject", "op": "regex", "value": "^privileged", "negate": false}],
            "action": "never_auto_file",
        }))
        .await;
    assert_eq!(r3["position"], 3);
    assert_eq!(r3["enabled"], false);

    let list: Value = a.get("/v1/admin/rules").await.json().await.unwrap();
    assert_eq!(names(&list), ["1:Acme", "2:PDFs", "3:Confidential"]);

    let id1 = r1["id"].as_str().unwrap().to_string();
    let id3 = r3["id"].as_str().unwrap().to_string();
    let got: Value = a
        .get(&format!("/v1/admin/rules/{id1}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "Acme");

    // Update: only the fields given change.
    let resp = a
        .patch(
            &format!("/v1/admin/rules/{id1}"),
            json!({"name": "Acme Corp", "conditions": [
                {"field": "participant", "op": "address", "value": "Dana@Acme.com"},
                {"field": "subject", "op": "contains", "value": "draft", "negate": true}
            ]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let upd: Value = resp.json().await.unwrap();
    assert_eq!(upd["name"], "Acme Corp");
    assert_eq!(upd["conditions"][0]["value"], "dana@acme.com");
    assert_eq!(upd["conditions"][1]["negate"], true);
    assert_eq!(upd["action"], "suggest");
    assert_eq!(upd["targets"][0]["reference"], "M-1");

    // Move the last to the top: everything renumbers.
    let resp = a
        .post(
            &format!("/v1/admin/rules/{id3}/move"),
            json!({"position": 1}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let moved: Value = resp.json().await.unwrap();
    assert_eq!(names(&moved), ["1:Confidential", "2:Acme Corp", "3:PDFs"]);
    let (status, p) = problem(
        a.post(
            &format!("/v1/admin/rules/{id3}/move"),
            json!({"position": 4}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(p["type"].as_str().unwrap().ends_with("invalid-position"));

    // Delete: the rest close the gap.
    assert_eq!(
        a.delete(&format!("/v1/admin/rules/{id1}")).await.status(),
        204
    );
    assert_eq!(a.get(&format!("/v1/admin/rules/{id1}")).await.status(), 404);
    let list: Value = a.get("/v1/admin/rules").await.json().await.unwrap();
    assert_eq!(names(&list), ["1:Confidential", "2:PDFs"]);

    assert_eq!(
        audit_actions(&t, &id1).await,
        ["rule.created", "rule.updated", "rule.deleted"]
    );
    assert_eq!(
        audit_actions(&t, &id3).await,
        ["rule.created", "rule.moved"]
    );
    let detail: String =
        sqlx::query("SELECT detail FROM audit_log WHERE subject = $1 AND action = 'rule.updated'")
            .bind(&id1)
            .fetch_one(&t.db)
            .await
            .unwrap()
            .get(0);
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["changed"]["name"], "Acme Corp");
    assert!(detail["changed"].get("action").is_none());
    assert!(matches!(
        docket::audit::verify(&t.db).await.unwrap(),
        docket::audit::ChainStatus::Intact { .. }
    ));
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rules_are_precise_422s_and_write_nothing() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let a = api(&app).await;
    let t = app.tenant(&app.firm_a).await;
    let tb = app.tenant(&app.firm_b).await;
    let b_record = record_id(&tb, "matter", "B-9").await;
    let existing = a.create(acme_rule("Existing")).await;
    let before = rule_count(&t).await;
    let with = |patch: Value| {
        let mut r = acme_rule("New");
        for (k, v) in patch.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let cases = [
        (
            with(
                json!({"conditions": [{"field": "subject", "op": "regex", "value": "(unclosed"}]}),
            ),
            422,
            "invalid-regex",
            "condition 1",
        ),
        (
            with(json!({"conditions": [
                {"field": "from", "op": "domain", "value": "acme.com"},
                {"field": "attachment_name", "op": "glob", "value": "*.{pdf"}]})),
            422,
            "invalid-glob",
            "condition 2",
        ),
        (
            with(json!({"targets": ["matter:M-404"]})),
            422,
            "unknown-target",
            "matter:M-404",
        ),
        // Another tenant's record id is unknown here.
        (
            with(json!({"targets": [b_record]})),
            422,
            "unknown-target",
            "",
        ),
        (with(json!({"conditions": []})), 422, "no-conditions", ""),
        (
            with(
                json!({"conditions": [{"field": "subject", "op": "domain", "value": "acme.com"}]}),
            ),
            422,
            "invalid-condition",
            "does not take operator",
        ),
        (
            with(json!({"conditions": [{"field": "subject", "op": "sounds_like", "value": "x"}]})),
            422,
            "invalid-request",
            "",
        ),
        (with(json!({"targets": []})), 422, "no-targets", ""),
        (with(json!({"name": "  "})), 422, "invalid-name", ""),
        (with(json!({"name": "existing"})), 409, "exists", ""),
    ];
    for (body, status, slug, needle) in cases {
        let (got, p) = problem(a.post("/v1/admin/rules", body.clone()).await).await;
        assert_eq!(got, status, "{body} → {p}");
        assert!(p["type"].as_str().unwrap().ends_with(slug), "{body} → {p}");
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
    }
    // Updates are validated the same way.
    let id = existing["id"].as_str().unwrap();
    let (got, p) = problem(
        a.patch(
            &format!("/v1/admin/rules/{id}"),
            json!({"conditions": [{"field": "subject", "op": "regex", "value": "a{5,3}"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(got, 422);
    assert!(p["type"].as_str().unwrap().ends_with("invalid-regex"));
    assert_eq!(rule_count(&t).await, before);
    // Unknown ids.
    assert_eq!(a.get("/v1/admin/rules/nope").await.status(), 404);
    assert_eq!(
        a.delete(&format!("/v1/admin/rules/{}", "0".repeat(32)))
            .await
            .status(),
        404
    );
}

fn pdf_email(subject: &str, body: &str) -> Vec<u8> {
    use mail_builder::MessageBuilder;
    MessageBuilder::new()
        .from(("Dana Client", "dana@legal.acme.com"))
        .to(vec![("Alice", "alice@a.test")])
        .subject(subject)
        .date(1_763_000_000i64)
        .message_id(format!("{}@acme.com", subject.len()))
        .text_body(body)
        .attachment("application/pdf", "Draft.pdf", noise(500, 3))
        .write_to_vec()
        .unwrap()
}

async fn seed_dry_run_rules(a: &Api<'_>) {
    a.create(json!({
        "name": "Acme matters",
        "conditions": [{"field": "from", "op": "domain", "value": "acme.com"}],
        "action": "suggest",
        "targets": ["matter:M-1"],
    }))
    .await;
    a.create(json!({
        "name": "Not from Globex",
        "conditions": [{"field": "from", "op": "domain", "value": "globex.com", "negate": true},
                       {"field": "subject", "op": "regex", "value": "^invoice"}],
        "action": "suggest",
        "targets": ["contract:K-1"],
    }))
    .await;
    a.create(json!({
        "name": "Drafts auto",
        "conditions": [{"field": "attachment_name", "op": "glob", "value": "*.PDF"}],
        "action": "auto_file",
        "targets": ["case:C-1"],
    }))
    .await;
    a.create(json!({
        "name": "Privileged",
        "conditions": [{"field": "body", "op": "contains", "value": "attorney-client"}],
        "action": "never_auto_file",
    }))
    .await;
    a.create(json!({
        "name": "Switched off",
        "enabled": false,
        "conditions": [{"field": "from", "op": "domain", "value": "acme.com"}],
        "action": "auto_file",
        "targets": ["contract:K-1"],
    }))
    .await;
}

fn check_plain_decision(d: &Value) {
    let rules = d["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 5);
    assert_eq!(rules[0]["name"], "Acme matters");
    assert_eq!(rules[0]["outcome"], "matched");
    assert_eq!(
        rules[0]["conditions"][0]["because"],
        "from dana@legal.acme.com is in domain acme.com"
    );
    assert_eq!(rules[1]["outcome"], "not_matched");
    assert_eq!(rules[1]["conditions"][0]["matched"], true);
    assert_eq!(rules[1]["conditions"][1]["matched"], false);
    assert!(rules[1]["conditions"][1]["because"]
        .as_str()
        .unwrap()
        .contains("does not match /^invoice/"));
    assert_eq!(rules[2]["outcome"], "matched");
    assert_eq!(
        rules[2]["conditions"][0]["because"],
        "attachment Draft.pdf matches *.PDF"
    );
    assert_eq!(rules[3]["outcome"], "not_matched");
    assert_eq!(rules[4]["outcome"], "disabled");
    assert_eq!(d["suggest"][0]["record"]["reference"], "M-1");
    assert_eq!(d["suggest"][0]["rule"], "Acme matters");
    assert_eq!(d["suggest"].as_array().unwrap().len(), 1);
    assert_eq!(d["auto_file"][0]["record"]["reference"], "C-1");
    assert_eq!(d["auto_file"][0]["record"]["kind"], "case");
    assert_eq!(d["auto_file"][0]["rule"], "Drafts auto");
    assert_eq!(d["confidential_by"], Value::Null);
}

both_backends!(dry_run_by_upload_and_by_filing, |app: TestApp| async move {
    let a = api(&app).await;
    seed_dry_run_rules(&a).await;
    let t = app.tenant(&app.firm_a).await;
    let before = rule_count(&t).await;

    // Upload: standard base64 as `base64 file.eml` prints it (wrapped, with + and /).
    let raw = pdf_email("Draft settlement", "Please review.\r\n");
    let std_b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let wrapped: String = std_b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap().to_string() + "\n")
        .collect();
    let resp = a
        .post("/v1/admin/rules/dry-run", json!({"raw": wrapped}))
        .await;
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["message"]["subject"], "Draft settlement");
    assert_eq!(out["message"]["attachments"], json!(["Draft.pdf"]));
    check_plain_decision(&out["decision"]);
    // A dry run changes nothing.
    assert_eq!(rule_count(&t).await, before);

    // By filing id: file it first, then ask.
    let resp = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(&raw, &["matter:M-1"]),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let filed: Value = resp.json().await.unwrap();
    let fid = filed["filings"][0]["id"].as_str().unwrap();
    let resp = a
        .post("/v1/admin/rules/dry-run", json!({"filing_id": fid}))
        .await;
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    check_plain_decision(&out["decision"]);

    // The confidential rule, placed after the auto-filing rule, still wins.
    let raw = pdf_email("Draft", "Attorney-Client privileged.\r\n");
    let resp = a
        .post("/v1/admin/rules/dry-run", json!({"raw": b64url(&raw)}))
        .await;
    let out: Value = resp.json().await.unwrap();
    let d = &out["decision"];
    assert_eq!(d["rules"][3]["outcome"], "matched");
    assert_eq!(
        d["rules"][3]["conditions"][0]["because"],
        "body contains \"attorney-client\""
    );
    assert_eq!(d["confidential_by"], "Privileged");
    assert_eq!(d["auto_file"], json!([]));
    let suggested: Vec<&str> = d["suggest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["record"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(suggested, ["M-1", "C-1"]);

    // Bad input.
    let (s, p) = problem(a.post("/v1/admin/rules/dry-run", json!({})).await).await;
    assert_eq!(s, 422, "{p}");
    let (s, p) = problem(
        a.post(
            "/v1/admin/rules/dry-run",
            json!({"raw": b64url(b"just some words")}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 422);
    assert!(p["type"].as_str().unwrap().ends_with("not-an-email"));
    let (s, _) = problem(
        a.post(
            "/v1/admin/rules/dry-run",
            json!({"filing_id": "0".repeat(32)}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 404);
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_targets_are_dropped_with_a_note() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let a = api(&app).await;
    let t = app.tenant(&app.firm_a).await;
    a.create(json!({
        "name": "Two targets",
        "conditions": [{"field": "from", "op": "domain", "value": "acme.com"}],
        "action": "auto_file",
        "targets": ["matter:M-1", "case:C-1"],
    }))
    .await;
    sqlx::query("UPDATE records SET status = 'closed' WHERE reference = 'C-1'")
        .execute(&t.db)
        .await
        .unwrap();
    let raw = pdf_email("Hello", "x\r\n");
    let out: Value = a
        .post("/v1/admin/rules/dry-run", json!({"raw": b64url(&raw)}))
        .await
        .json()
        .await
        .unwrap();
    let d = &out["decision"];
    assert_eq!(d["auto_file"].as_array().unwrap().len(), 1);
    assert_eq!(d["auto_file"][0]["record"]["reference"], "M-1");
    assert!(d["notes"][0].as_str().unwrap().contains("case:C-1"), "{d}");
    assert!(d["notes"][0].as_str().unwrap().contains("closed"), "{d}");
    // The library function the add-on and filing use gives the same answer.
    let parsed = docket::mail::parse(&raw, &app.config.limits).unwrap();
    let decision = docket::rules::evaluate(&t.db, &parsed, &raw).await.unwrap();
    assert_eq!(decision.auto_file[0].record.target(), "matter:M-1");
    assert_eq!(decision.auto_file[0].rule, "Two targets");
}

both_backends!(another_tenants_rules_are_404, |app: TestApp| async move {
    let a = api(&app).await;
    let rule = a.create(acme_rule("Firm A only")).await;
    let id = rule["id"].as_str().unwrap();
    let raw = pdf_email("Secret", "x\r\n");
    let resp = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(&raw, &["matter:M-1"]),
        )
        .await;
    let filed: Value = resp.json().await.unwrap();
    let fid = filed["filings"][0]["id"].as_str().unwrap();

    let b = Api {
        app: &app,
        token: admin_token(&app, &app.firm_b, "bella@b.test").await,
    };
    let path = format!("/v1/admin/rules/{id}");
    assert_eq!(b.get(&path).await.status(), 404);
    assert_eq!(b.patch(&path, json!({"name": "mine"})).await.status(), 404);
    assert_eq!(b.delete(&path).await.status(), 404);
    assert_eq!(
        b.post(&format!("{path}/move"), json!({"position": 1}))
            .await
            .status(),
        404
    );
    let list: Value = b.get("/v1/admin/rules").await.json().await.unwrap();
    assert_eq!(list["rules"], json!([]));
    let (s, _) = problem(
        b.post("/v1/admin/rules/dry-run", json!({"filing_id": fid}))
            .await,
    )
    .await;
    assert_eq!(s, 404);
    // Firm A's rule is untouched.
    let got: Value = a.get(&path).await.json().await.unwrap();
    assert_eq!(got["name"], "Firm A only");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_scopes_apply() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    let adam = directory::user_by_email(&t.db, "adam@a.test")
        .await
        .unwrap()
        .unwrap();
    let (read, _) = tokens::create(&t.db, &t.id, &adam.id, "r", &[Scope::Read], 30, "test")
        .await
        .unwrap();
    let r = Api {
        app: &app,
        token: read,
    };
    assert_eq!(r.get("/v1/admin/rules").await.status(), 200);
    let (s, p) = problem(r.post("/v1/admin/rules", acme_rule("x")).await).await;
    assert_eq!(s, 403, "{p}");
    // The OpenAPI document describes the rules endpoints.
    let doc: Value = app
        .http
        .get(format!("{}/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/admin/rules",
        "/v1/admin/rules/{id}",
        "/v1/admin/rules/{id}/move",
        "/v1/admin/rules/dry-run",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert_eq!(
        doc["paths"]["/v1/admin/rules/dry-run"]["post"]["tags"],
        json!(["rules"])
    );
    assert!(doc["components"]["schemas"].get("Decision").is_some());
    // Without credentials.
    let resp = app
        .http
        .get(format!("{}/v1/admin/rules", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

// ---------------------------------------------------------------------------------------
// Console
// ---------------------------------------------------------------------------------------

struct Console {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

async fn console(app: &TestApp) -> Console {
    let t = app.tenant(&app.firm_a).await;
    let adam = directory::user_by_email(&t.db, "adam@a.test")
        .await
        .unwrap()
        .unwrap();
    let mut conn = t.db.acquire().await.unwrap();
    let (token, session) = docket::accounts::session::create(
        &mut conn,
        &adam.id,
        true,
        "127.0.0.1",
        "test",
        &app.config.admin,
    )
    .await
    .unwrap();
    Console {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: app.base.clone(),
        cookie: format!(
            "{}={}",
            docket::http::admin::ctx::cookie_name(&app.state),
            docket::accounts::session::cookie_value(&t.id, &token)
        ),
        csrf: session.csrf,
    }
}

impl Console {
    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{}", self.base, path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
    async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
        let mut all: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        all.extend_from_slice(pairs);
        self.http
            .post(format!("{}{}", self.base, path))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(&all).unwrap())
            .send()
            .await
            .unwrap()
    }
    async fn upload(&self, path: &str, eml: &[u8], filing_id: &str) -> (u16, String) {
        let boundary = "----docketboundary7MA4YWxk";
        let mut body = Vec::new();
        let text = |name: &str, value: &str| {
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
        };
        body.extend_from_slice(text("csrf", &self.csrf).as_bytes());
        body.extend_from_slice(text("filing_id", filing_id).as_bytes());
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"eml\"; filename=\"{}\"\r\nContent-Type: message/rfc822\r\n\r\n",
                if eml.is_empty() { "" } else { "msg.eml" }
            )
            .as_bytes(),
        );
        body.extend_from_slice(eml);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let resp = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("cookie", &self.cookie)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_create_edit_move_and_dry_run() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    let c = console(&app).await;
    let m1 = record_id(&t, "matter", "M-1").await;
    let k1 = record_id(&t, "contract", "K-1").await;

    let (s, html) = c.get("/console/rules").await;
    assert_eq!(s, 200);
    assert!(html.contains("No rules yet"));
    let (s, html) = c.get("/console/rules/new").await;
    assert_eq!(s, 200);
    for label in [
        "Condition 1 field",
        "Condition 5 value",
        "Condition 1 not",
        "Targets",
        "Create rule",
        "Add a target",
        "<option value=\"matter:M-1\">Acme v. Widget</option>",
    ] {
        assert!(html.contains(label), "missing {label}");
    }

    // An invalid regex re-renders the form with the precise message and the typed values.
    let resp = c
        .post(
            "/console/rules/new",
            &[
                ("name", "Drafts"),
                ("c0_field", "subject"),
                ("c0_op", "regex"),
                ("c0_value", "(draft"),
                ("action", "suggest"),
                ("targets", &m1),
                ("enabled", "1"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 422);
    let html = resp.text().await.unwrap();
    assert!(html.contains("the subject regex"), "{html}");
    assert!(html.contains("value=\"(draft\""));

    // Create two rules (blank rows are ignored; two targets from the multi-select).
    let resp = c
        .post(
            "/console/rules/new",
            &[
                ("name", "Acme drafts"),
                ("c0_field", "from"),
                ("c0_op", "domain"),
                ("c0_value", "acme.com"),
                ("c1_field", "subject"),
                ("c1_op", "contains"),
                ("c1_value", "invoice"),
                ("c1_not", "1"),
                ("c2_field", "from"),
                ("c2_op", "address"),
                ("c2_value", ""),
                ("action", "suggest"),
                ("targets", " matter:M-1 "),
                ("targets", &k1),
                ("targets", ""),
                ("enabled", "1"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/console/rules?done=created");
    let resp = c
        .post(
            "/console/rules/new",
            &[
                ("name", "Confidential"),
                ("c0_field", "body"),
                ("c0_op", "contains"),
                ("c0_value", "privileged"),
                ("action", "never_auto_file"),
                ("stop", "1"),
                ("enabled", "1"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let rules = docket::rules::list_rules(&t.db).await.unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].conditions.len(), 2);
    assert!(rules[0].conditions[1].negate);
    assert_eq!(rules[0].targets, vec![m1.clone(), k1.clone()]);
    assert!(rules[1].stop);
    let (first, second) = (rules[0].id.clone(), rules[1].id.clone());

    // A target typed wrong is refused, naming it; nothing is created.
    let resp = c
        .post(
            "/console/rules/new",
            &[
                ("name", "Typo"),
                ("c0_field", "from"),
                ("c0_op", "domain"),
                ("c0_value", "acme.com"),
                ("action", "suggest"),
                ("targets", "matter:M-404"),
                ("enabled", "1"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 422);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("M-404") && html.contains("value=\"matter:M-404\""),
        "{html}"
    );
    assert_eq!(docket::rules::list_rules(&t.db).await.unwrap().len(), 2);
    // A saved rule's targets come back as references in their fields.
    let (_, html) = c.get(&format!("/console/rules/{first}")).await;
    assert!(
        html.contains("name=\"targets\" value=\"matter:M-1\""),
        "{html}"
    );
    assert!(
        html.contains("name=\"targets\" value=\"contract:K-1\""),
        "{html}"
    );

    let (s, html) = c.get("/console/rules?done=created").await;
    assert_eq!(s, 200);
    assert!(html.contains("Rule created"));
    assert!(html.contains("from is in domain acme.com and not subject contains invoice"));
    assert!(html.contains("matter:M-1, contract:K-1"));
    assert!(html.contains("Move down") && html.contains("Move up"));

    // Move the second up; disable the first.
    let resp = c
        .post(
            &format!("/console/rules/{second}/move"),
            &[("position", "1")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let resp = c
        .post(
            &format!("/console/rules/{first}/enabled"),
            &[("enabled", "0")],
        )
        .await;
    assert_eq!(resp.headers()["location"], "/console/rules?done=disabled");
    let rules = docket::rules::list_rules(&t.db).await.unwrap();
    assert_eq!(rules[0].id, second);
    assert!(!rules[1].enabled);
    assert_eq!(
        audit_actions(&t, &second).await,
        ["rule.created", "rule.moved"]
    );

    // The edit form shows the rule; saving keeps what it shows.
    let (s, html) = c.get(&format!("/console/rules/{first}")).await;
    assert_eq!(s, 200);
    assert!(html.contains("value=\"Acme drafts\""));
    assert!(html.contains("Delete rule"));
    let resp = c
        .post(
            &format!("/console/rules/{first}"),
            &[
                ("name", "Acme all"),
                ("c0_field", "from"),
                ("c0_op", "domain"),
                ("c0_value", "acme.com"),
                ("action", "suggest"),
                ("targets", &m1),
                ("enabled", "1"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let r = docket::rules::get_rule(&t.db, &first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.name, "Acme all");
    assert!(r.enabled);
    assert_eq!(r.conditions.len(), 1);
    assert_eq!(r.targets, vec![m1.clone()]);

    // Dry run by upload: the confidential rule (first, with stop) matches.
    let (s, html) = c.get("/console/rules/dry-run").await;
    assert_eq!(s, 200);
    assert!(html.contains("Message (.eml)"));
    let raw = pdf_email("Draft", "This is privileged.\r\n");
    let (s, html) = c.upload("/console/rules/dry-run", &raw, "").await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("What would happen"));
    assert!(
        html.contains("body contains &#34;privileged&#34;")
            || html.contains("body contains &quot;privileged&quot;"),
        "{html}"
    );
    assert!(html.contains("Never auto-filed (confidential) because of rule Confidential"));
    assert!(html.contains("stopped here"));
    assert!(html.contains("not evaluated (stopped earlier)"));

    // By filing id, once that rule is gone.
    let resp = c
        .post(&format!("/console/rules/{second}/delete"), &[])
        .await;
    assert_eq!(resp.headers()["location"], "/console/rules?done=deleted");
    let resp = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(&raw, &["matter:M-1"]),
        )
        .await;
    let filed: Value = resp.json().await.unwrap();
    let fid = filed["filings"][0]["id"].as_str().unwrap();
    // The filing page links to a dry run with that filing picked.
    let (s, html) = c.get(&format!("/console/filings/{fid}")).await;
    assert_eq!(s, 200, "{html}");
    assert!(
        html.contains(&format!("/console/rules/dry-run?filing_id={fid}")),
        "{html}"
    );
    let (s, html) = c
        .get(&format!("/console/rules/dry-run?filing_id={fid}"))
        .await;
    assert_eq!(s, 200);
    assert!(html.contains(&format!("value=\"{fid}\"")), "{html}");
    let (s, html) = c.upload("/console/rules/dry-run", b"", fid).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("from dana@legal.acme.com is in domain acme.com"));
    assert!(html.contains(
        "Suggested: <span class=\"ref\">matter:M-1</span> — Acme v. Widget (rule Acme all)"
    ));
    // Neither given, or a bad filing id: the page says so.
    let (s, html) = c.upload("/console/rules/dry-run", b"", "").await;
    assert_eq!(s, 422);
    assert!(html.contains("Choose a message (.eml) file or enter a filing id"));
    let (s, html) = c.upload("/console/rules/dry-run", b"", "nope").await;
    assert_eq!(s, 404);
    assert!(html.contains("no such filing"));
    // CSRF is checked.
    let resp = c
        .http
        .post(format!("{}/console/rules/{first}/delete", c.base))
        .header("cookie", &c.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(docket::rules::get_rule(&t.db, &first)
        .await
        .unwrap()
        .is_some());
}

/// The add-on's suggestions for `raw`, as `email` sees them.
async fn addon_context(app: &TestApp, email: &str, raw: &[u8]) -> Value {
    let resp = app
        .http
        .post(format!("{}/v1/addon/context", app.base))
        .bearer_auth(app.token(email))
        .json(&json!({"raw": b64url(raw)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

both_backends!(
    rules_feed_suggestions_and_auto_filing,
    |app: TestApp| async move {
        let a = api(&app).await;
        seed_dry_run_rules(&a).await;
        let t = app.tenant(&app.firm_a).await;

        // Suggestions name the rule; the auto-file target is said apart, never offered.
        let raw = pdf_email("Invoice 7", "Please see the draft.");
        let ctx = addon_context(&app, "alice@a.test", &raw).await;
        let sugg = ctx["suggestions"].as_array().unwrap();
        let by_target = |id: &str| {
            sugg.iter()
                .find(|s| s["target"]["id"] == id)
                .unwrap_or_else(|| panic!("{id} not suggested: {sugg:?}"))
                .clone()
        };
        let m1 = by_target("M-1");
        assert_eq!(m1["source"], "rule");
        assert!(
            m1["reasons"][0].as_str().unwrap().contains("Acme matters"),
            "{m1}"
        );
        assert!(
            !sugg.iter().any(|s| s["target"]["id"] == "C-1"),
            "an auto-file target is not a choice: {sugg:?}"
        );
        assert_eq!(
            ctx["rule_filings"],
            json!([{"target": {"kind": "case", "id": "C-1", "title": "Smith v. Jones"}, "rule": "Drafts auto"}]),
            "{ctx}"
        );
        let k1 = by_target("K-1");
        assert!(k1["reasons"][0]
            .as_str()
            .unwrap()
            .contains("Not from Globex"));

        // Filing to M-1 also files to C-1, as the system user, audited with the rule's name.
        let resp = app
            .post_filing(
                &app.token("alice@a.test"),
                &filing_body(&raw, &["matter:M-1"]),
            )
            .await;
        assert_eq!(resp.status(), 201);
        let out: Value = resp.json().await.unwrap();
        assert_eq!(out["filings"].as_array().unwrap().len(), 1);
        let auto = out["auto_filed"].as_array().unwrap();
        assert_eq!(auto.len(), 1, "{out}");
        assert_eq!(auto[0]["target"]["id"], "C-1");
        assert_eq!(auto[0]["rule"], "Drafts auto");
        assert_eq!(auto[0]["created"], true);
        let fid = auto[0]["filing_id"].as_str().unwrap();
        let row = sqlx::query("SELECT filed_by, note FROM filings WHERE id = $1")
            .bind(fid)
            .fetch_one(&t.db)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), "system");
        assert!(row.get::<String, _>(1).contains("Drafts auto"));
        let detail: String = sqlx::query(
            "SELECT detail FROM audit_log WHERE action = 'filing.created' AND subject = $1",
        )
        .bind(fid)
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get(0);
        let detail: Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(detail["rule"], "Drafts auto");
        assert_eq!(detail["on_behalf_of"], "alice@a.test");
        // Filing again adds nothing anywhere.
        let again: Value = app
            .post_filing(
                &app.token("alice@a.test"),
                &filing_body(&raw, &["matter:M-1"]),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(again["auto_filed"][0]["created"], false);

        // Reopened: each filing says who filed it (the rule by its name), the note, and a
        // link to its View page; nothing is left to file by rule.
        let ctx = addon_context(&app, "alice@a.test", &raw).await;
        let filed = ctx["already_filed"].as_array().unwrap();
        let line = |id: &str| {
            filed
                .iter()
                .find(|f| f["target"]["id"] == id)
                .unwrap()
                .clone()
        };
        let (m1, c1) = (line("M-1"), line("C-1"));
        assert_eq!(m1["filed_by_name"], "alice@a.test", "{m1}");
        assert!(m1["rule"].is_null(), "{m1}");
        assert_eq!(c1["filed_by_name"], "firm rule “Drafts auto”", "{c1}");
        assert_eq!(c1["rule"], "Drafts auto", "{c1}");
        assert!(c1["note"].is_null(), "{c1}");
        for f in [&m1, &c1] {
            let path = f["view_path"].as_str().unwrap();
            assert!(
                path.starts_with(&format!(
                    "/view/filings/{}?t=",
                    f["filing_id"].as_str().unwrap()
                )),
                "{f}"
            );
            let page = app
                .http
                .get(format!("{}{path}", app.base))
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), 200, "{path}");
        }
        assert_eq!(ctx["rule_filings"], json!([]), "{ctx}");

        // A privileged message (never_auto_file) is filed only where the user says.
        let privileged = pdf_email("Privileged draft", "attorney-client communication");
        let out: Value = app
            .post_filing(
                &app.token("alice@a.test"),
                &filing_body(&privileged, &["matter:M-1"]),
            )
            .await
            .json()
            .await
            .unwrap();
        assert!(out.get("auto_filed").is_none(), "{out}");
        let n: i64 = sqlx::query(
        "SELECT COUNT(*) FROM filings f JOIN messages m ON m.id = f.message_id WHERE m.subject = 'Privileged draft'",
    )
    .fetch_one(&t.db)
    .await
    .unwrap()
    .get(0);
        assert_eq!(n, 1);
        assert!(matches!(
            docket::audit::verify(&t.db).await.unwrap(),
            docket::audit::ChainStatus::Intact { .. }
        ));
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_suggestions_respect_ethical_walls() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let a = api(&app).await;
    a.create(acme_rule("Acme matters")).await;
    let t = app.tenant(&app.firm_a).await;
    let alice = directory::user_by_email(&t.db, "alice@a.test")
        .await
        .unwrap()
        .unwrap();
    let m1 = record_id(&t, "matter", "M-1").await;
    let resp = a
        .send(
            reqwest::Method::PUT,
            &format!("/v1/admin/records/{m1}/access"),
            Some(json!({"firm_wide": true, "members": [], "excluded": [{"kind": "user", "id": alice.id}]})),
        )
        .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let raw = pdf_email("Walled", "hello");
    let ctx = addon_context(&app, "alice@a.test", &raw).await;
    assert!(
        !ctx["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["target"]["id"] == "M-1"),
        "{ctx}"
    );
    // Someone else still gets it.
    let ctx = addon_context(&app, "adam@a.test", &raw).await;
    assert!(ctx["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["target"]["id"] == "M-1"));
}

both_backends!(
    concurrent_filings_with_auto_file_rules_all_succeed,
    |app: TestApp| async move {
        let a = api(&app).await;
        a.create(json!({
            "name": "Acme to C-1",
            "conditions": [{"field": "from", "op": "domain", "value": "acme.com"}],
            "action": "auto_file",
            "targets": ["case:C-1"],
        }))
        .await;
        let app = std::sync::Arc::new(app);
        let mut tasks = Vec::new();
        // More concurrent filings than a tenant pool has connections: nothing may wait on a
        // second connection while holding the audit lock.
        for i in 0..20 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let raw = email(
                    &format!("auto {i}"),
                    Some(&format!("<auto-{i}@acme.com>")),
                    &[],
                );
                let resp = app
                    .post_filing(
                        &app.token("alice@a.test"),
                        &filing_body(&raw, &["matter:M-1"]),
                    )
                    .await;
                assert_eq!(resp.status(), 201);
                let out: Value = resp.json().await.unwrap();
                assert_eq!(out["auto_filed"][0]["target"]["id"], "C-1");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let t = app.tenant(&app.firm_a).await;
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM filings WHERE filed_by = 'system'")
            .fetch_one(&t.db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 20);
    }
);
