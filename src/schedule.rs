//! Schedules: cron expressions and fixed intervals that enqueue a job per tick.
//!
//! Every tick enqueues its job with the idempotency key
//! `schedule:{name}:{tick in unix milliseconds}`, so any number of workers
//! running the same schedule produce exactly one job per tick.

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    broker::EnqueueOutcome,
    client::Client,
    clock::Clock,
    envelope::{to_chrono, EnqueueOptions},
    error::{Error, Result},
    job::{Job, QueueName},
    schema::{KindSchema, SchemaRegistry},
};

/// The shortest interval accepted for [`Schedule::every`].
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest interval accepted for [`Schedule::every`] (366 days).
pub const MAX_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);

/// What a schedule does about ticks that passed while no worker ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedTicks {
    /// On start, enqueue the most recent past tick once (if it is within
    /// the catch-up window and was not enqueued already). The default.
    #[default]
    RunLatest,
    /// Ignore past ticks; wait for the next one.
    Skip,
}

#[derive(Clone)]
enum When {
    Cron(Box<cron::Schedule>),
    Every(Duration),
}

impl fmt::Debug for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Cron(c) => write!(f, "Cron({:?})", c.source()),
            When::Every(d) => write!(f, "Every({d:?})"),
        }
    }
}

/// A job enqueued on a cron expression or a fixed interval, in UTC.
///
/// ```
/// use flagship_worker::{Job, Schedule};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, JsonSchema)] struct Cleanup {}
/// # impl Job for Cleanup { const KIND: &'static str = "cleanup"; const QUEUE: &'static str = "maintenance"; }
///
/// // Every day at 03:00:00 UTC (six fields: seconds first).
/// let nightly = Schedule::cron("nightly-cleanup", "0 0 3 * * *", &Cleanup {})?;
/// assert!(Schedule::cron("broken", "every day", &Cleanup {}).is_err());
/// # Ok::<_, flagship_worker::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Unique name; part of each tick's idempotency key.
    name: String,
    when: When,
    kind: String,
    queue: QueueName,
    payload: Value,
    missed: MissedTicks,
    /// How far back a missed tick may be and still run on start.
    catch_up_window: Duration,
    /// Registers the job's kind, so a worker without its handler (a
    /// scheduler-only process) can still validate and enqueue it.
    register: fn(&SchemaRegistry) -> Result<Arc<KindSchema>>,
}

impl Schedule {
    /// A schedule on a cron expression with seconds (`sec min hour
    /// day-of-month month day-of-week [year]`), in UTC.
    pub fn cron<J: Job>(name: &str, expression: &str, job: &J) -> Result<Self> {
        let parsed = cron::Schedule::from_str(expression).map_err(|e| Error::InvalidCron {
            schedule: name.to_owned(),
            expression: expression.to_owned(),
            message: e.to_string(),
        })?;
        if parsed.upcoming(Utc).next().is_none() {
            return Err(Error::InvalidCron {
                schedule: name.to_owned(),
                expression: expression.to_owned(),
                message: "it never fires again".into(),
            });
        }
        Self::new(name, When::Cron(Box::new(parsed)), job)
    }

    /// A schedule every `interval`, on multiples of the interval since the
    /// Unix epoch (so every process agrees on the ticks).
    pub fn every<J: Job>(name: &str, interval: Duration, job: &J) -> Result<Self> {
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
            return Err(Error::InvalidConfig(format!(
                "schedule `{name}`: interval {interval:?} must be between {MIN_INTERVAL:?} and {MAX_INTERVAL:?}"
            )));
        }
        Self::new(name, When::Every(interval), job)
    }

    fn new<J: Job>(name: &str, when: When, job: &J) -> Result<Self> {
        let valid_name = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.'));
        if !valid_name {
            return Err(Error::InvalidConfig(format!(
                "schedule name `{}` must be 1 to 128 ASCII letters, digits or `: - _ .`",
                name.escape_debug()
            )));
        }
        let payload = serde_json::to_value(job).map_err(|source| Error::MalformedPayload {
            kind: J::KIND.to_owned(),
            source,
        })?;
        Ok(Schedule {
            name: name.to_owned(),
            when,
            kind: J::KIND.to_owned(),
            queue: QueueName::new(J::QUEUE)?,
            payload,
            missed: MissedTicks::default(),
            catch_up_window: Duration::from_secs(24 * 3600),
            register: SchemaRegistry::register::<J>,
        })
    }

    /// What to do about ticks missed while no worker ran.
    pub fn on_missed(mut self, missed: MissedTicks) -> Self {
        self.missed = missed;
        self
    }

    /// How old a missed tick may be and still run on start (default 24 h,
    /// the in-memory broker's key retention: an older tick may have run
    /// already without the broker remembering it).
    pub fn catch_up_window(mut self, window: Duration) -> Self {
        self.catch_up_window = window;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of job it enqueues.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The payload it enqueues.
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// Registers the scheduled job's kind in `registry` and checks the payload.
    pub fn register(&self, registry: &SchemaRegistry) -> Result<()> {
        (self.register)(registry)?;
        registry
            .validate(&self.kind, &self.payload)
            .map(drop)
            .map_err(|e| Error::InvalidConfig(format!("schedule `{}`: {e}", self.name)))
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Cron(c) => c.after(&t).next(),
            When::Every(interval) => {
                let step = interval.as_millis() as i64;
                let next = (t.timestamp_millis().div_euclid(step) + 1) * step;
                DateTime::from_timestamp_millis(next)
            }
        }
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Cron(c) => {
                let just_after = t + chrono::TimeDelta::nanoseconds(1);
                c.after(&just_after).next_back().filter(|tick| *tick <= t)
            }
            When::Every(interval) => {
                let step = interval.as_millis() as i64;
                DateTime::from_timestamp_millis(t.timestamp_millis().div_euclid(step) * step)
            }
        }
    }

    /// The idempotency key of the job for `tick`.
    pub fn idempotency_key(&self, tick: DateTime<Utc>) -> String {
        format!("schedule:{}:{}", self.name, tick.timestamp_millis())
    }

    /// Enqueues the job for `tick` (a duplicate if another process did).
    pub async fn enqueue_tick(&self, client: &Client, tick: DateTime<Utc>) -> Result<EnqueueOutcome> {
        let options = EnqueueOptions::new().idempotency_key(self.idempotency_key(tick));
        let outcome = client.enqueue_raw(&self.kind, self.payload.clone(), options).await?;
        match outcome {
            EnqueueOutcome::Enqueued(id) => {
                tracing::info!(schedule = %self.name, %tick, job.id = %id, queue = %self.queue, "scheduled job enqueued")
            }
            EnqueueOutcome::Duplicate(id) => {
                tracing::debug!(schedule = %self.name, %tick, job.id = %id, "tick already enqueued by another worker")
            }
        }
        Ok(outcome)
    }

    async fn enqueue_with_retries(&self, client: &Client, tick: DateTime<Utc>) {
        let mut delay = Duration::from_millis(100);
        for _ in 0..5 {
            match self.enqueue_tick(client, tick).await {
                Ok(_) => return,
                Err(e) if e.is_transient() => {
                    tracing::warn!(schedule = %self.name, %tick, error = %e, "enqueueing a tick failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::error!(schedule = %self.name, %tick, error = %e, "enqueueing a tick failed");
                    return;
                }
            }
        }
        tracing::error!(schedule = %self.name, %tick, "gave up enqueueing a tick");
    }

    /// Runs the schedule until `stop` is raised.
    pub(crate) async fn run(self, client: Client, clock: Arc<dyn Clock>, mut stop: crate::worker::shutdown::Signal) {
        let now = clock.now();
        let mut last = now;
        if self.missed == MissedTicks::RunLatest {
            if let Some(tick) = self.latest_at_or_before(now) {
                let window = to_chrono(self.catch_up_window).unwrap_or(chrono::TimeDelta::MAX);
                if now - tick <= window {
                    self.enqueue_with_retries(&client, tick).await;
                }
            }
        }
        loop {
            let now = clock.now().max(last);
            let Some(next) = self.next_after(now) else {
                tracing::info!(schedule = %self.name, "schedule has no further ticks");
                return;
            };
            let wait = (next - clock.now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.raised() => return,
            }
            self.enqueue_with_retries(&client, next).await;
            last = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Tick {}
    impl Job for Tick {
        const KIND: &'static str = "tick";
        const QUEUE: &'static str = "maintenance";
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn cron_ticks_forward_and_back() {
        let s = Schedule::cron("hourly", "0 0 * * * *", &Tick {}).unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T10:00:00Z")),
            Some(at("2026-01-01T11:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(at("2026-01-01T10:00:00Z")),
            Some(at("2026-01-01T10:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(at("2026-01-01T10:59:59Z")),
            Some(at("2026-01-01T10:00:00Z"))
        );
    }

    #[test]
    fn interval_ticks_are_epoch_aligned() {
        let s = Schedule::every("five", Duration::from_secs(5), &Tick {}).unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T10:00:03Z")),
            Some(at("2026-01-01T10:00:05Z"))
        );
        assert_eq!(
            s.next_after(at("2026-01-01T10:00:05Z")),
            Some(at("2026-01-01T10:00:10Z"))
        );
        assert_eq!(
            s.latest_at_or_before(at("2026-01-01T10:00:09Z")),
            Some(at("2026-01-01T10:00:05Z"))
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        let err = Schedule::cron("x", "*/5 * * * *", &Tick {}).unwrap_err();
        assert!(matches!(err, Error::InvalidCron { .. }), "{err}");
        assert!(err.to_string().contains("six fields"));
        assert!(
            Schedule::cron("x", "0 0 0 1 1 * 2001", &Tick {}).is_err(),
            "never fires again"
        );
        assert!(Schedule::every("x", Duration::from_millis(10), &Tick {}).is_err());
        assert!(Schedule::every("", Duration::from_secs(10), &Tick {}).is_err());
    }
}
