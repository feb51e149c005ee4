//! [`RedisBroker`]: jobs kept in Redis, shared by any number of worker
//! processes on any number of machines.
//!
//! Every state change is one Lua script (`src/broker/redis/scripts/`), so a
//! crash between two calls never leaves a job half-moved. All keys of a
//! queue carry the hash tag `{queue}`, so a queue lives on one Redis Cluster
//! slot. Due times and lease deadlines come from Redis's clock (`TIME`
//! inside the scripts): workers with skewed clocks neither start jobs early
//! nor leave them stuck. The key layout and every script's contract are in
//! `docs/redis.md`, for producers written in other languages.
//!
//! Where the time goes: a round trip costs Redis far more than a command
//! inside a script, so reserve takes up to 1,000 jobs per call,
//! completions, releases and heartbeats are sent as batches, a batch
//! enqueue is one script call per queue, and every script uses variadic
//! commands over the batch.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fmt,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
    IntoConnectionInfo, Value,
};

use self::{
    conn::{parse_url, Conn, SentinelConn, Topology, URL_FORMS},
    decode::{array, bytes, int, text},
    history::layout_args,
    keys::{QueueKeys, QUEUES_KEY},
    lease::{dead_letter_call, Leaser, Pass},
    scripts::{map_err, run, run_all_durable, Lua, Replicas, SCRIPTS},
    wait::{Waiters, Woken},
};
use super::{
    history::HistoryLayout, Broker, EnqueueOutcome, Lease, LeaseStatus, QueueHistory, QueueStats, Reservation,
    ReserveRequest,
};
use crate::{
    clock::{Clock, TokioClock},
    envelope::{truncate_error, AttemptRecord, JobEnvelope},
    error::{Error, Result},
    job::QueueName,
    schema::DEFAULT_MAX_PAYLOAD_BYTES,
};

mod conn;
mod control;
mod dead;
mod decode;
mod history;
mod keys;
mod lease;
mod scripts;
mod wait;

/// The version of the enqueue contract for producers in other languages:
/// the enqueue script's KEYS, ARGV and reply, the key names and the queue
/// registry (`docs/redis.md`, "The enqueue contract", says which changes
/// are breaking). `enqueue.lua` states it in its first line, and the
/// TypeScript package (`clients/typescript`) checks the script it sends
/// states the version it speaks. The envelope's own version is
/// [`ENVELOPE_VERSION`](crate::envelope::ENVELOPE_VERSION).
pub const PROTOCOL_VERSION: u32 = 1;

/// The most jobs or leases one script call handles; larger requests are
/// split (and pipelined).
pub const MAX_BATCH: usize = 1_000;
/// How many due jobs one call promotes from scheduled to ready.
const PROMOTE_BATCH: usize = 1_000;

/// A broker keeping jobs in Redis 6.2 or later.
///
/// It connects to one Redis server (`redis://host:port`), to a Redis
/// Cluster (`redis+cluster://host:port,host:port`, or
/// [`RedisBroker::cluster_builder`]) or, through Redis Sentinel, to the
/// current master (`redis+sentinel://host:port,host:port/<master-name>`, or
/// [`RedisBroker::sentinel_builder`]). A queue lives on one cluster slot:
/// every call touches the keys of one queue only, and the queue registry
/// is written by a separate idempotent command (see `docs/redis.md`).
/// Connecting to a cluster node with a plain `redis://` URL is refused with
/// an error saying how to connect.
///
/// Connect with [`RedisBroker::connect`] or [`RedisBroker::builder`]. Clones
/// of the `Arc` share one multiplexed connection, which reconnects on its
/// own after a connection loss (follows slot moves and promoted replicas on
/// a cluster, asks the sentinels again under Sentinel); calls made while
/// Redis is unreachable fail with [`Error::Unavailable`] (the worker
/// retries them with backoff). Redis replication is asynchronous: to make
/// an enqueue or a completion survive a failover, see
/// [`RedisBrokerBuilder::wait_for_replicas`].
///
/// Redis must run with `maxmemory-policy noeviction`: any other policy can
/// silently delete jobs, so connecting refuses it unless
/// [`RedisBrokerBuilder::allow_eviction`] says otherwise. When Redis is
/// full, enqueue fails with [`Error::Backend`] and stores nothing.
///
/// ```no_run
/// use std::sync::Arc;
/// use flagship_worker::broker::redis::RedisBroker;
///
/// # async fn run() -> flagship_worker::Result<()> {
/// let broker = Arc::new(RedisBroker::connect("redis://127.0.0.1:6379").await?);
/// # let _ = broker; Ok(()) }
/// ```
pub struct RedisBroker {
    /// The shared connection for every non-blocking call; it reconnects by
    /// itself after a connection loss.
    conn: Conn,
    /// Dedicated connections for idle reservers blocked on a wake-up list.
    waiters: Waiters,
    /// Key names per queue, built once.
    keys: RwLock<HashMap<QueueName, Arc<QueueKeys>>>,
    /// Queues this process has added to the queue registry.
    registered: Mutex<HashSet<QueueName>>,
    /// The time written into envelopes and used for ages in stats; due
    /// times come from Redis's clock.
    clock: Arc<dyn Clock>,
    /// How long a completed job's idempotency key stays held.
    key_retention: Duration,
    /// Leased jobs whose payload is larger (bytes of JSON) are dead-lettered.
    max_payload_bytes: usize,
    /// The queue history's buckets.
    history: HistoryLayout,
    /// Replicas that must confirm an enqueue or a completion (`WAIT`).
    replicas: Option<Replicas>,
    /// The server address, for `Debug`.
    addr: String,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("addr", &self.addr)
            .field("key_retention", &self.key_retention)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("replicas", &self.replicas)
            .field("conn", &self.conn)
            .field("clock", &self.clock)
            .field("waiters", &self.waiters)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`RedisBroker`]; [`connect`](RedisBrokerBuilder::connect)
/// checks them and connects.
#[derive(Clone)]
pub struct RedisBrokerBuilder {
    /// Where Redis is: one server, cluster seeds or sentinels (a URL that
    /// did not parse fails at connect).
    topology: std::result::Result<Topology, String>,
    /// Replicas that must confirm an enqueue or a completion.
    replicas: Option<Replicas>,
    /// Start even if `maxmemory-policy` is not `noeviction`.
    allow_eviction: bool,
    /// How long completed jobs' idempotency keys stay held.
    key_retention: Duration,
    /// The largest payload a reserved job may carry.
    max_payload_bytes: usize,
    /// How long a non-blocking call may wait for its reply.
    response_timeout: Duration,
    /// How long opening a connection may take.
    connect_timeout: Duration,
    /// Where delays are measured from.
    clock: Arc<dyn Clock>,
    /// The queue history's buckets.
    history: HistoryLayout,
}

impl fmt::Debug for RedisBrokerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: leave it out.
        f.debug_struct("RedisBrokerBuilder")
            .field("topology", &self.topology.as_ref().ok())
            .field("replicas", &self.replicas)
            .field("allow_eviction", &self.allow_eviction)
            .field("key_retention", &self.key_retention)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBrokerBuilder {
    /// Starts even when Redis's `maxmemory-policy` is not `noeviction`.
    ///
    /// Only for Redis instances that never reach `maxmemory`: under an
    /// evicting policy a full Redis deletes keys, jobs among them.
    pub fn allow_eviction(mut self, allow: bool) -> Self {
        self.allow_eviction = allow;
        self
    }

    /// How long a completed job's idempotency key stays held (default 24 h).
    pub fn key_retention(mut self, retention: Duration) -> Self {
        self.key_retention = retention;
        self
    }

    /// The largest payload, in bytes of JSON, a reserved job may carry
    /// (default [`DEFAULT_MAX_PAYLOAD_BYTES`], 1 MiB, the schema registry's
    /// default enqueue limit). A job above it was written by a producer
    /// that skipped the client's size check: it is dead-lettered with a
    /// reason naming the limit instead of running. Raise it together with
    /// [`SchemaRegistry::with_max_payload_bytes`](crate::SchemaRegistry::with_max_payload_bytes).
    pub fn max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// How long a non-blocking call waits for Redis's reply before failing
    /// with [`Error::Unavailable`] (default 5 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Makes every enqueue and every completion wait until `replicas`
    /// replicas of the master holding the queue have the write (Redis
    /// `WAIT`), at most `timeout`; when fewer confirm in time the call
    /// fails with [`Error::Unavailable`] (the write is on the master but
    /// may be lost if the master fails now). Off by default.
    ///
    /// Redis replication is asynchronous: without this, a job whose
    /// enqueue returned `Ok` can vanish when its master dies before
    /// replicating it and a replica is promoted. With it, every write
    /// that returned `Ok` is on `replicas` replicas too. The cost is the
    /// replication delay on each enqueue and completion (no extra round
    /// trip: `WAIT` travels in the same pipeline), and availability: while
    /// fewer than `replicas` replicas are up, enqueues fail. Measured in
    /// `docs/performance.md`; trade-offs in `docs/redis.md`.
    ///
    /// `replicas` of 0 turns it off.
    pub fn wait_for_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.replicas = (replicas > 0).then_some(Replicas {
            count: replicas,
            timeout,
        });
        self
    }

    /// How long opening a connection may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Reads the time written into envelopes (a retry's `run_at`, the
    /// dead-lettered time shown until read back) and used for the age in
    /// [`QueueStats`] from `clock` (default: a [`TokioClock`], like the
    /// worker's). Due times and lease deadlines never depend on it: only
    /// delays are sent, and Redis adds them to its own clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The queue history's buckets (default: minutes for a day, hours for
    /// 30 days). Every broker on one Redis must use the same layout.
    pub fn history_layout(mut self, layout: HistoryLayout) -> Self {
        self.history = layout;
        self
    }

    /// Connects, checks `maxmemory-policy` and loads the scripts.
    pub async fn connect(self) -> Result<RedisBroker> {
        for (what, value) in [
            ("response timeout", self.response_timeout),
            ("connect timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidConfig(format!("the Redis {what} must be above zero")));
            }
        }
        if self.max_payload_bytes == 0 {
            return Err(Error::InvalidConfig("the payload limit must be above zero".into()));
        }
        if self.key_retention.is_zero() {
            return Err(Error::InvalidConfig(
                "the idempotency key retention must be above zero".into(),
            ));
        }
        if self.replicas.is_some_and(|r| r.timeout.is_zero()) {
            return Err(Error::InvalidConfig(
                "the replica wait timeout must be above zero".into(),
            ));
        }
        let topology = self.topology.clone().map_err(Error::InvalidConfig)?;
        let (mut conn, waiters, addr) = match &topology {
            Topology::Single(url) => self.connect_single(url).await?,
            Topology::Cluster(nodes) => self.connect_cluster(nodes).await?,
            Topology::Sentinel {
                sentinels,
                master,
                node,
            } => self.connect_sentinel(sentinels, master, node).await?,
        };
        check_eviction_policy(&mut conn, self.allow_eviction).await?;
        scripts::load_all(&mut conn).await?;
        tracing::info!(redis = %addr, topology = ?topology, "connected to Redis");
        Ok(RedisBroker {
            conn,
            waiters,
            keys: RwLock::new(HashMap::new()),
            registered: Mutex::new(HashSet::new()),
            clock: self.clock,
            key_retention: self.key_retention,
            max_payload_bytes: self.max_payload_bytes,
            replicas: self.replicas,
            history: self.history,
            addr,
        })
    }

    /// One server: refused when it is a cluster node.
    async fn connect_single(&self, url: &str) -> Result<(Conn, Waiters, String)> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::InvalidConfig(format!("the Redis URL is not valid: {e}; {URL_FORMS}")))?;
        let addr = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(map_err)?;
        refuse_cluster_node(&mut conn, &addr).await?;
        let waiters = Waiters::new(wait::Nodes::Single(client), self.connect_timeout);
        Ok((Conn::Single(conn), waiters, addr))
    }

    /// A cluster, from any of its nodes.
    async fn connect_cluster(&self, nodes: &[String]) -> Result<(Conn, Waiters, String)> {
        let infos = nodes
            .iter()
            .map(|n| n.as_str().into_connection_info())
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(|e| Error::InvalidConfig(format!("a Redis Cluster node URL is not valid: {e}; {URL_FORMS}")))?;
        let Some(seed) = infos.first().cloned() else {
            return Err(Error::InvalidConfig(format!(
                "no Redis Cluster node given; {URL_FORMS}"
            )));
        };
        let client = ClusterClientBuilder::new(infos)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            .retries(6)
            .min_retry_wait(20)
            .max_retry_wait(1_000)
            .build()
            .map_err(|e| Error::InvalidConfig(format!("the Redis Cluster settings are not valid: {e}")))?;
        let conn = client.get_async_connection().await.map_err(|e| {
            let mapped = map_err(e);
            if mapped.is_transient() {
                mapped
            } else {
                Error::InvalidConfig(format!(
                    "cannot join the Redis Cluster: {mapped}. If this Redis is not a cluster node, {URL_FORMS}"
                ))
            }
        })?;
        let addr = format!("cluster via {}", seed.addr());
        let waiters = Waiters::new(wait::Nodes::Cluster(seed), self.connect_timeout);
        Ok((Conn::cluster(conn), waiters, addr))
    }

    /// The master the sentinels name.
    async fn connect_sentinel(
        &self,
        sentinels: &[String],
        master: &str,
        node: &str,
    ) -> Result<(Conn, Waiters, String)> {
        let node_info = node
            .into_connection_info()
            .map_err(|e| Error::InvalidConfig(format!("the Redis Sentinel URL is not valid: {e}; {URL_FORMS}")))?;
        let node_info =
            SentinelNodeConnectionInfo::default().set_redis_connection_info(node_info.redis_settings().clone());
        let sentinel = SentinelClient::build(
            sentinels.iter().map(String::as_str).collect(),
            master.to_owned(),
            Some(node_info),
            SentinelServerType::Master,
        )
        .map_err(|e| Error::InvalidConfig(format!("the Redis Sentinel settings are not valid: {e}")))?;
        let conn = SentinelConn::connect(sentinel, self.connect_timeout, self.response_timeout).await?;
        let conn = Conn::Sentinel(conn);
        let waiters = Waiters::new(wait::Nodes::Master(conn.clone()), self.connect_timeout);
        Ok((
            conn,
            waiters,
            format!("master `{master}` via {} sentinels", sentinels.len()),
        ))
    }
}

/// Refuses a plain connection to a cluster node: it would reach only the
/// slots of that node, and the registry maybe not at all.
async fn refuse_cluster_node(conn: &mut ConnectionManager, addr: &str) -> Result<()> {
    let info: redis::RedisResult<String> = redis::cmd("INFO").arg("cluster").query_async(conn).await;
    match info {
        Ok(info) if info.lines().any(|l| l.trim() == "cluster_enabled:1") => Err(Error::InvalidConfig(format!(
            "the Redis at {addr} is a Redis Cluster node: a plain `redis://` URL reaches only the slots of that node. \
             Connect with `redis+cluster://{addr}` (list more nodes after commas: \
             `redis+cluster://host:port,host:port`) or `RedisBroker::cluster_builder`"
        ))),
        Ok(_) => Ok(()),
        Err(e) => {
            let mapped = map_err(e);
            if mapped.is_transient() {
                return Err(mapped);
            }
            tracing::warn!(error = %mapped, "cannot read INFO cluster; assuming Redis is not a cluster node");
            Ok(())
        }
    }
}

/// Refuses an evicting `maxmemory-policy` unless allowed (on a cluster,
/// on any master); warns when the policy cannot be read (managed Redis
/// often forbids `CONFIG`).
async fn check_eviction_policy(conn: &mut Conn, allow_eviction: bool) -> Result<()> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("maxmemory-policy");
    let reply = match conn {
        Conn::Cluster(cluster, _) => {
            use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
            cluster
                .route_command(cmd, RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)))
                .await
        }
        other => cmd.query_async::<Value>(other).await,
    };
    let policy = match reply {
        Ok(reply) => {
            let mut texts = Vec::new();
            conn::flatten_text(reply, &mut texts);
            let mut policies: Vec<String> = texts
                .windows(2)
                .filter(|pair| pair[0] == "maxmemory-policy")
                .map(|pair| pair[1].clone())
                .collect();
            // The first evicting policy, if any master has one.
            policies.sort_by_key(|p| p == "noeviction");
            policies.into_iter().next()
        }
        Err(e) => {
            let mapped = map_err(e);
            if mapped.is_transient() {
                return Err(mapped);
            }
            tracing::warn!(error = %mapped, "cannot read Redis's maxmemory-policy; make sure it is `noeviction`, or jobs may be evicted when Redis is full");
            return Ok(());
        }
    };
    match policy.as_deref() {
        Some("noeviction") => Ok(()),
        Some(policy) if allow_eviction => {
            tracing::warn!(
                policy,
                "Redis maxmemory-policy is not `noeviction`: jobs can be evicted when Redis is full"
            );
            Ok(())
        }
        Some(policy) => Err(Error::InvalidConfig(format!(
            "Redis maxmemory-policy is `{policy}`, which deletes keys (jobs among them) when Redis is full; \
             set `maxmemory-policy noeviction` (redis.conf or CONFIG SET), or opt in with \
             `RedisBrokerBuilder::allow_eviction(true)` if this Redis never reaches maxmemory"
        ))),
        None => {
            tracing::warn!("Redis did not report its maxmemory-policy; make sure it is `noeviction`");
            Ok(())
        }
    }
}

/// Milliseconds in `d`, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Groups positions of `items` by queue, keeping first-seen order, in
/// slices of at most [`MAX_BATCH`].
fn by_queue<T>(items: &[T], queue: impl Fn(&T) -> &QueueName) -> Vec<(QueueName, Vec<usize>)> {
    let mut groups: Vec<(QueueName, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let name = queue(item);
        match groups
            .iter_mut()
            .find(|(group, idx)| group == name && idx.len() < MAX_BATCH)
        {
            Some((_, idx)) => idx.push(i),
            None => groups.push((name.clone(), vec![i])),
        }
    }
    groups
}

/// A job's delay in whole milliseconds: `run_at − enqueued_at` on the
/// producer's clock, which Redis then adds to its own. Rounded up, so a job
/// never runs early; zero means now.
fn delay_ms(job: &JobEnvelope) -> u64 {
    (job.run_at - job.enqueued_at).to_std().map(millis_ceil).unwrap_or(0)
}

/// Milliseconds in `d`, rounded up.
fn millis_ceil(d: Duration) -> u64 {
    let ms = millis(d);
    if d > Duration::from_millis(ms) {
        ms.saturating_add(1)
    } else {
        ms
    }
}

/// One status per script reply entry: 1 done, 2 done and the job's
/// cancel requested (from `extend`), anything else lease lost.
fn statuses(what: &str, reply: Value) -> Result<Vec<LeaseStatus>> {
    array(what, reply)?
        .iter()
        .map(|v| {
            Ok(match int(what, v)? {
                1 => LeaseStatus::Held,
                2 => LeaseStatus::Cancelled,
                _ => LeaseStatus::Lost,
            })
        })
        .collect()
}

impl RedisBroker {
    /// Connects to `url` with the default settings (see [`RedisBrokerBuilder`]).
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a broker for `url`: one server
    /// (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS), a
    /// cluster (`redis+cluster://[user:password@]host:port,host:port`, any
    /// reachable nodes) or the master behind Redis Sentinel
    /// (`redis+sentinel://[user:password@]host:port,host:port/<master-name>[/<db>]`,
    /// the sentinels' addresses; user and password are the master's).
    pub fn builder(url: impl Into<String>) -> RedisBrokerBuilder {
        Self::builder_for(parse_url(&url.into()).map_err(|e| e.to_string()))
    }

    /// Starts configuring a broker for a Redis Cluster reached through any
    /// of `nodes` (`redis://[user:password@]host:port` each; the cluster
    /// tells the rest).
    pub fn cluster_builder<I: IntoIterator<Item = S>, S: Into<String>>(nodes: I) -> RedisBrokerBuilder {
        let nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let topology = if nodes.is_empty() {
            Err(format!("no Redis Cluster node given; {URL_FORMS}"))
        } else {
            Ok(Topology::Cluster(nodes))
        };
        Self::builder_for(topology)
    }

    /// Starts configuring a broker for the master named `master` that the
    /// `sentinels` (`redis://host:port` each) watch; it follows a failover.
    /// `master_url` (`redis://[user:password@]any-host[/db]`) gives the
    /// master's credentials and database; its host is not used.
    pub fn sentinel_builder<I: IntoIterator<Item = S>, S: Into<String>>(
        sentinels: I,
        master: impl Into<String>,
        master_url: impl Into<String>,
    ) -> RedisBrokerBuilder {
        let sentinels: Vec<String> = sentinels.into_iter().map(Into::into).collect();
        let topology = if sentinels.is_empty() {
            Err(format!("no Redis Sentinel given; {URL_FORMS}"))
        } else {
            Ok(Topology::Sentinel {
                sentinels,
                master: master.into(),
                node: master_url.into(),
            })
        };
        Self::builder_for(topology)
    }

    fn builder_for(topology: std::result::Result<Topology, String>) -> RedisBrokerBuilder {
        RedisBrokerBuilder {
            topology,
            replicas: None,
            allow_eviction: false,
            key_retention: super::DEFAULT_KEY_RETENTION,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            clock: Arc::new(TokioClock::new()),
            history: HistoryLayout::default(),
        }
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    fn keys(&self, queue: &QueueName) -> Arc<QueueKeys> {
        if let Some(keys) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(queue) {
            return keys.clone();
        }
        let mut all = self.keys.write().unwrap_or_else(|p| p.into_inner());
        all.entry(queue.clone())
            .or_insert_with(|| Arc::new(QueueKeys::new(queue)))
            .clone()
    }

    /// Adds queues this process has not registered yet to the queue registry.
    async fn register<'a>(&self, queues: impl IntoIterator<Item = &'a QueueName>) -> Result<()> {
        let new: BTreeSet<QueueName> = {
            let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            queues
                .into_iter()
                .filter(|q| !registered.contains(*q))
                .cloned()
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = new.iter().map(QueueName::as_str).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg(QUEUES_KEY).arg(&names).ignore();
        if let Some(replicas) = self.replicas {
            // Even a registry entry must survive a failover.
            pipe.cmd("WAIT")
                .arg(replicas.count)
                .arg(millis(replicas.timeout).max(1))
                .ignore();
        }
        pipe.exec_async(&mut self.conn()).await.map_err(map_err)?;
        self.registered.lock().unwrap_or_else(|p| p.into_inner()).extend(new);
        Ok(())
    }

    /// Stores `envelope` (the leased one, updated by the caller) with its
    /// `run_at` moved to now + `delay`, and schedules it: a retry when
    /// `failed`, a snooze otherwise.
    async fn reschedule(&self, lease: &Lease, mut envelope: JobEnvelope, delay: Duration, failed: bool) -> Result<()> {
        let k = self.keys(&lease.queue);
        envelope.run_at = crate::envelope::after(self.clock.now(), delay)?;
        let call = SCRIPTS
            .retry
            .call(&[
                &k.jobs,
                &k.active,
                &k.lease,
                &k.ready,
                &k.scheduled,
                &k.stats,
                &k.wake,
                &k.history_minute,
                &k.history_hour,
            ])
            .arg(&layout_args(&self.history)[..])
            .arg(lease.id.to_string())
            .arg(lease.token.0)
            .arg(envelope.to_json())
            .arg(millis_ceil(delay))
            .arg(if failed { "1" } else { "0" });
        match int("retry", &run(&mut self.conn(), call).await?)? {
            1 => Ok(()),
            _ => Err(Error::LeaseLost(lease.id)),
        }
    }

    /// Runs one lease-fenced script per batch of leases, grouped by queue,
    /// in one round trip. `lead` goes before the id/token pairs in ARGV.
    async fn per_lease(
        &self,
        leases: &[Lease],
        lua: &'static Lua,
        keys: impl Fn(&QueueKeys) -> Vec<&str>,
        lead: &[u64],
        replicas: Option<Replicas>,
    ) -> Result<Vec<LeaseStatus>> {
        let groups = by_queue(leases, |l| &l.queue);
        let mut calls = Vec::with_capacity(groups.len());
        for (queue, idx) in &groups {
            let queue_keys = self.keys(queue);
            let mut call = lua.call(&keys(&queue_keys));
            if !lead.is_empty() {
                call = call.arg(lead);
            }
            for &i in idx {
                call = call.arg(leases[i].id.to_string()).arg(leases[i].token.0);
            }
            calls.push(call);
        }
        let replies = run_all_durable(&mut self.conn(), calls, replicas).await?;
        let mut out = vec![LeaseStatus::Lost; leases.len()];
        for ((_, idx), reply) in groups.iter().zip(replies) {
            for (&i, status) in idx.iter().zip(statuses(lua.name(), reply)?) {
                out[i] = status;
            }
        }
        Ok(out)
    }

    /// What leasing `queue`'s jobs needs, for a call that may outlive its caller.
    fn leaser(&self, queue: &QueueName) -> Leaser {
        Leaser {
            conn: self.conn(),
            keys: self.keys(queue),
            queue: queue.clone(),
            max_payload_bytes: self.max_payload_bytes,
            history: self.history,
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(&self, jobs: Vec<JobEnvelope>) -> Result<Vec<EnqueueOutcome>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        for job in &jobs {
            crate::envelope::check_priority(job.priority)?;
        }
        let groups = by_queue(&jobs, |j| &j.queue);
        self.register(groups.iter().map(|(q, _)| q)).await?;
        let mut calls = Vec::with_capacity(groups.len());
        for (queue, idx) in &groups {
            let k = self.keys(queue);
            let mut call = SCRIPTS.enqueue.call(&[
                &k.jobs,
                &k.ready,
                &k.scheduled,
                &k.unique,
                &k.completed_keys,
                &k.job_keys,
                &k.wake,
            ]);
            for &i in idx {
                let job = &jobs[i];
                call = call
                    .arg(job.id.to_string())
                    .arg(job.to_json())
                    .arg(delay_ms(job))
                    .arg(job.idempotency_key.as_deref().unwrap_or(""));
            }
            calls.push(call);
        }
        let replies = run_all_durable(&mut self.conn(), calls, self.replicas).await?;
        let mut outcomes = vec![None; jobs.len()];
        for ((_, idx), reply) in groups.iter().zip(replies) {
            for (&i, entry) in idx.iter().zip(array("enqueue", reply)?) {
                let id = jobs[i].id;
                outcomes[i] = Some(match entry {
                    Value::Int(1) => {
                        tracing::debug!(job.id = %id, queue = %jobs[i].queue, "job enqueued");
                        EnqueueOutcome::Enqueued(id)
                    }
                    holder => EnqueueOutcome::Duplicate(text("duplicate holder", holder)?.parse()?),
                });
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| Error::Backend("Redis returned fewer enqueue outcomes than jobs".into())))
            .collect()
    }

    async fn reserve(&self, queue: &QueueName, request: ReserveRequest) -> Result<Vec<Reservation>> {
        if request.max == 0 {
            return Err(Error::InvalidConfig("reserve needs max of at least 1".into()));
        }
        let leaser = self.leaser(queue);
        let lease_ms = millis(request.lease);
        let give_up = tokio::time::Instant::now() + request.wait;
        // After a wake-up token: the first due time known before it (see reserve.lua).
        let mut knew = String::from("-");
        loop {
            let max = request.max.min(MAX_BATCH);
            let pass = leaser.reserve_pass(max, lease_ms, knew.clone(), request.worker.clone());
            let (now, next_due) = match pass.await? {
                Pass::Leased(good) if good.is_empty() => continue,
                Pass::Leased(good) => {
                    tracing::debug!(%queue, count = good.len(), "jobs reserved");
                    return Ok(good);
                }
                Pass::Idle { now, next_due } => (now, next_due),
            };
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let due = u64::try_from(next_due).ok().map(Duration::from_millis);
            knew = match self.waiters.wait(&self.conn, &leaser.keys.wake, left, due).await? {
                Woken::Token if next_due >= 0 => (now + next_due).to_string(),
                Woken::Token => String::new(),
                Woken::Timeout => "-".into(),
            };
        }
    }

    /// `true`: a dropped reserve call leases nothing that stays leased. Its
    /// script runs in a task of its own, which releases what it leased when
    /// nobody waits for the reply any more, and a dropped wait puts back
    /// the wake-up token it may have taken.
    fn reserve_is_cancel_safe(&self) -> bool {
        true
    }

    fn control(&self) -> Option<&dyn super::JobControl> {
        Some(self)
    }

    fn queue_history(&self) -> Option<&dyn QueueHistory> {
        Some(self)
    }

    async fn complete(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        self.per_lease(
            leases,
            &SCRIPTS.complete,
            |k| {
                vec![
                    &k.jobs,
                    &k.active,
                    &k.lease,
                    &k.job_keys,
                    &k.unique,
                    &k.completed_keys,
                    &k.stats,
                    &k.history_minute,
                    &k.history_hour,
                ]
            },
            &[&layout_args(&self.history)[..], &[millis(self.key_retention)]].concat(),
            self.replicas,
        )
        .await
    }

    async fn retry_after(&self, job: &Reservation, delay: Duration, attempt: AttemptRecord) -> Result<()> {
        let mut envelope = JobEnvelope::clone(&job.envelope);
        envelope.attempt += 1;
        envelope.attempts.push(attempt);
        self.reschedule(&job.lease, envelope, delay, true).await
    }

    async fn snooze(&self, job: &Reservation, delay: Duration) -> Result<()> {
        let envelope = JobEnvelope::clone(&job.envelope);
        self.reschedule(&job.lease, envelope, delay, false).await
    }

    async fn dead_letter(&self, job: &Reservation, attempt: Option<AttemptRecord>, reason: &str) -> Result<()> {
        let lease = &job.lease;
        let k = self.keys(&lease.queue);
        let reason = truncate_error(reason.to_owned());
        let mut envelope = JobEnvelope::clone(&job.envelope);
        envelope.attempts.extend(attempt);
        envelope.dead_lettered_at = Some(self.clock.now());
        envelope.dead_letter_reason = Some(reason.clone());
        let call = dead_letter_call(&k, &self.history)
            .arg(lease.id.to_string())
            .arg(lease.token.0)
            .arg(envelope.to_json())
            .arg(&reason)
            .arg("");
        let done = int("dead_letter", &run(&mut self.conn(), call).await?)?;
        if done == 1 {
            tracing::debug!(job.id = %lease.id, queue = %lease.queue, "job dead-lettered");
            Ok(())
        } else {
            Err(Error::LeaseLost(lease.id))
        }
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        self.per_lease(
            leases,
            &SCRIPTS.release,
            |k| vec![&k.active, &k.lease, &k.ready, &k.wake],
            &[],
            None,
        )
        .await
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        self.per_lease(
            leases,
            &SCRIPTS.extend,
            |k| vec![&k.active, &k.lease],
            &[millis(lease)],
            None,
        )
        .await
    }

    async fn recover_expired(&self, queue: &QueueName, max: usize, lease: Duration) -> Result<Vec<Reservation>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let leaser = self.leaser(queue);
        let good = leaser.recover(max.min(MAX_BATCH), millis(lease)).await?;
        for r in &good {
            tracing::warn!(job.id = %r.lease.id, %queue, "lease expired; job recovered");
        }
        // Recovery also looks, a page at a time, for envelopes in no state.
        if let Err(e) = leaser.restore().await {
            tracing::warn!(%queue, error = %e, "looking for jobs stored in no state failed");
        }
        Ok(good)
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        let k = self.keys(queue);
        let call = SCRIPTS
            .stats
            .call(&[&k.jobs, &k.ready, &k.scheduled, &k.active, &k.dead, &k.stats, &k.paused])
            .arg(PROMOTE_BATCH);
        let reply = array("stats", run(&mut self.conn(), call).await?)?;
        let [_, ready, scheduled, active, dead, completed, retried, dead_lettered, dropped, restored, heads, paused] =
            <[Value; 12]>::try_from(reply)
                .map_err(|r| Error::Backend(format!("unexpected reply from Redis for stats: {r:?}").into()))?;
        let count = |v: &Value| int("stats", v).map(|n| n.max(0) as u64);
        let now = self.clock.now();
        // The head of each priority's ready list: the oldest of them is the
        // queue's oldest ready job.
        let oldest_ready_age_ms = array("stats", heads)?
            .into_iter()
            .filter_map(bytes)
            .filter_map(|raw| serde_json::from_slice::<JobEnvelope>(&raw).ok())
            .map(|envelope| (now - envelope.run_at).num_milliseconds().max(0) as u64)
            .max();
        Ok(QueueStats {
            ready: count(&ready)?,
            scheduled: count(&scheduled)?,
            active: count(&active)?,
            dead: count(&dead)?,
            oldest_ready_age_ms,
            completed: count(&completed)?,
            retried: count(&retried)?,
            dead_lettered: count(&dead_lettered)?,
            dropped: count(&dropped)?,
            restored: count(&restored)?,
            paused: count(&paused)? == 1,
        })
    }

    async fn queues(&self) -> Result<Vec<QueueName>> {
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(QUEUES_KEY)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let mut queues: Vec<QueueName> = names.into_iter().filter_map(|n| QueueName::new(n).ok()).collect();
        queues.sort();
        Ok(queues)
    }

    async fn ping(&self) -> Result<()> {
        redis::cmd("PING").exec_async(&mut self.conn()).await.map_err(map_err)
    }
}
