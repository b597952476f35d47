//! The upstream rate limit: calls spaced at least `1 / max_rps` apart (a token bucket holding one
//! token), each caller reserving the next free slot.
//!
//! AWS STS allows about 600 requests per second per account and Region, shared by every STS
//! caller of the account; a broker that starts many pods at once must not take all of it. With a
//! bucket of one token, the calls in any one-second window are at most `max_rps` (+1 at the
//! window's edge): the bound the operator set, without a burst on top. A caller that would wait
//! longer than it may (its answer is due before the agent gives up) is refused at once, so the
//! queue never holds more than `max_rps × max_wait` callers.
//!
//! Time is tokio's, so tests run on virtual time (`start_paused`).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub(crate) struct Limiter {
    interval: Duration,
    /// When the next call may start.
    next: Mutex<Option<Instant>>,
}

impl Limiter {
    pub(crate) fn new(max_rps: u32) -> Limiter {
        Limiter {
            interval: Duration::from_secs(1) / max_rps.max(1),
            next: Mutex::new(None),
        }
    }

    /// Reserves the next slot; `Err(wait)` when it is further off than `max_wait` (nothing is
    /// reserved then).
    pub(crate) fn reserve(&self, max_wait: Duration) -> Result<Instant, Duration> {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let at = next.map_or(now, |n| n.max(now));
        let wait = at - now;
        if wait > max_wait {
            return Err(wait);
        }
        *next = Some(at + self.interval);
        Ok(at)
    }

    /// Waits for a reserved slot. A caller that goes away while waiting leaves its slot unused:
    /// the rate only gets lower for it.
    pub(crate) async fn acquire(&self, max_wait: Duration) -> Result<(), Duration> {
        let at = self.reserve(max_wait)?;
        tokio::time::sleep_until(at).await;
        Ok(())
    }
}
