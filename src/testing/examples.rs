//! Building this crate's examples from its tests, to run them as worker
//! processes (to kill, pause and restart them).

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Command,
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
