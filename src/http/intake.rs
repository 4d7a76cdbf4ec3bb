//! The intake of requests that carry a whole message (`POST /v1/filings`,
//! `POST /v1/addon/context`, the rules dry runs): a process-wide budget for bytes in
//! flight, and a deadline for reading the body.
//!
//! - **Budget** ([`crate::budget`]). Before its body is read, a request reserves
//!   [`crate::budget::COST_FACTOR`] × its `Content-Length` (the body, the decoded message
//!   and the parsed parts are in memory at once; a chunked body, which announces no
//!   length, grows its share as it arrives), at most the whole budget, so one large
//!   message can still go through alone. The dry runs hold theirs through [`within_budget`].
//!   When the reservation cannot be had at once the answer is 503 `busy` with
//!   `Retry-After`, instead of the process growing without bound under load (the refused
//!   body is read and discarded first, unless the client sent `Expect: 100-continue`, so
//!   that the client hears the 503 rather than a broken pipe). The reservation
//!   is held until the handler is done. Only authenticated requests reserve: the body is
//!   read by the [`MessageJson`] extractor, after the caller's token was checked.
//! - **Body deadline.** The body must arrive within `limits.body_read_timeout_secs`;
//!   otherwise 408 `body-timeout` (a client announcing 100 GB and sending 2 bytes no longer
//!   holds a connection for minutes).
//! - **One buffer.** The body is read into one buffer sized by its `Content-Length`; the
//!   JSON is parsed from it without copying the `raw` text, and `raw` (base64url) is decoded
//!   in place, so the buffer becomes the message: a message is never in memory as body,
//!   string and bytes at once.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use serde::de::{Deserializer, Visitor};

use super::extract::json_rejection;
use super::filings;

use crate::budget::{Budget, Reservation};
use crate::config::Limits;
use crate::error::AppError;

/// The shared budget and deadline.
pub struct Intake {
    budget: Budget,
    body_deadline: Duration,
    body_limit: usize,
    /// Largest decoded message (`limits.max_message_bytes`).
    max_message: usize,
}

impl Intake {
    /// From the configured limits; `body_limit` is the largest body a message route takes.
    pub fn new(limits: &Limits, budget: Budget, body_limit: usize) -> Arc<Intake> {
        Arc::new(Intake {
            budget,
            body_deadline: Duration::from_secs(limits.body_read_timeout_secs),
            body_limit,
            max_message: limits.max_message_bytes,
        })
    }

    /// The share for a body of `content_length` bytes (the body limit when unknown).
    fn try_reserve(&self, content_length: Option<usize>) -> Option<Reservation> {
        let bytes = content_length
            .unwrap_or(self.body_limit)
            .min(self.body_limit);
        self.budget.try_reserve(bytes)
    }
}

/// Middleware for routes that take a whole message in a body of their own making (the
/// rules dry runs: JSON with any base64, or a console upload): the request holds its share
/// of the budget, by `Content-Length` (the route's body limit when chunked), while its
/// handler runs, which must finish within the body deadline (408 `body-timeout` otherwise);
/// 413 when the announced body is over `body_limit`, 503 `busy` when the budget cannot
/// cover it now.
pub async fn within_budget(req: Request, next: axum::middleware::Next) -> Response {
    let Some(intake) = req.extensions().get::<Arc<Intake>>().cloned() else {
        let e = anyhow::anyhow!("a budgeted route without an intake");
        return AppError::internal(e).into_response();
    };
    let length = content_length(req.headers());
    if let Some(n) = length.filter(|n| *n > intake.body_limit) {
        return too_large(n, intake.body_limit);
    }
    let Some(share) = intake.try_reserve(length) else {
        return refuse_busy(req, &intake).await;
    };
    // The share is held for at most the body deadline: a body that stalls gives it back.
    let answer = match tokio::time::timeout(intake.body_deadline, next.run(req)).await {
        Ok(answer) => answer,
        Err(_) => body_timeout(intake.body_deadline),
    };
    drop(share);
    answer
}

fn content_length(headers: &axum::http::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

fn too_large(length: usize, limit: usize) -> Response {
    let detail = format!("the request body is {length} bytes; the limit is {limit}");
    AppError::too_large(detail).into_response()
}

/// The JSON body of a request that carries a message, read under the intake's budget and
/// deadline (see the module docs); the reservation is held as long as this value lives.
/// Use it as the handler's last argument, after the authentication extractor, so that
/// nobody unauthenticated reserves anything. Needs the route to carry
/// `Extension(Arc<Intake>)`.
pub struct MessageJson<T> {
    /// The other fields of the body.
    pub value: T,
    /// The message, decoded from the body's `raw` (base64url, padded or not).
    pub raw: Vec<u8>,
    _reserved: Reservation,
}

/// A body type with a `raw` field of type [`RawField`], which the intake takes out.
pub trait CarriesMessage {
    fn take_raw(&mut self) -> RawField;
}

/// The `raw` field as parsed: where its text lies in the body (serde hands out the body's
/// own text when the string has no JSON escapes), or a copy when it had escapes.
#[derive(Debug, Default)]
pub enum RawField {
    #[default]
    Taken,
    /// Address and length of the text inside the body buffer.
    In {
        addr: usize,
        len: usize,
    },
    Copied(String),
}

impl<'de> serde::Deserialize<'de> for RawField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = RawField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the message as a base64url string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<RawField, E> {
                Ok(RawField::In {
                    addr: v.as_ptr() as usize,
                    len: v.len(),
                })
            }
            fn visit_str<E>(self, v: &str) -> Result<RawField, E> {
                Ok(RawField::Copied(v.to_string()))
            }
        }
        d.deserialize_str(Text)
    }
}

impl<S, T> FromRequest<S> for MessageJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + CarriesMessage,
{
    type Rejection = Response;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Response> {
        let intake = req
            .extensions()
            .get::<Arc<Intake>>()
            .cloned()
            .ok_or_else(|| {
                AppError::internal(anyhow::anyhow!("message route without an intake"))
                    .into_response()
            })?;
        if !is_json(req.headers()) {
            return Err(json_rejection(
                axum::extract::rejection::MissingJsonContentType::default().into(),
            )
            .into_response());
        }
        let length = content_length(req.headers());
        if let Some(n) = length.filter(|n| *n > intake.body_limit) {
            return Err(too_large(n, intake.body_limit));
        }
        // A chunked body announces no length: its share grows as it arrives.
        let reserved = match length {
            Some(n) => intake.budget.try_reserve(n),
            None => Some(intake.budget.empty()),
        };
        let Some(mut reserved) = reserved else {
            return Err(refuse_busy(req, &intake).await);
        };
        let read = read_body(req.into_body(), length, &intake, &mut reserved);
        let mut body = match tokio::time::timeout(intake.body_deadline, read).await {
            Ok(read) => read?,
            Err(_) => return Err(body_timeout(intake.body_deadline)),
        };
        let mut value = axum::Json::<T>::from_bytes(&body)
            .map_err(|rej| json_rejection(rej).into_response())?
            .0;
        let raw = match value.take_raw() {
            RawField::In { addr, len } => {
                let start = addr.wrapping_sub(body.as_ptr() as usize);
                if start.checked_add(len).is_none_or(|end| end > body.len()) {
                    let e = anyhow::anyhow!("`raw` does not lie in the body");
                    return Err(AppError::internal(e).into_response());
                }
                decode_in_place(&mut body, start, len, intake.max_message)
            }
            RawField::Copied(text) => {
                drop(body);
                filings::decode_raw(&text, intake.max_message)
            }
            RawField::Taken => Err(AppError::internal(anyhow::anyhow!("`raw` taken twice"))),
        }
        .map_err(IntoResponse::into_response)?;
        Ok(MessageJson {
            value,
            raw,
            _reserved: reserved,
        })
    }
}

/// 503 `busy`, told so that the client hears it: a client that asked
/// `Expect: 100-continue` has sent no body yet and gets the answer at once; any other has
/// its body read and thrown away first (within the body deadline, keeping nothing), since
/// closing the connection under an upload in progress shows the client a broken pipe
/// instead of the 503 and its `Retry-After`.
async fn refuse_busy(req: Request, intake: &Intake) -> Response {
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if !expects_continue {
        let mut stream = req.into_body().into_data_stream();
        let drained = drain(&mut stream, intake.body_limit);
        let _ = tokio::time::timeout(intake.body_deadline, drained).await;
    }
    busy()
}

/// `application/json` or `application/<anything>+json`, as axum's `Json` accepts.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The whole body in one buffer sized by `Content-Length`; a 413 problem when it grows past
/// the body limit (a chunked body announces no length), a 400 when it ends early, and 503
/// `busy` (the rest of the body read and thrown away) when `held` cannot grow to cover a
/// chunked body as it arrives.
async fn read_body(
    body: Body,
    length: Option<usize>,
    intake: &Intake,
    held: &mut Reservation,
) -> Result<Vec<u8>, Response> {
    use futures_util::StreamExt;
    let limit = intake.body_limit;
    let mut buf = Vec::with_capacity(length.unwrap_or(0).min(limit));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| unreadable(limit))?;
        if buf.len() + chunk.len() > limit {
            let detail = format!("the request body is over the limit of {limit} bytes");
            return Err(AppError::too_large(detail).into_response());
        }
        if !intake.budget.try_grow(held, buf.len() + chunk.len()) {
            drop(std::mem::take(&mut buf));
            drain(&mut stream, limit).await;
            return Err(busy());
        }
        buf.extend_from_slice(&chunk);
    }
    if length.is_some_and(|n| n != buf.len()) {
        return Err(unreadable(limit));
    }
    Ok(buf)
}

/// Reads and throws away what is left of a body, up to `limit` bytes.
async fn drain(stream: &mut axum::body::BodyDataStream, limit: usize) {
    use futures_util::StreamExt;
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > limit {
            break;
        }
    }
}

/// Decodes the base64url text at `buf[start..start + len]` into `buf` itself, which then
/// holds the message and nothing else. Same answers as [`crate::http::filings::decode_raw`]:
/// 413 over `max`, 400 `invalid-base64`, 422 `not-an-email` when empty. The text is decoded
/// in 4 KiB chunks through the `base64` crate; each decoded chunk is written behind the
/// point already read, which 3 bytes per 4 characters guarantees.
fn decode_in_place(
    buf: &mut Vec<u8>,
    start: usize,
    len: usize,
    max: usize,
) -> Result<Vec<u8>, AppError> {
    use base64::Engine;
    const CHUNK: usize = 4096;
    let text = &buf[start..start + len];
    let trimmed = text.len()
        - text
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    filings::check_encoded_len(trimmed, max)?;
    let (mut read, end, mut written) = (start, start + trimmed, 0);
    let mut input = [0u8; CHUNK];
    let mut output = [0u8; CHUNK / 4 * 3];
    while read < end {
        let n = CHUNK.min(end - read);
        input[..n].copy_from_slice(&buf[read..read + n]);
        // Padding ends the text: in a chunk that is not the last it is a misplaced symbol,
        // which a chunk decoded alone would take for its own end.
        if read + n < end {
            if let Some(at) = input[..n].iter().position(|b| *b == b'=') {
                let e = base64::DecodeError::InvalidByte(at, b'=');
                return Err(invalid_base64(e.into(), read - start));
            }
        }
        let k = filings::B64URL
            .decode_slice(&input[..n], &mut output)
            .map_err(|e| invalid_base64(e, read - start))?;
        buf[written..written + k].copy_from_slice(&output[..k]);
        (read, written) = (read + n, written + k);
    }
    buf.truncate(written);
    buf.shrink_to_fit();
    filings::check_decoded(std::mem::take(buf), max)
}

/// The decoder's complaint, with offsets counted from the start of `raw`.
fn invalid_base64(e: base64::DecodeSliceError, base: usize) -> AppError {
    use base64::{DecodeError, DecodeSliceError};
    let e = match e {
        DecodeSliceError::DecodeError(DecodeError::InvalidByte(at, b)) => {
            DecodeError::InvalidByte(at + base, b)
        }
        DecodeSliceError::DecodeError(DecodeError::InvalidLastSymbol(at, b)) => {
            DecodeError::InvalidLastSymbol(at + base, b)
        }
        DecodeSliceError::DecodeError(DecodeError::InvalidLength(n)) => {
            DecodeError::InvalidLength(n + base)
        }
        DecodeSliceError::DecodeError(other) => other,
        DecodeSliceError::OutputSliceTooSmall => DecodeError::InvalidLength(0),
    };
    filings::invalid_base64(e)
}

fn unreadable(limit: usize) -> Response {
    AppError::bad_request(
        "unreadable-body",
        format!("the request body could not be read: it ended early, or is over the limit of {limit} bytes"),
    )
    .into_response()
}

fn busy() -> Response {
    AppError::busy().into_response()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::filings::decode_raw;

    fn intake(body_limit: usize, budget_bytes: usize) -> Arc<Intake> {
        Intake::new(&Limits::default(), Budget::new(budget_bytes), body_limit)
    }

    fn chunks() -> Body {
        let chunk = axum::body::Bytes::from(vec![b' '; 600]);
        let three = (0..3).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
        Body::from_stream(futures_util::stream::iter(three))
    }

    /// A body without a length (chunked) that grows past the limit is a 413, like one that
    /// announces too much; one shorter than it announced is a 400.
    #[tokio::test]
    async fn a_chunked_body_over_the_limit_is_a_413() {
        let (small, large) = (intake(1000, 1 << 20), intake(10_000, 1 << 20));
        let mut held = small.budget.empty();
        let over = read_body(chunks(), None, &small, &mut held).await;
        assert_eq!(over.unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);
        let mut held = large.budget.empty();
        let short = read_body(chunks(), Some(5000), &large, &mut held).await;
        assert_eq!(short.unwrap_err().status(), StatusCode::BAD_REQUEST);
        let mut held = large.budget.empty();
        let whole = read_body(chunks(), None, &large, &mut held).await;
        assert_eq!(whole.unwrap().len(), 1800);
    }

    /// A chunked body's share grows as it arrives (2 × 1,800 bytes: 4 KiB), instead of
    /// reserving the whole body limit up front; when the budget cannot cover the next chunk
    /// the answer is 503 `busy`, and the share is given back.
    #[tokio::test]
    async fn a_chunked_body_takes_its_share_as_it_arrives() {
        let roomy = intake(10_000_000, 1 << 20);
        let mut held = roomy.budget.empty();
        let whole = read_body(chunks(), None, &roomy, &mut held).await;
        assert_eq!(whole.unwrap().len(), 1800);
        assert_eq!(
            roomy.budget.available_kib(),
            1024 - 4,
            "4 KiB, not 2 × 10 MB"
        );
        // 2 KiB of 4 taken by someone else: the first chunk's 2 KiB fit, the second's not.
        let tight = intake(10_000_000, 4 * 1024);
        let _other = tight.budget.try_reserve(1024).unwrap();
        let mut held = tight.budget.empty();
        let refused = read_body(chunks(), None, &tight, &mut held).await;
        let refused = refused.unwrap_err();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "2");
        drop(held);
        assert_eq!(tight.budget.available_kib(), 2);
    }

    /// `raw` inside a JSON body, decoded in place, answers exactly as `decode_raw` does: the
    /// same bytes, or the same problem (status, kind and detail, offsets included).
    #[test]
    fn decoding_in_place_answers_as_decode_raw() {
        use base64::Engine;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let engines = [
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for round in 0..400 {
            let len = match round % 4 {
                0 => (next() % 20) as usize,
                1 => 3072 * (1 + (next() % 3) as usize) + (next() % 7) as usize,
                _ => (next() % 20_000) as usize,
            };
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut text = engines[round % 2].encode(&bytes);
            match next() % 7 {
                // Padding at the end of the first 4 KiB chunk, then more text.
                3 => {
                    text = engines[0].encode(&bytes[..bytes.len().min(3070)]);
                    text.push_str(&engines[1].encode(&bytes[bytes.len().min(3070)..]));
                }
                0 if !text.is_empty() => {
                    let at = (next() as usize) % text.len();
                    text.replace_range(at..at + 1, "!");
                }
                1 => text.push_str("\r\n "),
                2 => text.push('A'),
                _ => {}
            }
            let max = if round % 7 == 0 { len / 2 } else { 1 << 20 };
            let json = format!("{{\"raw\": \"{text}\", \"x\": 1}}");
            let mut body = json.into_bytes();
            let start = 9;
            let got = decode_in_place(&mut body, start, text.len(), max);
            let want = decode_raw(&text, max);
            match (got, want) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "round {round}"),
                (Err(a), Err(b)) => {
                    assert_eq!(
                        (a.status(), a.slug()),
                        (b.status(), b.slug()),
                        "round {round}"
                    );
                    assert_eq!(a.to_string(), b.to_string(), "round {round}");
                }
                (a, b) => panic!("round {round}: in place {a:?}, decode_raw {b:?}"),
            }
        }
    }
}
