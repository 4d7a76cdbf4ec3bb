//! Shared test harness. `TestApp::spawn(Backend)` starts docket with two seeded tenants:
//! "Firm A" (a.test: alice filer, adam admin, vera viewer; matter:M-1, case:C-1, contract:K-1)
//! and "Firm B" (b.test: bob filer; matter:M-1, matter:B-9).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::routing::get;
use base64::Engine;
use docket::dev::TokenIssuer;
use docket::directory::{self, RecordKind, Role};
use docket::http::AppState;
use docket::tenancy::{Tenant, TenantInfo};
use docket::{Application, Config, Mode};
use serde_json::{json, Value};

pub const GOOGLE_ISS: &str = "https://accounts.google.com";
pub const CLIENT_ID: &str = "test-client.apps.googleusercontent.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body on both backends: `both_backends!(name, |app| async move { ... })`.
/// (`@variants` is the shared expansion; `$extra` holds further test functions.)
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        $crate::both_backends!(@variants $name, $body, {});
    };
    (@variants $name:ident, $body:expr, { $($extra:tt)* }) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app = $crate::common::TestApp::spawn($crate::common::Backend::Sqlite)
                    .await
                    .unwrap();
                ($body)(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(app) =
                    $crate::common::TestApp::spawn($crate::common::Backend::Postgres).await
                else {
                    return;
                };
                ($body)(app).await;
            }
            $($extra)*
        }
    };
}

/// Like [`both_backends!`], plus a third variant with the blobs in a bucket of the S3
/// test server (SQLite catalogue): `all_stores!(name, |app| async move { ... })`.
#[macro_export]
macro_rules! all_stores {
    ($name:ident, $body:expr) => {
        $crate::both_backends!(@variants $name, $body, {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn s3() {
                let Some(app) =
                    $crate::common::TestApp::spawn_s3($crate::common::Backend::Sqlite).await
                else {
                    return;
                };
                ($body)(app).await;
            }
        });
    };
}

/// The S3-compatible test server's URL (`DOCKET_TEST_S3`; `scripts/test` starts moto's
/// server mode), or None (skip) outside CI. In CI (`CI` set) a missing server fails.
pub fn s3_endpoint() -> Option<String> {
    match std::env::var("DOCKET_TEST_S3") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var_os("CI").is_some() => {
            panic!("an S3-compatible server is required in CI: DOCKET_TEST_S3 is not set (scripts/test starts one)")
        }
        _ => {
            eprintln!("SKIP: DOCKET_TEST_S3 is not set (scripts/test starts moto's S3 server); object-storage variants are skipped locally");
            None
        }
    }
}

/// Creates a fresh bucket on the S3 test server and points `config` at it.
pub async fn fresh_bucket(config: &mut Config, endpoint: &str) -> String {
    let bucket = format!("docket-test-{}", hex::encode(rand_bytes::<6>()));
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("the S3 test server answers");
    assert!(
        r.status().is_success(),
        "creating bucket {bucket}: {}",
        r.status()
    );
    config.storage = s3_storage(endpoint, &bucket);
    bucket
}

/// Storage configuration for `bucket` on an S3-compatible server at `endpoint`.
pub fn s3_storage(endpoint: &str, bucket: &str) -> docket::config::StorageConfig {
    docket::config::StorageConfig {
        backend: docket::config::StorageBackend::S3,
        s3: docket::config::S3Config {
            bucket: Some(bucket.into()),
            endpoint: Some(endpoint.into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".to_string().into()),
            allow_http: true,
            ..Default::default()
        },
    }
}

/// The sealed bytes of a tenant's blob, as its store holds them.
pub async fn sealed_blob(t: &Tenant, id: &str) -> Vec<u8> {
    let (store, id) = (t.blobs.store().clone(), id.to_string());
    tokio::task::spawn_blocking(move || store.read_sealed(&id))
        .await
        .unwrap()
        .unwrap()
}

/// Replaces a tenant's blob in its store with `bytes` (damage, as a disk or a person could).
pub async fn overwrite_blob(t: &Tenant, id: &str, bytes: Vec<u8>) {
    let (store, id) = (t.blobs.store().clone(), id.to_string());
    tokio::task::spawn_blocking(move || {
        store.write_sealed(&id, bytes.len() as u64, &mut |w| w.write_all(&bytes))
    })
    .await
    .unwrap()
    .unwrap()
}

/// Stores `plaintext` as a blob of tenant `t` (off the runtime: stores block).
pub async fn put_blob(t: &Tenant, plaintext: &[u8]) -> String {
    let (blobs, bytes) = (t.blobs.clone(), plaintext.to_vec());
    tokio::task::spawn_blocking(move || blobs.put(&bytes))
        .await
        .unwrap()
        .unwrap()
}

/// The test stand-in for Google's signing key (one per test binary; RSA keygen is slow).
pub fn google() -> &'static TokenIssuer {
    static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| TokenIssuer::generate(GOOGLE_ISS).expect("RSA key"))
}

/// A loopback JWKS endpoint serving whatever `keys` holds, counting fetches.
pub struct JwksServer {
    pub url: String,
    pub keys: Arc<Mutex<Value>>,
    pub fetches: Arc<AtomicUsize>,
    pub fail: Arc<std::sync::atomic::AtomicBool>,
}

impl JwksServer {
    pub async fn start(initial: Value) -> JwksServer {
        let keys = Arc::new(Mutex::new(initial));
        let fetches = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (k, f, fl) = (keys.clone(), fetches.clone(), fail.clone());
        let router = axum::Router::new().route(
            "/oauth2/v3/certs",
            get(move || {
                let (k, f, fl) = (k.clone(), f.clone(), fl.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    if fl.load(Ordering::SeqCst) {
                        return (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [("cache-control", "no-store")],
                            String::new(),
                        );
                    }
                    let body = k.lock().unwrap().to_string();
                    (
                        axum::http::StatusCode::OK,
                        [("cache-control", "public, max-age=3600")],
                        body,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        JwksServer {
            url: format!("http://{addr}/oauth2/v3/certs"),
            keys,
            fetches,
            fail,
        }
    }
}

pub struct PgDb {
    pub catalog_name: String,
}

pub fn pg_admin_url() -> String {
    std::env::var("DOCKET_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh catalogue database name on the test server, or None (skip) when PostgreSQL is
/// unreachable outside CI. In CI (`CI` set) an unreachable server fails the test.
pub async fn pg_available() -> bool {
    static OK: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *OK.get_or_init(|| async {
        sqlx::any::install_default_drivers();
        use sqlx::Connection;
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), sqlx::AnyConnection::connect(&pg_admin_url())).await;
        match r {
            Ok(Ok(_)) => true,
            other => {
                let why = format!("{:?}", other.err().map(|_| "timeout").unwrap_or("connection refused"));
                if std::env::var_os("CI").is_some() {
                    panic!("PostgreSQL is required in CI but unreachable at {}: {why}", pg_admin_url());
                }
                eprintln!("SKIP: PostgreSQL unreachable at {} ({why}); PostgreSQL variants are skipped locally", pg_admin_url());
                false
            }
        }
    })
    .await
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let prefix = self.catalog_name.clone();
        // Drop runs outside any async context guarantee: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::{Connection, Executor, Row};
                let mut c = match sqlx::AnyConnection::connect(&pg_admin_url()).await {
                    Ok(c) => c,
                    Err(e) => return eprintln!("cleanup of {prefix}: cannot connect: {e}"),
                };
                let like = format!("{prefix}%");
                let dbs =
                    sqlx::query("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
                        .bind(&like)
                        .fetch_all(&mut c)
                        .await
                        .expect("listing test databases");
                for r in dbs {
                    let n: String = r.get(0);
                    if let Err(e) = c
                        .execute(format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)").as_str())
                        .await
                    {
                        eprintln!("cleanup: drop database {n}: {e}");
                    }
                }
                let roles = sqlx::query("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1")
                    .bind(&like)
                    .fetch_all(&mut c)
                    .await
                    .expect("listing test databases");
                for r in roles {
                    let n: String = r.get(0);
                    let _ = c
                        .execute(format!("DROP ROLE IF EXISTS \"{n}\"").as_str())
                        .await;
                }
            })
        })
        .join();
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The plain-HTTP redirect listener (`tls.redirect_http_listen`), when configured.
    pub redirect_addr: Option<SocketAddr>,
    /// The metrics listener (`metrics.listen`).
    pub metrics_addr: Option<SocketAddr>,
    pub base: String,
    pub state: AppState,
    pub http: reqwest::Client,
    pub jwks: JwksServer,
    pub firm_a: TenantInfo,
    pub firm_b: TenantInfo,
    pub backend: Backend,
    pub config: Config,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    // Field order matters: the PostgreSQL databases are dropped after the server stops.
    pub pg: Option<PgDb>,
    pub dir: tempfile::TempDir,
}

pub fn test_config(dir: &std::path::Path, jwks_url: &str, database_url: Option<String>) -> Config {
    let defaults = Config::default();
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        database: docket::config::DatabaseConfig {
            url: database_url,
            ..defaults.database.clone()
        },
        master_key: Some(hex::encode(rand_bytes::<32>()).into()),
        metrics: docket::config::MetricsConfig {
            listen: "127.0.0.1:0".into(),
        },
        google: docket::config::GoogleConfig {
            jwks_url: Some(jwks_url.to_string()),
            client_ids: vec![CLIENT_ID.to_string()],
            ..defaults.google.clone()
        },
        ..defaults
    }
}

pub fn rand_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Like [`TestApp::spawn`], with the blobs in a fresh bucket of the S3 test server;
    /// None (skip) when there is none outside CI.
    pub async fn spawn_s3(backend: Backend) -> Option<TestApp> {
        let endpoint = s3_endpoint()?;
        let mut storage = docket::config::Config::default();
        fresh_bucket(&mut storage, &endpoint).await;
        Self::spawn_with(backend, move |c| c.storage = storage.storage).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                if !pg_available().await {
                    return None;
                }
                Some(PgDb {
                    catalog_name: format!("docket_test_{}", hex::encode(rand_bytes::<5>())),
                })
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let jwks = JwksServer::start(google().jwks()).await;
        let db_url = pg.as_ref().map(|p| {
            let mut u = url::Url::parse(&pg_admin_url()).unwrap();
            u.set_path(&format!("/{}", p.catalog_name));
            u.to_string()
        });
        let mut config = test_config(dir.path(), &jwks.url, db_url);
        tweak(&mut config);
        let app = Application::build(config.clone(), Mode::Serve)
            .await
            .expect("app builds");
        let addr = app.local_addr();
        let redirect_addr = app.redirect_addr();
        let metrics_addr = app.metrics_addr();
        let state = app.state();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            app.run(async {
                let _ = rx.await;
            })
            .await
            .unwrap()
        });
        let catalog = &state.catalog;
        let firm_a = catalog
            .create_tenant("Firm A", &["a.test".into()], "test")
            .await
            .unwrap();
        let firm_b = catalog
            .create_tenant("Firm B", &["b.test".into()], "test")
            .await
            .unwrap();
        let a = catalog.tenant(&firm_a.id).await.unwrap();
        let b = catalog.tenant(&firm_b.id).await.unwrap();
        for (t, email, role) in [
            (&a, "alice@a.test", Role::Filer),
            (&a, "adam@a.test", Role::Admin),
            (&a, "vera@a.test", Role::Viewer),
            (&b, "bob@b.test", Role::Filer),
        ] {
            directory::add_user(&t.db, email, "", role, "test")
                .await
                .unwrap();
        }
        for (t, kind, r, title, contacts) in [
            (
                &a,
                RecordKind::Matter,
                "M-1",
                "Acme v. Widget",
                vec!["acme.com".to_string()],
            ),
            (&a, RecordKind::Case, "C-1", "Smith v. Jones", vec![]),
            (&a, RecordKind::Contract, "K-1", "Globex MSA", vec![]),
            (&b, RecordKind::Matter, "M-1", "B's own M-1", vec![]),
            (&b, RecordKind::Matter, "B-9", "Initech", vec![]),
        ] {
            directory::add_record(&t.db, kind, r, title, "", &contacts, "test")
                .await
                .unwrap();
        }
        Some(TestApp {
            base: format!("http://{addr}"),
            addr,
            redirect_addr,
            metrics_addr,
            state,
            http: reqwest::Client::new(),
            jwks,
            firm_a,
            firm_b,
            backend,
            config,
            shutdown: Some(tx),
            server: Some(server),
            pg,
            dir,
        })
    }

    pub async fn tenant(&self, info: &TenantInfo) -> Arc<Tenant> {
        self.state.catalog.tenant(&info.id).await.unwrap()
    }

    /// A valid user ID token as Google would issue it for our client id.
    pub fn token(&self, email: &str) -> String {
        google().user_token(email, CLIENT_ID, 3600)
    }

    pub async fn post_filing(&self, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/filings", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Stops the server and waits for it (pools closed).
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }

    /// After [`TestApp::stop`]: a new server on the same configuration and data (its own
    /// catalogue), at a new address.
    pub async fn start_again(&mut self) {
        let app = Application::build(self.config.clone(), Mode::Serve)
            .await
            .expect("app builds");
        self.addr = app.local_addr();
        self.base = format!("http://{}", self.addr);
        self.metrics_addr = app.metrics_addr();
        self.state = app.state();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.shutdown = Some(tx);
        self.server = Some(tokio::spawn(async move {
            app.run(async {
                let _ = rx.await;
            })
            .await
            .unwrap()
        }));
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A scrape of `app`'s `/metrics`, as text.
pub async fn scrape_text(app: &TestApp) -> String {
    let addr = app.metrics_addr.expect("a metrics listener");
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of `series` (exactly as written, labels included) in a scrape of `app`'s
/// `/metrics`.
pub async fn scraped(app: &TestApp, series: &str) -> f64 {
    let text = scrape_text(app).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A filing body for `raw` to `targets` ("matter:M-1" form).
pub fn filing_body(raw: &[u8], targets: &[&str]) -> Value {
    let targets: Vec<Value> = targets
        .iter()
        .map(|t| {
            let (k, id) = t.split_once(':').unwrap();
            json!({"kind": k, "id": id})
        })
        .collect();
    json!({"raw": b64url(raw), "targets": targets})
}

/// A message built with mail-builder: text body plus the given attachments.
pub fn email(
    subject: &str,
    message_id: Option<&str>,
    attachments: &[(&str, &str, Vec<u8>)],
) -> Vec<u8> {
    use mail_builder::MessageBuilder;
    let mut m = MessageBuilder::new()
        .from(("Dana Client", "dana@acme.com"))
        .to(vec![("Alice", "alice@a.test")])
        .cc(vec![("Bob", "bob@b.test")])
        .subject(subject)
        .date(1_763_000_000i64)
        .text_body("Please see attached.\r\n");
    if let Some(mid) = message_id {
        m = m.message_id(mid);
    }
    for (name, ct, bytes) in attachments {
        m = m.attachment(ct.to_string(), name.to_string(), bytes.clone());
    }
    m.write_to_vec().unwrap()
}

/// Pseudo-random bytes of a given size (deterministic per seed).
pub fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9 ^ seed as u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect()
}

pub async fn problem(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(
        ct, "application/problem+json",
        "status {status}, body {body}"
    );
    (status, body)
}

/// Row counts that must not move when a request is rejected.
pub async fn counts(t: &Tenant) -> (i64, i64, i64, i64) {
    use sqlx::Row;
    let q = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(&t.db)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    (
        q("SELECT COUNT(*) FROM messages").await,
        q("SELECT COUNT(*) FROM filings").await,
        q("SELECT COUNT(*) FROM audit_log").await,
        q("SELECT COUNT(*) FROM message_attachments").await,
    )
}

/// Number of blob files under a tenant's storage root.
pub fn blob_files(t: &Tenant) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(t.blobs.root())
}

/// The id of record `kind:reference` of `t` (panics when there is none).
pub async fn record_id(t: &Tenant, kind: &str, reference: &str) -> String {
    use sqlx::Row;
    sqlx::query("SELECT id FROM records WHERE kind = $1 AND reference = $2")
        .bind(kind)
        .bind(reference)
        .fetch_one(&t.db)
        .await
        .unwrap_or_else(|e| panic!("no record {kind}:{reference}: {e}"))
        .get(0)
}

/// The id of an existing user of `t`.
pub async fn user_id(t: &Tenant, email: &str) -> String {
    directory::user_by_email(&t.db, email)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no user {email}"))
        .id
}

/// A 30-day personal access token with `scopes` for an existing user of `t`.
pub async fn access_token(
    t: &Tenant,
    email: &str,
    scopes: &[docket::accounts::tokens::Scope],
) -> String {
    let uid = user_id(t, email).await;
    docket::accounts::tokens::create(&t.db, &t.id, &uid, "test", scopes, 30, "test")
        .await
        .unwrap()
        .0
}

/// How a hostile message nests: `multipart/mixed` inside `multipart/mixed`, or
/// `message/rfc822` inside `message/rfc822`.
#[derive(Debug, Clone, Copy)]
pub enum Nesting {
    Multipart,
    Rfc822,
}

/// A message nested `levels` deep (10^6 levels stay under the default 50 MiB limit).
pub fn nested_message(kind: Nesting, levels: usize) -> Vec<u8> {
    let level: &[u8] = match kind {
        Nesting::Multipart => b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n",
        Nesting::Rfc822 => b"Content-Type: message/rfc822\r\n\r\n",
    };
    let mut m =
        b"From: mallory@evil.test\r\nTo: alice@a.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
            .to_vec();
    m.reserve(level.len() * levels + 16);
    for _ in 0..levels {
        m.extend_from_slice(level);
    }
    m.extend_from_slice(b"\r\nhello\r\n");
    m
}

/// The nesting depths every route that parses mail is tried with.
pub const HOSTILE_DEPTHS: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// Asserts the process still serves: `/healthz` answers 200.
pub async fn assert_alive(app: &TestApp, after: &str) {
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("docket is gone after {after}: {e}"));
    assert_eq!(resp.status(), 200, "after {after}");
}

/// A complete (second factor passed, just signed in) session of an existing user of `t`:
/// (`cookie` header value, CSRF token).
pub async fn admin_session(app: &TestApp, t: &Tenant, email: &str) -> (String, String) {
    let uid = user_id(t, email).await;
    let mut conn = t.db.acquire().await.unwrap();
    let (token, s) = docket::accounts::session::create(
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
        format!(
            "docket_session={}",
            docket::accounts::session::cookie_value(&t.id, &token)
        ),
        s.csrf,
    )
}

/// A console page as a browser with `cookie` gets it: (status, body).
pub async fn page(app: &TestApp, cookie: &str, path: &str) -> (u16, String) {
    let resp = app
        .http
        .get(format!("{}{}", app.base, path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Posts a console form without following redirects: (status, body or, for a 303, where
/// it sends).
pub async fn post_form(
    app: &TestApp,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let body = serde_urlencoded::to_string(form).unwrap();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .post(format!("{}{}", app.base, path))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let loc = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    (status, if status == 303 { loc } else { text })
}
