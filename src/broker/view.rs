//! How operators see one job: the same words in the admin API, the
//! command-line tool and the dashboard (`kind`, not the wire format's
//! `type`; one `reason`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::control::{ActiveLease, LiveJob};
use crate::{
    envelope::{AttemptRecord, JobEnvelope},
    job::{JobId, QueueName},
    payload::Payload,
};

/// One job with its payload and every attempt, as shown to operators.
///
/// Built from the stored [`JobEnvelope`] (a dead job; a live one comes
/// from its [`LiveJob`], with its state and lease); unlike the envelope (the wire
/// format, whose kind field is `type`), it names the kind `kind`, like
/// every listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobDetail {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: QueueName,
    /// Its kind.
    pub kind: String,
    /// `ready`, `scheduled`, `active` or `dead`.
    pub state: String,
    /// Its priority in its queue (higher runs first).
    pub priority: i8,
    /// Its payload.
    pub payload: Payload,
    /// Its idempotency key, if it has one.
    pub idempotency_key: Option<String>,
    /// Failed attempts so far (0 before the first retry).
    pub attempt: u32,
    /// The job's own retry limit, when it overrides its queue's policy.
    pub max_retries: Option<u32>,
    /// When it was first enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When it runs (or ran) next.
    pub run_at: DateTime<Utc>,
    /// When it was dead-lettered, if it is dead.
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// Why it was dead-lettered, if it is dead.
    pub reason: Option<String>,
    /// Every attempt, oldest first, each with its own error.
    pub attempts: Vec<AttemptRecord>,
    /// For an active job: its worker, when the attempt started, the lease deadline.
    pub lease: Option<ActiveLease>,
    /// Whether an operator asked to cancel it while it was active.
    pub cancel_requested: bool,
}

impl From<&LiveJob> for JobDetail {
    fn from(job: &LiveJob) -> Self {
        JobDetail {
            state: job.state.to_string(),
            lease: job.lease.clone(),
            cancel_requested: job.cancel_requested,
            ..JobDetail::from(&job.envelope)
        }
    }
}

impl From<&JobEnvelope> for JobDetail {
    fn from(job: &JobEnvelope) -> Self {
        JobDetail {
            id: job.id,
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            state: "dead".to_owned(),
            priority: job.priority,
            payload: job.payload.clone(),
            idempotency_key: job.idempotency_key.clone(),
            attempt: job.attempt,
            max_retries: job.max_retries,
            enqueued_at: job.enqueued_at,
            run_at: job.run_at,
            dead_lettered_at: job.dead_lettered_at,
            reason: job.dead_letter_reason.clone(),
            attempts: job.attempts.clone(),
            lease: None,
            cancel_requested: false,
        }
    }
}
