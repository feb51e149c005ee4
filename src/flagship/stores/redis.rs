//! [`RedisStore`]: every FlagShip store in Redis (features `flagship` and
//! `redis`).
//!
//! ## Key layout
//!
//! Keys of one organization share the hash tag `{org}`, so each atomic
//! script touches one Redis Cluster slot (`P` is the prefix, default
//! `flagship`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:orgs` | set | organizations with counters (for rollover and archive reads) |
//! | `P:{org}:counters` | hash | `metric\|period\|start-secs` → live value |
//! | `P:{org}:counter-ends` | zset | live counter field by period end (secs) |
//! | `P:{org}:markers` | set | `field\|warning`, `field\|limit` |
//! | `P:{org}:batch:<id>` | string, expiring | seen batch ids |
//! | `P:{org}:archive` | hash | closed counter field → total |
//! | `P:{org}:archive:<period>` | zset | archived field by period start (secs) |
//! | `P:{org}:daily` | hash | `day\|metric` → daily usage JSON |
//! | `P:{org}:audit` / `P:{org}:audit-order` | hash / zset | event id → JSON; id by time (µs) |
//! | `P:{org}:flags` / `P:{org}:api-keys` | hash | key / id → JSON |
//! | `P:{org}:config` | string | the organization's configuration JSON |
//! | `P:delivery:<key>:<channel>` | string, expiring | delivered notifications: `sent` or `logged`, a space, the time |
//! | `P:health` | string | the latest health report JSON |
//! | `P:seen` | hash | heartbeat or maintenance run name → last seen (ms since the epoch) |
//!
//! A counter update and its batch-id check are one script, as are a
//! period's archive-and-reset, an audit append, and a flag or key change.

use std::{fmt, sync::LazyLock, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use redis::{aio::ConnectionManager, Script};
use serde::{de::DeserializeOwned, Serialize};

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

/// Applies a batch once: KEYS batch, counters, counter-ends; ARGV ttl-ms,
/// then (field, amount, end) per increment. Returns {applied, values}.
static APPLY_BATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local fresh = redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1])
local values = {}
local n = (#ARGV - 1) / 3
for i = 0, n - 1 do
  local field = ARGV[2 + 3 * i]
  if fresh then
    redis.call('HINCRBY', KEYS[2], field, ARGV[3 + 3 * i])
    redis.call('ZADD', KEYS[3], ARGV[4 + 3 * i], field)
  end
  values[i + 1] = redis.call('HGET', KEYS[2], field) or '0'
end
return {fresh and 1 or 0, values}
"#,
    )
});

/// Closes ended periods of one length: KEYS counters, counter-ends,
/// markers, archive, archive index; ARGV now-secs, period. Returns
/// {field, value, ...} of what moved.
static CLOSE_PERIODS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local moved = {}
for _, field in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
  local period, start = string.match(field, '^[^|]*|([^|]*)|(-?%d+)$')
  if period == ARGV[2] then
    local value = redis.call('HGET', KEYS[1], field)
    if value then
      redis.call('HINCRBY', KEYS[4], field, value)
      redis.call('ZADD', KEYS[5], start, field)
      moved[#moved + 1] = field
      moved[#moved + 1] = value
    end
    redis.call('HDEL', KEYS[1], field)
    redis.call('ZREM', KEYS[2], field)
    redis.call('SREM', KEYS[3], field .. '|warning', field .. '|limit')
  end
end
return moved
"#,
    )
});

/// Appends an audit event unless its id is stored: KEYS events, order;
/// ARGV id, JSON, score. Returns 1 if stored.
static APPEND_AUDIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"#,
    )
});

/// Sets a boolean field of a stored JSON object unless it has the value
/// already, recording why and when: KEYS hash; ARGV field, flag name,
/// target ("true"/"false"), reason name, reason, time name, time.
/// Returns -1 (absent), 0 (unchanged) or 1 (changed).
static SET_STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return -1 end
local object = cjson.decode(raw)
local target = ARGV[3] == 'true'
if object[ARGV[2]] == target then return 0 end
object[ARGV[2]] = target
object[ARGV[4]] = ARGV[5]
object[ARGV[6]] = ARGV[7]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(object))
return 1
"#,
    )
});

/// Every FlagShip store in Redis.
///
/// ```no_run
/// # async fn demo() -> flagship_worker::Result<()> {
/// use std::sync::Arc;
/// use flagship_worker::flagship::{stores::RedisStore, FlagshipServices};
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let services = FlagshipServices::from_store(Arc::new(store));
/// # let _ = services; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// Prefix of every key.
    prefix: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn redis_error(e: redis::RedisError) -> Error {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        Error::Unavailable(Box::new(e))
    } else {
        Error::Backend(Box::new(e))
    }
}

fn decode<T: DeserializeOwned>(what: &str, raw: &str) -> Result<T> {
    serde_json::from_str(raw).map_err(|e| Error::Backend(format!("stored {what} is not valid JSON: {e}").into()))
}

fn encode<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Backend(format!("could not encode for Redis: {e}").into()))
}

/// The counter's field within its organization's hashes.
fn field(key: &CounterKey) -> String {
    format!("{}|{}|{}", key.metric, key.period, key.period_start.timestamp())
}

fn parse_field(org_id: &str, field: &str) -> Result<CounterKey> {
    let corrupt = || Error::Backend(format!("stored counter field `{field}` is malformed").into());
    let mut parts = field.split('|');
    let (Some(metric), Some(period), Some(start), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt());
    };
    let period = PeriodKind::ALL
        .into_iter()
        .find(|p| p.as_str() == period)
        .ok_or_else(corrupt)?;
    let start = start
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or_else(corrupt)?;
    Ok(CounterKey {
        org_id: org_id.to_owned(),
        metric: metric.to_owned(),
        period,
        period_start: start,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`); the connection
    /// reconnects by itself after failures.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| Error::InvalidConfig(format!("Redis URL `{url}`: {e}")))?;
        Self::new(client).await
    }

    /// A store on `client`'s server.
    pub async fn new(client: redis::Client) -> Result<Self> {
        let conn = ConnectionManager::new(client).await.map_err(redis_error)?;
        Ok(RedisStore {
            conn,
            prefix: "flagship".to_owned(),
        })
    }

    /// Prefixes every key with `prefix` instead of `flagship`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn org_key(&self, org_id: &str, suffix: &str) -> String {
        format!("{}:{{{org_id}}}:{suffix}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn orgs(&self) -> Result<Vec<String>> {
        let mut orgs: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{}:orgs", self.prefix))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        orgs.sort();
        Ok(orgs)
    }

    async fn set_state(&self, hash: String, field: &str, args: [&str; 6]) -> Result<Option<bool>> {
        let changed: i64 = SET_STATE
            .key(hash)
            .arg(field)
            .arg(&args[..])
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(match changed {
            -1 => None,
            n => Some(n == 1),
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, what: &str, key: String, field: &str) -> Result<Option<T>> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        raw.map(|raw| decode(what, &raw)).transpose()
    }

    async fn put_json<T: Serialize>(&self, key: String, field: &str, value: &T) -> Result<()> {
        redis::cmd("HSET")
            .arg(key)
            .arg(field)
            .arg(encode(value)?)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }
}

#[async_trait]
impl AuditLog for RedisStore {
    async fn append(&self, event: &AuditEvent) -> Result<bool> {
        let score = event.occurred_at.timestamp_micros();
        let stored: i64 = APPEND_AUDIT
            .key(self.org_key(&event.org_id, "audit"))
            .key(self.org_key(&event.org_id, "audit-order"))
            .arg(&event.id)
            .arg(encode(event)?)
            .arg(score)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(stored == 1)
    }

    async fn get(&self, org_id: &str, id: &str) -> Result<Option<AuditEvent>> {
        self.get_json("audit event", self.org_key(org_id, "audit"), id).await
    }

    async fn list(&self, org_id: &str, limit: usize) -> Result<Vec<AuditEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.org_key(org_id, "audit-order"))
            .arg(0)
            .arg(limit - 1)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.org_key(org_id, "audit"))
            .arg(&ids)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        raw.into_iter().flatten().map(|r| decode("audit event", &r)).collect()
    }
}

#[async_trait]
impl UsageStore for RedisStore {
    async fn apply_batch(
        &self,
        org_id: &str,
        batch_id: &str,
        increments: &[CounterIncrement],
        _now: DateTime<Utc>,
        remember_for: Duration,
    ) -> Result<BatchOutcome> {
        redis::cmd("SADD")
            .arg(format!("{}:orgs", self.prefix))
            .arg(org_id)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut invocation = APPLY_BATCH.key(self.org_key(org_id, &format!("batch:{batch_id}")));
        invocation
            .key(self.org_key(org_id, "counters"))
            .key(self.org_key(org_id, "counter-ends"))
            .arg(millis(remember_for));
        for inc in increments {
            let amount = i64::try_from(inc.amount)
                .map_err(|_| Error::InvalidConfig(format!("increment of {} is beyond Redis's integers", inc.amount)))?;
            invocation
                .arg(field(&inc.key))
                .arg(amount)
                .arg(inc.key.period_end().timestamp());
        }
        let (applied, values): (i64, Vec<u64>) =
            invocation.invoke_async(&mut self.conn()).await.map_err(redis_error)?;
        Ok(BatchOutcome {
            applied: applied == 1,
            counters: increments.iter().map(|i| i.key.clone()).zip(values).collect(),
        })
    }

    async fn counter(&self, key: &CounterKey) -> Result<u64> {
        let value: Option<u64> = redis::cmd("HGET")
            .arg(self.org_key(&key.org_id, "counters"))
            .arg(field(key))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(value.unwrap_or(0))
    }

    async fn counters(&self, org_id: &str) -> Result<Vec<(CounterKey, u64)>> {
        let all: Vec<(String, u64)> = redis::cmd("HGETALL")
            .arg(self.org_key(org_id, "counters"))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut counters = all
            .into_iter()
            .map(|(f, v)| Ok((parse_field(org_id, &f)?, v)))
            .collect::<Result<Vec<_>>>()?;
        counters.sort();
        Ok(counters)
    }

    async fn mark_threshold(&self, key: &CounterKey, threshold: Threshold) -> Result<bool> {
        let added: i64 = redis::cmd("SADD")
            .arg(self.org_key(&key.org_id, "markers"))
            .arg(format!("{}|{}", field(key), threshold.as_str()))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(added == 1)
    }

    async fn threshold_marked(&self, key: &CounterKey, threshold: Threshold) -> Result<bool> {
        redis::cmd("SISMEMBER")
            .arg(self.org_key(&key.org_id, "markers"))
            .arg(format!("{}|{}", field(key), threshold.as_str()))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn close_periods(&self, period: PeriodKind, now: DateTime<Utc>) -> Result<Vec<ArchivedPeriod>> {
        let mut moved = Vec::new();
        for org in self.orgs().await? {
            let pairs: Vec<(String, u64)> = CLOSE_PERIODS
                .key(self.org_key(&org, "counters"))
                .key(self.org_key(&org, "counter-ends"))
                .key(self.org_key(&org, "markers"))
                .key(self.org_key(&org, "archive"))
                .key(self.org_key(&org, &format!("archive:{period}")))
                .arg(now.timestamp())
                .arg(period.as_str())
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            for (f, total) in pairs {
                moved.push(ArchivedPeriod {
                    key: parse_field(&org, &f)?,
                    total,
                });
            }
        }
        Ok(moved)
    }
}

#[async_trait]
impl PeriodArchive for RedisStore {
    async fn archived(
        &self,
        period: PeriodKind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ArchivedPeriod>> {
        let mut archived = Vec::new();
        for org in self.orgs().await? {
            let fields: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.org_key(&org, &format!("archive:{period}")))
                .arg(from.timestamp())
                .arg(format!("({}", to.timestamp()))
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            if fields.is_empty() {
                continue;
            }
            let totals: Vec<Option<u64>> = redis::cmd("HMGET")
                .arg(self.org_key(&org, "archive"))
                .arg(&fields)
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            for (f, total) in fields.iter().zip(totals) {
                archived.push(ArchivedPeriod {
                    key: parse_field(&org, f)?,
                    total: total.unwrap_or(0),
                });
            }
        }
        archived.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(archived)
    }

    async fn put_daily(&self, usage: &DailyUsage) -> Result<()> {
        let field = format!("{}|{}", usage.day, usage.metric);
        self.put_json(self.org_key(&usage.org_id, "daily"), &field, usage).await
    }

    async fn daily(&self, org_id: &str, from: NaiveDate, to: NaiveDate) -> Result<Vec<DailyUsage>> {
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.org_key(org_id, "daily"))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut days = all
            .iter()
            .map(|(_, raw)| decode::<DailyUsage>("daily usage", raw))
            .filter(|u| u.as_ref().map_or(true, |u| u.day >= from && u.day < to))
            .collect::<Result<Vec<_>>>()?;
        days.sort_by(|a, b| (a.day, &a.metric).cmp(&(b.day, &b.metric)));
        Ok(days)
    }
}

#[async_trait]
impl FlagStore for RedisStore {
    async fn put_flag(&self, flag: &Flag) -> Result<()> {
        self.put_json(self.org_key(&flag.org_id, "flags"), &flag.key, flag)
            .await
    }

    async fn flag(&self, org_id: &str, key: &str) -> Result<Option<Flag>> {
        self.get_json("flag", self.org_key(org_id, "flags"), key).await
    }

    async fn disable_flag(&self, org_id: &str, key: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>> {
        let at = encode(&at)?;
        let at = at.trim_matches('"');
        let args = ["enabled", "false", "disabledReason", reason, "updatedAt", at];
        self.set_state(self.org_key(org_id, "flags"), key, args).await
    }
}

#[async_trait]
impl ApiKeyStore for RedisStore {
    async fn put_api_key(&self, key: &ApiKey) -> Result<()> {
        self.put_json(self.org_key(&key.org_id, "api-keys"), &key.id, key).await
    }

    async fn api_key(&self, org_id: &str, id: &str) -> Result<Option<ApiKey>> {
        self.get_json("API key", self.org_key(org_id, "api-keys"), id).await
    }

    async fn block_api_key(&self, org_id: &str, id: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>> {
        let at = encode(&at)?;
        let at = at.trim_matches('"');
        let args = ["blocked", "true", "blockedReason", reason, "blockedAt", at];
        self.set_state(self.org_key(org_id, "api-keys"), id, args).await
    }
}

#[async_trait]
impl OrgConfigStore for RedisStore {
    async fn put_org(&self, config: &OrgConfig) -> Result<()> {
        config.validate().map_err(Error::InvalidConfig)?;
        redis::cmd("SET")
            .arg(self.org_key(&config.org_id, "config"))
            .arg(encode(config)?)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn org(&self, org_id: &str) -> Result<Option<OrgConfig>> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.org_key(org_id, "config"))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        raw.map(|raw| super::decode_org_config(&raw)).transpose()
    }
}

#[async_trait]
impl DeliveryLog for RedisStore {
    async fn delivery(&self, key: &str, channel: Channel) -> Result<Option<Delivery>> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(format!("{}:delivery:{key}:{}", self.prefix, channel.as_str()))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        // Entries written before deliveries said how hold a timestamp: sent.
        Ok(raw.map(|raw| {
            let via = raw.split_once(' ').map_or("sent", |(via, _)| via);
            Delivery::from_name(via).unwrap_or(Delivery::Sent)
        }))
    }

    async fn record_delivery(&self, key: &str, channel: Channel, via: Delivery, at: DateTime<Utc>) -> Result<()> {
        redis::cmd("SET")
            .arg(format!("{}:delivery:{key}:{}", self.prefix, channel.as_str()))
            .arg(format!("{} {}", via.as_str(), at.to_rfc3339()))
            .arg("PX")
            .arg(millis(DELIVERY_RETENTION))
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }
}

#[async_trait]
impl HealthStore for RedisStore {
    async fn record_health(&self, report: &HealthRecord) -> Result<()> {
        redis::cmd("SET")
            .arg(format!("{}:health", self.prefix))
            .arg(encode(report)?)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn latest(&self) -> Result<Option<HealthRecord>> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(format!("{}:health", self.prefix))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        raw.map(|raw| decode("health report", &raw)).transpose()
    }

    async fn record_seen(&self, name: &str, at: DateTime<Utc>) -> Result<()> {
        redis::cmd("HSET")
            .arg(format!("{}:seen", self.prefix))
            .arg(name)
            .arg(at.timestamp_millis())
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn seen(&self, prefix: &str) -> Result<Vec<(String, DateTime<Utc>)>> {
        let all: Vec<(String, i64)> = redis::cmd("HGETALL")
            .arg(format!("{}:seen", self.prefix))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut seen = all
            .into_iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, ms)| {
                DateTime::from_timestamp_millis(ms)
                    .map(|at| (name, at))
                    .ok_or_else(|| Error::Backend(format!("a stored time {ms} is out of range").into()))
            })
            .collect::<Result<Vec<_>>>()?;
        seen.sort();
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_fields_round_trip() {
        let key = CounterKey::containing(
            "acme",
            "api.calls_v2",
            PeriodKind::Monthly,
            "1969-07-20T20:17:00Z".parse().unwrap(),
        );
        assert_eq!(parse_field("acme", &field(&key)).unwrap(), key);
        assert!(parse_field("acme", "a|weekly|0").is_err());
        assert!(parse_field("acme", "a|hourly|x").is_err());
        assert!(parse_field("acme", "a|hourly|0|extra").is_err());
    }
}
