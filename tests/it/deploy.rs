//! The deployment files in `deploy/` (README, "Operating docket"), checked without a
//! container engine or a cluster: every YAML file parses and says what it promises; the
//! systemd unit passes `systemd-analyze verify`; the Dockerfile's build context (as
//! `.dockerignore` leaves it) holds every file the build reads and none of target/, .git or
//! the operator's secrets; the container entrypoint runs migrations when asked (run here
//! with `sh` and a fake `docket`); and every docket setting and command the files use is
//! one the real binary accepts (`docket` itself loads each configuration).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use yaml_rust2::{Yaml, YamlLoader};

const DOCKET: &str = env!("CARGO_BIN_EXE_docket");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

fn stderr(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scalar as text (`"1"`, `1` and `true` alike); `None` for anything else.
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {y:?}"))
}

fn list<'a>(y: &'a Yaml, what: &str) -> &'a [Yaml] {
    y.as_vec()
        .map(|v| v.as_slice())
        .unwrap_or_else(|| panic!("{what}: expected a list, found {y:?}"))
}

fn strings(y: &Yaml, what: &str) -> Vec<String> {
    list(y, what)
        .iter()
        .map(|v| scalar(v).unwrap_or_else(|| panic!("{what}: expected scalars, found {v:?}")))
        .collect()
}

/// A mapping of scalars (an `environment:` block, a ConfigMap's `data`).
fn string_map(y: &Yaml, what: &str) -> BTreeMap<String, String> {
    let hash = y
        .as_hash()
        .unwrap_or_else(|| panic!("{what}: expected a mapping, found {y:?}"));
    hash.iter()
        .map(|(k, v)| {
            let k = scalar(k).unwrap_or_else(|| panic!("{what}: odd key {k:?}"));
            let v =
                scalar(v).unwrap_or_else(|| panic!("{what}.{k}: expected a scalar, found {v:?}"));
            (k, v)
        })
        .collect()
}

/// Files under `dir` (a path relative to the repository root), relative and sorted.
fn files_under(dir: &str) -> Vec<String> {
    walk(&root().join(dir), &|_| false)
}

/// Every file under `start`, relative to the repository root, `/`-separated, sorted;
/// directories for which `skip` says yes are not entered.
fn walk(start: &Path, skip: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![start.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if entry.file_type().unwrap().is_dir() {
                if !skip(&rel) {
                    stack.push(path);
                }
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// `a/b/../c` → `a/c`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// The string literal after each `marker` in `text` (`include_str!("a.txt")` → `a.txt`), when
/// nothing but `path =` and spaces stands between them.
fn literals_after(text: &str, marker: &str) -> Vec<String> {
    text.match_indices(marker)
        .filter_map(|(i, _)| {
            let rest = &text[i + marker.len()..];
            let start = rest.find('"')?;
            if !rest[..start]
                .chars()
                .all(|c| c.is_whitespace() || "path=".contains(c))
            {
                return None;
            }
            let len = rest[start + 1..].find('"')?;
            Some(rest[start + 1..start + 1 + len].to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The real binary as the judge of settings and commands.

/// Runs the real `docket` with only `env` and an optional TOML file, the way `docket serve`
/// loads its configuration (defaults, the file, then `DOCKET_*` variables, then the checks).
/// The command is `docket dev token`, which needs no database, key or network once the
/// configuration is loaded; `DOCKET_DATA_DIR` points it at a scratch directory.
fn probe_config(env: &BTreeMap<String, String>, config_file: Option<&Path>) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(DOCKET);
    cmd.env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("DOCKET_DATA_DIR", scratch.path());
    if let Some(file) = config_file {
        cmd.arg("--config").arg(file);
    }
    cmd.args(["dev", "token", "--email", "probe@example.com"]);
    cmd.output().unwrap()
}

/// Fails when docket refuses the configuration: an unknown `DOCKET_*` name (docket refuses
/// those), a value of the wrong type, an S3 backend without a bucket, ...
fn assert_docket_accepts(what: &str, env: &BTreeMap<String, String>, config_file: Option<&Path>) {
    for name in env.keys() {
        assert!(
            name.starts_with("DOCKET_"),
            "{what}: {name} is not a docket setting"
        );
    }
    let out = probe_config(env, config_file);
    assert!(
        out.status.success(),
        "{what}: docket refuses this configuration ({env:?}):\n{}",
        stderr(&out)
    );
}

/// Fails unless `docket ARGS` is a command line the real CLI takes (checked with `--help`,
/// which clap answers only once the whole line parses).
fn assert_docket_command(what: &str, args: &[String]) {
    let out = Command::new(DOCKET)
        .args(args)
        .arg("--help")
        .env_remove("DOCKET_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: `docket {}` is not a docket command:\n{}",
        args.join(" "),
        stderr(&out)
    );
}

#[test]
fn the_config_probe_catches_a_setting_docket_does_not_have() {
    let ok: BTreeMap<String, String> = [("DOCKET_STORAGE__BACKEND", "local")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_docket_accepts("a plain configuration", &ok, None);
    for (name, value) in [
        ("DOCKET_NOT_A_SETTING", "1"),
        ("DOCKET_MIGRATE_ON_START", "1"),
        ("DOCKET_STORAGE__BACKEND", "s3"), // no bucket
        ("DOCKET_METRICS__LISTEN", "everywhere"),
    ] {
        let env = BTreeMap::from([(name.to_string(), value.to_string())]);
        let out = probe_config(&env, None);
        assert!(
            !out.status.success() && stderr(&out).contains("invalid configuration"),
            "docket accepted {name}={value}:\n{}",
            stderr(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------
// The Dockerfile.

struct Instruction {
    /// 1 for the first `FROM`'s stage, 2 for the second, ...
    stage: usize,
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut stage = 0;
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        // Comments (and the `# syntax=` directive) and blank lines, also inside a continued
        // instruction, are dropped as Docker drops them.
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let (keyword, args) = full
            .split_once(char::is_whitespace)
            .unwrap_or((full.as_str(), ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage += 1;
        }
        out.push(Instruction {
            stage,
            keyword,
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    assert!(
        pending.is_empty(),
        "deploy/Dockerfile ends inside a continued line"
    );
    out
}

struct CopyInstr {
    stage: usize,
    from: Option<String>,
    sources: Vec<String>,
    dest: String,
}

fn copies(instrs: &[Instruction]) -> Vec<CopyInstr> {
    instrs
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
        .map(|i| {
            let words: Vec<&str> = i.args.split(' ').collect();
            let flags: Vec<&str> = words
                .iter()
                .copied()
                .take_while(|w| w.starts_with("--"))
                .collect();
            let rest = &words[flags.len()..];
            assert!(
                rest.len() >= 2 && !rest[0].starts_with('['),
                "deploy/Dockerfile: {} {}: this test reads the plain form, `COPY [--flags] SRC... DEST`",
                i.keyword,
                i.args
            );
            CopyInstr {
                stage: i.stage,
                from: flags
                    .iter()
                    .find_map(|f| f.strip_prefix("--from="))
                    .map(String::from),
                sources: rest[..rest.len() - 1]
                    .iter()
                    .copied()
                    .map(normalize)
                    .collect(),
                dest: rest[rest.len() - 1].to_string(),
            }
        })
        .collect()
}

/// What the runtime image promises, read from the Dockerfile's last stage.
struct Image {
    uid: u32,
    env: BTreeMap<String, String>,
    volume: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
    expose: Vec<String>,
}

/// Where the final stage puts a file of the build context.
fn installed_at(copies: &[CopyInstr], stage: usize, source: &str) -> String {
    copies
        .iter()
        .find(|c| c.stage == stage && c.from.is_none() && c.sources == [source])
        .map(|c| c.dest.clone())
        .unwrap_or_else(|| panic!("deploy/Dockerfile does not COPY {source} into the image"))
}

fn json_list(what: &str, args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| {
        panic!("deploy/Dockerfile {what} {args}: use the exec (JSON) form: {e}")
    })
}

fn image() -> Image {
    let instrs = dockerfile();
    let last = instrs.iter().map(|i| i.stage).max().unwrap();
    let one = |keyword: &str| -> String {
        let found: Vec<&Instruction> = instrs
            .iter()
            .filter(|i| i.stage == last && i.keyword == keyword)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "deploy/Dockerfile: the image needs exactly one {keyword}"
        );
        found[0].args.clone()
    };
    let user = one("USER");
    let uid = user.split(':').next().unwrap();
    let uid: u32 = uid.parse().unwrap_or_else(|_| {
        panic!("deploy/Dockerfile: USER {user}: give a numeric uid (Kubernetes' runAsNonRoot can only check those)")
    });
    assert_ne!(uid, 0, "deploy/Dockerfile: the image must not run as root");
    let mut env = BTreeMap::new();
    for i in instrs
        .iter()
        .filter(|i| i.stage == last && i.keyword == "ENV")
    {
        for pair in i.args.split(' ') {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("deploy/Dockerfile: ENV {}: write NAME=value", i.args));
            env.insert(k.to_string(), v.to_string());
        }
    }
    let healthcheck = one("HEALTHCHECK");
    let (_, probe) = healthcheck
        .split_once("CMD ")
        .unwrap_or_else(|| panic!("deploy/Dockerfile: HEALTHCHECK {healthcheck}: no CMD"));
    Image {
        uid,
        env,
        volume: one("VOLUME"),
        entrypoint: json_list("ENTRYPOINT", &one("ENTRYPOINT")),
        cmd: json_list("CMD", &one("CMD")),
        healthcheck: json_list("HEALTHCHECK CMD", probe),
        expose: one("EXPOSE").split(' ').map(String::from).collect(),
    }
}

fn port_of(listen: &str) -> &str {
    listen.rsplit_once(':').map(|(_, p)| p).unwrap_or("")
}

#[test]
fn dockerfile_builds_a_non_root_image_with_healthcheck_volume_and_entrypoint() {
    let instrs = dockerfile();
    let copies = copies(&instrs);
    let froms: Vec<&Instruction> = instrs.iter().filter(|i| i.keyword == "FROM").collect();
    assert_eq!(
        froms.len(),
        2,
        "deploy/Dockerfile: a build stage and a runtime stage"
    );

    // The build stage: the toolchain Cargo.toml asks for, and the lock file as it is.
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version"))
        .and_then(|l| l.split('"').nth(1))
        .expect("Cargo.toml names its rust-version");
    assert_eq!(
        froms[0].args,
        format!("rust:{rust_version}-bookworm AS build"),
        "deploy/Dockerfile: build with the Rust that Cargo.toml's rust-version names"
    );
    assert_eq!(froms[1].args, "debian:bookworm-slim");
    let build_runs: Vec<&str> = instrs
        .iter()
        .filter(|i| i.stage == 1 && i.keyword == "RUN")
        .map(|i| i.args.as_str())
        .collect();
    assert!(
        build_runs
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "deploy/Dockerfile: `cargo build --release --locked` in the build stage: {build_runs:?}"
    );
    // The binary the runtime stage takes is the one the build stage put there.
    let from_build: Vec<&CopyInstr> = copies.iter().filter(|c| c.from.is_some()).collect();
    assert_eq!(from_build.len(), 1);
    assert_eq!(from_build[0].from.as_deref(), Some("build"));
    let built = format!("/{}", from_build[0].sources[0]);
    assert!(
        build_runs.iter().any(|r| r.contains(&built)),
        "deploy/Dockerfile: the build stage never writes {built}"
    );

    let img = image();
    // The user: created with the uid USER names.
    let runtime_runs: Vec<&str> = instrs
        .iter()
        .filter(|i| i.stage == 2 && i.keyword == "RUN")
        .map(|i| i.args.as_str())
        .collect();
    assert!(
        runtime_runs
            .iter()
            .any(|r| r.contains("useradd") && r.contains(&format!("--uid {}", img.uid))),
        "deploy/Dockerfile: the image's user {} is not created: {runtime_runs:?}",
        img.uid
    );
    // pg_dump and pg_restore, which `docket backup create` and `verify` run on PostgreSQL.
    assert!(
        runtime_runs.iter().any(|r| r.contains("apt-get install")
            && r.contains("--no-install-recommends")
            && r.split(' ').any(|w| w == "postgresql-client")),
        "deploy/Dockerfile: the image needs postgresql-client (pg_dump, pg_restore for `docket backup`): {runtime_runs:?}"
    );
    // The data dir is the volume, the ports are the ones docket listens on.
    assert_eq!(img.env.get("DOCKET_DATA_DIR"), Some(&img.volume));
    assert_eq!(img.volume, "/var/lib/docket");
    let listen = img.env.get("DOCKET_LISTEN").expect("ENV DOCKET_LISTEN");
    let metrics = img
        .env
        .get("DOCKET_METRICS__LISTEN")
        .expect("ENV DOCKET_METRICS__LISTEN: the default 127.0.0.1 cannot be scraped from outside the container");
    assert!(listen.starts_with("0.0.0.0:") && metrics.starts_with("0.0.0.0:"));
    assert_eq!(
        img.expose,
        [port_of(listen), port_of(metrics)],
        "deploy/Dockerfile: EXPOSE the ports docket listens on"
    );
    assert_eq!(img.expose, ["8080", "9464"]);
    assert_docket_accepts("deploy/Dockerfile ENV", &img.env, None);
    // The entrypoint and the health check are the scripts in deploy/, installed.
    assert_eq!(
        img.entrypoint,
        [installed_at(&copies, 2, "deploy/docker-entrypoint.sh")]
    );
    assert_eq!(
        img.healthcheck,
        [installed_at(&copies, 2, "deploy/docker-healthcheck.sh")]
    );
    assert_eq!(img.cmd, ["serve"]);
    assert_docket_command("deploy/Dockerfile CMD", &img.cmd);
}

/// `.dockerignore` as Docker reads it: for each path, the last pattern that matches the
/// path or one of its parent directories decides; `!` lets back in.
struct DockerIgnore {
    rules: Vec<(globset::GlobMatcher, bool)>,
}

impl DockerIgnore {
    fn load() -> DockerIgnore {
        let mut rules = Vec::new();
        for line in read(".dockerignore").lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .unwrap_or_else(|e| panic!(".dockerignore: {line}: {e}"))
                .compile_matcher();
            rules.push((glob, include));
        }
        DockerIgnore { rules }
    }

    fn excludes(&self, path: &str) -> bool {
        let mut candidates: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        candidates.push(path);
        let mut excluded = false;
        for (glob, include) in &self.rules {
            if candidates.iter().any(|c| glob.is_match(c)) {
                excluded = !include;
            }
        }
        excluded
    }
}

/// The files `cargo build --release --locked` reads, found from the sources themselves: the
/// manifest and lock file, the build script if any, every file under src/, what the sources
/// pull in at compile time (`include_str!`, `include_bytes!`, `sqlx::migrate!`, askama
/// templates), and the files of the targets Cargo.toml declares (cargo refuses a manifest
/// whose declared bench or test target is missing, even when building only the binary).
fn needed_by_build() -> BTreeSet<String> {
    let mut need: BTreeSet<String> = ["Cargo.toml", "Cargo.lock"].map(String::from).into();
    for optional in [
        "build.rs",
        "askama.toml",
        "rust-toolchain.toml",
        "rust-toolchain",
    ] {
        if root().join(optional).exists() {
            need.insert(optional.to_string());
        }
    }
    // Declared targets: an explicit `path`, or cargo's default place for the name.
    let manifest = read("Cargo.toml");
    let mut targets: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            targets.push((line.to_string(), None, None));
            continue;
        }
        let value = || line.split('"').nth(1).map(String::from);
        let last = targets.last_mut();
        if let Some((_, name, path)) = last {
            if line.starts_with("name") && line.contains('=') {
                *name = value();
            } else if line.starts_with("path") && line.contains('=') {
                *path = value();
            }
        }
    }
    for (section, name, path) in targets {
        let dir = match section.as_str() {
            "[[bench]]" => "benches",
            "[[test]]" => "tests",
            "[[example]]" => "examples",
            "[[bin]]" => "src/bin",
            "[lib]" => "src",
            _ => continue,
        };
        let file = match (path, name) {
            (Some(p), _) => p,
            (None, Some(n)) => {
                let single = format!("{dir}/{n}.rs");
                if root().join(&single).exists() {
                    single
                } else {
                    format!("{dir}/{n}/main.rs")
                }
            }
            (None, None) => continue,
        };
        assert!(
            root().join(&file).exists(),
            "Cargo.toml declares {section} {file}, which does not exist"
        );
        need.insert(normalize(&file));
    }
    // The sources and what they include.
    for file in files_under("src") {
        if file.ends_with(".rs") {
            let code = read(&file);
            let dir = file.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            for marker in ["include_str!(", "include_bytes!("] {
                for lit in literals_after(&code, marker) {
                    need.insert(normalize(&format!("{dir}/{lit}")));
                }
            }
            for lit in literals_after(&code, "migrate!(") {
                if root().join(&lit).is_dir() {
                    need.extend(files_under(&lit));
                }
            }
            for lit in literals_after(&code, "#[template(") {
                need.insert(format!("templates/{lit}"));
            }
        }
        need.insert(file);
    }
    need.retain(|f| root().join(f).is_file());
    for expected in [
        "src/main.rs",
        "static/docket-logo.png",
        "templates/console/console.css",
        "migrations/catalog/postgres/0001_catalog.sql",
        "benches/filing.rs",
        "tests/it/main.rs",
    ] {
        assert!(
            need.contains(expected),
            "the scan of what the build reads missed {expected}"
        );
    }
    need
}

#[test]
fn docker_build_context_holds_what_the_build_reads_and_no_secrets() {
    let ignore = DockerIgnore::load();
    // Never sent to the Docker daemon: build output, git, node's packages, a dev data dir
    // with its master key, the operator's compose secrets. (Not walked below: checked here.)
    for path in [
        "target/release/docket",
        "target/debug/deps/libdocket.rlib",
        ".git/config",
        ".git/objects/ab/cdef0123",
        "node_modules/playwright-core/package.json",
        "data/dev/master.key",
        "data/catalog.db",
        "deploy/secrets/master_key",
        "deploy/.env",
        ".env",
        "tests/artifacts/failure.png",
    ] {
        assert!(
            ignore.excludes(path),
            ".dockerignore lets {path} into the build context"
        );
    }
    // The context as Docker would send it.
    let context: BTreeSet<String> = walk(root(), &|dir| {
        matches!(dir, ".git" | "target" | "node_modules")
    })
    .into_iter()
    .filter(|f| !ignore.excludes(f))
    .collect();
    let in_context = |source: &str| {
        source == "."
            || context
                .iter()
                .any(|f| f == source || f.starts_with(&format!("{source}/")))
    };
    let copies = copies(&dockerfile());
    for c in copies.iter().filter(|c| c.from.is_none()) {
        for source in &c.sources {
            assert!(
                root().join(source).exists(),
                "deploy/Dockerfile copies {source}, which does not exist"
            );
            assert!(
                in_context(source),
                "deploy/Dockerfile copies {source}, which .dockerignore leaves out"
            );
        }
    }
    // What the build stage receives: the context's files under its COPY sources.
    let build_sources: Vec<&String> = copies
        .iter()
        .filter(|c| c.stage == 1 && c.from.is_none())
        .flat_map(|c| c.sources.iter())
        .collect();
    let copied: BTreeSet<&String> = context
        .iter()
        .filter(|f| {
            build_sources
                .iter()
                .any(|s| s.as_str() == "." || f == s || f.starts_with(&format!("{s}/")))
        })
        .collect();
    let need = needed_by_build();
    let missing: Vec<&String> = need.iter().filter(|f| !copied.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "the image's build stage lacks files `cargo build` reads (see .dockerignore and the COPY lines of deploy/Dockerfile): {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The entrypoint, the health check and docket-admin, run with fakes.

const FAKE_DOCKET: &str = r#"#!/bin/sh
# Stands in for docket: records its arguments, and whether DOCKET_MIGRATE_ON_START reached it.
echo "$* [${DOCKET_MIGRATE_ON_START+leaked}]" >> "$FAKE_LOG"
for arg do
    if [ "$arg" = migrate ]; then
        exit "$FAKE_MIGRATE_EXIT"
    fi
done
exit 0
"#;

const FAKE_ARGV: &str = r#"#!/bin/sh
# Stands in for curl or systemd-run: records each argument on a line.
for arg do
    echo "$arg" >> "$FAKE_LOG"
done
exit "${FAKE_EXIT:-0}"
"#;

/// A directory with fake commands put first on PATH, and the log they write.
struct Fakes {
    dir: tempfile::TempDir,
}

impl Fakes {
    fn new(commands: &[(&str, &str)]) -> Fakes {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        for (name, script) in commands {
            let path = dir.path().join("bin").join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fakes { dir }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// `sh SCRIPT ARGS` with the fakes first on PATH and `env` set (`None` removes);
    /// returns the output and the lines the fakes logged.
    fn run(
        &self,
        script: &str,
        args: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> (Output, Vec<String>) {
        let _ = std::fs::remove_file(self.log());
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("sh");
        cmd.arg(root().join(script))
            .args(args)
            .env("PATH", path)
            .env("FAKE_LOG", self.log())
            .env("FAKE_MIGRATE_EXIT", "0");
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = cmd.output().unwrap();
        let logged = std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        (out, logged)
    }
}

#[test]
fn deploy_scripts_are_valid_sh() {
    for script in [
        "deploy/docker-entrypoint.sh",
        "deploy/docker-healthcheck.sh",
        "deploy/systemd/docket-admin",
    ] {
        let out = Command::new("sh")
            .arg("-n")
            .arg(root().join(script))
            .output()
            .unwrap();
        assert!(out.status.success(), "sh -n {script}: {}", stderr(&out));
        assert!(
            read(script).starts_with("#!/bin/sh\n"),
            "{script}: POSIX sh, as the slim image and any host have it"
        );
    }
}

#[test]
fn entrypoint_migrates_before_serving_only_when_asked() {
    let fakes = Fakes::new(&[("docket", FAKE_DOCKET)]);
    let entrypoint = "deploy/docker-entrypoint.sh";
    let on = |v: &'static str| [("DOCKET_MIGRATE_ON_START", Some(v))];
    let unset = [("DOCKET_MIGRATE_ON_START", None)];

    // Asked: `migrate`, then `serve` (the image's CMD); the variable never reaches docket,
    // which would refuse it as an unknown setting.
    for value in ["1", "true"] {
        let (out, calls) = fakes.run(entrypoint, &["serve"], &on(value));
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            calls,
            ["migrate []", "serve []"],
            "DOCKET_MIGRATE_ON_START={value}"
        );
    }
    // No arguments at all still serves.
    let (_, calls) = fakes.run(entrypoint, &[], &on("1"));
    assert_eq!(calls, ["migrate []", "serve []"]);
    // The same options for both.
    let (_, calls) = fakes.run(
        entrypoint,
        &["--config", "/etc/docket/docket.toml", "serve"],
        &on("1"),
    );
    assert_eq!(
        calls,
        [
            "--config /etc/docket/docket.toml migrate []",
            "--config /etc/docket/docket.toml serve []"
        ]
    );

    // Not asked: only `serve`.
    for env in [&unset[..], &on("0")[..], &on("false")[..]] {
        let (out, calls) = fakes.run(entrypoint, &["serve"], env);
        assert!(out.status.success());
        assert_eq!(calls, ["serve []"], "{env:?}");
    }
    // Operator commands run as they are, even when asked.
    let (_, calls) = fakes.run(entrypoint, &["tenant", "list"], &on("1"));
    assert_eq!(calls, ["tenant list []"]);

    // A failed migration: the server never starts, and the exit status says so.
    let (out, calls) = fakes.run(
        entrypoint,
        &["serve"],
        &[
            ("DOCKET_MIGRATE_ON_START", Some("1")),
            ("FAKE_MIGRATE_EXIT", Some("3")),
        ],
    );
    assert_eq!(calls, ["migrate []"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not starting"));

    // A value that is neither: refused before anything runs.
    let (out, calls) = fakes.run(entrypoint, &["serve"], &on("sometimes"));
    assert!(calls.is_empty());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn healthcheck_asks_healthz_where_docket_listens() {
    let fakes = Fakes::new(&[("curl", FAKE_ARGV)]);
    let script = "deploy/docker-healthcheck.sh";
    let img = image();
    // The image's own settings.
    let listen = img.env.get("DOCKET_LISTEN").unwrap();
    let (out, args) = fakes.run(
        script,
        &[],
        &[
            ("DOCKET_LISTEN", Some(listen.as_str())),
            ("DOCKET_TLS__CERT_FILE", None),
        ],
    );
    assert!(out.status.success());
    assert!(args.iter().any(|a| a == "--fail"), "{args:?}");
    assert_eq!(
        args.last().map(String::as_str),
        Some(format!("http://127.0.0.1:{}/healthz", port_of(listen)).as_str())
    );
    // Built-in TLS on IPv6.
    let (_, args) = fakes.run(
        script,
        &[],
        &[
            ("DOCKET_LISTEN", Some("[::]:8443")),
            (
                "DOCKET_TLS__CERT_FILE",
                Some("/etc/docket/tls/fullchain.pem"),
            ),
        ],
    );
    assert_eq!(
        args.last().map(String::as_str),
        Some("https://[::1]:8443/healthz")
    );
    // curl's failure is the check's failure.
    let (out, _) = fakes.run(script, &[], &[("FAKE_EXIT", Some("7"))]);
    assert!(!out.status.success());
}

// ---------------------------------------------------------------------------------------
// The systemd unit.

/// The directives of a unit file, in order, whatever their section (`[Section]` lines and
/// comments dropped).
fn unit_file_directives(rel: &str) -> Vec<(String, String)> {
    read(rel)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{rel}: {l}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

fn unit_directives() -> Vec<(String, String)> {
    unit_file_directives("deploy/systemd/docket.service")
}

fn unit_values<'a>(directives: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    directives
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn systemd_unit_is_hardened_and_passes_systemd_analyze() {
    let directives = unit_directives();
    for (key, value) in [
        ("Type", "exec"),
        ("User", "docket"),
        ("StateDirectory", "docket"),
        ("EnvironmentFile", "-/etc/docket/docket.env"),
        ("LoadCredential", "master_key:/etc/docket/master_key"),
        ("Environment", "DOCKET_MASTER_KEY_FILE=%d/master_key"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("UMask", "0077"),
    ] {
        assert!(
            unit_values(&directives, key).contains(&value),
            "deploy/systemd/docket.service: {key}={value}"
        );
    }
    // `docket --config FILE migrate` before `docket --config FILE serve`: real commands.
    let command = |key: &str| -> Vec<String> {
        let values = unit_values(&directives, key);
        assert_eq!(values.len(), 1, "one {key}");
        values[0].split_whitespace().map(String::from).collect()
    };
    let pre = command("ExecStartPre");
    let start = command("ExecStart");
    assert_eq!(pre[0], "/usr/local/bin/docket");
    assert_eq!(start[0], pre[0]);
    assert_eq!(pre.last().map(String::as_str), Some("migrate"));
    assert_eq!(start.last().map(String::as_str), Some("serve"));
    assert_eq!(pre[1..pre.len() - 1], start[1..start.len() - 1]);
    assert_docket_command("ExecStartPre", &pre[1..]);
    assert_docket_command("ExecStart", &start[1..]);
    // The configuration it runs with: the example file (installed as /etc/docket/docket.toml)
    // and the unit's own variables.
    assert_eq!(start[1..3], ["--config", "/etc/docket/docket.toml"]);
    let credentials = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = unit_values(&directives, "Environment")
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').unwrap();
            let v = v.replace("%d", &credentials.path().display().to_string());
            (k.to_string(), v)
        })
        .collect();
    assert_docket_accepts(
        "deploy/systemd/docket.service with deploy/docket.example.toml",
        &env,
        Some(&root().join("deploy/docket.example.toml")),
    );

    // systemd's own checks, on a copy whose commands point at the binary built for these
    // tests (`verify` wants every executable to exist). It only warns about an unknown or
    // misspelt directive, so any output fails the test too.
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("docket.service");
    std::fs::write(
        &copy,
        read("deploy/systemd/docket.service").replace("/usr/local/bin/docket", DOCKET),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output();
    let verify = match verify {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("systemd-analyze is required in CI: {e}")
        }
        Err(e) => {
            eprintln!("skipped: systemd-analyze is not installed ({e}; apt-get install systemd)");
            return;
        }
    };
    assert!(
        verify.status.success() && stderr(&verify).trim().is_empty(),
        "systemd-analyze verify deploy/systemd/docket.service:\n{}",
        stderr(&verify)
    );
    // Exposure 2.0 or less on systemd's scale of 0 (locked down) to 10 ("UNSAFE").
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(copy)
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "systemd-analyze security deploy/systemd/docket.service:\n{}",
        stderr(&security)
    );
}

/// The directives of docket.service that are the server's own (how it starts, stops,
/// restarts and is enabled). The backup units must have every other one exactly as it has
/// it: user, configuration, master key, data directory and hardening.
const SERVER_ONLY_DIRECTIVES: &[&str] = &[
    "Description",
    "After",
    "Wants",
    "Type",
    "ExecStartPre",
    "ExecStart",
    "ExecReload",
    "Restart",
    "RestartSec",
    "TimeoutStopSec",
    "TimeoutStartSec",
    "LimitNOFILE",
    "WantedBy",
];

/// Where the systemd units keep the backups.
const SYSTEMD_BACKUP_DIR: &str = "/var/backups/docket";

#[test]
fn systemd_backup_timers_run_backups_and_checks_hardened_as_the_service() {
    let server = unit_directives();
    let server_start: Vec<String> = unit_values(&server, "ExecStart")[0]
        .split_whitespace()
        .map(String::from)
        .collect();
    // The program and its options (`--config FILE`), without the command (`serve`).
    let server_prefix = &server_start[..server_start.len() - 1];
    let shared: BTreeSet<&str> = server
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !SERVER_ONLY_DIRECTIVES.contains(k))
        .collect();
    for key in [
        "User",
        "LoadCredential",
        "ProtectSystem",
        "SystemCallFilter",
        "UMask",
    ] {
        assert!(shared.contains(key), "{key} is one the backup units share");
    }
    // (unit name, its command, how it sees the backup directory, how often its timer runs)
    let units = [
        (
            "docket-backup",
            &["backup", "create", "--all", "--to", SYSTEMD_BACKUP_DIR][..],
            "ReadWritePaths",
            "daily",
        ),
        (
            "docket-backup-verify",
            &["backup", "verify", SYSTEMD_BACKUP_DIR][..],
            "ReadOnlyPaths",
            "monthly",
        ),
    ];
    for (name, command, access, period) in units {
        let rel = format!("deploy/systemd/{name}.service");
        let unit = unit_file_directives(&rel);
        assert_eq!(unit_values(&unit, "Type"), ["oneshot"], "{rel}: Type");
        for key in &shared {
            let want = unit_values(&server, key);
            let have = unit_values(&unit, key);
            if *key == "Environment" {
                for w in &want {
                    assert!(
                        have.contains(w),
                        "{rel}: Environment={w}, as in docket.service"
                    );
                }
            } else {
                assert_eq!(have, want, "{rel}: {key} as in docket.service");
            }
        }
        // A temporary directory of its own, writable under ProtectSystem=strict.
        for e in unit_values(&unit, "Environment") {
            if let Some(dir) = e.strip_prefix("TMPDIR=") {
                assert!(
                    matches!(dir, "/tmp" | "/var/tmp"),
                    "{rel}: TMPDIR={dir}: PrivateTmp gives /tmp and /var/tmp only"
                );
            }
        }
        // `docket --config FILE backup ...`, as docket.service runs docket: a real command.
        let exec: Vec<String> = {
            let values = unit_values(&unit, "ExecStart");
            assert_eq!(values.len(), 1, "{rel}: one ExecStart");
            values[0].split_whitespace().map(String::from).collect()
        };
        assert!(
            exec.len() > server_prefix.len(),
            "{rel}: ExecStart {exec:?}"
        );
        assert_eq!(
            exec[..server_prefix.len()],
            server_prefix[..],
            "{rel}: the program and options of docket.service's ExecStart"
        );
        assert_eq!(exec[server_prefix.len()..], command[..], "{rel}: ExecStart");
        assert_docket_command(&rel, &exec[1..]);
        // The backup directory: writable for a backup, read-only for a check.
        assert!(
            unit_values(&unit, access).contains(&SYSTEMD_BACKUP_DIR),
            "{rel}: {access}={SYSTEMD_BACKUP_DIR}"
        );
        if access != "ReadWritePaths" {
            assert!(
                !unit_values(&unit, "ReadWritePaths").contains(&SYSTEMD_BACKUP_DIR),
                "{rel}: a check only reads the backups"
            );
        }

        // Its timer: started by timers.target, catching up on a run missed while down.
        let timer_rel = format!("deploy/systemd/{name}.timer");
        let timer = unit_file_directives(&timer_rel);
        let service = format!("{name}.service");
        assert_eq!(
            unit_values(&timer, "Unit"),
            [service.as_str()],
            "{timer_rel}"
        );
        assert_eq!(unit_values(&timer, "Persistent"), ["true"], "{timer_rel}");
        assert_eq!(
            unit_values(&timer, "RandomizedDelaySec").len(),
            1,
            "{timer_rel}: RandomizedDelaySec"
        );
        assert_eq!(
            unit_values(&timer, "WantedBy"),
            ["timers.target"],
            "{timer_rel}"
        );
        let calendar = unit_values(&timer, "OnCalendar");
        assert_eq!(calendar.len(), 1, "{timer_rel}: one OnCalendar");
        let every = match period {
            "daily" => calendar[0] == "daily" || calendar[0].starts_with("*-*-* "),
            _ => calendar[0] == "monthly" || calendar[0].starts_with("*-*-01 "),
        };
        assert!(
            every,
            "{timer_rel}: OnCalendar={} is not {period}",
            calendar[0]
        );
    }

    // systemd's own checks, on copies whose commands point at the binary built for these
    // tests (as for docket.service); any output fails the test too.
    let scratch = tempfile::tempdir().unwrap();
    let mut copies: Vec<PathBuf> = Vec::new();
    for (name, _, _, _) in units {
        for ext in ["service", "timer"] {
            let file = format!("{name}.{ext}");
            let copy = scratch.path().join(&file);
            std::fs::write(
                &copy,
                read(&format!("deploy/systemd/{file}")).replace("/usr/local/bin/docket", DOCKET),
            )
            .unwrap();
            copies.push(copy);
        }
    }
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&copies)
        .output();
    let verify = match verify {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("systemd-analyze is required in CI: {e}")
        }
        Err(e) => {
            eprintln!("skipped: systemd-analyze is not installed ({e}; apt-get install systemd)");
            return;
        }
    };
    assert!(
        verify.status.success() && stderr(&verify).trim().is_empty(),
        "systemd-analyze verify deploy/systemd/docket-backup*:\n{}",
        stderr(&verify)
    );
    for copy in copies
        .iter()
        .filter(|c| c.extension().is_some_and(|e| e == "service"))
    {
        let security = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(copy)
            .output()
            .unwrap();
        assert!(
            security.status.success(),
            "systemd-analyze security {}:\n{}",
            copy.display(),
            stderr(&security)
        );
    }
}

#[test]
fn docket_admin_runs_commands_as_the_service_does() {
    let directives = unit_directives();
    let fakes = Fakes::new(&[("systemd-run", FAKE_ARGV)]);
    let (out, args) = fakes.run("deploy/systemd/docket-admin", &["tenant", "list"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let user = unit_values(&directives, "User")[0];
    for expected in [
        format!("--uid={user}"),
        format!(
            "--property=LoadCredential={}",
            unit_values(&directives, "LoadCredential")[0]
        ),
        format!(
            "--property=EnvironmentFile={}",
            unit_values(&directives, "EnvironmentFile")[0]
        ),
        "--setenv=DOCKET_CONFIG=/etc/docket/docket.toml".to_string(),
        "--pipe".to_string(),
        "--wait".to_string(),
    ] {
        assert!(
            args.contains(&expected),
            "docket-admin: {expected} in {args:?}"
        );
    }
    assert!(
        args.iter()
            .any(|a| a.contains("exec /usr/local/bin/docket \"$@\"")
                && a.contains("DOCKET_MASTER_KEY_FILE=\"$CREDENTIALS_DIRECTORY/master_key\"")),
        "{args:?}"
    );
    assert_eq!(args[args.len() - 3..], ["docket", "tenant", "list"]);
    let (out, args) = fakes.run("deploy/systemd/docket-admin", &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(args.is_empty());
}

// ---------------------------------------------------------------------------------------
// YAML: compose, Kubernetes, alert rules.

#[test]
fn every_yaml_file_in_deploy_parses() {
    let files: Vec<String> = files_under("deploy")
        .into_iter()
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
        .collect();
    for expected in [
        "deploy/alerts.yml",
        "deploy/compose.yaml",
        "deploy/k8s/deployment.yaml",
        "deploy/k8s/cronjob.yaml",
        "deploy/k8s/backup.yaml",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected} is missing");
    }
    for file in &files {
        let docs = yaml(file);
        assert!(!docs.is_empty(), "{file} is empty");
        for (i, doc) in docs.iter().enumerate() {
            assert!(
                doc.as_hash().is_some(),
                "{file}: document {i} is not a mapping"
            );
        }
    }
    let alerts = yaml("deploy/alerts.yml");
    assert!(!list(&alerts[0]["groups"], "alerts.yml groups").is_empty());
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let s = &compose["services"][name];
    assert!(
        s.as_hash().is_some(),
        "deploy/compose.yaml has no service {name}"
    );
    s
}

/// Compose's `${NAME...}` interpolation with every variable set to `example`; collects the
/// names.
fn interpolate(value: &str, names: &mut BTreeSet<String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = i + rest[i..]
            .find('}')
            .unwrap_or_else(|| panic!("deploy/compose.yaml: unclosed ${{ in {value}"));
        let name: String = rest[i + 2..end]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
        out.push_str("example");
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The host of `scheme://[user@]host[:port]/...`.
fn url_host(url: &str) -> &str {
    let after = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let after = after.rsplit_once('@').map(|(_, r)| r).unwrap_or(after);
    after.split([':', '/']).next().unwrap_or("")
}

#[test]
fn compose_runs_docket_on_postgres_and_an_s3_store() {
    let docs = yaml("deploy/compose.yaml");
    let compose = &docs[0];
    let img = image();

    let postgres = service(compose, "postgres");
    assert!(text(&postgres["image"], "postgres image").starts_with("postgres:15"));
    let minio = service(compose, "minio");
    assert!(text(&minio["image"], "minio image").contains("minio/minio:"));
    let docket = service(compose, "docket");
    for (name, s) in [("postgres", postgres), ("minio", minio), ("docket", docket)] {
        assert!(
            !strings(&s["healthcheck"]["test"], name).is_empty(),
            "deploy/compose.yaml: {name} needs a healthcheck (docket waits for it)"
        );
    }
    assert_eq!(
        strings(&docket["healthcheck"]["test"], "docket healthcheck"),
        [vec!["CMD".to_string()], img.healthcheck.clone()].concat()
    );

    // The image is built from this repository with deploy/Dockerfile.
    let context = text(&docket["build"]["context"], "docket build context");
    let dockerfile = text(&docket["build"]["dockerfile"], "docket dockerfile");
    let built_from = root()
        .join(normalize(&format!("deploy/{context}")))
        .join(dockerfile);
    assert!(built_from.ends_with("deploy/Dockerfile") && built_from.is_file());

    // docket's settings, with compose's variables filled in.
    let mut names = BTreeSet::new();
    let mut env: BTreeMap<String, String> =
        string_map(&docket["environment"], "docket environment")
            .into_iter()
            .map(|(k, v)| {
                let v = interpolate(&v, &mut names);
                (k, v)
            })
            .collect();
    for name in &names {
        assert!(
            !name.starts_with("DOCKET_"),
            "deploy/compose.yaml: ${{{name}}}: DOCKET_* names are docket's own settings"
        );
    }
    assert_eq!(
        env.get("DOCKET_STORAGE__BACKEND").map(String::as_str),
        Some("s3")
    );
    let db = env
        .get("DOCKET_DATABASE__URL")
        .expect("DOCKET_DATABASE__URL");
    assert!(
        db.starts_with("postgres://") && url_host(db) == "postgres",
        "{db}"
    );
    let endpoint = env
        .get("DOCKET_STORAGE__S3__ENDPOINT")
        .expect("an S3 endpoint");
    assert_eq!(url_host(endpoint), "minio");
    // The bucket is made before docket starts, and the databases are up.
    let bucket = env
        .get("DOCKET_STORAGE__S3__BUCKET")
        .expect("a bucket")
        .clone();
    let init = service(compose, "minio-init");
    assert!(text(&init["image"], "minio-init image").contains("minio/mc:"));
    let script = strings(&init["command"], "minio-init command").join("\n");
    assert!(
        script.contains("mc mb") && script.contains(&format!("/{bucket}")),
        "minio-init must create the bucket {bucket}: {script}"
    );
    assert_eq!(
        text(
            &init["depends_on"]["minio"]["condition"],
            "minio-init waits for minio"
        ),
        "service_healthy"
    );
    for (dep, condition) in [
        ("postgres", "service_healthy"),
        ("minio-init", "service_completed_successfully"),
    ] {
        assert_eq!(
            text(&docket["depends_on"][dep]["condition"], "docket depends_on"),
            condition
        );
    }
    // The master key is a Docker secret, whose file stays out of git.
    let secrets = strings(&docket["secrets"], "docket secrets");
    let key_file = env
        .get("DOCKET_MASTER_KEY_FILE")
        .expect("DOCKET_MASTER_KEY_FILE");
    assert!(
        secrets
            .iter()
            .any(|s| *key_file == format!("/run/secrets/{s}")),
        "{key_file} is not one of the secrets {secrets:?}"
    );
    for s in &secrets {
        let file = text(&compose["secrets"][s.as_str()]["file"], "secret file");
        let in_repo = normalize(&format!("deploy/{file}"));
        assert!(
            read(".gitignore")
                .lines()
                .map(|l| l.trim().trim_start_matches('/'))
                .any(|l| !l.is_empty() && !l.starts_with('#') && in_repo.starts_with(l)),
            ".gitignore must keep {in_repo} out of git"
        );
    }
    // The data dir is a volume; ports are published on loopback only (metrics are never
    // public; the public side is a TLS proxy's).
    let volumes = strings(&docket["volumes"], "docket volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v.split(':').nth(1) == Some(img.volume.as_str())),
        "{volumes:?}"
    );
    for port in strings(&docket["ports"], "docket ports") {
        assert!(
            port.starts_with("127.0.0.1:"),
            "deploy/compose.yaml publishes {port}"
        );
    }
    // The entrypoint reads DOCKET_MIGRATE_ON_START and takes it out of docket's environment
    // (entrypoint_migrates_before_serving_only_when_asked); docket takes the rest.
    assert_eq!(env.remove("DOCKET_MIGRATE_ON_START").as_deref(), Some("1"));
    assert_docket_accepts("deploy/compose.yaml docket environment", &env, None);
}

/// Every object of deploy/k8s/ but the kustomization, with its file.
fn k8s_objects() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    for file in files_under("deploy/k8s") {
        if file.ends_with("kustomization.yaml") {
            continue;
        }
        for doc in yaml(&file) {
            out.push((file.clone(), doc));
        }
    }
    out
}

fn k8s_find<'a>(objects: &'a [(String, Yaml)], kind: &str, name: &str) -> &'a Yaml {
    objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("deploy/k8s has no {kind} {name}"))
}

/// One container of a pod template, with its configuration resolved.
struct Container {
    name: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    c: Yaml,
}

/// Checks a pod template: not root, no privilege, read-only root filesystem; every
/// ConfigMap, Secret key and volume it names exists; every `DOCKET_*_FILE` is a mounted
/// Secret item; the data dir is a writable mount. Returns its containers (init first).
fn check_pod(what: &str, spec: &Yaml, objects: &[(String, Yaml)], uid: u32) -> Vec<Container> {
    let pod = &spec["securityContext"];
    assert_eq!(
        pod["runAsNonRoot"].as_bool(),
        Some(true),
        "{what}: runAsNonRoot"
    );
    assert_eq!(
        pod["runAsUser"].as_i64(),
        Some(i64::from(uid)),
        "{what}: runAsUser is the image's user"
    );
    assert_eq!(
        spec["automountServiceAccountToken"].as_bool(),
        Some(false),
        "{what}: docket needs no Kubernetes API token"
    );
    let volumes: BTreeMap<String, &Yaml> = list(&spec["volumes"], "volumes")
        .iter()
        .map(|v| (text(&v["name"], "volume name").to_string(), v))
        .collect();
    let secret_of = |name: &str| -> BTreeMap<String, String> {
        string_map(
            &k8s_find(objects, "Secret", name)["stringData"],
            "Secret stringData",
        )
    };
    let mut out = Vec::new();
    let mut all = Vec::new();
    if let Some(init) = spec["initContainers"].as_vec() {
        all.extend(init.iter());
    }
    all.extend(list(&spec["containers"], "containers").iter());
    for c in all {
        let name = text(&c["name"], "container name").to_string();
        let what = format!("{what}, container {name}");
        let sc = &c["securityContext"];
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{what}"
        );
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}");
        assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true), "{what}");
        assert_eq!(
            strings(&sc["capabilities"]["drop"], "capabilities.drop"),
            ["ALL"],
            "{what}"
        );
        // The environment, from the ConfigMap and the Secret.
        let mut env = BTreeMap::new();
        for from in list(&c["envFrom"], "envFrom") {
            let cm = text(&from["configMapRef"]["name"], "configMapRef");
            env.extend(string_map(
                &k8s_find(objects, "ConfigMap", cm)["data"],
                "ConfigMap data",
            ));
        }
        for e in list(&c["env"], "env") {
            let key = text(&e["name"], "env name").to_string();
            let value = if let Some(v) = scalar(&e["value"]) {
                v
            } else {
                let r = &e["valueFrom"]["secretKeyRef"];
                let secret = secret_of(text(&r["name"], "secretKeyRef name"));
                let k = text(&r["key"], "secretKeyRef key");
                secret
                    .get(k)
                    .unwrap_or_else(|| panic!("{what}: {key}: the Secret has no {k}"))
                    .clone()
            };
            env.insert(key, value);
        }
        // Mounted volumes: where each file of each Secret item lands.
        let mut secret_files = BTreeSet::new();
        let mut mounts = BTreeSet::new();
        for m in list(&c["volumeMounts"], "volumeMounts") {
            let vname = text(&m["name"], "volumeMount name");
            let mount = text(&m["mountPath"], "mountPath").to_string();
            let volume = volumes
                .get(vname)
                .unwrap_or_else(|| panic!("{what}: no volume {vname}"));
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                let keys = secret_of(secret);
                for item in list(&volume["secret"]["items"], "secret items") {
                    let key = text(&item["key"], "item key");
                    assert!(keys.contains_key(key), "{what}: the Secret has no {key}");
                    secret_files.insert(format!("{mount}/{}", text(&item["path"], "item path")));
                }
            }
            mounts.insert(mount);
        }
        for (k, v) in &env {
            if k.ends_with("_FILE") {
                assert!(
                    secret_files.contains(v),
                    "{what}: {k}={v} is not a mounted Secret file ({secret_files:?})"
                );
            }
        }
        let data_dir = env.get("DOCKET_DATA_DIR").expect("DOCKET_DATA_DIR");
        assert!(
            mounts.contains(data_dir),
            "{what}: the data dir must be a writable mount"
        );
        assert!(
            mounts.contains("/tmp"),
            "{what}: /tmp must be a writable mount"
        );
        out.push(Container {
            name,
            args: strings(&c["args"], "args"),
            env,
            c: c.clone(),
        });
    }
    out
}

#[test]
fn kubernetes_manifests_run_replicas_with_probes_secrets_and_a_sweep() {
    let objects = k8s_objects();
    let img = image();

    // kustomization.yaml lists every manifest but the example Secret, which must never
    // overwrite the real one.
    let kustomization = &yaml("deploy/k8s/kustomization.yaml")[0];
    let listed: BTreeSet<String> = strings(&kustomization["resources"], "resources")
        .into_iter()
        .map(|r| format!("deploy/k8s/{r}"))
        .collect();
    let files: BTreeSet<String> = objects.iter().map(|(f, _)| f.clone()).collect();
    let secret_file = &objects
        .iter()
        .find(|(_, o)| o["kind"].as_str() == Some("Secret"))
        .expect("deploy/k8s has an example Secret")
        .0;
    let mut expected = files.clone();
    expected.remove(secret_file);
    assert_eq!(listed, expected, "deploy/k8s/kustomization.yaml resources");

    // The Secret is an example: every value a marked placeholder.
    for (k, v) in string_map(
        &k8s_find(&objects, "Secret", "docket-secrets")["stringData"],
        "Secret",
    ) {
        assert!(
            v.contains("REPLACE-ME"),
            "secret.yaml: {k} must be a marked placeholder"
        );
    }

    let deployment = k8s_find(&objects, "Deployment", "docket");
    assert!(deployment["spec"]["replicas"].as_i64().unwrap_or(0) >= 2);
    let template = &deployment["spec"]["template"];
    let containers = check_pod("Deployment docket", &template["spec"], &objects, img.uid);
    let (migrate, server) = match &containers[..] {
        [m, s] => (m, s),
        _ => panic!("Deployment docket: a migrate init container and the server"),
    };
    assert_eq!(migrate.args, ["migrate"], "init container {}", migrate.name);
    assert_eq!(server.args, ["serve"]);
    assert_eq!(
        migrate.env, server.env,
        "migrate runs with the server's settings"
    );
    // Several replicas: one PostgreSQL and one object store.
    assert_eq!(
        server
            .env
            .get("DOCKET_STORAGE__BACKEND")
            .map(String::as_str),
        Some("s3")
    );
    assert!(server.env["DOCKET_DATABASE__URL"].starts_with("postgres://"));
    // Ports and probes: where docket listens; ready is /readyz, alive is /healthz.
    let ports: BTreeMap<String, String> = list(&server.c["ports"], "ports")
        .iter()
        .map(|p| {
            (
                text(&p["name"], "port name").to_string(),
                scalar(&p["containerPort"]).unwrap(),
            )
        })
        .collect();
    assert_eq!(ports["http"], port_of(&server.env["DOCKET_LISTEN"]));
    assert_eq!(
        ports["metrics"],
        port_of(&server.env["DOCKET_METRICS__LISTEN"])
    );
    assert!(server.env["DOCKET_METRICS__LISTEN"].starts_with("0.0.0.0:"));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &server.c[probe]["httpGet"];
        assert_eq!(text(&get["path"], probe), path, "{probe}");
        assert_eq!(text(&get["port"], probe), "http", "{probe}");
    }
    // The Services: the public one without metrics, selecting these pods.
    let labels = string_map(&template["metadata"]["labels"], "pod labels");
    for name in ["docket", "docket-metrics"] {
        let svc = k8s_find(&objects, "Service", name);
        for (k, v) in string_map(&svc["spec"]["selector"], "selector") {
            assert_eq!(labels.get(&k), Some(&v), "Service {name} selects the pods");
        }
        let targets: Vec<String> = list(&svc["spec"]["ports"], "ports")
            .iter()
            .map(|p| scalar(&p["targetPort"]).unwrap())
            .collect();
        let expected = if name == "docket" { "http" } else { "metrics" };
        assert_eq!(targets, [expected], "Service {name}");
    }

    // The sweep: scheduled, never two at once, with the same settings.
    let cron = k8s_find(&objects, "CronJob", "docket-sweep");
    let schedule = text(&cron["spec"]["schedule"], "schedule");
    assert_eq!(
        schedule.split_whitespace().count(),
        5,
        "cron schedule {schedule}"
    );
    assert_eq!(
        text(&cron["spec"]["concurrencyPolicy"], "concurrencyPolicy"),
        "Forbid"
    );
    let job = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let sweep = check_pod("CronJob docket-sweep", job, &objects, img.uid);
    assert_eq!(sweep.len(), 1);
    assert_eq!(sweep[0].args, ["maintenance", "sweep"]);
    assert_eq!(
        sweep[0].env, server.env,
        "the sweep runs with the server's settings"
    );
    // The replicas leave the sweep to it.
    assert_eq!(
        server
            .env
            .get("DOCKET_MAINTENANCE__SWEEP_INTERVAL_MINUTES")
            .map(String::as_str),
        Some("0")
    );
    // One image everywhere.
    let image_of = |c: &Container| text(&c.c["image"], "image").to_string();
    assert_eq!(image_of(migrate), image_of(server));
    assert_eq!(image_of(&sweep[0]), image_of(server));

    // The real binary takes these commands and this configuration.
    for c in [migrate, server, &sweep[0]] {
        assert_docket_command(&format!("deploy/k8s container {}", c.name), &c.args);
    }
    assert_docket_accepts("deploy/k8s environment", &server.env, None);

    // Schema validation, where the `kubernetes-validate` tool (PyPI) is installed.
    let manifests: Vec<PathBuf> = files.iter().map(|f| root().join(f)).collect();
    match Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(manifests)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "kubernetes-validate deploy/k8s:\n{}",
            stderr(&out)
        ),
        Err(_) => {
            eprintln!("skipped: schema validation of deploy/k8s (pip install kubernetes-validate)")
        }
    }
}

#[test]
fn kubernetes_cronjobs_back_up_and_check_on_a_volume() {
    let objects = k8s_objects();
    let img = image();
    let deployment = k8s_find(&objects, "Deployment", "docket");
    let pods = check_pod(
        "Deployment docket",
        &deployment["spec"]["template"]["spec"],
        &objects,
        img.uid,
    );
    let server = pods
        .iter()
        .find(|c| c.args == ["serve"])
        .expect("Deployment docket runs `docket serve`");

    // The backups' volume.
    let claim = "docket-backups";
    let pvc = k8s_find(&objects, "PersistentVolumeClaim", claim);
    assert_eq!(
        strings(&pvc["spec"]["accessModes"], "accessModes"),
        ["ReadWriteOnce"],
        "PersistentVolumeClaim {claim}"
    );
    assert!(
        scalar(&pvc["spec"]["resources"]["requests"]["storage"]).is_some(),
        "PersistentVolumeClaim {claim}: a storage request"
    );

    // (CronJob, its command, whether it writes the backups, how often it runs)
    for (name, command, writes, period) in [
        (
            "docket-backup",
            &["backup", "create", "--all", "--to", "/backups"][..],
            true,
            "daily",
        ),
        (
            "docket-backup-verify",
            &["backup", "verify", "/backups"][..],
            false,
            "monthly",
        ),
    ] {
        let what = format!("CronJob {name}");
        let cron = k8s_find(&objects, "CronJob", name);
        // Scheduled at a fixed minute and hour, daily or on one day of the month; never two
        // at once.
        let schedule = text(&cron["spec"]["schedule"], "schedule");
        let fields: Vec<&str> = schedule.split_whitespace().collect();
        assert_eq!(fields.len(), 5, "{what}: cron schedule {schedule}");
        assert!(
            fields[0].parse::<u32>().is_ok() && fields[1].parse::<u32>().is_ok(),
            "{what}: {schedule}: at a fixed time"
        );
        let on_its_days = match period {
            "daily" => fields[2] == "*",
            _ => fields[2]
                .parse::<u32>()
                .is_ok_and(|d| (1..=28).contains(&d)),
        };
        assert!(on_its_days, "{what}: {schedule} is not {period}");
        assert_eq!(
            fields[3..],
            ["*", "*"],
            "{what}: {schedule} is not {period}"
        );
        assert_eq!(
            text(&cron["spec"]["concurrencyPolicy"], "concurrencyPolicy"),
            "Forbid",
            "{what}"
        );
        let spec = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(
            text(&spec["restartPolicy"], "restartPolicy"),
            "Never",
            "{what}"
        );
        // The sweep's pod: not root, read-only root filesystem, writable data dir and /tmp,
        // the server's settings, image and Secret files.
        let containers = check_pod(&what, spec, &objects, img.uid);
        assert_eq!(containers.len(), 1, "{what}: one container");
        let c = &containers[0];
        assert_eq!(c.args, command, "{what}");
        assert_docket_command(&what, &c.args);
        assert_eq!(c.env, server.env, "{what} runs with the server's settings");
        assert_eq!(
            text(&c.c["image"], "image"),
            text(&server.c["image"], "image"),
            "{what}: one image everywhere"
        );
        // The backup directory the command names is the claim, writable for a backup only.
        let dir = c.args.last().unwrap().as_str();
        let volume = list(&spec["volumes"], "volumes")
            .iter()
            .find(|v| v["persistentVolumeClaim"]["claimName"].as_str() == Some(claim))
            .unwrap_or_else(|| panic!("{what}: no volume of the claim {claim}"));
        let volume = text(&volume["name"], "volume name");
        let mount = list(&c.c["volumeMounts"], "volumeMounts")
            .iter()
            .find(|m| m["name"].as_str() == Some(volume))
            .unwrap_or_else(|| panic!("{what}: the volume {volume} is not mounted"));
        assert_eq!(text(&mount["mountPath"], "mountPath"), dir, "{what}");
        assert_eq!(
            mount["readOnly"].as_bool().unwrap_or(false),
            !writes,
            "{what}: {dir} read-only is {}",
            !writes
        );
    }
}
