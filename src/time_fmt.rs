//! Timestamps are stored as fixed-width RFC 3339 UTC text with milliseconds, so they sort.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

pub fn format_utc(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .expect("formatting a valid timestamp")
}

pub fn now_rfc3339() -> String {
    format_utc(OffsetDateTime::now_utc())
}

/// Parses any RFC 3339 timestamp (used by tests and tooling).
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// A stored timestamp as people read it: `1 Dec 2026, 06:30 UTC`. Text that is not a
/// timestamp comes back as it is.
pub fn human_utc(s: &str) -> String {
    match parse(s) {
        Some(t) => t
            .to_offset(time::UtcOffset::UTC)
            .format(format_description!(
                "[day padding:none] [month repr:short] [year], [hour]:[minute] UTC"
            ))
            .unwrap_or_else(|_| s.to_string()),
        None => s.to_string(),
    }
}

/// A stored timestamp for a page: `<time datetime="…" title="… (UTC)">1 Dec 2026, 06:30
/// UTC</time>` — read as a date, the exact value on hover. Escaped; text that is not a
/// timestamp is shown as it is.
pub fn when_html(s: impl AsRef<str>) -> String {
    let s = s.as_ref();
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    match parse(s) {
        Some(_) => format!(
            "<time datetime=\"{0}\" title=\"{0}\">{1}</time>",
            esc(s),
            esc(&human_utc(s))
        ),
        None => esc(s),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_utc_reads_like_a_date() {
        assert_eq!(
            super::human_utc("2026-11-29T22:56:15.009Z"),
            "29 Nov 2026, 22:56 UTC"
        );
        assert_eq!(
            super::human_utc("2026-01-05T09:05:00Z"),
            "5 Jan 2026, 09:05 UTC"
        );
        assert_eq!(super::human_utc("soon"), "soon");
    }

    #[test]
    fn when_html_shows_a_date_and_keeps_the_exact_value_on_hover() {
        assert_eq!(
            super::when_html("2026-11-29T22:56:15.009Z"),
            "<time datetime=\"2026-11-29T22:56:15.009Z\" title=\"2026-11-29T22:56:15.009Z\">29 Nov 2026, 22:56 UTC</time>"
        );
        assert_eq!(super::when_html("<b>"), "&lt;b&gt;");
    }
}
