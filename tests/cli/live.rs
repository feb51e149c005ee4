//! Issue 17's live commands against a test Redis: `jobs list|show|cancel|
//! cancel-all` (with `--dry-run` and confirmation), `pause`, `resume`,
//! `workers`, and `queues` and `health` seeing them.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use flagship_worker::{
    broker::{JobControl, WorkerInfo, CANCEL_REASON},
    Broker, DeadLetterQueue, JobEnvelope, JobId, ReserveRequest,
};
use serde_json::{json, Value};

use super::{cli, cli_json, every_page, ids, queue, setup, stderr, stdout};

/// Two ready jobs of `billing` (one `refund`), one scheduled in an hour, one
/// active leased by `worker-a`. Returns (ready, scheduled, active) ids.
async fn live_jobs(broker: &impl Broker) -> (Vec<JobId>, JobId, JobId) {
    let now = Utc::now();
    let job = |kind: &str| JobEnvelope::new(kind, queue("billing"), json!({}), now);
    let active = job("send-invoice");
    broker.enqueue(vec![active.clone()]).await.unwrap();
    let request =
        ReserveRequest::new(1, Duration::from_secs(300), Duration::from_secs(5)).worker(Arc::from("worker-a"));
    assert_eq!(
        broker.reserve(&queue("billing"), request).await.unwrap()[0].lease.id,
        active.id
    );
    let ready = vec![job("send-invoice"), job("refund")];
    let mut scheduled = job("send-invoice");
    scheduled.run_at = now + chrono::TimeDelta::hours(1);
    let mut all = ready.clone();
    all.push(scheduled.clone());
    broker.enqueue(all).await.unwrap();
    (ready.iter().map(|j| j.id).collect(), scheduled.id, active.id)
}

#[tokio::test]
async fn jobs_list_and_show_live_jobs_with_their_lease() {
    let Some((server, broker)) = setup().await else { return };
    let (ready, scheduled, active) = live_jobs(&broker).await;

    let all = cli_json(&server, &["jobs", "list"]);
    assert_eq!(ids(&all).len(), 4, "{all}");
    let running = cli_json(&server, &["jobs", "list", "--state", "active"]);
    assert_eq!(ids(&running), [active.to_string()]);
    assert_eq!(running["jobs"][0]["lease"]["worker"], "worker-a");
    assert!(running["jobs"][0]["lease"]["deadline"].is_string());
    assert_eq!(
        ids(&cli_json(&server, &["jobs", "list", "--state", "scheduled"])),
        [scheduled.to_string()]
    );
    let refunds = cli_json(&server, &["jobs", "list", "--kind", "refund", "--queue", "billing"]);
    assert_eq!(ids(&refunds), [ready[1].to_string()]);
    let two = cli_json(
        &server,
        &[
            "jobs",
            "list",
            "--state",
            "ready",
            "--state",
            "scheduled",
            "--limit",
            "2",
        ],
    );
    assert_eq!(ids(&two).len(), 2);
    assert!(two["next_cursor"].is_string(), "a third job follows");
    let mut paged = every_page(&server, &["jobs", "list", "--limit", "1"]);
    let mut want = ids(&all);
    paged.sort();
    want.sort();
    assert_eq!(paged, want, "page by page, each job once");

    let table = cli(&server, &["jobs", "list", "--state", "active"]);
    let text = stdout(&table);
    assert!(
        text.contains("WORKER") && text.contains("LEASE UNTIL") && text.contains("worker-a"),
        "{text}"
    );

    let shown = cli_json(&server, &["jobs", "show", &active.to_string()[..13]]);
    assert_eq!(
        (shown["state"].clone(), shown["lease"]["worker"].clone()),
        (json!("active"), json!("worker-a"))
    );
    let unknown = cli(&server, &["jobs", "show", &JobId::new().to_string()]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("not found: job"), "{}", stderr(&unknown));
    let bad = cli(&server, &["jobs", "list", "--state", "dead"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("not a job state"), "{}", stderr(&bad));
}

#[tokio::test]
async fn jobs_cancel_one_or_by_filter_with_a_dry_run_first() {
    let Some((server, broker)) = setup().await else { return };
    let (ready, scheduled, active) = live_jobs(&broker).await;

    let one = cli_json(&server, &["jobs", "cancel", &ready[0].to_string()]);
    assert_eq!(one["outcome"], "dead_lettered");
    let dead = broker.get_dead(&queue("billing"), ready[0]).await.unwrap().unwrap();
    assert_eq!(dead.dead_letter_reason.as_deref(), Some(CANCEL_REASON));
    let running = cli(&server, &["jobs", "cancel", &active.to_string()]);
    assert!(
        stdout(&running).contains("its worker was asked to stop it"),
        "{}",
        stdout(&running)
    );
    let again = cli(&server, &["jobs", "cancel", &ready[0].to_string()]);
    assert!(!again.status.success(), "a dead job is not live");

    let dry = cli_json(
        &server,
        &[
            "jobs",
            "cancel-all",
            "--queue",
            "billing",
            "--state",
            "ready",
            "--state",
            "scheduled",
            "--dry-run",
        ],
    );
    assert_eq!(dry["would_cancel"], 2, "{dry}");
    let text = stdout(&cli(
        &server,
        &["jobs", "cancel-all", "--state", "scheduled", "--dry-run"],
    ));
    assert!(text.contains("would cancel 1 live job (dry run"), "{text}");
    let refused = cli(&server, &["jobs", "cancel-all", "--state", "ready"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("pass --yes"), "{}", stderr(&refused));
    assert_eq!(
        broker.stats(&queue("billing")).await.unwrap().dead,
        1,
        "dry runs and refusals change nothing"
    );

    let done = cli_json(
        &server,
        &[
            "jobs",
            "cancel-all",
            "--queue",
            "billing",
            "--state",
            "ready",
            "--state",
            "scheduled",
            "--yes",
        ],
    );
    assert_eq!(
        (done["dead_lettered"].clone(), done["signalled"].clone()),
        (json!(2), json!(0))
    );
    for id in [ready[1], scheduled] {
        assert!(broker.get_dead(&queue("billing"), id).await.unwrap().is_some());
    }
    assert_eq!(
        broker.stats(&queue("billing")).await.unwrap().active,
        1,
        "the running job is its worker's to end"
    );
}

#[tokio::test]
async fn pause_and_resume_show_in_queues_and_workers_are_listed() {
    let Some((server, broker)) = setup().await else { return };
    live_jobs(&broker).await;

    let paused = cli(&server, &["pause", "billing"]);
    assert!(stdout(&paused).contains("queue billing paused"), "{}", stdout(&paused));
    assert_eq!(cli_json(&server, &["pause", "billing"])["changed"], false);
    assert_eq!(cli_json(&server, &["queues"])[0]["paused"], true);
    assert!(stdout(&cli(&server, &["queues"])).contains("paused"));
    let request = ReserveRequest::new(10, Duration::from_secs(30), Duration::ZERO);
    assert!(broker.reserve(&queue("billing"), request).await.unwrap().is_empty());
    let unknown = cli(&server, &["pause", "nosuch"]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("queue `nosuch` is unknown"));
    let resumed = cli_json(&server, &["resume", "billing"]);
    assert_eq!(
        (resumed["paused"].clone(), resumed["changed"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(cli_json(&server, &["queues"])[0]["paused"], false);

    let control: &dyn JobControl = &broker;
    let info = |id: &str| WorkerInfo::new(id, vec![queue("billing")], 4, Utc::now());
    control
        .register_worker(&info("worker-live"), Duration::from_secs(600))
        .await
        .unwrap();
    control
        .register_worker(&info("worker-gone"), Duration::from_millis(1))
        .await
        .unwrap();
    let gone = async {
        loop {
            let workers: Value = cli_json(&server, &["workers"]);
            if workers
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["info"]["id"] == "worker-gone" && w["gone"] == true)
            {
                return workers;
            }
        }
    };
    let workers = tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("the short-lived worker goes");
    let live = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["info"]["id"] == "worker-live")
        .unwrap();
    assert_eq!(
        (live["gone"].clone(), live["info"]["concurrency"].clone()),
        (json!(false), json!(4))
    );
    let table = stdout(&cli(&server, &["workers"]));
    assert!(
        table.contains("worker-gone") && table.contains("gone") && table.contains("live"),
        "{table}"
    );
}
