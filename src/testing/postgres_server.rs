//! PostgreSQL for tests (features `test-util` and `postgres`).
//!
//! [`TestDatabase::create`] makes a database with a unique name on the
//! machine's PostgreSQL (`postgres://postgres@127.0.0.1:5432`, or
//! [`URL_ENV`]) and drops it when dropped, so tests never see each other's
//! jobs. When no server answers, it prints a skip notice and returns `None`
//! (the test then returns early), unless the environment sets
//! `FLAGSHIP_REQUIRE_POSTGRES=1`: then it panics, so CI cannot pass by
//! skipping.
//!
//! [`TempCluster`] runs a PostgreSQL server of the test's own (`initdb` and
//! `pg_ctl` from `pg_config --bindir`, a free port, a temporary directory),
//! for tests that crash and restart it. [`PostgresFixture`] runs the
//! conformance suite on the PostgreSQL broker.
//!
//! ```no_run
//! use flagship_worker::testing::postgres_server::TestDatabase;
//!
//! # async fn run() {
//! let Some(db) = TestDatabase::create().await else { return };
//! let url = db.url();
//! # let _ = url; }
//! ```

use std::{
    fmt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{postgres::PgConnectOptions, ConnectOptions, PgConnection};

use super::{
    conformance::Fixture,
    local::{free_port, temp_dir, unique_name},
};
use crate::{
    broker::{postgres::PostgresBroker, Backend},
    error::Result,
    job::QueueName,
};

/// The environment variable that turns a missing PostgreSQL into a failure.
pub const REQUIRE_ENV: &str = "FLAGSHIP_REQUIRE_POSTGRES";
/// The environment variable naming the server tests create databases on:
/// a URL whose user may create databases (default [`DEFAULT_URL`]).
pub const URL_ENV: &str = "FLAGSHIP_POSTGRES_URL";
/// The server tests use unless [`URL_ENV`] names another.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long a server may take to answer before the tests skip (or fail).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server of a [`TempCluster`] may take to start.
const STARTUP: Duration = Duration::from_secs(60);

/// Whether the environment demands PostgreSQL tests run (`FLAGSHIP_REQUIRE_POSTGRES=1`).
pub fn postgres_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Prints why the test skips and returns `None`, or panics when
/// PostgreSQL is required.
fn skip<T>(why: &str) -> Option<T> {
    if postgres_required() {
        panic!("{REQUIRE_ENV}=1 but {why}");
    }
    eprintln!("SKIPPED: {why}; set {REQUIRE_ENV}=1 to fail instead");
    None
}

/// `url` with its database replaced by `database` (query string kept).
fn with_database(url: &str, database: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let (head, rest) = url.split_at(start);
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{head}{authority}/{database}{query}")
}

/// A database of the test's own, dropped (with `FORCE`, ending any
/// connection still open) when this value drops.
pub struct TestDatabase {
    /// Where databases are created and dropped.
    admin_url: String,
    /// This database's name.
    name: String,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase").field("name", &self.name).finish()
    }
}

impl TestDatabase {
    /// Creates a database on the server of [`URL_ENV`] (default
    /// [`DEFAULT_URL`]); `None` after printing why when no server answers
    /// and [`REQUIRE_ENV`] is not `1`.
    pub async fn create() -> Option<Self> {
        let admin_url = std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
        Self::create_on(&admin_url).await
    }

    /// Creates a database on the server at `admin_url` (whose user may
    /// create databases); see [`create`](Self::create).
    pub async fn create_on(admin_url: &str) -> Option<Self> {
        let mut admin = match connect(admin_url).await {
            Ok(conn) => conn,
            Err(e) => return skip(&format!("no PostgreSQL answers at {URL_ENV} or {DEFAULT_URL} ({e})")),
        };
        let name = unique_name("flagship_test_");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        Some(TestDatabase {
            admin_url: admin_url.to_owned(),
            name,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL of the database, for brokers and worker processes.
    pub fn url(&self) -> String {
        with_database(&self.admin_url, &self.name)
    }

    /// A connection of its own to the database, for checks and direct writes.
    pub async fn connect(&self) -> PgConnection {
        connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test database {}: {e}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a thread of its own with a runtime of its own drops the database.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut admin = connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: the test database {} could not be dropped", self.name);
        }
    }
}

/// One connection to `url`, refused after [`CONNECT_TIMEOUT`].
async fn connect(url: &str) -> Result<PgConnection, Box<dyn std::error::Error + Send + Sync>> {
    let options = PgConnectOptions::from_str(url)?.log_statements(tracing::log::LevelFilter::Trace);
    Ok(tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await??)
}

/// The conformance fixture for the PostgreSQL broker: a database of its own
/// per case, and a broker on it.
///
/// PostgreSQL's clock cannot be paused, so [`advance`](Fixture::advance) sleeps;
/// the cases keep their waits short. Completed idempotency keys are kept
/// for [`PostgresFixture::KEY_RETENTION`].
///
/// ```no_run
/// use flagship_worker::testing::postgres_server::PostgresFixture;
///
/// flagship_worker::conformance_tests! {
///     fixture: match PostgresFixture::start().await { Some(f) => f, None => return },
///     test: #[tokio::test],
///     concurrent_test: #[tokio::test(flavor = "multi_thread", worker_threads = 4)],
///     key_retention: PostgresFixture::KEY_RETENTION,
/// }
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct PostgresFixture {
    /// The broker under test (declared first: it drops before its database).
    broker: Arc<PostgresBroker>,
    /// The case's own database (dropped when the fixture drops).
    database: TestDatabase,
}

impl PostgresFixture {
    /// How long the fixture's broker keeps completed jobs' idempotency keys.
    pub const KEY_RETENTION: Duration = Duration::from_millis(500);

    /// Creates a database and connects a broker to it; `None` when no
    /// PostgreSQL answers (see [`TestDatabase::create`]).
    pub async fn start() -> Option<Self> {
        let database = TestDatabase::create().await?;
        let broker = PostgresBroker::builder(database.url())
            .key_retention(Self::KEY_RETENTION)
            .history_layout(crate::testing::conformance::short_history_layout())
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect the broker to the test database: {e}"));
        Some(PostgresFixture {
            broker: Arc::new(broker),
            database,
        })
    }

    /// The database, for checks beyond the suite.
    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    /// The broker, for checks beyond the suite.
    pub fn broker(&self) -> Arc<PostgresBroker> {
        self.broker.clone()
    }
}

#[async_trait]
impl Fixture for PostgresFixture {
    fn backend(&self) -> Arc<dyn Backend> {
        self.broker.clone()
    }

    fn queue(&self, name: &str) -> Result<QueueName> {
        QueueName::new(name)
    }

    fn now(&self) -> DateTime<Utc> {
        // PostgreSQL runs on this machine: its clock is the system clock.
        Utc::now()
    }

    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }

    fn tolerance(&self) -> Duration {
        Duration::from_millis(40)
    }
}

/// A PostgreSQL server of the test's own: `initdb` in a temporary
/// directory, `pg_ctl` on a free port. Stopped (immediately) and its
/// directory removed on drop.
///
/// `initdb` refuses to run as root: under root the server runs as the
/// `postgres` user (through `runuser`), in a directory that user owns.
pub struct TempCluster {
    /// Where `initdb` and `pg_ctl` are.
    bindir: PathBuf,
    /// The scratch directory: the data directory, the log and the socket.
    dir: PathBuf,
    /// The port the server listens on (kept across restarts).
    port: u16,
    /// The user to run the server as, when running as root.
    run_as: Option<String>,
}

impl fmt::Debug for TempCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempCluster")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .finish()
    }
}

impl TempCluster {
    /// Initializes and starts a server; `None` (after printing why) when
    /// PostgreSQL's programs are missing and [`REQUIRE_ENV`] is not `1`.
    pub fn start() -> Option<Self> {
        let Some(bindir) = bindir() else {
            return skip("`pg_config --bindir` does not name PostgreSQL's programs (install the server)");
        };
        let root = output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0");
        let run_as = root.then(|| "postgres".to_owned());
        let dir = temp_dir("flagship-pg-");
        if let Some(user) = &run_as {
            run(
                Command::new("chown").arg(format!("{user}:")).arg(&dir),
                "chown the cluster directory",
            );
        }
        let mut cluster = TempCluster {
            bindir,
            dir,
            port: 0,
            run_as,
        };
        let data = cluster.data_dir();
        let initdb = cluster.bindir.join("initdb");
        run(
            cluster
                .command(&initdb)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "-D"])
                .arg(&data),
            "initdb",
        );
        // Another process may take the free port before the server binds it.
        for _ in 0..5 {
            cluster.port = free_port("a PostgreSQL test cluster");
            if cluster.pg_ctl(&["start", "-w", "-t", "60", "-o", &cluster.server_options()]) {
                cluster.wait_ready();
                return Some(cluster);
            }
        }
        panic!("the test cluster would not start; see {}", cluster.log().display());
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Restarts the server the hard way (`pg_ctl restart -m immediate`: no
    /// checkpoint, clients cut off, WAL replayed at start), as a crash would.
    pub fn restart_immediate(&self) {
        if !self.pg_ctl(&[
            "restart",
            "-m",
            "immediate",
            "-w",
            "-t",
            "60",
            "-o",
            &self.server_options(),
        ]) {
            panic!("the test cluster did not restart; see {}", self.log().display());
        }
        self.wait_ready();
    }

    /// Stops the server at once (`-m immediate`).
    pub fn stop_immediate(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// Starts the server again after [`stop_immediate`](Self::stop_immediate).
    pub fn start_again(&self) {
        if !self.pg_ctl(&["start", "-w", "-t", "60", "-o", &self.server_options()]) {
            panic!("the test cluster did not start again; see {}", self.log().display());
        }
        self.wait_ready();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn server_options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=32MB",
            self.port,
            self.dir.display()
        )
    }

    /// A command running `program` as the cluster's user.
    fn command(&self, program: &Path) -> Command {
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    /// Runs `pg_ctl` with `args`; whether it succeeded.
    fn pg_ctl(&self, args: &[&str]) -> bool {
        let pg_ctl = self.bindir.join("pg_ctl");
        self.command(&pg_ctl)
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log())
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits until the server accepts connections (recovery may follow
    /// `pg_ctl`'s own wait).
    fn wait_ready(&self) {
        let ready = self.bindir.join("pg_isready");
        let started = Instant::now();
        while started.elapsed() < STARTUP {
            let ok = Command::new(&ready)
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the test cluster did not accept connections; see {}",
            self.log().display()
        );
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL's program directory, if `pg_config` names one with `initdb`.
fn bindir() -> Option<PathBuf> {
    let dir = PathBuf::from(output("pg_config", &["--bindir"])?.trim());
    dir.join("initdb").exists().then_some(dir)
}

/// What `program args` prints, if it runs and succeeds.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `command`, panicking with `what` if it fails.
fn run(command: &mut Command, what: &str) {
    let status = command.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed: {status}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_everything_but_the_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "t1"),
            "postgres://u:p@h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://h/postgres?sslmode=disable", "t1"),
            "postgres://h/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }
}
