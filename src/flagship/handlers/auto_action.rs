//! [`AutoActionHandler`]: enforcement steps, each audited.

use std::collections::BTreeMap;

use serde_json::json;

use super::{handle_with_process, require_id, JobRun};
use crate::{
    flagship::{
        ApiKeyBlocked, AuditEvent, AutoAction, AutoActionJob, FeatureDisabled, FlagshipServices, Notice,
        NotificationJob,
    },
    EnqueueOptions, HandlerError,
};

/// The actor recorded in audit events the worker writes.
pub const WORKER_ACTOR: &str = "flagship-worker";

/// Runs `auto-action` jobs: disables a flag through
/// [`FlagshipServices::flag_control`], blocks an API key through
/// [`FlagshipServices::api_key_control`], or enqueues the notification
/// saying which of the two happened; then writes an audit event whose id
/// derives from the action's identity ([`AutoActionJob::identity`]:
/// `auto-action-{identity}`), so the same action, run again or enqueued
/// twice, audits and notifies once.
#[derive(Debug, Clone)]
pub struct AutoActionHandler {
    services: FlagshipServices,
}

impl AutoActionHandler {
    /// A handler on `services`.
    pub fn new(services: FlagshipServices) -> Self {
        AutoActionHandler { services }
    }

    /// Runs the action and audits it. Refuses (permanently) a flag or key
    /// that does not exist.
    pub async fn process(&self, job: AutoActionJob, run: &JobRun) -> Result<(), HandlerError> {
        require_id("orgId", &job.org_id)?;
        require_id("targetId", &job.target_id)?;
        let services = &self.services;
        let audit_id = format!("auto-action-{}", job.identity());
        if (job.action == AutoAction::SendNotification) != job.about.is_some_and(|a| a != AutoAction::SendNotification)
        {
            return Err(HandlerError::permanent(format!(
                "auto-action `{}` {}: `about` names the action a `send_notification` reports \
                 (`disable_feature` or `block_api_key`) and belongs to `send_notification` only",
                job.action.as_str(),
                if job.action == AutoAction::SendNotification {
                    "needs `about`"
                } else {
                    "has `about`"
                },
            )));
        }
        let missing = |what: &str| {
            HandlerError::permanent(format!(
                "{what} `{}` of organization `{}` does not exist; fix the organization's enforcement configuration",
                job.target_id, job.org_id
            ))
        };
        let (action, target_type, changed) = match job.action {
            AutoAction::DisableFeature => {
                let changed = services
                    .flag_control
                    .disable_flag(&job.org_id, &job.target_id, &job.reason, run.now)
                    .await?
                    .ok_or_else(|| missing("flag"))?;
                ("flag.disabled", "flag", changed)
            }
            AutoAction::BlockApiKey => {
                let changed = services
                    .api_key_control
                    .block_api_key(&job.org_id, &job.target_id, &job.reason, run.now)
                    .await?
                    .ok_or_else(|| missing("API key"))?;
                ("api_key.blocked", "api_key", changed)
            }
            AutoAction::SendNotification => {
                let (notice, target_type) = match job.about {
                    Some(AutoAction::BlockApiKey) => (
                        Notice::ApiKeyBlocked(ApiKeyBlocked {
                            key_id: job.target_id.clone(),
                            reason: job.reason.clone(),
                        }),
                        "api_key",
                    ),
                    _ => (
                        Notice::FeatureDisabled(FeatureDisabled {
                            flag_key: job.target_id.clone(),
                            reason: job.reason.clone(),
                        }),
                        "flag",
                    ),
                };
                let notification = NotificationJob {
                    notification_id: Some(audit_id.clone()),
                    org_id: job.org_id.clone(),
                    notice,
                };
                let outcome = run.client.enqueue_with(&notification, EnqueueOptions::new()).await?;
                ("notification.requested", target_type, outcome.is_enqueued())
            }
        };
        tracing::info!(org = %job.org_id, action = job.action.as_str(), target = %job.target_id, changed, "auto-action ran");
        let event = AuditEvent {
            id: audit_id,
            org_id: job.org_id.clone(),
            actor: WORKER_ACTOR.into(),
            action: action.into(),
            target_type: target_type.into(),
            target_id: job.target_id.clone(),
            occurred_at: run.now,
            metadata: BTreeMap::from([
                ("reason".to_owned(), json!(job.reason)),
                ("autoAction".to_owned(), json!(job.action.as_str())),
                ("jobId".to_owned(), json!(run.job_id.to_string())),
            ]),
        };
        services.audit.append(&event).await?;
        Ok(())
    }
}

handle_with_process!(AutoActionHandler, AutoActionJob);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flagship::{
            handlers::test_support::*,
            model::{ApiKey, Flag},
            stores::{ApiKeyStore, FlagStore},
            NOTIFICATIONS_QUEUE,
        },
        Job,
    };

    fn job(action: AutoAction, target: &str) -> AutoActionJob {
        AutoActionJob {
            org_id: "acme".into(),
            action,
            target_id: target.into(),
            reason: "api_calls limit reached".into(),
            about: (action == AutoAction::SendNotification).then_some(AutoAction::DisableFeature),
        }
    }

    #[tokio::test]
    async fn disables_a_flag_and_audits_once_when_run_twice() {
        let f = Fixture::new();
        f.store.put_flag(&Flag::enabled("acme", "new-ui")).await.unwrap();
        let handler = AutoActionHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:31:00Z");
        handler
            .process(job(AutoAction::DisableFeature, "new-ui"), &run)
            .await
            .unwrap();
        handler
            .process(job(AutoAction::DisableFeature, "new-ui"), &run)
            .await
            .unwrap();

        let flag = f.store.flag("acme", "new-ui").await.unwrap().unwrap();
        assert!(!flag.enabled);
        assert_eq!(flag.disabled_reason.as_deref(), Some("api_calls limit reached"));
        let audit = f.services.audit.list("acme", 10).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(
            audit[0].id,
            format!("auto-action-{}", job(AutoAction::DisableFeature, "new-ui").identity())
        );
        assert_eq!(
            (audit[0].action.as_str(), audit[0].target_id.as_str()),
            ("flag.disabled", "new-ui")
        );
        assert_eq!(audit[0].actor, WORKER_ACTOR);
    }

    #[tokio::test]
    async fn blocks_a_key_and_audits_once_when_run_twice() {
        let f = Fixture::new();
        f.store.put_api_key(&ApiKey::active("acme", "key-1")).await.unwrap();
        let handler = AutoActionHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:31:00Z");
        handler
            .process(job(AutoAction::BlockApiKey, "key-1"), &run)
            .await
            .unwrap();
        handler
            .process(job(AutoAction::BlockApiKey, "key-1"), &run)
            .await
            .unwrap();
        let key = f.store.api_key("acme", "key-1").await.unwrap().unwrap();
        assert!(key.blocked);
        assert_eq!(key.blocked_at, Some(run.now));
        assert_eq!(f.services.audit.list("acme", 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn sends_one_notification_when_run_twice() {
        let f = Fixture::new();
        let handler = AutoActionHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:31:00Z");
        handler
            .process(job(AutoAction::SendNotification, "new-ui"), &run)
            .await
            .unwrap();
        handler
            .process(job(AutoAction::SendNotification, "new-ui"), &run)
            .await
            .unwrap();
        let queued = f.drain(NOTIFICATIONS_QUEUE).await;
        assert_eq!(queued.len(), 1);
        let payload = queued[0].payload.to_value().unwrap();
        assert_eq!(payload["type"], "feature_disabled");
        assert_eq!(payload["data"]["flagKey"], "new-ui");
        assert_eq!(f.services.audit.list("acme", 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn identical_jobs_under_different_job_ids_act_audit_and_notify_once() {
        let f = Fixture::new();
        let handler = AutoActionHandler::new(f.services.clone());
        let mut about_key = job(AutoAction::SendNotification, "key-1");
        about_key.about = Some(AutoAction::BlockApiKey);
        // Two producer jobs with the same content: distinct job ids.
        handler
            .process(about_key.clone(), &f.run("2026-01-01T10:31:00Z"))
            .await
            .unwrap();
        handler
            .process(about_key.clone(), &f.run("2026-01-01T10:32:00Z"))
            .await
            .unwrap();
        let queued = f.drain(NOTIFICATIONS_QUEUE).await;
        assert_eq!(queued.len(), 1, "one notification");
        let payload = queued[0].payload.to_value().unwrap();
        assert_eq!(payload["type"], "api_key_blocked", "says what the action was");
        assert_eq!(payload["data"]["keyId"], "key-1");
        let audit = f.services.audit.list("acme", 10).await.unwrap();
        assert_eq!(audit.len(), 1, "one audit entry");
        assert_eq!(audit[0].target_type, "api_key");
        // The producer-facing key is the same for both, so the broker keeps one.
        assert_eq!(
            about_key.idempotency_key(),
            Some(format!("auto-action:acme:{}", about_key.identity()))
        );
        let mut other_reason = about_key.clone();
        other_reason.reason = "another period".into();
        assert_ne!(other_reason.identity(), about_key.identity());
    }

    #[tokio::test]
    async fn send_notification_needs_to_say_what_it_reports() {
        let f = Fixture::new();
        let handler = AutoActionHandler::new(f.services.clone());
        let mut bare = job(AutoAction::SendNotification, "new-ui");
        bare.about = None;
        let err = handler.process(bare, &f.run("2026-01-01T10:31:00Z")).await.unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)));
        assert!(err.to_string().contains("needs `about`"), "{err}");
    }

    #[tokio::test]
    async fn refuses_unknown_targets_without_auditing() {
        let f = Fixture::new();
        let handler = AutoActionHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:31:00Z");
        let err = handler
            .process(job(AutoAction::DisableFeature, "ghost"), &run)
            .await
            .unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)));
        assert!(err.to_string().contains("flag `ghost`"), "{err}");
        let err = handler
            .process(job(AutoAction::BlockApiKey, "ghost"), &run)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("API key `ghost`"), "{err}");
        assert!(f.services.audit.list("acme", 10).await.unwrap().is_empty());
    }
}
