//! [`PostgresStore`]: every FlagShip store in PostgreSQL (features
//! `flagship` and `postgres`).
//!
//! The tables live in a schema of their own (default [`DEFAULT_STORE_SCHEMA`]),
//! created by embedded, versioned migrations when the store connects
//! (`migrations/` in this folder, recorded in `{schema}.schema_migrations`).
//! Each trait operation is one statement or one transaction, so each is
//! atomic: a usage batch and its id are recorded together, and a period's
//! archive row, its counter's deletion and its markers' deletion are one
//! statement. The tables are described in `docs/flagship.md`.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool, Row,
};

use super::{
    ApiKeyStore, AuditLog, Channel, Delivery, DeliveryLog, FlagStore, HealthStore, OrgConfigStore, DELIVERY_RETENTION,
};
use crate::{
    flagship::{
        jobs::AuditEvent,
        model::{ApiKey, Flag, HealthRecord, OrgConfig, PeriodKind},
    },
    Error, Result,
};

mod control;
mod migrate;
mod sql;
mod usage;

use self::sql::{Switch, SwitchColumns};
pub use self::{
    control::{PostgresControl, SwitchTable},
    sql::check_identifier,
};

/// The schema [`PostgresStore`] keeps its tables in unless told otherwise.
pub const DEFAULT_STORE_SCHEMA: &str = "flagship";

/// Every FlagShip store in PostgreSQL, for deployments whose state must
/// survive restarts and be queried with SQL (an audit page, billing).
///
/// Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// use std::sync::Arc;
/// use flagship_worker::flagship::{stores::PostgresStore, FlagshipServices};
///
/// # async fn run() -> flagship_worker::Result<()> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/app").await?;
/// let services = FlagshipServices::from_store(Arc::new(store));
/// # let _ = services; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// The connections every operation runs on.
    pool: PgPool,
    /// The schema holding the tables, quoted for statements.
    schema: String,
    /// The statement disabling a flag of `{schema}.flags`.
    disable_flag: Switch,
    /// The statement blocking a key of `{schema}.api_keys`.
    block_api_key: Switch,
}

impl PostgresStore {
    /// Connects to `url` (a pool of up to 10 connections) and migrates the
    /// tables in schema [`DEFAULT_STORE_SCHEMA`].
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::InvalidConfig(format!("the stores' database URL is not a PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(db_error)?;
        Self::with_pool(pool, DEFAULT_STORE_SCHEMA).await
    }

    /// A store on `pool` with its tables in `schema` (lower-case letters,
    /// digits and `_`), migrating them first. Stores in different schemas of
    /// one database are independent.
    pub async fn with_pool(pool: PgPool, schema: &str) -> Result<Self> {
        let schema = sql::quote(schema)?;
        if schema.contains('.') {
            return Err(Error::InvalidConfig(format!(
                "the stores' schema {schema} must be one name, without `.`"
            )));
        }
        let mut conn = pool.acquire().await.map_err(db_error)?;
        migrate::migrate(conn.as_mut(), &schema).await?;
        let (flags, api_keys) = (format!("{schema}.flags"), format!("{schema}.api_keys"));
        let disable_flag = Switch::new(SwitchColumns {
            table: &flags,
            org: "org_id",
            id: "key",
            state: "enabled",
            target: false,
            reason: Some("disabled_reason"),
            time: Some("updated_at"),
        });
        let block_api_key = Switch::new(SwitchColumns {
            table: &api_keys,
            org: "org_id",
            id: "id",
            state: "blocked",
            target: true,
            reason: Some("blocked_reason"),
            time: Some("blocked_at"),
        });
        Ok(PostgresStore {
            pool,
            schema,
            disable_flag,
            block_api_key,
        })
    }

    /// The pool, for the caller's own queries (e.g. reading the audit trail
    /// for an audit page).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn sql(&self, statement: &str) -> String {
        statement.replace("{schema}", &self.schema)
    }
}

/// Maps a sqlx error into the crate's [`Error`]: a lost connection or a
/// busy pool is [`Error::Unavailable`] (retry later), an out-of-range
/// counter [`Error::InvalidConfig`], anything else [`Error::Backend`].
pub(crate) fn db_error(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            Error::Unavailable(Box::new(e))
        }
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if code == "22003" {
                return Error::InvalidConfig(
                    "a usage counter would exceed PostgreSQL's bigint; the batch was not counted".into(),
                );
            }
            let boxed = Box::new(sqlx::Error::Database(db));
            if code.starts_with("08") || matches!(code.as_str(), "57P01" | "57P02" | "57P03" | "40001" | "40P01") {
                Error::Unavailable(boxed)
            } else {
                Error::Backend(boxed)
            }
        }
        other => Error::Backend(Box::new(other)),
    }
}

fn to_i64(value: u64) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| Error::InvalidConfig(format!("{value} is beyond PostgreSQL's bigint; nothing was stored")))
}

fn to_u64(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Backend(format!("a stored total is negative ({value})").into()))
}

fn period_kind(name: &str) -> Result<PeriodKind> {
    PeriodKind::ALL
        .into_iter()
        .find(|p| p.as_str() == name)
        .ok_or_else(|| Error::Backend(format!("a stored period `{}` is unknown", name.escape_debug()).into()))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, raw: &str) -> Result<T> {
    serde_json::from_str(raw).map_err(|e| Error::Backend(format!("a stored {what} cannot be read: {e}").into()))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Backend(Box::new(e)))
}

#[async_trait]
impl AuditLog for PostgresStore {
    async fn append(&self, event: &AuditEvent) -> Result<bool> {
        let stored = sqlx::query(&self.sql(sql::AUDIT_APPEND))
            .bind(&event.org_id)
            .bind(&event.id)
            .bind(event.occurred_at)
            .bind(&event.actor)
            .bind(&event.action)
            .bind(&event.target_type)
            .bind(&event.target_id)
            .bind(encode(&event.metadata)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(stored.is_some())
    }

    async fn get(&self, org_id: &str, id: &str) -> Result<Option<AuditEvent>> {
        let row = sqlx::query(&self.sql(&format!("{} WHERE org_id = $1 AND id = $2", sql::AUDIT_SELECT)))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| audit_row(&r)).transpose()
    }

    async fn list(&self, org_id: &str, limit: usize) -> Result<Vec<AuditEvent>> {
        let statement = format!(
            "{} WHERE org_id = $1 ORDER BY occurred_at, id LIMIT $2",
            sql::AUDIT_SELECT
        );
        let rows = sqlx::query(&self.sql(&statement))
            .bind(org_id)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(audit_row).collect()
    }
}

fn audit_row(row: &sqlx::postgres::PgRow) -> Result<AuditEvent> {
    let metadata: String = row.try_get("metadata").map_err(db_error)?;
    Ok(AuditEvent {
        id: row.try_get("id").map_err(db_error)?,
        org_id: row.try_get("org_id").map_err(db_error)?,
        actor: row.try_get("actor").map_err(db_error)?,
        action: row.try_get("action").map_err(db_error)?,
        target_type: row.try_get("target_type").map_err(db_error)?,
        target_id: row.try_get("target_id").map_err(db_error)?,
        occurred_at: row.try_get("occurred_at").map_err(db_error)?,
        metadata: decode("audit event's metadata", &metadata)?,
    })
}

#[async_trait]
impl FlagStore for PostgresStore {
    async fn put_flag(&self, flag: &Flag) -> Result<()> {
        sqlx::query(&self.sql(
            "INSERT INTO {schema}.flags (org_id, key, enabled, disabled_reason, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, key) DO UPDATE SET enabled = excluded.enabled, \
             disabled_reason = excluded.disabled_reason, updated_at = excluded.updated_at",
        ))
        .bind(&flag.org_id)
        .bind(&flag.key)
        .bind(flag.enabled)
        .bind(&flag.disabled_reason)
        .bind(flag.updated_at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn flag(&self, org_id: &str, key: &str) -> Result<Option<Flag>> {
        let row = sqlx::query(
            &self.sql("SELECT enabled, disabled_reason, updated_at FROM {schema}.flags WHERE org_id = $1 AND key = $2"),
        )
        .bind(org_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| {
            Ok(Flag {
                org_id: org_id.to_owned(),
                key: key.to_owned(),
                enabled: r.try_get("enabled").map_err(db_error)?,
                disabled_reason: r.try_get("disabled_reason").map_err(db_error)?,
                updated_at: r.try_get("updated_at").map_err(db_error)?,
            })
        })
        .transpose()
    }

    async fn disable_flag(&self, org_id: &str, key: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>> {
        self.disable_flag.run(&self.pool, org_id, key, reason, at).await
    }
}

#[async_trait]
impl ApiKeyStore for PostgresStore {
    async fn put_api_key(&self, key: &ApiKey) -> Result<()> {
        sqlx::query(&self.sql(
            "INSERT INTO {schema}.api_keys (org_id, id, blocked, blocked_reason, blocked_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, id) DO UPDATE SET blocked = excluded.blocked, \
             blocked_reason = excluded.blocked_reason, blocked_at = excluded.blocked_at",
        ))
        .bind(&key.org_id)
        .bind(&key.id)
        .bind(key.blocked)
        .bind(&key.blocked_reason)
        .bind(key.blocked_at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn api_key(&self, org_id: &str, id: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(
            &self
                .sql("SELECT blocked, blocked_reason, blocked_at FROM {schema}.api_keys WHERE org_id = $1 AND id = $2"),
        )
        .bind(org_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| {
            Ok(ApiKey {
                org_id: org_id.to_owned(),
                id: id.to_owned(),
                blocked: r.try_get("blocked").map_err(db_error)?,
                blocked_reason: r.try_get("blocked_reason").map_err(db_error)?,
                blocked_at: r.try_get("blocked_at").map_err(db_error)?,
            })
        })
        .transpose()
    }

    async fn block_api_key(&self, org_id: &str, id: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>> {
        self.block_api_key.run(&self.pool, org_id, id, reason, at).await
    }
}

#[async_trait]
impl OrgConfigStore for PostgresStore {
    async fn put_org(&self, config: &OrgConfig) -> Result<()> {
        config.validate().map_err(Error::InvalidConfig)?;
        sqlx::query(&self.sql(
            "INSERT INTO {schema}.org_configs (org_id, config) VALUES ($1, $2::jsonb) \
             ON CONFLICT (org_id) DO UPDATE SET config = excluded.config, updated_at = now()",
        ))
        .bind(&config.org_id)
        .bind(encode(config)?)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn org(&self, org_id: &str) -> Result<Option<OrgConfig>> {
        let raw: Option<String> =
            sqlx::query_scalar(&self.sql("SELECT config::text FROM {schema}.org_configs WHERE org_id = $1"))
                .bind(org_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        raw.map(|raw| super::decode_org_config(&raw)).transpose()
    }
}

#[async_trait]
impl DeliveryLog for PostgresStore {
    async fn delivery(&self, key: &str, channel: Channel) -> Result<Option<Delivery>> {
        let via: Option<String> = sqlx::query_scalar(
            &self.sql("SELECT via FROM {schema}.deliveries WHERE notification_key = $1 AND channel = $2"),
        )
        .bind(key)
        .bind(channel.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        via.map(|via| {
            Delivery::from_name(&via)
                .ok_or_else(|| Error::Backend(format!("a stored delivery `{}` is unknown", via.escape_debug()).into()))
        })
        .transpose()
    }

    async fn record_delivery(&self, key: &str, channel: Channel, via: Delivery, at: DateTime<Utc>) -> Result<()> {
        let horizon = at - TimeDelta::from_std(DELIVERY_RETENTION).unwrap_or(TimeDelta::MAX / 2);
        sqlx::query(&self.sql(
            "WITH forgotten AS (DELETE FROM {schema}.deliveries WHERE delivered_at <= $5) \
             INSERT INTO {schema}.deliveries (notification_key, channel, via, delivered_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (notification_key, channel) DO UPDATE SET via = excluded.via, delivered_at = excluded.delivered_at",
        ))
        .bind(key)
        .bind(channel.as_str())
        .bind(via.as_str())
        .bind(at)
        .bind(horizon)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

#[async_trait]
impl HealthStore for PostgresStore {
    async fn record_health(&self, report: &HealthRecord) -> Result<()> {
        sqlx::query(&self.sql(
            "INSERT INTO {schema}.health_reports (id, checked_at, report) VALUES (1, $1, $2::jsonb) \
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at, report = excluded.report",
        ))
        .bind(report.checked_at)
        .bind(encode(report)?)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn latest(&self) -> Result<Option<HealthRecord>> {
        let raw: Option<String> =
            sqlx::query_scalar(&self.sql("SELECT report::text FROM {schema}.health_reports WHERE id = 1"))
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        raw.map(|raw| decode("health report", &raw)).transpose()
    }

    async fn record_seen(&self, name: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(&self.sql(
            "INSERT INTO {schema}.seen (name, seen_at) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at",
        ))
        .bind(name)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn seen(&self, prefix: &str) -> Result<Vec<(String, DateTime<Utc>)>> {
        sqlx::query_as(&self.sql("SELECT name, seen_at FROM {schema}.seen WHERE starts_with(name, $1) ORDER BY name"))
            .bind(prefix)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }
}
