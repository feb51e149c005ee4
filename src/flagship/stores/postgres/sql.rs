//! The store's statements (`{schema}` is filled in per store), and the
//! one statement that switches a flag off or blocks a key, for the store's
//! own tables and for a product's tables alike.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use super::db_error;
use crate::{Error, Result};

/// Checks that `name` can be written into a statement as a quoted
/// identifier: 1 to 63 lower-case ASCII letters, digits and `_`, not
/// starting with a digit.
pub fn check_identifier(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "`{}` is not a usable table or column name: use 1 to 63 lower-case ASCII letters, digits and `_`, \
             not starting with a digit",
            name.escape_debug()
        )))
    }
}

/// `name` checked and quoted; `schema.table` quotes each part.
pub(crate) fn quote(name: &str) -> Result<String> {
    name.split('.')
        .map(|part| check_identifier(part).map(|()| format!("\"{part}\"")))
        .collect::<Result<Vec<_>>>()
        .map(|parts| parts.join("."))
}

/// A statement that sets a boolean column of one row to a value unless it
/// has it, recording why and when in optional columns. It binds `$1` the
/// organization, `$2` the row's id, then the reason and the time for the
/// columns present, and returns one row `(found, changed)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Switch {
    /// The statement.
    pub(crate) sql: String,
    /// Whether it binds the reason (as `$3`).
    pub(crate) binds_reason: bool,
    /// Whether it binds the time (after the reason, if any).
    pub(crate) binds_time: bool,
}

/// The columns a [`Switch`] reads and writes, quoted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SwitchColumns<'a> {
    pub(crate) table: &'a str,
    pub(crate) org: &'a str,
    pub(crate) id: &'a str,
    pub(crate) state: &'a str,
    pub(crate) target: bool,
    pub(crate) reason: Option<&'a str>,
    pub(crate) time: Option<&'a str>,
}

impl Switch {
    pub(crate) fn new(c: SwitchColumns<'_>) -> Self {
        let mut set = vec![format!("{} = {}", c.state, c.target)];
        let mut next = 3;
        if let Some(reason) = c.reason {
            set.push(format!("{reason} = ${next}"));
            next += 1;
        }
        if let Some(time) = c.time {
            set.push(format!("{time} = ${next}"));
        }
        let sql = format!(
            "WITH changed AS (UPDATE {table} SET {set} WHERE {org} = $1 AND {id} = $2 AND {state} IS DISTINCT FROM {target} RETURNING 1) \
             SELECT EXISTS (SELECT 1 FROM changed) AS changed, \
             EXISTS (SELECT 1 FROM changed) OR EXISTS (SELECT 1 FROM {table} WHERE {org} = $1 AND {id} = $2) AS found",
            table = c.table,
            set = set.join(", "),
            org = c.org,
            id = c.id,
            state = c.state,
            target = c.target,
        );
        Switch {
            sql,
            binds_reason: c.reason.is_some(),
            binds_time: c.time.is_some(),
        }
    }

    /// Runs the statement: `None` if there is no such row, `Some(changed)`
    /// otherwise.
    pub(crate) async fn run(
        &self,
        pool: &PgPool,
        org_id: &str,
        id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<bool>> {
        let mut query = sqlx::query(&self.sql).bind(org_id).bind(id);
        if self.binds_reason {
            query = query.bind(reason);
        }
        if self.binds_time {
            query = query.bind(at);
        }
        let row = query.fetch_one(pool).await.map_err(db_error)?;
        let found: bool = row.try_get("found").map_err(db_error)?;
        let changed: bool = row.try_get("changed").map_err(db_error)?;
        Ok(found.then_some(changed))
    }
}

/// Appends an audit event unless its id is taken; returns a row if stored.
pub(super) const AUDIT_APPEND: &str = "INSERT INTO {schema}.audit_events \
    (org_id, id, occurred_at, actor, action, target_type, target_id, metadata) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) ON CONFLICT (org_id, id) DO NOTHING RETURNING 1";

/// Audit events, as [`audit_row`](super::audit_row) reads them.
pub(super) const AUDIT_SELECT: &str = "SELECT org_id, id, occurred_at, actor, action, target_type, target_id, \
    metadata::text AS metadata FROM {schema}.audit_events";

/// Forgets one batch id whose retention ended ($1 org, $2 batch, $3 now).
pub(super) const BATCH_FORGET: &str =
    "DELETE FROM {schema}.usage_batches WHERE org_id = $1 AND batch_id = $2 AND forget_at <= $3";

/// Records a batch id unless recorded ($1 org, $2 batch, $3 forget at);
/// returns a row if it was new.
pub(super) const BATCH_RECORD: &str = "INSERT INTO {schema}.usage_batches (org_id, batch_id, forget_at) \
    VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1";

/// Adds to counters ($1 org; arrays $2 metric, $3 period, $4 start, $5 end, $6 amount).
pub(super) const COUNTERS_ADD: &str = "INSERT INTO {schema}.usage_counters \
    (org_id, metric, period, period_start, period_end, value) \
    SELECT $1, metric, period, period_start, period_end, amount \
    FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bigint[]) \
    AS k(metric, period, period_start, period_end, amount) \
    ON CONFLICT (org_id, metric, period, period_start) \
    DO UPDATE SET value = {schema}.usage_counters.value + excluded.value";

/// Counters' values in the order of the arrays ($1 org; $2 metric, $3
/// period, $4 start), NULL for an absent counter.
pub(super) const COUNTERS_READ: &str = "SELECT c.value \
    FROM unnest($2::text[], $3::text[], $4::timestamptz[]) WITH ORDINALITY AS k(metric, period, period_start, n) \
    LEFT JOIN {schema}.usage_counters c ON c.org_id = $1 AND c.metric = k.metric \
    AND c.period = k.period AND c.period_start = k.period_start \
    ORDER BY k.n";

/// Moves the ended counters of one period length ($1 period, $2 now) into
/// the archive, deleting them and their markers, in one statement.
pub(super) const CLOSE_PERIODS: &str = "WITH moved AS ( \
      DELETE FROM {schema}.usage_counters WHERE period = $1 AND period_end <= $2 \
      RETURNING org_id, metric, period, period_start, value), \
    archived AS ( \
      INSERT INTO {schema}.usage_archive (org_id, metric, period, period_start, total) \
      SELECT org_id, metric, period, period_start, value FROM moved \
      ON CONFLICT (org_id, metric, period, period_start) \
      DO UPDATE SET total = {schema}.usage_archive.total + excluded.total, archived_at = now()), \
    unmarked AS ( \
      DELETE FROM {schema}.threshold_markers m USING moved \
      WHERE m.org_id = moved.org_id AND m.metric = moved.metric \
      AND m.period = moved.period AND m.period_start = moved.period_start) \
    SELECT org_id, metric, period, period_start, value FROM moved";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(quote("app.feature_flags").unwrap(), "\"app\".\"feature_flags\"");
        for bad in ["", "Flags", "1x", "a;b", "a\"b", "a..b", &"x".repeat(64)] {
            assert!(quote(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn switches_bind_only_the_columns_they_have() {
        let columns = SwitchColumns {
            table: "\"t\"",
            org: "\"o\"",
            id: "\"i\"",
            state: "\"on\"",
            target: false,
            reason: None,
            time: Some("\"at\""),
        };
        let switch = Switch::new(columns);
        assert!(switch.sql.contains("\"at\" = $3"), "{}", switch.sql);
        assert!(!switch.binds_reason && switch.binds_time);
    }
}
