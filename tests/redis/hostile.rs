//! Hostile input written straight into a queue's keys (as a producer in
//! another language, or a careless operator, could), and shutdown: every
//! job ends (runs, or reaches the dead-letter queue with its reason), no
//! job holds up another, and nothing is lost half-way through a script.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    support::run,
    support::{demo, eventually, queue, start, take, Demo},
};
use flagship_worker::{
    broker::redis::RedisBroker, testing::redis_server::RedisServer, Broker, DeadFilter, DeadLetterQueue, Handler,
    HandlerError, Job, JobContext, JobEnvelope, LeaseStatus, QueueConfig, QueueName, ReserveRequest, RetryPolicy,
    Worker,
};
use redis::Commands;

/// The demo queue, where every job here lives.
fn q() -> QueueName {
    queue(<Demo as Job>::QUEUE)
}

/// The name of the demo queue's key `suffix`.
pub(crate) fn key(suffix: &str) -> String {
    format!("{{{}}}:{suffix}", <Demo as Job>::QUEUE)
}

/// Counts the runs of each demo job by its number.
#[derive(Clone, Default)]
pub(crate) struct Runs(Arc<Mutex<HashMap<u64, u32>>>);

impl Runs {
    pub(crate) fn of(&self, n: u64) -> u32 {
        self.0.lock().unwrap().get(&n).copied().unwrap_or(0)
    }

    fn distinct(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Handler for Runs {
    type Job = Demo;

    async fn handle(&self, job: Demo, _: &JobContext) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(job.n).or_default() += 1;
        Ok(())
    }
}

/// A worker on the demo queue with short leases and quick recovery.
pub(crate) async fn worker(server: &RedisServer, runs: &Runs, idle_wait: Duration) -> Worker {
    let broker = Arc::new(RedisBroker::connect(server.url()).await.unwrap());
    Worker::builder(broker)
        .handler(runs.clone())
        .queue(
            QueueConfig::new(<Demo as Job>::QUEUE)
                .unwrap()
                .concurrency(4)
                .retry_policy(RetryPolicy::fixed(2, Duration::from_millis(10))),
        )
        .lease(Duration::from_millis(400))
        .recovery_interval(Duration::from_millis(100))
        .idle_wait(idle_wait)
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Whether every job has ended: `done` ran, `dead` dead-lettered, none waiting or leased.
async fn ended(broker: &RedisBroker, runs: &Runs, done: usize, dead: u64) -> bool {
    let stats = broker.stats(&q()).await.unwrap();
    runs.distinct() == done && stats.dead == dead && stats.ready + stats.scheduled + stats.active == 0
}

/// A stats counter of the demo queue, read straight from Redis.
fn counter(server: &RedisServer, name: &str) -> u64 {
    let value: Option<u64> = server.connection().hget(key("stats"), name).unwrap();
    value.unwrap_or(0)
}

/// Writes `envelope` under `id` and makes it ready, as a producer without
/// the enqueue script would.
fn write_ready(server: &RedisServer, id: &[u8], envelope: &[u8]) {
    let mut conn = server.connection();
    let _: () = conn.hset(key("jobs"), id, envelope).unwrap();
    let _: () = conn.rpush(key("ready"), id).unwrap();
}

async fn dead_jobs(broker: &RedisBroker) -> Vec<JobEnvelope> {
    broker.list_dead(&DeadFilter::queue(q()), None, 100).await.unwrap().jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stored_under_an_upper_case_id_is_dead_lettered_under_its_canonical_form() {
    let Some((server, broker)) = start().await else { return };
    // A producer that writes UUIDs in upper case, in the field and the JSON.
    let foreign = demo(1);
    let canonical = foreign.id;
    let upper = canonical.to_string().to_uppercase();
    let mut json = serde_json::to_value(&foreign).unwrap();
    json["id"] = upper.clone().into();
    write_ready(&server, upper.as_bytes(), &serde_json::to_vec(&json).unwrap());
    broker.enqueue((2..5).map(demo).collect()).await.unwrap();

    let runs = Runs::default();
    let worker = worker(&server, &runs, Duration::from_millis(200)).await;
    let (stop, task) = run(&worker);
    // Before the fix it ran, its completion was refused (the lease was
    // looked up under the lower-case id), and it was recovered forever.
    eventually("every job ended", Duration::from_secs(10), || {
        ended(&broker, &runs, 3, 1)
    })
    .await;

    assert_eq!(runs.of(1), 0, "it did not run under an id no lease call can find");
    let dead = broker
        .get_dead(&q(), canonical)
        .await
        .unwrap()
        .expect("filed under the canonical id");
    let reason = dead.dead_letter_reason.unwrap();
    assert!(reason.contains("canonical form") && reason.contains(&upper), "{reason}");
    let stored: bool = server.connection().hexists(key("jobs"), &upper).unwrap();
    assert!(!stored, "nothing is left under the upper-case id");

    // Retried from the DLQ, it runs under its canonical id.
    assert!(broker.retry_dead(&q(), canonical).await.unwrap());
    eventually("the retried job ran", Duration::from_secs(10), || {
        ended(&broker, &runs, 4, 0)
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(runs.of(1), 1);
    assert_eq!(worker.stats().lease_lost, 0, "no completion was refused");
}

#[tokio::test]
async fn a_job_under_a_non_canonical_id_is_never_filed_over_the_job_under_the_canonical_one() {
    let Some((server, broker)) = start().await else { return };
    let job = demo(1);
    let canonical = job.id.to_string();
    let mut upper = serde_json::to_value(demo(2)).unwrap();
    upper["id"] = canonical.to_uppercase().into();
    write_ready(
        &server,
        canonical.to_uppercase().as_bytes(),
        &serde_json::to_vec(&upper).unwrap(),
    );
    write_ready(&server, canonical.as_bytes(), &job.to_json());

    let reserved = broker.reserve(&q(), take(2, 30_000)).await.unwrap();
    assert_eq!(reserved.len(), 1);
    assert_eq!(*reserved[0].envelope, job, "the job under the canonical id runs");
    let stored: Vec<u8> = server.connection().hget(key("jobs"), &canonical).unwrap();
    assert_eq!(stored, job.to_json(), "and was not overwritten");
    let dead = dead_jobs(&broker).await;
    assert_eq!(dead.len(), 1);
    assert_ne!(dead[0].id, job.id, "the other one is filed under a new id");
    let reason = dead[0].dead_letter_reason.as_deref().unwrap();
    assert!(reason.contains(&canonical.to_uppercase()), "{reason}");
}

#[tokio::test]
async fn the_enqueue_script_refuses_a_batch_with_an_id_not_in_canonical_form() {
    let Some((server, _broker)) = start().await else { return };
    // What a producer in another language loads (docs/redis.md).
    let script = redis::Script::new(concat!(
        include_str!("../../src/broker/redis/scripts/prelude.lua"),
        include_str!("../../src/broker/redis/scripts/enqueue.lua")
    ));
    let keys = [
        "jobs",
        "ready",
        "scheduled",
        "unique",
        "completed-keys",
        "job-keys",
        "wake",
    ]
    .map(key);
    let good = demo(1);
    let bad = demo(2);
    for id in [
        bad.id.to_string().to_uppercase(),
        bad.id.to_string().replace('-', ""),
        format!("{{{}}}", bad.id),
        "not-a-uuid".to_owned(),
    ] {
        let mut invocation = script.prepare_invoke();
        for k in &keys {
            invocation.key(k);
        }
        invocation
            .arg(good.id.to_string())
            .arg(good.to_json())
            .arg(0)
            .arg("")
            .arg(&id)
            .arg(bad.to_json())
            .arg(0)
            .arg("");
        let refused = invocation.invoke::<redis::Value>(&mut server.connection()).unwrap_err();
        assert!(
            refused.to_string().contains("job 2 of the batch") && refused.to_string().contains("canonical form"),
            "{refused}"
        );
        let stored: usize = server.connection().hlen(key("jobs")).unwrap();
        let ready: usize = server.connection().llen(key("ready")).unwrap();
        assert_eq!((stored, ready), (0, 0), "nothing of the batch was stored for {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_is_not_utf8_does_not_hold_up_the_jobs_leased_with_it() {
    let Some((server, broker)) = start().await else { return };
    broker.enqueue((0..5).map(demo).collect()).await.unwrap();
    write_ready(&server, b"\xff\xfe-bad-id", &demo(100).to_json());
    // An id without an envelope: nothing to run or dead-letter.
    let _: () = server
        .connection()
        .rpush(key("ready"), b"\xc3\x28-ghost".as_slice())
        .unwrap();
    broker.enqueue((5..10).map(demo).collect()).await.unwrap();

    let runs = Runs::default();
    let worker = worker(&server, &runs, Duration::from_millis(200)).await;
    let (stop, task) = run(&worker);
    // Before the fix the whole batch failed to decode, was recovered and
    // failed again: none of the ten good jobs ever ran.
    eventually("the good jobs ran", Duration::from_secs(10), || {
        ended(&broker, &runs, 10, 1)
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();

    assert!((0..10).all(|n| runs.of(n) == 1));
    assert_eq!(runs.of(100), 0);
    let dead = dead_jobs(&broker).await;
    assert_eq!(dead.len(), 1);
    let reason = dead[0].dead_letter_reason.as_deref().unwrap();
    assert!(
        reason.contains("not UTF-8") && reason.contains("\\xff\\xfe-bad-id"),
        "{reason}"
    );
    assert_eq!(counter(&server, "dropped"), 1, "the id without an envelope was counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_that_is_not_a_number_is_repaired_before_any_job_moves() {
    let Some((server, broker)) = start().await else { return };
    let _: () = server.connection().set(key("seq"), "not-a-number").unwrap();
    broker.enqueue((0..5).map(demo).collect()).await.unwrap();

    let runs = Runs::default();
    let worker = worker(&server, &runs, Duration::from_millis(200)).await;
    let (stop, task) = run(&worker);
    // Before the fix reserve popped the ids, then failed on INCRBY: the
    // five jobs were left in no state and never ran.
    eventually("the jobs ran", Duration::from_secs(10), || ended(&broker, &runs, 5, 0)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let seq: u64 = server.connection().get(key("seq")).unwrap();
    assert!(seq > 1_000_000_000_000_000, "restarted from Redis's time in µs: {seq}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_stored_in_no_state_are_put_back_and_counted() {
    let Some((server, broker)) = start().await else { return };
    // Envelopes whose ids were popped by a script that then failed.
    let mut conn = server.connection();
    for n in 0..5 {
        let job = demo(n);
        let _: () = conn.hset(key("jobs"), job.id.to_string(), job.to_json()).unwrap();
    }
    broker.enqueue((5..7).map(demo).collect()).await.unwrap();

    let runs = Runs::default();
    let worker = worker(&server, &runs, Duration::from_millis(200)).await;
    let (stop, task) = run(&worker);
    eventually("the lost jobs ran", Duration::from_secs(10), || {
        ended(&broker, &runs, 7, 0)
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(counter(&server, "restored"), 5);
    assert_eq!(broker.stats(&q()).await.unwrap().restored, 5);
}

#[tokio::test]
async fn a_key_of_the_wrong_type_stops_a_script_before_it_writes() {
    let Some((server, broker)) = start().await else { return };
    broker.enqueue((0..5).map(demo).collect()).await.unwrap();
    let _: () = server.connection().set(key("active"), "not a sorted set").unwrap();

    let refused = broker.reserve(&q(), take(5, 30_000)).await.unwrap_err();
    assert!(refused.to_string().contains("holds a string"), "{refused}");
    // Before the fix the ids were popped, then ZADD failed: five jobs lost.
    let ready: usize = server.connection().llen(key("ready")).unwrap();
    assert_eq!(ready, 5, "nothing moved");

    let _: () = server.connection().del(key("active")).unwrap();
    assert_eq!(broker.reserve(&q(), take(5, 30_000)).await.unwrap().len(), 5);
}

#[tokio::test]
async fn a_counter_that_is_not_a_number_does_not_fail_an_acknowledgement() {
    let Some((server, broker)) = start().await else { return };
    broker.enqueue(vec![demo(1)]).await.unwrap();
    let _: () = server.connection().hset(key("stats"), "completed", "many").unwrap();
    let job = broker.reserve(&q(), take(1, 30_000)).await.unwrap().remove(0);
    // Before the fix HINCRBY failed after the job was deleted: the
    // acknowledgement failed although the job was gone.
    assert_eq!(broker.complete(&[job.lease]).await.unwrap(), [LeaseStatus::Held]);
    assert_eq!(counter(&server, "completed"), 1, "the counter restarted");
    let stats = broker.stats(&q()).await.unwrap();
    assert_eq!((stats.completed, stats.ready, stats.active), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_above_the_limit_written_into_redis_is_dead_lettered_naming_it() {
    let Some((server, broker)) = start().await else { return };
    let mut big = demo(1);
    big.payload = serde_json::json!({ "n": 1, "pad": "x".repeat(2 * 1024 * 1024) }).into();
    write_ready(&server, big.id.to_string().as_bytes(), &big.to_json());
    broker.enqueue(vec![demo(2)]).await.unwrap();

    let runs = Runs::default();
    let worker = worker(&server, &runs, Duration::from_millis(200)).await;
    let (stop, task) = run(&worker);
    eventually("both jobs ended", Duration::from_secs(10), || {
        ended(&broker, &runs, 1, 1)
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();

    assert_eq!(runs.of(1), 0, "the oversized job did not run");
    let dead = broker.get_dead(&q(), big.id).await.unwrap().unwrap();
    let reason = dead.dead_letter_reason.unwrap();
    assert!(reason.contains("limit of 1048576 bytes"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_an_idle_wait() {
    let Some((server, _broker)) = start().await else { return };
    let runs = Runs::default();
    // A long idle wait: before the fix, shutdown waited for it to end.
    let worker = worker(&server, &runs, Duration::from_secs(10)).await;
    let (stop, task) = run(&worker);
    eventually(
        "the worker blocked waiting for work",
        Duration::from_secs(10),
        || async {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query(&mut server.connection())
                .unwrap();
            info.lines()
                .any(|l| l.strip_prefix("blocked_clients:").is_some_and(|n| n.trim() != "0"))
        },
    )
    .await;
    let asked = tokio::time::Instant::now();
    stop.send(true).unwrap();
    task.await.unwrap();
    let took = asked.elapsed();
    eprintln!("shutdown of an idle worker on Redis took {took:?}");
    assert!(took < Duration::from_millis(300), "shutdown took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reserve_calls_leave_nothing_leased() {
    let Some((server, broker)) = start().await else { return };
    let total = 20;
    broker.enqueue((0..total).map(demo).collect()).await.unwrap();
    for _ in 0..3 {
        // Redis holds scripts for 300 ms: each call is dropped after its
        // script was sent, and the script runs (and leases) after that.
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(300)
            .arg("WRITE")
            .query(&mut server.connection())
            .unwrap();
        let request = ReserveRequest::new(5, Duration::from_secs(30), Duration::ZERO);
        let dropped = tokio::time::timeout(Duration::from_millis(50), broker.reserve(&q(), request)).await;
        assert!(dropped.is_err(), "the call was still waiting for Redis when dropped");
    }
    // Before the fix, the jobs those scripts leased stayed leased for the
    // whole 30 s lease.
    eventually("no job left leased", Duration::from_secs(5), || async {
        broker.stats(&q()).await.unwrap().active == 0
    })
    .await;
    // Calls dropped at every other stage too (before the script is sent,
    // while waiting for work) leave every job reservable.
    let mut taken = 0;
    for i in 0..100u64 {
        let patience = Duration::from_micros(i * 37 % 2_000);
        let request = ReserveRequest::new(3, Duration::from_secs(30), Duration::from_millis(5));
        if let Ok(reserved) = tokio::time::timeout(patience, broker.reserve(&q(), request)).await {
            let leases: Vec<_> = reserved.unwrap().into_iter().map(|r| r.lease).collect();
            taken += leases.len() as u64;
            broker.complete(&leases).await.unwrap();
        }
    }
    eventually("no job left leased", Duration::from_secs(5), || async {
        broker.stats(&q()).await.unwrap().active == 0
    })
    .await;
    let rest = broker.reserve(&q(), take(1_000, 30_000)).await.unwrap();
    assert_eq!(taken + rest.len() as u64, total, "every job reserved once");
}
