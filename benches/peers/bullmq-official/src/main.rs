//! Peer benchmark: BullMQ's own Rust crate (`bullmq-official`, imported as `bullmq`).
//!
//! Mirrors the Node peer's `throughput` mode (`shared/peers/bullmq/bench.mjs`):
//! enqueue N no-op jobs with `add_bulk` in batches of 1,000 (`removeOnComplete:
//! true` on every job, as the Node harness sets it), then drain them with one
//! worker at the given concurrency whose processor does nothing, and print one
//! JSON line last on stdout with the same key names as `benches/throughput.rs`.
//!
//! ```sh
//! cargo run --release -- throughput <concurrency> [N=20000]
//! ```
//!
//! Redis: REDIS_HOST (default 127.0.0.1), REDIS_PORT (default 6379), REDIS_DB
//! (default 0, as the Node harness). Unlike the Node harness (FLUSHALL), it
//! runs FLUSHDB on that database only, before the run. Around each timed phase
//! it does CONFIG RESETSTAT and reads INFO cpu / stats / commandstats on a
//! separate connection (the `redis` crate), as our own bench does.

use std::time::Instant;

use bullmq::options::RedisConnectionOptions;
use bullmq::types::RemoveOnFinish;
use bullmq::worker::WorkerEvent;
use bullmq::{BulkJob, Job, JobOptions, Queue, QueueOptions, Worker, WorkerOptions};
use serde_json::json;

struct Target {
    host: String,
    port: u16,
    db: u8,
}

impl Target {
    fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Target {
            host: var("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port: var("REDIS_PORT")
                .map(|p| p.parse().expect("REDIS_PORT"))
                .unwrap_or(6379),
            db: var("REDIS_DB").map(|d| d.parse().expect("REDIS_DB")).unwrap_or(0),
        }
    }

    fn url(&self) -> String {
        format!("redis://{}:{}/{}", self.host, self.port, self.db)
    }

    fn bullmq(&self) -> RedisConnectionOptions {
        RedisConnectionOptions::new()
            .host(self.host.clone())
            .port(self.port)
            .db(self.db)
    }
}

/// The admin connection: RESETSTAT and INFO deltas, as in `benches/throughput.rs`.
struct Probe {
    conn: redis::aio::MultiplexedConnection,
    cpu_at_reset: f64,
}

fn field(info: &str, name: &str) -> f64 {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Probe {
    async fn info(&mut self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn)
            .await
            .expect("INFO")
    }

    async fn reset(&mut self) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut self.conn)
            .await
            .expect("CONFIG RESETSTAT");
        let cpu = self.info("cpu").await;
        self.cpu_at_reset = field(&cpu, "used_cpu_user") + field(&cpu, "used_cpu_sys");
    }

    async fn read(&mut self, jobs: u64) -> serde_json::Value {
        let cpu = self.info("cpu").await;
        let used = field(&cpu, "used_cpu_user") + field(&cpu, "used_cpu_sys") - self.cpu_at_reset;
        let stats = self.info("stats").await;
        let commands = self.info("commandstats").await;
        let mut calls = 0.0;
        let mut scripts = 0.0;
        let mut by_cmd = serde_json::Map::new();
        for line in commands.lines().filter(|l| l.starts_with("cmdstat_")) {
            let name = line.trim_start_matches("cmdstat_").split(':').next().unwrap_or("");
            if matches!(
                name,
                "info" | "config|resetstat" | "client|setname" | "hello" | "select"
            ) {
                continue;
            }
            let n = line
                .split("calls=")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            calls += n;
            if matches!(name, "evalsha" | "eval" | "fcall") {
                scripts += n;
            }
            by_cmd.insert(name.to_string(), json!(n));
        }
        // Our own probe: RESETSTAT, INFO cpu, INFO stats (and this INFO cpu) are reads too.
        let reads = field(&stats, "total_reads_processed") - 4.0;
        let n = jobs as f64;
        json!({
            "redis_cmds_per_job": round3(calls / n),
            "redis_evalsha_per_job": round3(scripts / n),
            "redis_reads_per_job": round3(reads.max(0.0) / n),
            "redis_cpu_us_per_job": round3(used * 1e6 / n),
            "redis_cpu_s": round3(used),
            "redis_by_cmd": by_cmd,
        })
    }
}

async fn throughput(concurrency: usize, n: u64) -> serde_json::Value {
    let target = Target::from_env();
    let client = redis::Client::open(target.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("FLUSHDB");
    let mut probe = Probe {
        conn,
        cpu_at_reset: 0.0,
    };

    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let qname = format!("tp-{since_epoch}");
    let queue = Queue::with_options(&qname, QueueOptions::new().connection(target.bullmq()))
        .await
        .expect("queue");

    probe.reset().await;
    let t0 = Instant::now();
    let mut off = 0;
    while off < n {
        let end = n.min(off + 1_000);
        let jobs: Vec<BulkJob> = (off..end)
            .map(|i| {
                BulkJob::with_options(
                    "noop",
                    json!({ "i": i }),
                    JobOptions::new().remove_on_complete(RemoveOnFinish::Bool(true)),
                )
            })
            .collect();
        queue.add_bulk(jobs).await.expect("add_bulk");
        off = end;
    }
    let enqueue_s = t0.elapsed().as_secs_f64();
    let enqueue_redis = probe.read(n).await;

    let worker = Worker::with_options(
        &qname,
        |_job: Job, _token| async move { Ok(serde_json::Value::Null) },
        WorkerOptions::new()
            .connection(target.bullmq())
            .concurrency(concurrency)
            .manual_start(),
    )
    .await
    .expect("worker");

    probe.reset().await;
    let t1 = Instant::now();
    worker.run().await.expect("worker run");
    let mut done = 0u64;
    let mut failed = 0u64;
    while done < n {
        match worker.next_event().await {
            Some(WorkerEvent::Completed { .. }) => done += 1,
            Some(WorkerEvent::Failed { job_id, error }) => {
                failed += 1;
                eprintln!("job {job_id} failed: {error}");
            }
            Some(WorkerEvent::Error(e)) => eprintln!("worker error: {e}"),
            Some(_) => {}
            None => panic!("worker event channel closed after {done} of {n} jobs"),
        }
    }
    let process_s = t1.elapsed().as_secs_f64();
    let process_redis = probe.read(n).await;
    let counts = queue.get_job_counts().await.expect("job counts");
    worker.close(10_000).await.expect("worker close");

    let mut result = json!({
        "peer": "bullmq-official",
        "test": "throughput",
        "mode": "throughput",
        "concurrency": concurrency,
        "jobs": n,
        "N": n,
        "enqueue_s": round3(enqueue_s),
        "enqueue_jobs_per_s": (n as f64 / enqueue_s).round(),
        "process_s": round3(process_s),
        "process_jobs_per_s": (n as f64 / process_s).round(),
        "failed": failed,
        "final_counts": counts,
        "enqueue_redis": enqueue_redis,
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (result.as_object_mut(), process_redis) {
        obj.extend(extra);
    }
    result
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: u64| -> u64 { args.get(i).map(|v| v.parse().expect("a number")).unwrap_or(default) };
    let result = match args.first().map(String::as_str) {
        Some("throughput") => throughput(num(1, 50) as usize, num(2, 20_000)).await,
        _ => {
            eprintln!("usage: bullmq-official-peer throughput <concurrency> [N=20000]");
            std::process::exit(2);
        }
    };
    println!("{result}");
}
