//! Waiting server-side for work: idle reservers block on the queue's wake-up
//! list (`BLPOP`) on connections of their own, so a blocked call never holds
//! up the shared connection.
//!
//! Redis checks blocking timeouts only about every 100 ms (at `hz 10`), too
//! coarse for "a delayed job runs within 50 ms of its due time". When a
//! scheduled job falls due before the wait ends, the waiter keeps its own
//! timer and, when it fires, ends the `BLPOP` early with `CLIENT UNBLOCK`
//! from the shared connection.
//!
//! On a cluster a waiter blocks on the node serving the queue's slot: the
//! shared cluster connection names it (and keeps it current), a `MOVED`
//! reply (the slot moved) points the next wait at the new owner, and an
//! `ASK` (the slot is being migrated) makes the caller look again shortly.
//! Under Sentinel a waiter blocks on the master the sentinels name now.
//!
//! A wait may be dropped half-way (a worker shutting down drops its idle
//! reserve call): its connection closes, which ends the `BLPOP`, and a
//! wake-up token is pushed back in case the dropped `BLPOP` took one meant
//! for another worker.

use std::{future::Future, sync::Mutex, time::Duration};

use redis::{
    aio::MultiplexedConnection, AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, ServerErrorKind,
};

use super::{
    conn::{Conn, NodeAddr},
    scripts::map_err,
};
use crate::error::{Error, Result};

/// Extra time allowed for a `BLPOP` reply beyond its own timeout before the
/// connection is deemed dead.
const REPLY_GRACE: Duration = Duration::from_secs(2);
/// Waits shorter than this are slept locally instead of blocking in Redis.
const MIN_BLOCK: Duration = Duration::from_millis(5);
/// Blocking connections kept for reuse.
const MAX_IDLE: usize = 64;
/// How long a waiter pauses while its queue's slot is being migrated.
const MIGRATING_PAUSE: Duration = Duration::from_millis(50);

/// A connection reserved for blocking commands, with its Redis client id
/// and the node it is connected to.
struct Blocker {
    conn: MultiplexedConnection,
    id: i64,
    node: String,
}

/// Where blocking connections go.
pub(super) enum Nodes {
    /// One server.
    Single(redis::Client),
    /// A cluster: the settings of a seed node (credentials, TLS), used with
    /// the address of the node serving each queue's slot.
    Cluster(ConnectionInfo),
    /// The master the sentinels name, found through the shared connection.
    Master(Conn),
}

/// Where one wait blocks.
struct Target {
    client: redis::Client,
    /// The node's address, to match pooled connections.
    node: String,
    /// The cluster node, for `CLIENT UNBLOCK` routed there.
    cluster_node: Option<NodeAddr>,
}

/// The pool of blocking connections.
pub(super) struct Waiters {
    /// Where new blocking connections go.
    nodes: Nodes,
    /// How long opening one may take.
    connect_timeout: Duration,
    /// Connections not blocked right now.
    idle: Mutex<Vec<Blocker>>,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters").field("idle", &self.idle_len()).finish()
    }
}

/// Why a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Woken {
    /// A wake-up token was taken: work may be ready.
    Token,
    /// The wait timed out (or the due timer fired).
    Timeout,
}

impl Waiters {
    pub(super) fn new(nodes: Nodes, connect_timeout: Duration) -> Self {
        Waiters {
            nodes,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The node a wait on `wake_key` blocks on.
    async fn target(&self, main: &Conn, wake_key: &str) -> Result<Target> {
        match &self.nodes {
            Nodes::Single(client) => Ok(Target {
                client: client.clone(),
                node: String::new(),
                cluster_node: None,
            }),
            Nodes::Master(conn) => {
                let client = conn
                    .master_client()
                    .await
                    .map_err(map_err)?
                    .ok_or_else(|| Error::Backend("no Redis master connection for a blocking wait".into()))?;
                let node = client.get_connection_info().addr().to_string();
                Ok(Target {
                    client,
                    node,
                    cluster_node: None,
                })
            }
            Nodes::Cluster(seed) => {
                let addr =
                    main.clone().owner(wake_key).await.map_err(map_err)?.ok_or_else(|| {
                        Error::Backend("the cluster connection did not name the node of a queue".into())
                    })?;
                let info = seed.clone().set_addr(ConnectionAddr::Tcp(addr.host.clone(), addr.port));
                let client = redis::Client::open(info).map_err(map_err)?;
                Ok(Target {
                    client,
                    node: addr.to_string(),
                    cluster_node: Some(addr),
                })
            }
        }
    }

    /// Forgets what is known about `wake_key`'s node and drops the pooled
    /// connections to `node` (they likely died with the one that failed).
    fn forget(&self, main: &Conn, wake_key: &str, node: &str) {
        main.moved(wake_key, None);
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|b| b.node != node);
    }

    fn idle_len(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or_default()
    }

    async fn take(&self, target: &Target) -> Result<Blocker> {
        let pooled = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.iter()
                .rposition(|b| b.node == target.node)
                .map(|i| idle.swap_remove(i))
        };
        if let Some(blocker) = pooled {
            return Ok(blocker);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        let mut conn = target
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(map_err)?;
        let (_, id): ((), i64) = redis::pipe()
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg("flagship-worker:wait")
            .cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(Blocker {
            conn,
            id,
            node: target.node.clone(),
        })
    }

    fn put_back(&self, blocker: Blocker) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(blocker);
        }
    }

    /// Blocks until a wake-up token arrives on `wake_key`, `wait` passes, or
    /// (when given) `due` passes, whichever is first.
    pub(super) async fn wait(
        &self,
        main: &Conn,
        wake_key: &str,
        wait: Duration,
        due: Option<Duration>,
    ) -> Result<Woken> {
        let local = due.filter(|due| *due < wait);
        if let Some(due) = local.filter(|due| *due < MIN_BLOCK) {
            tokio::time::sleep(due).await;
            return Ok(Woken::Timeout);
        }
        let target = self.target(main, wake_key).await?;
        let blocker = self.take(&target).await?;
        let mut abandoned = Abandoned {
            main,
            wake_key,
            armed: true,
        };
        let mut conn = blocker.conn.clone();
        let mut blpop = redis::cmd("BLPOP");
        // Redis takes fractional seconds; zero would mean "forever".
        blpop.arg(wake_key).arg(wait.as_secs_f64().max(0.001));
        let reply = blpop.query_async::<Option<(String, String)>>(&mut conn);
        tokio::pin!(reply);
        let guard = wait + REPLY_GRACE;
        let result = match local {
            None => tokio::time::timeout(guard, &mut reply).await,
            Some(due) => {
                tokio::select! {
                    result = &mut reply => Ok(result),
                    _ = tokio::time::sleep(due) => match self.unblock(main, &target, blocker.id, &mut reply).await {
                        Some(result) => Ok(result),
                        // Still blocked: dropping the connection ends the
                        // BLPOP (and `abandoned` puts back a token it took).
                        None => return Ok(Woken::Timeout),
                    },
                }
            }
        };
        abandoned.armed = result.is_err();
        match result {
            Ok(Ok(token)) => {
                self.put_back(blocker);
                Ok(if token.is_some() { Woken::Token } else { Woken::Timeout })
            }
            Ok(Err(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::Moved) => {
                // The slot moved: the next wait goes to its new owner.
                let addr = e.redirect_node().and_then(|(addr, _)| NodeAddr::parse(addr));
                tracing::debug!(node = ?addr, "queue's slot moved; waiting there next");
                main.moved(wake_key, addr);
                self.put_back(blocker);
                Ok(Woken::Timeout)
            }
            Ok(Err(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::Ask) => {
                // The slot is being migrated: look again shortly.
                self.put_back(blocker);
                tokio::time::sleep(MIGRATING_PAUSE.min(wait)).await;
                Ok(Woken::Timeout)
            }
            Ok(Err(e)) => {
                self.forget(main, wake_key, &target.node);
                Err(map_err(e))
            }
            Err(_) => Err(Error::Unavailable(
                format!("Redis did not answer a blocking wait within {guard:?}").into(),
            )),
        }
    }

    /// Ends the blocked `BLPOP` on connection `id` as if it timed out and
    /// returns its reply. The command may not have reached Redis yet, so a
    /// few tries are made; `None` if it could not be ended.
    async fn unblock<F: Future<Output = O> + Unpin, O>(
        &self,
        main: &Conn,
        target: &Target,
        id: i64,
        reply: &mut F,
    ) -> Option<O> {
        let mut main = main.clone();
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("UNBLOCK").arg(id).arg("TIMEOUT");
        for pause in [1, 2, 5, 10, 20] {
            let unblocked: redis::RedisResult<i64> = match &target.cluster_node {
                Some(node) => main
                    .on_node(node, &cmd)
                    .await
                    .and_then(|v| redis::FromRedisValue::from_redis_value(v).map_err(Into::into)),
                None => cmd.query_async(&mut main).await,
            };
            match unblocked {
                Ok(1) => return tokio::time::timeout(REPLY_GRACE, &mut *reply).await.ok(),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "CLIENT UNBLOCK refused; closing the waiting connection instead");
                    return None;
                }
            }
            // Not blocked: either the reply is on its way, or the BLPOP has
            // not reached Redis yet.
            if let Ok(result) = tokio::time::timeout(Duration::from_millis(pause), &mut *reply).await {
                return Some(result);
            }
        }
        None
    }
}

/// Armed while a `BLPOP` may have taken a wake-up token this process will
/// not see (its reply is dropped or never read): dropped armed, it pushes
/// a token back, so the worker it was meant for still wakes. A token too
/// many only wakes one worker to find nothing.
struct Abandoned<'a> {
    main: &'a Conn,
    wake_key: &'a str,
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut conn = self.main.clone();
        let key = self.wake_key.to_owned();
        runtime.spawn(async move {
            // The scripts' `wake`: at most one token waits.
            let pushed = redis::pipe()
                .atomic()
                .cmd("LPUSH")
                .arg(&key)
                .arg("1")
                .ignore()
                .cmd("LTRIM")
                .arg(&key)
                .arg(0)
                .arg(0)
                .ignore()
                .exec_async(&mut conn)
                .await;
            if let Err(e) = pushed {
                tracing::debug!(error = %e, "could not put back a wake-up token after a dropped wait");
            }
        });
    }
}
