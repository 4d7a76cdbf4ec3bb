//! People and access: record teams and ethical walls applied to suggestions, search,
//! "already filed", filing and filing reads; the users/groups/records admin API (cross-tenant
//! 404s, last-admin protection, group name conflicts, team validation); CSV import; the
//! console pages.

use crate::both_backends;
use crate::common::*;
use docket::accounts::{session, tokens};
use docket::tenancy::Tenant;
use serde_json::{json, Value};
use sqlx::Row;

/// An admin access token for `email` (must be an admin of `t`).
async fn admin_token(t: &Tenant, email: &str) -> String {
    access_token(t, email, &[tokens::Scope::Admin]).await
}

/// Calls the admin API: (status, JSON body or Null).
async fn api(
    app: &TestApp,
    secret: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{}", app.base, path);
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.http.request(m, url).bearer_auth(secret);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Calls the admin API from a person's session (cookie, CSRF token): (status, JSON or Null).
async fn person_api(
    app: &TestApp,
    (cookie, csrf): &(String, String),
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{}", app.base, path);
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app
        .http
        .request(m, url)
        .header("cookie", cookie)
        .header("x-csrf-token", csrf);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn slug(body: &Value, slug: &str) {
    assert!(
        body["type"].as_str().unwrap_or("").ends_with(slug),
        "expected problem {slug}, got {body}"
    );
}

async fn context(app: &TestApp, email: &str, raw: &[u8]) -> Value {
    let resp = app
        .http
        .post(format!("{}/v1/addon/context", app.base))
        .bearer_auth(app.token(email))
        .json(&json!({ "raw": b64url(raw) }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn targets(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s[key]["id"].as_str().unwrap().to_string())
        .collect()
}

async fn search(app: &TestApp, email: &str, q: &str) -> Vec<String> {
    let v: Value = app
        .get(&app.token(email), &format!("/v1/records?q={q}"))
        .await
        .json()
        .await
        .unwrap();
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// A message from a contact of M-1 and W-1 (acme.com) naming both in its subject.
fn walled_email() -> Vec<u8> {
    email(
        "About W-1 and M-1",
        Some("walled-1@acme.com"),
        &[("memo.pdf", "application/pdf", noise(2000, 3))],
    )
}

/// Adds filer fred@a.test in Partners and matter:W-1 (team: Partners only).
async fn setup_walled(app: &TestApp) -> (String, String) {
    let t = app.tenant(&app.firm_a).await;
    let adm = admin_token(&t, "adam@a.test").await;
    let (s, _) = api(
        app,
        &adm,
        "POST",
        "/v1/admin/users",
        Some(json!({"email": "fred@a.test", "display_name": "Fred", "role": "filer", "groups": ["partners"]})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, rec) = api(
        app,
        &adm,
        "POST",
        "/v1/admin/records",
        Some(json!({
            "kind": "matter", "reference": "W-1", "title": "Walled deal", "client": "Acme",
            "contacts": ["acme.com"], "firm_wide": false,
            "members": [{"kind": "group", "id": "partners"}],
        })),
    )
    .await;
    assert_eq!(s, 201, "{rec}");
    assert_eq!(rec["firm_wide"], false);
    assert_eq!(rec["members"][0]["name"], "Partners");
    (adm, rec["id"].as_str().unwrap().to_string())
}

both_backends!(
    team_records_are_invisible_to_non_members_everywhere,
    |app: TestApp| async move {
        let (_adm, _wid) = setup_walled(&app).await;
        let raw = walled_email();

        // Suggestions: fred (Partners) gets W-1, alice does not.
        let fred = context(&app, "fred@a.test", &raw).await;
        let alice = context(&app, "alice@a.test", &raw).await;
        assert!(
            targets(&fred["suggestions"], "target").contains(&"W-1".to_string()),
            "{fred}"
        );
        let alice_s = targets(&alice["suggestions"], "target");
        assert!(
            alice_s.contains(&"M-1".to_string()) && !alice_s.contains(&"W-1".to_string()),
            "{alice}"
        );

        // Search.
        assert_eq!(search(&app, "fred@a.test", "W-1").await, vec!["W-1"]);
        assert!(search(&app, "alice@a.test", "W-1").await.is_empty());
        assert!(search(&app, "alice@a.test", "walled").await.is_empty());

        // Filing: fred may; alice gets exactly the answer of an unknown record.
        let resp = app
            .post_filing(
                &app.token("fred@a.test"),
                &filing_body(&raw, &["matter:W-1"]),
            )
            .await;
        assert_eq!(resp.status(), 201);
        let filed: Value = resp.json().await.unwrap();
        let fid = filed["filings"][0]["id"].as_str().unwrap().to_string();
        let (s_walled, walled) = problem(
            app.post_filing(
                &app.token("alice@a.test"),
                &filing_body(&raw, &["matter:W-1"]),
            )
            .await,
        )
        .await;
        let (s_unknown, unknown) = problem(
            app.post_filing(
                &app.token("alice@a.test"),
                &filing_body(&raw, &["matter:W-404"]),
            )
            .await,
        )
        .await;
        assert_eq!((s_walled, s_unknown), (404, 404));
        assert_eq!(walled["type"], unknown["type"]);
        assert_eq!(
            walled["detail"].as_str().unwrap().replace("W-1", "X"),
            unknown["detail"].as_str().unwrap().replace("W-404", "X")
        );

        // Already filed: fred sees the filing, alice (and vera) do not.
        let fred = context(&app, "fred@a.test", &raw).await;
        assert_eq!(targets(&fred["already_filed"], "target"), vec!["W-1"]);
        let alice = context(&app, "alice@a.test", &raw).await;
        assert!(
            alice["already_filed"].as_array().unwrap().is_empty(),
            "{alice}"
        );
        let vera = context(&app, "vera@a.test", &raw).await;
        assert!(
            vera["already_filed"].as_array().unwrap().is_empty(),
            "{vera}"
        );

        // Filing reads: 404 for alice and for adam (an admin gets no bypass to content).
        for who in ["alice@a.test", "adam@a.test"] {
            let tok = app.token(who);
            for path in [
                format!("/v1/filings/{fid}"),
                format!("/v1/filings/{fid}/raw"),
                format!("/v1/filings/{fid}/attachments/0"),
            ] {
                assert_eq!(app.get(&tok, &path).await.status(), 404, "{who} {path}");
            }
            let list: Value = app
                .get(&tok, "/v1/filings?target=matter:W-1")
                .await
                .json()
                .await
                .unwrap();
            assert!(list["filings"].as_array().unwrap().is_empty());
            let all: Value = app.get(&tok, "/v1/filings").await.json().await.unwrap();
            assert!(all["filings"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["id"] != fid.as_str()));
        }
        // The add-on's View link: answers only while its user may see the record.
        let t = app.tenant(&app.firm_a).await;
        for (who, expected) in [("alice@a.test", 404), ("fred@a.test", 200)] {
            let uid = user_id(&t, who).await;
            let link = docket::http::view::filing_link(&app.state, &app.base, &t.id, &fid, &uid);
            let resp = app.http.get(&link).send().await.unwrap();
            assert_eq!(resp.status(), expected, "{who}");
            let raw_link = link.replace(
                &format!("/view/filings/{fid}?"),
                &format!("/view/filings/{fid}/raw?"),
            );
            assert_eq!(
                app.http.get(&raw_link).send().await.unwrap().status(),
                expected,
                "{who} raw"
            );
        }
        let tok = app.token("fred@a.test");
        assert_eq!(
            app.get(&tok, &format!("/v1/filings/{fid}")).await.status(),
            200
        );
        assert_eq!(
            app.get(&tok, &format!("/v1/filings/{fid}/raw"))
                .await
                .status(),
            200
        );
        assert_eq!(
            app.get(&tok, &format!("/v1/filings/{fid}/attachments/0"))
                .await
                .status(),
            200
        );
    }
);

both_backends!(
    group_membership_grants_and_exclusions_beat_every_grant,
    |app: TestApp| async move {
        let (adm, wid) = setup_walled(&app).await;
        let t = app.tenant(&app.firm_a).await;
        let alice = user_id(&t, "alice@a.test").await;
        let fred = user_id(&t, "fred@a.test").await;

        // Group membership grants: put alice in Partners.
        let (s, g) = api(
            &app,
            &adm,
            "PUT",
            "/v1/admin/groups/partners/members",
            Some(json!({"user_ids": [alice.clone(), fred.clone()]})),
        )
        .await;
        assert_eq!(s, 200, "{g}");
        assert_eq!(search(&app, "alice@a.test", "W-1").await, vec!["W-1"]);
        assert!(docket::access::can_see(&t.db, &alice, &wid).await.unwrap());

        // An exclusion of the user beats their group membership.
        let (s, r) = api(
            &app,
            &adm,
            "PUT",
            &format!("/v1/admin/records/{wid}/access"),
            Some(json!({
                "firm_wide": false,
                "members": [{"kind": "group", "id": "partners"}],
                "excluded": [{"kind": "user", "id": fred}],
            })),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert!(search(&app, "fred@a.test", "W-1").await.is_empty());
        assert_eq!(search(&app, "alice@a.test", "W-1").await, vec!["W-1"]);
        let (st, _) = problem(
            app.post_filing(
                &app.token("fred@a.test"),
                &filing_body(&walled_email(), &["matter:W-1"]),
            )
            .await,
        )
        .await;
        assert_eq!(st, 404);

        // An excluded group beats a personal membership.
        let (s, _) = api(
            &app,
            &adm,
            "PUT",
            &format!("/v1/admin/records/{wid}/access"),
            Some(json!({
                "firm_wide": false,
                "members": [{"kind": "user", "id": alice}],
                "excluded": [{"kind": "group", "id": "partners"}],
            })),
        )
        .await;
        assert_eq!(s, 200);
        assert!(search(&app, "alice@a.test", "W-1").await.is_empty());

        // An exclusion beats firm-wide: wall alice off M-1 (firm-wide).
        let m1 = record_id(&t, "matter", "M-1").await;
        let (s, r) = api(
            &app,
            &adm,
            "PUT",
            &format!("/v1/admin/records/{m1}/access"),
            Some(json!({
                "firm_wide": true, "members": [], "excluded": [{"kind": "user", "id": alice}],
            })),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["excluded"][0]["name"], "alice@a.test");
        assert!(search(&app, "alice@a.test", "M-1").await.is_empty());
        assert_eq!(search(&app, "fred@a.test", "M-1").await, vec!["M-1"]);
        let ctx = context(&app, "alice@a.test", &walled_email()).await;
        assert!(
            !targets(&ctx["suggestions"], "target").contains(&"M-1".to_string()),
            "{ctx}"
        );
        let (st, _) = problem(
            app.post_filing(
                &app.token("alice@a.test"),
                &filing_body(&walled_email(), &["matter:M-1"]),
            )
            .await,
        )
        .await;
        assert_eq!(st, 404);

        // The change is audited with before and after.
        let detail: String = sqlx::query(
        "SELECT detail FROM audit_log WHERE action = 'record.team_changed' AND subject = $1 ORDER BY seq DESC",
    )
    .bind(&m1)
    .fetch_one(&t.db)
    .await
    .unwrap()
    .get(0);
        let d: Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(d["before"]["excluded"], json!([]));
        assert_eq!(d["after"]["excluded"], json!(["user:alice@a.test"]));
    }
);

#[tokio::test]
async fn team_changes_are_validated() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    let adm = admin_token(&t, "adam@a.test").await;
    let alice = user_id(&t, "alice@a.test").await;
    let m1 = record_id(&t, "matter", "M-1").await;
    let before: i64 = sqlx::query("SELECT COUNT(*) FROM record_access")
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get(0);
    let path = format!("/v1/admin/records/{m1}/access");
    let (s, b) = api(
        &app,
        &adm,
        "PUT",
        &path,
        Some(json!({
            "firm_wide": false,
            "members": [{"kind": "user", "id": alice}],
            "excluded": [{"kind": "user", "id": alice}],
        })),
    )
    .await;
    assert_eq!(s, 422);
    slug(&b, "member-and-excluded");
    let (s, b) = api(
        &app,
        &adm,
        "PUT",
        &path,
        Some(json!({
            "firm_wide": false, "members": [{"kind": "user", "id": "nobody"}],
        })),
    )
    .await;
    assert_eq!(s, 422);
    slug(&b, "unknown-user");
    let (s, b) = api(
        &app,
        &adm,
        "PUT",
        &path,
        Some(json!({
            "firm_wide": false, "excluded": [{"kind": "group", "id": "nogroup"}],
        })),
    )
    .await;
    assert_eq!(s, 422);
    slug(&b, "unknown-group");
    // The system user is not a principal.
    let (s, _) = api(
        &app,
        &adm,
        "PUT",
        &path,
        Some(json!({
            "firm_wide": false, "members": [{"kind": "user", "id": "system"}],
        })),
    )
    .await;
    assert_eq!(s, 422);
    let (s, b) = api(&app, &adm, "POST", "/v1/admin/records", Some(json!({
        "kind": "matter", "reference": "V-1", "title": "V",
        "members": [{"kind": "group", "id": "partners"}], "excluded": [{"kind": "group", "id": "partners"}],
    }))).await;
    assert_eq!(s, 422);
    slug(&b, "member-and-excluded");
    let after: i64 = sqlx::query("SELECT COUNT(*) FROM record_access")
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    let (s, rec) = api(&app, &adm, "GET", &format!("/v1/admin/records/{m1}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(rec["firm_wide"], true);
    assert!(
        docket::directory::find_record(&t.db, docket::directory::RecordKind::Matter, "V-1")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn records_admin_create_edit_close_and_filter() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    let adm = admin_token(&t, "adam@a.test").await;
    let (s, r) = api(
        &app,
        &adm,
        "POST",
        "/v1/admin/records",
        Some(json!({
            "kind": "case", "reference": "C-77", "title": "Doe v. Roe", "client": "Doe",
            "contacts": ["Counsel@Roe.example", "roe.example"],
        })),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["firm_wide"], true);
    assert_eq!(r["contacts"], json!(["counsel@roe.example", "roe.example"]));
    let id = r["id"].as_str().unwrap().to_string();
    let (s, b) = api(
        &app,
        &adm,
        "POST",
        "/v1/admin/records",
        Some(json!({
        "kind": "case", "reference": "C-77", "title": "Again"})),
    )
    .await;
    assert_eq!(s, 409);
    slug(&b, "exists");

    let (s, r) = api(
        &app,
        &adm,
        "PATCH",
        &format!("/v1/admin/records/{id}"),
        Some(json!({"title": "Doe v. Roe (appeal)", "status": "closed"})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "closed");
    assert!(r["updated_at"].is_string());
    // A closed record takes no filings.
    let resp = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(&walled_email(), &["case:C-77"]),
        )
        .await;
    assert_eq!(resp.status(), 409);
    let (s, b) = api(
        &app,
        &adm,
        "PATCH",
        &format!("/v1/admin/records/{id}"),
        Some(json!({"status": "archived"})),
    )
    .await;
    assert_eq!(s, 422);
    slug(&b, "invalid-status");

    let (_, list) = api(&app, &adm, "GET", "/v1/admin/records?status=closed", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["reference"], "C-77");
    let (_, list) = api(
        &app,
        &adm,
        "GET",
        "/v1/admin/records?q=acme&kind=matter",
        None,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (s, _) = api(&app, &adm, "GET", "/v1/admin/records?kind=planet", None).await;
    assert_eq!(s, 400);

    // Documented in the OpenAPI document.
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
        "/v1/admin/users",
        "/v1/admin/users/{id}",
        "/v1/admin/groups",
        "/v1/admin/groups/{id}",
        "/v1/admin/groups/{id}/members",
        "/v1/admin/records",
        "/v1/admin/records/{id}",
        "/v1/admin/records/{id}/access",
        "/v1/admin/records/import",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }

    let n: i64 = sqlx::query(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'record.closed' AND subject = $1",
    )
    .bind(&id)
    .fetch_one(&t.db)
    .await
    .unwrap()
    .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn other_tenants_ids_answer_404_everywhere() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let a = app.tenant(&app.firm_a).await;
    let b = app.tenant(&app.firm_b).await;
    let adm = admin_token(&a, "adam@a.test").await;
    let b_rec = record_id(&b, "matter", "B-9").await;
    let b_user = user_id(&b, "bob@b.test").await;
    let b_group = docket::directory::create_group(&b.db, "B only", "test")
        .await
        .unwrap()
        .id;
    let calls: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/admin/records/{b_rec}"), None),
        (
            "PATCH",
            format!("/v1/admin/records/{b_rec}"),
            Some(json!({"title": "x"})),
        ),
        (
            "PUT",
            format!("/v1/admin/records/{b_rec}/access"),
            Some(json!({"firm_wide": true})),
        ),
        ("GET", format!("/v1/admin/users/{b_user}"), None),
        (
            "PATCH",
            format!("/v1/admin/users/{b_user}"),
            Some(json!({"display_name": "x"})),
        ),
        (
            "PATCH",
            format!("/v1/admin/groups/{b_group}"),
            Some(json!({"name": "x"})),
        ),
        (
            "PUT",
            format!("/v1/admin/groups/{b_group}/members"),
            Some(json!({"user_ids": []})),
        ),
        ("GET", "/v1/admin/users/system".to_string(), None),
    ];
    for (m, path, body) in calls {
        let (s, body) = api(&app, &adm, m, &path, body).await;
        assert_eq!(s, 404, "{m} {path}: {body}");
        slug(&body, "not-found");
    }
    // Nothing of B's shows in A's lists, and nothing of B's changed.
    let (_, users) = api(&app, &adm, "GET", "/v1/admin/users", None).await;
    let emails: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, vec!["adam@a.test", "alice@a.test", "vera@a.test"]);
    let (_, recs) = api(&app, &adm, "GET", "/v1/admin/records?q=B-9", None).await;
    assert!(recs.as_array().unwrap().is_empty());
    let title: String = sqlx::query("SELECT title FROM records WHERE id = $1")
        .bind(&b_rec)
        .fetch_one(&b.db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, "Initech");
}

#[tokio::test]
async fn users_and_groups_admin() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    let adm = admin_token(&t, "adam@a.test").await;
    let adam = user_id(&t, "adam@a.test").await;

    // The seeded groups.
    let (_, groups) = api(&app, &adm, "GET", "/v1/admin/groups", None).await;
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["Assistants", "Attorneys", "Paralegals", "Partners"]
    );

    // Add a user with groups; duplicates and unknown groups refused.
    let (s, u) = api(&app, &adm, "POST", "/v1/admin/users", Some(json!({
        "email": "Pat@A.test", "display_name": "Pat", "role": "viewer", "groups": ["attorneys", "paralegals"]}))).await;
    assert_eq!(s, 201, "{u}");
    assert_eq!(u["email"], "pat@a.test");
    assert_eq!(u["groups"].as_array().unwrap().len(), 2);
    let pat = u["id"].as_str().unwrap().to_string();
    let (s, b) = api(
        &app,
        &adm,
        "POST",
        "/v1/admin/users",
        Some(json!({
        "email": "pat@a.test", "role": "viewer"})),
    )
    .await;
    assert_eq!(s, 409);
    slug(&b, "exists");
    let (s, b) = api(
        &app,
        &adm,
        "POST",
        "/v1/admin/users",
        Some(json!({
        "email": "quinn@a.test", "role": "viewer", "groups": ["nope"]})),
    )
    .await;
    assert_eq!(s, 422);
    slug(&b, "unknown-group");
    assert!(docket::directory::user_by_email(&t.db, "quinn@a.test")
        .await
        .unwrap()
        .is_none());

    // Edit name, role and groups (a role change: a person's session, never a token).
    let adam_session = console_session(&app, &t, "adam@a.test").await;
    let (s, b) = api(
        &app,
        &adm,
        "PATCH",
        &format!("/v1/admin/users/{pat}"),
        Some(json!({"role": "filer"})),
    )
    .await;
    assert_eq!(s, 403);
    slug(&b, "session-required");
    let (s, u) = person_api(
        &app,
        &adam_session,
        "PATCH",
        &format!("/v1/admin/users/{pat}"),
        Some(json!({
        "display_name": "Pat Q", "role": "filer", "groups": ["partners"]})),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(
        (u["display_name"].as_str(), u["role"].as_str()),
        (Some("Pat Q"), Some("filer"))
    );
    assert_eq!(u["groups"], json!([{"id": "partners", "name": "Partners"}]));
    let (_, got) = api(&app, &adm, "GET", &format!("/v1/admin/users/{pat}"), None).await;
    assert_eq!(got["groups"][0]["id"], "partners");

    // A token still edits names and groups (no role change).
    let (s, u) = api(
        &app,
        &adm,
        "PATCH",
        &format!("/v1/admin/users/{pat}"),
        Some(json!({"display_name": "Pat Quinn", "role": "filer"})),
    )
    .await;
    assert_eq!(
        (s, u["display_name"].as_str()),
        (200, Some("Pat Quinn")),
        "{u}"
    );

    // The last active admin keeps the admin role.
    let (s, b) = person_api(
        &app,
        &adam_session,
        "PATCH",
        &format!("/v1/admin/users/{adam}"),
        Some(json!({"role": "filer"})),
    )
    .await;
    assert_eq!(s, 409);
    slug(&b, "last-admin");
    let (s, _) = person_api(
        &app,
        &adam_session,
        "PATCH",
        &format!("/v1/admin/users/{pat}"),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, u) = person_api(
        &app,
        &adam_session,
        "PATCH",
        &format!("/v1/admin/users/{adam}"),
        Some(json!({"role": "filer"})),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["role"], "filer");

    // Groups: add, rename, conflicts (case-insensitive), members.
    let adm2 = admin_token(&t, "pat@a.test").await;
    let (s, g) = api(
        &app,
        &adm2,
        "POST",
        "/v1/admin/groups",
        Some(json!({"name": "Litigation"})),
    )
    .await;
    assert_eq!(s, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();
    let (s, b) = api(
        &app,
        &adm2,
        "POST",
        "/v1/admin/groups",
        Some(json!({"name": "litigation"})),
    )
    .await;
    assert_eq!(s, 409);
    slug(&b, "exists");
    let (s, b) = api(
        &app,
        &adm2,
        "PATCH",
        "/v1/admin/groups/partners",
        Some(json!({"name": "Attorneys"})),
    )
    .await;
    assert_eq!(s, 409);
    slug(&b, "exists");
    let (s, g) = api(
        &app,
        &adm2,
        "PATCH",
        "/v1/admin/groups/partners",
        Some(json!({"name": "Equity partners"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(g["name"], "Equity partners");
    let (s, b) = api(
        &app,
        &adm2,
        "PATCH",
        &format!("/v1/admin/groups/{gid}"),
        Some(json!({"name": "  "})),
    )
    .await;
    assert_eq!(s, 422);
    slug(&b, "invalid-group-name");
    let (s, g) = api(
        &app,
        &adm2,
        "PUT",
        &format!("/v1/admin/groups/{gid}/members"),
        Some(json!({"user_ids": [adam.clone(), pat.clone(), adam.clone()]})),
    )
    .await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["members"].as_array().unwrap().len(), 2);
    let (s, b) = api(
        &app,
        &adm2,
        "PUT",
        &format!("/v1/admin/groups/{gid}/members"),
        Some(json!({"user_ids": ["ghost"]})),
    )
    .await;
    assert_eq!(s, 422);
    slug(&b, "unknown-user");

    // Audited.
    for action in [
        "user.added",
        "user.updated",
        "group.added",
        "group.renamed",
        "group.members_set",
    ] {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log WHERE action = $1")
            .bind(action)
            .fetch_one(&t.db)
            .await
            .unwrap()
            .get(0);
        assert!(n >= 1, "{action}");
    }
    // A read-only token cannot change anything.
    let ro = tokens::create(&t.db, &t.id, &pat, "ro", &[tokens::Scope::Read], 30, "test")
        .await
        .unwrap()
        .0;
    let (s, _) = api(&app, &ro, "GET", "/v1/admin/users", None).await;
    assert_eq!(s, 200);
    let (s, _) = api(
        &app,
        &ro,
        "POST",
        "/v1/admin/groups",
        Some(json!({"name": "X"})),
    )
    .await;
    assert_eq!(s, 403);
}

async fn import(app: &TestApp, secret: &str, csv: &str, valid_rows: bool) -> (u16, Value) {
    let resp = app
        .http
        .post(format!(
            "{}/v1/admin/records/import?import_valid_rows={valid_rows}",
            app.base
        ))
        .bearer_auth(secret)
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn count_records(t: &Tenant) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM records")
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get(0)
}

const IMPORT_CSV: &str = "kind,reference,title,client,status,contacts,firm_wide,members,excluded\n\
matter,I-1,Imported one,Acme,,acme.com;legal@acme.com,,,\n\
case,I-2,\"Walled, imported\",Globex,closed,,false,Partners;alice@a.test,vera@a.test\n\
matter,I-1,Dup in file,,,,,,\n\
matter,M-1,Exists already,,,,,,\n\
planet,I-3,,,,,maybe,nobody@a.test,\n";

both_backends!(
    csv_import_is_all_or_nothing_with_a_row_report,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let adm = admin_token(&t, "adam@a.test").await;
        let before = count_records(&t).await;
        let audit_before: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&t.db)
            .await
            .unwrap()
            .get(0);

        let (s, rep) = import(&app, &adm, IMPORT_CSV, false).await;
        assert_eq!(s, 422, "{rep}");
        slug(&rep, "invalid-rows");
        assert_eq!(
            (
                rep["imported"].as_u64(),
                rep["valid"].as_u64(),
                rep["invalid"].as_u64()
            ),
            (Some(0), Some(2), Some(3))
        );
        let rows = rep["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[0],
            json!({"line": 2, "reference": "I-1", "ok": true, "errors": []})
        );
        assert_eq!(rows[1]["ok"], true);
        let errs = |i: usize| {
            rows[i]["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        };
        assert!(errs(2).contains("duplicate of line 2"), "{}", errs(2));
        assert!(errs(3).contains("already exists"), "{}", errs(3));
        let e4 = errs(4);
        assert_eq!(rows[4]["line"], 6);
        assert!(
            e4.contains("planet")
                && e4.contains("title")
                && e4.contains("firm_wide")
                && e4.contains("nobody@a.test"),
            "{e4}"
        );
        assert_eq!(count_records(&t).await, before);
        let audit_after: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&t.db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(audit_before, audit_after);

        // Import the valid rows only.
        let (s, rep) = import(&app, &adm, IMPORT_CSV, true).await;
        assert_eq!(s, 200, "{rep}");
        assert_eq!(
            (rep["imported"].as_u64(), rep["invalid"].as_u64()),
            (Some(2), Some(3))
        );
        assert_eq!(count_records(&t).await, before + 2);
        let i2 = record_id(&t, "case", "I-2").await;
        let (_, d) = api(&app, &adm, "GET", &format!("/v1/admin/records/{i2}"), None).await;
        assert_eq!(d["title"], "Walled, imported");
        assert_eq!(d["status"], "closed");
        assert_eq!(d["firm_wide"], false);
        let members: Vec<&str> = d["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(members, vec!["alice@a.test", "Partners"]);
        assert_eq!(d["excluded"][0]["name"], "vera@a.test");
        let i1 = record_id(&t, "matter", "I-1").await;
        let (_, d) = api(&app, &adm, "GET", &format!("/v1/admin/records/{i1}"), None).await;
        assert_eq!(d["contacts"], json!(["legal@acme.com", "acme.com"]));
        assert_eq!(d["firm_wide"], true);
        assert_eq!(d["status"], "open");
        let vera = user_id(&t, "vera@a.test").await;
        assert!(!docket::access::can_see(&t.db, &vera, &i2).await.unwrap());

        // Importing the same file again: every row is now a duplicate or invalid.
        let (s, rep) = import(&app, &adm, IMPORT_CSV, true).await;
        assert_eq!(s, 422);
        assert_eq!(rep["valid"], 0);
        assert_eq!(count_records(&t).await, before + 2);
    }
);

#[tokio::test]
async fn csv_import_rejects_bad_files() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    let adm = admin_token(&t, "adam@a.test").await;
    let (s, b) = import(&app, &adm, "kind,reference,colour\nmatter,X-1,red\n", false).await;
    assert_eq!(s, 422);
    slug(&b, "invalid-csv-header");
    let (s, b) = import(&app, &adm, "kind,title\nmatter,X\n", false).await;
    assert_eq!(s, 422);
    slug(&b, "invalid-csv-header");
    let (s, b) = import(&app, &adm, "", false).await;
    assert_eq!(s, 422, "{b}");
    // Too many rows.
    let mut big = String::from("kind,reference,title\n");
    for i in 0..10_001 {
        big += &format!("matter,R-{i},T\n");
    }
    let (s, b) = import(&app, &adm, &big, false).await;
    assert_eq!(s, 422);
    slug(&b, "too-many-rows");
    // Too large.
    let huge = format!("kind,reference,title\n{}", "matter,R-1,T\n".repeat(500_000));
    let resp = app
        .http
        .post(format!("{}/v1/admin/records/import", app.base))
        .bearer_auth(&adm)
        .header("content-type", "text/csv")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Not CSV.
    let resp = app
        .http
        .post(format!("{}/v1/admin/records/import", app.base))
        .bearer_auth(&adm)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(count_records(&t).await, 3);
}

/// A complete console session for `email`: (cookie, csrf).
async fn console_session(app: &TestApp, t: &Tenant, email: &str) -> (String, String) {
    let uid = user_id(t, email).await;
    let mut conn = t.db.acquire().await.unwrap();
    let (token, s) = session::create(
        &mut conn,
        &uid,
        true,
        "127.0.0.1",
        "test",
        &app.config.admin,
    )
    .await
    .unwrap();
    (
        format!("docket_session={}", session::cookie_value(&t.id, &token)),
        s.csrf,
    )
}

#[tokio::test]
async fn console_people_and_records_pages() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    let (cookie, csrf) = console_session(&app, &t, "adam@a.test").await;

    // Users: listed without the system user; add one with a group.
    let (s, html) = page(&app, &cookie, "/console/users").await;
    assert_eq!(s, 200);
    assert!(html.contains("alice@a.test") && !html.contains("system@docket.invalid"));
    assert!(html.contains("Add user"));
    let (s, loc) = post_form(
        &app,
        &cookie,
        "/console/users",
        &[
            ("csrf", &csrf),
            ("email", "nina@a.test"),
            ("display_name", "Nina"),
            ("role", "filer"),
            ("group_paralegals", "on"),
        ],
    )
    .await;
    assert_eq!(s, 303, "{loc}");
    let (s, html) = page(&app, &cookie, &loc).await;
    assert_eq!(s, 200);
    assert!(html.contains("User added") && html.contains("nina@a.test"));
    for action in ["suspend", "reactivate", "end-sessions", "password-link"] {
        if action == "reactivate" {
            continue; // shown only for users who are not active
        }
        assert!(html.contains(&format!("/{action}\"")), "{action}");
    }
    let nina = user_id(&t, "nina@a.test").await;
    let d = docket::directory::user_detail(&t.db, &nina)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.groups[0].id, "paralegals");
    // A bad email re-renders the form with the problem.
    let (s, html) = post_form(
        &app,
        &cookie,
        "/console/users",
        &[
            ("csrf", &csrf),
            ("email", "not an email"),
            ("role", "filer"),
        ],
    )
    .await;
    assert_eq!(s, 422);
    assert!(html.contains("is not an email address"));
    // Without the CSRF token nothing happens.
    let (s, _) = post_form(
        &app,
        &cookie,
        "/console/users",
        &[("email", "x@a.test"), ("role", "filer")],
    )
    .await;
    assert_eq!(s, 403);

    // Groups: rename conflict shown, members saved.
    let (s, html) = page(&app, &cookie, "/console/groups").await;
    assert_eq!(s, 200);
    assert!(html.contains("Members of Partners"));
    let (s, html) = post_form(
        &app,
        &cookie,
        "/console/groups/partners/rename",
        &[("csrf", &csrf), ("name", "Attorneys")],
    )
    .await;
    assert_eq!(s, 409);
    assert!(html.contains("already exists"));
    let member_key = format!("user_{nina}");
    let (s, _) = post_form(
        &app,
        &cookie,
        "/console/groups/partners/members",
        &[("csrf", &csrf), (member_key.as_str(), "on")],
    )
    .await;
    assert_eq!(s, 303);
    let g = docket::directory::group(&t.db, "partners")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.members.len(), 1);
    // The search-and-add field: add by address, remove by button, unknown refused.
    let alice = user_id(&t, "alice@a.test").await;
    let (_, html) = page(&app, &cookie, "/console/groups").await;
    assert!(html.contains("Add a member to Partners") && !html.contains("name=\"user_"));
    let add = [("csrf", csrf.as_str()), ("who", "ALICE@a.test")];
    let (s, _) = post_form(&app, &cookie, "/console/groups/partners/members/add", &add).await;
    assert_eq!(s, 303);
    let members = |g: docket::directory::Group| {
        let mut m: Vec<String> = g.members.into_iter().map(|m| m.email).collect();
        m.sort();
        m
    };
    let g = docket::directory::group(&t.db, "partners")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(members(g), ["alice@a.test", "nina@a.test"]);
    let gone = [("csrf", csrf.as_str()), ("user", alice.as_str())];
    let (s, _) = post_form(
        &app,
        &cookie,
        "/console/groups/partners/members/remove",
        &gone,
    )
    .await;
    assert_eq!(s, 303);
    let bad = [("csrf", csrf.as_str()), ("who", "nobody@a.test")];
    let (s, html) = post_form(&app, &cookie, "/console/groups/partners/members/add", &bad).await;
    assert_eq!(s, 422);
    assert!(html.contains("is not the address of one person"), "{html}");
    let g = docket::directory::group(&t.db, "partners")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(members(g), ["nina@a.test"]);

    // Records: add, team editor (wall alice off), close.
    let (s, loc) = post_form(
        &app,
        &cookie,
        "/console/records",
        &[
            ("csrf", &csrf),
            ("kind", "matter"),
            ("reference", "Z-1"),
            ("title", "Zeta"),
            ("contacts", "zeta.com\nceo@zeta.com"),
            ("firm_wide", "on"),
        ],
    )
    .await;
    assert_eq!(s, 303, "{loc}");
    let z = record_id(&t, "matter", "Z-1").await;
    let (s, html) = page(&app, &cookie, &loc).await;
    assert_eq!(s, 200);
    assert!(
        html.contains("Record created")
            && html.contains("Add a person or group")
            && html.contains("<option value=\"group: Partners\">")
            && html.contains("Close record")
    );
    // A firm of any size: the team is a search-and-add field, not a control per person.
    assert!(!html.contains("name=\"user_") && !html.contains("name=\"group_"));
    let alice_key = format!("user_{alice}");
    let (s, _) = post_form(
        &app,
        &cookie,
        &format!("/console/records/{z}/team"),
        &[
            ("csrf", &csrf),
            ("firm_wide", "on"),
            (alice_key.as_str(), "excluded"),
            ("group_partners", "member"),
        ],
    )
    .await;
    assert_eq!(s, 303);
    assert!(!docket::access::can_see(&t.db, &alice, &z).await.unwrap());
    assert!(docket::access::can_see(&t.db, &nina, &z).await.unwrap());

    // The picker: remove the wall, add it back by address, add a group by name; an unknown
    // name is refused and changes nothing.
    let team = |change: &'static str, fields: Vec<(&'static str, String)>| {
        let (app, cookie, csrf, z) = (&app, cookie.clone(), csrf.clone(), z.clone());
        async move {
            let mut f: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
            f.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));
            post_form(
                app,
                &cookie,
                &format!("/console/records/{z}/team/{change}"),
                &f,
            )
            .await
        }
    };
    let (_, html) = page(&app, &cookie, &format!("/console/records/{z}")).await;
    assert!(
        html.contains("<span class=\"bad\">walled off</span>"),
        "{html}"
    );
    let (s, _) = team("remove", vec![("principal", format!("user:{alice}"))]).await;
    assert_eq!(s, 303);
    assert!(docket::access::can_see(&t.db, &alice, &z).await.unwrap());
    let (s, _) = team(
        "add",
        vec![
            ("who", "Alice@A.test".into()),
            ("effect", "excluded".into()),
        ],
    )
    .await;
    assert_eq!(s, 303);
    assert!(!docket::access::can_see(&t.db, &alice, &z).await.unwrap());
    let (s, html) = team(
        "add",
        vec![("who", "nobody@a.test".into()), ("effect", "member".into())],
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        html.contains("neither the address of one person nor the name of a group"),
        "{html}"
    );
    let (s, _) = team("firm-wide", vec![]).await;
    assert_eq!(s, 303);
    let (s, _) = team("remove", vec![("principal", "group:partners".into())]).await;
    assert_eq!(s, 303);
    assert!(!docket::access::can_see(&t.db, &nina, &z).await.unwrap());
    let (s, _) = team(
        "add",
        vec![
            ("who", "group: partners".into()),
            ("effect", "member".into()),
        ],
    )
    .await;
    assert_eq!(s, 303);
    assert!(docket::access::can_see(&t.db, &nina, &z).await.unwrap());
    let d = docket::directory::record_detail(&t.db, &z)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !d.firm_wide && d.members.len() == 1 && d.excluded.len() == 1,
        "{d:?}"
    );
    let (s, _) = post_form(
        &app,
        &cookie,
        &format!("/console/records/{z}/status"),
        &[("csrf", &csrf), ("status", "closed")],
    )
    .await;
    assert_eq!(s, 200, "closing asks first");
    let (s, _) = post_form(
        &app,
        &cookie,
        &format!("/console/records/{z}/status"),
        &[("csrf", &csrf), ("status", "closed"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(s, 303);
    let (_, html) = page(&app, &cookie, "/console/records?status=closed").await;
    assert!(html.contains("Z-1") && !html.contains("Acme v. Widget"));

    // Import: the form, then a file with an error (nothing imported), then valid rows.
    let (s, html) = page(&app, &cookie, "/console/records/import").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("CSV file")
            && html.contains("Import the valid rows even if some rows have errors")
    );
    let csv = "kind,reference,title\nmatter,U-1,Upload one\nmatter,,No reference\n";
    let (s, html) = upload(&app, &cookie, &csrf, csv, false).await;
    assert_eq!(s, 422);
    assert!(
        html.contains("Nothing was imported") && html.contains("not a valid reference"),
        "{html}"
    );
    let (s, html) = upload(&app, &cookie, &csrf, csv, true).await;
    assert_eq!(s, 200);
    assert!(html.contains("Imported 1 record"), "{html}");
    assert!(
        docket::directory::find_record(&t.db, docket::directory::RecordKind::Matter, "U-1")
            .await
            .unwrap()
            .is_some()
    );
}

async fn upload(
    app: &TestApp,
    cookie: &str,
    csrf: &str,
    csv: &str,
    valid_rows: bool,
) -> (u16, String) {
    let boundary = "----docketboundary7";
    let mut body = String::new();
    body +=
        &format!("--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n");
    if valid_rows {
        body += &format!("--{boundary}\r\nContent-Disposition: form-data; name=\"import_valid_rows\"\r\n\r\non\r\n");
    }
    body += &format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"records.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n"
    );
    let resp = app
        .http
        .post(format!("{}/console/records/import", app.base))
        .header("cookie", cookie)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import_reports_true_line_numbers_for_crlf_files() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    let adm = admin_token(&t, "adam@a.test").await;
    // Spreadsheets write CRLF line ends.
    let csv = IMPORT_CSV.replace('\n', "\r\n");
    let (s, rep) = import(&app, &adm, &csv, false).await;
    assert_eq!(s, 422, "{rep}");
    let rows = rep["rows"].as_array().unwrap();
    let lines: Vec<u64> = rows.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6], "{rep}");
    assert!(
        rows[2]["errors"][0]
            .as_str()
            .unwrap()
            .contains("duplicate of line 2"),
        "{rep}"
    );
}

both_backends!(
    console_lists_paginate_and_show_teams_and_walls_at_a_glance,
    |app: TestApp| async move {
        use docket::directory::{self, RecordKind, Role};
        let t = app.tenant(&app.firm_a).await;
        for i in 0..118 {
            let r = format!("P-{i:03}");
            directory::add_record(&t.db, RecordKind::Matter, &r, "Paged", "", &[], "test")
                .await
                .unwrap();
        }
        for i in 0..60 {
            let email = format!("person{i:02}@a.test");
            directory::add_user(
                &t.db,
                &email,
                &format!("Person {i:02}"),
                Role::Filer,
                "test",
            )
            .await
            .unwrap();
        }
        let (cookie, csrf) = admin_session(&app, &t, "adam@a.test").await;
        let rows = |html: &str| html.matches("<tr>").count() - 1;

        // 121 records: 50, 50, 21, the filter kept in every link.
        let (s, html) = page(&app, &cookie, "/console/records?kind=matter").await;
        assert_eq!(s, 200);
        assert_eq!(rows(&html), 50);
        assert!(html.contains("1–50 of 119"), "{html}");
        assert!(
            html.contains("href=\"/console/records?kind=matter&#38;page=2\" rel=\"next\""),
            "{}",
            &html[html.find("pager").unwrap_or(0)..]
        );
        let (_, html) = page(&app, &cookie, "/console/records?kind=matter&page=3").await;
        assert_eq!(rows(&html), 19);
        assert!(html.contains("101–119 of 119") && html.contains("P-117"));
        assert!(!html.contains("rel=\"next\""));
        assert!(html.contains("href=\"/console/records?kind=matter&#38;page=2\" rel=\"prev\""));

        // Teams and walls at a glance.
        let p0 = record_id(&t, "matter", "P-000").await;
        let alice = user_id(&t, "alice@a.test").await;
        let (s, _) = post_form(
            &app,
            &cookie,
            &format!("/console/records/{p0}/team/add"),
            &[
                ("csrf", &csrf),
                ("who", &format!("{alice}@x")),
                ("effect", "excluded"),
            ],
        )
        .await;
        assert_eq!(s, 422, "an id is not an address");
        let (s, _) = post_form(
            &app,
            &cookie,
            &format!("/console/records/{p0}/team/add"),
            &[
                ("csrf", &csrf),
                ("who", "alice@a.test"),
                ("effect", "excluded"),
            ],
        )
        .await;
        assert_eq!(s, 303);
        let (s, _) = post_form(
            &app,
            &cookie,
            &format!("/console/records/{p0}/team/add"),
            &[
                ("csrf", &csrf),
                ("who", "person07@a.test"),
                ("effect", "member"),
            ],
        )
        .await;
        assert_eq!(s, 303);
        let (_, html) = page(&app, &cookie, "/console/records?q=P-000").await;
        assert!(
            html.contains("the whole firm; team person07@a.test")
                && html.contains("walled off: alice@a.test"),
            "{html}"
        );

        // 60 people and the firm's own: a search, and pages.
        let (_, html) = page(&app, &cookie, "/console/users").await;
        assert_eq!(rows(&html), 50);
        let total: usize = html
            .split_once("1–50 of ")
            .and_then(|(_, rest)| rest.split('<').next()?.parse().ok())
            .expect("a pager");
        assert!(total > 60);
        let (_, html) = page(&app, &cookie, "/console/users?page=2").await;
        assert_eq!(rows(&html), total - 50);
        // Groups page too; and a handled reset request shows human dates.
        for i in 0..51 {
            directory::create_group(&t.db, &format!("Team {i:02}"), "test")
                .await
                .unwrap();
        }
        let (_, html) = page(&app, &cookie, "/console/groups").await;
        assert!(
            html.contains("1–50 of ") && html.contains("rel=\"next\""),
            "{html}"
        );
        let (_, html) = page(&app, &cookie, "/console/groups?page=2").await;
        assert!(
            html.contains("Team 50") && !html.contains("Team 00"),
            "{html}"
        );
        let req = docket::accounts::reset::request(&t, "alice@a.test", "127.0.0.1", "t")
            .await
            .unwrap()
            .unwrap();
        docket::accounts::reset::dismiss(&t, &req.id, "adam@a.test")
            .await
            .unwrap();
        let (_, html) = page(&app, &cookie, "/console/resets").await;
        let raw = regex::Regex::new(r">\d{4}-\d{2}-\d{2}T").unwrap();
        assert!(!raw.is_match(&html), "a raw timestamp: {html}");
        assert!(html.contains("dismissed"), "{html}");
        let (_, html) = page(&app, &cookie, "/console/users?q=person 0").await;
        assert_eq!(rows(&html), 10, "Person 00..09");
        assert!(!html.contains("rel=\"next\""));
    }
);
