//! Leasing: reserve and recover replies turned into reservations, stored
//! jobs that cannot run dead-lettered on the spot, envelopes found in no
//! state put back, and reservations nobody waits for any more handed back.
//!
//! A reserve pass runs in a task of its own, so its caller may drop the
//! future at any point (a worker shutting down does): when the reply comes
//! and nobody waits for it, the task releases the jobs it leased, back to
//! the head of ready with no attempt counted. Nothing a dropped reserve
//! leased waits for its lease to expire.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use chrono::{DateTime, Utc};
use redis::Value;
use tokio::sync::oneshot;

use super::{
    conn::Conn,
    decode::{self, array, bytes, int, ms_to_time, shown_id, Poison},
    history::layout_args,
    keys::QueueKeys,
    scripts::{run, run_all, Call, SCRIPTS},
    PROMOTE_BATCH,
};
use crate::{
    broker::{history::HistoryLayout, Lease, LeaseToken, Reservation},
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// How many entries of `jobs` one restore call looks at (an `HSCAN` hint).
const RESTORE_PAGE: usize = 64;
/// The longest ready list a restore call looks for ids in; `LPOS` is
/// linear in it, so with more ready jobs the look is put off.
const RESTORE_MAX_READY: usize = 4_096;

/// What leasing one queue's jobs needs, owned, so that a pass can finish
/// in a task of its own after its caller is gone.
#[derive(Clone)]
pub(super) struct Leaser {
    /// The broker's shared connection.
    pub(super) conn: Conn,
    /// The queue's key names.
    pub(super) keys: Arc<QueueKeys>,
    /// The queue.
    pub(super) queue: QueueName,
    /// Leased jobs whose payload is larger (bytes of JSON) are dead-lettered.
    pub(super) max_payload_bytes: usize,
    /// The queue history's buckets, for dead-lettering.
    pub(super) history: HistoryLayout,
}

/// What one reserve pass found.
pub(super) enum Pass {
    /// Jobs were taken from ready; the ones that can run (maybe none: the
    /// others were dead-lettered or dropped).
    Leased(Vec<Reservation>),
    /// Nothing was ready.
    Idle {
        /// Redis's time, ms since the epoch.
        now: i64,
        /// How long until the first scheduled job is due (ms), or -1.
        next_due: i64,
    },
}

/// A stored job that cannot run, with the lease it was taken under.
type Poisoned = Vec<(Box<Poison>, LeaseToken)>;

/// The `dead_letter` script on a queue's keys, with the history layout in
/// ARGV; add the rest of its ARGV.
pub(super) fn dead_letter_call(keys: &QueueKeys, history: &HistoryLayout) -> Call {
    SCRIPTS
        .dead_letter
        .call(&[
            &keys.jobs,
            &keys.active,
            &keys.lease,
            &keys.dead,
            &keys.reasons,
            &keys.stats,
            &keys.history_minute,
            &keys.history_hour,
        ])
        .arg(&layout_args(history)[..])
}

impl Leaser {
    /// Runs the reserve script once, in a task of its own. Dropping the
    /// returned future leases nothing that stays leased (see the module docs).
    pub(super) fn reserve_pass(&self, max: usize, lease_ms: u64, knew: String, owner: Option<Arc<str>>) -> Claim {
        let (tx, rx) = oneshot::channel();
        let leaser = self.clone();
        tokio::spawn(async move {
            let pass = leaser.reserve_once(max, lease_ms, &knew, owner.as_deref()).await;
            if let Err(Ok(Pass::Leased(unclaimed))) = tx.send(pass) {
                leaser.hand_back(unclaimed).await;
            }
        });
        Claim {
            rx,
            leaser: self.clone(),
            done: false,
        }
    }

    async fn reserve_once(&self, max: usize, lease_ms: u64, knew: &str, owner: Option<&str>) -> Result<Pass> {
        let k = &self.keys;
        let call = SCRIPTS
            .reserve
            .call(&[
                &k.jobs,
                &k.ready,
                &k.scheduled,
                &k.active,
                &k.lease,
                &k.seq,
                &k.wake,
                &k.stats,
                &k.paused,
            ])
            .arg(max)
            .arg(lease_ms)
            .arg(PROMOTE_BATCH)
            .arg(knew)
            .arg(owner.unwrap_or(""));
        let mut reply = array("reserve", run(&mut self.conn.clone(), call).await?)?.into_iter();
        let now = int("reserve", &reply.next().unwrap_or_default())?;
        let next_due = int("reserve", &reply.next().unwrap_or_default())?;
        let dropped = int("reserve", &reply.next().unwrap_or_default())?;
        self.log_dropped(dropped, "ready");
        let entries: Vec<Value> = reply.collect();
        if entries.is_empty() {
            // Ids were taken but all dropped: more may be ready.
            return Ok(if dropped > 0 {
                Pass::Leased(Vec::new())
            } else {
                Pass::Idle { now, next_due }
            });
        }
        let deadline = ms_to_time(now.saturating_add(lease_ms as i64));
        Ok(Pass::Leased(self.take(entries, false, deadline).await?))
    }

    /// Takes up to `max` jobs whose lease expired, under new leases.
    pub(super) async fn recover(&self, max: usize, lease_ms: u64) -> Result<Vec<Reservation>> {
        let k = &self.keys;
        let call = SCRIPTS
            .recover
            .call(&[&k.jobs, &k.active, &k.lease, &k.seq, &k.stats])
            .arg(max)
            .arg(lease_ms);
        let mut reply = array("recover", run(&mut self.conn.clone(), call).await?)?.into_iter();
        let now = int("recover", &reply.next().unwrap_or_default())?;
        let dropped = int("recover", &reply.next().unwrap_or_default())?;
        self.log_dropped(dropped, "active");
        let deadline = ms_to_time(now.saturating_add(lease_ms as i64));
        self.take(reply.collect(), true, deadline).await
    }

    /// Puts back jobs whose envelope is stored but in no state set, a page
    /// at a time (see `restore.lua`); logs each one.
    pub(super) async fn restore(&self) -> Result<()> {
        let k = &self.keys;
        let call = SCRIPTS
            .restore
            .call(&[
                &k.jobs,
                &k.ready,
                &k.scheduled,
                &k.active,
                &k.dead,
                &k.stats,
                &k.wake,
                &k.restore_cursor,
            ])
            .arg(RESTORE_PAGE)
            .arg(RESTORE_MAX_READY);
        let mut reply = array("restore", run(&mut self.conn.clone(), call).await?)?.into_iter();
        if int("restore", &reply.next().unwrap_or_default())? == 2 {
            tracing::debug!(queue = %self.queue, "the queue stores envelopes in no state; ready is too long to look for them now");
        }
        for id in reply.filter_map(bytes) {
            tracing::warn!(
                job.id = %shown_id(&id),
                queue = %self.queue,
                "job was stored but in no state (not ready, scheduled, running or dead); put back to ready"
            );
        }
        Ok(())
    }

    fn log_dropped(&self, dropped: i64, from: &str) {
        if dropped > 0 {
            tracing::warn!(
                queue = %self.queue,
                dropped,
                from,
                "ids without a stored envelope dropped: nothing to run (another program wrote them); counted in the queue's `dropped` stat"
            );
        }
    }

    /// Turns the leased entries of a reserve or recover reply into
    /// reservations, one job at a time: one that cannot run is
    /// dead-lettered, the others are returned.
    async fn take(&self, entries: Vec<Value>, recovered: bool, deadline: DateTime<Utc>) -> Result<Vec<Reservation>> {
        let stride = if recovered { 5 } else { 3 };
        let mut good = Vec::with_capacity(entries.len() / stride);
        let mut poisoned = Vec::new();
        let mut it = entries.into_iter();
        while let (Some(id), Some(raw), Some(token)) = (it.next(), it.next(), it.next()) {
            let (started, cancel_requested) = if recovered {
                let started = ms_to_time(int("recover", &it.next().unwrap_or_default())?);
                (Some(started), int("recover", &it.next().unwrap_or_default())? == 1)
            } else {
                (None, false)
            };
            let token = LeaseToken(int("lease token", &token)? as u64);
            let id = bytes(id).unwrap_or_default();
            let raw = bytes(raw).unwrap_or_default();
            let checked = decode::decode_stored(&self.queue, &id, &raw).and_then(|envelope| {
                decode::check_payload_size(&envelope, &id, raw.len(), self.max_payload_bytes).map(|()| envelope)
            });
            match checked {
                Ok(envelope) => good.push(Reservation {
                    lease: Lease {
                        id: envelope.id,
                        queue: self.queue.clone(),
                        token,
                    },
                    envelope: Arc::new(envelope),
                    deadline,
                    expired_attempt_started_at: started,
                    cancel_requested,
                }),
                Err(poison) => poisoned.push((poison, token)),
            }
        }
        self.bury(poisoned).await;
        Ok(good)
    }

    /// Dead-letters jobs that cannot run, each under the id its poison
    /// names (a new one when another job holds that id). Failures are
    /// logged: the jobs stay leased and come back through lease expiry.
    async fn bury(&self, poisoned: Poisoned) {
        if poisoned.is_empty() {
            return;
        }
        let queue = &self.queue;
        let calls = poisoned
            .iter()
            .map(|(poison, token)| {
                tracing::warn!(job.id = %poison.shown_id(), %queue, reason = %poison.reason, "stored job cannot run; dead-lettering it");
                let file_as = poison.file_as.to_string();
                let (file_as, instead) = if file_as.as_bytes() == poison.stored_id {
                    (String::new(), String::new())
                } else {
                    (file_as, JobId::new().to_string())
                };
                dead_letter_call(&self.keys, &self.history)
                    .arg(&poison.stored_id[..])
                    .arg(token.0)
                    .arg("")
                    .arg(&poison.reason)
                    .arg(file_as)
                    .arg(instead)
            })
            .collect();
        if let Err(e) = run_all(&mut self.conn.clone(), calls).await {
            tracing::error!(%queue, error = %e, "could not dead-letter jobs that cannot run; they come back after their lease expires");
        }
    }

    /// Releases reservations whose reserve call was dropped.
    async fn hand_back(&self, unclaimed: Vec<Reservation>) {
        if unclaimed.is_empty() {
            return;
        }
        let k = &self.keys;
        let call = unclaimed.iter().fold(
            SCRIPTS.release.call(&[&k.active, &k.lease, &k.ready, &k.wake]),
            |call, r| call.arg(r.lease.id.to_string()).arg(r.lease.token.0),
        );
        let count = unclaimed.len();
        match run(&mut self.conn.clone(), call).await {
            Ok(_) => {
                tracing::debug!(queue = %self.queue, count, "reserve call dropped; the jobs it leased are back in ready")
            }
            Err(e) => tracing::warn!(
                queue = %self.queue,
                count,
                error = %e,
                "reserve call dropped and its jobs could not be released; they run once their lease expires"
            ),
        }
    }
}

/// The result of a [`Leaser::reserve_pass`]. Dropped before it is read,
/// it hands whatever the pass leased back to ready.
pub(super) struct Claim {
    /// Where the pass's task sends its result.
    rx: oneshot::Receiver<Result<Pass>>,
    /// Releases an unread result.
    leaser: Leaser,
    /// Whether the result was read (nothing to hand back on drop).
    done: bool,
}

impl Future for Claim {
    type Output = Result<Pass>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let received = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        self.done = true;
        Poll::Ready(received.unwrap_or_else(|_| {
            Err(Error::Backend(
                "the reserve call's task ended without a result (it panicked); the jobs it leased run once their lease expires".into(),
            ))
        }))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // From here on the task cannot send: it releases what it leases.
        self.rx.close();
        if let Ok(Ok(Pass::Leased(unclaimed))) = self.rx.try_recv() {
            if unclaimed.is_empty() {
                return;
            }
            let leaser = self.leaser.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move { leaser.hand_back(unclaimed).await });
                }
                Err(_) => tracing::warn!(
                    queue = %leaser.queue,
                    count = unclaimed.len(),
                    "reserve call dropped outside a runtime; its jobs run once their lease expires"
                ),
            }
        }
    }
}
