use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::error::AppError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .route("/static/docket-logo.png", get(logo))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")),
    security(()), tag = "operations")]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// The add-on's logo (`logoUrl` in `addon/http/deployment.json` and the Apps Script
/// manifest): 96 × 96 PNG, cacheable for a day.
async fn logo() -> impl axum::response::IntoResponse {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_bytes!("../../static/docket-logo.png").as_slice(),
    )
}

/// Ready when the catalogue answers and, on SQLite, every open tenant's database takes
/// writes (probed with a real commit only when its last write failed or is not known to
/// have succeeded): there they share this machine's disk.
///
/// On PostgreSQL one tenant's database failing is not this process's fault: every replica
/// sees the same, and taking them all out of the load balancer would stop every firm for
/// one. It shows in `docket_unwritable_tenant_databases` and its alert instead.
#[utoipa::path(get, path = "/readyz",
    responses((status = 200, description = "`ready`", body = String, content_type = "text/plain"),
        (status = 503, description = "`not-ready`: the catalogue does not answer, or (SQLite) a tenant database does not take writes")),
    security(()), tag = "operations")]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<&'static str, AppError> {
    state.catalog.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "the catalogue database is not reachable",
        )
    })?;
    if state.catalog.backend() == crate::tenancy::db::Backend::Postgres {
        return Ok("ready");
    }
    let mut failing = Vec::new();
    for tenant in state.catalog.open_tenants().await {
        if let Err(why) = tenant.check_writable().await {
            failing.push(format!("tenant {}: {why}", tenant.id));
        }
    }
    if !failing.is_empty() {
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!(
                "a tenant database cannot be written: {}",
                failing.join("; ")
            ),
        ));
    }
    Ok("ready")
}
