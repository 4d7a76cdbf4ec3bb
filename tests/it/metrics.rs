//! `GET /metrics`: on its own listener only; after real requests the counters they should
//! move have moved; nothing in it names a customer. And the alert rules and the dashboard
//! in `deploy/` only use metrics that exist (and pass `promtool check rules`).

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::common::*;

/// The scrape as `series → value` (`name{labels}` exactly as written).
async fn scrape(app: &TestApp) -> (String, HashMap<String, f64>) {
    let addr = app.metrics_addr.expect("a metrics listener");
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect();
    (text, series)
}

fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_move_with_real_requests_and_name_no_customer() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    // Not on the public listener.
    let r = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, before) = scrape(&app).await;

    let token = app.token("alice@a.test");
    let raw = email(
        "Metrics",
        Some("<metrics@acme.com>"),
        &[("m.pdf", "application/pdf", noise(20_000, 3))],
    );
    let body = filing_body(&raw, &["matter:M-1"]);
    assert_eq!(app.post_filing(&token, &body).await.status(), 201);
    assert_eq!(app.post_filing(&token, &body).await.status(), 200);
    let apps_script = app
        .http
        .post(format!("{}/v1/filings", app.base))
        .bearer_auth(&token)
        .header("user-agent", "Mozilla/5.0 (compatible; Google-Apps-Script)")
        .json(&filing_body(&raw, &["matter:NOPE"]))
        .send()
        .await
        .unwrap();
    assert_eq!(apps_script.status(), 404);
    let not_mail = json!({"raw": b64url(b"\x00\x01 not an email"), "targets": [{"kind": "matter", "id": "M-1"}]});
    assert_eq!(app.post_filing(&token, &not_mail).await.status(), 422);
    let bad_token = app.post_filing("not.a.token", &body).await;
    assert_eq!(bad_token.status(), 401);
    let signin = app
        .http
        .post(format!("{}/v1/admin/session", app.base))
        .json(&json!({"email": "adam@a.test", "password": "wrong wrong wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), 401);
    let spent = app.state.budget.try_reserve(usize::MAX).unwrap();
    let other = filing_body(
        &email("Busy", Some("<busy@acme.com>"), &[]),
        &["matter:M-1"],
    );
    assert_eq!(app.post_filing(&token, &other).await.status(), 503);
    drop(spent);

    let (text, after) = scrape(&app).await;
    let m = |s: &str| moved(&before, &after, s);
    assert_eq!(
        m(r#"docket_filings_total{outcome="new",client="api"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        m(r#"docket_filings_total{outcome="duplicate",client="api"}"#),
        1.0
    );
    assert_eq!(
        m(r#"docket_filings_total{outcome="refused",client="apps_script"}"#),
        1.0
    );
    assert_eq!(
        m(r#"docket_filings_total{outcome="refused",client="api"}"#),
        1.0
    );
    assert_eq!(
        m(r#"docket_http_requests_total{route="/v1/filings",method="POST",status="201"}"#),
        1.0
    );
    assert_eq!(
        m(r#"docket_http_requests_total{route="/v1/filings",method="POST",status="404"}"#),
        1.0
    );
    assert!(
        m(r#"docket_http_request_duration_seconds_count{route="/v1/filings",method="POST"}"#)
            >= 5.0
    );
    assert_eq!(
        m(r#"docket_parse_rejections_total{reason="not-an-email"}"#),
        1.0,
        "{text}"
    );
    // The raw message and one attachment, sealed: more than their plain size.
    assert!(m("docket_blob_bytes_written_total") > (raw.len() + 20_000) as f64);
    assert_eq!(
        m(r#"docket_token_verification_failures_total{reason="malformed"}"#),
        1.0,
        "{text}"
    );
    let signin = m(r#"docket_signin_failures_total{reason="wrong-password"}"#)
        + m(r#"docket_signin_failures_total{reason="no-password"}"#);
    assert_eq!(signin, 1.0, "{text}");
    assert_eq!(m("docket_busy_refusals_total"), 1.0, "{text}");
    assert!(after[r#"docket_message_budget_bytes{state="free"}"#] > 0.0);
    assert!(after["docket_open_tenants"] >= 1.0);
    // No label names a customer: no tenant id, name or domain, no user.
    for secret in [
        app.firm_a.id.as_str(),
        "Firm A",
        "a.test",
        "acme.com",
        "alice",
        "M-1",
    ] {
        assert!(!text.contains(secret), "{secret} in /metrics:\n{text}");
    }
}

/// Every metric the alert rules and the dashboard query is one docket exports, and the
/// rules pass `promtool check rules` (required in CI; `.ci/run` installs Prometheus' tools).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_dashboard_use_metrics_that_exist() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    // Touch the labelled families so each appears in the scrape.
    let _ = app.post_filing("not.a.token", &json!({})).await;
    let (text, _) = scrape(&app).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let rules = std::fs::read_to_string(format!("{root}/deploy/alerts.yml")).unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let used = |text: &str| -> Vec<String> {
        let mut names = Vec::new();
        for (i, _) in text.match_indices("docket_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
        names
    };
    let mut queried = used(&rules);
    queried.extend(used(&dashboard.to_string()));
    assert!(
        queried.len() > 5,
        "the rules and the dashboard query docket's metrics"
    );
    for name in queried {
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            families.contains(&family) || families.contains(&name.as_str()),
            "{name} is queried but not exported:\n{text}"
        );
    }
    match std::process::Command::new("promtool")
        .args(["check", "rules", &format!("{root}/deploy/alerts.yml")])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: promtool is not installed (apt-get install prometheus)");
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    }
}
