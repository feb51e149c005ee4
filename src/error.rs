//! The crate's one error type.

use crate::job::JobId;

/// A boxed error from a handler, a backend or a user callback.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in flagship-worker.
///
/// Each message says what happened and, where there is one, what to do about
/// it. Backends map their private errors into [`Error::Backend`] or
/// [`Error::Unavailable`]; match on the variant, not on the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A payload did not match its job kind's JSON Schema. From an enqueue
    /// call, nothing was enqueued.
    ///
    /// The message names the path and the rule, not the refused value
    /// (payloads may hold secrets), unless the registry was told to
    /// [show values](crate::SchemaRegistry::show_values).
    #[error(
        "invalid payload for job kind `{kind}` at {}: {message} (schema rule `{rule}`); fix the payload",
        json_path(path)
    )]
    InvalidPayload {
        /// The job kind whose schema refused the payload.
        kind: String,
        /// JSON Pointer to the offending value inside the payload (`""` is the root).
        path: String,
        /// JSON Pointer to the schema keyword that failed.
        rule: String,
        /// What is wrong with the value, in words from the schema's side
        /// (such as "must be of type integer").
        message: String,
    },

    /// A payload nests arrays and objects deeper than
    /// [`MAX_PAYLOAD_DEPTH`](crate::schema::MAX_PAYLOAD_DEPTH). From an
    /// enqueue call, nothing was enqueued.
    #[error("payload for job kind `{kind}` nests arrays and objects more than {limit} levels deep, the limit for every payload; flatten it")]
    PayloadTooDeep {
        /// The job kind.
        kind: String,
        /// The limit, in levels.
        limit: usize,
    },

    /// A payload could not be turned into or out of JSON.
    #[error("malformed payload for job kind `{kind}`: {source}")]
    MalformedPayload {
        /// The job kind.
        kind: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A payload is larger than the configured limit. From an enqueue
    /// call, nothing was enqueued.
    #[error("payload of {size} bytes for job kind `{kind}` exceeds the limit of {limit} bytes; store large data elsewhere and enqueue a reference to it, or raise the limit with `SchemaRegistry::with_max_payload_bytes`")]
    PayloadTooLarge {
        /// The job kind.
        kind: String,
        /// The payload's size as JSON.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// A job kind is not registered with the schema registry or the worker.
    #[error("unknown job kind `{0}`: register its type (e.g. `SchemaRegistry::register::<MyJob>()` or a handler for it) before enqueueing or processing it")]
    UnknownKind(String),

    /// A job kind was registered twice with different definitions.
    #[error("job kind `{0}` is already registered with a different queue or schema; every kind needs exactly one definition")]
    ConflictingKind(String),

    /// Configuration was refused when it was built.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A cron expression could not be parsed.
    #[error("invalid cron expression `{expression}` for schedule `{schedule}`: {message}; use six fields with seconds, e.g. `0 */5 * * * *`")]
    InvalidCron {
        /// The schedule's name.
        schedule: String,
        /// The expression as given.
        expression: String,
        /// What the parser said.
        message: String,
    },

    /// The lease on a job is gone: it expired and another worker recovered
    /// the job, or the job was already acknowledged. The caller no longer
    /// owns the job and must not act on it.
    #[error("lease lost for job {0}: it expired and the job was recovered by another worker, or it was already acknowledged; the job is no longer yours")]
    LeaseLost(JobId),

    /// A job id is not known to the broker (in the state the call expected).
    #[error("job {0} not found")]
    NotFound(JobId),

    /// Something an operator named is not where they looked: a job that
    /// is not in the dead-letter queue (or not in the state asked about),
    /// a queue no job was ever sent to, an id prefix that matches no job.
    /// The message says what was looked for, where, and what to do.
    #[error("not found: {0}")]
    Missing(String),

    /// A job id prefix matches more than one job.
    #[error("id prefix `{prefix}` matches {count} jobs (such as {examples}); give more characters of the id")]
    AmbiguousId {
        /// The prefix as given.
        prefix: String,
        /// How many jobs it matches.
        count: usize,
        /// A few of the ids it matches.
        examples: String,
    },

    /// A dead job whose stored record cannot be decoded as a job cannot be
    /// retried: it would only be dead-lettered again.
    #[error("job {id} cannot be retried as it is: {reason}; delete it and enqueue a corrected job")]
    NotRetryable {
        /// The job.
        id: JobId,
        /// Why its record cannot run.
        reason: String,
    },

    /// A stored envelope could not be read (corrupt data or an unknown
    /// envelope version).
    #[error("corrupt envelope for job {id}: {message}")]
    CorruptEnvelope {
        /// The job id the envelope was stored under, as text.
        id: String,
        /// What is wrong with it.
        message: String,
    },

    /// The broker cannot be reached (connection refused, dropped, timed out).
    /// The operation may be retried once the broker is back.
    #[error("broker unavailable: {0}; check that it is running and reachable, the operation can be retried")]
    Unavailable(#[source] BoxError),

    /// The broker refused an operation (out of memory, misconfigured,
    /// a script error).
    #[error("broker error: {0}")]
    Backend(#[source] BoxError),

    /// The worker or client was shut down.
    #[error("shut down")]
    Shutdown,
}

/// Shows a JSON Pointer, naming the root explicitly.
fn json_path(path: &str) -> String {
    if path.is_empty() {
        "the payload's root".to_owned()
    } else {
        format!("`{path}`")
    }
}

impl Error {
    /// Whether retrying the same call later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}
