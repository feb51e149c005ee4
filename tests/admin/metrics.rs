//! `GET /metrics`: per-kind counters and durations through the worker's
//! observer hook, queue depth from the broker.

use std::time::Duration;

use async_trait::async_trait;
use axum::http::StatusCode;
use flagship_worker::{
    admin::{AdminBuilder, AdminMetrics},
    Handler, HandlerError, Job, JobContext, QueueConfig, RetryPolicy, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::support::{get, run_worker_until, Fixture, TOKEN};

#[derive(Serialize, Deserialize, JsonSchema)]
struct Slow {}
impl Job for Slow {
    const KIND: &'static str = "slow-job";
    const QUEUE: &'static str = "fast";
}
struct TakesTwoSeconds;
#[async_trait]
impl Handler for TakesTwoSeconds {
    type Job = Slow;
    async fn handle(&self, _: Slow, _: &JobContext) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    }
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct Flaky {}
impl Job for Flaky {
    const KIND: &'static str = "flaky-job";
    const QUEUE: &'static str = "flaky";
}
struct AlwaysFails;
#[async_trait]
impl Handler for AlwaysFails {
    type Job = Flaky;
    async fn handle(&self, _: Flaky, _: &JobContext) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Err(HandlerError::retry("upstream 503"))
    }
}

/// The value of the sample `name{labels}`, labels in any order.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        let rest = rest.strip_suffix('}')?;
        let mut have: Vec<(&str, &str)> = if rest.is_empty() {
            vec![]
        } else {
            rest.split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect()
        };
        let mut want = labels.to_vec();
        have.sort();
        want.sort();
        (metric == name && have == want).then(|| value.parse().ok())?
    })
}

#[tokio::test(start_paused = true)]
async fn metrics_count_outcomes_per_queue_and_kind_and_time_handlers() {
    let fx = Fixture::new();
    fx.simple_dead_job("idle", "old").await;
    let metrics = AdminMetrics::new();
    let worker = Worker::builder(fx.broker.clone())
        .handler(TakesTwoSeconds)
        .handler(AlwaysFails)
        .queue(
            QueueConfig::new("flaky")
                .unwrap()
                .retry_policy(RetryPolicy::linear(2, Duration::from_secs(1))),
        )
        .clock(fx.clock.clone())
        .observer(metrics.observer())
        .worker_id("w1")
        .build()
        .unwrap();
    let client = worker.client();
    client.enqueue(&Slow {}).await.unwrap();
    client.enqueue(&Slow {}).await.unwrap();
    client.enqueue(&Flaky {}).await.unwrap();
    run_worker_until(&worker, || async {
        let s = worker.stats();
        s.completed == 2 && s.dead_lettered == 1
    })
    .await;

    let router = AdminBuilder::new(fx.broker.clone())
        .token(TOKEN)
        .worker(&worker)
        .metrics(metrics)
        .build()
        .unwrap();
    let reply = get(&router, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("content-type").starts_with("text/plain; version=0.0.4"));
    let text = &reply.body;
    let fast = [("queue", "fast"), ("kind", "slow-job")];
    let flaky = [("queue", "flaky"), ("kind", "flaky-job")];

    assert_eq!(
        sample(text, "flagship_jobs_processed_total", &fast),
        Some(2.0),
        "{text}"
    );
    assert_eq!(sample(text, "flagship_jobs_completed_total", &fast), Some(2.0));
    assert_eq!(sample(text, "flagship_jobs_failed_total", &fast), None);
    assert_eq!(sample(text, "flagship_jobs_processed_total", &flaky), Some(3.0));
    assert_eq!(sample(text, "flagship_jobs_failed_total", &flaky), Some(3.0));
    assert_eq!(sample(text, "flagship_jobs_retried_total", &flaky), Some(2.0));
    assert_eq!(sample(text, "flagship_jobs_dead_lettered_total", &flaky), Some(1.0));
    assert_eq!(sample(text, "flagship_jobs_completed_total", &flaky), None);

    // Durations on the paused clock are exact: 2 s per slow job, 0.5 s per flaky attempt.
    assert!(
        text.contains("# TYPE flagship_job_duration_seconds histogram"),
        "{text}"
    );
    let completed = [("queue", "fast"), ("kind", "slow-job"), ("outcome", "completed")];
    assert_eq!(sample(text, "flagship_job_duration_seconds_sum", &completed), Some(4.0));
    assert_eq!(
        sample(text, "flagship_job_duration_seconds_count", &completed),
        Some(2.0)
    );
    let bucket = |le: &str| {
        let labels = [
            ("queue", "fast"),
            ("kind", "slow-job"),
            ("outcome", "completed"),
            ("le", le),
        ];
        sample(text, "flagship_job_duration_seconds_bucket", &labels)
    };
    assert_eq!((bucket("1"), bucket("2.5")), (Some(0.0), Some(2.0)));
    let retried = [("queue", "flaky"), ("kind", "flaky-job"), ("outcome", "retried")];
    assert_eq!(sample(text, "flagship_job_duration_seconds_sum", &retried), Some(1.0));

    // Queue depth and the broker's own counters, read at scrape time.
    let depth = |queue: &str, state: &str| sample(text, "flagship_queue_depth", &[("queue", queue), ("state", state)]);
    assert_eq!(depth("flaky", "dead"), Some(1.0));
    assert_eq!(depth("idle", "dead"), Some(1.0));
    assert_eq!(depth("fast", "ready"), Some(0.0));
    let broker_retried = [("queue", "flaky")];
    assert_eq!(
        sample(text, "flagship_queue_jobs_retried_total", &broker_retried),
        Some(2.0)
    );
    assert_eq!(
        sample(text, "flagship_queue_jobs_completed_total", &[("queue", "fast")]),
        Some(2.0)
    );
    for counter in [
        "flagship_queue_jobs_dropped_total",
        "flagship_queue_jobs_restored_total",
    ] {
        assert_eq!(sample(text, counter, &[("queue", "fast")]), Some(0.0), "{counter}");
    }
    assert_eq!(
        sample(text, "flagship_worker_started_total", &[("worker", "w1")]),
        Some(5.0)
    );

    // Every metric says what it means.
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    assert!(typed.contains(&"flagship_worker_broker_errors_total"), "{text}");
    for name in typed {
        let help = format!("# HELP {name} ");
        assert!(
            text.lines().any(|line| line.starts_with(&help)),
            "no HELP for {name}: {text}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn queue_depth_follows_the_broker_between_scrapes() {
    let fx = Fixture::new();
    let id = fx.simple_dead_job("billing", "invoice").await;
    let router = fx.router();
    let depth =
        |text: &str, state: &str| sample(text, "flagship_queue_depth", &[("queue", "billing"), ("state", state)]);

    let before = get(&router, "/metrics").await.body;
    assert_eq!(
        (depth(&before, "dead"), depth(&before, "ready")),
        (Some(1.0), Some(0.0))
    );
    let reply = crate::support::call(
        &router,
        axum::http::Method::POST,
        &format!("/api/dlq/billing/{id}/retry"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let after = get(&router, "/metrics").await.body;
    assert_eq!((depth(&after, "dead"), depth(&after, "ready")), (Some(0.0), Some(1.0)));
}
