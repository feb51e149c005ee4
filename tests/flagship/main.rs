//! FlagShip integration tests: the pipeline end to end on the in-memory
//! broker with local mock HTTP servers, retries into the dead-letter queue,
//! HTTP delivery details, the store contract, the committed schemas, and
//! jobs from the TypeScript producer run by a Rust worker on Redis.

mod dead_letter;
#[cfg(feature = "cli")]
mod deploy;
mod http;
#[cfg(feature = "redis")]
mod interop;
mod mock;
mod pipeline;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod schemas;
mod stores;

use std::{future::Future, sync::Mutex, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use flagship_worker::Clock;

/// Tokio's clock from a fixed start, plus jumps a test makes: time passes
/// as usual (and follows a paused clock), and `jump` moves it forward at once.
#[derive(Debug)]
pub(crate) struct ShiftedClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
    shift: Mutex<TimeDelta>,
}

impl ShiftedClock {
    pub(crate) fn starting_at(base: &str) -> Self {
        ShiftedClock {
            base: base.parse().unwrap(),
            start: tokio::time::Instant::now(),
            shift: Mutex::new(TimeDelta::zero()),
        }
    }

    pub(crate) fn jump_to(&self, t: &str) {
        let target: DateTime<Utc> = t.parse().unwrap();
        let now = self.now();
        assert!(target >= now, "clocks only move forward");
        *self.shift.lock().unwrap() += target - now;
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = TimeDelta::from_std(self.start.elapsed()).unwrap();
        self.base + elapsed + *self.shift.lock().unwrap()
    }
}

/// Waits until `condition` holds, checking every 10 ms (of tokio time, so
/// a paused clock moves on meanwhile); fails after 10 s of real time.
pub(crate) async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
