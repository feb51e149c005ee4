//! Faults: killed and paused worker processes, a PostgreSQL server crashed
//! and restarted under load, garbage rows, an exhausted pool and a
//! read-only database.
//!
//! Leases are short so that recovery takes about a second.

use std::{collections::HashSet, sync::Arc, time::Duration};

use flagship_worker::{
    broker::postgres::{sqlx, PostgresBroker},
    testing::postgres_server::{TempCluster, TestDatabase},
    Broker, DeadFilter, DeadLetterQueue, EnqueueOutcome, Error, JobEnvelope, JobId,
};
use tokio::time::Instant;

use crate::support::{
    create_example_tables, demo, demo_worker, done, eventually, queue, run, settled, start, started, stop, take,
    worker_process,
};

/// A fresh database with the example's tables and a broker.
async fn example_db() -> Option<(TestDatabase, Arc<PostgresBroker>)> {
    let (db, broker) = start().await?;
    create_example_tables(broker.pool()).await;
    Some((db, broker))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_killed_worker_process_are_all_finished_by_another() {
    let Some((db, broker)) = example_db().await else { return };
    broker.enqueue((0..100).map(demo).collect()).await.unwrap();
    let doomed = worker_process(
        &db.url(),
        &["--concurrency", "100", "--lease-ms", "1000", "--handler-ms", "60000"],
    );
    eventually("100 jobs in flight in the child", Duration::from_secs(60), || async {
        started(broker.pool()).await.len() == 100
    })
    .await;
    doomed.kill();

    let rescuer = demo_worker(&broker, "rescuer", 20, Duration::from_secs(1), Duration::ZERO);
    let running = vec![run(&rescuer)];
    eventually("every job finished", Duration::from_secs(20), || settled(&broker, 100)).await;
    stop(running).await;

    let done = done(broker.pool()).await;
    assert_eq!(done.len(), 100, "exactly 100 distinct jobs completed");
    assert!(done.values().all(|w| w == "rescuer"));
    let stats = broker.stats(&queue("examples:demo")).await.unwrap();
    assert_eq!((stats.completed, stats.dead), (100, 0));
    assert_eq!(rescuer.stats().recovered, 100);
    assert!(
        started(broker.pool()).await.values().all(|runs| *runs == 2),
        "each job ran once in the killed worker and once after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_has_every_acknowledgement_refused() {
    const JOBS: u64 = 40;
    let Some((db, broker)) = example_db().await else { return };
    broker.enqueue((0..JOBS).map(demo).collect()).await.unwrap();
    let stale = worker_process(
        &db.url(),
        &[
            "--concurrency",
            "10",
            "--lease-ms",
            "600",
            "--handler-ms",
            "1500",
            "--worker-id",
            "stale",
        ],
    );
    eventually("the stale worker started jobs", Duration::from_secs(60), || async {
        started(broker.pool()).await.len() >= 10
    })
    .await;
    stale.signal("STOP");

    let second = demo_worker(&broker, "second", 10, Duration::from_millis(600), Duration::ZERO);
    let running = vec![run(&second)];
    eventually(
        "every job completed by the second worker",
        Duration::from_secs(20),
        || settled(&broker, JOBS),
    )
    .await;
    stop(running).await;

    stale.signal("CONT");
    let stale_stats = stale.finish();
    let stale_started = stale_stats["started"].as_u64().unwrap();
    assert!(stale_started >= 10, "{stale_stats}");
    assert_eq!(
        stale_stats["completed"], 0,
        "an acknowledgement of the stale worker was accepted: {stale_stats}"
    );
    assert!(
        stale_stats["lease_lost"].as_u64().unwrap() >= stale_started,
        "every attempt of the stale worker must be refused: {stale_stats}"
    );
    assert_eq!(second.stats().completed, JOBS);
    let stats = broker.stats(&queue("examples:demo")).await.unwrap();
    assert_eq!((stats.completed, stats.dead), (JOBS, 0), "each job acknowledged once");
    assert_eq!(done(broker.pool()).await.len() as u64, JOBS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_rows_are_dead_lettered_with_the_reason_and_the_worker_goes_on() {
    let Some((_db, broker)) = example_db().await else {
        return;
    };
    let q = queue("examples:demo");
    broker.enqueue((0..3).map(demo).collect()).await.unwrap();
    // Rows a careless producer wrote straight into the table.
    let insert = "INSERT INTO flagship_worker.jobs (id, queue, kind, payload, v, attempts, run_at) \
                  VALUES ($1, 'examples:demo', $2, $3, $4, $5, now())";
    let garbage: [(&str, &str, i16, Option<&str>, &str); 5] = [
        ("demo", "this is not json", 1, None, "payload is not JSON"),
        ("demo", r#"{"n": 1}"#, 2, None, "version 2 is not supported"),
        ("nope", r#"{"n": 1}"#, 1, None, "unknown job kind `nope`"),
        ("demo", r#"{"n": "seven"}"#, 1, None, "refused at reservation"),
        ("demo", r#"{"n": 1}"#, 1, Some("[1, 2]"), "attempt history"),
    ];
    let mut expected = Vec::new();
    for (kind, payload, v, attempts, reason) in garbage {
        let id = JobId::new();
        sqlx::query(insert)
            .bind(id.as_uuid())
            .bind(kind)
            .bind(payload)
            .bind(v)
            .bind(attempts)
            .execute(broker.pool())
            .await
            .unwrap();
        expected.push((id, reason));
    }
    broker.enqueue((3..6).map(demo).collect()).await.unwrap();

    let worker = demo_worker(&broker, "w", 4, Duration::from_secs(5), Duration::ZERO);
    let running = vec![run(&worker)];
    eventually("good jobs done, garbage dead", Duration::from_secs(10), || {
        settled(&broker, 11)
    })
    .await;
    stop(running).await;

    assert_eq!(worker.stats().completed, 6);
    assert_eq!(done(broker.pool()).await.len(), 6);
    for (id, reason) in expected.iter().copied() {
        let dead = broker.get_dead(&q, id).await.unwrap().expect("the garbage row is dead");
        let why = dead.dead_letter_reason.unwrap_or_default();
        assert!(why.contains(reason), "{id}: expected {reason:?} in {why:?}");
    }
    let shown = broker
        .list_dead(&DeadFilter::queue(q.clone()), None, 10)
        .await
        .unwrap()
        .jobs;
    assert_eq!(shown.len(), 5);
    assert!(
        shown.iter().any(|j| j.payload == serde_json::json!("this is not json")),
        "an undecodable payload is shown as its text"
    );
    // The worker retries none of them: each ran at most once.
    assert_eq!(worker.stats().retried, 0);
    // A row that cannot run as a job cannot be retried from the DLQ either;
    // one that decodes (an unknown kind, a refused payload) can.
    for (id, reason) in &expected {
        let retried = broker.retry_dead(&q, *id).await;
        let undecodable = ["payload is not JSON", "version 2", "attempt history"]
            .iter()
            .any(|r| reason.contains(r));
        if undecodable {
            let err = retried.expect_err("an undecodable dead job is not retried");
            assert!(
                matches!(err, flagship_worker::Error::NotRetryable { .. }),
                "{id}: {err}"
            );
            assert!(broker.get_dead(&q, *id).await.unwrap().is_some(), "it stays dead");
        } else {
            assert!(retried.unwrap(), "{id} ({reason}) decodes and is retried");
        }
    }
}

#[tokio::test]
async fn an_exhausted_pool_fails_calls_promptly_and_loses_nothing() {
    let Some((db, _)) = start().await else { return };
    let broker = PostgresBroker::builder(db.url())
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let q = queue("pool");
    broker.enqueue(vec![demo_on(&q, 0)]).await.unwrap();
    let held = broker.pool().acquire().await.unwrap();
    let started = Instant::now();
    let refused = broker.enqueue(vec![demo_on(&q, 1)]).await;
    let waited = started.elapsed();
    let Err(Error::Unavailable(why)) = &refused else {
        panic!("an exhausted pool must fail with Unavailable: {refused:?}")
    };
    assert!(why.to_string().contains("pool"), "{why}");
    assert!(waited < Duration::from_secs(2), "waited {waited:?} for a connection");
    assert!(matches!(
        broker.reserve(&q, take(10, 30_000)).await,
        Err(Error::Unavailable(_))
    ));
    drop(held);
    assert_eq!(
        broker.reserve(&q, take(10, 30_000)).await.unwrap().len(),
        1,
        "nothing lost"
    );
    assert!(broker.enqueue(vec![demo_on(&q, 2)]).await.unwrap()[0].is_enqueued());
}

#[tokio::test]
async fn a_read_only_database_refuses_writes_clearly_and_loses_nothing() {
    let Some((db, broker)) = start().await else { return };
    let q = queue("read-only");
    broker.enqueue(vec![demo_on(&q, 0)]).await.unwrap();
    let mut admin = db.connect().await;
    let set = |on: bool| {
        format!(
            "ALTER DATABASE \"{}\" SET default_transaction_read_only = {on}",
            db.name()
        )
    };
    sqlx::query(&set(true)).execute(&mut admin).await.unwrap();
    // Sessions opened from now on are read-only, like a standby's.
    let read_only = PostgresBroker::builder(db.url())
        .migrate(false)
        .connect()
        .await
        .unwrap();
    let refused = read_only.enqueue(vec![demo_on(&q, 1)]).await;
    let Err(Error::Backend(why)) = &refused else {
        panic!("a read-only database must refuse enqueue with Backend: {refused:?}")
    };
    assert!(why.to_string().contains("read-only"), "{why}");
    assert!(matches!(
        read_only.reserve(&q, take(10, 30_000)).await,
        Err(Error::Backend(_))
    ));
    assert_eq!(read_only.stats(&q).await.unwrap().ready, 1, "reads still work");
    sqlx::query(&set(false)).execute(&mut admin).await.unwrap();
    let writable = PostgresBroker::connect(db.url()).await.unwrap();
    assert_eq!(
        writable.reserve(&q, take(10, 30_000)).await.unwrap().len(),
        1,
        "nothing lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_and_producers_ride_out_a_postgres_crash_restart_and_an_outage() {
    const INITIAL: u64 = 1_000;
    let Some(cluster) = TempCluster::start() else { return };
    let broker = Arc::new(
        PostgresBroker::builder(cluster.url())
            .acquire_timeout(Duration::from_secs(2))
            .poll_interval(Duration::from_millis(200))
            .connect()
            .await
            .unwrap(),
    );
    create_example_tables(broker.pool()).await;
    broker.enqueue((0..INITIAL).map(demo).collect()).await.unwrap();
    let workers = [
        demo_worker(&broker, "a", 8, Duration::from_secs(2), Duration::from_millis(2)),
        demo_worker(&broker, "b", 8, Duration::from_secs(2), Duration::from_millis(2)),
    ];
    let running: Vec<_> = workers.iter().map(run).collect();

    // A producer enqueueing one job at a time throughout.
    let (stop_producing, mut producing) = tokio::sync::watch::channel(false);
    let producer = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let (mut committed, mut failed, mut slowest) = (Vec::new(), Vec::new(), Duration::ZERO);
            let mut n = INITIAL;
            while !*producing.borrow_and_update() {
                let job = demo(n);
                let id = job.id;
                let started = Instant::now();
                match broker.enqueue(vec![job]).await {
                    Ok(outcomes) => {
                        assert_eq!(outcomes, [EnqueueOutcome::Enqueued(id)]);
                        committed.push(n);
                    }
                    Err(Error::Unavailable(_)) => failed.push(n),
                    Err(other) => panic!("an enqueue during the outage failed with {other:?}, not Unavailable"),
                }
                slowest = slowest.max(started.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (committed, failed, slowest)
        })
    };

    eventually("a third of the jobs done", Duration::from_secs(60), || async {
        workers.iter().map(|w| w.stats().completed).sum::<u64>() >= INITIAL / 3
    })
    .await;
    // A crash restart: outages shorter than the acquire timeout may be
    // ridden out by calls that wait for a connection.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart_immediate();
        cluster
    })
    .await
    .unwrap();
    let restarted_at = workers.iter().map(|w| w.stats().completed).sum::<u64>();
    eventually("work going on after the restart", Duration::from_secs(60), || async {
        workers.iter().map(|w| w.stats().completed).sum::<u64>() >= restarted_at + 100
    })
    .await;
    // Then an outage longer than the acquire timeout: calls fail, none hangs.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop_immediate();
        std::thread::sleep(Duration::from_secs(3));
        cluster.start_again();
        cluster
    })
    .await
    .unwrap();
    // Keep producing a little after the server is back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_producing.send(true).unwrap();
    let (committed, failed, slowest) = producer.await.unwrap();
    let total = INITIAL + committed.len() as u64;
    // Jobs whose enqueue failed may have been stored all the same (the
    // reply, not the commit, was lost): at least `total`, then nothing left.
    eventually(
        "every committed job finished after the restart",
        Duration::from_secs(90),
        || async {
            let Ok(s) = broker.stats(&queue("examples:demo")).await else {
                return false;
            };
            s.completed + s.dead >= total && s.ready + s.scheduled + s.active == 0
        },
    )
    .await;
    stop(running).await;

    let done = done(broker.pool()).await;
    let expected: HashSet<i64> = (0..INITIAL as i64).chain(committed.iter().map(|&n| n as i64)).collect();
    let lost: Vec<_> = expected.iter().filter(|n| !done.contains_key(n)).collect();
    assert!(lost.is_empty(), "{} committed jobs lost: {lost:?}", lost.len());
    // An enqueue cut off mid-commit may have stored its job: the only extra ones allowed.
    let failed: HashSet<i64> = failed.iter().map(|&n| n as i64).collect();
    assert!(done.keys().all(|n| expected.contains(n) || failed.contains(n)));
    assert!(!failed.is_empty(), "no enqueue saw the outage");
    assert!(
        slowest < Duration::from_secs(6),
        "an enqueue hung for {slowest:?} during the outage"
    );
    let stats = broker.stats(&queue("examples:demo")).await.unwrap();
    assert_eq!(stats.dead, 0, "retries absorbed the outage");
    assert!(
        workers.iter().all(|w| w.stats().broker_errors > 0),
        "both workers saw the outage"
    );
    drop(cluster);
}

/// A demo-kind job on queue `q`.
fn demo_on(q: &flagship_worker::QueueName, n: u64) -> JobEnvelope {
    let mut job = demo(n);
    job.queue = q.clone();
    job
}
