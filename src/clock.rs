//! The clock that decides when data is due to go (purge dates, later retention): the system
//! clock plus an offset that only tests move ([`Clock::advance`]), so a test can stand at
//! "90 days after termination" without waiting for it. docket itself never moves it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;

/// The system clock plus a shared offset in seconds (0 in production). Clones share the
/// offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_secs: Arc<AtomicI64>,
}

impl Clock {
    /// Now, in UTC.
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
            + time::Duration::seconds(self.offset_secs.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) `by` forward; negative moves it back.
    pub fn advance(&self, by: time::Duration) {
        self.offset_secs
            .fetch_add(by.whole_seconds(), Ordering::Relaxed);
    }
}
