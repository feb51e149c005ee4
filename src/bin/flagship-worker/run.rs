//! `flagship-worker run`: every FlagShip queue with its schedules, and the
//! admin server, configured from the environment (or flags), until SIGTERM
//! or SIGINT.

use std::{future::IntoFuture, net::SocketAddr, sync::Arc};

use clap::Args;
use flagship_worker::{
    admin::{AdminBuilder, AdminMetrics},
    broker::{postgres::PostgresBroker, redis::RedisBroker},
    flagship::{
        control::{PostgresControl, SwitchTable},
        notify::{EgressPolicy, HttpWebhookSender, LoggingMailer, LoggingWebhookSender, ResendMailer, RestrictedRange},
        stores::{PostgresStore, RedisStore},
        FlagshipHealth, FlagshipModule, FlagshipServices, FlagshipSettings, HealthCheckHandler, HealthCheckJob,
        Heartbeat, JobRun, WebhookEndpoint, FLAGSHIP_QUEUES, HEALTH_CHECK_INTERVAL, HEARTBEAT_INTERVAL,
    },
    Backend, Client, Error, Worker,
};
use tokio::sync::watch;

/// Settings of `flagship-worker run`; each has an environment variable.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The broker: `postgres://user@host/database`, or Redis in any form
    /// `RedisBroker` takes (`redis://host:6379`, `rediss://…`,
    /// `redis+cluster://h1:7001,h2:7002`, `redis+sentinel://h:26379/master`).
    #[arg(long, env = "FLAGSHIP_BROKER_URL", hide_env_values = true, value_name = "URL")]
    broker_url: String,

    /// The PostgreSQL schema of the broker's tables (with a `postgres://`
    /// broker); it must differ from `--store-schema`.
    #[arg(long, env = "FLAGSHIP_BROKER_SCHEMA", default_value = "flagship_worker")]
    broker_schema: String,

    /// Where FlagShip's state is kept: `postgres://…` (tables in schema
    /// `--store-schema`) or `redis://…`.
    #[arg(long, env = "FLAGSHIP_STORE_URL", hide_env_values = true, value_name = "URL")]
    store_url: String,

    /// The PostgreSQL schema of the stores' tables.
    #[arg(long, env = "FLAGSHIP_STORE_SCHEMA", default_value = flagship_worker::flagship::stores::postgres::DEFAULT_STORE_SCHEMA)]
    store_schema: String,

    /// The Resend API key notification emails are sent with.
    #[arg(long, env = "FLAGSHIP_RESEND_API_KEY", hide_env_values = true)]
    resend_api_key: Option<String>,

    /// Resend's API address (for a proxy or a test double).
    #[arg(long, env = "FLAGSHIP_RESEND_BASE_URL")]
    resend_base_url: Option<String>,

    /// The sender of notification emails, e.g. `FlagShip <alerts@example.com>`.
    #[arg(long, env = "FLAGSHIP_EMAIL_FROM")]
    email_from: Option<String>,

    /// Who receives operator alerts (comma-separated).
    #[arg(long, env = "FLAGSHIP_OPERATOR_EMAILS", value_delimiter = ',')]
    operator_emails: Vec<String>,

    /// Only log emails and webhooks instead of sending them (demos): the
    /// delivery log records them as `logged`.
    #[arg(long, env = "FLAGSHIP_LOG_DELIVERIES_ONLY")]
    log_deliveries_only: bool,

    /// A webhook that also receives operator alerts.
    #[arg(long, env = "FLAGSHIP_OPERATOR_WEBHOOK_URL", requires = "operator_webhook_secret")]
    operator_webhook_url: Option<String>,

    /// The operator webhook's signing secret (`whsec_…`).
    #[arg(long, env = "FLAGSHIP_OPERATOR_WEBHOOK_SECRET", hide_env_values = true)]
    operator_webhook_secret: Option<String>,

    /// The product's flags table (`schema.table`, columns `org_id`, `key`,
    /// `enabled`): auto-actions disable flags there instead of in the stores.
    /// Needs a PostgreSQL FLAGSHIP_STORE_URL on the same database.
    #[arg(long, env = "FLAGSHIP_FLAGS_TABLE")]
    flags_table: Option<String>,

    /// The product's API keys table (columns `org_id`, `id`, `blocked`).
    #[arg(long, env = "FLAGSHIP_API_KEYS_TABLE")]
    api_keys_table: Option<String>,

    /// This worker's name in heartbeats (default: host name and process id).
    #[arg(long, env = "FLAGSHIP_WORKER_ID")]
    worker_id: Option<String>,

    /// Address ranges webhooks may reach besides public ones
    /// (comma-separated: loopback, private, shared-cgnat, link-local).
    #[arg(long, env = "FLAGSHIP_WEBHOOK_ALLOW", value_delimiter = ',', value_parser = parse_range)]
    webhook_allow: Vec<RestrictedRange>,

    /// The admin API's bearer token (at least 16 bytes).
    #[arg(long, env = "FLAGSHIP_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,

    /// Where the admin API, dashboard and metrics listen.
    #[arg(long, env = "FLAGSHIP_ADMIN_ADDR", default_value = "127.0.0.1:8787")]
    admin_addr: SocketAddr,

    /// Jobs run at once per queue.
    #[arg(long, env = "FLAGSHIP_CONCURRENCY", default_value_t = 10)]
    concurrency: usize,

    /// Per-queue concurrency, `queue=n` (comma-separated), e.g.
    /// `flagship:usage=32,flagship:notifications=4`.
    #[arg(long, env = "FLAGSHIP_QUEUE_CONCURRENCY", value_delimiter = ',', value_parser = parse_queue_concurrency)]
    queue_concurrency: Vec<(String, usize)>,
}

fn parse_range(name: &str) -> Result<RestrictedRange, String> {
    Ok(match name.trim() {
        "loopback" => RestrictedRange::Loopback,
        "private" => RestrictedRange::Private,
        "shared-cgnat" => RestrictedRange::SharedCgnat,
        "link-local" => RestrictedRange::LinkLocal,
        other => {
            return Err(format!(
                "`{other}` is not a range webhooks can be allowed to reach: use loopback, private, shared-cgnat or link-local"
            ))
        }
    })
}

fn parse_queue_concurrency(text: &str) -> Result<(String, usize), String> {
    let (queue, n) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not `queue=n`, e.g. `flagship:usage=32`"))?;
    let n: usize = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("concurrency `{n}` of queue `{queue}` is not a whole number above 0"))?;
    Ok((queue.trim().to_owned(), n))
}

/// Connects everything, then runs until SIGTERM or SIGINT.
pub(crate) async fn run(args: RunArgs) -> Result<(), Error> {
    let postgres = |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
    if postgres(&args.broker_url) && postgres(&args.store_url) && args.broker_schema == args.store_schema {
        return Err(Error::InvalidConfig(format!(
            "the broker and the stores would share the schema `{}`: give FLAGSHIP_BROKER_SCHEMA and \
             FLAGSHIP_STORE_SCHEMA different names",
            args.store_schema
        )));
    }
    let services = services(&args).await?;
    if postgres(&args.broker_url) {
        let broker = PostgresBroker::builder(args.broker_url.as_str())
            .schema(args.broker_schema.as_str())
            .connect()
            .await?;
        serve(Arc::new(broker), services, &args).await
    } else {
        // Every other URL is Redis's: `RedisBroker` says what it takes.
        serve(
            Arc::new(RedisBroker::connect(args.broker_url.as_str()).await?),
            services,
            &args,
        )
        .await
    }
}

/// The stores and channels the settings describe; refuses to go on
/// without a mailer unless logging-only delivery was chosen.
async fn services(args: &RunArgs) -> Result<FlagshipServices, Error> {
    let services = if args.store_url.starts_with("redis://") || args.store_url.starts_with("rediss://") {
        FlagshipServices::from_store(Arc::new(RedisStore::connect(&args.store_url).await?))
    } else if args.store_url.starts_with("postgres://") || args.store_url.starts_with("postgresql://") {
        let pool = flagship_worker::broker::postgres::sqlx::PgPool::connect(&args.store_url)
            .await
            .map_err(|e| Error::Unavailable(format!("the stores' database (FLAGSHIP_STORE_URL): {e}").into()))?;
        let services = FlagshipServices::from_store(Arc::new(
            PostgresStore::with_pool(pool.clone(), &args.store_schema).await?,
        ));
        if args.flags_table.is_some() || args.api_keys_table.is_some() {
            let flags = SwitchTable::flags(args.flags_table.as_deref().unwrap_or("flagship.flags"));
            let keys = SwitchTable::api_keys(args.api_keys_table.as_deref().unwrap_or("flagship.api_keys"));
            let control = Arc::new(PostgresControl::new(pool, flags, keys)?);
            services
                .with_flag_control(control.clone())
                .with_api_key_control(control)
        } else {
            services
        }
    } else {
        return Err(Error::InvalidConfig(
            "FLAGSHIP_STORE_URL must start with postgres:// or redis://".into(),
        ));
    };
    if !args.store_url.starts_with("postgres") && (args.flags_table.is_some() || args.api_keys_table.is_some()) {
        return Err(Error::InvalidConfig(
            "FLAGSHIP_FLAGS_TABLE and FLAGSHIP_API_KEYS_TABLE need a PostgreSQL FLAGSHIP_STORE_URL".into(),
        ));
    }
    let operator_webhook = match (&args.operator_webhook_url, &args.operator_webhook_secret) {
        (Some(url), Some(secret)) => Some(WebhookEndpoint {
            url: url.clone(),
            secret: secret.clone(),
        }),
        _ => None,
    };
    let mut settings = FlagshipSettings {
        operator_emails: args.operator_emails.iter().map(|e| e.trim().to_owned()).collect(),
        operator_webhook,
        ..FlagshipSettings::default()
    };
    if args.log_deliveries_only {
        tracing::warn!("FLAGSHIP_LOG_DELIVERIES_ONLY is set: emails and webhooks are only logged, nobody is told");
        if let Some(from) = &args.email_from {
            settings.email_from = from.clone();
        }
        return Ok(services
            .with_mailer(Arc::new(LoggingMailer::new()))
            .with_webhooks(Arc::new(LoggingWebhookSender::new()))
            .with_settings(settings));
    }
    let (Some(key), Some(from)) = (&args.resend_api_key, &args.email_from) else {
        let missing = if args.resend_api_key.is_none() {
            "FLAGSHIP_RESEND_API_KEY"
        } else {
            "FLAGSHIP_EMAIL_FROM"
        };
        return Err(Error::InvalidConfig(format!(
            "{missing} is not set: notifications need a mailer (set FLAGSHIP_RESEND_API_KEY and FLAGSHIP_EMAIL_FROM, \
             or FLAGSHIP_LOG_DELIVERIES_ONLY=true to only log them)"
        )));
    };
    settings.email_from = from.clone();
    let mut mailer = ResendMailer::new(key.clone())?;
    if let Some(base) = &args.resend_base_url {
        mailer = mailer.with_base_url(base)?;
    }
    let policy = args
        .webhook_allow
        .iter()
        .fold(EgressPolicy::strict(), |policy, range| policy.allow(*range));
    Ok(services
        .with_mailer(Arc::new(mailer))
        .with_webhooks(Arc::new(HttpWebhookSender::new(policy)?))
        .with_settings(settings))
}

/// Runs the worker and the admin server on `backend` until a signal.
async fn serve<B: Backend>(backend: Arc<B>, services: FlagshipServices, args: &RunArgs) -> Result<(), Error> {
    let metrics = AdminMetrics::new();
    let mut module = FlagshipModule::new(services.clone(), backend.clone()).concurrency(args.concurrency);
    for (queue, n) in &args.queue_concurrency {
        module = module.queue_concurrency(queue.clone(), *n);
    }
    let worker = module
        .install(Worker::builder(backend.clone()).observer(metrics.observer()))?
        .build()?;
    let Some(token) = &args.admin_token else {
        return Err(Error::InvalidConfig(
            "FLAGSHIP_ADMIN_TOKEN is not set: the admin API needs a bearer token of at least 16 bytes".into(),
        ));
    };
    let admin = AdminBuilder::new(backend)
        .token(token.clone())
        .worker(&worker)
        .metrics(metrics)
        .health(Arc::new(FlagshipHealth::new(services.health.clone())))
        .build()?;
    let app = axum::Router::new().nest("/admin", admin);
    let listener = tokio::net::TcpListener::bind(args.admin_addr).await.map_err(|e| {
        Error::InvalidConfig(format!(
            "cannot listen on {} (FLAGSHIP_ADMIN_ADDR): {e}",
            args.admin_addr
        ))
    })?;
    let addr = listener.local_addr().map_err(|e| Error::Unavailable(Box::new(e)))?;
    let queues: Vec<&str> = FLAGSHIP_QUEUES.iter().map(|q| q.name).collect();
    println!("admin: http://{addr}/admin/ui");
    println!("queues: {}", queues.join(" "));
    tracing::info!(%addr, ?queues, "flagship-worker running");

    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let worker_id = args
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let heartbeat = Heartbeat::new(services.health.clone(), worker_id);
    let watchdog = watchdog(services, worker.client(), wait(stopped.clone()));
    let server = axum::serve(listener, app).with_graceful_shutdown(wait(stopped.clone()));
    let (served, ran, (), (), ()) = tokio::join!(
        server.into_future(),
        worker.run_until(wait(stopped.clone())),
        heartbeat.run_until(HEARTBEAT_INTERVAL, wait(stopped)),
        watchdog,
        async {
            let signal = shutdown_signal().await;
            tracing::info!(signal, "shutting down: finishing running jobs");
            let _ = stop.send(true);
        }
    );
    served.map_err(|e| Error::Unavailable(Box::new(e)))?;
    ran?;
    println!("stopped");
    Ok(())
}

/// While the broker is unreachable the scheduled health check cannot run:
/// every [`HEALTH_CHECK_INTERVAL`], when the broker does not answer, this
/// runs the check itself, which records the outage and alerts the
/// operators directly.
async fn watchdog(services: FlagshipServices, client: Client, shutdown: impl std::future::Future) {
    let checks = async {
        let handler = HealthCheckHandler::new(services);
        loop {
            tokio::time::sleep(HEALTH_CHECK_INTERVAL).await;
            if client.broker().ping().await.is_ok() {
                continue;
            }
            let run = JobRun::new(client.clone(), chrono::Utc::now());
            if let Err(e) = handler.process(HealthCheckJob {}, &run).await {
                tracing::error!(error = %e, "the broker is unreachable and the health check failed");
            }
        }
    };
    tokio::select! {
        () = checks => {}
        _ = shutdown => {}
    }
}

/// The host's name, for the default worker id.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
