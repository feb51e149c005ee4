//! The connection layer: one [`Conn`] over the three ways of reaching
//! Redis, so the script call sites never know which one they talk to.
//!
//! - **Single**: one server (or a proxy), through a [`ConnectionManager`]
//!   that reconnects by itself.
//! - **Cluster**: the `redis` crate's async cluster connection, which routes
//!   every command by its first key (a script by its first `KEYS` entry, a
//!   pipeline by its first keyed command), follows `MOVED`/`ASK`, refreshes
//!   the slot map and reconnects to a promoted replica.
//! - **Sentinel**: a connection to the master the sentinels name; after a
//!   connection error or a `READONLY` reply (the old master came back as a
//!   replica) the next call asks the sentinels again.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::Poll,
    time::Duration,
};

use redis::{
    aio::{ConnectionLike, ConnectionManager, MultiplexedConnection},
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
    sentinel::SentinelClient,
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};

use crate::error::{Error, Result};

/// Where Redis is, parsed from a URL or given to a builder.
#[derive(Clone)]
pub(super) enum Topology {
    /// One server: `redis://…` or `rediss://…`.
    Single(String),
    /// Seed nodes of a cluster, each a `redis://` URL.
    Cluster(Vec<String>),
    /// Sentinels (each a `redis://` URL) watching the master named `master`;
    /// `node` is a `redis://` URL carrying the master's credentials and
    /// database (its host is not used).
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        node: String,
    },
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may carry passwords: only the kind and the counts.
        match self {
            Topology::Single(_) => f.write_str("Single"),
            Topology::Cluster(nodes) => write!(f, "Cluster({} seed nodes)", nodes.len()),
            Topology::Sentinel { sentinels, master, .. } => {
                write!(f, "Sentinel({} sentinels, master {master:?})", sentinels.len())
            }
        }
    }
}

/// How to write the URL forms, for error messages.
pub(super) const URL_FORMS: &str = "use `redis://host:port` for one server, \
    `redis+cluster://host:port,host:port` (any reachable nodes of the cluster) for Redis Cluster, \
    or `redis+sentinel://host:port,host:port/<master-name>[/<db>]` for Sentinel";

/// Parses a broker URL: `redis://`/`rediss://` (one server),
/// `redis+cluster://`/`rediss+cluster://` (cluster seed nodes, comma
/// separated), `redis+sentinel://` (sentinels, then the master's name).
/// User and password, when given, are used for every Redis node (not for
/// the sentinels).
pub(super) fn parse_url(url: &str) -> Result<Topology> {
    let bad = |why: &str| Error::InvalidConfig(format!("the Redis URL is not valid: {why}; {URL_FORMS}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("it has no `scheme://`"))?;
    let (creds, rest) = match rest.rsplit_once('@') {
        Some((creds, rest)) => (format!("{creds}@"), rest),
        None => (String::new(), rest),
    };
    let (hosts, path) = match rest.split_once('/') {
        Some((hosts, path)) => (hosts, path),
        None => (rest, ""),
    };
    let hosts_only = hosts.split('?').next().unwrap_or_default();
    let seeds: Vec<&str> = hosts_only.split(',').filter(|h| !h.is_empty()).collect();
    match scheme {
        "redis" | "rediss" | "unix" | "redis+unix" => {
            if seeds.len() > 1 {
                return Err(bad("it names several hosts"));
            }
            if url.contains("cluster=") {
                return Err(bad("`cluster=` is not an option of a one-server URL"));
            }
            Ok(Topology::Single(url.to_owned()))
        }
        "redis+cluster" | "rediss+cluster" => {
            if seeds.is_empty() {
                return Err(bad("it names no cluster node"));
            }
            let db = path.split('?').next().unwrap_or_default();
            if !(db.is_empty() || db == "0") {
                return Err(bad("a cluster has only database 0"));
            }
            let node_scheme = scheme.trim_end_matches("+cluster");
            Ok(Topology::Cluster(
                seeds
                    .iter()
                    .map(|host| format!("{node_scheme}://{creds}{host}"))
                    .collect(),
            ))
        }
        "redis+sentinel" => {
            if seeds.is_empty() {
                return Err(bad("it names no sentinel"));
            }
            let mut parts = path.split('/');
            let master = parts
                .next()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| bad("it names no master"))?;
            let db = parts.next().filter(|d| !d.is_empty()).unwrap_or("0");
            Ok(Topology::Sentinel {
                sentinels: seeds.iter().map(|host| format!("redis://{host}")).collect(),
                master: master.to_owned(),
                node: format!("redis://{creds}{}/{db}", seeds[0]),
            })
        }
        _ => Err(bad(&format!("the scheme `{scheme}` is not known"))),
    }
}

/// A Redis node's address, as `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct NodeAddr {
    pub(super) host: String,
    pub(super) port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl NodeAddr {
    /// Parses `host:port` (IPv6 hosts in brackets or not).
    pub(super) fn parse(addr: &str) -> Option<Self> {
        let (host, port) = addr.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some(NodeAddr {
            host: host.to_owned(),
            port: port.parse().ok()?,
        })
    }
}

/// The shared connection for every non-blocking call, whatever the topology.
#[derive(Clone)]
pub(super) enum Conn {
    /// One server.
    Single(ConnectionManager),
    /// A cluster, routed per key, with the nodes last seen serving each
    /// hash tag (shared by clones).
    Cluster(ClusterConnection, Owners),
    /// The master the sentinels name.
    Sentinel(SentinelConn),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Single(_) => "Conn::Single",
            Conn::Cluster(..) => "Conn::Cluster",
            Conn::Sentinel(_) => "Conn::Sentinel",
        })
    }
}

impl Conn {
    /// Whether calls on several slots must go separately (a cluster).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(..))
    }

    /// A cluster connection with nothing known about its nodes yet.
    pub(super) fn cluster(conn: ClusterConnection) -> Self {
        Conn::Cluster(conn, Owners::default())
    }

    /// Sends `cmd` to the node at `addr` (a cluster), or to the one server
    /// (or master) otherwise.
    pub(super) async fn on_node(&mut self, addr: &NodeAddr, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::Cluster(conn, _) => {
                let route = SingleNodeRoutingInfo::ByAddress {
                    host: addr.host.clone(),
                    port: addr.port,
                };
                conn.route_command(cmd.clone(), RoutingInfo::SingleNode(route)).await
            }
            other => other.req_packed_command(cmd).await,
        }
    }

    /// The address of the cluster node serving `key`'s slot: the one last
    /// seen, or the one it announces (`CLUSTER NODES` sent there; `laddr`
    /// of `CLIENT INFO` when it announces none); `None` for a connection
    /// that is not to a cluster.
    pub(super) async fn owner(&mut self, key: &str) -> RedisResult<Option<NodeAddr>> {
        let Conn::Cluster(conn, owners) = self else {
            return Ok(None);
        };
        if let Some(addr) = owners.get(key) {
            return Ok(Some(addr));
        }
        let route = || {
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                key,
                SlotAddr::Master,
            )))
        };
        // The address the node announces (as the cluster names it to clients) ...
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("NODES");
        let nodes: String = redis::FromRedisValue::from_redis_value(conn.route_command(cmd, route()).await?)?;
        let mut addr = nodes
            .lines()
            .find(|line| {
                line.split_whitespace()
                    .nth(2)
                    .is_some_and(|flags| flags.contains("myself"))
            })
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|addr| addr.split('@').next())
            .and_then(NodeAddr::parse)
            .filter(|addr| !addr.host.is_empty());
        if addr.is_none() {
            // ... or, on a node that announces none (a lone node), the
            // address this connection reached it at.
            let mut cmd = redis::cmd("CLIENT");
            cmd.arg("INFO");
            let info: String = redis::FromRedisValue::from_redis_value(conn.route_command(cmd, route()).await?)?;
            addr = info
                .split_whitespace()
                .find_map(|field| field.strip_prefix("laddr="))
                .and_then(NodeAddr::parse);
        }
        match addr {
            Some(addr) => {
                owners.set(key, Some(addr.clone()));
                Ok(Some(addr))
            }
            None => Err(RedisError::from((
                ErrorKind::Client,
                "the cluster node serving a queue did not say its address (CLUSTER NODES, CLIENT INFO)",
            ))),
        }
    }

    /// Records that `key`'s slot moved to `addr` (from a `MOVED` reply), or
    /// forgets where it is (`None`: the node failed).
    pub(super) fn moved(&self, key: &str, addr: Option<NodeAddr>) {
        if let Conn::Cluster(_, owners) = self {
            owners.set(key, addr);
        }
    }

    /// Sends `pipeline` (commands whose keys the node at `addr` serves) to
    /// that node in one request; `Ok` holds one reply per command, errors
    /// included. Only for a cluster connection.
    pub(super) async fn pipeline_on(&mut self, addr: &NodeAddr, pipeline: Pipeline) -> RedisResult<Vec<Value>> {
        let Conn::Cluster(conn, _) = self else {
            return Err(RedisError::from((
                ErrorKind::Client,
                "a node pipeline needs a cluster connection",
            )));
        };
        let count = pipeline.len();
        let route = SingleNodeRoutingInfo::ByAddress {
            host: addr.host.clone(),
            port: addr.port,
        };
        conn.route_pipeline(pipeline, 0, count, route).await
    }

    /// The client for a connection of its own to the master (Sentinel
    /// mode: the master the sentinels name now); `None` otherwise.
    pub(super) async fn master_client(&self) -> RedisResult<Option<redis::Client>> {
        match self {
            Conn::Sentinel(sentinel) => Ok(Some(sentinel.current().await?.client)),
            _ => Ok(None),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn, _) => conn.req_packed_command(cmd),
            Conn::Sentinel(conn) => Box::pin(conn.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn, _) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(conn) => Box::pin(conn.commands(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn, _) => conn.get_db(),
            Conn::Sentinel(_) => 0,
        }
    }
}

/// The cluster node last seen serving each hash tag (each queue), shared
/// by clones of a [`Conn`]. Filled on first use, corrected by `MOVED`,
/// emptied for a tag whose node failed.
#[derive(Clone, Default)]
pub(super) struct Owners(Arc<Mutex<std::collections::HashMap<String, NodeAddr>>>);

impl Owners {
    /// The hash tag of `key` (`q` of `{q}:jobs`), or the whole key.
    fn tag(key: &str) -> &str {
        key.find('{')
            .and_then(|open| {
                let rest = &key[open + 1..];
                rest.find('}').filter(|len| *len > 0).map(|len| &rest[..len])
            })
            .unwrap_or(key)
    }

    fn get(&self, key: &str) -> Option<NodeAddr> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(Self::tag(key))
            .cloned()
    }

    fn set(&self, key: &str, addr: Option<NodeAddr>) {
        let mut owners = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match addr {
            Some(addr) => owners.insert(Self::tag(key).to_owned(), addr),
            None => owners.remove(Self::tag(key)),
        };
    }
}

/// The master's connection, with the client that opened it and a
/// generation number (so that only the first failure of a connection drops it).
#[derive(Clone)]
pub(super) struct Master {
    conn: MultiplexedConnection,
    client: redis::Client,
    generation: u64,
}

/// A connection to the master the sentinels name, asked again after a
/// failure. Clones share it.
#[derive(Clone)]
pub(super) struct SentinelConn(Arc<SentinelShared>);

struct SentinelShared {
    /// Asks the sentinels; one caller at a time.
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The master's connection while it works.
    current: Mutex<Option<Master>>,
    /// Timeouts for new master connections.
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    /// Asks the sentinels for the master and connects to it.
    pub(super) async fn connect(
        sentinel: SentinelClient,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        let conn = SentinelConn(Arc::new(SentinelShared {
            sentinel: tokio::sync::Mutex::new(sentinel),
            current: Mutex::new(None),
            config,
        }));
        conn.current().await.map_err(|e| {
            Error::Unavailable(
                format!(
                    "cannot reach the Redis master through the sentinels: check the sentinel addresses and the master name ({e})"
                )
                .into(),
            )
        })?;
        Ok(conn)
    }

    /// The master's connection, asking the sentinels when there is none.
    async fn current(&self) -> RedisResult<Master> {
        if let Some(master) = self.0.current.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(master);
        }
        let mut sentinel = self.0.sentinel.lock().await;
        // Another caller may have reconnected while this one waited.
        if let Some(master) = self.0.current.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(master);
        }
        let client = sentinel.async_get_client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.0.config)
            .await?;
        let mut current = self.0.current.lock().unwrap_or_else(|p| p.into_inner());
        let generation = current.as_ref().map_or(0, |m| m.generation) + 1;
        tracing::info!(master = %client.get_connection_info().addr(), "connected to the Redis master named by the sentinels");
        let master = Master {
            conn,
            client,
            generation,
        };
        *current = Some(master.clone());
        Ok(master)
    }

    /// Forgets the master's connection after `e` when `e` says it is gone
    /// or no longer the master.
    fn failed(&self, generation: u64, e: &RedisError) {
        let gone = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || matches!(
                e.kind(),
                ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
            );
        if !gone {
            return;
        }
        let mut current = self.0.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|m| m.generation == generation) {
            tracing::warn!(error = %e, "lost the Redis master; asking the sentinels again on the next call");
            *current = None;
        }
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let mut master = self.current().await?;
        let reply = master.conn.req_packed_command(cmd).await;
        if let Err(e) = &reply {
            self.failed(master.generation, e);
        }
        reply
    }

    async fn commands(&self, pipeline: &Pipeline, offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        let mut master = self.current().await?;
        let reply = master.conn.req_packed_commands(pipeline, offset, count).await;
        if let Err(e) = &reply {
            self.failed(master.generation, e);
        }
        reply
    }
}

/// Runs `futures` at once and returns their outputs in order (calls to
/// several cluster nodes go out together, one round trip in all).
pub(super) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Every text in `value`, depth first (a reply from several cluster nodes
/// nests each node's reply in a map or an array).
pub(super) fn flatten_text(value: Value, out: &mut Vec<String>) {
    match value {
        Value::BulkString(bytes) => out.push(String::from_utf8_lossy(&bytes).into_owned()),
        Value::SimpleString(text) => out.push(text),
        Value::Array(items) | Value::Set(items) => items.into_iter().for_each(|v| flatten_text(v, out)),
        Value::Map(pairs) => pairs.into_iter().for_each(|(k, v)| {
            flatten_text(k, out);
            flatten_text(v, out);
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_topology() {
        assert!(matches!(parse_url("redis://127.0.0.1:6379/2"), Ok(Topology::Single(_))));
        let Ok(Topology::Cluster(nodes)) = parse_url("redis+cluster://u:p@h1:7001,h2:7002") else {
            panic!("a cluster URL");
        };
        assert_eq!(nodes, ["redis://u:p@h1:7001", "redis://u:p@h2:7002"]);
        let Ok(Topology::Sentinel {
            sentinels,
            master,
            node,
        }) = parse_url("redis+sentinel://s1:26379,s2:26380/main/3")
        else {
            panic!("a sentinel URL");
        };
        assert_eq!(sentinels, ["redis://s1:26379", "redis://s2:26380"]);
        assert_eq!(master, "main");
        assert_eq!(node, "redis://s1:26379/3");
    }

    #[test]
    fn urls_that_cannot_mean_one_server_are_refused_with_the_forms() {
        for url in [
            "redis://h:7001,h:7002",
            "redis://h:7001/?cluster=true",
            "redis+cluster://",
            "redis+cluster://h:7001/3",
            "redis+sentinel://s1:26379",
            "cluster://h:7001",
        ] {
            let err = parse_url(url).err().unwrap_or_else(|| panic!("{url} accepted"));
            assert!(err.to_string().contains("redis+cluster://"), "{url}: {err}");
        }
    }

    #[test]
    fn owners_are_kept_per_hash_tag() {
        assert_eq!(Owners::tag("{flagship:audit}:jobs"), "flagship:audit");
        assert_eq!(Owners::tag("flagship-worker:queues"), "flagship-worker:queues");
        let owners = Owners::default();
        let addr = NodeAddr::parse("127.0.0.1:7001");
        owners.set("{q}:jobs", addr.clone());
        assert_eq!(owners.get("{q}:wake"), addr);
        owners.set("{q}:ready", None);
        assert_eq!(owners.get("{q}:jobs"), None);
    }

    #[test]
    fn node_addresses_parse() {
        assert_eq!(
            NodeAddr::parse("127.0.0.1:7001"),
            Some(NodeAddr {
                host: "127.0.0.1".into(),
                port: 7001
            })
        );
        assert_eq!(NodeAddr::parse("[::1]:7001").map(|a| a.host), Some("::1".into()));
        assert_eq!(NodeAddr::parse("nope"), None);
    }
}
