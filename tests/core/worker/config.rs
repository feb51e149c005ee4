//! Worker configuration: what `build` refuses.

use std::{sync::Arc, time::Duration};

use flagship_worker::{Broker, MemoryBroker, QueueConfig, RetryPolicy, Worker, WorkerBuilder};

use super::{scripted, Behaviour};

type Configure = fn(WorkerBuilder) -> WorkerBuilder;

#[test]
fn bad_configuration_is_refused_when_built() {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let build = |f: Configure| {
        let (handler, _seen) = scripted(|_, _| Behaviour::Succeed);
        f(Worker::builder(broker.clone()).handler(handler)).build()
    };
    let cases: [(&str, Configure); 8] = [
        ("concurrency", |b| {
            b.queue(QueueConfig::new("tasks").unwrap().concurrency(0))
        }),
        ("concurrency", |b| {
            b.queue(QueueConfig::new("tasks").unwrap().concurrency(1_000_000))
        }),
        ("lease", |b| b.lease(Duration::from_millis(1))),
        ("lease", |b| b.lease(Duration::from_secs(365 * 24 * 3600))),
        ("heartbeat", |b| {
            b.lease(Duration::from_secs(10)).heartbeat(Duration::from_secs(20))
        }),
        ("retries", |b| {
            b.queue(
                QueueConfig::new("tasks")
                    .unwrap()
                    .retry_policy(RetryPolicy::exponential().with_max_retries(5_000)),
            )
        }),
        ("job timeout", |b| {
            b.queue(QueueConfig::new("tasks").unwrap().job_timeout(Duration::ZERO))
        }),
        ("idle wait", |b| b.idle_wait(Duration::ZERO)),
    ];
    for (what, case) in cases {
        let err = build(case).expect_err(what).to_string();
        assert!(err.contains(what), "`{err}` should mention {what}");
    }
    assert!(build(|b| b).is_ok());
    assert!(
        Worker::builder(broker.clone()).build().is_err(),
        "a worker with nothing to do"
    );
    assert!(QueueConfig::new("").is_err());
    assert!(QueueConfig::new("x".repeat(200)).is_err());
}
