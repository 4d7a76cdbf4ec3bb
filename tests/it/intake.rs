//! The intake of message-carrying requests (issue 8 §4): a body that does not arrive in
//! time is a 408 problem, an announced body over the limit a 413 at once, and the budget for
//! bytes in flight answers 503 `busy` with `Retry-After` instead of growing without bound.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Sends a request head (and `body_part` of its body) and returns the open stream.
async fn start_request(
    app: &TestApp,
    path: &str,
    token: &str,
    length: u64,
    body_part: &[u8],
) -> TcpStream {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        app.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body_part).await.unwrap();
    s
}

/// Reads the response head and body that arrive within `within` (until the peer closes or
/// the body is complete).
async fn read_response(s: &mut TcpStream, within: Duration) -> String {
    let mut buf = Vec::new();
    let deadline = Instant::now() + within;
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if text.contains("\r\n\r\n{") && text.trim_end().ends_with('}') {
                    break;
                }
            }
            Ok(Err(_)) => break,
            Err(_) => continue,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_that_does_not_arrive_is_a_408_and_an_oversize_one_a_413() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.limits.body_read_timeout_secs = 1)
        .await
        .unwrap();
    let token = app.token("alice@a.test");
    for path in ["/v1/filings", "/v1/addon/context"] {
        let started = Instant::now();
        let mut s = start_request(&app, path, &token, 1000, b"{\"").await;
        let resp = read_response(&mut s, Duration::from_secs(10)).await;
        assert!(resp.starts_with("HTTP/1.1 408"), "{path}: {resp}");
        assert!(
            resp.to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{resp}"
        );
        assert!(resp.contains("urn:docket:problem:body-timeout"), "{resp}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{path}: answered late"
        );

        let mut s = start_request(&app, path, &token, 99_999_999_999, b"{}").await;
        let resp = read_response(&mut s, Duration::from_secs(5)).await;
        assert!(resp.starts_with("HTTP/1.1 413"), "{path}: {resp}");
        assert!(resp.contains("urn:docket:problem:too-large"), "{resp}");
    }
    // Without a valid token nothing is read or reserved: 401 at once.
    let mut s = start_request(&app, "/v1/filings", "nope", 1000, b"{").await;
    let resp = read_response(&mut s, Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert_alive(&app, "slow bodies").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_budget_for_bytes_in_flight_answers_503_busy_then_frees() {
    // 1 MiB in flight: one request announcing 600 KB reserves it all (2 × 600 KB, capped).
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.max_bytes_in_flight = 1 << 20;
        c.limits.body_read_timeout_secs = 30;
    })
    .await
    .unwrap();
    let token = app.token("alice@a.test");
    let body = filing_body(
        &email("Budget", Some("<budget@acme.com>"), &[]),
        &["matter:M-1"],
    );
    // A slow request takes the whole budget; while it holds it, filings are refused. (Should
    // a filing hold a little of the budget at the instant the slow one asks, the slow one is
    // the one refused: the test then starts another.)
    let mut refused = None;
    let mut slow = None;
    for _ in 0..20 {
        let s = start_request(&app, "/v1/filings", &token, 600_000, b"{\"raw\": \"").await;
        // Let it be authenticated and reserve before filing beside it.
        let mut first = [0u8; 1];
        let answered = tokio::time::timeout(Duration::from_millis(300), s.peek(&mut first)).await;
        if answered.is_ok() {
            continue; // refused at once: try again
        }
        for _ in 0..20 {
            let resp = app.post_filing(&token, &body).await;
            if resp.status() == 503 {
                refused = Some(resp);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if refused.is_some() {
            slow = Some(s);
            break;
        }
    }
    let mut slow = slow.expect("a slow request holds the budget");
    let resp = refused.expect("a request over the budget is refused");
    assert_eq!(resp.headers()["retry-after"], "2");
    let (status, p) = problem(resp).await;
    assert_eq!(
        (status, p["type"].as_str()),
        (503, Some("urn:docket:problem:busy"))
    );
    // A client that writes its whole large body before reading (as urllib and Apps Script
    // do) hears the 503 and its Retry-After (the body is read and thrown away), instead of
    // the connection closing under its upload.
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let length = 6_000_000;
    let head = format!(
        "POST /v1/filings HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        app.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; length])
        .await
        .expect("the whole body is taken while refusing");
    let resp = read_response(&mut s, Duration::from_secs(10)).await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("retry-after: 2"),
        "{resp}"
    );
    // One that asked `Expect: 100-continue` gets the 503 before sending anything.
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/filings HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 8000000\r\nExpect: 100-continue\r\n\r\n",
        app.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let resp = read_response(&mut s, Duration::from_secs(10)).await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(resp.contains("urn:docket:problem:busy"), "{resp}");
    // The slow client gives up: its reservation is released and filing works again.
    slow.shutdown().await.unwrap();
    drop(slow);
    let mut status = 0;
    for _ in 0..100 {
        status = app.post_filing(&token, &body).await.status().as_u16();
        if status == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 201);
}

/// Sends raw bytes on a fresh connection and reads what comes back.
async fn raw_exchange(app: &TestApp, bytes: &[u8], within: Duration) -> String {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_response(&mut s, within).await
}

fn assert_problem(resp: &str, status: u16, slug: &str) {
    assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{resp}"
    );
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let p: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(p["type"], format!("urn:docket:problem:{slug}"), "{resp}");
    assert_eq!(p["status"], status, "{resp}");
}

/// A request head that stalls is a 408 problem at `limits.header_read_timeout_secs`; an idle
/// connection is closed silently at the same deadline; a keep-alive connection in use works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_head_that_does_not_arrive_is_a_408_and_an_idle_connection_closes() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.limits.header_read_timeout_secs = 1)
        .await
        .unwrap();
    let started = Instant::now();
    let partial = format!(
        "POST /v1/filings HTTP/1.1\r\nHost: {}\r\nContent-Ty",
        app.addr
    );
    let resp = raw_exchange(&app, partial.as_bytes(), Duration::from_secs(10)).await;
    assert_problem(&resp, 408, "request-timeout");
    assert!(started.elapsed() < Duration::from_secs(8), "answered late");

    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut buf))
        .await
        .expect("an idle connection is closed at the deadline")
        .unwrap();
    assert_eq!(n, 0, "an idle connection gets no answer: {buf:?}");

    // Two requests on one connection, each head on time.
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    for _ in 0..2 {
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
        s.write_all(head.as_bytes()).await.unwrap();
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(chunk[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &chunk[..n]);
    }
    assert_alive(&app, "slow heads").await;
}

/// At `limits.max_connections` open connections docket accepts no more: the next client
/// waits in the listen backlog, unanswered, and is served as soon as one connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_over_the_cap_waits_until_one_closes() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.limits.max_connections = 2)
        .await
        .unwrap();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    let mut chunk = [0u8; 1024];
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let n = s.read(&mut chunk).await.unwrap();
        assert!(chunk[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &chunk[..n]);
        held.push(s);
    }
    let mut third = TcpStream::connect(app.addr).await.unwrap();
    third.write_all(head.as_bytes()).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut chunk)).await;
    assert!(
        early.is_err(),
        "a connection over the cap was served: {early:?}"
    );
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut chunk))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(chunk[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &chunk[..n]);
    drop((held, third));
    assert_alive(&app, "a full connection cap").await;
}

/// The answers hyper writes itself, before any route runs, carry problem bodies too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heads_too_long_or_not_http_are_problems() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let within = Duration::from_secs(10);
    let long_uri = format!(
        "GET /v1/records?q={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    assert_problem(
        &raw_exchange(&app, long_uri.as_bytes(), within).await,
        414,
        "uri-too-long",
    );
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many += &format!("X-Field-{i}: {i}\r\n");
    }
    many += "\r\n";
    assert_problem(
        &raw_exchange(&app, many.as_bytes(), within).await,
        431,
        "headers-too-large",
    );
    assert_problem(
        &raw_exchange(&app, b"NOT HTTP AT ALL\r\n\r\n", within).await,
        400,
        "bad-request",
    );
    assert_alive(&app, "bad heads").await;
}
