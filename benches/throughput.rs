//! Side-by-side benchmark with the BullMQ peer harness (`shared/peers/bullmq`).
//!
//! ```sh
//! cargo bench --bench throughput -- --backend memory --mode throughput --concurrency 64 --jobs 1000000
//! cargo bench --bench throughput --features redis -- --backend redis --mode throughput --concurrency 50 --jobs 20000
//! cargo bench --bench throughput --features redis -- --backend redis --mode latency --jobs 2000
//! cargo bench --bench throughput --features redis -- --backend redis --mode retry --jobs 2000
//! ```
//!
//! Modes mirror the peer's: `throughput` enqueues N no-op jobs in batches of
//! 1,000, then drains them with one worker at the given concurrency;
//! `latency` measures enqueue-to-handler-start with an idle worker, one job
//! every `--interval-ms`; `retry` drains N jobs that each fail once and then
//! succeed (no backoff); `stream` runs producer and worker together with the
//! backlog capped at 20,000 jobs, for steady-state rate and memory. The last
//! line printed is one JSON object.
//!
//! With `--backend redis` it uses the Redis at `--redis-url` (default
//! `redis://127.0.0.1:6379/15`) and **flushes that database only** before
//! each run; Redis figures come from `INFO commandstats` / `INFO stats` /
//! `INFO cpu` deltas around the processing phase.

// A benchmark binary: its items need no docs, and it reports on stdout.
#![allow(missing_docs, clippy::print_stdout)]

use std::{
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
    /// The queue's prefetch; `None` keeps the worker's default.
    prefetch: Option<usize>,
}

fn parse_args() -> Args {
    let mut args = Args {
        backend: "memory".into(),
        mode: "throughput".into(),
        concurrency: 50,
        jobs: 20_000,
        interval_ms: 2,
        redis_url: "redis://127.0.0.1:6379/15".into(),
        prefetch: None,
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
            "--prefetch" => args.prefetch = Some(value().parse().expect("--prefetch N")),
            // cargo bench passes --bench; ignore it and anything unknown to us.
            _ => {}
        }
    }
    args
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
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
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

async fn connect(args: &Args) -> (Arc<dyn Broker>, Option<redis_stats::Probe>) {
    match args.backend.as_str() {
        "memory" => (Arc::new(MemoryBroker::new()), None),
        "redis" => redis_stats::connect(&args.redis_url).await,
        other => panic!("unknown backend `{other}`: use memory or redis"),
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
    let (broker, probe) = connect(args).await;
    let (worker, counter) = build_worker(args, broker, false).await;
    let client = worker.client();
    client.registry().register::<Noop>().unwrap();

    if let Some(p) = &probe {
        p.reset().await;
    }
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(1_000);
    for i in 0..args.jobs {
        batch.push(Noop { i, t: 0 });
        if batch.len() == 1_000 || i + 1 == args.jobs {
            client.enqueue_batch(&batch, EnqueueOptions::new()).await.unwrap();
            batch.clear();
        }
    }
    let enqueue_s = t0.elapsed().as_secs_f64();
    let enqueue_redis = redis_figures(&probe, args.jobs).await;

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
    let process_redis = redis_figures(&probe, args.jobs).await;
    assert_eq!(counter.done.load(Ordering::Relaxed), args.jobs, "every job processed");
    let mut result = serde_json::json!({
        "backend": args.backend,
        "mode": args.mode,
        "concurrency": args.concurrency,
        "jobs": args.jobs,
        "enqueue_jobs_per_s": (args.jobs as f64 / enqueue_s).round(),
        "process_jobs_per_s": (args.jobs as f64 / process_s).round(),
        // This process's CPU (all threads) per processed job: with Redis's
        // CPU per job, it tells which side bounds the rate.
        "process_cpu_us_per_job": (process_cpu_s * 1e6 / args.jobs as f64 * 100.0).round() / 100.0,
        "enqueue_redis": enqueue_redis,
        "peak_rss_kib": peak_rss_kib(),
    });
    merge(&mut result, process_redis);
    result
}

async fn latency(args: &Args) -> serde_json::Value {
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
        client.enqueue(&Noop { i, t: now_ns() }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    counter.finished.notified().await;
    stop(running).await;
    let redis = redis_figures(&probe, args.jobs).await;
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
    merge(&mut result, redis);
    result
}

/// Producer and worker at once, the backlog kept under `BACKLOG` jobs: the
/// steady state whose memory must stay flat however many jobs go through.
async fn stream(args: &Args) -> serde_json::Value {
    const BACKLOG: u64 = 20_000;
    let (broker, probe) = connect(args).await;
    let (worker, counter) = build_worker(args, broker, false).await;
    let client = worker.client();
    if let Some(p) = &probe {
        p.reset().await;
    }
    let t0 = Instant::now();
    let running = start(&worker);
    let mut batch = Vec::with_capacity(1_000);
    let mut sent = 0;
    while sent < args.jobs {
        while sent - counter.done.load(Ordering::Relaxed) > BACKLOG {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let n = (args.jobs - sent).min(1_000);
        batch.extend((sent..sent + n).map(|i| Noop { i, t: 0 }));
        client.enqueue_batch(&batch, EnqueueOptions::new()).await.unwrap();
        batch.clear();
        sent += n;
    }
    counter.finished.notified().await;
    let elapsed = t0.elapsed().as_secs_f64();
    stop(running).await;
    let redis = redis_figures(&probe, args.jobs).await;
    let mut result = serde_json::json!({
        "backend": args.backend,
        "mode": "stream",
        "concurrency": args.concurrency,
        "jobs": args.jobs,
        "backlog_max": BACKLOG,
        "process_jobs_per_s": (args.jobs as f64 / elapsed).round(),
        "peak_rss_kib": peak_rss_kib(),
    });
    merge(&mut result, redis);
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

/// Redis's own figures since the probe's last reset (null for memory).
async fn redis_figures(probe: &Option<redis_stats::Probe>, jobs: u64) -> serde_json::Value {
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
