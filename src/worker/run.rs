//! Running: turns one reservation into how its attempt ended, by checking
//! the job and calling its handler under the job timeout.

use std::{
    any::Any,
    future::{poll_fn, Future},
    panic::AssertUnwindSafe,
    pin::pin,
    sync::{atomic::Ordering, Arc},
    task::Poll,
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::FutureExt;

use super::{shutdown::Signal, Shared};
use crate::{
    broker::history::LatencyRecorder,
    envelope::JobEnvelope,
    error::Error,
    handler::{CallError, HandlerError, JobContext},
};

/// How an attempt ended; settling turns it into a broker call.
pub(super) enum Ended {
    /// The handler finished the job.
    Succeeded,
    /// The handler did not finish; its error says what it wants next. A
    /// panic or a timeout reads as [`HandlerError::Retry`].
    Failed(HandlerError),
    /// The job cannot run as it is (unknown kind, a payload its schema
    /// refuses or that does not decode): dead-letter it now with this
    /// reason, without retries.
    Refused(String),
    /// Shutdown ran out of time: release the job without counting an attempt.
    Aborted,
    /// An operator cancelled the job while it ran and the handler did not
    /// finish it: dead-letter it as cancelled, without retries.
    Cancelled,
}

/// Runs one queue's jobs.
pub(super) struct Runner {
    pub(super) shared: Arc<Shared>,
    /// A handler running longer fails its attempt.
    pub(super) job_timeout: Duration,
    /// Start latencies (due to started) measured since the last history
    /// sample.
    pub(super) latency: Arc<LatencyRecorder>,
}

impl Runner {
    /// Checks the job and runs its handler; calls `on_wait` the first time
    /// the handler has to wait, so another slot can take the next job.
    pub(super) async fn run(
        &self,
        envelope: &JobEnvelope,
        started_at: DateTime<Utc>,
        ctx: &mut JobContext,
        on_wait: impl FnOnce(),
        abort: &mut Signal,
    ) -> Ended {
        let shared = &self.shared;
        let Some(registered) = shared.handlers.get(&envelope.kind) else {
            return Ended::Refused(format!(
                "unknown job kind `{}`: no handler is registered for it on queue `{}`; deploy a worker that handles it, then retry the job from the dead-letter queue",
                envelope.kind, envelope.queue
            ));
        };
        // The size limit was checked at enqueue (and by the broker); the
        // depth and the schema are checked here, parsing the text once.
        let parsed = match registered.schema.check_payload(&envelope.payload) {
            Ok(parsed) => parsed,
            Err(e) => return Ended::Refused(refusal(&e)),
        };

        ctx.id = envelope.id;
        ctx.kind.clear();
        ctx.kind.push_str(&envelope.kind);
        if ctx.queue != envelope.queue {
            ctx.queue = envelope.queue.clone();
        }
        ctx.attempt = envelope.attempt;
        ctx.enqueued_at = envelope.enqueued_at;
        ctx.started_at = started_at;
        let ctx: &JobContext = ctx;
        let ended = self.call(registered, envelope, parsed, ctx, on_wait, abort).await;
        // A handler that gave up after a cancel (or ran out of time, or
        // panicked) ends as cancelled; one that finished has finished.
        match ended {
            Ended::Failed(_) if ctx.is_cancelled() => Ended::Cancelled,
            ended => ended,
        }
    }

    /// Calls the handler under the job timeout, with the payload's parse
    /// from the schema check (`None` when the check needed none).
    async fn call(
        &self,
        registered: &super::Registered,
        envelope: &JobEnvelope,
        parsed: Option<serde_json::Value>,
        ctx: &JobContext,
        on_wait: impl FnOnce(),
        abort: &mut Signal,
    ) -> Ended {
        let shared = &self.shared;
        // The call itself is inside the caught future: decoding the payload
        // runs in it, and so does any work a handler does before its first `.await`.
        let call =
            AssertUnwindSafe(async { registered.handler.call(&envelope.payload, parsed, ctx).await }).catch_unwind();
        let deadline = tokio::time::Instant::now() + self.job_timeout;
        let timed = attempt(call, deadline, on_wait);
        tokio::select! {
            biased;
            result = timed => match result {
                Ok(Ok(Ok(()))) => Ended::Succeeded,
                Ok(Ok(Err(CallError::Handler(e)))) => Ended::Failed(e),
                Ok(Ok(Err(CallError::Decode(reason)))) => Ended::Refused(reason),
                Ok(Err(panic)) => {
                    shared.counters.panicked.fetch_add(1, Ordering::Relaxed);
                    Ended::Failed(HandlerError::retry(format!("handler panicked: {}", panic_message(&*panic))))
                }
                Err(TimedOut) => {
                    shared.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    Ended::Failed(HandlerError::retry(format!("timed out after {:?}", self.job_timeout)))
                }
            },
            _ = abort.raised() => Ended::Aborted,
        }
    }
}

/// The dead-letter reason for a stored payload its kind's schema refuses.
/// It was enqueued (by a producer that did not validate it), so the fix is
/// on the producer's side; the reason names the path and the rule only.
fn refusal(e: &Error) -> String {
    match e {
        Error::InvalidPayload { kind, path, rule, .. } => format!(
            "payload refused at reservation: the `{kind}` schema rejects the value at `{}` (schema rule `{rule}`); \
             the producer enqueued it without validating: fix the producer, then retry or delete this job",
            if path.is_empty() { "/" } else { path }
        ),
        other => format!("payload refused at reservation: {other}"),
    }
}

/// The job's handler ran past its deadline.
struct TimedOut;

/// Runs a handler's future until `deadline`, calling `on_wait` the first
/// time it has to wait.
///
/// The timer is armed only then: a job that finishes in its first poll
/// costs no timer entry. A job whose first poll alone outlasts its timeout
/// still times out, at its first `.await` (a future can only be
/// interrupted there).
async fn attempt<F: Future>(
    run: F,
    deadline: tokio::time::Instant,
    on_wait: impl FnOnce(),
) -> Result<F::Output, TimedOut> {
    let mut run = pin!(run);
    let mut timer = pin!(None::<tokio::time::Sleep>);
    let mut on_wait = Some(on_wait);
    poll_fn(|cx| {
        if let Poll::Ready(output) = run.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if let Some(on_wait) = on_wait.take() {
            on_wait();
            timer.set(Some(tokio::time::sleep_until(deadline)));
        }
        match timer.as_mut().as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(TimedOut)),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Runs `future`, calling `on_wait` the first time it has to wait.
pub(super) async fn on_first_wait<F: Future>(future: F, on_wait: impl FnOnce()) -> F::Output {
    let mut future = pin!(future);
    let mut on_wait = Some(on_wait);
    poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if poll.is_pending() {
            if let Some(on_wait) = on_wait.take() {
                on_wait();
            }
        }
        poll
    })
    .await
}

/// The text of a caught panic.
pub(super) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}
