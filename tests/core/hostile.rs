//! Issue 11, the core's share: hostile input must be refused or survived
//! (deep payloads, bad formats, secrets in messages, misleading reasons),
//! a misspelt queue config must not be accepted, and clocks must agree.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flagship_worker::{
    Broker, Client, DeadLetterQueue, EnqueueOptions, Error, Handler, HandlerError, Job, JobContext, JobEnvelope, JobId,
    MemoryBroker, QueueConfig, QueueName, RetryPolicy, Schedule, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    logs,
    worker::{queue, run_until_stats, scripted, task, Behaviour, Task},
};

/// A string that must never reach an error, a reason or a log line.
const CANARY: &str = "CANARY-schema-c3";

/// `levels` arrays, one inside the other, built without recursion.
fn nested(levels: usize) -> Value {
    let mut value = Value::Null;
    for _ in 0..levels {
        value = Value::Array(vec![value]);
    }
    value
}

/// `{"data": data}`, built without `json!` (which serializes its
/// arguments, recursively).
fn blob(data: Value) -> Value {
    Value::Object([("data".to_owned(), data)].into_iter().collect())
}

/// A job carrying arbitrary JSON.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Blob {
    data: Value,
}

impl Job for Blob {
    const KIND: &'static str = "blob";
    const QUEUE: &'static str = "blobs";
}

/// Completes every blob.
struct Accept;

#[async_trait]
impl Handler for Accept {
    type Job = Blob;
    async fn handle(&self, _: Blob, _: &JobContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn blobs() -> QueueName {
    QueueName::new(Blob::QUEUE).unwrap()
}

/// Runs `worker` until `queue` has `done` completed or dead jobs (within
/// an hour of virtual time), then stops it.
async fn run_until_settled(worker: &Worker, broker: &MemoryBroker, queue: &QueueName, done: u64) {
    run_until_stats(worker, broker, queue, |stats| stats.completed + stats.dead >= done).await;
}

async fn dead(broker: &MemoryBroker, queue: &QueueName, id: JobId) -> JobEnvelope {
    broker.get_dead(queue, id).await.unwrap().expect("the job is dead")
}

/// Item 5: `check_size` serialized recursively, and a payload nested
/// 20k-30k levels overflowed the stack (the whole process aborted).
#[tokio::test(start_paused = true)]
async fn a_payload_nested_200k_levels_is_refused_without_overflowing_the_stack() {
    let broker = Arc::new(MemoryBroker::new());
    let client = Client::new(broker.clone());
    client.registry().register::<Blob>().unwrap();
    let err = client
        .enqueue_raw("blob", blob(nested(200_000)), EnqueueOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PayloadTooDeep { limit: 64, .. }), "{err}");
    assert!(err.to_string().contains("more than 64 levels deep"), "{err}");
    assert_eq!(broker.stats(&blobs()).await.unwrap().ready, 0);
}

/// Item 6: payloads nested 126+ levels were accepted, and no worker could
/// decode them. One limit, enforced at enqueue, typed and raw.
#[tokio::test(start_paused = true)]
async fn payloads_past_the_depth_limit_are_refused_at_enqueue_and_at_it_they_run() {
    let broker = Arc::new(MemoryBroker::new());
    let worker = Worker::builder(broker.clone()).handler(Accept).build().unwrap();
    let client = worker.client();

    let raw = client
        .enqueue_raw("blob", blob(nested(126)), EnqueueOptions::new())
        .await;
    assert!(matches!(raw, Err(Error::PayloadTooDeep { .. })), "{raw:?}");
    let typed = client.enqueue(&Blob { data: nested(100) }).await;
    assert!(matches!(typed, Err(Error::PayloadTooDeep { .. })), "{typed:?}");
    let batch = client
        .enqueue_envelopes(vec![JobEnvelope::new("blob", blobs(), blob(nested(64)), Utc::now())])
        .await;
    assert!(matches!(batch, Err(Error::PayloadTooDeep { .. })), "{batch:?}");
    assert_eq!(broker.stats(&blobs()).await.unwrap().ready, 0, "nothing was enqueued");

    // 64 levels in all: the object and 63 arrays inside it.
    client.enqueue(&Blob { data: nested(63) }).await.unwrap();
    run_until_settled(&worker, &broker, &blobs(), 1).await;
    assert_eq!(worker.stats().completed, 1);
}

/// Item 6, worker side: a too-deep payload that reached the broker past
/// the client dead-letters with the limit as its reason, and is counted.
#[tokio::test(start_paused = true)]
async fn a_too_deep_payload_written_past_the_client_is_dead_lettered_and_counted() {
    let broker = Arc::new(MemoryBroker::new());
    let worker = Worker::builder(broker.clone()).handler(Accept).build().unwrap();
    let envelope = JobEnvelope::new("blob", blobs(), blob(nested(126)), Utc::now());
    let id = envelope.id;
    broker.enqueue(vec![envelope]).await.unwrap();
    run_until_settled(&worker, &broker, &blobs(), 1).await;

    let reason = dead(&broker, &blobs(), id).await.dead_letter_reason.unwrap();
    assert!(reason.contains("more than 64 levels deep"), "{reason}");
    assert_eq!(worker.stats().dead_lettered, 1);
    assert_eq!(worker.stats().completed, 0);
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    occurred_at: DateTime<Utc>,
    #[schemars(email)]
    actor: String,
}

impl Job for AuditEvent {
    const KIND: &'static str = "audit";
    const QUEUE: &'static str = "audit";
}

/// Item 8: `"occurredAt": "not-a-date"` was accepted at enqueue and
/// dead-lettered on its first attempt.
#[tokio::test(start_paused = true)]
async fn formats_are_checked_at_enqueue() {
    let broker = Arc::new(MemoryBroker::new());
    let client = Client::new(broker.clone());
    client.registry().register::<AuditEvent>().unwrap();
    let good = json!({ "occurredAt": "2025-03-01T09:30:00+01:00", "actor": "ada@example.com" });
    client
        .enqueue_raw("audit", good.clone(), EnqueueOptions::new())
        .await
        .unwrap();

    for (field, bad, format) in [
        ("occurredAt", "not-a-date", "date-time"),
        ("occurredAt", "2025-03-01T09:30:00", "date-time"),
        ("actor", "ada at example", "email"),
    ] {
        let mut payload = good.clone();
        payload[field] = bad.into();
        let err = client
            .enqueue_raw("audit", payload, EnqueueOptions::new())
            .await
            .unwrap_err();
        match &err {
            Error::InvalidPayload {
                path, rule, message, ..
            } => {
                assert_eq!(path, &format!("/{field}"));
                assert_eq!(rule, &format!("/properties/{field}/format"));
                assert_eq!(message, &format!("is not a valid `{format}`"));
            }
            other => panic!("{field} = {bad}: expected InvalidPayload, got {other}"),
        }
    }
    let audit = QueueName::new(AuditEvent::QUEUE).unwrap();
    assert_eq!(broker.stats(&audit).await.unwrap().ready, 1, "only the good event");
}

/// Items 9 and 10: a payload a foreign producer wrote past validation is
/// dead-lettered with a reason that names the path and the rule, neither
/// claims that nothing was enqueued nor quotes the value, and no log line
/// quotes it either.
#[tokio::test(start_paused = true)]
async fn a_refused_stored_payload_is_dead_lettered_without_lies_or_secrets() {
    let logs = logs::capture("flagship_worker=warn");
    let broker = Arc::new(MemoryBroker::new());
    let (handler, _seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = Worker::builder(broker.clone()).handler(handler).build().unwrap();
    let foreign = JobEnvelope::new(Task::KIND, queue(), json!({ "n": CANARY, "label": "x" }), Utc::now());
    let id = foreign.id;
    broker.enqueue(vec![foreign]).await.unwrap();
    run_until_settled(&worker, &broker, &queue(), 1).await;

    let reason = dead(&broker, &queue(), id).await.dead_letter_reason.unwrap();
    assert!(!reason.contains(CANARY), "{reason}");
    assert!(!reason.contains("nothing was enqueued"), "{reason}");
    assert!(reason.contains("refused at reservation"), "{reason}");
    assert!(
        reason.contains("`/n`") && reason.contains("schema rule `/properties/n/type`"),
        "{reason}"
    );
    let log = logs.text();
    assert!(
        log.contains("dead-lettered reason="),
        "the WARN line is captured: {log}"
    );
    assert!(!log.contains(CANARY), "{log}");
}

/// Item 10, past the schema: a payload the schema accepts but the Rust
/// type does not (a number past `u32`) dead-letters without its value.
#[tokio::test(start_paused = true)]
async fn a_payload_that_misses_its_type_is_dead_lettered_without_its_value() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, _seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = Worker::builder(broker.clone()).handler(handler).build().unwrap();
    let foreign = JobEnvelope::new(
        Task::KIND,
        queue(),
        json!({ "n": 4_294_967_296_123u64, "label": "x" }),
        Utc::now(),
    );
    let id = foreign.id;
    broker.enqueue(vec![foreign]).await.unwrap();
    run_until_settled(&worker, &broker, &queue(), 1).await;

    let reason = dead(&broker, &queue(), id).await.dead_letter_reason.unwrap();
    assert!(!reason.contains("4294967296123"), "{reason}");
    assert!(reason.contains("does not decode as the handler's type"), "{reason}");
}

/// Item 10, at enqueue: the refusal names the path and the rule only.
#[tokio::test(start_paused = true)]
async fn enqueue_refusals_do_not_quote_the_value() {
    let client = Client::new(Arc::new(MemoryBroker::new()));
    client.registry().register::<Task>().unwrap();
    for payload in [
        json!({ "n": CANARY, "label": "x" }),
        json!({ "n": 1, "label": [CANARY] }),
        json!([CANARY]),
    ] {
        let err = client
            .enqueue_raw("task", payload, EnqueueOptions::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains(CANARY), "{err}");
        assert!(err.contains("schema rule"), "{err}");
    }
}

/// A job enqueued by a schedule.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Nightly {}

impl Job for Nightly {
    const KIND: &'static str = "nightly";
    const QUEUE: &'static str = "maintenance";
}

/// Item 11: `QueueConfig::new("billng")` next to a handler on `billing`
/// was accepted, and the handler's queue ran on the default policy.
#[test]
fn a_queue_config_without_a_handler_is_refused() {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let builder = || Worker::builder(broker.clone()).handler(scripted(|_, _| Behaviour::Succeed).0);

    let typo = QueueConfig::new("taks").unwrap().retry_policy(RetryPolicy::none());
    let err = builder().queue(typo).build().unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("queue `taks`") && text.contains("the queues with handlers are `tasks`"),
        "{text}"
    );

    // A schedule's queue has a producer here, not a handler.
    let schedule = Schedule::every("nightly", Duration::from_secs(3600), &Nightly {}).unwrap();
    let err = builder()
        .schedule(schedule)
        .queue(QueueConfig::new("maintenance").unwrap())
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("schedule `nightly`") && err.contains("needs no QueueConfig"),
        "{err}"
    );

    let right = QueueConfig::new("tasks").unwrap().retry_policy(RetryPolicy::none());
    assert!(builder().queue(right).build().is_ok());
}

/// Item 12: a broker and a worker built apart each took their own system
/// time base, so the broker stamped `dead_lettered_at` before the
/// `started_at` of the attempt that dead-lettered the job.
#[tokio::test(start_paused = true)]
async fn a_broker_and_a_worker_built_apart_agree_on_the_time() {
    let broker = Arc::new(MemoryBroker::new());
    // Let the system clock move on between the two.
    let made = Utc::now();
    while Utc::now() <= made {
        std::hint::spin_loop();
    }
    let (handler, _seen) = scripted(|_, _| Behaviour::FailPermanently);
    let worker = Worker::builder(broker.clone()).handler(handler).build().unwrap();
    let id = worker.client().enqueue(&task(1)).await.unwrap().id();
    run_until_settled(&worker, &broker, &queue(), 1).await;

    let dead = dead(&broker, &queue(), id).await;
    let attempt = &dead.attempts[0];
    let dead_at = dead.dead_lettered_at.unwrap();
    assert!(dead.enqueued_at <= attempt.started_at, "{dead:?}");
    assert!(attempt.started_at <= attempt.finished_at, "{dead:?}");
    assert!(
        attempt.finished_at <= dead_at,
        "dead-lettered before the attempt ended: {dead:?}"
    );
}

/// Item 13: `attempt` counts the failed attempts before the latest run; a
/// dead job keeps the number of the attempt that dead-lettered it.
#[tokio::test(start_paused = true)]
async fn a_dead_jobs_attempt_is_the_number_of_its_last_run() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, _seen) = scripted(|_, _| Behaviour::Fail);
    let worker = Worker::builder(broker.clone())
        .handler(handler)
        .queue(
            QueueConfig::new("tasks")
                .unwrap()
                .retry_policy(RetryPolicy::fixed(2, Duration::from_secs(1))),
        )
        .build()
        .unwrap();
    let id = worker.client().enqueue(&task(1)).await.unwrap().id();
    run_until_settled(&worker, &broker, &queue(), 1).await;

    let dead = dead(&broker, &queue(), id).await;
    assert_eq!(dead.attempts.len(), 3, "a first run and two retries");
    assert_eq!(dead.attempt, 2, "the third run, counting from 0");
}
