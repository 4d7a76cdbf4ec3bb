//! Configuration: defaults → TOML file (`--config`) → `DOCKET_…` environment (`__` nests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, `127.0.0.1:8080` form.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the catalogue, tenant databases (SQLite) and tenant blobs live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Key-encryption key: 32 bytes as 64 hex characters or base64.
    #[serde(default, skip_serializing)]
    pub master_key: Option<SecretString>,
    /// File holding the master key (same encodings); used when `master_key` is absent.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    #[serde(default)]
    pub google: GoogleConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub addon: AddonConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub filing: FilingConfig,
}

/// Filing behaviour that is the same for every firm on the instance.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilingConfig {
    /// Minutes after filing during which the filer may undo their own filing (the card's
    /// "Undo", `DELETE /v1/filings/{id}`); 0 turns undo off. At most 1440 (a day); later,
    /// an admin removes a filing with a reason.
    #[serde(default = "default_undo_grace")]
    pub undo_grace_minutes: u64,
}

impl Default for FilingConfig {
    fn default() -> Self {
        FilingConfig {
            undo_grace_minutes: default_undo_grace(),
        }
    }
}

fn default_undo_grace() -> u64 {
    10
}

/// The longest undo grace period, in minutes (a day).
pub const MAX_UNDO_GRACE_MINUTES: u64 = 1440;

/// Where tenants' blobs are kept (`src/storage`): the data dir (default) or an
/// S3-compatible bucket. Either way they are sealed with the tenant's key before they are
/// written, so the store never sees plaintext.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `local` (under `data_dir/tenants/<id>/blobs`) or `s3`.
    #[serde(default)]
    pub backend: StorageBackend,
    #[serde(default)]
    pub s3: S3Config,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Local,
    S3,
}

/// An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, …). Objects are named
/// `<prefix>/tenants/<tenant id>/blobs/<aa>/<sha-256>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default)]
    pub bucket: Option<String>,
    /// Endpoint URL for S3-compatible stores (path-style requests); absent = AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Default `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Static credentials; absent = the usual AWS environment/instance credentials.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing)]
    pub secret_access_key: Option<SecretString>,
    /// File holding the secret access key (e.g. a systemd credential, a Kubernetes secret).
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Key prefix inside the bucket, for sharing a bucket between deployments.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Allow a plain-HTTP endpoint (local test stores only).
    #[serde(default)]
    pub allow_http: bool,
    /// Seconds one request to the store may take (a part of a multipart upload included).
    #[serde(default = "default_s3_timeout")]
    pub timeout_secs: u64,
}

/// The longest `storage.s3.timeout_secs` allowed.
pub const MAX_S3_TIMEOUT_SECS: u64 = 120;

fn default_s3_timeout() -> u64 {
    30
}

impl S3Config {
    /// What the settings alone show is wrong: the endpoint's form, a prefix that would not be
    /// used as written, the secret given twice. (An unreadable or empty secret file stops the
    /// start when the store is opened.)
    fn check(&self) -> anyhow::Result<()> {
        if let Some(e) = &self.endpoint {
            let url = url::Url::parse(e).map_err(|_| {
                anyhow::anyhow!("invalid configuration: `storage.s3.endpoint` (DOCKET_STORAGE__S3__ENDPOINT) is not a URL: {e:?}")
            })?;
            match url.scheme() {
                "https" => {}
                "http" if self.allow_http => {}
                "http" => bail!("invalid configuration: `storage.s3.endpoint` is plain http: set `storage.s3.allow_http = true` (DOCKET_STORAGE__S3__ALLOW_HTTP) to allow it"),
                other => bail!("invalid configuration: `storage.s3.endpoint` must be an http(s) URL, not {other}:"),
            }
        }
        if let Some(p) = &self.prefix {
            let ok = p.split('/').filter(|seg| !seg.is_empty()).all(|seg| {
                seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
            if !ok {
                bail!("invalid configuration: `storage.s3.prefix` may hold only letters, digits, `-`, `_`, `.` and `/`-separated segments other than `.` and `..`");
            }
        }
        if !(1..=MAX_S3_TIMEOUT_SECS).contains(&self.timeout_secs) {
            bail!("invalid configuration: `storage.s3.timeout_secs` must be 1 to {MAX_S3_TIMEOUT_SECS}: a sweep's deletes must end well within its lease (src/sweep_epoch.rs)");
        }
        if self.secret_access_key.is_some() && self.secret_access_key_file.is_some() {
            bail!("invalid configuration: give `storage.s3.secret_access_key` or `storage.s3.secret_access_key_file`, not both");
        }
        Ok(())
    }
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
            prefix: None,
            allow_http: false,
            timeout_secs: default_s3_timeout(),
        }
    }
}

/// `GET /metrics` (`src/metrics.rs`), on a listener of its own.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` of the metrics listener, or `off`. Keep it where only the monitoring
    /// system reaches it; `docket dev` uses any free loopback port unless this is set.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

/// The default metrics address (the port OpenTelemetry's Prometheus exporter uses).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

fn default_metrics_listen() -> String {
    DEFAULT_METRICS_LISTEN.to_string()
}

impl MetricsConfig {
    /// The address to serve metrics on; `None` when `off`. Errors: not `host:port`.
    pub fn address(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.listen.trim() {
            "off" => Ok(None),
            a => a.parse().map(Some).map_err(|_| {
                anyhow::anyhow!(
                    "invalid configuration: `metrics.listen` (DOCKET_METRICS__LISTEN) must be host:port or off, not {a:?}"
                )
            }),
        }
    }
}

/// Built-in TLS (`src/http/tls.rs`). Off unless both files are given.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Seconds between checks of the two files for a new certificate (SIGHUP checks at once).
    #[serde(default = "default_tls_reload")]
    pub reload_interval_secs: u64,
    /// Also listen here for plain HTTP, answering every request with a 308 to HTTPS.
    #[serde(default)]
    pub redirect_http_listen: Option<SocketAddr>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            reload_interval_secs: default_tls_reload(),
            redirect_http_listen: None,
        }
    }
}

impl TlsConfig {
    /// Whether docket terminates TLS itself.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }
}

fn default_tls_reload() -> u64 {
    10
}

/// The sweep that removes what failed filings leave behind.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Minutes between sweeps (the first runs at start-up); 0 turns the schedule off.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval_minutes: u64,
    /// Only files older than this are swept (at least 5, longer than any request).
    #[serde(default = "default_sweep_grace")]
    pub sweep_grace_minutes: u64,
    /// Minutes between runs of the purge of terminated tenants whose purge date has come
    /// (the first at start-up); 0 turns the schedule off (`docket tenant purge-due` still
    /// works).
    #[serde(default = "default_purge_interval")]
    pub purge_interval_minutes: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            sweep_interval_minutes: default_sweep_interval(),
            sweep_grace_minutes: default_sweep_grace(),
            purge_interval_minutes: default_purge_interval(),
        }
    }
}

fn default_sweep_interval() -> u64 {
    60
}
fn default_purge_interval() -> u64 {
    60
}
fn default_sweep_grace() -> u64 {
    60
}

/// The shortest grace period: well beyond the 2-minute request timeout.
pub const MIN_SWEEP_GRACE_MINUTES: u64 = 5;

/// The admin console and admin API: sessions, sign-in protection, proxies.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A session unused for this long ends.
    #[serde(default = "default_idle_minutes")]
    pub session_idle_minutes: u64,
    /// A session ends this long after sign-in, however active.
    #[serde(default = "default_absolute_hours")]
    pub session_absolute_hours: u64,
    /// Mark cookies `Secure` (and name them `__Host-`). Default: when TLS is on (`tls.*`) or
    /// `addon.public_url` is https.
    #[serde(default)]
    pub secure_cookies: Option<bool>,
    /// Send `Strict-Transport-Security` (TLS deployments). Default: same as secure cookies.
    #[serde(default)]
    pub hsts: Option<bool>,
    /// Reverse proxies (IPs or CIDRs, a list or comma-separated) whose `X-Forwarded-For` is
    /// believed.
    #[serde(default, deserialize_with = "net_list")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Failed sign-ins from one IP within `throttle_window_minutes` before it is refused (429).
    #[serde(default = "default_throttle_failures")]
    pub throttle_failures_per_ip: u32,
    #[serde(default = "default_throttle_window")]
    pub throttle_window_minutes: u64,
    /// Lifetime of an admin-issued password (re)set link.
    #[serde(default = "default_reset_minutes")]
    pub reset_link_minutes: u64,
    /// Days between tenant termination and the purge of its data.
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            session_idle_minutes: default_idle_minutes(),
            session_absolute_hours: default_absolute_hours(),
            secure_cookies: None,
            hsts: None,
            trusted_proxies: Vec::new(),
            throttle_failures_per_ip: default_throttle_failures(),
            throttle_window_minutes: default_throttle_window(),
            reset_link_minutes: default_reset_minutes(),
            retention_days: default_retention_days(),
        }
    }
}

fn default_idle_minutes() -> u64 {
    30
}
fn default_absolute_hours() -> u64 {
    12
}
fn default_throttle_failures() -> u32 {
    10
}
fn default_throttle_window() -> u64 {
    15
}
fn default_reset_minutes() -> u64 {
    30
}
fn default_retention_days() -> u64 {
    90
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user@host:port/catalogue`; absent = SQLite under the data dir.
    #[serde(default)]
    pub url: Option<String>,
    /// Upper bound of connections in each tenant's pool.
    #[serde(default = "default_tenant_pool")]
    pub max_connections_per_tenant: u32,
    /// SQLite only: after a commit leaves the write-ahead log at least this many pages
    /// (4 KiB each) long, SQLite copies it back into the database file (a checkpoint).
    /// SQLite's default, 1000, bounds the log near 4 MiB; a checkpoint that fails is retried
    /// at the next commit and loses nothing (the log keeps every committed page).
    #[serde(default = "default_wal_autocheckpoint")]
    pub sqlite_wal_autocheckpoint_pages: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    /// JWKS used to verify ID tokens; default Google's (in `dev`: docket's own dev issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Accepted `aud` values: the OAuth client id(s) of the add-on deployment / Apps Script.
    #[serde(default, deserialize_with = "string_list")]
    pub client_ids: Vec<String>,
    /// Accepted `iss` values; default Google's two spellings.
    #[serde(
        default,
        deserialize_with = "opt_string_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub issuers: Option<Vec<String>>,
    /// Clock leeway for `exp`/`nbf`, seconds (at most 60).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

/// The HTTP-runtime Gmail add-on deployment (`gcloud workspace-add-ons get-authorization`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddonConfig {
    /// docket's public base URL, e.g. `https://docket.example.com`: card actions point here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// `serviceAccountEmail`: the `email` of the system ID tokens Google sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// `oauthClientId`: the `aud` of the user ID tokens in the event objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_client_id: Option<String>,
    /// Accepted `aud` of system ID tokens; empty = the URL of the endpoint called
    /// (`public_url` + path, with or without the query string).
    #[serde(default, deserialize_with = "string_list")]
    pub endpoint_audiences: Vec<String>,
    /// Gmail API base URL (tests and `dev` point it at a fake).
    #[serde(default = "default_gmail_api")]
    pub gmail_api_url: String,
    /// Gmail API timeout, seconds.
    #[serde(default = "default_gmail_timeout")]
    pub gmail_timeout_secs: u64,
}

impl Default for AddonConfig {
    fn default() -> Self {
        AddonConfig {
            public_url: None,
            service_account: None,
            oauth_client_id: None,
            endpoint_audiences: Vec::new(),
            gmail_api_url: default_gmail_api(),
            gmail_timeout_secs: default_gmail_timeout(),
        }
    }
}

fn default_gmail_api() -> String {
    "https://gmail.googleapis.com/".into()
}
fn default_gmail_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted message (decoded RFC 822 bytes).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Most MIME parts in one message (nested messages included).
    #[serde(default = "default_max_parts")]
    pub max_parts: usize,
    /// Deepest MIME nesting.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Largest header block of a message, in bytes (the raw message keeps everything; each
    /// header's display form is cut at 2,000 characters).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Bytes that requests carrying a message may hold in memory at once (each reserves
    /// `budget::COST_FACTOR` (2) × its body); over it, 503 `busy` with `Retry-After`.
    #[serde(default = "default_max_bytes_in_flight")]
    pub max_bytes_in_flight: usize,
    /// Seconds a request carrying a message has to send its whole body (408 after).
    #[serde(default = "default_body_read_timeout_secs")]
    pub body_read_timeout_secs: u64,
    /// Seconds a client has to send a whole request head once a connection is open or idle
    /// (408 problem+json when a head was begun; an idle keep-alive connection just closes).
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// Seconds a client may take nothing of an answer that is waiting for it before the
    /// connection is closed (a download nobody reads holds its memory until then).
    #[serde(default = "default_send_stall_timeout_secs")]
    pub send_stall_timeout_secs: u64,
    /// Most client connections open at once; further ones wait in the listen backlog until
    /// one closes. A plain-HTTP connection holds two file descriptors.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// EnvFilter directive; `RUST_LOG` wins when set.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: default_max_message(),
            max_parts: default_max_parts(),
            max_depth: default_max_depth(),
            max_header_bytes: default_max_header_bytes(),
            max_bytes_in_flight: default_max_bytes_in_flight(),
            body_read_timeout_secs: default_body_read_timeout_secs(),
            header_read_timeout_secs: default_header_read_timeout_secs(),
            send_stall_timeout_secs: default_send_stall_timeout_secs(),
            max_connections: default_max_connections(),
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            filter: default_log_filter(),
        }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("static address")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_tenant_pool() -> u32 {
    8
}
fn default_wal_autocheckpoint() -> u32 {
    1000
}
fn default_leeway() -> u64 {
    60
}
fn default_max_message() -> usize {
    50 * 1024 * 1024
}
fn default_max_parts() -> usize {
    1000
}
fn default_max_depth() -> usize {
    32
}
fn default_max_header_bytes() -> usize {
    1024 * 1024
}
fn default_max_bytes_in_flight() -> usize {
    1024 * 1024 * 1024
}
fn default_body_read_timeout_secs() -> u64 {
    60
}
fn default_send_stall_timeout_secs() -> u64 {
    60
}
fn default_header_read_timeout_secs() -> u64 {
    30
}
/// Most `limits.max_connections` accepted (a connection holds two file descriptors).
pub const MAX_CONNECTIONS_CEILING: usize = 1_000_000;

fn default_max_connections() -> usize {
    1024
}
fn default_log_format() -> String {
    "text".into()
}
fn default_log_filter() -> String {
    "info".into()
}

/// Accepts `"a,b"`, `["a","b"]` or a bare number (env values that look numeric).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Num(u64),
    Many(Vec<String>),
}

fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(OneOrMany::deserialize(d)?.into_list())
}
fn net_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    OneOrMany::deserialize(d)?
        .into_list()
        .iter()
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!("{p:?} is not an IP address or CIDR"))
                })
        })
        .collect()
}
fn opt_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Option::<OneOrMany>::deserialize(d)?.map(OneOrMany::into_list))
}

impl OneOrMany {
    fn into_list(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            OneOrMany::Num(n) => vec![n.to_string()],
            OneOrMany::Many(v) => v,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            data_dir: default_data_dir(),
            database: DatabaseConfig {
                url: None,
                max_connections_per_tenant: default_tenant_pool(),
                sqlite_wal_autocheckpoint_pages: default_wal_autocheckpoint(),
            },
            master_key: None,
            master_key_file: None,
            google: GoogleConfig {
                leeway_secs: default_leeway(),
                ..Default::default()
            },
            limits: Limits::default(),
            storage: StorageConfig::default(),
            addon: AddonConfig::default(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            maintenance: MaintenanceConfig::default(),
            tls: TlsConfig::default(),
            metrics: MetricsConfig::default(),
            filing: FilingConfig::default(),
        }
    }
}

impl Config {
    /// Layers defaults, the optional TOML file and `DOCKET_*` variables, then checks the result.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        // `DOCKET_CONFIG` names the file itself (clap reads it for `--config`); not a key.
        fig = fig.merge(Env::prefixed("DOCKET_").ignore(&["config"]).split("__"));
        let cfg: Config = fig.extract().map_err(|e| {
            let mut msgs = Vec::new();
            for err in e {
                let key = err.path.join(".");
                let source = err
                    .metadata
                    .as_ref()
                    .map(|m| m.name.to_string())
                    .unwrap_or_default();
                msgs.push(format!("`{key}` ({source}): {}", err.kind));
            }
            anyhow::anyhow!("invalid configuration: {}", msgs.join("; "))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.database.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bail!("invalid configuration: `database.url` (DOCKET_DATABASE__URL) must be a postgres:// URL; leave it unset for SQLite");
            }
        }
        if self.google.leeway_secs > 60 {
            bail!("invalid configuration: `google.leeway_secs` must be at most 60");
        }
        if self.limits.max_message_bytes == 0
            || self.limits.max_parts == 0
            || self.limits.max_depth == 0
            || self.limits.max_header_bytes == 0
            || self.limits.max_bytes_in_flight == 0
            || self.limits.body_read_timeout_secs == 0
            || self.limits.header_read_timeout_secs == 0
            || self.limits.send_stall_timeout_secs == 0
            || self.limits.max_connections == 0
        {
            bail!("invalid configuration: `limits.*` must be positive");
        }
        if self.limits.max_connections > MAX_CONNECTIONS_CEILING {
            bail!("invalid configuration: `limits.max_connections` may be at most {MAX_CONNECTIONS_CEILING}");
        }
        let ceiling = crate::mail::guard::MAX_PARTS_CEILING;
        if self.limits.max_parts > ceiling || self.limits.max_depth > ceiling {
            bail!("invalid configuration: `limits.max_parts` and `limits.max_depth` may be at most {ceiling}");
        }
        let a = &self.admin;
        if a.session_idle_minutes == 0 || a.session_absolute_hours == 0 {
            bail!("invalid configuration: `admin.session_idle_minutes` and `admin.session_absolute_hours` must be positive");
        }
        if a.throttle_failures_per_ip < 3 || a.throttle_window_minutes == 0 {
            bail!("invalid configuration: `admin.throttle_failures_per_ip` must be at least 3 and `admin.throttle_window_minutes` positive");
        }
        if a.reset_link_minutes == 0 || a.reset_link_minutes > 24 * 60 {
            bail!("invalid configuration: `admin.reset_link_minutes` must be 1..=1440");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            bail!("invalid configuration: `tls.cert_file` and `tls.key_file` (DOCKET_TLS__CERT_FILE, DOCKET_TLS__KEY_FILE) go together");
        }
        self.metrics.address()?;
        if self.tls.reload_interval_secs == 0 {
            bail!("invalid configuration: `tls.reload_interval_secs` must be positive");
        }
        if self.tls.redirect_http_listen.is_some() && !self.tls.enabled() {
            bail!("invalid configuration: `tls.redirect_http_listen` needs `tls.cert_file` and `tls.key_file`");
        }
        if self.storage.backend == StorageBackend::S3 {
            let s3 = &self.storage.s3;
            if s3.bucket.as_deref().is_none_or(|b| b.trim().is_empty()) {
                bail!("invalid configuration: `storage.backend = \"s3\"` needs `storage.s3.bucket` (DOCKET_STORAGE__S3__BUCKET)");
            }
            if s3.timeout_secs == 0 {
                bail!("invalid configuration: `storage.s3.timeout_secs` must be positive");
            }
            s3.check()?;
        }
        if self.admin.retention_days > 36_500 {
            bail!(
                "invalid configuration: `admin.retention_days` must be at most 36500 (100 years)"
            );
        }
        if self.filing.undo_grace_minutes > MAX_UNDO_GRACE_MINUTES {
            bail!("invalid configuration: `filing.undo_grace_minutes` must be at most {MAX_UNDO_GRACE_MINUTES} (a day)");
        }
        if self.maintenance.sweep_grace_minutes < MIN_SWEEP_GRACE_MINUTES {
            bail!("invalid configuration: `maintenance.sweep_grace_minutes` must be at least {MIN_SWEEP_GRACE_MINUTES}");
        }
        if let Some(u) = &self.google.jwks_url {
            if !(u.starts_with("https://")
                || u.starts_with("http://127.")
                || u.starts_with("http://localhost")
                || u.starts_with("http://[::1]"))
            {
                bail!("invalid configuration: `google.jwks_url` must be https (plain http only on loopback)");
            }
        }
        Ok(())
    }

    /// The key-encryption key, from `master_key` or `master_key_file`.
    pub fn master_key_bytes(&self) -> anyhow::Result<Option<[u8; 32]>> {
        if let Some(k) = &self.master_key {
            return parse_master_key(k.expose_secret())
                .context("invalid configuration: `master_key` (DOCKET_MASTER_KEY)")
                .map(Some);
        }
        if let Some(path) = &self.master_key_file {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "invalid configuration: `master_key_file` (DOCKET_MASTER_KEY_FILE): cannot read {}",
                    path.display()
                )
            })?;
            return parse_master_key(text.trim())
                .context("invalid configuration: `master_key_file` (DOCKET_MASTER_KEY_FILE)")
                .map(Some);
        }
        Ok(None)
    }

    /// Whether cookies are `Secure`: explicit, else when docket serves TLS itself or the
    /// public URL is https.
    pub fn secure_cookies(&self) -> bool {
        self.admin.secure_cookies.unwrap_or_else(|| {
            self.tls.enabled()
                || self
                    .addon
                    .public_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://"))
        })
    }

    pub fn hsts(&self) -> bool {
        self.admin.hsts.unwrap_or_else(|| self.secure_cookies())
    }

    pub fn issuers(&self) -> Vec<String> {
        self.google
            .issuers
            .clone()
            .unwrap_or_else(|| GOOGLE_ISSUERS.iter().map(|s| s.to_string()).collect())
    }
}

pub fn parse_master_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text)?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| anyhow::anyhow!("expected 32 bytes as 64 hex characters or base64"))?
    };
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("expected 32 bytes as 64 hex characters or base64"))
}

#[cfg(test)]
mod admin_tests {
    use super::*;
    use figment::providers::Serialized;
    use figment::Figment;

    #[test]
    fn trusted_proxies_take_a_comma_separated_string_or_a_list() {
        let c: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(("admin.trusted_proxies", "10.0.0.0/8, 192.0.2.1"))
            .extract()
            .unwrap();
        let shown: Vec<String> = c
            .admin
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.1/32"]);
        let c: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(("admin.trusted_proxies", vec!["::1"]))
            .extract()
            .unwrap();
        assert_eq!(c.admin.trusted_proxies[0].to_string(), "::1/128");
        let bad = Figment::from(Serialized::defaults(Config::default()))
            .merge(("admin.trusted_proxies", "proxy.example"))
            .extract::<Config>();
        assert!(bad.unwrap_err().to_string().contains("not an IP address"));
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;

    fn s3(tweak: impl FnOnce(&mut S3Config)) -> anyhow::Result<()> {
        let mut c = Config::default();
        c.storage.backend = StorageBackend::S3;
        c.storage.s3.bucket = Some("docket".into());
        tweak(&mut c.storage.s3);
        c.validate()
    }

    #[test]
    fn s3_mistakes_are_refused_at_startup_naming_the_key() {
        assert!(s3(|_| {}).is_ok());
        assert!(s3(|c| c.endpoint = Some("https://s3.example.net".into())).is_ok());
        let err = |t: fn(&mut S3Config)| s3(t).unwrap_err().to_string();
        assert!(err(|c| c.bucket = None).contains("storage.s3.bucket"));
        assert!(err(|c| c.endpoint = Some("not a url".into())).contains("not a URL"));
        assert!(err(|c| c.endpoint = Some("ftp://h".into())).contains("http(s)"));
        assert!(err(|c| c.endpoint = Some("http://127.0.0.1:9000".into())).contains("allow_http"));
        assert!(s3(|c| {
            c.endpoint = Some("http://127.0.0.1:9000".into());
            c.allow_http = true;
        })
        .is_ok());
        assert!(err(|c| c.prefix = Some("../evil".into())).contains("prefix"));
        assert!(err(|c| c.prefix = Some("a b".into())).contains("prefix"));
        assert!(s3(|c| c.prefix = Some("/prod/docket-1/".into())).is_ok());
        assert!(err(|c| {
            c.secret_access_key = Some("x".to_string().into());
            c.secret_access_key_file = Some("/etc/hostname".into());
        })
        .contains("not both"));
        assert!(err(|c| c.timeout_secs = 0).contains("storage.s3.timeout_secs"));
        assert!(err(|c| c.timeout_secs = 121).contains("storage.s3.timeout_secs"));
        assert!(s3(|c| c.timeout_secs = 120).is_ok());
    }
}
