//! A mutation fuzzer for the whole parse path, on stable Rust (issue 8 §5): seeds from
//! `../shared/corpus/`, `../shared/cases/` and `tests/fixtures/`, mutated (bit flips, byte
//! runs, splices between seeds, duplicated and deleted lines, injected MIME headers,
//! boundaries and nesting), each input driven through limits → pre-scan → parse → names →
//! attachment extraction → rules evaluation (every field and operator) → body text → the
//! console's sanitised body → the JSON the API and cards are built from.
//!
//! A finding is a panic anywhere on that path (caught or not: a panic hook counts them), or
//! an input that takes longer than [`SLOW`]. Each finding is written to
//! `tests/artifacts/fuzz/` and fails the test; it then becomes a regression test.
//!
//! Bounded: `DOCKET_FUZZ_SECS` seconds (default 20; CI sets 120) or `DOCKET_FUZZ_EXECS`
//! executions. Longer runs: `DOCKET_FUZZ_SECS=3600 cargo test --release --test fuzz -- --nocapture`.
//! `DOCKET_FUZZ_SEED` fixes the random seed (printed at the start).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use docket::config::Limits;
use docket::mail;
use docket::rules::{self, Action, Condition, Field, Op, Rule};

const SLOW: Duration = Duration::from_secs(5);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Panics of dependencies that are `debug_assert!`s: they exist only in debug builds (as
/// tests run), never in the release build docket ships, and the parse guard turns them into
/// a 422 there anyway. Each was found by this fuzzer; its input is in `tests/fixtures/fuzz/`.
const DEBUG_ONLY_UPSTREAM: &[&str] = &[
    // mail-parser 0.11.9 src/parsers/message.rs:485 (a nested message's closing boundary
    // seen as a part of a multipart it is not in).
    "Invalid part ID, could not find multipart.",
];

fn is_debug_only_upstream(info: &std::panic::PanicHookInfo<'_>) -> bool {
    let msg = info
        .payload()
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| info.payload().downcast_ref::<&str>().copied())
        .unwrap_or("");
    DEBUG_ONLY_UPSTREAM.iter().any(|m| msg.contains(m))
}

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !is_debug_only_upstream(info) {
                PANICS.fetch_add(1, Ordering::SeqCst);
                prev(info);
            }
        }));
    });
}

/// Every input the fuzzer found (`tests/fixtures/fuzz/`) goes through the whole path
/// without an unexpected panic, and parsing it answers (accepts or rejects) cleanly.
#[test]
fn regressions_found_by_fuzzing() {
    count_panics();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let rules = rules_for_every_field();
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let raw = std::fs::read(e.path()).unwrap();
        let before = PANICS.load(Ordering::SeqCst);
        let rules = rules.clone();
        mail::guard::run_on_parser_thread(move || {
            drive(&raw, &Limits::default(), &rules);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            before,
            "{}",
            e.path().display()
        );
        n += 1;
    }
    assert!(n >= 1);
}

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![
        root.join("../shared/corpus"),
        root.join("../shared/cases"),
        root.join("tests/fixtures"),
    ];
    let mut files: Vec<PathBuf> = Vec::new();
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("eml" | "msg")) {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    out.push(b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nhi\r\n--x--\r\n".to_vec());
    out
}

/// xorshift64*: a small deterministic generator (no dependency, reproducible by seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n\n",
    b"--",
    b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Transfer-Encoding: x-uuencode\r\n",
    b"begin 644 a.bin\r\nM86)C\r\n`\r\nend\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%2e%2e%2f%00x\r\n",
    b"=?utf-8?B?AAAA?=",
    b"=?x-unknown?Q?=00=0D=0A?=",
    b"charset=\"utf-16\"",
    b"Content-ID: <a@b>\r\n",
    b"<img src=\"cid:a@b\">",
    b"=\r\n",
    b"=3D=",
    b"\x00\xff\xfe",
    b"Message-ID: <m@x>\r\n",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut m = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(m.len() + 1);
        match rng.below(9) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            2 => {
                let end = (at + rng.below(64)).min(m.len());
                m.drain(at..end);
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                m.splice(at..at, t.iter().copied());
            }
            4 => {
                // Repeat a token many times: structure floods.
                let t = TOKENS[3 + rng.below(3)];
                let n = 1 + rng.below(3000);
                let run: Vec<u8> = t.iter().copied().cycle().take(t.len() * n).collect();
                m.splice(at..at, run);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(512)).min(other.len());
                m.splice(at..at, other[from..to].iter().copied());
            }
            6 => {
                let end = (at + 1 + rng.below(80)).min(m.len());
                let chunk = m[at.min(end)..end].to_vec();
                m.splice(at..at, chunk);
            }
            7 => m.truncate(at),
            _ => {
                let crlf: Vec<u8> = m
                    .iter()
                    .flat_map(|b| {
                        if *b == b'\n' {
                            vec![b'\r', b'\n']
                        } else {
                            vec![*b]
                        }
                    })
                    .collect();
                m = crlf;
            }
        }
    }
    m.truncate(4 << 20);
    m
}

fn rules_for_every_field() -> Vec<Rule> {
    let mut rules = Vec::new();
    let cond = |field, op, value: &str, negate| Condition {
        field,
        op,
        value: value.into(),
        negate,
    };
    let conditions = [
        cond(Field::From, Op::Domain, "acme.com", false),
        cond(Field::To, Op::Address, "bob@demo.test", true),
        cond(Field::Cc, Op::Domain, "example.com", false),
        cond(Field::Recipient, Op::Domain, "demo.test", false),
        cond(Field::Participant, Op::Address, "dana@acme.com", false),
        cond(Field::Subject, Op::Regex, r"(?i)\b[A-Z]-\d+\b", false),
        cond(Field::Subject, Op::Contains, "offer", true),
        cond(Field::Body, Op::Contains, "privileged", false),
        cond(Field::AttachmentName, Op::Glob, "*.pdf", false),
    ];
    for (i, c) in conditions.into_iter().enumerate() {
        rules.push(Rule {
            id: format!("r{i}"),
            position: i as i64,
            name: format!("rule {i}"),
            enabled: true,
            conditions: vec![c],
            action: Action::ALL[i % 3],
            targets: vec!["matter:M-1".into()],
            stop: false,
            created_at: String::new(),
            updated_at: String::new(),
        });
    }
    rules
}

/// The whole path for one input; `Err` is a rejection (fine), never a panic.
fn drive(raw: &[u8], limits: &Limits, rules: &[Rule]) -> serde_json::Value {
    let Ok(p) = mail::parse(raw, limits) else {
        return serde_json::Value::Null;
    };
    let body = rules::body_text(raw);
    let outcome = rules::decide(rules, &p, body.as_deref());
    let html = docket::http::console::browse::sanitised_body(raw);
    serde_json::json!({
        "subject": p.subject, "from": p.from, "to": p.to, "cc": p.cc, "message_id": p.message_id,
        "attachments": p.attachments.iter().map(|a| serde_json::json!({
            "index": a.index, "name": a.display_name, "content_type": a.content_type,
            "size": a.size, "inline": a.inline,
        })).collect::<Vec<_>>(),
        "decision": format!("{outcome:?}").len(),
        "body": html.len(),
    })
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn fuzz_the_parse_path() {
    let seeds = seeds();
    assert!(!seeds.is_empty());
    let default_secs = if std::env::var_os("CI").is_some() {
        120
    } else {
        20
    };
    let secs = env_num("DOCKET_FUZZ_SECS").unwrap_or(default_secs);
    let max_execs = env_num("DOCKET_FUZZ_EXECS").unwrap_or(u64::MAX);
    let seed = env_num("DOCKET_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    eprintln!("fuzz: seed {seed}, {} seeds, {secs} s", seeds.len());
    count_panics();
    // The parser's own thread, with the stack docket gives it.
    let report = mail::guard::run_on_parser_thread(move || {
        Ok(run(&seeds, seed, Duration::from_secs(secs), max_execs))
    })
    .unwrap();
    eprintln!(
        "fuzz: {} executions in {:.1} s ({:.0}/s), {} accepted, {} findings",
        report.execs,
        report.elapsed.as_secs_f64(),
        report.execs as f64 / report.elapsed.as_secs_f64(),
        report.accepted,
        report.findings.len()
    );
    assert!(
        report.findings.is_empty(),
        "findings (inputs saved): {:?}",
        report.findings
    );
}

struct Report {
    execs: u64,
    accepted: u64,
    elapsed: Duration,
    findings: Vec<String>,
}

fn run(seeds: &[Vec<u8>], seed: u64, budget: Duration, max_execs: u64) -> Report {
    let limits = Limits::default();
    let rules = rules_for_every_field();
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut report = Report {
        execs: 0,
        accepted: 0,
        elapsed: Duration::ZERO,
        findings: Vec::new(),
    };
    while start.elapsed() < budget && report.execs < max_execs && report.findings.len() < 5 {
        let input = mutate(&mut rng, seeds);
        let before = PANICS.load(Ordering::SeqCst);
        let t = Instant::now();
        let out = std::panic::catch_unwind(|| drive(&input, &limits, &rules));
        let out = match out {
            Err(_) if PANICS.load(Ordering::SeqCst) == before => Ok(serde_json::Value::Null),
            other => other,
        };
        let took = t.elapsed();
        report.execs += 1;
        if matches!(&out, Ok(v) if !v.is_null()) {
            report.accepted += 1;
        }
        let panicked = out.is_err() || PANICS.load(Ordering::SeqCst) != before;
        if panicked || took > SLOW {
            let why = if panicked { "panic" } else { "slow" };
            report.findings.push(save(&input, why));
        }
    }
    report.elapsed = start.elapsed();
    report
}

fn save(input: &[u8], why: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/fuzz");
    let _ = std::fs::create_dir_all(&dir);
    let name = format!("{why}-{}.eml", &mail_sha(input)[..16]);
    let _ = std::fs::write(dir.join(&name), input);
    name
}

fn mail_sha(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b))
}
