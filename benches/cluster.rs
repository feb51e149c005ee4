//! Redis Cluster against one Redis, and the cost of `WAIT`
//! (`docs/performance.md`, "Redis Cluster and WAIT").
//!
//! ```sh
//! cargo bench --bench cluster --features redis,test-util -- --jobs 60000 --rounds 3
//! ```
//!
//! Starts its own servers (like the tests): one Redis; one Redis in
//! cluster mode serving every slot (what cluster mode costs by itself); a
//! 3-master cluster;
//! one Redis with a replica, without and with `wait_for_replicas(1, …)`.
//! The same workload on each: `--jobs` no-op jobs over six queues (two on
//! each master of the cluster), enqueued in batches of 1,000 spanning all
//! six queues, then drained by one worker (concurrency 16 per queue).
//! Per node: Redis CPU (`INFO cpu`, user + system) and requests
//! (`total_reads_processed`) per job that node served, around each phase.
//! Prints one JSON object per set-up and round, then the medians.

// A benchmark binary: its items need no docs, and it reports on stdout.
#![allow(missing_docs, clippy::print_stdout)]

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::Utc;
use flagship_worker::{
    broker::redis::RedisBroker,
    testing::{
        redis_cluster::RedisCluster,
        redis_server::{RedisServer, RedisServerOptions},
    },
    Broker, Handler, HandlerError, Job, JobContext, JobEnvelope, QueueConfig, QueueName, RetryPolicy, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Two queues per master of a 3-master cluster with evenly split slots.
const QUEUES: [&str; 6] = ["bench:0", "bench:1", "bench:2", "bench:3", "bench:4", "bench:5"];

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Noop<const N: usize> {
    i: u64,
}

impl<const N: usize> Job for Noop<N> {
    const KIND: &'static str = QUEUES[N];
    const QUEUE: &'static str = QUEUES[N];
}

struct Counter {
    done: AtomicU64,
    target: u64,
    finished: Notify,
}

#[derive(Clone)]
struct Count<const N: usize>(Arc<Counter>);

#[async_trait]
impl<const N: usize> Handler for Count<N> {
    type Job = Noop<N>;

    async fn handle(&self, _: Noop<N>, _: &JobContext) -> Result<(), HandlerError> {
        if self.0.done.fetch_add(1, Ordering::Relaxed) + 1 == self.0.target {
            self.0.finished.notify_one();
        }
        Ok(())
    }
}

/// One node's counters.
#[derive(Debug, Clone, Copy, Default)]
struct NodeStats {
    cpu_s: f64,
    reads: f64,
}

fn node_stats(server: &RedisServer) -> NodeStats {
    let mut conn = server.connection();
    let info: String = redis::cmd("INFO").arg("everything").query(&mut conn).expect("INFO");
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    NodeStats {
        cpu_s: field("used_cpu_user") + field("used_cpu_sys"),
        reads: field("total_reads_processed"),
    }
}

/// The servers of one set-up: the masters (measured) and what keeps the
/// others alive.
struct Setup {
    name: &'static str,
    url: String,
    masters: Vec<RedisServer>,
    cluster: Option<RedisCluster>,
    wait: bool,
}

fn setups() -> Vec<Setup> {
    let single = RedisServer::start().expect("redis-server");
    let mut out = vec![Setup {
        name: "single",
        url: single.url(),
        masters: vec![single],
        cluster: None,
        wait: false,
    }];
    // One node in cluster mode: what cluster mode itself costs Redis,
    // apart from spreading the queues.
    let one_node = RedisServer::start_with(RedisServerOptions::new().cluster(true)).expect("redis-server");
    out.push(Setup {
        name: "cluster-1-node",
        url: one_node.broker_url(),
        masters: vec![one_node],
        cluster: None,
        wait: false,
    });
    let cluster = RedisCluster::start(3, 0).expect("redis-server");
    // Measure the cluster's masters through servers of their own ports.
    out.push(Setup {
        name: "cluster-3-masters",
        url: cluster.url(),
        masters: Vec::new(),
        cluster: Some(cluster),
        wait: false,
    });
    for wait in [false, true] {
        let master = RedisServer::start().expect("redis-server");
        let replica = RedisServer::start_with(
            RedisServerOptions::new().args(["--replicaof".to_owned(), format!("127.0.0.1 {}", master.port())]),
        )
        .expect("redis-server");
        let started = Instant::now();
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut replica.connection())
                .expect("INFO");
            if info.contains("master_link_status:up") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "replica did not sync");
            std::thread::sleep(Duration::from_millis(20));
        }
        out.push(Setup {
            name: if wait {
                "single+replica, WAIT 1"
            } else {
                "single+replica, no WAIT"
            },
            url: master.url(),
            masters: vec![master, replica],
            cluster: None,
            wait,
        });
    }
    out
}

/// The measured nodes of a set-up, with the queues each serves.
fn measured(setup: &Setup) -> Vec<(&RedisServer, Vec<&'static str>)> {
    match &setup.cluster {
        Some(cluster) => (0..3)
            .map(|m| {
                let queues = QUEUES
                    .iter()
                    .copied()
                    .filter(|q| cluster.master_of_queue(q) == Some(m))
                    .collect();
                (cluster.node(m), queues)
            })
            .collect(),
        None => vec![(&setup.masters[0], QUEUES.to_vec())],
    }
}

async fn round(setup: &Setup, jobs: u64) -> serde_json::Value {
    let mut builder = RedisBroker::builder(setup.url.clone());
    if setup.wait {
        builder = builder.wait_for_replicas(1, Duration::from_secs(1));
    }
    let broker = Arc::new(builder.connect().await.expect("connect"));
    let counter = Arc::new(Counter {
        done: AtomicU64::new(0),
        target: jobs,
        finished: Notify::new(),
    });
    let mut worker = Worker::builder(broker.clone())
        .handler(Count::<0>(counter.clone()))
        .handler(Count::<1>(counter.clone()))
        .handler(Count::<2>(counter.clone()))
        .handler(Count::<3>(counter.clone()))
        .handler(Count::<4>(counter.clone()))
        .handler(Count::<5>(counter.clone()))
        .shutdown_timeout(Duration::from_secs(10));
    for q in QUEUES {
        worker = worker.queue(
            QueueConfig::new(q)
                .unwrap()
                .concurrency(16)
                .retry_policy(RetryPolicy::none()),
        );
    }
    let worker = worker.build().unwrap();
    let queues: Vec<QueueName> = QUEUES.iter().map(|q| QueueName::new(*q).unwrap()).collect();
    let nodes = measured(setup);

    let before: Vec<NodeStats> = nodes.iter().map(|(n, _)| node_stats(n)).collect();
    let t0 = Instant::now();
    let mut i = 0;
    while i < jobs {
        let batch: Vec<JobEnvelope> = (i..(i + 1_000).min(jobs))
            .map(|i| {
                let q = &queues[(i % 6) as usize];
                JobEnvelope::new(q.as_str(), q.clone(), serde_json::json!({ "i": i }), Utc::now())
            })
            .collect();
        i += batch.len() as u64;
        broker.enqueue(batch).await.expect("enqueue");
    }
    let enqueue_s = t0.elapsed().as_secs_f64();
    let mid: Vec<NodeStats> = nodes.iter().map(|(n, _)| node_stats(n)).collect();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let worker = worker.clone();
        async move {
            worker
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    let t1 = Instant::now();
    counter.finished.notified().await;
    let process_s = t1.elapsed().as_secs_f64();
    let after: Vec<NodeStats> = nodes.iter().map(|(n, _)| node_stats(n)).collect();
    let _ = stop.send(());
    running.await.expect("worker task").expect("worker");

    let per_node: Vec<serde_json::Value> = nodes
        .iter()
        .enumerate()
        .map(|(k, (node, qs))| {
            let served = jobs as f64 * qs.len() as f64 / 6.0;
            let us = |a: NodeStats, b: NodeStats| ((b.cpu_s - a.cpu_s) * 1e6 / served * 100.0).round() / 100.0;
            let reads = |a: NodeStats, b: NodeStats| ((b.reads - a.reads) / served * 10_000.0).round() / 10_000.0;
            serde_json::json!({
                "port": node.port(),
                "queues": qs,
                "enqueue_cpu_us_per_job": us(before[k], mid[k]),
                "enqueue_reads_per_job": reads(before[k], mid[k]),
                "process_cpu_us_per_job": us(mid[k], after[k]),
                "process_reads_per_job": reads(mid[k], after[k]),
            })
        })
        .collect();
    serde_json::json!({
        "setup": setup.name,
        "jobs": jobs,
        "enqueue_jobs_per_s": (jobs as f64 / enqueue_s).round(),
        "process_jobs_per_s": (jobs as f64 / process_s).round(),
        "nodes": per_node,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let mut jobs = 60_000;
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--jobs" => jobs = args.next().and_then(|v| v.parse().ok()).expect("--jobs N"),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--bench" => {}
            other => panic!("unknown argument `{other}`: use --jobs N, --rounds N"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let setups = setups();
    for setup in &setups {
        let results: Vec<serde_json::Value> = (0..rounds).map(|_| runtime.block_on(round(setup, jobs))).collect();
        for r in &results {
            println!("{r}");
        }
        let pick = |f: &dyn Fn(&serde_json::Value) -> f64| median(results.iter().map(f).collect());
        let nodes = results[0]["nodes"].as_array().map_or(0, Vec::len);
        let per_node: Vec<serde_json::Value> = (0..nodes)
            .map(|k| {
                let field = |name: &'static str| pick(&|r| r["nodes"][k][name].as_f64().unwrap_or(0.0));
                serde_json::json!({
                    "queues": results[0]["nodes"][k]["queues"],
                    "enqueue_cpu_us_per_job": field("enqueue_cpu_us_per_job"),
                    "enqueue_reads_per_job": field("enqueue_reads_per_job"),
                    "process_cpu_us_per_job": field("process_cpu_us_per_job"),
                    "process_reads_per_job": field("process_reads_per_job"),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "median_of": rounds,
                "setup": setup.name,
                "enqueue_jobs_per_s": pick(&|r| r["enqueue_jobs_per_s"].as_f64().unwrap_or(0.0)),
                "process_jobs_per_s": pick(&|r| r["process_jobs_per_s"].as_f64().unwrap_or(0.0)),
                "nodes": per_node,
            })
        );
    }
}
