//! Configuring and connecting a [`PostgresBroker`]: settings checked,
//! one connection to migrate (or check) the schema, then the pool, the
//! listening connection and the vacuuming task.

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection,
};

use super::{
    errors::map_err,
    migrate,
    sql::{Schema, Statements},
    vacuum::Vacuum,
    wake::{Listener, Wakeups},
    PostgresBroker, DEFAULT_SCHEMA, DEFAULT_VACUUM_AFTER,
};
use crate::{
    broker::history::HistoryLayout,
    error::{Error, Result},
};

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
    /// The queue history's buckets.
    history: HistoryLayout,
}

impl std::fmt::Debug for PostgresBrokerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
    /// [`SCHEMA_VERSION`](super::SCHEMA_VERSION); run [`PostgresBroker::migrate`] yourself.
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

    /// The queue history's buckets (default: minutes for a day, hours for
    /// 30 days). Every broker on one schema must use the same layout.
    pub fn history_layout(mut self, layout: HistoryLayout) -> Self {
        self.history = layout;
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
            sql: Statements::new(&schema, self.durable_acks, &self.history),
            schema,
            wakeups,
            _listener: listener,
            vacuum,
            key_retention: self.key_retention,
            poll_interval: self.poll_interval,
            history: self.history,
            addr,
        })
    }
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
            key_retention: crate::broker::DEFAULT_KEY_RETENTION,
            poll_interval: Duration::from_secs(1),
            durable_acks: false,
            vacuum_after: Some(DEFAULT_VACUUM_AFTER),
            history: HistoryLayout::default(),
        }
    }
}
