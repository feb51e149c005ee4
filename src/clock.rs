//! Injected time: the [`Clock`] brokers, workers and schedules read.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// A source of the current time.
///
/// Brokers, workers and schedules take their time from a clock so tests can
/// run on tokio's paused clock instead of sleeping.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time, UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time read through tokio's clock: the system time when the clock was
/// made, plus the tokio time elapsed since.
///
/// Under `tokio::time::pause()` it stands still and advances with
/// `tokio::time::advance` (or auto-advance), so tests of delays, retries and
/// schedules are exact and instant. In production it is monotonic: it never
/// steps backwards when the system clock is adjusted.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    /// Wall time at creation.
    base: DateTime<Utc>,
    /// Tokio instant at creation.
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that starts at the current system time.
    pub fn new() -> Self {
        TokioClock {
            base: Utc::now(),
            start: tokio::time::Instant::now(),
        }
    }

    /// A clock that starts at `base` (useful in tests).
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.start.elapsed();
        self.base + chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now() - t0, chrono::TimeDelta::seconds(90));
    }
}
