//! Building this crate's examples from its tests and running them as worker
//! processes, to kill, pause and stop them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
};

/// Builds `examples/<name>.rs` with `features` (once per test process and
/// example) and returns the path of its binary.
///
/// Pass the features the calling test was built with (from `cfg!(feature =
/// ...)` in the test), so cargo does not build the library again with other
/// ones. Call it from a test binary: the example lands beside it, in
/// `<target>/<profile>/examples/`.
///
/// ```no_run
/// let worker = flagship_worker::testing::examples::build("redis_worker", &["redis", "test-util"]);
/// # let _ = worker;
/// ```
pub fn build(name: &str, features: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", name, "--features"])
        .arg(features.join(","));
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build examples/{name}: {e}"));
    assert!(status.success(), "building examples/{name} failed");
    // Tests run from <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("cannot find the test binary: {e}"));
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("the test binary {} is not in <target>/<profile>/deps", exe.display()));
    let path = profile_dir.join("examples").join(name);
    built.insert(name.to_owned(), path.clone());
    path
}

/// An example running as a worker process (`<example> --work <args>`),
/// for tests that kill, pause and stop it. Killed on drop.
///
/// The example prints its worker's counters as one JSON line on stdout
/// when it stops ([`finish`](WorkerProcess::finish) reads them), as
/// `examples/redis_worker.rs` and `examples/postgres_worker.rs` do.
#[derive(Debug)]
pub struct WorkerProcess {
    /// The running process, until killed or finished.
    child: Option<Child>,
}

impl WorkerProcess {
    /// Starts `binary --work` with `args` and the environment `env` (plus
    /// `RUST_LOG=error`), its stdout captured.
    pub fn start(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let child = Command::new(binary)
            .arg("--work")
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        WorkerProcess { child: Some(child) }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("the worker process is not running"))
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Kills the process with `SIGKILL` and waits for it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process gracefully (`SIGTERM`) and returns its worker's
    /// counters, as it printed them.
    pub fn finish(mut self) -> serde_json::Value {
        self.signal("TERM");
        let Some(child) = self.child.take() else {
            panic!("the worker process is not running")
        };
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for the worker process: {e}"));
        assert!(output.status.success(), "worker process failed: {}", output.status);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("the worker process printed {stdout:?}: {e}"))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
