//! Live jobs, queues and workers: `jobs list|show|cancel|cancel-all`,
//! `pause`, `resume`, `workers` (on the broker's `JobControl`).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use flagship_worker::{
    broker::{CancelOutcome, JobDetail, JobState, LiveQuery, LiveSummary, MAX_JOB_PAGE},
    Error, QueueName,
};
use serde_json::json;

use super::{
    confirm::{count, Destructive},
    parse_when, print_json, shorten, table, when, Target,
};

/// `flagship-worker jobs ...`
#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// Lists live jobs (ready, scheduled, active), by run time over every
    /// queue; active ones with their worker, lease deadline and attempt.
    List {
        #[command(flatten)]
        filter: LiveFilter,
        /// How many to show (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=MAX_JOB_PAGE as u64))]
        limit: u64,
        /// Continue a listing where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One live job with its payload, lease and every attempt so far.
    Show(LiveJobArgs),
    /// Cancels one live job: a ready or scheduled one goes to the
    /// dead-letter queue ("cancelled by operator"); an active one's worker
    /// is asked to stop it.
    Cancel(LiveJobArgs),
    /// Cancels every live job matching the filter (asks first; `--dry-run`
    /// shows how many, `--yes` does not ask).
    CancelAll {
        #[command(flatten)]
        filter: LiveFilter,
        #[command(flatten)]
        go: Destructive,
    },
}

/// Which live jobs.
#[derive(Debug, Args)]
pub(crate) struct LiveFilter {
    /// Only this queue (default: every queue).
    #[arg(long)]
    queue: Option<QueueName>,
    /// Only this state: ready, scheduled or active (repeat for more; default: all three).
    #[arg(long, value_parser = parse_state)]
    state: Vec<JobState>,
    /// Only jobs of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only jobs due since then: an age such as `24h` or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    since: Option<DateTime<Utc>>,
    /// Only jobs due before then: an age such as `1h` or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    until: Option<DateTime<Utc>>,
}

fn parse_state(text: &str) -> Result<JobState, String> {
    text.parse().map_err(|e: Error| e.to_string())
}

impl LiveFilter {
    fn query(&self) -> LiveQuery {
        let mut query = self
            .queue
            .clone()
            .map_or_else(LiveQuery::all, LiveQuery::queue)
            .between(self.since, self.until);
        for state in &self.state {
            query = query.state(*state);
        }
        match &self.kind {
            Some(kind) => query.kind(kind.clone()),
            None => query,
        }
    }
}

/// One live job.
#[derive(Debug, Args)]
pub(crate) struct LiveJobArgs {
    /// The job's id, or enough of its start to name one job (at least 4 characters).
    id: String,
    /// Its queue (default: look in every queue).
    #[arg(long)]
    queue: Option<QueueName>,
}

pub(crate) async fn jobs(target: &Target, command: JobsCommand) -> Result<ExitCode, Error> {
    match command {
        JobsCommand::List { filter, limit, cursor } => list(target, &filter.query(), cursor.as_deref(), limit).await,
        JobsCommand::Show(job) => show(target, job).await,
        JobsCommand::Cancel(job) => cancel(target, job).await,
        JobsCommand::CancelAll { filter, go } => cancel_all(target, &filter.query(), go).await,
    }
}

async fn list(target: &Target, query: &LiveQuery, cursor: Option<&str>, limit: u64) -> Result<ExitCode, Error> {
    let page = query
        .list(&*target.broker, target.control()?, cursor, limit as usize)
        .await?;
    let jobs: Vec<LiveSummary> = page.jobs.iter().map(LiveSummary::from).collect();
    if target.json {
        print_json(&json!({ "jobs": jobs, "next_cursor": page.next_cursor }));
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        println!("no live jobs match");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = table(&[
        "ID",
        "QUEUE",
        "KIND",
        "STATE",
        "ATTEMPT",
        "RUN AT",
        "WORKER",
        "LEASE UNTIL",
    ]);
    for job in &jobs {
        let (worker, deadline) = match &job.lease {
            Some(lease) => (
                lease.worker.clone().unwrap_or_else(|| "—".into()),
                lease.deadline.format("%H:%M:%S UTC").to_string(),
            ),
            None => ("".into(), "".into()),
        };
        let state = if job.cancel_requested {
            format!("{} (cancelling)", job.state)
        } else {
            job.state.to_string()
        };
        out.add_row(vec![
            job.id.to_string(),
            job.queue.to_string(),
            shorten(&job.kind, 40),
            state,
            job.attempt.to_string(),
            when(Some(job.run_at)),
            worker,
            deadline,
        ]);
    }
    println!("{out}");
    if let Some(next) = page.next_cursor {
        eprintln!("more: add --cursor '{next}' for the next page");
    }
    Ok(ExitCode::SUCCESS)
}

async fn find(target: &Target, job: &LiveJobArgs) -> Result<flagship_worker::broker::LiveJob, Error> {
    let query = job.queue.clone().map_or_else(LiveQuery::all, LiveQuery::queue);
    query.resolve(&*target.broker, target.control()?, &job.id).await
}

async fn show(target: &Target, job: LiveJobArgs) -> Result<ExitCode, Error> {
    let job = find(target, &job).await?;
    let detail = JobDetail::from(&job);
    if target.json {
        print_json(&detail);
        return Ok(ExitCode::SUCCESS);
    }
    super::print_detail(&detail);
    Ok(ExitCode::SUCCESS)
}

async fn cancel(target: &Target, job: LiveJobArgs) -> Result<ExitCode, Error> {
    let found = find(target, &job).await?;
    let (queue, id) = (found.envelope.queue.clone(), found.envelope.id);
    let outcome = target.control()?.cancel(&queue, id).await?;
    let text = match outcome {
        CancelOutcome::DeadLettered => "cancelled: moved to the dead-letter queue",
        CancelOutcome::Signalled => {
            "is running: its worker was asked to stop it (it ends in the dead-letter queue unless it finishes first)"
        }
        _ => {
            return Err(Error::Missing(format!(
                "job {id} is no longer live in `{queue}` (it finished or died meanwhile)"
            )))
        }
    };
    if target.json {
        print_json(&json!({ "outcome": outcome, "queue": queue, "id": id }));
    } else {
        println!("job {id} ({queue}) {text}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn cancel_all(target: &Target, query: &LiveQuery, go: Destructive) -> Result<ExitCode, Error> {
    let control = target.control()?;
    let counts = query.counts(&*target.broker, control).await?;
    let total: u64 = counts.iter().map(|(_, _, n)| n).sum();
    if go.dry_run {
        if target.json {
            let queues: Vec<_> = counts
                .iter()
                .map(|(queue, state, n)| json!({ "queue": queue, "state": state, "count": n }))
                .collect();
            print_json(&json!({ "dry_run": true, "would_cancel": total, "queues": queues }));
        } else if total == 0 {
            println!("no live jobs match; nothing to cancel");
        } else {
            let mut out = table(&["QUEUE", "STATE", "JOBS"]);
            for (queue, state, n) in &counts {
                out.add_row(vec![queue.to_string(), state.to_string(), n.to_string()]);
            }
            println!("{out}");
            println!("would cancel {} (dry run: nothing changed)", count(total, "live job"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if total > 0 && !go.confirm(&format!("cancel {}", count(total, "live job"))) {
        return Ok(ExitCode::FAILURE);
    }
    let tally = query.cancel_all(&*target.broker, control).await?;
    if target.json {
        print_json(&tally);
    } else {
        println!(
            "{} moved to the dead-letter queue, {} running asked to stop",
            count(tally.dead_lettered, "job"),
            count(tally.signalled, "job")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `pause QUEUE` / `resume QUEUE`.
pub(crate) async fn pause(target: &Target, queue: QueueName, pause: bool) -> Result<ExitCode, Error> {
    super::known_queue(target, &queue).await?;
    let control = target.control()?;
    let changed = if pause {
        control.pause(&queue).await?
    } else {
        control.resume(&queue).await?
    };
    if target.json {
        print_json(&json!({ "queue": queue, "paused": pause, "changed": changed }));
    } else {
        let text = match (pause, changed) {
            (true, true) => "paused: workers reserve nothing from it until `resume` (enqueue still works)",
            (true, false) => "was already paused",
            (false, true) => "resumed",
            (false, false) => "was not paused",
        };
        println!("queue {queue} {text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `workers`: every registered worker, the gone ones marked.
pub(crate) async fn workers(target: &Target) -> Result<ExitCode, Error> {
    let workers = target.control()?.workers().await?;
    if target.json {
        print_json(&workers);
        return Ok(ExitCode::SUCCESS);
    }
    if workers.is_empty() {
        println!("no worker has registered");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = table(&[
        "WORKER",
        "STATUS",
        "HOST",
        "PID",
        "QUEUES",
        "CONCURRENCY",
        "IN FLIGHT",
        "STARTED",
        "LAST SEEN",
    ]);
    for w in &workers {
        let queues: Vec<&str> = w.info.queues.iter().map(QueueName::as_str).collect();
        out.add_row(vec![
            w.info.id.clone(),
            if w.gone { "gone".into() } else { "live".into() },
            w.info.host.clone(),
            w.info.pid.to_string(),
            queues.join(", "),
            w.info.concurrency.to_string(),
            w.info.in_flight.to_string(),
            when(Some(w.info.started_at)),
            when(Some(w.last_seen)),
        ]);
    }
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}
