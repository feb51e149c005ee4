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
    payload::Payload,
};

/// The envelope version this crate writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// The longest error message stored in an [`AttemptRecord`], in bytes.
/// Longer messages are cut at a character boundary and marked `…`.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

/// The lowest job priority (reserved last).
pub const MIN_PRIORITY: i8 = -10;

/// The highest job priority (reserved first).
pub const MAX_PRIORITY: i8 = 10;

fn is_default_priority(priority: &i8) -> bool {
    *priority == 0
}

/// Refuses a priority outside [`MIN_PRIORITY`]`..=`[`MAX_PRIORITY`].
pub(crate) fn check_priority(priority: i8) -> Result<()> {
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        return Err(Error::InvalidConfig(format!(
            "priority {priority} is out of range; use {MIN_PRIORITY} (last) to {MAX_PRIORITY} (first), 0 by default"
        )));
    }
    Ok(())
}

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
    pub payload: Payload,
    /// Optional key that makes enqueue idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Which attempt this is, counting from 0: how many attempts failed
    /// before the current (or next) run since the job was enqueued or
    /// retried from the dead-letter queue. It grows when a retry is
    /// scheduled, not when the job is dead-lettered, so a dead job keeps the
    /// number of the attempt that dead-lettered it: a job that failed six
    /// times and died shows 5, and `attempts` records all six.
    #[serde(default)]
    pub attempt: u32,
    /// Per-job override of the retry policy's retry count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Reservation priority within the queue, from [`MIN_PRIORITY`] to
    /// [`MAX_PRIORITY`]: a higher priority is reserved first; jobs of one
    /// priority are reserved oldest first. 0 (the default) when absent.
    #[serde(default, skip_serializing_if = "is_default_priority")]
    #[schemars(range(min = -10, max = 10))]
    pub priority: i8,
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
    pub fn new(kind: impl Into<String>, queue: QueueName, payload: impl Into<Payload>, now: DateTime<Utc>) -> Self {
        JobEnvelope {
            v: ENVELOPE_VERSION,
            id: JobId::new(),
            kind: kind.into(),
            queue,
            payload: payload.into(),
            idempotency_key: None,
            attempt: 0,
            max_retries: None,
            priority: 0,
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
        if let Some(priority) = options.priority {
            check_priority(priority)?;
            self.priority = priority;
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
    ///
    /// The error says what is wrong, naming the field where it can (a
    /// timestamp without a timezone, a missing `run_at`, an id that is not
    /// a UUID), or that the JSON nests too deep to decode.
    pub fn from_json(id_hint: &str, bytes: &[u8]) -> Result<Self> {
        // Checked as UTF-8 once, as a whole: read from a `&[u8]`, serde_json
        // would check every string again, and the payload's text twice.
        let decoded = match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str::<JobEnvelope>(text),
            Err(_) => serde_json::from_slice::<JobEnvelope>(bytes),
        };
        let envelope = decoded.map_err(|e| Error::CorruptEnvelope {
            id: id_hint.to_owned(),
            message: format!(
                "not a job envelope: {}; fix the producer that wrote it (the format is in docs/schemas/envelope.json)",
                why_undecodable(bytes, &e)
            ),
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

/// How deep serde_json decodes nested arrays and objects, in levels.
const DECODE_DEPTH_LIMIT: usize = 128;

/// Why `bytes` did not decode as an envelope: too deep, not JSON, or the
/// first field that is missing or of the wrong shape. Runs only after
/// decoding failed, so it may take its time. Never quotes the payload.
fn why_undecodable(bytes: &[u8], error: &serde_json::Error) -> String {
    if nesting_depth(bytes) >= DECODE_DEPTH_LIMIT {
        return format!(
            "it nests arrays and objects {DECODE_DEPTH_LIMIT} or more levels deep, past what a worker decodes \
             (payloads may nest at most {} levels)",
            crate::schema::MAX_PAYLOAD_DEPTH
        );
    }
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(_) => return format!("it is not JSON ({error})"),
    };
    let Some(fields) = value.as_object() else {
        return "it is not a JSON object".into();
    };
    envelope_field_problem(fields).unwrap_or_else(|| error.to_string())
}

/// How a timestamp must look, for messages.
const TIMESTAMP: &str = "an RFC 3339 timestamp with a timezone, such as `2025-01-01T12:00:00Z`";

/// The first envelope field that is missing or does not decode, described.
fn envelope_field_problem(fields: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    use serde_json::Value;
    for name in ["v", "id", "type", "queue", "payload", "enqueued_at", "run_at"] {
        if !fields.contains_key(name) {
            return Some(format!("field `{name}` is missing"));
        }
    }
    let field = |name: &str| fields.get(name).filter(|v| !v.is_null());
    let checks = [
        shape::<u32>(field("v"), "v", "a non-negative integer"),
        shape::<JobId>(field("id"), "id", "a UUID"),
        shape::<String>(field("type"), "type", "a string"),
        shape::<QueueName>(field("queue"), "queue", "a queue name").map(|problem| {
            // QueueName's own error states the rules a name must follow.
            let rules = field("queue")
                .and_then(|v| v.as_str())
                .and_then(|name| QueueName::new(name).err())
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            format!("{problem}{rules}")
        }),
        shape::<String>(field("idempotency_key"), "idempotency_key", "a string"),
        shape::<u32>(field("attempt"), "attempt", "a non-negative integer"),
        shape::<u32>(field("max_retries"), "max_retries", "a non-negative integer"),
        shape::<i8>(field("priority"), "priority", "an integer from -10 to 10"),
        timestamp(field("enqueued_at"), "enqueued_at"),
        timestamp(field("run_at"), "run_at"),
        timestamp(field("dead_lettered_at"), "dead_lettered_at"),
        shape::<String>(field("dead_letter_reason"), "dead_letter_reason", "a string"),
    ];
    if let Some(problem) = checks.into_iter().flatten().next() {
        return Some(problem);
    }
    let attempts = match field("attempts") {
        None => return None,
        Some(Value::Array(attempts)) => attempts,
        Some(_) => return Some("field `attempts` is not an array".into()),
    };
    for (i, attempt) in attempts.iter().enumerate() {
        let Some(record) = attempt.as_object() else {
            return Some(format!("field `attempts[{i}]` is not an object"));
        };
        for name in ["started_at", "finished_at"] {
            let path = format!("attempts[{i}].{name}");
            match record.get(name) {
                None => return Some(format!("field `{path}` is missing")),
                value @ Some(_) => {
                    if let Some(problem) = timestamp(value, &path) {
                        return Some(problem);
                    }
                }
            }
        }
        for name in ["error", "worker"] {
            let value = record.get(name).filter(|v| !v.is_null());
            if let Some(problem) = shape::<String>(value, &format!("attempts[{i}].{name}"), "a string") {
                return Some(problem);
            }
        }
    }
    None
}

/// `Some(problem)` when `value` is present and does not decode as `T`.
fn shape<T: serde::de::DeserializeOwned>(
    value: Option<&serde_json::Value>,
    path: &str,
    expected: &str,
) -> Option<String> {
    let value = value?;
    // The serde error would quote the value: describe the field instead.
    T::deserialize(value)
        .err()
        .map(|_| format!("field `{path}` is not {expected}"))
}

/// `Some(problem)` when `value` is present and is not a timestamp with a
/// timezone; chrono's reason (which never quotes the input) is kept.
fn timestamp(value: Option<&serde_json::Value>, path: &str) -> Option<String> {
    let value = value?;
    let Some(text) = value.as_str() else {
        return Some(format!("field `{path}` is not a string but must be {TIMESTAMP}"));
    };
    match text.parse::<DateTime<chrono::FixedOffset>>() {
        Ok(_) => None,
        Err(e) => Some(format!("field `{path}` is not {TIMESTAMP} ({e})")),
    }
}

/// The deepest nesting of arrays and objects in `bytes` read as JSON,
/// skipping strings; counted without parsing (or recursing).
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
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

/// The time `delay` after `at`; a delay too long to be a date is refused
/// rather than overflowing.
pub(crate) fn after(at: DateTime<Utc>, delay: Duration) -> Result<DateTime<Utc>> {
    to_chrono(delay)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "a delay of {delay:?} reaches past the last representable date; delays are at most 30 days"
            ))
        })
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
    /// The job's priority ([`JobEnvelope::priority`]); 0 when `None`.
    pub priority: Option<i8>,
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

    /// Sets the job's priority, from [`MIN_PRIORITY`] (reserved last) to
    /// [`MAX_PRIORITY`] (reserved first); 0 by default. Within one
    /// priority, jobs are reserved oldest first.
    pub fn priority(mut self, priority: i8) -> Self {
        self.priority = Some(priority);
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

    /// Issue 11, item 9: a foreign producer's timestamp without a timezone
    /// dead-lettered as "premature end of input at line 1 column 143".
    #[test]
    fn decode_errors_name_the_field_and_what_is_wrong() {
        let q = QueueName::new("q").unwrap();
        let env = JobEnvelope::new("k", q, serde_json::json!({ "secret": "CANARY-envelope" }), Utc::now());
        let mut json = serde_json::to_value(&env).unwrap();
        let reason = |json: &serde_json::Value| {
            let err = JobEnvelope::from_json("x", json.to_string().as_bytes()).unwrap_err();
            let text = err.to_string();
            assert!(!text.contains("CANARY"), "{text}");
            assert!(text.contains("fix the producer"), "{text}");
            text
        };

        json["enqueued_at"] = "2025-01-01T12:00:00".into();
        let text = reason(&json);
        assert!(text.contains("`enqueued_at`") && text.contains("timezone"), "{text}");

        json["enqueued_at"] = env.enqueued_at.to_rfc3339().into();
        json["attempts"] = serde_json::json!([{ "started_at": "2025-01-01T12:00:00Z", "finished_at": "yesterday" }]);
        let text = reason(&json);
        assert!(text.contains("`attempts[0].finished_at`"), "{text}");

        json["attempts"] = serde_json::json!([]);
        json.as_object_mut().unwrap().remove("run_at");
        assert!(reason(&json).contains("field `run_at` is missing"));

        json["run_at"] = env.run_at.to_rfc3339().into();
        json["id"] = "not-a-uuid".into();
        assert!(reason(&json).contains("field `id` is not a UUID"));

        json["id"] = env.id.to_string().into();
        json["attempt"] = (-1).into();
        assert!(reason(&json).contains("field `attempt` is not a non-negative integer"));

        json["attempt"] = 0.into();
        json["queue"] = "bad queue".into();
        assert!(reason(&json).contains("field `queue` is not a queue name"));

        json["queue"] = "q".into();
        assert!(JobEnvelope::from_json("x", json.to_string().as_bytes()).is_ok());
        assert!(reason(&serde_json::json!([1])).contains("not a JSON object"));
        let text = JobEnvelope::from_json("x", b"{\"v\": 1,").unwrap_err().to_string();
        assert!(text.contains("not JSON"), "{text}");
    }

    /// Issue 11, item 6: an envelope too deep for serde_json dead-lettered
    /// as "recursion limit exceeded". The payload is kept as text now, so
    /// the envelope decodes however deep it nests, and its depth is refused
    /// where every payload's is, by the kind's check, naming the limit.
    #[test]
    fn too_deep_payloads_decode_and_are_refused_for_their_depth() {
        let q = QueueName::new("q").unwrap();
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let env = JobEnvelope::new("k", q.clone(), serde_json::json!(null), Utc::now());
        let text = String::from_utf8(env.to_json())
            .unwrap()
            .replace("\"payload\":null", &format!("\"payload\":{deep}"));
        let read = JobEnvelope::from_json("x", text.as_bytes()).unwrap();
        assert_eq!(read.payload.json(), deep, "the text is kept as it was");
        let registry = crate::SchemaRegistry::new();
        let kind = registry.register_raw("k", q, serde_json::json!(true)).unwrap();
        let err = kind.check_payload(&read.payload).unwrap_err();
        assert!(
            matches!(
                err,
                Error::PayloadTooDeep {
                    limit: crate::schema::MAX_PAYLOAD_DEPTH,
                    ..
                }
            ),
            "{err}"
        );
        // Brackets inside strings do not count.
        assert_eq!(nesting_depth(br#"{"a": "[[[[{{{{\"]]", "b": [[]]}"#), 3);
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
