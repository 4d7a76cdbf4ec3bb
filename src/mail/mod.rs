//! Turning untrusted bytes into a [`ParsedMessage`]: size cap before parsing, a guarded parse
//! (mail-parser can panic on rare inputs), then part-count and depth limits, canonical header
//! values and display-safe attachment names.

pub mod names;

use std::panic::{catch_unwind, AssertUnwindSafe};

use mail_parser::{
    Address, HeaderName, HeaderValue, Message, MessageParser, MimeHeaders, PartType,
};
use serde::Serialize;

use crate::config::Limits;
use crate::error::AppError;
use crate::storage::sha256_hex;
use names::{clean_header_text, sanitize_display_name};

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug)]
pub struct ParsedAttachment {
    pub index: usize,
    pub display_name: String,
    pub content_type: String,
    pub sha256: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
pub struct ParsedMessage {
    /// `mid:<Message-ID>`, or `sha256:<hash of the CRLF-canonical bytes>` when it has none.
    pub dedup_key: String,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Vec<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub sent_at: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub raw_size: usize,
    pub raw_sha256: String,
    pub attachments: Vec<ParsedAttachment>,
}

fn mailboxes(a: Option<&Address>) -> Vec<Mailbox> {
    let Some(a) = a else { return Vec::new() };
    a.iter()
        .take(500)
        .map(|m| Mailbox {
            name: m.name().map(clean_header_text).filter(|s| !s.is_empty()),
            address: m
                .address()
                .map(|s| clean_header_text(s).to_ascii_lowercase())
                .filter(|s| !s.is_empty()),
        })
        .collect()
}

fn id_list(v: &HeaderValue) -> Vec<String> {
    let list: Vec<String> = match v {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|s| s.to_string()).collect(),
        _ => Vec::new(),
    };
    list.into_iter()
        .map(|s| clean_header_text(&s))
        .filter(|s| !s.is_empty() && s.len() <= 998)
        .take(200)
        .collect()
}

/// CRLF line endings everywhere, so LF and CRLF copies of one message hash alike.
fn canonical_hash(raw: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for line in raw.split(|b| *b == b'\n') {
        h.update(line.strip_suffix(b"\r").unwrap_or(line));
        h.update(b"\r\n");
    }
    hex::encode(h.finalize())
}

/// Counts parts and nesting depth across nested messages; stops as soon as a limit is hit.
fn check_structure(
    msg: &Message,
    base_depth: usize,
    limits: &Limits,
    count: &mut usize,
) -> Result<(), AppError> {
    let mut stack = vec![(0usize, base_depth)];
    while let Some((id, depth)) = stack.pop() {
        *count += 1;
        if *count > limits.max_parts {
            return Err(too_many_parts(limits));
        }
        if depth > limits.max_depth {
            return Err(AppError::unprocessable(
                "too-deep",
                format!(
                    "the message nests MIME parts deeper than the limit of {}",
                    limits.max_depth
                ),
            ));
        }
        let Some(part) = msg.parts.get(id) else {
            continue;
        };
        match &part.body {
            PartType::Multipart(children) => {
                stack.extend(children.iter().map(|c| (*c as usize, depth + 1)));
            }
            PartType::Message(inner) => check_structure(inner, depth + 1, limits, count)?,
            _ => {}
        }
    }
    Ok(())
}

fn too_many_parts(limits: &Limits) -> AppError {
    AppError::unprocessable(
        "too-many-parts",
        format!(
            "the message has more MIME parts than the limit of {}",
            limits.max_parts
        ),
    )
}

fn content_type_of(part: &mail_parser::MessagePart) -> String {
    if part.is_message() {
        return "message/rfc822".into();
    }
    let ct = part
        .content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    let ok = ct.len() <= 127
        && ct.split_once('/').is_some_and(|(a, b)| {
            let tok = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
            };
            tok(a) && tok(b)
        });
    if ok {
        ct
    } else {
        "application/octet-stream".into()
    }
}

/// Parses `raw` under `limits`. Blocking and CPU-bound: run it in `spawn_blocking`.
pub fn parse(raw: &[u8], limits: &Limits) -> Result<ParsedMessage, AppError> {
    if raw.len() > limits.max_message_bytes {
        return Err(AppError::too_large(format!(
            "the message is {} bytes; the limit is {}",
            raw.len(),
            limits.max_message_bytes
        )));
    }
    guarded(raw, || parse_inner(raw, limits))
}

/// mail-parser has panicked on rare inputs (upstream issue #155): a panic becomes a 422.
fn guarded(
    raw: &[u8],
    f: impl FnOnce() -> Result<ParsedMessage, AppError>,
) -> Result<ParsedMessage, AppError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(size = raw.len(), sha256 = %sha256_hex(raw), "mail parser panicked on input");
            Err(AppError::unprocessable(
                "unparseable-message",
                "the message could not be parsed as RFC 822 email",
            ))
        }
    }
}

fn parse_inner(raw: &[u8], limits: &Limits) -> Result<ParsedMessage, AppError> {
    let not_email = || {
        AppError::unprocessable(
            "not-an-email",
            "the bytes are not an RFC 822 email message (no header fields found)",
        )
    };
    let msg = MessageParser::default().parse(raw).ok_or_else(not_email)?;
    let has_known_header = msg
        .root_part()
        .headers
        .iter()
        .any(|h| !matches!(h.name, HeaderName::Other(_)));
    if !has_known_header {
        return Err(not_email());
    }
    let mut count = 0;
    check_structure(&msg, 0, limits, &mut count)?;

    let message_id = msg
        .message_id()
        .map(clean_header_text)
        .filter(|s| !s.is_empty() && s.len() <= 998);
    let raw_sha256 = sha256_hex(raw);
    let dedup_key = match &message_id {
        Some(mid) => format!("mid:{mid}"),
        None => format!("sha256:{}", canonical_hash(raw)),
    };
    let sent_at = msg.date().and_then(|d| {
        let s = d.to_rfc3339();
        crate::time_fmt::parse(&s).map(crate::time_fmt::format_utc)
    });
    let attachments = msg
        .attachments()
        .enumerate()
        .map(|(i, part)| {
            let bytes = part.contents().to_vec();
            let fallback = if part.is_message() {
                format!("message-{}.eml", i + 1)
            } else {
                format!("attachment-{}", i + 1)
            };
            let nested_subject = part
                .message()
                .and_then(|m| m.subject())
                .map(|s| format!("{s}.eml"));
            let raw_name = part
                .attachment_name()
                .map(str::to_string)
                .or(nested_subject);
            ParsedAttachment {
                index: i,
                display_name: sanitize_display_name(raw_name.as_deref().unwrap_or(""), &fallback),
                content_type: content_type_of(part),
                sha256: sha256_hex(&bytes),
                bytes,
            }
        })
        .collect();
    Ok(ParsedMessage {
        dedup_key,
        message_id,
        subject: msg.subject().map(clean_header_text),
        from: mailboxes(msg.from()),
        to: mailboxes(msg.to()),
        cc: mailboxes(msg.cc()),
        sent_at,
        in_reply_to: id_list(msg.in_reply_to()),
        references: id_list(msg.references()),
        raw_size: raw.len(),
        raw_sha256,
        attachments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parser_panic_becomes_a_422() {
        let err = guarded(b"x", || panic!("parser bug")).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.slug(), "unparseable-message");
    }

    #[test]
    fn parses_within_limits_and_caps_size_first() {
        let limits = Limits {
            max_message_bytes: 1 << 20,
            max_parts: 1000,
            max_depth: 32,
        };
        let ok = parse(b"From: a@b.c\r\nSubject: hi\r\n\r\nbody\r\n", &limits).unwrap();
        assert_eq!(ok.subject.as_deref(), Some("hi"));
        assert!(ok.dedup_key.starts_with("sha256:"));
        let tiny = Limits {
            max_message_bytes: 4,
            ..limits
        };
        assert_eq!(
            parse(b"From: a@b.c\r\n\r\nx", &tiny).unwrap_err().slug(),
            "too-large"
        );
    }
}
