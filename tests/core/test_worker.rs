//! [`TestWorker`] itself: running one job, running until the queues are
//! empty on the paused clock, and asserting what handlers enqueued.

use std::{panic::AssertUnwindSafe, time::Duration};

use async_trait::async_trait;
use flagship_worker::{
    testing::{TestWorker, MAX_TEST_RUNS},
    EnqueueOptions, Handler, HandlerError, Job, JobContext, JobOutcome,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::worker::{scripted, seen_so_far, task, Behaviour, Task};

#[tokio::test(start_paused = true)]
async fn run_next_returns_how_the_job_ended_and_why() {
    let (handler, _seen) = scripted(|job, _| match job.n {
        1 => Behaviour::Fail,
        _ => Behaviour::Succeed,
    });
    let worker = TestWorker::new(|w| w.handler(handler)).unwrap();
    let failing = worker.client().enqueue(&task(1)).await.unwrap().id();

    let ran = worker.run_next(Task::QUEUE).await.unwrap().expect("a job was ready");
    assert_eq!((ran.id, ran.kind.as_str(), ran.attempt), (failing, Task::KIND, 0));
    assert_eq!(ran.outcome, Some(JobOutcome::Retried));
    let error = ran.error.expect("a failed attempt says why");
    assert!(error.contains("failed on attempt 0"), "{error}");
    assert_eq!(
        worker.run_next(Task::QUEUE).await.unwrap(),
        None,
        "the retry waits for its backoff"
    );

    worker.client().enqueue(&task(2)).await.unwrap();
    let ran = worker.run_next(Task::QUEUE).await.unwrap().expect("a job was ready");
    assert_eq!((ran.outcome, ran.error), (Some(JobOutcome::Completed), None));

    let err = worker.run_next("elsewhere").await.unwrap_err().to_string();
    assert!(err.contains("no queue `elsewhere`") && err.contains("tasks"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn run_until_empty_runs_retries_through_their_backoff_on_the_paused_clock() {
    let (handler, mut seen) = scripted(|_, attempt| {
        if attempt < 2 {
            Behaviour::Fail
        } else {
            Behaviour::Succeed
        }
    });
    let worker = TestWorker::new(|w| w.handler(handler)).unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();
    let started = tokio::time::Instant::now();

    let ran = worker.run_until_empty().await.unwrap();
    let runs: Vec<_> = ran.iter().map(|r| (r.attempt, r.outcome)).collect();
    assert_eq!(
        runs,
        [
            (0, Some(JobOutcome::Retried)),
            (1, Some(JobOutcome::Retried)),
            (2, Some(JobOutcome::Completed))
        ]
    );
    // Backoff of 1 s, then 2 s: the clock moved straight to each retry.
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    let at: Vec<_> = seen_so_far(&mut seen).iter().map(|s| s.at).collect();
    assert_eq!(((at[1] - at[0]).num_seconds(), (at[2] - at[1]).num_seconds()), (1, 2));
    assert_eq!(worker.run_until_empty().await.unwrap(), [], "nothing left");
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Notice {
    n: u32,
}

impl Job for Notice {
    const KIND: &'static str = "notice";
    const QUEUE: &'static str = "notices";
}

/// Enqueues a [`Notice`] for each task it runs.
struct Notify;

#[async_trait]
impl Handler for Notify {
    type Job = Task;

    async fn handle(&self, job: Task, ctx: &JobContext) -> Result<(), HandlerError> {
        ctx.client
            .enqueue(&Notice { n: job.n })
            .await
            .map_err(HandlerError::retry)?;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn assert_enqueued_sees_follow_up_jobs_and_names_what_was_enqueued_when_none_matches() {
    let worker = TestWorker::new(|w| w.handler(Notify)).unwrap();
    worker.client().enqueue(&task(7)).await.unwrap();
    worker.run_until_empty().await.unwrap();

    worker.assert_enqueued::<Notice>(|notice| notice.n == 7);
    worker.assert_enqueued::<Task>(|task| task.n == 7);
    let missing = std::panic::catch_unwind(AssertUnwindSafe(|| {
        worker.assert_enqueued::<Notice>(|notice| notice.n == 8);
    }))
    .expect_err("no notice for task 8 was enqueued");
    let message = missing.downcast_ref::<String>().expect("a formatted panic message");
    assert!(message.contains("no `notice` job"), "{message}");
    assert!(message.contains(r#"["task", "notice"]"#), "{message}");
}

#[tokio::test(start_paused = true)]
async fn run_until_empty_gives_up_on_a_job_that_always_snoozes() {
    let (handler, _seen) = scripted(|_, _| Behaviour::Snooze(Duration::from_secs(1)));
    let worker = TestWorker::new(|w| w.handler(handler)).unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();

    // Bounded in virtual time, so a missing limit fails rather than hangs:
    // the limit is reached after MAX_TEST_RUNS seconds, well under a day.
    let err = tokio::time::timeout(Duration::from_secs(24 * 3600), worker.run_until_empty())
        .await
        .expect("run_until_empty gives up instead of running forever")
        .expect_err("a job that always snoozes never empties its queue")
        .to_string();
    assert!(err.contains(&MAX_TEST_RUNS.to_string()), "{err}");
    assert_eq!(worker.stats().snoozed, MAX_TEST_RUNS as u64);
}

#[tokio::test(start_paused = true)]
async fn run_until_empty_runs_delayed_jobs_of_several_queues_in_time_order() {
    let (tasks, _) = scripted(|_, _| Behaviour::Succeed);
    let (notices, _) = crate::worker::succeeding::<Notice>();
    let worker = TestWorker::new(|w| w.handler(tasks).handler(notices)).unwrap();
    let client = worker.client();
    let delay = |secs| EnqueueOptions::new().delay(Duration::from_secs(secs));
    // Once with each queue's job first, whichever queue is looked at first.
    for task_first in [true, false] {
        let (task_delay, notice_delay) = if task_first { (1, 100) } else { (100, 1) };
        let task = client.enqueue_with(&task(1), delay(task_delay)).await.unwrap().id();
        let notice = client
            .enqueue_with(&Notice { n: 1 }, delay(notice_delay))
            .await
            .unwrap()
            .id();
        let ran: Vec<_> = worker
            .run_until_empty()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        let in_time_order = if task_first { [task, notice] } else { [notice, task] };
        assert_eq!(
            ran, in_time_order,
            "the job due in 1 s runs before the one due in 100 s"
        );
    }
}
