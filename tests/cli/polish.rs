//! Issue 17's polish on the DLQ commands: not-found errors, unknown queues,
//! id prefixes, order across queues, `health --json` with the broker down,
//! dead jobs that cannot be retried, `--dry-run` and confirmation, and
//! `enqueue`.

use std::process::Command;

use chrono::Utc;
use flagship_worker::{Broker, JobEnvelope, JobId, ReserveRequest};
use redis::AsyncCommands;
use serde_json::{json, Value};

use super::{cli, cli_json, dead_job, every_page, ids, is_dead, queue, setup, stderr, stdout};

/// A dead job under a chosen id (UUID v7 shaped), so prefixes are known.
async fn dead_job_with_id(broker: &impl Broker, queue_name: &str, id: &str) -> JobId {
    let mut envelope = JobEnvelope::new("send-invoice", queue(queue_name), json!({}), Utc::now());
    envelope.id = id.parse().unwrap();
    broker.enqueue(vec![envelope]).await.unwrap();
    let request = ReserveRequest::new(1, std::time::Duration::from_secs(30), std::time::Duration::from_secs(5));
    let job = broker.reserve(&queue(queue_name), request).await.unwrap().remove(0);
    broker.dead_letter(&job, None, "boom").await.unwrap();
    job.lease.id
}

#[tokio::test]
async fn missing_jobs_and_unknown_queues_are_not_found_errors() {
    let Some((server, broker)) = setup().await else { return };
    dead_job(&broker, "billing", "send-invoice", json!({}), &["boom"]).await;

    let unknown = cli(&server, &["dlq", "show", &JobId::new().to_string()]);
    assert!(!unknown.status.success());
    let text = stderr(&unknown);
    assert!(
        text.contains("not found: job") && text.contains("is not in the dead-letter queue"),
        "{text}"
    );
    assert!(!text.contains("invalid configuration"), "{text}");

    for args in [
        &["dlq", "list", "--queue", "nosuch"][..],
        &["dlq", "retry-all", "--queue", "nosuch", "--yes"][..],
        &["dlq", "purge", "--older-than", "0s", "--queue", "nosuch", "--yes"][..],
    ] {
        let output = cli(&server, args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr(&output).contains("queue `nosuch` is unknown"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn an_unambiguous_id_prefix_names_a_job_in_any_case() {
    let Some((server, broker)) = setup().await else { return };
    let a = dead_job_with_id(&broker, "billing", "01936f0e-aaaa-7000-8000-000000000001").await;
    let b = dead_job_with_id(&broker, "media", "01936f0e-bbbb-7000-8000-000000000002").await;

    assert_eq!(cli_json(&server, &["dlq", "show", "01936f0e-a"])["id"], a.to_string());
    assert_eq!(cli_json(&server, &["dlq", "show", "01936F0E-BB"])["id"], b.to_string());

    let ambiguous = cli(&server, &["dlq", "show", "01936f0e"]);
    assert!(!ambiguous.status.success());
    let text = stderr(&ambiguous);
    assert!(
        text.contains("matches 2 jobs") && text.contains("give more characters"),
        "{text}"
    );
    let none = cli(&server, &["dlq", "show", "01936f0f"]);
    assert!(
        stderr(&none).contains("no job id starting with `01936f0f`"),
        "{}",
        stderr(&none)
    );
    let short = cli(&server, &["dlq", "show", "019"]);
    assert!(!short.status.success());
    assert!(
        stderr(&short).contains("at least its first 4 characters"),
        "{}",
        stderr(&short)
    );

    // The prefix works for the commands that act, too.
    assert_eq!(cli_json(&server, &["dlq", "retry", "01936f0e-b"])["retried"], true);
    assert!(!is_dead(&broker, "media", b).await);
    assert_eq!(
        cli_json(&server, &["dlq", "delete", "01936f0e"])["deleted"],
        true,
        "unambiguous now"
    );
    assert!(!is_dead(&broker, "billing", a).await);
}

#[tokio::test]
async fn list_is_oldest_first_over_every_queue() {
    let Some((server, broker)) = setup().await else { return };
    let first = dead_job(&broker, "zebra", "k", json!({}), &["boom"]).await;
    let second = dead_job(&broker, "alpha", "k", json!({}), &["boom"]).await;
    let third = dead_job(&broker, "zebra", "k", json!({}), &["boom"]).await;
    let fourth = dead_job(&broker, "alpha", "k", json!({}), &["boom"]).await;
    let want: Vec<String> = [first, second, third, fourth].iter().map(JobId::to_string).collect();

    assert_eq!(ids(&cli_json(&server, &["dlq", "list"])), want);
    let seen = every_page(&server, &["dlq", "list", "--limit", "1"]);
    assert_eq!(seen, want, "page by page, the same order");
}

#[test]
fn health_json_says_down_when_the_broker_cannot_be_reached() {
    let output = Command::new(env!("CARGO_BIN_EXE_flagship-worker"))
        .args(["--redis-url", "redis://127.0.0.1:1", "--json", "health"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let report: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&output)));
    assert_eq!(report["status"], "down");
    assert_eq!(report["checks"][0]["name"], "broker");
    assert_eq!(report["checks"][0]["status"], "down");
}

#[tokio::test]
async fn a_dead_job_that_cannot_be_decoded_is_not_retried() {
    let Some((server, broker)) = setup().await else { return };
    let good = dead_job(&broker, "billing", "send-invoice", json!({}), &["boom"]).await;
    // Another program wrote a record that is not a job, and made it ready.
    let id = JobId::new();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn.hset("{billing}:jobs", id.to_string(), "{not json").await.unwrap();
    let _: () = conn.rpush("{billing}:ready", id.to_string()).await.unwrap();
    let request = ReserveRequest::new(10, std::time::Duration::from_secs(30), std::time::Duration::ZERO);
    assert!(broker.reserve(&queue("billing"), request).await.unwrap().is_empty());
    assert!(is_dead(&broker, "billing", id).await, "the broker buried it");

    let output = cli(&server, &["dlq", "retry", &id.to_string()]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!("job {id} cannot be retried as it is")),
        "{}",
        stderr(&output)
    );
    assert!(is_dead(&broker, "billing", id).await);

    let all = cli_json(&server, &["dlq", "retry-all", "--yes"]);
    assert_eq!(all["retried"], 1, "only the job that can run");
    assert!(!is_dead(&broker, "billing", good).await);
    assert!(is_dead(&broker, "billing", id).await);
}

#[tokio::test]
async fn bulk_commands_dry_run_and_refuse_without_yes_off_a_terminal() {
    let Some((server, broker)) = setup().await else { return };
    let a = dead_job(&broker, "billing", "send-invoice", json!({}), &["boom"]).await;
    let b = dead_job(&broker, "media", "resize", json!({}), &["boom"]).await;

    let dry = cli_json(&server, &["dlq", "retry-all", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["would_retry"], 2);
    assert_eq!(
        dry["queues"],
        json!([{"queue": "billing", "count": 1}, {"queue": "media", "count": 1}])
    );
    let table = cli(&server, &["dlq", "retry-all", "--dry-run", "--queue", "media"]);
    assert!(table.status.success());
    assert!(
        stdout(&table).contains("would retry 1 dead job (dry run"),
        "{}",
        stdout(&table)
    );
    let dry = cli_json(&server, &["dlq", "purge", "--older-than", "0s", "--dry-run"]);
    assert_eq!(dry["would_purge"], 2);
    assert!(
        is_dead(&broker, "billing", a).await && is_dead(&broker, "media", b).await,
        "dry runs change nothing"
    );

    // stdin is not a terminal here: without --yes nothing happens.
    for args in [&["dlq", "retry-all"][..], &["dlq", "purge", "--older-than", "0s"][..]] {
        let refused = cli(&server, args);
        assert!(!refused.status.success(), "{args:?}");
        assert!(
            stderr(&refused).contains("pass --yes"),
            "{args:?}: {}",
            stderr(&refused)
        );
    }
    assert!(is_dead(&broker, "billing", a).await && is_dead(&broker, "media", b).await);

    let retried = cli(&server, &["dlq", "retry-all", "--queue", "billing", "--yes"]);
    assert_eq!(stdout(&retried).trim(), "1 dead job moved back to ready");
    let purged = cli(&server, &["dlq", "purge", "--older-than", "0s", "-y"]);
    assert!(
        stdout(&purged).starts_with("1 dead job dead-lettered before"),
        "{}",
        stdout(&purged)
    );
    assert_eq!(broker.stats(&queue("media")).await.unwrap().dead, 0);
    let nothing = cli(&server, &["dlq", "retry-all"]);
    assert!(nothing.status.success(), "nothing to confirm: {}", stderr(&nothing));
    assert_eq!(stdout(&nothing).trim(), "0 dead jobs moved back to ready");
}

#[tokio::test]
async fn enqueue_checks_known_kinds_and_warns_about_others() {
    let Some((server, broker)) = setup().await else { return };

    let raw = cli(
        &server,
        &[
            "--json",
            "enqueue",
            "billing",
            "send-invoice",
            "--payload",
            r#"{"customer": "acme"}"#,
        ],
    );
    assert!(raw.status.success(), "{}", stderr(&raw));
    assert!(stderr(&raw).contains("warning: job kind `send-invoice` is not one this command knows"));
    let out: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        (out["enqueued"].clone(), out["checked"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(broker.stats(&queue("billing")).await.unwrap().ready, 1);

    let keyed = [
        "enqueue",
        "billing",
        "send-invoice",
        "--payload",
        "{}",
        "--idempotency-key",
        "inv-1",
    ];
    let first = cli_json(&server, &keyed);
    let again = cli_json(&server, &keyed);
    assert_eq!(
        (first["enqueued"].clone(), again["enqueued"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(again["id"], first["id"], "the duplicate names the job holding the key");

    let delayed = cli_json(
        &server,
        &["enqueue", "billing", "later", "--payload", "[]", "--delay", "1h"],
    );
    assert_eq!(delayed["enqueued"], true);
    assert_eq!(broker.stats(&queue("billing")).await.unwrap().scheduled, 1);

    let out_of_range = cli(
        &server,
        &["enqueue", "billing", "later", "--payload", "{}", "--priority", "11"],
    );
    assert!(!out_of_range.status.success());
    assert!(
        stderr(&out_of_range).contains("priority 11 is out of range"),
        "{}",
        stderr(&out_of_range)
    );
    let bad_json = cli(&server, &["enqueue", "billing", "send-invoice", "--payload", "{nope"]);
    assert!(!bad_json.status.success());
    assert!(stderr(&bad_json).contains("malformed payload"), "{}", stderr(&bad_json));
    let bad_kind = cli(&server, &["enqueue", "billing", "no spaces", "--payload", "{}"]);
    assert!(!bad_kind.status.success());

    #[cfg(feature = "flagship")]
    {
        use flagship_worker::{flagship::AuditEventJob, Job};
        let (audit, kind) = (<AuditEventJob as Job>::QUEUE, <AuditEventJob as Job>::KIND);
        let invalid = cli(&server, &["enqueue", audit, kind, "--payload", r#"{"nope": 1}"#]);
        assert!(!invalid.status.success());
        assert!(stderr(&invalid).contains("invalid payload"), "{}", stderr(&invalid));
        let elsewhere = cli(&server, &["enqueue", "billing", kind, "--payload", "{}"]);
        assert!(!elsewhere.status.success());
        assert!(
            stderr(&elsewhere).contains(&format!("runs on queue `{audit}`")),
            "{}",
            stderr(&elsewhere)
        );
        assert!(
            !broker.queues().await.unwrap().contains(&queue(audit)),
            "nothing enqueued"
        );

        let event = json!({"event": {
            "id": "evt-1", "orgId": "acme", "actor": "user-7", "action": "flag.created",
            "targetType": "flag", "targetId": "new-ui", "occurredAt": "2025-01-01T00:00:00Z"
        }});
        let valid = cli(
            &server,
            &["--json", "enqueue", audit, kind, "--payload", &event.to_string()],
        );
        assert!(valid.status.success(), "{}", stderr(&valid));
        assert!(!stderr(&valid).contains("warning"), "{}", stderr(&valid));
        let out: Value = serde_json::from_slice(&valid.stdout).unwrap();
        assert_eq!(out["checked"], true);
        assert_eq!(broker.stats(&queue(audit)).await.unwrap().ready, 1);
    }
}
