//! Jobs: the [`Job`] trait, job ids and queue names.

use std::{fmt, str::FromStr, sync::Arc};

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A typed job: its payload, its wire name and the queue it runs on.
///
/// The payload's JSON Schema (derived with `schemars`) is its contract:
/// enqueue and reservation validate against it.
///
/// ```
/// use flagship_worker::Job;
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct SendWelcome {
///     user_id: u64,
/// }
///
/// impl Job for SendWelcome {
///     const KIND: &'static str = "send-welcome";
///     const QUEUE: &'static str = "emails";
///
///     fn idempotency_key(&self) -> Option<String> {
///         Some(format!("welcome:{}", self.user_id))
///     }
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The stable wire name of this job type, e.g. `"audit-event"`. Never
    /// change it once jobs of this kind may be in flight.
    const KIND: &'static str;
    /// The queue jobs of this kind are enqueued on, e.g. `"flagship:audit"`.
    const QUEUE: &'static str;

    /// A key that makes enqueueing idempotent: while a job with the same key
    /// is pending, running, or completed within the broker's retention
    /// window, enqueueing another one returns
    /// [`EnqueueOutcome::Duplicate`](crate::EnqueueOutcome::Duplicate).
    fn idempotency_key(&self) -> Option<String> {
        None
    }
}

/// A job's unique id: a UUID v7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for JobId {
    fn from(value: Uuid) -> Self {
        JobId(value)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

impl FromStr for JobId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(JobId)
            .map_err(|e| Error::InvalidConfig(format!("`{s}` is not a job id (a UUID): {e}")))
    }
}

/// The longest queue name accepted, in bytes.
pub const MAX_QUEUE_NAME_LEN: usize = 128;

/// A validated queue name: 1 to [`MAX_QUEUE_NAME_LEN`] bytes of ASCII
/// letters, digits and `: - _ .`.
///
/// The character set keeps names safe inside Redis key names and hash tags
/// (`{queue}`), URLs and log lines. Cloning is cheap.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// Validates and wraps a queue name.
    ///
    /// ```
    /// use flagship_worker::QueueName;
    /// assert!(QueueName::new("flagship:audit").is_ok());
    /// assert!(QueueName::new("").is_err());
    /// assert!(QueueName::new("has space").is_err());
    /// ```
    pub fn new(name: impl AsRef<str>) -> Result<Self> {
        let name = name.as_ref();
        if name.is_empty() {
            return Err(Error::InvalidConfig(
                "queue name is empty; give every queue a name such as `emails`".into(),
            ));
        }
        if name.len() > MAX_QUEUE_NAME_LEN {
            return Err(Error::InvalidConfig(format!(
                "queue name of {} bytes is longer than the limit of {MAX_QUEUE_NAME_LEN}",
                name.len()
            )));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.')))
        {
            return Err(Error::InvalidConfig(format!(
                "queue name `{}` contains {bad:?}; use ASCII letters, digits and `: - _ .` only",
                name.escape_debug()
            )));
        }
        Ok(QueueName(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueName({:?})", &*self.0)
    }
}

impl AsRef<str> for QueueName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for QueueName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        QueueName::new(s)
    }
}

impl TryFrom<&str> for QueueName {
    type Error = Error;

    fn try_from(value: &str) -> Result<Self> {
        QueueName::new(value)
    }
}

impl Serialize for QueueName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for QueueName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        QueueName::new(&*s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for QueueName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "QueueName".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_QUEUE_NAME_LEN,
            "pattern": "^[A-Za-z0-9:._-]+$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_validated() {
        assert!(QueueName::new("flagship:auto-actions").is_ok());
        assert!(QueueName::new("a".repeat(MAX_QUEUE_NAME_LEN)).is_ok());
        assert!(QueueName::new("a".repeat(MAX_QUEUE_NAME_LEN + 1)).is_err());
        assert!(QueueName::new("{tag}").is_err());
        assert!(QueueName::new("new\nline").is_err());
        let err = QueueName::new("").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn job_ids_round_trip_and_sort_by_time() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<JobId>().unwrap(), a);
        assert!("nope".parse::<JobId>().is_err());
    }
}
