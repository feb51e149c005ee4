//! The whole pipeline on a broker and stores, with local stand-ins for
//! Resend and a webhook receiver.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use flagship_worker::{
    flagship::{
        notify::{EgressPolicy, HttpWebhookSender, ResendMailer, RestrictedRange},
        ApiKey, AuditEvent, AuditEventJob, CounterKey, EnforcementConfig, Flag, FlagshipModule, FlagshipServices,
        OrgConfig, PeriodKind, PeriodRolloverJob, UsageEvent, UsageIngestionJob, UsageLimit, WebhookEndpoint,
        FLAGSHIP_QUEUES,
    },
    Backend, Broker, Client, EnqueueOptions, MemoryBroker, QueueName, Worker,
};
use tokio::sync::oneshot;

use crate::{mock::MockServer, wait_until, ShiftedClock};

pub(crate) const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

pub(crate) struct Pipeline {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) client: Client,
    pub(crate) services: FlagshipServices,
    pub(crate) resend: MockServer,
    pub(crate) hooks: MockServer,
    pub(crate) clock: Arc<ShiftedClock>,
    stop: Option<oneshot::Sender<()>>,
    running: tokio::task::JoinHandle<()>,
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

impl Pipeline {
    /// Starts a FlagShip worker on `backend` and `services` (whose channels
    /// are replaced by HTTP ones aimed at the mock servers), with the org
    /// `acme`: an hourly limit of 100 api_calls, email and webhook, and
    /// enforcement that disables `new-ui` and blocks `key-1`.
    pub(crate) async fn start<B: Backend>(
        backend: Arc<B>,
        services: FlagshipServices,
        clock: Arc<ShiftedClock>,
    ) -> Self {
        let resend = MockServer::resend().await;
        let hooks = MockServer::webhook_receiver(SECRET).await;
        let mailer = ResendMailer::new("re_test_key")
            .unwrap()
            .with_base_url(&resend.url)
            .unwrap();
        let webhooks = HttpWebhookSender::new(EgressPolicy::strict().allow(RestrictedRange::Loopback)).unwrap();
        let services = services.with_mailer(Arc::new(mailer)).with_webhooks(Arc::new(webhooks));

        let mut config = OrgConfig::new("acme");
        config
            .limits
            .push(UsageLimit::new("api_calls", PeriodKind::Hourly, 100));
        config.notifications.email_recipients = vec!["ops@acme.test".into()];
        config.notifications.webhook = Some(WebhookEndpoint {
            url: format!("{}/flagship", hooks.url),
            secret: SECRET.into(),
        });
        config.limits[0].on_exceeded = EnforcementConfig {
            disable_flags: vec!["new-ui".into()],
            block_api_keys: vec!["key-1".into()],
            notify: false,
        };
        services.orgs.put_org(&config).await.unwrap();
        services.flags.put_flag(&Flag::enabled("acme", "new-ui")).await.unwrap();
        services
            .api_keys
            .put_api_key(&ApiKey::active("acme", "key-1"))
            .await
            .unwrap();

        let broker: Arc<dyn Broker> = backend.clone();
        let worker = FlagshipModule::new(services.clone(), backend)
            .without_schedules()
            .install(
                Worker::builder(broker.clone())
                    .clock(clock.clone())
                    .idle_wait(Duration::from_millis(50)),
            )
            .unwrap()
            .build()
            .unwrap();
        let client = worker.client();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            worker.run_until(stopped).await.unwrap();
        });
        Pipeline {
            broker,
            client,
            services,
            resend,
            hooks,
            clock,
            stop: Some(stop),
            running,
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.running).await.unwrap();
    }

    /// Waits until no FlagShip queue holds a ready, scheduled or running job.
    pub(crate) async fn settle(&self) {
        wait_until("every queue is empty", || async {
            let mut busy = 0;
            for q in FLAGSHIP_QUEUES {
                let stats = self.broker.stats(&QueueName::new(q.name).unwrap()).await.unwrap();
                busy += stats.ready + stats.scheduled + stats.active;
            }
            busy == 0
        })
        .await;
    }

    pub(crate) async fn ingest(&self, batch: &str, quantity: u64, at_: &str, options: EnqueueOptions) {
        let job = UsageIngestionJob {
            org_id: "acme".into(),
            batch_id: batch.into(),
            events: vec![UsageEvent {
                metric: "api_calls".into(),
                quantity,
                timestamp: at(at_),
            }],
        };
        self.client.enqueue_with(&job, options).await.unwrap();
    }
}

/// The scenario the issue asks for, on any backend and stores.
pub(crate) async fn threshold_scenario(p: &Pipeline) {
    let hour = CounterKey::containing("acme", "api_calls", PeriodKind::Hourly, at("2026-01-01T10:00:00Z"));

    // An audit event from the API server appears in the trail.
    let event = AuditEvent {
        id: "evt-1".into(),
        org_id: "acme".into(),
        actor: "user-7".into(),
        action: "flag.created".into(),
        target_type: "flag".into(),
        target_id: "new-ui".into(),
        occurred_at: at("2026-01-01T10:01:00Z"),
        metadata: Default::default(),
    };
    p.client.enqueue(&AuditEventJob { event }).await.unwrap();

    // 85 of 100: one threshold_warning, by email and signed webhook.
    p.ingest("b-1", 85, "2026-01-01T10:20:00Z", EnqueueOptions::new()).await;
    p.settle().await;
    let emails = p.resend.requests();
    assert_eq!(emails.len(), 1, "one warning email");
    let email = &emails[0];
    assert_eq!(email.path, "/emails");
    assert_eq!(email.header("authorization"), Some("Bearer re_test_key"));
    assert!(
        email.header("idempotency-key").unwrap().starts_with("acme:warning-"),
        "{:?}",
        email.headers
    );
    assert_eq!(email.json()["to"], serde_json::json!(["ops@acme.test"]));
    assert_eq!(
        email.json()["subject"],
        "[FlagShip] api_calls at 80% of its hourly limit"
    );
    let hooks = p.hooks.requests();
    assert_eq!(hooks.len(), 1, "one warning webhook");
    assert_eq!(hooks[0].signature_valid, Some(true));
    assert_eq!(hooks[0].path, "/flagship");
    assert_eq!(hooks[0].json()["type"], "threshold_warning");
    assert_eq!(hooks[0].json()["data"]["current"], 85);

    // 105 of 100, with the same batch delivered twice: enforced once.
    p.ingest("b-2", 20, "2026-01-01T10:25:00Z", EnqueueOptions::new()).await;
    p.ingest(
        "b-2",
        20,
        "2026-01-01T10:25:00Z",
        EnqueueOptions::new().idempotency_key("redelivered-b-2"),
    )
    .await;
    p.settle().await;
    assert_eq!(p.services.usage.counter(&hour).await.unwrap(), 105);
    let emails = p.resend.requests();
    assert_eq!(emails.len(), 2, "one limit_exceeded email: {emails:?}");
    assert_eq!(
        emails[1].json()["subject"],
        "[FlagShip] api_calls hourly limit exceeded"
    );
    let hooks = p.hooks.requests();
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[1].json()["type"], "limit_exceeded");
    assert!(hooks.iter().all(|h| h.signature_valid == Some(true)));
    let flag = p.services.flags.flag("acme", "new-ui").await.unwrap().unwrap();
    assert!(!flag.enabled, "the configured flag is disabled");
    let key = p.services.api_keys.api_key("acme", "key-1").await.unwrap().unwrap();
    assert!(key.blocked, "the configured key is blocked");

    let trail = p.services.audit.list("acme", 100).await.unwrap();
    let actions: Vec<_> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(trail.len(), 3, "{actions:?}");
    assert!(actions.contains(&"flag.created"));
    let disabled = trail.iter().find(|e| e.action == "flag.disabled").unwrap();
    assert_eq!(
        (disabled.actor.as_str(), disabled.target_id.as_str()),
        ("flagship-worker", "new-ui")
    );
    assert!(disabled.id.starts_with("auto-action-"));
    assert!(actions.contains(&"api_key.blocked"));

    // The hour ends: rollover archives it and the next hour starts at zero.
    p.clock.jump_to("2026-01-01T11:00:01Z");
    let rollover = PeriodRolloverJob {
        period: PeriodKind::Hourly,
    };
    p.client.enqueue(&rollover).await.unwrap();
    p.client.enqueue(&rollover).await.unwrap();
    p.settle().await;
    assert_eq!(p.services.usage.counter(&hour).await.unwrap(), 0);
    let archived = p
        .services
        .archive
        .archived(
            PeriodKind::Hourly,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-02T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(archived.len(), 1);
    assert_eq!((archived[0].key.clone(), archived[0].total), (hour, 105));

    // Markers were reset with the period: the new hour warns again.
    p.ingest("b-3", 90, "2026-01-01T11:00:00Z", EnqueueOptions::new()).await;
    p.settle().await;
    assert_eq!(p.resend.requests().len(), 3);
    assert_eq!(p.hooks.requests().len(), 3);
    assert_eq!(
        p.hooks.requests()[2].json()["data"]["periodStart"],
        "2026-01-01T11:00:00Z"
    );
}

#[tokio::test]
async fn usage_thresholds_notify_and_enforce_once_on_the_memory_broker() {
    let clock = Arc::new(ShiftedClock::starting_at("2026-01-01T10:30:00Z"));
    let backend = Arc::new(MemoryBroker::with_clock(clock.clone()));
    let pipeline = Pipeline::start(backend, FlagshipServices::in_memory(), clock).await;
    threshold_scenario(&pipeline).await;
    pipeline.stop().await;
}
