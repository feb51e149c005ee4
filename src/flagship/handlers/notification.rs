//! [`NotificationHandler`]: delivers notifications by email and webhook.

use serde_json::{json, Value};

use super::{deliver_once, delivery_outcome, handle_with_process, require_id, JobRun};
use crate::{
    flagship::{
        notify::{DeliveryError, Email, WebhookMessage},
        stores::Channel,
        FlagshipServices, Notice, NotificationJob, OrgConfig, UsageAlert,
    },
    HandlerError,
};

/// Runs `notification` jobs: delivers the notification through each
/// channel the organization has (email recipients, a webhook endpoint) if
/// it wants notifications of this type.
///
/// Each channel's success is recorded in the delivery log under the
/// notification's id, so when one channel fails and the job is retried,
/// only that channel is tried again. The email carries an idempotency key
/// and the webhook a stable `webhook-id`, so receivers can drop a resend
/// after an ambiguous failure too.
#[derive(Debug, Clone)]
pub struct NotificationHandler {
    services: FlagshipServices,
}

impl NotificationHandler {
    /// A handler on `services`.
    pub fn new(services: FlagshipServices) -> Self {
        NotificationHandler { services }
    }

    /// Delivers the notification. Refuses (permanently) an organization
    /// without configuration.
    pub async fn process(&self, job: NotificationJob, run: &JobRun) -> Result<(), HandlerError> {
        require_id("orgId", &job.org_id)?;
        let services = &self.services;
        let Some(config) = services.orgs.org(&job.org_id).await? else {
            return Err(HandlerError::permanent(format!(
                "organization `{}` has no configuration, so there is nowhere to deliver its notification; store its OrgConfig, then retry the job from the dead-letter queue",
                job.org_id
            )));
        };
        let kind = job.notice.kind();
        let preferences = &config.notifications;
        if !preferences.types.contains(&kind) {
            tracing::info!(org = %job.org_id, kind = kind.as_str(), "organization does not want this notification type; skipped");
            return Ok(());
        }
        let id = job.notification_id.clone().unwrap_or_else(|| run.job_id.to_string());
        let key = format!("{}:{id}", job.org_id);
        let mut failures = Vec::new();

        if !preferences.email_recipients.is_empty() {
            let send = async {
                let (subject, text) = email_text(&job, &config);
                let email = Email::new(
                    services.settings.email_from.clone(),
                    preferences.email_recipients.clone(),
                    subject,
                    text,
                    format!("{key}:email"),
                )?;
                services.mailer.send(&email).await
            };
            deliver_once(services, &key, Channel::Email, run.now, send, &mut failures).await?;
        }
        if let Some(endpoint) = &preferences.webhook {
            let send = async {
                let body = serde_json::to_vec(&webhook_body(&job, &id, run))
                    .map_err(|e| DeliveryError::Permanent(format!("webhook body: {e}")))?;
                let message = WebhookMessage {
                    id: format!("msg_{id}"),
                    timestamp: run.now,
                    body,
                };
                services.webhooks.send(endpoint, &message).await
            };
            deliver_once(services, &key, Channel::Webhook, run.now, send, &mut failures).await?;
        }
        delivery_outcome(failures)
    }
}

handle_with_process!(NotificationHandler, NotificationJob);

/// The subject and plain-text body of a notification email.
fn email_text(job: &NotificationJob, config: &OrgConfig) -> (String, String) {
    let org = &config.org_id;
    match &job.notice {
        Notice::ThresholdWarning(a) => (
            format!("[FlagShip] {} at {}% of its {}limit", a.metric, a.percent, period_word(a)),
            format!(
                "Usage of {} for {org} reached {}% of its {}limit{}.\nAt the limit, your configured automatic actions will run.",
                a.metric,
                a.percent,
                period_word(a),
                usage_details(a)
            ),
        ),
        Notice::LimitExceeded(a) => (
            format!("[FlagShip] {} {}limit exceeded", a.metric, period_word(a)),
            format!(
                "Usage of {} for {org} exceeded its {}limit{}.",
                a.metric,
                period_word(a),
                usage_details(a)
            ),
        ),
        Notice::FeatureDisabled(d) => (
            format!("[FlagShip] feature {} disabled", d.flag_key),
            format!("Feature flag {} of {org} was disabled: {}.", d.flag_key, d.reason),
        ),
        Notice::ApiKeyBlocked(b) => (
            format!("[FlagShip] API key {} blocked", b.key_id),
            format!("API key {} of {org} was blocked: {}.", b.key_id, b.reason),
        ),
    }
}

/// `hourly ` (with a space) when the alert names its period, else nothing.
fn period_word(alert: &UsageAlert) -> String {
    alert.period.map(|p| format!("{p} ")).unwrap_or_default()
}

/// ` (85 of 100 in the period starting …)`, from the details the alert has.
fn usage_details(alert: &UsageAlert) -> String {
    let mut parts = Vec::new();
    match (alert.current, alert.limit) {
        (Some(current), Some(limit)) => parts.push(format!("{current} of {limit}")),
        (Some(current), None) => parts.push(format!("{current} used")),
        (None, Some(limit)) => parts.push(format!("limit {limit}")),
        (None, None) => {}
    }
    if let Some(start) = alert.period_start {
        parts.push(format!("in the period starting {start}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(" "))
    }
}

/// The webhook body, Standard Webhooks style: `{ type, timestamp, data }`,
/// with the organization and notification ids inside `data`.
fn webhook_body(job: &NotificationJob, id: &str, run: &JobRun) -> Value {
    let mut data = match serde_json::to_value(&job.notice) {
        Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
        _ => Value::Null,
    };
    if let Value::Object(fields) = &mut data {
        fields.insert("orgId".into(), job.org_id.clone().into());
        fields.insert("notificationId".into(), id.into());
    }
    json!({
        "type": job.notice.kind().as_str(),
        "timestamp": run.enqueued_at,
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use async_trait::async_trait;

    use super::*;
    use crate::flagship::{
        handlers::test_support::*,
        model::{NotificationType, PeriodKind, WebhookEndpoint},
        notify::{Mailer, WebhookSender, WebhookSigner},
        stores::{DeliveryLog, OrgConfigStore},
        FeatureDisabled,
    };

    fn warning() -> NotificationJob {
        NotificationJob {
            notification_id: Some("warning-1".into()),
            org_id: "acme".into(),
            notice: Notice::ThresholdWarning(UsageAlert::new("api_calls", 80).with_usage(
                PeriodKind::Hourly,
                at("2026-01-01T10:00:00Z"),
                100,
                85,
            )),
        }
    }

    /// A webhook sender that fails with the queued errors, then succeeds.
    #[derive(Debug, Default)]
    struct Scripted {
        failures: Mutex<Vec<DeliveryError>>,
        calls: Mutex<u32>,
    }

    impl Scripted {
        fn next(&self) -> Result<(), DeliveryError> {
            *self.calls.lock().unwrap() += 1;
            self.failures.lock().unwrap().pop().map_or(Ok(()), Err)
        }
    }

    #[async_trait]
    impl WebhookSender for Scripted {
        async fn send(&self, _: &WebhookEndpoint, _: &WebhookMessage) -> Result<(), DeliveryError> {
            self.next()
        }
    }

    #[async_trait]
    impl Mailer for Scripted {
        async fn send(&self, _: &Email) -> Result<(), DeliveryError> {
            self.next()
        }
    }

    #[tokio::test]
    async fn delivers_each_channel_once_when_run_twice() {
        let f = Fixture::new();
        f.acme().await;
        let handler = NotificationHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:31:00Z");
        handler.process(warning(), &run).await.unwrap();
        handler.process(warning(), &run).await.unwrap();

        let emails = f.mailer.sent();
        assert_eq!(emails.len(), 1);
        assert_eq!(emails[0].to(), ["ops@acme.test"]);
        assert_eq!(emails[0].subject(), "[FlagShip] api_calls at 80% of its hourly limit");
        assert_eq!(emails[0].idempotency_key(), "acme:warning-1:email");

        let hooks = f.webhooks.sent();
        assert_eq!(hooks.len(), 1);
        let (url, message) = &hooks[0];
        assert_eq!(url, "https://hooks.acme.test/flagship");
        assert_eq!(message.id, "msg_warning-1");
        let body: Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(body["type"], "threshold_warning");
        assert_eq!(body["data"]["orgId"], "acme");
        assert_eq!(body["data"]["current"], 85);
    }

    #[tokio::test]
    async fn a_retry_after_a_webhook_failure_sends_only_the_webhook() {
        let f = Fixture::new();
        f.acme().await;
        let hooks = Arc::new(Scripted::default());
        hooks.failures.lock().unwrap().push(DeliveryError::RetryAfter {
            delay: Duration::from_secs(42),
            message: "429".into(),
        });
        let handler = NotificationHandler::new(f.services.clone().with_webhooks(hooks.clone()));
        let run = f.run("2026-01-01T10:31:00Z");
        let err = handler.process(warning(), &run).await.unwrap_err();
        assert!(
            matches!(err, HandlerError::RetryAfter(d, _) if d == Duration::from_secs(42)),
            "{err}"
        );
        assert_eq!(f.mailer.sent().len(), 1);

        handler.process(warning(), &run).await.unwrap();
        assert_eq!(f.mailer.sent().len(), 1, "the email is not sent again");
        assert_eq!(*hooks.calls.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn permanent_failures_give_up_and_transient_ones_retry() {
        let f = Fixture::new();
        f.acme().await;
        let mailer = Arc::new(Scripted::default());
        mailer
            .failures
            .lock()
            .unwrap()
            .push(DeliveryError::Permanent("422 invalid".into()));
        let hooks = Arc::new(Scripted::default());
        hooks
            .failures
            .lock()
            .unwrap()
            .push(DeliveryError::Permanent("410 gone".into()));
        let services = f
            .services
            .clone()
            .with_mailer(mailer.clone())
            .with_webhooks(hooks.clone());
        let handler = NotificationHandler::new(services.clone());
        let err = handler
            .process(warning(), &f.run("2026-01-01T10:31:00Z"))
            .await
            .unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)), "{err}");
        assert!(
            err.to_string().contains("email: 422 invalid; webhook: 410 gone"),
            "{err}"
        );

        mailer
            .failures
            .lock()
            .unwrap()
            .push(DeliveryError::Transient("timeout".into()));
        let mut job = warning();
        job.notification_id = Some("warning-2".into());
        let err = handler.process(job, &f.run("2026-01-01T10:31:00Z")).await.unwrap_err();
        assert!(matches!(err, HandlerError::Retry(_)), "{err}");
    }

    #[tokio::test]
    async fn delivers_a_notification_in_the_specs_shape_and_logs_logging_as_logged() {
        let f = Fixture::new();
        f.acme().await;
        let spec = serde_json::json!({
            "orgId": "acme",
            "type": "threshold_warning",
            "data": { "metric": "api_calls", "percent": 80, "plan": "pro" },
        });
        let job: NotificationJob = serde_json::from_value(spec).unwrap();
        let run = f.run("2026-01-01T10:31:00Z");
        NotificationHandler::new(f.services.clone())
            .process(job, &run)
            .await
            .unwrap();
        let emails = f.mailer.sent();
        assert_eq!(emails[0].subject(), "[FlagShip] api_calls at 80% of its limit");
        let (_, hook) = &f.webhooks.sent()[0];
        let body: serde_json::Value = serde_json::from_slice(&hook.body).unwrap();
        assert_eq!(body["data"]["percent"], 80);
        assert_eq!(body["data"]["plan"], "pro", "extra keys reach the webhook");
        let key = format!("acme:{}", run.job_id);
        for channel in [Channel::Email, Channel::Webhook] {
            assert_eq!(
                f.store.delivery(&key, channel).await.unwrap(),
                Some(crate::flagship::stores::Delivery::Logged),
                "a logging channel's delivery is recorded as logged, not sent"
            );
        }
    }

    #[tokio::test]
    async fn honours_preferences_and_refuses_unknown_orgs() {
        let f = Fixture::new();
        let handler = NotificationHandler::new(f.services.clone());
        let err = handler
            .process(warning(), &f.run("2026-01-01T10:31:00Z"))
            .await
            .unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)));
        assert!(err.to_string().contains("no configuration"), "{err}");

        let mut config = f.acme().await;
        config.notifications.types = vec![NotificationType::LimitExceeded];
        f.store.put_org(&config).await.unwrap();
        handler
            .process(warning(), &f.run("2026-01-01T10:31:00Z"))
            .await
            .unwrap();
        assert!(f.mailer.sent().is_empty());
        assert!(f.webhooks.sent().is_empty());

        config.notifications.types = vec![NotificationType::FeatureDisabled];
        config.notifications.webhook = None;
        f.store.put_org(&config).await.unwrap();
        let disabled = NotificationJob {
            notification_id: None,
            org_id: "acme".into(),
            notice: Notice::FeatureDisabled(FeatureDisabled {
                flag_key: "new-ui".into(),
                reason: "api_calls limit".into(),
            }),
        };
        let run = f.run("2026-01-01T10:31:00Z");
        handler.process(disabled.clone(), &run).await.unwrap();
        handler.process(disabled, &run).await.unwrap();
        let emails = f.mailer.sent();
        assert_eq!(
            emails.len(),
            1,
            "keyed by the job id when the job has no notification id"
        );
        assert_eq!(emails[0].idempotency_key(), format!("acme:{}:email", run.job_id));
    }

    #[test]
    fn the_webhook_body_signs_and_verifies() {
        let f = Fixture::new();
        let run = f.run("2026-01-01T10:31:00Z");
        let body = serde_json::to_vec(&webhook_body(&warning(), "warning-1", &run)).unwrap();
        let signer = WebhookSigner::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let signature = signer.sign("msg_warning-1", run.now.timestamp(), &body);
        assert!(signer.verify("msg_warning-1", run.now.timestamp(), &body, &signature));
    }
}
