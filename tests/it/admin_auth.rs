//! Admin sign-in over real HTTP: password + TOTP (enrolment, second factor, replay, recovery
//! codes), lockout after 3 failures and reactivation, per-IP throttle, trusted proxies,
//! uniform failures, session expiry and revocation, CSRF, non-admins, bcrypt upgrade, and
//! the console's sign-in pages.

use docket::accounts::tokens::Scope;
use docket::accounts::{password, totp};
use docket::directory::{self, Role};
use docket::tenancy::Tenant;
use serde_json::{json, Value};
use sqlx::Row;

use crate::both_backends;
use crate::common::*;

const PW: &str = "Glacier-Tulip-Kettle-93";

async fn set_pw(t: &Tenant, email: &str, pw: &str) -> String {
    let id = user_id(t, email).await;
    let mut conn = t.db.acquire().await.unwrap();
    password::set_password(&mut conn, &id, pw).await.unwrap();
    id
}

async fn admin_token(t: &Tenant, email: &str) -> String {
    access_token(t, email, &[Scope::Admin]).await
}

async fn scalar(t: &Tenant, sql: &str, bind: &str) -> i64 {
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

async fn audit_count(t: &Tenant, action: &str) -> i64 {
    scalar(
        t,
        "SELECT COUNT(*) FROM audit_log WHERE action = $1",
        action,
    )
    .await
}

async fn status_of(t: &Tenant, email: &str) -> String {
    directory::user_by_email(&t.db, email)
        .await
        .unwrap()
        .unwrap()
        .status
}

/// `(result, reason, ip)` of the login attempts for an address, oldest first.
async fn attempts(t: &Tenant, email: &str) -> Vec<(String, String, String)> {
    sqlx::query("SELECT result, reason, ip FROM login_attempts WHERE email = $1 ORDER BY at, id")
        .bind(email)
        .fetch_all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("result"), r.get("reason"), r.get("ip")))
        .collect()
}

fn slug(body: &Value, slug: &str) {
    let t = body["type"].as_str().unwrap_or_default();
    assert!(t.ends_with(&format!(":{slug}")), "expected {slug}: {body}");
}

/// The `name=value` of the session cookie a response sets.
fn cookie(resp: &reqwest::Response) -> String {
    let v = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("docket_session="))
        .expect("a session cookie");
    assert!(
        v.contains("HttpOnly") && v.contains("SameSite=Strict") && v.contains("Path=/"),
        "{v}"
    );
    v.split(';').next().unwrap().to_string()
}

fn now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp() as u64
}

async fn password_login(app: &TestApp, email: &str, pw: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/admin/session", app.base))
        .json(&json!({"email": email, "password": pw}))
        .send()
        .await
        .unwrap()
}

async fn post_with(
    app: &TestApp,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut r = app
        .http
        .post(format!("{}{}", app.base, path))
        .header("cookie", cookie)
        .json(&body);
    if let Some(c) = csrf {
        r = r.header("x-csrf-token", c);
    }
    r.send().await.unwrap()
}

async fn me(app: &TestApp, cookie: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/v1/admin/me", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// Password, enrolment and confirmation through the API. Returns (cookie, csrf, secret bytes,
/// recovery codes).
async fn enrol(app: &TestApp, email: &str, pw: &str) -> (String, String, Vec<u8>, Vec<String>) {
    let r = password_login(app, email, pw).await;
    assert_eq!(r.status(), 200);
    let pending = cookie(&r);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["next"], "enrol");
    let csrf = b["csrf"].as_str().unwrap().to_string();
    let r = post_with(
        app,
        "/v1/admin/session/totp/enrol",
        &pending,
        Some(&csrf),
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    let url = e["otpauth_url"].as_str().unwrap();
    assert!(
        url.starts_with("otpauth://totp/docket:") && url.contains("issuer=docket"),
        "{url}"
    );
    assert!(e["qr_svg"].as_str().unwrap().contains("<svg"));
    let t = totp_rs::TOTP::from_url(url).unwrap();
    let secret = totp_rs::Secret::Encoded(e["secret"].as_str().unwrap().into())
        .to_bytes()
        .unwrap();
    assert_eq!(t.secret, secret);
    let r = post_with(
        app,
        "/v1/admin/session/totp/confirm",
        &pending,
        Some(&csrf),
        json!({"code": t.generate(now())}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let full = cookie(&r);
    let b: Value = r.json().await.unwrap();
    let codes: Vec<String> = b["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    (full, b["csrf"].as_str().unwrap().to_string(), secret, codes)
}

/// Clears the replay marker so the current code can be used again (tests only; saves
/// waiting for the next 30-second step).
async fn forget_last_step(t: &Tenant, uid: &str) {
    sqlx::query("UPDATE local_accounts SET totp_last_step = NULL WHERE user_id = $1")
        .bind(uid)
        .execute(&t.db)
        .await
        .unwrap();
}

/// Password then second factor: (cookie, csrf) of a complete session.
async fn full_login(app: &TestApp, email: &str, pw: &str, code: &str) -> (String, String) {
    let r = password_login(app, email, pw).await;
    assert_eq!(r.status(), 200);
    let pending = cookie(&r);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["next"], "second_factor");
    let r = post_with(
        app,
        "/v1/admin/session/second-factor",
        &pending,
        b["csrf"].as_str(),
        json!({"code": code}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let c = cookie(&r);
    let b: Value = r.json().await.unwrap();
    (c, b["csrf"].as_str().unwrap().to_string())
}

both_backends!(
    login_enrol_confirm_then_second_factor,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let doc: Value = app
            .http
            .get(format!("{}/v1/openapi.json", app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for p in [
            "/v1/admin/session",
            "/v1/admin/session/second-factor",
            "/v1/admin/session/totp/enrol",
            "/v1/admin/session/totp/confirm",
            "/v1/admin/me",
            "/v1/admin/reauth",
            "/v1/admin/me/recovery-codes",
            "/v1/admin/users/{id}/suspend",
            "/v1/admin/users/{id}/reactivate",
            "/v1/admin/users/{id}/sessions",
        ] {
            assert!(
                doc["paths"].get(p).is_some(),
                "{p} missing from the OpenAPI document"
            );
        }
        let adam = set_pw(&a, "adam@a.test", PW).await;

        // Password accepted: a pending session that cannot use the API yet.
        let r = password_login(&app, "Adam@A.test ", PW).await;
        assert_eq!(r.status(), 200);
        let pending = cookie(&r);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["next"], "enrol");
        let csrf = b["csrf"].as_str().unwrap().to_string();
        let (s, body) = problem(me(&app, &pending).await).await;
        assert_eq!(s, 401);
        slug(&body, "second-factor-required");

        let r = post_with(
            &app,
            "/v1/admin/session/totp/enrol",
            &pending,
            Some(&csrf),
            json!({}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let e: Value = r.json().await.unwrap();
        let t = totp_rs::TOTP::from_url(e["otpauth_url"].as_str().unwrap()).unwrap();
        assert!(e["otpauth_url"].as_str().unwrap().contains("adam%40a.test"));
        // A wrong code does not confirm.
        let wrong = if t.generate(now()) == "000000" {
            "111111"
        } else {
            "000000"
        };
        let (s, body) = problem(
            post_with(
                &app,
                "/v1/admin/session/totp/confirm",
                &pending,
                Some(&csrf),
                json!({"code": wrong}),
            )
            .await,
        )
        .await;
        assert_eq!(s, 422);
        slug(&body, "invalid-code");
        let r = post_with(
            &app,
            "/v1/admin/session/totp/confirm",
            &pending,
            Some(&csrf),
            json!({"code": t.generate(now())}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let full = cookie(&r);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["recovery_codes"].as_array().unwrap().len(), 10);
        assert_eq!(audit_count(&a, "totp.enrolled").await, 1);

        // The complete session works; the pending token died with the upgrade.
        let r = me(&app, &full).await;
        assert_eq!(r.status(), 200);
        let m: Value = r.json().await.unwrap();
        assert_eq!(m["user"]["email"], "adam@a.test");
        assert_eq!(m["via"], "session");
        assert_eq!(m["totp_enrolled"], true);
        assert_eq!(m["recovery_codes_left"], 10);
        assert_eq!(m["csrf"], b["csrf"]);
        assert_eq!(m["session"]["mfa"], true);
        assert_eq!(me(&app, &pending).await.status(), 401);
        // Enrolling again is refused (it would bypass the existing authenticator).
        let (s, body) = problem(
            post_with(
                &app,
                "/v1/admin/session/totp/enrol",
                &full,
                m["csrf"].as_str(),
                json!({}),
            )
            .await,
        )
        .await;
        assert_eq!(s, 409);
        slug(&body, "already-enrolled");

        // Logout kills the session.
        let r = app
            .http
            .delete(format!("{}/v1/admin/session", app.base))
            .header("cookie", &full)
            .header("x-csrf-token", m["csrf"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
        assert_eq!(me(&app, &full).await.status(), 401);
        assert_eq!(audit_count(&a, "logout").await, 1);

        // Next time: password, then the code (the next step: the current one was spent).
        let (c2, _) = full_login(&app, "adam@a.test", PW, &t.generate(now() + 30)).await;
        assert_eq!(me(&app, &c2).await.status(), 200);
        let rows = attempts(&a, "adam@a.test").await;
        let reasons: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(
            reasons,
            ["password", "totp-enrolled", "password", "totp"],
            "{rows:?}"
        );
        assert!(rows.iter().all(|r| r.0 == "success" && r.2 == "127.0.0.1"));
        assert_eq!(audit_count(&a, "login.succeeded").await, 4);
        assert_eq!(
            scalar(
                &a,
                "SELECT COUNT(*) FROM sessions WHERE user_id = $1",
                &adam
            )
            .await,
            1
        );
    }
);

both_backends!(
    lockout_after_three_failures_and_reactivation,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let adam = set_pw(&a, "adam@a.test", PW).await;
        // A live (pending) session that the lockout must end.
        let r = password_login(&app, "adam@a.test", PW).await;
        assert_eq!(r.status(), 200);
        let before = cookie(&r);

        for i in 1..=3 {
            let (s, body) =
                problem(password_login(&app, "adam@a.test", "wrong password 1").await).await;
            assert_eq!(s, 401, "failure {i}");
            slug(&body, "invalid-credentials");
            let expect = if i < 3 { "active" } else { "suspended" };
            assert_eq!(
                status_of(&a, "adam@a.test").await,
                expect,
                "after {i} failures"
            );
        }
        // Even the right password is refused now.
        let (s, body) = problem(password_login(&app, "adam@a.test", PW).await).await;
        assert_eq!(s, 403);
        slug(&body, "account-suspended");
        assert!(body["detail"]
            .as_str()
            .unwrap()
            .contains("another administrator"));
        assert_eq!(audit_count(&a, "account.locked").await, 1);
        assert_eq!(audit_count(&a, "login.failed").await, 4);
        assert_eq!(
            scalar(
                &a,
                "SELECT COUNT(*) FROM sessions WHERE user_id = $1",
                &adam
            )
            .await,
            0
        );
        assert!(
            sqlx::query("SELECT locked_at FROM local_accounts WHERE user_id = $1")
                .bind(&adam)
                .fetch_one(&a.db)
                .await
                .unwrap()
                .get::<Option<String>, _>(0)
                .is_some()
        );
        let (s, _) = problem(
            post_with(
                &app,
                "/v1/admin/session/totp/enrol",
                &before,
                Some("x"),
                json!({}),
            )
            .await,
        )
        .await;
        assert_eq!(s, 401);
        let rows = attempts(&a, "adam@a.test").await;
        let got: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
        assert_eq!(
            got,
            [
                ("success", "password"),
                ("failure", "wrong-password"),
                ("failure", "wrong-password"),
                ("failure", "wrong-password"),
                ("suspended", "account-suspended"),
            ]
        );

        // Another admin reactivates the account through the API.
        let ann = directory::add_user(&a.db, "ann@a.test", "Ann", Role::Admin, "test")
            .await
            .unwrap();
        let ann_token = admin_token(&a, "ann@a.test").await;
        let (ann_cookie, ann_csrf) = admin_session(&app, &a, "ann@a.test").await;
        let reactivate = |path: String, token: Option<&str>| {
            let r = app.http.post(format!("{}{}", app.base, path));
            match token {
                Some(t) => r.bearer_auth(t),
                None => r
                    .header("cookie", &ann_cookie)
                    .header("x-csrf-token", &ann_csrf),
            }
            .send()
        };
        // Restoring a person's access is a person's act: a token is refused.
        let path = format!("/v1/admin/users/{adam}/reactivate");
        let (s, body) = problem(reactivate(path.clone(), Some(&ann_token)).await.unwrap()).await;
        assert_eq!(s, 403);
        slug(&body, "session-required");
        assert_eq!(status_of(&a, "adam@a.test").await, "suspended");
        let r = reactivate(path, None).await.unwrap();
        assert_eq!(r.status(), 200);
        let u: Value = r.json().await.unwrap();
        assert_eq!(u["status"], "active");
        assert_eq!(audit_count(&a, "user.reactivated").await, 1);
        let r = password_login(&app, "adam@a.test", PW).await;
        assert_eq!(r.status(), 200);
        // The counter was cleared: one more failure does not lock.
        let (s, _) = problem(password_login(&app, "adam@a.test", "wrong password 2").await).await;
        assert_eq!(s, 401);
        assert_eq!(status_of(&a, "adam@a.test").await, "active");

        // Ids of another tenant (or none) are 404.
        let b = app.tenant(&app.firm_b).await;
        let bob = user_id(&b, "bob@b.test").await;
        for path in [
            format!("/v1/admin/users/{bob}/suspend"),
            format!("/v1/admin/users/{bob}/reactivate"),
            "/v1/admin/users/nope/suspend".to_string(),
        ] {
            let r = reactivate(path.clone(), None).await.unwrap();
            let (s, body) = problem(r).await;
            assert_eq!(s, 404, "{path}");
            slug(&body, "not-found");
        }
        let r = app
            .http
            .get(format!("{}/v1/admin/users/{bob}/sessions", app.base))
            .bearer_auth(&ann_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(status_of(&b, "bob@b.test").await, "active");
        let _ = ann;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_ip_throttle_refuses_without_locking_anyone() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.admin.throttle_failures_per_ip = 3)
        .await
        .unwrap();
    let a = app.tenant(&app.firm_a).await;
    set_pw(&a, "adam@a.test", PW).await;
    set_pw(&a, "alice@a.test", PW).await;
    for email in ["alice@a.test", "vera@a.test", "nobody@a.test"] {
        let (s, _) = problem(password_login(&app, email, "wrong password 9").await).await;
        assert_eq!(s, 401, "{email}");
    }
    // The limit is reached: refused without checking the password, even a right one.
    let r = password_login(&app, "adam@a.test", PW).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 15 * 60, "{retry}");
    let (s, body) = problem(r).await;
    assert_eq!(s, 429);
    slug(&body, "throttled");
    for email in ["adam@a.test", "alice@a.test", "vera@a.test"] {
        assert_eq!(status_of(&a, email).await, "active", "{email}");
    }
    assert_eq!(
        attempts(&a, "adam@a.test").await,
        [(
            "throttled".into(),
            "too-many-failures-from-ip".into(),
            "127.0.0.1".into()
        )]
    );
    assert_eq!(audit_count(&a, "login.throttled").await, 1);
    assert_eq!(audit_count(&a, "account.locked").await, 0);
    assert_eq!(
        scalar(&a, "SELECT COUNT(*) FROM sessions WHERE user_id <> $1", "").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spoofed_forwarded_for_is_ignored_unless_from_a_trusted_proxy() {
    for (trusted, expect) in [(false, "127.0.0.1"), (true, "203.0.113.7")] {
        let app = TestApp::spawn_with(Backend::Sqlite, |c| {
            if trusted {
                c.admin.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            }
        })
        .await
        .unwrap();
        let a = app.tenant(&app.firm_a).await;
        set_pw(&a, "adam@a.test", PW).await;
        for pw in ["wrong password 3", PW] {
            app.http
                .post(format!("{}/v1/admin/session", app.base))
                .header("x-forwarded-for", "203.0.113.7")
                .header("user-agent", "test-agent/1.0")
                .json(&json!({"email": "adam@a.test", "password": pw}))
                .send()
                .await
                .unwrap();
        }
        let rows = attempts(&a, "adam@a.test").await;
        assert_eq!(rows.len(), 2);
        assert!(
            rows.iter().all(|r| r.2 == expect),
            "trusted={trusted}: {rows:?}"
        );
        let ua: String = sqlx::query("SELECT user_agent FROM login_attempts LIMIT 1")
            .fetch_one(&a.db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(ua, "test-agent/1.0");
        let ip: String = sqlx::query("SELECT ip FROM sessions LIMIT 1")
            .fetch_one(&a.db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(ip, expect);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_wrong_credentials_answers_alike() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let a = app.tenant(&app.firm_a).await;
    set_pw(&a, "adam@a.test", PW).await;
    let mut seen = Vec::new();
    for (email, pw) in [
        ("nobody@a.test", PW),               // unknown user
        ("someone@nowhere.test", PW),        // unknown tenant
        ("vera@a.test", PW),                 // no password
        ("adam@a.test", "not his password"), // wrong password
        ("adam@a.test", ""),
    ] {
        let started = std::time::Instant::now();
        let r = password_login(&app, email, pw).await;
        let took = started.elapsed();
        let headers = r.headers().clone();
        let (s, body) = problem(r).await;
        assert!(headers.get("set-cookie").is_none());
        seen.push((s, body.to_string(), took));
    }
    for (s, body, _) in &seen {
        assert_eq!((*s, body.as_str()), (seen[0].0, seen[0].1.as_str()));
    }
    assert_eq!(seen[0].0, 401);
    assert!(seen[0].1.contains("invalid-credentials"));
    // Every answer paid for an Argon2 verification (unknown ones against a dummy hash).
    let min = seen.iter().map(|s| s.2).min().unwrap();
    let max = seen.iter().map(|s| s.2).max().unwrap();
    assert!(
        max < min * 10 + std::time::Duration::from_millis(200),
        "{seen:?}"
    );
    // Known tenant: rows for each address; the unknown tenant has none (nowhere to write).
    assert_eq!(attempts(&a, "nobody@a.test").await[0].1, "unknown-user");
    assert_eq!(attempts(&a, "vera@a.test").await[0].1, "no-password");
    assert_eq!(attempts(&a, "someone@nowhere.test").await.len(), 0);
}

both_backends!(totp_replay_and_recovery_codes, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    set_pw(&a, "adam@a.test", PW).await;
    let (_, _, secret, codes) = enrol(&app, "adam@a.test", PW).await;
    let spent = totp::code_at(&secret, now());

    // The code used to confirm the enrolment cannot be used again.
    let r = password_login(&app, "adam@a.test", PW).await;
    let pending = cookie(&r);
    let b: Value = r.json().await.unwrap();
    let csrf = b["csrf"].as_str().unwrap().to_string();
    let (s, body) = problem(
        post_with(
            &app,
            "/v1/admin/session/second-factor",
            &pending,
            Some(&csrf),
            json!({"code": spent}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);
    slug(&body, "invalid-code");
    // A recovery code works (any case, with or without dashes) ...
    let r = post_with(
        &app,
        "/v1/admin/session/second-factor",
        &pending,
        Some(&csrf),
        json!({"code": codes[0].to_uppercase()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let full = cookie(&r);
    let m: Value = me(&app, &full).await.json().await.unwrap();
    assert_eq!(m["recovery_codes_left"], 9);
    assert_eq!(audit_count(&a, "recovery_code.used").await, 1);
    // ... once.
    let r = password_login(&app, "adam@a.test", PW).await;
    let pending = cookie(&r);
    let b: Value = r.json().await.unwrap();
    let csrf = b["csrf"].as_str().unwrap().to_string();
    let (s, _) = problem(
        post_with(
            &app,
            "/v1/admin/session/second-factor",
            &pending,
            Some(&csrf),
            json!({"code": codes[0]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);
    // The next step's code works once; then it is a replay too.
    let next = totp::code_at(&secret, now() + 30);
    let r = post_with(
        &app,
        "/v1/admin/session/second-factor",
        &pending,
        Some(&csrf),
        json!({"code": next}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let full = cookie(&r);
    let r = password_login(&app, "adam@a.test", PW).await;
    let pending2 = cookie(&r);
    let b: Value = r.json().await.unwrap();
    let (s, _) = problem(
        post_with(
            &app,
            "/v1/admin/session/second-factor",
            &pending2,
            b["csrf"].as_str(),
            json!({"code": next}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);

    // New recovery codes need a re-authentication (password AND code) within 5 minutes;
    // signing in counts as one, so age it.
    sqlx::query("UPDATE sessions SET reauth_at = $1")
        .bind(docket::time_fmt::format_utc(
            time::OffsetDateTime::now_utc() - time::Duration::minutes(6),
        ))
        .execute(&a.db)
        .await
        .unwrap();
    let csrf = me(&app, &full).await.json::<Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, body) = problem(
        post_with(
            &app,
            "/v1/admin/me/recovery-codes",
            &full,
            Some(&csrf),
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 403);
    slug(&body, "reauth-required");
    let (s, body) = problem(
        post_with(
            &app,
            "/v1/admin/reauth",
            &full,
            Some(&csrf),
            json!({"password": PW, "code": "123"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 403);
    slug(&body, "reauth-failed");
    assert_eq!(audit_count(&a, "reauth.failed").await, 1);
    let r = post_with(
        &app,
        "/v1/admin/reauth",
        &full,
        Some(&csrf),
        json!({"password": PW, "code": codes[1]}),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(audit_count(&a, "reauth.succeeded").await, 1);
    let r = post_with(
        &app,
        "/v1/admin/me/recovery-codes",
        &full,
        Some(&csrf),
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let fresh: Value = r.json().await.unwrap();
    assert_eq!(fresh["recovery_codes"].as_array().unwrap().len(), 10);
    // The old codes are gone.
    let m: Value = me(&app, &full).await.json().await.unwrap();
    assert_eq!(m["recovery_codes_left"], 10);
    let (s, _) = problem(
        post_with(
            &app,
            "/v1/admin/session/second-factor",
            &pending2,
            b["csrf"].as_str(),
            json!({"code": codes[2]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);
    // Three wrong codes in a row lock the account too.
    let (s, _) = problem(
        post_with(
            &app,
            "/v1/admin/session/second-factor",
            &pending2,
            b["csrf"].as_str(),
            json!({"code": codes[3]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(status_of(&a, "adam@a.test").await, "active");
    let (s, body) = problem(
        post_with(
            &app,
            "/v1/admin/session/second-factor",
            &pending2,
            b["csrf"].as_str(),
            json!({"code": codes[4]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 403);
    slug(&body, "account-suspended");
    assert_eq!(status_of(&a, "adam@a.test").await, "suspended");
    assert_eq!(me(&app, &full).await.status(), 401);
});

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_expire_when_idle_and_at_the_absolute_limit() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.admin.session_idle_minutes = 1)
        .await
        .unwrap();
    let a = app.tenant(&app.firm_a).await;
    let adam = set_pw(&a, "adam@a.test", PW).await;
    let (full, _, secret, _) = enrol(&app, "adam@a.test", PW).await;
    assert_eq!(me(&app, &full).await.status(), 200);
    let ago =
        docket::time_fmt::format_utc(time::OffsetDateTime::now_utc() - time::Duration::minutes(2));
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE user_id = $2")
        .bind(&ago)
        .bind(&adam)
        .execute(&a.db)
        .await
        .unwrap();
    assert_eq!(me(&app, &full).await.status(), 401);
    assert_eq!(
        scalar(
            &a,
            "SELECT COUNT(*) FROM sessions WHERE user_id = $1",
            &adam
        )
        .await,
        0
    );

    forget_last_step(&a, &adam).await;
    let (full, _) = full_login(&app, "adam@a.test", PW, &totp::code_at(&secret, now())).await;
    assert_eq!(me(&app, &full).await.status(), 200);
    sqlx::query("UPDATE sessions SET expires_at = $1 WHERE user_id = $2")
        .bind(&ago)
        .bind(&adam)
        .execute(&a.db)
        .await
        .unwrap();
    assert_eq!(me(&app, &full).await.status(), 401);
}

both_backends!(
    suspension_and_admin_end_sessions,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let adam = set_pw(&a, "adam@a.test", PW).await;
        let (full, csrf, secret, _) = enrol(&app, "adam@a.test", PW).await;
        directory::add_user(&a.db, "ann@a.test", "Ann", Role::Admin, "test")
            .await
            .unwrap();
        let ann = admin_token(&a, "ann@a.test").await;
        let api = |method: reqwest::Method, path: String| {
            app.http
                .request(method, format!("{}{}", app.base, path))
                .bearer_auth(&ann)
        };

        let r = api(
            reqwest::Method::GET,
            format!("/v1/admin/users/{adam}/sessions"),
        )
        .send()
        .await
        .unwrap();
        let l: Value = r.json().await.unwrap();
        assert_eq!(l["sessions"].as_array().unwrap().len(), 1);
        assert_eq!(l["sessions"][0]["mfa"], true);
        assert!(
            l["sessions"][0].get("csrf").is_none() && l["sessions"][0].get("id_hash").is_none()
        );

        let r = api(
            reqwest::Method::DELETE,
            format!("/v1/admin/users/{adam}/sessions"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["ended"], 1);
        assert_eq!(me(&app, &full).await.status(), 401);
        assert_eq!(audit_count(&a, "sessions.ended").await, 1);

        // Suspension ends sessions and blocks sign-in until reactivated.
        forget_last_step(&a, &adam).await;
        let (full, _) = full_login(&app, "adam@a.test", PW, &totp::code_at(&secret, now())).await;
        let r = api(
            reqwest::Method::POST,
            format!("/v1/admin/users/{adam}/suspend"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "suspended");
        assert_eq!(me(&app, &full).await.status(), 401);
        assert_eq!(
            scalar(
                &a,
                "SELECT COUNT(*) FROM sessions WHERE user_id = $1",
                &adam
            )
            .await,
            0
        );
        assert_eq!(audit_count(&a, "user.suspended").await, 1);
        let (s, body) = problem(password_login(&app, "adam@a.test", PW).await).await;
        assert_eq!(s, 403);
        slug(&body, "account-suspended");
        // An admin cannot suspend themselves.
        let ann_id = user_id(&a, "ann@a.test").await;
        let (s, body) = problem(
            api(
                reqwest::Method::POST,
                format!("/v1/admin/users/{ann_id}/suspend"),
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(s, 422);
        slug(&body, "cannot-suspend-self");
        let _ = csrf;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csrf_is_required_on_session_changes() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let a = app.tenant(&app.firm_a).await;
    set_pw(&a, "adam@a.test", PW).await;
    let vera = user_id(&a, "vera@a.test").await;

    // Pending session: the sign-in steps check the header themselves.
    let r = password_login(&app, "adam@a.test", PW).await;
    let pending = cookie(&r);
    let b: Value = r.json().await.unwrap();
    for (path, csrf) in [
        ("/v1/admin/session/totp/enrol", None),
        ("/v1/admin/session/totp/enrol", Some("wrong")),
        ("/v1/admin/session/totp/confirm", None),
    ] {
        let (s, body) =
            problem(post_with(&app, path, &pending, csrf, json!({"code": "123456"})).await).await;
        assert_eq!(s, 403, "{path}");
        slug(&body, "csrf");
    }
    let (full, csrf, _, _) = {
        // Finish with the right token.
        let r = post_with(
            &app,
            "/v1/admin/session/totp/enrol",
            &pending,
            b["csrf"].as_str(),
            json!({}),
        )
        .await;
        let e: Value = r.json().await.unwrap();
        let t = totp_rs::TOTP::from_url(e["otpauth_url"].as_str().unwrap()).unwrap();
        let r = post_with(
            &app,
            "/v1/admin/session/totp/confirm",
            &pending,
            b["csrf"].as_str(),
            json!({"code": t.generate(now())}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let c = cookie(&r);
        let v: Value = r.json().await.unwrap();
        (c, v["csrf"].as_str().unwrap().to_string(), (), ())
    };
    // Complete session: the API refuses changes without the header.
    let (s, body) = problem(
        post_with(
            &app,
            &format!("/v1/admin/users/{vera}/suspend"),
            &full,
            None,
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 403);
    slug(&body, "csrf");
    let (s, body) = problem(
        post_with(
            &app,
            "/v1/admin/reauth",
            &full,
            None,
            json!({"password": PW, "code": "1"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 403);
    slug(&body, "csrf");
    assert_eq!(status_of(&a, "vera@a.test").await, "active");

    // Console form posts: a wrong `csrf` field is refused, the right one works.
    let console = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for bad in ["wrong", ""] {
        let r = console
            .post(format!("{}/console/users/{vera}/suspend", app.base))
            .header("cookie", &full)
            .form(&[("csrf", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    assert_eq!(status_of(&a, "vera@a.test").await, "active");
    // Suspending asks first: a page that says what will happen, with the button that does it
    // and a way back; nothing changes until it is confirmed.
    let r = console
        .post(format!("{}/console/users/{vera}/suspend", app.base))
        .header("cookie", &full)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Suspend vera@a.test?"), "{page}");
    assert!(page.contains("name=\"confirm\" value=\"yes\""), "{page}");
    assert!(
        page.contains(&format!("href=\"/console/users/{vera}\">Cancel")),
        "{page}"
    );
    assert_eq!(status_of(&a, "vera@a.test").await, "active");
    let r = console
        .post(format!("{}/console/users/{vera}/suspend", app.base))
        .header("cookie", &full)
        .form(&[("csrf", csrf.as_str()), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        format!("/console/users/{vera}?done=suspended").as_str()
    );
    assert_eq!(status_of(&a, "vera@a.test").await, "suspended");
    let r = console
        .post(format!("{}/console/users/{vera}/reactivate", app.base))
        .header("cookie", &full)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(status_of(&a, "vera@a.test").await, "active");
    // Cross-site form posts are refused outright.
    let r = console
        .post(format!("{}/console/login", app.base))
        .header("origin", "https://evil.example")
        .form(&[("email", "adam@a.test"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_admins_may_sign_in() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let a = app.tenant(&app.firm_a).await;
    let alice = set_pw(&a, "alice@a.test", PW).await;
    let (s, body) = problem(password_login(&app, "alice@a.test", PW).await).await;
    assert_eq!(s, 403);
    slug(&body, "not-an-admin");
    // A wrong password is still the generic answer.
    let (s, body) = problem(password_login(&app, "alice@a.test", "nope nope nope").await).await;
    assert_eq!(s, 401);
    slug(&body, "invalid-credentials");
    assert_eq!(
        scalar(
            &a,
            "SELECT COUNT(*) FROM sessions WHERE user_id = $1",
            &alice
        )
        .await,
        0
    );
    assert_eq!(attempts(&a, "alice@a.test").await[0].1, "not-an-admin");
}

both_backends!(
    imported_bcrypt_hash_is_upgraded_on_login,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let adam = user_id(&a, "adam@a.test").await;
        let legacy = bcrypt::hash("an old password from the previous system", 4).unwrap();
        let mut conn = a.db.acquire().await.unwrap();
        let bad = password::import_hash(&mut conn, &adam, "$1$md5$nope")
            .await
            .unwrap_err();
        assert_eq!(bad.status(), 422);
        password::import_hash(&mut conn, &adam, &legacy)
            .await
            .unwrap();
        drop(conn);
        let stored = |a: std::sync::Arc<Tenant>, id: String| async move {
            sqlx::query("SELECT password_hash FROM local_accounts WHERE user_id = $1")
                .bind(id)
                .fetch_one(&a.db)
                .await
                .unwrap()
                .get::<String, _>(0)
        };
        assert!(stored(a.clone(), adam.clone()).await.starts_with("$2b$"));
        let r = password_login(
            &app,
            "adam@a.test",
            "an old password from the previous system",
        )
        .await;
        assert_eq!(r.status(), 200);
        let h = stored(a.clone(), adam.clone()).await;
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(password::verify("an old password from the previous system", &h).ok);
        let r = password_login(
            &app,
            "adam@a.test",
            "an old password from the previous system",
        )
        .await;
        assert_eq!(r.status(), 200);
    }
);

fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let i = html
        .find(start)
        .unwrap_or_else(|| panic!("{start} in {html}"))
        + start.len();
    let j = html[i..].find(end).unwrap() + i;
    &html[i..j]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_sign_in_with_enrolment_then_second_factor() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let a = app.tenant(&app.firm_a).await;
    set_pw(&a, "adam@a.test", PW).await;
    let web = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |p: &str| format!("{}{}", app.base, p);

    // Not signed in: the console sends us to the login page.
    let r = web.get(url("/console")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    let html = web
        .get(url("/console/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<body class=\"bare\">") && html.contains("<div class=\"login\">"));
    assert!(html.contains("href=\"/console/forgot\"") && html.contains("Forgot password?"));

    let r = web
        .post(url("/console/login"))
        .form(&[("email", "adam@a.test"), ("password", "not it at all")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("class=\"error\"") && html.contains("not correct"),
        "{html}"
    );
    assert!(html.contains("value=\"adam@a.test\""));

    let r = web
        .post(url("/console/login"))
        .form(&[("email", "adam@a.test"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/totp/enrol");
    let pending = cookie(&r);
    // A pending session does not reach console pages.
    let r = web
        .get(url("/console"))
        .header("cookie", &pending)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/console/login/second-factor");

    let html = web
        .get(url("/console/totp/enrol"))
        .header("cookie", &pending)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<img src=\"data:image/svg+xml;base64,"),
        "{html}"
    );
    assert!(html.contains("Authentication code"));
    let secret_b32 = between(&html, "aria-label=\"Secret key\">", "<")
        .trim()
        .to_string();
    let csrf = between(&html, "name=\"csrf\" value=\"", "\"").to_string();
    // The same secret on reload.
    let again = web
        .get(url("/console/totp/enrol"))
        .header("cookie", &pending)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.contains(&secret_b32));
    let secret = totp_rs::Secret::Encoded(secret_b32).to_bytes().unwrap();

    // Wrong csrf on a pending-session form.
    let r = web
        .post(url("/console/totp/enrol"))
        .header("cookie", &pending)
        .form(&[("csrf", "nope"), ("code", &totp::code_at(&secret, now()))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = web
        .post(url("/console/totp/enrol"))
        .header("cookie", &pending)
        .form(&[("csrf", csrf.as_str()), ("code", "000000x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = web
        .post(url("/console/totp/enrol"))
        .header("cookie", &pending)
        .form(&[
            ("csrf", csrf.as_str()),
            ("code", &totp::code_at(&secret, now())),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let full = cookie(&r);
    let html = r.text().await.unwrap();
    assert_eq!(html.matches("<li><code>").count(), 10, "{html}");
    let first_code = between(&html, "<li><code>", "</code>").to_string();
    assert_eq!(
        web.get(url("/console"))
            .header("cookie", &full)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // My security: status, sessions, recovery codes after re-authentication.
    let html = web
        .get(url("/console/security"))
        .header("cookie", &full)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Authenticator app set up") && html.contains("this session"),
        "{html}"
    );
    let csrf = between(&html, "name=\"csrf\" value=\"", "\"").to_string();
    let r = web
        .post(url("/console/security/recovery-codes"))
        .header("cookie", &full)
        .form(&[
            ("csrf", csrf.as_str()),
            ("password", "wrong one here"),
            ("code", "123456"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("not correct"));
    let r = web
        .post(url("/console/security/recovery-codes"))
        .header("cookie", &full)
        .form(&[
            ("csrf", csrf.as_str()),
            ("password", PW),
            ("code", first_code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().matches("<li><code>").count(), 10);

    // Sign out, then in again with the second-factor page.
    let r = web
        .post(url("/console/logout"))
        .header("cookie", &full)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        web.get(url("/console"))
            .header("cookie", &full)
            .send()
            .await
            .unwrap()
            .status(),
        303
    );
    let r = web
        .post(url("/console/login"))
        .form(&[("email", "adam@a.test"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/console/login/second-factor");
    let pending = cookie(&r);
    let html = web
        .get(url("/console/login/second-factor"))
        .header("cookie", &pending)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<label for=\"code\">Authentication code</label>"));
    let csrf = between(&html, "name=\"csrf\" value=\"", "\"").to_string();
    let r = web
        .post(url("/console/login/second-factor"))
        .header("cookie", &pending)
        .form(&[("csrf", csrf.as_str()), ("code", "000000x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = web
        .post(url("/console/login/second-factor"))
        .header("cookie", &pending)
        .form(&[
            ("csrf", csrf.as_str()),
            ("code", &totp::code_at(&secret, now() + 30)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console");
    let full = cookie(&r);
    assert_eq!(
        web.get(url("/console"))
            .header("cookie", &full)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_deployments_get_secure_host_prefixed_cookies() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.admin.secure_cookies = Some(true))
        .await
        .unwrap();
    let t = app.tenant(&app.firm_a).await;
    set_pw(&t, "adam@a.test", PW).await;
    let resp = password_login(&app, "adam@a.test", PW).await;
    assert_eq!(resp.status(), 200);
    let set = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("__Host-docket_session="))
        .expect("a __Host- session cookie");
    for part in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{part} missing: {set}");
    }
    assert!(!set.contains("Domain="), "{set}");
    // HSTS follows secure cookies unless configured otherwise.
    assert!(resp.headers().contains_key("strict-transport-security"));
}

/// How many attempts of `email` were refused for `reason`.
async fn attempts_for(t: &Tenant, email: &str, reason: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM login_attempts WHERE email = $1 AND reason = $2")
        .bind(email)
        .bind(reason)
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

/// A code that is wrong now and in the neighbouring steps.
fn wrong_code(secret: &[u8]) -> String {
    let near: Vec<String> = (0..5)
        .map(|i| totp::code_at(secret, now() + i * 30 - 60))
        .collect();
    (1..)
        .map(|k| totp::code_at(secret, now() - 3600 * k))
        .find(|c| !near.contains(c))
        .unwrap()
}

both_backends!(
    concurrent_wrong_codes_check_no_more_than_three,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        set_pw(&a, "adam@a.test", PW).await;
        let (_, _, secret, _) = enrol(&app, "adam@a.test", PW).await;
        let r = password_login(&app, "adam@a.test", PW).await;
        let pending = cookie(&r);
        let csrf = r.json::<Value>().await.unwrap()["csrf"]
            .as_str()
            .unwrap()
            .to_string();
        let code = wrong_code(&secret);
        let tries = (0..40).map(|_| {
            post_with(
                &app,
                "/v1/admin/session/second-factor",
                &pending,
                Some(&csrf),
                json!({"code": code}),
            )
        });
        let answers = futures::future::join_all(tries).await;
        for r in &answers {
            assert!(
                [401, 403, 429].contains(&r.status().as_u16()),
                "{}",
                r.status()
            );
        }
        assert_eq!(attempts_for(&a, "adam@a.test", "wrong-code").await, 3);
        assert_eq!(status_of(&a, "adam@a.test").await, "suspended");
        assert_eq!(audit_count(&a, "account.locked").await, 1);
    }
);

both_backends!(
    concurrent_wrong_passwords_check_no_more_than_three,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        set_pw(&a, "adam@a.test", PW).await;
        let tries = (0..40).map(|_| password_login(&app, "adam@a.test", "wrong password 7"));
        let answers = futures::future::join_all(tries).await;
        for r in &answers {
            assert!([401, 429].contains(&r.status().as_u16()), "{}", r.status());
        }
        assert_eq!(attempts_for(&a, "adam@a.test", "wrong-password").await, 3);
        assert_eq!(status_of(&a, "adam@a.test").await, "suspended");
        assert_eq!(audit_count(&a, "account.locked").await, 1);
    }
);

/// The console's own session page: `GET` with the cookie, returning (status, html).
async fn console_get(web: &reqwest::Client, app: &TestApp, path: &str, c: &str) -> (u16, String) {
    let r = web
        .get(format!("{}{}", app.base, path))
        .header("cookie", c)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn console_post(
    web: &reqwest::Client,
    app: &TestApp,
    path: &str,
    c: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    web.post(format!("{}{}", app.base, path))
        .header("cookie", c)
        .form(form)
        .send()
        .await
        .unwrap()
}

both_backends!(
    my_security_changes_the_password_and_replaces_the_authenticator,
    |app: TestApp| async move {
        let a = app.tenant(&app.firm_a).await;
        let uid = set_pw(&a, "adam@a.test", PW).await;
        let web = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let (mine, _, old_secret, codes) = enrol(&app, "adam@a.test", PW).await;
        forget_last_step(&a, &uid).await;
        let (other, _) =
            full_login(&app, "adam@a.test", PW, &totp::code_at(&old_secret, now())).await;
        let (s, html) = console_get(&web, &app, "/console/security", &mine).await;
        assert_eq!(s, 200);
        assert!(html.contains("Change password") && html.contains("Replace authenticator"));
        let csrf = between(&html, "name=\"csrf\" value=\"", "\"").to_string();
        const NEW: &str = "Harbour-Violet-Compass-47";
        let change = |current: &'static str, new: &'static str, repeat: &'static str| {
            let (web, app, mine, csrf) = (web.clone(), &app, mine.clone(), csrf.clone());
            async move {
                let form = [
                    ("csrf", csrf.as_str()),
                    ("current_password", current),
                    ("new_password", new),
                    ("repeat_password", repeat),
                ];
                let r = console_post(&web, app, "/console/security/password", &mine, &form).await;
                let s = r.status().as_u16();
                let loc = r
                    .headers()
                    .get("location")
                    .map(|l| l.to_str().unwrap().to_string());
                (s, loc, r.text().await.unwrap())
            }
        };

        // Mistakes in the new password are said before the current one is even checked.
        let (s, _, html) = change(PW, NEW, "Harbour-Violet-Compass-48").await;
        assert_eq!(s, 422);
        assert!(
            html.contains("differ") && html.contains("class=\"error\""),
            "{html}"
        );
        let (s, _, html) = change(PW, "password1", "password1").await;
        assert_eq!(s, 422);
        assert!(html.contains("most commonly used passwords"), "{html}");
        let (s, _, html) = change(PW, PW, PW).await;
        assert_eq!(s, 422);
        assert!(html.contains("the current one"), "{html}");
        assert_eq!(audit_count(&a, "password.change_failed").await, 0);
        // A wrong current password is refused and counts toward the lockout.
        let (s, _, html) = change("not my password at all", NEW, NEW).await;
        assert_eq!(s, 403);
        assert!(html.contains("current password is not correct"), "{html}");
        assert_eq!(audit_count(&a, "password.change_failed").await, 1);
        assert_eq!(
            scalar(
                &a,
                "SELECT failed_logins FROM local_accounts WHERE user_id = $1",
                &uid
            )
            .await,
            1
        );
        assert_eq!(password_login(&app, "adam@a.test", NEW).await.status(), 401);
        // The right one: changed, this session stays, every other one ends.
        let (s, loc, _) = change(PW, NEW, NEW).await;
        assert_eq!(
            (s, loc.as_deref()),
            (303, Some("/console/security?done=password-changed"))
        );
        let (s, html) =
            console_get(&web, &app, "/console/security?done=password-changed", &mine).await;
        assert_eq!(s, 200);
        assert!(html.contains("Password changed"), "{html}");
        assert_eq!(console_get(&web, &app, "/console", &other).await.0, 303);
        assert_eq!(audit_count(&a, "password.changed").await, 1);
        assert_eq!(
            scalar(
                &a,
                "SELECT failed_logins FROM local_accounts WHERE user_id = $1",
                &uid
            )
            .await,
            0
        );
        assert_eq!(password_login(&app, "adam@a.test", PW).await.status(), 401);
        assert_eq!(password_login(&app, "adam@a.test", NEW).await.status(), 200);

        // Replacing the authenticator needs a fresh step-up: age the sign-in.
        sqlx::query("UPDATE sessions SET reauth_at = $1")
            .bind(docket::time_fmt::format_utc(
                time::OffsetDateTime::now_utc() - time::Duration::minutes(6),
            ))
            .execute(&a.db)
            .await
            .unwrap();
        let (s, html) = console_get(&web, &app, "/console/security/authenticator", &mine).await;
        assert_eq!(s, 403);
        assert!(
            html.contains("Confirm it is you") && html.contains("recovery codes"),
            "{html}"
        );
        // The old phone is gone: a recovery code proves it is us.
        let r = console_post(
            &web,
            &app,
            "/console/reauth",
            &mine,
            &[
                ("csrf", csrf.as_str()),
                ("password", NEW),
                ("code", codes[0].as_str()),
                ("next", "/console/security/authenticator"),
            ],
        )
        .await;
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/console/security/authenticator");
        let (s, html) = console_get(&web, &app, "/console/security/authenticator", &mine).await;
        assert_eq!(s, 200, "{html}");
        assert!(html.contains("<img src=\"data:image/svg+xml;base64,"));
        let first = between(&html, "aria-label=\"Secret key\">", "<")
            .trim()
            .to_string();
        // Each visit makes a new key: one seen before (by anyone) is never the one to use.
        let (_, again) = console_get(&web, &app, "/console/security/authenticator", &mine).await;
        let b32 = between(&again, "aria-label=\"Secret key\">", "<")
            .trim()
            .to_string();
        assert_ne!(b32, first);
        let new_secret = totp_rs::Secret::Encoded(b32.clone()).to_bytes().unwrap();
        let stale = totp_rs::Secret::Encoded(first).to_bytes().unwrap();
        assert_ne!(new_secret, old_secret);

        // Until confirmed, the old authenticator still signs in; a wrong code changes nothing.
        let path = "/console/security/authenticator";
        let r = console_post(
            &web,
            &app,
            path,
            &mine,
            &[("csrf", &csrf), ("code", "000000")],
        )
        .await;
        assert_eq!(r.status(), 422);
        assert!(
            r.text().await.unwrap().contains(&b32),
            "the same key after a mistyped code"
        );
        let code = totp::code_at(&stale, now());
        let form = [("csrf", csrf.as_str()), ("code", code.as_str())];
        let r = console_post(&web, &app, path, &mine, &form).await;
        assert_eq!(r.status(), 422, "the key shown first no longer counts");
        assert_eq!(audit_count(&a, "totp.replaced").await, 0);
        forget_last_step(&a, &uid).await;
        full_login(&app, "adam@a.test", NEW, &totp::code_at(&old_secret, now())).await;

        let code = totp::code_at(&new_secret, now());
        let r = console_post(&web, &app, path, &mine, &[("csrf", &csrf), ("code", &code)]).await;
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert!(html.contains("Authenticator replaced"), "{html}");
        assert_eq!(html.matches("<li><code>").count(), 10, "{html}");
        assert_eq!(audit_count(&a, "totp.replaced").await, 1);

        // Now the old app's codes and the old recovery codes are refused, the new app works.
        for old in [totp::code_at(&old_secret, now() + 30), codes[1].clone()] {
            forget_last_step(&a, &uid).await;
            let r = password_login(&app, "adam@a.test", NEW).await;
            let pending = cookie(&r);
            let b: Value = r.json().await.unwrap();
            let r = post_with(
                &app,
                "/v1/admin/session/second-factor",
                &pending,
                b["csrf"].as_str(),
                json!({"code": old}),
            )
            .await;
            assert_eq!(r.status(), 401, "{old}");
        }
        sqlx::query("UPDATE local_accounts SET failed_logins = 0")
            .execute(&a.db)
            .await
            .unwrap();
        forget_last_step(&a, &uid).await;
        full_login(&app, "adam@a.test", NEW, &totp::code_at(&new_secret, now())).await;
        assert!(matches!(
            docket::audit::verify(&a.db).await.unwrap(),
            docket::audit::ChainStatus::Intact { .. }
        ));
    }
);
