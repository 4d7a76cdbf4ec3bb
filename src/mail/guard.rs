//! The fence around the MIME parser. Email is written by strangers, and mail-parser 0.11
//! has three traits that make a hostile message dangerous to the whole process rather than
//! to one request:
//!
//! - its parsed [`Message`] owns nested `message/rfc822` parts recursively, so *dropping* a
//!   message nested 40,000 deep overflows a 2 MiB thread stack — an abort no
//!   `catch_unwind` can stop;
//! - it decodes base64 / quoted-printable forwarded messages and parses what they hide,
//!   copying the whole decoded message once per level below (memory quadratic in the
//!   nesting: a 4 MB message took 24 GB);
//! - its memory grows with the number of parts, whatever docket's limits say afterwards.
//!
//! So every parse in docket goes through [`with_message`]:
//! 1. the parser is configured ([`parser`]) **not to read `Content-Transfer-Encoding`**: it
//!    never decodes anything, so all the structure it can build is visible in the raw bytes.
//!    docket undoes transfer encodings itself, per part, from the raw bytes
//!    ([`super::content`]), without ever parsing the result as more structure;
//! 2. [`prescan`]: a linear, iterative pass over the bytes, with memory bounded by the
//!    limits, counts what could become a MIME container (a `Content-Type: multipart/…` or
//!    `message/…` header line anywhere) and what could become a part (an occurrence of
//!    `--<value>` for every parameter value of every such header: the boundary whatever its
//!    spelling, RFC 2231 continuations and decoys included). Both counts over-approximate
//!    what the parser will build, so a message that passes cannot make it build more than
//!    about `2 × max_parts` parts or nest deeper than that. Over the limit it is a 422
//!    before the parser sees it;
//! 3. the parse runs on a dedicated thread with a [`PARSER_STACK_BYTES`] stack (address
//!    space, committed only as touched); a panic there becomes a 422;
//! 4. the parsed message is taken apart iteratively ([`dismantle`]) instead of dropped
//!    recursively.
//!
//! Async callers use [`isolated`], which runs the work on such a thread, at most
//! [`MAX_CONCURRENT_PARSES`] at once, and gives up waiting after [`PARSE_DEADLINE`].

use std::sync::Arc;
use std::time::Duration;

use aho_corasick::AhoCorasick;
use mail_parser::{Message, MessageParser, PartType};

use crate::config::Limits;
use crate::error::AppError;

/// Stack of a parser thread: 256 MiB of address space; only touched pages cost memory.
pub const PARSER_STACK_BYTES: usize = 256 << 20;
/// Parses running at once; more wait their turn (bounds CPU and memory under load).
pub const MAX_CONCURRENT_PARSES: usize = 8;
/// How long a request waits for its parse before answering 503.
pub const PARSE_DEADLINE: Duration = Duration::from_secs(60);
/// The structural ceilings that hold whatever the configuration says (the configuration
/// may only lower them): containers and parts in one message.
pub const MAX_PARTS_CEILING: usize = 10_000;

/// Limits that are only the structural ceilings: for reading a message that was already
/// accepted under the configured limits (body text for rules, the console's body view).
pub fn ceiling_limits() -> Limits {
    Limits {
        max_message_bytes: usize::MAX,
        max_parts: MAX_PARTS_CEILING,
        max_depth: usize::MAX,
        max_header_bytes: usize::MAX,
        ..Limits::default()
    }
}

/// What the pre-scan counted in a message (nested encoded messages included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// `Content-Type: multipart/*` and `message/*` header lines.
    pub containers: usize,
    /// Occurrences of `--<boundary>` for the declared boundaries.
    pub delimiters: usize,
}

/// The linear pre-scan (see the module docs). `Err` is a 422 `too-many-parts`.
pub fn prescan(raw: &[u8], limits: &Limits) -> Result<Shape, AppError> {
    let max = limits.max_parts.min(MAX_PARTS_CEILING);
    let mut shape = Shape::default();
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    let mut lines = Lines::new(raw);
    while let Some(line) = lines.next_line() {
        let Some(value) = header_value(line, b"content-type") else {
            continue;
        };
        let value = lines.unfold(value);
        let value = trim_start(&value);
        let lower = value.to_ascii_lowercase();
        if !(lower.starts_with(b"multipart/") || lower.starts_with(b"message/")) {
            continue;
        }
        shape.containers += 1;
        if shape.containers > max {
            return Err(too_many(max));
        }
        candidates.extend(boundary_candidates(value));
        if candidates.len() > 16 * max {
            return Err(too_many(max));
        }
    }
    candidates.sort();
    candidates.dedup();
    count_delimiters(raw, &candidates, max, &mut shape)?;
    Ok(shape)
}

fn too_many(max: usize) -> AppError {
    AppError::unprocessable(
        "too-many-parts",
        format!("the message has more MIME parts or nested messages than the limit of {max}"),
    )
}

/// Counts `--<boundary>` occurrences anywhere (mail-parser matches them anywhere, not only at
/// line starts), in one pass for all boundaries.
fn count_delimiters(
    bytes: &[u8],
    boundaries: &[Vec<u8>],
    max: usize,
    shape: &mut Shape,
) -> Result<(), AppError> {
    let patterns: Vec<Vec<u8>> = boundaries
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| [b"--".as_slice(), b].concat())
        .collect();
    if patterns.is_empty() {
        return Ok(());
    }
    let ac = AhoCorasick::new(&patterns)
        .map_err(|e| AppError::internal(anyhow::anyhow!("boundary matcher: {e}")))?;
    // A part is delimited by its opening and closing lines; allow both per part.
    let allowed = max.saturating_mul(2) + boundaries.len();
    for _ in ac.find_iter(bytes) {
        shape.delimiters += 1;
        if shape.delimiters > allowed {
            return Err(too_many(max));
        }
    }
    Ok(())
}

/// `Some(value)` when `line` is the header field `name` (case-insensitive, RFC 5322 §2.2;
/// whitespace before the colon tolerated as parsers do).
fn header_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..name.len())?;
    if !head.eq_ignore_ascii_case(name) {
        return None;
    }
    let rest = trim_start(&line[name.len()..]);
    rest.strip_prefix(b":").map(trim_start)
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', tail @ ..] = s {
        s = tail;
    }
    s
}

/// Every value that could be this header's boundary (RFC 2046 §5.1.1): the value after
/// each `=`, quoted or not, and percent-decoded when it is an RFC 2231 extended value
/// (`boundary*=utf-8''%62`). Over-approximates mail-parser's reading of `boundary`, however
/// spelled: decoys, continuations (`boundary*0=`) and odd quoting only add candidates.
fn boundary_candidates(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, _) in value.iter().enumerate().filter(|(_, c)| **c == b'=') {
        let rest = trim_start(&value[i + 1..]);
        let token: Vec<u8> = match rest.strip_prefix(b"\"") {
            Some(q) => q.iter().take_while(|c| **c != b'"').copied().collect(),
            None => rest
                .iter()
                .take_while(|c| !matches!(c, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'"'))
                .copied()
                .collect(),
        };
        if token.is_empty() {
            continue;
        }
        if let Some(pos) = token.iter().rposition(|c| *c == b'\'') {
            let decoded = percent_encoding::percent_decode(&token[pos + 1..]).collect::<Vec<u8>>();
            if !decoded.is_empty() {
                out.push(decoded);
            }
        }
        out.push(token);
    }
    out
}

/// Lines of a byte string (LF or CRLF; the terminator is not part of the line).
struct Lines<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Lines { bytes, pos: 0 }
    }

    fn next_line(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.pos..];
        let len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        self.pos += (len + 1).min(rest.len());
        let line = &rest[..len];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    fn peek_line(&self) -> Option<&'a [u8]> {
        Lines {
            bytes: self.bytes,
            pos: self.pos,
        }
        .next_line()
    }

    /// `first` plus its folded continuation lines (RFC 5322 §2.2.3), joined by a space.
    fn unfold(&mut self, first: &[u8]) -> Vec<u8> {
        let mut value = first.to_vec();
        while let Some(next) = self.peek_line() {
            if !matches!(next.first(), Some(b' ' | b'\t')) || value.len() > 4096 {
                break;
            }
            value.push(b' ');
            value.extend_from_slice(trim_start(next));
            self.next_line();
        }
        value
    }
}

/// mail-parser as docket uses it: every header parsed as by default, except
/// `Content-Transfer-Encoding`, which it must not see (so it decodes nothing and never
/// parses structure hidden in an encoded part; see the module docs). Read it with
/// [`super::content::transfer_encoding`].
pub fn parser() -> &'static MessageParser {
    static PARSER: std::sync::OnceLock<MessageParser> = std::sync::OnceLock::new();
    PARSER.get_or_init(|| {
        use mail_parser::HeaderName as H;
        MessageParser::new()
            .with_mime_headers()
            .with_date_headers()
            .with_address_headers()
            .with_message_ids()
            .header_text(H::Subject)
            .header_text(H::Comments)
            .header_comma_separated(H::Keywords)
            .header_comma_separated(H::ContentLanguage)
            .header_received(H::Received)
            .header_id(H::ReturnPath)
            .ignore_header(H::ContentTransferEncoding)
            .default_header_raw()
    })
}

/// Takes a parsed message apart without recursion: nested messages are moved onto a heap
/// stack and dropped one level at a time.
pub fn dismantle(msg: Message<'_>) {
    let mut stack = vec![msg];
    while let Some(mut m) = stack.pop() {
        for part in m.parts.iter_mut() {
            if matches!(part.body, PartType::Message(_)) {
                if let PartType::Message(inner) = std::mem::take(&mut part.body) {
                    stack.push(inner);
                }
            }
        }
    }
}

/// Pre-scans `raw` under `limits`, parses it, hands the message to `f`, and takes it apart
/// iteratively. Synchronous: call it on a parser thread ([`isolated`] or
/// [`run_on_parser_thread`]). `Err` is a 422 (`too-many-parts`, `not-an-email`).
pub fn with_message<R>(
    raw: &[u8],
    limits: &Limits,
    f: impl FnOnce(&Message<'_>) -> Result<R, AppError>,
) -> Result<R, AppError> {
    prescan(raw, limits)?;
    let msg = parser().parse(raw).ok_or_else(not_email)?;
    let out = f(&msg);
    dismantle(msg);
    out
}

pub fn not_email() -> AppError {
    AppError::unprocessable(
        "not-an-email",
        "the bytes are not an RFC 822 email message (no header fields found)",
    )
}

fn parser_failed() -> AppError {
    AppError::unprocessable(
        "unparseable-message",
        "the message could not be parsed as RFC 822 email",
    )
}

/// Runs `f` on a fresh thread with a [`PARSER_STACK_BYTES`] stack and waits for it
/// (blocking). A panic in `f` becomes a 422 `unparseable-message`.
pub fn run_on_parser_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let handle = std::thread::Builder::new()
        .name("docket-parser".into())
        .stack_size(PARSER_STACK_BYTES)
        .spawn(f)
        .map_err(|e| AppError::internal(anyhow::anyhow!("cannot start a parser thread: {e}")))?;
    handle.join().unwrap_or_else(|_| {
        tracing::warn!("mail parser panicked on input");
        Err(parser_failed())
    })
}

fn parse_slots() -> &'static Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_PARSES)))
}

/// Runs parser work `f` off the async runtime on a parser thread (see
/// [`run_on_parser_thread`]), at most [`MAX_CONCURRENT_PARSES`] at once. Waiting longer than
/// [`PARSE_DEADLINE`] answers 503 `parse-timeout` (the thread is left to finish).
pub async fn isolated<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let work = async {
        let _slot = parse_slots()
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AppError::internal(anyhow::anyhow!("parser slots: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("docket-parser".into())
            .stack_size(PARSER_STACK_BYTES)
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(
                    |_| {
                        tracing::warn!("mail parser panicked on input");
                        Err(parser_failed())
                    },
                );
                let _ = tx.send(r);
            });
        spawned.map_err(|e| {
            AppError::internal(anyhow::anyhow!("cannot start a parser thread: {e}"))
        })?;
        rx.await
            .map_err(|_| AppError::internal(anyhow::anyhow!("parser thread vanished")))?
    };
    match tokio::time::timeout(PARSE_DEADLINE, work).await {
        Ok(r) => r,
        Err(_) => Err(AppError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "parse-timeout",
            format!(
                "the message could not be read within {} s; try again later",
                PARSE_DEADLINE.as_secs()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_parts: usize) -> Limits {
        Limits {
            max_message_bytes: usize::MAX,
            max_parts,
            max_depth: 32,
            max_header_bytes: 1 << 20,
            ..Limits::default()
        }
    }

    fn rfc822_nest(n: usize) -> Vec<u8> {
        let mut s = b"From: a@b.c\r\nSubject: x\r\n".to_vec();
        for _ in 0..n {
            s.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        }
        s.extend_from_slice(b"body\r\n");
        s
    }

    #[test]
    fn counts_containers_and_delimiters() {
        let m = b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n--b1\r\nContent-type:\r\n message/rfc822\r\n\r\nSubject: y\r\n\r\nz\r\n--b1--\r\n";
        let s = prescan(m, &limits(100)).unwrap();
        assert_eq!(s.containers, 2);
        assert_eq!(s.delimiters, 3);
    }

    #[test]
    fn rejects_deep_rfc822_nesting_before_parsing() {
        assert!(prescan(&rfc822_nest(999), &limits(1000)).is_ok());
        let e = prescan(&rfc822_nest(1001), &limits(1000)).unwrap_err();
        assert_eq!(e.slug(), "too-many-parts");
    }

    /// The four ways a breaker hid nesting in an encoded forwarded message (CTE before
    /// Content-Type, a digest's default type, a folded CTE, QP whose lines start with
    /// `--`): docket's parser decodes none of them, so none can grow the parse.
    #[test]
    fn encoded_forwarded_messages_are_opaque_to_the_parser() {
        use base64::Engine;
        let inner = base64::engine::general_purpose::STANDARD.encode(rfc822_nest(5000));
        let body: String = inner
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
            .collect();
        let heads = [
            "Content-Transfer-Encoding: base64\r\nContent-Type: message/rfc822\r\n",
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding:\r\n base64\r\n",
        ];
        for head in heads {
            let m = format!(
                "From: a@b.c\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n{head}\r\n{body}--q--\r\n"
            );
            prescan(m.as_bytes(), &limits(1000)).unwrap();
            let msg = parser().parse(m.as_bytes()).unwrap();
            assert!(msg.parts.len() < 10, "{} parts", msg.parts.len());
            dismantle(msg);
        }
    }

    #[test]
    fn boundary_spellings_and_decoys_are_all_counted() {
        for ct in [
            "multipart/mixed; boundary*0=b",
            "multipart/mixed; xboundary=zzz; boundary=b",
            "multipart/mixed; name=\"boundary=zzz\"; boundary=b",
            "multipart/digest; boundary*=utf-8''%62",
        ] {
            let mut m = format!("Content-Type: {ct}\r\n\r\n").into_bytes();
            for _ in 0..5000 {
                m.extend_from_slice(b"--b\r\n\r\nx\r\n");
            }
            let e = prescan(&m, &limits(1000)).unwrap_err();
            assert_eq!(e.slug(), "too-many-parts", "{ct}");
        }
    }

    #[test]
    fn rejects_a_flood_of_flat_parts() {
        let mut m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        for _ in 0..5000 {
            m.extend_from_slice(b"--b\r\n\r\nx\r\n");
        }
        assert_eq!(
            prescan(&m, &limits(1000)).unwrap_err().slug(),
            "too-many-parts"
        );
    }

    #[test]
    fn dismantles_deep_messages_without_recursion() {
        // 20,000 levels: a recursive drop of this overflows a 2 MiB stack (the
        // mechanism of the original abort). Parsed and dismantled on a small stack here.
        let raw = rfc822_nest(20_000);
        let t = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let msg = MessageParser::default().parse(&raw[..]).unwrap();
                dismantle(msg);
            })
            .unwrap();
        t.join().expect("dismantling must not overflow the stack");
    }
}
