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
    for raw in failed {
        match file(&app, &tok, &raw).await {
            (200 | 201, v) => acked.push((id_of(&v), raw)),
            (s, v) => panic!("retry answered {s}: {v}"),
        }
    }
    // Restart on the same catalogue: everything acknowledged is there, byte for byte.
    app.stop().await;
    let again = Application::build(app.config.clone(), Mode::Serve)
        .await
        .unwrap();
    let base = format!("http://{}", again.local_addr());
    let state = again.state();
    tokio::spawn(async move { again.run(std::future::pending()).await });
    for (id, raw) in &acked {
        let r = app
            .http
            .get(format!("{base}/v1/filings/{id}/raw"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged filing {id} is lost");
        assert_eq!(&r.bytes().await.unwrap()[..], &raw[..]);
    }
    let t = state.catalog.tenant(&app.firm_a.id).await.unwrap();
    assert!(matches!(
        docket::audit::verify(&t.db).await.unwrap(),
        docket::audit::ChainStatus::Intact { .. }
    ));
    let (messages, filings, _, _) = counts(&t).await;
    assert_eq!(
        (messages, filings),
        (acked.len() as i64, acked.len() as i64)
    );
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
