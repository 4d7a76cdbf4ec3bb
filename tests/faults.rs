//! Storage faults injected under a real `docket serve` (no root needed): an `LD_PRELOAD` shim
//! (`tests/faults/faultfs.c`, compiled here with `cc`) makes the Nth write, fsync or rename
//! on a matching path fail with ENOSPC or EIO — in the blob store and in SQLite's WAL (SQLite
//! is bundled in the binary but calls libc, so the shim reaches it).
//!
//! For each fault point, 1, 2 and 3 consecutive faults, pool sizes 1 and 8:
//! - every request is answered 2xx or a 5xx problem, nothing else;
//! - once the faults stop, the next filings succeed and `/readyz` is 200, without a restart;
//! - a retry of every 5xx-answered request answers 200 (it was stored after all) or 201;
//! - after kill -9 and a restart, every acknowledged filing reads back byte-identical, the
//!   audit chain verifies, and there are no half-written filings.

#[path = "it/common.rs"]
mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shim, built once per test process.
fn shim() -> &'static Path {
    static SHIM: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &SHIM
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let so = dir.path().join("faultfs.so");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/faultfs.c");
            let out = Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-o"])
                .arg(&so)
                .arg(&src)
                .arg("-ldl")
                .output()
                .expect("a C compiler (`cc`) is needed to build the fault-injection shim");
            assert!(
                out.status.success(),
                "cc failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (dir, so)
        })
        .1
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One data dir with a tenant, a filer and a record, and the means to break its storage.
struct Rig {
    dir: tempfile::TempDir,
    key: String,
    jwks: JwksServer,
    pool: u32,
    ctl: PathBuf,
    token: String,
    http: reqwest::Client,
    next: u32,
    /// Run docket under this umask (octal digits).
    umask: Option<&'static str>,
    /// Run docket as this uid/gid (tests run as root drop to `nobody`).
    user: Option<u32>,
    /// SQLite's `wal_autocheckpoint` in pages (1: a checkpoint after every commit).
    autocheckpoint: u32,
}

impl Rig {
    async fn new(pool: u32) -> Rig {
        Rig::with(pool, None, None).await
    }

    async fn with(pool: u32, umask: Option<&'static str>, user: Option<u32>) -> Rig {
        let rig = Rig {
            umask,
            user,
            dir: tempfile::tempdir().unwrap(),
            key: hex::encode(rand_bytes::<32>()),
            jwks: JwksServer::start(google().jwks()).await,
            pool,
            ctl: PathBuf::new(),
            token: google().user_token("alice@a.test", CLIENT_ID, 3600),
            http: reqwest::Client::new(),
            next: 0,
            autocheckpoint: 1000,
        };
        if let Some(uid) = user {
            let out = Command::new("chown")
                .arg(format!("{uid}:{uid}"))
                .arg(rig.dir.path())
                .status()
                .unwrap();
            assert!(out.success());
        }
        let ctl = rig.dir.path().join("faultfs.ctl");
        for args in [
            &["tenant", "create", "--name", "Firm", "--domain", "a.test"][..],
            &[
                "user",
                "add",
                "--tenant",
                "a.test",
                "--email",
                "alice@a.test",
            ],
            &["record", "add", "--tenant", "a.test", "--kind", "matter"],
        ] {
            let mut c = rig.docket(0);
            c.args(args);
            if args[0] == "record" {
                c.args(["--reference", "M-1", "--title", "Acme"]);
            }
            run_ok(c);
        }
        Rig { ctl, ..rig }
    }

    fn docket(&self, port: u16) -> Command {
        let bin = env!("CARGO_BIN_EXE_docket");
        let mut c = match self.umask {
            None => Command::new(bin),
            Some(mask) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("umask {mask} && exec \"$0\" \"$@\""), bin]);
                c
            }
        };
        if let Some(uid) = self.user {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(uid);
        }
        for (k, _) in std::env::vars() {
            if k.starts_with("DOCKET_") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        c.env("DOCKET_DATA_DIR", self.dir.path())
            .env("DOCKET_MASTER_KEY", &self.key)
            .env("DOCKET_GOOGLE__JWKS_URL", &self.jwks.url)
            .env("DOCKET_GOOGLE__CLIENT_IDS", CLIENT_ID)
            .env("DOCKET_LISTEN", format!("127.0.0.1:{port}"))
            .env("DOCKET_METRICS__LISTEN", "127.0.0.1:0")
            .env(
                "DOCKET_DATABASE__MAX_CONNECTIONS_PER_TENANT",
                self.pool.to_string(),
            )
            .env("DOCKET_MAINTENANCE__SWEEP_INTERVAL_MINUTES", "0")
            .env(
                "DOCKET_DATABASE__SQLITE_WAL_AUTOCHECKPOINT_PAGES",
                self.autocheckpoint.to_string(),
            )
            .stdin(Stdio::null());
        c
    }

    /// `docket serve`, with the shim loaded when `faults`; ready when `/readyz` says so.
    async fn start(&self, faults: bool) -> (Server, String) {
        let port = free_port();
        let mut c = self.docket(port);
        if faults {
            c.env("LD_PRELOAD", shim()).env("FAULTFS_CTL", &self.ctl);
        }
        let log = std::fs::File::create(self.dir.path().join(format!("serve-{port}.log"))).unwrap();
        c.arg("serve").stdout(Stdio::null()).stderr(log);
        let mut server = Server(c.spawn().unwrap());
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/readyz")).await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                server.0.try_wait().unwrap().is_none(),
                "docket exited: {}",
                self.logs()
            );
            assert!(Instant::now() < deadline, "server did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (server, base)
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("serve-") {
                all += &std::fs::read_to_string(e.path()).unwrap_or_default();
            }
        }
        all
    }

    /// The next `count` calls of `ops` on paths containing `pattern` fail with `errno`.
    fn arm(&self, ops: &str, pattern: &str, errno: i32, count: usize) {
        let _ = std::fs::remove_file(self.ctl.with_extension("ctl.fired"));
        let tmp = self.ctl.with_extension("new");
        std::fs::write(&tmp, format!("{ops} {pattern} {errno} 0 {count}\n")).unwrap();
        std::fs::rename(&tmp, &self.ctl).unwrap();
    }

    fn disarm(&self) {
        std::fs::write(&self.ctl, "").unwrap();
    }

    fn fired(&self) -> usize {
        std::fs::read_to_string(self.ctl.with_extension("ctl.fired"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn message(&mut self) -> Vec<u8> {
        self.next += 1;
        let n = self.next;
        email(
            &format!("fault {n}"),
            Some(&format!("<fault-{n}@acme.com>")),
            &[("a.bin", "application/octet-stream", noise(20_000, n as u8))],
        )
    }

    async fn file(&self, base: &str, raw: &[u8]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{base}/v1/filings"))
            .bearer_auth(&self.token)
            .json(&filing_body(raw, &["matter:M-1"]))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            assert_eq!(ct.as_deref(), Some("application/problem+json"), "{body}");
        }
        (status, body)
    }

    /// Every acknowledged (filing id, message) reads back byte-identical.
    async fn assert_read_back(&self, base: &str, acked: &[(String, Vec<u8>)]) {
        for (id, raw) in acked {
            let r = self
                .http
                .get(format!("{base}/v1/filings/{id}/raw"))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "acknowledged filing {id} is lost");
            assert_eq!(&r.bytes().await.unwrap()[..], &raw[..]);
        }
    }

    async fn ready(&self, base: &str) -> bool {
        reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    }
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

fn filing_id(body: &Value) -> String {
    body["filings"][0]["id"].as_str().unwrap().to_string()
}

/// Where a fault is injected: which calls, on which paths, with which errno.
struct Point {
    ops: &'static str,
    pattern: &'static str,
    errno: i32,
    /// Whether a fault here fails the request that meets it. A checkpoint's does not:
    /// SQLite retries the checkpoint at the next commit and the log keeps every page.
    fails_requests: bool,
}

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

async fn faults_lose_nothing(point: Point, pool: u32) {
    let mut rig = Rig::new(pool).await;
    if !point.fails_requests {
        // Checkpoint after every commit, so that each filing meets the fault point.
        rig.autocheckpoint = 1;
    }
    let (server, base) = rig.start(true).await;
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut failed: Vec<Vec<u8>> = Vec::new();
    let raw = rig.message();
    let (s, v) = rig.file(&base, &raw).await;
    assert_eq!(s, 201, "{v}");
    acked.push((filing_id(&v), raw));
    for k in 1..=3usize {
        rig.arm(point.ops, point.pattern, point.errno, k);
        let mut tries = 0;
        while rig.fired() < k {
            tries += 1;
            assert!(
                tries <= 4 * k + 4,
                "the faults did not fire: {:?}\n{}",
                std::fs::read_dir(rig.dir.path())
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name())
                    .collect::<Vec<_>>(),
                rig.logs()
            );
            let raw = rig.message();
            match rig.file(&base, &raw).await {
                (201, v) => acked.push((filing_id(&v), raw)),
                (500..=599, _) => failed.push(raw),
                (s, v) => panic!("unexpected answer {s}: {v}"),
            }
        }
        rig.disarm();
        // No restart: the next filings succeed, several at once (every pooled connection).
        let raws: Vec<Vec<u8>> = (0..pool.max(2)).map(|_| rig.message()).collect();
        let answers = futures::future::join_all(raws.iter().map(|raw| rig.file(&base, raw))).await;
        for (raw, (s, v)) in raws.into_iter().zip(answers) {
            assert_eq!(s, 201, "after {k} fault(s) stopped: {v}\n{}", rig.logs());
            acked.push((filing_id(&v), raw));
        }
        assert!(rig.ready(&base).await, "/readyz after recovery");
    }
    assert_eq!(
        !failed.is_empty(),
        point.fails_requests,
        "which requests failed: {} of them",
        failed.len()
    );
    // A 5xx means "maybe": a retry answers 200 (it was stored) or 201 (it was not).
    for raw in failed {
        match rig.file(&base, &raw).await {
            (200 | 201, v) => acked.push((filing_id(&v), raw)),
            (s, v) => panic!("retry answered {s}: {v}"),
        }
    }
    // Acknowledged means durable: kill -9, restart without faults, read everything back.
    let mut server = server;
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let (_server, base) = rig.start(false).await;
    rig.assert_read_back(&base, &acked).await;
    let mut c = rig.docket(0);
    c.args(["audit", "verify", "--tenant", "a.test"]);
    assert!(run_ok(c).contains("intact"));
    let list: Value = rig
        .http
        .get(format!("{base}/v1/filings?target=matter:M-1&limit=200"))
        .bearer_auth(&rig.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = list["filings"].as_array().unwrap();
    assert_eq!(listed.len(), acked.len(), "one filing per message, no more");
    for f in listed {
        assert_eq!(f["attachments"].as_array().unwrap().len(), 1, "{f}");
    }
}

macro_rules! fault_point {
    ($name:ident, $ops:literal, $pattern:literal, $errno:expr) => {
        fault_point!($name, $ops, $pattern, $errno, true);
    };
    ($name:ident, $ops:literal, $pattern:literal, $errno:expr, $fails:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn pool_1() {
                faults_lose_nothing(
                    Point {
                        ops: $ops,
                        pattern: $pattern,
                        errno: $errno,
                        fails_requests: $fails,
                    },
                    1,
                )
                .await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn pool_8() {
                faults_lose_nothing(
                    Point {
                        ops: $ops,
                        pattern: $pattern,
                        errno: $errno,
                        fails_requests: $fails,
                    },
                    8,
                )
                .await;
            }
        }
    };
}

fault_point!(wal_write_enospc, "write", "tenant.db-wal", ENOSPC);
fault_point!(wal_fsync_eio, "fsync", "tenant.db-wal", EIO);
fault_point!(blob_write_enospc, "write", "/blobs/", ENOSPC);
fault_point!(blob_fsync_eio, "fsync", "/blobs/", EIO);
fault_point!(blob_rename_eio, "rename", "/blobs/", EIO);
fault_point!(blob_dir_fsync_eio, "dirsync", "/blobs/", EIO);
// A checkpoint is the only writer of the database file itself in WAL mode.
fault_point!(checkpoint_write_eio, "write", "tenant.db$", EIO, false);
fault_point!(checkpoint_fsync_eio, "fsync", "tenant.db$", EIO, false);

/// Every file docket keeps is 0600 and every directory 0700, whatever the umask — even one
/// that would leave docket's own files unwritable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_get_docket_modes_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    for mask in ["000", "277"] {
        let mut rig = Rig::with(1, Some(mask), None).await;
        let (_server, base) = rig.start(false).await;
        let raw = rig.message();
        let (s, v) = rig.file(&base, &raw).await;
        assert_eq!(s, 201, "umask {mask}: {v}");
        let mut seen = 0;
        let mut stack = vec![rig.dir.path().join("tenants"), rig.dir.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("serve-") || name.starts_with("faultfs") {
                    continue;
                }
                let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
                if e.file_type().unwrap().is_dir() {
                    assert_eq!(mode, 0o700, "umask {mask}: {}", e.path().display());
                    if e.path() != rig.dir.path().join("tenants") {
                        stack.push(e.path());
                    }
                } else {
                    assert_eq!(mode, 0o600, "umask {mask}: {}", e.path().display());
                    seen += 1;
                }
            }
        }
        // catalogue + tenant database (with -wal, -shm), the raw message and its attachment.
        assert!(seen >= 6, "umask {mask}: only {seen} files");
    }
}

/// The log without its colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn uid_of_test_process() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tenant database made read-only while docket is stopped: filings fail with a 5xx problem,
/// `/readyz` names the tenant, and once the file is writable again the next filing succeeds
/// without a restart — and after one. (File modes bind only a non-root user: as root the
/// test runs docket as `nobody`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_database_is_reported_and_fixing_it_needs_no_restart() {
    let user = (uid_of_test_process() == 0).then_some(65534);
    let mut rig = Rig::with(1, None, user).await;
    let tenant_dir = std::fs::read_dir(rig.dir.path().join("tenants"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let tid = tenant_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let db = tenant_dir.join("tenant.db");
    set_mode(&db, 0o444);
    let (server, base) = rig.start(false).await;
    let raw = rig.message();
    let (s, v) = rig.file(&base, &raw).await;
    assert!((500..600).contains(&s), "{s}: {v}");
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&tid) && detail.contains("readonly"),
        "{detail}"
    );
    assert!(rig.logs().contains("read-only"), "{}", rig.logs());

    set_mode(&db, 0o600);
    let (s, v) = rig.file(&base, &raw).await;
    assert_eq!(s, 201, "{v}\n{}", rig.logs());
    assert!(rig.ready(&base).await);
    drop(server);
    let (_server, base) = rig.start(false).await;
    let raw = rig.message();
    let (s, v) = rig.file(&base, &raw).await;
    assert_eq!(s, 201, "after a restart: {v}");
}

/// `docket serve` sweeps at start-up (and on its schedule); `docket maintenance sweep` does it
/// on demand and prints the counts. Only old leftovers go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_and_the_command_sweep_old_leftovers() {
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    let rig = Rig::new(1).await;
    let tenant_dir = std::fs::read_dir(rig.dir.path().join("tenants"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let shard = tenant_dir.join("blobs").join("ab");
    std::fs::create_dir_all(&shard).unwrap();
    let leftovers = |tag: &str| {
        let tmp = shard.join(format!(".tmp-{tag}"));
        let blob = shard.join(format!("ab{}", tag.repeat(62 / tag.len())));
        for p in [&tmp, &blob] {
            std::fs::write(p, b"x").unwrap();
            std::fs::File::options()
                .append(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        (tmp, blob)
    };
    let (tmp, blob) = leftovers("1");
    let port = free_port();
    let mut c = rig.docket(port);
    let log_path = rig.dir.path().join("serve-sweep.log");
    c.env("DOCKET_MAINTENANCE__SWEEP_INTERVAL_MINUTES", "60")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let server = Server(c.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("sweep done") {
            break log;
        }
        assert!(Instant::now() < deadline, "serve did not sweep: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(server);
    assert!(!tmp.exists() && !blob.exists());
    let log = strip_ansi(&log);
    assert!(
        log.contains("temp_files=1") && log.contains("orphan_blobs=1"),
        "{log}"
    );

    let (tmp, blob) = leftovers("2");
    let young = shard.join(".tmp-young");
    std::fs::write(&young, b"x").unwrap();
    let mut c = rig.docket(0);
    c.args(["maintenance", "sweep"]);
    let out = run_ok(c);
    assert!(
        out.contains("1 temp file(s) and 1 unreferenced blob(s) removed"),
        "{out}"
    );
    assert!(!tmp.exists() && !blob.exists() && young.exists());
    let mut c = rig.docket(0);
    c.args(["maintenance", "sweep", "--grace-minutes", "1"]);
    assert!(
        !c.output().unwrap().status.success(),
        "a grace under 5 minutes is refused"
    );
}

/// A disk that stays full: filings fail, `/readyz` says which tenant cannot be written (the
/// catalogue answering is not enough), and both recover by themselves once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_reports_a_tenant_that_cannot_commit_until_it_can() {
    let mut rig = Rig::new(8).await;
    let (_server, base) = rig.start(true).await;
    let raw = rig.message();
    assert_eq!(rig.file(&base, &raw).await.0, 201);
    rig.arm("write", "tenant.db-wal", ENOSPC, 1_000_000);
    let raw = rig.message();
    let (s, v) = rig.file(&base, &raw).await;
    assert_eq!(s, 500, "{v}");
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(r.status(), 503, "{}\n{}", rig.fired(), rig.logs());
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("full"), "{body}");
    rig.disarm();
    assert!(rig.ready(&base).await, "/readyz once the disk has room");
    let (s, v) = rig.file(&base, &raw).await;
    assert_eq!(s, 201, "{v}");
}

/// The catalogue (which firms exist, their keys) is written by operator commands, never on
/// the filing path. With its log failing (ENOSPC on write, EIO on fsync; 1, 2, 3 times):
/// a server keeps filing, `docket tenant create` fails with a clear error and leaves no
/// half-made firm (no catalogue row, no directory), and once the fault stops the same
/// command succeeds and the new firm files at once, without a restart. After kill -9 and a
/// restart every acknowledged filing reads back byte-identical and the audit chain verifies.
async fn catalogue_write_faults_leave_no_half_made_firm(pool: u32) {
    let mut rig = Rig::new(pool).await;
    let (server, base) = rig.start(true).await;
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let tenants = |rig: &Rig| {
        let mut c = rig.docket(0);
        c.args(["tenant", "list"]);
        run_ok(c)
    };
    let dirs = |rig: &Rig| {
        std::fs::read_dir(rig.dir.path().join("tenants"))
            .unwrap()
            .count()
    };
    for (ops, errno) in [("write", ENOSPC), ("fsync", EIO)] {
        for k in 1..=3usize {
            rig.arm(ops, "catalog.db-wal", errno, k);
            let raw = rig.message();
            let (s, v) = rig.file(&base, &raw).await;
            assert_eq!(s, 201, "filing under a catalogue fault: {v}");
            acked.push((filing_id(&v), raw));
            let mut c = rig.docket(0);
            c.env("LD_PRELOAD", shim()).env("FAULTFS_CTL", &rig.ctl);
            c.args(["tenant", "create", "--name", "Second", "--domain", "b.test"]);
            let out = c.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                rig.fired() >= 1,
                "{ops} x{k}: the fault did not fire: {stderr}"
            );
            assert!(!out.status.success(), "{ops} x{k}: created under a fault");
            assert!(
                stderr.contains("disk") || stderr.contains("I/O") || stderr.contains("full"),
                "{ops} x{k}: {stderr}"
            );
            rig.disarm();
            assert!(
                !tenants(&rig).contains("Second"),
                "{ops} x{k}: a half-made firm"
            );
            assert_eq!(dirs(&rig), 1, "{ops} x{k}: a directory left behind");
        }
    }
    let mut c = rig.docket(0);
    c.args(["tenant", "create", "--name", "Second", "--domain", "b.test"]);
    run_ok(c);
    let mut c = rig.docket(0);
    c.args(["user", "add", "--tenant", "b.test", "--email", "bob@b.test"]);
    run_ok(c);
    let mut c = rig.docket(0);
    c.args(["record", "add", "--tenant", "b.test", "--kind", "matter"]);
    c.args(["--reference", "M-1", "--title", "Initech"]);
    run_ok(c);
    let raw = rig.message();
    let alice = std::mem::replace(
        &mut rig.token,
        google().user_token("bob@b.test", CLIENT_ID, 3600),
    );
    let (s, v) = rig.file(&base, &raw).await;
    assert_eq!(s, 201, "the new firm files without a restart: {v}");
    let mut server = server;
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let (_server, base) = rig.start(false).await;
    rig.token = alice;
    rig.assert_read_back(&base, &acked).await;
    for tenant in ["a.test", "b.test"] {
        let mut c = rig.docket(0);
        c.args(["audit", "verify", "--tenant", tenant]);
        assert!(run_ok(c).contains("intact"), "{tenant}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalogue_write_faults_pool_1() {
    catalogue_write_faults_leave_no_half_made_firm(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalogue_write_faults_pool_8() {
    catalogue_write_faults_leave_no_half_made_firm(8).await;
}
