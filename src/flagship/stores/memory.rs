//! [`MemoryStore`]: every FlagShip store in process memory.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use super::{
    ApiKeyStore, AuditLog, BatchOutcome, Channel, CounterIncrement, Delivery, DeliveryLog, FlagStore, HealthStore,
    OrgConfigStore, PeriodArchive, UsageStore, DELIVERY_RETENTION,
};
use crate::{
    flagship::{
        jobs::AuditEvent,
        model::{ApiKey, ArchivedPeriod, CounterKey, DailyUsage, Flag, HealthRecord, OrgConfig, PeriodKind, Threshold},
    },
    Error, Result,
};

/// Every FlagShip store in memory, behind one lock: for tests, demos and
/// single-process deployments that may lose their state on restart.
///
/// Each store trait's operation takes the lock once, so each is atomic.
///
/// ```
/// use std::sync::Arc;
/// use flagship_worker::flagship::{stores::MemoryStore, FlagshipServices};
/// let services = FlagshipServices::from_store(Arc::new(MemoryStore::new()));
/// # let _ = services;
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Audit events by organization, then id.
    audit: HashMap<String, HashMap<String, AuditEvent>>,
    /// Live counters.
    counters: BTreeMap<CounterKey, u64>,
    /// Threshold markers of live counters.
    markers: BTreeSet<(CounterKey, Threshold)>,
    /// Seen (organization, batch id)s and when they may be forgotten.
    batches: HashMap<(String, String), DateTime<Utc>>,
    /// Closed periods' totals.
    archive: BTreeMap<CounterKey, u64>,
    /// Daily usage by (organization, day, metric).
    daily: BTreeMap<(String, NaiveDate, String), DailyUsage>,
    flags: HashMap<(String, String), Flag>,
    api_keys: HashMap<(String, String), ApiKey>,
    orgs: HashMap<String, OrgConfig>,
    /// Deliveries by (notification key, channel), with how and when they happened.
    deliveries: HashMap<(String, Channel), (Delivery, DateTime<Utc>)>,
    health: Option<HealthRecord>,
    /// Heartbeats and maintenance runs by name, with when they were last seen.
    seen: BTreeMap<String, DateTime<Utc>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn append(&self, event: &AuditEvent) -> Result<bool> {
        let mut state = self.state();
        let events = state.audit.entry(event.org_id.clone()).or_default();
        if events.contains_key(&event.id) {
            return Ok(false);
        }
        events.insert(event.id.clone(), event.clone());
        Ok(true)
    }

    async fn get(&self, org_id: &str, id: &str) -> Result<Option<AuditEvent>> {
        Ok(self.state().audit.get(org_id).and_then(|e| e.get(id)).cloned())
    }

    async fn list(&self, org_id: &str, limit: usize) -> Result<Vec<AuditEvent>> {
        let state = self.state();
        let mut events: Vec<AuditEvent> = state
            .audit
            .get(org_id)
            .map(|e| e.values().cloned().collect())
            .unwrap_or_default();
        events.sort_by(|a, b| (a.occurred_at, &a.id).cmp(&(b.occurred_at, &b.id)));
        events.truncate(limit);
        Ok(events)
    }
}

#[async_trait]
impl UsageStore for MemoryStore {
    async fn apply_batch(
        &self,
        org_id: &str,
        batch_id: &str,
        increments: &[CounterIncrement],
        now: DateTime<Utc>,
        remember_for: Duration,
    ) -> Result<BatchOutcome> {
        let mut state = self.state();
        state.batches.retain(|_, forget_at| *forget_at > now);
        let applied = !state.batches.contains_key(&(org_id.to_owned(), batch_id.to_owned()));
        if applied {
            // Check every sum before changing anything, so a failure leaves no trace.
            for inc in increments {
                let current = state.counters.get(&inc.key).copied().unwrap_or(0);
                if current.checked_add(inc.amount).is_none() {
                    return Err(Error::InvalidConfig(format!(
                        "usage counter {} would overflow",
                        inc.key
                    )));
                }
            }
            state
                .batches
                .insert((org_id.to_owned(), batch_id.to_owned()), now + delta(remember_for));
            for inc in increments {
                *state.counters.entry(inc.key.clone()).or_insert(0) += inc.amount;
            }
        }
        let counters = increments
            .iter()
            .map(|inc| (inc.key.clone(), state.counters.get(&inc.key).copied().unwrap_or(0)))
            .collect();
        Ok(BatchOutcome { applied, counters })
    }

    async fn counter(&self, key: &CounterKey) -> Result<u64> {
        Ok(self.state().counters.get(key).copied().unwrap_or(0))
    }

    async fn counters(&self, org_id: &str) -> Result<Vec<(CounterKey, u64)>> {
        Ok(self
            .state()
            .counters
            .iter()
            .filter(|(k, _)| k.org_id == org_id)
            .map(|(k, v)| (k.clone(), *v))
            .collect())
    }

    async fn mark_threshold(&self, key: &CounterKey, threshold: Threshold) -> Result<bool> {
        Ok(self.state().markers.insert((key.clone(), threshold)))
    }

    async fn threshold_marked(&self, key: &CounterKey, threshold: Threshold) -> Result<bool> {
        Ok(self.state().markers.contains(&(key.clone(), threshold)))
    }

    async fn close_periods(&self, period: PeriodKind, now: DateTime<Utc>) -> Result<Vec<ArchivedPeriod>> {
        let mut state = self.state();
        let closed: Vec<(CounterKey, u64)> = state
            .counters
            .iter()
            .filter(|(k, _)| k.period == period && k.period_end() <= now)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut moved = Vec::with_capacity(closed.len());
        for (key, value) in closed {
            state.counters.remove(&key);
            state.markers.retain(|(k, _)| k != &key);
            let total = state.archive.entry(key.clone()).or_insert(0);
            *total = total.saturating_add(value);
            moved.push(ArchivedPeriod { key, total: value });
        }
        Ok(moved)
    }
}

#[async_trait]
impl PeriodArchive for MemoryStore {
    async fn archived(
        &self,
        period: PeriodKind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ArchivedPeriod>> {
        Ok(self
            .state()
            .archive
            .iter()
            .filter(|(k, _)| k.period == period && k.period_start >= from && k.period_start < to)
            .map(|(k, v)| ArchivedPeriod {
                key: k.clone(),
                total: *v,
            })
            .collect())
    }

    async fn put_daily(&self, usage: &DailyUsage) -> Result<()> {
        let key = (usage.org_id.clone(), usage.day, usage.metric.clone());
        self.state().daily.insert(key, usage.clone());
        Ok(())
    }

    async fn daily(&self, org_id: &str, from: NaiveDate, to: NaiveDate) -> Result<Vec<DailyUsage>> {
        Ok(self
            .state()
            .daily
            .values()
            .filter(|u| u.org_id == org_id && u.day >= from && u.day < to)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl FlagStore for MemoryStore {
    async fn put_flag(&self, flag: &Flag) -> Result<()> {
        self.state()
            .flags
            .insert((flag.org_id.clone(), flag.key.clone()), flag.clone());
        Ok(())
    }

    async fn flag(&self, org_id: &str, key: &str) -> Result<Option<Flag>> {
        Ok(self.state().flags.get(&(org_id.to_owned(), key.to_owned())).cloned())
    }

    async fn disable_flag(&self, org_id: &str, key: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>> {
        let mut state = self.state();
        let Some(flag) = state.flags.get_mut(&(org_id.to_owned(), key.to_owned())) else {
            return Ok(None);
        };
        if !flag.enabled {
            return Ok(Some(false));
        }
        flag.enabled = false;
        flag.disabled_reason = Some(reason.to_owned());
        flag.updated_at = Some(at);
        Ok(Some(true))
    }
}

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn put_api_key(&self, key: &ApiKey) -> Result<()> {
        self.state()
            .api_keys
            .insert((key.org_id.clone(), key.id.clone()), key.clone());
        Ok(())
    }

    async fn api_key(&self, org_id: &str, id: &str) -> Result<Option<ApiKey>> {
        Ok(self.state().api_keys.get(&(org_id.to_owned(), id.to_owned())).cloned())
    }

    async fn block_api_key(&self, org_id: &str, id: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>> {
        let mut state = self.state();
        let Some(key) = state.api_keys.get_mut(&(org_id.to_owned(), id.to_owned())) else {
            return Ok(None);
        };
        if key.blocked {
            return Ok(Some(false));
        }
        key.blocked = true;
        key.blocked_reason = Some(reason.to_owned());
        key.blocked_at = Some(at);
        Ok(Some(true))
    }
}

#[async_trait]
impl OrgConfigStore for MemoryStore {
    async fn put_org(&self, config: &OrgConfig) -> Result<()> {
        config.validate().map_err(Error::InvalidConfig)?;
        self.state().orgs.insert(config.org_id.clone(), config.clone());
        Ok(())
    }

    async fn org(&self, org_id: &str) -> Result<Option<OrgConfig>> {
        Ok(self.state().orgs.get(org_id).cloned())
    }
}

#[async_trait]
impl DeliveryLog for MemoryStore {
    async fn delivery(&self, key: &str, channel: Channel) -> Result<Option<Delivery>> {
        Ok(self
            .state()
            .deliveries
            .get(&(key.to_owned(), channel))
            .map(|(via, _)| *via))
    }

    async fn record_delivery(&self, key: &str, channel: Channel, via: Delivery, at: DateTime<Utc>) -> Result<()> {
        let mut state = self.state();
        let horizon = at - delta(DELIVERY_RETENTION);
        state.deliveries.retain(|_, (_, when)| *when > horizon);
        state.deliveries.insert((key.to_owned(), channel), (via, at));
        Ok(())
    }
}

#[async_trait]
impl HealthStore for MemoryStore {
    async fn record_health(&self, report: &HealthRecord) -> Result<()> {
        self.state().health = Some(report.clone());
        Ok(())
    }

    async fn latest(&self) -> Result<Option<HealthRecord>> {
        Ok(self.state().health.clone())
    }

    async fn record_seen(&self, name: &str, at: DateTime<Utc>) -> Result<()> {
        self.state().seen.insert(name.to_owned(), at);
        Ok(())
    }

    async fn seen(&self, prefix: &str) -> Result<Vec<(String, DateTime<Utc>)>> {
        Ok(self
            .state()
            .seen
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, at)| (name.clone(), *at))
            .collect())
    }
}
