//! An attachment's stored bytes: exactly the bytes left after undoing the part's
//! Content-Transfer-Encoding (RFC 2045 §6), never re-encoded by charset. mail-parser's
//! `contents()` decodes every `text/*` part through its charset into UTF-8 (a PNG labelled
//! `text/plain` gains U+FFFD, a windows-1252 file changes size, an unknown charset loses
//! its bytes), so docket takes the part's raw body from the message by offset and undoes
//! the transfer encoding itself.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

/// The transfer encodings docket undoes (RFC 2045 §6.1; `x-uuencode` is the de-facto one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEncoding {
    /// `7bit`, `8bit`, `binary`, absent or unknown: the body is the content.
    Identity,
    Base64,
    QuotedPrintable,
    /// `x-uuencode`, `uuencode`, `x-uue`, `uue`.
    Uuencode,
}

impl TransferEncoding {
    /// From a `Content-Transfer-Encoding` value (case-insensitive).
    pub fn from_header(value: Option<&str>) -> Self {
        let v = value.unwrap_or("").trim().to_ascii_lowercase();
        match v.as_str() {
            "base64" => Self::Base64,
            "quoted-printable" => Self::QuotedPrintable,
            "x-uuencode" | "uuencode" | "x-uue" | "uue" => Self::Uuencode,
            _ => Self::Identity,
        }
    }

    pub fn decode(self, body: &[u8]) -> Vec<u8> {
        match self {
            Self::Identity => body.to_vec(),
            Self::Base64 => decode_base64(body),
            Self::QuotedPrintable => decode_quoted_printable(body),
            Self::Uuencode => uudecode_blocks(body)
                .into_iter()
                .next()
                .map(|b| b.bytes)
                .unwrap_or_else(|| body.to_vec()),
        }
    }
}

/// The part's body as sent, from `raw` (the bytes `msg` was parsed from).
pub fn raw_body<'a>(raw: &'a [u8], part: &MessagePart) -> &'a [u8] {
    let (start, end) = raw_body_range(raw, part);
    &raw[start..end]
}

/// Where a part's body lies in the raw message (byte offsets, clamped to it).
pub fn raw_body_range(raw: &[u8], part: &MessagePart) -> (usize, usize) {
    let start = (part.raw_body_offset() as usize).min(raw.len());
    let end = (part.raw_end_offset() as usize).clamp(start, raw.len());
    (start, end)
}

/// A part's `Content-Transfer-Encoding`, read from the raw header (docket's parser does not
/// parse it: see `guard::parser`). Folded lines are joined; absent is identity.
pub fn transfer_encoding(raw: &[u8], part: &MessagePart) -> TransferEncoding {
    let header = part
        .headers
        .iter()
        .rev()
        .find(|h| h.name == mail_parser::HeaderName::ContentTransferEncoding);
    let Some(h) = header else {
        return TransferEncoding::Identity;
    };
    let start = (h.offset_start as usize).min(raw.len());
    let end = (h.offset_end as usize).clamp(start, raw.len());
    let value = String::from_utf8_lossy(&raw[start..end]);
    let value: String = value.split_whitespace().collect::<Vec<_>>().join(" ");
    TransferEncoding::from_header(Some(&value))
}

/// The stored bytes of a part: its raw body with the transfer encoding undone. A forwarded
/// message (`message/rfc822`) is the complete message it carries.
pub fn part_bytes(raw: &[u8], part: &MessagePart) -> Vec<u8> {
    if matches!(part.body, PartType::Multipart(_)) {
        return Vec::new();
    }
    transfer_encoding(raw, part).decode(raw_body(raw, part))
}

/// A text part as text: transfer encoding undone, then its charset (mail-parser's
/// decoders; UTF-8, lossily, when absent or unknown).
pub fn text_of(raw: &[u8], part: &MessagePart) -> String {
    let bytes = part_bytes(raw, part);
    let decoder = part
        .content_type()
        .and_then(|ct| ct.attribute("charset"))
        .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()));
    match decoder {
        Some(decode) => decode(&bytes),
        None => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Whether a part is HTML (`text/html`).
pub fn is_html(part: &MessagePart) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("html"))
    })
}

/// The message's body parts as text, in order: its text parts, or — when it has none — its
/// HTML parts converted to text. At most `max_parts` parts.
pub fn body_texts(raw: &[u8], msg: &Message, max_parts: usize) -> Vec<String> {
    let text: Vec<String> = msg
        .text_body
        .iter()
        .filter_map(|id| msg.parts.get(*id as usize))
        .take(max_parts)
        .map(|p| match is_html(p) {
            true => mail_parser::decoders::html::html_to_text(&text_of(raw, p)),
            false => text_of(raw, p),
        })
        .collect();
    if !text.is_empty() {
        return text;
    }
    body_htmls(raw, msg, max_parts)
        .iter()
        .map(|h| mail_parser::decoders::html::html_to_text(h))
        .collect()
}

/// The message's HTML body parts, decoded, in order (at most `max_parts`).
pub fn body_htmls(raw: &[u8], msg: &Message, max_parts: usize) -> Vec<String> {
    msg.html_body
        .iter()
        .filter_map(|id| msg.parts.get(*id as usize))
        .filter(|p| is_html(p))
        .take(max_parts)
        .map(|p| text_of(raw, p))
        .collect()
}

/// Base64 as mail readers decode it (RFC 2045 §6.8): characters outside the alphabet are
/// ignored, decoding stops at padding, and a trailing partial quantum keeps its whole bytes.
///
/// Lines made only of whole 4-character quanta of the alphabet (what MIME encoders write)
/// are decoded a line at a time by the `base64` crate; anything else goes through the
/// character-by-character reader, which defines the result.
pub fn decode_base64(body: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let mut out = Vec::with_capacity(body.len() / 4 * 3);
    let mut reader = Base64Reader::default();
    let mut rest = body;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, next) = rest.split_at(end);
        rest = next;
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        // The crate refuses any character outside the alphabet (padding included, with
        // NO_PAD): such a line goes to the reader below, from the same place.
        if reader.bits == 0 && content.len() % 4 == 0 {
            let at = out.len();
            out.resize(at + content.len() / 4 * 3, 0);
            let engine = &base64::engine::general_purpose::STANDARD_NO_PAD;
            if let Ok(n) = engine.decode_slice(content, &mut out[at..]) {
                out.truncate(at + n);
                continue;
            }
            out.truncate(at);
        }
        if reader.feed(line, &mut out).is_break() {
            break;
        }
    }
    out
}

/// The value of a base64 alphabet character (RFC 4648 §4), `None` for anything else.
fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// The character-by-character base64 reader: bits carried between lines.
#[derive(Default)]
struct Base64Reader {
    acc: u32,
    bits: u32,
}

impl Base64Reader {
    /// Decodes `chunk` into `out`; `Break` at padding.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> std::ops::ControlFlow<()> {
        for &c in chunk {
            if c == b'=' {
                return std::ops::ControlFlow::Break(());
            }
            let Some(v) = b64_value(c) else { continue };
            self.acc = (self.acc << 6) | v as u32;
            self.bits += 6;
            if self.bits >= 8 {
                self.bits -= 8;
                out.push((self.acc >> self.bits) as u8);
                self.acc &= (1 << self.bits) - 1;
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` octets (either case), soft line breaks removed,
/// trailing white space on encoded lines dropped (rule 3); a malformed `=` is kept as is.
pub fn decode_quoted_printable(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while !rest.is_empty() {
        let nl = memchr::memchr(b'\n', rest);
        let (line, brk, next) = match nl {
            Some(i) => {
                let line = &rest[..i];
                let (line, brk): (&[u8], &[u8]) = match line.strip_suffix(b"\r") {
                    Some(l) => (l, b"\r\n"),
                    None => (line, b"\n"),
                };
                (line, brk, &rest[i + 1..])
            }
            None => (rest, &b""[..], &b""[..]),
        };
        let line = trim_end_ws(line);
        let soft = line.last() == Some(&b'=');
        let content = if soft { &line[..line.len() - 1] } else { line };
        unescape_qp(content, &mut out);
        if !soft {
            out.extend_from_slice(brk);
        }
        rest = next;
    }
    out
}

fn trim_end_ws(mut s: &[u8]) -> &[u8] {
    while let [head @ .., b' ' | b'\t'] = s {
        s = head;
    }
    s
}

fn unescape_qp(s: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'=' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
}

/// One `begin <mode> <name>` … `end` block of uuencoded data (POSIX `uuencode` format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UuBlock {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Every uuencoded block in `text`, decoded. A block needs its `begin` line with an octal
/// mode and a name, and ends at `end` (or where its data lines stop).
pub fn uudecode_blocks(text: &[u8]) -> Vec<UuBlock> {
    let mut blocks = Vec::new();
    let mut lines = text
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    while let Some(line) = lines.next() {
        let Some(name) = begin_line(line) else {
            continue;
        };
        let mut bytes = Vec::new();
        for data in lines.by_ref() {
            if data == b"end" || !uudecode_line(data, &mut bytes) {
                break;
            }
        }
        blocks.push(UuBlock { name, bytes });
    }
    blocks
}

/// `begin 644 exhibit.png` → `exhibit.png`.
fn begin_line(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"begin ")?;
    let sp = rest.iter().position(|b| *b == b' ')?;
    let (mode, name) = (&rest[..sp], &rest[sp + 1..]);
    let octal = (3..=4).contains(&mode.len()) && mode.iter().all(|b| (b'0'..=b'7').contains(b));
    let name = String::from_utf8_lossy(name).trim().to_string();
    (octal && !name.is_empty()).then_some(name)
}

/// Decodes one data line into `out`; `false` at the terminating zero-length line or on a
/// line that is not uuencoded data.
fn uudecode_line(line: &[u8], out: &mut Vec<u8>) -> bool {
    let Some((&len_ch, data)) = line.split_first() else {
        return false;
    };
    if !(b' '..=b'`').contains(&len_ch) {
        return false;
    }
    let n = ((len_ch - b' ') & 0x3f) as usize;
    if n == 0 {
        return false;
    }
    let val = |c: u8| (c.wrapping_sub(b' ')) & 0x3f;
    let mut produced = 0;
    for quad in data.chunks(4) {
        let q: Vec<u8> = (0..4).map(|i| val(*quad.get(i).unwrap_or(&b'`'))).collect();
        let bytes = [
            (q[0] << 2) | (q[1] >> 4),
            (q[1] << 4) | (q[2] >> 2),
            (q[2] << 6) | q[3],
        ];
        for b in bytes {
            if produced < n {
                out.push(b);
                produced += 1;
            }
        }
    }
    true
}

/// Whether an attachment part is an inline part of the HTML body (RFC 2387
/// `multipart/related` member with a Content-ID, or a Content-ID the HTML refers to with
/// `cid:`), and not marked `Content-Disposition: attachment`. Gmail lists such parts apart
/// from the attachments; docket keeps them but does not offer them ticked.
pub fn is_inline_part(
    raw: &[u8],
    msg: &Message,
    part_id: usize,
    parents: &[Option<usize>],
) -> bool {
    let Some(part) = msg.parts.get(part_id) else {
        return false;
    };
    let Some(cid) = part.content_id() else {
        return false;
    };
    if part
        .content_disposition()
        .is_some_and(|d| d.is_attachment())
    {
        return false;
    }
    let in_related = parents
        .get(part_id)
        .copied()
        .flatten()
        .and_then(|p| msg.parts.get(p))
        .and_then(|p| p.content_type())
        .is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("related"))
        });
    in_related || html_refers_to(raw, msg, cid)
}

fn html_refers_to(raw: &[u8], msg: &Message, cid: &str) -> bool {
    let id = cid.trim().trim_start_matches('<').trim_end_matches('>');
    if id.is_empty() {
        return false;
    }
    let needle = format!("cid:{id}").to_ascii_lowercase();
    body_htmls(raw, msg, 20)
        .iter()
        .any(|h| h.to_ascii_lowercase().contains(&needle))
}

/// The parent of each part of `msg` (its enclosing multipart), by part id.
pub fn parents(msg: &Message) -> Vec<Option<usize>> {
    let mut parents = vec![None; msg.parts.len()];
    for (id, part) in msg.parts.iter().enumerate() {
        if let PartType::Multipart(children) = &part.body {
            for c in children {
                if let Some(slot) = parents.get_mut(*c as usize) {
                    *slot = Some(id);
                }
            }
        }
    }
    parents
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_lenient_like_mail_readers() {
        assert_eq!(decode_base64(b"aGVs\r\nbG8="), b"hello");
        assert_eq!(decode_base64(b"aGVsbG8"), b"hello");
        assert_eq!(decode_base64(b"aG!Vs bG8=\r\n"), b"hello");
    }

    #[test]
    fn base64_fast_lines_decode_as_the_character_reader_does() {
        let reference = |body: &[u8]| {
            let mut out = Vec::new();
            let _ = Base64Reader::default().feed(body, &mut out);
            out
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for _ in 0..3000 {
            let len = (next() % 400) as usize;
            let body: Vec<u8> = (0..len)
                .map(|_| match next() % 40 {
                    0 => b'\n',
                    1 => b'\r',
                    2 => b'=',
                    3 => b' ',
                    4 => b'!',
                    _ => alphabet[(next() % 64) as usize],
                })
                .collect();
            assert_eq!(
                decode_base64(&body),
                reference(&body),
                "{:?}",
                String::from_utf8_lossy(&body)
            );
        }
        let mime: Vec<u8> = (0..50)
            .flat_map(|i| {
                let mut l: Vec<u8> = (0..76).map(|j| alphabet[(i * 7 + j) % 64]).collect();
                l.extend_from_slice(b"\r\n");
                l
            })
            .collect();
        assert_eq!(decode_base64(&mime), reference(&mime));
    }

    #[test]
    fn quoted_printable_soft_breaks_escapes_and_trailing_space() {
        assert_eq!(
            decode_quoted_printable(b"a=3Db=\r\nc  \r\nd=3d"),
            b"a=bc\r\nd="
        );
        assert_eq!(decode_quoted_printable(b"caf=C3=A9\n"), "café\n".as_bytes());
        assert_eq!(decode_quoted_printable(b"50=% off"), b"50=% off");
    }

    #[test]
    fn uuencoded_blocks_decode() {
        let text = b"Hi\r\n\r\nbegin 644 cat.txt\r\n#8V%T\r\n`\r\nend\r\nbye\r\n";
        let blocks = uudecode_blocks(text);
        assert_eq!(
            blocks,
            vec![UuBlock {
                name: "cat.txt".into(),
                bytes: b"cat".to_vec()
            }]
        );
        assert_eq!(TransferEncoding::Uuencode.decode(text), b"cat");
        assert!(uudecode_blocks(b"begin now, please\r\n").is_empty());
    }
}
