//! A failing mailer drives a notification through the notifications
//! queue's linear retries into the dead-letter queue, with its history;
//! retried from there once the mailer works, it is delivered.

use std::sync::{
    atomic::{AtomicBool, AtomicU32, Ordering},
    Arc,
};

use async_trait::async_trait;
use flagship_worker::{
    flagship::{
        notify::{DeliveryError, Email, Mailer},
        FlagshipModule, FlagshipServices, Notice, NotificationJob, OrgConfig, PeriodKind, UsageAlert,
        NOTIFICATIONS_QUEUE,
    },
    DeadFilter, DeadLetterQueue, MemoryBroker, QueueName, Worker,
};

use crate::wait_until;

/// Fails with a transient error while `down` is set.
#[derive(Debug, Default)]
struct FlakyMailer {
    down: AtomicBool,
    attempts: AtomicU32,
    sent: AtomicU32,
}

#[async_trait]
impl Mailer for FlakyMailer {
    async fn send(&self, _: &Email) -> Result<(), DeliveryError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(DeliveryError::Transient("mail service unavailable (503)".into()));
        }
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn failing_email_retries_linearly_into_the_dlq_and_is_retried_from_it() {
    let mailer = Arc::new(FlakyMailer::default());
    mailer.down.store(true, Ordering::SeqCst);
    let services = FlagshipServices::in_memory().with_mailer(mailer.clone());
    let mut config = OrgConfig::new("acme");
    config.notifications.email_recipients = vec!["ops@acme.test".into()];
    services.orgs.put_org(&config).await.unwrap();

    let backend = Arc::new(MemoryBroker::new());
    let worker = FlagshipModule::new(services, backend.clone())
        .without_schedules()
        .install(Worker::builder(backend.clone()))
        .unwrap()
        .build()
        .unwrap();
    let job = NotificationJob {
        notification_id: Some("warning-1".into()),
        org_id: "acme".into(),
        notice: Notice::ThresholdWarning(UsageAlert::new("api_calls", 80).with_usage(
            PeriodKind::Hourly,
            "2026-01-01T10:00:00Z".parse().unwrap(),
            100,
            80,
        )),
    };
    let id = worker.client().enqueue(&job).await.unwrap().id();
    let queue = QueueName::new(NOTIFICATIONS_QUEUE).unwrap();
    let dead = DeadFilter::queue(queue.clone());

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_until(stopped).await }
    });

    wait_until("the notification is dead", || async {
        backend.count_dead(&dead).await.unwrap() == 1
    })
    .await;
    let envelope = backend.get_dead(&queue, id).await.unwrap().unwrap();
    assert_eq!(
        mailer.attempts.load(Ordering::SeqCst),
        4,
        "one attempt and three retries"
    );
    assert_eq!(envelope.attempts.len(), 4);
    assert!(envelope
        .attempts
        .iter()
        .all(|a| a.error.as_deref().unwrap_or_default().contains("503")));
    let reason = envelope.dead_letter_reason.clone().unwrap();
    assert!(reason.contains("retries exhausted after 4 attempts"), "{reason}");
    let gaps: Vec<i64> = envelope
        .attempts
        .windows(2)
        .map(|w| (w[1].started_at - w[0].finished_at).num_seconds())
        .collect();
    assert_eq!(gaps, [30, 60, 90], "linear backoff, 30 s steps");

    // The mail service recovers; an operator retries the job from the DLQ.
    mailer.down.store(false, Ordering::SeqCst);
    assert!(backend.retry_dead(&queue, id).await.unwrap());
    wait_until("the email is sent", || async {
        mailer.sent.load(Ordering::SeqCst) == 1
    })
    .await;
    wait_until("the job completes", || async { worker.stats().completed == 1 }).await;
    assert_eq!(backend.count_dead(&dead).await.unwrap(), 0);

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
