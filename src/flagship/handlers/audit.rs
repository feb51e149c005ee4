//! [`AuditHandler`]: persists audit events.

use chrono::TimeDelta;

use super::{handle_with_process, require_id, JobRun};
use crate::{
    flagship::{AuditEventJob, FlagshipServices},
    HandlerError,
};

/// Runs `audit-event` jobs: validates the event and stores it in the audit
/// log; an event whose id is already stored is ignored.
#[derive(Debug, Clone)]
pub struct AuditHandler {
    services: FlagshipServices,
}

impl AuditHandler {
    /// A handler writing to `services.audit`.
    pub fn new(services: FlagshipServices) -> Self {
        AuditHandler { services }
    }

    /// Persists the event. Refuses (permanently) malformed ids and events
    /// dated further in the future than the allowed clock skew.
    pub async fn process(&self, job: AuditEventJob, run: &JobRun) -> Result<(), HandlerError> {
        let event = job.event;
        require_id("orgId", &event.org_id)?;
        require_id("event id", &event.id)?;
        let skew = TimeDelta::from_std(self.services.settings.max_clock_skew).unwrap_or(TimeDelta::MAX);
        if event.occurred_at > run.now + skew {
            return Err(HandlerError::permanent(format!(
                "audit event `{}` occurred at {}, in the future (now {}); fix the producer's clock",
                event.id, event.occurred_at, run.now
            )));
        }
        if self.services.audit.append(&event).await? {
            tracing::debug!(org = %event.org_id, event.id = %event.id, action = %event.action, "audit event stored");
        } else {
            tracing::debug!(org = %event.org_id, event.id = %event.id, "audit event already stored; ignored");
        }
        Ok(())
    }
}

handle_with_process!(AuditHandler, AuditEventJob);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flagship::{handlers::test_support::*, AuditEvent};

    fn event(id: &str, at_: &str) -> AuditEventJob {
        AuditEventJob {
            event: AuditEvent {
                id: id.into(),
                org_id: "acme".into(),
                actor: "user-1".into(),
                action: "flag.updated".into(),
                target_type: "flag".into(),
                target_id: "new-ui".into(),
                occurred_at: at(at_),
                metadata: [("enabled".to_owned(), serde_json::json!(true))].into(),
            },
        }
    }

    #[tokio::test]
    async fn stores_an_event_once_when_run_twice() {
        let f = Fixture::new();
        let handler = AuditHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:00:00Z");
        let job = event("evt-1", "2026-01-01T09:59:00Z");
        handler.process(job.clone(), &run).await.unwrap();
        handler.process(job.clone(), &run).await.unwrap();
        let stored = f.services.audit.list("acme", 10).await.unwrap();
        assert_eq!(stored, vec![job.event]);
    }

    #[tokio::test]
    async fn refuses_future_events_and_bad_ids() {
        let f = Fixture::new();
        let handler = AuditHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:00:00Z");
        let err = handler
            .process(event("evt-2", "2026-01-01T11:00:00Z"), &run)
            .await
            .unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)), "{err}");
        assert!(err.to_string().contains("in the future"), "{err}");
        let err = handler
            .process(event("evt:3", "2026-01-01T09:00:00Z"), &run)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a valid identifier"), "{err}");
        assert!(f.services.audit.list("acme", 10).await.unwrap().is_empty());
    }
}
