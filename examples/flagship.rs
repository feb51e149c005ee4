//! The FlagShip pipeline on the in-memory broker, end to end, in a few
//! seconds: usage crosses 80 % and 100 % of a limit, notifications go out,
//! a flag is disabled and an API key blocked (once, though a batch arrives
//! twice), the audit trail records it, the hour rolls over, and a
//! notification that fails during a mail outage lands in the dead-letter
//! queue and is retried from it.
//!
//! ```text
//! cargo run --example flagship --features flagship
//! ```

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use flagship_worker::{
    flagship::{
        notify::{DeliveryError, Email, LoggingMailer, LoggingWebhookSender, Mailer},
        ApiKey, AuditEvent, AuditEventJob, CounterKey, EnforcementConfig, Flag, FlagshipModule, FlagshipServices,
        Notice, NotificationJob, OrgConfig, PeriodKind, PeriodRolloverJob, UsageAlert, UsageEvent, UsageIngestionJob,
        UsageLimit, WebhookEndpoint, FLAGSHIP_QUEUES, NOTIFICATIONS_QUEUE,
    },
    Broker, Clock, DeadFilter, DeadLetterQueue, EnqueueOptions, MemoryBroker, QueueName, RetryPolicy, Worker,
};

/// Wall time from a fixed start, which the demo can move forward at once
/// (to end the hour without waiting for it).
#[derive(Debug)]
struct DemoClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
    skipped: Mutex<TimeDelta>,
}

impl DemoClock {
    fn skip(&self, by: TimeDelta) {
        *self.skipped.lock().unwrap() += by;
    }
}

impl Clock for DemoClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + TimeDelta::from_std(self.start.elapsed()).unwrap() + *self.skipped.lock().unwrap()
    }
}

/// A mailer that fails while the mail service is "down", else logs.
#[derive(Debug, Default)]
struct OutageMailer {
    down: AtomicBool,
    inner: LoggingMailer,
}

#[async_trait]
impl Mailer for OutageMailer {
    async fn send(&self, email: &Email) -> Result<(), DeliveryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(DeliveryError::Transient("mail service unavailable (503)".into()));
        }
        self.inner.send(email).await
    }
}

/// Waits until no FlagShip queue has a job ready, scheduled or running.
async fn settle(broker: &MemoryBroker) {
    loop {
        let mut busy = 0;
        for queue in FLAGSHIP_QUEUES {
            let stats = broker.stats(&QueueName::new(queue.name).unwrap()).await.unwrap();
            busy += stats.ready + stats.scheduled + stats.active;
        }
        if busy == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn batch(id: &str, quantity: u64, at: DateTime<Utc>) -> UsageIngestionJob {
    UsageIngestionJob {
        org_id: "acme".into(),
        batch_id: id.into(),
        events: vec![UsageEvent {
            metric: "api_calls".into(),
            quantity,
            timestamp: at,
        }],
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = std::time::Instant::now();
    let clock = Arc::new(DemoClock {
        base: "2026-03-02T10:40:00Z".parse()?,
        start: tokio::time::Instant::now(),
        skipped: Mutex::new(TimeDelta::zero()),
    });
    let broker = Arc::new(MemoryBroker::with_clock(clock.clone()));
    let mailer = Arc::new(OutageMailer::default());
    let webhooks = LoggingWebhookSender::new();
    let services = FlagshipServices::in_memory()
        .with_mailer(mailer.clone())
        .with_webhooks(Arc::new(webhooks.clone()));

    println!("FlagShip demo: in-memory broker, logging mailer and webhook sender\n");
    let mut config = OrgConfig::new("acme");
    config
        .limits
        .push(UsageLimit::new("api_calls", PeriodKind::Hourly, 100));
    config.notifications.email_recipients = vec!["ops@acme.example".into()];
    config.notifications.webhook = Some(WebhookEndpoint {
        url: "https://hooks.acme.example/flagship".into(),
        secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
    });
    config.limits[0].on_exceeded = EnforcementConfig {
        disable_flags: vec!["new-checkout".into()],
        block_api_keys: vec!["key-live-1".into()],
        notify: false,
    };
    services.orgs.put_org(&config).await?;
    services.flags.put_flag(&Flag::enabled("acme", "new-checkout")).await?;
    services
        .api_keys
        .put_api_key(&ApiKey::active("acme", "key-live-1"))
        .await?;
    println!("organization acme: api_calls limited to 100 per hour, warning at 80%");
    println!("  at the limit: disable flag new-checkout, block API key key-live-1\n");

    // Notifications retry every 100 ms here instead of every 30 s, so the
    // outage below plays out in well under a second.
    let worker = FlagshipModule::new(services.clone(), broker.clone())
        .without_schedules()
        .install(
            Worker::builder(broker.clone())
                .clock(clock.clone())
                .idle_wait(Duration::from_millis(20)),
        )?
        .retry_policy_for::<NotificationJob>(RetryPolicy::linear(3, Duration::from_millis(100)))
        .build()?;
    let client = worker.client();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_until(stopped).await }
    });

    let now = clock.now();
    let hour = CounterKey::containing("acme", "api_calls", PeriodKind::Hourly, now);
    let event = AuditEvent {
        id: "evt-1001".into(),
        org_id: "acme".into(),
        actor: "user-ada".into(),
        action: "flag.created".into(),
        target_type: "flag".into(),
        target_id: "new-checkout".into(),
        occurred_at: now,
        metadata: Default::default(),
    };
    client.enqueue(&AuditEventJob { event }).await?;

    println!("ingest batch b-1: 85 api_calls");
    client.enqueue(&batch("b-1", 85, now)).await?;
    settle(&broker).await;
    println!(
        "  events ingested: acme api_calls in the hour from {} = {}",
        hour.period_start.format("%H:%M"),
        services.usage.counter(&hour).await?
    );
    for email in mailer.inner.sent() {
        println!("  threshold warning email to {:?}: {}", email.to(), email.subject());
    }
    for (url, message) in webhooks.sent() {
        let body: serde_json::Value = serde_json::from_slice(&message.body)?;
        println!(
            "  threshold warning webhook {} to {url}: type {}",
            message.id, body["type"]
        );
    }

    println!("\ningest batch b-2: 20 api_calls, delivered twice by an at-least-once producer");
    let again = batch("b-2", 20, now);
    client.enqueue(&again).await?;
    client
        .enqueue_with(&again, EnqueueOptions::new().idempotency_key("redelivered-b-2"))
        .await?;
    settle(&broker).await;
    println!(
        "  counter = {} (batch b-2 counted once)",
        services.usage.counter(&hour).await?
    );
    if let Some(email) = mailer.inner.sent().get(1) {
        println!("  limit exceeded email: {}", email.subject());
    }
    let flag = services
        .flags
        .flag("acme", "new-checkout")
        .await?
        .ok_or("flag missing")?;
    println!(
        "  flag disabled: new-checkout enabled={} ({})",
        flag.enabled,
        flag.disabled_reason.unwrap_or_default()
    );
    let key = services
        .api_keys
        .api_key("acme", "key-live-1")
        .await?
        .ok_or("key missing")?;
    println!("  key blocked: key-live-1 blocked={}", key.blocked);
    println!(
        "  emails sent: {}, webhooks sent: {} (one warning, one limit exceeded each)",
        mailer.inner.sent().len(),
        webhooks.sent().len()
    );

    println!("\naudit trail of acme:");
    for event in services.audit.list("acme", 100).await? {
        println!(
            "  {}  {:<22} {:<10} {:<16} by {}",
            event.occurred_at.format("%H:%M:%S"),
            event.action,
            event.target_type,
            event.target_id,
            event.actor
        );
    }

    println!("\nthe hour ends (the demo clock skips ahead to 11:00:01) and the rollover runs, twice");
    let to_next_hour = hour.period_end() - clock.now() + TimeDelta::seconds(1);
    clock.skip(to_next_hour);
    let rollover = PeriodRolloverJob {
        period: PeriodKind::Hourly,
    };
    client.enqueue(&rollover).await?;
    client.enqueue(&rollover).await?;
    settle(&broker).await;
    let archived = services
        .archive
        .archived(PeriodKind::Hourly, hour.period_start, hour.period_end())
        .await?;
    for period in &archived {
        println!(
            "  rollover: archived {} {} {} from {} with total {}",
            period.key.org_id,
            period.key.metric,
            period.key.period,
            period.key.period_start.format("%H:%M"),
            period.total
        );
    }
    println!("  the 10:00 counter now reads {}", services.usage.counter(&hour).await?);

    println!("\nthe mail service goes down; a notification fails through its retries");
    mailer.down.store(true, Ordering::SeqCst);
    let notification = NotificationJob {
        notification_id: Some("manual-1".into()),
        org_id: "acme".into(),
        notice: Notice::LimitExceeded(UsageAlert::new("api_calls", 100).with_usage(
            PeriodKind::Hourly,
            hour.period_start,
            100,
            105,
        )),
    };
    let id = client.enqueue(&notification).await?.id();
    let queue = QueueName::new(NOTIFICATIONS_QUEUE)?;
    let dead = DeadFilter::queue(queue.clone());
    while broker.count_dead(&dead).await? == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let envelope = broker.get_dead(&queue, id).await?.ok_or("dead job missing")?;
    println!("  dead-lettered: {}", envelope.dead_letter_reason.unwrap_or_default());
    for (n, attempt) in envelope.attempts.iter().enumerate() {
        println!(
            "    attempt {} at {}: {}",
            n + 1,
            attempt.started_at.format("%H:%M:%S%.3f"),
            attempt.error.as_deref().unwrap_or("ok")
        );
    }
    println!(
        "  (the webhook went out on the first attempt and was not resent: {} webhooks in all)",
        webhooks.sent().len()
    );

    println!("\nthe mail service recovers; the operator retries the job from the DLQ");
    mailer.down.store(false, Ordering::SeqCst);
    broker.retry_dead(&queue, id).await?;
    settle(&broker).await;
    if let Some(email) = mailer.inner.sent().last() {
        println!("  delivered: {}", email.subject());
    }
    println!(
        "  dead jobs now: {}; emails sent: {}",
        broker.count_dead(&dead).await?,
        mailer.inner.sent().len()
    );

    stop.send(()).map_err(|_| "worker already stopped")?;
    running.await??;
    let stats = worker.stats();
    println!(
        "\nworker: {} jobs completed, {} retried, {} dead-lettered, in {:.2} s",
        stats.completed,
        stats.retried,
        stats.dead_lettered,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
