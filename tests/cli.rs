//! Drives the real `docket` binary: operator commands, audit tamper detection, configuration
//! errors, `serve` and `dev`. Every child runs in a temp dir with an explicit environment
//! (inherited `DOCKET_*` / `RUST_LOG` removed) and is killed when its guard drops.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_docket");
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const OTHER_KEY_HEX: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const CLIENT_ID: &str = "cli-test.apps.googleusercontent.com";
const DEV_ISSUER: &str = "https://dev.docket.invalid";
const DEV_CLIENT_ID: &str = "docket-dev.apps.googleusercontent.com";
/// Longest a command may take (first runs of a cold binary on a loaded 2-core box included).
const DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// Process harness
// ---------------------------------------------------------------------------------------

/// A running `docket`; killed (and reaped) on drop, whatever the test's outcome.
struct Proc {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    what: String,
}

fn drain(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

impl Proc {
    fn spawn(mut cmd: Command, what: String) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            drain(child.stdout.take().unwrap(), out.clone()),
            drain(child.stderr.take().unwrap(), err.clone()),
        ];
        Proc {
            child,
            out,
            err,
            readers,
            what,
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Panics (with the child's output) if it has exited.
    fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            // Let the readers catch the last bytes.
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
            panic!(
                "{} exited early ({st})\nstdout:\n{}\nstderr:\n{}",
                self.what,
                self.stdout(),
                self.stderr()
            );
        }
    }

    /// Waits until stdout contains `needle`; returns all of stdout so far.
    fn wait_for_stdout(&mut self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let out = self.stdout();
            if out.contains(needle) {
                return out;
            }
            self.assert_running();
            assert!(
                Instant::now() < end,
                "{}: no {needle:?} on stdout in time\nstdout:\n{out}\nstderr:\n{}",
                self.what,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the child to exit on its own (killing it and failing past the deadline).
    fn finish(mut self) -> Out {
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit in time\nstdout:\n{}\nstderr:\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Out {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
            what: self.what.clone(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    what: String,
}

impl Out {
    fn ok(self) -> Out {
        assert!(
            self.status.success(),
            "{} failed ({})\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
    /// Asserts the exit code of a configuration error (2, wherever it was found).
    fn config_error(self) -> Out {
        assert_eq!(
            self.status.code(),
            Some(2),
            "{}: {}",
            self.what,
            self.stderr
        );
        self
    }
    /// Asserts failure and that stderr names every one of `needles`; returns stderr.
    fn fails_naming(self, needles: &[&str]) -> String {
        assert!(
            !self.status.success(),
            "{} unexpectedly succeeded\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "{}: stderr does not name {n:?}:\n{}",
                self.what,
                self.stderr
            );
        }
        self.stderr
    }
}

/// A temp dir to run `docket` in, with the environment its children get.
struct Site {
    tmp: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Site {
    /// Data dir `<tmp>/data` and a master key.
    fn new() -> Site {
        let mut s = Site::bare();
        s.set("DOCKET_MASTER_KEY", KEY_HEX);
        s
    }
    /// Only the data dir.
    fn bare() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data").display().to_string();
        let mut s = Site {
            tmp,
            vars: Vec::new(),
        };
        s.set("DOCKET_DATA_DIR", &data);
        s
    }
    fn set(&mut self, k: &str, v: &str) -> &mut Site {
        self.unset(k);
        self.vars.push((k.to_string(), v.to_string()));
        self
    }
    fn unset(&mut self, k: &str) -> &mut Site {
        self.vars.retain(|(key, _)| key != k);
        self
    }
    fn root(&self) -> &Path {
        self.tmp.path()
    }
    fn data(&self) -> PathBuf {
        let d = self
            .vars
            .iter()
            .find(|(k, _)| k == "DOCKET_DATA_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .expect("a data dir");
        if d.is_absolute() {
            d
        } else {
            self.root().join(d)
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy().to_ascii_uppercase();
            if name.starts_with("DOCKET_") || name == "RUST_LOG" {
                c.env_remove(&k);
            }
        }
        // Tests run side by side: no fixed metrics port (a site may still set one).
        c.env("DOCKET_METRICS__LISTEN", "127.0.0.1:0")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .args(args)
            .current_dir(self.root());
        c
    }
    fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.cmd(args), format!("docket {}", args.join(" ")))
    }
    fn run(&self, args: &[&str]) -> Out {
        self.spawn(args).finish()
    }
    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.run(args).ok().stdout
    }

    /// The id of the tenant named `name`, from `tenant list`'s first column.
    fn tenant_id(&self, name: &str) -> String {
        let list = self.ok(&["tenant", "list"]);
        list.lines()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|cols| cols.get(1) == Some(&name))
            .unwrap_or_else(|| panic!("no tenant {name:?} in:\n{list}"))[0]
            .to_string()
    }
    fn tenant_db(&self, id: &str) -> PathBuf {
        self.data().join("tenants").join(id).join("tenant.db")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Polls `/healthz` then `/readyz` until both answer 200, failing if the child exits first.
async fn wait_ready(p: &mut Proc, base: &str) {
    let client = http();
    let end = Instant::now() + DEADLINE;
    for path in ["/healthz", "/readyz"] {
        loop {
            p.assert_running();
            let r = client
                .get(format!("{base}{path}"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            match r {
                Ok(resp) if resp.status() == 200 => break,
                other => assert!(
                    Instant::now() < end,
                    "{} never answered 200 on {path}: {other:?}\nstderr:\n{}",
                    p.what,
                    p.stderr()
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn sqlite(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    assert!(path.exists(), "{} does not exist", path.display());
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

async fn exec(path: &Path, statements: &[&str]) {
    use sqlx::{Connection, Executor};
    let mut c = sqlite(path).await;
    for s in statements {
        let r = c.execute(*s).await.unwrap();
        assert_eq!(r.rows_affected(), 1, "{s} should touch exactly one row");
    }
    c.close().await.unwrap();
}

async fn count(path: &Path, table: &str) -> i64 {
    use sqlx::Connection;
    let mut c = sqlite(path).await;
    let n = sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    n
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        files_under(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

const ATTACHMENT: &[u8] = b"Draft settlement terms, v1.\nClause 1: Widget pays Acme.\n";

/// A small RFC 822 message with a text body and one attachment, written by hand.
fn write_eml(dir: &Path) -> PathBuf {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ATTACHMENT);
    let eml = format!(
        "From: Dana Client <dana@acme.com>\r\n\
To: A Filer <a@firm.test>\r\n\
Subject: Acme v. Widget: draft settlement\r\n\
Date: Tue, 05 Mar 2024 10:00:00 +0000\r\n\
Message-ID: <cli-test-1@acme.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"cli-boundary\"\r\n\
\r\n\
--cli-boundary\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Please find the draft settlement attached.\r\n\
--cli-boundary\r\n\
Content-Type: text/plain; name=\"draft.txt\"\r\n\
Content-Disposition: attachment; filename=\"draft.txt\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{b64}\r\n\
--cli-boundary--\r\n"
    );
    let path = dir.join("message.eml");
    std::fs::write(&path, eml).unwrap();
    path
}

/// Tenant "Firm" (firm.test), a matter, a user; returns the tenant id.
fn seed_firm(site: &Site) -> String {
    let out = site.ok(&[
        "tenant",
        "create",
        "--name",
        "Firm",
        "--domain",
        "firm.test",
    ]);
    assert!(out.contains("created tenant Firm"), "{out}");
    site.ok(&[
        "record",
        "add",
        "--tenant",
        "firm.test",
        "--kind",
        "matter",
        "--reference",
        "M-2024-017",
        "--title",
        "Acme v. Widget",
        "--contact",
        "acme.com",
    ]);
    site.ok(&[
        "user",
        "add",
        "--tenant",
        "firm.test",
        "--email",
        "a@firm.test",
        "--role",
        "filer",
    ]);
    site.tenant_id("Firm")
}

/// Issue 8 §1: `docket file` with a message nested 10^3..10^6 deep exits with a clear error
/// (never a crash), and files nothing.
#[test]
fn file_refuses_deeply_nested_mail_without_crashing() {
    let site = Site::new();
    seed_firm(&site);
    let dir = site.root().join("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    for (kind, level) in [
        (
            "multipart",
            &b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"[..],
        ),
        ("rfc822", &b"Content-Type: message/rfc822\r\n\r\n"[..]),
    ] {
        for levels in [1_000usize, 10_000, 100_000, 1_000_000] {
            let mut eml = b"From: mallory@evil.test\r\nSubject: deep\r\n".to_vec();
            for _ in 0..levels {
                eml.extend_from_slice(level);
            }
            eml.extend_from_slice(b"\r\nhello\r\n");
            let path = dir.join(format!("{kind}-{levels}.eml"));
            std::fs::write(&path, &eml).unwrap();
            let out = site.run(&[
                "file",
                "--tenant",
                "firm.test",
                "--user",
                "a@firm.test",
                "--target",
                "matter:M-2024-017",
                path.to_str().unwrap(),
            ]);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{kind} {levels}: {}",
                out.stderr
            );
            assert!(
                out.stderr.contains("deeper than the limit")
                    || out.stderr.contains("more MIME parts"),
                "{kind} {levels}: {}",
                out.stderr
            );
        }
    }
    let list = site.ok(&["audit", "list", "--tenant", "firm.test"]);
    assert!(!list.contains("filing"), "nothing was filed: {list}");
}

fn file_eml(site: &Site, eml: &Path) -> Value {
    let out = site.ok(&[
        "file",
        "--tenant",
        "firm.test",
        "--user",
        "a@firm.test",
        "--target",
        "matter:M-2024-017",
        eml.to_str().unwrap(),
    ]);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`docket file` output is not JSON ({e}):\n{out}"))
}

/// Issue 11: an operator terminates a tenant (name typed to confirm), `purge-due` leaves it
/// alone until its date and then deletes its database, blobs and backups, and `purged`
/// shows the tombstone. (Retention 0 days here: the date comes at once.)
#[test]
fn operator_terminates_a_tenant_and_purge_due_deletes_it_on_its_date() {
    let mut site = Site::new();
    let tid = seed_firm(&site);
    file_eml(&site, &write_eml(site.root()));
    let backups = site.root().join("backups");
    site.ok(&[
        "backup",
        "create",
        "--tenant",
        "firm.test",
        "--to",
        backups.to_str().unwrap(),
    ]);
    assert!(backups.join(&tid).is_dir());

    site.run(&[
        "tenant",
        "terminate",
        "--tenant",
        "firm.test",
        "--confirm-name",
        "Frim",
    ])
    .fails_naming(&["type the tenant's name exactly", "\"Firm\""]);
    // Terminated with the default 90 days: nothing is due yet.
    let out = site.ok(&[
        "tenant",
        "terminate",
        "--tenant",
        "firm.test",
        "--confirm-name",
        "Firm",
    ]);
    assert!(
        out.contains("terminated at") && out.contains("purged after"),
        "{out}"
    );
    assert_eq!(
        site.ok(&["tenant", "purge-due"]).trim(),
        "0 tenant(s) purged"
    );
    assert!(site.tenant_db(&tid).exists());
    let list = site.ok(&["tenant", "list"]);
    assert!(
        list.contains("terminated") && list.contains("purge after"),
        "{list}"
    );

    // A second tenant terminated under a 0-day retention is due at once.
    site.ok(&[
        "tenant",
        "create",
        "--name",
        "Short",
        "--domain",
        "short.test",
    ]);
    let short = site.tenant_id("Short");
    site.set("DOCKET_ADMIN__RETENTION_DAYS", "0");
    site.ok(&[
        "tenant",
        "terminate",
        "--tenant",
        "short.test",
        "--confirm-name",
        "Short",
    ]);
    let out = site.ok(&["tenant", "purge-due"]);
    assert!(out.contains(&format!("purged Short ({short})")), "{out}");
    assert!(out.trim_end().ends_with("1 tenant(s) purged"), "{out}");
    assert!(!site.data().join("tenants").join(&short).exists());
    assert!(site.tenant_db(&tid).exists(), "Firm is not due yet");
    assert!(backups.join(&tid).is_dir(), "nor are its backups");
    let purged = site.ok(&["tenant", "purged"]);
    let row: Vec<&str> = purged.trim_end().split('\t').collect();
    assert_eq!(row[..2], [short.as_str(), "Short"], "{purged}");
    assert!(
        row[2].starts_with("terminated ") && row[2].ends_with(" by operator"),
        "{purged}"
    );
    assert!(row[3].starts_with("purged "), "{purged}");
    assert!(!site.ok(&["tenant", "list"]).contains("Short"));
}

/// Issue 11: legal holds and retention from the CLI.
#[test]
fn operator_places_lists_and_releases_holds_and_evaluates_retention() {
    let site = Site::new();
    seed_firm(&site);
    let t = ["--tenant", "firm.test"];
    let out = site.ok(&[
        &["hold", "place"][..],
        &t,
        &[
            "--record",
            "matter:M-2024-017",
            "--reason",
            "Acme litigation",
        ],
    ]
    .concat());
    assert!(out.contains("placed on matter:M-2024-017"), "{out}");
    site.run(
        &[
            &["hold", "place"][..],
            &t,
            &["--record", "matter:M-9", "--reason", "x"],
        ]
        .concat(),
    )
    .fails_naming(&["no record matter:M-9"]);
    site.run(
        &[
            &["hold", "place"][..],
            &t,
            &["--email", "w@x.test", "--reason", " "],
        ]
        .concat(),
    )
    .fails_naming(&["reason"]);
    let list = site.ok(&[&["hold", "list"][..], &t].concat());
    let id = list.split('\t').next().unwrap().to_string();
    assert!(
        list.contains("record\tmatter:M-2024-017\tAcme litigation"),
        "{list}"
    );
    site.ok(&[&["hold", "release"][..], &t, &[id.as_str()]].concat());
    assert_eq!(site.ok(&[&["hold", "list"][..], &t].concat()), "");
    assert!(site
        .ok(&[&["hold", "list", "--all"][..], &t].concat())
        .contains("released"));
    let out = site.ok(&[&["retention", "evaluate"][..], &t].concat());
    assert!(out.contains("nothing is due for disposition"), "{out}");
    let out = site.ok(&["retention", "evaluate"]);
    assert!(out.contains("0 disposition list(s)"), "{out}");
}

/// Issue 11: a person's access export and erasure from the CLI; the chain still verifies.
#[test]
fn operator_exports_and_erases_a_person() {
    let site = Site::new();
    seed_firm(&site);
    file_eml(&site, &write_eml(site.root()));
    let zip = site.root().join("dana.zip");
    let t = ["--tenant", "firm.test", "--email", "Dana@Acme.com"];
    let out = site.ok(&[
        &["subject", "export"][..],
        &t,
        &["--to", zip.to_str().unwrap()],
    ]
    .concat());
    assert!(out.starts_with("wrote "), "{out}");
    let bytes = std::fs::read(&zip).unwrap();
    assert_eq!(&bytes[..4], b"PK\x03\x04", "a zip");
    assert!(bytes.windows(13).any(|w| w == b"manifest.json"));
    let out = site.ok(&[&["subject", "erase"][..], &t, &["--request", "DSR-7"]].concat());
    let done: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(done["filings_deleted"], 1, "{out}");
    assert!(done["audit_entries_erased"].as_i64().unwrap() >= 1, "{out}");
    let verify = site.ok(&["audit", "verify", "--tenant", "firm.test"]);
    assert!(verify.contains("intact"), "{verify}");
    site.run(&[
        "subject",
        "erase",
        "--tenant",
        "firm.test",
        "--email",
        "nobody",
    ])
    .fails_naming(&["not an email address"]);
}

/// A retention longer than 100 years (or one that would overflow the purge date) is refused.
#[test]
fn an_absurd_retention_is_a_configuration_error() {
    let mut site = Site::new();
    site.set("DOCKET_ADMIN__RETENTION_DAYS", "18446744073709551615");
    let err = site.run(&["tenant", "list"]).config_error().stderr;
    assert!(err.contains("admin.retention_days"), "{err}");
}

// ---------------------------------------------------------------------------------------
// 1. Operator flow
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn operator_flow_creates_lists_files_once_and_verifies() {
    let site = Site::new();

    let out = site.ok(&[
        "tenant",
        "create",
        "--name",
        "Firm",
        "--domain",
        "firm.test",
    ]);
    assert!(out.contains("created tenant Firm"), "{out}");
    let list = site.ok(&["tenant", "list"]);
    let row: Vec<&str> = list.trim_end().split('\t').collect();
    assert_eq!(list.lines().count(), 1, "{list}");
    assert_eq!(row[1..], ["Firm", "active", "firm.test"], "{list}");
    assert_eq!(row[0].len(), 32, "tenant id: {list}");
    let tid = row[0].to_string();

    site.ok(&[
        "record",
        "add",
        "--tenant",
        "firm.test",
        "--kind",
        "matter",
        "--reference",
        "M-2024-017",
        "--title",
        "Acme v. Widget",
        "--contact",
        "acme.com",
    ]);
    let records = site.ok(&["record", "list", "--tenant", "firm.test"]);
    assert_eq!(
        records.trim_end(),
        "matter:M-2024-017\tAcme v. Widget\t\topen\tacme.com",
        "{records}"
    );

    site.ok(&[
        "user",
        "add",
        "--tenant",
        "firm.test",
        "--email",
        "a@firm.test",
        "--role",
        "filer",
    ]);
    let users = site.ok(&["user", "list", "--tenant", "firm.test"]);
    let urow: Vec<&str> = users.trim_end().split('\t').collect();
    assert_eq!(urow[..3], ["a@firm.test", "filer", "active"], "{users}");

    let eml = write_eml(site.root());
    let first = file_eml(&site, &eml);
    let f = &first["filings"][0];
    assert_eq!(first["filings"].as_array().unwrap().len(), 1, "{first:#}");
    assert_eq!(f["created"], true, "{first:#}");
    assert_eq!(f["target"]["kind"], "matter", "{first:#}");
    assert_eq!(f["target"]["id"], "M-2024-017", "{first:#}");
    assert_eq!(f["filed_by"], "a@firm.test", "{first:#}");
    assert_eq!(f["message"]["subject"], "Acme v. Widget: draft settlement");
    assert_eq!(f["attachments"].as_array().unwrap().len(), 1, "{first:#}");
    assert_eq!(f["attachments"][0]["name"], "draft.txt", "{first:#}");
    assert_eq!(f["attachments"][0]["size"], ATTACHMENT.len(), "{first:#}");

    let db = site.tenant_db(&tid);
    let blobs = site.data().join("tenants").join(&tid).join("blobs");
    let blobs_after_first = files_under(&blobs);
    assert!(
        blobs_after_first > 0,
        "nothing stored under {}",
        blobs.display()
    );

    let second = file_eml(&site, &eml);
    let g = &second["filings"][0];
    assert_eq!(g["created"], false, "{second:#}");
    assert_eq!(g["id"], f["id"], "the same filing is answered");
    assert_eq!(g["message"]["id"], f["message"]["id"]);
    assert_eq!(
        files_under(&blobs),
        blobs_after_first,
        "no second copy of blobs"
    );
    assert_eq!(count(&db, "messages").await, 1);
    assert_eq!(count(&db, "filings").await, 1);
    assert_eq!(count(&db, "message_attachments").await, 1);

    let out = site.ok(&["migrate"]);
    assert!(out.contains("1 tenant database(s) are up to date"), "{out}");

    let out = site.run(&["audit", "verify", "--tenant", "firm.test"]).ok();
    assert!(out.stdout.contains("intact"), "{}", out.stdout);
    // tenant.created, record.added, user.added, filing.created, filing.duplicate.
    assert!(out.stdout.contains("intact: 5 entries"), "{}", out.stdout);
}

// ---------------------------------------------------------------------------------------
// 2. Audit tampering
// ---------------------------------------------------------------------------------------

/// A tenant with a five-entry chain; returns its tenant.db path.
fn chain_of_five(site: &Site) -> PathBuf {
    let tid = seed_firm(site); // entries 1..=3
    site.ok(&[
        "record",
        "add",
        "--tenant",
        "firm.test",
        "--kind",
        "case",
        "--reference",
        "C-1",
        "--title",
        "Smith v. Jones",
    ]); // 4
    let eml = write_eml(site.root());
    assert_eq!(file_eml(site, &eml)["filings"][0]["created"], true); // 5
    let out = site.run(&["audit", "verify", "--tenant", "firm.test"]).ok();
    assert!(
        out.stdout.contains("intact: 5 entries"),
        "chain must verify before tampering: {}",
        out.stdout
    );
    site.tenant_db(&tid)
}

/// `audit verify` must exit non-zero and name `seq` as the first bad entry.
fn assert_broken_at(site: &Site, seq: i64, reason_word: &str) {
    let out = site.run(&["audit", "verify", "--tenant", "firm.test"]);
    assert!(
        !out.status.success(),
        "tampered chain verified: {}",
        out.stdout
    );
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("BROKEN at entry {seq}:")),
        "should name entry {seq}: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains(reason_word),
        "reason should mention {reason_word:?}: {}",
        out.stdout
    );
}

#[tokio::test]
async fn audit_verify_catches_an_edited_detail() {
    let site = Site::new();
    let db = chain_of_five(&site);
    exec(
        &db,
        &[r#"UPDATE audit_log SET detail = '{"email":"mallory@firm.test","role":"admin"}' WHERE seq = 3"#],
    )
    .await;
    assert_broken_at(&site, 3, "edited");
}

#[tokio::test]
async fn audit_verify_catches_a_deleted_middle_entry() {
    let site = Site::new();
    let db = chain_of_five(&site);
    exec(&db, &["DELETE FROM audit_log WHERE seq = 3"]).await;
    assert_broken_at(&site, 3, "missing");
}

#[tokio::test]
async fn audit_verify_catches_reordered_entries() {
    let site = Site::new();
    let db = chain_of_five(&site);
    exec(
        &db,
        &[
            "UPDATE audit_log SET seq = 1000 WHERE seq = 2",
            "UPDATE audit_log SET seq = 2 WHERE seq = 3",
            "UPDATE audit_log SET seq = 3 WHERE seq = 1000",
        ],
    )
    .await;
    assert_broken_at(&site, 2, "reordered");
}

#[tokio::test]
async fn audit_verify_catches_a_deleted_last_entry() {
    let site = Site::new();
    let db = chain_of_five(&site);
    exec(&db, &["DELETE FROM audit_log WHERE seq = 5"]).await;
    assert_broken_at(&site, 5, "trailing");
}

/// Issue 11: the last entries cut together with the head leave a chain that fits itself;
/// the catalogue's anchor (set by the commands that wrote them) still catches it.
#[tokio::test]
async fn audit_verify_catches_entries_cut_together_with_the_head() {
    let site = Site::new();
    let db = chain_of_five(&site);
    exec(
        &db,
        &[
            "DELETE FROM audit_log WHERE seq = 5",
            "DELETE FROM audit_log WHERE seq = 4",
            "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3) WHERE id = 1",
        ],
    )
    .await;
    assert_broken_at(&site, 4, "anchored entry 5");
}

// ---------------------------------------------------------------------------------------
// 3. Configuration
// ---------------------------------------------------------------------------------------

/// A site ready for `serve` on a free loopback port; returns it and the base URL.
fn serve_site() -> (Site, String) {
    let mut site = Site::new();
    let port = free_port();
    site.set("DOCKET_LISTEN", &format!("127.0.0.1:{port}"))
        .set("DOCKET_GOOGLE__CLIENT_IDS", CLIENT_ID);
    (site, format!("http://127.0.0.1:{port}"))
}

#[test]
fn serve_without_master_key_names_it() {
    let (mut site, _) = serve_site();
    site.unset("DOCKET_MASTER_KEY");
    site.run(&["serve"])
        .config_error()
        .fails_naming(&["master_key", "DOCKET_MASTER_KEY"]);
}

#[test]
fn bad_listen_address_is_named() {
    let (mut site, _) = serve_site();
    site.set("DOCKET_LISTEN", "not-an-address");
    let err = site.run(&["serve"]).fails_naming(&["`listen`"]);
    assert!(err.contains("DOCKET_"), "source of the bad value: {err}");
}

#[test]
fn unknown_variable_is_named() {
    let (mut site, _) = serve_site();
    site.set("DOCKET_BOGUS", "1");
    site.run(&["serve"]).config_error().fails_naming(&["bogus"]);
    // Operator commands load the same configuration.
    site.run(&["tenant", "list"]).fails_naming(&["bogus"]);
}

#[test]
fn non_postgres_database_url_is_named() {
    let (mut site, _) = serve_site();
    site.set("DOCKET_DATABASE__URL", "mysql://x");
    site.run(&["serve"]).fails_naming(&["database.url"]);
}

#[test]
fn serve_without_client_ids_names_them() {
    let (mut site, _) = serve_site();
    site.unset("DOCKET_GOOGLE__CLIENT_IDS");
    site.run(&["serve"])
        .config_error()
        .fails_naming(&["client_ids", "DOCKET_GOOGLE__CLIENT_IDS"]);
}

#[tokio::test]
async fn serve_starts_and_answers_health_and_readiness() {
    let (site, base) = serve_site();
    let mut p = site.spawn(&["serve"]);
    wait_ready(&mut p, &base).await;
    let r = http().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ready");
    // Its log goes to a pipe here: plain text, no colour escapes.
    let log = p.stderr();
    assert!(log.contains("docket listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour escapes in a piped log:\n{log:?}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let (mut site, base) = serve_site();
    site.set("DOCKET_LOG__FORMAT", "json");
    let mut p = site.spawn(&["serve"]);
    wait_ready(&mut p, &base).await;
    let log = p.stderr();
    assert!(log.contains("docket listening"), "{log}");
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
    }
}

#[test]
fn every_command_explains_itself_and_serve_names_its_required_settings() {
    let site = Site::bare();
    let help = site.ok(&["serve", "--help"]);
    for needle in [
        "DOCKET_MASTER_KEY",
        "DOCKET_MASTER_KEY_FILE",
        "DOCKET_GOOGLE__CLIENT_IDS",
        "addon.public_url",
    ] {
        assert!(
            help.contains(needle),
            "serve --help lacks {needle}:\n{help}"
        );
    }
    // The unit test `cli::tests::every_subcommand_and_flag_has_a_help_line` walks every
    // command; here, what the binary prints for one.
    let help = site.ok(&["group", "--help"]);
    assert!(
        help.contains("Add users (by email address) to a group"),
        "{help}"
    );
}

fn write_config(site: &Site, name: &str, body: &str) -> PathBuf {
    let path = site.root().join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test]
async fn config_file_sets_listen_and_environment_overrides_it() {
    let mut site = Site::bare();
    let data = site.data();
    let (file_port, env_port) = (free_port(), free_port());
    let toml = write_config(
        &site,
        "docket.toml",
        &format!(
            "listen = \"127.0.0.1:{file_port}\"\n\
             data_dir = \"{}\"\n\
             master_key = \"{KEY_HEX}\"\n\
             [google]\n\
             client_ids = [\"{CLIENT_ID}\"]\n",
            data.display()
        ),
    );
    // Everything comes from the file.
    site.unset("DOCKET_DATA_DIR");
    let cfg = toml.to_str().unwrap();
    {
        let mut p = site.spawn(&["--config", cfg, "serve"]);
        wait_ready(&mut p, &format!("http://127.0.0.1:{file_port}")).await;
    }
    assert!(data.join("catalog.db").exists(), "data_dir from the file");

    // DOCKET_LISTEN wins over the file's `listen`.
    site.set("DOCKET_LISTEN", &format!("127.0.0.1:{env_port}"));
    let mut p = site.spawn(&["--config", cfg, "serve"]);
    wait_ready(&mut p, &format!("http://127.0.0.1:{env_port}")).await;
    assert!(
        TcpStream::connect(("127.0.0.1", file_port)).is_err(),
        "the file's listen address must not be used when DOCKET_LISTEN is set"
    );
}

#[test]
fn bad_value_in_config_file_is_reported_unless_overridden() {
    let mut site = Site::new();
    let toml = write_config(&site, "bad.toml", "listen = \"nope\"\n");
    let cfg = toml.to_str().unwrap();
    let err = site
        .run(&["--config", cfg, "tenant", "list"])
        .fails_naming(&["`listen`"]);
    assert!(err.contains("TOML"), "source of the bad value: {err}");

    // The environment overrides the file's bad value.
    site.set("DOCKET_LISTEN", "127.0.0.1:9");
    site.run(&["--config", cfg, "tenant", "list"]).ok();

    let missing = site.root().join("missing.toml");
    site.run(&["--config", missing.to_str().unwrap(), "tenant", "list"])
        .fails_naming(&[missing.to_str().unwrap()]);
}

#[test]
fn docket_config_variable_names_the_config_file() {
    let mut site = Site::bare();
    let data = site.data();
    site.unset("DOCKET_DATA_DIR");
    let toml = write_config(
        &site,
        "docket.toml",
        &format!(
            "data_dir = \"{}\"\nmaster_key = \"{KEY_HEX}\"\n",
            data.display()
        ),
    );
    let cfg = toml.to_str().unwrap();
    site.ok(&[
        "--config",
        cfg,
        "tenant",
        "create",
        "--name",
        "Firm",
        "--domain",
        "firm.test",
    ]);
    site.set("DOCKET_CONFIG", cfg);
    let list = site.ok(&["tenant", "list"]);
    assert!(list.contains("\tFirm\tactive\tfirm.test"), "{list}");
}

#[tokio::test]
async fn master_key_file_is_read_and_a_missing_one_is_named() {
    let (mut site, base) = serve_site();
    site.unset("DOCKET_MASTER_KEY");
    // The same 32 bytes as KEY_HEX, base64 this time, with the usual trailing newline.
    let key = base64::engine::general_purpose::STANDARD.encode(hex::decode(KEY_HEX).unwrap());
    let key_file = site.root().join("master.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    site.set("DOCKET_MASTER_KEY_FILE", key_file.to_str().unwrap());
    {
        let mut p = site.spawn(&["serve"]);
        wait_ready(&mut p, &base).await;
    }

    // The file's bytes really are the key: data sealed with it opens with the same key
    // given inline, and not with another.
    site.ok(&[
        "tenant",
        "create",
        "--name",
        "Firm",
        "--domain",
        "firm.test",
    ]);
    let mut inline = Site::new();
    inline.set("DOCKET_DATA_DIR", site.data().to_str().unwrap());
    inline.ok(&["record", "list", "--tenant", "firm.test"]);
    inline.set("DOCKET_MASTER_KEY", OTHER_KEY_HEX);
    inline
        .run(&["record", "list", "--tenant", "firm.test"])
        .fails_naming(&["master key"]);

    let missing = site.root().join("no-such.key");
    site.set("DOCKET_MASTER_KEY_FILE", missing.to_str().unwrap());
    site.run(&["serve"])
        .fails_naming(&["master_key_file", missing.to_str().unwrap()]);
}

// ---------------------------------------------------------------------------------------
// 4. Dev mode
// ---------------------------------------------------------------------------------------

struct Dev {
    proc: Proc,
    base: String,
    /// The quick start's token and `--data @file` path.
    token: String,
    body_path: PathBuf,
}

/// Starts `docket dev` on a free loopback port and waits for its quick start and readiness.
async fn start_dev(site: &mut Site) -> Dev {
    let port = free_port();
    site.set("DOCKET_LISTEN", &format!("127.0.0.1:{port}"));
    let base = format!("http://127.0.0.1:{port}");
    let mut proc = site.spawn(&["dev"]);
    let out = proc.wait_for_stdout("Then list what was filed");
    assert!(out.contains(&format!("{base}/v1/filings")), "{out}");
    let token = out
        .split("TOKEN='")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap_or_else(|| panic!("no TOKEN='…' in:\n{out}"))
        .to_string();
    let body_path = PathBuf::from(
        out.split("--data @")
            .nth(1)
            .and_then(|s| s.lines().next())
            .unwrap_or_else(|| panic!("no --data @file in:\n{out}"))
            .trim(),
    );
    wait_ready(&mut proc, &base).await;
    Dev {
        proc,
        base,
        token,
        body_path,
    }
}

fn jwt_part(token: &str, i: usize) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[i])
        .unwrap_or_else(|e| panic!("JWT part {i} is not base64url ({e}): {token}"));
    serde_json::from_slice(&bytes).unwrap()
}

async fn post_filing(base: &str, token: &str, body: &[u8]) -> (u16, Value) {
    let r = http()
        .post(format!("{base}/v1/filings"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn dev_quick_start_files_the_sample_with_a_minted_token() {
    let mut site = Site::bare();
    // A relative data dir (resolved against the child's working directory, the temp dir):
    // the printed `--data @…` path must still be absolute so the curl line works anywhere.
    site.set("DOCKET_DATA_DIR", "data");
    let dev = start_dev(&mut site).await;
    assert!(
        dev.body_path.is_absolute(),
        "printed body path should be absolute: {}",
        dev.body_path.display()
    );
    let body = std::fs::read(&dev.body_path)
        .unwrap_or_else(|e| panic!("printed body {}: {e}", dev.body_path.display()));

    let token = site
        .ok(&["dev", "token", "--email", "alice@demo.test"])
        .trim()
        .to_string();
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["email"], "alice@demo.test", "{claims}");
    assert_eq!(claims["iss"], DEV_ISSUER, "{claims}");
    assert_eq!(claims["aud"], DEV_CLIENT_ID, "{claims}");
    assert_eq!(claims["hd"], "demo.test", "{claims}");

    let (status, first) = post_filing(&dev.base, &token, &body).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["filings"][0]["created"], true, "{first}");
    assert_eq!(first["filings"][0]["target"]["id"], "M-2024-017", "{first}");
    let (status, again) = post_filing(&dev.base, &token, &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["filings"][0]["created"], false, "{again}");
    assert_eq!(again["filings"][0]["id"], first["filings"][0]["id"]);

    // The token printed in the quick start works too.
    let r = http()
        .get(format!("{}/v1/filings?target=matter:M-2024-017", dev.base))
        .bearer_auth(&dev.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed["filings"].as_array().unwrap().len(), 1, "{listed}");

    // The dev JWKS publishes the key the tokens are signed with.
    let r = http()
        .get(format!("{}/dev/jwks.json", dev.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwks: Value = r.json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA", "{jwks}");
    assert_eq!(jwks["keys"][0]["kid"], jwt_part(&token, 0)["kid"], "{jwks}");

    use std::os::unix::fs::PermissionsExt;
    let key = site.data().join("dev").join("master.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{} mode {:o}", key.display(), mode);
    let mut dev = dev;
    dev.proc.assert_running();
}

/// The quick start's shell lines (from `TOKEN=` to the end), run as printed by bash.
fn run_quick_start(banner: &str) -> String {
    // The shell lines, as a user pastes them: the TOKEN= line and each curl command with
    // its continuation lines (the prose between them is for reading).
    let mut script = String::new();
    let mut continued = false;
    for line in banner[banner.find("TOKEN='").expect("a TOKEN= line")..].lines() {
        if continued || line.starts_with("TOKEN='") || line.starts_with("curl ") {
            script.push_str(line);
            script.push('\n');
            continued = line.ends_with('\\');
        }
    }
    let script = script.as_str();
    let out = Command::new("bash")
        .args(["-euc", script])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn dev_banner_names_the_simulator_prints_the_token_once_and_runs_as_printed() {
    let mut site = Site::bare();
    let dev = start_dev(&mut site).await;
    let banner = dev.proc.stdout();
    assert!(
        banner.contains(&format!("{}/dev/addon", dev.base)),
        "{banner}"
    );
    assert_eq!(banner.matches(&dev.token).count(), 1, "{banner}");
    assert!(
        banner.contains("enrol an authenticator app on first sign-in"),
        "{banner}"
    );

    // Pasted into a shell, the quick start files the sample and lists it, and each answer
    // ends its line (the prompt does not follow the JSON).
    let out = run_quick_start(&banner);
    let answers: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{out}")))
        .collect();
    assert!(out.ends_with('\n'), "{out:?}");
    assert_eq!(answers.len(), 2, "{out}");
    assert_eq!(answers[0]["filings"][0]["created"], true, "{out}");
    assert_eq!(answers[1]["filings"].as_array().unwrap().len(), 1, "{out}");
    drop(dev);

    // Once the demo admin has an authenticator, the banner says to use it, not to enrol.
    let tenants = site.data().join("tenants");
    let id = std::fs::read_dir(&tenants)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    exec(
        &id.path().join("tenant.db"),
        &["UPDATE local_accounts SET totp_secret_enc = X'00' \
           WHERE user_id = (SELECT id FROM users WHERE email = 'alice@demo.test')"],
    )
    .await;
    let dev = start_dev(&mut site).await;
    let banner = dev.proc.stdout();
    assert!(!banner.contains("enrol"), "{banner}");
    assert!(banner.contains("authenticator app"), "{banner}");
}

#[test]
fn dev_refuses_a_non_loopback_listen_address() {
    let mut site = Site::bare();
    site.set("DOCKET_LISTEN", &format!("0.0.0.0:{}", free_port()));
    site.run(&["dev"]).fails_naming(&["loopback", "`listen`"]);
    assert!(
        !site.data().join("dev").join("master.key").exists(),
        "nothing is generated before refusing"
    );
}

#[tokio::test]
async fn serve_does_not_expose_dev_routes() {
    let (site, base) = serve_site();
    let mut p = site.spawn(&["serve"]);
    wait_ready(&mut p, &base).await;
    let client = http();
    let r = client
        .get(format!("{base}/dev/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client
        .post(format!("{base}/dev/token"))
        .json(&serde_json::json!({"email": "alice@demo.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        !site.data().join("dev").exists(),
        "serve creates no dev state"
    );
}

#[tokio::test]
async fn two_dev_instances_run_side_by_side() {
    let (mut a, mut b) = (Site::bare(), Site::bare());
    let mut dev_a = start_dev(&mut a).await;
    let mut dev_b = start_dev(&mut b).await;
    assert_ne!(dev_a.base, dev_b.base);
    for (site, dev, other) in [(&a, &dev_a, &dev_b), (&b, &dev_b, &dev_a)] {
        let body = std::fs::read(&dev.body_path).unwrap();
        let token = site
            .ok(&["dev", "token", "--email", "bob@demo.test"])
            .trim()
            .to_string();
        // Each instance has its own issuer key: a token is good only where it was minted.
        let (status, v) = post_filing(&other.base, &token, &body).await;
        assert_eq!(status, 401, "{v}");
        let (status, v) = post_filing(&dev.base, &token, &body).await;
        assert_eq!(status, 201, "{v}");
    }
    // Both still up.
    for dev in [&mut dev_a, &mut dev_b] {
        dev.proc.assert_running();
        let r = http()
            .get(format!("{}/healthz", dev.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

// ---------------------------------------------------------------------------------------
// Account recovery by the operator: set-password, reactivate, reset-link; closed tenants
// ---------------------------------------------------------------------------------------

const CLI_STRONG: &str = "operator chose a long passphrase 7 times";

async fn one_string(path: &Path, sql: &str) -> Option<String> {
    use sqlx::Connection;
    let mut c = sqlite(path).await;
    let v = sqlx::query_scalar::<_, String>(sql)
        .fetch_optional(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    v
}

async fn operator_entries(path: &Path) -> i64 {
    use sqlx::Connection;
    let mut c = sqlite(path).await;
    let n = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log WHERE actor = 'operator'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    n
}

#[tokio::test]
async fn operator_recovers_an_admin_account() {
    let mut site = Site::new();
    let tid = seed_firm(&site);
    let db = site.tenant_db(&tid);
    site.ok(&[
        "user",
        "add",
        "--tenant",
        "firm.test",
        "--email",
        "boss@firm.test",
        "--role",
        "admin",
    ]);
    let base = operator_entries(&db).await;

    // A weak password is refused with exit 2 and the policy's message; nothing stored.
    site.set("DOCKET_NEW_PASSWORD", "password");
    let out = site.run(&[
        "user",
        "set-password",
        "--tenant",
        "firm.test",
        "boss@firm.test",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("password refused"), "{}", out.stderr);
    assert_eq!(count(&db, "local_accounts").await, 0);
    assert_eq!(operator_entries(&db).await, base);

    // From the environment.
    site.set("DOCKET_NEW_PASSWORD", CLI_STRONG);
    let out = site.ok(&[
        "user",
        "set-password",
        "--tenant",
        "firm.test",
        "boss@firm.test",
    ]);
    assert!(out.contains("boss@firm.test"), "{out}");
    let hash = one_string(&db, "SELECT password_hash FROM local_accounts")
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert_eq!(operator_entries(&db).await, base + 1);

    // From standard input.
    site.unset("DOCKET_NEW_PASSWORD");
    let mut cmd = site.cmd(&[
        "user",
        "set-password",
        "--tenant",
        "firm.test",
        "boss@firm.test",
    ]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{CLI_STRONG} and more").unwrap();
    }
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let hash2 = one_string(&db, "SELECT password_hash FROM local_accounts")
        .await
        .unwrap();
    assert_ne!(hash, hash2);
    assert_eq!(operator_entries(&db).await, base + 2);

    // Unknown users are named.
    site.set("DOCKET_NEW_PASSWORD", CLI_STRONG);
    site.run(&[
        "user",
        "set-password",
        "--tenant",
        "firm.test",
        "nobody@firm.test",
    ])
    .fails_naming(&["nobody@firm.test"]);

    // Reactivation of a suspended (locked out) admin.
    exec(
        &db,
        &["UPDATE users SET status = 'suspended' WHERE email = 'boss@firm.test'"],
    )
    .await;
    site.ok(&[
        "user",
        "reactivate",
        "--tenant",
        "firm.test",
        "boss@firm.test",
    ]);
    let status = one_string(
        &db,
        "SELECT status FROM users WHERE email = 'boss@firm.test'",
    )
    .await;
    assert_eq!(status.as_deref(), Some("active"));
    assert!(
        operator_entries(&db).await > base + 2,
        "reactivation is audited"
    );
    let before_link = operator_entries(&db).await;

    // A one-time link, printed with its expiry; only its hash is stored.
    let out = site.ok(&[
        "user",
        "reset-link",
        "--tenant",
        "firm.test",
        "boss@firm.test",
    ]);
    let link = out.lines().next().unwrap().trim();
    assert!(link.starts_with(&format!("/console/reset/{tid}.")), "{out}");
    assert!(out.contains("expires"), "{out}");
    let token = link.trim_start_matches("/console/reset/");
    let stored = one_string(
        &db,
        "SELECT token_hash FROM reset_requests WHERE status = 'issued'",
    )
    .await
    .unwrap();
    assert_eq!(stored, docket::accounts::hash_secret(token));
    let by = one_string(&db, "SELECT handled_by FROM reset_requests").await;
    assert_eq!(by.as_deref(), Some("operator"));
    assert_eq!(operator_entries(&db).await, before_link + 1);

    // Where docket is served is known: the link is a whole URL, ready to send.
    site.set("DOCKET_ADDON__PUBLIC_URL", "https://docket.firm.test/");
    let out = site.ok(&[
        "user",
        "reset-link",
        "--tenant",
        "firm.test",
        "boss@firm.test",
    ]);
    let link = out.lines().next().unwrap().trim();
    assert!(
        link.starts_with(&format!("https://docket.firm.test/console/reset/{tid}.")),
        "{out}"
    );
    site.ok(&["audit", "verify", "--tenant", "firm.test"]);
}

#[test]
fn tenant_list_shows_the_purge_date_of_a_closed_tenant() {
    let site = Site::new();
    let tid = seed_firm(&site);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(exec(
        &site.data().join("catalog.db"),
        &[&format!(
            "UPDATE tenants SET status = 'terminated', terminated_at = '2025-01-01T00:00:00.000Z', \
             terminated_by = 'x', purge_after = '2025-04-01T00:00:00.000Z' WHERE id = '{tid}'"
        )],
    ));
    let list = site.ok(&["tenant", "list"]);
    let row: Vec<&str> = list.trim_end().split('\t').collect();
    assert_eq!(
        row[1..],
        [
            "Firm",
            "terminated",
            "firm.test",
            "purge after 2025-04-01T00:00:00.000Z"
        ],
        "{list}"
    );
}

// ---------------------------------------------------------------------------------------
// Onboarding from a script: who may be added, records, roles and groups (issue 14)
// ---------------------------------------------------------------------------------------

fn user_add(site: &Site, email: &str, role: &str) -> Out {
    site.run(&[
        "user",
        "add",
        "--tenant",
        "firm.test",
        "--email",
        email,
        "--role",
        role,
    ])
}

#[tokio::test]
async fn user_add_refuses_an_address_that_could_never_sign_in() {
    let site = Site::new();
    let tid = seed_firm(&site);
    let db = site.tenant_db(&tid);
    let users = count(&db, "users").await;
    // Not the firm's domain, not mapped: refused, saying why and what would fix it.
    let why = user_add(&site, "pat@gmail.com", "filer").fails_naming(&[
        "pat@gmail.com",
        "firm.test",
        "map-address",
    ]);
    assert!(why.contains("could never sign in"), "{why}");
    // A look-alike of the firm's domain is not the firm's domain.
    user_add(&site, "pat@firm.test.evil", "filer").fails_naming(&["firm.test.evil"]);
    assert_eq!(count(&db, "users").await, users, "nothing was added");
    // Another firm's domain is not this firm's either.
    site.ok(&[
        "tenant",
        "create",
        "--name",
        "Other",
        "--domain",
        "other.test",
    ]);
    user_add(&site, "pat@other.test", "filer").fails_naming(&["other.test"]);
    // Once the address is mapped to the firm, it can be added; so can the firm's own domain
    // in any letter case.
    site.ok(&[
        "tenant",
        "map-address",
        "--tenant",
        "firm.test",
        "--email",
        "pat@gmail.com",
    ]);
    user_add(&site, "pat@gmail.com", "filer").ok();
    user_add(&site, "Quinn@FIRM.test", "viewer").ok();
    assert_eq!(count(&db, "users").await, users + 2);

    // Domains and mappings from the command line, guarded and audited as in the console.
    let entries = operator_entries(&db).await;
    let tenant = |verb: &str, flag: &str, value: &str| {
        site.run(&["tenant", verb, "--tenant", "firm.test", flag, value])
    };
    tenant("unmap-address", "--email", "pat@gmail.com")
        .fails_naming(&["pat@gmail.com", "suspend them first"]);
    tenant("map-address", "--email", "boss@other.test").fails_naming(&["already signs in"]);
    tenant("add-domain", "--domain", "other.test").fails_naming(&["other.test", "already belongs"]);
    tenant("remove-domain", "--domain", "firm.test").fails_naming(&["sign in through firm.test"]);
    tenant("add-domain", "--domain", "firm-law.test").ok();
    tenant("remove-domain", "--domain", "firm-law.test").ok();
    tenant("map-address", "--email", "temp@gmail.com").ok();
    tenant("unmap-address", "--email", "temp@gmail.com").ok();
    assert_eq!(operator_entries(&db).await, entries + 4);
}

#[tokio::test]
async fn records_roles_and_groups_are_managed_from_the_command_line() {
    let site = Site::new();
    let tid = seed_firm(&site);
    let db = site.tenant_db(&tid);
    let entries = operator_entries(&db).await;

    // Records: edit only what is given, close, reopen.
    let out = site.ok(&[
        "record",
        "edit",
        "--tenant",
        "firm.test",
        "matter:M-2024-017",
        "--title",
        "Acme v. Widget (appeal)",
        "--contact",
        "acme.com",
        "--contact",
        "counsel@lawfirm.test",
    ]);
    assert!(out.contains("Acme v. Widget (appeal)"), "{out}");
    let list = site.ok(&["record", "list", "--tenant", "firm.test"]);
    assert!(
        list.contains(
            "matter:M-2024-017\tAcme v. Widget (appeal)\t\topen\tacme.com,counsel@lawfirm.test"
        ) || list.contains(
            "matter:M-2024-017\tAcme v. Widget (appeal)\t\topen\tcounsel@lawfirm.test,acme.com"
        ),
        "{list}"
    );
    site.ok(&[
        "record",
        "close",
        "--tenant",
        "firm.test",
        "matter:M-2024-017",
    ]);
    let list = site.ok(&["record", "list", "--tenant", "firm.test"]);
    assert!(list.contains("\tclosed\t"), "{list}");
    // A closed record takes no filing.
    let eml = write_eml(site.root());
    let out = site.run(&[
        "file",
        "--tenant",
        "firm.test",
        "--user",
        "a@firm.test",
        "--target",
        "matter:M-2024-017",
        eml.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "filed to a closed record: {}",
        out.stdout
    );
    site.ok(&[
        "record",
        "reopen",
        "--tenant",
        "firm.test",
        "matter:M-2024-017",
    ]);
    assert!(site
        .ok(&["record", "list", "--tenant", "firm.test"])
        .contains("\topen\t"));
    site.run(&[
        "record",
        "edit",
        "--tenant",
        "firm.test",
        "matter:M-2024-017",
    ])
    .fails_naming(&["nothing to change"]);
    site.run(&["record", "close", "--tenant", "firm.test", "matter:NOPE"])
        .fails_naming(&["matter:NOPE"]);
    site.run(&["record", "close", "--tenant", "firm.test", "M-2024-017"])
        .fails_naming(&["kind:reference"]);

    // Roles: promote, demote; the last admin stays an admin.
    let out = site.ok(&[
        "user",
        "set-role",
        "--tenant",
        "firm.test",
        "a@firm.test",
        "admin",
    ]);
    assert!(out.contains("a@firm.test is now admin"), "{out}");
    site.run(&[
        "user",
        "set-role",
        "--tenant",
        "firm.test",
        "a@firm.test",
        "viewer",
    ])
    .fails_naming(&["admin"]);
    user_add(&site, "b@firm.test", "filer").ok();
    site.ok(&[
        "user",
        "set-role",
        "--tenant",
        "firm.test",
        "b@firm.test",
        "admin",
    ]);
    site.ok(&[
        "user",
        "set-role",
        "--tenant",
        "firm.test",
        "a@firm.test",
        "viewer",
    ]);
    site.run(&[
        "user",
        "set-role",
        "--tenant",
        "firm.test",
        "b@firm.test",
        "boss",
    ])
    .fails_naming(&["boss"]);
    let users = site.ok(&["user", "list", "--tenant", "firm.test"]);
    assert!(users.contains("a@firm.test\tviewer"), "{users}");
    assert!(users.contains("b@firm.test\tadmin"), "{users}");

    // Groups: create with members, add and remove members, rename, list.
    let out = site.ok(&[
        "group",
        "add",
        "--tenant",
        "firm.test",
        "Litigation",
        "--member",
        "a@firm.test",
    ]);
    assert_eq!(out.trim(), "Litigation\ta@firm.test");
    site.run(&["group", "add", "--tenant", "firm.test", "Litigation"])
        .fails_naming(&["Litigation"]);
    site.run(&[
        "group",
        "add",
        "--tenant",
        "firm.test",
        "Tax",
        "--member",
        "nobody@firm.test",
    ])
    .fails_naming(&["nobody@firm.test"]);
    let out = site.ok(&[
        "group",
        "add-member",
        "--tenant",
        "firm.test",
        "litigation",
        "b@firm.test",
        "a@firm.test",
    ]);
    assert_eq!(out.trim(), "Litigation\ta@firm.test,b@firm.test");
    let out = site.ok(&[
        "group",
        "remove-member",
        "--tenant",
        "firm.test",
        "Litigation",
        "a@firm.test",
    ]);
    assert_eq!(out.trim(), "Litigation\tb@firm.test");
    site.ok(&[
        "group",
        "rename",
        "--tenant",
        "firm.test",
        "Litigation",
        "Disputes",
    ]);
    let groups = site.ok(&["group", "list", "--tenant", "firm.test"]);
    assert!(groups.contains("\nDisputes\tb@firm.test\n"), "{groups}");
    assert!(!groups.contains("Litigation"), "{groups}");

    // Each change is an operator entry in the audit chain, and the chain holds.
    assert!(operator_entries(&db).await >= entries + 10);
    site.ok(&["audit", "verify", "--tenant", "firm.test"]);
}

#[tokio::test]
async fn database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let tid = seed_firm(&site);
    let eml = write_eml(site.root());
    site.ok(&[
        "file",
        "--tenant",
        "firm.test",
        "--user",
        "a@firm.test",
        "--target",
        "matter:M-2024-017",
        eml.to_str().unwrap(),
    ]);
    let mut seen = 0;
    let mut stack = vec![site.data()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".db") || name.ends_with(".db-wal") || name.ends_with(".db-shm") {
                seen += 1;
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
            }
        }
    }
    assert!(
        seen >= 2,
        "the catalogue and the tenant database: {seen} files"
    );
    assert!(site.tenant_db(&tid).exists());
}

/// The PostgreSQL server's admin URL (`DOCKET_TEST_PG`), or None when it is unreachable
/// outside CI (the test is then skipped, saying so); in CI it must be reachable.
async fn pg_admin_or_skip() -> Option<url::Url> {
    use sqlx::Connection;
    let url = std::env::var("DOCKET_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    sqlx::any::install_default_drivers();
    let up = tokio::time::timeout(Duration::from_secs(5), sqlx::AnyConnection::connect(&url))
        .await
        .is_ok_and(|c| c.is_ok());
    if up {
        return Some(url.parse().unwrap());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "PostgreSQL is required in CI but unreachable at {url}"
    );
    eprintln!("SKIP: PostgreSQL unreachable at {url}");
    None
}

/// Drops the databases and roles whose names start with `prefix`.
async fn drop_pg_prefix(admin: &url::Url, prefix: &str) {
    use sqlx::{Connection, Executor, Row};
    let mut c = sqlx::AnyConnection::connect(admin.as_str()).await.unwrap();
    let like = format!("{prefix}%");
    for (list, drop) in [
        (
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1",
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        ),
        (
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1",
            "DROP ROLE IF EXISTS \"{}\"",
        ),
    ] {
        let rows = sqlx::query(list)
            .bind(&like)
            .fetch_all(&mut c)
            .await
            .unwrap();
        for r in rows {
            let n: String = r.get(0);
            c.execute(drop.replace("{}", &n).as_str()).await.unwrap();
        }
    }
}

#[tokio::test]
async fn postgres_start_up_logs_no_notice_per_tenant_database() {
    let Some(admin) = pg_admin_or_skip().await else {
        return;
    };
    let prefix = format!(
        "docket_cli_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut catalog = admin.clone();
    catalog.set_path(&format!("/{prefix}"));
    let (mut site, base) = serve_site();
    site.set("DOCKET_DATABASE__URL", catalog.as_str());
    site.ok(&[
        "tenant",
        "create",
        "--name",
        "Firm",
        "--domain",
        "firm.test",
    ]);
    site.ok(&[
        "tenant",
        "create",
        "--name",
        "Other",
        "--domain",
        "other.test",
    ]);
    let migrate = site.run(&["migrate"]).ok();
    let mut serve = site.spawn(&["serve"]);
    wait_ready(&mut serve, &base).await;
    let served = serve.stderr();
    drop(serve);
    drop_pg_prefix(&admin, &prefix).await;
    for log in [&migrate.stderr, &served] {
        assert!(!log.contains("already exists"), "{log}");
        assert!(!log.contains("_sqlx_migrations"), "{log}");
    }
    assert!(served.contains("docket listening"), "{served}");
}

#[test]
fn the_firms_time_zone_is_set_from_the_command_line() {
    let site = Site::new();
    seed_firm(&site);
    site.run(&[
        "tenant",
        "set-time-zone",
        "--tenant",
        "firm.test",
        "--time-zone",
        "Nowhere/Land",
    ])
    .fails_naming(&["Nowhere/Land", "IANA"]);
    let out = site.ok(&[
        "tenant",
        "set-time-zone",
        "--tenant",
        "firm.test",
        "--time-zone",
        "America/New_York",
    ]);
    assert!(out.contains("America/New_York"), "{out}");
}
