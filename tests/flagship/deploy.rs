//! `flagship-worker run` end to end: the binary against a test Redis (the
//! broker) and a test PostgreSQL database (the stores), with local stand-ins
//! for Resend and a webhook receiver. Producers enqueue the four
//! producer-facing kinds; the test reads the audit rows and counters back
//! with SQL, checks the mock deliveries and the admin API, then sends
//! SIGTERM and checks that no job was lost.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use flagship_worker::{
    broker::{postgres::sqlx, redis::RedisBroker},
    flagship::{
        stores::{ApiKeyStore, FlagStore, OrgConfigStore, PostgresStore},
        ApiKey, AuditEvent, AuditEventJob, AutoAction, AutoActionJob, EnforcementConfig, Flag, NotificationJob,
        OrgConfig, PeriodKind, UsageEvent, UsageIngestionJob, UsageLimit, WebhookEndpoint, AUDIT_QUEUE,
        FLAGSHIP_QUEUES,
    },
    testing::{postgres_server::TestDatabase, redis_server::RedisServer},
    Broker, Client, QueueName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{mock::MockServer, pipeline::SECRET, wait_until};

const TOKEN: &str = "e2e-admin-token-0123456789";

/// The worker process; killed if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn audit(id: &str) -> AuditEventJob {
    AuditEventJob {
        event: AuditEvent {
            id: id.into(),
            org_id: "acme".into(),
            actor: "user-7".into(),
            action: "flag.created".into(),
            target_type: "flag".into(),
            target_id: "new-ui".into(),
            occurred_at: Utc::now(),
            metadata: Default::default(),
        },
    }
}

/// GET `path` of the admin server with the bearer token: (status, body).
async fn admin_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_runs_flagship_on_redis_and_postgres_and_stops_without_losing_jobs() {
    let Some(redis) = RedisServer::start() else { return };
    let Some(db) = TestDatabase::create().await else { return };
    let resend = MockServer::resend().await;
    let hooks = MockServer::webhook_receiver(SECRET).await;

    // The product's state, as an operator would have it before starting.
    let store = PostgresStore::connect(&db.url()).await.unwrap();
    let mut config = OrgConfig::new("acme");
    config.limits.push(
        UsageLimit::new("api_calls", PeriodKind::Hourly, 100).on_exceeded(EnforcementConfig {
            disable_flags: vec!["new-ui".into()],
            block_api_keys: vec!["key-1".into()],
            notify: false,
        }),
    );
    config.notifications.email_recipients = vec!["ops@acme.test".into()];
    config.notifications.webhook = Some(WebhookEndpoint {
        url: format!("{}/flagship", hooks.url),
        secret: SECRET.into(),
    });
    store.put_org(&config).await.unwrap();
    store.put_flag(&Flag::enabled("acme", "new-ui")).await.unwrap();
    for key in ["key-1", "key-2"] {
        store.put_api_key(&ApiKey::active("acme", key)).await.unwrap();
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_flagship-worker"))
        .arg("run")
        .env("FLAGSHIP_BROKER_URL", redis.url())
        .env("FLAGSHIP_STORE_URL", db.url())
        .env("FLAGSHIP_RESEND_API_KEY", "re_test_key")
        .env("FLAGSHIP_RESEND_BASE_URL", &resend.url)
        .env("FLAGSHIP_EMAIL_FROM", "FlagShip <alerts@flagship.test>")
        .env("FLAGSHIP_WEBHOOK_ALLOW", "loopback")
        .env("FLAGSHIP_ADMIN_TOKEN", TOKEN)
        .env("FLAGSHIP_ADMIN_ADDR", "127.0.0.1:0")
        .env("FLAGSHIP_QUEUE_CONCURRENCY", "flagship:usage=2,flagship:audit=4")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (lines, mut printed) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let admin_line = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = printed.recv().await.expect("the worker exited before it started");
            if let Some(url) = line.strip_prefix("admin: http://") {
                break url.trim_end_matches("/admin/ui").to_owned();
            }
        }
    })
    .await
    .expect("the worker printed its admin address within 60 s");

    // Producers: one job of each producer-facing kind.
    let broker = Arc::new(RedisBroker::connect(redis.url()).await.unwrap());
    let client = Client::new(broker.clone());
    flagship_worker::flagship::register_kinds(client.registry()).unwrap();
    client.enqueue(&audit("evt-1")).await.unwrap();
    client
        .enqueue(&UsageIngestionJob {
            org_id: "acme".into(),
            batch_id: "b-1".into(),
            events: vec![UsageEvent {
                metric: "api_calls".into(),
                quantity: 105,
                timestamp: Utc::now(),
            }],
        })
        .await
        .unwrap();
    let spec_shaped: NotificationJob = serde_json::from_value(serde_json::json!({
        "notificationId": "spec-1",
        "orgId": "acme",
        "type": "threshold_warning",
        "data": { "metric": "seats", "percent": 80 },
    }))
    .unwrap();
    client.enqueue(&spec_shaped).await.unwrap();
    let block = AutoActionJob {
        org_id: "acme".into(),
        action: AutoAction::BlockApiKey,
        target_id: "key-2".into(),
        reason: "blocked by support".into(),
        about: None,
    };
    client.enqueue(&block).await.unwrap();
    // The same action again: its identity makes it one.
    client.enqueue(&block).await.unwrap();

    let sql = store.pool().clone();
    let audit_actions = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT action FROM flagship.audit_events WHERE org_id = 'acme' ORDER BY action",
        )
        .fetch_all(&sql)
        .await
        .unwrap()
    };
    wait_until("the audit trail has the event and the three auto-actions", || async {
        audit_actions().await.len() >= 4
    })
    .await;
    wait_until("two emails and two webhooks went out", || async {
        resend.requests().len() >= 2 && hooks.requests().len() >= 2
    })
    .await;

    assert_eq!(
        audit_actions().await,
        ["api_key.blocked", "api_key.blocked", "flag.created", "flag.disabled"],
        "key-1 and key-2 blocked once each, new-ui disabled, the producer's event"
    );
    let counted: i64 = sqlx::query_scalar(
        "SELECT value FROM flagship.usage_counters WHERE org_id = 'acme' AND metric = 'api_calls' AND period = 'hourly'",
    )
    .fetch_one(&sql)
    .await
    .unwrap();
    assert_eq!(counted, 105);
    let flag_on: bool = sqlx::query_scalar("SELECT enabled FROM flagship.flags WHERE key = 'new-ui'")
        .fetch_one(&sql)
        .await
        .unwrap();
    assert!(!flag_on, "the limit's action disabled the flag");
    let subjects: Vec<String> = resend
        .requests()
        .iter()
        .map(|r| r.json()["subject"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        subjects.contains(&"[FlagShip] api_calls hourly limit exceeded".to_owned()),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"[FlagShip] seats at 80% of its limit".to_owned()),
        "{subjects:?}"
    );
    assert!(resend
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer re_test_key")));
    let hook_types: Vec<String> = hooks
        .requests()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(hook_types.contains(&"limit_exceeded".to_owned()) && hook_types.contains(&"threshold_warning".to_owned()));
    assert!(hooks.requests().iter().all(|r| r.signature_valid == Some(true)));
    // The log is written once the receiver has answered.
    wait_until("the delivery log says sent for the four real deliveries", || async {
        let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM flagship.deliveries WHERE via = 'sent'")
            .fetch_one(&sql)
            .await
            .unwrap();
        sent == 4
    })
    .await;
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM flagship.deliveries WHERE via <> 'sent'")
        .fetch_one(&sql)
        .await
        .unwrap();
    assert_eq!(logged, 0);

    let heartbeats: i64 = sqlx::query_scalar("SELECT count(*) FROM flagship.seen WHERE name LIKE 'worker:%'")
        .fetch_one(&sql)
        .await
        .unwrap();
    assert_eq!(heartbeats, 1, "the worker records its heartbeat");

    let (status, body) = admin_get(&admin_line, "/admin/api/queues").await;
    assert_eq!(status, 200, "{body}");
    for queue in FLAGSHIP_QUEUES {
        assert!(
            body.contains(queue.name) || queue.name == "flagship:maintenance",
            "{body}"
        );
    }
    let (status, _) = admin_get(&admin_line, "/admin/api/health").await;
    assert!(status == 200 || status == 503, "health answers ({status})");

    // A burst, then SIGTERM at once: every event is stored or still queued.
    let burst: Vec<String> = (0..30).map(|i| format!("burst-{i}")).collect();
    for id in &burst {
        client.enqueue(&audit(id)).await.unwrap();
    }
    let mut running = running;
    let pid = running.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || {
        let status = running.0.wait();
        (status, running)
    });
    let (status, _running) = tokio::time::timeout(Duration::from_secs(60), status)
        .await
        .expect("the worker stopped within 60 s of SIGTERM")
        .unwrap();
    assert!(status.unwrap().success(), "a clean exit on SIGTERM");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM flagship.audit_events WHERE id LIKE 'burst-%'")
        .fetch_one(&sql)
        .await
        .unwrap();
    let audit_queue = broker.stats(&QueueName::new(AUDIT_QUEUE).unwrap()).await.unwrap();
    assert_eq!(audit_queue.active, 0, "no job left leased by the stopped worker");
    assert_eq!(audit_queue.dead, 0);
    assert_eq!(
        stored as u64 + audit_queue.ready + audit_queue.scheduled,
        burst.len() as u64,
        "every event is stored ({stored}) or still queued: nothing lost"
    );
}

#[tokio::test]
async fn the_worker_binary_refuses_to_start_without_a_mailer_and_names_the_setting() {
    let Some(db) = TestDatabase::create().await else { return };
    let output = Command::new(env!("CARGO_BIN_EXE_flagship-worker"))
        .arg("run")
        .env("FLAGSHIP_BROKER_URL", "redis://127.0.0.1:1")
        .env("FLAGSHIP_STORE_URL", db.url())
        .env("FLAGSHIP_EMAIL_FROM", "FlagShip <alerts@flagship.test>")
        .env("FLAGSHIP_ADMIN_TOKEN", TOKEN)
        .env_remove("FLAGSHIP_RESEND_API_KEY")
        .env_remove("FLAGSHIP_LOG_DELIVERIES_ONLY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FLAGSHIP_RESEND_API_KEY is not set"), "{stderr}");
}

#[tokio::test]
async fn the_worker_binary_takes_every_redis_url_form_and_refuses_a_shared_schema() {
    let Some(db) = TestDatabase::create().await else { return };
    let run = |broker: &str, broker_schema: &str| {
        Command::new(env!("CARGO_BIN_EXE_flagship-worker"))
            .arg("run")
            .env("FLAGSHIP_BROKER_URL", broker)
            .env("FLAGSHIP_BROKER_SCHEMA", broker_schema)
            .env("FLAGSHIP_STORE_URL", db.url())
            .env_remove("FLAGSHIP_STORE_SCHEMA")
            .env("FLAGSHIP_LOG_DELIVERIES_ONLY", "true")
            .env("FLAGSHIP_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    // A cluster URL goes to RedisBroker, which cannot reach port 1.
    let cluster = run("redis+cluster://127.0.0.1:1", "flagship_worker");
    assert!(!cluster.status.success());
    let stderr = String::from_utf8_lossy(&cluster.stderr);
    assert!(!stderr.contains("must start with"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    // The broker's tables in the stores' schema would mix two migration histories.
    let shared = run(&db.url(), "flagship");
    assert!(!shared.status.success());
    let stderr = String::from_utf8_lossy(&shared.stderr);
    assert!(
        stderr.contains("FLAGSHIP_BROKER_SCHEMA and FLAGSHIP_STORE_SCHEMA"),
        "{stderr}"
    );
}
