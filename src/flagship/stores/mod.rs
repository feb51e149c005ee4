//! Where FlagShip keeps its state: one trait per kind of state, each
//! implemented in memory ([`MemoryStore`]), with the `redis` feature in
//! Redis (`RedisStore`) and with the `postgres` feature in PostgreSQL
//! (`PostgresStore`).
//!
//! Every write a handler makes is idempotent, so that running a job twice
//! leaves the same state as running it once.

use std::{fmt, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::{
    jobs::AuditEvent,
    model::{ApiKey, ArchivedPeriod, CounterKey, DailyUsage, Flag, HealthRecord, OrgConfig, PeriodKind, Threshold},
};
use crate::Result;

mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

/// The audit trail.
///
/// # Contract
///
/// - [`append`](AuditLog::append) MUST store an event unless one with the
///   same organization and id is stored, and say whether it did; a
///   duplicate changes nothing.
/// - [`list`](AuditLog::list) MUST return an organization's events ordered
///   by `occurredAt`, then id.
#[async_trait]
pub trait AuditLog: Send + Sync + fmt::Debug + 'static {
    /// Stores `event` unless its id is taken; `true` if it was stored.
    async fn append(&self, event: &AuditEvent) -> Result<bool>;

    /// One event.
    async fn get(&self, org_id: &str, id: &str) -> Result<Option<AuditEvent>>;

    /// The organization's first `limit` events, oldest first.
    async fn list(&self, org_id: &str, limit: usize) -> Result<Vec<AuditEvent>>;
}

/// An amount to add to a usage counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterIncrement {
    /// The counter.
    pub key: CounterKey,
    /// How much to add.
    pub amount: u64,
}

/// What [`UsageStore::apply_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Whether the increments were applied (`false`: the batch was seen
    /// before and nothing changed).
    pub applied: bool,
    /// Every incremented counter's value after the call, in the order of
    /// the increments.
    pub counters: Vec<(CounterKey, u64)>,
}

/// Usage counters with batch de-duplication and threshold markers.
///
/// # Contract
///
/// - [`apply_batch`](UsageStore::apply_batch) MUST be atomic: either the
///   batch id is recorded and every increment applied, or (the batch id
///   was already recorded) nothing changes. Concurrent calls with the same
///   batch id apply it once. A batch id is remembered for at least
///   `remember_for`.
/// - [`mark_threshold`](UsageStore::mark_threshold) MUST return `true` to
///   exactly one caller per (counter, threshold).
/// - [`close_periods`](UsageStore::close_periods) MUST atomically move
///   each counter of `period` whose period ended at or before `now` into
///   the period archive (adding to what is archived for it), delete it and
///   its threshold markers. A second call finds nothing to move.
#[async_trait]
pub trait UsageStore: Send + Sync + fmt::Debug + 'static {
    /// Applies a batch's increments once per (organization, batch id).
    async fn apply_batch(
        &self,
        org_id: &str,
        batch_id: &str,
        increments: &[CounterIncrement],
        now: DateTime<Utc>,
        remember_for: Duration,
    ) -> Result<BatchOutcome>;

    /// A counter's current value (0 if it does not exist).
    async fn counter(&self, key: &CounterKey) -> Result<u64>;

    /// Every live counter of an organization, sorted by key.
    async fn counters(&self, org_id: &str) -> Result<Vec<(CounterKey, u64)>>;

    /// Marks `threshold` of a counter as handled; `true` if it was not before.
    async fn mark_threshold(&self, key: &CounterKey, threshold: Threshold) -> Result<bool>;

    /// Whether `threshold` of a counter is marked as handled.
    async fn threshold_marked(&self, key: &CounterKey, threshold: Threshold) -> Result<bool>;

    /// Closes every ended period of length `period`: archives, deletes and
    /// unmarks its counters. Returns what was moved.
    async fn close_periods(&self, period: PeriodKind, now: DateTime<Utc>) -> Result<Vec<ArchivedPeriod>>;
}

/// Closed periods' totals and the daily usage aggregated from them.
///
/// # Contract
///
/// - [`archived`](PeriodArchive::archived) MUST return every archived
///   period of length `period` starting in `[from, to)`, across
///   organizations, sorted by key.
/// - [`put_daily`](PeriodArchive::put_daily) MUST replace the entry for the
///   same (organization, metric, day): writing it twice is writing it once.
#[async_trait]
pub trait PeriodArchive: Send + Sync + fmt::Debug + 'static {
    /// Archived periods starting in `[from, to)`.
    async fn archived(&self, period: PeriodKind, from: DateTime<Utc>, to: DateTime<Utc>)
        -> Result<Vec<ArchivedPeriod>>;

    /// Stores (replaces) one day's usage of a metric.
    async fn put_daily(&self, usage: &DailyUsage) -> Result<()>;

    /// An organization's daily usage for days in `[from, to)`, sorted by
    /// day, then metric.
    async fn daily(&self, org_id: &str, from: NaiveDate, to: NaiveDate) -> Result<Vec<DailyUsage>>;
}

/// Reads an organization's configuration stored as JSON, refusing one
/// written before limits had their own actions: its `onLimitExceeded`
/// would otherwise be dropped without a word, and no limit enforced.
pub(crate) fn decode_org_config(raw: &str) -> Result<OrgConfig> {
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| crate::Error::Backend(format!("a stored organization configuration is not JSON: {e}").into()))?;
    if value.get("onLimitExceeded").is_some() {
        let org = value.get("orgId").and_then(|o| o.as_str()).unwrap_or("?");
        return Err(crate::Error::InvalidConfig(format!(
            "the stored configuration of organization `{}` has `onLimitExceeded`, which this version replaced by \
             each limit's `onExceeded`: move the actions into the limits they belong to and store it again \
             with put_org",
            org.escape_debug()
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| crate::Error::Backend(format!("a stored organization configuration cannot be read: {e}").into()))
}

/// Feature flags.
///
/// # Contract
///
/// [`disable_flag`](FlagStore::disable_flag) MUST be idempotent: disabling a
/// disabled flag changes nothing and returns `Some(false)`.
#[async_trait]
pub trait FlagStore: Send + Sync + fmt::Debug + 'static {
    /// Creates or replaces a flag.
    async fn put_flag(&self, flag: &Flag) -> Result<()>;

    /// One flag.
    async fn flag(&self, org_id: &str, key: &str) -> Result<Option<Flag>>;

    /// Turns a flag off, recording why: `None` if there is no such flag,
    /// `Some(true)` if it was on, `Some(false)` if it was already off.
    async fn disable_flag(&self, org_id: &str, key: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>>;
}

/// API keys (their ids and state, never their secrets).
///
/// # Contract
///
/// [`block_api_key`](ApiKeyStore::block_api_key) MUST be idempotent like
/// [`FlagStore::disable_flag`].
#[async_trait]
pub trait ApiKeyStore: Send + Sync + fmt::Debug + 'static {
    /// Creates or replaces a key.
    async fn put_api_key(&self, key: &ApiKey) -> Result<()>;

    /// One key.
    async fn api_key(&self, org_id: &str, id: &str) -> Result<Option<ApiKey>>;

    /// Blocks a key: `None` if there is no such key, `Some(true)` if it was
    /// active, `Some(false)` if it was already blocked.
    async fn block_api_key(&self, org_id: &str, id: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>>;
}

/// Organizations' configuration.
///
/// # Contract
///
/// [`put_org`](OrgConfigStore::put_org) MUST refuse a configuration that
/// fails [`OrgConfig::validate`] with [`Error::InvalidConfig`](crate::Error::InvalidConfig).
#[async_trait]
pub trait OrgConfigStore: Send + Sync + fmt::Debug + 'static {
    /// Creates or replaces an organization's configuration.
    async fn put_org(&self, config: &OrgConfig) -> Result<()>;

    /// An organization's configuration.
    async fn org(&self, org_id: &str) -> Result<Option<OrgConfig>>;
}

/// A notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Email.
    Email,
    /// Webhook.
    Webhook,
}

impl Channel {
    /// `email` or `webhook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }
}

/// How long the delivery log remembers a delivery.
pub const DELIVERY_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How a channel delivered a notification: for real, or only into the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Handed to the mail service or the webhook receiver, which accepted it.
    Sent,
    /// Only written to the worker's log (a [`LoggingMailer`](super::notify::LoggingMailer)
    /// or [`LoggingWebhookSender`](super::notify::LoggingWebhookSender)):
    /// nobody was told.
    Logged,
}

impl Delivery {
    /// `sent` or `logged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::Logged => "logged",
        }
    }

    /// The delivery named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        [Delivery::Sent, Delivery::Logged]
            .into_iter()
            .find(|d| d.as_str() == name)
    }
}

/// Which notification channels have delivered which notifications, and
/// how, so a retry sends only what failed.
///
/// # Contract
///
/// A recorded delivery MUST be reported by
/// [`delivery`](DeliveryLog::delivery), with how it was delivered, for at
/// least [`DELIVERY_RETENTION`].
#[async_trait]
pub trait DeliveryLog: Send + Sync + fmt::Debug + 'static {
    /// How `channel` delivered notification `key`, if it did.
    async fn delivery(&self, key: &str, channel: Channel) -> Result<Option<Delivery>>;

    /// Records that `channel` delivered notification `key` (`via` says
    /// whether it was sent or only logged).
    async fn record_delivery(&self, key: &str, channel: Channel, via: Delivery, at: DateTime<Utc>) -> Result<()>;

    /// Whether `channel` delivered notification `key`, sent or logged.
    async fn delivered(&self, key: &str, channel: Channel) -> Result<bool> {
        Ok(self.delivery(key, channel).await?.is_some())
    }
}

/// The latest health check result, for the admin API, and when things the
/// health check watches were last seen: workers' heartbeats
/// (`worker:<id>`) and maintenance runs (`schedule:<name>`).
///
/// # Contract
///
/// - [`latest`](HealthStore::latest) MUST return the most recently recorded
///   report.
/// - [`seen`](HealthStore::seen) MUST return every name recorded by
///   [`record_seen`](HealthStore::record_seen) that starts with the prefix,
///   with the time of its latest record, sorted by name.
#[async_trait]
pub trait HealthStore: Send + Sync + fmt::Debug + 'static {
    /// Records a report, replacing the previous one.
    async fn record_health(&self, report: &HealthRecord) -> Result<()>;

    /// The latest report, if any check has run.
    async fn latest(&self) -> Result<Option<HealthRecord>>;

    /// Records that `name` was seen (alive, or run) at `at`, replacing its
    /// previous time.
    async fn record_seen(&self, name: &str, at: DateTime<Utc>) -> Result<()>;

    /// Every name starting with `prefix`, and when it was last seen.
    async fn seen(&self, prefix: &str) -> Result<Vec<(String, DateTime<Utc>)>>;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn configurations_with_the_old_org_wide_actions_are_refused() {
        let old = r#"{"orgId":"acme","limits":[],"onLimitExceeded":{"disableFlags":["x"]}}"#;
        let err = decode_org_config(old).unwrap_err().to_string();
        assert!(err.contains("onExceeded") && err.contains("acme"), "{err}");
        let new = serde_json::to_string(&OrgConfig::new("acme")).unwrap();
        assert_eq!(decode_org_config(&new).unwrap(), OrgConfig::new("acme"));
    }

    fn _object_safe(_: Arc<dyn AuditLog>, _: Arc<dyn UsageStore>, _: Arc<dyn PeriodArchive>, _: Arc<dyn FlagStore>) {}
    fn _more_object_safe(
        _: Arc<dyn ApiKeyStore>,
        _: Arc<dyn OrgConfigStore>,
        _: Arc<dyn DeliveryLog>,
        _: Arc<dyn HealthStore>,
    ) {
    }
}
