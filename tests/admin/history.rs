//! Queue history through the admin router: `GET /api/queues/{queue}/history`,
//! the history page's charts and the queue table's sparklines, after a
//! scripted run (jobs completing, some failing, a backlog building and
//! draining) played minute by minute on a shifted clock.

use std::{sync::Arc, time::Duration};

use chrono::TimeDelta;
use flagship_worker::{
    broker::{history::LatencyCounts, HistorySample, QueueHistory},
    AttemptRecord, Broker, JobEnvelope, ReserveRequest,
};
use serde_json::{json, Value};

use crate::support::{get, queue, Fixture, ShiftedClock};

/// How many minutes the scripted run lasts, ending now.
pub(crate) const MINUTES: i64 = 45;

/// What the run did, counted by the script itself.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Played {
    pub(crate) completed: u64,
    pub(crate) retried: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) peak_ready: u64,
}

/// Plays `MINUTES` minutes of work on `queue_name`, one minute per clock
/// step ending at the present: a steady third, a third where arrivals
/// outrun the workers (a backlog builds), a third where it drains. Every
/// 7th job taken fails once (retried), every 25th is dead-lettered. At the
/// end of each minute the queue is sampled as a worker does.
pub(crate) async fn scripted_run(fx: &Fixture, clock: &ShiftedClock, queue_name: &str, scale: u64) -> Played {
    let broker = &fx.broker;
    let q = queue(queue_name);
    let mut played = Played::default();
    let mut taken = 0u64;
    for minute in 0..MINUTES {
        clock.set_offset(TimeDelta::minutes(minute - MINUTES + 1));
        let (arrivals, capacity) = match minute * 3 / MINUTES {
            0 => (20, 20),
            1 => (40, 12),
            _ => (8, 60),
        };
        let now = fx.now();
        let jobs = (0..arrivals * scale)
            .map(|n| JobEnvelope::new("send-email", q.clone(), json!({ "n": n }), now))
            .collect();
        broker.enqueue(jobs).await.unwrap();
        let request = ReserveRequest::new((capacity * scale) as usize, Duration::from_secs(60), Duration::ZERO);
        let reserved = broker.reserve(&q, request).await.unwrap();
        let mut latency = LatencyCounts::default();
        let mut done = Vec::new();
        for job in reserved {
            taken += 1;
            latency.record((fx.now() - job.envelope.run_at).to_std().unwrap_or_default());
            let record = AttemptRecord::failed(now, now, "SMTP 451: try again later", Some("script".into()));
            if taken.is_multiple_of(25) {
                broker
                    .dead_letter(&job, Some(record), "SMTP 550: mailbox unavailable")
                    .await
                    .unwrap();
                played.dead_lettered += 1;
            } else if taken.is_multiple_of(7) {
                broker.retry_after(&job, Duration::ZERO, record).await.unwrap();
                played.retried += 1;
            } else {
                done.push(job.lease);
            }
        }
        played.completed += done.len() as u64;
        broker.complete(&done).await.unwrap();
        let stats = broker.stats(&q).await.unwrap();
        played.peak_ready = played.peak_ready.max(stats.ready);
        let sample = HistorySample::new(stats.ready, stats.oldest_ready_age_ms, latency);
        broker.record_sample(&q, &sample).await.unwrap();
    }
    clock.set_offset(TimeDelta::zero());
    played
}

/// A fixture on a shifted clock with the scripted run played on `emails`
/// (and the same on `reports`).
pub(crate) async fn played_fixture() -> (Fixture, Arc<ShiftedClock>, Played, Played) {
    let clock = Arc::new(ShiftedClock::default());
    let fx = Fixture::with_clock(clock.clone());
    let emails = scripted_run(&fx, &clock, "emails", 1).await;
    let reports = scripted_run(&fx, &clock, "reports", 1).await;
    (fx, clock, emails, reports)
}

fn sum(buckets: &[Value], field: &str) -> u64 {
    buckets.iter().map(|b| b[field].as_u64().unwrap_or(0)).sum()
}

#[tokio::test]
async fn the_api_returns_the_history_and_it_adds_up_to_the_counters() {
    let (fx, _clock, emails, _) = played_fixture().await;
    let router = fx.router();
    let reply = get(&router, "/api/queues/emails/history").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["queue"], "emails");
    assert_eq!(body["resolution"], "minute");
    assert_eq!(body["width_ms"], 60_000);
    assert_eq!(body["time_zone"], "UTC");
    let buckets = body["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 60, "the last hour by default");
    let stats = fx.broker.stats(&queue("emails")).await.unwrap();
    assert_eq!(
        (
            sum(buckets, "completed"),
            sum(buckets, "retried"),
            sum(buckets, "dead_lettered")
        ),
        (stats.completed, stats.retried, stats.dead_lettered),
        "the buckets add up to the counters"
    );
    assert_eq!(
        (emails.completed, emails.retried, emails.dead_lettered),
        (stats.completed, stats.retried, stats.dead_lettered)
    );
    let filled = buckets.iter().filter(|b| b["completed"].as_u64() > Some(0)).count();
    assert_eq!(filled as i64, MINUTES, "one bucket per minute of the run");
    let peak = buckets.iter().filter_map(|b| b["ready"].as_u64()).max();
    assert_eq!(peak, Some(emails.peak_ready), "the backlog's peak is sampled");
    let last = buckets.last().unwrap()["ready"].as_u64().unwrap();
    assert!(
        last < 5,
        "the backlog drained by the end (but for jobs retried just now): {last}"
    );
    let latency = &buckets[buckets.len() - 20]["latency_ms"];
    assert!(latency["p99"].as_u64() >= latency["p50"].as_u64(), "{latency}");

    let hours = get(&router, "/api/queues/emails/history?resolution=hour&buckets=3")
        .await
        .json();
    let hour_buckets = hours["buckets"].as_array().unwrap();
    assert_eq!(hour_buckets.len(), 3);
    assert_eq!(sum(hour_buckets, "completed"), stats.completed);

    for bad in [
        "/api/queues/emails/history?resolution=week",
        "/api/queues/emails/history?buckets=0",
        "/api/queues/emails/history?bucket=3",
        "/api/queues/bad%20queue/history",
    ] {
        let reply = get(&router, bad).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert_eq!(reply.error_code(), "bad_request");
    }
}

#[tokio::test]
async fn the_dashboard_draws_the_history_as_inline_svg() {
    let (fx, _clock, emails, reports) = played_fixture().await;
    let router = fx.router();

    let index = get(&router, "/ui").await;
    assert_eq!(index.status, 200);
    for (name, played) in [("emails", emails), ("reports", reports)] {
        let spark = format!("data-completed=\"{}\"", played.completed);
        assert!(
            index.body.contains(&format!("/ui/history?queue={name}")) && index.body.contains(&spark),
            "a sparkline for {name} with its hour's total: {}",
            index.body
        );
    }

    let page = get(&router, "/ui/history?queue=emails").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let body = &page.body;
    assert_eq!(body.matches("<svg class=\"chart\"").count(), 4, "four charts");
    for banned in ["<script", "style=\""] {
        assert!(!body.contains(banned), "{banned} on the page");
    }
    assert!(body.contains("time (UTC)"), "the time axis states its zone");
    assert!(
        body.contains(&format!("total {}", emails.completed)),
        "the legend's total"
    );
    assert!(
        body.contains(&format!("peak {}", emails.peak_ready)),
        "the depth's peak"
    );
    assert!(
        body.contains("dashed line") && body.contains("squares"),
        "lines differ by more than colour"
    );

    let all = get(&router, "/ui/history?range=day").await;
    assert_eq!(all.status, 200);
    assert!(all
        .body
        .contains(&format!("total {}", emails.completed + reports.completed)));
    assert_eq!(get(&router, "/ui/history?range=month").await.status, 200);
    assert_eq!(get(&router, "/ui/history?range=year").await.status, 400);
}
