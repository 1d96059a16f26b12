//! What the store benchmarks share: a sale whose whole stock is leased to
//! one node, and batches of fresh buyers committed against it, every one of
//! them expected to win (a benchmark times wins, not refusals).

use bigtap::sale::{Eligibility, SaleSpec};
use bigtap::store::redis::RedisStore;
use bigtap::store::{AdmitReply, Candidate, LeaseReply, Store, Verdict};
use bigtap::{SaleId, TicketId, UserId};

/// The node name the benchmarks lease and commit under.
pub const NODE: &str = "bench";

/// Opens `sale` with `units` units and leases all of them to [`NODE`];
/// returns the lease's epoch.
pub async fn leased_sale(store: &RedisStore, sale: &SaleId, units: u64) -> u64 {
    let now = bigtap::clock::unix_ms();
    let spec = SaleSpec {
        stock: Some(units),
        starts_at_ms: now - 1000,
        ends_at_ms: now + 3_600_000,
        ticket_ttl_ms: 600_000,
        eligibility: Eligibility::Open,
    };
    store.put_sale(sale, &spec).await.expect("put_sale");
    let LeaseReply::Granted { epoch, granted, .. } = store
        .lease(sale, NODE, units, 600_000)
        .await
        .expect("lease")
    else {
        panic!("the lease was refused")
    };
    assert_eq!(granted, units, "lease short of the stock");
    epoch
}

/// `k` buyers named `{prefix}u{n}`, counting on from `*n`.
pub fn buyers(prefix: &str, n: &mut usize, k: usize) -> Vec<Candidate> {
    (0..k)
        .map(|_| {
            *n += 1;
            let user = UserId::parse(&format!("{prefix}u{n}")).expect("user id");
            Candidate {
                user,
                ticket: TicketId::for_user(&user),
                ship_to: None,
            }
        })
        .collect()
}

/// Commits `batch` in one `admit` call and checks that every buyer won.
pub async fn admit_all(store: &RedisStore, sale: &SaleId, epoch: u64, batch: &[Candidate]) {
    let reply = store.admit(sale, NODE, epoch, batch).await.expect("admit");
    let AdmitReply::Judged { verdicts, .. } = reply else {
        panic!("admit refused: {reply:?}")
    };
    assert!(
        verdicts.iter().all(|v| matches!(v, Verdict::WonAt(..))),
        "a benchmarked commit did not win: {verdicts:?}"
    );
}
