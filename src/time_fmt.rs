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
}
