//! Side-by-side benchmark with the BullMQ peer harness (`shared/peers/bullmq`).
//!
//! ```sh
//! cargo bench --bench throughput -- --backend memory --mode throughput --concurrency 64 --jobs 1000000
//! cargo bench --bench throughput --features redis -- --backend redis --mode throughput --concurrency 50 --jobs 100000 --payload-bytes 1024
//! cargo bench --bench throughput --features redis -- --backend redis --mode throughput --concurrency 50 --jobs 20000
//! cargo bench --bench throughput --features redis -- --backend redis --mode latency --jobs 2000
//! cargo bench --bench throughput --features redis -- --backend redis --mode retry --jobs 2000
//! cargo bench --bench throughput --features postgres -- --backend postgres --mode throughput --concurrency 50 --jobs 20000
//! ```
//!
//! Modes mirror the peer's: `throughput` enqueues N no-op jobs in batches of
//! 1,000, then drains them with one worker at the given concurrency;
//! `latency` measures enqueue-to-handler-start with an idle worker, one job
//! every `--interval-ms`; `retry` drains N jobs that each fail once and then
//! succeed (no backoff); `--payload-bytes N` pads every job's payload
//! with a string field `pad` of N bytes, as the peer's `PAYLOAD=N` does; `stream` runs producer and worker together with the
//! backlog capped at 20,000 jobs, for steady-state rate and memory. The last
//! line printed is one JSON object.
//!
//! With `--backend redis` it uses the Redis at `--redis-url` (default
//! `redis://127.0.0.1:6379/15`) and **flushes that database only** before
//! each run; Redis figures come from `INFO commandstats` / `INFO stats` /
//! `INFO cpu` deltas around the processing phase.
//!
//! With `--backend postgres` (`--features postgres`) it uses the database at
//! `--postgres-url` (default `postgres://postgres@127.0.0.1:5432/flagship_bench`,
//! created if missing) and **drops its `flagship_worker` schema** before each
//! run; PostgreSQL figures are deltas around each phase, per job: statements
//! (the broker's calls, one statement each; a reserve that waits adds one per
//! look, not counted), WAL bytes (`pg_current_wal_lsn`, the whole server) and
//! the CPU of the server's processes (`/proc`, the whole server: other
//! clients' work counts too). The stream mode
//! also reports the jobs table's size (`pg_total_relation_size`, indexes and
//! TOAST included) at its start, its largest while running and at its end,
//! and how often autovacuum ran on it. `--durable-acks` makes
//! acknowledgements wait for the WAL flush (`PostgresBrokerBuilder::durable_acks`);
//! `--vacuum-after N|off` sets `PostgresBrokerBuilder::vacuum_after`.

// A benchmark binary: its items need no docs, and it reports on stdout.
#![allow(missing_docs, clippy::print_stdout)]

use std::{
    borrow::Cow,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use flagship_worker::{
    Broker, EnqueueOptions, Handler, HandlerError, Job, JobContext, MemoryBroker, QueueConfig, RetryPolicy, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq)]
struct Args {
    backend: String,
    mode: String,
    concurrency: usize,
    jobs: u64,
    interval_ms: u64,
    redis_url: String,
    postgres_url: String,
    /// PostgreSQL: acknowledgements wait for the WAL flush.
    durable_acks: bool,
    /// PostgreSQL: vacuum after this many changed rows (`None`: autovacuum only).
    vacuum_after: Option<u64>,
    /// The queue's prefetch; `None` keeps the worker's default.
    prefetch: Option<usize>,
    /// Each job's payload gets a string field `pad` of this many bytes
    /// (as the BullMQ harness pads its jobs with `PAYLOAD=N`).
    payload_bytes: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        backend: "memory".into(),
        mode: "throughput".into(),
        concurrency: 50,
        jobs: 20_000,
        interval_ms: 2,
        redis_url: "redis://127.0.0.1:6379/15".into(),
        postgres_url: "postgres://postgres@127.0.0.1:5432/flagship_bench".into(),
        durable_acks: false,
        vacuum_after: Some(flagship_worker_vacuum_default()),
        prefetch: None,
        payload_bytes: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => args.backend = value(),
            "--mode" => args.mode = value(),
            "--concurrency" => args.concurrency = value().parse().expect("--concurrency N"),
            "--jobs" => args.jobs = value().parse().expect("--jobs N"),
            "--interval-ms" => args.interval_ms = value().parse().expect("--interval-ms N"),
            "--redis-url" => args.redis_url = value(),
            "--postgres-url" => args.postgres_url = value(),
            "--durable-acks" => args.durable_acks = true,
            "--vacuum-after" => {
                args.vacuum_after = match value().as_str() {
                    "off" => None,
                    n => Some(n.parse().expect("--vacuum-after N|off")),
                }
            }
            "--prefetch" => args.prefetch = Some(value().parse().expect("--prefetch N")),
            "--payload-bytes" => args.payload_bytes = value().parse().expect("--payload-bytes N"),
            // cargo bench passes --bench; ignore it and anything unknown to us.
            _ => {}
        }
    }
    args
}

/// The broker's own vacuum threshold by default (100,000 changed rows).
fn flagship_worker_vacuum_default() -> u64 {
    #[cfg(feature = "postgres")]
    return flagship_worker::broker::postgres::DEFAULT_VACUUM_AFTER;
    #[cfg(not(feature = "postgres"))]
    100_000
}

/// Monotonic nanoseconds since the process started, comparable across tasks.
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct Noop {
    i: u64,
    /// When the producer enqueued it (latency mode), in `now_ns` units.
    t: u64,
    /// `--payload-bytes` of padding, left out when empty. Borrowed by the
    /// producer, so building a job does not copy it (BullMQ's harness
    /// shares one string too); the handler gets its own copy.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pad: Cow<'static, str>,
}

impl Noop {
    fn new(i: u64, t: u64, pad: &'static str) -> Self {
        Noop {
            i,
            t,
            pad: Cow::Borrowed(pad),
        }
    }
}

/// The padding for `--payload-bytes`, made once.
fn padding(args: &Args) -> &'static str {
    Box::leak("x".repeat(args.payload_bytes).into_boxed_str())
}

impl Job for Noop {
    const KIND: &'static str = "noop";
    const QUEUE: &'static str = "bench";
}

struct Counter {
    done: AtomicU64,
    target: u64,
    finished: Notify,
    /// Fail each job's first attempt (retry mode).
    fail_first: bool,
    /// Enqueue-to-start latencies in ns (latency mode).
    latencies: Option<Mutex<Vec<u64>>>,
}

#[async_trait]
impl Handler for Counter {
    type Job = Noop;

    async fn handle(&self, job: Noop, ctx: &JobContext) -> Result<(), HandlerError> {
        if let Some(latencies) = &self.latencies {
            let now = now_ns();
            latencies.lock().unwrap().push(now.saturating_sub(job.t));
        }
        if self.fail_first && ctx.attempt == 0 {
            return Err(HandlerError::retry("first attempt fails"));
        }
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.finished.notify_one();
        }
        Ok(())
    }
}

fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// A figure of `/proc/self/status` in KiB (`VmHWM:` peak RSS, `VmRSS:` now).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time this process has used (all threads, user + system), in
/// seconds, from `/proc/self/stat` (clock ticks of 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.rsplit_once(") ")?.1;
            let mut fields = rest.split_whitespace().skip(11);
            let user: f64 = fields.next()?.parse().ok()?;
            let system: f64 = fields.next()?.parse().ok()?;
            Some((user + system) / 100.0)
        })
        .unwrap_or(0.0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1] as f64 / 1e6
}

async fn connect(args: &Args) -> (Arc<dyn Broker>, Option<Probe>) {
    match args.backend.as_str() {
        "memory" => (Arc::new(MemoryBroker::new()), None),
        "redis" => {
            let (broker, probe) = redis_stats::connect(&args.redis_url).await;
            (broker, probe.map(Probe::Redis))
        }
        "postgres" => {
            let (broker, probe) =
                postgres_stats::connect(&args.postgres_url, args.durable_acks, args.vacuum_after).await;
            (broker, Some(Probe::Postgres(probe)))
        }
        other => panic!("unknown backend `{other}`: use memory, redis or postgres"),
    }
}

/// Reads the server's own figures around a phase.
#[derive(Debug)]
enum Probe {
    Redis(redis_stats::Probe),
    Postgres(postgres_stats::Probe),
}

impl Probe {
    async fn reset(&self) {
        match self {
            Probe::Redis(p) => p.reset().await,
            Probe::Postgres(p) => p.reset().await,
        }
    }

    async fn read(&self, jobs: u64) -> serde_json::Value {
        match self {
            Probe::Redis(p) => p.read(jobs).await,
            Probe::Postgres(p) => p.read(jobs).await,
        }
    }
}

#[cfg(not(feature = "postgres"))]
mod postgres_stats {
    use super::*;

    #[derive(Debug)]
    pub(crate) struct Probe;

    pub(crate) async fn connect(_: &str, _: bool, _: Option<u64>) -> (Arc<dyn Broker>, Probe) {
        panic!("the postgres backend needs `--features postgres`");
    }

    impl Probe {
        pub(crate) async fn reset(&self) {}
        pub(crate) async fn read(&self, _: u64) -> serde_json::Value {
            serde_json::Value::Null
        }
        pub(crate) async fn table_bytes(&self) -> u64 {
            0
        }
        pub(crate) async fn vacuums(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres_stats {
    use super::*;
    use flagship_worker::broker::postgres::{sqlx, PostgresBroker};

    /// The broker, counting its calls: each is one statement (a reserve
    /// that waits for work adds one per look, not counted here).
    #[derive(Debug)]
    struct Counted {
        inner: PostgresBroker,
        calls: Arc<AtomicU64>,
    }

    impl Counted {
        fn count(&self) {
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[async_trait]
    impl Broker for Counted {
        async fn enqueue(
            &self,
            jobs: Vec<flagship_worker::JobEnvelope>,
        ) -> flagship_worker::Result<Vec<flagship_worker::EnqueueOutcome>> {
            self.count();
            self.inner.enqueue(jobs).await
        }
        async fn reserve(
            &self,
            queue: &flagship_worker::QueueName,
            request: flagship_worker::ReserveRequest,
        ) -> flagship_worker::Result<Vec<flagship_worker::Reservation>> {
            self.count();
            self.inner.reserve(queue, request).await
        }
        async fn complete(
            &self,
            leases: &[flagship_worker::Lease],
        ) -> flagship_worker::Result<Vec<flagship_worker::LeaseStatus>> {
            self.count();
            self.inner.complete(leases).await
        }
        async fn retry_after(
            &self,
            job: &flagship_worker::Reservation,
            delay: Duration,
            attempt: flagship_worker::AttemptRecord,
        ) -> flagship_worker::Result<()> {
            self.count();
            self.inner.retry_after(job, delay, attempt).await
        }
        async fn snooze(&self, job: &flagship_worker::Reservation, delay: Duration) -> flagship_worker::Result<()> {
            self.count();
            self.inner.snooze(job, delay).await
        }
        async fn dead_letter(
            &self,
            job: &flagship_worker::Reservation,
            attempt: Option<flagship_worker::AttemptRecord>,
            reason: &str,
        ) -> flagship_worker::Result<()> {
            self.count();
            self.inner.dead_letter(job, attempt, reason).await
        }
        async fn release(
            &self,
            leases: &[flagship_worker::Lease],
        ) -> flagship_worker::Result<Vec<flagship_worker::LeaseStatus>> {
            self.count();
            self.inner.release(leases).await
        }
        async fn extend(
            &self,
            leases: &[flagship_worker::Lease],
            lease: Duration,
        ) -> flagship_worker::Result<Vec<flagship_worker::LeaseStatus>> {
            self.count();
            self.inner.extend(leases, lease).await
        }
        async fn recover_expired(
            &self,
            queue: &flagship_worker::QueueName,
            max: usize,
            lease: Duration,
        ) -> flagship_worker::Result<Vec<flagship_worker::Reservation>> {
            self.count();
            self.inner.recover_expired(queue, max, lease).await
        }
        async fn stats(
            &self,
            queue: &flagship_worker::QueueName,
        ) -> flagship_worker::Result<flagship_worker::QueueStats> {
            self.count();
            self.inner.stats(queue).await
        }
        async fn queues(&self) -> flagship_worker::Result<Vec<flagship_worker::QueueName>> {
            self.count();
            self.inner.queues().await
        }
    }

    /// A side connection that reads PostgreSQL's own counters.
    #[derive(Debug)]
    pub(crate) struct Probe {
        /// The broker's calls so far.
        calls: Arc<AtomicU64>,
        /// A connection to the `postgres` database.
        pool: sqlx::PgPool,
        /// A connection to the bench database, for its tables' sizes.
        bench: sqlx::PgPool,
        /// Broker calls, WAL position and server CPU at the last reset.
        at_reset: Mutex<(i64, String, f64)>,
    }

    /// Creates the database if missing, drops the broker's schema, and
    /// connects a broker (which migrates it afresh).
    pub(crate) async fn connect(url: &str, durable_acks: bool, vacuum_after: Option<u64>) -> (Arc<dyn Broker>, Probe) {
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("postgres url");
        let database = options.get_database().unwrap_or("flagship_bench").to_owned();
        let admin = sqlx::PgPool::connect_with(options.clone().database("postgres"))
            .await
            .expect("connect to the postgres database");
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&admin)
            .await
            .unwrap();
        if !exists {
            sqlx::query(&format!("CREATE DATABASE \"{database}\""))
                .execute(&admin)
                .await
                .unwrap();
        }
        admin.close().await;
        let bench = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .expect("connect to the bench database");
        sqlx::query("DROP SCHEMA IF EXISTS flagship_worker CASCADE")
            .execute(&bench)
            .await
            .unwrap();
        // The probe reads from another database, so that its own statements
        // are not counted in the bench database's.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.database("postgres"))
            .await
            .expect("connect to the postgres database");
        let broker = PostgresBroker::builder(url)
            .max_connections(20)
            .durable_acks(durable_acks)
            .vacuum_after(vacuum_after)
            .connect()
            .await
            .expect("postgres broker");
        let calls = Arc::new(AtomicU64::new(0));
        let probe = Probe {
            calls: calls.clone(),
            pool,
            bench,
            at_reset: Mutex::new((0, "0/0".into(), 0.0)),
        };
        (Arc::new(Counted { inner: broker, calls }), probe)
    }

    /// CPU seconds used so far by every process named `postgres`.
    fn server_cpu_seconds() -> f64 {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0.0;
        };
        let mut total = 0.0;
        for entry in dir.flatten() {
            let path = entry.path();
            let is_pid = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
            if !is_pid {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
                continue;
            };
            let Some((name, rest)) = stat.split_once(") ") else {
                continue;
            };
            if !name.ends_with("(postgres") {
                continue;
            }
            let mut fields = rest.split_whitespace().skip(11);
            let user: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let system: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            total += (user + system) / 100.0;
        }
        total
    }

    impl Probe {
        async fn wal_lsn(&self) -> String {
            sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
                .fetch_one(&self.pool)
                .await
                .unwrap()
        }

        pub(crate) async fn reset(&self) {
            let calls = self.calls.load(Ordering::Relaxed) as i64;
            let lsn = self.wal_lsn().await;
            *self.at_reset.lock().unwrap() = (calls, lsn, server_cpu_seconds());
        }

        pub(crate) async fn read(&self, jobs: u64) -> serde_json::Value {
            let cpu = server_cpu_seconds();
            let (calls, lsn, cpu_at_reset) = self.at_reset.lock().unwrap().clone();
            // Each broker call is one statement in its own transaction
            // (pg_stat_database lags: backends publish their counts late).
            let statements = self.calls.load(Ordering::Relaxed) as i64 - calls;
            let wal: i64 = sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint")
                .bind(&lsn)
                .fetch_one(&self.pool)
                .await
                .unwrap();
            let n = jobs as f64;
            serde_json::json!({
                "pg_statements_per_job": (statements as f64 / n * 1e5).round() / 1e5,
                "pg_wal_bytes_per_job": round(wal as f64 / n),
                "pg_cpu_us_per_job": round((cpu - cpu_at_reset) * 1e6 / n),
            })
        }

        /// The jobs table's size with its indexes and TOAST, in bytes.
        pub(crate) async fn table_bytes(&self) -> u64 {
            let bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('flagship_worker.jobs')")
                .fetch_one(&self.bench)
                .await
                .unwrap();
            bytes as u64
        }

        /// How often (auto)vacuum has run on the jobs table.
        pub(crate) async fn vacuums(&self) -> serde_json::Value {
            let (auto, manual, dead): (i64, i64, i64) = sqlx::query_as(
                "SELECT autovacuum_count, vacuum_count, n_dead_tup FROM pg_stat_user_tables \
                 WHERE relid = 'flagship_worker.jobs'::regclass",
            )
            .fetch_one(&self.bench)
            .await
            .unwrap();
            serde_json::json!({ "autovacuum_runs": auto, "vacuum_runs": manual, "dead_tuples_at_end": dead })
        }
    }

    fn round(x: f64) -> f64 {
        (x * 1000.0).round() / 1000.0
    }
}

#[cfg(not(feature = "redis"))]
mod redis_stats {
    use super::*;

    #[derive(Debug)]
    pub(crate) struct Probe;

    pub(crate) async fn connect(_: &str) -> (Arc<dyn Broker>, Option<Probe>) {
        panic!("the redis backend needs `--features redis`");
    }

    impl Probe {
        pub(crate) async fn reset(&self) {}
        pub(crate) async fn read(&self, _: u64) -> serde_json::Value {
            serde_json::Value::Null
        }
    }
}

#[cfg(feature = "redis")]
mod redis_stats {
    use super::*;
    use flagship_worker::broker::redis::RedisBroker;

    /// A side connection that reads Redis's own counters.
    #[derive(Debug)]
    pub(crate) struct Probe {
        conn: tokio::sync::Mutex<redis::aio::MultiplexedConnection>,
        cpu_at_reset: Mutex<f64>,
    }

    pub(crate) async fn connect(url: &str) -> (Arc<dyn Broker>, Option<Probe>) {
        let client = redis::Client::open(url).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("FLUSHDB");
        let broker = RedisBroker::connect(url).await.expect("redis broker");
        (
            Arc::new(broker),
            Some(Probe {
                conn: tokio::sync::Mutex::new(conn),
                cpu_at_reset: Mutex::new(0.0),
            }),
        )
    }

    fn field(info: &str, name: &str) -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    impl Probe {
        async fn info(&self, section: &str) -> String {
            let mut conn = self.conn.lock().await;
            redis::cmd("INFO")
                .arg(section)
                .query_async(&mut *conn)
                .await
                .expect("INFO")
        }

        pub(crate) async fn reset(&self) {
            {
                let mut conn = self.conn.lock().await;
                let _: () = redis::cmd("CONFIG")
                    .arg("RESETSTAT")
                    .query_async(&mut *conn)
                    .await
                    .expect("RESETSTAT");
            }
            let cpu = self.info("cpu").await;
            *self.cpu_at_reset.lock().unwrap() = field(&cpu, "used_cpu_user") + field(&cpu, "used_cpu_sys");
        }

        pub(crate) async fn read(&self, jobs: u64) -> serde_json::Value {
            let cpu = self.info("cpu").await;
            let used = field(&cpu, "used_cpu_user") + field(&cpu, "used_cpu_sys") - *self.cpu_at_reset.lock().unwrap();
            let stats = self.info("stats").await;
            let commands = self.info("commandstats").await;
            let mut calls = 0.0;
            for line in commands.lines().filter(|l| l.starts_with("cmdstat_")) {
                let name = line.trim_start_matches("cmdstat_").split(':').next().unwrap_or("");
                if matches!(name, "info" | "config|resetstat") {
                    continue;
                }
                calls += line
                    .split("calls=")
                    .nth(1)
                    .and_then(|r| r.split(',').next())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
            // Our own probe: RESETSTAT, INFO cpu, INFO stats (and this INFO cpu) are reads too.
            let reads = field(&stats, "total_reads_processed") - 4.0;
            let n = jobs as f64;
            serde_json::json!({
                "redis_cmds_per_job": round(calls / n),
                "redis_reads_per_job": round(reads.max(0.0) / n),
                "redis_cpu_us_per_job": round(used * 1e6 / n),
            })
        }
    }

    fn round(x: f64) -> f64 {
        (x * 1000.0).round() / 1000.0
    }
}

/// A worker on `broker` whose handler counts jobs (and, when asked,
/// records enqueue-to-start latencies); in retry mode each job fails once.
async fn build_worker(args: &Args, broker: Arc<dyn Broker>, record_latency: bool) -> (Worker, Arc<Counter>) {
    let counter = Arc::new(Counter {
        done: AtomicU64::new(0),
        target: args.jobs,
        finished: Notify::new(),
        fail_first: args.mode == "retry",
        latencies: record_latency.then(|| Mutex::new(Vec::with_capacity(args.jobs as usize))),
    });
    let policy = if args.mode == "retry" {
        RetryPolicy::fixed(1, Duration::ZERO)
    } else {
        RetryPolicy::none()
    };
    let mut queue = QueueConfig::new("bench")
        .unwrap()
        .concurrency(args.concurrency)
        .retry_policy(policy);
    if let Some(prefetch) = args.prefetch {
        queue = queue.prefetch(prefetch);
    }
    let worker = Worker::builder(broker)
        .queue(queue)
        .handler(counter.clone())
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (worker, counter)
}

async fn throughput(args: &Args) -> serde_json::Value {
    let pad = padding(args);
    let (broker, probe) = connect(args).await;
    let (worker, counter) = build_worker(args, broker, false).await;
    let client = worker.client();
    client.registry().register::<Noop>().unwrap();

    if let Some(p) = &probe {
        p.reset().await;
    }
    let rss_before_kib = status_kib("VmRSS:");
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(1_000);
    for i in 0..args.jobs {
        batch.push(Noop::new(i, 0, pad));
        if batch.len() == 1_000 || i + 1 == args.jobs {
            client.enqueue_batch(&batch, EnqueueOptions::new()).await.unwrap();
            batch.clear();
        }
    }
    let enqueue_s = t0.elapsed().as_secs_f64();
    // What the queued jobs cost this process at most (with the memory
    // broker: the backlog itself), over what it used before enqueueing.
    let backlog_rss_bytes_per_job = (peak_rss_kib().saturating_sub(rss_before_kib) * 1024) as f64 / args.jobs as f64;
    let enqueue_server = server_figures(&probe, args.jobs).await;

    if let Some(p) = &probe {
        p.reset().await;
    }
    // Time to the last job's end, not to the end of shutdown (an idle
    // reserve may wait out its poll interval before the worker stops).
    let t1 = Instant::now();
    let cpu1 = cpu_seconds();
    let running = start(&worker);
    counter.finished.notified().await;
    let process_s = t1.elapsed().as_secs_f64();
    let process_cpu_s = cpu_seconds() - cpu1;
    stop(running).await;
    let process_server = server_figures(&probe, args.jobs).await;
    assert_eq!(counter.done.load(Ordering::Relaxed), args.jobs, "every job processed");
    let mut result = serde_json::json!({
        "backend": args.backend,
        "mode": args.mode,
        "concurrency": args.concurrency,
        "jobs": args.jobs,
        "payload_bytes": args.payload_bytes,
        "enqueue_jobs_per_s": (args.jobs as f64 / enqueue_s).round(),
        "process_jobs_per_s": (args.jobs as f64 / process_s).round(),
        // This process's CPU (all threads) per processed job: with Redis's
        // CPU per job, it tells which side bounds the rate.
        "process_cpu_us_per_job": (process_cpu_s * 1e6 / args.jobs as f64 * 100.0).round() / 100.0,
        "peak_rss_kib": peak_rss_kib(),
        "backlog_peak_rss_bytes_per_job": backlog_rss_bytes_per_job.round(),
    });
    merge(&mut result, process_server);
    if let Some(fields) = result.as_object_mut() {
        fields.insert(format!("enqueue_{}", args.backend), enqueue_server);
    }
    result
}

async fn latency(args: &Args) -> serde_json::Value {
    let pad = padding(args);
    let (broker, probe) = connect(args).await;
    let (worker, counter) = build_worker(args, broker, true).await;
    let client = worker.client();
    let running = start(&worker);
    // Let the worker park in its idle wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(p) = &probe {
        p.reset().await;
    }
    for i in 0..args.jobs {
        client.enqueue(&Noop::new(i, now_ns(), pad)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    counter.finished.notified().await;
    stop(running).await;
    let server = server_figures(&probe, args.jobs).await;
    let mut sorted = counter.latencies.as_ref().unwrap().lock().unwrap().clone();
    sorted.sort_unstable();
    let mut result = serde_json::json!({
        "backend": args.backend,
        "mode": "latency",
        "jobs": args.jobs,
        "interval_ms": args.interval_ms,
        "latency_ms": {
            "p50": percentile(&sorted, 50.0),
            "p90": percentile(&sorted, 90.0),
            "p99": percentile(&sorted, 99.0),
            "max": percentile(&sorted, 100.0),
        },
        "peak_rss_kib": peak_rss_kib(),
    });
    merge(&mut result, server);
    result
}

/// Producer and worker at once, the backlog kept under `BACKLOG` jobs: the
/// steady state whose memory must stay flat however many jobs go through.
async fn stream(args: &Args) -> serde_json::Value {
    let pad = padding(args);
    const BACKLOG: u64 = 20_000;
    let (broker, probe) = connect(args).await;
    let (worker, counter) = build_worker(args, broker, false).await;
    let client = worker.client();
    if let Some(p) = &probe {
        p.reset().await;
    }
    let pg = match &probe {
        Some(Probe::Postgres(p)) => Some(p),
        _ => None,
    };
    let table_at_start = match pg {
        Some(p) => p.table_bytes().await,
        None => 0,
    };
    let mut table_max = table_at_start;
    let t0 = Instant::now();
    let running = start(&worker);
    let mut batch = Vec::with_capacity(1_000);
    let mut sent = 0;
    while sent < args.jobs {
        while sent - counter.done.load(Ordering::Relaxed) > BACKLOG {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        if let Some(p) = pg.filter(|_| sent % 50_000 == 0) {
            table_max = table_max.max(p.table_bytes().await);
        }
        let n = (args.jobs - sent).min(1_000);
        batch.extend((sent..sent + n).map(|i| Noop::new(i, 0, pad)));
        client.enqueue_batch(&batch, EnqueueOptions::new()).await.unwrap();
        batch.clear();
        sent += n;
    }
    counter.finished.notified().await;
    let elapsed = t0.elapsed().as_secs_f64();
    stop(running).await;
    let server = server_figures(&probe, args.jobs).await;
    let table = match pg {
        Some(p) => {
            let at_end = p.table_bytes().await;
            serde_json::json!({
                "bytes_at_start": table_at_start,
                "bytes_max_sampled": table_max.max(at_end),
                "bytes_at_end": at_end,
                "vacuum": p.vacuums().await,
            })
        }
        None => serde_json::Value::Null,
    };
    let mut result = serde_json::json!({
        "backend": args.backend,
        "mode": "stream",
        "jobs_table": table,
        "concurrency": args.concurrency,
        "jobs": args.jobs,
        "backlog_max": BACKLOG,
        "process_jobs_per_s": (args.jobs as f64 / elapsed).round(),
        "peak_rss_kib": peak_rss_kib(),
    });
    merge(&mut result, server);
    result
}

/// Runs `worker` in the background until the returned sender fires.
fn start(
    worker: &Worker,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<flagship_worker::Result<()>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = worker.clone();
    let running = tokio::spawn(async move { worker.run_until(stopped).await });
    (stop, running)
}

/// Stops a worker started with [`start`] and waits for its shutdown.
async fn stop(
    worker: (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<flagship_worker::Result<()>>,
    ),
) {
    let _ = worker.0.send(());
    worker.1.await.unwrap().unwrap();
}

/// The server's own figures since the probe's last reset (null for memory).
async fn server_figures(probe: &Option<Probe>, jobs: u64) -> serde_json::Value {
    match probe {
        Some(p) => p.read(jobs).await,
        None => serde_json::Value::Null,
    }
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

fn main() {
    // `BENCH_LOG=flagship_worker=debug` shows what the worker does, with timestamps.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let args = parse_args();
    now_ns();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        match args.mode.as_str() {
            "throughput" | "retry" => throughput(&args).await,
            "latency" => latency(&args).await,
            "stream" => stream(&args).await,
            other => panic!("unknown mode `{other}`: use throughput, latency or retry"),
        }
    });
    println!("{result}");
}
