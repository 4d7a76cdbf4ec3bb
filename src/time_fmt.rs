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

/// Whether `name` is a time zone of the IANA database (`Europe/London`, `UTC`).
pub fn valid_time_zone(name: &str) -> bool {
    !name.trim().is_empty() && jiff::tz::TimeZone::get(name.trim()).is_ok()
}

/// A stored timestamp in the time zone `tz` as people read it: `29 Nov 2026, 23:56 CET`.
/// UTC when `tz` is not a known zone; text that is not a timestamp comes back as it is.
pub fn human_in(s: &str, tz: &str) -> String {
    let Ok(ts) = s.parse::<jiff::Timestamp>() else {
        return s.to_string();
    };
    let zoned = ts
        .in_tz(tz)
        .unwrap_or_else(|_| ts.to_zoned(jiff::tz::TimeZone::UTC));
    zoned.strftime("%-d %b %Y, %H:%M %Z").to_string()
}

/// A stored timestamp for a page, in the firm's time zone `tz`: `<time datetime="…"
/// title="…">29 Nov 2026, 23:56 CET</time>` — read as a date, the exact UTC value on hover.
/// Escaped; text that is not a timestamp is shown as it is.
pub fn when_html_in(s: impl AsRef<str>, tz: impl AsRef<str>) -> String {
    let (s, tz) = (s.as_ref(), tz.as_ref());
    match parse(s) {
        Some(_) => format!(
            "<time datetime=\"{0}\" title=\"{0}\">{1}</time>",
            escape(s),
            escape(&human_in(s, tz))
        ),
        None => escape(s),
    }
}

/// `t` safe inside HTML text and double- or single-quoted attributes.
pub fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
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
            super::when_html_in("2026-11-29T22:56:15.009Z", "UTC"),
            "<time datetime=\"2026-11-29T22:56:15.009Z\" title=\"2026-11-29T22:56:15.009Z\">29 Nov 2026, 22:56 UTC</time>"
        );
        assert_eq!(super::when_html_in("<b>", "UTC"), "&lt;b&gt;");
    }

    #[test]
    fn dates_show_in_the_firms_time_zone() {
        let t = "2026-11-29T22:56:15.009Z";
        assert_eq!(super::human_in(t, "Europe/Paris"), "29 Nov 2026, 23:56 CET");
        assert_eq!(
            super::human_in(t, "America/New_York"),
            "29 Nov 2026, 17:56 EST"
        );
        assert_eq!(
            super::human_in("2026-07-01T12:00:00Z", "Europe/London"),
            "1 Jul 2026, 13:00 BST"
        );
        assert_eq!(super::human_in(t, "UTC"), "29 Nov 2026, 22:56 UTC");
        assert_eq!(super::human_in(t, "Mars/Base"), "29 Nov 2026, 22:56 UTC");
        assert!(super::when_html_in(t, "Europe/Paris")
            .contains(&format!("title=\"{t}\">29 Nov 2026, 23:56 CET<")));
        assert!(super::valid_time_zone("Asia/Tokyo") && !super::valid_time_zone("Nowhere/Land"));
    }
}
