//! The Lua scripts, how they are called (EVALSHA, reloading them after a
//! Redis restart), and how Redis errors become the crate's [`Error`].

use std::sync::LazyLock;

use redis::{aio::ConnectionManager, Cmd, ErrorKind, RedisError, ServerErrorKind, ToRedisArgs, Value};

use crate::error::Error;

/// A script's source: the shared prelude, then the script itself.
macro_rules! lua {
    ($name:literal) => {
        Lua::new(
            $name,
            concat!(
                include_str!("scripts/prelude.lua"),
                include_str!(concat!("scripts/", $name, ".lua"))
            ),
        )
    };
    // A script recording the queue history: the history helpers go between.
    ($name:literal, history) => {
        Lua::new(
            $name,
            concat!(
                include_str!("scripts/prelude.lua"),
                include_str!("scripts/history.lua"),
                include_str!(concat!("scripts/", $name, ".lua"))
            ),
        )
    };
}

/// One script: its name (for errors), its source and its SHA1.
#[derive(Debug)]
pub(super) struct Lua {
    /// The file name without `.lua`, for error messages.
    name: &'static str,
    /// The full source sent with `SCRIPT LOAD`.
    source: &'static str,
    /// The script's SHA1, for `EVALSHA`.
    script: redis::Script,
}

/// Every script the broker runs; each one's KEYS and ARGV are documented at
/// the top of its file and in `docs/redis.md`.
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) enqueue: Lua,
    pub(super) reserve: Lua,
    pub(super) complete: Lua,
    pub(super) retry: Lua,
    pub(super) dead_letter: Lua,
    pub(super) release: Lua,
    pub(super) extend: Lua,
    pub(super) recover: Lua,
    pub(super) restore: Lua,
    pub(super) stats: Lua,
    pub(super) dead_list: Lua,
    pub(super) dead_get: Lua,
    pub(super) dead_retry: Lua,
    pub(super) dead_delete: Lua,
    pub(super) cancel: Lua,
    pub(super) live_list: Lua,
    pub(super) live_get: Lua,
    pub(super) register_worker: Lua,
    pub(super) workers: Lua,
    pub(super) history_sample: Lua,
    pub(super) history_read: Lua,
}

/// The scripts, hashed once per process.
pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: lua!("enqueue"),
    reserve: lua!("reserve"),
    complete: lua!("complete", history),
    retry: lua!("retry", history),
    dead_letter: lua!("dead_letter", history),
    release: lua!("release"),
    extend: lua!("extend"),
    recover: lua!("recover"),
    restore: lua!("restore"),
    stats: lua!("stats"),
    dead_list: lua!("dead_list"),
    dead_get: lua!("dead_get"),
    dead_retry: lua!("dead_retry"),
    dead_delete: lua!("dead_delete"),
    cancel: lua!("cancel"),
    live_list: lua!("live_list"),
    live_get: lua!("live_get"),
    register_worker: lua!("register_worker"),
    workers: lua!("workers"),
    history_sample: lua!("history_sample", history),
    history_read: lua!("history_read", history),
});

impl Scripts {
    fn all(&self) -> [&Lua; 21] {
        [
            &self.enqueue,
            &self.reserve,
            &self.complete,
            &self.retry,
            &self.dead_letter,
            &self.release,
            &self.extend,
            &self.recover,
            &self.restore,
            &self.stats,
            &self.dead_list,
            &self.dead_get,
            &self.dead_retry,
            &self.dead_delete,
            &self.cancel,
            &self.live_list,
            &self.live_get,
            &self.register_worker,
            &self.workers,
            &self.history_sample,
            &self.history_read,
        ]
    }
}

impl Lua {
    fn new(name: &'static str, source: &'static str) -> Self {
        Lua {
            name,
            source,
            script: redis::Script::new(source),
        }
    }

    /// The script's name, for messages.
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// Starts an `EVALSHA` of this script on `keys`; add ARGV with [`Call::arg`].
    pub(super) fn call(&'static self, keys: &[&str]) -> Call {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(keys.len()).arg(keys);
        Call { lua: self, cmd }
    }

    fn load_cmd(&self) -> Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.source);
        cmd
    }
}

/// A prepared script call.
pub(super) struct Call {
    lua: &'static Lua,
    cmd: Cmd,
}

impl Call {
    /// Appends ARGV entries (a slice appends each element).
    pub(super) fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        self.cmd.arg(arg);
        self
    }
}

/// Loads every script, so that a missing permission shows at connect time.
pub(super) async fn load_all(conn: &mut ConnectionManager) -> Result<(), Error> {
    let mut pipe = redis::pipe();
    for lua in SCRIPTS.all() {
        pipe.add_command(lua.load_cmd()).ignore();
    }
    pipe.exec_async(conn).await.map_err(map_err)
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Runs one script call; reloads the script once if Redis lost it (a
/// restart or `SCRIPT FLUSH`).
pub(super) async fn run(conn: &mut ConnectionManager, call: Call) -> Result<Value, Error> {
    match call.cmd.query_async::<Value>(conn).await {
        Err(e) if is_noscript(&e) => {
            tracing::debug!(script = call.lua.name, "script not loaded in Redis; loading it");
            call.lua.load_cmd().exec_async(conn).await.map_err(map_err)?;
            call.cmd.query_async(conn).await.map_err(map_err)
        }
        result => result.map_err(map_err),
    }
}

/// Runs several script calls in one round trip, in order; reloads scripts
/// Redis lost and runs the calls that found them missing again. Each call is
/// atomic on its own; the first error is returned after all calls ran.
pub(super) async fn run_all(conn: &mut ConnectionManager, calls: Vec<Call>) -> Result<Vec<Value>, Error> {
    if calls.len() == 1 {
        let call = calls.into_iter().next().map(|call| run(conn, call));
        return match call {
            Some(call) => Ok(vec![call.await?]),
            None => Ok(Vec::new()),
        };
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for call in &calls {
        pipe.add_command(call.cmd.clone());
    }
    let mut results: Vec<redis::RedisResult<Value>> = pipe.query_async(conn).await.map_err(map_err)?;
    let missing: Vec<usize> = (0..results.len())
        .filter(|&i| matches!(&results[i], Err(e) if is_noscript(e)))
        .collect();
    if !missing.is_empty() {
        let mut again = redis::pipe();
        again.ignore_errors();
        for &i in &missing {
            again.add_command(calls[i].lua.load_cmd()).ignore();
            again.add_command(calls[i].cmd.clone());
        }
        let rerun: Vec<redis::RedisResult<Value>> = again.query_async(conn).await.map_err(map_err)?;
        for (i, result) in missing.into_iter().zip(rerun) {
            results[i] = result;
        }
    }
    results.into_iter().map(|r| r.map_err(map_err)).collect()
}

/// A Redis error with what it means for the caller.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct RedisFailure {
    message: String,
    #[source]
    source: RedisError,
}

/// Maps a Redis error into the crate's error: connection trouble and a
/// server that is loading or failing over are [`Error::Unavailable`]
/// (retry later); everything else is [`Error::Backend`].
pub(super) fn map_err(e: RedisError) -> Error {
    let transient = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            ) | ErrorKind::ClusterConnectionNotFound
        );
    if transient {
        let message = format!("Redis is unreachable or not ready ({e})");
        return Error::Unavailable(Box::new(RedisFailure { message, source: e }));
    }
    let message = match e.code() {
        Some("OOM") => format!(
            "Redis is out of memory (maxmemory reached) and refused the write; nothing was stored by this call. \
             Drain or purge queues, or raise `maxmemory` ({e})"
        ),
        Some("NOPERM") => format!(
            "the Redis user may not run a command the broker needs (EVALSHA, SCRIPT LOAD, BLPOP, CLIENT ID, \
             CLIENT UNBLOCK, SADD, SMEMBERS, ZCOUNT, ZRANGEBYSCORE, LPUSH, LTRIM, MULTI, and what the \
             scripts call: see docs/redis.md); grant them in the ACL ({e})"
        ),
        _ => format!("Redis refused the operation ({e})"),
    };
    Error::Backend(Box::new(RedisFailure { message, source: e }))
}

#[cfg(test)]
mod tests {
    use super::super::PROTOCOL_VERSION;

    #[test]
    fn the_enqueue_script_states_the_protocol_version() {
        let first_line = include_str!("scripts/enqueue.lua").lines().next().unwrap_or_default();
        assert!(
            first_line.starts_with(&format!("-- Protocol {PROTOCOL_VERSION}:")),
            "enqueue.lua must start with `-- Protocol {PROTOCOL_VERSION}:` (the TypeScript package checks it); \
             change both, and docs/redis.md, together"
        );
    }
}
