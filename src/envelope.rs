//! The wire format: [`JobEnvelope`], its attempt history and enqueue options.
//!
//! The envelope is JSON, versioned by its `v` field, and its JSON Schema is
//! committed at `docs/schemas/envelope.json` so producers in other languages
//! can write jobs that workers accept.

use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// The envelope version this crate writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// The longest error message stored in an [`AttemptRecord`], in bytes.
/// Longer messages are cut at a character boundary and marked `…`.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

/// The furthest in the future a job may be scheduled (about ten years).
pub const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// A job as it travels through a broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "flagship-worker job envelope",
    description = "A job as stored by a broker. Version 1."
)]
#[non_exhaustive]
pub struct JobEnvelope {
    /// Envelope version; always 1 for this format.
    pub v: u32,
    /// Unique job id (UUID v7).
    pub id: JobId,
    /// The job kind, the wire name of its type (`Job::KIND`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The queue the job runs on.
    pub queue: QueueName,
    /// The job's data; must match the kind's JSON Schema.
    pub payload: serde_json::Value,
    /// Optional key that makes enqueue idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Failed attempts since the job was (re-)enqueued: 0 on the first run.
    #[serde(default)]
    pub attempt: u32,
    /// Per-job override of the retry policy's retry count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// When the job was first enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When the job may run next.
    pub run_at: DateTime<Utc>,
    /// Every finished attempt, oldest first. Kept across DLQ retries.
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// When the job was dead-lettered, if it is dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// Why the job was dead-lettered, if it is dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_reason: Option<String>,
}

/// One finished attempt of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptRecord {
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// When the attempt ended (or when its lease was found expired).
    pub finished_at: DateTime<Utc>,
    /// Why it failed, at most [`MAX_ERROR_BYTES`]; `None` for a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The worker that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl AttemptRecord {
    /// A failed attempt; the message is truncated to [`MAX_ERROR_BYTES`].
    pub fn failed(
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        error: impl Into<String>,
        worker: Option<String>,
    ) -> Self {
        AttemptRecord {
            started_at,
            finished_at,
            error: Some(truncate_error(error.into())),
            worker,
        }
    }
}

/// Cuts `message` to at most [`MAX_ERROR_BYTES`] on a character boundary.
pub fn truncate_error(mut message: String) -> String {
    if message.len() > MAX_ERROR_BYTES {
        let mut end = MAX_ERROR_BYTES - '…'.len_utf8();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

impl JobEnvelope {
    /// A new envelope for a payload, ready to run now.
    pub fn new(kind: impl Into<String>, queue: QueueName, payload: serde_json::Value, now: DateTime<Utc>) -> Self {
        JobEnvelope {
            v: ENVELOPE_VERSION,
            id: JobId::new(),
            kind: kind.into(),
            queue,
            payload,
            idempotency_key: None,
            attempt: 0,
            max_retries: None,
            enqueued_at: now,
            run_at: now,
            attempts: Vec::new(),
            dead_lettered_at: None,
            dead_letter_reason: None,
        }
    }

    /// Applies enqueue options, checking them against `now`.
    pub fn with_options(mut self, options: &EnqueueOptions, now: DateTime<Utc>) -> Result<Self> {
        if let Some(key) = &options.idempotency_key {
            self.idempotency_key = Some(key.clone());
        }
        if let Some(key) = &self.idempotency_key {
            check_idempotency_key(key)?;
        }
        if options.max_retries.is_some() {
            self.max_retries = options.max_retries;
        }
        if let Some(max) = self.max_retries {
            crate::retry::check_retry_count(max)?;
        }
        self.run_at = match (options.run_at, options.delay) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidConfig(
                    "give either `run_at` or `delay` in EnqueueOptions, not both".into(),
                ))
            }
            (Some(at), None) => at,
            (None, Some(delay)) => now + to_chrono(delay)?,
            (None, None) => self.run_at,
        };
        check_run_at(self.run_at, now)?;
        Ok(self)
    }

    /// Parses an envelope from stored JSON, checking its version.
    pub fn from_json(id_hint: &str, bytes: &[u8]) -> Result<Self> {
        let envelope: JobEnvelope = serde_json::from_slice(bytes).map_err(|e| Error::CorruptEnvelope {
            id: id_hint.to_owned(),
            message: format!("not a job envelope: {e}"),
        })?;
        if envelope.v != ENVELOPE_VERSION {
            return Err(Error::CorruptEnvelope {
                id: id_hint.to_owned(),
                message: format!(
                    "envelope version {} is not supported (this worker reads version {ENVELOPE_VERSION})",
                    envelope.v
                ),
            });
        }
        Ok(envelope)
    }

    /// Serializes the envelope to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // A `JobEnvelope` holds only strings, numbers, dates and a `Value`:
        // serializing it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The JSON Schema of the envelope, as committed in `docs/schemas/envelope.json`.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(JobEnvelope)).unwrap_or_default()
    }
}

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 512;

fn check_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(Error::InvalidConfig(format!(
            "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// Refuses a run time absurdly far in the future (a unit mistake, usually).
pub(crate) fn check_run_at(run_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
    if run_at > now + to_chrono(MAX_SCHEDULE_AHEAD)? {
        return Err(Error::InvalidConfig(format!(
            "run_at {run_at} is more than ten years ahead; was a delay given in the wrong unit?"
        )));
    }
    Ok(())
}

pub(crate) fn to_chrono(d: Duration) -> Result<chrono::TimeDelta> {
    chrono::TimeDelta::from_std(d).map_err(|_| Error::InvalidConfig(format!("duration {d:?} is out of range")))
}

/// Options for one enqueue.
///
/// ```
/// use std::time::Duration;
/// use flagship_worker::EnqueueOptions;
///
/// let options = EnqueueOptions::new()
///     .delay(Duration::from_secs(30))
///     .idempotency_key("invoice:42")
///     .max_retries(2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Run no earlier than this time.
    pub run_at: Option<DateTime<Utc>>,
    /// Run after this delay from now.
    pub delay: Option<Duration>,
    /// Idempotency key; overrides [`Job::idempotency_key`](crate::Job::idempotency_key).
    pub idempotency_key: Option<String>,
    /// Overrides the retry policy's number of retries for this job.
    pub max_retries: Option<u32>,
}

impl EnqueueOptions {
    /// No options: run now, key from the job, retries from the policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the job no earlier than `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Runs the job after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the number of retries after the first attempt.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = truncate_error(long);
        assert!(cut.len() <= MAX_ERROR_BYTES);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_error("short".into()), "short");
    }

    #[test]
    fn unsupported_versions_and_garbage_are_refused() {
        let q = QueueName::new("q").unwrap();
        let mut env = JobEnvelope::new("k", q, serde_json::json!({}), Utc::now());
        env.v = 2;
        let err = JobEnvelope::from_json("x", &env.to_json()).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        assert!(JobEnvelope::from_json("x", b"not json").is_err());
    }

    #[test]
    fn run_at_far_in_the_future_is_refused() {
        let q = QueueName::new("q").unwrap();
        let now = Utc::now();
        let env = JobEnvelope::new("k", q, serde_json::json!({}), now);
        let far = EnqueueOptions::new().delay(Duration::from_secs(20 * 366 * 24 * 3600));
        assert!(env.clone().with_options(&far, now).is_err());
        let both = EnqueueOptions::new().delay(Duration::from_secs(1)).run_at(now);
        assert!(env.clone().with_options(&both, now).is_err());
        let ok = EnqueueOptions::new().delay(Duration::from_secs(5));
        assert_eq!(
            env.with_options(&ok, now).unwrap().run_at,
            now + chrono::TimeDelta::seconds(5)
        );
    }
}
