//! [`OperatorAlertHandler`]: emails the operators.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{deliver_once, delivery_outcome, handle_with_process, require_id, JobRun};
use crate::{
    flagship::{
        notify::{Email, WebhookMessage},
        stores::Channel,
        FlagshipServices, OperatorAlertJob,
    },
    HandlerError,
};

/// Runs `operator-alert` jobs: emails
/// [`FlagshipSettings::operator_emails`](crate::flagship::FlagshipSettings::operator_emails)
/// and posts to the operators' webhook, once per alert id and channel.
/// With neither configured, the alert is logged and dropped.
#[derive(Debug, Clone)]
pub struct OperatorAlertHandler {
    services: FlagshipServices,
}

impl OperatorAlertHandler {
    /// A handler on `services`.
    pub fn new(services: FlagshipServices) -> Self {
        OperatorAlertHandler { services }
    }

    /// Emails the alert (and posts it to the operators' webhook) unless it
    /// was delivered already.
    pub async fn process(&self, job: OperatorAlertJob, run: &JobRun) -> Result<(), HandlerError> {
        require_id("alertId", &job.alert_id)?;
        deliver_operator_alert(&self.services, &job, run.now).await
    }
}

/// Delivers an operator alert by email to
/// [`FlagshipSettings::operator_emails`](crate::flagship::FlagshipSettings::operator_emails)
/// and to [`FlagshipSettings::operator_webhook`](crate::flagship::FlagshipSettings::operator_webhook),
/// once per channel and alert id: through the `operator-alert` job, or
/// directly when the broker cannot take the job.
pub(crate) async fn deliver_operator_alert(
    services: &FlagshipServices,
    alert: &OperatorAlertJob,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let operators = &services.settings.operator_emails;
    let webhook = services.settings.operator_webhook.as_ref();
    if operators.is_empty() && webhook.is_none() {
        tracing::warn!(alert = %alert.alert_id, subject = %alert.subject, "no operator emails or webhook configured; alert only logged");
        return Ok(());
    }
    let key = format!("operator-alert:{}", alert.alert_id);
    let mut failures = Vec::new();
    if !operators.is_empty() {
        let send = async {
            let email = Email::new(
                services.settings.email_from.clone(),
                operators.clone(),
                format!("[FlagShip operators] {}", alert.subject),
                alert.body.clone(),
                key.clone(),
            )?;
            services.mailer.send(&email).await
        };
        deliver_once(services, &key, Channel::Email, now, send, &mut failures).await?;
    }
    if let Some(endpoint) = webhook {
        let body = json!({
            "type": "operator_alert",
            "timestamp": now,
            "data": { "alertId": alert.alert_id, "subject": alert.subject, "body": alert.body },
        });
        let message = WebhookMessage {
            id: format!("msg_{key}"),
            timestamp: now,
            body: body.to_string().into_bytes(),
        };
        let send = services.webhooks.send(endpoint, &message);
        deliver_once(services, &key, Channel::Webhook, now, send, &mut failures).await?;
    }
    delivery_outcome(failures)
}

handle_with_process!(OperatorAlertHandler, OperatorAlertJob);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flagship::handlers::test_support::*;

    fn alert(subject: &str) -> OperatorAlertJob {
        OperatorAlertJob {
            alert_id: "health-1".into(),
            subject: subject.into(),
            body: "flagship:usage has 20000 ready jobs".into(),
        }
    }

    #[tokio::test]
    async fn emails_the_operators_once_when_run_twice() {
        let mut f = Fixture::new();
        f.services.settings.operator_emails = vec!["oncall@flagship.test".into()];
        let handler = OperatorAlertHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:00:00Z");
        handler.process(alert("queues backing up"), &run).await.unwrap();
        handler.process(alert("queues backing up"), &run).await.unwrap();
        let sent = f.mailer.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].subject(), "[FlagShip operators] queues backing up");
        assert_eq!(sent[0].to(), ["oncall@flagship.test"]);
    }

    #[tokio::test]
    async fn refuses_injected_subjects_and_tolerates_no_operators() {
        let mut f = Fixture::new();
        let handler = OperatorAlertHandler::new(f.services.clone());
        handler
            .process(alert("x"), &f.run("2026-01-01T10:00:00Z"))
            .await
            .unwrap();
        assert!(f.mailer.sent().is_empty());

        f.services.settings.operator_emails = vec!["oncall@flagship.test".into()];
        let handler = OperatorAlertHandler::new(f.services.clone());
        let err = handler
            .process(alert("x\r\nBcc: a@evil.test"), &f.run("2026-01-01T10:00:00Z"))
            .await
            .unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)), "{err}");
        assert!(f.mailer.sent().is_empty());
    }
}
