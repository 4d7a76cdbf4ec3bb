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
