//! Handlers: the code that runs a job, and what it tells the worker.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    cancellation::Cancellation,
    client::Client,
    envelope::JobEnvelope,
    error::BoxError,
    job::{Job, JobId, QueueName},
    payload::Payload,
};

/// Runs jobs of one type.
///
/// Delivery is at-least-once: a job can run more than once (a worker
/// crashed after doing the work but before acknowledging it), so handlers
/// must be idempotent.
///
/// # Contract
///
/// - `handle` MUST return `Ok(())` only when the job's work is done.
/// - It SHOULD return [`HandlerError::Permanent`] when retrying cannot help
///   (bad data, a refused request), [`HandlerError::Retry`] or
///   [`HandlerError::RetryAfter`] when it might, and
///   [`HandlerError::Snooze`] when the job is not ready to run yet (a
///   rate-limited upstream, a resource still being prepared).
/// - It MAY panic or run past the queue's job timeout: both count as a
///   retryable failure and the worker keeps running.
///
/// ```
/// use async_trait::async_trait;
/// use flagship_worker::{Handler, HandlerError, Job, JobContext};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, JsonSchema)] struct SendWelcome { user_id: u64 }
/// # impl Job for SendWelcome { const KIND: &'static str = "send-welcome"; const QUEUE: &'static str = "emails"; }
///
/// struct Welcomer;
///
/// #[async_trait]
/// impl Handler for Welcomer {
///     type Job = SendWelcome;
///
///     async fn handle(&self, job: SendWelcome, ctx: &JobContext) -> Result<(), HandlerError> {
///         if job.user_id == 0 {
///             return Err(HandlerError::permanent("user 0 does not exist"));
///         }
///         tracing::info!(attempt = ctx.attempt, "welcoming user {}", job.user_id);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The job type this handler runs.
    type Job: Job;

    /// Runs one job.
    async fn handle(&self, job: Self::Job, ctx: &JobContext) -> Result<(), HandlerError>;
}

/// A shared handler is a handler: register an `Arc` and keep a clone to
/// inspect or reconfigure it while the worker runs.
///
/// Written out rather than through `#[async_trait]`, which would box a
/// second future around the inner handler's on every job.
impl<H: Handler> Handler for Arc<H> {
    type Job = H::Job;

    fn handle<'life0, 'life1, 'async_trait>(
        &'life0 self,
        job: Self::Job,
        ctx: &'life1 JobContext,
    ) -> HandlerFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        (**self).handle(job, ctx)
    }
}

/// What a handler that did not finish tells the worker to do.
///
/// Any `std::error::Error` converts into [`HandlerError::Retry`] with `?`.
/// The worker turns it into a broker call with
/// [`RetryPolicy::decide`](crate::RetryPolicy::decide).
///
/// ```
/// use std::time::Duration;
/// use flagship_worker::HandlerError;
///
/// // The upstream said "too many requests, come back in a minute": wait
/// // without using up one of the job's retries.
/// let later = HandlerError::snooze(Duration::from_secs(60));
/// assert!(later.error().is_none());
/// ```
#[non_exhaustive]
pub enum HandlerError {
    /// A transient failure: retry according to the retry policy.
    Retry(BoxError),
    /// A transient failure and the callee said when to come back (an HTTP
    /// 429 with Retry-After): retry after this delay. Uses an attempt.
    RetryAfter(Duration, BoxError),
    /// Not a failure: run the job again after this delay without using an
    /// attempt and without recording one in its history. A handler that
    /// always snoozes keeps its job forever: bound it yourself (for
    /// example on [`JobContext::enqueued_at`]).
    Snooze(Duration),
    /// Retrying cannot help: dead-letter the job now.
    Permanent(BoxError),
}

impl HandlerError {
    /// A transient failure.
    pub fn retry(error: impl Into<BoxError>) -> Self {
        HandlerError::Retry(error.into())
    }

    /// A transient failure to retry after `delay`.
    pub fn retry_after(delay: Duration, error: impl Into<BoxError>) -> Self {
        HandlerError::RetryAfter(delay, error.into())
    }

    /// Run the job again after `delay` without using an attempt.
    pub fn snooze(delay: Duration) -> Self {
        HandlerError::Snooze(delay)
    }

    /// A permanent failure: dead-letter the job.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        HandlerError::Permanent(error.into())
    }

    /// The underlying error; `None` for a snooze, which is not a failure.
    pub fn error(&self) -> Option<&BoxError> {
        match self {
            HandlerError::Retry(e) | HandlerError::RetryAfter(_, e) | HandlerError::Permanent(e) => Some(e),
            HandlerError::Snooze(_) => None,
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::Retry(Box::new(error))
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Retry(e) => f.debug_tuple("Retry").field(e).finish(),
            HandlerError::RetryAfter(d, e) => f.debug_tuple("RetryAfter").field(d).field(e).finish(),
            HandlerError::Snooze(d) => f.debug_tuple("Snooze").field(d).finish(),
            HandlerError::Permanent(e) => f.debug_tuple("Permanent").field(e).finish(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Retry(e) => write!(f, "{e}"),
            HandlerError::RetryAfter(d, e) => write!(f, "{e} (retry after {d:?})"),
            HandlerError::Snooze(d) => write!(f, "snoozed for {d:?}"),
            HandlerError::Permanent(e) => write!(f, "{e} (permanent)"),
        }
    }
}

/// What a handler knows about the job it runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobContext {
    /// The job's id.
    pub id: JobId,
    /// The job's kind.
    pub kind: String,
    /// The job's queue.
    pub queue: QueueName,
    /// Failed attempts before this one (0 on the first run).
    pub attempt: u32,
    /// When the job was first enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When this attempt started.
    pub started_at: DateTime<Utc>,
    /// The worker running the job.
    pub worker_id: Arc<str>,
    /// A client on the same broker and registry, to enqueue follow-up jobs.
    pub client: Client,
    /// Raised when an operator cancels the job while it runs; see
    /// [`Cancellation`] and [`is_cancelled`](JobContext::is_cancelled).
    pub cancellation: Cancellation,
}

impl JobContext {
    /// The context of the first attempt of `envelope`, as a worker named
    /// `worker_id` would give it, starting at `started_at`. Workers build
    /// contexts themselves; this is for calling a handler directly, e.g.
    /// in its unit tests.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flagship_worker::{Client, JobContext, JobEnvelope, MemoryBroker, QueueName};
    ///
    /// let now = chrono::Utc::now();
    /// let envelope = JobEnvelope::new("send-welcome", QueueName::new("emails")?, serde_json::json!({}), now);
    /// let ctx = JobContext::new(&envelope, "test-worker", now, Client::new(Arc::new(MemoryBroker::new())));
    /// assert_eq!((ctx.kind.as_str(), ctx.attempt), ("send-welcome", 0));
    /// # Ok::<_, flagship_worker::Error>(())
    /// ```
    pub fn new(envelope: &JobEnvelope, worker_id: &str, started_at: DateTime<Utc>, client: Client) -> Self {
        JobContext {
            id: envelope.id,
            kind: envelope.kind.clone(),
            queue: envelope.queue.clone(),
            attempt: envelope.attempt,
            enqueued_at: envelope.enqueued_at,
            started_at,
            worker_id: worker_id.into(),
            client,
            cancellation: Cancellation::new(),
        }
    }

    /// Whether an operator cancelled the job
    /// ([`JobControl::cancel`](crate::broker::JobControl::cancel)). A
    /// handler that sees it should stop and return an error: the job then
    /// goes to the dead-letter queue as cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }

    /// Completes once an operator cancels the job: race long work against
    /// it (`tokio::select!`). See [`Cancellation`].
    pub async fn cancelled(&self) {
        self.cancellation.cancelled().await
    }
}

/// The future a handler returns, boxed (as `async_trait` boxes it).
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// A handler with its job type erased, so the worker can hold many.
pub(crate) trait ErasedHandler: Send + Sync {
    /// Decodes the payload and starts the handler. Not `async` itself, so
    /// the handler's own boxed future is the only allocation per job.
    /// `parsed` is the payload as checked against its schema, if it had to
    /// be parsed for that: the job is then built from it (its strings moved,
    /// not copied), otherwise straight from the text.
    fn call<'a>(&'a self, payload: &Payload, parsed: Option<Value>, ctx: &'a JobContext) -> Call<'a>;
}

/// Why an erased call did not finish its job.
pub(crate) enum CallError {
    /// The handler answered with an error.
    Handler(HandlerError),
    /// The payload passed its schema but does not decode as the handler's
    /// type; the reason to dead-letter it with.
    Decode(String),
}

/// A started handler, or the reason its payload did not decode.
pub(crate) enum Call<'a> {
    Run(HandlerFuture<'a>),
    Undecodable(Option<String>),
}

impl Future for Call<'_> {
    type Output = Result<(), CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Call::Run(run) => run.as_mut().poll(cx).map(|r| r.map_err(CallError::Handler)),
            Call::Undecodable(reason) => {
                std::task::Poll::Ready(Err(CallError::Decode(reason.take().unwrap_or_default())))
            }
        }
    }
}

pub(crate) struct Typed<H>(pub(crate) H);

impl<H: Handler> ErasedHandler for Typed<H> {
    fn call<'a>(&'a self, payload: &Payload, parsed: Option<Value>, ctx: &'a JobContext) -> Call<'a> {
        let job = match parsed {
            Some(value) => serde_json::from_value::<H::Job>(value),
            None => payload.decode::<H::Job>(),
        };
        match job {
            Ok(job) => Call::Run(self.0.handle(job, ctx)),
            Err(e) => Call::Undecodable(Some(undecodable(H::Job::KIND, &e))),
        }
    }
}

/// The dead-letter reason for a payload that passed its schema but does
/// not decode as the handler's type. serde's message names the field for a
/// missing or duplicate one; its other messages can quote the value, which
/// may be a secret, so they are left out.
fn undecodable(kind: &str, e: &serde_json::Error) -> String {
    let message = e.to_string();
    let detail = if message.starts_with("missing field") || message.starts_with("duplicate field") {
        format!(" ({message})")
    } else {
        String::new()
    };
    format!(
        "payload passed the `{kind}` schema but does not decode as the handler's type{detail}; \
         the schema and the type disagree: fix one of them, then retry the job from the dead-letter queue"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_reasons_never_quote_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Wants {
            n: u32,
        }
        let e = serde_json::from_value::<Wants>(serde_json::json!({ "n": "CANARY-secret" })).unwrap_err();
        assert!(e.to_string().contains("CANARY"), "serde quotes the value: {e}");
        let reason = undecodable("wants", &e);
        assert!(!reason.contains("CANARY"), "{reason}");
        let missing = serde_json::from_value::<Wants>(serde_json::json!({})).unwrap_err();
        assert!(undecodable("wants", &missing).contains("missing field `n`"));
    }
}
