//! The admin router on a `PostgresBroker`: the same API, DLQ and metrics
//! over a real database (generic over the broker traits, so nothing here is
//! PostgreSQL-specific but the fixture).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use flagship_worker::{
    admin::{AdminBuilder, AdminMetrics},
    testing::postgres_server::TestDatabase,
    Broker, DeadLetterQueue, Handler, HandlerError, Job, JobContext, PostgresBroker, QueueConfig, RetryPolicy, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    metrics::sample,
    support::{call, get, queue, run_worker_until, TOKEN},
};

#[derive(Serialize, Deserialize, JsonSchema)]
struct Invoice {
    cents: u64,
}

impl Job for Invoice {
    const KIND: &'static str = "invoice";
    const QUEUE: &'static str = "billing";
}

struct Declines;

#[async_trait]
impl Handler for Declines {
    type Job = Invoice;

    async fn handle(&self, _: Invoice, _: &JobContext) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("card declined"))
    }
}

#[tokio::test]
async fn the_router_serves_queues_the_dlq_and_metrics_from_postgres() {
    let Some(db) = TestDatabase::create().await else { return };
    let broker = Arc::new(PostgresBroker::connect(db.url()).await.unwrap());
    let metrics = AdminMetrics::new();
    let worker = Worker::builder(broker.clone())
        .handler(Declines)
        // One at a time, so the jobs die in the order they were enqueued
        // and the DLQ listing's order below is known.
        .queue(
            QueueConfig::new("billing")
                .unwrap()
                .retry_policy(RetryPolicy::none())
                .concurrency(1),
        )
        .observer(metrics.observer())
        .idle_wait(Duration::from_millis(200))
        .build()
        .unwrap();
    let client = worker.client();
    let first = client.enqueue(&Invoice { cents: 4200 }).await.unwrap().id();
    let second = client.enqueue(&Invoice { cents: 990 }).await.unwrap().id();
    run_worker_until(&worker, || async { worker.stats().dead_lettered == 2 }).await;

    let router = AdminBuilder::new(broker.clone())
        .token(TOKEN)
        .worker(&worker)
        .metrics(metrics)
        .build()
        .unwrap();
    let queues = get(&router, "/api/queues").await;
    assert_eq!(queues.status, StatusCode::OK, "{}", queues.body);
    let queues = queues.json();
    assert_eq!(queues["queues"][0]["queue"], "billing");
    assert_eq!(queues["queues"][0]["dead"], 2);
    assert_eq!(queues["queues"][0]["dead_lettered"], 2);

    let listing = get(&router, "/api/dlq?queue=billing&limit=1").await;
    assert_eq!(listing.status, StatusCode::OK, "{}", listing.body);
    let listing = listing.json();
    assert_eq!(listing["jobs"][0]["id"], first.to_string());
    let cursor = listing["next_cursor"].as_str().expect("a second page");
    let page = get(&router, &format!("/api/dlq?queue=billing&limit=1&cursor={cursor}"))
        .await
        .json();
    assert_eq!(page["jobs"][0]["id"], second.to_string());
    assert!(page["next_cursor"].is_null());

    let job = get(&router, &format!("/api/dlq/billing/{first}")).await.json();
    assert_eq!(job["payload"], serde_json::json!({ "cents": 4200 }));
    assert_eq!(job["attempts"][0]["error"], "card declined");

    let retried = call(&router, Method::POST, &format!("/api/dlq/billing/{first}/retry"), None).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert!(broker.get_dead(&queue("billing"), first).await.unwrap().is_none());
    assert_eq!(broker.stats(&queue("billing")).await.unwrap().ready, 1);
    let deleted = call(&router, Method::DELETE, &format!("/api/dlq/billing/{second}"), None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);

    let text = get(&router, "/metrics").await.body;
    let labels = [("queue", "billing"), ("kind", "invoice")];
    assert_eq!(
        sample(&text, "flagship_jobs_dead_lettered_total", &labels),
        Some(2.0),
        "{text}"
    );
    let depth = |state: &str| sample(&text, "flagship_queue_depth", &[("queue", "billing"), ("state", state)]);
    assert_eq!((depth("ready"), depth("dead")), (Some(1.0), Some(0.0)), "{text}");
    // The retried job is ready and the worker has stopped: nobody serves
    // the queue, which health reports (see live.rs for every such case).
    let health = get(&router, "/api/health").await.json();
    assert_eq!(health["status"], "degraded", "{health}");
    let billing = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "queue billing")
        .cloned()
        .unwrap_or_default();
    assert!(
        billing["message"].as_str().unwrap_or_default().contains("1 ready"),
        "{health}"
    );
}
