//! Schedules: one job per tick however many workers run them, missed
//! ticks after downtime and during a broker outage, and scheduler-only
//! workers.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use flagship_worker::{
    Broker, Job, MemoryBroker, MissedTicks, QueueName, ReserveRequest, Schedule, TokioClock, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{seen_so_far, start, succeeding, Faulty};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Tick {}

impl Job for Tick {
    const KIND: &'static str = "tick";
    const QUEUE: &'static str = "maintenance";
}

/// A clock for the broker and the workers, starting a second past a tick.
fn clock() -> Arc<TokioClock> {
    Arc::new(TokioClock::starting_at("2026-01-01T00:00:01Z".parse().unwrap()))
}

fn every_ten_seconds() -> Schedule {
    Schedule::every("every-ten", Duration::from_secs(10), &Tick {})
        .unwrap()
        .on_missed(MissedTicks::Skip)
}

#[tokio::test(start_paused = true)]
async fn two_workers_running_one_schedule_enqueue_one_job_per_tick() {
    let clock = clock();
    let broker = Arc::new(MemoryBroker::with_clock(clock.clone()));
    let (handler, mut ticks) = succeeding::<Tick>();
    let make = || {
        Worker::builder(broker.clone())
            .clock(clock.clone())
            .handler(handler.clone())
            .schedule(every_ten_seconds())
            .build()
            .unwrap()
    };
    let (a, b) = (start(&make()), start(&make()));
    tokio::time::sleep(Duration::from_secs(35)).await;
    tokio::join!(a.stop(), b.stop());
    let seen: Vec<_> = seen_so_far(&mut ticks).into_iter().map(|t| t.at).collect();
    assert_eq!(seen.len(), 3, "35 s hold three 10 s ticks, each run once: {seen:?}");
    assert!(
        seen.iter().all(|t| t.timestamp_millis() % 10_000 == 0),
        "ticks are aligned: {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn after_downtime_the_latest_missed_tick_runs_once() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, mut ticks) = succeeding::<Tick>();
    let hourly = || Schedule::cron("hourly", "0 0 * * * *", &Tick {}).unwrap();
    let run_for_a_second = |broker: &Arc<MemoryBroker>, schedule: Schedule| {
        let worker = Worker::builder(broker.clone())
            .handler(handler.clone())
            .schedule(schedule)
            .build()
            .unwrap();
        async move {
            let running = start(&worker);
            tokio::time::sleep(Duration::from_secs(1)).await;
            running.stop().await;
        }
    };
    // Two restarts in a row: the missed tick runs once, not once per start.
    for _ in 0..2 {
        run_for_a_second(&broker, hourly()).await;
    }
    assert!(ticks.try_recv().is_ok(), "the latest missed tick ran");
    assert!(ticks.try_recv().is_err(), "and only once");

    // With `Skip`, nothing runs until the next tick.
    let broker = Arc::new(MemoryBroker::new());
    run_for_a_second(&broker, hourly().on_missed(MissedTicks::Skip)).await;
    assert!(ticks.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_scheduler_only_worker_enqueues_ticks_for_other_workers() {
    let clock = clock();
    let broker = Arc::new(MemoryBroker::with_clock(clock.clone()));
    let scheduler = Worker::builder(broker.clone())
        .clock(clock)
        .schedule(every_ten_seconds())
        .build()
        .unwrap();
    let running = start(&scheduler);
    tokio::time::sleep(Duration::from_secs(25)).await;
    running.stop().await;
    let stats = broker.stats(&QueueName::new(Tick::QUEUE).unwrap()).await.unwrap();
    assert_eq!(
        stats.ready, 2,
        "ticks at 10 s and 20 s wait for a worker with the handler"
    );
}

/// The ticks enqueued, read back from their idempotency keys, in seconds
/// after `base`.
async fn enqueued_ticks(broker: &dyn Broker, base: DateTime<Utc>) -> Vec<f64> {
    let queue = QueueName::new(Tick::QUEUE).unwrap();
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

/// A broker whose enqueue is down from `down` to `up` (seconds from now).
fn outage(down: f64, up: f64) -> Arc<Faulty> {
    let now = Instant::now();
    Arc::new(Faulty {
        enqueue_down: Some(now + Duration::from_secs_f64(down)..now + Duration::from_secs_f64(up)),
        ..Faulty::default()
    })
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_the_latest_missed_tick_runs_and_no_later_tick_is_lost() {
    // As measured on Redis: an every-second schedule on two workers, the
    // broker down from 6.00 s to 9.06 s, ticks at x.96 s.
    let base: DateTime<Utc> = "2026-01-01T00:00:00.040Z".parse().unwrap();
    let clock = Arc::new(TokioClock::starting_at(base));
    let broker = outage(6.0, 9.06);
    let make = || {
        let every_second = Schedule::every("beat", Duration::from_secs(1), &Tick {}).unwrap();
        Worker::builder(broker.clone())
            .clock(clock.clone())
            .schedule(every_second)
            .build()
            .unwrap()
    };
    let (a, b) = (start(&make()), start(&make()));
    tokio::time::sleep(Duration::from_millis(15_500)).await;
    tokio::join!(a.stop(), b.stop());

    let ticks = enqueued_ticks(&*broker, base).await;
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
    // Down from just before the 10 s tick until 13.5 s: the 10 s tick is
    // retried until the 12 s tick falls due, which replaces it and runs at
    // 13.5 s, before the 14 s tick.
    let broker = outage(9.9, 13.5);
    let every_two = Schedule::every("beat", Duration::from_secs(2), &Tick {})
        .unwrap()
        .on_missed(MissedTicks::Skip);
    let worker = Worker::builder(broker.clone())
        .clock(clock)
        .schedule(every_two)
        .build()
        .unwrap();
    worker
        .run_until(tokio::time::sleep(Duration::from_millis(16_500)))
        .await
        .unwrap();

    let ticks = enqueued_ticks(&*broker, base).await;
    assert_eq!(
        ticks,
        [2.0, 4.0, 6.0, 8.0, 12.0, 14.0, 16.0],
        "no start tick under Skip"
    );
}
