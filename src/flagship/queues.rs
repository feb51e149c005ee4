//! The FlagShip queues and their retry policies.

use std::time::Duration;

use crate::{Backoff, RetryPolicy};

/// Queue of [`AuditEventJob`](super::AuditEventJob)s.
pub const AUDIT_QUEUE: &str = "flagship:audit";
/// Queue of [`UsageIngestionJob`](super::UsageIngestionJob)s.
pub const USAGE_QUEUE: &str = "flagship:usage";
/// Queue of [`NotificationJob`](super::NotificationJob)s and
/// [`OperatorAlertJob`](super::OperatorAlertJob)s.
pub const NOTIFICATIONS_QUEUE: &str = "flagship:notifications";
/// Queue of [`AutoActionJob`](super::AutoActionJob)s.
pub const AUTO_ACTIONS_QUEUE: &str = "flagship:auto-actions";
/// Queue of the scheduled maintenance jobs (rollover, aggregation, DLQ
/// cleanup, health check).
pub const MAINTENANCE_QUEUE: &str = "flagship:maintenance";

/// One FlagShip queue: its name, what it is for, and how its jobs retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlagshipQueue {
    /// The queue name.
    pub name: &'static str,
    /// What its jobs do.
    pub purpose: &'static str,
    /// How failed jobs are retried before they are dead-lettered.
    pub retry: RetryPolicy,
}

const fn exponential(retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries: retries,
        backoff: Backoff::Exponential {
            base: Duration::from_secs(1),
            factor: 2.0,
        },
        cap: None,
        jitter: 0.0,
    }
}

/// The delay step of the notifications queue's linear policy: retries come
/// 30 s, 60 s and 90 s after the failures they follow.
pub const NOTIFICATION_RETRY_STEP: Duration = Duration::from_secs(30);

/// The five FlagShip queues with their retry policies (DESIGN.md §4):
///
/// | queue | retries | backoff |
/// |---|---|---|
/// | `flagship:audit` | 5 | exponential 1, 2, 4, 8, 16 s |
/// | `flagship:usage` | 5 | exponential 1, 2, 4, 8, 16 s |
/// | `flagship:notifications` | 3 | linear 30, 60, 90 s |
/// | `flagship:auto-actions` | 3 | exponential 1, 2, 4 s |
/// | `flagship:maintenance` | none | — |
///
/// ```
/// use flagship_worker::flagship::FLAGSHIP_QUEUES;
/// let notifications = FLAGSHIP_QUEUES.iter().find(|q| q.name == "flagship:notifications").unwrap();
/// assert_eq!(notifications.retry.max_retries, 3);
/// ```
pub const FLAGSHIP_QUEUES: [FlagshipQueue; 5] = [
    FlagshipQueue {
        name: AUDIT_QUEUE,
        purpose: "audit event persistence",
        retry: exponential(5),
    },
    FlagshipQueue {
        name: USAGE_QUEUE,
        purpose: "usage metric aggregation",
        retry: exponential(5),
    },
    FlagshipQueue {
        name: NOTIFICATIONS_QUEUE,
        purpose: "alert delivery",
        retry: RetryPolicy {
            max_retries: 3,
            backoff: Backoff::Linear {
                step: NOTIFICATION_RETRY_STEP,
            },
            cap: None,
            jitter: 0.0,
        },
    },
    FlagshipQueue {
        name: AUTO_ACTIONS_QUEUE,
        purpose: "automated enforcement",
        retry: exponential(3),
    },
    FlagshipQueue {
        name: MAINTENANCE_QUEUE,
        purpose: "scheduled tasks",
        retry: RetryPolicy {
            max_retries: 0,
            backoff: Backoff::Fixed { delay: Duration::ZERO },
            cap: None,
            jitter: 0.0,
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(queue: &str) -> Vec<u64> {
        let q = FLAGSHIP_QUEUES.iter().find(|q| q.name == queue).unwrap();
        q.retry.validate().unwrap();
        (1..=q.retry.max_retries + 1)
            .map_while(|n| q.retry.delay(n))
            .map(|d| d.as_secs())
            .collect()
    }

    #[test]
    fn policies_match_the_design_table() {
        assert_eq!(delays(AUDIT_QUEUE), [1, 2, 4, 8, 16]);
        assert_eq!(delays(USAGE_QUEUE), [1, 2, 4, 8, 16]);
        assert_eq!(delays(NOTIFICATIONS_QUEUE), [30, 60, 90]);
        assert_eq!(delays(AUTO_ACTIONS_QUEUE), [1, 2, 4]);
        assert!(delays(MAINTENANCE_QUEUE).is_empty());
        assert_eq!(RetryPolicy::none(), FLAGSHIP_QUEUES[4].retry);
    }
}
