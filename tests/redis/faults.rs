//! Faults: killed and paused worker processes, a restarted Redis, many
//! workers at once, and garbage written straight into a queue's keys.
//!
//! Leases are short so that recovery takes about a second.

use std::{collections::HashMap, sync::Arc, time::Duration};

use flagship_worker::{
    broker::redis::RedisBroker, testing::redis_server::RedisServerOptions, Broker, DeadFilter, DeadLetterQueue,
    JobEnvelope, QueueConfig, RetryPolicy, Worker,
};
use redis::Commands;
use tokio::sync::watch;

use crate::support::{
    demo, eventually, hash, queue, run, start, start_with, worker_process, Demo, DemoHandler, WorkerProcess,
};

/// A worker for the demo queue with short leases and quick retries.
async fn demo_worker(
    server: &flagship_worker::testing::redis_server::RedisServer,
    name: &str,
    concurrency: usize,
    lease: Duration,
    work: Duration,
) -> Worker {
    let broker = Arc::new(RedisBroker::connect(server.url()).await.unwrap());
    Worker::builder(broker)
        .handler(DemoHandler::new(server, work).await)
        .queue(
            QueueConfig::new(<Demo as flagship_worker::Job>::QUEUE)
                .unwrap()
                .concurrency(concurrency)
                .retry_policy(RetryPolicy::fixed(20, Duration::from_millis(10))),
        )
        .lease(lease)
        .recovery_interval(Duration::from_millis(100))
        .idle_wait(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(5))
        .worker_id(name)
        .build()
        .unwrap()
}

async fn settled(broker: &RedisBroker, total: u64) -> bool {
    let stats = broker.stats(&queue("examples:demo")).await.unwrap();
    stats.completed + stats.dead == total && stats.ready + stats.scheduled + stats.active == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_killed_worker_process_are_all_finished_by_another() {
    let Some((server, broker)) = start().await else { return };
    broker.enqueue((0..100).map(demo).collect()).await.unwrap();
    let doomed = worker_process(
        &server,
        &["--concurrency", "100", "--lease-ms", "1000", "--handler-ms", "60000"],
    );
    eventually("100 jobs in flight in the child", Duration::from_secs(60), || async {
        hash(&server, "examples:started").len() == 100
    })
    .await;
    doomed.kill();

    let rescuer = demo_worker(&server, "rescuer", 20, Duration::from_secs(1), Duration::ZERO).await;
    let (stop, task) = run(&rescuer);
    eventually("every job finished", Duration::from_secs(20), || settled(&broker, 100)).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    let done = hash(&server, "examples:done");
    assert_eq!(done.len(), 100, "exactly 100 distinct jobs completed");
    assert!(done.values().all(|w| w == "rescuer"));
    let stats = broker.stats(&queue("examples:demo")).await.unwrap();
    assert_eq!((stats.completed, stats.dead), (100, 0));
    assert_eq!(rescuer.stats().recovered, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_ride_out_a_redis_restart() {
    let Some((mut server, broker)) = start_with(RedisServerOptions::new().appendonly(true)).await else {
        return;
    };
    broker.enqueue((0..1_000).map(demo).collect()).await.unwrap();
    let workers = [
        demo_worker(&server, "a", 8, Duration::from_secs(2), Duration::from_millis(2)).await,
        demo_worker(&server, "b", 8, Duration::from_secs(2), Duration::from_millis(2)).await,
    ];
    let running: Vec<_> = workers.iter().map(run).collect();
    eventually("a third of the jobs done", Duration::from_secs(30), || async {
        workers.iter().map(|w| w.stats().completed).sum::<u64>() >= 300
    })
    .await;
    server.kill();
    server.start_again();
    eventually(
        "every job finished after the restart",
        Duration::from_secs(60),
        || async { broker.ping().await.is_ok() && settled(&broker, 1_000).await },
    )
    .await;
    for (stop, task) in running {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
    let stats = broker.stats(&queue("examples:demo")).await.unwrap();
    assert_eq!(stats.completed + stats.dead, 1_000);
    assert_eq!(stats.dead, 0, "retries absorbed the outage");
    assert_eq!(hash(&server, "examples:done").len(), 1_000, "none lost");
    assert!(
        workers.iter().all(|w| w.stats().broker_errors > 0),
        "both workers saw the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_workers_in_tasks_and_processes_complete_each_job_once() {
    let Some((server, broker)) = start().await else { return };
    let total = 10_000u64;
    let jobs: Vec<JobEnvelope> = (0..total).map(demo).collect();
    for batch in jobs.chunks(2_000) {
        broker.enqueue(batch.to_vec()).await.unwrap();
    }
    let processes: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|id| {
            worker_process(
                &server,
                &["--concurrency", "16", "--lease-ms", "1000", "--worker-id", id],
            )
        })
        .collect();
    let mut workers = Vec::new();
    for name in ["t1", "t2", "t3", "t4"] {
        workers.push(demo_worker(&server, name, 16, Duration::from_secs(10), Duration::ZERO).await);
    }
    let running: Vec<_> = workers.iter().map(run).collect();

    // Inject a lease expiry: pause p1 past its lease mid-run.
    eventually("a third of the jobs done", Duration::from_secs(60), || async {
        hash(&server, "examples:done").len() as u64 >= total / 3
    })
    .await;
    processes[0].signal("STOP");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    processes[0].signal("CONT");

    eventually("all jobs completed", Duration::from_secs(120), || {
        settled(&broker, total)
    })
    .await;
    for (stop, task) in running {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
    let process_stats: Vec<_> = processes.into_iter().map(WorkerProcess::finish).collect();

    let done = hash(&server, "examples:done");
    assert_eq!(done.len() as u64, total, "every job done");
    let started = hash(&server, "examples:started");
    assert_eq!(started.len() as u64, total);
    let recovered: u64 =
        workers.iter().map(|w| w.stats().recovered).sum::<u64>() + process_stats[1]["recovered"].as_u64().unwrap();
    assert!(recovered > 0, "p1's leases expired while it was paused");
    // A job runs twice only when a lease on it expired (p1's, injected by
    // the pause; another's only if the machine stalls a heartbeat): its old
    // holder then runs or acknowledges it anyway (from a slot, its prefetch
    // buffer or its acknowledgement backlog) and the broker refuses that
    // acknowledgement. So every duplicate is one refused acknowledgement.
    let twice = started.values().filter(|runs| *runs != "1").count() as u64;
    let refused = workers.iter().map(|w| w.stats().lease_lost).sum::<u64>()
        + process_stats
            .iter()
            .map(|s| s["lease_lost"].as_u64().unwrap())
            .sum::<u64>();
    assert!(
        twice <= refused,
        "{twice} jobs ran twice but only {refused} acknowledgements were refused: {process_stats:?}"
    );

    // Each job acknowledged once, by the worker whose run was recorded.
    let mut by_worker: HashMap<&str, u64> = HashMap::new();
    for worker in done.values() {
        *by_worker.entry(worker.as_str()).or_default() += 1;
    }
    let acked: u64 = workers.iter().map(|w| w.stats().completed).sum::<u64>()
        + process_stats
            .iter()
            .map(|s| s["completed"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(acked, total, "each job acknowledged once");
    assert_eq!(broker.stats(&queue("examples:demo")).await.unwrap().completed, total);
    for w in &workers {
        assert!(w.stats().completed > 0, "worker {} did no work", w.id());
    }
    assert!(by_worker.get("p2").copied().unwrap_or(0) > 0, "process p2 did no work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_cannot_complete_a_job_taken_over_by_another() {
    let Some((server, broker)) = start().await else { return };
    let job = demo(7);
    let id = job.id.to_string();
    broker.enqueue(vec![job]).await.unwrap();
    let stale = worker_process(
        &server,
        &[
            "--concurrency",
            "1",
            "--lease-ms",
            "600",
            "--handler-ms",
            "1500",
            "--worker-id",
            "stale",
        ],
    );
    eventually("the job started in the child", Duration::from_secs(60), || async {
        hash(&server, "examples:started").contains_key(&id)
    })
    .await;
    stale.signal("STOP");

    let second = demo_worker(&server, "second", 1, Duration::from_millis(600), Duration::ZERO).await;
    let (stop, task) = run(&second);
    eventually(
        "the job completed by the second worker",
        Duration::from_secs(10),
        || settled(&broker, 1),
    )
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();

    stale.signal("CONT");
    let stale_stats = stale.finish();
    assert_eq!(stale_stats["completed"], 0);
    assert!(stale_stats["lease_lost"].as_u64().unwrap() >= 1, "{stale_stats}");

    assert_eq!(second.stats().recovered, 1);
    assert_eq!(second.stats().completed, 1);
    assert_eq!(
        hash(&server, "examples:done").get("7").map(String::as_str),
        Some("second")
    );
    assert_eq!(
        hash(&server, "examples:started").get(&id).map(String::as_str),
        Some("2")
    );
    let stats = broker.stats(&queue("examples:demo")).await.unwrap();
    assert_eq!((stats.completed, stats.dead), (1, 0), "acknowledged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_queue_is_dead_lettered_and_the_worker_goes_on() {
    let Some((server, broker)) = start().await else { return };
    let q = queue("examples:demo");
    broker.enqueue((0..3).map(demo).collect()).await.unwrap();

    let not_json = flagship_worker::JobId::new().to_string();
    let mut future = serde_json::to_value(demo(100)).unwrap();
    future["v"] = 2.into();
    let future_id = future["id"].as_str().unwrap().to_owned();
    let mut unknown = demo(101);
    unknown.kind = "nope".into();
    let unknown_id = unknown.id;
    let mut conn = server.connection();
    let writes: [(&str, Vec<u8>); 4] = [
        (&not_json, b"this is not json".to_vec()),
        (&future_id, serde_json::to_vec(&future).unwrap()),
        ("not-a-uuid", demo(102).to_json()),
        (&unknown_id.to_string(), unknown.to_json()),
    ];
    for (id, raw) in &writes {
        let _: () = conn.hset("{examples:demo}:jobs", *id, raw.as_slice()).unwrap();
        let _: () = conn.rpush("{examples:demo}:ready", *id).unwrap();
    }
    broker.enqueue((3..6).map(demo).collect()).await.unwrap();

    let worker = demo_worker(&server, "w", 4, Duration::from_secs(5), Duration::ZERO).await;
    let (stop, task) = run(&worker);
    eventually("good jobs done, garbage dead", Duration::from_secs(10), || {
        settled(&broker, 10)
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();

    assert_eq!(worker.stats().completed, 6);
    assert_eq!(hash(&server, "examples:done").len(), 6);
    let dead = broker
        .list_dead(&DeadFilter::queue(q.clone()), None, 10)
        .await
        .unwrap()
        .jobs;
    assert_eq!(dead.len(), 4);
    let reason_of = |pred: &dyn Fn(&JobEnvelope) -> bool| {
        dead.iter()
            .find(|j| pred(j))
            .and_then(|j| j.dead_letter_reason.clone())
            .unwrap_or_else(|| panic!("missing dead job in {dead:#?}"))
    };
    let garbage = reason_of(&|j| j.id.to_string() == not_json);
    assert!(garbage.contains("not a job envelope"), "{garbage}");
    let version = reason_of(&|j| j.id.to_string() == future_id);
    assert!(version.contains("version 2"), "{version}");
    let misfiled = reason_of(&|j| {
        j.dead_letter_reason
            .as_deref()
            .is_some_and(|r| r.contains("not-a-uuid"))
    });
    assert!(misfiled.contains("not a job id"), "{misfiled}");
    let unknown_reason = reason_of(&|j| j.id == unknown_id);
    assert!(unknown_reason.contains("unknown job kind"), "{unknown_reason}");

    let shown = broker.get_dead(&q, not_json.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(shown.payload, serde_json::json!("this is not json"));
    assert_eq!(shown.kind, "undecodable");
}

/// Counts the successful runs of each demo job by its id.
#[derive(Clone, Default)]
struct RunsById(Arc<std::sync::Mutex<HashMap<flagship_worker::JobId, u32>>>);

#[async_trait::async_trait]
impl flagship_worker::Handler for RunsById {
    type Job = Demo;

    async fn handle(&self, _: Demo, ctx: &flagship_worker::JobContext) -> Result<(), flagship_worker::HandlerError> {
        *self.0.lock().unwrap().entry(ctx.id).or_default() += 1;
        Ok(())
    }
}

/// The job a one-second schedule enqueues (nothing runs it: the ticks are
/// read back from the queue's idempotency keys).
#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Beat {}

impl flagship_worker::Job for Beat {
    const KIND: &'static str = "beat";
    const QUEUE: &'static str = "beats";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_ten_times_loses_no_acknowledged_job_and_no_tick_after_it_is_back() {
    let Some((mut server, broker)) = start_with(RedisServerOptions::new().appendonly(true)).await else {
        return;
    };
    let runs = RunsById::default();
    let mut workers = Vec::new();
    for name in ["a", "b"] {
        let broker = Arc::new(RedisBroker::connect(server.url()).await.unwrap());
        let every_second = flagship_worker::Schedule::every("beat", Duration::from_secs(1), &Beat {}).unwrap();
        workers.push(
            Worker::builder(broker)
                .handler(runs.clone())
                .queue(
                    QueueConfig::new(<Demo as flagship_worker::Job>::QUEUE)
                        .unwrap()
                        .concurrency(8),
                )
                .schedule(every_second)
                .lease(Duration::from_secs(1))
                .recovery_interval(Duration::from_millis(100))
                .idle_wait(Duration::from_millis(200))
                .worker_id(name)
                .build()
                .unwrap(),
        );
    }
    let running: Vec<_> = workers.iter().map(run).collect();

    // A producer enqueueing all along; it keeps the ids Redis acknowledged.
    let (stop_producing, mut producing) = watch::channel(false);
    let producer = tokio::spawn({
        let broker = broker.clone();
        async move {
            let mut acknowledged = Vec::new();
            let mut n = 0;
            while !*producing.borrow() {
                let batch: Vec<JobEnvelope> = (n..n + 20).map(demo).collect();
                n += 20;
                let ids: Vec<_> = batch.iter().map(|j| j.id).collect();
                if broker.enqueue(batch).await.is_ok() {
                    acknowledged.extend(ids);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = producing.changed() => {}
                }
            }
            acknowledged
        }
    });

    // Windows of time Redis was up: ticks inside them must all be enqueued.
    let mut up_since = chrono::Utc::now();
    let mut up_windows = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rand::random_range(800..1_800))).await;
        up_windows.push((up_since, chrono::Utc::now()));
        server.kill();
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..300))).await;
        server.start_again();
        up_since = chrono::Utc::now();
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop_producing.send(true).unwrap();
    let acknowledged = producer.await.unwrap();
    // Jobs whose enqueue failed may have been stored too: wait for the
    // queue to be empty rather than for a count.
    eventually("every job done", Duration::from_secs(60), || async {
        let Ok(stats) = broker.stats(&queue("examples:demo")).await else {
            return false;
        };
        stats.ready + stats.scheduled + stats.active == 0
    })
    .await;
    for (stop, task) in running {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
    up_windows.push((up_since, chrono::Utc::now()));

    let runs = runs.0.lock().unwrap().clone();
    let lost: Vec<_> = acknowledged.iter().filter(|id| !runs.contains_key(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged jobs lost",
        lost.len(),
        acknowledged.len()
    );
    let twice: u64 = runs.values().map(|n| u64::from(n - 1)).sum();
    let refused: u64 = workers.iter().map(|w| w.stats().lease_lost).sum();
    assert!(
        twice <= refused,
        "{twice} extra runs but only {refused} refused acknowledgements"
    );

    let keys: Vec<String> = server.connection().hkeys("{beats}:unique").unwrap();
    let ticks: std::collections::BTreeSet<i64> = keys
        .iter()
        .filter_map(|k| k.strip_prefix("schedule:beat:")?.parse().ok())
        .collect();
    let margin = chrono::TimeDelta::milliseconds(100);
    let mut expected = 0;
    for (from, to) in &up_windows {
        let (from, to) = ((*from + margin).timestamp_millis(), (*to - margin).timestamp_millis());
        for tick in (from.div_euclid(1_000) + 1..=to.div_euclid(1_000)).map(|s| s * 1_000) {
            expected += 1;
            assert!(
                ticks.contains(&tick),
                "the tick at {tick} ms, while Redis was up, was lost: {ticks:?}"
            );
        }
    }
    assert!(expected >= 10, "the test saw too few ticks ({expected}) to tell");
    eprintln!(
        "10 SIGKILLs: {} acknowledged jobs, 0 lost, {twice} run twice, {refused} acknowledgements refused, {expected} ticks checked",
        acknowledged.len()
    );
}
