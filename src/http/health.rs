use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::error::AppError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
}

/// Ready when the catalogue answers.
async fn ready(State(state): State<AppState>) -> Result<&'static str, AppError> {
    state.catalog.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "the catalogue database is not reachable",
        )
    })?;
    Ok("ready")
}
