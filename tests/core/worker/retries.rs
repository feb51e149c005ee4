//! Failed attempts: backoff, permanent errors, retry-after, per-kind
//! policies, snoozes, and jobs retried from the dead-letter queue.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use flagship_worker::{testing::TestWorker, DeadFilter, Job, JobOutcome, QueueConfig, ReserveRequest, RetryPolicy};

use super::{queue, scripted, seen_so_far, task, Behaviour, Task};

/// Milliseconds between consecutive times.
fn gaps_ms(times: impl IntoIterator<Item = chrono::DateTime<chrono::Utc>>) -> Vec<i64> {
    let times: Vec<_> = times.into_iter().collect();
    times.windows(2).map(|w| (w[1] - w[0]).num_milliseconds()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_job_that_always_fails_is_tried_six_times_with_exact_backoff_then_dead_lettered() {
    let (handler, mut seen) = scripted(|_, _| Behaviour::Fail);
    let worker = TestWorker::new(|w| w.handler(handler)).unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();

    let ran = worker.run_until_empty().await.unwrap();
    let outcomes: Vec<_> = ran.iter().map(|r| r.outcome.unwrap()).collect();
    assert_eq!(outcomes[..5], [JobOutcome::Retried; 5]);
    assert_eq!(outcomes[5..], [JobOutcome::DeadLettered], "no seventh attempt");
    let runs = seen_so_far(&mut seen);
    assert_eq!(runs.iter().map(|r| r.attempt).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(gaps_ms(runs.iter().map(|r| r.at)), [1_000, 2_000, 4_000, 8_000, 16_000]);

    let page = worker
        .backend()
        .list_dead(&DeadFilter::queue(queue()), None, 10)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 1);
    let dead = &page.jobs[0];
    assert_eq!(dead.attempts.len(), 6);
    let recorded: Vec<_> = dead
        .attempts
        .windows(2)
        .map(|w| (w[1].started_at - w[0].finished_at).num_milliseconds())
        .collect();
    assert_eq!(recorded, [1_000, 2_000, 4_000, 8_000, 16_000]);
    assert!(dead
        .attempts
        .iter()
        .all(|a| a.error.as_deref().is_some_and(|e| e.contains("failed on attempt"))));
    let reason = dead.dead_letter_reason.as_deref().unwrap();
    assert!(reason.contains("retries exhausted after 6 attempts"), "{reason}");
    let stats = worker.stats();
    assert_eq!(
        (stats.started, stats.failed, stats.retried, stats.dead_lettered),
        (6, 6, 5, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_dead_letter_at_once_and_retry_after_waits_as_told() {
    let (handler, mut seen) = scripted(|job, attempt| match (job.n, attempt) {
        (1, _) => Behaviour::FailPermanently,
        (2, 0) => Behaviour::FailAfter(Duration::from_secs(42)),
        _ => Behaviour::Succeed,
    });
    let worker = TestWorker::new(|w| w.handler(handler)).unwrap();
    let client = worker.client();
    let permanent = client.enqueue(&task(1)).await.unwrap().id();
    client.enqueue(&task(2)).await.unwrap();

    assert_eq!(worker.run_until_empty().await.unwrap().len(), 3);
    let job2 = seen_so_far(&mut seen).into_iter().filter(|s| s.job.n == 2);
    assert_eq!(gaps_ms(job2.map(|s| s.at)), [42_000]);
    let dead = worker.backend().get_dead(&queue(), permanent).await.unwrap().unwrap();
    assert_eq!(dead.attempts.len(), 1);
    assert!(dead.dead_letter_reason.unwrap().contains("hopeless"));
}

#[tokio::test(start_paused = true)]
async fn kind_policies_override_the_queue_policy() {
    let (handler, mut seen) = scripted(|_, _| Behaviour::Fail);
    let worker = TestWorker::new(|w| {
        w.handler(handler)
            .retry_policy_for::<Task>(RetryPolicy::linear(2, Duration::from_secs(3)))
    })
    .unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();

    worker.run_until_empty().await.unwrap();
    assert_eq!(gaps_ms(seen_so_far(&mut seen).iter().map(|s| s.at)), [3_000, 6_000]);
    assert_eq!(
        worker.backend().count_dead(&DeadFilter::queue(queue())).await.unwrap(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_job_retried_from_the_dlq_runs_again_with_its_history() {
    let calls = AtomicUsize::new(0);
    let (handler, _seen) = scripted(move |_, _| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Behaviour::FailPermanently
        } else {
            Behaviour::Succeed
        }
    });
    let worker = TestWorker::new(|w| w.handler(handler)).unwrap();
    let id = worker.client().enqueue(&task(1)).await.unwrap().id();

    let first = worker.run_next(Task::QUEUE).await.unwrap().unwrap();
    assert_eq!(first.outcome, Some(JobOutcome::DeadLettered));
    assert!(worker.backend().retry_dead(&queue(), id).await.unwrap());
    let rerun = worker
        .run_next(Task::QUEUE)
        .await
        .unwrap()
        .expect("the retried job is ready");
    assert_eq!(rerun.attempt, 0, "a DLQ retry starts a fresh round of attempts");
    assert_eq!(rerun.outcome, Some(JobOutcome::Completed));
    let stats = worker.backend().stats(&queue()).await.unwrap();
    assert_eq!((stats.completed, stats.dead), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_snoozed_job_runs_again_after_exactly_its_delay_without_using_an_attempt() {
    let delays = [Duration::from_secs(30), Duration::from_secs(90)];
    let calls = AtomicUsize::new(0);
    let (handler, mut seen) = scripted(move |_, _| match delays.get(calls.fetch_add(1, Ordering::SeqCst)) {
        Some(&delay) => Behaviour::Snooze(delay),
        None => Behaviour::Succeed,
    });
    // No retries at all: a snooze that used an attempt would dead-letter the job.
    let worker = TestWorker::new(|w| {
        w.queue(QueueConfig::new(Task::QUEUE).unwrap().retry_policy(RetryPolicy::none()))
            .handler(handler)
    })
    .unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();

    for delay in delays {
        let ran = worker.run_next(Task::QUEUE).await.unwrap().expect("the job is ready");
        assert_eq!((ran.attempt, ran.outcome), (0, Some(JobOutcome::Snoozed)));
        tokio::time::advance(delay - Duration::from_millis(1)).await;
        assert_eq!(
            worker.run_next(Task::QUEUE).await.unwrap(),
            None,
            "not before the snooze ends"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    // Twice snoozed, the job is still on its first attempt, with no history.
    let broker = worker.backend();
    let request = ReserveRequest::new(1, Duration::from_secs(30), Duration::ZERO);
    let peeked = broker.reserve(&queue(), request).await.unwrap().remove(0);
    assert_eq!((peeked.envelope.attempt, peeked.envelope.attempts.len()), (0, 0));
    broker.release(&[peeked.lease]).await.unwrap();

    let last = worker.run_next(Task::QUEUE).await.unwrap().expect("the job is ready");
    assert_eq!((last.attempt, last.outcome), (0, Some(JobOutcome::Completed)));
    let runs = seen_so_far(&mut seen);
    assert_eq!(runs.iter().map(|r| r.attempt).collect::<Vec<_>>(), [0, 0, 0]);
    assert_eq!(gaps_ms(runs.iter().map(|r| r.at)), [30_000, 90_000]);
    let stats = worker.stats();
    assert_eq!(
        (
            stats.snoozed,
            stats.failed,
            stats.retried,
            stats.dead_lettered,
            stats.completed
        ),
        (2, 0, 0, 0, 1)
    );
    assert_eq!(broker.stats(&queue()).await.unwrap().completed, 1);
}

/// A handler asking to wait longer than any date can say (a delay taken from
/// an upstream's header) neither panics the broker nor stalls the queue:
/// the delay is capped at `retry::MAX_DELAY` and the next job runs.
#[tokio::test(start_paused = true)]
async fn an_absurd_snooze_is_capped_and_the_queue_goes_on() {
    use std::sync::Arc;

    use flagship_worker::{retry::MAX_DELAY, Broker, MemoryBroker, Worker};

    let (handler, mut seen) = scripted(|job, _| match job.n {
        0 => Behaviour::Snooze(Duration::from_secs(1 << 43)),
        _ => Behaviour::Succeed,
    });
    let broker = Arc::new(MemoryBroker::new());
    let worker = Worker::builder(broker.clone())
        .queue(QueueConfig::new(Task::QUEUE).unwrap().concurrency(1))
        .handler(handler)
        .build()
        .unwrap();
    worker.client().enqueue(&task(0)).await.unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();
    super::run_until_stats(&worker, &*broker, &queue(), |s| s.completed == 1).await;

    let stats = broker.stats(&queue()).await.unwrap();
    assert_eq!((stats.scheduled, stats.active, stats.completed), (1, 0, 1), "{stats:?}");
    assert_eq!(worker.stats().snoozed, 1);
    let first = super::next(&mut seen).await;
    tokio::time::advance(MAX_DELAY).await;
    let request = ReserveRequest::new(1, Duration::from_secs(30), Duration::ZERO);
    let again = broker.reserve(&queue(), request).await.unwrap();
    assert_eq!(again.len(), 1, "the snoozed job is due after the longest delay");
    assert!(again[0].envelope.run_at <= first.at + chrono::TimeDelta::from_std(MAX_DELAY).unwrap());
}
