//! Filing benchmark through the real HTTP API on the embedded SQLite default.
//!
//! Run: `cargo bench --bench filing` (release profile). Everything runs in this one process:
//! docket on loopback port 0 with a temp data dir, a loopback JWKS server and the clients.
//!
//! (a) `BENCH_MESSAGES` distinct ~50 KB messages (one ~35 KB binary attachment plus text),
//!     filed by `BENCH_CONCURRENCY` concurrent clients, one `POST /v1/filings` each (all 201).
//! (b) one ~25 MB message with `BENCH_BIG_ATTACHMENTS` attachments, filed twice (201, then 200).
//!
//! Request bodies are built before the timed sections. Peak RSS (VmHWM) is reset through
//! `/proc/self/clear_refs` before each scenario when the kernel allows it, so each scenario's
//! peak is its own; it covers server and clients together (the clients' prepared bodies are
//! reported separately so they can be subtracted).
//!
//! Environment (all optional):
//!   BENCH_MESSAGES (1000), BENCH_CONCURRENCY (8), BENCH_ATTACHMENT_BYTES (35000),
//!   BENCH_TEXT_BYTES (1500), BENCH_BIG_ATTACHMENTS (10), BENCH_BIG_ATTACHMENT_BYTES (1850000:
//!   base64 in MIME makes each ~2.5 MB, the message ~25 MB), BENCH_WORKER_THREADS (tokio default).
//!
//! Without `--bench` (as under `cargo test --all-targets`) it runs a small smoke version.
//! A single line `BENCH_JSON {...}` carries every number for copying into notes.

// common.rs carries its own `#![allow(dead_code)]` (a second one here trips clippy).
#[path = "../tests/it/common.rs"]
mod common;
mod support;
use support::{dir_size, env_usize, ms, Stats};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, TestApp};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

const MIB: f64 = 1024.0 * 1024.0;

struct Cfg {
    smoke: bool,
    messages: usize,
    concurrency: usize,
    attachment_bytes: usize,
    text_bytes: usize,
    big_attachments: usize,
    big_attachment_bytes: usize,
    worker_threads: Option<usize>,
}

impl Cfg {
    fn from_env() -> Cfg {
        let smoke = !std::env::args().any(|a| a == "--bench");
        Cfg {
            smoke,
            messages: env_usize("BENCH_MESSAGES", if smoke { 20 } else { 1000 }),
            concurrency: env_usize("BENCH_CONCURRENCY", 8).max(1),
            attachment_bytes: env_usize("BENCH_ATTACHMENT_BYTES", 35_000),
            text_bytes: env_usize("BENCH_TEXT_BYTES", 1_500),
            big_attachments: env_usize("BENCH_BIG_ATTACHMENTS", 10).max(1),
            big_attachment_bytes: env_usize(
                "BENCH_BIG_ATTACHMENT_BYTES",
                if smoke { 100_000 } else { 1_850_000 },
            ),
            worker_threads: std::env::var("BENCH_WORKER_THREADS")
                .ok()
                .map(|_| env_usize("BENCH_WORKER_THREADS", 2).max(1)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Memory: /proc/self/status, and resetting the peak through /proc/self/clear_refs ("5").

#[derive(Clone, Copy, Default)]
struct Mem {
    hwm_kib: u64,
    rss_kib: u64,
}

impl Mem {
    fn read() -> Mem {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Mem {
            hwm_kib: field("VmHWM:"),
            rss_kib: field("VmRSS:"),
        }
    }
    fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
    fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// Tracks the process-lifetime peak across resets.
struct MemTracker {
    lifetime_peak_kib: u64,
    reset_works: bool,
}

impl MemTracker {
    fn new() -> MemTracker {
        MemTracker {
            lifetime_peak_kib: 0,
            reset_works: true,
        }
    }
    fn observe(&mut self) -> Mem {
        let m = Mem::read();
        self.lifetime_peak_kib = self.lifetime_peak_kib.max(m.hwm_kib);
        m
    }
    /// Resets VmHWM to the current RSS; returns false when the kernel refuses.
    fn reset_peak(&mut self) -> bool {
        self.observe();
        let ok = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        self.reset_works &= ok;
        ok
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs.

/// Deterministic pseudo-random bytes from a 64-bit seed (xorshift64*), distinct per seed.
fn noise64(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Plain prose-like text of about `len` bytes, varying with `seed`.
fn prose(len: usize, seed: u64) -> String {
    const WORDS: [&str; 16] = [
        "agreement",
        "the",
        "counsel",
        "please",
        "review",
        "of",
        "schedule",
        "draft",
        "and",
        "attached",
        "deadline",
        "matter",
        "to",
        "signed",
        "exhibit",
        "terms",
    ];
    let mut s = String::with_capacity(len + 16);
    let mut x = seed.wrapping_add(0x2545_F491) | 1;
    let mut col = 0;
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = WORDS[(x % WORDS.len() as u64) as usize];
        if col + w.len() > 72 {
            s.push_str("\r\n");
            col = 0;
        } else if col > 0 {
            s.push(' ');
            col += 1;
        }
        s.push_str(w);
        col += w.len();
    }
    s.push_str("\r\n");
    s
}

fn message(
    subject: &str,
    message_id: &str,
    text: String,
    attachments: Vec<(String, &'static str, Vec<u8>)>,
) -> Vec<u8> {
    use mail_builder::MessageBuilder;
    let mut m = MessageBuilder::new()
        .from(("Dana Client", "dana@acme.com"))
        .to(vec![("Alice", "alice@a.test")])
        .subject(subject)
        .date(1_763_000_000i64)
        .message_id(message_id)
        .text_body(text);
    for (name, ct, bytes) in attachments {
        m = m.attachment(ct, name, bytes);
    }
    m.write_to_vec().expect("message builds")
}

/// The JSON request body for filing `raw` to matter:M-1, serialised once, up front.
fn request_body(raw: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&common::filing_body(raw, &["matter:M-1"])).expect("json")
}

// ---------------------------------------------------------------------------------------------
// Statistics.

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------------
// Requests.

struct Sample {
    latency: Duration,
    status: u16,
    body: Vec<u8>,
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: reqwest::Body,
) -> Result<Sample, String> {
    let t0 = Instant::now();
    let resp = client
        .post(url)
        .bearer_auth(token)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    let latency = t0.elapsed();
    Ok(Sample {
        latency,
        status,
        body: bytes.to_vec(),
    })
}

/// Checks a filing answer: one filing, `created` as expected, `attachments` kept.
fn check_answer(
    s: &Sample,
    want_status: u16,
    created: bool,
    attachments: usize,
) -> Result<(), String> {
    let text = || String::from_utf8_lossy(&s.body[..s.body.len().min(600)]).into_owned();
    if s.status != want_status {
        return Err(format!(
            "status {} (want {want_status}): {}",
            s.status,
            text()
        ));
    }
    let v: Value =
        serde_json::from_slice(&s.body).map_err(|e| format!("answer is not JSON: {e}"))?;
    let f = &v["filings"];
    let ok = f.as_array().map(|a| a.len()) == Some(1)
        && f[0]["created"] == json!(created)
        && f[0]["attachments"].as_array().map(|a| a.len()) == Some(attachments);
    if !ok {
        return Err(format!("unexpected answer: {}", text()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let cfg = Cfg::from_env();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = cfg.worker_threads {
        rt.worker_threads(n);
    }
    let rt = rt.build().expect("tokio runtime");
    rt.block_on(run(cfg));
}

async fn run(cfg: Cfg) {
    let mut mem = MemTracker::new();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cfg.smoke {
        println!(
            "(smoke mode: no --bench argument; use `cargo bench --bench filing` for the full run)"
        );
    }

    // ---- Setup ------------------------------------------------------------------------------
    let t_setup = Instant::now();
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite app");
    let token = app.token("alice@a.test");
    let url = format!("{}/v1/filings", app.base);
    // Warm the JWKS cache and the tenant's pool with an authenticated read.
    let warm = app.get(&token, "/v1/filings?limit=1").await;
    assert_eq!(warm.status().as_u16(), 200, "warm-up GET /v1/filings");
    let setup_ms = ms(t_setup.elapsed());

    // ---- Inputs for (a), built before timing ------------------------------------------------
    let t_build = Instant::now();
    let run_tag = hex::encode(common::rand_bytes::<4>());
    let mut bodies = Vec::with_capacity(cfg.messages);
    let (mut raw_total, mut body_total) = (0usize, 0usize);
    for i in 0..cfg.messages {
        let raw = message(
            &format!("Bench message {i}: draft agreement"),
            &format!("bench-{run_tag}-{i}@acme.com"),
            prose(cfg.text_bytes, i as u64),
            vec![(
                format!("exhibit-{i}.pdf"),
                "application/pdf",
                noise64(cfg.attachment_bytes, i as u64 + 1),
            )],
        );
        let body = request_body(&raw);
        raw_total += raw.len();
        body_total += body.len();
        bodies.push(body);
    }
    let build_a_ms = ms(t_build.elapsed());
    let avg_raw = raw_total as f64 / cfg.messages.max(1) as f64;
    let avg_body = body_total as f64 / cfg.messages.max(1) as f64;

    // One client per concurrent user, each with a warm keep-alive connection.
    let mut clients = Vec::with_capacity(cfg.concurrency);
    for _ in 0..cfg.concurrency {
        let c = reqwest::Client::new();
        let r = c
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .expect("healthz");
        assert!(r.status().is_success());
        let _ = r.bytes().await;
        clients.push(c);
    }

    let before_a = mem.observe();
    mem.reset_peak();

    // ---- (a) --------------------------------------------------------------------------------
    let queue = Arc::new(Mutex::new(bodies.into_iter().enumerate()));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.concurrency);
    for client in clients {
        let (queue, url, token) = (queue.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().unwrap().next();
                let Some((i, body)) = next else { break };
                out.push((i, post(&client, &url, &token, body.into()).await));
            }
            out
        }));
    }
    let mut results = Vec::with_capacity(cfg.messages);
    for t in tasks {
        results.extend(t.await.expect("client task"));
    }
    let wall_a = start.elapsed();
    let after_a = mem.observe();

    let mut failures = Vec::new();
    let mut lat_a = Vec::with_capacity(results.len());
    for (i, r) in &results {
        match r {
            Ok(s) => {
                lat_a.push(s.latency);
                if let Err(e) = check_answer(s, 201, true, 1) {
                    failures.push(format!("message {i}: {e}"));
                }
            }
            Err(e) => failures.push(format!("message {i}: {e}")),
        }
    }
    if !failures.is_empty() {
        for f in failures.iter().take(5) {
            eprintln!("FAILED {f}");
        }
        panic!(
            "{} of {} filings in scenario (a) failed",
            failures.len(),
            cfg.messages
        );
    }
    drop(results);
    let tenant = app.tenant(&app.firm_a).await;
    let (n_msgs, n_filings, n_audit, n_atts) = common::counts(&tenant).await;
    assert_eq!(n_msgs as usize, cfg.messages, "messages rows after (a)");
    assert_eq!(n_filings as usize, cfg.messages, "filings rows after (a)");
    assert_eq!(n_atts as usize, cfg.messages, "attachment rows after (a)");
    let blobs_a = common::blob_files(&tenant);
    let sa = Stats::of(&lat_a);
    let rate_a = cfg.messages as f64 / wall_a.as_secs_f64();

    // ---- Input for (b) ----------------------------------------------------------------------
    let t_build = Instant::now();
    let big_raw = message(
        "Closing set: signed agreements and exhibits",
        &format!("bench-big-{run_tag}@acme.com"),
        prose(cfg.text_bytes, 424_242),
        (0..cfg.big_attachments)
            .map(|k| {
                (
                    format!("closing-volume-{}.pdf", k + 1),
                    "application/pdf",
                    noise64(cfg.big_attachment_bytes, 1_000_000 + k as u64),
                )
            })
            .collect(),
    );
    let big_raw_len = big_raw.len();
    let big_body: &'static [u8] = Box::leak(request_body(&big_raw).into_boxed_slice());
    drop(big_raw);
    let build_b_ms = ms(t_build.elapsed());
    let client = reqwest::Client::new();

    let before_b = mem.observe();
    mem.reset_peak();

    // ---- (b) --------------------------------------------------------------------------------
    let first = post(&client, &url, &token, big_body.into())
        .await
        .expect("big filing");
    let after_b1 = mem.observe();
    check_answer(&first, 201, true, cfg.big_attachments).expect("big filing (first)");
    let second = post(&client, &url, &token, big_body.into())
        .await
        .expect("big filing again");
    let after_b = mem.observe();
    check_answer(&second, 200, false, cfg.big_attachments).expect("big filing (repeat)");
    let (n_msgs_b, n_filings_b, _, n_atts_b) = common::counts(&tenant).await;
    assert_eq!(n_msgs_b as usize, cfg.messages + 1);
    assert_eq!(n_filings_b as usize, cfg.messages + 1);
    assert_eq!(n_atts_b as usize, cfg.messages + cfg.big_attachments);

    let data_dir_mib = dir_size(app.dir.path()) as f64 / MIB;
    let end = mem.observe();

    // ---- Report -----------------------------------------------------------------------------
    let hwm_note = if mem.reset_works {
        "peak since reset before the scenario"
    } else {
        "cumulative process peak (VmHWM reset unavailable)"
    };
    println!();
    println!(
        "docket filing benchmark ({profile} build, SQLite, {cores} cores, tokio workers: {})",
        cfg.worker_threads
            .map(|n| n.to_string())
            .unwrap_or_else(|| "default".into())
    );
    println!("  setup (app, JWKS, tenants, warm-up): {setup_ms:.0} ms");
    println!();
    println!(
        "(a) {} distinct messages, {} concurrent clients",
        cfg.messages, cfg.concurrency
    );
    println!(
        "    message ~{:.1} KB raw ({} B binary attachment + {} B text), request body ~{:.1} KB",
        avg_raw / 1000.0,
        cfg.attachment_bytes,
        cfg.text_bytes,
        avg_body / 1000.0
    );
    println!(
        "    bodies built in {build_a_ms:.0} ms (not timed); {:.1} MiB held by clients at start",
        body_total as f64 / MIB
    );
    println!("    all {} answers 201; rows: {} messages, {} filings, {} attachments, {} audit; {} blob files",
        sa.n, n_msgs, n_filings, n_atts, n_audit, blobs_a);
    println!("    wall time      {:>10.3} s", wall_a.as_secs_f64());
    println!("    throughput     {:>10.1} filings/s", rate_a);
    println!("    latency p50    {:>10.2} ms", sa.p50);
    println!("    latency p90    {:>10.2} ms", sa.p90);
    println!("    latency p99    {:>10.2} ms", sa.p99);
    println!("    latency max    {:>10.2} ms", sa.max);
    println!(
        "    latency min    {:>10.2} ms   mean {:.2} ms",
        sa.min, sa.mean
    );
    println!(
        "    RSS before {:.1} MiB, after {:.1} MiB; VmHWM {:.1} MiB ({hwm_note})",
        before_a.rss_mib(),
        after_a.rss_mib(),
        after_a.hwm_mib()
    );
    println!();
    println!("(b) one {:.1} MB message, {} attachments of {} B binary (~{:.2} MB base64 each), request body {:.1} MB",
        big_raw_len as f64 / 1e6, cfg.big_attachments, cfg.big_attachment_bytes,
        cfg.big_attachment_bytes as f64 * 4.0 / 3.0 * 78.0 / 76.0 / 1e6, big_body.len() as f64 / 1e6);
    println!("    body built in {build_b_ms:.0} ms (not timed)");
    println!("    first filing   {:>10.2} ms   (201)", ms(first.latency));
    println!(
        "    repeat filing  {:>10.2} ms   (200, idempotent)",
        ms(second.latency)
    );
    println!(
        "    RSS before {:.1} MiB (incl. {:.1} MiB request body held by client), after {:.1} MiB",
        before_b.rss_mib(),
        big_body.len() as f64 / MIB,
        after_b.rss_mib()
    );
    println!(
        "    VmHWM after first {:.1} MiB, after repeat {:.1} MiB ({hwm_note})",
        after_b1.hwm_mib(),
        after_b.hwm_mib()
    );
    println!();
    println!(
        "process: VmHWM lifetime {:.1} MiB, VmRSS at end {:.1} MiB; data dir {:.1} MiB",
        mem.lifetime_peak_kib as f64 / 1024.0,
        end.rss_mib(),
        data_dir_mib
    );

    let report = json!({
        "bench": "filing",
        "profile": profile,
        "smoke": cfg.smoke,
        "backend": "sqlite",
        "cores": cores,
        "tokio_worker_threads": cfg.worker_threads,
        "setup_ms": setup_ms,
        "a": {
            "messages": cfg.messages,
            "concurrency": cfg.concurrency,
            "attachment_bytes": cfg.attachment_bytes,
            "text_bytes": cfg.text_bytes,
            "avg_raw_bytes": avg_raw.round(),
            "avg_request_bytes": avg_body.round(),
            "wall_s": (wall_a.as_secs_f64() * 1000.0).round() / 1000.0,
            "filings_per_s": round2(rate_a),
            "latency": sa.json(),
            "client_bodies_mib": round2(body_total as f64 / MIB),
            "rss_before_mib": round2(before_a.rss_mib()),
            "rss_after_mib": round2(after_a.rss_mib()),
            "vmhwm_mib": round2(after_a.hwm_mib()),
        },
        "b": {
            "raw_bytes": big_raw_len,
            "request_bytes": big_body.len(),
            "attachments": cfg.big_attachments,
            "attachment_bytes": cfg.big_attachment_bytes,
            "first_ms": ms(first.latency),
            "repeat_ms": ms(second.latency),
            "rss_before_mib": round2(before_b.rss_mib()),
            "rss_after_mib": round2(after_b.rss_mib()),
            "vmhwm_after_first_mib": round2(after_b1.hwm_mib()),
            "vmhwm_mib": round2(after_b.hwm_mib()),
        },
        "vmhwm_reset_per_scenario": mem.reset_works,
        "vmhwm_lifetime_mib": round2(mem.lifetime_peak_kib as f64 / 1024.0),
        "vmrss_end_mib": round2(end.rss_mib()),
        "data_dir_mib": round2(data_dir_mib),
    });
    println!("BENCH_JSON {report}");
}
