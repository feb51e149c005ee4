//! Schedules: one job per tick however many workers run them, missed
//! ticks after downtime, and scheduler-only workers.

use std::{sync::Arc, time::Duration};

use flagship_worker::{Broker, Job, MemoryBroker, MissedTicks, QueueName, Schedule, TokioClock, Worker};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{seen_so_far, start, succeeding};

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
