//! Attachment names are attacker-controlled. They are cleaned for display only; stored files
//! are named by content hash and no name ever reaches a filesystem path.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

const MAX_NAME_BYTES: usize = 255;

/// Characters that display as nothing: Unicode's Default_Ignorable_Code_Point (soft hyphen,
/// Mongolian vowel separator, zero-width and bidi controls, variation selectors, tags,
/// Hangul fillers…; DerivedCoreProperties.txt, via ICU4X's compiled data).
fn is_invisible_or_bidi(c: char) -> bool {
    use icu_properties::{props::DefaultIgnorableCodePoint, CodePointSetData};
    CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
}

fn is_windows_reserved(stem: &str) -> bool {
    let s = stem.trim_end_matches([' ', '.']).to_ascii_uppercase();
    matches!(
        s.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || ((s.starts_with("COM") || s.starts_with("LPT"))
        && s.len() == 4
        && s.as_bytes()[3].is_ascii_digit())
        || ((s.starts_with("COM") || s.starts_with("LPT")) && matches!(&s[3..], "¹" | "²" | "³"))
}

/// A safe display name: last path component only, no control/bidi/invisible characters, no
/// characters Windows forbids, no trailing dots or spaces, not a reserved device name, at
/// most 255 bytes (keeping a short extension). Empty results become `fallback`.
pub fn sanitize_display_name(raw: &str, fallback: &str) -> String {
    let unified = raw.replace('\\', "/");
    let mut last = unified.rsplit('/').next().unwrap_or("").to_string();
    // A drive prefix left without a slash ("C:evil.exe").
    if last.len() >= 2 && last.as_bytes()[1] == b':' && last.as_bytes()[0].is_ascii_alphabetic() {
        last = last[2..].to_string();
    }
    let mut name: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_invisible_or_bidi(*c))
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c => c,
        })
        .collect();
    name = name
        .trim()
        .trim_end_matches(['.', ' '])
        .trim_start_matches('.')
        .trim()
        .to_string();
    if name.is_empty() {
        return fallback.to_string();
    }
    let stem = name.split('.').next().unwrap_or("");
    if is_windows_reserved(stem) {
        name.insert(0, '_');
    }
    if name.len() > MAX_NAME_BYTES {
        let ext = name
            .rfind('.')
            .map(|i| name[i..].to_string())
            .filter(|e| e.len() <= 16)
            .unwrap_or_default();
        let mut cut = MAX_NAME_BYTES - ext.len();
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}{}", &name[..cut], ext);
    }
    name
}

/// Header text from a message (subject, display names) with control characters removed.
pub fn clean_header_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\t' || c == '\r' || c == '\n' {
                ' '
            } else {
                c
            }
        })
        .filter(|c| !c.is_control() && !is_invisible_or_bidi(*c))
        .collect::<String>()
        .trim()
        .to_string()
}

/// RFC 5987 `attr-char`: ALPHA / DIGIT / "!#$&+-.^_`|~".
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition: attachment` with an ASCII fallback and the exact UTF-8 name
/// (RFC 6266 / RFC 5987). `name` must already be sanitised.
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' && c != '%' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR_CHAR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names() {
        let f = "attachment-1";
        assert_eq!(sanitize_display_name("../../etc/passwd", f), "passwd");
        assert_eq!(sanitize_display_name("/etc/shadow", f), "shadow");
        assert_eq!(
            sanitize_display_name("C:\\Windows\\system32\\cmd.exe", f),
            "cmd.exe"
        );
        assert_eq!(sanitize_display_name("C:evil.exe", f), "evil.exe");
        assert_eq!(sanitize_display_name("a\0b\x07c.pdf", f), "abc.pdf");
        assert_eq!(
            sanitize_display_name("invoice\u{202E}fdp.exe", f),
            "invoicefdp.exe"
        );
        assert_eq!(sanitize_display_name("CON", f), "_CON");
        assert_eq!(sanitize_display_name("nul.txt", f), "_nul.txt");
        assert_eq!(sanitize_display_name("lpt9.doc", f), "_lpt9.doc");
        assert_eq!(sanitize_display_name("report.pdf. . ", f), "report.pdf");
        assert_eq!(sanitize_display_name("..", f), f);
        assert_eq!(sanitize_display_name("", f), f);
        assert_eq!(sanitize_display_name("report:v2?.txt", f), "report_v2_.txt");
        let long = format!("{}.pdf", "é".repeat(300));
        let s = sanitize_display_name(&long, f);
        assert!(s.len() <= 255 && s.ends_with(".pdf"), "{s}");
        assert_eq!(
            sanitize_display_name("Brief für Gericht.pdf", f),
            "Brief für Gericht.pdf"
        );
    }

    #[test]
    fn default_ignorable_code_points_are_removed() {
        let f = "attachment-1";
        // Soft hyphen, Mongolian vowel separator, combining grapheme joiner, Hangul filler,
        // a variation selector, an invisible operator and a tag character.
        for c in [
            '\u{00AD}',
            '\u{180E}',
            '\u{034F}',
            '\u{3164}',
            '\u{FE0F}',
            '\u{2064}',
            '\u{E0041}',
        ] {
            let name = format!("in{c}voice.pdf");
            assert_eq!(
                sanitize_display_name(&name, f),
                "invoice.pdf",
                "U+{:04X}",
                c as u32
            );
            assert_eq!(clean_header_text(&format!("Re{c}: x")), "Re: x");
        }
        // Visible characters stay, accents and non-Latin scripts included.
        assert_eq!(
            sanitize_display_name("Ünïcødé 書類.pdf", f),
            "Ünïcødé 書類.pdf"
        );
    }

    #[test]
    fn disposition_encoding() {
        assert_eq!(
            content_disposition("Brief für \"X\".pdf"),
            "attachment; filename=\"Brief f_r _X_.pdf\"; filename*=UTF-8''Brief%20f%C3%BCr%20%22X%22.pdf"
        );
    }
}
