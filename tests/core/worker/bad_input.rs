//! Bad input: refused at enqueue when it comes through a client, refused
//! at reservation (dead-lettered at once, never retried) when a producer
//! wrote it straight into the broker.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use flagship_worker::{
    testing::TestWorker, Broker, Client, DeadLetterQueue, EnqueueOptions, Error, Job, JobEnvelope, JobOutcome,
    MemoryBroker, SchemaRegistry, Worker,
};

use super::{next, queue, scripted, start, task, Behaviour, Task};

#[tokio::test(start_paused = true)]
async fn bad_input_from_the_broker_goes_to_the_dlq_at_once_and_the_worker_keeps_going() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, mut seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = Worker::builder(broker.clone()).handler(handler).build().unwrap();

    // A foreign producer wrote these straight into the broker, bypassing validation.
    let now = Utc::now();
    let unknown = JobEnvelope::new("no-such-kind", queue(), serde_json::json!({}), now);
    let malformed = JobEnvelope::new(
        Task::KIND,
        queue(),
        serde_json::json!({ "n": "one", "label": "x" }),
        now,
    );
    let (unknown_id, malformed_id) = (unknown.id, malformed.id);
    broker.enqueue(vec![unknown, malformed]).await.unwrap();
    worker.client().enqueue(&task(7)).await.unwrap();

    let running = start(&worker);
    assert_eq!(next(&mut seen).await.job.n, 7, "the good job still runs");
    running.stop().await;

    let unknown = broker
        .get_dead(&queue(), unknown_id)
        .await
        .unwrap()
        .expect("unknown kind dead-lettered");
    assert!(unknown
        .dead_letter_reason
        .unwrap()
        .contains("unknown job kind `no-such-kind`"));
    assert_eq!(unknown.attempts.len(), 1, "dead at once, no retries");
    let malformed = broker
        .get_dead(&queue(), malformed_id)
        .await
        .unwrap()
        .expect("bad payload dead-lettered");
    let reason = malformed.dead_letter_reason.unwrap();
    assert!(reason.contains("/n"), "reason names the JSON path: {reason}");
    assert_eq!(malformed.attempts.len(), 1);
    assert_eq!(worker.stats().retried, 0);
}

#[tokio::test(start_paused = true)]
async fn refused_jobs_are_counted_and_their_reasons_never_quote_the_payload() {
    let (handler, _seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = TestWorker::new(|w| w.handler(handler)).unwrap();

    // A foreign producer's jobs, straight into the broker: a payload the
    // schema refuses (a `u32` below its minimum), and a kind nobody handles.
    let canary = "-40404";
    let payload = serde_json::json!({ "n": -40404, "label": "x" });
    let now = Utc::now();
    let refused = JobEnvelope::new(Task::KIND, queue(), payload.clone(), now);
    let unknown = JobEnvelope::new("no-such-kind", queue(), payload, now);
    let ids = [refused.id, unknown.id];
    worker.backend().enqueue(vec![refused, unknown]).await.unwrap();

    let ran = worker.run_until_empty().await.unwrap();
    assert_eq!(ran.len(), 2);
    assert!(ran.iter().all(|r| r.outcome == Some(JobOutcome::Refused)), "{ran:?}");
    let stats = worker.stats();
    assert_eq!((stats.refused, stats.dead_lettered, stats.retried), (2, 2, 0));

    let mut reasons = Vec::new();
    for id in ids {
        let dead = worker
            .backend()
            .get_dead(&queue(), id)
            .await
            .unwrap()
            .expect("dead-lettered");
        assert_eq!(dead.attempts.len(), 1, "dead at once, no retries");
        reasons.push(dead.dead_letter_reason.unwrap());
    }
    let [refused, unknown] = &reasons[..] else {
        unreachable!()
    };
    for must in ["refused at reservation", "`/n`", "minimum"] {
        assert!(refused.contains(must), "the reason says {must}: {refused}");
    }
    assert!(unknown.contains("unknown job kind `no-such-kind`"), "{unknown}");
    for reason in &reasons {
        assert!(!reason.contains(canary), "a reason quotes the payload: {reason}");
        assert!(
            !reason.contains("nothing was enqueued"),
            "the job was enqueued: {reason}"
        );
    }
    for run in &ran {
        let error = run.error.as_ref().expect("a refused run says why");
        assert!(reasons.contains(error), "the run reports the DLQ reason: {error}");
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_payloads_are_refused_at_enqueue_with_the_json_path_and_nothing_is_stored() {
    let broker = Arc::new(MemoryBroker::new());
    let client = Client::new(broker.clone());
    client.registry().register::<Task>().unwrap();

    let err = client
        .enqueue_raw(
            "task",
            serde_json::json!({ "n": 1, "label": "" }),
            EnqueueOptions::new(),
        )
        .await
        .unwrap_err();
    match &err {
        Error::InvalidPayload { path, .. } => assert_eq!(path, "/label"),
        other => panic!("expected InvalidPayload, got {other}"),
    }
    assert!(err.to_string().contains("/label"));
    assert!(matches!(
        client
            .enqueue_raw("task", serde_json::json!("not an object"), EnqueueOptions::new())
            .await,
        Err(Error::InvalidPayload { .. })
    ));
    assert!(matches!(
        client
            .enqueue_raw("unknown", serde_json::json!({}), EnqueueOptions::new())
            .await,
        Err(Error::UnknownKind(_))
    ));
    // A batch with one bad job enqueues nothing.
    let batch = [
        task(1),
        Task {
            n: 2,
            label: String::new(),
        },
    ];
    assert!(client.enqueue_batch(&batch, EnqueueOptions::new()).await.is_err());
    let stats = broker.stats(&queue()).await.unwrap();
    assert_eq!(stats.ready + stats.scheduled, 0);
}

#[tokio::test(start_paused = true)]
async fn oversized_payloads_are_refused() {
    let broker = Arc::new(MemoryBroker::new());
    let registry = Arc::new(SchemaRegistry::new().with_max_payload_bytes(1024));
    let client = Client::with_registry(broker.clone(), registry);
    let big = Task {
        n: 1,
        label: "x".repeat(2048),
    };
    assert!(matches!(
        client.enqueue(&big).await,
        Err(Error::PayloadTooLarge { limit: 1024, .. })
    ));
    assert_eq!(broker.stats(&queue()).await.unwrap().ready, 0);
}

#[tokio::test(start_paused = true)]
async fn a_run_at_absurdly_far_ahead_is_refused() {
    let client = Client::new(Arc::new(MemoryBroker::new()));
    let far = EnqueueOptions::new().delay(Duration::from_secs(100 * 365 * 24 * 3600));
    let err = client.enqueue_with(&task(1), far).await.unwrap_err();
    assert!(err.to_string().contains("ten years"), "{err}");
    let retries = EnqueueOptions::new().max_retries(1_000_000);
    assert!(client.enqueue_with(&task(1), retries).await.is_err());
}
