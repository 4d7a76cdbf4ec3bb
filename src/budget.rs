//! The process-wide budget for message bytes in memory (`limits.max_bytes_in_flight`).
//!
//! Everything that holds a whole message in memory takes its share first: the HTTP routes
//! that receive one (`POST /v1/filings`, `POST /v1/addon/context`, the rules dry runs in the
//! API and the console; see [`crate::http::intake`]) and the reads of a message from Gmail
//! (the add-on opening a message, thread filing through domain-wide delegation). A share is
//! [`COST_FACTOR`] × the bytes read, counted in KiB permits of one semaphore, and given back
//! when the [`Reservation`] is dropped. When the budget cannot cover a new share at once the
//! caller refuses (503 `busy`, or a card saying so) instead of waiting: the process stays
//! under a flat ceiling whatever the load. One share is at most the whole budget, so a
//! message as large as the limits allow still goes through when it is alone.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes reserved per byte of message text read. Measured from outside, one filing peaks at
/// about 1.05 × its request body (the body is decoded in place and blobs are sealed
/// segment by segment); 2 leaves room for the parsed parts and the allocator's slack.
pub const COST_FACTOR: usize = 2;
/// Seconds a refused client is asked to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 2;
const KIB: usize = 1024;

/// The shared budget; clones share it.
#[derive(Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    total_kib: usize,
}

/// A share of the budget, given back when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl Budget {
    /// A budget of `max_bytes_in_flight` bytes (at least 1 KiB).
    pub fn new(max_bytes_in_flight: usize) -> Budget {
        let total_kib = (max_bytes_in_flight / KIB).clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            sem: Arc::new(Semaphore::new(total_kib)),
            total_kib,
        }
    }

    /// KiB of budget that `bytes` of message text cost, at most the whole budget.
    fn cost_kib(&self, bytes: usize) -> usize {
        bytes
            .saturating_mul(COST_FACTOR)
            .div_ceil(KIB)
            .clamp(1, self.total_kib)
    }

    /// The share for `bytes` of message text, or `None` when the budget cannot cover it now.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let mut r = self.empty();
        self.try_grow(&mut r, bytes).then_some(r)
    }

    /// A share of nothing yet, to grow with [`Budget::try_grow`] as bytes arrive.
    pub fn empty(&self) -> Reservation {
        Reservation { permit: None }
    }

    /// Grows `r` to the share for `bytes` of message text in all; `false` (and `r` as it
    /// was, and `docket_busy_refusals_total` counted) when the budget cannot cover the
    /// difference now.
    pub fn try_grow(&self, r: &mut Reservation, bytes: usize) -> bool {
        let want = self.cost_kib(bytes);
        let have = r.permit.as_ref().map_or(0, |p| p.num_permits());
        if want <= have {
            return true;
        }
        let Ok(more) = self
            .sem
            .clone()
            .try_acquire_many_owned((want - have) as u32)
        else {
            // Every refusal for lack of budget comes through here.
            crate::metrics::global().busy_refused();
            return false;
        };
        match &mut r.permit {
            Some(held) => held.merge(more),
            None => r.permit = Some(more),
        }
        true
    }

    /// KiB not reserved now (for tests and diagnostics).
    pub fn available_kib(&self) -> usize {
        self.sem.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_counted_grown_capped_and_given_back() {
        let b = Budget::new(300 * KIB);
        let first = b.try_reserve(75 * KIB).expect("150 KiB of 300");
        assert_eq!(b.available_kib(), 150);
        let mut grown = b.empty();
        assert!(b.try_grow(&mut grown, 60 * KIB));
        assert!(b.try_grow(&mut grown, 75 * KIB));
        assert_eq!(b.available_kib(), 0);
        assert!(!b.try_grow(&mut grown, 76 * KIB), "over the budget");
        assert!(b.try_reserve(1).is_none());
        drop(first);
        assert!(b.try_grow(&mut grown, 76 * KIB));
        drop(grown);
        assert_eq!(b.available_kib(), 300);
        // One share is at most the whole budget: a large message alone still fits.
        let all = b
            .try_reserve(10 * 1024 * KIB)
            .expect("capped at the budget");
        assert_eq!(b.available_kib(), 0);
        drop(all);
    }
}
