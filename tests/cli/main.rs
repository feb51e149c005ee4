//! The `flagship-worker` binary against a test Redis: list, show, retry,
//! retry-all, delete, purge, queues, health, schemas; and against a
//! PostgreSQL broker.
//!
//! Each test starts its own `redis-server` on a free port and skips with a
//! notice when it is missing (unless `FLAGSHIP_REQUIRE_REDIS=1`); the
//! PostgreSQL test uses a database of its own (and skips likewise unless
//! `FLAGSHIP_REQUIRE_POSTGRES=1`).

mod cluster;

use std::{
    process::{Command, Output},
    time::Duration,
};

use chrono::{DateTime, Utc};
use flagship_worker::{
    broker::{postgres::PostgresBroker, redis::RedisBroker},
    testing::{postgres_server::TestDatabase, redis_server::RedisServer},
    AttemptRecord, Broker, DeadFilter, DeadLetterQueue, JobEnvelope, JobId, QueueName, ReserveRequest,
};
use serde_json::{json, Value};

mod history;
mod live;
mod polish;

fn queue(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

/// Runs the binary with `REDIS_URL` pointing at `server`.
fn cli(server: &RedisServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagship-worker"))
        .env("REDIS_URL", server.url())
        .env_remove("DATABASE_URL")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs with `--json`, expects success, parses stdout.
fn cli_json(server: &RedisServer, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = cli(server, &all);
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&output)))
}

/// Enqueues a job and fails it once per error; the last failure
/// dead-letters it. Returns its id.
async fn dead_job<B: Broker>(broker: &B, queue_name: &str, kind: &str, payload: Value, errors: &[&str]) -> JobId {
    let q = queue(queue_name);
    let envelope = JobEnvelope::new(kind, q.clone(), payload, Utc::now());
    let id = envelope.id;
    broker.enqueue(vec![envelope]).await.unwrap();
    for (n, error) in errors.iter().enumerate() {
        let request = ReserveRequest::new(1, Duration::from_secs(30), Duration::from_secs(5));
        let reserved = broker.reserve(&q, request).await.unwrap();
        let job = reserved.first().expect("the job comes back");
        assert_eq!(job.lease.id, id);
        let now = Utc::now();
        let record = AttemptRecord::failed(now, now, *error, Some("worker-cli-test".into()));
        if n + 1 == errors.len() {
            broker.dead_letter(job, Some(record), error).await.unwrap();
        } else {
            broker.retry_after(job, Duration::ZERO, record).await.unwrap();
        }
    }
    id
}

async fn setup() -> Option<(RedisServer, RedisBroker)> {
    let server = RedisServer::start()?;
    let broker = RedisBroker::connect(server.url()).await.unwrap();
    Some((server, broker))
}

async fn is_dead(broker: &RedisBroker, queue_name: &str, id: JobId) -> bool {
    broker.get_dead(&queue(queue_name), id).await.unwrap().is_some()
}

/// The ids of every page of a listing command, following its cursors.
fn every_page(server: &RedisServer, list: &[&str]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = list.to_vec();
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = cli_json(server, &args);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return seen,
        }
    }
}

fn ids(listing: &Value) -> Vec<String> {
    listing["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_filters_and_pages_in_tables_and_json() {
    let Some((server, broker)) = setup().await else { return };
    let a = dead_job(&broker, "billing", "send-invoice", json!({"n": 1}), &["card declined"]).await;
    let b = dead_job(&broker, "billing", "refund", json!({"n": 2}), &["gateway 502"]).await;
    let c = dead_job(
        &broker,
        "media",
        "resize",
        json!({"n": 3}),
        &["timeout", "timeout again"],
    )
    .await;

    let all = cli_json(&server, &["dlq", "list"]);
    assert_eq!(ids(&all), [a.to_string(), b.to_string(), c.to_string()]);
    assert!(all["next_cursor"].is_null());
    assert_eq!(all["jobs"][2]["attempts"], 2);
    assert_eq!(all["jobs"][2]["reason"], "timeout again");

    assert_eq!(
        ids(&cli_json(&server, &["dlq", "list", "--queue", "billing"])),
        [a.to_string(), b.to_string()]
    );
    assert_eq!(
        ids(&cli_json(&server, &["dlq", "list", "--kind", "resize"])),
        [c.to_string()]
    );
    assert_eq!(ids(&cli_json(&server, &["dlq", "list", "--since", "1h"])).len(), 3);
    assert!(ids(&cli_json(&server, &["dlq", "list", "--until", "1h"])).is_empty());

    // Paging with the printed cursor visits each job once.
    let seen = every_page(&server, &["dlq", "list", "--limit", "2"]);
    assert_eq!(seen, [a.to_string(), b.to_string(), c.to_string()]);

    let table = cli(&server, &["dlq", "list", "--limit", "2"]);
    assert!(table.status.success());
    let text = stdout(&table);
    assert!(
        text.contains("REASON") && text.contains(&a.to_string()) && text.contains("card declined"),
        "{text}"
    );
    assert!(!text.contains(&c.to_string()));
    assert!(stderr(&table).contains("--cursor"), "says how to get the next page");

    let bad = cli(&server, &["dlq", "list", "--limit", "5000"]);
    assert!(!bad.status.success());
    let bad = cli(&server, &["dlq", "list", "--since", "last tuesday"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("neither an age"), "{}", stderr(&bad));
}

#[tokio::test]
async fn show_prints_the_payload_and_every_attempt() {
    let Some((server, broker)) = setup().await else { return };
    let id = dead_job(
        &broker,
        "billing",
        "send-invoice",
        json!({"customer": "initech", "cents": 4900}),
        &["connection reset", "card declined"],
    )
    .await;

    let job = cli_json(&server, &["dlq", "show", &id.to_string()]);
    assert_eq!(job["payload"], json!({"customer": "initech", "cents": 4900}));
    let errors: Vec<&str> = job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"].as_str().unwrap())
        .collect();
    assert_eq!(errors, ["connection reset", "card declined"]);

    let output = cli(&server, &["dlq", "show", &id.to_string(), "--queue", "billing"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("\"customer\": \"initech\""), "{text}");
    assert!(text.contains("attempts (2)") && text.contains("connection reset") && text.contains("worker-cli-test"));

    let unknown = cli(&server, &["dlq", "show", &JobId::new().to_string()]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("not found: job"), "{}", stderr(&unknown));
    let wrong_queue = cli(&server, &["dlq", "show", &id.to_string(), "--queue", "media"]);
    assert!(!wrong_queue.status.success());
    let malformed = cli(&server, &["dlq", "show", "not-an-id"]);
    assert!(!malformed.status.success());
}

#[tokio::test]
async fn retry_moves_jobs_back_to_ready_one_or_all_matching() {
    let Some((server, broker)) = setup().await else { return };
    let one = dead_job(&broker, "billing", "send-invoice", json!({}), &["boom"]).await;
    let invoices = [
        dead_job(&broker, "billing", "send-invoice", json!({}), &["boom"]).await,
        dead_job(&broker, "media", "send-invoice", json!({}), &["boom"]).await,
    ];
    let other = dead_job(&broker, "media", "resize", json!({}), &["boom"]).await;

    let output = cli(&server, &["dlq", "retry", &one.to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("moved back to ready"));
    assert!(!is_dead(&broker, "billing", one).await);
    assert_eq!(broker.stats(&queue("billing")).await.unwrap().ready, 1);
    let again = cli(&server, &["dlq", "retry", &one.to_string(), "--queue", "billing"]);
    assert!(!again.status.success(), "a job is retried once");

    let all = cli_json(&server, &["dlq", "retry-all", "--kind", "send-invoice", "--yes"]);
    assert_eq!(all["retried"], 2);
    for (q, id) in [("billing", invoices[0]), ("media", invoices[1])] {
        assert!(!is_dead(&broker, q, id).await);
    }
    assert!(is_dead(&broker, "media", other).await, "the filter held");

    let deleted = cli_json(&server, &["dlq", "delete", &other.to_string()]);
    assert_eq!(deleted["deleted"], true);
    assert!(!is_dead(&broker, "media", other).await);
    assert_eq!(
        broker.stats(&queue("media")).await.unwrap().ready,
        1,
        "deleted, not retried"
    );
}

#[tokio::test]
async fn purge_deletes_only_what_died_before_the_cutoff() {
    let Some((server, broker)) = setup().await else { return };
    let old = dead_job(&broker, "billing", "send-invoice", json!({}), &["boom"]).await;
    let old_at = dead_at(&broker, "billing", old).await;
    // Redis's clock cannot be paused: let it move past the first job's time.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let young = dead_job(&broker, "billing", "send-invoice", json!({}), &["boom"]).await;
    let other = dead_job(&broker, "media", "resize", json!({}), &["boom"]).await;
    let young_at = dead_at(&broker, "billing", young).await;
    assert!(young_at > old_at);

    let nothing = cli_json(&server, &["dlq", "purge", "--older-than", "30d", "--yes"]);
    assert_eq!(nothing["purged"], 0, "every job is younger than 30 days");

    let cutoff = (old_at + (young_at - old_at) / 2).to_rfc3339();
    let output = cli(
        &server,
        &["dlq", "purge", "--older-than", &cutoff, "--queue", "billing", "--yes"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("1 dead job dead-lettered"),
        "{}",
        stdout(&output)
    );
    assert!(!is_dead(&broker, "billing", old).await);
    assert!(is_dead(&broker, "billing", young).await);
    assert!(is_dead(&broker, "media", other).await);

    let rest = cli_json(&server, &["dlq", "purge", "--older-than", "0s", "--yes"]);
    assert_eq!(rest["purged"], 2, "every queue when none is named");
    let left = broker.count_dead(&DeadFilter::queue(queue("media"))).await.unwrap();
    assert_eq!(left, 0);
}

async fn dead_at(broker: &RedisBroker, queue_name: &str, id: JobId) -> DateTime<Utc> {
    broker
        .get_dead(&queue(queue_name), id)
        .await
        .unwrap()
        .and_then(|j| j.dead_lettered_at)
        .unwrap()
}

#[tokio::test]
async fn queues_and_health_report_the_broker() {
    let Some((server, broker)) = setup().await else { return };
    dead_job(&broker, "billing", "send-invoice", json!({}), &["boom"]).await;
    broker
        .enqueue(vec![JobEnvelope::new("resize", queue("media"), json!({}), Utc::now())])
        .await
        .unwrap();

    let queues = cli_json(&server, &["queues"]);
    assert_eq!(queues[0]["queue"], "billing");
    assert_eq!(queues[0]["dead"], 1);
    assert_eq!(queues[1]["queue"], "media");
    assert_eq!(queues[1]["ready"], 1);
    let table = stdout(&cli(&server, &["queues"]));
    assert!(table.contains("DEAD-LETTERED") && table.contains("billing") && table.contains("media"));

    // What operators page on: a job dead-lettered just now, and ready work
    // that no live worker serves. Degraded, not down: exit 0.
    let health = cli_json(&server, &["health"]);
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"][0]["name"], "broker");
    let message = |name: &str| {
        health["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["message"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(
        message("queue billing").contains("1 dead-lettered in the last 60 min"),
        "{health}"
    );
    assert!(
        message("queue media").contains("1 ready and no live worker serves the queue"),
        "{health}"
    );
    let human = cli(&server, &["health"]);
    assert!(human.status.success());
    assert!(stdout(&human).starts_with("degraded"));
    // Once the dead job is dealt with and the queue is paused, all is well.
    assert!(cli(&server, &["dlq", "purge", "--older-than", "0s", "--yes"])
        .status
        .success());
    assert!(cli(&server, &["pause", "media"]).status.success());
    assert_eq!(cli_json(&server, &["health"])["status"], "ok");

    let nowhere = Command::new(env!("CARGO_BIN_EXE_flagship-worker"))
        .args(["--redis-url", "redis://127.0.0.1:1", "health"])
        .output()
        .unwrap();
    assert!(!nowhere.status.success(), "an unreachable broker fails");
}

#[test]
fn schemas_export_writes_the_envelope_and_every_known_kind_without_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("schemas");
    let output = Command::new(env!("CARGO_BIN_EXE_flagship-worker"))
        .env_remove("REDIS_URL")
        .args(["schemas", "export"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let written: Value = serde_json::from_slice(&std::fs::read(target.join("envelope.json")).unwrap()).unwrap();
    assert_eq!(written, JobEnvelope::json_schema());
    #[cfg(feature = "flagship")]
    {
        let registry = flagship_worker::SchemaRegistry::new();
        flagship_worker::flagship::register_kinds(&registry).unwrap();
        for kind in registry.kinds() {
            let file: Value =
                serde_json::from_slice(&std::fs::read(target.join(format!("{}.json", kind.kind()))).unwrap()).unwrap();
            assert_eq!(file, kind.exported(), "{}", kind.kind());
        }
        assert!(target.join("usage-ingestion.json").exists());
    }

    let no_broker = Command::new(env!("CARGO_BIN_EXE_flagship-worker"))
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .args(["queues"])
        .output()
        .unwrap();
    assert!(!no_broker.status.success());
    assert!(stderr(&no_broker).contains("REDIS_URL"));
    assert!(stderr(&no_broker).contains("DATABASE_URL"));
}

#[tokio::test]
async fn the_commands_work_against_a_postgres_broker() {
    let Some(db) = TestDatabase::create().await else { return };
    let broker = PostgresBroker::connect(db.url()).await.unwrap();
    let pg = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flagship-worker"))
            .env_remove("REDIS_URL")
            .env("DATABASE_URL", db.url())
            .args(args)
            .output()
            .expect("the binary runs")
    };
    let json = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = pg(&all);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let a = dead_job(&broker, "billing", "send-invoice", json!({"n": 1}), &["card declined"]).await;
    let b = dead_job(
        &broker,
        "media",
        "resize",
        json!({"n": 2}),
        &["timeout", "timeout again"],
    )
    .await;

    let all = json(&["dlq", "list"]);
    assert_eq!(ids(&all), [a.to_string(), b.to_string()]);
    assert_eq!(all["jobs"][1]["reason"], "timeout again");
    let shown = json(&["dlq", "show", &b.to_string()]);
    assert_eq!(shown["payload"], json!({"n": 2}));
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 2);

    assert!(pg(&["dlq", "retry", &a.to_string()]).status.success());
    assert!(broker.get_dead(&queue("billing"), a).await.unwrap().is_none());
    let queues = json(&["queues"]);
    let names: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing", "media"]);
    assert_eq!(queues[0]["ready"], 1);
    assert!(pg(&["dlq", "purge", "--older-than", "0s", "--yes"]).status.success());
    assert_eq!(broker.count_dead(&DeadFilter::queue(queue("media"))).await.unwrap(), 0);
    // The retried job is ready and no worker serves billing; paused, it waits on purpose.
    assert_eq!(json(&["health"])["status"], "degraded");
    assert!(pg(&["pause", "billing"]).status.success());
    assert_eq!(json(&["health"])["status"], "ok");
    assert_eq!(json(&["queues"])[0]["paused"], true);

    // Live jobs and priorities on PostgreSQL too.
    let urgent = json(&[
        "enqueue",
        "billing",
        "send-invoice",
        "--payload",
        "{}",
        "--priority",
        "5",
    ]);
    let live = json(&["jobs", "list", "--queue", "billing", "--state", "ready"]);
    assert_eq!(ids(&live).len(), 2);
    assert_eq!(json(&["jobs", "show", urgent["id"].as_str().unwrap()])["priority"], 5);
    let cancelled = json(&["jobs", "cancel-all", "--queue", "billing", "--yes"]);
    assert_eq!(cancelled["dead_lettered"], 2);
    assert!(json(&["workers"]).as_array().unwrap().is_empty());

    let other_schema = pg(&["--schema", "nothing_here", "queues"]);
    assert!(!other_schema.status.success(), "the CLI never migrates a schema");
    assert!(
        stderr(&other_schema).contains("PostgresBroker::migrate"),
        "{}",
        stderr(&other_schema)
    );
    let both = pg(&["--redis-url", "redis://127.0.0.1:1", "queues"]);
    assert!(!both.status.success());
    assert!(stderr(&both).contains("not both"), "{}", stderr(&both));
}
