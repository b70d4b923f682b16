//! Restart pacing of stdio children: after each consecutive failure (a start that fails, or a
//! process that exits) the next start waits `initial_backoff` doubled per failure, capped at
//! `max_backoff`, with jitter so that several gateways restarting the same tool do not start
//! in step. A child that stayed up at least `max_backoff` starts the count afresh.

use super::UpstreamError;
use std::time::Duration;
use tokio::time::Instant;

/// The restart state of one stdio upstream.
#[derive(Debug)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    /// Consecutive failures (0: the last start worked, or nothing has failed yet).
    failures: u32,
    /// Earliest time of the next start.
    next_attempt: Option<Instant>,
    /// Why the last start failed, for callers that queued behind it.
    last_error: Option<UpstreamError>,
    /// Starts attempted so far (the first one is not a restart).
    attempts: u64,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
            next_attempt: None,
            last_error: None,
            attempts: 0,
        }
    }

    /// How many starts were attempted.
    pub(super) fn attempts(&self) -> u64 {
        self.attempts
    }

    /// Records the beginning of a start; `true` when it is a restart (not the first start).
    pub(super) fn starting(&mut self) -> bool {
        self.attempts += 1;
        self.attempts > 1
    }

    /// A start worked.
    pub(super) fn started(&mut self) {
        self.last_error = None;
    }

    /// A start failed at `at`.
    pub(super) fn start_failed(&mut self, at: Instant, error: UpstreamError) {
        self.last_error = Some(error);
        self.failure(at);
    }

    /// A running child exited at `died` after running for `uptime`.
    pub(super) fn exited(&mut self, died: Instant, uptime: Duration) {
        if uptime >= self.max {
            self.failures = 0;
        }
        self.failure(died);
    }

    fn failure(&mut self, at: Instant) {
        self.failures = self.failures.saturating_add(1);
        let jittered = self
            .delay(self.failures)
            .mul_f64(rand::random_range(0.5..=1.0));
        self.next_attempt = Some(at + jittered);
    }

    /// The delay before the start that follows `failures` consecutive failures, before jitter.
    fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        self.initial
            .saturating_mul(1u32 << (failures - 1).min(20))
            .min(self.max)
    }

    /// How long the next start must still wait.
    pub(super) fn wait(&self, now: Instant) -> Duration {
        self.next_attempt
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// Consecutive failures so far.
    pub(super) fn failures(&self) -> u32 {
        self.failures
    }

    /// The error of the last start, if it failed.
    pub(super) fn last_error(&self) -> Option<&UpstreamError> {
        self.last_error.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> UpstreamError {
        UpstreamError::Crashed {
            upstream: "u".into(),
            reason: "exited".into(),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_below_them() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let now = Instant::now();
        assert_eq!(b.wait(now), Duration::ZERO, "the first start does not wait");
        for (failures, full) in [(1, 200), (2, 400), (3, 800), (4, 1000), (12, 1000)] {
            while b.failures() < failures {
                b.start_failed(now, err());
            }
            let full = Duration::from_millis(full);
            let wait = b.wait(now);
            assert!(
                wait >= full / 2 && wait <= full,
                "{failures}: {wait:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        assert!(b.last_error().is_some());
    }

    #[test]
    fn a_child_that_stayed_up_starts_the_count_afresh() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let now = Instant::now();
        for _ in 0..5 {
            b.start_failed(now, err());
        }
        b.started();
        b.exited(now, Duration::from_millis(50));
        assert_eq!(b.failures(), 6, "a short run is one more failure");
        b.exited(now, Duration::from_secs(3));
        assert_eq!(b.failures(), 1);
        assert!(b.wait(now) <= Duration::from_millis(100));
        assert!(b.last_error().is_none());
    }
}
