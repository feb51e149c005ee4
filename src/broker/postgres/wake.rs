//! Waking idle reservers: every statement that makes work available sends
//! `NOTIFY <channel>, '<queue>'` (delivered when its transaction commits),
//! and one `LISTEN` connection per broker turns those into wake-ups of the
//! reservers waiting on that queue in this process.
//!
//! Notifications are not stored: while the listening connection is down
//! they are lost. So a lost connection wakes every waiter (each looks at its
//! queue once), and reservers never wait longer than the broker's poll
//! interval between looks: the fallback if a wake-up goes missing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use sqlx::{
    postgres::{PgListener, PgPoolOptions},
    PgPool,
};
use tokio::sync::Notify;

use super::errors::map_err;
use crate::{error::Result, job::QueueName};

/// The longest pause between attempts to listen again after an error.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Per-queue wake-ups for this process's idle reservers.
#[derive(Debug, Default)]
pub(super) struct Wakeups {
    /// One `Notify` per queue a reserver has waited on; never shrinks
    /// (queues are few).
    queues: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    /// The wake-up of `queue`, made on first use.
    pub(super) fn of(&self, queue: &QueueName) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = queues.get(queue.as_str()) {
            return notify.clone();
        }
        queues.entry(queue.as_str().to_owned()).or_default().clone()
    }

    /// Wakes every reserver waiting on `queue`.
    fn wake(&self, queue: &str) {
        let notify = self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .cloned();
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiting reserver (notifications may have been missed).
    fn wake_all(&self) {
        let all: Vec<_> = self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for notify in all {
            notify.notify_waiters();
        }
    }
}

/// The listening task; stopped when dropped (with the broker).
#[derive(Debug)]
pub(super) struct Listener {
    task: tokio::task::AbortHandle,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Connects a listening connection of its own (outside the broker's
    /// pool) to `channel` and starts passing notifications to `wakeups`.
    pub(super) async fn start(
        options: sqlx::postgres::PgConnectOptions,
        channel: &str,
        connect_timeout: Duration,
        wakeups: &Arc<Wakeups>,
    ) -> Result<Self> {
        // A pool of one: PgListener reconnects through it.
        let pool: PgPool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(connect_timeout)
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&pool).await.map_err(map_err)?;
        listener.listen(channel).await.map_err(map_err)?;
        let task = tokio::spawn(listen(listener, Arc::downgrade(wakeups)));
        Ok(Listener {
            task: task.abort_handle(),
        })
    }
}

/// Passes notifications on until the broker is gone. A lost connection
/// (reconnected by `PgListener`) or an error wakes every waiter, so none
/// sleeps on a wake-up that was missed meanwhile.
async fn listen(mut listener: PgListener, wakeups: Weak<Wakeups>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let received = listener.try_recv().await;
        let Some(wakeups) = wakeups.upgrade() else { return };
        match received {
            Ok(Some(notification)) => {
                backoff = Duration::from_millis(50);
                wakeups.wake(notification.payload());
            }
            Ok(None) => {
                tracing::warn!("the connection listening for new jobs was lost; reconnecting");
                wakeups.wake_all();
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "listening for new jobs failed; idle workers poll meanwhile");
                wakeups.wake_all();
                drop(wakeups);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
