//! How the in-memory broker holds a job: compact while it waits to run for
//! the first time, as a shared [`JobEnvelope`] from its first lease on.
//!
//! A backlog is mostly jobs that have never run, so they are what must be
//! small: their id is the map's key and their queue the map's owner, their
//! kind is shared with every job of that kind, and the fields most jobs
//! never set (an idempotency key, an attempt history, dead-letter details)
//! sit behind one pointer that is usually null.

use std::{collections::HashSet, sync::Arc};

use chrono::{DateTime, Utc};

use crate::{
    envelope::{AttemptRecord, JobEnvelope, ENVELOPE_VERSION},
    job::{JobId, QueueName},
    payload::Payload,
};

/// A stored job's envelope.
pub(super) enum Held {
    /// Not leased yet: the envelope's fields, compacted.
    Waiting(Box<Waiting>),
    /// Leased at least once: the envelope, shared with its reservations.
    Envelope(Arc<JobEnvelope>),
}

/// A job that has not run yet.
pub(super) struct Waiting {
    /// The job kind, shared with every job of the queue of that kind.
    kind: Arc<str>,
    /// `Some` while the job waits: [`expand`] moves it out (without
    /// copying the text) as it replaces the job with its envelope.
    payload: Option<Payload>,
    enqueued_at: DateTime<Utc>,
    run_at: DateTime<Utc>,
    attempt: u32,
    max_retries: Option<u32>,
    priority: i8,
    /// What most jobs do not set; `None` when the envelope sets none of it.
    rest: Option<Box<Rest>>,
}

/// The envelope fields most jobs leave at their defaults.
#[derive(Clone)]
struct Rest {
    v: u32,
    idempotency_key: Option<String>,
    attempts: Vec<AttemptRecord>,
    dead_lettered_at: Option<DateTime<Utc>>,
    dead_letter_reason: Option<String>,
}

impl Default for Rest {
    fn default() -> Self {
        Rest {
            v: ENVELOPE_VERSION,
            idempotency_key: None,
            attempts: Vec::new(),
            dead_lettered_at: None,
            dead_letter_reason: None,
        }
    }
}

/// One queue's job kinds, each stored once.
#[derive(Default)]
pub(super) struct Kinds(HashSet<Arc<str>>);

impl Kinds {
    /// The shared copy of `kind`.
    fn intern(&mut self, kind: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(kind) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(kind);
        self.0.insert(shared.clone());
        shared
    }
}

impl Held {
    /// Holds a newly enqueued envelope, compacted; its id and queue are
    /// known from where it is stored.
    pub(super) fn waiting(envelope: JobEnvelope, kinds: &mut Kinds) -> Held {
        let JobEnvelope {
            v,
            id: _,
            kind,
            queue: _,
            payload,
            idempotency_key,
            attempt,
            max_retries,
            priority,
            enqueued_at,
            run_at,
            attempts,
            dead_lettered_at,
            dead_letter_reason,
        } = envelope;
        let plain = v == ENVELOPE_VERSION
            && idempotency_key.is_none()
            && attempts.is_empty()
            && dead_lettered_at.is_none()
            && dead_letter_reason.is_none();
        let rest = (!plain).then(|| {
            Box::new(Rest {
                v,
                idempotency_key,
                attempts,
                dead_lettered_at,
                dead_letter_reason,
            })
        });
        Held::Waiting(Box::new(Waiting {
            kind: kinds.intern(&kind),
            payload: Some(payload),
            enqueued_at,
            run_at,
            attempt,
            max_retries,
            priority,
            rest,
        }))
    }

    /// When the job may run next.
    pub(super) fn run_at(&self) -> DateTime<Utc> {
        match self {
            Held::Waiting(job) => job.run_at,
            Held::Envelope(envelope) => envelope.run_at,
        }
    }

    /// The job's priority.
    pub(super) fn priority(&self) -> i8 {
        match self {
            Held::Waiting(job) => job.priority,
            Held::Envelope(envelope) => envelope.priority,
        }
    }

    /// The job's idempotency key, if it has one.
    pub(super) fn idempotency_key(&self) -> Option<&str> {
        match self {
            Held::Waiting(job) => job.rest.as_ref().and_then(|rest| rest.idempotency_key.as_deref()),
            Held::Envelope(envelope) => envelope.idempotency_key.as_deref(),
        }
    }

    /// When the job was dead-lettered, if it is dead.
    pub(super) fn dead_lettered_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Held::Waiting(job) => job.rest.as_ref().and_then(|rest| rest.dead_lettered_at),
            Held::Envelope(envelope) => envelope.dead_lettered_at,
        }
    }

    /// The envelope, shared: built from the compact form the first time.
    pub(super) fn shared(&mut self, id: JobId, queue: &QueueName) -> Arc<JobEnvelope> {
        match self {
            Held::Envelope(envelope) => envelope.clone(),
            Held::Waiting(job) => {
                let envelope = Arc::new(expand(job, id, queue));
                *self = Held::Envelope(envelope.clone());
                envelope
            }
        }
    }

    /// Changes the envelope (copied first if a reservation shares it).
    pub(super) fn update(&mut self, id: JobId, queue: &QueueName, change: impl FnOnce(&mut JobEnvelope)) {
        match self {
            Held::Envelope(envelope) => change(Arc::make_mut(envelope)),
            Held::Waiting(job) => {
                let mut envelope = expand(job, id, queue);
                change(&mut envelope);
                *self = Held::Envelope(Arc::new(envelope));
            }
        }
    }

    /// Looks at the envelope (a leased or dead job's without copying it).
    pub(super) fn inspect<R>(&self, id: JobId, queue: &QueueName, look: impl FnOnce(&JobEnvelope) -> R) -> R {
        match self {
            Held::Envelope(envelope) => look(envelope),
            Held::Waiting(_) => look(&self.to_envelope(id, queue)),
        }
    }

    /// A copy of the envelope, for operators' views.
    pub(super) fn to_envelope(&self, id: JobId, queue: &QueueName) -> JobEnvelope {
        match self {
            Held::Waiting(job) => {
                let mut copy = Waiting {
                    kind: job.kind.clone(),
                    payload: job.payload.clone(),
                    rest: job.rest.as_ref().map(|rest| Box::new(Rest::clone(rest))),
                    ..**job
                };
                expand(&mut copy, id, queue)
            }
            Held::Envelope(envelope) => (**envelope).clone(),
        }
    }
}

/// The envelope of a waiting job, moving its payload and rarer fields out:
/// the job is replaced by the envelope right after.
fn expand(job: &mut Waiting, id: JobId, queue: &QueueName) -> JobEnvelope {
    let rest = job.rest.take().map_or_else(Rest::default, |rest| *rest);
    JobEnvelope {
        v: rest.v,
        id,
        kind: String::from(&*job.kind),
        queue: queue.clone(),
        payload: job.payload.take().unwrap_or_default(),
        idempotency_key: rest.idempotency_key,
        attempt: job.attempt,
        max_retries: job.max_retries,
        priority: job.priority,
        enqueued_at: job.enqueued_at,
        run_at: job.run_at,
        attempts: rest.attempts,
        dead_lettered_at: rest.dead_lettered_at,
        dead_letter_reason: rest.dead_letter_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueName {
        QueueName::new("q").unwrap()
    }

    #[test]
    fn a_waiting_job_expands_to_the_envelope_it_was() {
        let now = Utc::now();
        let plain = JobEnvelope::new("k", queue(), serde_json::json!({ "n": 1 }), now);
        let mut full = JobEnvelope::new("k", queue(), serde_json::json!({ "n": 2 }), now);
        full.idempotency_key = Some("key".into());
        full.attempt = 3;
        full.max_retries = Some(7);
        full.priority = -3;
        full.attempts = vec![AttemptRecord::failed(now, now, "boom", Some("w".into()))];
        full.dead_lettered_at = Some(now);
        full.dead_letter_reason = Some("why".into());
        let mut kinds = Kinds::default();
        for envelope in [plain, full] {
            let mut held = Held::waiting(envelope.clone(), &mut kinds);
            assert_eq!(held.run_at(), envelope.run_at);
            assert_eq!(held.idempotency_key(), envelope.idempotency_key.as_deref());
            assert_eq!(
                held.to_envelope(envelope.id, &queue()),
                envelope,
                "a copy for operators"
            );
            assert_eq!(*held.shared(envelope.id, &queue()), envelope, "the leased envelope");
            assert!(matches!(held, Held::Envelope(_)));
        }
        assert_eq!(kinds.0.len(), 1, "the kind is stored once");
    }

    #[test]
    fn a_waiting_job_is_small() {
        // The job table holds this per job besides its id; the rest is one
        // allocation of `Waiting` and the payload's text.
        assert!(std::mem::size_of::<Held>() <= 16);
        assert!(
            std::mem::size_of::<Waiting>() <= 88,
            "{}",
            std::mem::size_of::<Waiting>()
        );
    }
}
