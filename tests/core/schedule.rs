//! Schedules through a broker outage, on tokio's paused clock.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flagship_worker::{
    AttemptRecord, Broker, EnqueueOutcome, Error, Job, JobEnvelope, Lease, LeaseStatus, MemoryBroker, MissedTicks,
    QueueName, QueueStats, Reservation, ReserveRequest, Schedule, TokioClock, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Beat {}

impl Job for Beat {
    const KIND: &'static str = "beat";
    const QUEUE: &'static str = "beats";
}

/// A memory broker whose enqueue fails as unreachable during `[down, up)`
/// (tokio time), like a Redis that is down for a while.
#[derive(Debug)]
struct Outage {
    inner: MemoryBroker,
    down: Instant,
    up: Instant,
}

impl Outage {
    fn reachable(&self) -> Result<(), Error> {
        let now = Instant::now();
        if (self.down..self.up).contains(&now) {
            return Err(Error::Unavailable("the broker is down for this test".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Broker for Outage {
    async fn enqueue(&self, jobs: Vec<JobEnvelope>) -> Result<Vec<EnqueueOutcome>, Error> {
        self.reachable()?;
        self.inner.enqueue(jobs).await
    }
    async fn reserve(&self, queue: &QueueName, request: ReserveRequest) -> Result<Vec<Reservation>, Error> {
        self.inner.reserve(queue, request).await
    }
    async fn complete(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>, Error> {
        self.inner.complete(leases).await
    }
    async fn retry_after(&self, job: &Reservation, delay: Duration, attempt: AttemptRecord) -> Result<(), Error> {
        self.inner.retry_after(job, delay, attempt).await
    }
    async fn snooze(&self, job: &Reservation, delay: Duration) -> Result<(), Error> {
        self.inner.snooze(job, delay).await
    }
    async fn dead_letter(&self, job: &Reservation, attempt: Option<AttemptRecord>, reason: &str) -> Result<(), Error> {
        self.inner.dead_letter(job, attempt, reason).await
    }
    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>, Error> {
        self.inner.release(leases).await
    }
    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>, Error> {
        self.inner.extend(leases, lease).await
    }
    async fn recover_expired(&self, queue: &QueueName, max: usize, lease: Duration) -> Result<Vec<Reservation>, Error> {
        self.inner.recover_expired(queue, max, lease).await
    }
    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, Error> {
        self.inner.stats(queue).await
    }
    async fn queues(&self) -> Result<Vec<QueueName>, Error> {
        self.inner.queues().await
    }
}

/// The ticks enqueued, read back from their idempotency keys, in seconds
/// after `base`.
async fn enqueued_ticks(broker: &MemoryBroker, base: DateTime<Utc>) -> Vec<f64> {
    let queue = QueueName::new(Beat::QUEUE).unwrap();
    let request = ReserveRequest::new(1_000, Duration::from_secs(60), Duration::ZERO);
    let mut ticks: Vec<f64> = broker
        .reserve(&queue, request)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let key = r.envelope.idempotency_key.as_deref().unwrap();
            let ms: i64 = key.rsplit(':').next().unwrap().parse().unwrap();
            (ms - base.timestamp_millis()) as f64 / 1000.0
        })
        .collect();
    ticks.sort_by(f64::total_cmp);
    ticks
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_the_latest_missed_tick_runs_and_no_later_tick_is_lost() {
    // As measured on Redis: an every-second schedule on two workers, the
    // broker down from 6.00 s to 9.06 s, ticks at x.96 s.
    let base: DateTime<Utc> = "2026-01-01T00:00:00.040Z".parse().unwrap();
    let clock = Arc::new(TokioClock::starting_at(base));
    let start = Instant::now();
    let broker = Arc::new(Outage {
        inner: MemoryBroker::with_clock(clock.clone()),
        down: start + Duration::from_millis(6_000),
        up: start + Duration::from_millis(9_060),
    });
    let workers: Vec<Worker> = (0..2)
        .map(|_| {
            let every_second = Schedule::every("beat", Duration::from_secs(1), &Beat {}).unwrap();
            Worker::builder(broker.clone())
                .clock(clock.clone())
                .schedule(every_second)
                .build()
                .unwrap()
        })
        .collect();
    let runs: Vec<_> = workers
        .iter()
        .map(|w| {
            let w = w.clone();
            tokio::spawn(async move { w.run_until(tokio::time::sleep(Duration::from_millis(15_500))).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap().unwrap();
    }

    let ticks = enqueued_ticks(&broker.inner, base).await;
    // On start, the latest past tick (-0.04 s); then every tick up to the
    // outage; of the three in it, the latest once the broker is back; then
    // every tick after. Before the fix, 8.96 and 9.96 were lost too: the
    // retries of 6.96 slept until 10.06 and the loop skipped what passed.
    let mut expected = vec![-0.04, 0.96, 1.96, 2.96, 3.96, 4.96, 5.96, 8.96];
    expected.extend((9..15).map(|s| f64::from(s) + 0.96));
    assert_eq!(ticks, expected, "one job per tick, across both workers");
}

#[tokio::test(start_paused = true)]
async fn a_tick_that_fails_is_retried_without_sleeping_past_the_next_one() {
    let base: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let clock = Arc::new(TokioClock::starting_at(base));
    let start = Instant::now();
    // Down from just before the 10 s tick until 13.5 s: the 10 s tick is
    // retried until the 12 s tick falls due, which replaces it, and runs
    // at 13.5 s, before the 14 s tick.
    let broker = Arc::new(Outage {
        inner: MemoryBroker::with_clock(clock.clone()),
        down: start + Duration::from_millis(9_900),
        up: start + Duration::from_millis(13_500),
    });
    let every_two = Schedule::every("beat", Duration::from_secs(2), &Beat {})
        .unwrap()
        .on_missed(MissedTicks::Skip);
    let worker = Worker::builder(broker.clone())
        .clock(clock.clone())
        .schedule(every_two)
        .build()
        .unwrap();
    worker
        .run_until(tokio::time::sleep(Duration::from_millis(16_500)))
        .await
        .unwrap();

    let ticks = enqueued_ticks(&broker.inner, base).await;
    assert_eq!(
        ticks,
        [2.0, 4.0, 6.0, 8.0, 12.0, 14.0, 16.0],
        "no start tick under Skip"
    );
}
