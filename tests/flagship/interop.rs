//! Across languages: the TypeScript producer (`clients/typescript`, built)
//! enqueues FlagShip jobs into a test redis-server, and a Rust worker with
//! the FlagShip handlers runs them. Needs `node` (and npm, to build the
//! package when it is missing or older than its sources): without node the
//! tests skip with a notice, unless `FLAGSHIP_REQUIRE_NODE=1` (CI). The
//! package's generator is also run on the schemas schemars writes for the
//! serde shapes applications use, against payloads serde writes.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
    time::SystemTime,
};

use chrono::{DateTime, NaiveDate, Utc};
use flagship_worker::{
    broker::redis::RedisBroker,
    flagship::{AuditEvent, AuditEventJob, CounterKey, FlagshipServices, PeriodKind},
    testing::redis_server::RedisServer,
    DeadLetterQueue, EnqueueOutcome, Job, JobId, QueueName, SchemaRegistry,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{pipeline::Pipeline, wait_until, ShiftedClock};

/// The environment variable that turns a missing `node` into a failure.
const REQUIRE_NODE: &str = "FLAGSHIP_REQUIRE_NODE";

fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript")
}

/// The newest modification time of the files under `path`.
fn newest(path: &Path) -> SystemTime {
    let here = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    match std::fs::read_dir(path) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| newest(&e.path()))
            .fold(here, SystemTime::max),
        Err(_) => here,
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed in {}:\n{}{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The built package, or `None` (after printing why) without `node`.
/// Installs its dependencies when `node_modules` is missing and builds it
/// when the build is older than its sources; once per test process.
fn typescript_package() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let node = Command::new("node").arg("--version").output();
            if !node.is_ok_and(|o| o.status.success()) {
                if std::env::var(REQUIRE_NODE).is_ok_and(|v| v == "1") {
                    panic!("{REQUIRE_NODE}=1 but `node` cannot run; install Node.js 20 and npm");
                }
                eprintln!("SKIPPED: node not found, so the TypeScript producer cannot run; set {REQUIRE_NODE}=1 to fail instead");
                return None;
            }
            let dir = package_dir();
            if !dir.join("node_modules").exists() {
                run(&dir, "npm", &["ci", "--no-audit", "--no-fund"]);
            }
            let built = dir.join("dist/test/interop/produce.js");
            let built_at = std::fs::metadata(&built).and_then(|m| m.modified()).ok();
            let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/broker/redis/scripts");
            let sources = ["src", "test", "scripts"]
                .iter()
                .map(|d| newest(&dir.join(d)))
                .chain([newest(&scripts.join("prelude.lua")), newest(&scripts.join("enqueue.lua"))])
                .fold(SystemTime::UNIX_EPOCH, SystemTime::max);
            if built_at.is_none_or(|at| at < sources) {
                run(&dir, "npm", &["run", "build"]);
            }
            Some(dir)
        })
        .clone()
}

/// Runs the package's interop producer against `url` and returns what it printed.
async fn produce(dir: &Path, url: &str, scenario: &str) -> Value {
    let output = tokio::process::Command::new("node")
        .arg(dir.join("dist/test/interop/produce.js"))
        .args([url, scenario])
        .output()
        .await
        .expect("run node");
    assert!(
        output.status.success(),
        "the TypeScript producer failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the TypeScript producer printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn id_of(outcome: &Value) -> JobId {
    outcome["id"].as_str().expect("an id").parse().expect("a job id")
}

/// Redis's clock in milliseconds.
fn redis_ms(server: &RedisServer) -> f64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(&mut server.connection()).unwrap();
    (s * 1000) as f64 + (us / 1000) as f64
}

/// A redis-server, the Redis broker on it, and a FlagShip worker (memory
/// stores, the org `acme` of [`Pipeline::start`]) running on the broker.
async fn flagship_on_redis() -> Option<(RedisServer, Arc<RedisBroker>, Pipeline)> {
    let server = RedisServer::start()?;
    let clock = Arc::new(ShiftedClock::starting_at("2026-01-01T10:30:00Z"));
    let backend = Arc::new(RedisBroker::connect(server.url()).await.unwrap());
    let pipeline = Pipeline::start(backend.clone(), FlagshipServices::in_memory(), clock).await;
    Some((server, backend, pipeline))
}

/// The api_calls counter of `acme` for the hour the fixtures' usage falls in.
fn acme_hour() -> CounterKey {
    CounterKey::containing(
        "acme",
        "api_calls",
        PeriodKind::Hourly,
        "2026-01-01T10:00:00Z".parse().unwrap(),
    )
}

#[tokio::test]
async fn jobs_from_the_typescript_producer_run_on_the_rust_worker() {
    let Some(dir) = typescript_package() else { return };
    let Some((server, _, p)) = flagship_on_redis().await else {
        return;
    };

    let out = produce(&dir, &server.url(), "flagship").await;
    let sent_at = redis_ms(&server);

    // The package sent the Rust broker's own script: the same SHA1.
    let script = concat!(
        include_str!("../../src/broker/redis/scripts/prelude.lua"),
        include_str!("../../src/broker/redis/scripts/enqueue.lua")
    );
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(script)
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(out["scriptSha1"], sha.as_str());

    for name in ["audit", "usage", "notification", "autoAction", "delayed"] {
        assert_eq!(out[name]["status"], "enqueued", "{name}: {out}");
    }
    // The usage batch sent twice: its idempotency key made the second a duplicate.
    assert_eq!(out["duplicate"]["status"], "duplicate", "{out}");
    assert_eq!(id_of(&out["duplicate"]), id_of(&out["usage"]));

    // The delayed job waits in `scheduled`, due at Redis's clock plus the delay.
    let delayed = id_of(&out["delayed"]);
    let delay_ms = out["delayMs"].as_f64().unwrap();
    let due: f64 = redis::cmd("ZSCORE")
        .arg("{flagship:audit}:scheduled")
        .arg(delayed.to_string())
        .query(&mut server.connection())
        .unwrap();
    assert!(
        due > sent_at && due <= sent_at + delay_ms,
        "due {} ms after the producer returned",
        due - sent_at
    );
    wait_until("the delayed audit event is stored", || async {
        let trail = p.services.audit.list("acme", 100).await.unwrap();
        trail.iter().any(|e| e.id == "evt-ts-delayed")
    })
    .await;
    assert!(redis_ms(&server) >= due, "the delayed job ran before it was due");
    p.settle().await;

    // Audit: the event from TypeScript, the delayed one, and the auto-action's
    // entry, whose id derives from the action's identity.
    let trail = p.services.audit.list("acme", 100).await.unwrap();
    let ids: Vec<&str> = trail.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(trail.len(), 3, "{ids:?}");
    assert!(ids.contains(&"evt-ts-1") && ids.contains(&"evt-ts-delayed"), "{ids:?}");
    let entry = trail
        .iter()
        .find(|e| e.id.starts_with("auto-action-"))
        .expect("the auto-action's audit entry");
    assert_eq!(
        (entry.action.as_str(), entry.target_id.as_str()),
        ("api_key.blocked", "key-1")
    );
    let key = p.services.api_keys.api_key("acme", "key-1").await.unwrap().unwrap();
    assert!(key.blocked, "the auto-action blocked the key");

    // Usage: counted once (85 of 100), which crossed the warning threshold.
    assert_eq!(p.services.usage.counter(&acme_hour()).await.unwrap(), 85);

    // Notifications: the worker's threshold warning and the one from
    // TypeScript, each by email and by signed webhook.
    let mut subjects: Vec<String> = p
        .resend
        .requests()
        .iter()
        .map(|r| r.json()["subject"].as_str().unwrap().to_owned())
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "[FlagShip] api_calls at 80% of its hourly limit",
            "[FlagShip] feature beta-search disabled"
        ]
    );
    let hooks = p.hooks.requests();
    assert_eq!(hooks.len(), 2);
    assert!(hooks.iter().all(|h| h.signature_valid == Some(true)));
    let disabled = hooks
        .iter()
        .find(|h| h.json()["type"] == "feature_disabled")
        .expect("the feature_disabled webhook");
    assert_eq!(disabled.json()["data"]["notificationId"], "ts-n-1");

    // The same audit event from Rust is a duplicate of TypeScript's job:
    // both derive the idempotency key from the event.
    let again = AuditEventJob {
        event: AuditEvent {
            id: "evt-ts-1".into(),
            org_id: "acme".into(),
            actor: "user-7".into(),
            action: "flag.created".into(),
            target_type: "flag".into(),
            target_id: "new-ui".into(),
            occurred_at: "2026-01-01T10:01:00Z".parse().unwrap(),
            metadata: Default::default(),
        },
    };
    assert_eq!(
        p.client.enqueue(&again).await.unwrap(),
        EnqueueOutcome::Duplicate(id_of(&out["audit"]))
    );

    let usage = QueueName::new("flagship:usage").unwrap();
    assert_eq!(p.broker.stats(&usage).await.unwrap().dead, 0);
    assert!(
        p.broker.queues().await.unwrap().contains(&usage),
        "the producer registered its queues"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_raw_payload_that_bypasses_zod_is_dead_lettered_with_the_reason() {
    let Some(dir) = typescript_package() else { return };
    let Some((server, backend, p)) = flagship_on_redis().await else {
        return;
    };

    let out = produce(&dir, &server.url(), "raw-invalid").await;
    assert_eq!(
        out["reply"],
        serde_json::json!([1]),
        "the script stores what it is given: {out}"
    );
    let id = id_of(&out);
    let usage = QueueName::new("flagship:usage").unwrap();
    wait_until("the raw job is dead-lettered", || async {
        backend.get_dead(&usage, id).await.unwrap().is_some()
    })
    .await;
    let dead = backend.get_dead(&usage, id).await.unwrap().unwrap();
    let reason = dead.dead_letter_reason.clone().unwrap_or_default();
    assert!(reason.contains("refused"), "{reason}");
    assert!(reason.contains("`/orgId`"), "the reason names the path: {reason}");
    assert_eq!(dead.attempt, 0, "never retried: {dead:?}");

    // The handler never ran: nothing was counted.
    assert_eq!(p.services.usage.counter(&acme_hour()).await.unwrap(), 0);
    assert_eq!(p.broker.stats(&usage).await.unwrap().dead, 1);
    p.stop().await;
}

// The serde shapes an application's job kinds use, for the generator.

const SLUG: &str = "^[a-z]+$";

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct Everything {
    small: u8,
    count: u32,
    big: u64,
    signed: i64,
    ratio: f64,
    flag: bool,
    #[schemars(length(min = 1, max = 8))]
    name: String,
    #[schemars(pattern(SLUG))]
    slug: String,
    maybe: Option<String>,
    when: DateTime<Utc>,
    day: NaiveDate,
    id: uuid::Uuid,
    tags: Vec<String>,
    scores: std::collections::BTreeMap<String, u32>,
    inner: Inner,
    maybe_inner: Option<Inner>,
    color: Color,
    shape: Shape,
    order: Order,
    either: Either,
    #[serde(default)]
    defaulted: u32,
    extra: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Inner {
    #[schemars(range(min = 1, max = 10))]
    level: u16,
    note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Color {
    Red,
    DarkBlue,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Shape {
    Circle { radius: f64 },
    Square { side: f64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
enum Order {
    Stop,
    Move { x: i32, y: i32 },
    Say(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum Either {
    Number(u64),
    Text(String),
}

impl Job for Everything {
    const KIND: &'static str = "everything";
    const QUEUE: &'static str = "app:misc";
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Ping {}

impl Job for Ping {
    const KIND: &'static str = "ping";
    const QUEUE: &'static str = "app:misc";
}

fn everything(shape: Shape, order: Order, either: Either) -> Everything {
    Everything {
        small: 255,
        count: u32::MAX,
        big: 9_007_199_254_740_991,
        signed: -42,
        ratio: 0.5,
        flag: true,
        name: "\u{1F600}".repeat(8),
        slug: "abc".into(),
        maybe: None,
        when: "2026-01-01T10:00:00.123456789Z".parse().unwrap(),
        day: NaiveDate::from_ymd_opt(2026, 2, 28).unwrap(),
        id: uuid::Uuid::now_v7(),
        tags: vec!["a".into(), "b".into()],
        scores: [("x".to_owned(), 3)].into(),
        inner: Inner { level: 10, note: None },
        maybe_inner: Some(Inner {
            level: 1,
            note: Some("n".into()),
        }),
        color: Color::DarkBlue,
        shape,
        order,
        either,
        defaulted: 0,
        extra: json!({ "anything": [1, "two", null] }),
    }
}

#[test]
fn generated_zod_schemas_agree_with_what_serde_writes_and_rust_refuses() {
    let Some(dir) = typescript_package() else { return };
    let registry = SchemaRegistry::new();
    registry.register::<Everything>().unwrap();
    registry.register::<Ping>().unwrap();
    let schemas = tempfile::tempdir().unwrap();
    registry.export(schemas.path()).unwrap();

    let valid: Vec<Value> = [
        everything(Shape::Circle { radius: 1.5 }, Order::Stop, Either::Number(7)),
        everything(
            Shape::Square { side: 2.0 },
            Order::Move { x: -1, y: 2 },
            Either::Text("t".into()),
        ),
        everything(
            Shape::Circle { radius: 0.0 },
            Order::Say("hi".into()),
            Either::Number(0),
        ),
    ]
    .iter()
    .map(|e| serde_json::to_value(e).unwrap())
    .collect();
    let base = valid[0].clone();
    let with = |path: &str, value: Value| {
        let mut v = base.clone();
        *v.pointer_mut(path).unwrap() = value;
        v
    };
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("count");
    // Each refused by Rust (the validator, or serde for formats), and by Zod at this path.
    let invalid: Vec<(Value, &str)> = vec![
        (with("/small", json!(256)), "/small"),
        (with("/name", json!("")), "/name"),
        (with("/name", json!("\u{1F600}".repeat(9))), "/name"),
        (with("/slug", json!("Abc")), "/slug"),
        (with("/inner/level", json!(0)), "/inner/level"),
        (with("/color", json!("green")), "/color"),
        (with("/shape", json!({ "kind": "triangle" })), "/shape/kind"),
        (with("/shape", json!({ "kind": "circle" })), "/shape/radius"),
        (with("/order", json!({ "Bogus": 1 })), "/order"),
        (with("/order", json!({ "Move": { "x": 1 } })), "/order/Move/y"),
        (with("/either", json!(true)), "/either"),
        (with("/scores", json!({ "x": -1 })), "/scores/x"),
        (with("/tags", json!([1])), "/tags/0"),
        (with("/signed", json!(1.5)), "/signed"),
        (with("/when", json!("yesterday")), "/when"),
        (with("/day", json!("2026-02-30")), "/day"),
        (with("/id", json!("not-a-uuid")), "/id"),
        (missing, "/count"),
    ];
    for payload in &valid {
        registry.validate("everything", payload).unwrap();
    }
    for (payload, path) in &invalid {
        let refused_by_schema = registry.validate("everything", payload).is_err();
        let refused_by_serde = serde_json::from_value::<Everything>(payload.clone()).is_err();
        assert!(
            refused_by_schema || refused_by_serde,
            "Rust accepts the sample for {path}"
        );
    }

    let samples = json!({
        "valid": { "everything": valid, "ping": [{}, { "more": 1 }] },
        "invalid": {
            "everything": invalid.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            "ping": [[], "x"],
        },
    });
    let file = schemas.path().join("samples.json.txt");
    std::fs::write(&file, samples.to_string()).unwrap();
    let output = Command::new("node")
        .arg(dir.join("dist/test/interop/codegen-check.js"))
        .arg(schemas.path())
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(
        out["diagnostics"],
        json!([]),
        "the generated module does not type-check"
    );
    assert_eq!(out["queues"], json!({ "everything": "app:misc", "ping": "app:misc" }));
    for (i, issues) in out["valid"]["everything"].as_array().unwrap().iter().enumerate() {
        assert_eq!(issues, &json!([]), "valid sample {i} refused: {}", valid[i]);
    }
    assert_eq!(out["valid"]["ping"], json!([[], []]));
    for (i, issues) in out["invalid"]["everything"].as_array().unwrap().iter().enumerate() {
        let (_, path) = invalid[i];
        assert_eq!(issues[0]["path"], path, "sample {i}: {issues}");
    }
    for issues in out["invalid"]["ping"].as_array().unwrap() {
        assert_eq!(issues[0]["path"], "", "{issues}");
    }
}
