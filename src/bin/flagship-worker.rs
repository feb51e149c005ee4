//! `flagship-worker`: the operators' command line (feature `cli`).
//!
//! Looks at a Redis or PostgreSQL broker's queues and dead-letter queue,
//! retries, deletes and purges dead jobs, checks health and exports JSON
//! Schemas. Tables for people by default, `--json` for scripts.
//!
//! ```text
//! flagship-worker --redis-url redis://127.0.0.1:6379 queues
//! flagship-worker --database-url postgres://app@127.0.0.1/app queues
//! flagship-worker dlq list --queue billing --kind send-invoice --since 24h
//! flagship-worker dlq show 01936f0e-...            # payload and every attempt
//! flagship-worker dlq retry 01936f0e-...
//! flagship-worker dlq retry-all --queue billing --kind send-invoice
//! flagship-worker dlq purge --older-than 30d
//! flagship-worker health
//! flagship-worker schemas export docs/schemas
//! ```

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use comfy_table::{presets, ContentArrangement, Table};
use flagship_worker::{
    broker::{postgres::PostgresBroker, redis::RedisBroker, QueueHistory, Resolution, Series, MAX_DEAD_PAGE},
    health::{BrokerHealth, HealthSource, HealthStatus},
    schema::pretty_json,
    Backend, Broker, DeadLetterQueue, DeadQuery, DeadSummary, Error, JobEnvelope, JobId, QueueName, SchemaRegistry,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

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
    /// Every queue's counts: ready, scheduled, active, dead, oldest ready
    /// job; with `--history`, what each queue did per minute or per hour.
    Queues(QueuesArgs),
    /// The dead-letter queue: list, show, retry, delete, purge.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Pings the broker and reports each queue; exits 1 when it is down.
    Health,
    /// JSON Schemas for producers in other languages.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
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
    /// Lists dead jobs, oldest first, queue by queue.
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
    /// Moves every dead job matching the filter back to ready.
    RetryAll {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Deletes one dead job.
    Delete(JobArgs),
    /// Deletes dead jobs dead-lettered longer ago than `--older-than`.
    Purge {
        /// An age such as `30d`, `12h`, `90min`, or an RFC 3339 time.
        #[arg(long, value_name = "AGE", value_parser = parse_when)]
        older_than: DateTime<Utc>,
        /// Only this queue (default: every queue).
        #[arg(long)]
        queue: Option<QueueName>,
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
    /// The job's id.
    id: JobId,
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
    history: Arc<dyn QueueHistory>,
    json: bool,
}

impl Target {
    fn new<B: Backend>(backend: Arc<B>, json: bool) -> Self {
        Target {
            broker: backend.clone(),
            dlq: backend.clone(),
            history: backend,
            json,
        }
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

#[tokio::main(flavor = "current_thread")]
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
    let target =
        match (&cli.redis_url, &cli.database_url) {
            (Some(url), None) => Target::new(Arc::new(RedisBroker::connect(url.as_str()).await?), cli.json),
            // An operators' tool never migrates: it reads the schema as it is.
            (None, Some(url)) => {
                let broker = PostgresBroker::builder(url.as_str())
                    .schema(cli.schema.as_str())
                    .max_connections(2)
                    .migrate(false)
                    .connect()
                    .await?;
                Target::new(Arc::new(broker), cli.json)
            }
            (Some(_), Some(_)) => return Err(Error::InvalidConfig(
                "two brokers given: pass either `--redis-url` (REDIS_URL) or `--database-url` (DATABASE_URL), not both"
                    .into(),
            )),
            (None, None) => {
                return Err(Error::InvalidConfig(
                    "no broker given: pass `--redis-url redis://host:6379` (or set REDIS_URL) or \
                 `--database-url postgres://user@host/database` (or set DATABASE_URL)"
                        .into(),
                ))
            }
        };
    match cli.command {
        Command::Queues(args) if args.history => queue_history(&target, &args).await,
        Command::Queues(args) => queues(&target, args.queue.as_ref()).await,
        Command::Health => health(&target).await,
        Command::Dlq { command } => dlq(&target, command).await,
        Command::Schemas { .. } => Ok(ExitCode::SUCCESS),
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
    let report = BrokerHealth::new(target.broker.clone()).latest().await?;
    if target.json {
        print_json(&report);
    } else {
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
    Ok(if report.status == HealthStatus::Down {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn dlq(target: &Target, command: DlqCommand) -> Result<ExitCode, Error> {
    match command {
        DlqCommand::List { filter, limit, cursor } => list(target, &filter.query(), cursor.as_deref(), limit).await,
        DlqCommand::Show(job) => show(target, job).await,
        DlqCommand::Retry(job) => act_on_one(target, job, Action::Retry).await,
        DlqCommand::Delete(job) => act_on_one(target, job, Action::Delete).await,
        DlqCommand::RetryAll { filter } => retry_all(target, &filter.query()).await,
        DlqCommand::Purge { older_than, queue } => purge(target, queue, older_than).await,
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
    let mut out = table(&["ID", "QUEUE", "KIND", "ATTEMPTS", "DEAD SINCE", "LAST ERROR"]);
    for job in &jobs {
        out.add_row(vec![
            job.id.to_string(),
            job.queue.to_string(),
            job.kind.clone(),
            job.attempts.to_string(),
            when(job.dead_lettered_at),
            shorten(job.last_error.as_deref().unwrap_or(""), 80),
        ]);
    }
    println!("{out}");
    if let Some(next) = page.next_cursor {
        eprintln!("more: add --cursor '{next}' for the next page");
    }
    Ok(ExitCode::SUCCESS)
}

/// Finds dead job `job.id` in its queue (or in every queue).
async fn find(target: &Target, job: &JobArgs) -> Result<JobEnvelope, Error> {
    let query = job.queue.clone().map_or_else(DeadQuery::all, DeadQuery::queue);
    query
        .find(&*target.broker, &*target.dlq, job.id)
        .await?
        .ok_or_else(|| Error::InvalidConfig(format!("job {} is not in the dead-letter queue", job.id)))
}

async fn show(target: &Target, job: JobArgs) -> Result<ExitCode, Error> {
    let job = find(target, &job).await?;
    if target.json {
        print_json(&job);
        return Ok(ExitCode::SUCCESS);
    }
    println!("job         {}", job.id);
    println!("queue       {}", job.queue);
    println!("kind        {}", job.kind);
    println!("enqueued    {}", when(Some(job.enqueued_at)));
    println!("dead since  {}", when(job.dead_lettered_at));
    if let Some(reason) = &job.dead_letter_reason {
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
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Retry,
    Delete,
}

async fn act_on_one(target: &Target, job: JobArgs, action: Action) -> Result<ExitCode, Error> {
    let queue = match &job.queue {
        Some(queue) => queue.clone(),
        None => find(target, &job).await?.queue,
    };
    let done = match action {
        Action::Retry => target.dlq.retry_dead(&queue, job.id).await?,
        Action::Delete => target.dlq.delete_dead(&queue, job.id).await?,
    };
    if !done {
        return Err(Error::InvalidConfig(format!(
            "job {} is not in the dead-letter queue of `{queue}`",
            job.id
        )));
    }
    let (key, text) = match action {
        Action::Retry => ("retried", "moved back to ready"),
        Action::Delete => ("deleted", "deleted"),
    };
    if target.json {
        print_json(&json!({ key: true, "queue": queue, "id": job.id }));
    } else {
        println!("job {} ({queue}) {text}", job.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Jobs retried per listing round.
const RETRY_BATCH: usize = 500;

/// Retries page by page so progress shows; each queue stops after the
/// number of jobs it had at the start, so jobs that die again at once are
/// not chased forever.
async fn retry_all(target: &Target, query: &DeadQuery) -> Result<ExitCode, Error> {
    let total = query.count(&*target.broker, &*target.dlq).await?;
    let bar = target.progress(total, "retrying");
    let mut retried = 0;
    for queue in query.queues(&*target.broker).await? {
        let filter = query.filter(queue.clone());
        let mut left = target.dlq.count_dead(&filter).await?;
        while left > 0 {
            let page = target
                .dlq
                .list_dead(&filter, None, RETRY_BATCH.min(left as usize))
                .await?;
            if page.jobs.is_empty() {
                break;
            }
            for job in page.jobs {
                left = left.saturating_sub(1);
                if target.dlq.retry_dead(&queue, job.id).await? {
                    retried += 1;
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    if target.json {
        print_json(&json!({ "retried": retried }));
    } else {
        println!("{retried} dead jobs moved back to ready");
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(target: &Target, queue: Option<QueueName>, older_than: DateTime<Utc>) -> Result<ExitCode, Error> {
    let query = queue
        .map_or_else(DeadQuery::all, DeadQuery::queue)
        .between(None, Some(older_than));
    let total = query.count(&*target.broker, &*target.dlq).await?;
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
            "{purged} dead jobs dead-lettered before {} deleted",
            older_than.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    Ok(ExitCode::SUCCESS)
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
