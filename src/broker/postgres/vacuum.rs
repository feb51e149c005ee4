//! Keeping the tables small when autovacuum does not come often enough.
//!
//! Every job leaves two dead row versions behind (the reservation's update
//! and the completion's delete), and heartbeats one each. Autovacuum visits
//! a database once per `autovacuum_naptime` (a minute by default), while a
//! busy queue churns tens of thousands of rows a second, and some servers
//! run with autovacuum off: the table and its indexes then grow with every
//! job until a vacuum comes. So the broker vacuums its own tables after a
//! given number of rows it changed, from a task of its own, at most once a
//! second, skipping a table another vacuum holds (`SKIP_LOCKED`). The tables
//! stay around the size of the backlog plus what changed since the last
//! vacuum.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio::sync::Notify;

use super::{errors::map_err, sql::Schema};

/// The shortest time between two vacuums of one broker.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Counts the rows this broker changed and vacuums after every `every`.
#[derive(Debug)]
pub(super) struct Vacuum {
    /// Rows changed since the last vacuum began.
    changed: Arc<AtomicU64>,
    /// How many changed rows call for a vacuum.
    every: u64,
    /// Wakes the task when `every` is reached.
    due: Arc<Notify>,
    /// The vacuuming task; stops when the broker drops.
    task: tokio::task::AbortHandle,
}

impl Drop for Vacuum {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Vacuum {
    /// Starts the task vacuuming `schema`'s tables on `pool`.
    pub(super) fn start(pool: PgPool, schema: &Schema, every: u64) -> Self {
        let changed = Arc::new(AtomicU64::new(0));
        let due = Arc::new(Notify::new());
        let sql = schema.fill("VACUUM (SKIP_LOCKED) {schema}.jobs, {schema}.idempotency_keys, {schema}.counters");
        let task = tokio::spawn(run(pool, sql, changed.clone(), due.clone(), every));
        Vacuum {
            changed,
            every,
            due,
            task: task.abort_handle(),
        }
    }

    /// Records `rows` changed; wakes the task once `every` are reached.
    pub(super) fn count(&self, rows: usize) {
        let rows = rows as u64;
        let before = self.changed.fetch_add(rows, Ordering::Relaxed);
        if before < self.every && before + rows >= self.every {
            self.due.notify_one();
        }
    }
}

async fn run(pool: PgPool, sql: String, changed: Arc<AtomicU64>, due: Arc<Notify>, every: u64) {
    loop {
        due.notified().await;
        if changed.load(Ordering::Relaxed) < every {
            continue;
        }
        changed.store(0, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        match sqlx::raw_sql(&sql).execute(&pool).await {
            Ok(_) => tracing::debug!(took = ?started.elapsed(), "broker tables vacuumed"),
            Err(e) => {
                tracing::warn!(error = %map_err(e), "vacuuming the broker's tables failed; autovacuum has to keep them small")
            }
        }
        tokio::time::sleep(MIN_INTERVAL.saturating_sub(started.elapsed())).await;
        // Changes made meanwhile may already call for the next one.
        if changed.load(Ordering::Relaxed) >= every {
            due.notify_one();
        }
    }
}
