//! Dev-only routes (`docket dev`, loopback only): the dev issuer's JWKS and a token minter.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::ApiJson;
use super::AppState;
use crate::error::{AppError, AppResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dev/jwks.json", get(jwks))
        .route("/dev/token", post(token))
}

fn issuer(state: &AppState) -> AppResult<&crate::dev::TokenIssuer> {
    state
        .dev
        .as_deref()
        .ok_or_else(|| AppError::not_found("no such endpoint"))
}

async fn jwks(State(state): State<AppState>) -> AppResult<Response> {
    let mut resp = Json(issuer(&state)?.jwks()).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    email: String,
    #[serde(default)]
    audience: Option<String>,
}

async fn token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> AppResult<Json<serde_json::Value>> {
    let iss = issuer(&state)?;
    let aud = req
        .audience
        .or_else(|| state.config.google.client_ids.first().cloned())
        .unwrap_or_default();
    Ok(Json(
        serde_json::json!({ "token": iss.user_token(&req.email, &aud, 12 * 3600) }),
    ))
}
