//! Access tokens (scopes, revocation, expiry, hashing, cross-tenant), the sign-in audit,
//! admin-mediated password resets (uniform answers, one-time expiring links) and tenant
//! closure with re-authentication.

use docket::accounts::tokens::{self, Scope};
use docket::accounts::{hash_secret, password, session, totp};
use docket::directory;
use docket::tenancy::Tenant;
use serde_json::{json, Value};
use sqlx::Row;

use crate::both_backends;
use crate::common::*;

const STRONG: &str = "correct horse battery staple 42 quietly";

async fn token_for(t: &Tenant, email: &str, scopes: &[Scope]) -> String {
    access_token(t, email, scopes).await
}

/// A complete (second factor passed) session: (cookie header value, csrf token).
async fn session_for(app: &TestApp, t: &Tenant, email: &str) -> (String, String) {
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

async fn scalar(t: &Tenant, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

async fn audit_count(t: &Tenant, action: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM audit_log WHERE action = $1")
        .bind(action)
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

fn ends_with_slug(body: &Value, slug: &str) {
    assert!(
        body["type"].as_str().unwrap_or("").ends_with(slug),
        "expected problem {slug}, got {body}"
    );
}

fn sample_filing(subject: &str) -> Value {
    filing_body(
        &email(subject, Some(&format!("<{subject}@acme.com>")), &[]),
        &["matter:M-1"],
    )
}

both_backends!(token_scopes_are_enforced, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    let read = token_for(&a, "adam@a.test", &[Scope::Read]).await;
    let file = token_for(&a, "adam@a.test", &[Scope::File]).await;
    let admin = token_for(&a, "adam@a.test", &[Scope::Admin]).await;

    // read: admin GETs and filing reads work; filing and admin changes do not.
    assert_eq!(app.get(&read, "/v1/admin/tokens").await.status(), 200);
    assert_eq!(app.get(&read, "/v1/filings").await.status(), 200);
    let (s, body) = problem(app.post_filing(&read, &sample_filing("read-1")).await).await;
    assert_eq!(s, 403);
    ends_with_slug(&body, "insufficient-scope");
    let (s, body) = problem(
        app.http
            .post(format!("{}/v1/admin/reset-requests/abc/dismiss", app.base))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403);
    ends_with_slug(&body, "insufficient-scope");

    // `/v1/addon/context` only reads (a POST for the message in its body): any scope.
    let raw = email("ctx-1", Some("<ctx-1@acme.com>"), &[]);
    for tok in [&read, &file] {
        let r = app
            .http
            .post(format!("{}/v1/addon/context", app.base))
            .bearer_auth(tok)
            .json(&json!({"raw": b64url(&raw)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    // file: can file, cannot use the admin API.
    let r = app.post_filing(&file, &sample_filing("file-1")).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (s, body) = problem(app.get(&file, "/v1/admin/tokens").await).await;
    assert_eq!(s, 403);
    ends_with_slug(&body, "insufficient-scope");

    // admin: everything.
    assert_eq!(app.get(&admin, "/v1/admin/sign-ins").await.status(), 200);
    let r = app.post_filing(&admin, &sample_filing("admin-1")).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let listed: Value = app.get(&admin, "/v1/filings").await.json().await.unwrap();
    assert_eq!(listed["filings"].as_array().unwrap().len(), 2, "{listed}");

    // Google ID tokens keep working on the same endpoints.
    let r = app
        .post_filing(&app.token("alice@a.test"), &sample_filing("google-1"))
        .await;
    assert_eq!(r.status(), 201);

    // A malformed `dkt_` token is a 401, not a Google verification attempt.
    let (s, _) = problem(app.get("dkt_nonsense", "/v1/filings").await).await;
    assert_eq!(s, 401);
});

both_backends!(
    tokens_are_hashed_revocable_expiring_and_record_use,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let adam = user_id(&a, "adam@a.test").await;
        let (cookie, csrf) = session_for(&app, &a, "adam@a.test").await;
        let admin_token = token_for(&a, "adam@a.test", &[Scope::Admin]).await;

        // Creating a token needs a session, not another token.
        let (s, body) = problem(
            app.http
                .post(format!("{}/v1/admin/tokens", app.base))
                .bearer_auth(&admin_token)
                .json(&json!({"name": "x", "scopes": ["read"], "expires_in_days": 5}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 403);
        ends_with_slug(&body, "session-required");

        // Without the CSRF header a session cannot create one either.
        let r = app
            .http
            .post(format!("{}/v1/admin/tokens", app.base))
            .header("cookie", &cookie)
            .json(&json!({"name": "x", "scopes": ["read"], "expires_in_days": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);

        let r = app
            .http
            .post(format!("{}/v1/admin/tokens", app.base))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&json!({"name": "ci script", "scopes": ["read", "file"], "expires_in_days": 7}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let created: Value = r.json().await.unwrap();
        let secret = created["token"].as_str().unwrap().to_string();
        let id = created["id"].as_str().unwrap().to_string();
        assert!(secret.starts_with(&format!("dkt_{}_", a.id)), "{created}");
        assert_eq!(created["name"], "ci script");
        assert_eq!(created["scopes"], json!(["file", "read"]));

        // Only the SHA-256 is stored.
        let row = sqlx::query("SELECT token_hash FROM access_tokens WHERE id = $1")
            .bind(&id)
            .fetch_one(&a.db)
            .await
            .unwrap();
        let stored: String = row.get(0);
        assert_eq!(stored, hash_secret(&secret));
        let plain =
            sqlx::query("SELECT COUNT(*) FROM access_tokens WHERE token_hash = $1 OR name = $1")
                .bind(&secret)
                .fetch_one(&a.db)
                .await
                .unwrap()
                .get::<i64, _>(0);
        assert_eq!(plain, 0);

        // Use is recorded (time and IP) and shown in the list.
        assert_eq!(app.get(&secret, "/v1/filings").await.status(), 200);
        let list: Value = app
            .http
            .get(format!("{}/v1/admin/tokens", app.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mine = list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(mine["last_used_ip"], "127.0.0.1", "{mine}");
        assert!(mine["last_used_at"].is_string(), "{mine}");
        assert!(mine["revoked_at"].is_null());
        assert!(
            list.to_string().find(&secret).is_none(),
            "the secret is never listed again"
        );

        // An unknown token id: 404. Another person's token: any admin revokes it (incident
        // response), even with an `admin` token, and the audit names its owner.
        let (s, _) = problem(
            app.http
                .delete(format!(
                    "{}/v1/admin/tokens/ffffffffffffffffffffffffffffffff",
                    app.base
                ))
                .bearer_auth(&admin_token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 404);
        let alice = user_id(&a, "alice@a.test").await;
        let (alice_secret, alices) =
            tokens::create(&a.db, &a.id, &alice, "alice's", &[Scope::Read], 3, "t")
                .await
                .unwrap();
        let listed: Value = app
            .get(&admin_token, "/v1/admin/tokens?all=true")
            .await
            .json()
            .await
            .unwrap();
        assert!(
            listed["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == alices.id.as_str()),
            "{listed}"
        );
        let r = app
            .http
            .delete(format!("{}/v1/admin/tokens/{}", app.base, alices.id))
            .bearer_auth(&admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            problem(app.get(&alice_secret, "/v1/filings").await).await.0,
            401
        );
        let owner: String = sqlx::query(
            "SELECT detail FROM audit_log WHERE action = 'token.revoked' AND subject = $1",
        )
        .bind(&alices.id)
        .fetch_one(&a.db)
        .await
        .unwrap()
        .get(0);
        assert!(owner.contains(&alice), "{owner}");

        // Revoked → 401.
        let r = app
            .http
            .delete(format!("{}/v1/admin/tokens/{id}", app.base))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (s, _) = problem(app.get(&secret, "/v1/filings").await).await;
        assert_eq!(s, 401);
        assert_eq!(audit_count(&a, "token.revoked").await, 2);

        // Expired → 401, on both the filing and the admin API.
        let exp = token_for(&a, "adam@a.test", &[Scope::Admin]).await;
        assert_eq!(app.get(&exp, "/v1/filings").await.status(), 200);
        sqlx::query("UPDATE access_tokens SET expires_at = '2020-01-01T00:00:00.000Z' WHERE token_hash = $1")
        .bind(hash_secret(&exp))
        .execute(&a.db)
        .await
        .unwrap();
        assert_eq!(problem(app.get(&exp, "/v1/filings").await).await.0, 401);
        assert_eq!(
            problem(app.get(&exp, "/v1/admin/tokens").await).await.0,
            401
        );

        // A suspended owner's token stops working.
        let live = token_for(&a, "adam@a.test", &[Scope::Read]).await;
        sqlx::query("UPDATE users SET status = 'suspended' WHERE id = $1")
            .bind(&adam)
            .execute(&a.db)
            .await
            .unwrap();
        assert_eq!(problem(app.get(&live, "/v1/filings").await).await.0, 403);
    }
);

both_backends!(tokens_never_cross_tenants, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    let b = app.tenant(&app.firm_b).await;
    let r = app
        .post_filing(&app.token("bob@b.test"), &sample_filing("b-only"))
        .await;
    assert_eq!(r.status(), 201);
    let b_filing: Value = r.json().await.unwrap();
    let b_id = b_filing["filings"][0]["id"].as_str().unwrap().to_string();

    let a_token = token_for(&a, "adam@a.test", &[Scope::Admin]).await;
    let (s, _) = problem(app.get(&a_token, &format!("/v1/filings/{b_id}")).await).await;
    assert_eq!(s, 404);
    let (s, _) = problem(app.get(&a_token, &format!("/v1/filings/{b_id}/raw")).await).await;
    assert_eq!(s, 404);

    // A's secret relabelled with B's tenant id is unknown there.
    let forged = a_token.replacen(&a.id, &b.id, 1);
    let (s, _) = problem(app.get(&forged, "/v1/filings").await).await;
    assert_eq!(s, 401);
    let (s, _) = problem(app.get(&forged, "/v1/admin/tokens").await).await;
    assert_eq!(s, 401);

    // B's reset requests and users are not reachable from A's session.
    let bob = user_id(&b, "bob@b.test").await;
    let (cookie, csrf) = session_for(&app, &a, "adam@a.test").await;
    let (s, _) = problem(
        app.http
            .post(format!("{}/v1/admin/users/{bob}/password-link", app.base))
            .header("cookie", cookie)
            .header("x-csrf-token", csrf)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(scalar(&b, "SELECT COUNT(*) FROM reset_requests").await, 0);
});

both_backends!(
    sign_in_audit_lists_and_summarises,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let rows = [
            (
                "2025-01-01T10:00:00.000Z",
                "adam@a.test",
                "success",
                "ok",
                "198.51.100.7",
            ),
            (
                "2025-01-01T10:05:00.000Z",
                "adam@a.test",
                "failure",
                "wrong password",
                "198.51.100.7",
            ),
            (
                "2025-01-02T09:00:00.000Z",
                "eve@a.test",
                "failure",
                "unknown user",
                "203.0.113.9",
            ),
            (
                "2025-01-02T09:01:00.000Z",
                "adam@a.test",
                "failure",
                "wrong password",
                "203.0.113.9",
            ),
        ];
        for (i, (at, email, result, reason, ip)) in rows.iter().enumerate() {
            sqlx::query(
            "INSERT INTO login_attempts (id, at, email, user_id, result, reason, ip, user_agent) \
             VALUES ($1, $2, $3, NULL, $4, $5, $6, 'curl/8')",
        )
        .bind(format!("la{i}"))
        .bind(*at)
        .bind(*email)
        .bind(*result)
        .bind(*reason)
        .bind(*ip)
        .execute(&a.db)
        .await
        .unwrap();
        }
        let read = token_for(&a, "adam@a.test", &[Scope::Read]).await;
        let all: Value = app
            .get(&read, "/v1/admin/sign-ins")
            .await
            .json()
            .await
            .unwrap();
        let list = all["sign_ins"].as_array().unwrap();
        assert_eq!(list.len(), 4);
        assert_eq!(list[0]["at"], "2025-01-02T09:01:00.000Z", "newest first");
        assert_eq!(list[0]["user_agent"], "curl/8");
        let f: Value = app
            .get(
                &read,
                "/v1/admin/sign-ins?email=adam@a.test&result=failure&limit=1",
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(f["sign_ins"].as_array().unwrap().len(), 1, "{f}");
        assert_eq!(f["sign_ins"][0]["ip"], "203.0.113.9");
        let (s, body) = problem(app.get(&read, "/v1/admin/sign-ins?limit=1001").await).await;
        assert_eq!(s, 400);
        ends_with_slug(&body, "invalid-query");

        let ips: Value = app
            .get(&read, "/v1/admin/sign-ins/ips")
            .await
            .json()
            .await
            .unwrap();
        let ips = ips["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 2);
        assert_eq!(ips[0]["ip"], "203.0.113.9", "most recent first");
        assert_eq!(ips[0]["attempts"], 2);
        assert_eq!(ips[0]["successes"], 0);
        assert_eq!(ips[0]["failures"], 2);
        assert_eq!(ips[0]["distinct_emails"], 2);
        assert_eq!(ips[1]["successes"], 1);
        assert_eq!(ips[1]["failures"], 1);
        assert_eq!(ips[1]["first_seen"], "2025-01-01T10:00:00.000Z");
        assert_eq!(ips[1]["last_seen"], "2025-01-01T10:05:00.000Z");

        // The console page shows both.
        let (cookie, _) = session_for(&app, &a, "adam@a.test").await;
        let r = app
            .http
            .get(format!("{}/console/sign-ins?email=eve%40a.test", app.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert!(
            html.contains("unknown user") && !html.contains("wrong password"),
            "{html}"
        );
        assert!(
            html.contains("198.51.100.7"),
            "IP summary lists every address"
        );
    }
);

async fn ask_reset(app: &TestApp, email: &str) -> (u16, Vec<(String, String)>, String) {
    let r = app
        .http
        .post(format!("{}/v1/password-reset", app.base))
        .header("user-agent", "reset-test/1")
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let mut headers: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-request-id"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    headers.sort();
    (status, headers, r.text().await.unwrap())
}

both_backends!(reset_flow_end_to_end, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    let adam = user_id(&a, "adam@a.test").await;

    // Known, unknown and other-domain addresses get identical answers.
    let known = ask_reset(&app, "Adam@A.test").await;
    let unknown = ask_reset(&app, "nobody@a.test").await;
    let elsewhere = ask_reset(&app, "someone@nowhere.test").await;
    assert_eq!(known.0, 202);
    assert_eq!(known, unknown);
    assert_eq!(known, elsewhere);
    assert!(!known.1.iter().any(|(k, _)| k == "set-cookie"));
    let (s, _) = problem(
        app.http
            .post(format!("{}/v1/password-reset", app.base))
            .json(&json!({ "email": "not an address" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 422);

    // Rows: one per address of this tenant, the unknown one without a user.
    let token = token_for(&a, "adam@a.test", &[Scope::Admin]).await;
    let open: Value = app
        .get(&token, "/v1/admin/reset-requests?status=open")
        .await
        .json()
        .await
        .unwrap();
    let open = open["requests"].as_array().unwrap().clone();
    assert_eq!(open.len(), 2, "{open:?}");
    let known_req = open.iter().find(|r| r["email"] == "adam@a.test").unwrap();
    let unknown_req = open.iter().find(|r| r["email"] == "nobody@a.test").unwrap();
    assert_eq!(known_req["user_id"], adam.as_str());
    assert!(unknown_req["user_id"].is_null());
    assert_eq!(known_req["user_agent"], "reset-test/1");
    assert_eq!(known_req["ip"], "127.0.0.1");
    assert_eq!(audit_count(&a, "reset.requested").await, 2);
    assert_eq!(
        scalar(
            &*app.tenant(&app.firm_b).await,
            "SELECT COUNT(*) FROM reset_requests"
        )
        .await,
        0
    );

    // No link for an unknown user; dismiss it instead. Links are issued by a person (another
    // admin, signed in): adam's own sessions end when his password is set below.
    directory::add_user(&a.db, "ann@a.test", "Ann", directory::Role::Admin, "test")
        .await
        .unwrap();
    let (ann_cookie, ann_csrf) = session_for(&app, &a, "ann@a.test").await;
    let post = |path: String| {
        let (http, cookie, csrf) = (app.http.clone(), ann_cookie.clone(), ann_csrf.clone());
        async move {
            http.post(path)
                .header("cookie", cookie)
                .header("x-csrf-token", csrf)
                .send()
                .await
                .unwrap()
        }
    };
    let uid = unknown_req["id"].as_str().unwrap();
    let (s, _) =
        problem(post(format!("{}/v1/admin/reset-requests/{uid}/issue", app.base)).await).await;
    assert_eq!(s, 409);
    let r = post(format!(
        "{}/v1/admin/reset-requests/{uid}/dismiss",
        app.base
    ))
    .await;
    assert_eq!(r.status(), 200);
    let (s, _) = problem(
        post(format!(
            "{}/v1/admin/reset-requests/{uid}/dismiss",
            app.base
        ))
        .await,
    )
    .await;
    assert_eq!(s, 409);

    // Issue a link for adam.
    let kid = known_req["id"].as_str().unwrap();
    let r = post(format!("{}/v1/admin/reset-requests/{kid}/issue", app.base)).await;
    assert_eq!(r.status(), 200);
    let issued: Value = r.json().await.unwrap();
    let link = issued["link"].as_str().unwrap().to_string();
    assert!(link.starts_with("/console/reset/"), "{issued}");
    let expires = docket::time_fmt::parse(issued["expires_at"].as_str().unwrap()).unwrap();
    let mins = (expires - time::OffsetDateTime::now_utc()).whole_minutes();
    assert!((28..=30).contains(&mins), "expires in {mins} min");
    let link_token = link.trim_start_matches("/console/reset/").to_string();
    let stored = scalar(
        &a,
        &format!(
            "SELECT COUNT(*) FROM reset_requests WHERE token_hash = '{}'",
            hash_secret(&link_token)
        ),
    )
    .await;
    assert_eq!(stored, 1, "only the hash of the link is stored");
    // Issuing twice is refused.
    let (s, _) =
        problem(post(format!("{}/v1/admin/reset-requests/{kid}/issue", app.base)).await).await;
    assert_eq!(s, 409);

    // The page shows a form; a weak password is refused and the link stays usable.
    let page = app
        .http
        .get(format!("{}{link}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("New password again"));
    let set = |pw: &'static str, confirm: &'static str| {
        let (http, url) = (app.http.clone(), format!("{}{link}", app.base));
        async move {
            let r = http
                .post(url)
                .form(&[("password", pw), ("confirm", confirm)])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, html) = set("password", "password").await;
    assert_eq!(s, 422, "{html}");
    assert!(html.contains("class=\"error\""), "{html}");
    let (s, _) = set(STRONG, "something else entirely 99").await;
    assert_eq!(s, 422);
    assert_eq!(
        app.http
            .get(format!("{}{link}", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Sessions of the user end when the password is set.
    let (cookie, _) = session_for(&app, &a, "adam@a.test").await;
    let (s, html) = set(STRONG, STRONG).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("adam@a.test"));
    let hash: String = sqlx::query("SELECT password_hash FROM local_accounts WHERE user_id = $1")
        .bind(&adam)
        .fetch_one(&a.db)
        .await
        .unwrap()
        .get(0);
    assert!(password::verify(STRONG, &hash).ok);
    let r = app
        .http
        .get(format!("{}/v1/admin/tenant", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the old session ended");

    // Used once: never again (page and JSON).
    let (s, html) = set(STRONG, STRONG).await;
    assert_eq!(s, 410);
    assert!(html.contains("no longer valid"));
    let r = app
        .http
        .get(format!("{}{link}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    let (s, body) = problem(
        app.http
            .post(format!("{}/v1/password-reset/complete", app.base))
            .json(&json!({"token": link_token, "password": STRONG}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 410);
    ends_with_slug(&body, "link-invalid");

    // A direct set-password link (as for a new admin), through the JSON twin.
    let vera = user_id(&a, "vera@a.test").await;
    let direct: Value = post(format!("{}/v1/admin/users/{vera}/password-link", app.base))
        .await
        .json()
        .await
        .unwrap();
    let direct_token = direct["link"]
        .as_str()
        .unwrap()
        .trim_start_matches("/console/reset/")
        .to_string();
    let complete = |tok: String, pw: &'static str| {
        let http = app.http.clone();
        let url = format!("{}/v1/password-reset/complete", app.base);
        async move {
            http.post(url)
                .json(&json!({"token": tok, "password": pw}))
                .send()
                .await
                .unwrap()
        }
    };
    let (s, body) = problem(complete(direct_token.clone(), "password").await).await;
    assert_eq!(s, 422);
    ends_with_slug(&body, "weak-password");
    let r = complete(direct_token.clone(), STRONG).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["email"], "vera@a.test");
    assert_eq!(problem(complete(direct_token, STRONG).await).await.0, 410);

    // Expired links are refused.
    let again: Value = post(format!("{}/v1/admin/users/{vera}/password-link", app.base))
        .await
        .json()
        .await
        .unwrap();
    let old = again["link"].as_str().unwrap().to_string();
    sqlx::query("UPDATE reset_requests SET expires_at = '2020-01-01T00:00:00.000Z' WHERE id = $1")
        .bind(again["request_id"].as_str().unwrap())
        .execute(&a.db)
        .await
        .unwrap();
    assert_eq!(
        app.http
            .get(format!("{}{old}", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
    let old_token = old.trim_start_matches("/console/reset/").to_string();
    assert_eq!(problem(complete(old_token, STRONG).await).await.0, 410);
    // Unknown and malformed tokens look the same.
    for bad in [
        format!("/console/reset/{}.{}", a.id, "A".repeat(43)),
        "/console/reset/garbage".to_string(),
    ] {
        assert_eq!(
            app.http
                .get(format!("{}{bad}", app.base))
                .send()
                .await
                .unwrap()
                .status(),
            410
        );
    }

    // Every step audited and visible to admins.
    assert_eq!(audit_count(&a, "reset.issued").await, 3);
    assert_eq!(audit_count(&a, "reset.dismissed").await, 1);
    assert_eq!(audit_count(&a, "reset.completed").await, 2);
    let history: Value = app
        .get(&token, "/v1/admin/reset-requests")
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = history["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "used").count(),
        2,
        "{history}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == "dismissed").count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == "issued").count(), 1);
});

both_backends!(console_reset_pages, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    // Public forgot page: same page whatever the address.
    let r = app
        .http
        .get(format!("{}/console/forgot", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut answers = Vec::new();
    for e in ["vera@a.test", "ghost@a.test"] {
        let r = app
            .http
            .post(format!("{}/console/forgot", app.base))
            .form(&[("email", e)])
            .send()
            .await
            .unwrap();
        answers.push((r.status().as_u16(), r.text().await.unwrap()));
    }
    assert_eq!(answers[0].0, 202);
    assert_eq!(answers[0], answers[1]);
    assert!(answers[0].1.contains("passed your request to your firm"));

    // The admin sees the open requests, issues a link (shown once) and dismisses the other.
    let (cookie, csrf) = session_for(&app, &a, "adam@a.test").await;
    let page = app
        .http
        .get(format!("{}/console/resets", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("vera@a.test") && page.contains("ghost@a.test"),
        "{page}"
    );
    let ids: Vec<(String, String)> = sqlx::query("SELECT id, email FROM reset_requests")
        .fetch_all(&a.db)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let id_of = |e: &str| ids.iter().find(|(_, m)| m == e).unwrap().0.clone();
    let r = app
        .http
        .post(format!(
            "{}/console/resets/{}/issue",
            app.base,
            id_of("vera@a.test")
        ))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("class=\"secret\""), "{html}");
    assert!(html.contains("/console/reset/"), "{html}");
    // Without the CSRF field nothing happens.
    let r = app
        .http
        .post(format!(
            "{}/console/resets/{}/dismiss",
            app.base,
            id_of("ghost@a.test")
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .http
        .post(format!(
            "{}/console/resets/{}/dismiss",
            app.base,
            id_of("ghost@a.test")
        ))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "redirected back to the list");
    let html = r.text().await.unwrap();
    assert!(html.contains("Request dismissed"), "{html}");
    assert!(
        !html.contains("/console/reset/"),
        "the link is shown once only"
    );

    // Tokens page: create one, see its secret once.
    let r = app
        .http
        .post(format!("{}/console/tokens", app.base))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "nightly export"),
            ("scope_read", "on"),
            ("days", "10"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let start = html.find("class=\"secret\"").expect("secret box");
    assert!(html[start..].contains(&format!("dkt_{}_", a.id)));
    let r = app
        .http
        .post(format!("{}/console/tokens", app.base))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "no scopes"),
            ("days", "10"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let html = app
        .http
        .get(format!("{}/console/tokens", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("nightly export") && !html.contains("class=\"secret\""));
});

/// Gives `email` a password and a confirmed authenticator; returns the TOTP secret bytes.
async fn password_and_totp(t: &Tenant, email: &str) -> Vec<u8> {
    let user = directory::user_by_email(&t.db, email)
        .await
        .unwrap()
        .unwrap();
    let mut conn = t.db.acquire().await.unwrap();
    password::set_password(&mut conn, &user.id, STRONG)
        .await
        .unwrap();
    drop(conn);
    let enrolment = totp::begin_enrolment(t, &user).await.unwrap();
    let secret = totp_rs::Secret::Encoded(enrolment.secret)
        .to_bytes()
        .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    totp::confirm_enrolment(t, &user, &totp::code_at(&secret, now), "test")
        .await
        .unwrap();
    secret
}

both_backends!(closure_needs_reauthentication, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    let secret = password_and_totp(&a, "adam@a.test").await;
    let (cookie, csrf) = session_for(&app, &a, "adam@a.test").await;
    let admin_token = token_for(&a, "adam@a.test", &[Scope::Admin]).await;
    // The next step's code: the enrolment spent the current one.
    let next = time::OffsetDateTime::now_utc().unix_timestamp() as u64 + 30;
    let good_code = totp::code_at(&secret, next);

    let facts: Value = app
        .get(&admin_token, "/v1/admin/tenant")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(facts["name"], "Firm A");
    assert_eq!(facts["status"], "active");
    assert_eq!(facts["domains"], json!(["a.test"]));
    assert!(facts["closure"].is_null());

    let close = |body: Value| {
        let (http, url, cookie, csrf) = (
            app.http.clone(),
            format!("{}/v1/admin/tenant/close", app.base),
            cookie.clone(),
            csrf.clone(),
        );
        async move {
            http.post(url)
                .header("cookie", cookie)
                .header("x-csrf-token", csrf)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    // A token cannot close the tenant, even with the right password and code.
    let (s, body) = problem(
        app.http
            .post(format!("{}/v1/admin/tenant/close", app.base))
            .bearer_auth(&admin_token)
            .json(&json!({"password": STRONG, "code": good_code, "confirm_name": "Firm A"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403);
    ends_with_slug(&body, "session-required");
    let (s, body) = problem(
        close(json!({"password": STRONG, "code": good_code, "confirm_name": "Firm B"})).await,
    )
    .await;
    assert_eq!(s, 422);
    ends_with_slug(&body, "confirm-name");
    let (s, _) = problem(
        close(json!({"password": "wrong password entirely", "code": good_code, "confirm_name": "Firm A"}))
            .await,
    )
    .await;
    assert!(s == 401 || s == 403, "wrong password: {s}");
    let (s, _) = problem(
        close(json!({"password": STRONG, "code": "000000", "confirm_name": "Firm A"})).await,
    )
    .await;
    assert!(s == 401 || s == 403, "wrong code: {s}");
    assert!(app.state.catalog.closure(&a.id).await.unwrap().is_none());
    assert_eq!(audit_count(&a, "tenant.closed").await, 0);
    // Failed re-authentications may have suspended nobody yet: the session still works.
    let r = close(json!({"password": STRONG, "code": good_code, "confirm_name": "Firm A"})).await;
    assert_eq!(r.status(), 200);
    let closed: Value = r.json().await.unwrap();
    let at = docket::time_fmt::parse(closed["terminated_at"].as_str().unwrap()).unwrap();
    let purge = docket::time_fmt::parse(closed["purge_after"].as_str().unwrap()).unwrap();
    assert_eq!(purge - at, time::Duration::days(90));

    let c = app.state.catalog.closure(&a.id).await.unwrap().unwrap();
    assert_eq!(c.purge_after, closed["purge_after"].as_str().unwrap());
    assert_eq!(c.terminated_by, "adam@a.test");
    let info = app.state.catalog.tenant_info(&a.id).await.unwrap().unwrap();
    assert_eq!(info.status, "terminated");
    assert_eq!(audit_count(&a, "tenant.closed").await, 1);
    assert_eq!(scalar(&a, "SELECT COUNT(*) FROM sessions").await, 0);

    // Everything for that tenant is refused now.
    let (s, _) = problem(
        app.post_filing(&app.token("alice@a.test"), &sample_filing("after-close"))
            .await,
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        problem(app.get(&app.token("alice@a.test"), "/v1/records").await)
            .await
            .0,
        403
    );
    assert!(matches!(
        problem(app.get(&admin_token, "/v1/filings").await).await.0,
        401 | 403
    ));
    assert!(matches!(
        problem(app.get(&admin_token, "/v1/admin/tenant").await)
            .await
            .0,
        401 | 403
    ));
    let r = app
        .http
        .get(format!("{}/v1/admin/tenant", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The other tenant is untouched.
    assert_eq!(
        app.post_filing(&app.token("bob@b.test"), &sample_filing("b-still"))
            .await
            .status(),
        201
    );
});

both_backends!(
    console_tenant_page_closes_with_reauth,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let secret = password_and_totp(&a, "adam@a.test").await;
        let (cookie, csrf) = session_for(&app, &a, "adam@a.test").await;
        let html = app
            .http
            .get(format!("{}/console/tenant", app.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("Close this firm&#39;s docket")
                || html.contains("Close this firm's docket"),
            "{html}"
        );
        let next = time::OffsetDateTime::now_utc().unix_timestamp() as u64 + 30;
        let code = totp::code_at(&secret, next);
        let r = app
            .http
            .post(format!("{}/console/tenant/close", app.base))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("password", STRONG),
                ("code", code.as_str()),
                ("confirm_name", "Firm A"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        let c = app.state.catalog.closure(&a.id).await.unwrap().unwrap();
        assert!(
            html.contains(&c.purge_after),
            "the page shows the purge date: {html}"
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_requests_cannot_flood_the_admins_queue() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let a = app.tenant(&app.firm_a).await;
    let ask = |email: String| {
        let app = &app;
        async move {
            let r = app
                .http
                .post(format!("{}/v1/password-reset", app.base))
                .json(&serde_json::json!({ "email": email }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.text().await.unwrap()
        }
    };
    // The same address twice: one open request.
    let first = ask("adam@a.test".into()).await;
    let second = ask("adam@a.test".into()).await;
    assert_eq!(first, second);
    assert_eq!(scalar(&a, "SELECT COUNT(*) FROM reset_requests").await, 1);
    // Many addresses from one IP: recorded up to the hourly cap, answered alike after it.
    for i in 0..25 {
        assert_eq!(ask(format!("x{i}@a.test")).await, first);
    }
    assert_eq!(
        scalar(&a, "SELECT COUNT(*) FROM reset_requests").await,
        docket::accounts::reset::MAX_REQUESTS_PER_IP_HOUR
    );
}

/// `method path body` with a bearer token or a session (cookie, CSRF).
async fn call(
    app: &TestApp,
    auth: Result<&str, &(String, String)>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut r = app.http.request(method, format!("{}{path}", app.base));
    r = match auth {
        Ok(token) => r.bearer_auth(token),
        Err((cookie, csrf)) => r.header("cookie", cookie).header("x-csrf-token", csrf),
    };
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap()
}

/// Every request that creates or strengthens a credential or a person's powers.
fn person_only_requests(
    a: &Tenant,
    adam: &str,
    alice: &str,
    rid: &str,
) -> Vec<(reqwest::Method, String, Option<Value>)> {
    use reqwest::Method as M;
    let _ = a;
    vec![
        (
            M::POST,
            "/v1/admin/users".into(),
            Some(json!({"email": "mallory@a.test", "role": "admin"})),
        ),
        (
            M::POST,
            format!("/v1/admin/users/{adam}/password-link"),
            None,
        ),
        (
            M::POST,
            format!("/v1/admin/users/{alice}/password-link"),
            None,
        ),
        (
            M::POST,
            format!("/v1/admin/reset-requests/{rid}/issue"),
            None,
        ),
        (
            M::PATCH,
            format!("/v1/admin/users/{alice}"),
            Some(json!({"role": "admin"})),
        ),
        (M::POST, format!("/v1/admin/users/{alice}/reactivate"), None),
        (
            M::POST,
            "/v1/admin/tokens".into(),
            Some(json!({"name": "x", "scopes": ["admin"], "expires_in_days": 5})),
        ),
        (
            M::POST,
            "/v1/admin/me/recovery-codes".into(),
            Some(json!({})),
        ),
    ]
}

both_backends!(
    an_admin_token_cannot_create_or_strengthen_a_person,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let token = token_for(&a, "adam@a.test", &[Scope::Admin]).await;
        let (adam, alice) = (
            user_id(&a, "adam@a.test").await,
            user_id(&a, "alice@a.test").await,
        );
        let rid = docket::accounts::reset::request(&a, "alice@a.test", "127.0.0.1", "t")
            .await
            .unwrap()
            .unwrap()
            .id;
        let rows = |sql: &'static str| scalar(&a, sql);
        let before = (
            rows("SELECT COUNT(*) FROM users").await,
            rows("SELECT COUNT(*) FROM access_tokens").await,
            rows("SELECT COUNT(*) FROM audit_log").await,
        );

        // The escalation chain fails at its first step, and so does every other such act.
        let mut refused = person_only_requests(&a, &adam, &alice, &rid);
        refused.push((
            reqwest::Method::POST,
            "/v1/admin/tenant/close".into(),
            Some(json!({"password": STRONG, "code": "123456", "confirm_name": "Firm A"})),
        ));
        refused.push((
            reqwest::Method::POST,
            "/v1/admin/session/totp/enrol".into(),
            None,
        ));
        for (m, path, body) in refused {
            let (s, p) = problem(call(&app, Ok(&token), m.clone(), &path, body).await).await;
            assert_eq!(s, 403, "{m} {path}: {p}");
            ends_with_slug(&p, "session-required");
            assert!(
                p["detail"]
                    .as_str()
                    .unwrap()
                    .contains("not an access token"),
                "{p}"
            );
        }
        let after = (
            rows("SELECT COUNT(*) FROM users").await,
            rows("SELECT COUNT(*) FROM access_tokens").await,
            rows("SELECT COUNT(*) FROM audit_log").await,
        );
        assert_eq!(before, after, "a refused request writes nothing");
        assert_eq!(
            rows("SELECT COUNT(*) FROM reset_requests WHERE token_hash IS NOT NULL").await,
            0,
            "no set-password link was issued"
        );
        let alice_now = directory::user_by_id(&a.db, &alice).await.unwrap().unwrap();
        assert_eq!(alice_now.role, directory::Role::Filer);
        let facts: Value = app
            .get(&token, "/v1/admin/tenant")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(facts["status"], "active");

        // Ordinary administration with the token goes on: a filer, a name, a suspension.
        let r = call(
            &app,
            Ok(&token),
            reqwest::Method::POST,
            "/v1/admin/users",
            Some(json!({"email": "fiona@a.test", "role": "filer"})),
        )
        .await;
        assert_eq!(r.status(), 201);
        let r = call(
            &app,
            Ok(&token),
            reqwest::Method::PATCH,
            &format!("/v1/admin/users/{alice}"),
            Some(json!({"display_name": "Alice A", "role": "filer"})),
        )
        .await;
        assert_eq!(r.status(), 200);
        let r = call(
            &app,
            Ok(&token),
            reqwest::Method::POST,
            &format!("/v1/admin/users/{alice}/suspend"),
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
    }
);

both_backends!(
    person_acts_need_a_recent_sign_in_or_step_up,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let secret = password_and_totp(&a, "adam@a.test").await;
        let session = session_for(&app, &a, "adam@a.test").await;
        let (adam, alice) = (
            user_id(&a, "adam@a.test").await,
            user_id(&a, "alice@a.test").await,
        );
        let rid = docket::accounts::reset::request(&a, "alice@a.test", "127.0.0.1", "t")
            .await
            .unwrap()
            .unwrap()
            .id;

        // Just signed in: a new admin and their link; the link goes to this admin only.
        let r = call(
            &app,
            Err(&session),
            reqwest::Method::POST,
            "/v1/admin/users",
            Some(json!({"email": "nora@a.test", "role": "admin"})),
        )
        .await;
        assert_eq!(r.status(), 201);
        let nora = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = call(
            &app,
            Err(&session),
            reqwest::Method::POST,
            &format!("/v1/admin/users/{nora}/password-link"),
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
        assert!(r.json::<Value>().await.unwrap()["link"]
            .as_str()
            .unwrap()
            .starts_with("/console/reset/"));

        // Six minutes on, every such act asks for a step-up and changes nothing.
        sqlx::query("UPDATE sessions SET reauth_at = $1")
            .bind(docket::time_fmt::format_utc(
                time::OffsetDateTime::now_utc() - time::Duration::minutes(6),
            ))
            .execute(&a.db)
            .await
            .unwrap();
        let audit_before = scalar(&a, "SELECT COUNT(*) FROM audit_log").await;
        for (m, path, body) in person_only_requests(&a, &adam, &alice, &rid) {
            let (s, p) = problem(call(&app, Err(&session), m.clone(), &path, body).await).await;
            assert_eq!(s, 403, "{m} {path}: {p}");
            ends_with_slug(&p, "reauth-required");
            assert!(
                p["detail"].as_str().unwrap().contains("/v1/admin/reauth"),
                "{p}"
            );
        }
        assert_eq!(
            scalar(&a, "SELECT COUNT(*) FROM audit_log").await,
            audit_before
        );

        // Password and code again: the act goes through.
        let next = time::OffsetDateTime::now_utc().unix_timestamp() as u64 + 30;
        let r = call(
            &app,
            Err(&session),
            reqwest::Method::POST,
            "/v1/admin/reauth",
            Some(json!({"password": STRONG, "code": totp::code_at(&secret, next)})),
        )
        .await;
        assert_eq!(r.status(), 204);
        let r = call(
            &app,
            Err(&session),
            reqwest::Method::POST,
            "/v1/admin/tokens",
            Some(json!({"name": "after step-up", "scopes": ["read"], "expires_in_days": 5})),
        )
        .await;
        assert_eq!(r.status(), 201);
    }
);

both_backends!(
    suspension_revokes_issued_set_password_links,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let session = session_for(&app, &a, "adam@a.test").await;
        let vera = user_id(&a, "vera@a.test").await;
        let issued: Value = call(
            &app,
            Err(&session),
            reqwest::Method::POST,
            &format!("/v1/admin/users/{vera}/password-link"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        let link = issued["link"].as_str().unwrap().to_string();
        let page = |app: &TestApp, link: &str| {
            let url = format!("{}{link}", app.base);
            let http = app.http.clone();
            async move { http.get(url).send().await.unwrap().status().as_u16() }
        };
        assert_eq!(page(&app, &link).await, 200);
        for action in ["suspend", "reactivate"] {
            let r = call(
                &app,
                Err(&session),
                reqwest::Method::POST,
                &format!("/v1/admin/users/{vera}/{action}"),
                None,
            )
            .await;
            assert_eq!(r.status(), 200, "{action}");
        }
        assert_eq!(
            page(&app, &link).await,
            410,
            "the link died with the suspension"
        );
        let token = link.trim_start_matches("/console/reset/");
        let (s, _) = problem(
            app.http
                .post(format!("{}/v1/password-reset/complete", app.base))
                .json(&json!({"token": token, "password": STRONG}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 410);
        let detail: String = sqlx::query(
            "SELECT detail FROM audit_log WHERE action = 'user.suspended' AND subject = $1",
        )
        .bind(&vera)
        .fetch_one(&a.db)
        .await
        .unwrap()
        .get(0);
        assert!(detail.contains("\"links_revoked\":1"), "{detail}");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_asks_for_a_step_up_before_person_acts() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let a = app.tenant(&app.firm_a).await;
    let secret = password_and_totp(&a, "adam@a.test").await;
    let (cookie, csrf) = session_for(&app, &a, "adam@a.test").await;
    sqlx::query("UPDATE sessions SET reauth_at = $1")
        .bind(docket::time_fmt::format_utc(
            time::OffsetDateTime::now_utc() - time::Duration::minutes(6),
        ))
        .execute(&a.db)
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |path: &str, form: Vec<(&str, String)>| {
        http.post(format!("{}{path}", app.base))
            .header("cookie", &cookie)
            .form(&form)
            .send()
    };
    let new_admin = || {
        vec![
            ("csrf", csrf.clone()),
            ("email", "nora@a.test".to_string()),
            ("role", "admin".to_string()),
        ]
    };
    let r = post("/console/users", new_admin()).await.unwrap();
    assert_eq!(r.status(), 403);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Confirm it is you") && html.contains("action=\"/console/reauth\""),
        "{html}"
    );
    assert!(directory::user_by_email(&a.db, "nora@a.test")
        .await
        .unwrap()
        .is_none());

    // A wrong code keeps the form; the right one returns to the page (never off-site).
    let r = post(
        "/console/reauth",
        vec![
            ("csrf", csrf.clone()),
            ("password", STRONG.into()),
            ("code", "000000".into()),
            ("next", "/console/users".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let next = time::OffsetDateTime::now_utc().unix_timestamp() as u64 + 30;
    let r = post(
        "/console/reauth",
        vec![
            ("csrf", csrf.clone()),
            ("password", STRONG.into()),
            ("code", totp::code_at(&secret, next)),
            ("next", "//evil.test/console".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console");
    let r = post("/console/users", new_admin()).await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(directory::user_by_email(&a.db, "nora@a.test")
        .await
        .unwrap()
        .is_some());
}

// An admin cannot add a user who could never sign in (issue 14): the address's domain is
// not the firm's, and it is not mapped to the firm. Refused with 422 `cannot-sign-in`, in
// the API and in the console, and nothing is written; a mapped address is accepted.
both_backends!(
    an_address_that_could_never_sign_in_is_not_added,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let token = token_for(&a, "adam@a.test", &[Scope::Admin]).await;
        let users = scalar(&a, "SELECT COUNT(*) FROM users").await;
        let entries = scalar(&a, "SELECT COUNT(*) FROM audit_log").await;
        for email in ["pat@gmail.com", "pat@b.test", "pat@a.test.example"] {
            let r = call(
                &app,
                Ok(&token),
                reqwest::Method::POST,
                "/v1/admin/users",
                Some(json!({"email": email, "role": "filer"})),
            )
            .await;
            let (s, p) = problem(r).await;
            assert_eq!(s, 422, "{email}: {p}");
            assert_eq!(p["type"], "urn:docket:problem:cannot-sign-in", "{p}");
            let detail = p["detail"].as_str().unwrap();
            assert!(detail.contains(email) && detail.contains("a.test"), "{p}");
        }

        // The console form says the same on the page, keeping what was typed.
        let (cookie, csrf) = session_for(&app, &a, "adam@a.test").await;
        let r = app
            .http
            .post(format!("{}/console/users", app.base))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("email", "pat@gmail.com"),
                ("role", "filer"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let html = r.text().await.unwrap();
        assert!(html.contains("could never sign in to this firm"), "{html}");
        assert!(html.contains("value=\"pat@gmail.com\""), "{html}");
        assert_eq!(scalar(&a, "SELECT COUNT(*) FROM users").await, users);
        assert_eq!(scalar(&a, "SELECT COUNT(*) FROM audit_log").await, entries);

        // Mapped to the firm, the address can sign in, so it can be added.
        app.state
            .catalog
            .map_address(&app.firm_a.id, "pat@gmail.com")
            .await
            .unwrap();
        let r = call(
            &app,
            Ok(&token),
            reqwest::Method::POST,
            "/v1/admin/users",
            Some(json!({"email": "Pat@Gmail.com", "role": "filer"})),
        )
        .await;
        assert_eq!(r.status(), 201);
        assert_eq!(scalar(&a, "SELECT COUNT(*) FROM users").await, users + 1);
    }
);

// The console for a real firm (issue 14): a record's page lists its filings; closing a
// record asks first (a second page, no script) and changes nothing until confirmed; the
// filings browser takes a bare reference.
both_backends!(
    a_record_page_lists_its_filings_and_closing_asks_first,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let raw = email("Settlement draft v3", Some("<v3@acme.com>"), &[]);
        let r = app
            .post_filing(
                &app.token("alice@a.test"),
                &filing_body(&raw, &["matter:M-1"]),
            )
            .await;
        assert_eq!(r.status(), 201);
        let filing = r.json::<Value>().await.unwrap()["filings"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let m1: String = sqlx::query("SELECT id FROM records WHERE reference = 'M-1'")
            .fetch_one(&a.db)
            .await
            .unwrap()
            .get(0);
        let (cookie, csrf) = session_for(&app, &a, "adam@a.test").await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let get = |path: String| {
            let (http, cookie) = (http.clone(), cookie.clone());
            async move {
                let r = http
                    .get(path)
                    .header("cookie", cookie)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.text().await.unwrap()
            }
        };
        let page = get(format!("{}/console/records/{m1}", app.base)).await;
        assert!(page.contains("<h2>Filings</h2>"), "{page}");
        assert!(
            page.contains(&format!(
                "href=\"/console/filings/{filing}\">Settlement draft v3</a>"
            )),
            "{page}"
        );

        let close = |confirm: bool| {
            let (http, cookie, csrf) = (http.clone(), cookie.clone(), csrf.clone());
            let url = format!("{}/console/records/{m1}/status", app.base);
            async move {
                let mut form = vec![("csrf", csrf), ("status", "closed".to_string())];
                if confirm {
                    form.push(("confirm", "yes".into()));
                }
                http.post(url)
                    .header("cookie", cookie)
                    .form(&form)
                    .send()
                    .await
                    .unwrap()
            }
        };
        let r = close(false).await;
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap();
        assert!(page.contains("Close M-1 Acme v. Widget?"), "{page}");
        assert!(
            page.contains(&format!("href=\"/console/records/{m1}\">Cancel")),
            "{page}"
        );
        let open: String = sqlx::query("SELECT status FROM records WHERE id = $1")
            .bind(&m1)
            .fetch_one(&a.db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(open, "open", "nothing changes before the confirmation");
        let r = close(true).await;
        assert_eq!(r.status(), 303);
        let closed: String = sqlx::query("SELECT status FROM records WHERE id = $1")
            .bind(&m1)
            .fetch_one(&a.db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(closed, "closed");

        // The filings browser by a bare reference, in any letter case.
        for record in ["M-1", "m-1", "matter:M-1"] {
            let page = get(format!("{}/console/filings?record={record}", app.base)).await;
            assert!(page.contains("Settlement draft v3"), "{record}: {page}");
        }
        let page = get(format!("{}/console/filings?record=K-1", app.base)).await;
        assert!(!page.contains("Settlement draft v3"), "{page}");
    }
);

// The console's home page is a dashboard (issue 14): counts, reset requests waiting, the
// audit chain, the last backup and a chart of filings per week drawn as SVG, no script.
both_backends!(
    the_console_home_is_a_dashboard_with_a_weekly_chart,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let alice = app.token("alice@a.test");
        for (subject, id) in [("First", "<d1@acme.com>"), ("Second", "<d2@acme.com>")] {
            let raw = email(subject, Some(id), &[]);
            let r = app
                .post_filing(&alice, &filing_body(&raw, &["matter:M-1"]))
                .await;
            assert_eq!(r.status(), 201);
        }
        // One of them was filed three weeks ago.
        let old = docket::time_fmt::format_utc(
            time::OffsetDateTime::now_utc() - time::Duration::days(21),
        );
        sqlx::query("UPDATE filings SET filed_at = $1 WHERE id = (SELECT MIN(id) FROM filings)")
            .bind(&old)
            .execute(&a.db)
            .await
            .unwrap();
        docket::accounts::reset::request(&a, "alice@a.test", "127.0.0.1", "t")
            .await
            .unwrap();
        let (cookie, _) = session_for(&app, &a, "adam@a.test").await;
        let r = app
            .http
            .get(format!("{}/console", app.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap();
        let squashed: String = page.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(squashed.contains("<span class=\"num\">2</span><span>Filings</span><span class=\"muted\">1 in the last 7 days</span>"), "{squashed}");
        assert!(
            squashed
                .contains("<span class=\"num bad\">1</span><span>Reset requests waiting</span>"),
            "{squashed}"
        );
        assert!(
            squashed.contains("<span class=\"ok\">intact</span>"),
            "{squashed}"
        );
        assert!(squashed.contains("none yet"), "{squashed}");
        assert!(!page.contains("<script"), "no script");
        // The chart: twelve bars; this week and the week three weeks back hold one each.
        assert_eq!(page.matches("<rect").count(), 12, "{page}");
        let caption = squashed
            .split("<figcaption")
            .nth(1)
            .unwrap()
            .split("</figcaption>")
            .next()
            .unwrap();
        let counts: Vec<i64> = caption
            .split("(UTC): ")
            .nth(1)
            .unwrap()
            .split(", ")
            .map(|w| {
                w.trim_end_matches('.')
                    .rsplit(": ")
                    .next()
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(counts.len(), 12, "{caption}");
        assert_eq!(counts[11], 1, "{caption}");
        assert_eq!(counts.iter().sum::<i64>(), 2, "{caption}");
        assert_eq!(counts[8], 1, "three weeks back: {caption}");
    }
);

// Dates on the console's pages are in the firm's time zone (issue 14), set on the Tenant
// page (an unknown zone is refused and nothing changes), with the exact UTC value on hover.
both_backends!(
    console_dates_follow_the_firms_time_zone,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let raw = email("Zoned", Some("<zoned@acme.com>"), &[]);
        let r = app
            .post_filing(
                &app.token("alice@a.test"),
                &filing_body(&raw, &["matter:M-1"]),
            )
            .await;
        assert_eq!(r.status(), 201);
        sqlx::query("UPDATE filings SET filed_at = '2026-11-29T22:56:15.009Z'")
            .execute(&a.db)
            .await
            .unwrap();
        let (cookie, csrf) = session_for(&app, &a, "adam@a.test").await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let filings_page = || {
            let (http, cookie) = (http.clone(), cookie.clone());
            let url = format!("{}/console/filings", app.base);
            async move {
                let r = http.get(url).header("cookie", cookie).send().await.unwrap();
                r.text().await.unwrap()
            }
        };
        let page = filings_page().await;
        assert!(
            page.contains("title=\"2026-11-29T22:56:15.009Z\">29 Nov 2026, 22:56 UTC</time>"),
            "{page}"
        );
        let set = |tz: &'static str| {
            let (http, cookie, csrf) = (http.clone(), cookie.clone(), csrf.clone());
            let url = format!("{}/console/tenant/time-zone", app.base);
            async move {
                http.post(url)
                    .header("cookie", cookie)
                    .form(&[("csrf", csrf.as_str()), ("time_zone", tz)])
                    .send()
                    .await
                    .unwrap()
            }
        };
        let r = set("Mars/Olympus_Mons").await;
        assert_eq!(r.status(), 422);
        assert!(r.text().await.unwrap().contains("is not a time zone"));
        assert!(filings_page().await.contains("22:56 UTC</time>"));
        let r = set("Europe/Paris").await;
        assert_eq!(r.status(), 303);
        let page = filings_page().await;
        assert!(
            page.contains("title=\"2026-11-29T22:56:15.009Z\">29 Nov 2026, 23:56 CET</time>"),
            "{page}"
        );
        assert_eq!(
            scalar(
                &a,
                "SELECT COUNT(*) FROM audit_log WHERE action = 'setting.changed' AND subject = 'time_zone'"
            )
            .await,
            1
        );
    }
);

both_backends!(
    console_firm_settings_change_who_signs_in_and_the_subject_pattern,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let catalog = &app.state.catalog;
        let (cookie, csrf) = session_for(&app, &a, "adam@a.test").await;
        let web = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let post = |path: &'static str, form: Vec<(&'static str, String)>| {
            let (web, cookie, csrf) = (web.clone(), cookie.clone(), csrf.clone());
            let url = format!("{}{}", app.base, path);
            async move {
                let mut f = vec![("csrf", csrf)];
                f.extend(form);
                let r = web
                    .post(url)
                    .header("cookie", cookie)
                    .form(&f)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        let audits = |action: &'static str| {
            let a = a.clone();
            async move {
                sqlx::query("SELECT COUNT(*) FROM audit_log WHERE action = $1")
                    .bind(action)
                    .fetch_one(&a.db)
                    .await
                    .unwrap()
                    .get::<i64, _>(0)
            }
        };
        let page = app
            .http
            .get(format!("{}/console/tenant", app.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("<h1>Firm settings</h1>") && page.contains("<code>a.test</code>"));
        assert!(page.contains("This is docket's default."), "{page}");

        // Domains: added, refused when taken or malformed, kept while people use them.
        let dom = |d: &str| vec![("domain", d.to_string())];
        assert_eq!(
            post("/console/tenant/domains", dom("A-Law.test")).await.0,
            303
        );
        let a_id = Some(app.firm_a.id.clone());
        assert_eq!(
            catalog.tenant_id_for_domain("a-law.test").await.unwrap(),
            a_id
        );
        assert_eq!(audits("tenant.domain_added").await, 1);
        let (s, html) = post("/console/tenant/domains", dom("b.test")).await;
        assert_eq!(s, 409);
        assert!(html.contains("already belongs to a firm"), "{html}");
        assert!(!html.contains("Firm B"), "which firm has it is not said");
        assert_eq!(
            post("/console/tenant/domains", dom("not a domain")).await.0,
            422
        );
        let (s, html) = post("/console/tenant/domains/remove", dom("a.test")).await;
        assert_eq!(s, 409);
        assert!(
            html.contains("3 active people sign in through a.test"),
            "{html}"
        );
        assert_eq!(catalog.tenant_id_for_domain("a.test").await.unwrap(), a_id);
        assert_eq!(
            post("/console/tenant/domains/remove", dom("a-law.test"))
                .await
                .0,
            303
        );
        assert_eq!(
            catalog.tenant_id_for_domain("a-law.test").await.unwrap(),
            None
        );
        assert_eq!(audits("tenant.domain_removed").await, 1);
        assert_eq!(
            post("/console/tenant/domains/remove", dom("b.test"))
                .await
                .0,
            404
        );
        assert_eq!(
            catalog.tenant_id_for_domain("b.test").await.unwrap(),
            Some(app.firm_b.id.clone())
        );

        // Address mappings.
        let addr = |e: &str| vec![("email", e.to_string())];
        assert_eq!(
            post("/console/tenant/addresses", addr("Consultant@Gmail.com"))
                .await
                .0,
            303
        );
        assert_eq!(
            catalog
                .tenant_id_for_address("consultant@gmail.com")
                .await
                .unwrap(),
            a_id
        );
        assert_eq!(audits("tenant.address_mapped").await, 1);
        for (e, status) in [
            ("consultant@gmail.com", 409),
            ("boss@b.test", 409),
            ("new@a.test", 422),
            ("nobody", 422),
        ] {
            assert_eq!(
                post("/console/tenant/addresses", addr(e)).await.0,
                status,
                "{e}"
            );
        }
        assert_eq!(
            catalog.tenant_id_for_address("boss@b.test").await.unwrap(),
            None
        );
        directory::add_user(
            &a.db,
            "consultant@gmail.com",
            "",
            directory::Role::Filer,
            "test",
        )
        .await
        .unwrap();
        let (s, html) = post(
            "/console/tenant/addresses/remove",
            addr("consultant@gmail.com"),
        )
        .await;
        assert_eq!(s, 409);
        assert!(html.contains("suspend them first"), "{html}");
        assert_eq!(
            post("/console/tenant/addresses/remove", addr("x@gmail.com"))
                .await
                .0,
            404
        );
        assert_eq!(audits("tenant.address_unmapped").await, 0);

        // The subject pattern: a test shows what it finds and changes nothing.
        let pat = |p: &str, subject: &str, action: &str| {
            vec![
                ("pattern", p.to_string()),
                ("subject", subject.to_string()),
                ("action", action.to_string()),
            ]
        };
        let (s, html) = post(
            "/console/tenant/subject-pattern",
            pat(
                r"(?i)\b[MK]-\d+\b",
                "Re: m-1 and K-1, not C-1, and M-77",
                "test",
            ),
        )
        .await;
        assert_eq!(s, 200);
        assert!(
            html.contains("<code>m-1</code> → matter:M-1 — Acme v. Widget"),
            "{html}"
        );
        assert!(
            html.contains("<code>K-1</code> → contract:K-1 — Globex MSA"),
            "{html}"
        );
        assert!(
            html.contains("<code>M-77</code> → <span class=\"muted\">no record"),
            "{html}"
        );
        assert!(!html.contains("<code>C-1</code>"), "{html}");
        assert!(
            html.contains(r#"value="(?i)\b[MK]-\d+\b""#),
            "the tried pattern stays: {html}"
        );
        assert_eq!(audits("setting.changed").await, 0);
        let (s, html) = post("/console/tenant/subject-pattern", pat("(", "x", "save")).await;
        assert_eq!(s, 422);
        assert!(html.contains("not a valid regular expression"), "{html}");
        assert_eq!(audits("setting.changed").await, 0);
        let (s, _) = post(
            "/console/tenant/subject-pattern",
            pat(r"\b[MK]-\d+\b", "", "save"),
        )
        .await;
        assert_eq!(s, 303);
        let stored = docket::suggest::setting(&a.db, "subject_pattern")
            .await
            .unwrap();
        assert_eq!(stored.as_deref(), Some(r"\b[MK]-\d+\b"));
        assert_eq!(audits("setting.changed").await, 1);
        post("/console/tenant/subject-pattern", pat("", "", "save")).await;
        let stored = docket::suggest::setting(&a.db, "subject_pattern")
            .await
            .unwrap();
        assert_eq!(
            stored, None,
            "an empty pattern goes back to docket's default"
        );
        assert_eq!(audits("setting.changed").await, 2);
        let (_, html) = crate::common::page(&app, &cookie, "/console/tenant").await;
        assert!(html.contains("This is docket's default."), "{html}");
        // Who signs in needs a recent sign-in: an older session is asked to confirm first.
        sqlx::query("UPDATE sessions SET reauth_at = $1")
            .bind(docket::time_fmt::format_utc(
                time::OffsetDateTime::now_utc() - time::Duration::minutes(6),
            ))
            .execute(&a.db)
            .await
            .unwrap();
        let (s, html) = post("/console/tenant/domains", dom("late.test")).await;
        assert_eq!(s, 403);
        assert!(html.contains("Confirm it is you"), "{html}");
        assert_eq!(
            catalog.tenant_id_for_domain("late.test").await.unwrap(),
            None
        );
        assert!(matches!(
            docket::audit::verify(&a.db).await.unwrap(),
            docket::audit::ChainStatus::Intact { .. }
        ));
    }
);

both_backends!(
    the_admin_api_changes_firm_settings_and_an_access_token_cannot_change_who_signs_in,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let token = token_for(&a, "adam@a.test", &[Scope::Admin]).await;
        let go = |m: reqwest::Method, path: &'static str, body: Option<Value>| {
            call(&app, Ok(&token), m, path, body)
        };
        use reqwest::Method as M;
        let r = go(M::GET, "/v1/admin/tenant/settings", None).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["domains"], json!(["a.test"]));
        // Who signs in is a person's act, never a token's.
        for (m, path, body) in [
            (
                M::POST,
                "/v1/admin/tenant/domains",
                Some(json!({"domain": "a-law.test"})),
            ),
            (M::DELETE, "/v1/admin/tenant/domains/a.test", None),
            (
                M::POST,
                "/v1/admin/tenant/addresses",
                Some(json!({"email": "x@gmail.com"})),
            ),
            (M::DELETE, "/v1/admin/tenant/addresses/x@gmail.com", None),
            (
                M::POST,
                "/v1/admin/me/password",
                Some(json!({"current_password": "a", "new_password": "b"})),
            ),
            (M::POST, "/v1/admin/me/totp/replace", None),
        ] {
            let (s, p) = problem(go(m, path, body).await).await;
            assert_eq!(s, 403, "{path}: {p}");
            assert!(
                p["type"].as_str().unwrap().ends_with(":session-required"),
                "{path}: {p}"
            );
        }
        assert_eq!(
            app.state
                .catalog
                .tenant_id_for_domain("a-law.test")
                .await
                .unwrap(),
            None
        );
        // The subject pattern and the time zone are ordinary settings.
        let body = json!({"pattern": r"\bM-\d+\b", "subject": "Re: M-1 and M-2"});
        let r = go(M::POST, "/v1/admin/tenant/subject-pattern/test", Some(body)).await;
        assert_eq!(r.status(), 200);
        let found: Value = r.json().await.unwrap();
        assert_eq!(found[0]["reference"], "M-1");
        assert_eq!(found[0]["records"], json!(["matter:M-1 — Acme v. Widget"]));
        assert_eq!(found[1]["records"], json!([]));
        let bad = json!({"pattern": "("});
        let (s, _) = problem(go(M::PUT, "/v1/admin/tenant/subject-pattern", Some(bad)).await).await;
        assert_eq!(s, 422);
        let ok = json!({"pattern": r"\bM-\d+\b"});
        let r = go(M::PUT, "/v1/admin/tenant/subject-pattern", Some(ok)).await;
        assert_eq!(r.status(), 204);
        let (s, _) = problem(
            go(
                M::PUT,
                "/v1/admin/tenant/time-zone",
                Some(json!({"time_zone": "Mars/Base"})),
            )
            .await,
        )
        .await;
        assert_eq!(s, 422);
        let tz = json!({"time_zone": "Europe/Paris"});
        assert_eq!(
            go(M::PUT, "/v1/admin/tenant/time-zone", Some(tz))
                .await
                .status(),
            204
        );
        let v: Value = go(M::GET, "/v1/admin/tenant/settings", None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["subject_pattern"], r"\bM-\d+\b");
    }
);
