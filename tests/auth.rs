#[path = "it/common.rs"]
mod common;
use common::*;

// Authentication, identity binding, roles and tenant isolation: every way a request can try
// to act as someone it is not, or reach another tenant's data, and what it must (not) leave
// behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use docket::dev::TokenIssuer;
use docket::directory::{self, Role};
use docket::tenancy::Tenant;
use serde_json::{json, Value};
use sqlx::Row;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A second RS256 issuer claiming to be Google, whose key is not in the test JWKS.
fn impostor() -> &'static TokenIssuer {
    static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| TokenIssuer::generate(GOOGLE_ISS).expect("RSA key"))
}

/// Another issuer, for the tests that need a kid nobody has seen (kept apart from `impostor`
/// so tests running in parallel do not depend on each other's keys).
fn stranger() -> &'static TokenIssuer {
    static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| TokenIssuer::generate(GOOGLE_ISS).expect("RSA key"))
}

/// A bare RSA signing key that is nobody's.
fn rogue_key() -> &'static jsonwebtoken::EncodingKey {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    static KEY: OnceLock<jsonwebtoken::EncodingKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let k = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        jsonwebtoken::EncodingKey::from_rsa_der(k.to_pkcs1_der().unwrap().as_bytes())
    })
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Valid claims of a Google user ID token for our client id (mutate them to forge).
fn claims(email: &str) -> Value {
    google().user_claims(email, CLIENT_ID, 3600)
}

/// A filing body with a message unique to `tag` (so a wrongly accepted request would write).
fn body(tag: &str, target: &str) -> Value {
    let raw = email(
        &format!("Auth probe {tag}"),
        Some(&format!("<{tag}@probe.test>")),
        &[("probe.pdf", "application/pdf", noise(1500, tag.len() as u8))],
    );
    filing_body(&raw, &[target])
}

/// Everything a request could leave behind in either tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    a: (i64, i64, i64, i64),
    b: (i64, i64, i64, i64),
    blobs_a: usize,
    blobs_b: usize,
}

async fn snapshot(app: &TestApp) -> Snapshot {
    let a = app.tenant(&app.firm_a).await;
    let b = app.tenant(&app.firm_b).await;
    Snapshot {
        a: counts(&a).await,
        b: counts(&b).await,
        blobs_a: blob_files(&a),
        blobs_b: blob_files(&b),
    }
}

/// POST /v1/filings with an arbitrary `Authorization` header value (or none).
async fn post_raw_auth(
    app: &TestApp,
    authorization: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut req = app.http.post(format!("{}/v1/filings", app.base)).json(body);
    if let Some(v) = authorization {
        req = req.header("authorization", v);
    }
    req.send().await.unwrap()
}

/// Asserts a problem+json answer with status `want` (and a Bearer challenge on 401).
async fn expect_problem(resp: reqwest::Response, want: u16, what: &str) -> Value {
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = problem(resp).await;
    assert_eq!(
        status, want,
        "{what}: expected {want}, got {status}: {body}"
    );
    assert_eq!(body["status"], want, "{what}: {body}");
    if want == 401 {
        let c = challenge.unwrap_or_default();
        assert!(
            c.starts_with("Bearer"),
            "{what}: 401 without a Bearer challenge ({c:?})"
        );
    }
    body
}

/// The `auth.rejected` (or other) audit rows of a tenant for one actor.
async fn audit_rows(t: &Tenant, action: &str, actor: &str) -> Vec<(String, String)> {
    sqlx::query(
        "SELECT subject, detail FROM audit_log WHERE action = $1 AND actor = $2 ORDER BY seq",
    )
    .bind(action)
    .bind(actor)
    .fetch_all(&t.db)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
    .collect()
}

async fn binding(t: &Tenant, email: &str) -> (Option<String>, Option<String>) {
    let r = sqlx::query("SELECT google_iss, google_sub FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&t.db)
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

async fn sqlite_app() -> TestApp {
    TestApp::spawn(Backend::Sqlite).await.unwrap()
}

/// `header.payload.` with an empty signature, encoded by hand.
fn unsigned_token(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// The RSA public key of `google()` as PEM (PKCS#1 and SPKI) and as raw modulus bytes: what
/// an attacker would try as an HMAC secret.
fn google_public_key_encodings() -> Vec<(&'static str, Vec<u8>)> {
    use base64::Engine;
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let jwks = google().jwks();
    let dec = |s: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.as_str().unwrap())
            .unwrap()
    };
    let n = dec(&jwks["keys"][0]["n"]);
    let e = dec(&jwks["keys"][0]["e"]);
    let pk = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&n),
        rsa::BigUint::from_bytes_be(&e),
    )
    .unwrap();
    vec![
        (
            "SPKI PEM",
            pk.to_public_key_pem(LineEnding::LF).unwrap().into_bytes(),
        ),
        (
            "PKCS#1 PEM",
            pk.to_pkcs1_pem(LineEnding::LF).unwrap().into_bytes(),
        ),
        ("PKCS#1 DER", pk.to_pkcs1_der().unwrap().as_bytes().to_vec()),
        ("modulus", n),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. Forged, malformed and unacceptable tokens: 401, problem+json, nothing written anywhere.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_and_invalid_tokens_are_rejected_without_side_effects() {
    let app = sqlite_app().await;
    let alice = "alice@a.test";
    let good = claims(alice);
    let kid = google().kid().to_string();

    let mut cases: Vec<(String, Option<String>)> = vec![
        ("no Authorization header".into(), None),
        (
            "Basic scheme".into(),
            Some(format!("Basic {}", b64url(b"alice@a.test:secret"))),
        ),
        (
            "Token scheme carrying a valid ID token".into(),
            Some(format!("Token {}", google().sign(&good))),
        ),
        (
            "valid ID token without any scheme".into(),
            Some(google().sign(&good)),
        ),
        ("Bearer with an empty token".into(), Some("Bearer ".into())),
        ("Bearer garbage".into(), Some("Bearer not.a.jwt".into())),
    ];
    let bearer = |label: &str, tok: String| (label.to_string(), Some(format!("Bearer {tok}")));

    // alg: none, hand-made, with and without Google's kid.
    for alg in ["none", "None", "NONE"] {
        let h = json!({"alg": alg, "typ": "JWT", "kid": kid});
        cases.push(bearer(
            &format!("alg {alg} with kid"),
            unsigned_token(&h, &good),
        ));
    }
    cases.push(bearer(
        "alg none without kid",
        unsigned_token(&json!({"alg": "none", "typ": "JWT"}), &good),
    ));
    // RS256 header but no signature at all.
    cases.push(bearer(
        "RS256 with empty signature",
        unsigned_token(&json!({"alg": "RS256", "typ": "JWT", "kid": kid}), &good),
    ));

    // HS256 keyed with the RSA public key (algorithm confusion).
    for (form, secret) in google_public_key_encodings() {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.clone());
        let tok = jsonwebtoken::encode(&h, &good, &jsonwebtoken::EncodingKey::from_secret(&secret))
            .unwrap();
        cases.push(bearer(
            &format!("HS256 keyed with the public key ({form})"),
            tok,
        ));
    }

    // A genuine signature over different claims: payload swapped after signing.
    {
        let signed = google().sign(&claims("vera@a.test"));
        let parts: Vec<&str> = signed.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64url(good.to_string().as_bytes()),
            parts[2]
        );
        cases.push(bearer("payload swapped under a genuine signature", forged));
    }

    // Signed by a key that is not in Google's JWKS (its kid is unknown).
    cases.push(bearer(
        "unknown kid (other RSA key)",
        impostor().sign(&good),
    ));
    // Google's kid in the header, signed by another RSA key.
    {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some(kid.clone());
        cases.push(bearer(
            "Google's kid, signed by another key",
            jsonwebtoken::encode(&h, &good, rogue_key()).unwrap(),
        ));
    }
    // No kid at all.
    {
        let signed = google().sign(&good);
        let parts: Vec<&str> = signed.split('.').collect();
        let h = b64url(json!({"alg": "RS256", "typ": "JWT"}).to_string().as_bytes());
        cases.push(bearer(
            "RS256 without kid",
            format!("{h}.{}.{}", parts[1], parts[2]),
        ));
    }

    // Correctly signed by Google's key, unacceptable claims.
    let mutated = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        google().sign(&c)
    };
    cases.push(bearer(
        "wrong iss",
        mutated(&|c| c["iss"] = "https://evil.example".into()),
    ));
    cases.push(bearer(
        "iss with Google as a prefix",
        mutated(&|c| c["iss"] = "https://accounts.google.com.evil.example".into()),
    ));
    cases.push(bearer(
        "missing iss",
        mutated(&|c| {
            c.as_object_mut().unwrap().remove("iss");
        }),
    ));
    cases.push(bearer(
        "user token for another client id",
        google().user_token(alice, "another-client.apps.googleusercontent.com", 3600),
    ));
    cases.push(bearer(
        "aud as a list without our client id",
        mutated(&|c| c["aud"] = json!(["another-client.apps.googleusercontent.com"])),
    ));
    cases.push(bearer(
        "missing aud",
        mutated(&|c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
    ));
    cases.push(bearer(
        "expired 10 minutes ago",
        mutated(&|c| {
            c["iat"] = (now() - 4200).into();
            c["exp"] = (now() - 600).into();
        }),
    ));
    cases.push(bearer(
        "expired just beyond the 60 s leeway",
        mutated(&|c| c["exp"] = (now() - 90).into()),
    ));
    cases.push(bearer(
        "exp as a string",
        mutated(&|c| c["exp"] = (now() + 3600).to_string().into()),
    ));
    cases.push(bearer("exp null", mutated(&|c| c["exp"] = Value::Null)));
    cases.push(bearer(
        "missing exp",
        mutated(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
    ));
    cases.push(bearer(
        "not valid before the future",
        mutated(&|c| c["nbf"] = (now() + 600).into()),
    ));
    cases.push(bearer(
        "missing sub",
        mutated(&|c| {
            c.as_object_mut().unwrap().remove("sub");
        }),
    ));
    cases.push(bearer(
        "email_verified false",
        mutated(&|c| c["email_verified"] = false.into()),
    ));
    cases.push(bearer(
        "email_verified \"false\"",
        mutated(&|c| c["email_verified"] = "false".into()),
    ));
    cases.push(bearer(
        "email_verified 1",
        mutated(&|c| c["email_verified"] = 1.into()),
    ));
    cases.push(bearer(
        "email_verified missing",
        mutated(&|c| {
            c.as_object_mut().unwrap().remove("email_verified");
        }),
    ));
    cases.push(bearer(
        "email missing",
        mutated(&|c| {
            c.as_object_mut().unwrap().remove("email");
        }),
    ));

    let before = snapshot(&app).await;
    let a = app.tenant(&app.firm_a).await;
    for (i, (label, auth)) in cases.iter().enumerate() {
        let resp = post_raw_auth(
            &app,
            auth.as_deref(),
            &body(&format!("forgery-{i}"), "matter:M-1"),
        )
        .await;
        expect_problem(resp, 401, label).await;
        // Reads are guarded the same way.
        let mut req = app.http.get(format!("{}/v1/filings", app.base));
        if let Some(v) = auth {
            req = req.header("authorization", v);
        }
        expect_problem(req.send().await.unwrap(), 401, &format!("{label} (GET)")).await;
        assert_eq!(
            snapshot(&app).await,
            before,
            "{label}: a rejected request wrote something"
        );
    }
    // No forgery bound a Google identity to alice.
    assert_eq!(binding(&a, alice).await, (None, None));

    // Control: the unmodified token is accepted and does write (so each case above failed only
    // because of its forgery).
    let resp = app
        .post_filing(&google().sign(&good), &body("control", "matter:M-1"))
        .await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let after = snapshot(&app).await;
    assert_eq!(after.a.1, before.a.1 + 1);
    assert_eq!(after.b, before.b);
    // Expired, but within the 60 s leeway: still accepted.
    let mut c = good.clone();
    c["exp"] = (now() - 20).into();
    assert_eq!(
        app.get(&google().sign(&c), "/v1/filings").await.status(),
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Tenant resolution: `hd`, else an explicit address mapping; never the email's domain alone.

both_backends!(tenant_resolution, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    let b = app.tenant(&app.firm_b).await;

    // A Workspace domain that no tenant owns.
    let before = snapshot(&app).await;
    let resp = app
        .post_filing(
            &app.token("carol@c.test"),
            &body("hd-unknown", "matter:M-1"),
        )
        .await;
    expect_problem(resp, 403, "hd of no tenant").await;
    assert_eq!(
        snapshot(&app).await,
        before,
        "hd of no tenant wrote something"
    );

    // No `hd` (a consumer account), address not mapped.
    let pat = "pat@gmail.com";
    assert!(claims(pat).get("hd").is_none());
    let resp = app
        .post_filing(&app.token(pat), &body("no-hd", "matter:M-1"))
        .await;
    expect_problem(resp, 403, "no hd, unmapped address").await;
    // No `hd` but an address at a tenant's domain (a consumer Google account can carry any
    // verified address): the domain of the email alone must not pick the tenant.
    let mut c = claims("alice@a.test");
    c.as_object_mut().unwrap().remove("hd");
    let resp = app
        .post_filing(&google().sign(&c), &body("no-hd-alice", "matter:M-1"))
        .await;
    expect_problem(resp, 403, "no hd, address at a tenant's domain").await;
    assert_eq!(
        snapshot(&app).await,
        before,
        "unmapped accounts wrote something"
    );
    assert_eq!(
        binding(&a, "alice@a.test").await,
        (None, None),
        "a consumer account bound itself to alice"
    );

    // A Workspace account of Firm A's domain that is not a registered user: 403 and an
    // `auth.rejected` entry in Firm A's audit log, nothing else.
    let resp = app
        .post_filing(
            &app.token("mallory@a.test"),
            &body("unregistered", "matter:M-1"),
        )
        .await;
    expect_problem(resp, 403, "unregistered user").await;
    let after = snapshot(&app).await;
    assert_eq!(
        (after.a.0, after.a.1, after.a.3),
        (before.a.0, before.a.1, before.a.3)
    );
    assert_eq!(after.a.2, before.a.2 + 1, "exactly one audit entry");
    assert_eq!(
        (after.b, after.blobs_a, after.blobs_b),
        (before.b, before.blobs_a, before.blobs_b)
    );
    let rows = audit_rows(&a, "auth.rejected", "mallory@a.test").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, claims("mallory@a.test")["sub"].as_str().unwrap());
    assert!(rows[0].1.contains("not a registered user"), "{rows:?}");
    assert!(audit_rows(&b, "auth.rejected", "mallory@a.test")
        .await
        .is_empty());

    // Map the consumer address to Firm A: still 403 (and audited) until it is a user there...
    app.state
        .catalog
        .map_address(&app.firm_a.id, pat)
        .await
        .unwrap();
    let resp = app.get(&app.token(pat), "/v1/filings").await;
    expect_problem(resp, 403, "mapped but not a user").await;
    assert_eq!(audit_rows(&a, "auth.rejected", pat).await.len(), 1);
    // ...then accepted, in Firm A, without any `hd`.
    directory::add_user(&a.db, pat, "Pat", Role::Filer, "test")
        .await
        .unwrap();
    let tok = app.token(pat);
    assert_eq!(app.get(&tok, "/v1/filings").await.status(), 200);
    let before = snapshot(&app).await;
    let resp = app.post_filing(&tok, &body("mapped", "contract:K-1")).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["filings"][0]["filed_by"], pat);
    assert_eq!(v["filings"][0]["target"]["title"], "Globex MSA");
    let after = snapshot(&app).await;
    assert_eq!(after.a.1, before.a.1 + 1);
    assert_eq!(after.b, before.b);
    assert_eq!(
        binding(&a, pat).await.1.as_deref(),
        claims(pat)["sub"].as_str()
    );
});

// ---------------------------------------------------------------------------------------------
// 2. The JWKS cache.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwks_is_fetched_once_and_cached_per_max_age() {
    let app = sqlite_app().await;
    assert_eq!(
        app.jwks.fetches.load(Ordering::SeqCst),
        0,
        "no fetch before the first token"
    );
    // A burst of concurrent first requests: one fetch (single flight).
    let toks: Vec<String> = ["alice@a.test", "adam@a.test", "vera@a.test", "bob@b.test"]
        .iter()
        .map(|e| app.token(e))
        .collect();
    let burst = (0..12).map(|i| app.get(&toks[i % toks.len()], "/v1/filings"));
    for resp in futures::future::join_all(burst).await {
        let status = resp.status();
        assert_eq!(status, 200, "{}", resp.text().await.unwrap());
    }
    assert_eq!(
        app.jwks.fetches.load(Ordering::SeqCst),
        1,
        "concurrent first requests fetched more than once"
    );
    // Then many sequential requests, fresh tokens each time: still that one fetch.
    for i in 0..30 {
        let tok = app.token(["alice@a.test", "bob@b.test", "vera@a.test"][i % 3]);
        assert_eq!(app.get(&tok, "/v1/filings").await.status(), 200);
    }
    assert_eq!(
        app.jwks.fetches.load(Ordering::SeqCst),
        1,
        "the key set was not cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kid_refetches_rotated_keys_but_rate_limited() {
    let app = sqlite_app().await;
    let fetches = || app.jwks.fetches.load(Ordering::SeqCst);
    assert_eq!(
        app.get(&app.token("alice@a.test"), "/v1/filings")
            .await
            .status(),
        200
    );
    assert_eq!(fetches(), 1);
    let fetched_at = std::time::Instant::now();

    // Google rotates: the JWKS now also holds a new key.
    let mut keys = google().jwks();
    keys["keys"]
        .as_array_mut()
        .unwrap()
        .push(impostor().jwks()["keys"][0].clone());
    *app.jwks.keys.lock().unwrap() = keys;
    let rotated = impostor().user_token("alice@a.test", CLIENT_ID, 3600);

    // Within MIN_REFETCH (10 s) of the last fetch an unknown kid does not refetch.
    let before = snapshot(&app).await;
    for _ in 0..3 {
        let resp = app
            .post_filing(&rotated, &body("rotated-early", "matter:M-1"))
            .await;
        expect_problem(resp, 401, "unknown kid within MIN_REFETCH").await;
    }
    assert_eq!(
        fetches(),
        1,
        "unknown kids must not hammer the JWKS endpoint"
    );
    assert_eq!(snapshot(&app).await, before);

    // Afterwards, one unknown-kid burst causes exactly one refetch, which finds the new key.
    let wait = Duration::from_millis(10_500).saturating_sub(fetched_at.elapsed());
    tokio::time::sleep(wait).await;
    let burst = (0..8).map(|_| app.get(&rotated, "/v1/filings"));
    for resp in futures::future::join_all(burst).await {
        assert_eq!(resp.status(), 200, "token of the rotated-in key");
    }
    assert_eq!(
        fetches(),
        2,
        "an unknown kid should refetch once (single flight)"
    );
    // Both keys now verify, with no further fetches.
    assert_eq!(
        app.get(&app.token("bob@b.test"), "/v1/filings")
            .await
            .status(),
        200
    );
    let resp = app
        .post_filing(&rotated, &body("rotated-late", "matter:M-1"))
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwks_outage_keeps_the_last_good_key_set() {
    let app = sqlite_app().await;
    let fetches = || app.jwks.fetches.load(Ordering::SeqCst);
    assert_eq!(
        app.get(&app.token("alice@a.test"), "/v1/filings")
            .await
            .status(),
        200
    );
    assert_eq!(fetches(), 1);
    let fetched_at = std::time::Instant::now();
    app.jwks.fail.store(true, Ordering::SeqCst);
    assert_eq!(
        app.get(&app.token("bob@b.test"), "/v1/filings")
            .await
            .status(),
        200
    );

    // Force a refetch (an unknown kid, past MIN_REFETCH): it fails...
    tokio::time::sleep(Duration::from_millis(10_500).saturating_sub(fetched_at.elapsed())).await;
    let before = snapshot(&app).await;
    let resp = app
        .post_filing(
            &stranger().user_token("alice@a.test", CLIENT_ID, 3600),
            &body("outage", "matter:M-1"),
        )
        .await;
    let b = expect_problem(resp, 503, "unknown kid while the JWKS is down").await;
    assert_eq!(b["type"], "urn:docket:problem:keys-unavailable");
    assert_eq!(
        fetches(),
        2,
        "the unknown kid should have attempted a refetch"
    );
    assert_eq!(snapshot(&app).await, before);

    // ...and the failed fetch did not discard the good set: known-kid tokens still verify.
    for e in ["alice@a.test", "bob@b.test", "vera@a.test"] {
        assert_eq!(
            app.get(&app.token(e), "/v1/filings").await.status(),
            200,
            "{e} after a failed fetch"
        );
    }
    let resp = app
        .post_filing(
            &app.token("alice@a.test"),
            &body("during-outage", "matter:M-1"),
        )
        .await;
    assert_eq!(resp.status(), 201);
    // Forged tokens are still refused while the endpoint is down.
    let resp = app
        .post_filing(
            &stranger().user_token("alice@a.test", CLIENT_ID, 3600),
            &body("outage-2", "matter:M-1"),
        )
        .await;
    assert!(
        matches!(resp.status().as_u16(), 401 | 503),
        "{}",
        resp.status()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Identity binding: the Google identity is iss+sub; the email alone is not enough.

both_backends!(identity_binding, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    let alice = "alice@a.test";
    let sub = claims(alice)["sub"].as_str().unwrap().to_string();
    assert_eq!(binding(&a, alice).await, (None, None));

    // First sign-in binds iss+sub.
    assert_eq!(
        app.get(&app.token(alice), "/v1/filings").await.status(),
        200
    );
    assert_eq!(
        binding(&a, alice).await,
        (Some(GOOGLE_ISS.to_string()), Some(sub.clone()))
    );

    // Another Google account asserting the same (verified) email: refused, audited.
    let mut c = claims(alice);
    c["sub"] = "109876543210987654321".into();
    let before = snapshot(&app).await;
    let resp = app
        .post_filing(&google().sign(&c), &body("other-sub", "matter:M-1"))
        .await;
    expect_problem(resp, 403, "same email, different sub").await;
    let resp = app.get(&google().sign(&c), "/v1/filings").await;
    expect_problem(resp, 403, "same email, different sub (GET)").await;
    let after = snapshot(&app).await;
    assert_eq!(
        (after.a.0, after.a.1, after.a.3),
        (before.a.0, before.a.1, before.a.3)
    );
    assert_eq!(
        after.a.2,
        before.a.2 + 2,
        "one auth.rejected entry per refused request"
    );
    assert_eq!((after.blobs_a, after.b), (before.blobs_a, before.b));
    let rows = audit_rows(&a, "auth.rejected", alice).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "109876543210987654321");
    assert!(
        rows[0].1.contains("bound to another Google account"),
        "{rows:?}"
    );
    // The binding did not move.
    assert_eq!(
        binding(&a, alice).await,
        (Some(GOOGLE_ISS.to_string()), Some(sub.clone()))
    );

    // The bound account keeps working, and Google's other spelling of its issuer
    // ("accounts.google.com", accepted by the verifier) is the same identity.
    assert_eq!(
        app.get(&app.token(alice), "/v1/filings").await.status(),
        200
    );
    let mut c = claims(alice);
    c["iss"] = "accounts.google.com".into();
    assert_eq!(
        app.get(&google().sign(&c), "/v1/filings").await.status(),
        200,
        "iss without https://"
    );
    assert_eq!(
        binding(&a, alice).await,
        (Some(GOOGLE_ISS.to_string()), Some(sub.clone()))
    );
    // A token whose sub is new but whose issuer is the short spelling is still another account.
    c["sub"] = "109876543210987654321".into();
    expect_problem(
        app.get(&google().sign(&c), "/v1/filings").await,
        403,
        "other sub, short iss",
    )
    .await;
});

// Concurrent first sign-ins: the same account racing itself is always accepted (never
// "registered to a different Google account"); two accounts racing for one unbound email never
// both get in, and the one that got in is the one bound.
both_backends!(concurrent_first_sign_in, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    for i in 0..6 {
        let e = format!("same{i}@a.test");
        directory::add_user(&a.db, &e, "", Role::Filer, "test")
            .await
            .unwrap();
        let tok = app.token(&e);
        let burst = (0..6).map(|_| app.get(&tok, "/v1/filings"));
        for resp in futures::future::join_all(burst).await {
            let status = resp.status();
            assert_eq!(status, 200, "{e}: {}", resp.text().await.unwrap());
        }
        assert!(
            audit_rows(&a, "auth.rejected", &e).await.is_empty(),
            "{e}: spurious auth.rejected"
        );
        assert_eq!(
            binding(&a, &e).await.1.as_deref(),
            claims(&e)["sub"].as_str()
        );
    }
    for i in 0..6 {
        let e = format!("contested{i}@a.test");
        directory::add_user(&a.db, &e, "", Role::Filer, "test")
            .await
            .unwrap();
        // Two Google accounts (sub is the identity; distinct per email here).
        let subs = [
            format!("1000000000000000000{i}"),
            format!("2000000000000000000{i}"),
        ];
        let toks: Vec<String> = subs
            .iter()
            .map(|s| {
                let mut c = claims(&e);
                c["sub"] = s.as_str().into();
                google().sign(&c)
            })
            .collect();
        let app = &app;
        let burst = (0..8).map(|j| {
            let tok = toks[j % 2].clone();
            async move { (j % 2, app.get(&tok, "/v1/filings").await.status().as_u16()) }
        });
        let results = futures::future::join_all(burst).await;
        let winners: BTreeSet<usize> = results
            .iter()
            .filter(|(_, s)| *s == 200)
            .map(|(w, _)| *w)
            .collect();
        assert!(
            results.iter().all(|(_, s)| *s == 200 || *s == 403),
            "{e}: {results:?}"
        );
        assert_eq!(
            winners.len(),
            1,
            "{e}: accounts let in: {winners:?} ({results:?})"
        );
        let bound = binding(&a, &e).await.1.unwrap();
        assert_eq!(
            bound,
            subs[*winners.iter().next().unwrap()],
            "{e}: a request was let in for an account that is not the bound one"
        );
    }
});

// ---------------------------------------------------------------------------------------------
// 4. Roles.

both_backends!(viewer_may_read_but_not_file, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    let raw = email(
        "Viewer visibility",
        Some("<viewer-1@acme.com>"),
        &[("v.pdf", "application/pdf", noise(900, 3))],
    );
    let resp = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(&raw, &["matter:M-1"]),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["filings"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let vera = app.token("vera@a.test");
    let before = snapshot(&app).await;
    let resp = app
        .post_filing(&vera, &body("viewer-files", "matter:M-1"))
        .await;
    expect_problem(resp, 403, "viewer filing").await;
    // Nor a message already stored, to another record.
    let resp = app
        .post_filing(&vera, &filing_body(&raw, &["case:C-1"]))
        .await;
    expect_problem(resp, 403, "viewer filing a known message").await;
    let after = snapshot(&app).await;
    assert_eq!(
        (after.a.0, after.a.1, after.a.3),
        (before.a.0, before.a.1, before.a.3),
        "viewer wrote data"
    );
    assert_eq!(
        after.a.2,
        before.a.2 + 2,
        "one filing.denied entry per attempt"
    );
    assert_eq!(
        (after.blobs_a, after.b, after.blobs_b),
        (before.blobs_a, before.b, before.blobs_b)
    );
    let denied = audit_rows(&a, "filing.denied", "vera@a.test").await;
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(denied[0].1.contains("viewer"), "{denied:?}");

    // Reading is allowed.
    let resp = app.get(&vera, "/v1/filings").await;
    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list["filings"].as_array().unwrap().len(), 1);
    assert_eq!(list["filings"][0]["id"], id.as_str());
    let resp = app.get(&vera, "/v1/filings?target=matter:M-1").await;
    assert_eq!(
        resp.json::<Value>().await.unwrap()["filings"][0]["id"],
        id.as_str()
    );
    assert_eq!(
        app.get(&vera, &format!("/v1/filings/{id}")).await.status(),
        200
    );
    let got = app
        .get(&vera, &format!("/v1/filings/{id}/raw"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], &raw[..]);
    assert_eq!(
        app.get(&vera, &format!("/v1/filings/{id}/attachments/0"))
            .await
            .status(),
        200
    );
});

// ---------------------------------------------------------------------------------------------
// 5. Cross-tenant isolation.

fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    fn walk(p: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, &mut out);
    out
}

/// Blob ids a tenant's database refers to (raw messages and stored attachments).
async fn referenced_blobs(t: &Tenant) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for sql in [
        "SELECT raw_sha256 FROM messages",
        "SELECT sha256 FROM message_attachments",
    ] {
        for r in sqlx::query(sql).fetch_all(&t.db).await.unwrap() {
            out.insert(r.get::<String, _>(0));
        }
    }
    out
}

both_backends!(cross_tenant_isolation, |app: TestApp| async move {
    let a = app.tenant(&app.firm_a).await;
    let b = app.tenant(&app.firm_b).await;
    let (root_a, root_b) = (a.blobs.root().to_path_buf(), b.blobs.root().to_path_buf());
    assert_ne!(root_a, root_b);
    assert!(
        !root_a.starts_with(&root_b) && !root_b.starts_with(&root_a),
        "{root_a:?} / {root_b:?}"
    );

    let secret_subject = "Privileged XYZZY settlement terms";
    let secret_attachment = "xyzzy-terms.pdf";
    let raw_a = email(
        secret_subject,
        Some("<xyzzy-1@acme.com>"),
        &[(secret_attachment, "application/pdf", noise(4000, 11))],
    );
    let alice = app.token("alice@a.test");
    let resp = app
        .post_filing(&alice, &filing_body(&raw_a, &["matter:M-1"]))
        .await;
    assert_eq!(resp.status(), 201);
    let filed: Value = resp.json().await.unwrap();
    let id_a = filed["filings"][0]["id"].as_str().unwrap().to_string();
    let raw_sha_a = filed["filings"][0]["message"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(filed["filings"][0]["target"]["title"], "Acme v. Widget");
    // Controls: alice can read all of it.
    assert_eq!(
        app.get(&alice, &format!("/v1/filings/{id_a}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        &app.get(&alice, &format!("/v1/filings/{id_a}/raw"))
            .await
            .bytes()
            .await
            .unwrap()[..],
        &raw_a[..]
    );
    assert_eq!(
        app.get(&alice, &format!("/v1/filings/{id_a}/attachments/0"))
            .await
            .status(),
        200
    );

    // Bob (Firm B) learns nothing about A's filing: the same 404 as for a filing that never
    // existed, without any of its content.
    let bob = app.token("bob@b.test");
    let before = snapshot(&app).await;
    let leaks = [
        secret_subject,
        "XYZZY",
        secret_attachment,
        "Please see attached",
        "dana@acme.com",
        "Acme v. Widget",
        raw_sha_a.as_str(),
    ];
    let nonexistent = "0123456789abcdef0123456789abcdef";
    for path in [
        format!("/v1/filings/{id_a}"),
        format!("/v1/filings/{id_a}/raw"),
        format!("/v1/filings/{id_a}/attachments/0"),
    ] {
        let resp = app.get(&bob, &path).await;
        let body = expect_problem(resp, 404, &format!("bob GET {path}")).await;
        let text = body.to_string();
        for leak in leaks {
            assert!(
                !text.contains(leak),
                "bob GET {path} leaked {leak:?}: {text}"
            );
        }
        // Indistinguishable from a filing that does not exist anywhere.
        let ghost = app.get(&bob, &path.replace(&id_a, nonexistent)).await;
        let ghost = expect_problem(ghost, 404, "nonexistent").await;
        assert_eq!(
            body, ghost,
            "A's filing id is distinguishable from a nonexistent one for bob"
        );
    }
    for q in [
        "/v1/filings?target=matter:M-1",
        "/v1/filings",
        "/v1/filings?target=case:C-1",
    ] {
        let resp = app.get(&bob, q).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["filings"],
            json!([]),
            "bob's {q} shows A's filings: {text}"
        );
        for leak in leaks {
            assert!(!text.contains(leak), "bob {q} leaked {leak:?}");
        }
    }

    // Filing to a record only A has: 404, nothing written in either tenant (even alongside a
    // valid target of B's).
    for targets in [
        &["case:C-1"][..],
        &["contract:K-1"][..],
        &["matter:B-9", "case:C-1"][..],
    ] {
        let raw = email(
            "Bob probes A's records",
            Some("<probe-b@b.test>"),
            &[("p.pdf", "application/pdf", noise(700, 5))],
        );
        let resp = app.post_filing(&bob, &filing_body(&raw, targets)).await;
        let body = expect_problem(resp, 404, &format!("bob files to {targets:?}")).await;
        assert!(!body.to_string().contains("Smith v. Jones"), "{body}");
    }
    // Nor can bob file A's message (same bytes) into A's record.
    let resp = app
        .post_filing(&bob, &filing_body(&raw_a, &["case:C-1"]))
        .await;
    expect_problem(resp, 404, "bob files A's message to A's record").await;
    assert_eq!(
        snapshot(&app).await,
        before,
        "a cross-tenant attempt wrote something"
    );

    // matter:M-1 exists in both: bob's filing goes into B's own M-1.
    let raw_b = email(
        "Initech kickoff",
        Some("<initech-1@b.test>"),
        &[("kickoff.pdf", "application/pdf", noise(2500, 42))],
    );
    let resp = app
        .post_filing(&bob, &filing_body(&raw_b, &["matter:M-1"]))
        .await;
    assert_eq!(resp.status(), 201);
    let filed_b: Value = resp.json().await.unwrap();
    let id_b = filed_b["filings"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(filed_b["filings"][0]["target"]["title"], "B's own M-1");
    let after = snapshot(&app).await;
    assert_eq!(
        (after.a, after.blobs_a),
        (before.a, before.blobs_a),
        "bob's filing touched Firm A"
    );
    assert_eq!(after.b.1, before.b.1 + 1);
    assert!(after.blobs_b > before.blobs_b);
    // Each side sees only its own M-1 filing.
    let la: Value = app
        .get(&alice, "/v1/filings?target=matter:M-1")
        .await
        .json()
        .await
        .unwrap();
    let lb: Value = app
        .get(&bob, "/v1/filings?target=matter:M-1")
        .await
        .json()
        .await
        .unwrap();
    let ids = |v: &Value| {
        v["filings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&la), vec![id_a.clone()]);
    assert_eq!(ids(&lb), vec![id_b.clone()]);
    expect_problem(
        app.get(&alice, &format!("/v1/filings/{id_b}")).await,
        404,
        "alice GET B's filing",
    )
    .await;
    expect_problem(
        app.get(&alice, &format!("/v1/filings/{id_b}/raw")).await,
        404,
        "alice GET B's raw",
    )
    .await;

    // Blob files: each tenant's root holds exactly the blobs its own database refers to.
    let refs_a = referenced_blobs(&a).await;
    let refs_b = referenced_blobs(&b).await;
    assert!(refs_a.contains(&raw_sha_a));
    assert!(refs_a.is_disjoint(&refs_b));
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().to_string();
    let files_a = files_under(&root_a);
    let files_b = files_under(&root_b);
    assert_eq!(
        files_a.iter().map(name).collect::<BTreeSet<_>>(),
        refs_a,
        "A's blob root"
    );
    assert_eq!(
        files_b.iter().map(name).collect::<BTreeSet<_>>(),
        refs_b,
        "B's blob root"
    );
    assert!(files_a.iter().all(|p| p.starts_with(&root_a)));
    assert!(files_b.iter().all(|p| p.starts_with(&root_b)));
    assert!(
        !b.blobs.exists(&raw_sha_a).unwrap(),
        "A's message is in B's blob store"
    );
    // And A's content is not readable as plaintext from any file of B (or of A).
    for p in files_a.iter().chain(files_b.iter()) {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            !bytes.windows(5).any(|w| w == b"XYZZY"),
            "{p:?} holds plaintext"
        );
    }
});

// ---------------------------------------------------------------------------------------------
// 6. PostgreSQL: each tenant's role reaches only its own database.

fn pg_url_as(role: &str, db: &str) -> String {
    let base = std::env::var("DOCKET_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut u = url::Url::parse(&base).unwrap();
    u.set_username(role).unwrap();
    u.set_password(None).unwrap();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

fn is_permission_error(e: &sqlx::Error) -> bool {
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string());
    let text = e.to_string();
    code.as_deref() == Some("42501")
        || text.contains("permission denied")
        || text.contains("CONNECT privilege")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_tenant_roles_cannot_cross_databases() {
    use sqlx::postgres::PgConnection;
    use sqlx::Connection;
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    if app.backend != Backend::Postgres {
        return;
    }
    let rows = sqlx::query("SELECT id, db_name FROM tenants")
        .fetch_all(app.state.catalog.pool())
        .await
        .unwrap();
    let db_of = |id: &str| -> String {
        rows.iter()
            .find(|r| r.get::<String, _>("id") == id)
            .and_then(|r| r.get::<Option<String>, _>("db_name"))
            .unwrap_or_else(|| panic!("tenant {id} has no database name"))
    };
    let (db_a, db_b) = (db_of(&app.firm_a.id), db_of(&app.firm_b.id));
    assert_ne!(db_a, db_b);
    let catalog_db = app.pg.as_ref().unwrap().catalog_name.clone();

    for (own, other) in [(&db_a, &db_b), (&db_b, &db_a)] {
        // Its own database: reachable, and it is the tenant's data.
        let mut c = PgConnection::connect(&pg_url_as(own, own))
            .await
            .unwrap_or_else(|e| panic!("role {own} cannot reach its own database: {e}"));
        let users: i64 = sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get(0);
        assert!(users >= 1);
        c.close().await.unwrap();

        // The other tenant's database: refused by PostgreSQL itself (trust auth, so this is
        // the missing CONNECT privilege, not the password).
        match PgConnection::connect(&pg_url_as(own, other)).await {
            Ok(c) => {
                let _ = c.close().await;
                panic!("role {own} connected to {other}");
            }
            Err(e) => assert!(
                is_permission_error(&e),
                "role {own} → {other}: unexpected error {e}"
            ),
        }

        // Nor can it read the catalogue (wrapped data keys and database passwords).
        if let Ok(mut c) = PgConnection::connect(&pg_url_as(own, &catalog_db)).await {
            let r = sqlx::query("SELECT id, db_password_enc, dek_enc FROM tenants")
                .fetch_all(&mut c)
                .await;
            match r {
                Ok(rows) => panic!("role {own} read {} catalogue rows", rows.len()),
                Err(e) => assert!(
                    is_permission_error(&e),
                    "role {own} reading the catalogue: {e}"
                ),
            }
            c.close().await.unwrap();
        }
    }
}
