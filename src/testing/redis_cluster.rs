//! Redis Cluster and Redis Sentinel set-ups for tests (features `test-util`
//! and `redis`), built from [`RedisServer`]s on free ports in temporary
//! directories and torn down on drop.
//!
//! - [`RedisCluster::start`]: `masters` masters sharing the 16384 slots
//!   evenly, each with `replicas` replicas, `cluster-node-timeout` short so
//!   a killed master's replica is promoted within about two seconds.
//! - [`RedisCluster::shared`]: one 3-master cluster per test process for
//!   suites that only need *a* cluster (the conformance suite); a watchdog
//!   process stops it and removes its directories when the test process ends.
//! - [`RedisSentinels::start`]: a master, a replica and three sentinels
//!   watching them (quorum 2, `down-after-milliseconds` 1000).
//! - [`Failover`]: the steps of a failover, the same on both, for tests
//!   that kill a master and check what survives.
//!
//! Like [`RedisServer::start`], these return `None` (after printing a skip
//! notice) when `redis-server` is missing, unless `FLAGSHIP_REQUIRE_REDIS=1`.
//!
//! ```no_run
//! use flagship_worker::testing::redis_cluster::RedisCluster;
//!
//! let Some(cluster) = RedisCluster::start(3, 1) else { return };
//! let url = cluster.url(); // redis+cluster://127.0.0.1:…,127.0.0.1:…
//! # let _ = url;
//! ```

use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use super::{
    local::{free_port, temp_dir},
    redis_server::{find_binary, redis_required, RedisServer, RedisServerOptions, BINARY_ENV, REQUIRE_ENV},
};

/// How long a set-up may take to form (the cluster's own delays included).
const FORMING: Duration = Duration::from_secs(30);
/// The `cluster-node-timeout` of test clusters, in milliseconds.
pub const NODE_TIMEOUT_MS: u64 = 1_000;

/// Polls `check` every 20 ms until it returns `Some`, for at most `bound`;
/// panics with `what` when it never does.
fn poll<T>(what: &str, bound: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll_for(bound, check).unwrap_or_else(|| panic!("{what} did not happen within {bound:?}"))
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `bound`.
fn poll_for<T>(bound: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if started.elapsed() > bound {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one command on a server; `None` when it is down or refuses.
fn query<T: redis::FromRedisValue>(server: &RedisServer, cmd: &redis::Cmd) -> Option<T> {
    let mut conn = server
        .client()
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    cmd.query(&mut conn).ok()
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

/// A Redis Cluster of test servers: node `i` is [`node(i)`](Self::node).
/// Nodes `0..masters` start as masters; the replicas of master `m` are the
/// nodes `masters + m * replicas ..`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
    /// The watchdog of a [`shared`](Self::shared) cluster.
    watchdog: Option<Child>,
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.nodes.iter().map(RedisServer::port).collect::<Vec<_>>())
            .field("masters", &self.masters)
            .finish()
    }
}

/// Whether `redis-server` runs; prints the skip notice when not (or panics
/// when Redis is required).
fn redis_available() -> bool {
    if find_binary().is_some() {
        return true;
    }
    if redis_required() {
        panic!("{REQUIRE_ENV}=1 but redis-server cannot run; install it or set {BINARY_ENV}");
    }
    eprintln!("SKIPPED: redis-server not found (set {BINARY_ENV}, or install it); set {REQUIRE_ENV}=1 to fail instead");
    false
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits
    /// until the cluster serves every slot and every replica is in sync.
    pub fn start(masters: usize, replicas: usize) -> Option<Self> {
        assert!(masters > 0, "a cluster needs a master");
        if !redis_available() {
            return None;
        }
        let total = masters * (1 + replicas);
        let options = RedisServerOptions::new().args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &NODE_TIMEOUT_MS.to_string(),
            // Promote a replica whatever the age of its data (tests pause
            // replicas on purpose), and keep replicas where they are put.
            "--cluster-replica-validity-factor",
            "0",
            "--cluster-allow-replica-migration",
            "no",
            "--repl-ping-replica-period",
            "1",
        ]);
        let nodes: Vec<RedisServer> = (0..total)
            .map(|_| RedisServer::start_with(options.clone()))
            .collect::<Option<_>>()?;
        let cluster = RedisCluster {
            nodes,
            masters,
            watchdog: None,
        };
        cluster.form(replicas);
        Some(cluster)
    }

    /// One 3-master cluster (no replicas) shared by every caller in this
    /// process; `None` when `redis-server` is missing. Give each test its
    /// own queue names. It stops when the test process exits.
    pub fn shared() -> Option<&'static RedisCluster> {
        static SHARED: OnceLock<Option<RedisCluster>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let mut cluster = RedisCluster::start(3, 0)?;
                cluster.watchdog = Some(cluster.spawn_watchdog());
                Some(cluster)
            })
            .as_ref()
    }

    /// A shell that waits for this process to end, then kills the nodes
    /// and removes their directories (a static is never dropped).
    fn spawn_watchdog(&self) -> Child {
        let pids: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.pid().map(|p| p.to_string()))
            .collect();
        let dirs: Vec<String> = self.nodes.iter().map(|n| format!("'{}'", n.dir().display())).collect();
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.2; done; kill -9 {pids} 2>/dev/null; rm -rf {dirs}",
            parent = std::process::id(),
            pids = pids.join(" "),
            dirs = dirs.join(" "),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the cluster's watchdog shell: {e}"))
    }

    /// Meets the nodes, shares the slots among the masters, attaches the
    /// replicas and waits until all of it is in place.
    fn form(&self, replicas: usize) {
        let first = &self.nodes[0];
        for node in &self.nodes[1..] {
            let _: () = query(node, &cmd(&["CLUSTER", "MEET", "127.0.0.1", &first.port().to_string()]))
                .unwrap_or_else(|| panic!("CLUSTER MEET failed on {}", node.port()));
        }
        let per = 16384 / self.masters;
        for m in 0..self.masters {
            let low = m * per;
            let high = if m + 1 == self.masters { 16383 } else { low + per - 1 };
            let _: () = query(
                &self.nodes[m],
                &cmd(&["CLUSTER", "ADDSLOTSRANGE", &low.to_string(), &high.to_string()]),
            )
            .unwrap_or_else(|| panic!("CLUSTER ADDSLOTSRANGE failed on {}", self.nodes[m].port()));
        }
        let total = self.nodes.len();
        for node in &self.nodes {
            poll("every cluster node meeting every other", FORMING, || {
                let nodes: String = query(node, &cmd(&["CLUSTER", "NODES"]))?;
                (nodes.lines().filter(|l| !l.contains("handshake")).count() == total).then_some(())
            });
        }
        for m in 0..self.masters {
            let master_id = self.node_id(m);
            for r in 0..replicas {
                let replica = &self.nodes[self.masters + m * replicas + r];
                poll("a replica attaching to its master", FORMING, || {
                    query::<()>(replica, &cmd(&["CLUSTER", "REPLICATE", &master_id]))
                });
            }
        }
        self.wait_healthy();
    }

    /// Waits until every running node says the cluster is `ok` and every
    /// running replica's link to its master is up.
    pub fn wait_healthy(&self) {
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            poll("the cluster state becoming ok", FORMING, || {
                let info: String = query(node, &cmd(&["CLUSTER", "INFO"]))?;
                info.contains("cluster_state:ok").then_some(())
            });
            poll("a replica's link to its master", FORMING, || {
                let info: String = query(node, &cmd(&["INFO", "replication"]))?;
                (info.contains("role:master") || info.contains("master_link_status:up")).then_some(())
            });
        }
    }

    /// `redis+cluster://` with every node's address.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Node `i`, to kill or restart.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no nodes (never: a cluster has a master).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s cluster id.
    pub fn node_id(&self, i: usize) -> String {
        query(&self.nodes[i], &cmd(&["CLUSTER", "MYID"])).unwrap_or_else(|| panic!("CLUSTER MYID failed on node {i}"))
    }

    /// The slot of `key`.
    pub fn slot(key: &str) -> u16 {
        let tag = key
            .find('{')
            .and_then(|open| {
                key[open + 1..]
                    .find('}')
                    .filter(|len| *len > 0)
                    .map(|len| &key[open + 1..open + 1 + len])
            })
            .unwrap_or(key);
        crc16_xmodem(tag.as_bytes()) % 16384
    }

    /// The running node serving `slot` as master, from a live node's
    /// `CLUSTER SLOTS`.
    pub fn master_of_slot(&self, slot: u16) -> Option<usize> {
        let by_port: HashMap<u16, usize> = self.nodes.iter().enumerate().map(|(i, n)| (n.port(), i)).collect();
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let Some(slots) = query_slots(node) else {
                continue;
            };
            return slots
                .into_iter()
                .find(|(low, high, _)| (*low..=*high).contains(&slot))
                .and_then(|(_, _, (_, port))| by_port.get(&port).copied());
        }
        None
    }

    /// The node serving queue `queue`'s keys (`{queue}:…`) as master.
    pub fn master_of_queue(&self, queue: &str) -> Option<usize> {
        self.master_of_slot(Self::slot(&format!("{{{queue}}}")))
    }

    /// A replica of node `master`, by its own `INFO replication`.
    pub fn replica_of(&self, master: usize) -> Option<usize> {
        let port = self.nodes[master].port();
        self.nodes.iter().position(|n| {
            n.pid().is_some()
                && query::<String>(n, &cmd(&["INFO", "replication"]))
                    .is_some_and(|info| info.contains(&format!("master_port:{port}")))
        })
    }

    /// Moves `slot` from node `from` to node `to` the way
    /// `redis-cli --cluster reshard` does: `IMPORTING`/`MIGRATING`, keys
    /// moved in batches with `MIGRATE`, then `SETSLOT NODE` everywhere.
    pub fn move_slot(&self, slot: u16, from: usize, to: usize) {
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        let (source_id, target_id) = (self.node_id(from), self.node_id(to));
        let slot_s = slot.to_string();
        let run = |node: &RedisServer, cmd: &redis::Cmd| -> redis::RedisResult<redis::Value> {
            cmd.query(&mut node.connection())
        };
        let ok = |node: &RedisServer, args: &[&str]| {
            if let Err(e) = run(node, &cmd(args)) {
                panic!("{args:?} failed on {}: {e}", node.port());
            }
        };
        ok(target, &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &source_id]);
        ok(source, &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &target_id]);
        let migrate_all = || loop {
            let keys: Vec<String> = redis::from_redis_value(
                run(source, &cmd(&["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"]))
                    .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT failed: {e}")),
            )
            .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT did not return keys: {e}"));
            if keys.is_empty() {
                break;
            }
            let mut migrate = cmd(&[
                "MIGRATE",
                "127.0.0.1",
                &target.port().to_string(),
                "",
                "0",
                "5000",
                "KEYS",
            ]);
            migrate.arg(&keys);
            if let Err(e) = run(source, &migrate) {
                panic!("MIGRATE failed: {e}");
            }
        };
        migrate_all();
        ok(target, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &target_id]);
        // A key written on the source since the last look (a script whose
        // keys all still existed there) must follow first.
        poll("the source giving up the slot", FORMING, || {
            migrate_all();
            run(source, &cmd(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &target_id])).ok()
        });
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let _ = query::<()>(node, &cmd(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &target_id]));
        }
    }
}

/// A `CLUSTER SLOTS` entry: first slot, last slot, the master's (host, port).
type SlotRange = (u16, u16, (String, u16));

/// `CLUSTER SLOTS` entries, read loosely.
fn query_slots(node: &RedisServer) -> Option<Vec<SlotRange>> {
    let raw: Vec<Vec<redis::Value>> = query(node, &cmd(&["CLUSTER", "SLOTS"]))?;
    raw.into_iter()
        .map(|entry| {
            let low = redis::from_redis_value::<u16>(entry.first()?.clone()).ok()?;
            let high = redis::from_redis_value::<u16>(entry.get(1)?.clone()).ok()?;
            let master: Vec<redis::Value> = redis::from_redis_value(entry.get(2)?.clone()).ok()?;
            let host = redis::from_redis_value::<String>(master.first()?.clone()).ok()?;
            let port = redis::from_redis_value::<u16>(master.get(1)?.clone()).ok()?;
            Some((low, high, (host, port)))
        })
        .collect()
}

/// CRC16/XMODEM, the cluster's key hash.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Sends `signal` (`-STOP`, `-CONT`) to a running server.
fn signal(server: &RedisServer, signal: &str) {
    let pid = server
        .pid()
        .unwrap_or_else(|| panic!("node on port {} is not running", server.port()));
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
    assert!(status.success(), "kill {signal} {pid} failed");
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Paused nodes must run again to die cleanly.
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(node.pid().unwrap_or_default().to_string())
                .status();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// The master name the sentinels of [`RedisSentinels`] watch.
pub const SENTINEL_MASTER: &str = "flagship";

/// A `redis-server --sentinel` process, killed and its directory removed on drop.
struct Sentinel {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, a replica and three sentinels watching them (quorum 2):
/// killing the master makes the sentinels promote the replica.
pub struct RedisSentinels {
    /// Node 0 starts as the master, node 1 as its replica.
    nodes: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

impl fmt::Debug for RedisSentinels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSentinels")
            .field("nodes", &self.nodes.iter().map(RedisServer::port).collect::<Vec<_>>())
            .field("sentinels", &self.sentinels.iter().map(|s| s.port).collect::<Vec<_>>())
            .finish()
    }
}

impl RedisSentinels {
    /// Starts the set and waits until every sentinel knows the replica and
    /// the other sentinels (so a failover can be agreed).
    pub fn start() -> Option<Self> {
        if !redis_available() {
            return None;
        }
        let binary = find_binary()?;
        let master = RedisServer::start_with(RedisServerOptions::new().args(["--repl-ping-replica-period", "1"]))?;
        let replica = RedisServer::start_with(RedisServerOptions::new().args([
            "--replicaof".to_owned(),
            format!("127.0.0.1 {}", master.port()),
            "--repl-ping-replica-period".to_owned(),
            "1".to_owned(),
        ]))?;
        let sentinels = (0..3)
            .map(|_| start_sentinel(&binary, master.port()))
            .collect::<Vec<_>>();
        let set = RedisSentinels {
            nodes: vec![master, replica],
            sentinels,
        };
        poll("the replica syncing", FORMING, || {
            let info: String = query(&set.nodes[1], &cmd(&["INFO", "replication"]))?;
            info.contains("master_link_status:up").then_some(())
        });
        for s in &set.sentinels {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", s.port)).ok();
            poll("a sentinel discovering the replica and its peers", FORMING, || {
                let mut conn = client
                    .as_ref()?
                    .get_connection_with_timeout(Duration::from_millis(500))
                    .ok()?;
                let replicas: Vec<redis::Value> =
                    cmd(&["SENTINEL", "REPLICAS", SENTINEL_MASTER]).query(&mut conn).ok()?;
                let peers: Vec<redis::Value> =
                    cmd(&["SENTINEL", "SENTINELS", SENTINEL_MASTER]).query(&mut conn).ok()?;
                (!replicas.is_empty() && peers.len() == 2).then_some(())
            });
        }
        Some(set)
    }

    /// `redis+sentinel://` with the three sentinels and the master's name.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis+sentinel://{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// Node `i` (0 started as the master, 1 as the replica).
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Node `i`, to kill or restart.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", s.port)).ok()?;
            let mut conn = client.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
            let (_, port): (String, u16) = cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER])
                .query(&mut conn)
                .ok()?;
            Some(port)
        })
    }
}

/// The steps of a failover, the same on a [`RedisCluster`] and on
/// [`RedisSentinels`], for tests that kill a master while work goes on.
/// Blocking calls: from an async test, run them in
/// `tokio::task::block_in_place`.
pub trait Failover {
    /// The URL a broker connects with.
    fn broker_url(&self) -> String;

    /// The nodes (not the sentinels).
    fn servers(&self) -> &[RedisServer];

    /// The nodes, to kill or restart.
    fn servers_mut(&mut self) -> &mut [RedisServer];

    /// Node `i`.
    fn server(&self, i: usize) -> &RedisServer {
        &self.servers()[i]
    }

    /// The node serving `queue`'s keys as master now.
    fn master_of(&self, queue: &str) -> usize;

    /// A running replica of node `master`.
    fn replica_for(&self, master: usize) -> usize;

    /// Waits until node `i` is the promoted master, ready for writes.
    fn wait_promoted(&self, i: usize);

    /// Starts node `i` (an old master) again and waits until it is a
    /// replica of the current master, in sync.
    fn restart_as_replica(&mut self, i: usize);

    /// Stops node `i` with `SIGSTOP` (it holds its connections but answers
    /// nothing) until [`resume`](Self::resume).
    fn pause(&self, i: usize) {
        signal(self.server(i), "-STOP");
    }

    /// Lets node `i` run again after [`pause`](Self::pause).
    fn resume(&self, i: usize) {
        signal(self.server(i), "-CONT");
    }

    /// Closes node `master`'s connections to its replicas: writes stop
    /// replicating until a replica reconnects (a paused one cannot).
    fn cut_replication(&self, master: usize) {
        let cut: Option<()> = query(self.server(master), &cmd(&["CLIENT", "KILL", "TYPE", "replica"]));
        assert!(cut.is_some(), "CLIENT KILL TYPE replica failed on node {master}");
    }

    /// Kills node `i` with `SIGKILL`.
    fn kill(&mut self, i: usize) {
        self.servers_mut()[i].kill();
    }
}

impl Failover for RedisCluster {
    fn broker_url(&self) -> String {
        self.url()
    }

    fn servers(&self) -> &[RedisServer] {
        &self.nodes
    }

    fn servers_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    fn master_of(&self, queue: &str) -> usize {
        self.master_of_queue(queue)
            .unwrap_or_else(|| panic!("no node serves queue {queue}"))
    }

    fn replica_for(&self, master: usize) -> usize {
        self.replica_of(master)
            .unwrap_or_else(|| panic!("node {master} has no running replica"))
    }

    fn wait_promoted(&self, i: usize) {
        poll("a replica being promoted", FORMING, || {
            let role: Vec<redis::Value> = query(&self.nodes[i], &cmd(&["ROLE"]))?;
            let is_master = matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master");
            let info: String = query(&self.nodes[i], &cmd(&["CLUSTER", "INFO"]))?;
            (is_master && info.contains("cluster_state:ok")).then_some(())
        });
    }

    fn restart_as_replica(&mut self, i: usize) {
        self.nodes[i].start_again();
        self.wait_healthy();
    }
}

impl Failover for RedisSentinels {
    fn broker_url(&self) -> String {
        self.url()
    }

    fn servers(&self) -> &[RedisServer] {
        &self.nodes
    }

    fn servers_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    fn master_of(&self, _queue: &str) -> usize {
        let port = self
            .master_port()
            .unwrap_or_else(|| panic!("the sentinels name no master"));
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("the sentinels name an unknown master on port {port}"))
    }

    fn replica_for(&self, master: usize) -> usize {
        1 - master
    }

    fn wait_promoted(&self, i: usize) {
        let port = self.nodes[i].port();
        let promoted = poll_for(FORMING * 2, || {
            let info: String = query(&self.nodes[i], &cmd(&["INFO", "replication"]))?;
            (self.master_port() == Some(port) && info.contains("role:master")).then_some(())
        });
        if promoted.is_none() {
            let logs: Vec<String> = self
                .sentinels
                .iter()
                .map(|s| {
                    let log = std::fs::read_to_string(s.dir.join("sentinel.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                })
                .collect();
            panic!(
                "the sentinels did not promote node {i} within {:?}; their logs end:\n{}",
                FORMING * 2,
                logs.join("\n---\n")
            );
        }
    }

    fn restart_as_replica(&mut self, i: usize) {
        self.nodes[i].start_again();
        // What the sentinels would send once they notice it (their check
        // of a returning node runs every 10 s).
        let master = self
            .master_port()
            .unwrap_or_else(|| panic!("the sentinels name no master"));
        let _: Option<()> = query(&self.nodes[i], &cmd(&["REPLICAOF", "127.0.0.1", &master.to_string()]));
        poll("the old master becoming a synced replica", FORMING, || {
            let info: String = query(&self.nodes[i], &cmd(&["INFO", "replication"]))?;
            let master = self.master_port()?;
            (info.contains(&format!("master_port:{master}")) && info.contains("master_link_status:up")).then_some(())
        });
    }
}

fn start_sentinel(binary: &std::path::Path, master_port: u16) -> Sentinel {
    let dir = temp_dir("flagship-sentinel-");
    for _ in 0..5 {
        let port = free_port("redis-sentinel");
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\nlogfile sentinel.log\n\
             sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
             sentinel failover-timeout {SENTINEL_MASTER} 2000\n\
             sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
            dir = dir.display()
        );
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
        let mut child = Command::new(binary)
            .arg(&conf)
            .arg("--sentinel")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} --sentinel: {e}", binary.display()));
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            let up = client
                .as_ref()
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)).ok())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok());
            if up.is_some() {
                return Sentinel { port, dir, child };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "redis sentinel would not start; see {}",
        dir.join("sentinel.log").display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Known values from Redis's CLUSTER KEYSLOT.
        assert_eq!(RedisCluster::slot("foo"), 12182);
        assert_eq!(RedisCluster::slot("{foo}:jobs"), 12182);
        assert_eq!(RedisCluster::slot("123456789"), 12739);
    }
}
