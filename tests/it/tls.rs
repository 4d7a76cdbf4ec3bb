//! Built-in TLS: a real handshake and a whole filing over HTTPS, with HSTS and Secure
//! cookies; TLS 1.0/1.1 and suites that are not AEAD refused (checked with
//! `openssl s_client`, with a positive control for each); a renewed certificate served
//! without a restart; plain HTTP redirected to HTTPS.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use serde_json::Value;

use crate::common::*;

/// A test certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "docket test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for `127.0.0.1` and `localhost` (ECDSA P-256): (certificate PEM, key PEM, DER).
    fn leaf(&self, name: &str) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// Writes the pair where docket reads it; the key first, so that a reload between the two
/// writes sees a mismatched pair (and keeps the old one) rather than a missing file.
fn install(dir: &Path, cert_pem: &str, key_pem: &str) {
    std::fs::write(dir.join("key.pem"), key_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
}

async fn tls_app(ca: &Ca, certs: &Path) -> TestApp {
    let (cert, key, _) = ca.leaf("docket first");
    install(certs, &cert, &key);
    let (cert_file, key_file) = (certs.join("cert.pem"), certs.join("key.pem"));
    TestApp::spawn_with(Backend::Sqlite, move |c| {
        c.tls.cert_file = Some(cert_file);
        c.tls.key_file = Some(key_file);
        c.tls.reload_interval_secs = 1;
        c.tls.redirect_http_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap()
}

fn https_client(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filing_over_tls_with_hsts_secure_cookies_and_a_redirect() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let app = tls_app(&ca, certs.path()).await;
    let https = https_client(&ca);
    let base = format!("https://127.0.0.1:{}", app.addr.port());

    let health = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    // A whole filing, read back byte for byte, over TLS.
    let token = app.token("alice@a.test");
    let raw = email(
        "Over TLS",
        Some("<over-tls@acme.com>"),
        &[("a.pdf", "application/pdf", noise(40_000, 7))],
    );
    let filed = https
        .post(format!("{base}/v1/filings"))
        .bearer_auth(&token)
        .json(&filing_body(&raw, &["matter:M-1"]))
        .send()
        .await
        .unwrap();
    assert_eq!(filed.status(), 201);
    let filed: Value = filed.json().await.unwrap();
    let id = filed["filings"][0]["id"].as_str().unwrap();
    let back = https
        .get(format!("{base}/v1/filings/{id}/raw"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(back[..], raw[..]);
    // Session cookies are Secure and `__Host-` named without being told.
    assert!(app.state.config.secure_cookies());
    assert_eq!(
        docket::http::admin::ctx::cookie_name(&app.state),
        "__Host-docket_session"
    );
    // Plain HTTP on the TLS port gets no answer in clear.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/healthz", app.addr.port())).await;
    assert!(plain.is_err(), "{plain:?}");
    // The redirect listener sends every request to the same place over HTTPS.
    let redirect = app.redirect_addr.expect("redirect listener");
    let r = https_client(&ca)
        .get(format!("http://{redirect}/v1/filings?target=matter:M-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!(
            "https://127.0.0.1:{}/v1/filings?target=matter:M-1",
            app.addr.port()
        )
    );
}

/// `openssl s_client` against the server: (handshake completed, everything it printed).
fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let done =
        out.status.success() && text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (done, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_tls_1_2_and_1_3_with_aead_suites_are_accepted() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let app = tls_app(&ca, certs.path()).await;
    let port = app.addr.port();
    let port_ok = move |args: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || s_client(port, args))
    };
    for (args, why) in [
        (&["-tls1_3"][..], "TLS 1.3"),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
            "TLS 1.2 AES-GCM",
        ),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
            "TLS 1.2 ChaCha20-Poly1305",
        ),
    ] {
        let (done, out) = port_ok(args).await.unwrap();
        assert!(done, "{why} is accepted: {out}");
    }
    // Suites that are not AEAD (CBC with HMAC), offered alone over TLS 1.2: refused by the
    // server (a handshake failure alert), though the client offers them.
    for cipher in ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"] {
        let (done, out) = port_ok(Box::leak(Box::new(["-tls1_2", "-cipher", cipher])))
            .await
            .unwrap();
        assert!(!done, "{cipher} refused: {out}");
        assert!(out.contains("alert handshake failure"), "{cipher}: {out}");
    }
    // TLS 1.0 and 1.1, which the client is allowed to offer at security level 0: the client
    // sends its hello for that version, and the server answers it with an alert.
    for (flag, name) in [("-tls1", "TLSv1\n"), ("-tls1_1", "TLSv1.1\n")] {
        let args = Box::leak(Box::new([flag, "-cipher", "DEFAULT@SECLEVEL=0"]));
        let (done, out) = port_ok(args).await.unwrap();
        assert!(!done, "{flag} refused: {out}");
        assert!(
            out.contains(&format!("Protocol  : {name}")),
            "{flag} offered: {out}"
        );
        assert!(
            out.contains("alert handshake failure") || out.contains("alert protocol version"),
            "{flag} refused by the server: {out}"
        );
    }
}

/// The served certificate as seen by a client trusting `ca`.
async fn served_certificate(ca: &Ca, port: u16) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let app = tls_app(&ca, certs.path()).await;
    let port = app.addr.port();
    let first = served_certificate(&ca, port).await;
    let (cert, key, renewed) = ca.leaf("docket renewed");
    assert_ne!(first, renewed);
    install(certs.path(), &cert, &key);
    // The files are checked every second (`tls.reload_interval_secs = 1`).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if served_certificate(&ca, port).await == renewed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Requests go on as before, on the renewed certificate.
    let r = https_client(&ca)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A certificate that cannot be loaded stops the start with a message naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_certificate_stops_the_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (_, key, _) = ca.leaf("x");
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not PEM").unwrap();
    let mut config = test_config(dir.path(), "http://127.0.0.1:9/jwks", None);
    config.tls.cert_file = Some(dir.path().join("cert.pem"));
    config.tls.key_file = Some(dir.path().join("key.pem"));
    let err = match docket::Application::build(config, docket::Mode::Serve).await {
        Ok(_) => panic!("started with an unreadable certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("invalid TLS configuration"), "{err}");
    assert!(err.contains("cert.pem"), "{err}");
}

/// `docket dev` is plain HTTP on loopback: asked for TLS it says so instead of starting
/// with a JWKS URL it cannot reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_refuses_tls_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = docket::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        tls: docket::config::TlsConfig {
            cert_file: Some(dir.path().join("cert.pem")),
            key_file: Some(dir.path().join("key.pem")),
            ..Default::default()
        },
        ..docket::Config::default()
    };
    let err = match docket::Application::build(config, docket::Mode::Dev).await {
        Ok(_) => panic!("dev started with TLS"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("docket serve"), "{err}");
}

/// The redirect takes only a plain host from `Host`: user info, an empty host or no
/// `Host` at all is a 400 problem, never a redirect elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_redirect_takes_only_a_plain_host() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let app = tls_app(&ca, certs.path()).await;
    let redirect = app.redirect_addr.unwrap();
    let ask = |head: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(redirect).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).to_string()
    };
    for head in [
        "GET /x HTTP/1.1\r\nHost: good.com@evil.com\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: :80\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.0\r\n\r\n",
    ] {
        let answer = ask(head).await;
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.0 400"),
            "{head:?}: {answer}"
        );
        assert!(answer.contains("application/problem+json"), "{answer}");
    }
    let answer =
        ask("OPTIONS * HTTP/1.1\r\nHost: Docket.Example:80\r\nConnection: close\r\n\r\n").await;
    let port = app.addr.port();
    assert!(
        answer.contains(&format!("location: https://docket.example:{port}/\r\n")),
        "{answer}"
    );
}
