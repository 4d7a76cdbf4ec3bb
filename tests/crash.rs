//! kill -9 during a filing load, then restart: every acknowledged filing is present and
//! reads back byte-identical, there are no half-written rows, and the audit chain verifies.

#[path = "it/common.rs"]
mod common;
use common::*;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An acknowledged filing: its id and the exact bytes sent.
type Acked = (String, Vec<u8>);

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn docket(dir: &std::path::Path, key: &str, jwks: &str, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docket"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DOCKET_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("DOCKET_DATA_DIR", dir)
        .env("DOCKET_MASTER_KEY", key)
        .env("DOCKET_GOOGLE__JWKS_URL", jwks)
        .env("DOCKET_GOOGLE__CLIENT_IDS", CLIENT_ID)
        .env("DOCKET_LISTEN", format!("127.0.0.1:{port}"))
        .env("DOCKET_METRICS__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null());
    c
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(dir: &std::path::Path, key: &str, jwks: &str) -> (Server, String) {
    let port = free_port();
    let mut c = docket(dir, key, jwks, port);
    c.arg("serve").stdout(Stdio::null()).stderr(Stdio::null());
    let server = Server(c.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let key = hex::encode(rand_bytes::<32>());
    let jwks = JwksServer::start(google().jwks()).await;
    let p = dir.path();
    let mut c = docket(p, &key, &jwks.url, 0);
    c.args(["tenant", "create", "--name", "Firm", "--domain", "a.test"]);
    run_ok(c);
    let mut c = docket(p, &key, &jwks.url, 0);
    c.args([
        "user",
        "add",
        "--tenant",
        "a.test",
        "--email",
        "alice@a.test",
        "--role",
        "filer",
    ]);
    run_ok(c);
    let mut c = docket(p, &key, &jwks.url, 0);
    c.args([
        "record",
        "add",
        "--tenant",
        "a.test",
        "--kind",
        "matter",
        "--reference",
        "M-1",
        "--title",
        "Acme",
    ]);
    run_ok(c);

    let (server, base) = start(p, &key, &jwks.url).await;
    let token = google().user_token("alice@a.test", CLIENT_ID, 3600);
    let acked: Arc<Mutex<Vec<Acked>>> = Default::default();
    let http = reqwest::Client::new();
    // Eight clients file distinct messages until the server dies under them.
    let mut clients = Vec::new();
    for c in 0..8u8 {
        let (http, base, token, acked) = (http.clone(), base.clone(), token.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..1000u32 {
                let raw = email(
                    &format!("crash {c}-{i}"),
                    Some(&format!("<crash-{c}-{i}@acme.com>")),
                    &[("a.bin", "application/octet-stream", noise(20_000, c))],
                );
                let resp = http
                    .post(format!("{base}/v1/filings"))
                    .bearer_auth(&token)
                    .json(&filing_body(&raw, &["matter:M-1"]))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 201 => {
                        let v: serde_json::Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => return, // cut off mid-answer: not acknowledged
                        };
                        let id = v["filings"][0]["id"].as_str().unwrap().to_string();
                        acked.lock().unwrap().push((id, raw));
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Let a good number of filings through, then kill -9 mid-load.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 40 {
        assert!(Instant::now() < deadline, "filings are not getting through");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut server = server;
    let pid = server.0.id();
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = server.0.wait();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40);

    // Restart on the same data: everything acknowledged is there, byte for byte.
    let (_server, base) = start(p, &key, &jwks.url).await;
    for (id, raw) in &acked {
        let r = http
            .get(format!("{base}/v1/filings/{id}/raw"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged filing {id} is missing");
        assert_eq!(&r.bytes().await.unwrap()[..], &raw[..]);
    }
    // No half rows: every message has its filing and its attachment row, and the chain verifies.
    let list: serde_json::Value = http
        .get(format!("{base}/v1/filings?target=matter:M-1&limit=200"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = list["filings"].as_array().unwrap();
    assert!(listed.len() >= acked.len().min(200));
    for f in listed {
        assert_eq!(f["attachments"].as_array().unwrap().len(), 1, "{f}");
    }
    let mut c = docket(p, &key, &jwks.url, 0);
    c.args(["audit", "verify", "--tenant", "a.test"]);
    let out = run_ok(c);
    assert!(out.contains("intact"), "{out}");
    // The tenant database agrees with itself.
    let tenants = {
        let mut c = docket(p, &key, &jwks.url, 0);
        c.args(["tenant", "list"]);
        run_ok(c)
    };
    let tid = tenants.split('\t').next().unwrap().trim().to_string();
    use sqlx::Connection;
    let mut db = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}/tenants/{tid}/tenant.db",
        p.display()
    ))
    .await
    .unwrap();
    let (messages, filings, created): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM filings), (SELECT COUNT(*) FROM audit_log WHERE action = 'filing.created')",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(
        messages, filings,
        "a message without its filing is a half-written filing"
    );
    assert_eq!(filings, created, "every filing has its audit entry");
    assert!(filings as usize >= acked.len());
}
