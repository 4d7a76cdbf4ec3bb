//! The HTTP surface: one module per resource, each with its `router()`, merged here.

pub mod addon;
pub mod admin;
pub mod console;
pub mod dev;
pub mod extract;
pub mod filings;
pub mod health;
pub mod intake;
pub mod serve;
pub mod tls;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::google::GoogleVerifier;
use crate::config::Config;
use crate::dev::DevRuntime;
use crate::error::AppError;
use crate::tenancy::Catalog;

#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

pub struct StateInner {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub verifier: GoogleVerifier,
    /// Reads the open message for the HTTP-runtime add-on.
    pub gmail: crate::gmail::GmailClient,
    /// Bytes of messages in memory (`limits.max_bytes_in_flight`), shared by every route
    /// that holds one and by the Gmail reads.
    pub budget: crate::budget::Budget,
    /// Present only in `docket dev`.
    pub dev: Option<Arc<DevRuntime>>,
}

impl std::ops::Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: StateInner) -> Self {
        AppState(Arc::new(inner))
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    // base64 inflates by 4/3; leave room for the JSON around it.
    let body_limit = state.config.limits.max_message_bytes / 3 * 4 + 1024 * 1024;
    let intake = intake::Intake::new(&state.config.limits, state.budget.clone(), body_limit);
    let mut app = Router::new()
        .merge(health::router())
        .merge(addon::router(body_limit, intake.clone()))
        .merge(view::router())
        .merge(admin::router())
        .merge(console::router())
        .merge(filings::router(intake.clone()).layer(DefaultBodyLimit::max(body_limit)))
        // For the routes that hold their share through `intake::within_budget`.
        .layer(axum::Extension(intake));
    if state.dev.is_some() {
        app = app.merge(dev::router());
    }
    let hsts = state.config.hsts();
    let dev_hosts = state.dev.as_ref().map(|d| Arc::new(d.hosts.clone()));
    let mut app = app
        .fallback(|| async { AppError::not_found("no such endpoint") })
        .with_state(state);
    if let Some(hosts) = dev_hosts {
        app = app.layer(axum::middleware::from_fn(move |req, next| {
            dev::only_own_hosts(hosts.clone(), req, next)
        }));
    }
    let app = app
        // A panic anywhere in a handler is a logged 500 problem, never a dropped connection.
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            use axum::response::IntoResponse;
            AppError::internal(anyhow::anyhow!("request handler panicked")).into_response()
        }))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, Duration::from_secs(120)))
        // Outside the timeout: its 408, axum's 405 and bare rejections become problem+json.
        .layer(axum::middleware::from_fn(crate::error::problem_for_bare_errors))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
            let rid = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), route = %route, request_id = %rid)
        }).on_failure(log_failure))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
    if hsts {
        app.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ))
    } else {
        app
    }
}

/// How an answer that failed is logged. A 503 means docket shed load (`busy`) or a
/// dependency is briefly away, and the client was told when to retry: WARN, so that a burst
/// of refusals does not read as a fault (`docket_busy_refusals_total` and
/// `docket_http_requests_total{status="503"}` count them). Any other 5xx, or a failed body:
/// ERROR.
fn log_failure(class: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    let latency_ms = latency.as_millis() as u64;
    match class {
        ServerErrorsFailureClass::StatusCode(s) if s == 503 => {
            tracing::warn!(status = 503, latency_ms, "answered 503: try again later")
        }
        other => tracing::error!(classification = %other, latency_ms, "response failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Log lines written while `f` runs, as text.
    fn logged(f: impl FnOnce()) -> String {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buf = buf.clone();
            move || LogSink(buf.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct LogSink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for LogSink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_503_is_a_warning_and_other_5xx_are_errors() {
        let span = tracing::Span::none();
        let ms = Duration::from_millis(3);
        let busy = logged(|| {
            log_failure(
                ServerErrorsFailureClass::StatusCode(503.try_into().unwrap()),
                ms,
                &span,
            )
        });
        assert!(busy.contains("WARN") && busy.contains("503"), "{busy}");
        assert!(!busy.contains("ERROR"), "{busy}");
        for class in [
            ServerErrorsFailureClass::StatusCode(500.try_into().unwrap()),
            ServerErrorsFailureClass::Error("body stream failed".into()),
        ] {
            let out = logged(|| log_failure(class, ms, &span));
            assert!(out.contains("ERROR"), "{out}");
        }
    }
}
