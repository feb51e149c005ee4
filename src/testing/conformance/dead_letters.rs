//! The dead-letter queue: dead-lettering, listing, retrying, deleting
//! and purging.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use super::{
    support::{
        assert_within, dead_job, dead_job_with, dead_time, enqueue_new, failure, get_dead, ids, job, join, keyed, ms,
        queue, reserve_now, reserve_one, stats, timeless, OrFail, LONG,
    },
    Fixture,
};
use crate::{
    broker::{Backend, DeadCursor, DeadFilter, MAX_DEAD_PAGE},
    envelope::{JobEnvelope, MAX_ERROR_BYTES},
    error::Error,
    job::{JobId, QueueName},
};

/// A dead job keeps its payload and history, records when and why it died
/// (the reason truncated), and is never reserved or recovered.
pub async fn dead_letter_keeps_job_and_history<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "dead");
    let tol = f.tolerance();
    let sent = keyed(job(f, &q, "dead", 0), "dead-1");
    let id = sent.id;
    enqueue_new(&*b, vec![sent.clone()]).await;
    let r = reserve_one(&*b, &q, LONG).await;
    let record = failure(f, "boom");
    let from = f.now();
    b.dead_letter(&r, Some(record.clone()), "permanent: boom")
        .await
        .or_fail("dead_letter");
    let to = f.now();
    let dead = get_dead(&*b, &q, id).await.or_fail("the dead job is not in the DLQ");
    let at = dead.dead_lettered_at.or_fail("dead_lettered_at");
    assert_within("dead_lettered_at", at, from, to, tol);
    let expected = JobEnvelope {
        attempts: vec![record],
        dead_lettered_at: Some(at),
        dead_letter_reason: Some("permanent: boom".into()),
        ..sent
    };
    assert_eq!(
        timeless(&dead),
        timeless(&expected),
        "dead_letter must keep the job and append the attempt"
    );

    let long = dead_job_with(&*b, job(f, &q, "dead", 1), None, &"x".repeat(3 * MAX_ERROR_BYTES)).await;
    assert!(
        long.attempts.is_empty(),
        "dead_letter without an attempt must not add one"
    );
    let reason = long.dead_letter_reason.or_fail("dead_letter_reason");
    assert!(
        reason.len() <= MAX_ERROR_BYTES && reason.starts_with("xxx"),
        "the reason must be truncated to {MAX_ERROR_BYTES} bytes, it has {}",
        reason.len()
    );

    let live = job(f, &q, "live", 0);
    let live_id = live.id;
    enqueue_new(&*b, vec![live]).await;
    assert_eq!(get_dead(&*b, &q, live_id).await, None, "get_dead returned a live job");
    assert_eq!(get_dead(&*b, &q, JobId::new()).await, None, "get_dead invented a job");
    assert_eq!(
        ids(&reserve_now(&*b, &q, 10, ms(100)).await),
        [live_id],
        "a dead job was handed out"
    );
    f.advance(ms(100) + tol).await;
    let recovered = b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired");
    assert_eq!(ids(&recovered), [live_id], "a dead job was recovered");
    let s = stats(&*b, &q).await;
    assert_eq!((s.dead, s.dead_lettered), (2, 2), "{s:?}");
}

/// `list_dead` and `count_dead` apply the queue, kind and time filters,
/// ordered by dead-lettered time, then id.
pub async fn list_dead_filters<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let (q, other) = (queue(f, "dlq-filter"), queue(f, "dlq-filter-other"));
    let a0 = dead_job(f, &*b, job(f, &q, "alpha", 0), "x").await;
    let b0 = dead_job(f, &*b, job(f, &q, "beta", 0), "x").await;
    dead_job(f, &*b, job(f, &other, "alpha", 0), "x").await;
    f.advance(ms(300)).await;
    let a1 = dead_job(f, &*b, job(f, &q, "alpha", 1), "x").await;
    let b1 = dead_job(f, &*b, job(f, &q, "beta", 1), "x").await;
    let t1 = dead_time(&a1).min(dead_time(&b1));

    let all = DeadFilter::queue(q.clone());
    let cases = [
        (all.clone(), vec![&a0, &b0, &a1, &b1]),
        (all.clone().kind("alpha"), vec![&a0, &a1]),
        (all.clone().kind("gamma"), vec![]),
        (all.clone().between(Some(t1), None), vec![&a1, &b1]),
        (all.clone().between(None, Some(t1)), vec![&a0, &b0]),
        (
            all.clone().kind("beta").between(Some(dead_time(&a0)), Some(t1)),
            vec![&b0],
        ),
    ];
    for (filter, expected) in cases {
        let mut expected: Vec<_> = expected.into_iter().map(|j| (dead_time(j), j.id)).collect();
        expected.sort();
        let page = b.list_dead(&filter, None, MAX_DEAD_PAGE).await.or_fail("list_dead");
        let got: Vec<_> = page.jobs.iter().map(|j| (dead_time(j), j.id)).collect();
        assert_eq!(got, expected, "list_dead with {filter:?}");
        assert_eq!(page.next, None, "a complete listing must not point to a next page");
        let count = b.count_dead(&filter).await.or_fail("count_dead");
        assert_eq!(count, expected.len() as u64, "count_dead with {filter:?}");
    }
}

/// Paging through the DLQ with a cursor returns every entry once, in
/// order, ending with `next: None` (also on an exact page boundary), even
/// when entries already listed are deleted or retried meanwhile.
pub async fn list_dead_pages_without_skips_or_repeats<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "dlq-pages");
    for n in 0..25 {
        dead_job(f, &*b, job(f, &q, "page", n), "x").await;
        if n % 5 == 4 {
            // Entries dead-lettered at one instant exercise the id tie-break.
            f.advance(ms(1)).await;
        }
    }
    let filter = DeadFilter::queue(q.clone());
    let full = b.list_dead(&filter, None, MAX_DEAD_PAGE).await.or_fail("list_dead");
    let full: Vec<_> = full.jobs.iter().map(|j| (dead_time(j), j.id)).collect();
    let mut sorted = full.clone();
    sorted.sort();
    assert_eq!(full, sorted, "the DLQ is not ordered by dead-lettered time, then id");
    assert_eq!(full.len(), 25);
    let full: Vec<_> = full.into_iter().map(|(_, id)| id).collect();

    for (limit, pages) in [(7, 4), (5, 5), (25, 1), (30, 1)] {
        let (listed, count) = list_all(&*b, &filter, limit).await;
        assert_eq!(listed, full, "paging by {limit} skipped, repeated or reordered entries");
        assert_eq!(count, pages, "paging 25 entries by {limit} took {count} pages");
    }

    // Entries listed already go away while the listing goes on.
    let first = b.list_dead(&filter, None, 7).await.or_fail("list_dead");
    let cursor = first.next.or_fail("a next page after 7 of 25");
    let page_ids: Vec<_> = first.jobs.iter().map(|j| j.id).collect();
    assert!(b.delete_dead(&q, page_ids[6]).await.or_fail("delete_dead"));
    assert!(b.retry_dead(&q, page_ids[2]).await.or_fail("retry_dead"));
    let mut rest = Vec::new();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let page = b.list_dead(&filter, Some(&cursor), 7).await.or_fail("list_dead");
        rest.extend(page.jobs.iter().map(|j| j.id));
        next = page.next;
    }
    assert_eq!(
        rest,
        full[7..],
        "deleting listed entries disturbed the rest of the listing"
    );

    let garbage = DeadCursor::new("not a cursor");
    let refused = b.list_dead(&filter, Some(&garbage), 7).await;
    assert!(refused.is_err(), "a cursor the backend never handed out was accepted");
}

/// A page size of 0 or above [`MAX_DEAD_PAGE`] is refused.
pub async fn list_dead_refuses_bad_page_sizes<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "dlq-limits");
    dead_job(f, &*b, job(f, &q, "limit", 0), "x").await;
    let filter = DeadFilter::queue(q);
    for limit in [0, MAX_DEAD_PAGE + 1] {
        let refused = b.list_dead(&filter, None, limit).await;
        assert!(
            matches!(refused, Err(Error::InvalidConfig(_))),
            "page size {limit} must be refused: {refused:?}"
        );
    }
    let page = b.list_dead(&filter, None, MAX_DEAD_PAGE).await.or_fail("list_dead");
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(b.list_dead(&filter, None, 1).await.or_fail("list_dead").jobs.len(), 1);
}

/// `retry_dead` moves a dead job back to ready with `attempt` 0, its
/// history kept and its dead-letter fields cleared; it is `false` for a job
/// that is not dead.
pub async fn retry_dead_restores_job<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "dlq-retry");
    let mut sent = keyed(job(f, &q, "retry", 0), "dlq-retry-1");
    sent.max_retries = Some(1);
    enqueue_new(&*b, vec![sent.clone()]).await;
    let r = reserve_one(&*b, &q, LONG).await;
    let first = failure(f, "first");
    b.retry_after(&r, Duration::ZERO, first.clone())
        .await
        .or_fail("retry_after");
    let r = reserve_one(&*b, &q, LONG).await;
    let second = failure(f, "second");
    b.dead_letter(&r, Some(second.clone()), "retries exhausted")
        .await
        .or_fail("dead_letter");
    let dead = get_dead(&*b, &q, sent.id).await.or_fail("the job is not dead");
    assert_eq!((dead.attempt, dead.attempts.len()), (1, 2));

    assert!(b.retry_dead(&q, sent.id).await.or_fail("retry_dead"));
    assert_eq!(get_dead(&*b, &q, sent.id).await, None, "a retried job is still dead");
    assert!(
        !b.retry_dead(&q, sent.id).await.or_fail("retry_dead"),
        "a job was retried twice"
    );
    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.dead), (1, 0), "{s:?}");
    let r = reserve_one(&*b, &q, LONG).await;
    let expected = JobEnvelope {
        attempt: 0,
        attempts: vec![first, second],
        dead_lettered_at: None,
        dead_letter_reason: None,
        run_at: r.envelope.run_at,
        ..sent
    };
    assert_eq!(
        timeless(&r.envelope),
        timeless(&expected),
        "retry_dead must keep the job and its history"
    );

    assert!(
        !b.retry_dead(&q, r.lease.id).await.or_fail("retry_dead"),
        "a live job was retried"
    );
    assert!(
        !b.retry_dead(&q, JobId::new()).await.or_fail("retry_dead"),
        "an unknown job was retried"
    );
    assert_eq!(stats(&*b, &q).await.active, 1);
}

/// Concurrent retries of one dead job re-enqueue it once: exactly one call
/// returns `true`.
pub async fn concurrent_retry_dead_reenqueues_once<F: Fixture + ?Sized>(f: &F) {
    const JOBS: usize = 8;
    const TASKS: usize = 8;
    let b = f.backend();
    let q = queue(f, "dlq-retry-race");
    let mut dead = Vec::new();
    for n in 0..JOBS {
        dead.push(dead_job(f, &*b, job(f, &q, "race", n as u64), "x").await.id);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (b, q, barrier, dead) = (b.clone(), q.clone(), barrier.clone(), dead.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut won = Vec::new();
            for id in dead {
                if b.retry_dead(&q, id).await.or_fail("retry_dead") {
                    won.push(id);
                }
            }
            won
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        won.extend(join(task).await);
    }
    won.sort();
    let mut expected = dead.clone();
    expected.sort();
    assert_eq!(won, expected, "each dead job must be retried by exactly one caller");
    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.dead), (JOBS as u64, 0), "{s:?}");
    assert_eq!(reserve_now(&*b, &q, 100, LONG).await.len(), JOBS);
}

/// `retry_dead_matching` retries exactly the dead jobs its filter matches
/// (queue, kind, time) and keeps their history, also among a few hundred
/// entries, more than a backend may scan in one step.
pub async fn retry_dead_matching_filter<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let (q, other) = (queue(f, "dlq-match"), queue(f, "dlq-match-other"));
    let mut alpha = BTreeSet::new();
    for n in 0..3 {
        alpha.insert(dead_job(f, &*b, job(f, &q, "alpha", n), "x").await.id);
    }
    dead_job(f, &*b, job(f, &q, "beta", 0), "x").await;
    dead_job(f, &*b, job(f, &other, "alpha", 0), "x").await;
    f.advance(ms(300)).await;
    let late_beta = dead_job(f, &*b, job(f, &q, "beta", 1), "x").await;

    let all = DeadFilter::queue(q.clone());
    assert_eq!(
        b.retry_dead_matching(&all.clone().kind("alpha")).await.or_fail("retry"),
        3
    );
    let retried = reserve_now(&*b, &q, 100, LONG).await;
    assert_eq!(ids(&retried).into_iter().collect::<BTreeSet<_>>(), alpha);
    assert!(
        retried.iter().all(|r| r.envelope.attempts.len() == 1),
        "history was lost"
    );
    assert_eq!(
        b.count_dead(&DeadFilter::queue(other.clone())).await.or_fail("count"),
        1
    );

    let since = all.clone().kind("beta").between(Some(dead_time(&late_beta)), None);
    assert_eq!(b.retry_dead_matching(&since).await.or_fail("retry"), 1);
    assert_eq!(ids(&reserve_now(&*b, &q, 100, LONG).await), [late_beta.id]);
    assert_eq!(b.count_dead(&all).await.or_fail("count"), 1);
    assert_eq!(b.retry_dead_matching(&all).await.or_fail("retry"), 1);
    assert_eq!(b.retry_dead_matching(&all).await.or_fail("retry"), 0);
    assert_eq!(b.count_dead(&DeadFilter::queue(other)).await.or_fail("count"), 1);

    let bulk = queue(f, "dlq-match-bulk");
    let jobs: Vec<_> = (0..300)
        .map(|n| job(f, &bulk, if n % 3 == 0 { "third" } else { "rest" }, n))
        .collect();
    let thirds: BTreeSet<_> = jobs.iter().filter(|j| j.kind == "third").map(|j| j.id).collect();
    dead_letter_all(f, &*b, &bulk, jobs).await;
    let all = DeadFilter::queue(bulk.clone());
    let matched = b.retry_dead_matching(&all.clone().kind("third")).await;
    assert_eq!(matched.or_fail("retry"), 100);
    assert_eq!(b.count_dead(&all).await.or_fail("count"), 200);
    let retried = reserve_now(&*b, &bulk, 1_000, LONG).await;
    assert_eq!(ids(&retried).into_iter().collect::<BTreeSet<_>>(), thirds);
}

/// `delete_dead` removes a dead job for good and is `false` for a job that
/// is not dead, which it leaves alone.
pub async fn delete_dead<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "dlq-delete");
    let dead = dead_job(f, &*b, job(f, &q, "delete", 0), "x").await;
    assert!(b.delete_dead(&q, dead.id).await.or_fail("delete_dead"));
    assert!(
        !b.delete_dead(&q, dead.id).await.or_fail("delete_dead"),
        "deleted twice"
    );
    assert_eq!(get_dead(&*b, &q, dead.id).await, None);
    assert!(
        !b.retry_dead(&q, dead.id).await.or_fail("retry_dead"),
        "a deleted job was retried"
    );
    assert_eq!(
        b.count_dead(&DeadFilter::queue(q.clone())).await.or_fail("count_dead"),
        0
    );

    let live = job(f, &q, "live", 0);
    let live_id = live.id;
    enqueue_new(&*b, vec![live]).await;
    assert!(
        !b.delete_dead(&q, live_id).await.or_fail("delete_dead"),
        "a live job was deleted"
    );
    assert_eq!(ids(&reserve_now(&*b, &q, 10, LONG).await), [live_id]);
    let s = stats(&*b, &q).await;
    assert_eq!((s.dead, s.active, s.ready), (0, 1, 0), "{s:?}");
}

/// `purge_dead` removes exactly the queue's entries dead-lettered strictly
/// before `older_than`.
pub async fn purge_dead_removes_only_strictly_older<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let (q, other) = (queue(f, "dlq-purge"), queue(f, "dlq-purge-other"));
    let d0 = dead_job(f, &*b, job(f, &q, "purge", 0), "x").await;
    dead_job(f, &*b, job(f, &other, "purge", 0), "x").await;
    f.advance(ms(300)).await;
    let d1 = dead_job(f, &*b, job(f, &q, "purge", 1), "x").await;
    let d2 = dead_job(f, &*b, job(f, &q, "purge", 2), "x").await;
    f.advance(ms(300)).await;
    let d3 = dead_job(f, &*b, job(f, &q, "purge", 3), "x").await;
    let all = DeadFilter::queue(q.clone());
    let remaining = |page: Vec<JobEnvelope>| page.into_iter().map(|j| j.id).collect::<BTreeSet<_>>();

    let long_ago = dead_time(&d0) - chrono::TimeDelta::days(1);
    assert_eq!(b.purge_dead(&q, long_ago).await.or_fail("purge_dead"), 0);
    let t1 = dead_time(&d1).min(dead_time(&d2));
    assert_eq!(b.purge_dead(&q, t1).await.or_fail("purge_dead"), 1);
    let left = b.list_dead(&all, None, 10).await.or_fail("list_dead").jobs;
    assert_eq!(remaining(left), BTreeSet::from([d1.id, d2.id, d3.id]));
    assert_eq!(get_dead(&*b, &q, d0.id).await, None);

    assert_eq!(b.purge_dead(&q, dead_time(&d3)).await.or_fail("purge_dead"), 2);
    let left = b.list_dead(&all, None, 10).await.or_fail("list_dead").jobs;
    assert_eq!(
        remaining(left),
        BTreeSet::from([d3.id]),
        "an entry at `older_than` was purged"
    );
    assert_eq!(b.count_dead(&DeadFilter::queue(other)).await.or_fail("count_dead"), 1);
    assert_eq!(stats(&*b, &q).await.dead, 1);
}

/// Enqueues `jobs` to `q`, reserves them all at once and dead-letters each
/// with one failed attempt.
async fn dead_letter_all<F: Fixture + ?Sized>(f: &F, b: &dyn Backend, q: &QueueName, jobs: Vec<JobEnvelope>) {
    let count = jobs.len();
    enqueue_new(b, jobs).await;
    let held = reserve_now(b, q, count, LONG).await;
    assert_eq!(held.len(), count, "the case left other jobs on {q}, or lost some");
    for r in &held {
        b.dead_letter(r, Some(failure(f, "failed")), "x")
            .await
            .or_fail("dead_letter");
    }
}

/// Lists the whole DLQ of `filter` by pages of `limit`; returns the ids and
/// the number of pages.
async fn list_all(b: &dyn Backend, filter: &DeadFilter, limit: usize) -> (Vec<JobId>, usize) {
    let mut listed = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<DeadCursor> = None;
    loop {
        let page = b.list_dead(filter, cursor.as_ref(), limit).await.or_fail("list_dead");
        pages += 1;
        assert!(
            !page.jobs.is_empty() || (pages == 1 && page.next.is_none()),
            "page {pages} by {limit} is empty"
        );
        assert!(page.jobs.len() <= limit, "a page holds more than its limit");
        if page.next.is_some() {
            assert_eq!(page.jobs.len(), limit, "a page before the last is not full");
        }
        listed.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return (listed, pages),
        }
        assert!(pages <= MAX_DEAD_PAGE, "paging does not end");
    }
}
