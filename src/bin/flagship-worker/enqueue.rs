//! `flagship-worker enqueue QUEUE KIND --payload JSON`.
//!
//! A kind this build knows (the FlagShip kinds, with the `flagship`
//! feature) is checked like `Client::enqueue_raw` does: its queue and its
//! JSON Schema; an invalid payload is refused and nothing is enqueued. Any
//! other kind is enqueued as given, with a warning: the command cannot know
//! an application's kinds, and the worker checks every job it reserves
//! (an unregistered kind or an invalid payload goes to the dead-letter
//! queue with the reason, it never loops).

use std::{process::ExitCode, time::Duration};

use chrono::Utc;
use clap::Args;
use flagship_worker::{EnqueueOptions, EnqueueOutcome, Error, JobEnvelope, QueueName, SchemaRegistry};
use serde_json::{json, Value};

use super::{known_kinds, print_json, Target};

/// The arguments of `enqueue`.
#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    /// The queue to put the job on.
    queue: QueueName,
    /// The job's kind.
    kind: String,
    /// The payload as JSON text, or `@FILE` to read it from a file.
    #[arg(long, value_name = "JSON")]
    payload: String,
    /// Run no earlier than this long from now (`30s`, `5m`, `2h`).
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    /// An idempotency key: a job with the same key on this queue is not enqueued twice.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Retries after the first attempt, instead of the queue's policy.
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
    /// Reservation priority in the queue, -10 (last) to 10 (first); 0 by default.
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    priority: Option<i8>,
}

impl EnqueueArgs {
    fn options(&self) -> EnqueueOptions {
        let mut options = EnqueueOptions::new();
        if let Some(delay) = self.delay {
            options = options.delay(delay);
        }
        if let Some(key) = &self.idempotency_key {
            options = options.idempotency_key(key.clone());
        }
        if let Some(retries) = self.max_retries {
            options = options.max_retries(retries);
        }
        if let Some(priority) = self.priority {
            options = options.priority(priority);
        }
        options
    }

    fn payload(&self) -> Result<Value, Error> {
        let text = match self.payload.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Error::InvalidConfig(format!("cannot read the payload from `{path}`: {e}")))?,
            None => self.payload.clone(),
        };
        serde_json::from_str(&text).map_err(|source| Error::MalformedPayload {
            kind: self.kind.clone(),
            source,
        })
    }
}

/// Builds the job (checked when its kind is known) and enqueues it.
pub(crate) async fn enqueue(target: &Target, args: EnqueueArgs) -> Result<ExitCode, Error> {
    let payload = args.payload()?;
    let known = known_kinds()?;
    let checked = match known.get(&args.kind) {
        Some(kind) => {
            if *kind.queue() != args.queue {
                return Err(Error::InvalidConfig(format!(
                    "job kind `{}` runs on queue `{}`, not `{}`; enqueue it there (workers of `{}` would not handle it)",
                    args.kind,
                    kind.queue(),
                    args.queue,
                    args.queue
                )));
            }
            known.validate(&args.kind, &payload)?;
            true
        }
        None => {
            // Any schema: the kind's name and the payload's depth and size are still checked.
            let scratch = SchemaRegistry::new();
            scratch.register_raw(&args.kind, args.queue.clone(), json!({}))?;
            scratch.validate(&args.kind, &payload)?;
            eprintln!(
                "warning: job kind `{}` is not one this command knows, so its payload was not checked against a \
                 schema; a worker that does not handle it dead-letters it with the reason",
                args.kind
            );
            false
        }
    };
    let now = Utc::now();
    let envelope =
        JobEnvelope::new(args.kind.as_str(), args.queue.clone(), payload, now).with_options(&args.options(), now)?;
    let outcome = target
        .broker
        .enqueue(vec![envelope])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Backend("the broker answered an enqueue of one job with no outcome".into()))?;
    let (enqueued, id) = match outcome {
        EnqueueOutcome::Enqueued(id) => (true, id),
        EnqueueOutcome::Duplicate(id) => (false, id),
    };
    if target.json {
        print_json(&json!({
            "enqueued": enqueued,
            "id": id,
            "queue": args.queue,
            "kind": args.kind,
            "checked": checked,
        }));
    } else if enqueued {
        println!("job {id} ({}) enqueued on {}", args.kind, args.queue);
    } else {
        println!(
            "not enqueued: job {id} on {} already holds idempotency key `{}`",
            args.queue,
            args.idempotency_key.as_deref().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
