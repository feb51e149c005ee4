//! Captures the tracing output of the current thread, whichever thread
//! first hit each callsite (shared by the `core` and `admin` test crates).
//!
//! tracing caches, per callsite, whether any subscriber may want its
//! events, computed when the callsite is first hit. While exactly one
//! dispatcher is registered, tracing-core computes that answer from the
//! default subscriber *of the thread that hits the callsite first*. A test
//! capturing with a thread-scoped subscriber is then that one dispatcher,
//! and a callsite another test (on another thread, with no subscriber)
//! hits first is cached as "never": the capture silently misses its
//! events. That is how `every_mutation_leaves_a_tracing_event` lost its
//! purge lines when other tests purged at the same time.
//!
//! With two or more dispatchers registered, tracing-core asks every live
//! one, under a lock, and the answer no longer depends on the thread. So
//! before the first capture this installs a process-wide default that
//! wants nothing and registers (then drops) a second such dispatcher: from
//! then on every new subscriber joins at least the permanent global one.
//! The switch happens while only subscribers that want nothing exist, so a
//! callsite registered during it gets the same answer ("never") either
//! way, and the first capture's registration rebuilds every callsite's
//! answer under the lock.

use std::{
    io::Write,
    sync::{Arc, Mutex, Once},
};

use tracing::{dispatcher::DefaultGuard, level_filters::LevelFilter, Dispatch};
use tracing_subscriber::layer::SubscriberExt;

/// Log lines captured on one thread while this lives.
pub(crate) struct Logs {
    /// The formatted output.
    buffer: Captured,
    /// Keeps the capturing subscriber this thread's default.
    _guard: DefaultGuard,
}

impl Logs {
    /// Everything captured so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.0.lock().unwrap()).into_owned()
    }
}

/// Collects formatted tracing output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures events on this thread matching `filter` (an `EnvFilter`
/// directive such as `flagship_worker=warn`) until the result is dropped.
pub(crate) fn capture(filter: &str) -> Logs {
    never_just_one_dispatcher();
    let buffer = Captured::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter(filter)
        .finish();
    Logs {
        buffer,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

/// Makes tracing-core leave its one-dispatcher mode for good (see the
/// module docs).
fn never_just_one_dispatcher() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let nothing = || Dispatch::new(tracing_subscriber::registry().with(LevelFilter::OFF));
        // Fails only if a global default exists already, which serves as well.
        let _ = tracing::dispatcher::set_global_default(nothing());
        drop(nothing());
    });
}
