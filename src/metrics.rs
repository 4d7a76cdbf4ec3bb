//! Metrics in the Prometheus text format (OpenMetrics 1.0, served as
//! `application/openmetrics-text; version=1.0.0`) at `GET /metrics` on a listener of their
//! own (`metrics.listen`), never on the public one: operators scrape it from inside.
//!
//! No label names a customer: routes are route templates (`/v1/filings/{id}`), and nothing
//! carries a tenant id, name or domain, a user, or an address. The counters are one set per
//! process (a scrape of each replica gives its own), kept in [`global`] so that deep parts
//! (storage, token verification, sign-in) count without being handed a registry.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `docket_http_requests_total` | `route`, `method`, `status` | answers, by matched route |
//! | `docket_http_request_duration_seconds` | `route`, `method` | time to the answer's head |
//! | `docket_filings_total` | `outcome` (`new`, `duplicate`, `refused`, `failed`), `client` (`addon_card`, `apps_script`, `api`, `rules`) | filings asked for of this server (`docket file` runs in a process of its own and is not counted) |
//! | `docket_parse_rejections_total` | `reason` (the problem type) | messages refused by the parse path |
//! | `docket_blob_bytes_written_total` | — | bytes of sealed blobs written |
//! | `docket_token_verification_failures_total` | `reason` | Google ID tokens refused |
//! | `docket_signin_failures_total` | `reason` | failed console/API sign-ins (passwords, codes) |
//! | `docket_lockouts_total` | — | accounts suspended after repeated failures |
//! | `docket_signin_throttles_total` | — | sign-ins refused by the per-IP throttle |
//! | `docket_busy_refusals_total` | — | requests refused because the message budget was taken |
//! | `docket_message_budget_bytes` | `state` (`in_use`, `free`) | the message budget (`limits.max_bytes_in_flight`) |
//! | `docket_db_connections` | `state` (`in_use`, `idle`) | database pool connections, catalogue and open tenants together |
//! | `docket_open_tenants` | — | tenants whose database is open in this process |
//! | `docket_unwritable_tenant_databases` | — | open tenants whose database does not take a write (a full disk, a read-only file, a refusing server): probed at each scrape with a small real commit, only where the last write failed or is not known to have succeeded |
//! | `docket_backup_last_success_timestamp_seconds` | `kind` (`create`, `verify`) | the oldest, over active tenants, of each one's last successful backup (or backup check): Unix seconds, 0 when one never had any. Read from the catalogue, so every replica reports the runs of `docket backup` wherever it ran |
//! | `docket_backup_failing_tenants` | `kind` | active tenants whose latest backup (or check) failed |

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::AppError;
use crate::filing::FilingOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilingLabels {
    pub outcome: &'static str,
    pub client: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Who asked for a filing.
#[derive(Clone, Copy, Debug)]
pub enum Client {
    /// The HTTP-runtime add-on's card ("File", "File whole thread").
    AddonCard,
    /// The classic Apps Script add-on (`POST /v1/filings` from `UrlFetchApp`).
    AppsScript,
    /// Any other caller of `POST /v1/filings`.
    Api,
}

impl Client {
    /// A caller of `POST /v1/filings`, told by its `User-Agent`: Apps Script's `UrlFetchApp`
    /// sends `Google-Apps-Script`.
    pub fn of_api_caller(headers: &axum::http::HeaderMap) -> Client {
        let ua = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match ua.contains("Google-Apps-Script") {
            true => Client::AppsScript,
            false => Client::Api,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Client::AddonCard => "addon_card",
            Client::AppsScript => "apps_script",
            Client::Api => "api",
        }
    }
}

/// Every metric docket keeps (module docs).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    filings: Family<FilingLabels, Counter>,
    parse_rejections: Family<ReasonLabels, Counter>,
    blob_bytes: Counter,
    token_failures: Family<ReasonLabels, Counter>,
    signin_failures: Family<ReasonLabels, Counter>,
    lockouts: Counter,
    throttles: Counter,
    busy: Counter,
    budget: Family<StateLabels, Gauge>,
    connections: Family<StateLabels, Gauge>,
    open_tenants: Gauge,
    backup_last_success: Family<KindLabels, Gauge>,
    backup_failing: Family<KindLabels, Gauge>,
    unwritable: Gauge,
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 20 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("docket");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            filings: Family::default(),
            parse_rejections: Family::default(),
            blob_bytes: Counter::default(),
            token_failures: Family::default(),
            signin_failures: Family::default(),
            lockouts: Counter::default(),
            throttles: Counter::default(),
            busy: Counter::default(),
            budget: Family::default(),
            connections: Family::default(),
            open_tenants: Gauge::default(),
            backup_last_success: Family::default(),
            unwritable: Gauge::default(),
            backup_failing: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP answers by matched route",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time from a request to its answer's head, by matched route",
            m.latency.clone(),
        );
        r.register(
            "filings",
            "Filings asked for, by outcome and client",
            m.filings.clone(),
        );
        r.register(
            "parse_rejections",
            "Messages refused by the parse path, by problem type",
            m.parse_rejections.clone(),
        );
        r.register(
            "blob_bytes_written",
            "Bytes of sealed blobs written",
            m.blob_bytes.clone(),
        );
        r.register(
            "token_verification_failures",
            "Google ID tokens refused, by reason",
            m.token_failures.clone(),
        );
        r.register(
            "signin_failures",
            "Failed sign-ins, by reason",
            m.signin_failures.clone(),
        );
        r.register(
            "lockouts",
            "Accounts suspended after repeated failures",
            m.lockouts.clone(),
        );
        r.register(
            "signin_throttles",
            "Sign-ins refused by the per-IP throttle",
            m.throttles.clone(),
        );
        r.register(
            "busy_refusals",
            "Requests refused because the message budget was taken",
            m.busy.clone(),
        );
        r.register(
            "message_budget_bytes",
            "The message budget",
            m.budget.clone(),
        );
        r.register(
            "db_connections",
            "Database pool connections",
            m.connections.clone(),
        );
        r.register(
            "open_tenants",
            "Tenants open in this process",
            m.open_tenants.clone(),
        );
        r.register(
            "unwritable_tenant_databases",
            "Open tenants whose last commit or write probe failed",
            m.unwritable.clone(),
        );
        r.register(
            "backup_last_success_timestamp_seconds",
            "Oldest last successful backup (or check) over active tenants, Unix seconds",
            m.backup_last_success.clone(),
        );
        r.register(
            "backup_failing_tenants",
            "Active tenants whose latest backup (or check) failed",
            m.backup_failing.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The whole registry in the text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// One filing's outcome; the rules' filings it carried count with client `rules`.
    pub fn filed(&self, client: Client, result: Result<&FilingOutcome, &AppError>) {
        let outcome = match result {
            Ok(o) if o.filings.iter().any(|f| f.created == Some(true)) => "new",
            Ok(_) => "duplicate",
            Err(e) if e.status().is_client_error() => "refused",
            Err(_) => "failed",
        };
        self.filing(outcome, client.label());
        for auto in result.map(|o| o.auto_filed.as_slice()).unwrap_or_default() {
            self.filing(if auto.created { "new" } else { "duplicate" }, "rules");
        }
    }

    fn filing(&self, outcome: &'static str, client: &'static str) {
        self.filings
            .get_or_create(&FilingLabels { outcome, client })
            .inc();
    }

    pub fn parse_rejected(&self, e: &AppError) {
        let reason = e.slug();
        self.parse_rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn blob_written(&self, bytes: u64) {
        self.blob_bytes.inc_by(bytes);
    }

    pub fn token_refused(&self, reason: &'static str) {
        self.token_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn signin_failed(&self, reason: &'static str, locked: bool) {
        self.signin_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
        if locked {
            self.lockouts.inc();
        }
    }

    pub fn signin_throttled(&self) {
        self.throttles.inc();
    }

    pub fn busy_refused(&self) {
        self.busy.inc();
    }

    /// Gauges read at scrape time.
    pub fn set_budget(&self, total: u64, free: u64) {
        let set = |state, v: u64| {
            self.budget
                .get_or_create(&StateLabels { state })
                .set(v as i64)
        };
        set("in_use", total.saturating_sub(free));
        set("free", free);
    }

    pub fn set_connections(&self, in_use: u64, idle: u64, open_tenants: u64) {
        let set = |state, v: u64| {
            self.connections
                .get_or_create(&StateLabels { state })
                .set(v as i64)
        };
        set("in_use", in_use);
        set("idle", idle);
        self.open_tenants.set(open_tenants as i64);
    }
}

impl Metrics {
    /// Backup gauges from the catalogue's backup state (active tenants only).
    pub fn set_backups(&self, tenants: &[crate::backup::Status]) {
        let active: Vec<_> = tenants
            .iter()
            .filter(|t| t.tenant_status == "active")
            .collect();
        let unix = |at: &Option<String>| {
            at.as_deref()
                .and_then(|a| {
                    time::OffsetDateTime::parse(a, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map_or(0, |t| t.unix_timestamp())
        };
        for kind in ["create", "verify"] {
            let (last, failing): (Vec<i64>, usize) = match kind {
                "create" => (
                    active.iter().map(|t| unix(&t.last_backup)).collect(),
                    active.iter().filter(|t| t.backup_failing).count(),
                ),
                _ => (
                    active.iter().map(|t| unix(&t.last_verify)).collect(),
                    active.iter().filter(|t| t.verify_failing).count(),
                ),
            };
            let labels = KindLabels { kind };
            self.backup_last_success
                .get_or_create(&labels)
                .set(last.into_iter().min().unwrap_or(0));
            self.backup_failing
                .get_or_create(&labels)
                .set(failing as i64);
        }
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Middleware: counts and times every answer by its matched route (`unmatched` when no
/// route matched: the path itself is never a label).
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    // Any token is a method: only the standard ones become labels.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let start = Instant::now();
    let answer = next.run(req).await;
    let m = global();
    m.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: answer.status().as_u16(),
        })
        .inc();
    answer
}

/// Serves `GET /metrics` on `listener` until `shutdown`; gauges are read at each scrape.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: crate::http::AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header;
    use axum::routing::get;
    let scrape = move || {
        let state = state.clone();
        async move {
            refresh_gauges(&state).await;
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                global().encode(),
            )
        }
    };
    let app = axum::Router::new().route("/metrics", get(scrape));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// How long a scrape waits for one tenant's write probe.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn refresh_gauges(state: &crate::http::AppState) {
    let m = global();
    let total = state.config.limits.max_bytes_in_flight as u64;
    let free = state.budget.available_kib() as u64 * 1024;
    m.set_budget(total, free.min(total));
    let tenants = state.catalog.open_tenants().await;
    let pools = std::iter::once(state.catalog.pool()).chain(tenants.iter().map(|t| &t.db));
    let (mut in_use, mut idle) = (0u64, 0u64);
    for pool in pools {
        let (size, free) = (pool.size() as u64, pool.num_idle() as u64);
        in_use += size.saturating_sub(free);
        idle += free;
    }
    m.set_connections(in_use, idle, tenants.len() as u64);
    // Active tenants only (a suspended one may be being restored), probed with a real
    // commit only where the last write failed or is not known to have succeeded (as
    // `/readyz` does on SQLite), all at once: a probe that hangs counts as failing.
    let probes = tenants
        .iter()
        .filter(|t| t.is_active())
        .map(|t| async move {
            let probe = tokio::time::timeout(PROBE_TIMEOUT, t.check_writable()).await;
            !matches!(probe, Ok(Ok(())))
        });
    let failing = futures_util::future::join_all(probes).await;
    m.unwritable
        .set(failing.into_iter().filter(|f| *f).count() as i64);
    match crate::backup::status(&state.catalog).await {
        Ok(s) => m.set_backups(&s),
        Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot read the backup state"),
    }
}
