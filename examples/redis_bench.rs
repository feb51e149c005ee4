//! Redis path, measured: enqueue N no-op jobs in batches, then process them
//! with a worker at concurrency 1 and 64, and report jobs per second, Redis
//! round trips per job (from `INFO commandstats` deltas) and Redis CPU per
//! job (from `INFO cpu` deltas, so request handling is included).
//!
//! It starts its own `redis-server` (like the tests do):
//!
//! ```text
//! cargo run --release --example redis_bench --features redis,test-util -- [--jobs 20000] [--concurrency 1,64] [--verbose]
//! ```

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use flagship_worker::{
    broker::redis::RedisBroker,
    testing::redis_server::{CommandStat, RedisServer},
    Client, Handler, HandlerError, Job, JobContext, QueueConfig, RetryPolicy, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Serialize, Deserialize, JsonSchema)]
struct Noop {
    n: u64,
}

impl Job for Noop {
    const KIND: &'static str = "noop";
    const QUEUE: &'static str = "bench";
}

/// Counts jobs and says when the last one ran.
struct Count {
    done: AtomicU64,
    target: u64,
    finished: Notify,
}

#[async_trait]
impl Handler for Count {
    type Job = Noop;
    async fn handle(&self, _: Noop, _: &JobContext) -> Result<(), HandlerError> {
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.finished.notify_one();
        }
        Ok(())
    }
}

/// Commands sent by clients (not run inside scripts), so each is a request.
const TOP_LEVEL: [&str; 6] = [
    "evalsha",
    "blpop",
    "sadd",
    "client|unblock",
    "client|id",
    "client|setname",
];

/// What Redis did between two snapshots.
struct Usage {
    /// Requests by command.
    requests: BTreeMap<String, u64>,
    /// Microseconds spent executing those commands (scripts included).
    command_usec: u64,
    /// Seconds of Redis process CPU (user + system).
    cpu_secs: f64,
}

struct Snapshot {
    stats: BTreeMap<String, CommandStat>,
    cpu: f64,
}

fn snapshot(server: &RedisServer) -> Snapshot {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query(&mut server.connection())
        .expect("INFO cpu");
    let cpu = info
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "used_cpu_sys" | "used_cpu_user").then(|| v.trim().parse::<f64>().ok())?
        })
        .sum();
    Snapshot {
        stats: server.command_stats(),
        cpu,
    }
}

/// Every command's calls and µs between two snapshots (inner script commands included).
fn print_all(before: &Snapshot, after: &Snapshot, jobs: u64) {
    for (name, a) in &after.stats {
        let b = before.stats.get(name).copied().unwrap_or_default();
        if a.calls > b.calls {
            println!(
                "    {name:<16} {:>8} calls {:>8.2} calls/job {:>6.2} µs/job",
                a.calls - b.calls,
                (a.calls - b.calls) as f64 / jobs as f64,
                (a.usec - b.usec) as f64 / jobs as f64
            );
        }
    }
}

fn usage(before: &Snapshot, after: &Snapshot) -> Usage {
    let mut requests = BTreeMap::new();
    let mut command_usec = 0;
    for name in TOP_LEVEL {
        let a = after.stats.get(name).copied().unwrap_or_default();
        let b = before.stats.get(name).copied().unwrap_or_default();
        if a.calls > b.calls {
            requests.insert(name.to_owned(), a.calls - b.calls);
            command_usec += a.usec - b.usec;
        }
    }
    Usage {
        requests,
        command_usec,
        cpu_secs: after.cpu - before.cpu,
    }
}

fn report(what: &str, jobs: u64, elapsed: Duration, usage: &Usage) {
    let requests: u64 = usage.requests.values().sum();
    println!(
        "{what:<24} {:>9.0} jobs/s   {:>6.3} round trips/job   {:>6.1} µs Redis CPU/job ({:>5.1} µs in commands)   {:?}",
        jobs as f64 / elapsed.as_secs_f64(),
        requests as f64 / jobs as f64,
        usage.cpu_secs * 1e6 / jobs as f64,
        usage.command_usec as f64 / jobs as f64,
        usage.requests,
    );
}

async fn run(
    server: &RedisServer,
    concurrency: usize,
    jobs: u64,
    verbose: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let broker = Arc::new(RedisBroker::connect(server.url()).await?);
    let client = Client::new(broker.clone());
    let payloads: Vec<Noop> = (0..jobs).map(|n| Noop { n }).collect();

    let before = snapshot(server);
    let started = Instant::now();
    for batch in payloads.chunks(1_000) {
        client.enqueue_batch(batch, Default::default()).await?;
    }
    let elapsed = started.elapsed();
    let after = snapshot(server);
    report("enqueue (batches of 1000)", jobs, elapsed, &usage(&before, &after));
    if verbose {
        print_all(&before, &after, jobs);
    }

    let count = Arc::new(Count {
        done: AtomicU64::new(0),
        target: jobs,
        finished: Notify::new(),
    });
    let worker = Worker::builder(broker)
        .handler(count.clone())
        .queue(
            QueueConfig::new(Noop::QUEUE)?
                .concurrency(concurrency)
                .retry_policy(RetryPolicy::none()),
        )
        .build()?;
    let before = snapshot(server);
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let worker = worker.clone();
        tokio::spawn(async move {
            worker
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    count.finished.notified().await;
    let elapsed = started.elapsed();
    let _ = stop.send(());
    running.await??;
    let after = snapshot(server);
    report(
        &format!("process, concurrency {concurrency}"),
        jobs,
        elapsed,
        &usage(&before, &after),
    );
    if verbose {
        print_all(&before, &after, jobs);
    }
    assert_eq!(worker.stats().completed, jobs, "every job completed");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut jobs = 20_000;
    let mut levels = vec![1, 64];
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--verbose" {
            verbose = true;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--jobs" => jobs = value.parse()?,
            "--concurrency" => levels = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let Some(server) = RedisServer::start() else {
        return Err("redis-server is needed for this benchmark".into());
    };
    for concurrency in levels {
        // A fresh queue state per level: flush between runs.
        redis::cmd("FLUSHALL").exec(&mut server.connection())?;
        run(&server, concurrency, jobs, verbose).await?;
    }
    Ok(())
}
