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
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct JobId(Uuid);

/// One 128-bit write, rather than the byte array's length and bytes: ids
/// are hashed several times per job on the hot path.
impl std::hash::Hash for JobId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.0.as_u128());
    }
}

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

/// Hashes job ids and job kinds cheaply, much faster than SipHash on the
/// hot path: each 64-bit word goes through a folded 128-bit multiply, which
/// spreads every input bit over the low bits (the bucket) and the high bits
/// (the tag) alike. Built by [`IdBuild`] with a per-process random seed.
///
/// Ids are producer input, and their layouts vary: a UUID v7 from the
/// `uuid` crate is a millisecond timestamp, a counter and only 32 random
/// bits; other generators add one to the low end of the id within a
/// millisecond (monotonic ULIDs). Every bit is mixed in, so none of these
/// crowd into a few buckets, and the seed keeps ids crafted to collide from
/// being computed offline.
#[derive(Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn mix(&mut self, word: u64) {
        let product = u128::from(self.0 ^ word) * u128::from(Self::K);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_u128(&mut self, n: u128) {
        self.mix((n >> 64) as u64);
        self.mix(n as u64);
    }
}

/// Builds [`IdHasher`]s from a random seed chosen once per process.
#[derive(Clone, Copy)]
pub(crate) struct IdBuild {
    seed: u64,
}

impl Default for IdBuild {
    fn default() -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        IdBuild {
            seed: *SEED.get_or_init(rand::random),
        }
    }
}

impl std::hash::BuildHasher for IdBuild {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.seed)
    }
}

pub(crate) type IdMap<V> = std::collections::HashMap<JobId, V, IdBuild>;

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

#[cfg(test)]
mod hash_tests {
    use std::{collections::HashSet, hash::BuildHasher};

    use super::*;

    /// Of `ids`, how many distinct buckets (of a table of 8,192) and how
    /// many distinct (bucket, tag) pairs: hashbrown probes by bucket and
    /// compares the 7-bit tag first, so equal pairs mean full collisions.
    fn spread(ids: &[JobId]) -> (usize, usize) {
        let build = IdBuild::default();
        let hashes: Vec<u64> = ids.iter().map(|id| build.hash_one(id)).collect();
        let buckets: HashSet<u64> = hashes.iter().map(|h| h & 8191).collect();
        let pairs: HashSet<(u64, u64)> = hashes.iter().map(|h| (h & 8191, h >> 57)).collect();
        (buckets.len(), pairs.len())
    }

    fn ids(make: impl Fn(u128) -> u128) -> Vec<JobId> {
        (0..4096).map(|i| JobId::from(Uuid::from_u128(make(i)))).collect()
    }

    /// Ids of every layout a producer might send spread like random
    /// hashes: about 3,200 of 8,192 buckets for 4,096 ids, and almost no
    /// (bucket, tag) pair twice.
    #[test]
    fn ids_of_every_layout_spread_over_buckets_and_tags() {
        let time = 0x0190_0000_0000_7000u128 << 64;
        let layouts = [
            ("uuid v7 burst", (0..4096).map(|_| JobId::new()).collect::<Vec<_>>()),
            // Monotonic ULIDs and similar: one added to the low end.
            ("low-end counter", ids(|i| time | (0x8000_0000_0000_0000 + i))),
            // Time-based (v1-like): the low word fixed, the high word moving.
            ("fixed low word", ids(|i| ((1_000_000 + i) << 64) | 0xabcd_ef01)),
            ("random", ids(|_| rand::random())),
        ];
        for (layout, ids) in layouts {
            let (buckets, pairs) = spread(&ids);
            assert!(buckets > 2_800, "{layout}: {buckets} buckets used");
            assert!(pairs > 4_000, "{layout}: {pairs} distinct (bucket, tag) pairs of 4,096");
        }
    }
}
