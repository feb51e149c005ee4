//! In-memory path: enqueue N no-op jobs in batches, then process them with
//! concurrency 1 and 64, with full semantics (schema validation, leases,
//! acknowledgements). Criterion reports the rate as elements (jobs) per second.
//!
//! `cargo bench --bench memory`

// criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flagship_worker::{
    EnqueueOptions, Handler, HandlerError, Job, JobContext, MemoryBroker, QueueConfig, RetryPolicy, Worker,
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

const JOBS: u64 = 20_000;
const BATCH: usize = 1_000;

async fn run(concurrency: usize, jobs: u64) {
    let count = Arc::new(Count {
        done: AtomicU64::new(0),
        target: jobs,
        finished: Notify::new(),
    });
    let worker = Worker::builder(Arc::new(MemoryBroker::new()))
        .queue(
            QueueConfig::new("bench")
                .unwrap()
                .concurrency(concurrency)
                .retry_policy(RetryPolicy::none()),
        )
        .handler(count.clone())
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let client = worker.client();
    let payloads: Vec<Noop> = (0..jobs).map(|n| Noop { n }).collect();
    for chunk in payloads.chunks(BATCH) {
        client.enqueue_batch(chunk, EnqueueOptions::new()).await.unwrap();
    }
    worker.run_until(count.finished.notified()).await.unwrap();
    assert_eq!(count.done.load(Ordering::Relaxed), jobs);
}

fn memory(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("memory_enqueue_and_process");
    group.throughput(Throughput::Elements(JOBS));
    group.sample_size(10);
    for concurrency in [1, 64] {
        group.bench_with_input(
            BenchmarkId::new("concurrency", concurrency),
            &concurrency,
            |b, &concurrency| {
                b.to_async(&runtime).iter(|| run(concurrency, JOBS));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, memory);
criterion_main!(benches);
