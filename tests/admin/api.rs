//! Every JSON endpoint, on its happy path.

use std::{collections::HashSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use chrono::Utc;
use flagship_worker::{
    admin::{AdminBuilder, HealthCheck, HealthReport, HealthSource, HealthStatus},
    Broker, DeadLetterQueue, Error, Handler, HandlerError, Job, JobContext, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::{call, get, queue, run_worker_until, Fixture, TOKEN};

#[tokio::test(start_paused = true)]
async fn queues_shows_every_queue_and_the_workers_counters() {
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Doomed {}
    impl Job for Doomed {
        const KIND: &'static str = "doomed";
        const QUEUE: &'static str = "work";
    }
    struct Fails;
    #[async_trait]
    impl Handler for Fails {
        type Job = Doomed;
        async fn handle(&self, _: Doomed, _: &JobContext) -> Result<(), HandlerError> {
            Err(HandlerError::permanent("no"))
        }
    }

    let fx = Fixture::new();
    fx.simple_dead_job("billing", "invoice").await;
    let worker = Worker::builder(fx.broker.clone())
        .handler(Fails)
        .clock(fx.clock.clone())
        .build()
        .unwrap();
    worker.client().enqueue(&Doomed {}).await.unwrap();
    run_worker_until(&worker, || async { worker.stats().dead_lettered == 1 }).await;

    let router = AdminBuilder::new(fx.broker.clone())
        .token(TOKEN)
        .worker(&worker)
        .build()
        .unwrap();
    let reply = get(&router, "/api/queues").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let json = reply.json();
    let queues = json["queues"].as_array().unwrap();
    let names: Vec<&str> = queues.iter().map(|q| q["queue"].as_str().unwrap()).collect();
    assert_eq!(names, ["billing", "work"], "every queue, in name order");
    assert_eq!(queues[0]["dead"], 1);
    assert_eq!(queues[0]["ready"], 0);
    assert_eq!(queues[1]["dead"], 1);
    assert_eq!(queues[1]["dead_lettered"], 1);
    assert_eq!(json["worker"]["started"], 1);
    assert_eq!(json["worker"]["dead_lettered"], 1);

    // Without a worker, the counters are null.
    let reply = get(&fx.router(), "/api/queues").await;
    assert!(reply.json()["worker"].is_null());
}

#[tokio::test(start_paused = true)]
async fn dlq_list_pages_across_queues_without_skipping_or_repeating() {
    let fx = Fixture::new();
    let mut all = HashSet::new();
    for q in ["a", "b", "c"] {
        for _ in 0..3 {
            all.insert(fx.simple_dead_job(q, "k").await);
        }
    }
    let router = fx.router();

    for limit in [1, 2, 3, 4, 9, 50] {
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut cursor: Option<String> = None;
        loop {
            let uri = match &cursor {
                Some(c) => format!("/api/dlq?limit={limit}&cursor={}", urlencode(c)),
                None => format!("/api/dlq?limit={limit}"),
            };
            let reply = get(&router, &uri).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            let json = reply.json();
            let jobs = json["jobs"].as_array().unwrap();
            assert!(!jobs.is_empty(), "no empty page (limit {limit})");
            assert!(jobs.len() <= limit);
            seen.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
            pages += 1;
            match json["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 9, "limit {limit}: {seen:?}");
        let unique: HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), 9, "no repeats at limit {limit}");
        assert_eq!(pages, 9_usize.div_ceil(limit), "limit {limit}");
        let want: HashSet<String> = all.iter().map(|id| id.to_string()).collect();
        assert_eq!(seen.into_iter().collect::<HashSet<_>>(), want);
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn dlq_list_filters_by_queue_kind_and_time() {
    let fx = Fixture::new();
    let early = fx.simple_dead_job("billing", "invoice").await;
    tokio::time::advance(Duration::from_secs(3600)).await;
    let late = fx.simple_dead_job("billing", "refund").await;
    let other = fx.simple_dead_job("media", "invoice").await;
    let router = fx.router();
    let ids = |reply: &crate::support::Reply| -> Vec<String> {
        reply.json()["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let reply = get(&router, "/api/dlq?queue=billing").await;
    assert_eq!(ids(&reply), [early.to_string(), late.to_string()]);
    let reply = get(&router, "/api/dlq?kind=invoice").await;
    assert_eq!(ids(&reply), [early.to_string(), other.to_string()]);
    let reply = get(&router, "/api/dlq?queue=billing&kind=invoice").await;
    assert_eq!(ids(&reply), [early.to_string()]);

    let middle = (fx.dead_at("billing", early).await + chrono::TimeDelta::minutes(30)).to_rfc3339();
    let reply = get(&router, &format!("/api/dlq?queue=billing&since={}", urlencode(&middle))).await;
    assert_eq!(ids(&reply), [late.to_string()]);
    let reply = get(&router, &format!("/api/dlq?until={}", urlencode(&middle))).await;
    assert_eq!(ids(&reply), [early.to_string()]);

    let summary = &get(&router, "/api/dlq?queue=billing&kind=refund").await.json()["jobs"][0];
    assert_eq!(summary["queue"], "billing");
    assert_eq!(summary["kind"], "refund");
    assert_eq!(summary["attempts"], 1);
    assert_eq!(summary["reason"], "boom");
    assert!(
        summary.get("last_error").is_none(),
        "one word for why it died: {summary}"
    );
    assert!(summary["dead_lettered_at"].is_string());
}

#[tokio::test(start_paused = true)]
async fn one_entry_has_its_payload_and_whole_history() {
    let fx = Fixture::new();
    let id = fx
        .dead_job(
            "billing",
            "invoice",
            json!({"customer": "acme", "cents": 4200}),
            &["timeout", "503 from upstream", "card declined"],
            "retries exhausted after 3 attempts: card declined",
        )
        .await;
    let reply = get(&fx.router(), &format!("/api/dlq/billing/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let job = reply.json();
    assert_eq!(job["id"], id.to_string());
    assert_eq!(job["kind"], "invoice", "`kind`, as in every listing");
    assert!(
        job.get("type").is_none() && job.get("dead_letter_reason").is_none(),
        "{job}"
    );
    assert_eq!(job["payload"], json!({"customer": "acme", "cents": 4200}));
    let errors: Vec<&str> = job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"].as_str().unwrap())
        .collect();
    assert_eq!(errors, ["timeout", "503 from upstream", "card declined"]);
    assert_eq!(job["reason"], "retries exhausted after 3 attempts: card declined");
}

#[tokio::test(start_paused = true)]
async fn retrying_one_moves_it_back_to_ready_once() {
    let fx = Fixture::new();
    let id = fx.simple_dead_job("billing", "invoice").await;
    let keep = fx.simple_dead_job("billing", "invoice").await;
    let router = fx.router();

    let reply = call(&router, Method::POST, &format!("/api/dlq/billing/{id}/retry"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["retried"], true);
    assert!(!fx.is_dead("billing", id).await);
    assert!(fx.is_dead("billing", keep).await);
    assert_eq!(fx.broker.stats(&queue("billing")).await.unwrap().ready, 1);

    let again = call(&router, Method::POST, &format!("/api/dlq/billing/{id}/retry"), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.error_code(), "not_found");
}

#[tokio::test(start_paused = true)]
async fn deleting_one_removes_it_once() {
    let fx = Fixture::new();
    let id = fx.simple_dead_job("billing", "invoice").await;
    let keep = fx.simple_dead_job("billing", "invoice").await;
    let router = fx.router();

    let reply = call(&router, Method::DELETE, &format!("/api/dlq/billing/{id}"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["deleted"], true);
    assert!(!fx.is_dead("billing", id).await);
    assert!(fx.is_dead("billing", keep).await);
    let stats = fx.broker.stats(&queue("billing")).await.unwrap();
    assert_eq!((stats.ready, stats.dead), (0, 1), "deleted, not retried");

    let again = call(&router, Method::DELETE, &format!("/api/dlq/billing/{id}"), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn bulk_retry_takes_exactly_what_the_filter_matches() {
    let fx = Fixture::new();
    let a = fx.simple_dead_job("billing", "invoice").await;
    let b = fx.simple_dead_job("billing", "refund").await;
    let c = fx.simple_dead_job("media", "invoice").await;
    let d = fx.simple_dead_job("media", "resize").await;
    let router = fx.router();

    let reply = call(
        &router,
        Method::POST,
        "/api/dlq/retry",
        Some(json!({"kind": "invoice"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["retried"], 2);
    assert!(!fx.is_dead("billing", a).await && !fx.is_dead("media", c).await);
    assert!(fx.is_dead("billing", b).await && fx.is_dead("media", d).await);

    let reply = call(&router, Method::POST, "/api/dlq/retry", Some(json!({"queue": "media"}))).await;
    assert_eq!(reply.json()["retried"], 1);
    assert!(!fx.is_dead("media", d).await && fx.is_dead("billing", b).await);

    let reply = call(&router, Method::POST, "/api/dlq/retry", Some(json!({}))).await;
    assert_eq!(reply.json()["retried"], 1, "`{{}}` is every dead job");
    assert_eq!(
        fx.broker
            .count_dead(&flagship_worker::DeadFilter::queue(queue("billing")))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn purge_removes_only_what_died_before_the_time() {
    let fx = Fixture::new();
    let old_billing = fx.simple_dead_job("billing", "invoice").await;
    let old_media = fx.simple_dead_job("media", "resize").await;
    tokio::time::advance(Duration::from_secs(40 * 24 * 3600)).await;
    let new_billing = fx.simple_dead_job("billing", "invoice").await;
    let cutoff = (fx.now() - chrono::TimeDelta::days(30)).to_rfc3339();
    let router = fx.router();

    let reply = call(
        &router,
        Method::POST,
        "/api/dlq/purge",
        Some(json!({"queue": "billing", "older_than": cutoff})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["purged"], 1);
    assert!(!fx.is_dead("billing", old_billing).await);
    assert!(fx.is_dead("media", old_media).await, "other queue untouched");
    assert!(fx.is_dead("billing", new_billing).await, "younger job kept");

    let reply = call(
        &router,
        Method::POST,
        "/api/dlq/purge",
        Some(json!({"older_than": cutoff})),
    )
    .await;
    assert_eq!(reply.json()["purged"], 1, "every queue when none is named");
    assert!(!fx.is_dead("media", old_media).await);
    assert!(fx.is_dead("billing", new_billing).await);
}

#[tokio::test(start_paused = true)]
async fn health_reports_the_broker_and_each_queue_by_default() {
    let fx = Fixture::new();
    fx.simple_dead_job("billing", "invoice").await;
    // Long dead: not growth (see live.rs for what degrades a report).
    tokio::time::advance(Duration::from_secs(2 * 3600)).await;
    let reply = get(&fx.router(), "/api/health").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let report: HealthReport = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(report.status, HealthStatus::Ok);
    assert_eq!(report.checks[0].name, "broker");
    assert_eq!(report.checks[1].name, "workers");
    assert_eq!(report.checks[2].name, "queue billing");
    assert!(
        report.checks[2].message.contains("1 dead"),
        "{}",
        report.checks[2].message
    );
}

#[derive(Debug)]
struct FixedHealth(Option<HealthStatus>);

#[async_trait]
impl HealthSource for FixedHealth {
    async fn latest(&self) -> flagship_worker::Result<HealthReport> {
        match self.0 {
            Some(status) => Ok(HealthReport::new(
                Utc::now(),
                vec![HealthCheck::new(
                    "dlq growth",
                    status,
                    "12 new dead jobs in the last hour",
                )],
            )),
            None => Err(Error::InvalidConfig("the health check has not run yet".into())),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn health_comes_from_a_plugged_in_source() {
    let fx = Fixture::new();
    let with = |source: FixedHealth| {
        AdminBuilder::new(fx.broker.clone())
            .token(TOKEN)
            .health(Arc::new(source))
            .build()
            .unwrap()
    };
    let degraded = get(&with(FixedHealth(Some(HealthStatus::Degraded))), "/api/health").await;
    assert_eq!(degraded.status, StatusCode::OK);
    assert_eq!(degraded.json()["status"], "degraded");
    assert_eq!(degraded.json()["checks"][0]["name"], "dlq growth");

    let down = get(&with(FixedHealth(Some(HealthStatus::Down))), "/api/health").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.json()["status"], "down");

    let none = get(&with(FixedHealth(None)), "/api/health").await;
    assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(none.error_code(), "health_unavailable");
    assert!(none.body.contains("has not run yet"));
}

#[cfg(feature = "flagship")]
#[tokio::test(start_paused = true)]
async fn health_reads_the_latest_flagship_health_check() {
    use flagship_worker::{
        flagship::FlagshipHealth,
        flagship::{
            stores::{HealthStore, MemoryStore},
            QueueHealth,
        },
    };

    let fx = Fixture::new();
    let store = Arc::new(MemoryStore::new());
    let router = AdminBuilder::new(fx.broker.clone())
        .token(TOKEN)
        .health(Arc::new(FlagshipHealth::new(store.clone())))
        .build()
        .unwrap();

    let before = get(&router, "/api/health").await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.json()["status"], "degraded");
    assert!(before.body.contains("no health check has run yet"));

    let mut report = flagship_worker::flagship::HealthRecord {
        check_id: "check-1".into(),
        checked_at: "2025-01-01T00:00:00Z".parse().unwrap(),
        healthy: false,
        broker_reachable: true,
        queues: vec![QueueHealth {
            queue: "flagship:audit".into(),
            ready: 3,
            scheduled: 0,
            active: 1,
            dead: 7,
            oldest_ready_age_ms: Some(1200),
        }],
        dead_total: 7,
        dlq_growth: 5,
        last_alert_at: None,
        problems: vec!["DLQ grew by 5 since the previous check (threshold 3)".into()],
    };
    store.record_health(&report).await.unwrap();
    let degraded = get(&router, "/api/health").await;
    assert_eq!(degraded.status, StatusCode::OK);
    let json = degraded.json();
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["checked_at"], "2025-01-01T00:00:00Z");
    assert!(degraded.body.contains("DLQ grew by 5"));
    assert!(degraded.body.contains("queue flagship:audit"));

    report.broker_reachable = false;
    report.queues.clear();
    store.record_health(&report).await.unwrap();
    let down = get(&router, "/api/health").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.json()["status"], "down");
}

#[tokio::test(start_paused = true)]
async fn unknown_queues_and_jobs_are_404_not_bad_input() {
    let fx = Fixture::new();
    let id = fx.simple_dead_job("billing", "invoice").await;
    let router = fx.router();
    for uri in [
        "/api/dlq?queue=nosuch".to_owned(),
        format!("/api/dlq/billing/{}", flagship_worker::JobId::new()),
        format!("/api/dlq/nosuch/{id}"),
    ] {
        let reply = get(&router, &uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}: {}", reply.body);
        assert_eq!(reply.json()["error"]["code"], "not_found", "{uri}");
    }
    let reply = get(&router, "/api/dlq?queue=nosuch").await;
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("queue `nosuch` is unknown"),
        "{}",
        reply.body
    );
}
