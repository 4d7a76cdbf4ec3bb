//! The intake of requests that carry a whole message (`POST /v1/filings`,
//! `POST /v1/addon/context`, the rules dry runs): a process-wide budget for bytes in
//! flight, and a deadline for reading the body.
//!
//! - **Budget.** Before its body is read, a request reserves [`COST_FACTOR`] × its
//!   `Content-Length` (the body, the decoded message and the parsed parts are in memory at
//!   once), at most the whole budget, so one large message can still go through alone.
//!   When the reservation cannot be had at once the answer is 503 `busy` with
//!   `Retry-After`, instead of the process growing without bound under load. The reservation
//!   is held until the handler is done. Only authenticated requests reserve: the body is
//!   read by the [`MessageJson`] extractor, after the caller's token was checked.
//! - **Body deadline.** The body must arrive within `limits.body_read_timeout_secs`;
//!   otherwise 408 `body-timeout` (a client announcing 100 GB and sending 2 bytes no longer
//!   holds a connection for minutes).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::extract::ApiJson;

use crate::config::Limits;
use crate::error::AppError;

/// Bytes held in memory per byte of request body while a message is handled.
pub const COST_FACTOR: usize = 3;
/// Seconds a refused client is asked to wait.
pub const RETRY_AFTER_SECS: u64 = 2;
const KIB: usize = 1024;

/// The shared budget and deadline.
pub struct Intake {
    budget: Arc<Semaphore>,
    total_kib: usize,
    body_deadline: Duration,
    body_limit: usize,
}

impl Intake {
    /// From the configured limits; `body_limit` is the largest body a message route takes.
    pub fn new(limits: &Limits, body_limit: usize) -> Arc<Intake> {
        let total_kib = (limits.max_bytes_in_flight / KIB).clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Intake {
            budget: Arc::new(Semaphore::new(total_kib)),
            total_kib,
            body_deadline: Duration::from_secs(limits.body_read_timeout_secs),
            body_limit,
        })
    }

    /// KiB a request of `content_length` bytes reserves (the body limit when unknown).
    fn cost_kib(&self, content_length: Option<usize>) -> u32 {
        let bytes = content_length
            .unwrap_or(self.body_limit)
            .min(self.body_limit)
            .saturating_mul(COST_FACTOR);
        (bytes.div_ceil(KIB)).clamp(1, self.total_kib) as u32
    }
}

/// The JSON body of a request that carries a message, read under the intake's budget and
/// deadline (see the module docs); the reservation is held as long as this value lives.
/// Use it as the handler's last argument, after the authentication extractor, so that
/// nobody unauthenticated reserves anything. Needs the route to carry
/// `Extension(Arc<Intake>)`.
pub struct MessageJson<T> {
    pub value: T,
    _reserved: OwnedSemaphorePermit,
}

impl<S, T> FromRequest<S> for MessageJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let intake = req
            .extensions()
            .get::<Arc<Intake>>()
            .cloned()
            .ok_or_else(|| {
                AppError::internal(anyhow::anyhow!("message route without an intake"))
                    .into_response()
            })?;
        let length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(n) = length.filter(|n| *n > intake.body_limit) {
            let detail = format!(
                "the request body is {n} bytes; the limit is {}",
                intake.body_limit
            );
            return Err(AppError::too_large(detail).into_response());
        }
        let reserved = intake
            .budget
            .clone()
            .try_acquire_many_owned(intake.cost_kib(length))
            .map_err(|_| busy())?;
        let (parts, body) = req.into_parts();
        let read = axum::body::to_bytes(body, intake.body_limit);
        let bytes = match tokio::time::timeout(intake.body_deadline, read).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => return Err(unreadable(intake.body_limit)),
            Err(_) => return Err(body_timeout(intake.body_deadline)),
        };
        let req = Request::from_parts(parts, Body::from(bytes));
        let ApiJson(value) = ApiJson::<T>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(MessageJson {
            value,
            _reserved: reserved,
        })
    }
}

fn unreadable(limit: usize) -> Response {
    AppError::bad_request(
        "unreadable-body",
        format!("the request body could not be read: it ended early, or is over the limit of {limit} bytes"),
    )
    .into_response()
}

fn busy() -> Response {
    let mut r = AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "docket is handling as many messages as its memory budget allows; try again shortly",
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

fn body_timeout(deadline: Duration) -> Response {
    AppError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body-timeout",
        format!(
            "the request body did not arrive within {} s",
            deadline.as_secs()
        ),
    )
    .into_response()
}
