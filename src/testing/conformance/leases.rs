//! Leases: an acknowledged or stale lease is refused by every call.

use super::{
    support::{enqueue_new, expect_all_refused, job, ms, queue, reserve_one, stats, timeless, OrFail, LONG},
    Fixture,
};
use crate::broker::{Lease, LeaseStatus, LeaseToken, Reservation};

/// A lease ends with its acknowledgement: acting on it again is refused.
pub async fn acknowledged_lease_is_gone<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "acked");
    enqueue_new(&*b, vec![job(f, &q, "acked", 0), job(f, &q, "acked", 1)]).await;
    let done = reserve_one(&*b, &q, LONG).await;
    assert_eq!(
        b.complete(std::slice::from_ref(&done.lease)).await.or_fail("complete"),
        [LeaseStatus::Held]
    );
    expect_all_refused(f, &*b, &done).await;

    let released = reserve_one(&*b, &q, LONG).await;
    assert_eq!(
        b.release(std::slice::from_ref(&released.lease))
            .await
            .or_fail("release"),
        [LeaseStatus::Held]
    );
    expect_all_refused(f, &*b, &released).await;
    let again = reserve_one(&*b, &q, LONG).await;
    assert_eq!(again.lease.id, released.lease.id);
    assert_ne!(
        again.lease.token, released.lease.token,
        "a new reservation must carry a new token"
    );
    b.complete_one(&again.lease).await.or_fail("complete_one");

    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.active, s.completed), (0, 0, 2), "{s:?}");
}

/// After a lease expires and the job is recovered, the old token is
/// refused by `complete`, `retry_after`, `dead_letter`, `release` and
/// `extend`, and nothing changes; so is a token never handed out.
pub async fn stale_lease_is_refused<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "stale");
    let lease = ms(200);
    let j = job(f, &q, "stale", 0);
    let sent = j.clone();
    enqueue_new(&*b, vec![j]).await;
    let stale = reserve_one(&*b, &q, lease).await;
    f.advance(lease + f.tolerance()).await;
    let recovered = b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired");
    assert_eq!(recovered.len(), 1, "the expired lease was not recovered");
    let current = recovered[0].lease.clone();
    assert_ne!(current.token, stale.lease.token, "recovery must issue a new token");

    expect_all_refused(f, &*b, &stale).await;
    let forged = Reservation {
        lease: Lease {
            token: LeaseToken(current.token.0.wrapping_add(1_000_003)),
            ..current.clone()
        },
        ..recovered[0].clone()
    };
    expect_all_refused(f, &*b, &forged).await;

    let s = stats(&*b, &q).await;
    assert_eq!(
        (
            s.ready,
            s.scheduled,
            s.active,
            s.dead,
            s.completed,
            s.retried,
            s.dead_lettered
        ),
        (0, 0, 1, 0, 0, 0, 0),
        "a refused call changed the queue: {s:?}"
    );
    // The current holder still owns the job, and refused calls left no trace on it.
    assert_eq!(b.release(&[current]).await.or_fail("release"), [LeaseStatus::Held]);
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(timeless(&r.envelope), timeless(&sent), "a refused call changed the job");
    b.complete_one(&r.lease).await.or_fail("complete_one");
}
