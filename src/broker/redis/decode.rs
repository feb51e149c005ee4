//! Reading script replies: values, times, and stored envelopes (including
//! the ones that cannot be decoded).

use chrono::{DateTime, Utc};
use redis::Value;

use crate::{
    envelope::{JobEnvelope, ENVELOPE_VERSION},
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// The kind shown for a dead job whose envelope could not be decoded and
/// named no kind.
pub(super) const UNDECODABLE_KIND: &str = "undecodable";

fn unexpected(what: &str, value: &Value) -> Error {
    Error::Backend(
        format!("unexpected reply from Redis for {what}: {value:?}; is another program writing to the queue's keys?")
            .into(),
    )
}

/// The elements of an array reply.
pub(super) fn array(what: &str, value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected(what, &other)),
    }
}

/// An integer reply (or an integer sent as text).
pub(super) fn int(what: &str, value: &Value) -> Result<i64> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| unexpected(what, value)),
        other => Err(unexpected(what, other)),
    }
}

/// A text reply.
pub(super) fn text(what: &str, value: Value) -> Result<String> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|e| unexpected(what, &Value::BulkString(e.into_bytes())))
        }
        Value::SimpleString(s) => Ok(s),
        other => Err(unexpected(what, &other)),
    }
}

/// A binary reply, or `None` for nil (Lua `false`).
pub(super) fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// Milliseconds since the epoch (Redis time) as a time.
pub(super) fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A dead-letter score (ms with a microsecond fraction) as a time.
pub(super) fn score_to_time(score: &str) -> Result<DateTime<Utc>> {
    let ms: f64 = score
        .parse()
        .map_err(|_| Error::Backend(format!("dead-letter score `{score}` is not a number").into()))?;
    Ok(DateTime::from_timestamp_micros((ms * 1000.0).round() as i64).unwrap_or_default())
}

/// A time as a dead-letter score bound.
pub(super) fn time_to_score(at: DateTime<Utc>) -> String {
    let micros = at.timestamp_micros();
    format!("{}.{:03}", micros.div_euclid(1000), micros.rem_euclid(1000))
}

/// A stored job that cannot be run: why, and the id to file it under in
/// the dead-letter queue.
#[derive(Debug)]
pub(super) struct Poison {
    /// The id the job is stored under, as stored (any bytes).
    pub(super) stored_id: Vec<u8>,
    /// The id it is dead-lettered under: the stored one, or the canonical
    /// form of a UUID stored in another form, or a new one when the stored
    /// one is not a UUID at all.
    pub(super) file_as: JobId,
    /// Why it cannot run.
    pub(super) reason: String,
}

impl Poison {
    /// The stored id as it appears in logs and reasons.
    pub(super) fn shown_id(&self) -> String {
        shown_id(&self.stored_id)
    }
}

/// The most bytes of a stored id shown in logs and reasons.
const SHOWN_ID_BYTES: usize = 80;

/// A stored id (any bytes, possibly long) as text for logs and reasons:
/// escaped, and cut after [`SHOWN_ID_BYTES`].
pub(super) fn shown_id(id: &[u8]) -> String {
    let cut = &id[..id.len().min(SHOWN_ID_BYTES)];
    let mut shown = cut.escape_ascii().to_string();
    if cut.len() < id.len() {
        shown.push('…');
    }
    shown
}

/// Decodes a stored envelope, checking that it belongs where it was found:
/// under its own id, in its canonical form (the form every lease-fenced
/// call looks it up by), and in its own queue.
pub(super) fn decode_stored(queue: &QueueName, id: &[u8], raw: &[u8]) -> Result<JobEnvelope, Box<Poison>> {
    let poison = |file_as, reason: String| {
        Box::new(Poison {
            stored_id: id.to_owned(),
            file_as,
            reason,
        })
    };
    let Ok(text) = std::str::from_utf8(id) else {
        return Err(poison(
            JobId::new(),
            format!(
                "corrupt envelope: it was stored under `{}`, which is not UTF-8 text, let alone a job id; \
                 it is filed under a new id. Fix the program that wrote it",
                shown_id(id)
            ),
        ));
    };
    let Ok(job_id) = text.parse::<JobId>() else {
        return Err(poison(
            JobId::new(),
            format!(
                "corrupt envelope: it was stored under `{}`, which is not a job id (a UUID); \
                 it is filed under a new id. Fix the program that wrote it",
                shown_id(id)
            ),
        ));
    };
    // It parsed as a UUID: in 36 characters that is the hyphenated form,
    // canonical when in lower case (checked without formatting the id).
    if text.len() != 36 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(poison(
            job_id,
            format!(
                "stored under `{}`, which is not a job id in canonical form (a UUID in lower case with \
                 hyphens, here `{job_id}`): workers look jobs up by that form, so it could not run as \
                 stored. It is filed under the canonical form (or under a new id if another job holds \
                 that one); retry it from the dead-letter queue to run it, and make the producer write \
                 ids in lower case (docs/redis.md)",
                shown_id(id)
            ),
        ));
    }
    let corrupt = |message: String| poison(job_id, format!("corrupt envelope: {message}"));
    let envelope = match JobEnvelope::from_json(text, raw) {
        Ok(envelope) => envelope,
        Err(Error::CorruptEnvelope { message, .. }) => return Err(corrupt(message)),
        Err(other) => return Err(corrupt(other.to_string())),
    };
    if envelope.id != job_id {
        return Err(corrupt(format!(
            "its id {} differs from the id {job_id} it is stored under",
            envelope.id
        )));
    }
    if envelope.queue != *queue {
        return Err(corrupt(format!(
            "it names queue `{}` but is stored in queue `{queue}`",
            envelope.queue
        )));
    }
    Ok(envelope)
}

/// Refuses a leased envelope whose payload is larger than `limit` bytes of
/// JSON: its producer skipped the size check the client makes at enqueue.
/// `stored_len` is the stored envelope's length; only when it is above the
/// limit can the payload be, and only then is the payload measured.
pub(super) fn check_payload_size(
    envelope: &JobEnvelope,
    stored_id: &[u8],
    stored_len: usize,
    limit: usize,
) -> Result<(), Box<Poison>> {
    if stored_len <= limit {
        return Ok(());
    }
    let size = envelope.payload.len();
    if size <= limit {
        return Ok(());
    }
    Err(Box::new(Poison {
        stored_id: stored_id.to_owned(),
        file_as: envelope.id,
        reason: format!(
            "payload too large: {size} bytes of JSON, above the limit of {limit} bytes \
             (`RedisBrokerBuilder::max_payload_bytes`, the same default as the enqueue limit). \
             Its producer skipped the size check the client makes at enqueue: keep large data \
             elsewhere and pass a reference, then delete this job"
        ),
    }))
}

/// A dead job as operators see it. An envelope that cannot be decoded is
/// shown as a synthesized one whose payload is the stored text.
pub(super) fn dead_envelope(
    queue: &QueueName,
    id: JobId,
    raw: Option<&[u8]>,
    dead_at: DateTime<Utc>,
    reason: Option<String>,
) -> JobEnvelope {
    let decoded = raw.and_then(|raw| decode_stored(queue, id.to_string().as_bytes(), raw).ok());
    let mut envelope = decoded.unwrap_or_else(|| {
        let text = raw.map(|raw| String::from_utf8_lossy(raw).into_owned());
        let kind = text
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|v| v.get("type").and_then(|k| k.as_str()).map(str::to_owned))
            .unwrap_or_else(|| UNDECODABLE_KIND.to_owned());
        JobEnvelope {
            v: ENVELOPE_VERSION,
            id,
            kind,
            queue: queue.clone(),
            payload: text.map(serde_json::Value::String).unwrap_or_default().into(),
            idempotency_key: None,
            attempt: 0,
            max_retries: None,
            priority: 0,
            enqueued_at: dead_at,
            run_at: dead_at,
            attempts: Vec::new(),
            dead_lettered_at: None,
            dead_letter_reason: None,
        }
    });
    envelope.dead_lettered_at = Some(dead_at);
    if reason.is_some() {
        envelope.dead_letter_reason = reason;
    }
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_round_trip_to_the_microsecond() {
        let at = DateTime::from_timestamp_micros(1_732_800_000_123_456).unwrap();
        let score = time_to_score(at);
        assert_eq!(score, "1732800000123.456");
        assert_eq!(score_to_time(&score).unwrap(), at);
    }

    #[test]
    fn stored_envelopes_must_match_their_place() {
        let queue = QueueName::new("q").unwrap();
        let envelope = JobEnvelope::new("k", queue.clone(), serde_json::json!({}), Utc::now());
        let raw = envelope.to_json();
        let id = envelope.id.to_string();
        let id = id.as_bytes();
        assert_eq!(decode_stored(&queue, id, &raw).unwrap(), envelope);

        let other = QueueName::new("other").unwrap();
        assert!(decode_stored(&other, id, &raw).unwrap_err().reason.contains("queue"));
        let wrong_id = JobId::new().to_string();
        assert!(decode_stored(&queue, wrong_id.as_bytes(), &raw)
            .unwrap_err()
            .reason
            .contains("differs"));
        let bad = decode_stored(&queue, b"not-a-uuid", &raw).unwrap_err();
        assert!(bad.reason.contains("not a job id"), "{}", bad.reason);
        assert_eq!(bad.stored_id, b"not-a-uuid");
        assert!(decode_stored(&queue, id, b"garbage")
            .unwrap_err()
            .reason
            .contains("not a job envelope"));
    }

    #[test]
    fn ids_not_in_canonical_form_are_filed_under_it_and_bytes_under_a_new_one() {
        let queue = QueueName::new("q").unwrap();
        let envelope = JobEnvelope::new("k", queue.clone(), serde_json::json!({}), Utc::now());
        let canonical = envelope.id.to_string();
        for stored in [
            canonical.to_uppercase(),
            canonical.replace('-', ""),
            format!("{{{canonical}}}"),
        ] {
            let poison = decode_stored(&queue, stored.as_bytes(), &envelope.to_json()).unwrap_err();
            assert_eq!(poison.file_as, envelope.id, "{stored}");
            assert!(poison.reason.contains("canonical form"), "{}", poison.reason);
            assert!(poison.reason.contains(&canonical), "{}", poison.reason);
        }
        let bytes = b"\xff\xfe-not-text".repeat(20);
        let poison = decode_stored(&queue, &bytes, &envelope.to_json()).unwrap_err();
        assert_ne!(poison.file_as, envelope.id);
        assert!(poison.reason.contains("not UTF-8"), "{}", poison.reason);
        assert!(poison.reason.contains("\\xff\\xfe-not-text"), "{}", poison.reason);
        assert!(
            poison.shown_id().ends_with('…'),
            "long ids are cut: {}",
            poison.shown_id()
        );
    }

    #[test]
    fn payloads_above_the_limit_are_refused_naming_it() {
        let queue = QueueName::new("q").unwrap();
        let envelope = JobEnvelope::new("k", queue, serde_json::json!({ "blob": "x".repeat(100) }), Utc::now());
        let raw = envelope.to_json();
        let id = envelope.id.to_string();
        assert!(check_payload_size(&envelope, id.as_bytes(), raw.len(), raw.len()).is_ok());
        // The envelope is above the limit, the payload not.
        assert!(check_payload_size(&envelope, id.as_bytes(), raw.len(), 120).is_ok());
        let refused = check_payload_size(&envelope, id.as_bytes(), raw.len(), 64).unwrap_err();
        assert_eq!(refused.file_as, envelope.id);
        assert!(refused.reason.contains("limit of 64 bytes"), "{}", refused.reason);
        assert!(
            !refused.reason.contains("xxxx"),
            "no payload values: {}",
            refused.reason
        );
    }

    #[test]
    fn undecodable_dead_jobs_are_shown_with_their_text() {
        let queue = QueueName::new("q").unwrap();
        let id = JobId::new();
        let at = Utc::now();
        let shown = dead_envelope(&queue, id, Some(br#"{"v":9,"type":"future"}"#), at, Some("why".into()));
        assert_eq!(shown.kind, "future");
        assert_eq!(shown.payload, serde_json::json!(r#"{"v":9,"type":"future"}"#));
        assert_eq!(shown.dead_lettered_at, Some(at));
        assert_eq!(shown.dead_letter_reason.as_deref(), Some("why"));
        let garbage = dead_envelope(&queue, id, Some(b"\xffnot json"), at, None);
        assert_eq!(garbage.kind, UNDECODABLE_KIND);
    }
}
