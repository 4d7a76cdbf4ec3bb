//! PostgreSQL: the tenant's connection is killed (`pg_terminate_backend`) in the middle of a
//! filing's COMMIT, 1, 2 and 3 times in a row, with pools of 1 and 8. Every request answers
//! 2xx or a 5xx problem; once the faults stop the next filings succeed without a restart;
//! retries of the 5xx ones answer 200 or 201; after a restart everything acknowledged reads
//! back byte-identical and the audit chain verifies.

use crate::common::*;
use docket::{Application, Mode};
use serde_json::Value;
use sqlx::{Connection, Executor};

/// A deferred trigger fires at COMMIT: while the budget lasts, it kills its own backend.
const FAULT_SQL: &str = "
CREATE SEQUENCE docket_fault_seq;
CREATE TABLE docket_fault_budget (n bigint NOT NULL);
INSERT INTO docket_fault_budget VALUES (0);
CREATE FUNCTION docket_fault() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF nextval('docket_fault_seq') <= (SELECT n FROM docket_fault_budget) THEN
    PERFORM pg_terminate_backend(pg_backend_pid());
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER docket_fault AFTER INSERT ON filings
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION docket_fault();
";

async fn tenant_db_as_superuser(app: &TestApp) -> sqlx::AnyConnection {
    let names = app.state.catalog.pg_tenant_databases().await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    let name = names
        .into_iter()
        .find(|n| n.ends_with(&t.id[..12]))
        .unwrap();
    let mut url = url::Url::parse(
        &std::env::var("DOCKET_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    )
    .unwrap();
    url.set_path(&format!("/{name}"));
    sqlx::AnyConnection::connect(url.as_str()).await.unwrap()
}

async fn arm(db: &mut sqlx::AnyConnection, kills: i64) {
    db.execute("ALTER SEQUENCE docket_fault_seq RESTART WITH 1")
        .await
        .unwrap();
    sqlx::query("UPDATE docket_fault_budget SET n = $1")
        .bind(kills)
        .execute(&mut *db)
        .await
        .unwrap();
}

async fn file(app: &TestApp, tok: &str, raw: &[u8]) -> (u16, Value) {
    let r = app
        .post_filing(tok, &filing_body(raw, &["matter:M-1"]))
        .await;
    let status = r.status().as_u16();
    if status >= 400 {
        return problem(r).await;
    }
    (status, r.json().await.unwrap())
}

/// A 5xx means "maybe": a retry of each answers 200 (it was stored) or 201 (it was not).
async fn retry_failed(
    app: &TestApp,
    tok: &str,
    failed: Vec<Vec<u8>>,
    acked: &mut Vec<(String, Vec<u8>)>,
) {
    for raw in failed {
        match file(app, tok, &raw).await {
            (200 | 201, v) => acked.push((id_of(&v), raw)),
            (s, v) => panic!("retry answered {s}: {v}"),
        }
    }
}

/// Every acknowledged filing reads back byte-identical from `base`, the audit chain
/// verifies, and there is one message and one filing per acknowledged message.
async fn assert_all_there(
    http: &reqwest::Client,
    base: &str,
    tok: &str,
    acked: &[(String, Vec<u8>)],
    t: &docket::tenancy::Tenant,
) {
    for (id, raw) in acked {
        let r = http
            .get(format!("{base}/v1/filings/{id}/raw"))
            .bearer_auth(tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged filing {id} is lost");
        assert_eq!(&r.bytes().await.unwrap()[..], &raw[..]);
    }
    assert!(matches!(
        docket::audit::verify(&t.db).await.unwrap(),
        docket::audit::ChainStatus::Intact { .. }
    ));
    let (messages, filings, _, _) = counts(t).await;
    assert_eq!(
        (messages, filings),
        (acked.len() as i64, acked.len() as i64)
    );
}

fn id_of(v: &Value) -> String {
    v["filings"][0]["id"].as_str().unwrap().to_string()
}

async fn killed_mid_commit(pool: u32) {
    let Some(mut app) = TestApp::spawn_with(Backend::Postgres, |c| {
        c.database.max_connections_per_tenant = pool;
    })
    .await
    else {
        return;
    };
    let mut db = tenant_db_as_superuser(&app).await;
    db.execute(FAULT_SQL).await.unwrap();
    let tok = app.token("alice@a.test");
    let mut n = 0u32;
    let mut next = || {
        n += 1;
        email(
            &format!("pg fault {n}"),
            Some(&format!("<pg-fault-{n}-{pool}@acme.com>")),
            &[("a.bin", "application/octet-stream", noise(5_000, n as u8))],
        )
    };
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut failed: Vec<Vec<u8>> = Vec::new();
    for k in 1..=3usize {
        arm(&mut db, k as i64).await;
        let mut seen = 0;
        for _ in 0..k {
            let raw = next();
            match file(&app, &tok, &raw).await {
                (201, v) => acked.push((id_of(&v), raw)),
                (500..=599, _) => {
                    seen += 1;
                    failed.push(raw)
                }
                (s, v) => panic!("unexpected {s}: {v}"),
            }
        }
        assert_eq!(seen, k, "each killed commit answers 5xx");
        arm(&mut db, 0).await;
        let raws: Vec<Vec<u8>> = (0..pool.max(2)).map(|_| next()).collect();
        let answers = futures::future::join_all(raws.iter().map(|raw| file(&app, &tok, raw))).await;
        for (raw, (s, v)) in raws.into_iter().zip(answers) {
            assert_eq!(s, 201, "after {k} kill(s): {v}");
            acked.push((id_of(&v), raw));
        }
        let r = app.http.get(format!("{}/readyz", app.base)).send().await;
        assert_eq!(r.unwrap().status(), 200);
    }
    retry_failed(&app, &tok, failed, &mut acked).await;
    // Restart on the same catalogue: everything acknowledged is there, byte for byte.
    app.stop().await;
    let again = Application::build(app.config.clone(), Mode::Serve)
        .await
        .unwrap();
    let base = format!("http://{}", again.local_addr());
    let state = again.state();
    tokio::spawn(async move { again.run(std::future::pending()).await });
    let t = state.catalog.tenant(&app.firm_a.id).await.unwrap();
    assert_all_there(&app.http, &base, &tok, &acked, &t).await;
    state.catalog.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_connection_killed_mid_commit_pool_1() {
    killed_mid_commit(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_connection_killed_mid_commit_pool_8() {
    killed_mid_commit(8).await;
}

/// A PostgreSQL server of the test's own (initdb in a temporary directory, its own port), so
/// that restarting it cannot disturb the other tests' server. As root, it runs as `postgres`.
struct PrivatePg {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
    uid: Option<u32>,
}

impl PrivatePg {
    /// None (skip, with the reason printed) when PostgreSQL's programs are missing, outside CI.
    fn start() -> Option<PrivatePg> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists());
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL's server programs (initdb, pg_ctl) are required in CI"
            );
            eprintln!(
                "SKIP: no /usr/lib/postgresql/*/bin/initdb; the server restart test is skipped"
            );
            return None;
        };
        let uid = (nix_uid() == 0).then(|| {
            let out = std::process::Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        if let Some(uid) = uid {
            let ok = std::process::Command::new("chown")
                .arg(format!("{uid}"))
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePg {
            dir,
            bin,
            port,
            uid,
        };
        pg.run(
            "initdb",
            &["-A", "trust", "-U", "postgres", "--no-sync", "-D"],
        );
        pg.ctl(&["start"]);
        Some(pg)
    }

    fn command(&self, program: &str) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new(self.bin.join(program));
        if let Some(uid) = self.uid {
            c.uid(uid);
        }
        c.current_dir(self.dir.path());
        c
    }

    /// `program args… <data dir>`, which must succeed.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .arg(self.dir.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl <action>` on this server, waiting until it is done.
    fn ctl(&self, action: &[&str]) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let log = log.to_str().unwrap();
        let mut args = vec!["-w", "-l", log, "-o", &opts];
        args.extend_from_slice(action);
        args.push("-D");
        self.run("pg_ctl", &args);
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .output();
    }
}

fn nix_uid() -> u32 {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The PostgreSQL server restarts (`fast`: clients cut off; `immediate`: a crash, recovered
/// from its log) while filings are in flight. Every request answers 2xx or a 5xx problem;
/// after the restart filings succeed without restarting docket; retries of the 5xx ones
/// answer 200 or 201; everything acknowledged, before or during the restart, reads back
/// byte-identical and the audit chain verifies.
async fn server_restart(mode: &'static str) {
    if !pg_available().await {
        return;
    }
    let Some(pg) = PrivatePg::start() else { return };
    let catalogue = pg.url("docket_catalogue");
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |c| {
        c.database.url = Some(catalogue);
        c.database.max_connections_per_tenant = 4;
    })
    .await
    else {
        return;
    };
    let tok = app.token("alice@a.test");
    let message = move |n: u32| {
        email(
            &format!("restart {n}"),
            Some(&format!("<pg-restart-{mode}-{n}@acme.com>")),
            &[("a.bin", "application/octet-stream", noise(5_000, n as u8))],
        )
    };
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut failed: Vec<Vec<u8>> = Vec::new();
    let raw = message(0);
    let (s, v) = file(&app, &tok, &raw).await;
    assert_eq!(s, 201, "{v}");
    acked.push((id_of(&v), raw));
    // Filings keep coming while the server goes down and up again.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (app_base, tok, stop) = (app.base.clone(), tok.clone(), stop.clone());
        let http = app.http.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut n = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let raw = message(n);
                n += 1;
                let r = http
                    .post(format!("{app_base}/v1/filings"))
                    .bearer_auth(&tok)
                    .json(&filing_body(&raw, &["matter:M-1"]))
                    .send()
                    .await
                    .unwrap();
                let s = r.status().as_u16();
                let ct = r.headers().get("content-type").cloned();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if s >= 400 {
                    assert_eq!(
                        ct.as_ref().and_then(|c| c.to_str().ok()),
                        Some("application/problem+json"),
                        "{s}: {v}"
                    );
                }
                out.push((s, v, raw));
            }
            out
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.ctl(&["restart", "-m", mode]);
        pg
    })
    .await
    .unwrap();
    // Without restarting docket, the next filing succeeds.
    let raw = message(10_000);
    let mut answer = file(&app, &tok, &raw).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while answer.0 != 201 && std::time::Instant::now() < deadline {
        assert!((500..600).contains(&answer.0), "{answer:?}");
        answer = file(&app, &tok, &raw).await;
    }
    assert!(
        matches!(answer.0, 200 | 201),
        "after the restart: {answer:?}"
    );
    acked.push((id_of(&answer.1), raw));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (s, v, raw) in load.await.unwrap() {
        match s {
            201 => acked.push((id_of(&v), raw)),
            500..=599 => failed.push(raw),
            _ => panic!("unexpected {s}: {v}"),
        }
    }
    retry_failed(&app, &tok, failed, &mut acked).await;
    let t = app.tenant(&app.firm_a).await;
    assert_all_there(&app.http, &app.base, &tok, &acked, &t).await;
    let r = app.http.get(format!("{}/readyz", app.base)).send().await;
    assert_eq!(r.unwrap().status(), 200);
    drop(app);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_server_restart_fast() {
    server_restart("fast").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_server_restart_immediate() {
    server_restart("immediate").await;
}

/// A connection handed back clean (outside any transaction) is kept and reused: the pool's
/// check must not close it. (It once did, every time: each query then paid for a new
/// PostgreSQL connection, and filings on PostgreSQL ran at about 15/s.) One left inside a
/// transaction is still closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_connections_are_reused_and_dirty_ones_closed() {
    if !pg_available().await {
        return;
    }
    let url = url::Url::parse(&pg_admin_url()).unwrap();
    let pool = docket::tenancy::db::open_pg(&url, 1).await.unwrap();
    let pid = || async {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let first = pid().await;
    for _ in 0..20 {
        assert_eq!(pid().await, first, "a clean connection was closed");
    }
    // Left inside a transaction behind sqlx's back: closed, never handed out again.
    let mut conn = pool.acquire().await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    drop(conn);
    assert_ne!(
        pid().await,
        first,
        "a connection inside a transaction was reused"
    );
}

/// On PostgreSQL, one firm's database refusing writes does not take the replica out of its
/// load balancer (every replica would see the same, and every firm would stop for one):
/// `/readyz` stays 200, and the metric (and its alert) shows it until it takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_firms_unwritable_database_keeps_the_replica_ready_and_shows_in_metrics() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let tok = app.token("alice@a.test");
    let raw = |i: u8| email("refused", Some(&format!("<refused-{i}@acme.com>")), &[]);
    assert_eq!(file(&app, &tok, &raw(0)).await.0, 201);
    let unwritable = "docket_unwritable_tenant_databases";
    assert_eq!(scraped(&app, unwritable).await, 0.0);
    let mut db = tenant_db_as_superuser(&app).await;
    db.execute(
        "CREATE FUNCTION docket_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$;
         CREATE TRIGGER docket_refuse BEFORE UPDATE ON audit_head
           FOR EACH STATEMENT EXECUTE FUNCTION docket_refuse();",
    )
    .await
    .unwrap();
    let (s, v) = file(&app, &tok, &raw(1)).await;
    assert_eq!(s, 500, "{v}");
    let r = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(scraped(&app, unwritable).await, 1.0);
    db.execute("DROP TRIGGER docket_refuse ON audit_head")
        .await
        .unwrap();
    assert_eq!(scraped(&app, unwritable).await, 0.0);
    assert_eq!(file(&app, &tok, &raw(1)).await.0, 201);
}
