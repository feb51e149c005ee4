//! Redis Cluster and Sentinel with workers running: queues spread over
//! the masters, a master killed (`SIGKILL`) and its replica promoted, a
//! queue's slot moved to another master, all without restarting a worker
//! or a producer. Counts acknowledged jobs lost with and without the
//! `WAIT` option.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use flagship_worker::{
    broker::redis::RedisBroker,
    testing::redis_cluster::{Failover, RedisCluster, RedisSentinels},
    Broker, JobEnvelope, JobId, QueueConfig, QueueName, RetryPolicy, Worker,
};
use tokio::sync::watch;

use crate::support::{eventually, run, stop, Demo};

/// Counts the runs of each job by its id.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<JobId, u32>>>);

impl Runs {
    fn ran(&self) -> HashSet<JobId> {
        self.0.lock().unwrap().keys().copied().collect()
    }
}

#[async_trait::async_trait]
impl flagship_worker::Handler for Runs {
    type Job = Demo;

    async fn handle(&self, _: Demo, ctx: &flagship_worker::JobContext) -> Result<(), flagship_worker::HandlerError> {
        *self.0.lock().unwrap().entry(ctx.id).or_default() += 1;
        Ok(())
    }
}

/// A demo job on `queue`, due after `delay`.
fn job(queue: &QueueName, n: u64, delay: Duration) -> JobEnvelope {
    let now = Utc::now();
    let mut job = JobEnvelope::new("demo", queue.clone(), serde_json::json!({ "n": n }), now);
    job.run_at = now + chrono::TimeDelta::from_std(delay).unwrap();
    job
}

/// The demo queue the failover and slot-move tests use.
fn demo_queue() -> QueueName {
    QueueName::new(<Demo as flagship_worker::Job>::QUEUE).unwrap()
}

/// A worker running `runs` on the demo queue, with short leases and quick retries.
fn worker(broker: Arc<RedisBroker>, runs: &Runs) -> Worker {
    Worker::builder(broker)
        .handler(runs.clone())
        .queue(
            QueueConfig::new(<Demo as flagship_worker::Job>::QUEUE)
                .unwrap()
                .concurrency(8)
                .retry_policy(RetryPolicy::fixed(50, Duration::from_millis(20))),
        )
        .lease(Duration::from_secs(1))
        .recovery_interval(Duration::from_millis(100))
        .idle_wait(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Whether every one of `queues` is empty (nothing ready, scheduled or leased).
async fn drained(broker: &RedisBroker, queues: &[QueueName]) -> bool {
    for q in queues {
        match broker.stats(q).await {
            Ok(s) if s.ready + s.scheduled + s.active == 0 => {}
            _ => return false,
        }
    }
    true
}

/// A producer enqueueing batches of 10 jobs on `queue` every 20 ms until
/// told to stop; it returns the ids Redis acknowledged and how many
/// batches failed.
struct Producer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Vec<JobId>, usize)>,
    acknowledged: Arc<Mutex<usize>>,
}

impl Producer {
    fn start(broker: Arc<RedisBroker>, queue: QueueName, delay: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let acknowledged = Arc::new(Mutex::new(0));
        let count = acknowledged.clone();
        let task = tokio::spawn(async move {
            let (mut ids, mut failed, mut n) = (Vec::new(), 0, 0);
            while !*stopped.borrow() {
                let batch: Vec<JobEnvelope> = (n..n + 10).map(|n| job(&queue, n, delay)).collect();
                n += 10;
                let batch_ids: Vec<JobId> = batch.iter().map(|j| j.id).collect();
                match broker.enqueue(batch).await {
                    Ok(_) => {
                        ids.extend(batch_ids);
                        *count.lock().unwrap() = ids.len();
                    }
                    Err(_) => failed += 1,
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stopped.changed() => {}
                }
            }
            (ids, failed)
        });
        Producer {
            stop,
            task,
            acknowledged,
        }
    }

    fn acknowledged(&self) -> usize {
        *self.acknowledged.lock().unwrap()
    }

    /// Waits until `more` further jobs are acknowledged.
    async fn wait_for_more(&self, more: usize, what: &str) {
        let target = self.acknowledged() + more;
        eventually(what, Duration::from_secs(20), || async {
            self.acknowledged() >= target
        })
        .await;
    }

    async fn finish(self) -> (Vec<JobId>, usize) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap()
    }
}

/// The 30 queues of the spread test and their kinds (one handler per kind,
/// one kind per queue).
const SPREAD_QUEUES: [&str; 30] = [
    "spread:q0",
    "spread:q1",
    "spread:q2",
    "spread:q3",
    "spread:q4",
    "spread:q5",
    "spread:q6",
    "spread:q7",
    "spread:q8",
    "spread:q9",
    "spread:q10",
    "spread:q11",
    "spread:q12",
    "spread:q13",
    "spread:q14",
    "spread:q15",
    "spread:q16",
    "spread:q17",
    "spread:q18",
    "spread:q19",
    "spread:q20",
    "spread:q21",
    "spread:q22",
    "spread:q23",
    "spread:q24",
    "spread:q25",
    "spread:q26",
    "spread:q27",
    "spread:q28",
    "spread:q29",
];

/// A job of queue `SPREAD_QUEUES[N]`, kind `spread:qN`.
#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Spread<const N: usize> {
    n: u64,
}

impl<const N: usize> flagship_worker::Job for Spread<N> {
    const KIND: &'static str = SPREAD_QUEUES[N];
    const QUEUE: &'static str = SPREAD_QUEUES[N];
}

/// Counts runs by job id, for any of the spread kinds.
#[derive(Clone, Default)]
struct SpreadRuns<const N: usize>(Runs);

#[async_trait::async_trait]
impl<const N: usize> flagship_worker::Handler for SpreadRuns<N> {
    type Job = Spread<N>;

    async fn handle(
        &self,
        _: Spread<N>,
        ctx: &flagship_worker::JobContext,
    ) -> Result<(), flagship_worker::HandlerError> {
        *self.0 .0.lock().unwrap().entry(ctx.id).or_default() += 1;
        Ok(())
    }
}

/// Registers a [`SpreadRuns`] handler for each listed queue index.
macro_rules! spread_handlers {
    ($builder:expr, $runs:expr; $($n:literal)*) => {
        $builder$(.handler(SpreadRuns::<$n>($runs.clone())))*
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_of_thirty_queues_spread_over_three_masters_all_complete_without_errors() {
    let Some(cluster) = RedisCluster::shared() else { return };
    let queues: Vec<QueueName> = SPREAD_QUEUES.iter().map(|q| QueueName::new(*q).unwrap()).collect();
    let masters: HashSet<usize> = queues
        .iter()
        .filter_map(|q| cluster.master_of_queue(q.as_str()))
        .collect();
    assert_eq!(masters.len(), 3, "the 30 queues should land on all three masters");

    let broker = Arc::new(RedisBroker::connect(cluster.url()).await.unwrap());
    let jobs: Vec<JobEnvelope> = (0..600)
        .map(|n| {
            let queue = &queues[n % 30];
            JobEnvelope::new(queue.as_str(), queue.clone(), serde_json::json!({ "n": n }), Utc::now())
        })
        .collect();
    let ids: HashSet<JobId> = jobs.iter().map(|j| j.id).collect();
    // One batch spanning all 30 slots.
    broker.enqueue(jobs).await.unwrap();
    let runs = Runs::default();
    let worker = spread_handlers!(Worker::builder(broker.clone()), runs;
        0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29)
    .idle_wait(Duration::from_millis(200))
    .build()
    .unwrap();
    let running = run(&worker);
    eventually("600 jobs on 30 queues done", Duration::from_secs(30), || async {
        runs.ran().len() == 600
    })
    .await;
    stop(vec![running]).await;

    assert_eq!(runs.ran(), ids);
    assert_eq!(worker.stats().broker_errors, 0, "a broker error reached the worker");
    let listed: HashSet<QueueName> = broker.queues().await.unwrap().into_iter().collect();
    assert!(queues.iter().all(|q| listed.contains(q)), "every queue is listed");
    for q in &queues {
        let stats = broker.stats(q).await.unwrap();
        assert_eq!(stats.completed, 20, "{q}");
    }
    broker.ping().await.unwrap();
}

/// What one failover cost.
#[derive(Debug)]
struct Loss {
    acknowledged: usize,
    lost: usize,
    failed_batches: usize,
}

/// Workers and a producer run on `queue`; the queue's replica is paused
/// and its replication link cut on the master (writes stop replicating:
/// the paused replica cannot reconnect), the master killed, the replica
/// resumed and promoted, the old master brought back as a replica; then
/// everything acknowledged must run. Jobs are due 300 ms after enqueue, so some wait
/// in the queue when the master dies. Returns what was lost.
async fn failover(ha: &mut impl Failover, wait: bool) -> Loss {
    let queue = demo_queue();
    let url = ha.broker_url();
    let connect = || async {
        let mut builder = RedisBroker::builder(url.clone()).response_timeout(Duration::from_secs(2));
        if wait {
            builder = builder.wait_for_replicas(1, Duration::from_millis(300));
        }
        Arc::new(builder.connect().await.unwrap())
    };
    let (producing, working) = (connect().await, connect().await);
    let runs = Runs::default();
    let worker = worker(working, &runs);
    let running = run(&worker);
    let producer = Producer::start(producing.clone(), queue.clone(), Duration::from_millis(300));
    producer
        .wait_for_more(100, "jobs acknowledged before the failover")
        .await;

    let master = ha.master_of(queue.as_str());
    let replica = ha.replica_for(master);
    ha.pause(replica);
    ha.cut_replication(master);
    // Writes the replica will never see (without WAIT they are acknowledged).
    tokio::time::sleep(Duration::from_millis(400)).await;
    ha.kill(master);
    ha.resume(replica);
    tokio::task::block_in_place(|| ha.wait_promoted(replica));
    tokio::task::block_in_place(|| ha.restart_as_replica(master));
    producer
        .wait_for_more(100, "jobs acknowledged after the failover, without a restart")
        .await;
    let after = runs.ran().len();
    let (acknowledged, failed_batches) = producer.finish().await;
    eventually("the queue drained", Duration::from_secs(30), || {
        drained(&producing, std::slice::from_ref(&queue))
    })
    .await;
    assert!(
        runs.ran().len() > after,
        "the worker kept running jobs after the failover"
    );
    stop(vec![running]).await;

    let ran = runs.ran();
    Loss {
        acknowledged: acknowledged.len(),
        lost: acknowledged.iter().filter(|id| !ran.contains(id)).count(),
        failed_batches,
    }
}

/// Reports both counts; with `WAIT`, nothing acknowledged was lost, the
/// unreplicated enqueues failed instead, and without it the scenario did
/// lose jobs (or it would prove nothing).
fn wait_kept_every_acknowledged_job(what: &str, without: Loss, with: Loss) {
    eprintln!("{what} failover without WAIT: {without:?}; with WAIT: {with:?}");
    assert!(
        with.acknowledged >= 200,
        "the producer went on through the failover: {with:?}"
    );
    assert!(
        without.lost > 0,
        "without WAIT the cut-off writes should be lost, or the run with WAIT proves nothing: {without:?}"
    );
    assert_eq!(with.lost, 0, "with WAIT no acknowledged job may be lost: {with:?}");
    assert!(
        with.failed_batches > 0,
        "with WAIT, enqueues the replica never saw must fail: {with:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_failover_loses_no_acknowledged_job_with_wait() {
    let Some(mut cluster) = tokio::task::block_in_place(|| RedisCluster::start(3, 1)) else {
        return;
    };
    let without = failover(&mut cluster, false).await;
    let with = failover(&mut cluster, true).await;
    wait_kept_every_acknowledged_job("cluster", without, with);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_loses_no_acknowledged_job_with_wait() {
    let Some(mut set) = tokio::task::block_in_place(RedisSentinels::start) else {
        return;
    };
    let without = failover(&mut set, false).await;
    let with = failover(&mut set, true).await;
    wait_kept_every_acknowledged_job("sentinel", without, with);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_a_queues_slot_while_workers_run_loses_nothing_and_strands_nothing() {
    let Some(cluster) = tokio::task::block_in_place(|| RedisCluster::start(3, 0)) else {
        return;
    };
    let queue = demo_queue();
    let broker = Arc::new(RedisBroker::connect(cluster.url()).await.unwrap());
    let runs = Runs::default();
    let worker = worker(broker.clone(), &runs);
    let running = run(&worker);
    let producer = Producer::start(broker.clone(), queue.clone(), Duration::from_millis(100));
    producer.wait_for_more(100, "jobs acknowledged before the move").await;

    let slot = RedisCluster::slot(&format!("{{{queue}}}"));
    let from = cluster.master_of_slot(slot).unwrap();
    let to = (from + 1) % 3;
    tokio::task::block_in_place(|| cluster.move_slot(slot, from, to));
    assert_eq!(cluster.master_of_slot(slot), Some(to));
    producer.wait_for_more(100, "jobs acknowledged after the move").await;
    let after = runs.ran().len();
    let (acknowledged, failed_batches) = producer.finish().await;
    eventually("the queue drained", Duration::from_secs(30), || {
        drained(&broker, std::slice::from_ref(&queue))
    })
    .await;
    assert!(runs.ran().len() > after, "the worker kept running jobs after the move");
    stop(vec![running]).await;

    let ran = runs.ran();
    let lost = acknowledged.iter().filter(|id| !ran.contains(id)).count();
    eprintln!(
        "slot move: {} acknowledged, {lost} lost, {failed_batches} failed batches",
        acknowledged.len()
    );
    assert_eq!(lost, 0, "acknowledged jobs lost in the slot move");
    assert_eq!(failed_batches, 0, "an enqueue failed during the slot move");
    assert_eq!(worker.stats().broker_errors, 0, "a broker error reached the worker");
}
