//! Key names: every key of a queue carries the hash tag `{queue}`, so a
//! queue lives on one Redis Cluster slot and its scripts touch one slot.

use crate::job::QueueName;

/// The set of every queue name a producer or worker has used.
///
/// Written with plain `SADD`, outside the queue scripts (it lives on its own
/// slot in a cluster); only [`Broker::queues`](crate::Broker::queues) reads it.
pub(super) const QUEUES_KEY: &str = "flagship-worker:queues";

/// Hash: worker id → `"<seen ms> <expires ms> <info JSON>"`, the worker
/// registry (on its own slot in a cluster, like [`QUEUES_KEY`]).
pub(super) const WORKERS_KEY: &str = "flagship-worker:workers";

/// The names of one queue's keys (see `docs/redis.md` for what each holds).
#[derive(Debug)]
pub(super) struct QueueKeys {
    /// Hash: job id → envelope JSON, for every job the queue holds.
    pub(super) jobs: String,
    /// List of ids ready to run, oldest at the head.
    pub(super) ready: String,
    /// Sorted set: id scored by due time (ms), for delayed and backing-off jobs.
    pub(super) scheduled: String,
    /// Sorted set: id scored by lease deadline (ms), for leased jobs.
    pub(super) active: String,
    /// Hash: id → `"<token>:<lease started ms>"` for leased jobs.
    pub(super) lease: String,
    /// Sorted set: id scored by dead-lettered time (ms, microsecond fraction).
    pub(super) dead: String,
    /// Hash: id → why the job was dead-lettered.
    pub(super) reasons: String,
    /// Hash: idempotency key → id of the job holding it.
    pub(super) unique: String,
    /// Sorted set: idempotency key scored by when it is released (ms), for
    /// keys of completed jobs.
    pub(super) completed_keys: String,
    /// Hash: id → idempotency key, for pending, active and dead jobs with one.
    pub(super) job_keys: String,
    /// Hash of counters: `completed`, `retried`, `dead_lettered`, `dropped`, `restored`.
    pub(super) stats: String,
    /// Counter the lease tokens come from.
    pub(super) seq: String,
    /// List holding at most one wake-up token for blocked workers.
    pub(super) wake: String,
    /// Where the look for envelopes in no state set has got to (an
    /// `HSCAN` cursor over `jobs`).
    pub(super) restore_cursor: String,
    /// String, present while an operator has the queue paused.
    pub(super) paused: String,
    /// Hash: the queue history's minute buckets, a ring of slots (see
    /// `scripts/history.lua`).
    pub(super) history_minute: String,
    /// Hash: the queue history's hour buckets, likewise.
    pub(super) history_hour: String,
}

impl QueueKeys {
    pub(super) fn new(queue: &QueueName) -> Self {
        let key = |suffix: &str| format!("{{{queue}}}:{suffix}");
        QueueKeys {
            jobs: key("jobs"),
            ready: key("ready"),
            scheduled: key("scheduled"),
            active: key("active"),
            lease: key("lease"),
            dead: key("dead"),
            reasons: key("reasons"),
            unique: key("unique"),
            completed_keys: key("completed-keys"),
            job_keys: key("job-keys"),
            stats: key("stats"),
            seq: key("seq"),
            wake: key("wake"),
            restore_cursor: key("restore-cursor"),
            paused: key("paused"),
            history_minute: key("history:minute"),
            history_hour: key("history:hour"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_the_queue_hash_tag() {
        let keys = QueueKeys::new(&QueueName::new("flagship:audit").unwrap());
        assert_eq!(keys.jobs, "{flagship:audit}:jobs");
        assert_eq!(keys.completed_keys, "{flagship:audit}:completed-keys");
        for key in [
            &keys.ready,
            &keys.wake,
            &keys.lease,
            &keys.seq,
            &keys.history_minute,
            &keys.history_hour,
        ] {
            assert!(key.starts_with("{flagship:audit}:"), "{key}");
        }
    }
}
