//! One error type for the whole service, rendered as RFC 9457 `application/problem+json`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Errors a request can end in. User-caused ones carry a precise `detail`; internal ones are
/// logged with their chain and answered with a bare 500 (or 503) that leaks nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{detail}")]
    Problem {
        status: StatusCode,
        slug: &'static str,
        detail: String,
    },
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

/// `Retry-After` of a 503 `storage-unavailable`, in seconds.
pub const STORAGE_RETRY_AFTER_SECS: u64 = 30;

impl AppError {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        AppError::Problem {
            status,
            slug,
            detail: detail.into(),
        }
    }
    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, detail)
    }
    pub fn unprocessable(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, slug, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", detail)
    }
    /// 503 `busy` (with `Retry-After`): the message budget cannot cover the work now.
    pub fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "docket is handling as many messages as its memory budget allows; try again shortly",
        )
    }
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        AppError::Internal(err.into())
    }
    /// A blob store failure while `doing` something: 503 `storage-unavailable` (with
    /// `Retry-After`, logged) when the object store cannot be reached or refuses; otherwise
    /// (a missing or damaged blob, a local disk fault) an internal error.
    pub fn storage(err: crate::storage::BlobError, doing: &'static str) -> Self {
        if err.is_unavailable() {
            tracing::error!(error = %err, "{doing}: the blob store is unavailable");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage-unavailable",
                "docket cannot reach its blob store right now; nothing was changed, try again shortly",
            );
        }
        AppError::Internal(anyhow::Error::new(err).context(doing))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Problem { status, .. } => *status,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable problem kind (`urn:docket:problem:<slug>`).
    pub fn slug(&self) -> &'static str {
        match self {
            AppError::Problem { slug, .. } => slug,
            AppError::Internal(_) => "internal",
        }
    }
}

impl From<crate::storage::BlobError> for AppError {
    fn from(e: crate::storage::BlobError) -> Self {
        AppError::storage(e, "blob store")
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(anyhow::Error::new(e).context("database"))
    }
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            AppError::Problem { detail, .. } => detail.as_str(),
            AppError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                "An internal error occurred; it has been logged."
            }
        };
        let body = ProblemBody {
            kind: format!("urn:docket:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
        };
        let mut resp = (status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"docket\""),
            );
        }
        let retry_after = match self.slug() {
            "busy" => Some(crate::budget::RETRY_AFTER_SECS),
            // A store outage outlasts a busy moment.
            "storage-unavailable" => Some(STORAGE_RETRY_AFTER_SECS),
            "sweep-in-progress" => Some(crate::sweep_epoch::RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A whole HTTP/1.1 response carrying a problem for `status`, with `connection: close`: for
/// the answers written below the router (a request head too slow, too long or malformed),
/// which no middleware sees. `detail` defaults to the status's own explanation.
pub fn raw_problem_response(status: StatusCode, detail: Option<&str>) -> Vec<u8> {
    let body = serde_json::to_vec(&ProblemBody {
        kind: format!("urn:docket:problem:{}", bare_slug(status)),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail: detail.unwrap_or_else(|| bare_detail(status)),
    })
    .expect("a problem serialises");
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Rewrites error answers that carry no problem of their own (axum's 405, a timeout's 408, a
/// body limit's 413, extractor rejections answered as `text/plain`) into problem+json with
/// the same status and headers (e.g. `Allow`). Answers that already have a typed body
/// (problem+json, console HTML, JSON) pass untouched. Layered router-wide, outside the
/// timeout, so every layer's bare answer is covered.
pub async fn problem_for_bare_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    if !is_bare_error(&resp) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 8 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        bare_detail(parts.status).to_string()
    } else {
        text
    };
    let mut problem = AppError::new(parts.status, bare_slug(parts.status), detail).into_response();
    let own: Vec<_> = problem.headers().keys().cloned().collect();
    for (name, value) in &parts.headers {
        if !own.contains(name) && name != header::CONTENT_LENGTH {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    problem
}

fn is_bare_error(resp: &Response) -> bool {
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    (resp.status().is_client_error() || resp.status().is_server_error())
        && content_type.is_none_or(|ct| ct.starts_with("text/plain"))
}

fn bare_slug(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad-request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not-found",
        405 => "method-not-allowed",
        408 => "request-timeout",
        411 => "length-required",
        413 => "too-large",
        414 => "uri-too-long",
        415 => "unsupported-media-type",
        422 => "invalid-request",
        429 => "too-many-requests",
        431 => "headers-too-large",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

fn bare_detail(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "the request is not well-formed HTTP/1.1",
        405 => "this endpoint does not accept that method (see the Allow header)",
        408 => "the request took too long; try again",
        413 => "the request body is larger than this endpoint accepts",
        414 => "the request URI is too long",
        431 => "the request headers are too large",
        _ => status.canonical_reason().unwrap_or("error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn through(handler_status: StatusCode, content_type: Option<&'static str>) -> Response {
        let app = axum::Router::new()
            .route(
                "/",
                get(move || async move {
                    let mut r = (handler_status, "plain words").into_response();
                    match content_type {
                        Some(ct) => r
                            .headers_mut()
                            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct)),
                        None => r.headers_mut().remove(header::CONTENT_TYPE),
                    };
                    r
                }),
            )
            .layer(axum::middleware::from_fn(problem_for_bare_errors));
        let req = axum::http::Request::get("/").body(Body::empty()).unwrap();
        app.oneshot(req).await.unwrap()
    }

    async fn problem_of(r: Response) -> serde_json::Value {
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn bare_and_plain_error_answers_become_problems() {
        for (status, kind) in [
            (StatusCode::REQUEST_TIMEOUT, "request-timeout"),
            (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
            (StatusCode::URI_TOO_LONG, "uri-too-long"),
            (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
            ),
        ] {
            let r = through(status, None).await;
            assert_eq!(r.status(), status);
            let p = problem_of(r).await;
            assert_eq!(p["type"], format!("urn:docket:problem:{kind}"));
            assert_eq!(p["status"], status.as_u16());
        }
        let p =
            problem_of(through(StatusCode::BAD_REQUEST, Some("text/plain; charset=utf-8")).await)
                .await;
        assert_eq!(p["detail"], "plain words");
        // Typed answers (console HTML, JSON) and successes are left alone.
        let r = through(StatusCode::NOT_FOUND, Some("text/html; charset=utf-8")).await;
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let r = through(StatusCode::OK, None).await;
        assert!(r.headers().get(header::CONTENT_TYPE).is_none());
    }

    #[tokio::test]
    async fn method_not_allowed_is_a_problem_keeping_allow() {
        let app = axum::Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(problem_for_bare_errors));
        let req = axum::http::Request::delete("/")
            .body(Body::empty())
            .unwrap();
        let r = app.oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(r.headers()[header::ALLOW].to_str().unwrap().contains("GET"));
        let p = problem_of(r).await;
        assert_eq!(p["type"], "urn:docket:problem:method-not-allowed");
    }
}
