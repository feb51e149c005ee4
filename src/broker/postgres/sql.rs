//! The broker's SQL: the schema it lives in, and every statement it runs,
//! built once per broker from the files in `sql/` with the schema filled in.

use crate::{
    broker::history::{HistoryLayout, Resolution},
    error::{Error, Result},
};

/// The schema the broker's tables live in, checked to be a plain lower-case
/// identifier so it can be written into statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Schema {
    /// The name as given, e.g. `flagship_worker`.
    name: String,
}

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER_LEN: usize = 63;

impl Schema {
    /// Checks `name`: 1 to 63 bytes of lower-case ASCII letters, digits and
    /// `_`, not starting with a digit, and not a `pg_` name (reserved).
    pub(super) fn new(name: &str) -> Result<Self> {
        let valid = !name.is_empty()
            && name.len() <= MAX_IDENTIFIER_LEN
            && !name.starts_with("pg_")
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(Error::InvalidConfig(format!(
                "schema name `{}` must be 1 to {MAX_IDENTIFIER_LEN} lower-case ASCII letters, digits and `_`, \
                 start with a letter or `_`, and not start with `pg_`",
                name.escape_debug()
            )));
        }
        Ok(Schema { name: name.to_owned() })
    }

    /// The name as given.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The name as a quoted identifier, for statements.
    pub(super) fn quoted(&self) -> String {
        format!("\"{}\"", self.name)
    }

    /// The `LISTEN`/`NOTIFY` channel idle workers wait on: the schema's name,
    /// so brokers in different schemas of one database do not wake each other.
    pub(super) fn channel(&self) -> &str {
        &self.name
    }

    /// `sql` with `{schema}` and `{channel}` filled in.
    pub(super) fn fill(&self, sql: &str) -> String {
        sql.replace("{schema}", &self.quoted())
            .replace("{channel}", self.channel())
    }
}

/// Every statement the broker runs; each file in `sql/` says what its
/// parameters are and what it returns.
#[derive(Debug)]
pub(super) struct Statements {
    pub(super) enqueue: String,
    pub(super) enqueue_unkeyed: String,
    pub(super) reserve: String,
    pub(super) recover: String,
    pub(super) complete: String,
    pub(super) reschedule: String,
    pub(super) dead_letter: String,
    pub(super) release: String,
    pub(super) extend: String,
    pub(super) stats: String,
    pub(super) queues: String,
    pub(super) dead_list: String,
    pub(super) dead_count: String,
    pub(super) dead_get: String,
    pub(super) dead_retry: String,
    pub(super) dead_delete: String,
    pub(super) live_list: String,
    pub(super) live_get: String,
    pub(super) cancel: String,
    pub(super) pause: String,
    pub(super) resume: String,
    pub(super) register_worker: String,
    pub(super) workers: String,
    pub(super) deregister_worker: String,
    pub(super) history_sample: String,
    pub(super) history_read: String,
}

/// The `commit_mode` column of the statements acknowledgements and lease
/// changes run: it makes their transaction commit without waiting for the
/// WAL flush (`synchronous_commit = off`, for this transaction only), or,
/// for durable acknowledgements, changes nothing.
fn commit_mode(durable_acks: bool) -> &'static str {
    if durable_acks {
        "NULL::text AS commit_mode"
    } else {
        "(SELECT set_config('synchronous_commit', 'off', true)) AS commit_mode"
    }
}

impl Statements {
    /// The statements for `schema`; acknowledgements and lease changes wait
    /// for the WAL flush only when `durable_acks`; the queue history's
    /// buckets are `history`'s.
    pub(super) fn new(schema: &Schema, durable_acks: bool, history: &HistoryLayout) -> Self {
        // The history's two resolutions and the bucket of `now()` in each,
        // as the acknowledging statements count into them.
        let widths = format!(
            "(VALUES (0::smallint, {}::numeric), (1::smallint, {}::numeric)) AS l(resolution, width)",
            history.width_ms(Resolution::Minute),
            history.width_ms(Resolution::Hour)
        );
        let fill = |sql: &str| {
            schema
                .fill(sql)
                .replace("{commit_mode}", commit_mode(durable_acks))
                .replace("{history_widths}", &widths)
                .replace(
                    "{history_bucket}",
                    "floor(extract(epoch FROM now()) * 1000 / l.width)::bigint",
                )
                .replace("{history_minute_ms}", &history.width_ms(Resolution::Minute).to_string())
                .replace("{history_minutes_kept}", &history.kept(Resolution::Minute).to_string())
                .replace("{history_hour_ms}", &history.width_ms(Resolution::Hour).to_string())
                .replace("{history_hours_kept}", &history.kept(Resolution::Hour).to_string())
        };
        Statements {
            enqueue: fill(include_str!("sql/enqueue.sql")),
            enqueue_unkeyed: fill(include_str!("sql/enqueue_unkeyed.sql")),
            reserve: fill(include_str!("sql/reserve.sql")),
            recover: fill(include_str!("sql/recover.sql")),
            complete: fill(include_str!("sql/complete.sql")),
            reschedule: fill(include_str!("sql/reschedule.sql")),
            dead_letter: fill(include_str!("sql/dead_letter.sql")),
            release: fill(include_str!("sql/release.sql")),
            extend: fill(include_str!("sql/extend.sql")),
            stats: fill(include_str!("sql/stats.sql")),
            queues: fill(include_str!("sql/queues.sql")),
            dead_list: fill(include_str!("sql/dead_list.sql")),
            dead_count: fill(include_str!("sql/dead_count.sql")),
            dead_get: fill(include_str!("sql/dead_get.sql")),
            dead_retry: fill(include_str!("sql/dead_retry.sql")),
            dead_delete: fill(include_str!("sql/dead_delete.sql")),
            live_list: fill(include_str!("sql/live_list.sql")),
            live_get: fill(include_str!("sql/live_get.sql")),
            cancel: fill(include_str!("sql/cancel.sql")),
            pause: fill(include_str!("sql/pause.sql")),
            resume: fill(include_str!("sql/resume.sql")),
            register_worker: fill(include_str!("sql/register_worker.sql")),
            workers: fill(include_str!("sql/workers.sql")),
            deregister_worker: fill(include_str!("sql/deregister_worker.sql")),
            history_sample: fill(include_str!("sql/history_sample.sql")),
            history_read: fill(include_str!("sql/history_read.sql")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["flagship_worker", "_jobs", "jobs2", &"a".repeat(63)] {
            assert!(Schema::new(good).is_ok(), "{good}");
        }
        for bad in ["", "Upper", "has-dash", "2jobs", "pg_jobs", "quo\"te", &"a".repeat(64)] {
            assert!(Schema::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let schema = Schema::new("jobs_here").unwrap();
        let statements = Statements::new(&schema, false, &HistoryLayout::default());
        for sql in [
            &statements.complete,
            &statements.reschedule,
            &statements.dead_letter,
            &statements.cancel,
        ] {
            assert!(!sql.contains("{history"), "{sql}");
            assert!(
                sql.contains("floor(extract(epoch FROM now()) * 1000 / l.width)"),
                "{sql}"
            );
        }
    }

    #[test]
    fn statements_name_the_schema_and_channel() {
        let schema = Schema::new("jobs_here").unwrap();
        let statements = Statements::new(&schema, false, &HistoryLayout::default());
        assert!(statements.enqueue.contains("\"jobs_here\".jobs"));
        assert!(statements.enqueue.contains("pg_notify('jobs_here'"));
        for sql in [
            &statements.reserve,
            &statements.complete,
            &statements.dead_retry,
            &statements.history_sample,
            &statements.reschedule,
        ] {
            assert!(!sql.contains('{'), "an unfilled placeholder in {sql}");
        }
        assert!(statements.complete.contains("'synchronous_commit', 'off', true"));
        let durable = Statements::new(&schema, true, &HistoryLayout::default());
        assert!(!durable.complete.contains("synchronous_commit"));
        assert!(!durable.enqueue.contains("synchronous_commit") && !statements.enqueue.contains("synchronous_commit"));
    }
}
