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
//! A wait may be dropped half-way (a worker shutting down drops its idle
//! reserve call): its connection closes, which ends the `BLPOP`, and a
//! wake-up token is pushed back in case the dropped `BLPOP` took one meant
//! for another worker.

use std::{future::Future, sync::Mutex, time::Duration};

use redis::{
    aio::{ConnectionManager, MultiplexedConnection},
    AsyncConnectionConfig,
};

use super::scripts::map_err;
use crate::error::{Error, Result};

/// Extra time allowed for a `BLPOP` reply beyond its own timeout before the
/// connection is deemed dead.
const REPLY_GRACE: Duration = Duration::from_secs(2);
/// Waits shorter than this are slept locally instead of blocking in Redis.
const MIN_BLOCK: Duration = Duration::from_millis(5);
/// Blocking connections kept for reuse.
const MAX_IDLE: usize = 64;

/// A connection reserved for blocking commands, with its Redis client id.
struct Blocker {
    conn: MultiplexedConnection,
    id: i64,
}

/// The pool of blocking connections.
pub(super) struct Waiters {
    /// Opens new blocking connections.
    client: redis::Client,
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
    pub(super) fn new(client: redis::Client, connect_timeout: Duration) -> Self {
        Waiters {
            client,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle_len(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or_default()
    }

    async fn take(&self) -> Result<Blocker> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(blocker) = pooled {
            return Ok(blocker);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        let mut conn = self
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
        Ok(Blocker { conn, id })
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
        main: &ConnectionManager,
        wake_key: &str,
        wait: Duration,
        due: Option<Duration>,
    ) -> Result<Woken> {
        let local = due.filter(|due| *due < wait);
        if let Some(due) = local.filter(|due| *due < MIN_BLOCK) {
            tokio::time::sleep(due).await;
            return Ok(Woken::Timeout);
        }
        let blocker = self.take().await?;
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
                    _ = tokio::time::sleep(due) => match self.unblock(main, blocker.id, &mut reply).await {
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
            Ok(Err(e)) => {
                // The other idle connections likely died with this one.
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
        main: &ConnectionManager,
        id: i64,
        reply: &mut F,
    ) -> Option<O> {
        let mut main = main.clone();
        for pause in [1, 2, 5, 10, 20] {
            let unblocked: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .arg("TIMEOUT")
                .query_async(&mut main)
                .await;
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
    main: &'a ConnectionManager,
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
