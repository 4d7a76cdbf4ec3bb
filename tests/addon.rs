#[path = "it/common.rs"]
mod common;
use common::*;

// The HTTP-runtime Gmail add-on (`/addon/homepage`, `/addon/message`, `/addon/action`) and the
// JSON API behind the Apps Script client (`/v1/addon/context`, `/v1/records`): card shapes
// (snapshots and structural rules), suggestion ranking, token checks, the Gmail API call
// with the per-message token (against a scriptable loopback fake) and filing from a card.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use docket::dev::TokenIssuer;
use docket::directory::{self, RecordKind};
use regex::Regex;
use serde_json::{json, Value};
use sqlx::Row;

// ---------------------------------------------------------------------------------------------
// Constants of the fake deployment

const PUBLIC_URL: &str = "https://docket.test";
const SERVICE_ACCOUNT: &str = "service-123@gcp-sa-gsuiteaddons.iam.gserviceaccount.com";
const ADDON_CLIENT: &str = "addon-client.apps.googleusercontent.com";
/// The add-on's message id and the Gmail API's (hex) form of it.
const MESSAGE_ID: &str = "msg-f:1659728385805497086";
const MESSAGE_HEX: &str = "17088a2c5b91b2fe";
/// The Gmail thread of the open message (API form); the event carries `thread-f:<decimal>`.
const THREAD_HEX: &str = "17088a2c5b91b2f0";
const USER_OAUTH: &str = "ya29.a0-user-oauth-token";
const MESSAGE_TOKEN: &str = "gmail-current-message-access-token";

const SCOPE_EXECUTE: &str = "https://www.googleapis.com/auth/gmail.addons.execute";
const SCOPE_MESSAGE: &str = "https://www.googleapis.com/auth/gmail.addons.current.message.readonly";
const SCOPE_EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";

const ALICE: &str = "alice@a.test";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn thread_event_id() -> String {
    format!("thread-f:{}", u64::from_str_radix(THREAD_HEX, 16).unwrap())
}

/// Claims a system ID token for `path` carries when Google calls that endpoint.
fn system_claims(path: &str) -> Value {
    let now = now();
    json!({
        "iss": GOOGLE_ISS, "aud": format!("{PUBLIC_URL}{path}"), "sub": "sys",
        "email": SERVICE_ACCOUNT, "email_verified": true, "iat": now, "exp": now + 3600,
    })
}

fn system_token(path: &str) -> String {
    google().sign(&system_claims(path))
}

/// A user ID token as Google puts it in the event (aud = the add-on's OAuth client).
fn user_token(email: &str) -> String {
    google().sign(&google().user_claims(email, ADDON_CLIENT, 3600))
}

/// Another RS256 key claiming to be Google, whose key is not in the test JWKS.
fn impostor() -> &'static TokenIssuer {
    static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| TokenIssuer::generate(GOOGLE_ISS).expect("RSA key"))
}

// ---------------------------------------------------------------------------------------------
// Event objects (GOOGLE.md §1)

/// A message-opened event for `email` with every scope granted.
fn event(email: &str) -> Value {
    json!({
        "commonEventObject": {
            "hostApp": "GMAIL", "platform": "WEB", "userLocale": "en",
            "timeZone": {"id": "Europe/London", "offset": 0},
        },
        "authorizationEventObject": {
            "userOAuthToken": USER_OAUTH,
            "userIdToken": user_token(email),
            "systemIdToken": system_token("/addon/message"),
            "authorizedScopes": [SCOPE_EXECUTE, SCOPE_MESSAGE, SCOPE_EMAIL],
        },
        "gmail": {"messageId": MESSAGE_ID, "threadId": thread_event_id(), "accessToken": MESSAGE_TOKEN},
    })
}

/// Sets `parameters.op` (Google sends parameters as a map of strings).
fn with_op(mut ev: Value, op: &str) -> Value {
    ev["commonEventObject"]["parameters"] = json!({ "op": op });
    ev
}

/// Adds a form input the way Google reports widget values.
fn with_input(mut ev: Value, name: &str, values: &[&str]) -> Value {
    ev["commonEventObject"]["formInputs"][name] = json!({"stringInputs": {"value": values}});
    ev
}

// ---------------------------------------------------------------------------------------------
// Messages

fn mail(
    from: &str,
    subject: &str,
    message_id: &str,
    in_reply_to: Option<&str>,
    references: &[&str],
    attachments: &[(&str, &str, Vec<u8>)],
) -> Vec<u8> {
    use mail_builder::MessageBuilder;
    let mut m = MessageBuilder::new()
        .from(("Sender", from))
        .to(vec![("Alice", ALICE)])
        .subject(subject)
        .date(1_763_000_000i64)
        .message_id(message_id)
        .text_body("Please see below.\r\n");
    if let Some(r) = in_reply_to {
        m = m.in_reply_to(r);
    }
    if !references.is_empty() {
        m = m.references(references.to_vec());
    }
    for (name, ct, bytes) in attachments {
        m = m.attachment(ct.to_string(), name.to_string(), bytes.clone());
    }
    m.write_to_vec().unwrap()
}

fn msg(from: &str, subject: &str, message_id: &str) -> Vec<u8> {
    mail(from, subject, message_id, None, &[], &[])
}

fn two_attachments() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("brief.pdf", "application/pdf", noise(3000, 1)),
        ("exhibit.png", "image/png", noise(1500, 2)),
    ]
}

// ---------------------------------------------------------------------------------------------
// A scriptable fake of `users.messages.get?format=raw`

#[derive(Clone, Debug)]
enum Reply {
    /// `{"id", "threadId", "raw"}` with `raw` as given (already encoded).
    Message {
        raw: String,
    },
    Status(u16),
    /// Answers only after this long.
    Sleep(Duration),
    /// A 200 with this body as JSON.
    Body(&'static str),
}

#[derive(Clone, Debug)]
struct Seen {
    id: String,
    query: Option<String>,
    authorization: Option<String>,
    access_token: Option<String>,
}

struct FakeGmail {
    url: String,
    reply: Arc<Mutex<Reply>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    labels: Arc<Mutex<FakeLabels>>,
}

/// The fake's labels (`users.labels`), which messages carry them, and the OAuth tokens
/// granted `gmail.modify`: any other token is refused 403 on the label calls, as Google
/// refuses a token without the scope.
#[derive(Default)]
struct FakeLabels {
    /// (id, name), in creation order.
    labels: Vec<(String, String)>,
    /// Message id → label ids.
    on: std::collections::HashMap<String, Vec<String>>,
    modify_tokens: Vec<String>,
    /// Label calls answered (method and path), refused ones included.
    calls: Vec<String>,
}

/// The Gmail API's answer to a token without the scope a call needs.
fn insufficient_scope() -> axum::response::Response {
    let error = json!({"error": {"code": 403, "status": "PERMISSION_DENIED",
        "message": "Request had insufficient authentication scopes."}});
    (StatusCode::FORBIDDEN, axum::Json(error)).into_response()
}

/// `users.labels.list`, `users.labels.create` and `users.messages.modify`, checking the scope.
fn label_routes(state: Arc<Mutex<FakeLabels>>) -> axum::Router {
    use axum::routing::post;
    let allowed = |st: &FakeLabels, headers: &HeaderMap| {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        let token = auth.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        st.modify_tokens.iter().any(|t| t == token)
    };
    let (s1, s2, s3) = (state.clone(), state.clone(), state);
    axum::Router::new()
        .route(
            "/gmail/v1/users/me/labels",
            get(move |headers: HeaderMap| async move {
                let mut st = s1.lock().unwrap();
                st.calls.push("GET labels".into());
                if !allowed(&st, &headers) {
                    return insufficient_scope();
                }
                let labels: Vec<Value> = st
                    .labels
                    .iter()
                    .map(|(id, name)| json!({"id": id, "name": name, "type": "user"}))
                    .collect();
                axum::Json(json!({ "labels": labels })).into_response()
            })
            .post(
                move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                    let mut st = s2.lock().unwrap();
                    st.calls.push("POST labels".into());
                    if !allowed(&st, &headers) {
                        return insufficient_scope();
                    }
                    let name = body["name"].as_str().unwrap().to_string();
                    if st.labels.iter().any(|(_, n)| *n == name) {
                        return (StatusCode::CONFLICT, "exists").into_response();
                    }
                    let id = format!("Label_{}", st.labels.len() + 1);
                    st.labels.push((id.clone(), name.clone()));
                    axum::Json(json!({"id": id, "name": name})).into_response()
                },
            ),
        )
        .route(
            "/gmail/v1/users/me/messages/{id}/modify",
            post(
                move |Path(id): Path<String>,
                      headers: HeaderMap,
                      axum::Json(body): axum::Json<Value>| async move {
                    let mut st = s3.lock().unwrap();
                    st.calls.push(format!("POST modify {id}"));
                    if !allowed(&st, &headers) {
                        return insufficient_scope();
                    }
                    let ids = |k: &str| -> Vec<String> {
                        body[k]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|v| v.as_str().unwrap().to_string())
                            .collect()
                    };
                    let (add, remove) = (ids("addLabelIds"), ids("removeLabelIds"));
                    let on = st.on.entry(id.clone()).or_default();
                    on.retain(|l| !remove.contains(l));
                    for l in add {
                        if !on.contains(&l) {
                            on.push(l);
                        }
                    }
                    let now = on.clone();
                    axum::Json(json!({"id": id, "labelIds": now})).into_response()
                },
            ),
        )
}

impl FakeGmail {
    async fn start() -> FakeGmail {
        let reply = Arc::new(Mutex::new(Reply::Status(404)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (reply.clone(), seen.clone());
        let router = axum::Router::new().route(
            "/gmail/v1/users/me/messages/{id}",
            get(
                move |Path(id): Path<String>, RawQuery(query): RawQuery, headers: HeaderMap| {
                    let (r, s) = (r.clone(), s.clone());
                    async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                        };
                        s.lock().unwrap().push(Seen {
                            id: id.clone(),
                            query,
                            authorization: h("authorization"),
                            access_token: h("x-goog-gmail-access-token"),
                        });
                        let reply = r.lock().unwrap().clone();
                        match reply {
                            Reply::Message { raw } => {
                                axum::Json(json!({"id": id, "threadId": THREAD_HEX, "raw": raw}))
                                    .into_response()
                            }
                            Reply::Status(code) => (
                                StatusCode::from_u16(code).unwrap(),
                                axum::Json(json!({"error": {"code": code, "message": "fake"}})),
                            )
                                .into_response(),
                            Reply::Sleep(d) => {
                                tokio::time::sleep(d).await;
                                axum::Json(json!({"id": id, "raw": ""})).into_response()
                            }
                            Reply::Body(b) => {
                                ([("content-type", "application/json")], b).into_response()
                            }
                        }
                    }
                },
            ),
        );
        let labels = Arc::new(Mutex::new(FakeLabels::default()));
        let router = router.merge(label_routes(labels.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        FakeGmail {
            url: format!("http://{addr}/"),
            reply,
            seen,
            labels,
        }
    }

    /// The names of the labels message `id` (hex) carries.
    fn labels_on(&self, id: &str) -> Vec<String> {
        let st = self.labels.lock().unwrap();
        let on = st.on.get(id).cloned().unwrap_or_default();
        on.iter()
            .filter_map(|l| {
                st.labels
                    .iter()
                    .find(|(i, _)| i == l)
                    .map(|(_, n)| n.clone())
            })
            .collect()
    }

    fn set(&self, r: Reply) {
        *self.reply.lock().unwrap() = r;
    }

    /// Serves `raw` (unpadded base64url, as Gmail usually sends it).
    fn serve(&self, raw: &[u8]) {
        self.set(Reply::Message { raw: b64url(raw) });
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The harness: docket configured as a deployed add-on, plus the fake Gmail

struct Addon {
    app: TestApp,
    gmail: FakeGmail,
}

impl Addon {
    async fn spawn(backend: Backend) -> Option<Addon> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// As [`Addon::spawn`], then `tweak` the configuration.
    async fn spawn_with(
        backend: Backend,
        tweak: impl FnOnce(&mut docket::Config),
    ) -> Option<Addon> {
        let gmail = FakeGmail::start().await;
        let url = gmail.url.clone();
        let app = TestApp::spawn_with(backend, move |c| {
            c.addon.gmail_api_url = url;
            c.addon.gmail_timeout_secs = 2;
            c.addon.public_url = Some(PUBLIC_URL.into());
            c.addon.service_account = Some(SERVICE_ACCOUNT.into());
            c.addon.oauth_client_id = Some(ADDON_CLIENT.into());
            tweak(c);
        })
        .await?;
        Some(Addon { app, gmail })
    }

    async fn sqlite() -> Addon {
        Self::spawn(Backend::Sqlite).await.unwrap()
    }

    async fn post(&self, path: &str, auth: Option<&str>, ev: &Value) -> reqwest::Response {
        let mut req = self
            .app
            .http
            .post(format!("{}{path}", self.app.base))
            .json(ev);
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// A correctly signed call that must answer 200 with a structurally valid card reply.
    async fn call(&self, path: &str, ev: &Value) -> Value {
        let resp = self.post(path, Some(&system_token(path)), ev).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        check_reply(&body);
        body
    }

    /// A call that must be refused with a 401 problem (never a card).
    async fn refused(&self, path: &str, auth: Option<&str>, ev: &Value) -> Value {
        let (status, body) = problem(self.post(path, auth, ev).await).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["type"], "urn:docket:problem:unauthorized", "{body}");
        assert!(body.get("renderActions").is_none());
        body
    }

    /// `POST /v1/addon/context` as the Apps Script client calls it.
    async fn context(&self, email: &str, raw: &[u8], thread: Option<&str>) -> Value {
        let mut body = json!({ "raw": b64url(raw) });
        if let Some(t) = thread {
            body["gmail_thread_id"] = json!(t);
        }
        let resp = self
            .app
            .http
            .post(format!("{}/v1/addon/context", self.app.base))
            .bearer_auth(self.app.token(email))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Files `raw` through `POST /v1/filings`.
    async fn file(&self, email: &str, raw: &[u8], targets: &[&str], thread: Option<&str>) {
        let mut body = filing_body(raw, targets);
        if let Some(t) = thread {
            body["gmail_thread_id"] = json!(t);
        }
        let resp = self.app.post_filing(&self.app.token(email), &body).await;
        let status = resp.status();
        assert_eq!(status, 201, "{}", resp.text().await.unwrap());
    }

    async fn record(
        &self,
        kind: RecordKind,
        reference: &str,
        title: &str,
        client: &str,
        contacts: &[&str],
    ) {
        let contacts: Vec<String> = contacts.iter().map(|c| c.to_string()).collect();
        let t = self.app.tenant(&self.app.firm_a).await;
        directory::add_record(&t.db, kind, reference, title, client, &contacts, "test")
            .await
            .unwrap();
    }

    async fn close(&self, kind: &str, reference: &str) {
        let t = self.app.tenant(&self.app.firm_a).await;
        let done =
            sqlx::query("UPDATE records SET status = 'closed' WHERE kind = $1 AND reference = $2")
                .bind(kind)
                .bind(reference)
                .execute(&t.db)
                .await
                .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }

    async fn counts_a(&self) -> (i64, i64, i64, i64) {
        let t = self.app.tenant(&self.app.firm_a).await;
        counts(&t).await
    }
}

/// Runs an async body on SQLite and PostgreSQL with the add-on configured (the add-on
/// variant of `both_backends!`, whose `TestApp::spawn` has no add-on settings).
macro_rules! addon_both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let t = Addon::spawn(Backend::Sqlite).await.unwrap();
                ($body)(t).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(t) = Addon::spawn(Backend::Postgres).await else {
                    return;
                };
                ($body)(t).await;
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Reading replies

/// The pushed or updated card of a reply.
fn card(reply: &Value) -> &Value {
    reply["renderActions"]["action"]["navigations"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|nav| nav.get("pushCard").or_else(|| nav.get("updateCard")))
        .unwrap_or_else(|| panic!("no card in {reply}"))
}

fn notification(reply: &Value) -> Option<&str> {
    reply
        .pointer("/renderActions/action/notification/text")
        .and_then(Value::as_str)
}

fn subtitle(reply: &Value) -> &str {
    card(reply)["header"]["subtitle"].as_str().unwrap_or("")
}

/// Every string in `v`, one per line (for "the card says ..." checks).
fn all_text(v: &Value) -> String {
    fn go(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(a) => a.iter().for_each(|x| go(x, out)),
            Value::Object(m) => m.values().for_each(|x| go(x, out)),
            _ => {}
        }
    }
    let mut s = String::new();
    go(v, &mut s);
    s
}

/// Every value of `key` anywhere under `v`.
fn find_all<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x);
                }
                find_all(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| find_all(x, key, out)),
        _ => {}
    }
}

fn widgets<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    find_all(v, key, &mut out);
    out
}

/// The items (text, value, selected) of the selection input called `name`.
fn items(reply: &Value, name: &str) -> Vec<(String, String, bool)> {
    widgets(reply, "selectionInput")
        .into_iter()
        .find(|s| s["name"] == name)
        .map(|s| {
            s["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (
                        i["text"].as_str().unwrap().to_string(),
                        i["value"].as_str().unwrap().to_string(),
                        i["selected"].as_bool().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn values(items: &[(String, String, bool)]) -> Vec<&str> {
    items.iter().map(|(_, v, _)| v.as_str()).collect()
}

/// `op` parameters of every action button in the reply.
fn ops(reply: &Value) -> Vec<String> {
    widgets(reply, "onClick")
        .into_iter()
        .filter_map(|c| c["action"]["parameters"].as_array())
        .flatten()
        .filter(|p| p["key"] == "op")
        .map(|p| p["value"].as_str().unwrap().to_string())
        .collect()
}

fn suggested(ctx: &Value) -> Vec<String> {
    ctx["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["target"]["kind"].as_str().unwrap(),
                s["target"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

fn reasons(ctx: &Value, i: usize) -> Vec<String> {
    ctx["suggestions"][i]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn sources(ctx: &Value) -> Vec<&str> {
    ctx["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Structural rules every card must keep (run on every reply `Addon::call` sees)

/// Fields Google renders as (limited) HTML: user data in them must be escaped.
const HTML_TAGS: &[&str] = &["b", "i", "u", "s", "br", "font", "a"];

fn html_safe(s: &str) {
    assert!(
        !s.to_ascii_lowercase().contains("<script"),
        "unescaped <script in card HTML: {s:?}"
    );
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        let after = &rest[i + 1..];
        let end = after
            .find('>')
            .unwrap_or_else(|| panic!("unescaped < in card HTML: {s:?}"));
        let tag = after[..end]
            .trim_start_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            HTML_TAGS.contains(&tag.as_str()),
            "tag <{tag}> is not Google card formatting: {s:?}"
        );
        rest = &after[end + 1..];
    }
}

fn check_reply(reply: &Value) {
    if reply.get("requesting_google_scopes").is_some() {
        return;
    }
    let action = reply
        .pointer("/renderActions/action")
        .unwrap_or_else(|| panic!("not a render action: {reply}"));
    let navs = action.get("navigations").and_then(Value::as_array);
    let note = action.pointer("/notification/text").and_then(Value::as_str);
    assert!(navs.is_some() || note.is_some(), "an empty action: {reply}");
    if let Some(n) = note {
        assert!(!n.trim().is_empty(), "blank notification");
    }
    for nav in navs.into_iter().flatten() {
        if nav.get("popToRoot").is_some() {
            continue;
        }
        let c = nav
            .get("pushCard")
            .or_else(|| nav.get("updateCard"))
            .unwrap_or_else(|| panic!("navigation without a card: {nav}"));
        check_card(c);
    }
}

fn check_card(card: &Value) {
    assert!(
        card.pointer("/header/title")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty()),
        "card without a title: {card}"
    );
    let sections = card["sections"].as_array().expect("sections");
    assert!(!sections.is_empty(), "a blank card: {card}");
    assert!(sections.len() <= 100, "{} sections", sections.len());
    for s in sections {
        let w = s["widgets"].as_array().expect("widgets");
        assert!(!w.is_empty(), "an empty section: {s}");
        assert!(w.len() <= 100, "{} widgets in a section", w.len());
        if let Some(h) = s.get("header") {
            html_safe(h.as_str().expect("section header text"));
        }
    }
    check_widgets(card);
}

fn check_widgets(v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match k.as_str() {
                    "onClick" => {
                        if let Some(a) = x.get("action") {
                            let f = a["function"].as_str().expect("action function");
                            assert!(
                                f.starts_with("https://docket.test/addon/"),
                                "action outside docket: {f}"
                            );
                            for p in a["parameters"].as_array().into_iter().flatten() {
                                assert!(p["key"].is_string() && p["value"].is_string(), "{p}");
                            }
                        } else {
                            assert!(x.get("openLink").is_some(), "onClick without action: {x}");
                        }
                    }
                    "selectionInput" => {
                        assert!(
                            x["name"].as_str().is_some_and(|n| !n.is_empty()),
                            "selectionInput without a name: {x}"
                        );
                        assert!(
                            ["CHECK_BOX", "RADIO_BUTTON", "SWITCH", "DROPDOWN"]
                                .contains(&x["type"].as_str().unwrap_or("")),
                            "selectionInput without a type: {x}"
                        );
                        let items = x["items"].as_array().expect("items");
                        assert!(!items.is_empty() && items.len() <= 100);
                        for i in items {
                            assert!(i["text"].is_string() && i["value"].is_string(), "{i}");
                        }
                    }
                    "textInput" => {
                        assert!(x["name"].as_str().is_some_and(|n| !n.is_empty()), "{x}");
                    }
                    "textParagraph" => html_safe(x["text"].as_str().expect("paragraph text")),
                    "decoratedText" => {
                        for f in ["text", "topLabel", "bottomLabel"] {
                            if let Some(s) = x.get(f) {
                                html_safe(s.as_str().expect("decorated text"));
                            }
                        }
                    }
                    _ => {}
                }
                check_widgets(x);
            }
        }
        Value::Array(a) => a.iter().for_each(check_widgets),
        _ => {}
    }
}

/// A change that must make a good card fail [`check_card`].
type Spoil = Box<dyn Fn(&mut Value)>;

#[test]
fn the_card_checker_rejects_bad_cards() {
    let good = json!({"header": {"title": "docket"}, "sections": [{"widgets": [
        {"textParagraph": {"text": "<b>x</b> &lt;script&gt;"}},
        {"selectionInput": {"name": "t", "type": "CHECK_BOX", "items": [{"text": "a", "value": "a", "selected": true}]}},
        {"buttonList": {"buttons": [{"text": "Go", "onClick": {"action": {"function": "https://docket.test/addon/action", "parameters": [{"key": "op", "value": "file"}]}}}]}},
    ]}]});
    check_card(&good);
    let bad: Vec<Spoil> = vec![
        Box::new(|c: &mut Value| {
            c["sections"][0]["widgets"][0]["textParagraph"]["text"] = json!("<script>x</script>")
        }),
        Box::new(|c: &mut Value| {
            c["sections"][0]["widgets"][0]["textParagraph"]["text"] = json!("a < b")
        }),
        Box::new(|c: &mut Value| {
            c["sections"][0]["widgets"][1]["selectionInput"]
                .as_object_mut()
                .unwrap()
                .remove("type")
                .map(|_| ())
                .unwrap()
        }),
        Box::new(|c: &mut Value| {
            c["sections"][0]["widgets"][1]["selectionInput"]
                .as_object_mut()
                .unwrap()
                .remove("name")
                .map(|_| ())
                .unwrap()
        }),
        Box::new(|c: &mut Value| {
            c["sections"][0]["widgets"][2]["buttonList"]["buttons"][0]["onClick"]["action"]
                ["function"] = json!("https://evil.test/addon/action")
        }),
        Box::new(|c: &mut Value| {
            c["sections"] = json!(vec![
                json!({"widgets": [{"textParagraph": {"text": "x"}}]});
                101
            ])
        }),
        Box::new(|c: &mut Value| {
            c["sections"][0]["widgets"] = json!(vec![json!({"textParagraph": {"text": "x"}}); 101])
        }),
        Box::new(|c: &mut Value| c["sections"] = json!([])),
    ];
    for (i, spoil) in bad.iter().enumerate() {
        let mut c = good.clone();
        spoil(&mut c);
        let caught = std::panic::catch_unwind(|| check_card(&c)).is_err();
        assert!(caught, "bad card {i} passed the checker: {c}");
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots (SQLite only; volatile values replaced by placeholders)

fn tokens() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"t=[A-Za-z0-9_-]+").unwrap())
}

fn normalised(mut v: Value) -> Value {
    static RES: OnceLock<(Regex, Regex)> = OnceLock::new();
    let (ids, times) = RES.get_or_init(|| {
        (
            Regex::new(r"\b[0-9a-f]{32}\b").unwrap(),
            Regex::new(
                r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?|\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2} [A-Z][A-Za-z0-9+-]+",
            )
            .unwrap(),
        )
    });
    fn go(v: &mut Value, ids: &Regex, times: &Regex) {
        match v {
            Value::String(s) => {
                let r = tokens().replace_all(s, "t=[link-token]").into_owned();
                let r = ids.replace_all(&r, "[filing-id]").into_owned();
                *s = times.replace_all(&r, "[datetime]").into_owned();
            }
            Value::Array(a) => a.iter_mut().for_each(|x| go(x, ids, times)),
            Value::Object(m) => m.values_mut().for_each(|x| go(x, ids, times)),
            _ => {}
        }
    }
    go(&mut v, ids, times);
    v
}

/// Thread (T-9), subject (K-1), contact (M-1 by acme.com) and history (C-1) all apply to the
/// returned message from dana@acme.com, which has two attachments.
async fn seed_mixed(t: &Addon) -> Vec<u8> {
    t.record(RecordKind::Matter, "T-9", "Thread Matter", "Thread Co", &[])
        .await;
    let kickoff = msg(
        "carol@partner.example",
        "Kickoff",
        "kickoff@partner.example",
    );
    t.file(ALICE, &kickoff, &["matter:T-9"], Some(THREAD_HEX))
        .await;
    for i in 0..2 {
        let m = msg(
            "dana@acme.com",
            &format!("Invoice {i}"),
            &format!("invoice-{i}@acme.com"),
        );
        t.file(ALICE, &m, &["case:C-1"], None).await;
    }
    mail(
        "dana@acme.com",
        "Re: K-1 renewal",
        "open-1@acme.com",
        None,
        &[],
        &two_attachments(),
    )
}

/// Issue 8 §2: an inline part of the HTML body (a signature logo in multipart/related) is
/// listed but unticked, as in Gmail; a real attachment stays ticked; filing with the card's
/// default selection keeps the attachment, not the logo.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inline_signature_images_are_offered_unticked() {
    let t = Addon::sqlite().await;
    let raw = b"From: Dana <dana@acme.com>\r\nTo: alice@a.test\r\nSubject: M-1 next steps\r\n\
Message-ID: <sig@acme.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n\
--b0\r\nContent-Type: multipart/related; boundary=b1\r\n\r\n\
--b1\r\nContent-Type: text/html\r\n\r\n<p>Regards</p><img src=\"cid:logo@x\">\r\n\
--b1\r\nContent-Type: image/png; name=logo.png\r\nContent-Transfer-Encoding: base64\r\nContent-ID: <logo@x>\r\n\r\niVBORw0KGgo=\r\n\
--b1--\r\n--b0\r\nContent-Type: application/pdf; name=brief.pdf\r\nContent-Disposition: attachment; filename=brief.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b0--\r\n";
    t.gmail.serve(raw);
    let reply = t.call("/addon/message", &event(ALICE)).await;
    let atts = items(&reply, "attachments");
    assert_eq!(atts.len(), 2, "{atts:?}");
    assert!(
        atts[0].0.starts_with("logo.png") && atts[0].0.contains("inline"),
        "{atts:?}"
    );
    assert!(!atts[0].2, "the inline logo is not ticked");
    assert!(atts[1].0.starts_with("brief.pdf") && atts[1].2, "{atts:?}");
    let ctx = t.context(ALICE, raw, None).await;
    assert_eq!(ctx["attachments"][0]["inline"], true);
    assert_eq!(ctx["attachments"][1]["inline"], false);
}

/// Issue 8 §3: a different message reusing a filed message's Message-ID is not shown as
/// already filed; the card says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reused_message_id_is_not_already_filed() {
    let t = Addon::sqlite().await;
    let first = msg("dana@acme.com", "Offer", "<reused@acme.com>");
    t.file(ALICE, &first, &["matter:M-1"], None).await;
    let other = String::from_utf8(first.clone())
        .unwrap()
        .replace("\r\n\r\n", "\r\n\r\nA different body.\r\n");
    t.gmail.serve(other.as_bytes());
    let reply = t.call("/addon/message", &event(ALICE)).await;
    let text = all_text(&reply);
    assert!(!text.contains("Already filed"), "{text}");
    assert!(
        text.contains("different message used the same Message-ID"),
        "{text}"
    );
    t.gmail.serve(&first);
    let text = all_text(&t.call("/addon/message", &event(ALICE)).await);
    assert!(text.contains("Already filed"), "{text}");
}

/// Issue 8 §4: the Gmail answer is read only up to the message limit, never buffered whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gmail_answer_over_the_message_limit_is_refused_unread() {
    let t = Addon::spawn_with(Backend::Sqlite, |c| c.limits.max_message_bytes = 100_000)
        .await
        .unwrap();
    let mut big = msg("dana@acme.com", "Big", "<big@acme.com>");
    big.extend(std::iter::repeat_n(b'x', 300_000));
    t.gmail.serve(&big);
    let text = all_text(&t.call("/addon/message", &event(ALICE)).await);
    assert!(text.contains("larger than docket accepts"), "{text}");
    t.gmail
        .serve(&msg("dana@acme.com", "Small", "<small@acme.com>"));
    let text = all_text(&t.call("/addon/message", &event(ALICE)).await);
    assert!(!text.contains("larger than docket accepts"), "{text}");
}

/// Issue 8 §1: a lawyer merely opening a hostile message (nested 10^3..10^6 deep) gets an
/// explanatory card; the process stays up for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opening_deeply_nested_mail_costs_only_that_card() {
    // 10^6 levels is a 45 MB message: give the (debug-built) Gmail fetch time to read it.
    let t = Addon::spawn_with(Backend::Sqlite, |c| c.addon.gmail_timeout_secs = 60)
        .await
        .unwrap();
    for kind in [Nesting::Multipart, Nesting::Rfc822] {
        for levels in HOSTILE_DEPTHS {
            let what = format!("/addon/message with {kind:?} nesting {levels} deep");
            t.gmail.serve(&nested_message(kind, levels));
            let reply = t.call("/addon/message", &event(ALICE)).await;
            let text = all_text(&reply);
            assert!(
                text.contains("deeper than the limit") || text.contains("more MIME parts"),
                "{what}: {text}"
            );
            assert_alive(&t.app, &what).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_homepage() {
    let t = Addon::sqlite().await;
    let reply = t.call("/addon/homepage", &event(ALICE)).await;
    assert!(all_text(&reply).contains("<b>alice@a.test</b> (filer)"));
    assert!(all_text(&reply).contains("You have not filed anything yet."));
    assert!(t.gmail.seen().is_empty(), "the homepage reads no mail");
    insta::assert_json_snapshot!("homepage", normalised(reply));
}

/// The homepage says what docket is, lists the user's recent filings with View links, and
/// searches the filed mail the user may see.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_homepage_lists_recent_filings_and_searches_filed_mail() {
    let t = Addon::sqlite().await;
    let lease = mail(
        "dana@acme.com",
        "Lease renewal",
        "home-1@acme.com",
        None,
        &[],
        &[],
    );
    let draft = mail(
        "dana@acme.com",
        "Draft settlement",
        "home-2@acme.com",
        None,
        &[],
        &[],
    );
    t.file(ALICE, &lease, &["contract:K-1"], None).await;
    t.file("adam@a.test", &draft, &["matter:M-1"], None).await;
    let reply = t.call("/addon/homepage", &event(ALICE)).await;
    let text = all_text(&reply);
    assert!(
        text.contains("files Firm A's email into its matters"),
        "{text}"
    );
    assert!(text.contains("Your recent filings"), "{text}");
    assert!(text.contains("Lease renewal"), "{text}");
    assert!(
        !text.contains("Draft settlement"),
        "adam's filing is not alice's: {text}"
    );
    let lines = widgets(&reply, "decoratedText");
    let view = lines[0]["button"]["onClick"]["openLink"]["url"]
        .as_str()
        .unwrap();
    assert!(
        view.starts_with(&format!("{PUBLIC_URL}/view/filings/")),
        "{view}"
    );
    assert!(ops(&reply).contains(&"home_search".to_string()));
    // Dates read in the user's own time zone in Gmail, else the firm's, else UTC.
    assert!(
        all_text(&reply).contains(" GMT"),
        "Europe/London from the event"
    );
    let mut tokyo = event(ALICE);
    tokyo["commonEventObject"]["timeZone"] = json!({"id": "Asia/Tokyo", "offset": 32400000});
    let text = all_text(&t.call("/addon/homepage", &tokyo).await);
    assert!(text.contains(" JST") && !text.contains(" GMT"), "{text}");
    let mut unsaid = event(ALICE);
    unsaid["commonEventObject"]
        .as_object_mut()
        .unwrap()
        .remove("timeZone");
    let text = all_text(&t.call("/addon/homepage", &unsaid).await);
    assert!(text.contains(" UTC"), "{text}");
    let a = t.app.tenant(&t.app.firm_a).await;
    docket::suggest::set_setting(&a.db, "time_zone", "Europe/Paris", "test")
        .await
        .unwrap();
    let text = all_text(&t.call("/addon/homepage", &unsaid).await);
    assert!(text.contains(" CET") && !text.contains(" UTC"), "{text}");
    let text = all_text(&t.call("/addon/homepage", &tokyo).await);
    assert!(text.contains(" JST"), "the user's own zone wins: {text}");
    docket::suggest::set_setting(&a.db, "time_zone", "UTC", "test")
        .await
        .unwrap();

    let ev = with_input(with_op(event(ALICE), "home_search"), "q", &["settlement"]);
    let reply = t.call("/addon/action", &ev).await;
    let text = all_text(card(&reply));
    assert!(
        text.contains("Results") && text.contains("Draft settlement"),
        "{text}"
    );
    let ev = with_input(
        with_op(event(ALICE), "home_search"),
        "q",
        &["nothing like it"],
    );
    let reply = t.call("/addon/action", &ev).await;
    assert!(all_text(&reply).contains("Nothing filed matches “nothing like it”."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_message_with_suggestions() {
    let t = Addon::sqlite().await;
    let raw = seed_mixed(&t).await;
    t.gmail.serve(&raw);
    let reply = t.call("/addon/message", &event(ALICE)).await;
    assert!(reply["renderActions"]["action"]["navigations"][0]["pushCard"].is_object());
    let sugg = items(&reply, "targets");
    assert_eq!(
        values(&sugg),
        ["matter:T-9", "contract:K-1", "case:C-1", "matter:M-1"]
    );
    assert_eq!(
        sugg.iter().map(|s| s.2).collect::<Vec<_>>(),
        [true, false, false, false],
        "only the top suggestion is preselected"
    );
    let att = items(&reply, "attachments");
    assert_eq!(values(&att), ["0", "1"]);
    assert!(att[0].0.starts_with("brief.pdf") && att[1].0.starts_with("exhibit.png"));
    assert_eq!(ops(&reply), ["search", "file"]);
    insta::assert_json_snapshot!("message_with_suggestions", normalised(reply));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_message_already_filed() {
    let t = Addon::sqlite().await;
    let raw = mail(
        "dana@acme.com",
        "Re: K-1 renewal",
        "open-2@acme.com",
        None,
        &[],
        &two_attachments(),
    );
    t.file(ALICE, &raw, &["matter:M-1"], None).await;
    t.gmail.serve(&raw);
    let reply = t.call("/addon/message", &event(ALICE)).await;
    let text = all_text(&reply);
    assert!(text.contains("Already filed"), "{text}");
    assert!(text.contains("<b>M-1</b> · Acme v. Widget"), "{text}");
    assert!(text.contains("by alice@a.test · "), "{text}");
    // Each line has a View button opening the filing's read-only page.
    let view = widgets(&reply, "decoratedText")[0]["button"]["onClick"]["openLink"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no View link: {reply}"));
    assert!(view.contains("/view/filings/"), "{view}");
    // M-1 (a domain contact) is not suggested again; nothing is preselected.
    let sugg = items(&reply, "targets");
    assert_eq!(values(&sugg), ["contract:K-1"]);
    assert!(!sugg[0].2);
    insta::assert_json_snapshot!("message_already_filed", normalised(reply));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_viewer_has_no_filing_controls() {
    let t = Addon::sqlite().await;
    let raw = mail(
        "dana@acme.com",
        "M-1 hearing date",
        "viewer@acme.com",
        None,
        &[],
        &two_attachments(),
    );
    t.gmail.serve(&raw);
    let reply = t.call("/addon/message", &event("vera@a.test")).await;
    assert!(widgets(&reply, "selectionInput").is_empty());
    assert!(widgets(&reply, "textInput").is_empty());
    assert!(ops(&reply).is_empty(), "a viewer gets no actions");
    assert!(all_text(&reply).contains("Your role (viewer) can read filings but not file."));
    // The same message gives alice suggestions and a File button.
    let alice = t.call("/addon/message", &event(ALICE)).await;
    assert_eq!(values(&items(&alice, "targets")), ["matter:M-1"]);
    assert!(ops(&alice).contains(&"file".to_string()));
    insta::assert_json_snapshot!("message_viewer", normalised(reply));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_search_results() {
    let t = Addon::sqlite().await;
    t.record(
        RecordKind::Matter,
        "M-2",
        "Acme licensing",
        "Acme Corp",
        &[],
    )
    .await;
    t.gmail
        .serve(&msg("erin@elsewhere.example", "Hello", "search@x.example"));
    let ev = with_input(with_op(event(ALICE), "search"), "q", &["acme"]);
    let reply = t.call("/addon/action", &ev).await;
    assert!(reply["renderActions"]["action"]["navigations"][0]["updateCard"].is_object());
    let found = items(&reply, "found");
    assert_eq!(values(&found), ["matter:M-1", "matter:M-2"]);
    assert!(
        found.iter().all(|f| !f.2),
        "search results are not preselected"
    );
    // The query stays in the search box.
    let q = widgets(&reply, "textInput")
        .into_iter()
        .find(|w| w["name"] == "q")
        .unwrap();
    assert_eq!(q["value"], "acme");
    // A query matching nothing says so.
    let none = with_input(with_op(event(ALICE), "search"), "q", &["zzz-nothing"]);
    let reply2 = t.call("/addon/action", &none).await;
    assert!(items(&reply2, "found").is_empty());
    assert!(all_text(&reply2).contains("No open record matches “zzz-nothing”."));
    insta::assert_json_snapshot!("search_results", normalised(reply));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_file_action_result() {
    let t = Addon::sqlite().await;
    let raw = mail(
        "dana@acme.com",
        "Signed exhibit",
        "file-snap@acme.com",
        None,
        &[],
        &two_attachments(),
    );
    t.gmail.serve(&raw);
    let ev = with_input(
        with_input(
            with_input(with_op(event(ALICE), "file"), "targets", &["matter:M-1"]),
            "attachments",
            &["1"],
        ),
        "note",
        &["Kept the exhibit only"],
    );
    let reply = t.call("/addon/action", &ev).await;
    assert_eq!(notification(&reply), Some("Filed to M-1"));
    insta::assert_json_snapshot!("file_action_result", normalised(reply));
}

/// The parameters of the first button whose `op` is `op`.
fn op_params(reply: &Value, op: &str) -> Option<std::collections::HashMap<String, String>> {
    widgets(reply, "onClick")
        .into_iter()
        .filter_map(|c| c["action"]["parameters"].as_array())
        .find(|ps| ps.iter().any(|p| p["key"] == "op" && p["value"] == op))
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["key"].as_str().unwrap().into(),
                        p["value"].as_str().unwrap().into(),
                    )
                })
                .collect()
        })
}

/// "Undo" on the filed card takes the filing back, and the message card stops saying it is
/// filed; a second click finds nothing to undo; nobody else's click undoes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_filed_card_undoes_the_filing() {
    let t = Addon::sqlite().await;
    let raw = mail(
        "dana@acme.com",
        "Wrong matter",
        "undo-card@acme.com",
        None,
        &[],
        &[],
    );
    t.gmail.serve(&raw);
    let ev = with_input(with_op(event(ALICE), "file"), "targets", &["matter:M-1"]);
    let reply = t.call("/addon/action", &ev).await;
    assert_eq!(notification(&reply), Some("Filed to M-1"));
    assert_eq!(ops(&reply), ["undo", "open"]);
    let filings = op_params(&reply, "undo").unwrap()["filings"].clone();
    assert_eq!(filings.len(), 32, "the new filing's id: {filings}");
    let filed = t.call("/addon/message", &event(ALICE)).await;
    assert!(all_text(&filed).contains("Already filed"), "{filed}");

    let undo = |who: &str| {
        let mut ev = with_op(event(who), "undo");
        ev["commonEventObject"]["parameters"]["filings"] = json!(filings);
        ev
    };
    // Another user of the firm (an admin) clicking the same button undoes nothing.
    let reply = t.call("/addon/action", &undo("adam@a.test")).await;
    assert_eq!(notification(&reply), Some("Not undone"), "{reply}");
    assert!(
        all_text(&reply).contains("no such filing of yours"),
        "{reply}"
    );

    let reply = t.call("/addon/action", &undo(ALICE)).await;
    assert_eq!(notification(&reply), Some("Filing undone: M-1"), "{reply}");
    assert_eq!(subtitle(&reply), "Filing undone");
    assert!(all_text(&reply).contains("Taken back from"), "{reply}");
    assert_eq!(ops(&reply), ["open"], "no Undo on the undone card");
    let after = t.call("/addon/message", &event(ALICE)).await;
    assert!(!all_text(&after).contains("Already filed"), "{after}");

    let reply = t.call("/addon/action", &undo(ALICE)).await;
    assert_eq!(notification(&reply), Some("Not undone"));
}

const SCOPE_MODIFY: &str = "https://www.googleapis.com/auth/gmail.modify";

/// With the firm's labels on and `gmail.modify` granted, filing puts `Filed/M-1` (and its
/// parent `Filed`) on the message in Gmail and undoing takes it off; without the scope
/// (not granted, or a token Gmail refuses) the filing stands and the card says why; with
/// the labels off nothing is asked of Gmail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filed_labels_in_gmail_follow_filing_and_undo() {
    let t = Addon::sqlite().await;
    let raw = mail(
        "dana@acme.com",
        "Label me",
        "label-1@acme.com",
        None,
        &[],
        &[],
    );
    t.gmail.serve(&raw);
    let with_modify = |mut ev: Value| {
        ev["authorizationEventObject"]["authorizedScopes"]
            .as_array_mut()
            .unwrap()
            .push(json!(SCOPE_MODIFY));
        ev
    };
    let file = |ev: Value| with_input(with_op(ev, "file"), "targets", &["matter:M-1"]);

    // Off (the default): nothing asked of Gmail, nothing said.
    t.gmail
        .labels
        .lock()
        .unwrap()
        .modify_tokens
        .push(USER_OAUTH.into());
    let reply = t
        .call("/addon/action", &file(with_modify(event(ALICE))))
        .await;
    assert_eq!(notification(&reply), Some("Filed to M-1"));
    assert!(!all_text(&reply).contains("Gmail"), "{reply}");
    assert!(t.gmail.labels.lock().unwrap().calls.is_empty());

    // The admin turns the labels on (API); an invalid prefix is refused.
    let tenant = t.app.tenant(&t.app.firm_a).await;
    let admin = access_token(
        &tenant,
        "adam@a.test",
        &[docket::accounts::tokens::Scope::Admin],
    )
    .await;
    let put = |body: Value| {
        t.app
            .http
            .put(format!("{}/v1/admin/tenant/gmail-labels", t.app.base))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    for bad in ["INBOX", "/Filed", "Filed/", "a//b", "x\u{7}"] {
        let (status, p) = problem(put(json!({"prefix": bad})).await.unwrap()).await;
        assert_eq!(status, 422, "{bad}: {p}");
    }
    assert_eq!(put(json!({"prefix": "Filed"})).await.unwrap().status(), 204);

    // Filing it again ("already filed") labels it; so does a new filing.
    let reply = t
        .call("/addon/action", &file(with_modify(event(ALICE))))
        .await;
    assert!(
        all_text(&reply).contains("Labelled Filed/M-1 in Gmail"),
        "{reply}"
    );
    assert_eq!(t.gmail.labels_on(MESSAGE_HEX), ["Filed/M-1"]);
    let names: Vec<String> = t
        .gmail
        .labels
        .lock()
        .unwrap()
        .labels
        .iter()
        .map(|l| l.1.clone())
        .collect();
    assert_eq!(
        names,
        ["Filed", "Filed/M-1"],
        "the parent first, so Gmail nests them"
    );
    let raw2 = mail(
        "dana@acme.com",
        "Label me too",
        "label-2@acme.com",
        None,
        &[],
        &[],
    );
    t.gmail.serve(&raw2);
    let reply = t
        .call("/addon/action", &file(with_modify(event(ALICE))))
        .await;
    assert_eq!(notification(&reply), Some("Filed to M-1"));
    let params = op_params(&reply, "undo").unwrap();
    assert_eq!(
        params["labels"], "Filed",
        "Undo carries the prefix it labelled with"
    );

    // Undo takes the label off, with the prefix it was put on with even when the firm
    // changed it meanwhile.
    docket::firm_settings::set_gmail_label_prefix(&tenant, Some("Other"), "test")
        .await
        .unwrap();
    let undo = |params: &std::collections::HashMap<String, String>| {
        let mut ev = with_op(with_modify(event(ALICE)), "undo");
        ev["commonEventObject"]["parameters"] = json!(params);
        ev
    };
    let reply = t.call("/addon/action", &undo(&params)).await;
    assert_eq!(notification(&reply), Some("Filing undone: M-1"), "{reply}");
    assert!(
        all_text(&reply).contains("Label Filed/M-1 taken off in Gmail"),
        "{reply}"
    );
    assert!(t.gmail.labels_on(MESSAGE_HEX).is_empty());
    docket::firm_settings::set_gmail_label_prefix(&tenant, Some("Filed"), "test")
        .await
        .unwrap();

    // A label another filing of the message still needs stays: case:M-1 shares the
    // reference of matter:M-1. A reference's `/` makes no label level.
    t.record(RecordKind::Case, "M-1", "Same reference", "", &[])
        .await;
    t.record(RecordKind::Case, "C/7", "Slash", "", &[]).await;
    let raw4 = mail(
        "dana@acme.com",
        "Two kinds",
        "label-4@acme.com",
        None,
        &[],
        &[],
    );
    t.gmail.serve(&raw4);
    let both = with_input(
        with_op(with_modify(event(ALICE)), "file"),
        "targets",
        &["matter:M-1", "case:M-1", "case:C/7"],
    );
    let reply = t.call("/addon/action", &both).await;
    assert!(
        all_text(&reply).contains("Labelled Filed/C-7, Filed/M-1 in Gmail"),
        "{reply}"
    );
    let mut params = op_params(&reply, "undo").unwrap();
    // Undo only the matter's filing (the newest to matter:M-1).
    let matter: String = sqlx::query(
        "SELECT f.id FROM filings f JOIN records r ON r.id = f.record_id \
         WHERE r.kind = 'matter' AND r.reference = 'M-1' ORDER BY f.filed_at DESC LIMIT 1",
    )
    .fetch_one(&tenant.db)
    .await
    .unwrap()
    .get(0);
    assert!(params["filings"].contains(&matter));
    params.insert("filings".into(), matter);
    let reply = t.call("/addon/action", &undo(&params)).await;
    assert!(
        notification(&reply).unwrap().starts_with("Filing undone"),
        "{reply}"
    );
    let mut on = t.gmail.labels_on(MESSAGE_HEX);
    on.sort();
    assert!(on.contains(&"Filed/M-1".to_string()), "{on:?}");

    // The scope not granted: filed, not labelled, and the card says why; Gmail not asked.
    let raw5 = mail(
        "dana@acme.com",
        "No scope",
        "label-5@acme.com",
        None,
        &[],
        &[],
    );
    t.gmail.serve(&raw5);
    let calls = t.gmail.labels.lock().unwrap().calls.len();
    let labels_before = t.gmail.labels_on(MESSAGE_HEX);
    let reply = t.call("/addon/action", &file(event(ALICE))).await;
    assert_eq!(notification(&reply), Some("Filed to M-1"));
    assert!(
        all_text(&reply).contains("needs the gmail.modify scope"),
        "{reply}"
    );
    assert_eq!(t.gmail.labels.lock().unwrap().calls.len(), calls);
    assert_eq!(t.gmail.labels_on(MESSAGE_HEX), labels_before);

    // Granted in the event, but Gmail refuses the token (the fake checks the scope).
    t.gmail.labels.lock().unwrap().modify_tokens.clear();
    let raw3 = mail(
        "dana@acme.com",
        "Refused",
        "label-3@acme.com",
        None,
        &[],
        &[],
    );
    t.gmail.serve(&raw3);
    let reply = t
        .call("/addon/action", &file(with_modify(event(ALICE))))
        .await;
    assert_eq!(notification(&reply), Some("Filed to M-1"));
    assert!(
        all_text(&reply).contains("needs the gmail.modify scope"),
        "{reply}"
    );
    assert_eq!(
        t.gmail.labels.lock().unwrap().calls.last().unwrap(),
        "GET labels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_gmail_error_card() {
    let t = Addon::sqlite().await;
    t.gmail.set(Reply::Status(404));
    let reply = t.call("/addon/message", &event(ALICE)).await;
    assert_eq!(subtitle(&reply), "Could not read this message from Gmail");
    assert_eq!(ops(&reply), ["open"], "the error card offers a retry");
    insta::assert_json_snapshot!("gmail_error", normalised(reply));
}

// ---------------------------------------------------------------------------------------------
// Escaping of user data in card HTML

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_data_is_escaped_in_card_html() {
    let t = Addon::sqlite().await;
    t.record(RecordKind::Matter, "X-5", "<b>Bold</b> & Co", "", &[])
        .await;
    let raw = msg(
        "dana@acme.com",
        "<script>alert(1)</script> M-1",
        "xss@acme.com",
    );
    t.file(ALICE, &raw, &["matter:X-5"], None).await;
    t.gmail.serve(&raw);

    // Already-filed line: the title is escaped; the subject's reference still suggests M-1.
    let reply = t.call("/addon/message", &event(ALICE)).await;
    let lines: Vec<&str> = widgets(&reply, "decoratedText")
        .into_iter()
        .map(|d| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines,
        ["<b>X-5</b> · &lt;b&gt;Bold&lt;/b&gt; &amp; Co"],
        "the record title must be escaped"
    );
    assert_eq!(values(&items(&reply, "targets")), ["matter:M-1"]);
    // The subject is plain text in the header (Google does not render HTML there).
    assert_eq!(subtitle(&reply), "<script>alert(1)</script> M-1");

    // A search query is echoed escaped.
    let ev = with_input(
        with_op(event(ALICE), "search"),
        "q",
        &["<script>alert(1)</script>"],
    );
    let reply = t.call("/addon/action", &ev).await;
    assert!(
        all_text(&reply)
            .contains("No open record matches “&lt;script&gt;alert(1)&lt;/script&gt;”."),
        "{reply}"
    );

    // A filing error that quotes the input is escaped too.
    let ev = with_input(
        with_op(event(ALICE), "file"),
        "targets",
        &["matter:<script>x</script>"],
    );
    let reply = t.call("/addon/action", &ev).await;
    assert!(
        all_text(&reply).contains("no record matter:&lt;script&gt;x&lt;/script&gt;"),
        "{reply}"
    );
}

// ---------------------------------------------------------------------------------------------
// Suggestion ranking (JSON API, and the top suggestion through the card)

addon_both_backends!(rank_thread_by_gmail_thread, |t: Addon| async move {
    let first = msg("erin@elsewhere.example", "Start", "start@elsewhere.example");
    t.file(
        ALICE,
        &first,
        &["case:C-1"],
        Some(thread_event_id().as_str()),
    )
    .await;
    let reply = msg("frank@other2.example", "Thoughts", "reply@other2.example");
    for thread in [THREAD_HEX.to_string(), thread_event_id()] {
        let ctx = t.context(ALICE, &reply, Some(&thread)).await;
        assert_eq!(suggested(&ctx), ["case:C-1"], "{ctx}");
        assert_eq!(reasons(&ctx, 0)[0], "same thread as a message filed to C-1");
        assert_eq!(sources(&ctx), ["thread"]);
        assert_eq!(ctx["suggestions"][0]["likelihood"], "likely", "{ctx}");
    }
    // Control: outside that thread, only alice's own habit is left (a weak guess).
    for thread in [None, Some("aaaa")] {
        let ctx = t.context(ALICE, &reply, thread).await;
        assert_eq!(sources(&ctx), ["history"], "{ctx}");
        assert_eq!(
            reasons(&ctx, 0),
            ["you filed 1 of your latest 1 filings here"]
        );
        assert_eq!(ctx["suggestions"][0]["likelihood"], "unsure", "{ctx}");
    }
});

addon_both_backends!(rank_thread_by_reply_headers, |t: Addon| async move {
    let first = msg("erin@elsewhere.example", "Start", "orig@elsewhere.example");
    t.file(ALICE, &first, &["case:C-1"], None).await;
    let by_reply = mail(
        "frank@other2.example",
        "Re: Start",
        "r1@other2.example",
        Some("orig@elsewhere.example"),
        &[],
        &[],
    );
    let by_refs = mail(
        "frank@other2.example",
        "Re: Re: Start",
        "r2@other2.example",
        None,
        &["unknown@nowhere.example", "orig@elsewhere.example"],
        &[],
    );
    for raw in [&by_reply, &by_refs] {
        let ctx = t.context(ALICE, raw, None).await;
        assert_eq!(suggested(&ctx), ["case:C-1"], "{ctx}");
        assert_eq!(reasons(&ctx, 0)[0], "same thread as a message filed to C-1");
        assert_eq!(sources(&ctx), ["thread"]);
    }
    let unrelated = mail(
        "frank@other2.example",
        "Re: Other",
        "r3@other2.example",
        Some("unknown@nowhere.example"),
        &[],
        &[],
    );
    let ctx = t.context(ALICE, &unrelated, None).await;
    assert!(!sources(&ctx).contains(&"thread"), "{ctx}");
});

addon_both_backends!(rank_subject_reference, |t: Addon| async move {
    let raw = msg(
        "erin@elsewhere.example",
        "Comments on K-1 (see also k-1)",
        "subj@elsewhere.example",
    );
    let ctx = t.context(ALICE, &raw, None).await;
    assert_eq!(suggested(&ctx), ["contract:K-1"], "{ctx}");
    assert_eq!(reasons(&ctx, 0), ["subject contains K-1"]);
    assert_eq!(sources(&ctx), ["subject"]);
    assert_eq!(ctx["suggestions"][0]["target"]["title"], "Globex MSA");
    // A reference no record has suggests nothing.
    let raw = msg(
        "erin@elsewhere.example",
        "About Q-77",
        "subj2@elsewhere.example",
    );
    assert!(suggested(&t.context(ALICE, &raw, None).await).is_empty());
});

addon_both_backends!(rank_contacts_address_before_domain, |t: Addon| async move {
    t.record(
        RecordKind::Matter,
        "M-7",
        "Dana Holdings",
        "Dana",
        &["dana@acme.com"],
    )
    .await;
    let raw = msg("dana@acme.com", "Hello", "contact@acme.com");
    let ctx = t.context(ALICE, &raw, None).await;
    assert_eq!(suggested(&ctx), ["matter:M-7", "matter:M-1"], "{ctx}");
    assert_eq!(
        reasons(&ctx, 0),
        ["sender dana@acme.com is a contact of Dana Holdings"]
    );
    assert_eq!(
        reasons(&ctx, 1),
        ["sender acme.com is a contact of Acme v. Widget"]
    );
    assert_eq!(sources(&ctx), ["contact", "contact"]);
    // Another sender at acme.com only matches the domain.
    let raw = msg("eve@acme.com", "Hello", "contact2@acme.com");
    let ctx = t.context(ALICE, &raw, None).await;
    assert_eq!(suggested(&ctx), ["matter:M-1"], "{ctx}");
    // Case never matters, in contacts or in headers, Unicode letters included (RFC 6532
    // addresses): the contact is stored as the model lowercases participants.
    t.record(
        RecordKind::Matter,
        "M-8",
        "Ünal estate",
        "Ünal",
        &["Jürgen.ÜNAL@Probate.EXAMPLE"],
    )
    .await;
    let raw = msg("JÜRGEN.ünal@probate.example", "Hallo", "u1@probate.example");
    let ctx = t.context(ALICE, &raw, None).await;
    assert_eq!(suggested(&ctx), ["matter:M-8"], "{ctx}");
    assert_eq!(
        reasons(&ctx, 0),
        ["sender jürgen.ünal@probate.example is a contact of Ünal estate"]
    );
});

addon_both_backends!(rank_own_history_with_sender, |t: Addon| async move {
    for i in 0..3 {
        let m = msg(
            "carl@other.example",
            &format!("Note {i}"),
            &format!("h{i}@other.example"),
        );
        t.file(ALICE, &m, &["contract:K-1"], None).await;
    }
    let m = msg("carl@other.example", "Aside", "h9@other.example");
    t.file(ALICE, &m, &["case:C-1"], None).await;
    let raw = msg("carl@other.example", "New", "h-new@other.example");
    let ctx = t.context(ALICE, &raw, None).await;
    assert_eq!(suggested(&ctx), ["contract:K-1", "case:C-1"], "{ctx}");
    assert!(reasons(&ctx, 0).contains(&"you filed mail with this sender here 3 times".into()));
    assert!(reasons(&ctx, 1).contains(&"you filed mail with this sender here once".into()));
    assert!(reasons(&ctx, 0)
        .contains(&"3 of 4 messages from carl@other.example were filed here".into()));
    assert!(
        reasons(&ctx, 1).contains(
            &"1 of 4 messages from carl@other.example was filed here, the latest too".into()
        ),
        "{ctx}"
    );
    assert_eq!(sources(&ctx), ["history", "history"]);
    // Adam (who may file too) gets the firm's history with this sender, not alice's own.
    let adam = t.context("adam@a.test", &raw, None).await;
    assert_eq!(adam["can_file"], true);
    assert_eq!(suggested(&adam), ["contract:K-1", "case:C-1"], "{adam}");
    assert!(
        !all_text(&adam["suggestions"]).contains("you filed"),
        "{adam}"
    );
});

addon_both_backends!(rank_order_across_sources, |t: Addon| async move {
    let raw = seed_mixed(&t).await;
    let ctx = t.context(ALICE, &raw, Some(THREAD_HEX)).await;
    // Neither alphabetical by kind nor by reference: thread, subject, then where all of
    // this sender's mail went (history) before a domain contact.
    assert_eq!(
        suggested(&ctx),
        ["matter:T-9", "contract:K-1", "case:C-1", "matter:M-1"],
        "{ctx}"
    );
    assert_eq!(sources(&ctx), ["thread", "subject", "history", "contact"]);
    assert_eq!(reasons(&ctx, 0)[0], "same thread as a message filed to T-9");
    assert_eq!(reasons(&ctx, 1)[0], "subject contains K-1");
    assert_eq!(
        reasons(&ctx, 2)[0],
        "all 2 messages from dana@acme.com were filed here"
    );
    assert!(reasons(&ctx, 2).contains(&"you filed mail with this sender here 2 times".into()));
    assert_eq!(
        reasons(&ctx, 3),
        ["sender acme.com is a contact of Acme v. Widget"]
    );
    assert_eq!(ctx["can_file"], true);
    assert_eq!(ctx["attachments"].as_array().unwrap().len(), 2);
    // The card shows the same top suggestion, preselected, with its reason.
    t.gmail.serve(&raw);
    let reply = t.call("/addon/message", &event(ALICE)).await;
    let top = &items(&reply, "targets")[0];
    assert_eq!(top.1, "matter:T-9");
    // "possible", not "likely": the subject names another record (K-1).
    assert_eq!(
        top.0,
        "T-9 · Thread Matter — possible: same thread as a message filed to T-9; you filed 1 of your latest 3 filings here"
    );
    assert!(top.2);
});

addon_both_backends!(rank_skips_filed_and_closed_records, |t: Addon| async move {
    let raw = msg("dana@acme.com", "M-1 and K-1", "skip@acme.com");
    let ctx = t.context(ALICE, &raw, None).await;
    assert_eq!(suggested(&ctx), ["matter:M-1", "contract:K-1"], "{ctx}");
    assert_eq!(
        reasons(&ctx, 0),
        [
            "subject contains M-1",
            "sender acme.com is a contact of Acme v. Widget"
        ]
    );
    // Filed to M-1: it is listed as filed, and no longer suggested.
    t.file(ALICE, &raw, &["matter:M-1"], None).await;
    let ctx = t.context(ALICE, &raw, None).await;
    assert_eq!(suggested(&ctx), ["contract:K-1"], "{ctx}");
    let filed = ctx["already_filed"].as_array().unwrap();
    assert_eq!(filed.len(), 1);
    assert_eq!(filed[0]["target"]["id"], "M-1");
    assert_eq!(filed[0]["filed_by"], ALICE);
    // Closed K-1: gone.
    t.close("contract", "K-1").await;
    let ctx = t.context(ALICE, &raw, None).await;
    assert!(suggested(&ctx).is_empty(), "{ctx}");
    // A closed record found by contact is not suggested either.
    let other = msg("dana@acme.com", "Hello", "skip2@acme.com");
    assert_eq!(
        suggested(&t.context(ALICE, &other, None).await),
        ["matter:M-1"]
    );
    t.close("matter", "M-1").await;
    assert!(suggested(&t.context(ALICE, &other, None).await).is_empty());
});

addon_both_backends!(rank_viewer_gets_no_suggestions, |t: Addon| async move {
    let raw = msg("dana@acme.com", "M-1 update", "viewer2@acme.com");
    let alice = t.context(ALICE, &raw, None).await;
    assert_eq!(suggested(&alice), ["matter:M-1"]);
    assert_eq!(alice["can_file"], true);
    let vera = t.context("vera@a.test", &raw, None).await;
    assert!(suggested(&vera).is_empty(), "{vera}");
    assert_eq!(vera["can_file"], false);
    // A viewer still sees where the message is filed.
    t.file(ALICE, &raw, &["matter:M-1"], None).await;
    let vera = t.context("vera@a.test", &raw, None).await;
    assert_eq!(vera["already_filed"][0]["target"]["id"], "M-1");
});

addon_both_backends!(rank_never_crosses_tenants, |t: Addon| async move {
    let raw = msg("dana@acme.com", "M-1 status and B-9", "iso@acme.com");
    let alice = t.context(ALICE, &raw, None).await;
    assert_eq!(suggested(&alice), ["matter:M-1"], "{alice}");
    assert_eq!(alice["suggestions"][0]["target"]["title"], "Acme v. Widget");
    let bob = t.context("bob@b.test", &raw, None).await;
    let titles: Vec<&str> = bob["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["target"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["B's own M-1", "Initech"], "{bob}");
    // Bob filing it does not show up as filed for alice (and vice versa).
    t.file("bob@b.test", &raw, &["matter:M-1"], None).await;
    let alice = t.context(ALICE, &raw, None).await;
    assert!(alice["already_filed"].as_array().unwrap().is_empty());
    assert!(!all_text(&alice).contains("B's own M-1") && !all_text(&alice).contains("Initech"));
    // Through the card, bob's top suggestion is his own M-1.
    t.gmail
        .serve(&msg("dana@acme.com", "M-1 status", "iso2@acme.com"));
    let reply = t.call("/addon/message", &event("bob@b.test")).await;
    let top = &items(&reply, "targets")[0];
    // (bob filed a message from dana above: his own history applies, alice's does not)
    assert!(
        top.0.starts_with("M-1 · B's own M-1 — ") && top.0.contains("subject contains M-1; "),
        "{}",
        top.0
    );
    let reply = t.call("/addon/message", &event(ALICE)).await;
    let top = &items(&reply, "targets")[0];
    assert!(
        top.0.starts_with("M-1 · Acme v. Widget — ") && top.0.contains("subject contains M-1"),
        "{}",
        top.0
    );
});

/// A message with the given From, To, Subject and plain-text body (and an attachment
/// name, when given).
fn raw_mail(
    from: &str,
    to: &str,
    subject: &str,
    id: &str,
    body: &str,
    attachment: Option<&str>,
) -> Vec<u8> {
    let head = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    );
    match attachment {
        None => format!("{head}Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"),
        Some(name) => format!(
            "{head}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n{body}\r\n--b\r\n\
             Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n%PDF-1.4\r\n--b--\r\n"
        ),
    }
    .into_bytes()
}

addon_both_backends!(
    rank_record_words_in_subject_attachments_and_body,
    |t: Addon| async move {
        for (reference, title) in [
            ("M-20", "Northwind lease"),
            ("M-21", "Northwind acquisition"),
            ("M-22", "Harbour lease"),
        ] {
            t.record(
                RecordKind::Matter,
                reference,
                title,
                "Northwind Traders",
                &[],
            )
            .await;
        }
        // The subject names the client and the topic of one of its records.
        let raw = raw_mail(
            "x@unknown.example",
            ALICE,
            "Northwind - lease renewal",
            "w1@unknown.example",
            "Hello",
            None,
        );
        let ctx = t.context(ALICE, &raw, None).await;
        assert_eq!(suggested(&ctx)[0], "matter:M-20", "{ctx}");
        assert_eq!(sources(&ctx)[0], "words");
        assert_eq!(reasons(&ctx, 0), ["subject mentions “northwind”, “lease”"]);
        // Nothing in the subject; the attachment's name tells.
        let raw = raw_mail(
            "x@unknown.example",
            ALICE,
            "Documents",
            "w2@unknown.example",
            "Hello",
            Some("Northwind_acquisition_v2.pdf"),
        );
        let ctx = t.context(ALICE, &raw, None).await;
        assert_eq!(suggested(&ctx)[0], "matter:M-21", "{ctx}");
        assert_eq!(
            reasons(&ctx, 0),
            ["attachment name mentions “northwind”, “acquisition”"]
        );
        // Only the body tells, and weaker.
        let raw = raw_mail(
            "x@unknown.example",
            ALICE,
            "Call",
            "w3@unknown.example",
            "About the Harbour lease, call me.",
            None,
        );
        let ctx = t.context(ALICE, &raw, None).await;
        assert_eq!(suggested(&ctx)[0], "matter:M-22", "{ctx}");
        assert_eq!(reasons(&ctx, 0), ["message mentions “harbour”, “lease”"]);
        assert_ne!(ctx["suggestions"][0]["likelihood"], "likely", "{ctx}");
        // Words alone never bring back a closed record.
        t.close("matter", "M-22").await;
        let ctx = t.context(ALICE, &raw, None).await;
        assert!(
            !suggested(&ctx).contains(&"matter:M-22".to_string()),
            "{ctx}"
        );
    }
);

addon_both_backends!(
    rank_firm_history_by_domain_picks_among_a_clients_records,
    |t: Addon| async move {
        // One client domain on three records: the contact alone cannot choose.
        for (reference, title) in [
            ("M-30", "Contoso one"),
            ("M-31", "Contoso two"),
            ("M-32", "Contoso three"),
        ] {
            t.record(
                RecordKind::Matter,
                reference,
                title,
                "Contoso",
                &["contoso.example"],
            )
            .await;
        }
        // A colleague filed two messages from Contoso people to M-31.
        for i in 0..2 {
            let m = raw_mail(
                &format!("p{i}@contoso.example"),
                "adam@a.test",
                "Hello",
                &format!("h{i}@contoso.example"),
                "Hi",
                None,
            );
            t.file("adam@a.test", &m, &["matter:M-31"], None).await;
        }
        // Someone new at Contoso writes to alice: the firm's history at the domain decides.
        let raw = raw_mail(
            "new@contoso.example",
            ALICE,
            "Question",
            "q@contoso.example",
            "Hi",
            None,
        );
        let ctx = t.context(ALICE, &raw, None).await;
        assert_eq!(
            suggested(&ctx)[..3],
            ["matter:M-31", "matter:M-30", "matter:M-32"],
            "{ctx}"
        );
        assert_eq!(sources(&ctx)[0], "history");
        assert_eq!(
            reasons(&ctx, 0)[0],
            "all 2 messages from contoso.example were filed here"
        );
        // Personal mail domains say nothing about a record.
        let m = raw_mail(
            "a@gmail.com",
            "adam@a.test",
            "Hello",
            "g1@gmail.com",
            "Hi",
            None,
        );
        t.file("adam@a.test", &m, &["matter:M-30"], None).await;
        let raw = raw_mail("b@gmail.com", ALICE, "Hello", "g2@gmail.com", "Hi", None);
        let ctx = t.context(ALICE, &raw, None).await;
        assert!(
            !suggested(&ctx).contains(&"matter:M-30".to_string()),
            "{ctx}"
        );
    }
);

addon_both_backends!(
    rank_participants_and_forwarded_senders,
    |t: Addon| async move {
        t.record(
            RecordKind::Matter,
            "M-40",
            "Dana Holdings",
            "Dana",
            &["dana@acme.com"],
        )
        .await;
        // Alice writes to the contact: the recipient counts (less than a sender).
        let out = raw_mail(
            ALICE,
            "Dana <dana@acme.com>",
            "Hello",
            "o1@a.test",
            "Hi",
            None,
        );
        let ctx = t.context(ALICE, &out, None).await;
        assert_eq!(suggested(&ctx)[0], "matter:M-40", "{ctx}");
        assert_eq!(
            reasons(&ctx, 0),
            ["participant dana@acme.com is a contact of Dana Holdings"]
        );
        // A colleague forwards Dana's email: the forwarded sender counts as a sender.
        let body = "FYI\r\n\r\n---------- Forwarded message ---------\r\nFrom: Dana <dana@acme.com>\r\nDate: Mon\r\n\r\nHi";
        let fwd = raw_mail("adam@a.test", ALICE, "Fwd: Hello", "f1@a.test", body, None);
        let ctx = t.context(ALICE, &fwd, None).await;
        assert_eq!(suggested(&ctx)[0], "matter:M-40", "{ctx}");
        assert_eq!(
            reasons(&ctx, 0)[0],
            "forwarded sender dana@acme.com is a contact of Dana Holdings"
        );
        // The firm's own people are never participants that count.
        let internal = raw_mail("adam@a.test", ALICE, "Lunch", "i1@a.test", "Hi", None);
        let ctx = t.context(ALICE, &internal, None).await;
        assert!(suggested(&ctx).is_empty(), "{ctx}");
    }
);

/// Puts record `reference` behind a team of adam alone (not firm-wide): alice may not
/// see it.
async fn only_adam_sees(t: &Addon, reference: &str) {
    let tenant = t.app.tenant(&t.app.firm_a).await;
    let id: String = sqlx::query_scalar("SELECT id FROM records WHERE reference = $1")
        .bind(reference)
        .fetch_one(&tenant.db)
        .await
        .unwrap();
    let adam = docket::directory::user_by_email(&tenant.db, "adam@a.test")
        .await
        .unwrap()
        .unwrap();
    let member = docket::access::Principal {
        kind: docket::access::PrincipalKind::User,
        id: adam.id,
    };
    let mut conn = tenant.db.acquire().await.unwrap();
    docket::access::write_team(&mut conn, &id, false, &[member], &[])
        .await
        .unwrap();
}

addon_both_backends!(
    rank_a_record_the_user_may_not_see_is_never_suggested,
    |t: Addon| async move {
        t.record(
            RecordKind::Matter,
            "W-50",
            "Walled lease",
            "Walled",
            &["walled.example", "ceo@walled.example"],
        )
        .await;
        // Every signal points at W-50: history (adam files there), reference, words, contacts.
        let earlier = raw_mail(
            "ceo@walled.example",
            "adam@a.test",
            "Walled lease",
            "e1@walled.example",
            "Hi",
            None,
        );
        t.file("adam@a.test", &earlier, &["matter:W-50"], None)
            .await;
        let raw = raw_mail(
            "ceo@walled.example",
            ALICE,
            "W-50 Walled lease",
            "e2@walled.example",
            "Walled lease",
            Some("Walled_lease.pdf"),
        );
        let ctx = t.context(ALICE, &raw, None).await;
        assert_eq!(suggested(&ctx)[0], "matter:W-50", "{ctx}");
        // A wall: only adam may see W-50.
        only_adam_sees(&t, "W-50").await;
        let ctx = t.context(ALICE, &raw, None).await;
        assert!(
            suggested(&ctx).is_empty() && !all_text(&ctx["suggestions"]).contains("Walled"),
            "{ctx}"
        );
        let ctx = t.context("adam@a.test", &raw, None).await;
        assert_eq!(suggested(&ctx)[0], "matter:W-50", "{ctx}");
        assert_eq!(ctx["suggestions"][0]["likelihood"], "likely", "{ctx}");
    }
);

addon_both_backends!(
    rank_a_record_the_user_may_not_see_never_changes_a_score,
    |t: Addon| async move {
        // A record alice may see, named in the subject by its client's word.
        t.record(RecordKind::Matter, "F-1", "Falcon supply", "Falcon", &[])
            .await;
        let raw = msg(
            "erin@elsewhere.example",
            "Falcon",
            "falcon1@elsewhere.example",
        );
        let before = t.context(ALICE, &raw, None).await;
        assert_eq!(suggested(&before), ["matter:F-1"], "{before}");
        // Another record with the same word, behind a wall alice is not inside.
        t.record(
            RecordKind::Matter,
            "F-2",
            "Falcon acquisition",
            "Falcon",
            &[],
        )
        .await;
        only_adam_sees(&t, "F-2").await;
        // Its words weigh in for adam, who may see it, never for alice: her answer is
        // the same to the last digit (score and confidence).
        let after = t.context(ALICE, &raw, None).await;
        assert_eq!(after["suggestions"], before["suggestions"], "{after}");
        let adams = t.context("adam@a.test", &raw, None).await;
        assert_eq!(suggested(&adams).len(), 2, "{adams}");
        assert_ne!(
            adams["suggestions"][0]["score"], before["suggestions"][0]["score"],
            "the word is commoner among the records adam may see: {adams}"
        );
    }
);

addon_both_backends!(
    rank_a_clients_own_domain_and_a_named_client,
    |t: Addon| async move {
        t.record(
            RecordKind::Matter,
            "M-40",
            "Ski lodge purchase",
            "Alpine Ski Ltd",
            &[],
        )
        .await;
        t.record(
            RecordKind::Matter,
            "M-41",
            "Office relocation",
            "Relecloud",
            &[],
        )
        .await;
        t.record(
            RecordKind::Case,
            "C-42",
            "Kestrel v. Castellan",
            "Kestrel",
            &[],
        )
        .await;
        // Nobody set a contact, nothing was filed, the subject says nothing: the sender's
        // domain is named after the client.
        for (from, id) in [
            ("anna@alpineski.example", "d1@alpineski.example"),
            ("ben@mail.alpineski.co.uk", "d2@alpineski.co.uk"),
        ] {
            let raw = raw_mail(from, ALICE, "Question", id, "Hi", None);
            let ctx = t.context(ALICE, &raw, None).await;
            assert_eq!(suggested(&ctx), ["matter:M-40"], "{ctx}");
            assert_eq!(sources(&ctx)[0], "contact");
            assert_eq!(
                reasons(&ctx, 0),
                ["sender writes from the domain of client Alpine Ski Ltd"]
            );
        }
        // Personal mail and look-alikes say nothing.
        for from in [
            "alpineski@gmail.com",
            "anna@alpineskis.example",
            // Both client words, the wrong way round.
            "anna@skialpine.example",
        ] {
            let raw = raw_mail(from, ALICE, "Question", "d3@x.example", "Hi", None);
            let ctx = t.context(ALICE, &raw, None).await;
            assert!(suggested(&ctx).is_empty(), "{ctx}");
        }
        // The subject names Kestrel and a topic only Relecloud's record has in its title:
        // Kestrel's record comes first, Relecloud's still shown.
        let raw = raw_mail(
            "x@unknown.example",
            ALICE,
            "Kestrel - office relocation",
            "k1@unknown.example",
            "Hello",
            None,
        );
        let ctx = t.context(ALICE, &raw, None).await;
        assert_eq!(suggested(&ctx), ["case:C-42", "matter:M-41"], "{ctx}");
        // Without a client named, the topic decides.
        let plain = raw_mail(
            "x@unknown.example",
            ALICE,
            "Office relocation",
            "k2@unknown.example",
            "Hello",
            None,
        );
        let topic_only = t.context(ALICE, &plain, None).await;
        assert_eq!(suggested(&topic_only), ["matter:M-41"], "{topic_only}");
        // A client named only in the body (a signature, quoted mail) changes nothing.
        let body = raw_mail(
            "x@unknown.example",
            ALICE,
            "Office relocation",
            "k3@unknown.example",
            "Regards, Kestrel",
            None,
        );
        let ctx = t.context(ALICE, &body, None).await;
        assert_eq!(suggested(&ctx)[0], "matter:M-41", "{ctx}");
        assert_eq!(
            ctx["suggestions"][0]["score"], topic_only["suggestions"][0]["score"],
            "{ctx}"
        );
        // Kestrel's only record behind a wall alice is not inside: for her the subject
        // names no client, and Relecloud's record keeps all its word points.
        only_adam_sees(&t, "C-42").await;
        let ctx = t.context(ALICE, &raw, None).await;
        assert_eq!(suggested(&ctx), ["matter:M-41"], "{ctx}");
        let topic_only = t.context(ALICE, &plain, None).await;
        assert_eq!(
            ctx["suggestions"][0]["score"], topic_only["suggestions"][0]["score"],
            "{ctx}"
        );
    }
);

addon_both_backends!(
    rank_index_is_rebuilt_when_its_version_changes,
    |t: Addon| async move {
        t.record(
            RecordKind::Matter,
            "M-60",
            "Fabrikam lease",
            "Fabrikam",
            &[],
        )
        .await;
        let m = raw_mail("x@fab.example", ALICE, "Hi", "r1@fab.example", "Hi", None);
        t.file(ALICE, &m, &["matter:M-60"], None).await;
        let tenant = t.app.tenant(&t.app.firm_a).await;
        let count = |sql: &'static str| {
            let db = tenant.db.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&db)
                    .await
                    .unwrap()
            }
        };
        let terms = count("SELECT COUNT(*) FROM record_terms").await;
        let parties = count("SELECT COUNT(*) FROM message_parties").await;
        assert!(terms > 0 && parties > 0);
        // Up to date: nothing to do.
        assert!(!docket::suggest::terms::ensure_index(&tenant.db)
            .await
            .unwrap());
        // Lost (or built by another version): rebuilt from the records and messages.
        for sql in [
            "DELETE FROM record_terms",
            "DELETE FROM message_parties",
            "DELETE FROM settings WHERE key = 'suggest_index_version'",
        ] {
            sqlx::query(sql).execute(&tenant.db).await.unwrap();
        }
        assert!(docket::suggest::terms::ensure_index(&tenant.db)
            .await
            .unwrap());
        assert_eq!(count("SELECT COUNT(*) FROM record_terms").await, terms);
        assert_eq!(count("SELECT COUNT(*) FROM message_parties").await, parties);
        let raw = raw_mail(
            "y@other.example",
            ALICE,
            "Fabrikam lease",
            "r2@other.example",
            "Hi",
            None,
        );
        assert_eq!(
            suggested(&t.context(ALICE, &raw, None).await)[0],
            "matter:M-60"
        );
    }
);

addon_both_backends!(records_search_api, |t: Addon| async move {
    t.record(
        RecordKind::Matter,
        "Q-3",
        "Lease dispute",
        "Umbrella Corp",
        &[],
    )
    .await;
    t.record(RecordKind::Matter, "Q-4", "Old acme file", "", &[])
        .await;
    t.close("matter", "Q-4").await;
    let records = |email: &'static str, query: &'static str| {
        let t = &t;
        async move {
            let resp = t
                .app
                .get(&t.app.token(email), &format!("/v1/records{query}"))
                .await;
            assert_eq!(resp.status(), 200, "{query}");
            let body: Value = resp.json().await.unwrap();
            body["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{}:{} {}",
                        r["kind"].as_str().unwrap(),
                        r["id"].as_str().unwrap(),
                        r["title"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    // Title match, open records only, own tenant only.
    assert_eq!(
        records(ALICE, "?q=acme").await,
        ["matter:M-1 Acme v. Widget"]
    );
    assert!(records("bob@b.test", "?q=acme").await.is_empty());
    assert_eq!(
        records("bob@b.test", "?q=M-1").await,
        ["matter:M-1 B's own M-1"]
    );
    // Client and title matches, case-insensitive.
    assert_eq!(
        records(ALICE, "?q=UMBRELLA").await,
        ["matter:Q-3 Lease dispute"]
    );
    assert_eq!(
        records(ALICE, "?q=globex").await,
        ["contract:K-1 Globex MSA"]
    );
    // LIKE wildcards are literal.
    assert!(records(ALICE, "?q=%25").await.is_empty());
    assert!(records(ALICE, "?q=_").await.is_empty());
    // No query: every open record, limited.
    assert_eq!(records(ALICE, "?limit=2").await.len(), 2);
    assert_eq!(records(ALICE, "").await.len(), 4);
    // A viewer may not file, so gets no records to file to.
    assert!(records("vera@a.test", "?q=acme").await.is_empty());
    for bad in ["?limit=0", "?limit=201", "?limit=x", "?other=1"] {
        let resp = t
            .app
            .get(&t.app.token(ALICE), &format!("/v1/records{bad}"))
            .await;
        let (status, body) = problem(resp).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let resp = t
        .app
        .http
        .get(format!("{}/v1/records?q=acme", t.app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await.0, 401);
});

// ---------------------------------------------------------------------------------------------
// Token checks

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_token_failures_are_401() {
    let t = Addon::sqlite().await;
    t.gmail.serve(&msg("dana@acme.com", "M-1", "sys@acme.com"));
    let ev = event(ALICE);
    let before = t.counts_a().await;

    for path in ["/addon/homepage", "/addon/message", "/addon/action"] {
        t.refused(path, None, &ev).await;
        t.refused(path, Some(""), &ev).await;
    }
    let path = "/addon/message";
    let sign = |f: &dyn Fn(&mut Value)| {
        let mut c = system_claims(path);
        f(&mut c);
        google().sign(&c)
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "aud of another endpoint",
            sign(&|c: &mut Value| c["aud"] = json!(format!("{PUBLIC_URL}/addon/homepage"))),
        ),
        (
            "aud of another host",
            sign(&|c: &mut Value| c["aud"] = json!("https://elsewhere.test/addon/message")),
        ),
        (
            "another service account",
            sign(&|c: &mut Value| {
                c["email"] = json!("service-999@gcp-sa-gsuiteaddons.iam.gserviceaccount.com")
            }),
        ),
        (
            "email not verified",
            sign(&|c: &mut Value| c["email_verified"] = json!(false)),
        ),
        (
            "no email",
            sign(&|c: &mut Value| {
                c.as_object_mut().unwrap().remove("email");
            }),
        ),
        (
            "expired",
            sign(&|c: &mut Value| {
                c["iat"] = json!(now() - 4000);
                c["exp"] = json!(now() - 300);
            }),
        ),
        ("forged", impostor().sign(&system_claims(path))),
        ("a user ID token", user_token(ALICE)),
    ];
    for (why, token) in &cases {
        let body = t.refused(path, Some(token), &ev).await;
        assert!(body["detail"].is_string(), "{why}: {body}");
    }
    // The same event with a good system token works (the cases differ only in the token).
    let ok = t.post(path, Some(&system_token(path)), &ev).await;
    assert_eq!(ok.status(), 200, "control");
    assert_eq!(t.gmail.seen().len(), 1, "only the accepted call read mail");
    assert_eq!(t.counts_a().await.1, before.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_token_failures_are_401() {
    let t = Addon::sqlite().await;
    t.gmail.serve(&msg("dana@acme.com", "M-1", "usr@acme.com"));
    let path = "/addon/message";
    let with_user = |token: Option<String>| {
        let mut ev = event(ALICE);
        match token {
            Some(tok) => ev["authorizationEventObject"]["userIdToken"] = json!(tok),
            None => {
                ev["authorizationEventObject"]
                    .as_object_mut()
                    .unwrap()
                    .remove("userIdToken");
            }
        }
        ev
    };
    let expired = {
        let mut c = google().user_claims(ALICE, ADDON_CLIENT, 3600);
        c["iat"] = json!(now() - 4000);
        c["exp"] = json!(now() - 300);
        google().sign(&c)
    };
    let cases: Vec<(&str, Value)> = vec![
        ("missing", with_user(None)),
        ("empty", with_user(Some(String::new()))),
        (
            "the /v1 API's client",
            with_user(Some(google().user_token(ALICE, CLIENT_ID, 3600))),
        ),
        ("expired", with_user(Some(expired))),
        (
            "forged",
            with_user(Some(impostor().sign(&google().user_claims(
                ALICE,
                ADDON_CLIENT,
                3600,
            )))),
        ),
        (
            "the system token as user token",
            with_user(Some(system_token(path))),
        ),
    ];
    for (why, ev) in &cases {
        for p in [path, "/addon/homepage", "/addon/action"] {
            let body = t.refused(p, Some(&system_token(p)), ev).await;
            assert!(body["detail"].is_string(), "{why}: {body}");
        }
    }
    assert!(t.gmail.seen().is_empty(), "no mail read for a refused user");

    // A genuine Google user of no tenant gets a card that says what to do (Gmail would show
    // a bare error for a 403), and no mail is read.
    let ev = with_user(Some(user_token("zed@nowhere.test")));
    let r = t.call(path, &ev).await;
    assert_eq!(subtitle(&r), "You are not set up in docket yet", "{r}");
    assert!(all_text(&r).contains("administrator"), "{r}");
    assert!(t.gmail.seen().is_empty());
    // Control: alice's own token passes.
    t.call(path, &with_user(Some(user_token(ALICE)))).await;
}

/// A person docket does not let in — not (yet) a user of the firm, suspended, or of no firm —
/// gets a card saying what to do from every add-on endpoint (HTTP 200: Gmail shows only a
/// bare error for anything else), and from a button the card replaces the whole stack, so
/// the card of whoever used the sidebar before never stays on screen under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_docket_does_not_let_in_gets_a_card_saying_what_to_do() {
    let t = Addon::sqlite().await;
    t.gmail.serve(&msg("dana@acme.com", "M-1", "who@acme.com"));
    let db = t.app.tenant(&t.app.firm_a).await;
    sqlx::query("UPDATE users SET status = 'suspended' WHERE email = 'vera@a.test'")
        .execute(&db.db)
        .await
        .unwrap();
    for (email, title, says) in [
        (
            "newbie@a.test",
            "You are not set up in docket yet",
            "add you",
        ),
        (
            "vera@a.test",
            "Your docket access is suspended",
            "reactivate",
        ),
        (
            "zed@nowhere.test",
            "You are not set up in docket yet",
            "administrator",
        ),
    ] {
        let mut ev = event(email);
        ev["authorizationEventObject"]["userIdToken"] = json!(user_token(email));
        for path in ["/addon/homepage", "/addon/message", "/addon/action"] {
            let r = t.call(path, &with_op(ev.clone(), "file")).await;
            assert_eq!(subtitle(&r), title, "{email} {path}: {r}");
            assert!(all_text(&r).contains(says), "{email} {path}: {r}");
            let navs = r["renderActions"]["action"]["navigations"]
                .as_array()
                .unwrap();
            if path == "/addon/action" {
                assert_eq!(navs[0], json!({ "popToRoot": true }), "{r}");
                assert!(navs[1].get("updateCard").is_some(), "{r}");
            } else {
                assert!(navs[0].get("pushCard").is_some(), "{r}");
            }
        }
    }
    assert!(
        t.gmail.seen().is_empty(),
        "no mail read for someone not let in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_scope_requests_it() {
    let t = Addon::sqlite().await;
    t.gmail
        .serve(&msg("dana@acme.com", "M-1", "scope@acme.com"));
    let mut ev = event(ALICE);
    ev["authorizationEventObject"]["authorizedScopes"] = json!([SCOPE_EXECUTE, SCOPE_EMAIL]);
    for path in ["/addon/message", "/addon/action"] {
        let resp = t.post(path, Some(&system_token(path)), &ev).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let scopes = body["requesting_google_scopes"]["scopes"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"));
        assert!(scopes.contains(&json!(SCOPE_MESSAGE)), "{body}");
        assert!(body.get("renderActions").is_none());
    }
    assert!(t.gmail.seen().is_empty());
    // The homepage does not need the message scope...
    let home = t.call("/addon/homepage", &ev).await;
    assert!(home.get("renderActions").is_some());
    // ...but every endpoint needs userinfo.email (for the user ID token).
    ev["authorizationEventObject"]["authorizedScopes"] = json!([SCOPE_EXECUTE, SCOPE_MESSAGE]);
    let resp = t
        .post(
            "/addon/homepage",
            Some(&system_token("/addon/homepage")),
            &ev,
        )
        .await;
    let body: Value = resp.json().await.unwrap();
    assert!(body["requesting_google_scopes"]["scopes"]
        .as_array()
        .unwrap()
        .contains(&json!(SCOPE_EMAIL)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unconfigured_addon_is_503() {
    let app = TestApp::spawn_with(Backend::Sqlite, |_| {}).await.unwrap();
    for path in ["/addon/homepage", "/addon/message", "/addon/action"] {
        let resp = app
            .http
            .post(format!("{}{path}", app.base))
            .bearer_auth(system_token(path))
            .json(&event(ALICE))
            .send()
            .await
            .unwrap();
        let (status, body) = problem(resp).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["type"], "urn:docket:problem:addon-not-configured");
    }
}

// ---------------------------------------------------------------------------------------------
// The Gmail API call

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gmail_request_carries_both_tokens_and_the_hex_id() {
    let t = Addon::sqlite().await;
    t.gmail
        .serve(&msg("dana@acme.com", "Tokens check", "tok@acme.com"));
    let reply = t.call("/addon/message", &event(ALICE)).await;
    assert_eq!(subtitle(&reply), "Tokens check");
    let seen = t.gmail.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.id, MESSAGE_HEX);
    assert_eq!(s.query.as_deref(), Some("format=raw"));
    assert_eq!(
        s.authorization.as_deref(),
        Some(format!("Bearer {USER_OAUTH}").as_str())
    );
    assert_eq!(s.access_token.as_deref(), Some(MESSAGE_TOKEN));
    // A message id that is not a Gmail id is never sent to Gmail.
    let mut ev = event(ALICE);
    ev["gmail"]["messageId"] = json!("../../etc/passwd");
    let reply = t.call("/addon/message", &ev).await;
    assert_eq!(subtitle(&reply), "Could not read this message from Gmail");
    assert_eq!(t.gmail.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gmail_raw_padded_and_unpadded() {
    let t = Addon::sqlite().await;
    // A message whose base64 needs padding.
    let raw = (0..3)
        .map(|i| {
            msg(
                "dana@acme.com",
                &format!("Padding check{}", "!".repeat(i)),
                "pad@acme.com",
            )
        })
        .find(|r| r.len() % 3 != 0)
        .unwrap();
    let padded = base64::engine::general_purpose::URL_SAFE.encode(&raw);
    let unpadded = b64url(&raw);
    assert!(padded.ends_with('=') && !unpadded.ends_with('='));
    for encoded in [padded, unpadded] {
        t.gmail.set(Reply::Message { raw: encoded });
        let reply = t.call("/addon/message", &event(ALICE)).await;
        assert!(subtitle(&reply).starts_with("Padding check"), "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gmail_errors_become_cards() {
    let t = Addon::sqlite().await;
    let cases: Vec<(Reply, &str)> = vec![
        (
            Reply::Status(401),
            "Google did not accept docket's access to this message",
        ),
        (
            Reply::Status(403),
            "docket is not allowed to read this message",
        ),
        (Reply::Status(404), "the message no longer exists in Gmail"),
        (Reply::Status(429), "Gmail is rate-limiting requests"),
        (
            Reply::Status(500),
            "Gmail is unavailable right now (status 500)",
        ),
        (
            Reply::Status(503),
            "Gmail is unavailable right now (status 503)",
        ),
        (Reply::Body("{not json"), "Gmail's answer could not be read"),
        (Reply::Body(r#"{"id": "x"}"#), "could not be read"),
        (
            Reply::Message {
                raw: "@@not base64@@".into(),
            },
            "could not be read",
        ),
    ];
    let before = t.counts_a().await;
    for (reply, expect) in cases {
        t.gmail.set(reply.clone());
        for (path, ev) in [
            ("/addon/message", event(ALICE)),
            ("/addon/action", with_op(event(ALICE), "open")),
            (
                "/addon/action",
                with_input(with_op(event(ALICE), "file"), "targets", &["matter:M-1"]),
            ),
        ] {
            let r = t.call(path, &ev).await;
            assert_eq!(
                subtitle(&r),
                "Could not read this message from Gmail",
                "{reply:?} {path}: {r}"
            );
            let text = all_text(card(&r));
            assert!(text.contains(expect), "{reply:?} {path}: {text}");
            assert_eq!(ops(&r), ["open"], "a retry button");
        }
    }
    assert_eq!(t.counts_a().await, before, "nothing filed on a Gmail error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gmail_timeout_becomes_a_card() {
    let t = Addon::sqlite().await;
    t.gmail.set(Reply::Sleep(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let r = t.call("/addon/message", &event(ALICE)).await;
    let took = started.elapsed();
    assert_eq!(subtitle(&r), "Could not read this message from Gmail");
    assert!(all_text(card(&r)).contains("Gmail did not answer in time; try again"));
    assert!(
        took >= Duration::from_secs(2),
        "answered after {took:?}, before the 2 s timeout"
    );
}

// ---------------------------------------------------------------------------------------------
// Filing from the card, end to end

addon_both_backends!(file_action_end_to_end, |t: Addon| async move {
    let raw = mail(
        "dana@acme.com",
        "Signed exhibit",
        "e2e@acme.com",
        None,
        &[],
        &two_attachments(),
    );
    t.gmail.serve(&raw);
    let filing_event = |targets: &[&str]| {
        with_input(
            with_input(
                with_input(with_op(event(ALICE), "file"), "targets", targets),
                "attachments",
                &["1"],
            ),
            "note",
            &["Kept the exhibit only"],
        )
    };
    let token = t.app.token(ALICE);
    let filings = || async {
        let resp = t.app.get(&token, "/v1/filings?target=matter:M-1").await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["filings"].as_array().unwrap().clone()
    };
    let before = t.counts_a().await;

    // No targets: a notification, nothing read or written.
    let r = t
        .call("/addon/action", &with_op(event(ALICE), "file"))
        .await;
    assert_eq!(
        notification(&r),
        Some("Choose at least one record to file to.")
    );
    assert!(r["renderActions"]["action"].get("navigations").is_none());
    assert_eq!(t.counts_a().await, before);
    assert!(t.gmail.seen().is_empty());

    // Another tenant's record: an error card, nothing written.
    let r = t
        .call("/addon/action", &filing_event(&["matter:B-9"]))
        .await;
    assert_eq!(subtitle(&r), "Not filed");
    assert_eq!(notification(&r), Some("Not filed"));
    assert!(all_text(card(&r)).contains("no record matter:B-9"), "{r}");
    assert_eq!(t.counts_a().await, before);

    // File to M-1 with attachment 1 only.
    let r = t
        .call("/addon/action", &filing_event(&["matter:M-1"]))
        .await;
    assert_eq!(notification(&r), Some("Filed to M-1"));
    let lines = widgets(&r, "decoratedText");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["topLabel"], "Filed to");
    assert_eq!(lines[0]["text"], "<b>M-1</b> · Acme v. Widget");
    assert_eq!(lines[0]["bottomLabel"], "1 attachment kept");
    let list = filings().await;
    assert_eq!(list.len(), 1, "{list:?}");
    let f = &list[0];
    let kept: Vec<i64> = f["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["index"].as_i64().unwrap())
        .collect();
    assert_eq!(kept, [1]);
    assert_eq!(f["attachments"][0]["name"], "exhibit.png");
    assert_eq!(f["message"]["gmail_message_id"], MESSAGE_HEX);
    assert_eq!(f["message"]["gmail_thread_id"], THREAD_HEX);
    assert_eq!(f["note"], "Kept the exhibit only");
    assert_eq!(f["filed_by"], ALICE);
    let seen = t.gmail.seen();
    assert!(seen
        .iter()
        .all(|s| s.id == MESSAGE_HEX && s.access_token.as_deref() == Some(MESSAGE_TOKEN)));

    // Again: already filed, still one filing.
    let after_first = t.counts_a().await;
    let r = t
        .call("/addon/action", &filing_event(&["matter:M-1"]))
        .await;
    assert_eq!(notification(&r), Some("Already filed to M-1"));
    assert_eq!(
        widgets(&r, "decoratedText")[0]["topLabel"],
        "Already filed to"
    );
    assert_eq!(filings().await.len(), 1);
    assert_eq!(t.counts_a().await.1, after_first.1);

    // The message card now lists the filing.
    let r = t.call("/addon/message", &event(ALICE)).await;
    assert!(all_text(&r).contains("Already filed"));
    assert!(!values(&items(&r, "targets")).contains(&"matter:M-1"));

    // A viewer's file action is refused with an explanation, nothing written.
    let mut ev = filing_event(&["contract:K-1"]);
    ev["authorizationEventObject"]["userIdToken"] = json!(user_token("vera@a.test"));
    let before_vera = t.counts_a().await;
    let r = t.call("/addon/action", &ev).await;
    assert_eq!(notification(&r), Some("Not filed"));
    assert!(all_text(card(&r)).contains("may not file"), "{r}");
    assert_eq!(t.counts_a().await.1, before_vera.1);
});

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn view_link_opens_the_filing_while_valid() {
    let t = Addon::sqlite().await;
    let raw = mail(
        "dana@acme.com",
        "Exhibit <b>A</b>",
        "view@acme.com",
        None,
        &[],
        &two_attachments(),
    );
    t.gmail.serve(&raw);
    let ev = with_input(with_op(event(ALICE), "file"), "targets", &["matter:M-1"]);
    let r = t.call("/addon/action", &ev).await;
    let lines = widgets(&r, "decoratedText");
    let url = lines[0]["button"]["onClick"]["openLink"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        url.starts_with(&format!("{PUBLIC_URL}/view/filings/")),
        "{url}"
    );
    let local = url.replacen(PUBLIC_URL, &t.app.base, 1);
    let http = reqwest::Client::new();

    let page = http.get(&local).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("base-uri 'none'"), "{csp}");
    // Without its capability the link is a problem, not axum's plain-text rejection.
    let (path_only, _) = local.split_once('?').unwrap();
    let bare = http.get(path_only).send().await.unwrap();
    assert_eq!(bare.status(), 400);
    assert_eq!(bare.headers()["content-type"], "application/problem+json");
    let p: Value = bare.json().await.unwrap();
    assert_eq!(p["type"], "urn:docket:problem:invalid-link", "{p}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Exhibit &lt;b&gt;A&lt;/b&gt;")
            || html.contains("Exhibit &#60;b&#62;A&#60;/b&#62;"),
        "escaped subject: {html}"
    );
    assert!(!html.contains("<b>A</b>"));
    assert!(html.contains("M-1</span> — Acme v. Widget"), "{html}");
    // Laid out like the console: its stylesheet, human dates (the exact value on hover),
    // no empty rows, and the body in a sandboxed frame.
    assert!(
        html.contains("href=\"/console/static/console.css\""),
        "{html}"
    );
    assert!(
        csp.contains("style-src 'self'") && csp.contains("frame-src 'self'"),
        "{csp}"
    );
    assert!(html.contains(" UTC</time>"), "{html}");
    // Dates in the firm's time zone once it has one.
    let a = t.app.tenant(&t.app.firm_a).await;
    docket::suggest::set_setting(&a.db, "time_zone", "Europe/Paris", "test")
        .await
        .unwrap();
    let paris = http.get(&local).send().await.unwrap().text().await.unwrap();
    assert!(paris.contains(" CET</time>"), "{paris}");
    assert!(!html.contains("<th>Cc</th>"), "no empty Cc row: {html}");
    assert!(html.contains("<th>Date</th><td>"), "{html}");
    let (page_path, page_query) = local.split_once('?').unwrap();
    let frame = http
        .get(format!("{page_path}/body?{page_query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(frame.status(), 200);
    let frame_csp = frame.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(frame_csp.starts_with("sandbox"), "{frame_csp}");
    let frame_text = frame.text().await.unwrap();
    assert!(
        frame_text.contains("Please&#32;see&#32;below."),
        "{frame_text}"
    );
    let frame_src = format!("src=\"{}/body?", page_path.trim_start_matches(&t.app.base));
    assert!(html.contains(&frame_src), "{html}");
    // The original message downloads byte-identical with the same capability.
    let (path, query) = local.split_once('?').unwrap();
    let got = http
        .get(format!("{path}/raw?{query}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], &raw[..]);

    // A forged or altered capability, or one used for another filing, is refused.
    let mut forged = local.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(http.get(&forged).send().await.unwrap().status(), 404);
    let other = local.replacen(
        "/view/filings/",
        "/view/filings/0123456789abcdef0123456789abcdef?x=",
        1,
    );
    assert_ne!(http.get(&other).send().await.unwrap().status(), 200);
    // Once the user is suspended, the link stops working.
    let db = &t.app.tenant(&t.app.firm_a).await.db;
    sqlx::query("UPDATE users SET status = 'suspended' WHERE email = $1")
        .bind(ALICE)
        .execute(db)
        .await
        .unwrap();
    assert_eq!(http.get(&local).send().await.unwrap().status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Routing rules in the card

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_show_as_suggestions_and_auto_filings_in_the_cards() {
    rule_in_cards("Acme disputes", "Acme disputes").await;
}

/// An admin's rule name is plain text in the filer's card: markup in it is escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_names_are_escaped_in_the_cards() {
    rule_in_cards(
        r#"<a href="https://evil.test">Acme</a> & co"#,
        r#"&lt;a href="https://evil.test"&gt;Acme&lt;/a&gt; &amp; co"#,
    )
    .await;
}

async fn rule_in_cards(name: &str, shown: &str) {
    let t = Addon::sqlite().await;
    let db = t.app.tenant(&t.app.firm_a).await;
    let case_id: String =
        sqlx::query("SELECT id FROM records WHERE kind = 'case' AND reference = 'C-1'")
            .fetch_one(&db.db)
            .await
            .unwrap()
            .get(0);
    sqlx::query(
        "INSERT INTO rules (id, position, name, enabled, conditions, action, targets, stop, created_at, updated_at) \
         VALUES ('r1', 1, $3, 1, $1, 'auto_file', $2, 0, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
    )
    .bind(r#"[{"field":"from","op":"domain","value":"acme.com","negate":false}]"#)
    .bind(json!([case_id]).to_string())
    .bind(name)
    .execute(&db.db)
    .await
    .unwrap();
    let raw = mail(
        "dana@acme.com",
        "Rule test",
        "rule@acme.com",
        None,
        &[],
        &[],
    );
    t.gmail.serve(&raw);

    // The rule's target is said apart, never a choice (ticked or not).
    let r = t.call("/addon/message", &event(ALICE)).await;
    assert!(
        all_text(card(&r)).contains(&format!(
            "When you file this message, firm rule “{shown}” also files it to <b>C-1</b>"
        )),
        "{r}"
    );
    assert!(!values(&items(&r, "targets")).contains(&"case:C-1"), "{r}");

    let ev = with_input(with_op(event(ALICE), "file"), "targets", &["matter:M-1"]);
    let r = t.call("/addon/action", &ev).await;
    let lines = widgets(&r, "decoratedText");
    assert_eq!(lines.len(), 2, "{r}");
    assert_eq!(lines[1]["topLabel"], "Also filed automatically to");
    assert_eq!(lines[1]["text"], "<b>C-1</b> · Smith v. Jones");
    assert_eq!(
        lines[1]["bottomLabel"],
        format!("by the firm's rule “{shown}”").as_str()
    );
    assert!(!r.to_string().contains("<a href"), "{r}");

    // Reopened, the rule's filing says which rule filed it, not the system user.
    let r = t.call("/addon/message", &event(ALICE)).await;
    let text = all_text(card(&r));
    assert!(text.contains(&format!("by firm rule “{shown}” · ")), "{r}");
    assert!(!text.contains("system@docket.invalid"), "{r}");
    // A search marks the records the message is already in.
    let ev = with_input(with_op(event(ALICE), "search"), "q", &["1"]);
    let r = t.call("/addon/action", &ev).await;
    let found = items(&r, "found");
    assert!(
        found
            .iter()
            .any(|(text, v, _)| v == "case:C-1" && text.ends_with("(already filed)")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(text, v, _)| v == "matter:M-1" && text.ends_with("(already filed)")),
        "{found:?}"
    );
}
