//! A private `redis-server` per test (features `test-util` and `redis`).
//!
//! [`RedisServer::start`] runs its own `redis-server` on a free port in a
//! temporary directory, so tests are isolated from each other and from any
//! shared Redis, and can kill and restart their server. When the binary is
//! missing, `start` prints a skip notice and returns `None` (the test then
//! returns early), unless the environment sets `FLAGSHIP_REQUIRE_REDIS=1`:
//! then it panics, so CI cannot pass by skipping.
//!
//! ```no_run
//! use flagship_worker::testing::redis_server::RedisServer;
//!
//! let Some(server) = RedisServer::start() else { return };
//! let url = server.url();
//! # let _ = url;
//! ```
//!
//! [`RedisFixture`] runs the conformance suite on the Redis broker.

use std::{
    collections::BTreeMap,
    fmt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    conformance::Fixture,
    local::{free_port, temp_dir},
};
use crate::{
    broker::{redis::RedisBroker, Backend},
    error::Result,
    job::QueueName,
};

/// The environment variable that turns a missing `redis-server` into a failure.
pub const REQUIRE_ENV: &str = "FLAGSHIP_REQUIRE_REDIS";
/// The environment variable naming the `redis-server` binary (default: from `PATH`).
pub const BINARY_ENV: &str = "FLAGSHIP_REDIS_SERVER";

/// How long a server may take to accept connections after it starts.
const STARTUP: Duration = Duration::from_secs(10);

/// How a [`RedisServer`] is configured.
#[derive(Debug, Clone, Default)]
pub struct RedisServerOptions {
    /// Append-only persistence, fsynced on every write, so a restart or even
    /// a `SIGKILL` loses nothing acknowledged.
    pub appendonly: bool,
    /// `maxmemory` in bytes (none: unlimited).
    pub maxmemory: Option<u64>,
    /// `maxmemory-policy` (none: Redis's default, `noeviction`).
    pub maxmemory_policy: Option<String>,
    /// Cluster mode, as a one-node cluster serving every slot: Redis then
    /// refuses a command or script whose keys span slots (`CROSSSLOT`),
    /// which proves a backend's key layout fits a real cluster.
    pub cluster: bool,
    /// More `redis-server` arguments, e.g. `["--rename-command", "CONFIG", ""]`.
    pub extra_args: Vec<String>,
}

impl RedisServerOptions {
    /// Redis's defaults, no persistence.
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns append-only persistence on (fsync always).
    pub fn appendonly(mut self, on: bool) -> Self {
        self.appendonly = on;
        self
    }

    /// Sets `maxmemory` in bytes.
    pub fn maxmemory(mut self, bytes: u64) -> Self {
        self.maxmemory = Some(bytes);
        self
    }

    /// Sets `maxmemory-policy`.
    pub fn maxmemory_policy(mut self, policy: impl Into<String>) -> Self {
        self.maxmemory_policy = Some(policy.into());
        self
    }

    /// Runs the server as a one-node cluster (see [`cluster`](Self::cluster)).
    pub fn cluster(mut self, on: bool) -> Self {
        self.cluster = on;
        self
    }

    /// Adds raw `redis-server` arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// Calls and CPU time of one command, from `INFO commandstats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandStat {
    /// How many times the command ran.
    pub calls: u64,
    /// Microseconds of Redis CPU it used in total.
    pub usec: u64,
}

/// A `redis-server` process owned by a test; killed and its directory
/// removed on drop.
pub struct RedisServer {
    /// The binary started.
    binary: PathBuf,
    /// The port it listens on (kept across restarts).
    port: u16,
    /// Its working directory (append-only files live here).
    dir: PathBuf,
    /// How it was configured (reused on restart).
    options: RedisServerOptions,
    /// The running process, if any.
    child: Option<Child>,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("pid", &self.pid())
            .finish()
    }
}

/// Whether the environment demands Redis tests run (`FLAGSHIP_REQUIRE_REDIS=1`).
pub fn redis_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// The `redis-server` binary, if it can run.
pub(super) fn find_binary() -> Option<PathBuf> {
    let binary = PathBuf::from(std::env::var_os(BINARY_ENV).unwrap_or_else(|| "redis-server".into()));
    let runs = Command::new(&binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    runs.then_some(binary)
}

impl RedisServer {
    /// Starts a server with Redis's defaults; `None` (after printing why)
    /// when `redis-server` is missing and [`REQUIRE_ENV`] is not `1`.
    pub fn start() -> Option<Self> {
        Self::start_with(RedisServerOptions::new())
    }

    /// Starts a server with `options`; see [`start`](Self::start).
    pub fn start_with(options: RedisServerOptions) -> Option<Self> {
        let Some(binary) = find_binary() else {
            if redis_required() {
                panic!("{REQUIRE_ENV}=1 but redis-server cannot run; install it or set {BINARY_ENV}");
            }
            eprintln!("SKIPPED: redis-server not found (set {BINARY_ENV}, or install it); set {REQUIRE_ENV}=1 to fail instead");
            return None;
        };
        let mut server = RedisServer {
            binary,
            port: 0,
            dir: temp_dir("flagship-redis-"),
            options,
            child: None,
        };
        // Another process may take the free port before redis-server binds it.
        for _ in 0..5 {
            server.port = free_port("redis-server");
            if server.spawn().is_ok() {
                return Some(server);
            }
        }
        panic!(
            "redis-server would not start; see {}",
            server.dir.join("redis.log").display()
        );
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The URL a broker connects with: [`url`](Self::url), or
    /// `redis+cluster://127.0.0.1:<port>` for a cluster-mode server.
    pub fn broker_url(&self) -> String {
        if self.options.cluster {
            format!("redis+cluster://127.0.0.1:{}", self.port)
        } else {
            self.url()
        }
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its working directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A client for direct commands (inspecting or corrupting keys).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap_or_else(|e| panic!("bad Redis URL {}: {e}", self.url()))
    }

    /// A synchronous connection for direct commands.
    pub fn connection(&self) -> redis::Connection {
        self.client()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot connect to test redis-server on {}: {e}", self.port))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(&self.binary);
        cmd.current_dir(&self.dir)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
            .args(["--logfile", "redis.log"])
            .arg("--dir")
            .arg(&self.dir);
        if self.options.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        if let Some(bytes) = self.options.maxmemory {
            cmd.args(["--maxmemory", &bytes.to_string()]);
        }
        if let Some(policy) = &self.options.maxmemory_policy {
            cmd.args(["--maxmemory-policy", policy]);
        }
        if self.options.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
        }
        cmd.args(&self.options.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < STARTUP {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("redis-server exited at start: {status}"));
                }
            }
            let ready = self
                .client()
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| {
                    redis::cmd("PING").query::<String>(&mut c)?;
                    if self.options.cluster {
                        self.serve_every_slot(&mut c)?;
                    }
                    Ok(())
                });
            if ready.is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        Err("redis-server did not accept connections in time".into())
    }

    /// Makes a cluster node serve all 16384 slots (again after a restart,
    /// where `nodes.conf` already says so), and checks the cluster is up.
    fn serve_every_slot(&self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        let info: String = redis::cmd("CLUSTER").arg("INFO").query(conn)?;
        if !info.contains("cluster_slots_assigned:16384") {
            redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(0)
                .arg(16383)
                .exec(conn)?;
        }
        let info: String = redis::cmd("CLUSTER").arg("INFO").query(conn)?;
        if info.contains("cluster_state:ok") {
            Ok(())
        } else {
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "cluster not up yet",
            )))
        }
    }

    /// Kills the server with `SIGKILL` (no chance to write anything more).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server gracefully (`SHUTDOWN`), flushing persistence.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if let Ok(mut conn) = self.client().get_connection_with_timeout(Duration::from_secs(2)) {
            // The reply never comes: the server closes the connection.
            let _ = redis::cmd("SHUTDOWN").exec(&mut conn);
        }
        if let Some(mut child) = self.child.take() {
            let started = Instant::now();
            while started.elapsed() < STARTUP {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (after
    /// [`kill`](Self::kill) or [`stop`](Self::stop)); with append-only
    /// persistence it comes back with its data.
    pub fn start_again(&mut self) {
        self.kill();
        if let Err(e) = self.spawn() {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// `INFO commandstats`, by command name (lower case, e.g. `evalsha`).
    pub fn command_stats(&self) -> BTreeMap<String, CommandStat> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .unwrap_or_else(|e| panic!("INFO commandstats failed: {e}"));
        info.lines()
            .filter_map(|line| {
                let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |key: &str| {
                    fields
                        .split(',')
                        .find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                        .unwrap_or(0)
                };
                Some((
                    name.to_owned(),
                    CommandStat {
                        calls: field("calls"),
                        usec: field("usec"),
                    },
                ))
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The conformance fixture for the Redis broker: a `redis-server` of its
/// own per case, and a broker on it.
///
/// Redis's clock cannot be paused, so [`advance`](Fixture::advance) sleeps; the
/// cases keep their waits short. Completed idempotency keys are kept for
/// [`RedisFixture::KEY_RETENTION`].
///
/// ```no_run
/// use flagship_worker::testing::redis_server::RedisFixture;
///
/// flagship_worker::conformance_tests! {
///     fixture: match RedisFixture::start().await { Some(f) => f, None => return },
///     test: #[tokio::test],
///     concurrent_test: #[tokio::test(flavor = "multi_thread", worker_threads = 4)],
///     key_retention: RedisFixture::KEY_RETENTION,
/// }
/// # fn main() {}
/// ```
///
/// [`on_shared_cluster`](RedisFixture::on_shared_cluster) runs a case on the
/// process's [shared 3-master cluster](super::redis_cluster::RedisCluster::shared)
/// instead, with its queues under a prefix of its own.
#[derive(Debug)]
pub struct RedisFixture {
    /// The case's own server (stopped when the fixture drops); `None` on
    /// the shared cluster.
    server: Option<RedisServer>,
    /// What the case's queue names start with (on the shared cluster).
    prefix: Option<String>,
    /// The broker under test.
    broker: Arc<RedisBroker>,
}

impl RedisFixture {
    /// How long the fixture's broker keeps completed jobs' idempotency keys.
    pub const KEY_RETENTION: Duration = Duration::from_millis(500);

    /// Starts a server and connects a broker; `None` when `redis-server` is
    /// missing (see [`RedisServer::start`]).
    pub async fn start() -> Option<Self> {
        Self::start_with(RedisServerOptions::new()).await
    }

    /// Like [`start`](Self::start), with a server configured by `options`.
    pub async fn start_with(options: RedisServerOptions) -> Option<Self> {
        let server = RedisServer::start_with(options)?;
        let broker = Self::connect(server.broker_url()).await;
        Some(RedisFixture {
            server: Some(server),
            prefix: None,
            broker,
        })
    }

    /// A broker on the process's shared 3-master cluster, with queue names
    /// under a prefix of this fixture's own, so that cases run side by side
    /// and their queues land on every master; `None` when `redis-server`
    /// is missing.
    pub async fn on_shared_cluster() -> Option<Self> {
        let cluster = super::redis_cluster::RedisCluster::shared()?;
        Some(RedisFixture {
            server: None,
            prefix: Some(super::local::unique_name("c")),
            broker: Self::connect(cluster.url()).await,
        })
    }

    async fn connect(url: String) -> Arc<RedisBroker> {
        let broker = RedisBroker::builder(url)
            .key_retention(Self::KEY_RETENTION)
            .history_layout(crate::testing::conformance::short_history_layout())
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test Redis: {e}"));
        Arc::new(broker)
    }

    /// The fixture's own server, for checks beyond the suite (`None` on
    /// the shared cluster).
    pub fn server(&self) -> Option<&RedisServer> {
        self.server.as_ref()
    }

    /// The broker, for checks beyond the suite.
    pub fn broker(&self) -> Arc<RedisBroker> {
        self.broker.clone()
    }
}

#[async_trait]
impl Fixture for RedisFixture {
    fn backend(&self) -> Arc<dyn Backend> {
        self.broker.clone()
    }

    fn queue(&self, name: &str) -> Result<QueueName> {
        match &self.prefix {
            Some(prefix) => QueueName::new(format!("{prefix}:{name}")),
            None => QueueName::new(name),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        // Redis runs on this machine: its clock is the system clock.
        Utc::now()
    }

    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }

    fn tolerance(&self) -> Duration {
        Duration::from_millis(40)
    }
}
