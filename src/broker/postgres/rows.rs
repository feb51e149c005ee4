//! Reading rows: leased jobs into reservations (sorting out the ones that
//! cannot run), dead jobs into the envelopes operators see.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{postgres::PgRow, Row};
use uuid::Uuid;

use super::errors::map_err;
use crate::{
    broker::{ActiveLease, JobState, LeaseToken, LiveJob, Reservation},
    envelope::{AttemptRecord, JobEnvelope, ENVELOPE_VERSION},
    error::Result,
    job::{JobId, QueueName},
    payload::Payload,
};

/// A row as `reserve.sql` and `recover.sql` return it.
#[derive(Debug)]
pub(super) struct LeasedRow {
    pub(super) id: Uuid,
    pub(super) token: i64,
    deadline: DateTime<Utc>,
    priority: i16,
    run_at: DateTime<Utc>,
    seq: i64,
    stored: StoredJob,
    /// For a recovered job: when its expired lease had started.
    expired_started: Option<DateTime<Utc>>,
    /// For a recovered job: whether an operator asked to cancel it.
    cancel_requested: bool,
}

/// The columns every job row has, as stored.
#[derive(Debug, Clone)]
struct StoredJob {
    enqueued_at: DateTime<Utc>,
    v: i16,
    attempt: i32,
    max_retries: Option<i32>,
    kind: String,
    payload: String,
    idempotency_key: Option<String>,
    attempts: Option<String>,
}

impl StoredJob {
    /// The envelope, or the row shown as the DLQ shows one that cannot
    /// be decoded.
    fn envelope_or_shown(self, id: Uuid, queue: &QueueName, run_at: DateTime<Utc>) -> JobEnvelope {
        let shown = self.clone();
        self.envelope(id, queue, run_at)
            .unwrap_or_else(|_| shown.dead_envelope(id, queue, run_at))
    }

    /// Reads the stored columns starting at position `at`: enqueued_at, v,
    /// attempt, max_retries, kind, payload, idempotency_key, attempts.
    fn read(row: &PgRow, at: usize) -> Result<Self> {
        Ok(StoredJob {
            enqueued_at: row.try_get(at).map_err(map_err)?,
            v: row.try_get(at + 1).map_err(map_err)?,
            attempt: row.try_get(at + 2).map_err(map_err)?,
            max_retries: row.try_get(at + 3).map_err(map_err)?,
            kind: row.try_get(at + 4).map_err(map_err)?,
            payload: row.try_get(at + 5).map_err(map_err)?,
            idempotency_key: row.try_get(at + 6).map_err(map_err)?,
            attempts: row.try_get(at + 7).map_err(map_err)?,
        })
    }

    /// The envelope, or why the row cannot be run.
    fn envelope(self, id: Uuid, queue: &QueueName, run_at: DateTime<Utc>) -> Result<JobEnvelope, String> {
        if i64::from(self.v) != i64::from(ENVELOPE_VERSION) {
            return Err(format!(
                "envelope version {} is not supported (this worker reads version {ENVELOPE_VERSION})",
                self.v
            ));
        }
        let payload = Payload::from_json(self.payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
        let attempts: Vec<AttemptRecord> = match &self.attempts {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| format!("the attempt history is not a list of attempt records: {e}"))?,
            None => Vec::new(),
        };
        let count = |what: &str, n: i32| u32::try_from(n).map_err(|_| format!("{what} is negative ({n})"));
        Ok(JobEnvelope {
            v: ENVELOPE_VERSION,
            id: JobId::from(id),
            kind: self.kind,
            queue: queue.clone(),
            payload,
            idempotency_key: self.idempotency_key,
            attempt: count("attempt", self.attempt)?,
            max_retries: self.max_retries.map(|n| count("max_retries", n)).transpose()?,
            priority: 0,
            enqueued_at: self.enqueued_at,
            run_at,
            attempts,
            dead_lettered_at: None,
            dead_letter_reason: None,
        })
    }

    /// The envelope of a dead job as operators see it: a row that cannot be
    /// decoded shows its stored payload text as a string payload and keeps
    /// its stored version, so nothing is hidden.
    fn dead_envelope(self, id: Uuid, queue: &QueueName, run_at: DateTime<Utc>) -> JobEnvelope {
        let payload = Payload::from_json(self.payload.as_str())
            .unwrap_or_else(|_| Payload::from(serde_json::Value::String(self.payload)));
        let attempts = self
            .attempts
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        JobEnvelope {
            v: u32::try_from(self.v).unwrap_or(0),
            id: JobId::from(id),
            kind: self.kind,
            queue: queue.clone(),
            payload,
            idempotency_key: self.idempotency_key,
            attempt: u32::try_from(self.attempt).unwrap_or(0),
            max_retries: self.max_retries.and_then(|n| u32::try_from(n).ok()),
            priority: 0,
            enqueued_at: self.enqueued_at,
            run_at,
            attempts,
            dead_lettered_at: None,
            dead_letter_reason: None,
        }
    }
}

/// The next-due row of `reserve.sql` (its last column, µs): how long until
/// the first pending job falls due; `None` when none is pending.
pub(super) fn next_due(row: &PgRow) -> Result<Option<Duration>> {
    let micros: Option<i64> = row.try_get(16).map_err(map_err)?;
    Ok(micros.map(|us| Duration::from_micros(us.max(0) as u64)))
}

impl LeasedRow {
    /// Reads a row of `reserve.sql` or `recover.sql`; `None` for the row
    /// `reserve.sql` sends instead when it leased nothing.
    pub(super) fn read(row: &PgRow) -> Result<Option<Self>> {
        let Some(id) = row.try_get::<Option<Uuid>, _>(0).map_err(map_err)? else {
            return Ok(None);
        };
        Ok(Some(LeasedRow {
            id,
            token: row.try_get(1).map_err(map_err)?,
            deadline: row.try_get(2).map_err(map_err)?,
            priority: row.try_get(3).map_err(map_err)?,
            run_at: row.try_get(4).map_err(map_err)?,
            seq: row.try_get(5).map_err(map_err)?,
            stored: StoredJob::read(row, 6)?,
            expired_started: row.try_get(14).map_err(map_err)?,
            cancel_requested: row.try_get::<Option<bool>, _>(17).map_err(map_err)?.unwrap_or(false),
        }))
    }

    /// Where the row comes in the queue: priority first, then due time,
    /// then enqueue order.
    pub(super) fn order(&self) -> (std::cmp::Reverse<i16>, DateTime<Utc>, i64) {
        (std::cmp::Reverse(self.priority), self.run_at, self.seq)
    }

    /// The reservation, or why the job cannot run.
    pub(super) fn reservation(self, queue: &QueueName) -> Result<Reservation, String> {
        let mut envelope = self.stored.envelope(self.id, queue, self.run_at)?;
        envelope.priority = stored_priority(self.priority);
        let reservation = Reservation::new(Arc::new(envelope), LeaseToken(self.token as u64), self.deadline);
        let reservation = reservation.cancel_requested(self.cancel_requested);
        Ok(match self.expired_started {
            Some(started) => reservation.recovered(started),
            None => reservation,
        })
    }
}

/// A stored priority as the envelope carries it: the `priority` column
/// is wider than the envelope's range, so a value another program wrote
/// outside it is clamped.
pub(super) fn stored_priority(priority: i16) -> i8 {
    let (min, max) = (
        i16::from(crate::envelope::MIN_PRIORITY),
        i16::from(crate::envelope::MAX_PRIORITY),
    );
    // In range after the clamp: the conversion cannot fail.
    i8::try_from(priority.clamp(min, max)).unwrap_or_default()
}

/// A live job as `live_list.sql` (and, after its state, `live_get.sql`)
/// returns it.
#[derive(Debug)]
pub(super) struct LiveRow {
    id: Uuid,
    run_at: DateTime<Utc>,
    stored: StoredJob,
    priority: i16,
    owner: Option<String>,
    leased_at: Option<DateTime<Utc>>,
    deadline: Option<DateTime<Utc>>,
    cancel_requested: bool,
}

impl LiveRow {
    /// Reads the row's columns starting at position `at`.
    pub(super) fn read(row: &PgRow, at: usize) -> Result<Self> {
        Ok(LiveRow {
            id: row.try_get(at).map_err(map_err)?,
            run_at: row.try_get(at + 1).map_err(map_err)?,
            stored: StoredJob::read(row, at + 2)?,
            priority: row.try_get(at + 10).map_err(map_err)?,
            owner: row.try_get(at + 11).map_err(map_err)?,
            leased_at: row.try_get(at + 12).map_err(map_err)?,
            deadline: row.try_get(at + 13).map_err(map_err)?,
            cancel_requested: row.try_get(at + 14).map_err(map_err)?,
        })
    }

    /// The job as operators see it in `state`; a row that cannot be
    /// decoded shows its stored text, as the DLQ shows it.
    pub(super) fn live_job(self, queue: &QueueName, state: JobState) -> LiveJob {
        let (id, run_at) = (self.id, self.run_at);
        let mut envelope = self.stored.envelope_or_shown(id, queue, run_at);
        envelope.priority = stored_priority(self.priority);
        match state {
            JobState::Active => {
                let started = self.leased_at.unwrap_or(run_at);
                let lease = ActiveLease::new(self.owner, started, self.deadline.unwrap_or(started));
                LiveJob::active(envelope, lease, self.cancel_requested)
            }
            state => LiveJob::waiting(envelope, state),
        }
    }
}

/// A dead job as `dead_list.sql` and `dead_get.sql` return it.
#[derive(Debug)]
pub(super) struct DeadRow {
    pub(super) id: Uuid,
    pub(super) dead_at: DateTime<Utc>,
    reason: Option<String>,
    run_at: DateTime<Utc>,
    priority: i16,
    stored: StoredJob,
}

impl DeadRow {
    /// Reads a row: id, dead_at, dead_reason, then the stored columns with
    /// run_at between enqueued_at and v, then priority.
    pub(super) fn read(row: &PgRow) -> Result<Self> {
        let stored = StoredJob {
            enqueued_at: row.try_get(3).map_err(map_err)?,
            v: row.try_get(5).map_err(map_err)?,
            attempt: row.try_get(6).map_err(map_err)?,
            max_retries: row.try_get(7).map_err(map_err)?,
            kind: row.try_get(8).map_err(map_err)?,
            payload: row.try_get(9).map_err(map_err)?,
            idempotency_key: row.try_get(10).map_err(map_err)?,
            attempts: row.try_get(11).map_err(map_err)?,
        };
        Ok(DeadRow {
            id: row.try_get(0).map_err(map_err)?,
            dead_at: row.try_get(1).map_err(map_err)?,
            reason: row.try_get(2).map_err(map_err)?,
            run_at: row.try_get(4).map_err(map_err)?,
            priority: row.try_get(12).map_err(map_err)?,
            stored,
        })
    }

    /// Why the row cannot run as a job (it would only be dead-lettered
    /// again), or `None` when it decodes.
    pub(super) fn undecodable(&self, queue: &QueueName) -> Option<String> {
        self.stored.clone().envelope(self.id, queue, self.run_at).err()
    }

    /// The envelope operators see, with when and why it died.
    pub(super) fn envelope(self, queue: &QueueName) -> JobEnvelope {
        let mut envelope = self.stored.dead_envelope(self.id, queue, self.run_at);
        envelope.priority = stored_priority(self.priority);
        envelope.dead_lettered_at = Some(self.dead_at);
        envelope.dead_letter_reason = self.reason;
        envelope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(v: i16, payload: &str, attempts: Option<&str>) -> StoredJob {
        StoredJob {
            enqueued_at: Utc::now(),
            v,
            attempt: 0,
            max_retries: None,
            kind: "k".into(),
            payload: payload.into(),
            idempotency_key: None,
            attempts: attempts.map(str::to_owned),
        }
    }

    #[test]
    fn rows_that_cannot_run_say_why() {
        let q = QueueName::new("q").unwrap();
        let (id, now) = (Uuid::now_v7(), Utc::now());
        let good = stored(1, r#"{"n":1}"#, None).envelope(id, &q, now).unwrap();
        assert_eq!(good.payload, serde_json::json!({ "n": 1 }));
        assert_eq!((good.id.as_uuid(), good.run_at), (id, now));
        let version = stored(2, "{}", None).envelope(id, &q, now).unwrap_err();
        assert!(version.contains("version 2"), "{version}");
        let garbage = stored(1, "not json", None).envelope(id, &q, now).unwrap_err();
        assert!(garbage.contains("payload is not JSON"), "{garbage}");
        let history = stored(1, "{}", Some("[1]")).envelope(id, &q, now).unwrap_err();
        assert!(history.contains("attempt history"), "{history}");
    }

    #[test]
    fn dead_rows_that_cannot_be_decoded_show_their_text() {
        let q = QueueName::new("q").unwrap();
        let shown = stored(3, "not json", Some("garbage")).dead_envelope(Uuid::now_v7(), &q, Utc::now());
        assert_eq!(shown.payload, serde_json::json!("not json"));
        assert_eq!(shown.v, 3);
        assert!(shown.attempts.is_empty());
    }
}
