//! Injected time: the [`Clock`] brokers, workers and schedules read.

use std::{fmt::Debug, sync::OnceLock};

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

/// Wall time read through tokio's clock: one process-wide reading of the
/// system time, plus the tokio time elapsed since.
///
/// Every clock made with [`TokioClock::new`] shares that one base, so
/// clocks made separately (say, a broker's and a worker's) read the same
/// time at the same tokio instant and never disagree about the order of
/// events.
///
/// Under `tokio::time::pause()` it stands still and advances with
/// `tokio::time::advance` (or auto-advance), so tests of delays, retries and
/// schedules are exact and instant. In production it is monotonic: it never
/// steps backwards when the system clock is adjusted (and does not follow
/// such adjustments either: it drifts from the system clock as the
/// monotonic clock does).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    /// Wall time at `start`.
    base: DateTime<Utc>,
    /// The tokio instant `base` was read at.
    start: tokio::time::Instant,
}

/// The process-wide base of [`TokioClock::new`]: the system time and the
/// monotonic instant it was read at, taken once.
fn process_base() -> (DateTime<Utc>, std::time::Instant) {
    static BASE: OnceLock<(DateTime<Utc>, std::time::Instant)> = OnceLock::new();
    *BASE.get_or_init(|| (Utc::now(), std::time::Instant::now()))
}

impl TokioClock {
    /// A clock on the process-wide base: the system time when the first
    /// such clock was made, plus the tokio time elapsed since. Any two
    /// clocks made this way read the same time at the same tokio instant.
    pub fn new() -> Self {
        let (wall, at) = process_base();
        let start = tokio::time::Instant::now();
        let since = start.into_std();
        // Under a paused tokio clock "now" may lag the process base.
        let base = match since.checked_duration_since(at) {
            Some(ahead) => wall + saturating_delta(ahead),
            None => wall - saturating_delta(at.duration_since(since)),
        };
        TokioClock { base, start }
    }

    /// A clock that starts at `base` (useful in tests). Unlike
    /// [`TokioClock::new`], it shares nothing with other clocks.
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

fn saturating_delta(d: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + saturating_delta(self.start.elapsed())
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

    /// Issue 11, item 12: a broker's and a worker's clocks, made apart,
    /// must read the same time at the same instant.
    #[tokio::test(start_paused = true)]
    async fn clocks_made_apart_agree() {
        let first = TokioClock::new();
        // Let the system clock move on while tokio's stands still.
        let made = Utc::now();
        while Utc::now() <= made {
            std::hint::spin_loop();
        }
        let second = TokioClock::new();
        assert_eq!(first.now(), second.now());
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(first.now(), second.now());
    }

    /// Read in turns on the real clock, separately made clocks never go
    /// backwards relative to each other.
    #[tokio::test]
    async fn clocks_never_go_backwards_relative_to_each_other() {
        let clocks: Vec<TokioClock> = (0..8).map(|_| TokioClock::new()).collect();
        let mut last = clocks[0].now();
        for round in 0..10_000 {
            let clock = &clocks[round % clocks.len()];
            let now = clock.now();
            assert!(now >= last, "clock {} read {now}, before {last}", round % clocks.len());
            last = now;
        }
    }
}
