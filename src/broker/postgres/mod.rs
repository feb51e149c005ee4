//! [`PostgresBroker`]: jobs kept in PostgreSQL, shared by any number of
//! worker processes, and enqueued, when the caller wants, inside the
//! caller's own transaction.
//!
//! One table holds every job (its state in a column); partial indexes give
//! the ready order (queue, priority, due time, enqueue order), the leased
//! jobs by deadline and the dead ones by dead-lettered time. Each broker
//! call is one statement (`src/broker/postgres/sql/`): a batch reservation
//! with `FOR UPDATE SKIP LOCKED` that hands every job a new fencing token,
//! acknowledgements of a whole batch that check each token, and so on. Due
//! times and lease deadlines come from the database's clock (`now()`), so
//! workers with skewed clocks neither start jobs early nor leave them stuck.
//! Idle workers are woken by `LISTEN`/`NOTIFY`, with a poll as fallback.
//! Completed jobs are deleted; their idempotency keys are kept for the
//! retention in a small table. The tables, each statement and how other
//! languages enqueue are in `docs/postgres.md`.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{PgPool, Row};
use uuid::Uuid;

pub use self::{builder::PostgresBrokerBuilder, migrate::SCHEMA_VERSION};
use self::{
    errors::map_err,
    rows::LeasedRow,
    sql::{Schema, Statements},
    vacuum::Vacuum,
    wake::{Listener, Wakeups},
};
use super::{
    history::HistoryLayout, Broker, EnqueueOutcome, Lease, LeaseStatus, QueueHistory, QueueStats, Reservation,
    ReserveRequest,
};
use crate::{
    envelope::{truncate_error, AttemptRecord, JobEnvelope, MAX_SCHEDULE_AHEAD},
    error::{Error, Result},
    job::QueueName,
};
/// The sqlx this broker is built on, for naming its connection and
/// transaction types (`sqlx::PgConnection`, `sqlx::Transaction`).
pub use sqlx;

mod builder;
mod control;
mod dead;
mod enqueue;
mod errors;
mod history;
mod migrate;
mod rows;
mod sql;
mod vacuum;
mod wake;

/// The schema the broker's tables live in unless configured otherwise.
pub const DEFAULT_SCHEMA: &str = "flagship_worker";
/// How many changed rows make the broker vacuum its tables by default (see
/// [`PostgresBrokerBuilder::vacuum_after`]).
pub const DEFAULT_VACUUM_AFTER: u64 = 100_000;
/// The most jobs one reservation takes; larger requests are capped.
pub const MAX_BATCH: usize = 1_000;
/// The shortest a reserver sleeps when jobs are due but all were taken by
/// other reservers mid-statement: it then waits for them to be released
/// or a wake-up, not in a busy loop.
const MIN_IDLE_SLEEP: Duration = Duration::from_millis(5);

/// A broker keeping jobs in PostgreSQL 13 or later.
///
/// Connect with [`PostgresBroker::connect`] or [`PostgresBroker::builder`];
/// connecting migrates the broker's schema unless told not to. Clones of the
/// `Arc` share one connection pool ([`pool`](Self::pool), also yours for
/// your own queries and transactions) plus one connection listening for
/// wake-ups. Calls made while PostgreSQL is unreachable, or while every
/// connection of the pool stays busy past the acquire timeout, fail with
/// [`Error::Unavailable`] (the worker retries them with backoff); a
/// read-only database refuses writes with [`Error::Backend`].
///
/// [`enqueue_in`](Self::enqueue_in) enqueues inside your transaction.
///
/// ```no_run
/// use std::sync::Arc;
/// use flagship_worker::broker::postgres::PostgresBroker;
///
/// # async fn run() -> flagship_worker::Result<()> {
/// let broker = Arc::new(PostgresBroker::connect("postgres://app@127.0.0.1/app").await?);
/// # let _ = broker; Ok(()) }
/// ```
pub struct PostgresBroker {
    /// Connections for every call (and for the caller's own use).
    pool: PgPool,
    /// The statements, with the schema filled in.
    sql: Statements,
    /// Where the tables are.
    schema: Schema,
    /// Wake-ups of this process's idle reservers, fed by `listener`.
    wakeups: Arc<Wakeups>,
    /// The `LISTEN` connection's task; stops when the broker drops.
    _listener: Listener,
    /// Vacuums the tables after enough changes, unless left to autovacuum.
    vacuum: Option<Vacuum>,
    /// How long a completed job's idempotency key stays held.
    key_retention: Duration,
    /// The longest an idle reserver waits between looks at its queue, in
    /// case a wake-up was lost.
    poll_interval: Duration,
    /// The queue history's buckets.
    history: HistoryLayout,
    /// The server, for `Debug` (never the password).
    addr: String,
}

impl fmt::Debug for PostgresBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBroker")
            .field("addr", &self.addr)
            .field("schema", &self.schema.name())
            .field("pool_size", &self.pool.size())
            .field("key_retention", &self.key_retention)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// What one reservation (or recovery) took.
#[derive(Debug)]
struct Taken {
    /// The jobs leased that can run, in queue order.
    reserved: Vec<Reservation>,
    /// How many rows were leased, the dead-lettered ones included.
    leased: usize,
    /// When nothing was leased: how long until the first pending job falls
    /// due (zero when one is due now); `None` when none is pending.
    next_due: Option<Duration>,
}

/// Microseconds in `d`, rounded up and capped at [`MAX_SCHEDULE_AHEAD`]
/// (so the database never adds an interval out of its range).
fn micros_ceil(d: Duration) -> i64 {
    let d = d.min(MAX_SCHEDULE_AHEAD);
    let micros = d.as_micros();
    let micros = if d > Duration::from_micros(micros as u64) {
        micros + 1
    } else {
        micros
    };
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// The ids and tokens of `leases`, sorted by id so that concurrent calls
/// lock rows in one order (and cannot deadlock).
fn lease_columns(leases: &[Lease]) -> (Vec<Uuid>, Vec<i64>) {
    let mut sorted: Vec<(Uuid, i64)> = leases.iter().map(|l| (l.id.as_uuid(), l.token.0 as i64)).collect();
    sorted.sort_unstable();
    sorted.into_iter().unzip()
}

/// One status per lease: held if its id came back (cancelled when it came
/// back with its cancel request, from `extend`), lost otherwise.
fn statuses(leases: &[Lease], held: &HashMap<Uuid, bool>) -> Vec<LeaseStatus> {
    leases
        .iter()
        .map(|l| match held.get(&l.id.as_uuid()) {
            Some(false) => LeaseStatus::Held,
            Some(true) => LeaseStatus::Cancelled,
            None => LeaseStatus::Lost,
        })
        .collect()
}

/// An attempt history as stored: a JSON array, or `NULL` when empty.
fn history(attempts: &[AttemptRecord]) -> Option<String> {
    (!attempts.is_empty()).then(|| serde_json::to_string(attempts).unwrap_or_default())
}

impl PostgresBroker {
    /// The connection pool: use it for your own queries and for
    /// transactions that enqueue jobs ([`enqueue_in`](Self::enqueue_in)).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema the broker's tables live in.
    pub fn schema(&self) -> &str {
        self.schema.name()
    }

    /// Brings the schema up to [`SCHEMA_VERSION`] (what connecting does
    /// unless [`PostgresBrokerBuilder::migrate`] turned it off); returns the
    /// versions applied. Safe to run from many processes at once: they
    /// take turns, and each migration runs once.
    pub async fn migrate(&self) -> Result<Vec<i32>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        migrate::migrate(&mut conn, &self.schema).await
    }

    /// Leases due jobs of `queue` with `sql` (reserve or recover), sorted
    /// into queue order; jobs that cannot run are dead-lettered on the way.
    async fn take(
        &self,
        queue: &QueueName,
        sql: &str,
        max: usize,
        lease: Duration,
        owner: Option<&str>,
    ) -> Result<Taken> {
        let rows = sqlx::query(sql)
            .bind(queue.as_str())
            .bind(max.min(MAX_BATCH) as i64)
            .bind(micros_ceil(lease))
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let mut leased = Vec::with_capacity(rows.len());
        let mut next_due = None;
        for row in &rows {
            match LeasedRow::read(row)? {
                Some(job) => leased.push(job),
                None => next_due = rows::next_due(row)?,
            }
        }
        leased.sort_unstable_by_key(LeasedRow::order);
        let count = leased.len();
        self.changed(count);
        let mut good = Vec::with_capacity(count);
        let mut poisoned = Vec::new();
        for row in leased {
            let (id, token) = (row.id, row.token);
            match row.reservation(queue) {
                Ok(reservation) => good.push(reservation),
                Err(reason) => poisoned.push((id, token, format!("corrupt envelope: {reason}"))),
            }
        }
        self.bury(queue, poisoned).await;
        Ok(Taken {
            reserved: good,
            leased: count,
            next_due,
        })
    }

    /// Dead-letters leased jobs whose row cannot be run. Failures are
    /// logged: the jobs stay leased and come back through lease expiry.
    async fn bury(&self, queue: &QueueName, poisoned: Vec<(Uuid, i64, String)>) {
        if poisoned.is_empty() {
            return;
        }
        let mut ids = Vec::with_capacity(poisoned.len());
        let mut tokens = Vec::with_capacity(poisoned.len());
        let mut reasons = Vec::with_capacity(poisoned.len());
        for (id, token, reason) in poisoned {
            tracing::warn!(job.id = %id, %queue, %reason, "stored job cannot be decoded; dead-lettering it");
            ids.push(id);
            tokens.push(token);
            reasons.push(truncate_error(reason));
        }
        let histories: Vec<Option<String>> = vec![None; ids.len()];
        let buried = sqlx::query(&self.sql.dead_letter)
            .bind(&ids)
            .bind(&tokens)
            .bind(&reasons)
            .bind(&histories)
            .execute(&self.pool)
            .await;
        if let Err(e) = buried {
            tracing::error!(%queue, error = %map_err(e), "could not dead-letter undecodable jobs; they come back after their lease expires");
        }
    }

    /// Ends the lease of `job` and makes it pending again after `delay`,
    /// with `attempt` and the history `attempts`: a retry when `failed`,
    /// else a snooze.
    async fn reschedule(
        &self,
        job: &Reservation,
        delay: Duration,
        attempt: u32,
        attempts: &[AttemptRecord],
        failed: bool,
    ) -> Result<()> {
        let lease = &job.lease;
        let attempt = i32::try_from(attempt)
            .map_err(|_| Error::InvalidConfig(format!("attempt {attempt} of job {} is out of range", lease.id)))?;
        let moved = sqlx::query(&self.sql.reschedule)
            .bind(lease.id.as_uuid())
            .bind(lease.token.0 as i64)
            .bind(micros_ceil(delay))
            .bind(attempt)
            .bind(history(attempts))
            .bind(i64::from(failed))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match moved {
            Some(_) => {
                self.changed(1);
                Ok(())
            }
            None => Err(Error::LeaseLost(lease.id)),
        }
    }

    /// Counts rows changed, for the broker's own vacuum.
    fn changed(&self, rows: usize) {
        if let Some(vacuum) = &self.vacuum {
            vacuum.count(rows);
        }
    }

    /// Runs `sql`, taking `($1 ids, $2 tokens[, $3 µs])` and returning the
    /// ids it acted on, for `leases`; one status per lease.
    async fn per_lease(&self, sql: &str, leases: &[Lease], micros: Option<i64>) -> Result<Vec<LeaseStatus>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, tokens) = lease_columns(leases);
        let mut query = sqlx::query(sql).bind(&ids).bind(&tokens);
        if let Some(micros) = micros {
            query = query.bind(micros);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(map_err)?;
        // Only `extend` returns the cancel request (a third column).
        let held = rows
            .iter()
            .map(|row| {
                let cancel = row.try_get::<bool, _>(2).unwrap_or(false);
                row.try_get::<Uuid, _>(0).map(|id| (id, cancel)).map_err(map_err)
            })
            .collect::<Result<HashMap<_, _>>>()?;
        self.changed(held.len());
        Ok(statuses(leases, &held))
    }
}

#[async_trait]
impl Broker for PostgresBroker {
    fn queue_history(&self) -> Option<&dyn QueueHistory> {
        Some(self)
    }

    async fn enqueue(&self, jobs: Vec<JobEnvelope>) -> Result<Vec<EnqueueOutcome>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        self.enqueue_on(&mut conn, &jobs, true).await
    }

    async fn reserve(&self, queue: &QueueName, request: ReserveRequest) -> Result<Vec<Reservation>> {
        if request.max == 0 {
            return Err(Error::InvalidConfig("reserve needs max of at least 1".into()));
        }
        let notify = self.wakeups.of(queue);
        // `None`: a wait too long to represent, i.e. wait for work forever.
        let give_up = tokio::time::Instant::now().checked_add(request.wait);
        loop {
            // Registered before looking at the queue, so a job enqueued
            // between the look and the sleep still wakes this call.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let owner = request.worker.as_deref();
            let taken = self
                .take(queue, &self.sql.reserve, request.max, request.lease, owner)
                .await?;
            if !taken.reserved.is_empty() {
                tracing::debug!(%queue, count = taken.reserved.len(), "jobs reserved");
                return Ok(taken.reserved);
            }
            if taken.leased > 0 {
                // Every job taken was dead-lettered: look again at once.
                continue;
            }
            let left = give_up.map_or(Duration::MAX, |at| {
                at.saturating_duration_since(tokio::time::Instant::now())
            });
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let due = taken.next_due.unwrap_or(Duration::MAX).max(MIN_IDLE_SLEEP);
            // Woken by a new job, the first due time, the poll, or the end of the wait.
            let _ = tokio::time::timeout(left.min(due).min(self.poll_interval), notified).await;
        }
    }

    async fn complete(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.per_lease(&self.sql.complete, leases, Some(micros_ceil(self.key_retention)))
            .await
    }

    async fn retry_after(&self, job: &Reservation, delay: Duration, attempt: AttemptRecord) -> Result<()> {
        let mut attempts = job.envelope.attempts.clone();
        attempts.push(attempt);
        self.reschedule(job, delay, job.envelope.attempt.saturating_add(1), &attempts, true)
            .await
    }

    async fn snooze(&self, job: &Reservation, delay: Duration) -> Result<()> {
        self.reschedule(job, delay, job.envelope.attempt, &job.envelope.attempts, false)
            .await
    }

    async fn dead_letter(&self, job: &Reservation, attempt: Option<AttemptRecord>, reason: &str) -> Result<()> {
        let lease = &job.lease;
        let mut attempts = job.envelope.attempts.clone();
        attempts.extend(attempt);
        let reason = truncate_error(reason.to_owned());
        let moved = sqlx::query(&self.sql.dead_letter)
            .bind([lease.id.as_uuid()])
            .bind([lease.token.0 as i64])
            .bind([reason])
            .bind([history(&attempts)])
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match moved {
            Some(_) => {
                self.changed(1);
                tracing::debug!(job.id = %lease.id, queue = %lease.queue, "job dead-lettered");
                Ok(())
            }
            None => Err(Error::LeaseLost(lease.id)),
        }
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.per_lease(&self.sql.release, leases, None).await
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        self.per_lease(&self.sql.extend, leases, Some(micros_ceil(lease))).await
    }

    async fn recover_expired(&self, queue: &QueueName, max: usize, lease: Duration) -> Result<Vec<Reservation>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let recovered = self.take(queue, &self.sql.recover, max, lease, None).await?.reserved;
        for r in &recovered {
            tracing::warn!(job.id = %r.lease.id, %queue, "lease expired; job recovered");
        }
        Ok(recovered)
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        let row = sqlx::query(&self.sql.stats)
            .bind(queue.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        let count = |at: usize| -> Result<u64> { Ok(row.try_get::<i64, _>(at).map_err(map_err)?.max(0) as u64) };
        let oldest: Option<i64> = row.try_get(4).map_err(map_err)?;
        Ok(QueueStats {
            ready: count(0)?,
            scheduled: count(1)?,
            active: count(2)?,
            dead: count(3)?,
            oldest_ready_age_ms: oldest.map(|ms| ms.max(0) as u64),
            completed: count(5)?,
            retried: count(6)?,
            dead_lettered: count(7)?,
            // Every row has a state and a typed id: nothing can be found
            // in no state, or stored under an id that cannot be named.
            dropped: 0,
            restored: 0,
            paused: row.try_get(8).map_err(map_err)?,
        })
    }

    async fn queues(&self) -> Result<Vec<QueueName>> {
        let names: Vec<String> = sqlx::query_scalar(&self.sql.queues)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(names.into_iter().filter_map(|n| QueueName::new(n).ok()).collect())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(map_err)?;
        Ok(())
    }

    fn control(&self) -> Option<&dyn super::JobControl> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_microseconds_and_stay_in_range() {
        assert_eq!(micros_ceil(Duration::ZERO), 0);
        assert_eq!(micros_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(micros_ceil(Duration::from_micros(7)), 7);
        assert_eq!(micros_ceil(Duration::MAX), MAX_SCHEDULE_AHEAD.as_micros() as i64);
    }

    #[test]
    fn lease_columns_are_sorted_and_statuses_keep_the_callers_order() {
        let q = QueueName::new("q").unwrap();
        let lease = |n: u64| Lease {
            id: crate::job::JobId::new(),
            queue: q.clone(),
            token: crate::broker::LeaseToken(n),
        };
        let leases = [lease(1), lease(2), lease(3)];
        let mut reversed = leases.to_vec();
        reversed.reverse();
        let (ids, tokens) = lease_columns(&reversed);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(tokens, [1, 2, 3]);
        let held: HashMap<_, _> = [(leases[1].id.as_uuid(), false), (leases[0].id.as_uuid(), true)].into();
        assert_eq!(
            statuses(&reversed, &held),
            [LeaseStatus::Lost, LeaseStatus::Held, LeaseStatus::Cancelled]
        );
    }
}
