//! Operators' control ([`JobControl`](crate::broker::JobControl)): live jobs
//! listed by state, pause and resume, cancel, priorities, the worker
//! registry.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use super::{
    support::{
        assert_within, enqueue_new, failure, get_dead, ids, job, join, ms, queue, request, reserve_now, reserve_one,
        stats, timeless, OrFail, GUARD, LONG,
    },
    Fixture,
};
use crate::{
    broker::{
        Backend, CancelOutcome, JobCursor, JobQuery, JobState, LeaseStatus, LiveJob, WorkerInfo, CANCEL_REASON,
        MAX_JOB_PAGE,
    },
    envelope::JobEnvelope,
    error::Error,
    job::{JobId, QueueName},
};

async fn list(b: &dyn Backend, query: &JobQuery) -> Vec<LiveJob> {
    let page = b.list_jobs(query, None, MAX_JOB_PAGE).await.or_fail("list_jobs");
    assert!(page.next.is_none(), "a page holding every job must end the listing");
    page.jobs
}

fn job_ids(jobs: &[LiveJob]) -> Vec<JobId> {
    jobs.iter().map(|j| j.envelope.id).collect()
}

async fn live(b: &dyn Backend, q: &QueueName, id: JobId) -> Option<LiveJob> {
    b.get_job(q, id).await.or_fail("get_job")
}

/// `list_jobs` shows each state's jobs, oldest `run_at` first, with the
/// kind and time filters applied; active jobs carry their lease owner,
/// start, deadline and attempt; `get_job` finds live jobs only.
pub async fn list_jobs_by_state<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "live");
    let tol = f.tolerance();
    let (a0, b1, a2) = (job(f, &q, "a", 0), job(f, &q, "b", 1), job(f, &q, "a", 2));
    enqueue_new(&*b, vec![a0.clone()]).await;
    f.advance(ms(5)).await;
    enqueue_new(&*b, vec![b1.clone()]).await;
    f.advance(ms(5)).await;
    enqueue_new(&*b, vec![a2.clone()]).await;
    let mut later = job(f, &q, "a", 3);
    later.run_at = later.enqueued_at + chrono::TimeDelta::seconds(600);
    let mut soon = job(f, &q, "b", 4);
    soon.run_at = soon.enqueued_at + chrono::TimeDelta::seconds(300);
    enqueue_new(&*b, vec![later.clone(), soon.clone()]).await;

    let ready = list(&*b, &JobQuery::new(q.clone(), JobState::Ready)).await;
    assert_eq!(job_ids(&ready), [a0.id, b1.id, a2.id], "ready, oldest first");
    assert!(ready.iter().all(|j| j.state == JobState::Ready && j.lease.is_none()));
    assert_eq!(
        timeless(&ready[1].envelope),
        timeless(&b1),
        "a listed job is the job as enqueued"
    );
    let kind_a = list(&*b, &JobQuery::new(q.clone(), JobState::Ready).kind("a")).await;
    assert_eq!(job_ids(&kind_a), [a0.id, a2.id], "the kind filter");
    let scheduled = list(&*b, &JobQuery::new(q.clone(), JobState::Scheduled)).await;
    assert_eq!(job_ids(&scheduled), [soon.id, later.id], "scheduled, soonest first");
    assert!(scheduled.iter().all(|j| j.state == JobState::Scheduled));
    let cut = scheduled[0].envelope.run_at + chrono::TimeDelta::seconds(1);
    let before = JobQuery::new(q.clone(), JobState::Scheduled).between(None, Some(cut));
    assert_eq!(job_ids(&list(&*b, &before).await), [soon.id], "the until filter");
    let after = JobQuery::new(q.clone(), JobState::Scheduled).between(Some(cut), None);
    assert_eq!(job_ids(&list(&*b, &after).await), [later.id], "the since filter");
    assert_eq!(
        b.count_jobs(&JobQuery::new(q.clone(), JobState::Ready))
            .await
            .or_fail("count_jobs"),
        3
    );

    let from = f.now();
    let owner: Arc<str> = Arc::from("conformance-worker");
    let taken = b
        .reserve(&q, request(1, LONG, Duration::ZERO).worker(owner.clone()))
        .await
        .or_fail("reserve");
    let to = f.now();
    assert_eq!(ids(&taken), [a0.id]);
    let active = list(&*b, &JobQuery::new(q.clone(), JobState::Active)).await;
    assert_eq!(job_ids(&active), [a0.id], "the reserved job is active");
    let lease = active[0].lease.clone().or_fail("an active job without its lease");
    assert_eq!(active[0].state, JobState::Active);
    assert_eq!(lease.worker.as_deref(), Some(&*owner), "the lease owner");
    assert_within("the lease start", lease.started_at, from, to, tol);
    assert_within(
        "the lease deadline",
        lease.deadline,
        taken[0].deadline,
        taken[0].deadline,
        tol,
    );
    assert_eq!(active[0].envelope.attempt, 0, "the attempt");
    assert!(!active[0].cancel_requested);
    assert_eq!(
        job_ids(&list(&*b, &JobQuery::new(q.clone(), JobState::Ready)).await),
        [b1.id, a2.id],
        "an active job is no longer ready"
    );

    assert_eq!(
        live(&*b, &q, b1.id).await.or_fail("get_job of a ready job").state,
        JobState::Ready
    );
    assert_eq!(
        live(&*b, &q, soon.id).await.or_fail("get_job of a scheduled job").state,
        JobState::Scheduled
    );
    let got = live(&*b, &q, a0.id).await.or_fail("get_job of an active job");
    assert_eq!(
        (got.state, got.lease.and_then(|l| l.worker)),
        (JobState::Active, Some(owner.to_string()))
    );
    assert_eq!(live(&*b, &q, JobId::new()).await, None, "get_job invented a job");
    b.dead_letter(&taken[0], None, "gone").await.or_fail("dead_letter");
    assert_eq!(live(&*b, &q, a0.id).await, None, "get_job returned a dead job");
    let other = queue(f, "live-other");
    assert_eq!(live(&*b, &other, b1.id).await, None, "get_job looked in another queue");
}

/// `list_jobs` pages without skipping or repeating, ends with `next:
/// None` on the page holding the last job, and refuses bad page sizes and
/// cursors it did not hand out.
pub async fn list_jobs_pages_without_skips_or_repeats<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "live-pages");
    let jobs: Vec<JobEnvelope> = (0..7).map(|n| job(f, &q, "page", n)).collect();
    let sent: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    enqueue_new(&*b, jobs).await;
    let query = JobQuery::new(q.clone(), JobState::Ready);
    let mut seen = Vec::new();
    let mut cursor: Option<JobCursor> = None;
    let mut sizes = Vec::new();
    loop {
        let page = b.list_jobs(&query, cursor.as_ref(), 3).await.or_fail("list_jobs");
        sizes.push(page.jobs.len());
        seen.extend(job_ids(&page.jobs));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(sizes.len() < 10, "the listing does not end");
    }
    assert_eq!(sizes, [3, 3, 1], "pages of 3");
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a job was listed twice");
    assert_eq!(unique, sent.iter().collect::<BTreeSet<_>>(), "every job is listed once");
    let full = b.list_jobs(&query, None, 7).await.or_fail("list_jobs");
    assert!(
        full.next.is_none(),
        "a full page holding the last job must end the listing"
    );
    for limit in [0, MAX_JOB_PAGE + 1] {
        let refused = b.list_jobs(&query, None, limit).await;
        assert!(
            matches!(refused, Err(Error::InvalidConfig(_))),
            "page size {limit} was accepted"
        );
    }
    let forged = JobCursor::new("not a cursor");
    let refused = b.list_jobs(&query, Some(&forged), 3).await;
    assert!(
        matches!(refused, Err(Error::InvalidConfig(_))),
        "a forged cursor was accepted"
    );
}

/// A paused queue hands out nothing, to any caller, while enqueue and the
/// leases already held keep working and `stats` says it is paused;
/// resuming wakes a waiting reserver. Pause and resume say whether they
/// changed anything.
pub async fn pause_stops_reservations_until_resumed<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "paused");
    enqueue_new(&*b, vec![job(f, &q, "paused", 0)]).await;
    let held = reserve_one(&*b, &q, LONG).await;
    assert!(b.pause(&q).await.or_fail("pause"), "pausing a running queue changes it");
    assert!(
        !b.pause(&q).await.or_fail("pause"),
        "pausing a paused queue changes nothing"
    );
    assert!(stats(&*b, &q).await.paused, "stats must say the queue is paused");
    let waiting = job(f, &q, "paused", 1);
    let waiting_id = waiting.id;
    enqueue_new(&*b, vec![waiting]).await;
    assert!(
        reserve_now(&*b, &q, 10, LONG).await.is_empty(),
        "a paused queue handed out a job"
    );
    let other = queue(f, "paused-other");
    enqueue_new(&*b, vec![job(f, &other, "other", 0)]).await;
    assert!(!stats(&*b, &other).await.paused, "pausing one queue paused another");
    assert_eq!(
        reserve_now(&*b, &other, 10, LONG).await.len(),
        1,
        "another queue stopped"
    );
    assert_eq!(
        b.extend(std::slice::from_ref(&held.lease), LONG)
            .await
            .or_fail("extend"),
        [LeaseStatus::Held],
        "a lease held before the pause must keep working"
    );
    b.complete_one(&held.lease).await.or_fail("complete_one");
    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.active, s.completed), (1, 0, 1), "{s:?}");

    let reserver = {
        let b = b.clone();
        let q = q.clone();
        tokio::spawn(async move { b.reserve(&q, request(10, LONG, GUARD)).await })
    };
    f.advance(ms(100)).await;
    assert!(
        !reserver.is_finished(),
        "a reserve on a paused queue returned before resume"
    );
    assert!(
        b.resume(&q).await.or_fail("resume"),
        "resuming a paused queue changes it"
    );
    assert!(
        !b.resume(&q).await.or_fail("resume"),
        "resuming a running queue changes nothing"
    );
    assert!(!stats(&*b, &q).await.paused);
    let got = join(reserver).await.or_fail("reserve");
    assert_eq!(ids(&got), [waiting_id], "resume must wake the waiting reserver");
}

/// Cancelling a ready or a scheduled job moves it to the dead-letter queue
/// with the operator's reason and no attempt; an unknown, dead or finished
/// job is not found.
pub async fn cancel_ready_and_scheduled_jobs<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "cancel");
    let ready = job(f, &q, "cancel", 0);
    let mut scheduled = job(f, &q, "cancel", 1);
    scheduled.run_at = scheduled.enqueued_at + chrono::TimeDelta::seconds(600);
    let kept = job(f, &q, "cancel", 2);
    enqueue_new(&*b, vec![ready.clone(), scheduled.clone(), kept.clone()]).await;
    for sent in [&ready, &scheduled] {
        let outcome = b.cancel(&q, sent.id).await.or_fail("cancel");
        assert_eq!(outcome, CancelOutcome::DeadLettered);
        let dead = get_dead(&*b, &q, sent.id)
            .await
            .or_fail("a cancelled job is not in the DLQ");
        assert_eq!(dead.dead_letter_reason.as_deref(), Some(CANCEL_REASON));
        assert!(dead.attempts.is_empty(), "cancelling records no attempt");
        assert_eq!(dead.payload, sent.payload, "a cancelled job keeps its payload");
        assert_eq!(live(&*b, &q, sent.id).await, None, "a cancelled job is still live");
        assert_eq!(
            b.cancel(&q, sent.id).await.or_fail("cancel"),
            CancelOutcome::NotFound,
            "a dead job cannot be cancelled again"
        );
    }
    assert_eq!(
        b.cancel(&q, JobId::new()).await.or_fail("cancel"),
        CancelOutcome::NotFound
    );
    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.scheduled, s.dead, s.dead_lettered), (1, 0, 2, 2), "{s:?}");
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(r.lease.id, kept.id, "only the job not cancelled is handed out");
    b.complete_one(&r.lease).await.or_fail("complete_one");
    assert_eq!(
        b.cancel(&q, kept.id).await.or_fail("cancel"),
        CancelOutcome::NotFound,
        "a completed job cannot be cancelled"
    );
}

/// Cancelling an active job changes nothing but a flag: the next `extend`
/// reports it (and extends the lease), `get_job` shows it, a recovery of
/// its expired lease carries it, and it is cleared when the job leaves
/// active.
pub async fn cancel_active_job_is_signalled<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "cancel-active");
    let tol = f.tolerance();
    let sent = job(f, &q, "cancel", 0);
    let id = sent.id;
    enqueue_new(&*b, vec![sent]).await;
    let lease = ms(300);
    let r = reserve_one(&*b, &q, lease).await;
    assert_eq!(b.cancel(&q, id).await.or_fail("cancel"), CancelOutcome::Signalled);
    assert!(
        live(&*b, &q, id).await.or_fail("get_job").cancel_requested,
        "get_job must show the cancel request"
    );
    let s = stats(&*b, &q).await;
    assert_eq!((s.active, s.dead), (1, 0), "cancelling an active job moved it: {s:?}");
    assert_eq!(
        b.extend(std::slice::from_ref(&r.lease), lease).await.or_fail("extend"),
        [LeaseStatus::Cancelled],
        "extend must report the cancel request"
    );
    assert_eq!(
        b.cancel(&q, id).await.or_fail("cancel"),
        CancelOutcome::Signalled,
        "a second cancel"
    );

    f.advance(lease + tol).await;
    let recovered = b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired");
    assert_eq!(ids(&recovered), [id], "the expired lease was not recovered");
    assert!(
        recovered[0].cancel_requested,
        "a recovered reservation must carry the cancel request"
    );
    b.dead_letter(&recovered[0], None, CANCEL_REASON)
        .await
        .or_fail("dead_letter");
    assert!(b.retry_dead(&q, id).await.or_fail("retry_dead"));
    let again = reserve_one(&*b, &q, LONG).await;
    assert!(
        !again.cancel_requested,
        "a retried job starts without the old cancel request"
    );
    assert_eq!(
        b.extend(std::slice::from_ref(&again.lease), LONG)
            .await
            .or_fail("extend"),
        [LeaseStatus::Held],
        "the cancel request must be cleared when the job leaves active"
    );
    assert!(!live(&*b, &q, id).await.or_fail("get_job").cancel_requested);
    b.complete_one(&again.lease).await.or_fail("complete_one");
}

/// Reservation takes the highest priority first and, within a priority,
/// the oldest job first; a released job goes back to its place. Every
/// backend MUST order by priority: ready jobs of every priority count in
/// the stats and are listed.
pub async fn priorities_order_reservations<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "priorities");
    let with = |n: u64, priority: i8| {
        let mut j = job(f, &q, "prio", n);
        j.priority = priority;
        j
    };
    let jobs = vec![
        with(0, 0),
        with(1, 5),
        with(2, -3),
        with(3, 5),
        with(4, 0),
        with(5, 10),
        with(6, -10),
    ];
    let sent: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    for j in jobs {
        enqueue_new(&*b, vec![j]).await;
        f.advance(ms(2)).await;
    }
    assert_eq!(stats(&*b, &q).await.ready, 7, "ready jobs of every priority count");
    let ready = JobQuery::new(q.clone(), JobState::Ready);
    assert_eq!(
        list(&*b, &ready).await.len(),
        7,
        "ready jobs of every priority are listed"
    );
    let first = reserve_now(&*b, &q, 3, LONG).await;
    assert_eq!(
        ids(&first),
        [sent[5], sent[1], sent[3]],
        "highest priority first, FIFO within one"
    );
    assert_eq!(first[1].envelope.priority, 5, "the envelope keeps its priority");
    // A released job goes back to its place among its priority.
    b.release(std::slice::from_ref(&first[2].lease))
        .await
        .or_fail("release");
    let rest = reserve_now(&*b, &q, 10, LONG).await;
    assert_eq!(
        ids(&rest),
        [sent[3], sent[0], sent[4], sent[2], sent[6]],
        "highest priority first, FIFO within one"
    );
    let active = JobQuery::new(q.clone(), JobState::Active);
    assert_eq!(list(&*b, &active).await.len(), 7, "every job is active");
}

/// A job moving back to ready goes back among its own priority, ahead of
/// older jobs of a lower one: retried at once, released, and retried from
/// the dead-letter queue.
pub async fn jobs_return_to_their_priority<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "priority-return");
    let mut low = job(f, &q, "prio", 0);
    low.priority = -5;
    let mut high = job(f, &q, "prio", 1);
    high.priority = 5;
    enqueue_new(&*b, vec![low.clone()]).await;
    f.advance(ms(2)).await;
    enqueue_new(&*b, vec![high.clone()]).await;
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(r.envelope.id, high.id, "highest priority first");
    b.retry_after(&r, Duration::ZERO, failure(f, "once more"))
        .await
        .or_fail("retry_after");
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(r.envelope.id, high.id, "a retried job returns to its priority");
    assert_eq!(r.envelope.priority, 5, "a retried job keeps its priority");
    b.release(std::slice::from_ref(&r.lease)).await.or_fail("release");
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(r.envelope.id, high.id, "a released job returns to its priority");
    b.dead_letter(&r, None, "dead for the test")
        .await
        .or_fail("dead_letter");
    let dead = b.get_dead(&q, high.id).await.or_fail("get_dead");
    assert_eq!(
        dead.map(|d| d.priority),
        Some(high.priority),
        "the dead-letter queue shows the job's priority"
    );
    assert!(b.retry_dead(&q, high.id).await.or_fail("retry_dead"));
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(
        r.envelope.id, high.id,
        "a job retried from the DLQ returns to its priority"
    );
    b.complete_one(&r.lease).await.or_fail("complete_one");
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(r.envelope.id, low.id, "the lower priority comes last");
    b.complete_one(&r.lease).await.or_fail("complete_one");
    assert_eq!(stats(&*b, &q).await.ready, 0, "nothing is left ready");
}

/// The worker registry lists registered workers by id, marks those whose
/// registration expired as gone, updates an entry at each registration,
/// and forgets a deregistered worker.
pub async fn worker_registry<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let tol = f.tolerance();
    // Registered names are global: make them unique per case run.
    let prefix = queue(f, "registry").to_string();
    let q = queue(f, "registry-queue");
    let started = f.now();
    let mut first = WorkerInfo::new(format!("{prefix}-a"), vec![q.clone()], 4, started);
    let second = WorkerInfo::new(format!("{prefix}-b"), vec![q.clone()], 2, started);
    let from = f.now();
    b.register_worker(&second, LONG).await.or_fail("register_worker");
    b.register_worker(&first, ms(300)).await.or_fail("register_worker");
    let to = f.now();
    let mine = |entries: Vec<crate::broker::WorkerEntry>| -> Vec<crate::broker::WorkerEntry> {
        entries.into_iter().filter(|w| w.info.id.starts_with(&prefix)).collect()
    };
    let listed = mine(b.workers().await.or_fail("workers"));
    assert_eq!(
        listed.iter().map(|w| w.info.id.as_str()).collect::<Vec<_>>(),
        [first.id.as_str(), second.id.as_str()],
        "workers by id"
    );
    assert_eq!(listed[0].info, first, "the entry holds what the worker said");
    assert!(listed.iter().all(|w| !w.gone), "a fresh worker is not gone");
    assert_within("last_seen", listed[0].last_seen, from, to, tol);

    first.in_flight = 3;
    b.register_worker(&first, ms(300)).await.or_fail("register_worker");
    let listed = mine(b.workers().await.or_fail("workers"));
    assert_eq!(listed[0].info.in_flight, 3, "a registration replaces the entry");

    f.advance(ms(300) + tol * 3 + ms(1)).await;
    let listed = mine(b.workers().await.or_fail("workers"));
    assert_eq!(listed.len(), 2, "a gone worker is still listed");
    assert!(listed[0].gone, "a worker that stopped heartbeating must show as gone");
    assert!(!listed[1].gone, "a worker within its ttl is not gone");
    b.register_worker(&first, LONG).await.or_fail("register_worker");
    assert!(
        !mine(b.workers().await.or_fail("workers"))[0].gone,
        "a heartbeat revives a worker"
    );

    assert!(b.deregister_worker(&second.id).await.or_fail("deregister_worker"));
    assert!(!b.deregister_worker(&second.id).await.or_fail("deregister_worker"));
    let listed = mine(b.workers().await.or_fail("workers"));
    assert_eq!(
        listed.iter().map(|w| w.info.id.as_str()).collect::<Vec<_>>(),
        [first.id.as_str()],
        "a deregistered worker is not listed"
    );
    assert!(b.deregister_worker(&first.id).await.or_fail("deregister_worker"));
}
