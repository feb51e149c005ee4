//! Prometheus metrics: per-kind counters and durations from the worker,
//! queue depth from the broker at each scrape.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::{
    broker::QueueStats,
    job::QueueName,
    worker::{FinishedJob, JobObserver, JobOutcome, WorkerStats},
};

/// Handler duration histogram buckets, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Recorded durations are folded into the histogram every this many jobs
/// (and at each scrape), so memory stays bounded when nobody scrapes.
const UPKEEP_EVERY: u64 = 1024;

const DURATION: &str = "flagship_job_duration_seconds";

/// The metrics behind `GET /metrics`, in their own Prometheus recorder (the
/// process's global `metrics` recorder is left alone).
///
/// Pass it to [`WorkerBuilder::observer`](crate::WorkerBuilder::observer)
/// (through [`observer`](AdminMetrics::observer)) and to
/// [`AdminBuilder::metrics`](super::AdminBuilder::metrics). Cloning shares
/// the recorder.
///
/// | metric | labels | meaning |
/// |---|---|---|
/// | `flagship_jobs_processed_total` | queue, kind | attempts finished by this worker, any outcome |
/// | `flagship_jobs_completed_total` | queue, kind | jobs that succeeded |
/// | `flagship_jobs_failed_total` | queue, kind | attempts that failed (retried or dead-lettered) |
/// | `flagship_jobs_retried_total` | queue, kind | failed attempts scheduled to run again |
/// | `flagship_jobs_dead_lettered_total` | queue, kind | jobs moved to the dead-letter queue |
/// | `flagship_job_duration_seconds` | queue, kind, outcome | histogram of handler run time |
/// | `flagship_queue_depth` | queue, state (`ready`, `scheduled`, `active`, `dead`) | jobs per state, read from the broker at scrape time |
/// | `flagship_queue_oldest_ready_age_seconds` | queue | how long the oldest ready job has waited (0 when none) |
/// | `flagship_queue_jobs_completed_total`, `_retried_total`, `_dead_lettered_total` | queue | the broker's own counters, across all workers |
/// | `flagship_queue_jobs_dropped_total`, `_restored_total` | queue | records another program wrote into the broker: ids without a job, dropped; jobs in no state, put back ([`QueueStats`]) |
/// | `flagship_worker_*_total` | worker | the worker's [`WorkerStats`] (started, panicked, timed out, recovered, released, lease lost, broker errors) |
#[derive(Clone)]
pub struct AdminMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Jobs observed, to run upkeep every [`UPKEEP_EVERY`].
    observed: AtomicU64,
}

impl fmt::Debug for AdminMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminMetrics")
            .field("observed", &self.inner.observed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for AdminMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AdminMetrics {
    /// A fresh recorder with no samples.
    pub fn new() -> Self {
        let recorder =
            match PrometheusBuilder::new().set_buckets_for_metric(Matcher::Full(DURATION.into()), DURATION_BUCKETS) {
                Ok(with_buckets) => with_buckets.build_recorder(),
                // Only refused for empty buckets; durations then render as a summary.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
        let handle = recorder.handle();
        let metrics = AdminMetrics {
            inner: Arc::new(Inner {
                recorder,
                handle,
                observed: AtomicU64::new(0),
            }),
        };
        metrics.with_recorder(describe_all);
        metrics
    }

    /// This recorder as a worker observer.
    pub fn observer(&self) -> Arc<dyn JobObserver> {
        Arc::new(self.clone())
    }

    /// The metrics in Prometheus text format, as recorded so far.
    pub fn render(&self) -> String {
        self.inner.handle.run_upkeep();
        self.inner.handle.render()
    }

    fn with_recorder<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.inner.recorder, f)
    }

    /// Sets the broker-side gauges and counters from a fresh read.
    pub(super) fn record_queues(&self, queues: &[(QueueName, QueueStats)]) {
        self.with_recorder(|| {
            for (queue, stats) in queues {
                let q = queue.to_string();
                for (state, n) in [
                    ("ready", stats.ready),
                    ("scheduled", stats.scheduled),
                    ("active", stats.active),
                    ("dead", stats.dead),
                ] {
                    gauge!("flagship_queue_depth", "queue" => q.clone(), "state" => state).set(n as f64);
                }
                let age = stats.oldest_ready_age_ms.unwrap_or(0) as f64 / 1000.0;
                gauge!("flagship_queue_oldest_ready_age_seconds", "queue" => q.clone()).set(age);
                counter!("flagship_queue_jobs_completed_total", "queue" => q.clone()).absolute(stats.completed);
                counter!("flagship_queue_jobs_retried_total", "queue" => q.clone()).absolute(stats.retried);
                counter!("flagship_queue_jobs_dead_lettered_total", "queue" => q.clone()).absolute(stats.dead_lettered);
                counter!("flagship_queue_jobs_dropped_total", "queue" => q.clone()).absolute(stats.dropped);
                counter!("flagship_queue_jobs_restored_total", "queue" => q).absolute(stats.restored);
            }
        });
    }

    /// Sets the worker's counters.
    pub(super) fn record_worker(&self, worker: &str, stats: &WorkerStats) {
        let worker = worker.to_owned();
        self.with_recorder(|| {
            for ((name, _), value) in WORKER_COUNTERS.iter().zip([
                stats.started,
                stats.panicked,
                stats.timed_out,
                stats.recovered,
                stats.released,
                stats.lease_lost,
                stats.broker_errors,
            ]) {
                counter!(*name, "worker" => worker.clone()).absolute(value);
            }
        });
    }
}

/// The worker's counters, with their help text, in [`WorkerStats`] order.
const WORKER_COUNTERS: [(&str, &str); 7] = [
    ("flagship_worker_started_total", "Attempts this worker started."),
    (
        "flagship_worker_panicked_total",
        "Handler calls that panicked (counted as retryable failures).",
    ),
    (
        "flagship_worker_timed_out_total",
        "Handler calls stopped by the job timeout.",
    ),
    (
        "flagship_worker_recovered_total",
        "Jobs whose expired lease this worker recovered.",
    ),
    (
        "flagship_worker_released_total",
        "Unstarted jobs handed back to ready at shutdown.",
    ),
    (
        "flagship_worker_lease_lost_total",
        "Jobs whose lease was gone when the worker acknowledged them.",
    ),
    ("flagship_worker_broker_errors_total", "Broker calls that failed."),
];

fn describe_all() {
    for (name, help) in WORKER_COUNTERS {
        describe_counter!(name, help);
    }
    describe_counter!(
        "flagship_jobs_processed_total",
        "Attempts finished by this worker, any outcome."
    );
    describe_counter!("flagship_jobs_completed_total", "Jobs that succeeded.");
    describe_counter!(
        "flagship_jobs_failed_total",
        "Attempts that failed (retried or dead-lettered)."
    );
    describe_counter!("flagship_jobs_retried_total", "Failed attempts scheduled to run again.");
    describe_counter!(
        "flagship_jobs_snoozed_total",
        "Attempts whose handler asked to run the job later (not failures)."
    );
    describe_counter!(
        "flagship_jobs_refused_total",
        "Jobs dead-lettered without running: unknown kind, or a payload its schema refuses or that does not decode."
    );
    describe_counter!(
        "flagship_jobs_cancelled_total",
        "Jobs an operator cancelled while they ran, dead-lettered as cancelled."
    );
    describe_counter!(
        "flagship_jobs_dead_lettered_total",
        "Jobs moved to the dead-letter queue."
    );
    describe_histogram!(DURATION, Unit::Seconds, "Handler run time per attempt.");
    describe_gauge!(
        "flagship_queue_depth",
        "Jobs per queue and state, as the broker reports them."
    );
    describe_gauge!(
        "flagship_queue_oldest_ready_age_seconds",
        Unit::Seconds,
        "How long the oldest ready job has waited."
    );
    describe_counter!(
        "flagship_queue_jobs_completed_total",
        "Jobs completed, as counted by the broker."
    );
    describe_counter!(
        "flagship_queue_jobs_retried_total",
        "Attempts scheduled for retry, as counted by the broker."
    );
    describe_counter!(
        "flagship_queue_jobs_dead_lettered_total",
        "Jobs dead-lettered, as counted by the broker."
    );
    describe_counter!(
        "flagship_queue_jobs_dropped_total",
        "Ids without a stored job that the broker dropped (written by another program)."
    );
    describe_counter!(
        "flagship_queue_jobs_restored_total",
        "Jobs found stored in no state and put back to ready by the broker."
    );
}

impl JobObserver for AdminMetrics {
    fn on_job_finished(&self, job: &FinishedJob<'_>) {
        let queue = job.queue.to_string();
        let kind = job.kind.to_owned();
        self.with_recorder(|| {
            let labels = [("queue", queue), ("kind", kind)];
            counter!("flagship_jobs_processed_total", &labels).increment(1);
            match job.outcome {
                JobOutcome::Completed => counter!("flagship_jobs_completed_total", &labels).increment(1),
                JobOutcome::Retried => {
                    counter!("flagship_jobs_failed_total", &labels).increment(1);
                    counter!("flagship_jobs_retried_total", &labels).increment(1);
                }
                JobOutcome::Snoozed => counter!("flagship_jobs_snoozed_total", &labels).increment(1),
                JobOutcome::DeadLettered => {
                    counter!("flagship_jobs_failed_total", &labels).increment(1);
                    counter!("flagship_jobs_dead_lettered_total", &labels).increment(1);
                }
                JobOutcome::Refused => {
                    counter!("flagship_jobs_failed_total", &labels).increment(1);
                    counter!("flagship_jobs_dead_lettered_total", &labels).increment(1);
                    counter!("flagship_jobs_refused_total", &labels).increment(1);
                }
                JobOutcome::Cancelled => {
                    counter!("flagship_jobs_dead_lettered_total", &labels).increment(1);
                    counter!("flagship_jobs_cancelled_total", &labels).increment(1);
                }
            }
            let [(_, queue), (_, kind)] = labels;
            histogram!(DURATION, "queue" => queue, "kind" => kind, "outcome" => job.outcome.as_str())
                .record(job.duration.as_secs_f64());
        });
        if self.inner.observed.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.inner.handle.run_upkeep();
        }
    }
}
