//! `docket dev` and DNS rebinding: it answers only to its listen address and
//! `localhost:<port>`, so a web page behind a rebound name can neither mint tokens nor read
//! the dev instance.

use crate::common::problem;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_refuses_every_host_but_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = docket::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..docket::Config::default()
    };
    let app = docket::Application::build(config, docket::Mode::Dev)
        .await
        .unwrap();
    let addr = app.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    let http = reqwest::Client::new();
    let port = addr.port();
    for host in [
        addr.to_string(),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
    ] {
        let r = http
            .get(format!("http://{addr}/dev/jwks.json"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    for host in [
        format!("rebound.evil.test:{port}"),
        "rebound.evil.test".to_string(),
        format!("127.0.0.2:{port}"),
        "127.0.0.1".to_string(),
    ] {
        let r = http
            .post(format!("http://{addr}/dev/token"))
            .header("host", &host)
            .json(&serde_json::json!({"email": "alice@demo.test"}))
            .send()
            .await
            .unwrap();
        let (s, body) = problem(r).await;
        assert_eq!(s, 421, "{host}");
        assert_eq!(body["type"], "urn:docket:problem:unknown-host");
        assert!(body.get("token").is_none());
        let r = http
            .get(format!("http://{addr}/console/login"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 421, "{host}");
    }
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}
