//! [`JobControl`] for [`RedisBroker`]: live jobs read by `live_list.lua`
//! and `live_get.lua`, pause as a key `reserve.lua` checks, cancel in
//! `cancel.lua` (a flag in the lease entry for active jobs), and the worker
//! registry in one hash.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::Value;

use super::{
    decode::{self, array, bytes, int, ms_to_time, text},
    history::layout_args,
    keys::WORKERS_KEY,
    millis,
    scripts::{map_err, run, SCRIPTS},
    RedisBroker,
};
use crate::{
    broker::control::{
        ActiveLease, CancelOutcome, JobControl, JobCursor, JobPage, JobQuery, JobState, LiveJob, WorkerEntry,
        WorkerInfo, CANCEL_REASON, GONE_WORKER_RETENTION,
    },
    envelope::JobEnvelope,
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// How often `cancel` reads the envelope again when it changed between the
/// read and the script (the job was retried or rescheduled meanwhile).
const CANCEL_ATTEMPTS: usize = 5;

/// A lease entry `"<token>:<started ms>:<cancel>:<owner>"` read into when
/// the attempt started, the owner and whether a cancel was requested.
fn lease_entry(entry: &str) -> (Option<DateTime<Utc>>, Option<String>, bool) {
    let mut fields = entry.splitn(4, ':');
    let _token = fields.next();
    let started = fields.next().and_then(|s| s.parse::<i64>().ok()).map(ms_to_time);
    let cancel = fields.next() == Some("c");
    let owner = fields.next().filter(|o| !o.is_empty()).map(str::to_owned);
    (started, owner, cancel)
}

/// A score (ms, maybe with a fraction) as a time.
fn score_time(score: &str) -> Option<DateTime<Utc>> {
    decode::score_to_time(score).ok()
}

impl RedisBroker {
    /// A live job from a `live_list`/`live_get` entry: id, envelope, extra.
    fn live_job(&self, queue: &QueueName, state: JobState, id: &[u8], raw: &[u8], extra: &str) -> Option<LiveJob> {
        let envelope = match decode::decode_stored(queue, id, raw) {
            Ok(envelope) => envelope,
            // Shown as stored (its text as the payload), as the DLQ shows it.
            Err(_) => {
                let id = std::str::from_utf8(id).ok()?.parse().ok()?;
                let mut shown = decode::dead_envelope(queue, id, Some(raw), self.clock.now(), None);
                shown.dead_lettered_at = None;
                shown
            }
        };
        Some(match state {
            JobState::Active => {
                let (deadline, entry) = extra.split_once(' ').unwrap_or((extra, ""));
                let (started, owner, cancel) = lease_entry(entry);
                let deadline = score_time(deadline).unwrap_or(envelope.run_at);
                let lease = ActiveLease::new(owner, started.unwrap_or(envelope.run_at), deadline);
                LiveJob::active(envelope, lease, cancel)
            }
            state => LiveJob::waiting(envelope, state),
        })
    }
}

#[async_trait]
impl JobControl for RedisBroker {
    async fn list_jobs(&self, query: &JobQuery, cursor: Option<&JobCursor>, limit: usize) -> Result<JobPage> {
        crate::broker::control::check_job_page_limit(limit)?;
        if let Some(cursor) = cursor {
            cursor.position()?;
        }
        let k = self.keys(&query.queue);
        let state_key = match query.state {
            JobState::Ready => &k.ready,
            JobState::Scheduled => &k.scheduled,
            JobState::Active => &k.active,
        };
        let call = SCRIPTS
            .live_list
            .call(&[&k.jobs, state_key, &k.lease])
            .arg(query.state.as_str());
        let mut reply = array("live_list", run(&mut self.conn(), call).await?)?.into_iter();
        let _now = reply.next();
        let mut matching = Vec::new();
        while let (Some(id), Some(raw), Some(extra)) = (reply.next(), reply.next(), reply.next()) {
            let (Some(id), Some(raw)) = (bytes(id), bytes(raw)) else {
                continue;
            };
            let extra = bytes(extra)
                .map(|e| String::from_utf8_lossy(&e).into_owned())
                .unwrap_or_default();
            if let Some(job) = self.live_job(&query.queue, query.state, &id, &raw, &extra) {
                if query.matches(&job.envelope) {
                    matching.push(job);
                }
            }
        }
        JobPage::from_unsorted(matching, cursor, limit)
    }

    async fn get_job(&self, queue: &QueueName, id: JobId) -> Result<Option<LiveJob>> {
        let k = self.keys(queue);
        let call = SCRIPTS
            .live_get
            .call(&[&k.jobs, &k.ready, &k.scheduled, &k.active, &k.lease])
            .arg(id.to_string());
        let mut reply = array("live_get", run(&mut self.conn(), call).await?)?.into_iter();
        let (Some(state), Some(raw), Some(extra)) = (reply.next(), reply.next(), reply.next()) else {
            return Ok(None);
        };
        let state: JobState = text("live_get", state)?.parse()?;
        let raw = bytes(raw).unwrap_or_default();
        let extra = text("live_get", extra).unwrap_or_default();
        Ok(self.live_job(queue, state, id.to_string().as_bytes(), &raw, &extra))
    }

    async fn pause(&self, queue: &QueueName) -> Result<bool> {
        let k = self.keys(queue);
        let set: Option<String> = redis::cmd("SET")
            .arg(&k.paused)
            .arg("1")
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let changed = set.is_some();
        tracing::info!(%queue, changed, "queue paused");
        Ok(changed)
    }

    async fn resume(&self, queue: &QueueName) -> Result<bool> {
        let k = self.keys(queue);
        // One wake-up token: the worker it wakes passes it on while jobs are ready.
        let (deleted,): (i64,) = redis::pipe()
            .atomic()
            .del(&k.paused)
            .lpush(&k.wake, "1")
            .ignore()
            .ltrim(&k.wake, 0, 0)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let changed = deleted == 1;
        tracing::info!(%queue, changed, "queue resumed");
        Ok(changed)
    }

    async fn cancel(&self, queue: &QueueName, id: JobId) -> Result<CancelOutcome> {
        let k = self.keys(queue);
        for _ in 0..CANCEL_ATTEMPTS {
            let stored: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(&k.jobs)
                .arg(id.to_string())
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            let Some(stored) = stored else {
                return Ok(CancelOutcome::NotFound);
            };
            // The dead envelope; one that does not decode is kept as stored.
            let dead = match JobEnvelope::from_json(&id.to_string(), &stored) {
                Ok(mut envelope) => {
                    envelope.dead_lettered_at = Some(self.clock.now());
                    envelope.dead_letter_reason = Some(CANCEL_REASON.to_owned());
                    envelope.to_json()
                }
                Err(_) => stored.clone(),
            };
            let call = SCRIPTS
                .cancel
                .call(&[
                    &k.jobs,
                    &k.ready,
                    &k.scheduled,
                    &k.active,
                    &k.lease,
                    &k.dead,
                    &k.reasons,
                    &k.stats,
                    &k.history_minute,
                    &k.history_hour,
                ])
                .arg(&layout_args(&self.history)[..])
                .arg(id.to_string())
                .arg(stored)
                .arg(dead)
                .arg(CANCEL_REASON);
            let outcome = match int("cancel", &run(&mut self.conn(), call).await?)? {
                1 => CancelOutcome::DeadLettered,
                2 => CancelOutcome::Signalled,
                3 => continue,
                _ => CancelOutcome::NotFound,
            };
            tracing::info!(job.id = %id, %queue, ?outcome, "job cancelled by operator");
            return Ok(outcome);
        }
        Err(Error::Unavailable(
            format!("job {id} kept changing while being cancelled; try again").into(),
        ))
    }

    async fn register_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let json = serde_json::to_string(info).map_err(|e| Error::Backend(e.into()))?;
        let call = SCRIPTS
            .register_worker
            .call(&[WORKERS_KEY])
            .arg(&info.id)
            .arg(millis(ttl).max(1))
            .arg(json)
            .arg(millis(GONE_WORKER_RETENTION));
        run(&mut self.conn(), call).await?;
        Ok(())
    }

    async fn deregister_worker(&self, id: &str) -> Result<bool> {
        let removed: i64 = redis::cmd("HDEL")
            .arg(WORKERS_KEY)
            .arg(id)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(removed == 1)
    }

    async fn workers(&self) -> Result<Vec<WorkerEntry>> {
        let mut reply = array(
            "workers",
            run(&mut self.conn(), SCRIPTS.workers.call(&[WORKERS_KEY])).await?,
        )?
        .into_iter();
        let now = ms_to_time(int("workers", &reply.next().unwrap_or(Value::Int(0)))?);
        let mut entries = Vec::new();
        while let (Some(id), Some(entry)) = (reply.next(), reply.next()) {
            let id = text("workers", id)?;
            let entry = text("workers", entry)?;
            let mut fields = entry.splitn(3, ' ');
            let seen = fields.next().and_then(|s| s.parse::<i64>().ok());
            let expires = fields.next().and_then(|s| s.parse::<i64>().ok());
            let info = fields
                .next()
                .and_then(|json| serde_json::from_str::<WorkerInfo>(json).ok());
            match (seen, expires, info) {
                (Some(seen), Some(expires), Some(info)) => {
                    entries.push(WorkerEntry::new(info, ms_to_time(seen), ms_to_time(expires), now));
                }
                _ => tracing::warn!(worker.id = %id, "worker registry entry is not in the broker's form; skipped"),
            }
        }
        entries.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_entries_old_and_new_are_read() {
        let (started, owner, cancel) = lease_entry("17:1700000000000:c:worker:1");
        assert_eq!(started, Some(ms_to_time(1_700_000_000_000)));
        assert_eq!((owner.as_deref(), cancel), (Some("worker:1"), true));
        assert_eq!(
            lease_entry("17:1700000000000::"),
            (Some(ms_to_time(1_700_000_000_000)), None, false)
        );
        assert_eq!(
            lease_entry("17:1700000000000"),
            (Some(ms_to_time(1_700_000_000_000)), None, false)
        );
    }
}
