//! `flagship-worker queues --history`: the queue history as a table and as
//! JSON, the same series the admin API returns.

use std::time::Duration;

use flagship_worker::{
    broker::{history::LatencyCounts, HistorySample, QueueHistory},
    Broker, JobEnvelope, ReserveRequest,
};
use serde_json::{json, Value};

use super::{cli, cli_json, dead_job, queue, setup, stderr, stdout};

fn sum(buckets: &Value, field: &str) -> u64 {
    buckets
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[field].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test]
async fn queues_history_prints_the_buckets_as_a_table_and_json() {
    let Some((server, broker)) = setup().await else { return };
    let q = queue("reports");
    let now = chrono::Utc::now();
    let jobs = (0..5)
        .map(|n| JobEnvelope::new("k", q.clone(), json!({ "n": n }), now))
        .collect();
    broker.enqueue(jobs).await.unwrap();
    let taken = broker
        .reserve(&q, ReserveRequest::new(3, Duration::from_secs(30), Duration::ZERO))
        .await
        .unwrap();
    let leases: Vec<_> = taken.iter().map(|r| r.lease.clone()).collect();
    broker.complete(&leases).await.unwrap();
    dead_job(&broker, "mail", "send", json!({}), &["later", "gone"]).await;
    let mut latency = LatencyCounts::default();
    latency.record(Duration::from_millis(30));
    broker
        .record_sample(&q, &HistorySample::new(2, Some(1_200), latency))
        .await
        .unwrap();

    let all = cli_json(&server, &["queues", "--history"]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2, "one series per queue: {all:?}");
    let reports = all.iter().find(|s| s["queue"] == "reports").unwrap();
    assert_eq!(reports["resolution"], "minute");
    assert_eq!(reports["time_zone"], "UTC");
    assert_eq!(reports["buckets"].as_array().unwrap().len(), 60);
    assert_eq!(sum(&reports["buckets"], "completed"), 3);
    let sampled: Vec<_> = reports["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| !b["ready"].is_null())
        .collect();
    assert_eq!(sampled.len(), 1);
    assert_eq!(sampled[0]["ready"], 2);
    assert_eq!(sampled[0]["latency_ms"]["p50"], 50);
    let mail = all.iter().find(|s| s["queue"] == "mail").unwrap();
    assert_eq!(
        (sum(&mail["buckets"], "retried"), sum(&mail["buckets"], "dead_lettered")),
        (1, 1)
    );
    assert_eq!(sum(&mail["buckets"], "failed"), 2);

    let hours = cli_json(
        &server,
        &[
            "queues",
            "--history",
            "--resolution",
            "hour",
            "--buckets",
            "2",
            "--queue",
            "reports",
        ],
    );
    let hours = hours.as_array().unwrap();
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0]["buckets"].as_array().unwrap().len(), 2);
    assert_eq!(sum(&hours[0]["buckets"], "completed"), 3);

    let table = cli(&server, &["queues", "--history", "--queue", "reports"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(
        text.contains("reports: last 60 minutes: 3 completed, 0 failed"),
        "{text}"
    );
    assert!(text.contains("TIME (UTC)") && text.contains("≤50 ms"), "{text}");
    assert!(text.contains("buckets with nothing recorded not shown"), "{text}");

    let refused = cli(&server, &["queues", "--resolution", "hour"]);
    assert!(!refused.status.success(), "--resolution needs --history");
}
