//! Turning untrusted bytes into a [`ParsedMessage`]: size cap before parsing, a guarded parse
//! (mail-parser can panic on rare inputs), then part-count and depth limits, canonical header
//! values and display-safe attachment names.

pub mod content;
pub mod guard;
pub mod names;

use std::panic::{catch_unwind, AssertUnwindSafe};

use mail_parser::{Address, HeaderName, HeaderValue, Message, MimeHeaders, PartType};
use serde::Serialize;

use crate::config::Limits;
use crate::error::AppError;
use crate::storage::sha256_hex;
use names::{clean_header_text, sanitize_display_name};

/// One address of From, To or Cc: `{"name": "Dana Client", "address": "dana@acme.com"}`
/// (either may be null).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug)]
pub struct ParsedAttachment {
    /// 0-based position in the message's attachment list (what `attachments: [..]` picks).
    pub index: usize,
    pub display_name: String,
    pub content_type: String,
    /// SHA-256 of the attachment's bytes, lowercase hex.
    pub sha256: String,
    /// Length of the attachment's bytes.
    pub size: usize,
    /// Where its bytes are in the raw message; [`ParsedAttachment::bytes`] decodes them.
    pub source: AttachmentSource,
    /// An inline part of the HTML body (a signature logo): kept, but offered unticked.
    pub inline: bool,
    /// A uuencoded `begin … end` block found in the text body rather than a MIME part.
    pub from_uuencoded_body: bool,
    /// How the part was sent (its Content-Transfer-Encoding).
    pub encoding: content::TransferEncoding,
}

/// Where an attachment's bytes come from in the raw message. They are decoded when needed
/// (once at parse time for the hash and size, once more when stored), so that a filing
/// never holds every decoded attachment at once: its peak is the raw message and one
/// attachment, not twice the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentSource {
    /// A MIME part's body, `raw[start..end]`, sent with `encoding`.
    Part {
        start: usize,
        end: usize,
        encoding: content::TransferEncoding,
    },
    /// The `block`-th uuencoded block of the text part whose body is `raw[start..end]`.
    Uuencoded {
        start: usize,
        end: usize,
        encoding: content::TransferEncoding,
        block: usize,
    },
}

impl ParsedAttachment {
    /// Exactly the bytes left after undoing the Content-Transfer-Encoding (see
    /// [`content`]), decoded from `raw`, the message this attachment was parsed from.
    pub fn bytes(&self, raw: &[u8]) -> Vec<u8> {
        match self.source {
            AttachmentSource::Part {
                start,
                end,
                encoding,
            } => encoding.decode(raw.get(start..end).unwrap_or_default()),
            AttachmentSource::Uuencoded {
                start,
                end,
                encoding,
                block,
            } => {
                let text = encoding.decode(raw.get(start..end).unwrap_or_default());
                content::uudecode_blocks(&text)
                    .into_iter()
                    .nth(block)
                    .map(|b| b.bytes)
                    .unwrap_or_default()
            }
        }
    }
}

#[derive(Debug, Default)]
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
    /// What the message says, hashed so that transfer encoding, line endings and header
    /// folding do not change it (see [`content_fingerprint`]): two messages with one
    /// Message-ID are the same message only when this is equal too.
    pub content_sha256: String,
    pub attachments: Vec<ParsedAttachment>,
    /// The start of the body's text (text parts, or the HTML converted to text), at most
    /// [`BODY_EXCERPT_CHARS`] characters: what suggestions read (record words, the senders
    /// of forwarded mail quoted in it).
    pub body_excerpt: String,
}

/// Longest [`ParsedMessage::body_excerpt`], in characters.
pub const BODY_EXCERPT_CHARS: usize = 4000;

/// Longest display form of one header value, in characters; the raw message keeps it whole.
pub const MAX_HEADER_DISPLAY_CHARS: usize = 2000;

/// A header value's display form: [`clean_header_text`], cut after
/// [`MAX_HEADER_DISPLAY_CHARS`] characters with a visible mark.
pub fn display_text(s: &str) -> String {
    let clean = clean_header_text(s);
    match clean.char_indices().nth(MAX_HEADER_DISPLAY_CHARS) {
        Some((at, _)) => format!("{}… [cut]", &clean[..at]),
        None => clean,
    }
}

/// Rejects a message whose header block (up to the first empty line) is over the limit.
fn check_header_block(raw: &[u8], limits: &Limits) -> Result<(), AppError> {
    let window = &raw[..raw.len().min(limits.max_header_bytes.saturating_add(4))];
    let end = memchr::memmem::find(window, b"\n\n")
        .or_else(|| memchr::memmem::find(window, b"\n\r\n"))
        .unwrap_or(raw.len());
    if end > limits.max_header_bytes {
        return Err(AppError::unprocessable(
            "headers-too-large",
            format!(
                "the message's header block is over the limit of {} bytes",
                limits.max_header_bytes
            ),
        ));
    }
    Ok(())
}

fn mailboxes(a: Option<&Address>) -> Vec<Mailbox> {
    let Some(a) = a else { return Vec::new() };
    a.iter()
        .take(500)
        .map(|m| Mailbox {
            name: m.name().map(display_text).filter(|s| !s.is_empty()),
            address: m
                .address()
                .map(|s| display_text(s).to_ascii_lowercase())
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

/// Counts parts and nesting depth across nested messages, without recursion; stops as soon
/// as a limit is hit.
fn check_structure(root: &Message, limits: &Limits) -> Result<(), AppError> {
    let mut count = 0usize;
    let mut stack: Vec<(&Message, usize, usize)> = vec![(root, 0, 0)];
    while let Some((msg, id, depth)) = stack.pop() {
        count += 1;
        if count > limits.max_parts {
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
                stack.extend(children.iter().map(|c| (msg, *c as usize, depth + 1)));
            }
            PartType::Message(inner) => stack.push((inner, 0, depth + 1)),
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

/// The message's attachments, in order: its MIME attachment parts (forwarded messages each
/// a complete `.eml`), then the uuencoded `begin … end` blocks found in its text body.
fn attachments(raw: &[u8], msg: &Message) -> Vec<ParsedAttachment> {
    let parents = content::parents(msg);
    let mut out: Vec<ParsedAttachment> = Vec::new();
    for &id in &msg.attachments {
        let Some(part) = msg.parts.get(id as usize) else {
            continue;
        };
        let i = out.len();
        let fallback = if part.is_message() {
            format!("message-{}.eml", i + 1)
        } else {
            format!("attachment-{}", i + 1)
        };
        let bytes = content::part_bytes(raw, part);
        let (start, end) = content::raw_body_range(raw, part);
        let encoding = content::transfer_encoding(raw, part);
        let source = match part.body {
            PartType::Multipart(_) => AttachmentSource::Part {
                start,
                end: start,
                encoding,
            },
            _ => AttachmentSource::Part {
                start,
                end,
                encoding,
            },
        };
        // A forwarded message is named after its subject (its headers only are parsed).
        let nested_subject = || {
            let headers = guard::parser().parse_headers(&bytes[..])?;
            let subject = headers.subject().map(|s| format!("{s}.eml"));
            guard::dismantle(headers);
            subject
        };
        let raw_name = part
            .attachment_name()
            .map(str::to_string)
            .or_else(|| part.is_message().then(nested_subject).flatten());
        out.push(ParsedAttachment {
            index: i,
            display_name: sanitize_display_name(raw_name.as_deref().unwrap_or(""), &fallback),
            content_type: content_type_of(part),
            sha256: sha256_hex(&bytes),
            size: bytes.len(),
            source,
            inline: content::is_inline_part(raw, msg, id as usize, &parents),
            from_uuencoded_body: false,
            encoding,
        });
    }
    for &id in &msg.text_body {
        let Some(part) = msg.parts.get(id as usize) else {
            continue;
        };
        if !matches!(part.body, PartType::Text(_)) {
            continue;
        }
        let (start, end) = content::raw_body_range(raw, part);
        let encoding = content::transfer_encoding(raw, part);
        let blocks = content::uudecode_blocks(&content::part_bytes(raw, part));
        for (k, block) in blocks.into_iter().enumerate() {
            let i = out.len();
            out.push(ParsedAttachment {
                index: i,
                display_name: sanitize_display_name(&block.name, &format!("attachment-{}", i + 1)),
                content_type: "application/octet-stream".into(),
                sha256: sha256_hex(&block.bytes),
                size: block.bytes.len(),
                source: AttachmentSource::Uuencoded {
                    start,
                    end,
                    encoding,
                    block: k,
                },
                inline: false,
                from_uuencoded_body: true,
                encoding: content::TransferEncoding::Uuencode,
            });
        }
    }
    out
}

/// Parses `raw` under `limits`. Blocking and CPU-bound: run it through [`guard::isolated`]
/// (or [`parse_isolated`]), never on an async worker or a small-stack thread.
pub fn parse(raw: &[u8], limits: &Limits) -> Result<ParsedMessage, AppError> {
    parse_unmetered(raw, limits).inspect_err(|e| crate::metrics::global().parse_rejected(e))
}

fn parse_unmetered(raw: &[u8], limits: &Limits) -> Result<ParsedMessage, AppError> {
    if raw.len() > limits.max_message_bytes {
        return Err(AppError::too_large(format!(
            "the message is {} bytes; the limit is {}",
            raw.len(),
            limits.max_message_bytes
        )));
    }
    check_header_block(raw, limits)?;
    guarded(raw, || {
        guard::with_message(raw, limits, |msg| extract(raw, msg, limits))
    })
}

/// [`parse`] on a parser thread (see [`guard`]): the one way async code parses a message.
pub async fn parse_isolated(
    raw: std::sync::Arc<Vec<u8>>,
    limits: Limits,
) -> Result<ParsedMessage, AppError> {
    guard::isolated(move || parse(&raw, &limits)).await
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

fn extract(raw: &[u8], msg: &Message, limits: &Limits) -> Result<ParsedMessage, AppError> {
    let has_known_header = msg
        .root_part()
        .headers
        .iter()
        .any(|h| !matches!(h.name, HeaderName::Other(_)));
    if !has_known_header {
        return Err(guard::not_email());
    }
    check_structure(msg, limits)?;

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
    let attachments = attachments(raw, msg);
    let mut parsed = ParsedMessage {
        dedup_key,
        message_id,
        subject: msg.subject().map(display_text),
        from: mailboxes(msg.from()),
        to: mailboxes(msg.to()),
        cc: mailboxes(msg.cc()),
        sent_at,
        in_reply_to: id_list(msg.in_reply_to()),
        references: id_list(msg.references()),
        raw_size: raw.len(),
        raw_sha256,
        content_sha256: String::new(),
        attachments,
        body_excerpt: String::new(),
    };
    let texts = content::body_texts(raw, msg, 100);
    parsed.content_sha256 = content_fingerprint(raw, msg, &texts, &parsed);
    parsed.body_excerpt = excerpt(&texts);
    Ok(parsed)
}

/// SHA-256 over what the message says: its header fields except the transport's (trace
/// fields, `X-*`, DKIM/ARC signatures, and the MIME framing `Content-Type` /
/// `Content-Transfer-Encoding`), each unfolded with white space collapsed, sorted; the
/// decoded text and HTML bodies (line endings and trailing white space normalised); and each
/// attachment's name, type and content (line endings normalised only for parts sent
/// unencoded, whose line endings the transport may change). So the same message fetched
/// twice, with CRLF or LF, refolded or re-encoded (base64 ↔ quoted-printable ↔ 8bit) has
/// one fingerprint; a message differing in any header a reader sees, in its body or in an
/// attachment's name or bytes has another.
fn content_fingerprint(raw: &[u8], msg: &Message, texts: &[String], p: &ParsedMessage) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(b"docket-content-v2");
    for (name, value) in reader_headers(raw, msg) {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    for text in texts.iter().chain(&content::body_htmls(raw, msg, 100)) {
        field(normalised_text(text.as_bytes()).as_slice());
    }
    for a in &p.attachments {
        field(a.display_name.as_bytes());
        field(a.content_type.as_bytes());
        match a.encoding {
            content::TransferEncoding::Identity => field(&lf_line_endings(&a.bytes(raw))),
            _ => field(a.sha256.as_bytes()),
        }
    }
    hex::encode(h.finalize())
}

/// The first [`BODY_EXCERPT_CHARS`] characters of the body texts, joined by new lines.
fn excerpt(texts: &[String]) -> String {
    let mut out = String::new();
    let mut left = BODY_EXCERPT_CHARS;
    for t in texts {
        if left == 0 {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
            left -= 1;
        }
        let part: String = t.chars().take(left).collect();
        left -= part.chars().count();
        out.push_str(&part);
    }
    out
}

/// The top-level header fields a reader sees (see [`content_fingerprint`]), as sorted
/// (lowercase name, unfolded value) pairs.
fn reader_headers(raw: &[u8], msg: &Message) -> Vec<(String, String)> {
    const TRANSPORT: &[&str] = &[
        "received",
        "return-path",
        "delivered-to",
        "dkim-signature",
        "domainkey-signature",
        "authentication-results",
        "received-spf",
        "content-type",
        "content-transfer-encoding",
        "content-length",
        "lines",
        "status",
        "x-status",
    ];
    let mut out: Vec<(String, String)> = msg
        .root_part()
        .headers
        .iter()
        .filter_map(|h| {
            let name = h.name.as_str().to_ascii_lowercase();
            let transport = TRANSPORT.contains(&name.as_str())
                || name.starts_with("x-")
                || name.starts_with("arc-");
            let start = (h.offset_start as usize).min(raw.len());
            let end = (h.offset_end as usize).clamp(start, raw.len());
            let value = String::from_utf8_lossy(&raw[start..end]);
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            (!transport).then_some((name, value))
        })
        .collect();
    out.sort();
    out
}

fn lf_line_endings(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.retain(|c| *c != b'\r');
    v
}

/// Line endings as LF, trailing white space of each line and trailing blank lines dropped.
fn normalised_text(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for line in b.split(|c| *c == b'\n') {
        let mut line = line;
        while let [head @ .., b' ' | b'\t' | b'\r'] = line {
            line = head;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    while out.last() == Some(&b'\n') {
        out.pop();
    }
    out
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
            max_header_bytes: 1 << 20,
            ..Limits::default()
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

    /// A message with one 7bit JSON attachment; `extra` goes into the header block,
    /// `name` names the attachment, `eol` is the line ending used throughout.
    fn fp_message(extra: &str, name: &str, data: &str, eol: &str) -> String {
        let m = format!(
            "From: dana@acme.com\nTo: bob@firm.test\n{extra}Subject: Offer\nMessage-ID: <same@acme.com>\n\
             MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\
             Content-Type: text/plain\n\nSee attached.\n--b\n\
             Content-Type: application/json; name={name}\nContent-Disposition: attachment; filename={name}\n\n\
             {data}\n--b--\n"
        );
        m.replace('\n', eol)
    }

    fn fingerprint(m: &str) -> String {
        parse(m.as_bytes(), &Limits::default())
            .unwrap()
            .content_sha256
    }

    #[test]
    fn the_fingerprint_ignores_transport_and_sees_what_a_reader_sees() {
        let base = fingerprint(&fp_message("", "a.json", "{\"x\": 1}\n{\"y\": 2}", "\r\n"));
        // The same message with LF line endings, and with transport headers added.
        assert_eq!(
            base,
            fingerprint(&fp_message("", "a.json", "{\"x\": 1}\n{\"y\": 2}", "\n"))
        );
        let trace = "Received: from mx by mx\nX-Gm-Message-State: abc\nDKIM-Signature: v=1\n";
        assert_eq!(
            base,
            fingerprint(&fp_message(
                trace,
                "a.json",
                "{\"x\": 1}\n{\"y\": 2}",
                "\r\n"
            ))
        );
        // What a reader sees differs: Bcc, Reply-To, the attachment's name or bytes.
        for other in [
            fp_message(
                "Bcc: eve@acme.com\n",
                "a.json",
                "{\"x\": 1}\n{\"y\": 2}",
                "\r\n",
            ),
            fp_message(
                "Reply-To: eve@acme.com\n",
                "a.json",
                "{\"x\": 1}\n{\"y\": 2}",
                "\r\n",
            ),
            fp_message("", "FINAL.json", "{\"x\": 1}\n{\"y\": 2}", "\r\n"),
            fp_message("", "a.json", "{\"x\": 1}\t\n{\"y\": 2}", "\r\n"),
        ] {
            assert_ne!(base, fingerprint(&other), "{other}");
        }
    }
}
