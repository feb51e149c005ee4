//! Cancellation: a backend whose `reserve` is cancel-safe leaves nothing
//! leased by a reserve call dropped part-way.

use std::time::Duration;

use super::{
    support::{enqueue_new, job, ms, queue, request, reserve_now, stats, OrFail, GUARD, LONG},
    Fixture,
};

/// When [`reserve_is_cancel_safe`](crate::Broker::reserve_is_cancel_safe)
/// is `true`, reserve calls dropped at any point (before, during and after
/// the backend leases, and while waiting for work) leave no job leased:
/// every job is reserved exactly once by the calls that returned and a
/// final one. A backend that says `false` is not checked.
pub async fn dropped_reserve_leaves_nothing_leased<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    if !b.reserve_is_cancel_safe() {
        return;
    }
    let q = queue(f, "dropped");
    let total = 12;
    enqueue_new(&*b, (0..total).map(|n| job(f, &q, "dropped", n)).collect()).await;
    let mut taken = 0;
    for i in 0..60u64 {
        let patience = Duration::from_micros(i * 97 % 1_500);
        let call = b.reserve(&q, request(3, LONG, ms(20)));
        if let Ok(reserved) = tokio::time::timeout(patience, call).await {
            let leases: Vec<_> = reserved.or_fail("reserve").into_iter().map(|r| r.lease).collect();
            taken += leases.len() as u64;
            b.complete(&leases).await.or_fail("complete");
        }
    }
    // A backend may hand back what a dropped call leased in the background.
    let mut waited = Duration::ZERO;
    while stats(&*b, &q).await.active > 0 {
        assert!(
            waited < GUARD,
            "jobs stayed leased after their reserve calls were dropped"
        );
        f.advance(ms(10)).await;
        waited += ms(10);
    }
    let rest = reserve_now(&*b, &q, 100, LONG).await;
    assert_eq!(taken + rest.len() as u64, total, "every job is reserved exactly once");
}
