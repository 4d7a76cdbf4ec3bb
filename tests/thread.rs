//! "File whole thread": docket reads the thread through a service account with domain-wide
//! delegation (yup-oauth2's JWT-bearer flow against a fake token endpoint, google-gmail1's
//! threads.get against a fake Gmail API) and files every message idempotently.

#[path = "it/common.rs"]
mod common;
use common::*;

use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Json;
use base64::Engine;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

const SA_EMAIL: &str = "docket-delegation@firm-a.iam.gserviceaccount.com";
const ADDON_SA: &str = "service-42@gcp-sa-gsuiteaddons.iam.gserviceaccount.com";
const ADDON_CLIENT: &str = "addon-client.apps.googleusercontent.com";
const THREAD_DEC: u64 = 1_659_728_385_805_497_000;

#[derive(Default)]
struct Seen {
    assertions: Vec<Value>,
    gmail_auth: Vec<String>,
    paths: Vec<String>,
}

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Seen>>,
    key_n: String,
    key_e: String,
    token_uri: Arc<Mutex<String>>,
    messages: Arc<Vec<(String, Vec<u8>)>>,
}

async fn token(
    State(f): State<Fake>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    // The assertion must be signed with the service account's key, for the token endpoint.
    // yup-oauth2 pads its JWT segments (Google accepts that), so check it by hand.
    let assertion = &form["assertion"];
    let (signed, signature) = assertion.rsplit_once('.').unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_components(&f.key_n, &f.key_e).unwrap();
    let ok = jsonwebtoken::crypto::verify(
        signature.trim_end_matches('='),
        signed.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::RS256,
    )
    .unwrap();
    assert!(ok, "assertion signature");
    let payload = signed.split('.').nth(1).unwrap().trim_end_matches('=');
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], *f.token_uri.lock().unwrap());
    assert!(claims["exp"].as_u64().unwrap() > jsonwebtoken::get_current_timestamp());
    let sub = claims["sub"].as_str().unwrap().to_string();
    f.seen.lock().unwrap().assertions.push(claims);
    Json(
        json!({ "access_token": format!("delegated-{sub}"), "token_type": "Bearer", "expires_in": 3600 }),
    )
}

async fn thread(State(f): State<Fake>, Path(id): Path<String>, headers: HeaderMap) -> Json<Value> {
    let mut seen = f.seen.lock().unwrap();
    seen.paths.push(format!("threads/{id}"));
    seen.gmail_auth
        .push(headers["authorization"].to_str().unwrap().to_string());
    let msgs: Vec<Value> = f
        .messages
        .iter()
        .map(|(id, _)| json!({ "id": id, "threadId": format!("{THREAD_DEC:x}") }))
        .collect();
    Json(json!({ "id": id, "messages": msgs }))
}

#[derive(serde::Deserialize)]
struct Fmt {
    format: String,
}

async fn message(
    State(f): State<Fake>,
    Path(id): Path<String>,
    Query(q): Query<Fmt>,
    headers: HeaderMap,
) -> Json<Value> {
    assert_eq!(q.format, "raw");
    let mut seen = f.seen.lock().unwrap();
    seen.paths.push(format!("messages/{id}"));
    seen.gmail_auth
        .push(headers["authorization"].to_str().unwrap().to_string());
    let raw = &f
        .messages
        .iter()
        .find(|(m, _)| *m == id)
        // The open message (asked for by the add-on's message trigger) is the thread's first.
        .unwrap_or(&f.messages[0])
        .1;
    // Unpadded, as some Gmail responses are.
    Json(
        json!({ "id": id, "threadId": format!("{THREAD_DEC:x}"), "raw": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw) }),
    )
}

fn system_token(path: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    google().sign(&json!({
        "iss": GOOGLE_ISS, "aud": format!("https://docket.test{path}"), "sub": "system",
        "email": ADDON_SA, "email_verified": true, "iat": now, "exp": now + 600,
    }))
}

fn event(op: &str, targets: &[&str]) -> Value {
    json!({
        "commonEventObject": {
            "hostApp": "GMAIL", "platform": "WEB",
            "formInputs": { "targets": { "stringInputs": { "value": targets } } },
            "parameters": { "op": op },
        },
        "authorizationEventObject": {
            "userOAuthToken": "ya29.user", "systemIdToken": "unused",
            "userIdToken": google().sign(&google().user_claims("alice@a.test", ADDON_CLIENT, 600)),
            "authorizedScopes": [
                "https://www.googleapis.com/auth/gmail.addons.execute",
                "https://www.googleapis.com/auth/gmail.addons.current.message.readonly",
                "https://www.googleapis.com/auth/userinfo.email",
            ],
        },
        "gmail": { "messageId": "msg-f:1659728385805497001", "threadId": format!("thread-f:{THREAD_DEC}"), "accessToken": "msg-token" },
    })
}

/// The fake token endpoint and Gmail API on loopback, serving `messages` as one thread, and
/// docket pointed at them (`configure` adjusts the rest). Returns the fake, its base URL and
/// the app.
async fn start(
    sa_key: &rsa::RsaPrivateKey,
    messages: Arc<Vec<(String, Vec<u8>)>>,
    configure: impl FnOnce(&mut docket::config::Config) + Send + 'static,
) -> (Fake, String, TestApp) {
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let fake = Fake {
        seen: Default::default(),
        key_n: b64(sa_key.n().to_bytes_be()),
        key_e: b64(sa_key.e().to_bytes_be()),
        token_uri: Default::default(),
        messages,
    };
    let router = axum::Router::new()
        .route("/token", post(token))
        .route("/gmail/v1/users/me/threads/{id}", get(thread))
        .route("/gmail/v1/users/me/messages/{id}", get(message))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    *fake.token_uri.lock().unwrap() = format!("{base}token");
    let gmail_base = base.clone();
    let app = TestApp::spawn_with(Backend::Sqlite, move |c| {
        c.addon.public_url = Some("https://docket.test".into());
        c.addon.service_account = Some(ADDON_SA.into());
        c.addon.oauth_client_id = Some(ADDON_CLIENT.into());
        c.addon.gmail_api_url = gmail_base;
        configure(c);
    })
    .await
    .unwrap();
    (fake, base, app)
}

/// The service account's key file, as an admin would upload it.
fn key_json(sa_key: &rsa::RsaPrivateKey, base: &str) -> String {
    json!({
        "type": "service_account", "project_id": "firm-a", "private_key_id": "k1",
        "private_key": sa_key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        "client_email": SA_EMAIL, "client_id": "1", "token_uri": format!("{base}token"),
    })
    .to_string()
}

/// An add-on event posted as Google posts it; the card JSON (always HTTP 200).
async fn add_on_post(app: &TestApp, path: &'static str, body: Value) -> Value {
    let r = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(system_token(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_thread_is_filed_through_delegation_and_idempotently() {
    // The service account's key, generated here.
    let sa_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let messages = Arc::new(vec![
        (
            "18c0000000000001".to_string(),
            email(
                "Thread start",
                Some("<t1@acme.com>"),
                &[("a.pdf", "application/pdf", noise(500, 1))],
            ),
        ),
        (
            "18c0000000000002".to_string(),
            email("Re: Thread start", Some("<t2@acme.com>"), &[]),
        ),
    ]);
    let (fake, base, app) = start(&sa_key, messages.clone(), |_| {}).await;
    let post = |path: &'static str, body: Value| add_on_post(&app, path, body);

    // Without a delegation key the action explains itself and files nothing.
    let out = post("/addon/action", event("file_thread", &["matter:M-1"])).await;
    assert!(
        out.to_string().contains("Thread filing is not set up"),
        "{out}"
    );
    let t = app.tenant(&app.firm_a).await;
    assert_eq!(counts(&t).await.1, 0);
    // Nor is the option offered.
    let card = post("/addon/message", event("open", &[])).await.to_string();
    assert!(
        card.contains("\"File\"") && !card.contains("File whole thread"),
        "{card}"
    );

    let key_json = key_json(&sa_key, &base);
    app.state
        .catalog
        .set_delegation_key(&app.firm_a.id, Some(&key_json))
        .await
        .unwrap();
    // The sealed key is not stored in clear in the catalogue.
    let stored: Vec<u8> =
        sqlx::query_scalar::<_, Vec<u8>>("SELECT delegation_key_enc FROM tenants WHERE id = $1")
            .bind(&app.firm_a.id)
            .fetch_one(app.state.catalog.pool())
            .await
            .unwrap();
    assert!(!stored
        .windows(SA_EMAIL.len())
        .any(|w| w == SA_EMAIL.as_bytes()));

    let card = post("/addon/message", event("open", &[])).await.to_string();
    assert!(
        card.contains("File whole thread"),
        "offered once delegation is configured: {card}"
    );
    {
        // From here on, only the thread filing's own Gmail calls.
        let mut seen = fake.seen.lock().unwrap();
        seen.gmail_auth.clear();
        seen.paths.clear();
    }

    let out = post("/addon/action", event("file_thread", &["matter:M-1"])).await;
    let action = &out["renderActions"]["action"];
    assert_eq!(
        action["notification"]["text"], "Thread filed to M-1: 2 new",
        "{out}"
    );
    let seen_sub: Vec<String> = fake
        .seen
        .lock()
        .unwrap()
        .assertions
        .iter()
        .map(|c| c["sub"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        seen_sub,
        ["alice@a.test"],
        "the token was requested as the user"
    );
    let assertion = fake.seen.lock().unwrap().assertions[0].clone();
    assert_eq!(assertion["iss"], SA_EMAIL);
    assert!(assertion["scope"]
        .as_str()
        .unwrap()
        .contains("gmail.readonly"));
    {
        let seen = fake.seen.lock().unwrap();
        assert!(
            seen.gmail_auth
                .iter()
                .all(|a| a == "Bearer delegated-alice@a.test"),
            "{:?}",
            seen.gmail_auth
        );
        assert_eq!(seen.paths[0], format!("threads/{THREAD_DEC:x}"));
    }
    let listed: Value = app
        .get(&app.token("alice@a.test"), "/v1/filings?target=matter:M-1")
        .await
        .json()
        .await
        .unwrap();
    let filings = listed["filings"].as_array().unwrap();
    assert_eq!(filings.len(), 2);
    for f in filings {
        let id = f["id"].as_str().unwrap();
        let raw = app
            .get(&app.token("alice@a.test"), &format!("/v1/filings/{id}/raw"))
            .await
            .bytes()
            .await
            .unwrap();
        assert!(
            messages.iter().any(|(_, m)| m[..] == raw[..]),
            "byte-identical"
        );
        assert_eq!(f["message"]["gmail_thread_id"], format!("{THREAD_DEC:x}"));
    }

    // Again: nothing new, still two filings.
    let out = post("/addon/action", event("file_thread", &["matter:M-1"])).await;
    assert_eq!(
        out["renderActions"]["action"]["notification"]["text"],
        "Thread filed to M-1: 0 new"
    );
    assert_eq!(counts(&t).await.1, 2);
}

/// Messages read from Gmail hold their share of the message budget: with the budget spent,
/// opening a message gets a card saying so and a thread files nothing; and a thread is read
/// one message at a time, so a thread larger than the budget files whole when each of its
/// messages fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gmail_reads_hold_their_share_of_the_message_budget() {
    let sa_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    // 1 MiB of budget; each message is ~275 KB (a 200 KB attachment in base64), ~365 KB as
    // Gmail's base64url answer, whose share (2 ×) is ~715 KiB: one fits, two at once do not.
    let messages: Vec<(String, Vec<u8>)> = (1..=4u8)
        .map(|i| {
            let id = format!("18c000000000000{i}");
            let subject = format!("Budget thread {i}");
            let mid = format!("<budget-thread-{i}@acme.com>");
            let pdf = noise(200_000, i);
            let raw = email(
                &subject,
                Some(mid.as_str()),
                &[("big.pdf", "application/pdf", pdf)],
            );
            (id, raw)
        })
        .collect();
    let (_fake, base, app) = start(&sa_key, Arc::new(messages), |c| {
        c.limits.max_bytes_in_flight = 1 << 20;
    })
    .await;
    let full = app.state.budget.available_kib();
    assert_eq!(full, 1024);
    app.state
        .catalog
        .set_delegation_key(&app.firm_a.id, Some(&key_json(&sa_key, &base)))
        .await
        .unwrap();
    let t = app.tenant(&app.firm_a).await;

    let spent = app.state.budget.try_reserve(usize::MAX).expect("all of it");
    let card = add_on_post(&app, "/addon/message", event("open", &[])).await;
    assert!(card.to_string().contains("memory budget"), "{card}");
    let out = add_on_post(&app, "/addon/action", event("file_thread", &["matter:M-1"])).await;
    assert!(out.to_string().contains("0 new"), "{out}");
    assert!(out.to_string().contains("memory budget"), "{out}");
    assert_eq!(counts(&t).await.1, 0);
    drop(spent);

    let card = add_on_post(&app, "/addon/message", event("open", &[])).await;
    assert!(card.to_string().contains("Budget thread 1"), "{card}");
    let out = add_on_post(&app, "/addon/action", event("file_thread", &["matter:M-1"])).await;
    assert_eq!(
        out["renderActions"]["action"]["notification"]["text"], "Thread filed to M-1: 4 new",
        "{out}"
    );
    assert_eq!(counts(&t).await.1, 4);
    assert_eq!(
        app.state.budget.available_kib(),
        full,
        "every share given back"
    );
}
