//! Dev-only routes (`docket dev`, loopback only): the dev issuer's JWKS and token minter, a
//! fake Gmail API over the dev mailbox, and the add-on simulator page.

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::extract::ApiJson;
use super::AppState;
use crate::dev::{dev_ids, dev_thread, DevRuntime};
use crate::error::{AppError, AppResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dev/jwks.json", get(jwks))
        .route("/dev/token", post(token))
        .route("/dev/addon", get(simulator))
        .route(
            "/dev/addon/messages",
            get(list_messages).post(upload_message),
        )
        .route("/dev/addon/session", post(session))
        .route("/dev/gmail/gmail/v1/users/me/messages/{id}", get(gmail_get))
        .route(
            "/dev/gmail/gmail/v1/users/me/labels",
            get(labels_list).post(labels_create),
        )
        .route(
            "/dev/gmail/gmail/v1/users/me/messages/{id}/modify",
            post(messages_modify),
        )
        .layer(DefaultBodyLimit::max(80 * 1024 * 1024))
}

/// `docket dev` answers only to its own names: a page a developer opens cannot reach it
/// through a DNS-rebound name (and so cannot mint tokens or read the demo data).
pub async fn only_own_hosts(
    hosts: std::sync::Arc<Vec<String>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    match host {
        Some(h) if hosts.contains(&h) => next.run(req).await,
        _ => AppError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown-host",
            format!(
                "docket dev answers only to {}: open it by that address",
                hosts.join(" or ")
            ),
        )
        .into_response(),
    }
}

fn dev(state: &AppState) -> AppResult<&DevRuntime> {
    state
        .dev
        .as_deref()
        .ok_or_else(|| AppError::not_found("no such endpoint"))
}

async fn jwks(State(state): State<AppState>) -> AppResult<Response> {
    let mut resp = Json(dev(&state)?.issuer.jwks()).into_response();
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
    let d = dev(&state)?;
    let aud = req
        .audience
        .or_else(|| state.config.google.client_ids.first().cloned())
        .unwrap_or_default();
    Ok(Json(
        json!({ "token": d.issuer.user_token(&req.email, &aud, 12 * 3600) }),
    ))
}

async fn simulator(State(state): State<AppState>) -> AppResult<Response> {
    dev(&state)?;
    let mut resp = Html(include_str!("simulator.html")).into_response();
    // The page runs inline script and style; nothing else.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"),
    );
    Ok(resp)
}

async fn list_messages(State(state): State<AppState>) -> AppResult<Json<serde_json::Value>> {
    let d = dev(&state)?;
    let mut out = Vec::new();
    for name in d.messages().map_err(AppError::internal)? {
        let raw = std::fs::read(d.mailbox.join(&name)).map_err(AppError::internal)?;
        let headers = mail_parser::MessageParser::default().parse_headers(&raw);
        let subject = headers
            .as_ref()
            .and_then(|m| m.subject())
            .unwrap_or("")
            .to_string();
        let from = headers
            .as_ref()
            .and_then(|m| m.from())
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or("")
            .to_string();
        let ids = dev_ids(&name);
        let labels = d.labels.lock().expect("labels").names_on(&ids.hex);
        out.push(json!({ "name": name, "subject": subject, "from": from, "gmail_id": ids.hex, "labels": labels }));
    }
    Ok(Json(json!({ "messages": out })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    name: String,
    raw: String,
}

async fn upload_message(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<Upload>,
) -> AppResult<Json<serde_json::Value>> {
    let d = dev(&state)?;
    let raw = super::filings::decode_raw(&req.raw, state.config.limits.max_message_bytes)?;
    let mut name = crate::mail::names::sanitize_display_name(&req.name, "upload.eml");
    if !name.ends_with(".eml") {
        name.push_str(".eml");
    }
    std::fs::write(d.mailbox.join(&name), raw).map_err(AppError::internal)?;
    Ok(Json(json!({ "name": name })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    email: String,
    message: String,
    /// The scopes the user granted (the simulator's check boxes); the fake Gmail API checks
    /// its label calls against them.
    #[serde(default)]
    scopes: Vec<String>,
}

/// Everything Google would put into an event for `message` opened by `email`.
async fn session(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SessionRequest>,
) -> AppResult<Json<serde_json::Value>> {
    let d = dev(&state)?;
    let names = d.messages().map_err(AppError::internal)?;
    if !names.contains(&req.message) {
        return Err(AppError::not_found(format!(
            "no message {:?} in the dev mailbox",
            req.message
        )));
    }
    let raw = std::fs::read(d.mailbox.join(&req.message)).map_err(AppError::internal)?;
    let msg = dev_ids(&req.message);
    let thread = dev_thread(&raw, &req.message);
    let (oauth, access) = d.grant(&msg.hex, req.scopes.clone());
    let a = &state.config.addon;
    let client_id = a.oauth_client_id.clone().unwrap_or_default();
    let audience = a.endpoint_audiences.first().cloned().unwrap_or_default();
    let now = jsonwebtoken::get_current_timestamp();
    let system = d.issuer.sign(&json!({
        "iss": d.issuer.issuer(), "aud": audience, "azp": "dev-addon", "sub": "dev-addon-system",
        "email": a.service_account, "email_verified": true, "iat": now, "exp": now + 3600,
    }));
    Ok(Json(json!({
        "system_id_token": system,
        "user_id_token": d.issuer.user_token(&req.email, &client_id, 3600),
        "user_oauth_token": oauth,
        "gmail": {
            "messageId": format!("msg-f:{}", msg.decimal),
            "threadId": format!("thread-f:{}", thread.decimal),
            "accessToken": access,
        },
        "endpoints": { "homepage": "/addon/homepage", "message": "/addon/message", "action": "/addon/action" },
    })))
}

/// The bearer token of a fake Gmail API call, checked for `gmail.modify`; else the status
/// and message Gmail answers with.
fn label_call<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
) -> Result<&'a DevRuntime, (u16, &'static str)> {
    let d = dev(state).map_err(|_| (404, "Not Found"))?;
    let oauth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match d.check_modify(oauth) {
        Ok(()) => Ok(d),
        Err(401) => Err((401, "Request had invalid authentication credentials.")),
        Err(s) => Err((s, "Request had insufficient authentication scopes.")),
    }
}

/// Fake `users.labels.list`.
async fn labels_list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let d = match label_call(&state, &headers) {
        Ok(d) => d,
        Err((status, message)) => return gmail_error(status, message),
    };
    let labels = d.labels.lock().expect("labels");
    let list: Vec<_> = labels
        .labels
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name, "type": "user"}))
        .collect();
    Json(json!({ "labels": list })).into_response()
}

/// Fake `users.labels.create`: 409 when the name exists, as Gmail answers.
async fn labels_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let d = match label_call(&state, &headers) {
        Ok(d) => d,
        Err((status, message)) => return gmail_error(status, message),
    };
    let Some(name) = body["name"].as_str().map(str::to_string) else {
        return gmail_error(400, "name is required");
    };
    let mut labels = d.labels.lock().expect("labels");
    if labels.labels.iter().any(|(_, n)| *n == name) {
        return gmail_error(409, "Label name exists or conflicts");
    }
    let id = format!("Label_{}", labels.labels.len() + 1);
    labels.labels.push((id.clone(), name.clone()));
    Json(json!({"id": id, "name": name})).into_response()
}

/// Fake `users.messages.modify` (label ids only).
async fn messages_modify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let d = match label_call(&state, &headers) {
        Ok(d) => d,
        Err((status, message)) => return gmail_error(status, message),
    };
    let ids = |k: &str| -> Vec<String> {
        body[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let (add, remove) = (ids("addLabelIds"), ids("removeLabelIds"));
    let mut labels = d.labels.lock().expect("labels");
    if add
        .iter()
        .any(|a| !labels.labels.iter().any(|(i, _)| i == a))
    {
        return gmail_error(400, "Invalid label");
    }
    let on = labels.on.entry(id.clone()).or_default();
    on.retain(|l| !remove.contains(l));
    for a in add {
        if !on.contains(&a) {
            on.push(a);
        }
    }
    Json(json!({"id": id, "labelIds": on.clone()})).into_response()
}

fn gmail_error(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = match status {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        _ => "INVALID_ARGUMENT",
    };
    (
        code,
        Json(json!({ "error": { "code": status, "message": message, "status": reason } })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct GmailQuery {
    format: Option<String>,
}

/// `users.messages.get` over the dev mailbox, checking both tokens like Gmail.
async fn gmail_get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<GmailQuery>,
    headers: HeaderMap,
) -> Response {
    let Ok(d) = dev(&state) else {
        return gmail_error(404, "Not Found");
    };
    if q.format.as_deref() != Some("raw") {
        return gmail_error(400, "this fake serves format=raw only");
    }
    let oauth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let access = headers
        .get(crate::gmail::GMAIL_ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(status) = d.check(oauth, access, &id) {
        return gmail_error(status, "Request had invalid authentication credentials.");
    }
    match d.find(&id) {
        Ok(Some((name, raw))) => {
            let thread = dev_thread(&raw, &name);
            Json(json!({
                "id": id,
                "threadId": thread.hex,
                "sizeEstimate": raw.len(),
                // Gmail pads `raw`; docket must accept it either way.
                "raw": base64::engine::general_purpose::URL_SAFE.encode(&raw),
            }))
            .into_response()
        }
        Ok(None) => gmail_error(404, "Requested entity was not found."),
        Err(e) => AppError::internal(e).into_response(),
    }
}
