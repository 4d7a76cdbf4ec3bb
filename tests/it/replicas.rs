//! Several replicas: two real `docket serve` processes, each with a data dir of its own, on
//! one PostgreSQL catalogue and one S3 bucket. The same message filed through both at once
//! is one message with one filing per target and a contiguous audit chain; sessions, CSRF
//! tokens, the per-IP throttle and account lockouts hold across them; a tenant closed
//! elsewhere is refused by both within `TENANT_STATUS_TTL`. (The firm here: alice filer,
//! adam admin, vera viewer; M-1, C-1.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use docket::directory::{self, RecordKind, Role};
use docket::tenancy::{Catalog, TenantInfo};
use serde_json::{json, Value};
use sqlx::Row;

use crate::common::*;

const PW: &str = "Glacier-Tulip-Kettle-93";

/// One `docket serve` process; killed when dropped.
pub struct Replica {
    child: Child,
    pub base: String,
    _data: tempfile::TempDir,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two replicas' shared ground: the catalogue (as a third process would see it) and the
/// settings every replica gets.
pub struct Cluster {
    pub catalog: Catalog,
    pub firm: TenantInfo,
    env: Vec<(String, String)>,
    _pg: PgDb,
    _dir: tempfile::TempDir,
    _jwks: JwksServer,
}

impl Cluster {
    /// A PostgreSQL catalogue, a bucket and one firm (alice filer, adam admin; M-1, C-1);
    /// None (skip) when PostgreSQL or the S3 server is missing outside CI.
    pub async fn new(extra_env: &[(&str, &str)]) -> Option<Cluster> {
        if !pg_available().await {
            return None;
        }
        let endpoint = s3_endpoint()?;
        let pg = PgDb {
            catalog_name: format!("docket_test_{}", hex::encode(rand_bytes::<5>())),
        };
        let mut url = url::Url::parse(
            &std::env::var("DOCKET_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        )
        .unwrap();
        url.set_path(&format!("/{}", pg.catalog_name));
        let dir = tempfile::tempdir().unwrap();
        let jwks = JwksServer::start(google().jwks()).await;
        let mut config = test_config(dir.path(), &jwks.url, Some(url.to_string()));
        let bucket = fresh_bucket(&mut config, &endpoint).await;
        let key = docket::app::master_key(&config, docket::Mode::Serve, false).unwrap();
        let catalog = docket::app::open_catalog(&config, key).await.unwrap();
        let firm = catalog
            .create_tenant("Firm A", &["a.test".into()], "test")
            .await
            .unwrap();
        let t = catalog.tenant(&firm.id).await.unwrap();
        for (email, role) in [
            ("alice@a.test", Role::Filer),
            ("adam@a.test", Role::Admin),
            ("vera@a.test", Role::Viewer),
        ] {
            directory::add_user(&t.db, email, "", role, "test")
                .await
                .unwrap();
        }
        for (kind, r) in [(RecordKind::Matter, "M-1"), (RecordKind::Case, "C-1")] {
            directory::add_record(&t.db, kind, r, r, "", &[], "test")
                .await
                .unwrap();
        }
        let master = secrecy::ExposeSecret::expose_secret(config.master_key.as_ref().unwrap());
        let mut env: Vec<(String, String)> = [
            ("DOCKET_LISTEN", "127.0.0.1:0"),
            ("DOCKET_DATABASE__URL", url.as_str()),
            ("DOCKET_MASTER_KEY", master),
            ("DOCKET_GOOGLE__JWKS_URL", &jwks.url),
            ("DOCKET_GOOGLE__CLIENT_IDS", CLIENT_ID),
            ("DOCKET_METRICS__LISTEN", "off"),
            ("DOCKET_LOG__FORMAT", "json"),
            ("DOCKET_STORAGE__BACKEND", "s3"),
            ("DOCKET_STORAGE__S3__BUCKET", &bucket),
            ("DOCKET_STORAGE__S3__ENDPOINT", &endpoint),
            ("DOCKET_STORAGE__S3__ACCESS_KEY_ID", "testing"),
            ("DOCKET_STORAGE__S3__SECRET_ACCESS_KEY", "testing"),
            ("DOCKET_STORAGE__S3__ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Some(Cluster {
            catalog,
            firm,
            env,
            _pg: pg,
            _dir: dir,
            _jwks: jwks,
        })
    }

    /// Starts one more `docket serve` (the binary `DOCKET_BIN` names, else this build's).
    pub fn replica(&self) -> Replica {
        let bin =
            std::env::var("DOCKET_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_docket").into());
        let data = tempfile::tempdir().unwrap();
        // A data dir the cluster's settings name is shared by every replica.
        let data_dir = self
            .env
            .iter()
            .find(|(k, _)| k == "DOCKET_DATA_DIR")
            .map(|(_, v)| std::path::PathBuf::from(v))
            .unwrap_or_else(|| data.path().to_path_buf());
        let mut cmd = Command::new(bin);
        // docket refuses DOCKET_* names it does not know, such as the tests' own.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DOCKET_")) {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .arg("serve")
            .envs(self.env.iter().cloned())
            .env("DOCKET_DATA_DIR", data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docket serve starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if !sent && v["fields"]["message"] == "docket listening" {
                    sent = tx
                        .send(Ok(v["fields"]["addr"].as_str().unwrap().to_string()))
                        .is_ok();
                } else if !sent && !line.contains("\"level\":\"INFO\"") {
                    eprintln!("replica: {line}");
                }
            }
            let _ = tx.send(Err("docket serve exited before listening"));
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(addr)) => addr,
            other => {
                // Not left running behind a failed test.
                let _ = child.kill();
                let _ = child.wait();
                panic!("docket serve did not report its address: {other:?}");
            }
        };
        Replica {
            child,
            base: format!("http://{addr}"),
            _data: data,
        }
    }

    pub async fn tenant(&self) -> std::sync::Arc<docket::tenancy::Tenant> {
        self.catalog.tenant(&self.firm.id).await.unwrap()
    }
}

pub async fn file(http: &reqwest::Client, r: &Replica, raw: &[u8], targets: &[&str]) -> u16 {
    http.post(format!("{}/v1/filings", r.base))
        .bearer_auth(google().user_token("alice@a.test", CLIENT_ID, 3600))
        .json(&filing_body(raw, targets))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn login(http: &reqwest::Client, r: &Replica, email: &str, pw: &str) -> reqwest::Response {
    http.post(format!("{}/v1/admin/session", r.base))
        .json(&json!({"email": email, "password": pw}))
        .send()
        .await
        .unwrap()
}

async fn post(
    http: &reqwest::Client,
    r: &Replica,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> reqwest::Response {
    let mut req = http
        .post(format!("{}{path}", r.base))
        .header("cookie", cookie)
        .json(&json!({}));
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    req.send().await.unwrap()
}

fn session_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("docket_session="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

async fn count(t: &docket::tenancy::Tenant, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(&t.db).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_database_and_bucket_act_as_one() {
    let Some(cluster) = Cluster::new(&[("DOCKET_ADMIN__THROTTLE_FAILURES_PER_IP", "5")]).await
    else {
        return;
    };
    let (a, b) = (cluster.replica(), cluster.replica());
    let http = reqwest::Client::new();
    let t = cluster.tenant().await;

    // The same message through both at once, again and again.
    for i in 0..6 {
        let raw = email(
            &format!("Both replicas {i}"),
            Some(&format!("<both-{i}@acme.com>")),
            &[("a.pdf", "application/pdf", noise(3000 + i, i as u8))],
        );
        let targets = ["matter:M-1", "case:C-1"];
        let (sa, sb) = tokio::join!(
            file(&http, &a, &raw, &targets),
            file(&http, &b, &raw, &targets)
        );
        assert!(
            [200, 201].contains(&sa) && [200, 201].contains(&sb),
            "{sa} {sb}"
        );
    }
    assert_eq!(count(&t, "SELECT COUNT(*) FROM messages").await, 6);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM filings").await, 12);
    let seqs: Vec<i64> = sqlx::query("SELECT seq FROM audit_log ORDER BY seq")
        .fetch_all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "contiguous"
    );
    assert!(matches!(
        docket::audit::verify(&t.db).await.unwrap(),
        docket::audit::ChainStatus::Intact { .. }
    ));
    // What one replica filed, the other serves, byte for byte (the blobs are in the bucket).
    let filed: Vec<String> = sqlx::query("SELECT id FROM filings")
        .fetch_all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let token = google().user_token("alice@a.test", CLIENT_ID, 3600);
    for (id, r) in filed.iter().zip([&a, &b].into_iter().cycle()) {
        let got = http
            .get(format!("{}/v1/filings/{id}/attachments/0", r.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{id} via {}", r.base);
    }

    // A session begun on one replica continues on the other, CSRF token and all.
    let adam = user_id(&t, "adam@a.test").await;
    let mut conn = t.db.acquire().await.unwrap();
    docket::accounts::password::set_password(&mut conn, &adam, PW)
        .await
        .unwrap();
    drop(conn);
    let r = login(&http, &a, "adam@a.test", PW).await;
    assert_eq!(r.status(), 200);
    let pending = session_cookie(&r);
    let csrf = r.json::<Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(
        &http,
        &b,
        "/v1/admin/session/totp/enrol",
        &pending,
        Some(&csrf),
    )
    .await;
    assert_eq!(
        r.status(),
        200,
        "the pending session is known to the other replica"
    );
    let url = r.json::<Value>().await.unwrap()["otpauth_url"]
        .as_str()
        .unwrap()
        .to_string();
    let code = totp_rs::TOTP::from_url(&url)
        .unwrap()
        .generate_current()
        .unwrap();
    let r = http
        .post(format!("{}/v1/admin/session/totp/confirm", a.base))
        .header("cookie", &pending)
        .header("x-csrf-token", &csrf)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let full = session_cookie(&r);
    let csrf = r.json::<Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let me = http
        .get(format!("{}/v1/admin/me", b.base))
        .header("cookie", &full)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "signed in on A, known on B");
    let vera = user_id(&t, "vera@a.test").await;
    let suspend = format!("/v1/admin/users/{vera}/suspend");
    let (s, p) = problem(post(&http, &b, &suspend, &full, None).await).await;
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:docket:problem:csrf"))
    );
    let (s, _) = problem(post(&http, &b, &suspend, &full, Some("wrong")).await).await;
    assert_eq!(s, 403);
    assert_eq!(
        post(&http, &b, &suspend, &full, Some(&csrf)).await.status(),
        200
    );
    let r = http
        .delete(format!("{}/v1/admin/session", a.base))
        .header("cookie", &full)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "sign-out: {}", r.status());
    let me = http
        .get(format!("{}/v1/admin/me", b.base))
        .header("cookie", &full)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401, "signed out on A, gone on B");

    // Failures count across replicas: three for one account lock it; the per-IP limit
    // (5 here) is reached by failures spread over both.
    let mut conn = t.db.acquire().await.unwrap();
    let bob = directory::add_user(&t.db, "bob@a.test", "", Role::Admin, "test")
        .await
        .unwrap();
    docket::accounts::password::set_password(&mut conn, &bob.id, PW)
        .await
        .unwrap();
    drop(conn);
    for r in [&a, &b, &a] {
        let (s, _) = problem(login(&http, r, "bob@a.test", "wrong password 1").await).await;
        assert_eq!(s, 401);
    }
    let bob_now = directory::user_by_email(&t.db, "bob@a.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bob_now.status, "suspended",
        "locked after 3 failures over two replicas"
    );
    for r in [&b, &a] {
        let (s, _) = problem(login(&http, r, "nobody@a.test", "wrong password 2").await).await;
        assert_eq!(s, 401);
    }
    for r in [&a, &b] {
        let (s, p) = problem(login(&http, r, "adam@a.test", PW).await).await;
        assert_eq!(
            (s, p["type"].as_str()),
            (429, Some("urn:docket:problem:throttled"))
        );
    }

    // Closed through a third process (the operator's CLI): both refuse within the bound.
    let raw = email("After closure", Some("<after-closure@acme.com>"), &[]);
    assert_eq!(file(&http, &a, &raw, &["matter:M-1"]).await, 201);
    let closed = Instant::now();
    cluster
        .catalog
        .terminate(&cluster.firm.id, "operator", 90)
        .await
        .unwrap();
    let mut refused = [None, None];
    while refused.iter().any(Option::is_none) {
        for (i, r) in [&a, &b].into_iter().enumerate() {
            if refused[i].is_none() && file(&http, r, &raw, &["case:C-1"]).await == 403 {
                refused[i] = Some(closed.elapsed());
            }
        }
        let bound = docket::tenancy::TENANT_STATUS_TTL + Duration::from_secs(2);
        assert!(
            closed.elapsed() < bound,
            "still served after {bound:?}: {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("refused by the replicas after {refused:?}");
    // Once refused, refused for good: nothing more is filed through either.
    let filings = count(&t, "SELECT COUNT(*) FROM filings").await;
    let raw = email("Later still", Some("<later-still@acme.com>"), &[]);
    for r in [&a, &b] {
        assert_eq!(file(&http, r, &raw, &["matter:M-1"]).await, 403);
    }
    assert_eq!(count(&t, "SELECT COUNT(*) FROM filings").await, filings);
}

/// Filings per second through 1 and then 2 replicas on PostgreSQL (a benchmark, not a
/// check; run by hand, ideally against a release binary):
///
/// `DOCKET_BIN=target/release/docket cargo test --test it replicas::throughput -- --ignored --nocapture`
///
/// `DOCKET_BENCH_FILINGS` (default 2000) messages of ~4 KiB with one attachment, from
/// `DOCKET_BENCH_CLIENTS` (32) concurrent clients spread over the replicas, each replica with
/// `DOCKET_BENCH_POOL` (8) connections per tenant. Blobs go to the S3 test server, or with
/// `DOCKET_BENCH_SHARED_DIR=1` to one local data dir all replicas share (as on NFS).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run by hand"]
async fn throughput() {
    let n: usize = std::env::var("DOCKET_BENCH_FILINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    for replicas in [1, 2] {
        let pool = std::env::var("DOCKET_BENCH_POOL").unwrap_or_else(|_| "8".into());
        let mut env = vec![
            ("DOCKET_LOG__FILTER", "warn,docket::cli=info"),
            ("DOCKET_DATABASE__MAX_CONNECTIONS_PER_TENANT", pool.as_str()),
        ];
        let shared = std::env::var_os("DOCKET_BENCH_SHARED_DIR").is_some();
        if shared {
            env.push(("DOCKET_STORAGE__BACKEND", "local"));
        }
        let Some(mut cluster) = Cluster::new(&env).await else {
            return;
        };
        if shared {
            // The replicas share the data dir the firm was created in.
            let dir = cluster._dir.path().to_str().unwrap().to_string();
            cluster.env.push(("DOCKET_DATA_DIR".into(), dir));
        }
        let started: Vec<Replica> = (0..replicas).map(|_| cluster.replica()).collect();
        let bases: Vec<String> = started.iter().map(|r| r.base.clone()).collect();
        let http = reqwest::Client::new();
        let token = google().user_token("alice@a.test", CLIENT_ID, 3600);
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t0 = Instant::now();
        let clients: usize = std::env::var("DOCKET_BENCH_CLIENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32);
        let workers: Vec<_> = (0..clients)
            .map(|w| {
                let (http, token, next, bases) =
                    (http.clone(), token.clone(), next.clone(), bases.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        let raw = email(
                            &format!("Bench {i}"),
                            Some(&format!("<bench-{i}@acme.com>")),
                            &[("a.pdf", "application/pdf", noise(3000, (i % 251) as u8))],
                        );
                        let r = http
                            .post(format!("{}/v1/filings", bases[(w + i) % bases.len()]))
                            .bearer_auth(&token)
                            .json(&filing_body(&raw, &["matter:M-1"]))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 201);
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "{replicas} replica(s): {n} filings in {secs:.2} s = {:.0} filings/s",
            n as f64 / secs
        );
    }
}
