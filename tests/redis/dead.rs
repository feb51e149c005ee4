//! The dead-letter queue.

use std::{collections::HashSet, time::Duration};

use chrono::Utc;
use flagship_worker::{
    AttemptRecord, Broker, DeadFilter, DeadLetterQueue, EnqueueOutcome, Error, JobEnvelope, JobId, QueueName,
};

use crate::support::{job, queue, start, take};

/// Enqueues `jobs`, reserves them all and dead-letters each with one attempt.
async fn kill_all(broker: &(impl Broker + ?Sized), q: &QueueName, jobs: Vec<JobEnvelope>) -> Vec<JobId> {
    let n = jobs.len();
    broker.enqueue(jobs).await.unwrap();
    let held = broker.reserve(q, take(n, 30_000)).await.unwrap();
    assert_eq!(held.len(), n);
    for r in &held {
        let record = AttemptRecord::failed(Utc::now(), Utc::now(), "bad", Some("w".into()));
        broker.dead_letter(r, Some(record), "hopeless").await.unwrap();
    }
    held.iter().map(|r| r.lease.id).collect()
}

#[tokio::test]
async fn dead_jobs_are_listed_in_order_page_by_page() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("dlq:list");
    let mut jobs: Vec<_> = (0..7).map(|n| job(&q, n)).collect();
    jobs[3].kind = "other".into();
    let ids = kill_all(&*broker, &q, jobs).await;
    assert!(
        broker.reserve(&q, take(10, 30_000)).await.unwrap().is_empty(),
        "dead jobs are not reserved"
    );

    let filter = DeadFilter::queue(q.clone());
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = broker.list_dead(&filter, cursor.as_ref(), 2).await.unwrap();
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every dead job once, oldest first");

    let one = broker.get_dead(&q, ids[0]).await.unwrap().expect("dead job");
    assert_eq!(one.dead_letter_reason.as_deref(), Some("hopeless"));
    assert!(one.dead_lettered_at.is_some());
    assert_eq!(one.attempts.len(), 1);
    assert_eq!(one.payload, serde_json::json!({ "n": 0 }));

    let other = filter.clone().kind("other");
    let page = broker.list_dead(&other, None, 10).await.unwrap();
    assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[3]]);
    assert_eq!(broker.count_dead(&other).await.unwrap(), 1);
    assert_eq!(broker.count_dead(&filter).await.unwrap(), 7);
    let later = filter.clone().between(Some(Utc::now()), None);
    assert_eq!(broker.count_dead(&later).await.unwrap(), 0);
    assert!(matches!(
        broker.list_dead(&filter, None, 0).await,
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        broker.list_dead(&filter, None, 1_001).await,
        Err(Error::InvalidConfig(_))
    ));
    assert_eq!(broker.stats(&q).await.unwrap().dead_lettered, 7);
}

#[tokio::test]
async fn a_retried_dead_job_runs_again_with_its_history() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("dlq:retry");
    let id = kill_all(&*broker, &q, vec![job(&q, 1)]).await[0];

    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (broker, q) = (broker.clone(), q.clone());
            tokio::spawn(async move { broker.retry_dead(&q, id).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one concurrent retry wins");
    assert!(broker.get_dead(&q, id).await.unwrap().is_none());

    let again = broker.reserve(&q, take(1, 30_000)).await.unwrap().remove(0);
    assert_eq!(again.envelope.id, id);
    assert_eq!(again.envelope.attempt, 0);
    assert_eq!(again.envelope.attempts.len(), 1, "history is kept");
    assert_eq!(again.envelope.dead_lettered_at, None);
    assert_eq!(again.envelope.dead_letter_reason, None);
}

#[tokio::test]
async fn matching_dead_jobs_are_retried_in_bulk() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("dlq:bulk");
    let mut jobs: Vec<_> = (0..300).map(|n| job(&q, n)).collect();
    for j in jobs.iter_mut().step_by(3) {
        j.kind = "third".into();
    }
    kill_all(&*broker, &q, jobs).await;
    let filter = DeadFilter::queue(q.clone()).kind("third");
    assert_eq!(broker.retry_dead_matching(&filter).await.unwrap(), 100);
    assert_eq!(broker.count_dead(&DeadFilter::queue(q.clone())).await.unwrap(), 200);
    let back = broker.reserve(&q, take(1_000, 30_000)).await.unwrap();
    assert_eq!(back.len(), 100);
    assert!(back.iter().all(|r| r.envelope.kind == "third"));
}

#[tokio::test]
async fn deleting_and_purging_release_idempotency_keys() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("dlq:purge");
    let keyed = |n, key: &str| {
        let mut j = job(&q, n);
        j.idempotency_key = Some(key.into());
        j
    };
    let first = kill_all(&*broker, &q, vec![keyed(1, "a"), keyed(2, "b")]).await;
    let dup = keyed(3, "a");
    assert_eq!(
        broker.enqueue(vec![dup]).await.unwrap(),
        vec![EnqueueOutcome::Duplicate(first[0])]
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cut = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = kill_all(&*broker, &q, vec![keyed(4, "c")]).await;

    assert_eq!(
        broker.purge_dead(&q, cut).await.unwrap(),
        2,
        "exactly the ones dead before the cut"
    );
    assert!(broker.get_dead(&q, later[0]).await.unwrap().is_some());
    let again = keyed(5, "a");
    assert_eq!(
        broker.enqueue(vec![again.clone()]).await.unwrap(),
        vec![EnqueueOutcome::Enqueued(again.id)]
    );

    assert!(broker.delete_dead(&q, later[0]).await.unwrap());
    assert!(!broker.delete_dead(&q, later[0]).await.unwrap());
    let c = keyed(6, "c");
    assert_eq!(
        broker.enqueue(vec![c.clone()]).await.unwrap(),
        vec![EnqueueOutcome::Enqueued(c.id)]
    );
    let ids: HashSet<_> = broker
        .reserve(&q, take(10, 30_000))
        .await
        .unwrap()
        .iter()
        .map(|r| r.lease.id)
        .collect();
    assert_eq!(ids, HashSet::from([again.id, c.id]));
}
