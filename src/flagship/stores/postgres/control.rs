//! [`PostgresControl`]: auto-actions on the product's own PostgreSQL tables.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::sql::{quote, Switch, SwitchColumns};
use crate::{
    flagship::control::{ApiKeyControl, FlagControl},
    Result,
};

/// Where a product keeps flags or API keys, and which boolean column says
/// they are off or blocked. Names are lower-case identifiers (a table may
/// be `schema.table`); the organization and id columns are compared with
/// text parameters, so they are `text` or `varchar` (give a view otherwise).
///
/// ```
/// use flagship_worker::flagship::control::SwitchTable;
/// let flags = SwitchTable::flags("app.feature_flags")
///     .org_column("organization_id")
///     .reason_column("disabled_reason")
///     .time_column("updated_at");
/// let keys = SwitchTable::api_keys("app.api_keys").state_column("revoked", true);
/// # let _ = (flags, keys);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchTable {
    /// The table.
    table: String,
    /// The organization column (default `org_id`).
    org: String,
    /// The flag key's or API key id's column.
    id: String,
    /// The boolean column switched.
    state: String,
    /// The value it is switched to.
    target: bool,
    /// Where the reason goes, if anywhere.
    reason: Option<String>,
    /// Where the time of the change goes, if anywhere.
    time: Option<String>,
}

impl SwitchTable {
    /// Flags in `table`: columns `org_id`, `key`, and `enabled` set to `false`.
    pub fn flags(table: impl Into<String>) -> Self {
        SwitchTable {
            table: table.into(),
            org: "org_id".into(),
            id: "key".into(),
            state: "enabled".into(),
            target: false,
            reason: None,
            time: None,
        }
    }

    /// API keys in `table`: columns `org_id`, `id`, and `blocked` set to `true`.
    pub fn api_keys(table: impl Into<String>) -> Self {
        SwitchTable {
            id: "id".into(),
            state: "blocked".into(),
            target: true,
            ..Self::flags(table)
        }
    }

    /// The organization column.
    pub fn org_column(mut self, column: impl Into<String>) -> Self {
        self.org = column.into();
        self
    }

    /// The flag key's or key id's column.
    pub fn id_column(mut self, column: impl Into<String>) -> Self {
        self.id = column.into();
        self
    }

    /// The boolean column, and the value meaning "off" or "blocked".
    pub fn state_column(mut self, column: impl Into<String>, value: bool) -> Self {
        self.state = column.into();
        self.target = value;
        self
    }

    /// A text column that receives the reason.
    pub fn reason_column(mut self, column: impl Into<String>) -> Self {
        self.reason = Some(column.into());
        self
    }

    /// A `timestamptz` column that receives the time of the change.
    pub fn time_column(mut self, column: impl Into<String>) -> Self {
        self.time = Some(column.into());
        self
    }

    /// The statement, with every name checked and quoted.
    fn switch(&self) -> Result<Switch> {
        let quoted = |name: &str| quote(name);
        let reason = self.reason.as_deref().map(quoted).transpose()?;
        let time = self.time.as_deref().map(quoted).transpose()?;
        let (table, org, id, state) = (
            quote(&self.table)?,
            quote(&self.org)?,
            quote(&self.id)?,
            quote(&self.state)?,
        );
        Ok(Switch::new(SwitchColumns {
            table: &table,
            org: &org,
            id: &id,
            state: &state,
            target: self.target,
            reason: reason.as_deref(),
            time: time.as_deref(),
        }))
    }
}

/// Disables flags and blocks API keys in the product's own tables, one
/// statement each:
///
/// ```sql
/// WITH changed AS (
///   UPDATE <table> SET <state> = <value>[, <reason> = $3][, <time> = $4]
///   WHERE <org> = $1 AND <id> = $2 AND <state> IS DISTINCT FROM <value>
///   RETURNING 1)
/// SELECT EXISTS (SELECT 1 FROM changed) AS changed,
///        EXISTS (SELECT 1 FROM changed)
///          OR EXISTS (SELECT 1 FROM <table> WHERE <org> = $1 AND <id> = $2) AS found
/// ```
///
/// Running it twice changes the row once: the second finds the state set.
///
/// ```no_run
/// use std::sync::Arc;
/// use flagship_worker::flagship::{control::{PostgresControl, SwitchTable}, FlagshipServices};
///
/// # async fn run(pool: sqlx::PgPool, services: FlagshipServices) -> flagship_worker::Result<()> {
/// let control = Arc::new(PostgresControl::new(
///     pool,
///     SwitchTable::flags("feature_flags"),
///     SwitchTable::api_keys("api_keys"),
/// )?);
/// let services = services.with_flag_control(control.clone()).with_api_key_control(control);
/// # let _ = services; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresControl {
    /// The product's database.
    pool: PgPool,
    /// Turns a flag off.
    disable_flag: Switch,
    /// Blocks a key.
    block_api_key: Switch,
}

impl PostgresControl {
    /// Control over `flags` and `api_keys` in `pool`'s database; refuses
    /// names that are not plain lower-case identifiers.
    pub fn new(pool: PgPool, flags: SwitchTable, api_keys: SwitchTable) -> Result<Self> {
        Ok(PostgresControl {
            pool,
            disable_flag: flags.switch()?,
            block_api_key: api_keys.switch()?,
        })
    }
}

#[async_trait]
impl FlagControl for PostgresControl {
    async fn disable_flag(&self, org_id: &str, key: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>> {
        self.disable_flag.run(&self.pool, org_id, key, reason, at).await
    }
}

#[async_trait]
impl ApiKeyControl for PostgresControl {
    async fn block_api_key(&self, org_id: &str, id: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>> {
        self.block_api_key.run(&self.pool, org_id, id, reason, at).await
    }
}
