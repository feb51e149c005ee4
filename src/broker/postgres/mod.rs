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

use std::{collections::HashSet, fmt, str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgPool, Row,
};
use uuid::Uuid;

pub use self::migrate::SCHEMA_VERSION;
use self::{
    errors::map_err,
    rows::LeasedRow,
    sql::{Schema, Statements},
    vacuum::Vacuum,
    wake::{Listener, Wakeups},
};
use super::{Broker, EnqueueOutcome, Lease, LeaseStatus, QueueStats, Reservation, ReserveRequest};
use crate::{
    envelope::{truncate_error, AttemptRecord, JobEnvelope, MAX_SCHEDULE_AHEAD},
    error::{Error, Result},
    job::{JobId, QueueName},
};
/// The sqlx this broker is built on, for naming its connection and
/// transaction types (`sqlx::PgConnection`, `sqlx::Transaction`).
pub use sqlx;

mod dead;
mod enqueue;
mod errors;
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

/// Settings for a [`PostgresBroker`]; [`connect`](PostgresBrokerBuilder::connect)
/// checks them, connects and (by default) migrates.
#[derive(Clone)]
pub struct PostgresBrokerBuilder {
    /// Where PostgreSQL is (`postgres://user:password@host:port/database`).
    url: String,
    /// The schema of the broker's tables.
    schema: String,
    /// The pool's most connections.
    max_connections: u32,
    /// How long a call may wait for a free connection (or a new one).
    acquire_timeout: Duration,
    /// Whether connecting runs the migrations.
    migrate: bool,
    /// How long completed jobs' idempotency keys stay held.
    key_retention: Duration,
    /// The longest an idle reserver waits between looks at its queue.
    poll_interval: Duration,
    /// Whether acknowledgements and lease changes wait for the WAL flush.
    durable_acks: bool,
    /// Vacuum the tables after this many changed rows (`None`: autovacuum only).
    vacuum_after: Option<u64>,
}

impl fmt::Debug for PostgresBrokerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: leave it out.
        f.debug_struct("PostgresBrokerBuilder")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("migrate", &self.migrate)
            .field("key_retention", &self.key_retention)
            .field("poll_interval", &self.poll_interval)
            .field("durable_acks", &self.durable_acks)
            .field("vacuum_after", &self.vacuum_after)
            .finish_non_exhaustive()
    }
}

impl PostgresBrokerBuilder {
    /// The schema the broker's tables live in (default
    /// [`DEFAULT_SCHEMA`]): lower-case letters, digits and `_`. Brokers in
    /// different schemas of one database are independent.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the pool opens (default 10). A worker uses a
    /// few at once (reserving, acknowledging, heartbeats, recovery), plus
    /// one per job failing at the same moment.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// How long a call waits for a connection of the pool before failing
    /// with [`Error::Unavailable`] (default 5 s): when every connection
    /// stays busy, or PostgreSQL cannot be reached.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Whether [`connect`](Self::connect) migrates the schema (default
    /// `true`). Turned off, connecting only checks that the schema is at
    /// [`SCHEMA_VERSION`]; run [`PostgresBroker::migrate`] yourself.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// How long a completed job's idempotency key stays held (default 24 h).
    pub fn key_retention(mut self, retention: Duration) -> Self {
        self.key_retention = retention;
        self
    }

    /// The longest an idle reserver waits between looks at its queue
    /// (default 1 s). Wake-ups come by `NOTIFY`; this is the fallback for
    /// ones lost while the listening connection was down.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Whether acknowledgements and lease changes (reserve, complete,
    /// retry, snooze, dead-letter, release, extend, recover) wait until
    /// their WAL is on disk before they return (default `false`).
    ///
    /// By default they commit with `synchronous_commit = off` for their own
    /// transaction only: a crash of PostgreSQL (not of a worker) can then
    /// undo the last few hundred milliseconds of them, which makes those
    /// jobs run again: delivery stays at least once, and no job is lost,
    /// since enqueues (and DLQ operations) always wait for the flush. Turn
    /// this on to pay one flush per call instead.
    pub fn durable_acks(mut self, durable: bool) -> Self {
        self.durable_acks = durable;
        self
    }

    /// Vacuums the broker's tables after this many rows changed by this
    /// broker (default 100,000), at most once a second; `None` leaves them
    /// to autovacuum.
    ///
    /// Every job leaves two dead row versions. Autovacuum visits a database
    /// once per `autovacuum_naptime` (a minute by default) and may be off:
    /// at tens of thousands of jobs a second the table and its indexes would
    /// grow by hundreds of megabytes between visits, and every reservation
    /// would step over the dead entries. The broker's own `VACUUM
    /// (SKIP_LOCKED)` keeps them near the size of the backlog. It needs the
    /// broker's role to own the tables (the role that migrated them does).
    pub fn vacuum_after(mut self, rows: Option<u64>) -> Self {
        self.vacuum_after = rows;
        self
    }

    /// Checks the settings, connects, migrates (unless turned off) and
    /// starts listening for wake-ups.
    pub async fn connect(self) -> Result<PostgresBroker> {
        let schema = Schema::new(&self.schema)?;
        for (what, value) in [
            ("acquire timeout", self.acquire_timeout),
            ("idempotency key retention", self.key_retention),
            ("poll interval", self.poll_interval),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidConfig(format!(
                    "the PostgreSQL broker's {what} must be above zero"
                )));
            }
        }
        if self.max_connections == 0 {
            return Err(Error::InvalidConfig(
                "the PostgreSQL broker needs a pool of at least one connection".into(),
            ));
        }
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| Error::InvalidConfig(format!("the PostgreSQL URL is not valid: {e}")))?
            .application_name("flagship-worker")
            .log_statements(tracing::log::LevelFilter::Trace);
        let addr = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        // One connection first, for a clear error when PostgreSQL cannot be
        // reached or refuses the login (a pool would retry until its timeout).
        let mut conn = tokio::time::timeout(self.acquire_timeout, options.connect())
            .await
            .map_err(|_| {
                Error::Unavailable(
                    format!(
                        "connecting to PostgreSQL at {addr} took longer than {:?}",
                        self.acquire_timeout
                    )
                    .into(),
                )
            })?
            .map_err(map_err)?;
        if self.migrate {
            migrate::migrate(&mut conn, &schema).await?;
        } else {
            migrate::check(&mut conn, &schema).await?;
        }
        if self.vacuum_after.is_none() {
            let autovacuum: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
                .fetch_one(&mut conn)
                .await
                .map_err(map_err)?;
            if autovacuum != "on" {
                tracing::warn!(
                    "autovacuum is off and the broker's own vacuum is turned off: the jobs table grows with every \
                     job until it is vacuumed; vacuum it regularly, or keep `vacuum_after`"
                );
            }
        }
        conn.close().await.map_err(map_err)?;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            // A dead connection fails its next call with `Unavailable`
            // (retried by the worker); testing each one on every acquire
            // would cost a round trip per call.
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        if self.vacuum_after == Some(0) {
            return Err(Error::InvalidConfig(
                "vacuum_after must be above zero rows (or None to leave vacuuming to autovacuum)".into(),
            ));
        }
        let wakeups = Arc::new(Wakeups::default());
        let listener = Listener::start(options, schema.channel(), self.acquire_timeout, &wakeups).await?;
        let vacuum = self
            .vacuum_after
            .map(|every| Vacuum::start(pool.clone(), &schema, every));
        tracing::info!(postgres = %addr, schema = schema.name(), "connected to PostgreSQL");
        Ok(PostgresBroker {
            pool,
            sql: Statements::new(&schema, self.durable_acks),
            schema,
            wakeups,
            _listener: listener,
            vacuum,
            key_retention: self.key_retention,
            poll_interval: self.poll_interval,
            addr,
        })
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

/// One status per lease: held if its id came back.
fn statuses(leases: &[Lease], held: &HashSet<Uuid>) -> Vec<LeaseStatus> {
    leases
        .iter()
        .map(|l| {
            if held.contains(&l.id.as_uuid()) {
                LeaseStatus::Held
            } else {
                LeaseStatus::Lost
            }
        })
        .collect()
}

/// An attempt history as stored: a JSON array, or `NULL` when empty.
fn history(attempts: &[AttemptRecord]) -> Option<String> {
    (!attempts.is_empty()).then(|| serde_json::to_string(attempts).unwrap_or_default())
}

impl PostgresBroker {
    /// Connects to `url` with the default settings (see [`PostgresBrokerBuilder`]).
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a broker for `url`
    /// (`postgres://user:password@host:port/database`).
    pub fn builder(url: impl Into<String>) -> PostgresBrokerBuilder {
        PostgresBrokerBuilder {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            migrate: true,
            key_retention: super::DEFAULT_KEY_RETENTION,
            poll_interval: Duration::from_secs(1),
            durable_acks: false,
            vacuum_after: Some(DEFAULT_VACUUM_AFTER),
        }
    }

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
    async fn take(&self, queue: &QueueName, sql: &str, max: usize, lease: Duration) -> Result<Taken> {
        let rows = sqlx::query(sql)
            .bind(queue.as_str())
            .bind(max.min(MAX_BATCH) as i64)
            .bind(micros_ceil(lease))
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
        let held = rows
            .iter()
            .map(|row| row.try_get::<Uuid, _>(0).map_err(map_err))
            .collect::<Result<HashSet<_>>>()?;
        self.changed(held.len());
        Ok(statuses(leases, &held))
    }
}

#[async_trait]
impl Broker for PostgresBroker {
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
            let taken = self.take(queue, &self.sql.reserve, request.max, request.lease).await?;
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
        let recovered = self.take(queue, &self.sql.recover, max, lease).await?.reserved;
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
}

/// A dead job's position in a listing: its dead-lettered time and id.
fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> super::DeadCursor {
    super::DeadCursor::new(format!("{}/{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &super::DeadCursor) -> Result<(DateTime<Utc>, Uuid)> {
    let bad = || Error::InvalidConfig(format!("`{}` is not a DLQ cursor from this broker", cursor.as_str()));
    let (micros, id) = cursor.as_str().split_once('/').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    let id = id.parse::<JobId>().map_err(|_| bad())?;
    Ok((at, id.as_uuid()))
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
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_732_800_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
        for bad in ["", "x/y", "12/not-a-uuid", &format!("x/{id}")] {
            assert!(decode_cursor(&super::super::DeadCursor::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn lease_columns_are_sorted_and_statuses_keep_the_callers_order() {
        let q = QueueName::new("q").unwrap();
        let lease = |n: u64| Lease {
            id: JobId::new(),
            queue: q.clone(),
            token: crate::broker::LeaseToken(n),
        };
        let leases = [lease(1), lease(2), lease(3)];
        let mut reversed = leases.to_vec();
        reversed.reverse();
        let (ids, tokens) = lease_columns(&reversed);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(tokens, [1, 2, 3]);
        let held: HashSet<_> = [leases[1].id.as_uuid()].into();
        assert_eq!(
            statuses(&reversed, &held),
            [LeaseStatus::Lost, LeaseStatus::Held, LeaseStatus::Lost]
        );
    }
}
