//! The [`Client`]: validated, typed and raw enqueue.

use std::{fmt, sync::Arc};

use serde_json::Value;

use crate::{
    broker::{Broker, EnqueueOutcome},
    clock::{Clock, TokioClock},
    envelope::{EnqueueOptions, JobEnvelope},
    error::{Error, Result},
    job::Job,
    payload::Payload,
    schema::{drop_deep, SchemaRegistry},
};

/// Enqueues jobs, validating every payload against its kind's schema first.
///
/// Cheap to clone; clones share the broker and the registry.
///
/// ```
/// # use flagship_worker::{Client, EnqueueOutcome, Job, MemoryBroker};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize}; use std::sync::Arc;
/// # #[derive(Serialize, Deserialize, JsonSchema)] struct SendWelcome { user_id: u64 }
/// # impl Job for SendWelcome { const KIND: &'static str = "send-welcome"; const QUEUE: &'static str = "emails";
/// #   fn idempotency_key(&self) -> Option<String> { Some(format!("welcome:{}", self.user_id)) } }
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let client = Client::new(Arc::new(MemoryBroker::new()));
/// let first = client.enqueue(&SendWelcome { user_id: 7 }).await?;
/// let again = client.enqueue(&SendWelcome { user_id: 7 }).await?;
/// assert_eq!(again, EnqueueOutcome::Duplicate(first.id()));
///
/// // A foreign producer's raw JSON is checked against the same schema.
/// let err = client.enqueue_raw("send-welcome", serde_json::json!({ "user_id": "seven" }), Default::default()).await;
/// assert!(err.is_err());
/// # Ok::<_, flagship_worker::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Client {
    /// One allocation shared by every clone: handlers get a client per job.
    inner: Arc<ClientInner>,
}

struct ClientInner {
    /// Where jobs go.
    broker: Arc<dyn Broker>,
    /// Schemas to validate against; shared with the worker.
    registry: Arc<SchemaRegistry>,
    /// Enqueue times and delays are measured on this clock.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("broker", &self.inner.broker)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with its own registry; typed jobs register themselves on
    /// first enqueue.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self::with_registry(broker, Arc::new(SchemaRegistry::new()))
    }

    /// A client sharing `registry` (e.g. with a worker).
    pub fn with_registry(broker: Arc<dyn Broker>, registry: Arc<SchemaRegistry>) -> Self {
        Client {
            inner: Arc::new(ClientInner {
                broker,
                registry,
                clock: Arc::new(TokioClock::new()),
            }),
        }
    }

    /// Uses `clock` for enqueue times and delays.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Client {
            inner: Arc::new(ClientInner {
                broker: self.inner.broker.clone(),
                registry: self.inner.registry.clone(),
                clock,
            }),
        }
    }

    /// The broker jobs go to.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// The schema registry.
    pub fn registry(&self) -> &Arc<SchemaRegistry> {
        &self.inner.registry
    }

    /// Builds the validated envelope for a typed job without enqueueing it.
    pub fn envelope<J: Job>(&self, job: &J, options: &EnqueueOptions) -> Result<JobEnvelope> {
        let schema = self.inner.registry.register::<J>()?;
        let malformed = |source| Error::MalformedPayload {
            kind: J::KIND.to_owned(),
            source,
        };
        let value = serde_json::to_value(job).map_err(malformed)?;
        // The value is checked and written as text once; the envelope
        // carries the text from here to the handler.
        let text = match self
            .inner
            .registry
            .accept(&schema, &value, || Payload::write(&value).map_err(malformed))
        {
            Ok(text) => text,
            Err(e) => return Err(refuse(e, [value])),
        };
        let now = self.inner.clock.now();
        let mut envelope = JobEnvelope::new(J::KIND, schema.queue().clone(), text, now);
        envelope.idempotency_key = job.idempotency_key();
        envelope.with_options(options, now)
    }

    /// Builds the validated envelope for a raw payload of a registered kind.
    pub fn raw_envelope(&self, kind: &str, payload: Value, options: &EnqueueOptions) -> Result<JobEnvelope> {
        let Some(schema) = self.inner.registry.get(kind) else {
            return Err(refuse(Error::UnknownKind(kind.to_owned()), [payload]));
        };
        let text = match self
            .inner
            .registry
            .accept(&schema, &payload, || Ok(Payload::from(&payload)))
        {
            Ok(text) => text,
            Err(e) => return Err(refuse(e, [payload])),
        };
        let now = self.inner.clock.now();
        JobEnvelope::new(kind, schema.queue().clone(), text, now).with_options(options, now)
    }

    /// Enqueues a typed job to run now.
    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<EnqueueOutcome> {
        self.enqueue_with(job, EnqueueOptions::default()).await
    }

    /// Enqueues a typed job with options (delay, idempotency key, retries).
    pub async fn enqueue_with<J: Job>(&self, job: &J, options: EnqueueOptions) -> Result<EnqueueOutcome> {
        let envelope = self.envelope(job, &options)?;
        self.send_one(envelope).await
    }

    /// Enqueues many typed jobs in one broker call. Either every job is
    /// valid and the batch is sent, or nothing is enqueued.
    pub async fn enqueue_batch<J: Job>(&self, jobs: &[J], options: EnqueueOptions) -> Result<Vec<EnqueueOutcome>> {
        let envelopes = jobs
            .iter()
            .map(|job| self.envelope(job, &options))
            .collect::<Result<Vec<_>>>()?;
        self.enqueue_envelopes(envelopes).await
    }

    /// Enqueues a raw JSON payload for a registered kind (for producers
    /// without the Rust type). The payload is validated like a typed one.
    pub async fn enqueue_raw(&self, kind: &str, payload: Value, options: EnqueueOptions) -> Result<EnqueueOutcome> {
        let envelope = self.raw_envelope(kind, payload, &options)?;
        self.send_one(envelope).await
    }

    /// Enqueues ready-made envelopes, validating each payload first. Either
    /// every envelope is valid and the batch is sent, or nothing is enqueued.
    /// Payloads this client's registry accepted (in envelopes it built) are
    /// not parsed again.
    pub async fn enqueue_envelopes(&self, mut envelopes: Vec<JobEnvelope>) -> Result<Vec<EnqueueOutcome>> {
        for envelope in &mut envelopes {
            let schema = self
                .inner
                .registry
                .validate_payload(&envelope.kind, &mut envelope.payload)?;
            if schema.queue() != &envelope.queue {
                return Err(Error::InvalidConfig(format!(
                    "job kind `{}` belongs on queue `{}`, not `{}`",
                    envelope.kind,
                    schema.queue(),
                    envelope.queue
                )));
            }
        }
        let outcomes = self.inner.broker.enqueue(envelopes).await?;
        tracing::debug!(count = outcomes.len(), "batch enqueued");
        Ok(outcomes)
    }

    async fn send_one(&self, envelope: JobEnvelope) -> Result<EnqueueOutcome> {
        let (id, kind, queue) = (envelope.id, envelope.kind.clone(), envelope.queue.clone());
        let outcome = self
            .inner
            .broker
            .enqueue(vec![envelope])
            .await?
            .pop()
            .ok_or_else(|| Error::Backend(format!("broker returned no outcome for job {id}").into()))?;
        match outcome {
            EnqueueOutcome::Enqueued(_) => tracing::debug!(job.id = %id, job.type = %kind, %queue, "job enqueued"),
            EnqueueOutcome::Duplicate(existing) => {
                tracing::debug!(job.id = %existing, job.type = %kind, %queue, "duplicate enqueue ignored")
            }
        }
        Ok(outcome)
    }
}

/// Hands back `error` for refused payloads, dropping them without
/// recursion when they were refused for their depth: `Value`'s own drop
/// recurses, and could overflow the stack on the payload just refused.
fn refuse(error: Error, payloads: impl IntoIterator<Item = Value>) -> Error {
    if matches!(error, Error::PayloadTooDeep { .. }) {
        payloads.into_iter().for_each(drop_deep);
    }
    error
}
