//! `flagship-worker`: the operators' command line (feature `cli`).
//!
//! Looks at a Redis or PostgreSQL broker's queues, live jobs, workers and
//! dead-letter queue; pauses and resumes queues, cancels live jobs,
//! retries, deletes and purges dead jobs, enqueues a job, checks health and
//! exports JSON Schemas. Tables for people by default, `--json` for
//! scripts. Bulk commands that change things take `--dry-run` and ask
//! first (`--yes` in scripts). Job ids may be shortened to an unambiguous
//! prefix.
//!
//! ```text
//! flagship-worker --redis-url redis://127.0.0.1:6379 queues
//! flagship-worker --database-url postgres://app@127.0.0.1/app queues
//! flagship-worker dlq list --queue billing --kind send-invoice --since 24h
//! flagship-worker dlq show 01936f0e-...            # payload and every attempt
//! flagship-worker dlq retry 01936f0e-...
//! flagship-worker dlq retry-all --queue billing --kind send-invoice
//! flagship-worker dlq purge --older-than 30d --dry-run
//! flagship-worker jobs list --state active          # owner, lease deadline, attempt
//! flagship-worker jobs cancel 01936f0e
//! flagship-worker jobs cancel-all --queue billing --kind send-invoice --yes
//! flagship-worker pause billing                     # and `resume billing`
//! flagship-worker workers
//! flagship-worker enqueue billing send-invoice --payload '{"order": 42}'
//! flagship-worker health
//! flagship-worker schemas export docs/schemas
//! flagship-worker run                              # the FlagShip worker; settings from FLAGSHIP_* variables
//! ```

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use comfy_table::{presets, ContentArrangement, Table};
use flagship_worker::{
    broker::{postgres::PostgresBroker, redis::RedisBroker, QueueHistory, Resolution, Series, MAX_DEAD_PAGE},
    health::{BrokerHealth, HealthCheck, HealthReport, HealthSource, HealthStatus},
    schema::pretty_json,
    Backend, Broker, DeadLetterQueue, DeadQuery, DeadSummary, Error, JobControl, JobDetail, JobEnvelope, QueueName,
    SchemaRegistry,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

#[path = "flagship-worker/confirm.rs"]
mod confirm;
#[path = "flagship-worker/enqueue.rs"]
mod enqueue;
#[path = "flagship-worker/live.rs"]
mod live;
#[path = "flagship-worker/run.rs"]
mod run;

use confirm::{count, Destructive};

/// Inspect and repair the queues of a flagship-worker Redis or PostgreSQL broker.
#[derive(Debug, Parser)]
#[command(name = "flagship-worker", version)]
struct Cli {
    /// The broker's Redis URL (`redis://host:port`).
    #[arg(long, env = "REDIS_URL", hide_env_values = true, global = true, value_name = "URL")]
    redis_url: Option<String>,

    /// The broker's PostgreSQL URL (`postgres://user@host/database`).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        global = true,
        value_name = "URL"
    )]
    database_url: Option<String>,

    /// The schema of the PostgreSQL broker's tables.
    #[arg(long, env = "FLAGSHIP_SCHEMA", global = true, default_value = flagship_worker::broker::postgres::DEFAULT_SCHEMA)]
    schema: String,

    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every queue's counts (ready, scheduled, active, dead, oldest ready
    /// job) and whether it is paused; with `--history`, what each queue did
    /// per minute or per hour.
    Queues(QueuesArgs),
    /// The dead-letter queue: list, show, retry, delete, purge.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Pings the broker and reports each queue; exits 1 when it is down.
    Health,
    /// Live jobs (ready, scheduled, active): list, show, cancel.
    Jobs {
        #[command(subcommand)]
        command: live::JobsCommand,
    },
    /// Stops workers from reserving a queue's jobs (enqueue still works)
    /// until `resume`; kept by the broker across worker restarts.
    Pause {
        /// The queue.
        queue: QueueName,
    },
    /// Lets workers reserve a paused queue's jobs again.
    Resume {
        /// The queue.
        queue: QueueName,
    },
    /// The registered workers: host, pid, queues, concurrency, jobs in
    /// flight, last heartbeat; those that stopped heartbeating marked gone.
    Workers,
    /// Puts one job on a queue. A kind this build knows (the FlagShip
    /// kinds) is checked against its queue and schema first; any other
    /// kind is enqueued unchecked, with a warning.
    Enqueue(enqueue::EnqueueArgs),
    /// JSON Schemas for producers in other languages.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
    /// Runs the FlagShip worker: every FlagShip queue with its schedules,
    /// and the admin server, until SIGTERM or SIGINT.
    Run(Box<run::RunArgs>),
}

#[derive(Debug, Args)]
struct QueuesArgs {
    /// Print each queue's history instead: completed, failed, dead-lettered,
    /// ready depth, oldest ready age and start latency per bucket (UTC).
    #[arg(long)]
    history: bool,
    /// With `--history`: `minute` (kept 24 h) or `hour` (kept 30 days).
    #[arg(long, default_value = "minute", requires = "history")]
    resolution: Resolution,
    /// With `--history`: how many of the most recent buckets (default: 60
    /// minutes, or 720 hours).
    #[arg(long, requires = "history", value_parser = clap::value_parser!(u32).range(1..))]
    buckets: Option<u32>,
    /// Only this queue (default: every queue).
    #[arg(long)]
    queue: Option<QueueName>,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Lists dead jobs, oldest dead-lettered first over every queue.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// How many to show (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=MAX_DEAD_PAGE as u64))]
        limit: u64,
        /// Continue a listing where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One dead job with its payload and every attempt.
    Show(JobArgs),
    /// Moves one dead job back to ready (its history is kept).
    Retry(JobArgs),
    /// Moves every dead job matching the filter back to ready (asks first;
    /// `--dry-run` shows how many, `--yes` does not ask).
    RetryAll {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        go: Destructive,
    },
    /// Deletes one dead job.
    Delete(JobArgs),
    /// Deletes dead jobs dead-lettered longer ago than `--older-than`
    /// (asks first; `--dry-run` shows how many, `--yes` does not ask).
    Purge {
        /// An age such as `30d`, `12h`, `90min`, or an RFC 3339 time.
        #[arg(long, value_name = "AGE", value_parser = parse_when)]
        older_than: DateTime<Utc>,
        /// Only this queue (default: every queue).
        #[arg(long)]
        queue: Option<QueueName>,
        #[command(flatten)]
        go: Destructive,
    },
}

#[derive(Debug, Subcommand)]
enum SchemasCommand {
    /// Writes the job envelope's schema (`envelope.json`) and one
    /// `{kind}.json` per job kind this build knows (the FlagShip kinds in
    /// builds with the `flagship` feature), each naming its kind and queue,
    /// to DIR. An application exports its own kinds with
    /// `SchemaRegistry::export` (see docs/interop.md).
    Export {
        /// Where to write the files (created if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Only this queue (default: every queue).
    #[arg(long)]
    queue: Option<QueueName>,
    /// Only jobs of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only jobs dead-lettered since then: an age such as `24h` or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    since: Option<DateTime<Utc>>,
    /// Only jobs dead-lettered before then: an age such as `1h` or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    until: Option<DateTime<Utc>>,
}

impl FilterArgs {
    fn query(&self) -> DeadQuery {
        let query = self
            .queue
            .clone()
            .map_or_else(DeadQuery::all, DeadQuery::queue)
            .between(self.since, self.until);
        match &self.kind {
            Some(kind) => query.kind(kind.clone()),
            None => query,
        }
    }
}

#[derive(Debug, Args)]
struct JobArgs {
    /// The job's id, or enough of its start to name one job (at least 4
    /// characters, as `git` takes commits).
    id: String,
    /// Its queue (default: look in every queue).
    #[arg(long)]
    queue: Option<QueueName>,
}

/// An RFC 3339 time, or an age (`30d`, `12h`) counted back from now.
fn parse_when(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is neither an age such as `30d` or `12h` nor an RFC 3339 time: {e}"))?;
    chrono::TimeDelta::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(|| format!("`{text}` is too long ago"))
}

/// The broker the commands act on, as the core traits.
struct Target {
    broker: Arc<dyn Broker>,
    dlq: Arc<dyn DeadLetterQueue>,
    control: Arc<dyn JobControl>,
    history: Arc<dyn QueueHistory>,
    json: bool,
}

impl Target {
    fn new<B: Backend>(backend: Arc<B>, json: bool) -> Self {
        Target {
            broker: backend.clone(),
            dlq: backend.clone(),
            control: backend.clone(),
            history: backend,
            json,
        }
    }

    /// The broker's live-job side.
    fn control(&self) -> Result<&dyn JobControl, Error> {
        Ok(&*self.control)
    }

    fn progress(&self, total: u64, what: &str) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if self.json {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what.to_owned());
        bar
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    if let Command::Schemas {
        command: SchemasCommand::Export { dir },
    } = &cli.command
    {
        return export_schemas(dir, cli.json);
    }
    if let Command::Run(args) = cli.command {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
            .init();
        return run::run(*args).await.map(|()| ExitCode::SUCCESS);
    }
    let target = match connect(&cli).await {
        Ok(target) => target,
        // Nothing to ask: the broker is down, and `health` says so.
        Err(e @ (Error::Unavailable(_) | Error::Backend(_))) if matches!(cli.command, Command::Health) => {
            let report = HealthReport::new(
                Utc::now(),
                vec![HealthCheck::new("broker", HealthStatus::Down, e.to_string())],
            );
            print_health(&report, cli.json);
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e),
    };
    match cli.command {
        Command::Queues(args) if args.history => queue_history(&target, &args).await,
        Command::Queues(args) => queues(&target, args.queue.as_ref()).await,
        Command::Health => health(&target).await,
        Command::Dlq { command } => dlq(&target, command).await,
        Command::Enqueue(args) => enqueue::enqueue(&target, args).await,
        Command::Jobs { command } => live::jobs(&target, command).await,
        Command::Pause { queue } => live::pause(&target, queue, true).await,
        Command::Resume { queue } => live::pause(&target, queue, false).await,
        Command::Workers => live::workers(&target).await,
        Command::Schemas { .. } | Command::Run(_) => Ok(ExitCode::SUCCESS),
    }
}

/// Connects to the broker the flags name.
async fn connect(cli: &Cli) -> Result<Target, Error> {
    match (&cli.redis_url, &cli.database_url) {
        (Some(url), None) => Ok(Target::new(
            Arc::new(RedisBroker::connect(url.as_str()).await?),
            cli.json,
        )),
        // An operators' tool never migrates: it reads the schema as it is.
        (None, Some(url)) => {
            let broker = PostgresBroker::builder(url.as_str())
                .schema(cli.schema.as_str())
                .max_connections(2)
                .migrate(false)
                .connect()
                .await?;
            Ok(Target::new(Arc::new(broker), cli.json))
        }
        (Some(_), Some(_)) => Err(Error::InvalidConfig(
            "two brokers given: pass either `--redis-url` (REDIS_URL) or `--database-url` (DATABASE_URL), not both"
                .into(),
        )),
        (None, None) => Err(Error::InvalidConfig(
            "no broker given: pass `--redis-url redis://host:6379` (or set REDIS_URL) or \
                 `--database-url postgres://user@host/database` (or set DATABASE_URL)"
                .into(),
        )),
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    table
}

fn when(at: Option<DateTime<Utc>>) -> String {
    let Some(at) = at else { return "—".into() };
    let secs = (Utc::now() - at).num_seconds().max(0) as u64;
    let ago = humantime::format_duration(Duration::from_secs(secs)).to_string();
    let ago = ago.split(' ').take(2).collect::<Vec<_>>().join(" ");
    format!("{} ({ago} ago)", at.format("%Y-%m-%d %H:%M:%S UTC"))
}

fn shorten(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// The queues a command covers: the one asked for, or every queue in name order.
async fn queue_names(target: &Target, only: Option<&QueueName>) -> Result<Vec<QueueName>, Error> {
    if let Some(queue) = only {
        return Ok(vec![queue.clone()]);
    }
    let mut names = target.broker.queues().await?;
    names.sort();
    Ok(names)
}

async fn queues(target: &Target, only: Option<&QueueName>) -> Result<ExitCode, Error> {
    let names = queue_names(target, only).await?;
    let mut rows = Vec::new();
    for queue in names {
        let stats = target.broker.stats(&queue).await?;
        rows.push((queue, stats));
    }
    if target.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(queue, stats)| {
                let mut row = serde_json::to_value(stats).unwrap_or_default();
                row["queue"] = json!(queue);
                row
            })
            .collect();
        print_json(&rows);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no queues yet");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = table(&[
        "QUEUE",
        "STATUS",
        "READY",
        "SCHEDULED",
        "ACTIVE",
        "DEAD",
        "OLDEST READY",
        "COMPLETED",
        "RETRIED",
        "DEAD-LETTERED",
    ]);
    for (queue, s) in rows {
        let oldest = s
            .oldest_ready_age_ms
            .map_or_else(|| "—".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
        out.add_row(vec![
            queue.to_string(),
            if s.paused { "paused".into() } else { "running".into() },
            s.ready.to_string(),
            s.scheduled.to_string(),
            s.active.to_string(),
            s.dead.to_string(),
            oldest,
            s.completed.to_string(),
            s.retried.to_string(),
            s.dead_lettered.to_string(),
        ]);
    }
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

async fn queue_history(target: &Target, args: &QueuesArgs) -> Result<ExitCode, Error> {
    let count = args.buckets.unwrap_or(match args.resolution {
        Resolution::Minute => 60,
        Resolution::Hour => 720,
    });
    let mut all = Vec::new();
    for queue in queue_names(target, args.queue.as_ref()).await? {
        let series = target.history.history(&queue, args.resolution, count).await?;
        all.push((queue, series));
    }
    if target.json {
        let rows: Vec<_> = all.iter().map(|(queue, series)| series.to_json(Some(queue))).collect();
        print_json(&rows);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("no queues yet");
        return Ok(ExitCode::SUCCESS);
    }
    for (queue, series) in &all {
        print_history(queue, series);
    }
    Ok(ExitCode::SUCCESS)
}

/// One queue's history as a table of the buckets where something was
/// recorded.
fn print_history(queue: &QueueName, series: &Series) {
    let format = match series.resolution {
        Resolution::Minute => "%Y-%m-%d %H:%M",
        Resolution::Hour => "%Y-%m-%d %H:00",
    };
    let mut out = table(&[
        "TIME (UTC)",
        "COMPLETED",
        "FAILED",
        "DEAD-LETTERED",
        "READY",
        "OLDEST READY",
        "P50",
        "P95",
        "P99",
    ]);
    let dash = || "—".to_owned();
    let mut empty = 0;
    for b in &series.buckets {
        if b.completed == 0 && b.failed() == 0 && b.ready.is_none() && b.latency.is_empty() {
            empty += 1;
            continue;
        }
        let p = b.percentiles();
        let ms = |v: Option<u64>| v.map_or_else(dash, |ms| format!("≤{ms} ms"));
        out.add_row(vec![
            b.start.format(format).to_string(),
            b.completed.to_string(),
            b.failed().to_string(),
            b.dead_lettered.to_string(),
            b.ready.map_or_else(dash, |r| r.to_string()),
            b.oldest_ready_age_ms
                .map_or_else(dash, |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            ms(p.map(|p| p.p50_ms)),
            ms(p.map(|p| p.p95_ms)),
            ms(p.map(|p| p.p99_ms)),
        ]);
    }
    let totals = series.totals();
    println!(
        "{queue}: last {} {}s: {} completed, {} failed ({} dead-lettered)",
        series.buckets.len(),
        series.resolution,
        totals.completed,
        totals.failed(),
        totals.dead_lettered
    );
    if empty == series.buckets.len() {
        println!("  nothing recorded\n");
        return;
    }
    println!("{out}");
    if empty > 0 {
        println!("({empty} buckets with nothing recorded not shown)\n");
    }
}

async fn health(target: &Target) -> Result<ExitCode, Error> {
    let report = BrokerHealth::new(target.broker.clone())
        .dead_letters(target.dlq.clone())
        .latest()
        .await?;
    print_health(&report, target.json);
    Ok(if report.status == HealthStatus::Down {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_health(report: &HealthReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    println!("{} (checked {})", report.status.as_str(), when(Some(report.checked_at)));
    let mut out = table(&["CHECK", "STATUS", "DETAIL"]);
    for check in &report.checks {
        out.add_row(vec![
            check.name.clone(),
            check.status.as_str().to_owned(),
            check.message.clone(),
        ]);
    }
    println!("{out}");
}

async fn dlq(target: &Target, command: DlqCommand) -> Result<ExitCode, Error> {
    match command {
        DlqCommand::List { filter, limit, cursor } => list(target, &filter.query(), cursor.as_deref(), limit).await,
        DlqCommand::Show(job) => show(target, job).await,
        DlqCommand::Retry(job) => act_on_one(target, job, Action::Retry).await,
        DlqCommand::Delete(job) => act_on_one(target, job, Action::Delete).await,
        DlqCommand::RetryAll { filter, go } => retry_all(target, &filter.query(), go).await,
        DlqCommand::Purge { older_than, queue, go } => purge(target, queue, older_than, go).await,
    }
}

async fn list(target: &Target, query: &DeadQuery, cursor: Option<&str>, limit: u64) -> Result<ExitCode, Error> {
    let page = query
        .list(&*target.broker, &*target.dlq, cursor, limit as usize)
        .await?;
    let jobs: Vec<DeadSummary> = page.jobs.iter().map(DeadSummary::from).collect();
    if target.json {
        print_json(&json!({ "jobs": jobs, "next_cursor": page.next_cursor }));
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        println!("no dead jobs match");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = table(&["ID", "QUEUE", "KIND", "ATTEMPTS", "DEAD SINCE", "REASON"]);
    for job in &jobs {
        out.add_row(vec![
            job.id.to_string(),
            job.queue.to_string(),
            job.kind.clone(),
            job.attempts.to_string(),
            when(job.dead_lettered_at),
            shorten(job.reason.as_deref().unwrap_or(""), 80),
        ]);
    }
    println!("{out}");
    if let Some(next) = page.next_cursor {
        eprintln!("more: add --cursor '{next}' for the next page");
    }
    Ok(ExitCode::SUCCESS)
}

/// Finds the dead job `job.id` names (an id or an unambiguous prefix) in
/// its queue (or in every queue).
async fn find(target: &Target, job: &JobArgs) -> Result<JobEnvelope, Error> {
    let query = job.queue.clone().map_or_else(DeadQuery::all, DeadQuery::queue);
    query.resolve(&*target.broker, &*target.dlq, &job.id).await
}

async fn show(target: &Target, job: JobArgs) -> Result<ExitCode, Error> {
    let detail = JobDetail::from(&find(target, &job).await?);
    if target.json {
        print_json(&detail);
    } else {
        print_detail(&detail);
    }
    Ok(ExitCode::SUCCESS)
}

/// One job for people: facts, payload, attempts.
fn print_detail(job: &JobDetail) {
    println!("job         {}", job.id);
    println!("queue       {}", job.queue);
    println!("kind        {}", job.kind);
    println!("enqueued    {}", when(Some(job.enqueued_at)));
    if job.dead_lettered_at.is_none() {
        println!("runs at     {}", when(Some(job.run_at)));
    }
    if let Some(at) = job.dead_lettered_at {
        println!("dead since  {}", when(Some(at)));
    }
    if let Some(reason) = &job.reason {
        println!("reason      {reason}");
    }
    if let Some(key) = &job.idempotency_key {
        println!("idempotency {key}");
    }
    println!("\npayload:\n{}", pretty_json(&job.payload).trim_end());
    println!("\nattempts ({}):", job.attempts.len());
    let mut out = table(&["#", "STARTED", "TOOK", "WORKER", "ERROR"]);
    for (n, attempt) in job.attempts.iter().enumerate() {
        out.add_row(vec![
            (n + 1).to_string(),
            attempt.started_at.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
            format!("{} ms", (attempt.finished_at - attempt.started_at).num_milliseconds()),
            attempt.worker.clone().unwrap_or_default(),
            attempt.error.clone().unwrap_or_default(),
        ]);
    }
    println!("{out}");
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Retry,
    Delete,
}

async fn act_on_one(target: &Target, job: JobArgs, action: Action) -> Result<ExitCode, Error> {
    let found = find(target, &job).await?;
    let (queue, id) = (found.queue, found.id);
    let done = match action {
        Action::Retry => target.dlq.retry_dead(&queue, id).await?,
        Action::Delete => target.dlq.delete_dead(&queue, id).await?,
    };
    if !done {
        return Err(Error::Missing(format!(
            "job {id} is no longer in the dead-letter queue of `{queue}` (retried or deleted meanwhile)"
        )));
    }
    let (key, text) = match action {
        Action::Retry => ("retried", "moved back to ready"),
        Action::Delete => ("deleted", "deleted"),
    };
    if target.json {
        print_json(&json!({ key: true, "queue": queue, "id": id }));
    } else {
        println!("job {id} ({queue}) {text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Jobs retried per listing round.
const RETRY_BATCH: usize = 500;

/// Retries page by page so progress shows, oldest first, and stops after
/// the number of jobs matching at the start, so jobs that die again at once
/// are not chased forever. Jobs that cannot be retried as they are (their
/// record does not decode) are skipped and counted.
async fn retry_all(target: &Target, query: &DeadQuery, go: Destructive) -> Result<ExitCode, Error> {
    let counts = per_queue(target, query).await?;
    let total = counts.iter().map(|(_, n)| n).sum();
    if go.dry_run {
        return Ok(would(target, "retry", &counts, json!({})));
    }
    if total > 0 && !go.confirm(&format!("retry {} of {}", count(total, "dead job"), scope(query))) {
        return Ok(ExitCode::FAILURE);
    }
    let bar = target.progress(total, "retrying");
    let (mut retried, mut unretryable, mut left) = (0, 0, total);
    let mut cursor: Option<String> = None;
    while left > 0 {
        let page = query
            .list(&*target.broker, &*target.dlq, cursor.as_deref(), RETRY_BATCH)
            .await?;
        for job in page.jobs.iter().take(left as usize) {
            left -= 1;
            match target.dlq.retry_dead(&job.queue, job.id).await {
                Ok(true) => retried += 1,
                Ok(false) => {}
                Err(Error::NotRetryable { .. }) => unretryable += 1,
                Err(e) => return Err(e),
            }
            bar.inc(1);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    bar.finish_and_clear();
    if target.json {
        print_json(&json!({ "retried": retried, "not_retryable": unretryable }));
    } else {
        println!("{} moved back to ready", count(retried, "dead job"));
        if unretryable > 0 {
            println!(
                "{} left dead: their records cannot be decoded as jobs (see `dlq show`; delete them)",
                count(unretryable, "job")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(
    target: &Target,
    queue: Option<QueueName>,
    older_than: DateTime<Utc>,
    go: Destructive,
) -> Result<ExitCode, Error> {
    let query = queue
        .map_or_else(DeadQuery::all, DeadQuery::queue)
        .between(None, Some(older_than));
    let counts = per_queue(target, &query).await?;
    let total = counts.iter().map(|(_, n)| n).sum();
    if go.dry_run {
        return Ok(would(target, "purge", &counts, json!({ "older_than": older_than })));
    }
    let what = format!(
        "delete {} of {} dead-lettered before {}",
        count(total, "dead job"),
        scope(&query),
        older_than.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if total > 0 && !go.confirm(&what) {
        return Ok(ExitCode::FAILURE);
    }
    let bar = target.progress(total, "purging");
    let mut purged = 0;
    for queue in query.queues(&*target.broker).await? {
        let n = target.dlq.purge_dead(&queue, older_than).await?;
        purged += n;
        bar.inc(n);
    }
    bar.finish_and_clear();
    if target.json {
        print_json(&json!({ "purged": purged, "older_than": older_than }));
    } else {
        println!(
            "{} dead-lettered before {} deleted",
            count(purged, "dead job"),
            older_than.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How many dead jobs `query` matches in each queue it covers (queues
/// with none left out).
async fn per_queue(target: &Target, query: &DeadQuery) -> Result<Vec<(QueueName, u64)>, Error> {
    let mut counts = Vec::new();
    for queue in query.queues(&*target.broker).await? {
        let n = target.dlq.count_dead(&query.filter(queue.clone())).await?;
        if n > 0 {
            counts.push((queue, n));
        }
    }
    Ok(counts)
}

/// The queues and kind a query covers, in words.
fn scope(query: &DeadQuery) -> String {
    let queues = match &query.queue {
        Some(queue) => format!("queue `{queue}`"),
        None => "every queue".to_owned(),
    };
    match &query.kind {
        Some(kind) => format!("{queues}, kind `{kind}`"),
        None => queues,
    }
}

/// What a bulk action (`retry`, `purge`) would do: per-queue counts and the
/// total, changing nothing (a dry run, or nothing matched). `extra` adds
/// fields to the JSON.
fn would(target: &Target, action: &str, counts: &[(QueueName, u64)], mut extra: serde_json::Value) -> ExitCode {
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    if target.json {
        extra["dry_run"] = json!(true);
        extra[format!("would_{action}")] = json!(total);
        extra["queues"] = counts
            .iter()
            .map(|(queue, n)| json!({ "queue": queue, "count": n }))
            .collect();
        print_json(&extra);
        return ExitCode::SUCCESS;
    }
    if total == 0 {
        println!("no dead jobs match; nothing to {action}");
        return ExitCode::SUCCESS;
    }
    let mut out = table(&["QUEUE", "DEAD JOBS"]);
    for (queue, n) in counts {
        out.add_row(vec![queue.to_string(), n.to_string()]);
    }
    println!("{out}");
    println!("would {action} {} (dry run: nothing changed)", count(total, "dead job"));
    ExitCode::SUCCESS
}

/// Refuses a queue the broker has never seen a job for.
async fn known_queue(target: &Target, queue: &QueueName) -> Result<(), Error> {
    DeadQuery::queue(queue.clone()).queues(&*target.broker).await.map(drop)
}

/// The job kinds this build knows: FlagShip's, with the `flagship` feature.
fn known_kinds() -> Result<SchemaRegistry, Error> {
    let registry = SchemaRegistry::new();
    #[cfg(feature = "flagship")]
    flagship_worker::flagship::register_kinds(&registry)?;
    Ok(registry)
}

fn export_schemas(dir: &std::path::Path, json_out: bool) -> Result<ExitCode, Error> {
    let io = |e: std::io::Error| Error::InvalidConfig(format!("cannot write schemas to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let envelope = dir.join("envelope.json");
    std::fs::write(&envelope, pretty_json(&JobEnvelope::json_schema())).map_err(io)?;
    let mut written = vec![envelope];
    written.extend(known_kinds()?.export(dir).map_err(io)?);
    if json_out {
        print_json(&written);
    } else {
        for path in &written {
            println!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
