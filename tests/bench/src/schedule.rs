//! The open loop's clock: when the `i`-th saga is due, which sagas a phase starts at all, and
//! what its latency is. Latency counts from the *scheduled* start, so a generator or a client
//! that falls behind shows up as latency instead of silently lowering the offered rate.

use std::time::{Duration, Instant};

use crate::cli::Stop;

/// Starts at a fixed rate from a fixed origin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenLoop {
    pub origin: Instant,
    /// Starts per second, more than 0.
    pub rate: f64,
}

impl OpenLoop {
    /// When saga `i` (0-based) is due.
    pub fn due(&self, i: u64) -> Instant {
        self.origin + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Whether saga `i` belongs to the phase: below the count, or due before the duration ends.
    pub fn includes(&self, i: u64, stop: Stop) -> bool {
        match stop {
            Stop::Count(n) => i < n,
            Stop::Duration(d) => self.due(i) < self.origin + d,
        }
    }

    /// The latency of saga `i` that ended at `ended`: from when it was due, however late it was
    /// actually sent.
    pub fn latency(&self, i: u64, ended: Instant) -> Duration {
        ended.saturating_duration_since(self.due(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_send_counts_its_delay_as_latency() {
        let origin = Instant::now();
        let clock = OpenLoop { origin, rate: 10.0 };
        assert_eq!(clock.due(3), origin + Duration::from_millis(300));
        // Due at 300 ms, sent late at 450 ms (the sender fell behind), ended at 500 ms: the
        // client waited 200 ms for it, not the 50 ms the round trip took.
        let ended = origin + Duration::from_millis(500);
        assert_eq!(clock.latency(3, ended), Duration::from_millis(200));
        // A saga cannot end before it is due; never a negative latency.
        assert_eq!(clock.latency(9, ended), Duration::ZERO);
    }

    #[test]
    fn a_phase_holds_exactly_its_count_or_what_is_due_within_its_duration() {
        let clock = OpenLoop { origin: Instant::now(), rate: 20.0 };
        let by_count = (0..1000).filter(|&i| clock.includes(i, Stop::Count(7))).count();
        let by_time = (0..1000).filter(|&i| clock.includes(i, Stop::Duration(Duration::from_secs(2)))).count();
        assert_eq!((by_count, by_time), (7, 40));
    }
}
