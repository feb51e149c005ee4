//! What tests that run their own servers share: free ports, unique names
//! and scratch directories.

use std::{
    net::TcpListener,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

/// A local TCP port nothing listens on right now (another process may
/// still take it before the caller binds it).
pub(crate) fn free_port(for_what: &str) -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free local port for {for_what}: {e}"))
}

/// `prefix` followed by this process's id, a counter and a random number:
/// unique across the tests of all processes on the machine.
pub(crate) fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}_{}_{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// A new empty directory under the system's temporary directory.
pub(crate) fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
