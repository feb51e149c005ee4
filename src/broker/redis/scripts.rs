//! The Lua scripts, how they are called (EVALSHA, reloading them after a
//! Redis restart), and how Redis errors become the crate's [`Error`].

use std::{sync::LazyLock, time::Duration};

use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, ToRedisArgs, Value};

use super::conn::{join_all, Conn, NodeAddr};
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
    cancel: lua!("cancel", history),
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
        Call {
            lua: self,
            cmd,
            first_key: keys.first().map(|k| (*k).to_owned()).unwrap_or_default(),
        }
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
    /// Its first key: on a cluster, where it goes.
    first_key: String,
}

impl Call {
    /// Appends ARGV entries (a slice appends each element).
    pub(super) fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        self.cmd.arg(arg);
        self
    }
}

/// Loads every script, so that a missing permission shows at connect time.
pub(super) async fn load_all(conn: &mut Conn) -> Result<(), Error> {
    if conn.is_cluster() {
        // A pipeline goes to one node; `SCRIPT LOAD` alone goes to every node.
        for lua in SCRIPTS.all() {
            lua.load_cmd().exec_async(conn).await.map_err(map_err)?;
        }
        return Ok(());
    }
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
pub(super) async fn run(conn: &mut Conn, call: Call) -> Result<Value, Error> {
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
///
/// On a cluster the calls (one per queue, so one slot each) are grouped
/// by the node serving them, and each node gets its group in one request,
/// all nodes at once: one round trip, and per node as few requests as one
/// Redis would get.
pub(super) async fn run_all(conn: &mut Conn, calls: Vec<Call>) -> Result<Vec<Value>, Error> {
    if conn.is_cluster() && calls.len() > 1 {
        return run_per_node(conn, calls).await.into_iter().collect();
    }
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

/// [`run_all`] on a cluster: one pipeline per node. A call the node
/// refuses without running it (`MOVED`/`ASK`: the slot moved, `NOSCRIPT`,
/// `TRYAGAIN`) runs again on its own through the cluster connection, which
/// follows redirections; a failed request fails its calls (they may have
/// run, so they are not sent again).
async fn run_per_node(conn: &mut Conn, calls: Vec<Call>) -> Vec<Result<Value, Error>> {
    let mut groups: Vec<(Option<NodeAddr>, Vec<usize>)> = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        // A node that cannot be named: the call goes on its own.
        let node = conn.owner(&call.first_key).await.ok().flatten();
        match groups.iter_mut().find(|(n, _)| node.is_some() && *n == node) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((node, vec![i])),
        }
    }
    let sends = groups.iter().map(|(node, idx)| {
        let mut conn = conn.clone();
        let calls = &calls;
        async move {
            let Some(node) = node else {
                return vec![None];
            };
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &i in idx {
                pipe.add_command(calls[i].cmd.clone());
            }
            match conn.pipeline_on(node, pipe).await {
                Ok(replies) if replies.len() == idx.len() => replies.into_iter().map(|r| Some(Ok(r))).collect(),
                Ok(_) => idx
                    .iter()
                    .map(|_| {
                        Some(Err(Error::Backend(
                            "Redis returned fewer replies than commands sent".into(),
                        )))
                    })
                    .collect(),
                Err(e) => {
                    conn.moved(&calls[idx[0]].first_key, None);
                    let e = map_err(e);
                    idx.iter().map(|_| Some(Err(clone_error(&e)))).collect()
                }
            }
        }
    });
    let sent = join_all(sends.collect()).await;
    let mut out: Vec<Option<Result<Value, Error>>> = calls.iter().map(|_| None).collect();
    let mut again = Vec::new();
    for ((_, idx), replies) in groups.iter().zip(sent) {
        for (&i, reply) in idx
            .iter()
            .zip(replies.into_iter().chain(std::iter::repeat_with(|| None)))
        {
            match reply {
                Some(Ok(Value::ServerError(e))) => {
                    let e = RedisError::from(e);
                    if e.kind() == ErrorKind::Server(ServerErrorKind::Moved) {
                        let addr = e.redirect_node().and_then(|(addr, _)| NodeAddr::parse(addr));
                        conn.moved(&calls[i].first_key, addr);
                    }
                    if is_noscript(&e)
                        || e.is_cluster_error()
                        || e.kind() == ErrorKind::Server(ServerErrorKind::TryAgain)
                    {
                        again.push(i);
                    } else {
                        out[i] = Some(Err(map_err(e)));
                    }
                }
                Some(result) => out[i] = Some(result),
                None => again.push(i),
            }
        }
    }
    let reruns = again.iter().map(|&i| {
        let mut conn = conn.clone();
        let call = Call {
            lua: calls[i].lua,
            cmd: calls[i].cmd.clone(),
            first_key: calls[i].first_key.clone(),
        };
        async move { run(&mut conn, call).await }
    });
    for (&i, result) in again.iter().zip(join_all(reruns.collect()).await) {
        out[i] = Some(result);
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Backend("a script call got no reply".into()))))
        .collect()
}

/// The same error again, for each call of a failed request.
fn clone_error(e: &Error) -> Error {
    let message = e.to_string();
    if e.is_transient() {
        Error::Unavailable(message.into())
    } else {
        Error::Backend(message.into())
    }
}

/// How many replicas must confirm a write before it returns (`WAIT`), and
/// how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replicas {
    /// Replicas that must confirm.
    pub(super) count: usize,
    /// The most time `WAIT` may block.
    pub(super) timeout: Duration,
}

/// [`run_all`], then, when `replicas` is set, `WAIT` for them after each
/// call: the call and its `WAIT` go in one pipeline to the call's node, so
/// waiting adds no round trip, only the replication delay. When fewer
/// replicas confirm in time the call fails with [`Error::Unavailable`]
/// (the write is on the master and may or may not survive a failover).
pub(super) async fn run_all_durable(
    conn: &mut Conn,
    calls: Vec<Call>,
    replicas: Option<Replicas>,
) -> Result<Vec<Value>, Error> {
    let Some(replicas) = replicas else {
        return run_all(conn, calls).await;
    };
    let runs = calls.into_iter().map(|call| {
        let mut conn = conn.clone();
        async move { run_durable(&mut conn, call, replicas).await }
    });
    join_all(runs.collect()).await.into_iter().collect()
}

/// One call followed by `WAIT`, in one pipeline; reloads a lost script.
async fn run_durable(conn: &mut Conn, call: Call, replicas: Replicas) -> Result<Value, Error> {
    let timeout_ms = u64::try_from(replicas.timeout.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut pipe = redis::pipe();
    pipe.ignore_errors()
        .add_command(call.cmd.clone())
        .cmd("WAIT")
        .arg(replicas.count)
        .arg(timeout_ms);
    let mut replies: Vec<redis::RedisResult<Value>> = pipe.query_async(conn).await.map_err(map_err)?;
    if matches!(replies.first(), Some(Err(e)) if is_noscript(e)) {
        tracing::debug!(script = call.lua.name, "script not loaded in Redis; loading it");
        call.lua.load_cmd().exec_async(conn).await.map_err(map_err)?;
        replies = pipe.query_async(conn).await.map_err(map_err)?;
    }
    let mut replies = replies.into_iter();
    let (Some(reply), Some(confirmed)) = (replies.next(), replies.next()) else {
        return Err(Error::Backend("Redis returned fewer replies than commands sent".into()));
    };
    let reply = reply.map_err(map_err)?;
    let confirmed = match confirmed.map_err(map_err)? {
        Value::Int(n) => usize::try_from(n).unwrap_or(0),
        other => {
            return Err(Error::Backend(
                format!("unexpected reply from Redis for WAIT: {other:?}").into(),
            ))
        }
    };
    if confirmed < replicas.count {
        tracing::warn!(
            script = call.lua.name,
            confirmed,
            wanted = replicas.count,
            "write not confirmed by enough replicas"
        );
        return Err(Error::Unavailable(
            format!(
                "the write reached the Redis master but only {confirmed} of {} replicas confirmed it within {:?}, \
                 so a failover now could lose it; check the replicas (INFO replication). Retrying an enqueue \
                 may store the job twice unless it has an idempotency key",
                replicas.count, replicas.timeout
            )
            .into(),
        ));
    }
    Ok(reply)
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
             CLIENT UNBLOCK, CLIENT INFO, SADD, SMEMBERS, ZCOUNT, ZRANGEBYSCORE, LPUSH, LTRIM, MULTI, WAIT, \
             CLUSTER SLOTS and CLUSTER NODES on a cluster, and what the scripts call: see docs/redis.md); grant them in the ACL ({e})"
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
