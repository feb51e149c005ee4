//! Issue 17, the operators' side on the memory broker: live jobs by state
//! (active ones with owner, lease deadline and attempt), one job, cancel
//! (one and by filter, with a dry run and a confirm page), pause and resume
//! visible everywhere, the workers panel with gone workers marked, and
//! health that pages on stuck jobs, DLQ growth and queues nobody serves.

use std::{sync::Arc, time::Duration};

use axum::{http::StatusCode, Router};
use flagship_worker::{
    broker::{JobControl, WorkerInfo, CANCEL_REASON},
    health::{HealthReport, HealthStatus},
    Broker, JobEnvelope, JobId, ReserveRequest,
};
use serde_json::{json, Value};

use crate::{
    dashboard::{form, login, page},
    support::{call, get, queue, Fixture},
};

/// Three ready jobs of `billing` (one `refund`), one scheduled in an hour,
/// one active leased by `worker-a` for 30 s. Returns (ready, scheduled, active) ids.
async fn live_jobs(fx: &Fixture) -> (Vec<JobId>, JobId, JobId) {
    let now = fx.now();
    let job = |kind: &str, n: u32| JobEnvelope::new(kind, queue("billing"), json!({ "n": n }), now);
    let active = job("send-invoice", 0);
    fx.broker.enqueue(vec![active.clone()]).await.unwrap();
    let request = ReserveRequest::new(1, Duration::from_secs(30), Duration::ZERO).worker(Arc::from("worker-a"));
    let leased = fx.broker.reserve(&queue("billing"), request).await.unwrap();
    assert_eq!(leased[0].lease.id, active.id);
    let ready = vec![job("send-invoice", 1), job("send-invoice", 2), job("refund", 3)];
    let mut scheduled = job("send-invoice", 4);
    scheduled.run_at = now + chrono::TimeDelta::hours(1);
    let mut all = ready.clone();
    all.push(scheduled.clone());
    fx.broker.enqueue(all).await.unwrap();
    (ready.iter().map(|j| j.id).collect(), scheduled.id, active.id)
}

fn ids(reply: &Value) -> Vec<String> {
    reply["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_api_lists_shows_and_cancels_live_jobs() {
    let fx = Fixture::new();
    let (ready, scheduled, active) = live_jobs(&fx).await;
    let router = fx.router();

    let all = get(&router, "/api/jobs").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(ids(&all.json()).len(), 5, "ready, scheduled and active: {}", all.body);
    let running = get(&router, "/api/jobs?state=active").await.json();
    assert_eq!(ids(&running), [active.to_string()]);
    let lease = &running["jobs"][0]["lease"];
    assert_eq!(lease["worker"], "worker-a");
    assert_eq!(lease["deadline"], json!(fx.now() + chrono::TimeDelta::seconds(30)));
    assert_eq!(running["jobs"][0]["attempt"], 0);
    assert_eq!(
        ids(&get(&router, "/api/jobs?state=scheduled").await.json()),
        [scheduled.to_string()]
    );
    let refunds = get(&router, "/api/jobs?state=ready,scheduled&kind=refund").await.json();
    assert_eq!(ids(&refunds), [ready[2].to_string()]);
    // Paged: one at a time, each once.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get(&router, &format!("/api/jobs?limit=2&cursor={cursor}")).await.json();
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.replace('~', "%7E"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");

    let shown = get(&router, &format!("/api/jobs/billing/{active}")).await.json();
    assert_eq!(
        (shown["state"].clone(), shown["kind"].clone()),
        (json!("active"), json!("send-invoice"))
    );
    assert_eq!(shown["lease"]["worker"], "worker-a");
    assert_eq!(
        get(&router, &format!("/api/jobs/billing/{}", JobId::new()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let cancelled = call(
        &router,
        axum::http::Method::POST,
        &format!("/api/jobs/billing/{}/cancel", ready[0]),
        None,
    )
    .await;
    assert_eq!(cancelled.json()["outcome"], "dead_lettered", "{}", cancelled.body);
    let dead = get(&router, &format!("/api/dlq/billing/{}", ready[0])).await.json();
    assert_eq!(dead["reason"], CANCEL_REASON);
    let signalled = call(
        &router,
        axum::http::Method::POST,
        &format!("/api/jobs/billing/{active}/cancel"),
        None,
    )
    .await;
    assert_eq!(signalled.json()["outcome"], "signalled");
    assert_eq!(
        get(&router, &format!("/api/jobs/billing/{active}")).await.json()["cancel_requested"],
        true
    );
    let again = call(
        &router,
        axum::http::Method::POST,
        &format!("/api/jobs/billing/{}/cancel", ready[0]),
        None,
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);

    // By filter: a dry run counts, then the real thing.
    let body = json!({ "queue": "billing", "state": "ready", "kind": "send-invoice", "dry_run": true });
    let dry = call(&router, axum::http::Method::POST, "/api/jobs/cancel", Some(body))
        .await
        .json();
    assert_eq!(dry["would_cancel"], 1, "{dry}");
    assert_eq!(
        fx.broker.stats(&queue("billing")).await.unwrap().ready,
        2,
        "a dry run changes nothing"
    );
    let body = json!({ "queue": "billing", "state": "ready" });
    let done = call(&router, axum::http::Method::POST, "/api/jobs/cancel", Some(body))
        .await
        .json();
    assert_eq!(
        (done["dead_lettered"].clone(), done["signalled"].clone()),
        (json!(2), json!(0))
    );
    let stats = fx.broker.stats(&queue("billing")).await.unwrap();
    assert_eq!((stats.ready, stats.scheduled, stats.active, stats.dead), (0, 1, 1, 3));
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume_show_in_queues_and_stop_reservations() {
    let fx = Fixture::new();
    live_jobs(&fx).await;
    let router = fx.router();
    let post = |uri: &'static str| call(&router, axum::http::Method::POST, uri, None);

    let paused = post("/api/queues/billing/pause").await.json();
    assert_eq!(
        (paused["paused"].clone(), paused["changed"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(post("/api/queues/billing/pause").await.json()["changed"], false);
    assert_eq!(get(&router, "/api/queues").await.json()["queues"][0]["paused"], true);
    let request = ReserveRequest::new(10, Duration::from_secs(30), Duration::ZERO);
    assert!(fx
        .broker
        .reserve(&queue("billing"), request.clone())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(post("/api/queues/nosuch/pause").await.status, StatusCode::NOT_FOUND);

    assert_eq!(post("/api/queues/billing/resume").await.json()["changed"], true);
    assert_eq!(get(&router, "/api/queues").await.json()["queues"][0]["paused"], false);
    assert_eq!(fx.broker.reserve(&queue("billing"), request).await.unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_dashboard_shows_live_jobs_cancels_pauses_and_lists_workers() {
    let fx = Fixture::new();
    let (ready, _, active) = live_jobs(&fx).await;
    let control: &dyn JobControl = &*fx.broker;
    let info = |id: &str| WorkerInfo::new(id, vec![queue("billing")], 4, fx.now());
    control
        .register_worker(&info("worker-gone"), Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(20)).await;
    control
        .register_worker(&info("worker-a"), Duration::from_secs(60))
        .await
        .unwrap();
    let router = Router::new().nest("/admin", fx.router());
    let cookie = login(&router, "/admin").await;

    let index = page(&router, "/admin/ui", Some(&cookie)).await;
    assert_eq!(index.status, StatusCode::OK, "{}", index.body);
    assert!(
        index
            .body
            .contains("<span class=\"queue-status running\">running</span>"),
        "{}",
        index.body
    );
    assert!(index.body.contains("action=\"/admin/ui/queues/billing/pause\""));
    assert!(
        index
            .body
            .contains("<tr class=\"gone\" data-worker-id=\"worker-gone\">"),
        "{}",
        index.body
    );
    assert!(index.body.contains("<tr data-worker-id=\"worker-a\">"));

    let live = page(&router, "/admin/ui/live?queue=billing&state=active", Some(&cookie)).await;
    assert_eq!(live.status, StatusCode::OK, "{}", live.body);
    assert!(
        live.body.contains(&format!("<tr data-job-id=\"{active}\">")),
        "{}",
        live.body
    );
    assert!(live.body.contains("<code>worker-a</code>"), "the owner is shown");
    assert!(!live.body.contains(&ready[0].to_string()), "the state filter holds");
    let detail = page(&router, &format!("/admin/ui/live/billing/{active}"), Some(&cookie)).await;
    assert!(detail.body.contains("<dt>Lease until</dt>"), "{}", detail.body);

    let reply = form(
        &router,
        &format!("/admin/ui/live/billing/{}/cancel", ready[0]),
        Some(&cookie),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let back = page(&router, reply.header("location"), Some(&cookie)).await;
    assert!(
        back.body
            .contains(&format!("Job {} cancelled: moved to the dead-letter queue.", ready[0])),
        "{}",
        back.body
    );
    assert!(fx.is_dead("billing", ready[0]).await);

    // Bulk: a confirm page with the count, then the action.
    let confirm = page(
        &router,
        "/admin/ui/live/cancel?queue=billing&state=ready&kind=",
        Some(&cookie),
    )
    .await;
    assert!(
        confirm.body.contains(
            "This cancels 2 jobs: 2 ready or scheduled go to the dead-letter queue, 0 running are asked to stop."
        ),
        "{}",
        confirm.body
    );
    assert!(!fx.is_dead("billing", ready[1]).await, "asking changes nothing");
    let reply = form(
        &router,
        "/admin/ui/live/cancel",
        Some(&cookie),
        "queue=billing&state=ready&kind=",
    )
    .await;
    let back = page(&router, reply.header("location"), Some(&cookie)).await;
    assert!(
        back.body
            .contains("Cancelled 2 jobs: 2 moved to the dead-letter queue, 0 running asked to stop."),
        "{}",
        back.body
    );

    let reply = form(&router, "/admin/ui/queues/billing/pause", Some(&cookie), "").await;
    let back = page(&router, reply.header("location"), Some(&cookie)).await;
    assert!(back.body.contains("Queue billing paused"), "{}", back.body);
    assert!(back.body.contains("<span class=\"queue-status paused\">paused</span>"));
    assert!(back.body.contains("action=\"/admin/ui/queues/billing/resume\""));
    assert!(fx.broker.stats(&queue("billing")).await.unwrap().paused);
}

async fn health(fx: &Fixture) -> HealthReport {
    serde_json::from_str(&get(&fx.router(), "/api/health").await.body).unwrap()
}

fn check<'a>(report: &'a HealthReport, name: &str) -> &'a flagship_worker::health::HealthCheck {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:?}"))
}

#[tokio::test(start_paused = true)]
async fn health_is_ok_only_when_nothing_is_stuck_dying_or_unserved() {
    let fx = Fixture::new();
    let control: &dyn JobControl = &*fx.broker;
    let serve = |fx: &Fixture| WorkerInfo::new("w1", vec![queue("billing")], 1, fx.now());
    control
        .register_worker(&serve(&fx), Duration::from_secs(600))
        .await
        .unwrap();
    fx.broker
        .enqueue(vec![JobEnvelope::new("k", queue("billing"), json!({}), fx.now())])
        .await
        .unwrap();
    assert_eq!(
        health(&fx).await.status,
        HealthStatus::Ok,
        "served, nothing stuck or dying"
    );

    // Work and no live worker for it.
    fx.broker
        .enqueue(vec![JobEnvelope::new("k", queue("media"), json!({}), fx.now())])
        .await
        .unwrap();
    let report = health(&fx).await;
    assert_eq!(report.status, HealthStatus::Degraded);
    assert!(
        check(&report, "queue media")
            .message
            .contains("1 ready and no live worker serves the queue"),
        "{report:?}"
    );
    assert_eq!(check(&report, "queue billing").status, HealthStatus::Ok);
    control.pause(&queue("media")).await.unwrap();
    assert_eq!(
        health(&fx).await.status,
        HealthStatus::Ok,
        "a paused queue waits on purpose"
    );

    // A job stuck in active past its lease.
    let request = ReserveRequest::new(1, Duration::from_secs(30), Duration::ZERO);
    fx.broker.reserve(&queue("billing"), request).await.unwrap();
    tokio::time::advance(Duration::from_secs(45)).await;
    control
        .register_worker(&serve(&fx), Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(health(&fx).await.status, HealthStatus::Ok, "within the grace");
    tokio::time::advance(Duration::from_secs(30)).await;
    let report = health(&fx).await;
    assert!(
        check(&report, "queue billing")
            .message
            .contains("1 active past their lease"),
        "{report:?}"
    );
    assert_eq!(report.status, HealthStatus::Degraded);
    let stuck = fx
        .broker
        .recover_expired(&queue("billing"), 10, Duration::from_secs(30))
        .await
        .unwrap();
    fx.broker.dead_letter(&stuck[0], None, "lease expired").await.unwrap();

    // The DLQ grew within the hour; an hour later it is quiet again.
    let report = health(&fx).await;
    assert!(
        check(&report, "queue billing")
            .message
            .contains("1 dead-lettered in the last 60 min"),
        "{report:?}"
    );
    assert_eq!(report.status, HealthStatus::Degraded);
    tokio::time::advance(Duration::from_secs(3601)).await;
    control
        .register_worker(&serve(&fx), Duration::from_secs(600))
        .await
        .unwrap();
    let report = health(&fx).await;
    assert_eq!(report.status, HealthStatus::Ok, "{report:?}");
    assert!(check(&report, "queue billing").message.contains("1 dead"));
}
