//! The command line shared by the demo workers (`redis_worker`,
//! `postgres_worker`): what to produce, how to work, and when to stop.

use std::time::Duration;

/// The demo worker's flags (see the examples' docs).
#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) produce: u64,
    pub(crate) work: bool,
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) handler: Duration,
    pub(crate) retry: Duration,
    pub(crate) run_for: Option<Duration>,
    pub(crate) worker_id: Option<String>,
}

/// Reads the flags from the command line.
pub(crate) fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        produce: 0,
        work: false,
        concurrency: 16,
        lease: Duration::from_secs(30),
        handler: Duration::ZERO,
        retry: Duration::from_secs(1),
        run_for: None,
        worker_id: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let ms = |v: String| v.parse().map(Duration::from_millis).map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--produce" => args.produce = value()?.parse().map_err(|e| format!("--produce: {e}"))?,
            "--work" => args.work = true,
            "--concurrency" => args.concurrency = value()?.parse().map_err(|e| format!("--concurrency: {e}"))?,
            "--lease-ms" => args.lease = ms(value()?)?,
            "--handler-ms" => args.handler = ms(value()?)?,
            "--retry-ms" => args.retry = ms(value()?)?,
            "--run-ms" => args.run_for = Some(ms(value()?)?),
            "--worker-id" => args.worker_id = Some(value()?),
            other => return Err(format!("unknown flag {other}; see the example's docs")),
        }
    }
    Ok(args)
}

/// Waits for Ctrl-C, SIGTERM, or `run_for` to pass.
pub(crate) async fn shutdown_signal(run_for: Option<Duration>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    let timer = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = timer => {}
    }
}
