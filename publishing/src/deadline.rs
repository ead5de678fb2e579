//! How long each outside call may take, so no platform can hold a post
//! past its lease: the attempt ends (a little) before the lease does, and
//! every call gets at most half the time that is left, so an unanswered
//! write can still be settled (`getRecord`) within the same lease.

use std::time::{Duration, Instant};

/// Below this, a call is not started.
const MIN_CALL: Duration = Duration::from_millis(200);

/// The end of one attempt and the longest single call.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Instant,
    call_timeout: Duration,
}

impl Deadline {
    /// The attempt may use the lease left (`remaining_ms`, as the database
    /// counts it) minus a margin for recording the outcome (a tenth of it,
    /// between 0.5 and 10 seconds); one call at most `call_timeout`.
    pub fn from_lease(remaining_ms: i64, call_timeout: Duration) -> Self {
        let remaining = Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0));
        let margin = (remaining / 10).clamp(Duration::from_millis(500), Duration::from_secs(10));
        Deadline {
            end: Instant::now() + remaining.saturating_sub(margin),
            call_timeout,
        }
    }

    /// Time left in the attempt.
    pub fn left(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// The timeout for the next call: the call timeout or half the time
    /// left, whichever is shorter; `None` when too little is left to start.
    pub fn next_call(&self) -> Option<Duration> {
        let timeout = self.call_timeout.min(self.left() / 2);
        (timeout >= MIN_CALL).then_some(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_get_half_the_time_left_at_most() {
        let d = Deadline::from_lease(60_000, Duration::from_secs(10));
        let t = d.next_call().unwrap();
        assert!(
            t <= Duration::from_secs(10) && t > Duration::from_secs(9),
            "{t:?}"
        );
        let short = Deadline::from_lease(4_000, Duration::from_secs(10));
        let t = short.next_call().unwrap();
        assert!(t <= Duration::from_millis(1750), "{t:?}");
        assert!(short.left() <= Duration::from_millis(3500));
    }

    #[test]
    fn no_call_starts_without_time() {
        assert!(
            Deadline::from_lease(0, Duration::from_secs(10))
                .next_call()
                .is_none()
        );
        assert!(
            Deadline::from_lease(-5, Duration::from_secs(10))
                .next_call()
                .is_none()
        );
        assert!(
            Deadline::from_lease(700, Duration::from_secs(10))
                .next_call()
                .is_none()
        );
    }
}
