//! [`OperatorAlertHandler`]: emails the operators.

use super::{deliver_once, delivery_outcome, handle_with_process, require_id, JobRun};
use crate::{
    flagship::{notify::Email, stores::Channel, FlagshipServices, OperatorAlertJob},
    HandlerError,
};

/// Runs `operator-alert` jobs: emails
/// [`FlagshipSettings::operator_emails`](crate::flagship::FlagshipSettings::operator_emails)
/// once per alert id. With no operators configured, the alert is logged
/// and dropped.
#[derive(Debug, Clone)]
pub struct OperatorAlertHandler {
    services: FlagshipServices,
}

impl OperatorAlertHandler {
    /// A handler on `services`.
    pub fn new(services: FlagshipServices) -> Self {
        OperatorAlertHandler { services }
    }

    /// Emails the alert unless it was emailed already.
    pub async fn process(&self, job: OperatorAlertJob, run: &JobRun) -> Result<(), HandlerError> {
        require_id("alertId", &job.alert_id)?;
        let services = &self.services;
        let operators = &services.settings.operator_emails;
        if operators.is_empty() {
            tracing::warn!(alert = %job.alert_id, subject = %job.subject, "no operator emails configured; alert only logged");
            return Ok(());
        }
        let key = format!("operator-alert:{}", job.alert_id);
        let send = async {
            let email = Email::new(
                services.settings.email_from.clone(),
                operators.clone(),
                format!("[FlagShip operators] {}", job.subject),
                job.body.clone(),
                key.clone(),
            )?;
            services.mailer.send(&email).await
        };
        let failure = deliver_once(
            &*services.deliveries,
            &key,
            Channel::Email,
            services.mailer.delivery(),
            run.now,
            send,
        )
        .await?;
        delivery_outcome(failure.map(|e| (Channel::Email, e)).into_iter().collect())
    }
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
