//! Liveness: a node sells again after the world misbehaves. Buyers hang
//! up mid-request, the store stalls or loses replies, stream entries are
//! unreadable or trimmed before a node reads them, and sales end. Each test
//! names the failure it guards against; each fails on the code that had it.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bigtap::store::redis::RedisStore;
use bigtap::store::{AdmitReply, Candidate, Head, PollHead, Store, StoreError};
use bigtap::SaleId;
use reqwest::StatusCode;
use serde_json::json;
use support::store::{Faults, Forward};
use support::*;

/// A client that gives up after `ms`: a buyer who hangs up.
fn impatient(ms: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(ms))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Sends `n` takes that hang up after `ms`, all at once, and waits for
/// them to give up.
async fn hang_ups(node: &Node, sale: &str, prefix: &str, n: usize, ms: u64) {
    let client = impatient(ms);
    let mut calls = Vec::new();
    for i in 0..n {
        let req = client
            .post(node.url(&format!("/v1/sales/{sale}/tickets")))
            .header(
                "authorization",
                format!("Bearer {}", session(&format!("{prefix}{i}"))),
            )
            .send();
        calls.push(tokio::spawn(req));
    }
    let mut gave_up = 0;
    for c in calls {
        // Some are shed at once with 503; the rest hang up.
        if c.await.expect("the call task ran").is_err() {
            gave_up += 1;
        }
    }
    assert!(gave_up > 0, "no buyer hung up: the stall did not hold them");
}

/// True once a fresh buyer wins at `node` within `limit`.
/// Creates `sale` with `stock` units through `node`, open since a second
/// ago and for `open_ms` more, its tickets living `ttl_ms`.
async fn put_open_sale(node: &Node, sale: &str, stock: u64, open_ms: u64, ttl_ms: u64) {
    let now = now_ms();
    let created = node
        .admin(
            reqwest::Method::PUT,
            sale,
            Some(json!({"stock": stock, "starts_at_ms": now - 1000, "ends_at_ms": now + open_ms, "ticket_ttl_ms": ttl_ms})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
}

async fn sells_again(node: &Node, sale: &str, prefix: &str, limit: Duration) -> bool {
    let mut k = 0;
    eventually(limit, || {
        k += 1;
        let user = format!("{prefix}{k}");
        async move { node.take(sale, &user).await.status == StatusCode::CREATED }
    })
    .await
}

async fn ready(node: &Node) -> StatusCode {
    node.get("/readyz").await.status
}

/// One node (16 request slots, leases of 4) with a sale it has sold from;
/// redis-server stalls while 64 buyers hang up after 150 ms, then resumes.
/// With `leak`, the node runs with the old slot leak switched back on.
async fn hang_ups_during_a_store_stall(
    leak: bool,
) -> (support::Node, bigtap::store::embedded::RedisProcess) {
    let redis = redis();
    let node = spawn_node(&redis.url(), |c| {
        c.max_inflight = 16;
        c.lease_max = 4;
        c.redis_timeout_ms = 2000;
        c.test_leak_inflight = leak;
    })
    .await;
    node.open_sale("s", 1000).await;
    assert_eq!(node.take("s", "first").await.status, StatusCode::CREATED);
    redis.pause();
    hang_ups(&node, "s", "gone", 64, 150).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.resume();
    (node, redis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_sells_again_after_buyers_hang_up_during_a_store_stall() {
    let (node, _redis) = hang_ups_during_a_store_stall(false).await;
    assert!(
        sells_again(&node, "s", "fresh", Duration::from_secs(10)).await,
        "the node never sold again after 64 hang-ups during a stall"
    );
    assert_eq!(ready(&node).await, StatusCode::OK);
    let acct = node.accounting("s").await;
    assert_eq!(acct["balanced"], true, "{acct}");
}

/// The negative control of the test above: with the old leak switched
/// back on, the same hang-ups wedge the node, and `/readyz` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_leaks_request_slots_on_hang_ups_wedges_and_readyz_tells_the_balancer() {
    let (node, _redis) = hang_ups_during_a_store_stall(true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        node.take("s", "fresh").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(ready(&node).await, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_refill_whose_buyer_hung_up_still_completes_and_the_node_leases_again() {
    let redis = redis();
    let node = spawn_node(&redis.url(), |c| {
        // Every buyer needs a refill, so the hang-ups lead refills.
        c.lease_max = 1;
        c.redis_timeout_ms = 2000;
        c.lease_ttl_ms = 10_000;
    })
    .await;
    node.open_sale("s", 100).await;
    assert_eq!(node.take("s", "first").await.status, StatusCode::CREATED);

    redis.pause();
    hang_ups(&node, "s", "gone", 4, 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.resume();

    assert!(
        sells_again(&node, "s", "fresh", Duration::from_secs(5)).await,
        "the refill led by a buyer who hung up never ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_caught_in_a_store_stall_is_reported_unknown_and_the_buyer_learns_the_outcome() {
    let redis = redis();
    let node = spawn_node(&redis.url(), |c| {
        c.redis_timeout_ms = 300;
        c.lease_max = 8;
    })
    .await;
    node.open_sale("s", 100).await;
    assert_eq!(node.take("s", "first").await.status, StatusCode::CREATED);

    redis.pause();
    let stalled = node.take("s", "caught").await;
    redis.resume();

    assert_eq!(stalled.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stalled.body["outcome"], "unknown", "{:?}", stalled.body);
    assert!(stalled.headers.contains_key("retry-after"));
    // Whatever Redis did with the commit, the buyer can find out, and a
    // retry agrees with what they are told.
    let mine = node.mine("s", "caught").await;
    let retry = node.take("s", "caught").await;
    match mine.status {
        StatusCode::OK => {
            assert_eq!(mine.body["state"], "pending");
            assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
            assert_eq!(retry.body["ticket"], mine.body["ticket"]);
        }
        StatusCode::NOT_FOUND => {
            assert_eq!(mine.body["outcome"], "none");
            assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
        }
        other => panic!("tickets/mine answered {other}: {:?}", mine.body),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_win_whose_reply_was_lost_is_settled_by_one_lookup_and_answered_201() {
    let redis = redis();
    let (node, flaky) = flaky_node(&redis.url(), |_| {}).await;
    node.open_sale("s", 10).await;
    flaky.admit.store(ADMIT_RUN_THEN_FAIL, Relaxed);
    let won = node.take("s", "lucky").await;
    assert_eq!(won.status, StatusCode::CREATED, "{:?}", won.body);
    let mine = node.mine("s", "lucky").await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body["ticket"], won.body["ticket"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_that_failed_before_reaching_redis_is_unknown_to_the_buyer_and_nothing_is_lost() {
    let redis = redis();
    let (node, flaky) = flaky_node(&redis.url(), |_| {}).await;
    node.open_sale("s", 10).await;
    flaky.admit.store(ADMIT_FAIL_UNSENT, Relaxed);
    let lost = node.take("s", "unlucky").await;
    assert_eq!(lost.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(lost.body["outcome"], "unknown");
    assert_eq!(
        node.mine("s", "unlucky").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(node.take("s", "unlucky").await.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn units_of_its_own_lease_that_the_node_lost_track_of_are_sold_not_reported_sold_out() {
    let redis = redis();
    let (node, flaky) = flaky_node(&redis.url(), |c| {
        // Renewal (which would also repair the drift) only every 10 s.
        c.lease_ttl_ms = 30_000;
    })
    .await;
    node.open_sale("s", 4).await;
    // A commit that never reached Redis: its unit stays out of the local
    // counter but is still in the node's lease.
    flaky.admit.store(ADMIT_FAIL_UNSENT, Relaxed);
    assert_eq!(
        node.take("s", "b0").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let mut won = 0;
    for i in 1..=4 {
        let a = node.take("s", &format!("b{i}")).await;
        assert_eq!(a.status, StatusCode::CREATED, "buyer b{i}: {:?}", a.body);
        won += 1;
    }
    assert_eq!(won, 4);
    assert_eq!(node.take("s", "late").await.body["outcome"], "sold_out");
    let acct = node.accounting("s").await;
    assert_eq!(
        (acct["pending"].as_u64(), acct["balanced"].as_bool()),
        (Some(4), Some(true)),
        "{acct}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_winner_is_not_told_sold_out_by_a_node_whose_view_of_the_pool_is_stale() {
    let redis = redis();
    let url = redis.url();
    let (a, flaky) = flaky_node(&url, |c| c.refresh_ms = 60_000).await;
    let b = node(&url).await;
    a.open_sale("s", 1).await;
    wait_for_sale(&b, "s").await;
    let first = b.take("s", "u1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(a.take("s", "u2").await.body["outcome"], "sold_out");

    // Node a's watcher falls behind (a slow store), then a unit comes back
    // and is won on node b.
    flaky.tail_delay_ms.store(3000, Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ticket = first.body["ticket"].as_str().unwrap().to_owned();
    let released = b
        .backend(reqwest::Method::POST, "s", &format!("{ticket}/release"))
        .await;
    assert_eq!(released.status, StatusCode::OK);
    let second = b.take("s", "u3").await;
    assert_eq!(second.status, StatusCode::CREATED, "{:?}", second.body);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = a.take("s", "u3").await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "a winner was told {:?}",
        again.body
    );
    assert_eq!(again.body["ticket"], second.body["ticket"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_stream_entry_does_not_stop_the_winners_replica() {
    let redis = redis();
    let url = redis.url();
    let a = node(&url).await;
    let b = node(&url).await;
    a.open_sale("s", 2).await;
    wait_for_sale(&b, "s").await;
    let mut con = redis_con(&url).await;
    let _: String = redis::cmd("XADD")
        .arg("bigtap:{s}:orders")
        .arg("*")
        .arg("junk")
        .arg("not an order")
        .query_async(&mut con)
        .await
        .unwrap();
    for u in ["w1", "w2"] {
        assert_eq!(b.take("s", u).await.status, StatusCode::CREATED);
    }
    assert_eq!(a.take("s", "loser0").await.body["outcome"], "sold_out");
    assert!(
        losers_cost_no_lookup(&a, &mut con).await,
        "node a keeps asking Redis about losers: its replica never learnt b's winners"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_missed_trimmed_stream_entries_still_knows_every_winner() {
    let redis = redis();
    let url = redis.url();
    let (a, flaky) = flaky_node(&url, |_| {}).await;
    let b = node(&url).await;
    a.open_sale("s", 2).await;
    wait_for_sale(&b, "s").await;
    // Node a stops reading the stream; b sells out; the delivered entries
    // are trimmed before a reads them.
    flaky.tail_blocked.store(true, Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for u in ["w1", "w2"] {
        assert_eq!(b.take("s", u).await.status, StatusCode::CREATED);
    }
    let mut con = redis_con(&url).await;
    let _: u64 = redis::cmd("XTRIM")
        .arg("bigtap:{s}:orders")
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut con)
        .await
        .unwrap();
    flaky.tail_blocked.store(false, Relaxed);
    assert_eq!(a.take("s", "loser0").await.body["outcome"], "sold_out");
    assert!(
        losers_cost_no_lookup(&a, &mut con).await,
        "node a does not know the winners whose entries were trimmed"
    );
    assert_eq!(a.take("s", "w1").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_that_is_over_and_settled_costs_the_store_nothing_until_it_reopens() {
    let redis = redis();
    let url = redis.url();
    let node = node(&url).await;
    put_open_sale(&node, "s", 2, 1500, 600_000).await;
    let won = node.take("s", "w1").await;
    assert_eq!(won.status, StatusCode::CREATED);
    let ticket = won.body["ticket"].as_str().unwrap().to_owned();
    let paid = node
        .backend(reqwest::Method::POST, "s", &format!("{ticket}/confirm"))
        .await;
    assert_eq!(paid.status, StatusCode::OK);

    let con = redis_con(&url).await;
    let quiet = eventually(Duration::from_secs(10), || {
        let con = con.clone();
        async move {
            let mut con = con;
            let before = calls(&mut con, &["xread", "evalsha", "hmget"]).await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            calls(&mut con, &["xread", "evalsha", "hmget"]).await == before
        }
    })
    .await;
    assert!(quiet, "an ended, settled sale is still read from the store");
    assert_eq!(node.take("s", "late").await.body["outcome"], "ended");
    assert_eq!(node.mine("s", "w1").await.body["state"], "confirmed");

    // Its window moves: the sale sells again.
    let now = now_ms();
    let moved = node
        .admin(
            reqwest::Method::PUT,
            "s",
            Some(json!({"starts_at_ms": now - 1000, "ends_at_ms": now + 3_600_000, "ticket_ttl_ms": 600_000})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert!(sells_again(&node, "s", "reopened", Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_reads_every_lease_record_only_once_in_25_refreshes() {
    let redis = redis();
    let url = redis.url();
    // Refreshing every 50 ms: 40 refreshes in 2 s.
    let node = spawn_node(&url, |c| c.refresh_ms = 50).await;
    node.open_sale("s", 100).await;
    assert_eq!(node.take("s", "w").await.status, StatusCode::CREATED);
    let mut con = redis_con(&url).await;
    let before = calls(&mut con, &["hvals"]).await;
    while_a_buyer_asks(&node, "s", Duration::from_secs(2)).await;
    let cross_checks = calls(&mut con, &["hvals"]).await - before;
    // The full cross-check reads every lease record (O(fleet)); the other
    // refreshes read settings and counters only.
    assert!(
        (1..=3).contains(&cross_checks),
        "{cross_checks} full cross-checks in 40 refreshes"
    );
}

/// The full cross-check reads every lease record, so a check per node per
/// round would cost a selling fleet the square of its size: once many
/// nodes hold a lease, each node checks less often (once in 5 rounds with
/// 100 lease holders), and the fleet about 20 times a round in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_spaces_its_cross_checks_out_once_many_nodes_hold_a_lease() {
    let redis = redis();
    let url = redis.url();
    // Refreshing every 50 ms: a round of 25 refreshes is 1.25 s.
    let node = spawn_node(&url, |c| c.refresh_ms = 50).await;
    node.open_sale("s", 1000).await;
    let store = RedisStore::open(&url, "bigtap", Duration::from_secs(2), None).unwrap();
    let sale = SaleId::parse("s").unwrap();
    for i in 0..100 {
        let granted = store
            .lease(&sale, &format!("other-{i}"), 1, 600_000)
            .await
            .unwrap();
        assert!(matches!(
            granted,
            bigtap::store::LeaseReply::Granted { granted: 1, .. }
        ));
    }
    // The node's next check (within a round) sees the 100 records. A
    // buyer keeps asking, or the sale would be dormant and its views
    // (hence checks) rare whatever their spacing.
    while_a_buyer_asks(&node, "s", Duration::from_secs(2)).await;
    let mut con = redis_con(&url).await;
    let before = calls(&mut con, &["hvals"]).await;
    while_a_buyer_asks(&node, "s", Duration::from_secs(4)).await;
    let checks = calls(&mut con, &["hvals"]).await - before;
    // A check every round would be 3 or 4 in 4 s.
    assert!(checks <= 1, "{checks} full cross-checks in 4 s");
    let acct = node.accounting("s").await;
    assert_eq!(acct["balanced"], true, "{acct}");
}

/// What a node costs the store while its sale is quiet is paid once per
/// node, so it grows with the fleet, and it is the round trips that cost:
/// once reads of the winners digest find nothing new, a node polls less
/// often, at most 5 times a second while units remain and 10 while the sale
/// may be sold out, and each poll carries whatever else is due: the
/// settings and counters (every 200 ms, as deployed) and, while the sale
/// may be sold out, the pool that renews the sold-out proof. The proof
/// stays fresh all along: losers still cost no lookup. (A buyer keeps
/// asking meanwhile: a sale nobody asks about is dormant, next test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_sale_is_polled_less_often_each_poll_carrying_the_view_and_the_proof_stays_fresh() {
    let redis = redis();
    let url = redis.url();
    let (node, polls) = polled_node_after_one_win(&url).await;
    let mut con = redis_con(&url).await;
    let node = &node;
    let quiet = |con: &mut redis::aio::MultiplexedConnection| {
        let mut con = con.clone();
        let polls = polls.clone();
        async move {
            // Quiet by now; then two seconds of polls.
            while_a_buyer_asks(node, "s", Duration::from_secs(1)).await;
            let before = (calls(&mut con, &["getrange"]).await, polls.count());
            while_a_buyer_asks(node, "s", Duration::from_secs(2)).await;
            let after = (calls(&mut con, &["getrange"]).await, polls.count());
            (after.0 - before.0, after.1 - before.1)
        }
    };
    // Every 50 ms, as while wins come, would be 40 digest reads.
    let (reads, open) = quiet(&mut con).await;
    assert!(
        (5..=12).contains(&reads),
        "{reads} digest reads in 2 s of a quiet open sale"
    );
    assert_eq!(
        open.total(),
        reads,
        "a digest read outside a poll: {open:?}"
    );
    // Every 25th view is the full accounting, a script of its own.
    assert!(
        open.view + 2 >= open.total(),
        "polls without the view: {open:?}"
    );

    assert_eq!(node.take("s", "last").await.status, StatusCode::CREATED);
    let (reads, sold_out) = quiet(&mut con).await;
    assert!(
        (12..=24).contains(&reads),
        "{reads} digest reads in 2 s of a quiet sold-out sale"
    );
    assert_eq!(
        sold_out.nothing, 0,
        "polls of a sold-out sale without the pool: {sold_out:?}"
    );
    assert!(
        sold_out.view + 2 >= sold_out.total() / 2,
        "the view does not ride on every other poll: {sold_out:?}"
    );
    assert!(losers_cost_no_lookup(node, &mut con).await);
}

/// Most of a large fleet's nodes are asked nothing about most sales most
/// of the time, so what the store pays for a node nobody asks is what a
/// big idle fleet costs it. Two seconds after its last buyer, a sale is
/// dormant on a node: one poll every 0.8 s, open or sold out. The first
/// buyer back wakes the watcher, and a flood of losers that comes back
/// waits for that one poll instead of each asking the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_nobody_asks_about_is_polled_seldom_and_losers_who_come_back_wait_for_one_poll() {
    let redis = redis();
    let (node, polls) = polled_node_after_one_win(&redis.url()).await;
    let dormant = || async {
        // Dormant two seconds after the last buyer; then 2.4 s of polls.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let before = polls.count();
        tokio::time::sleep(Duration::from_millis(2400)).await;
        polls.count() - before
    };
    // Awake and quiet, 12 polls in 2.4 s (previous test).
    let open = dormant().await;
    assert!(
        (2..=4).contains(&open.total()),
        "{open:?} in 2.4 s of an open sale nobody asks about"
    );
    assert!(
        open.view + 1 >= open.total(),
        "polls without the view: {open:?}"
    );

    assert_eq!(node.take("s", "last").await.status, StatusCode::CREATED);
    // The first loser's lease call finds the pool empty: sold out here.
    assert_eq!(node.take("s", "early").await.body["outcome"], "sold_out");
    let sold_out = dormant().await;
    assert!(
        (2..=4).contains(&sold_out.total()),
        "{sold_out:?} in 2.4 s of a sold-out sale nobody asks about"
    );
    assert_eq!(sold_out.nothing, 0, "polls without the pool: {sold_out:?}");

    // The proof is long stale now (it lasts 250 ms). Forty losers at once:
    // each answered from memory, none looked up.
    let before = polls.lookups.load(Relaxed);
    let polled = polls.count();
    let answers = futures::future::join_all((0..40).map(|i| {
        let node = &node;
        async move { node.take("s", &format!("back{i}")).await }
    }))
    .await;
    for a in &answers {
        assert_eq!(a.body["outcome"], "sold_out", "{:?}", a.body);
    }
    assert_eq!(
        polls.lookups.load(Relaxed) - before,
        0,
        "losers coming back to a dormant sale were looked up one by one"
    );
    assert!(
        polls.count().total() > polled.total(),
        "the first buyer back did not wake the watcher"
    );
}

/// A reclaim call finds expired leases; while no unit is leased there is
/// none to find, and a call per sale per node every half lease TTL is
/// what an idle fleet would pay for nothing. A node skips it while its view
/// shows no unit leased, and still brings back a dead node's units once
/// one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_calls_reclaim_only_while_units_are_leased_and_a_dead_nodes_units_still_come_back() {
    let redis = redis();
    let url = redis.url();
    // Lease TTL 1 s: a reclaim call every 0.5 s, 4 in 2 s.
    let (node, polls) = node_with(&url, Polls::default(), |_| {}).await;
    node.open_sale("s", 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = polls.reclaims.load(Relaxed);
    while_a_buyer_asks(&node, "s", Duration::from_secs(2)).await;
    assert_eq!(
        polls.reclaims.load(Relaxed) - before,
        0,
        "reclaim calls while no unit is leased"
    );

    // A node that leases two units and dies.
    let store = RedisStore::open(&url, "bigtap", Duration::from_secs(2), None).unwrap();
    let granted = store
        .lease(&SaleId::parse("s").unwrap(), "dead", 2, 800)
        .await
        .unwrap();
    assert!(matches!(
        granted,
        bigtap::store::LeaseReply::Granted { granted: 2, .. }
    ));
    // Every unit sells through the live node, the dead node's two once
    // their lease has expired and been reclaimed.
    for i in 0..5 {
        let sells = eventually(Duration::from_secs(8), || async {
            node.take("s", &format!("buyer{i}")).await.status == StatusCode::CREATED
        })
        .await;
        assert!(sells, "unit {} of 5 never sold", i + 1);
    }
    assert!(
        polls.reclaims.load(Relaxed) > before,
        "no reclaim call at all"
    );
}

/// A sweep every `--sweep-ms` from every node would cost the store the
/// size of the fleet each period, for nothing while no ticket is due: a
/// node sweeps when the sweep before said the next pending ticket falls
/// due, and the unit comes back within a period of that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_sweeps_when_a_ticket_falls_due_not_every_period() {
    let redis = redis();
    let url = redis.url();
    // Checking every 100 ms (the test nodes' setting): 10 sweeps a second.
    let node = spawn_node(&url, |c| c.sweep_ms = 100).await;
    put_open_sale(&node, "s", 1, 600_000, 2500).await;
    let won = node.take("s", "unpaid").await;
    assert_eq!(won.status, StatusCode::CREATED);
    let mut con = redis_con(&url).await;
    // Only `sweep.lua` reads the old expiry index.
    let before = calls(&mut con, &["zrangebyscore"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sweeps = calls(&mut con, &["zrangebyscore"]).await - before;
    assert!(
        sweeps <= 1,
        "{sweeps} sweeps in 1.5 s while the only ticket is not due"
    );
    assert_eq!(node.take("s", "early").await.body["outcome"], "sold_out");
    // It falls due 2.5 s after the win: its unit sells again soon after.
    assert!(sells_again(&node, "s", "later", Duration::from_secs(3)).await);
}

/// A node as deployed (settings read every 200 ms) whose polls are counted,
/// on an open sale `s` of 2 units, one of them sold.
async fn polled_node_after_one_win(url: &str) -> (Node, Arc<Forward<Polls>>) {
    let deployed = bigtap::ServeConfig::defaults().refresh_ms;
    let (node, polls) = node_with(url, Polls::default(), |c| c.refresh_ms = deployed).await;
    node.open_sale("s", 2).await;
    assert_eq!(node.take("s", "first").await.status, StatusCode::CREATED);
    (node, polls)
}

/// A node's polls, by what they read before the digest, its buyers'
/// lookups by user, and its reclaim calls.
#[derive(Default)]
struct Polls {
    nothing: AtomicU64,
    pool: AtomicU64,
    view: AtomicU64,
    lookups: AtomicU64,
    reclaims: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PollCount {
    nothing: u64,
    pool: u64,
    view: u64,
}

impl PollCount {
    fn total(&self) -> u64 {
        self.nothing + self.pool + self.view
    }
}

impl std::ops::Sub for PollCount {
    type Output = PollCount;
    fn sub(self, o: PollCount) -> PollCount {
        PollCount {
            nothing: self.nothing - o.nothing,
            pool: self.pool - o.pool,
            view: self.view - o.view,
        }
    }
}

impl Polls {
    fn count(&self) -> PollCount {
        PollCount {
            nothing: self.nothing.load(Relaxed),
            pool: self.pool.load(Relaxed),
            view: self.view.load(Relaxed),
        }
    }
}

#[async_trait]
impl Faults for Polls {
    async fn poll(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        head: PollHead,
        offset: u64,
        max: u64,
    ) -> Result<(Head, Vec<u8>), StoreError> {
        match head {
            PollHead::Nothing => &self.nothing,
            PollHead::Pool => &self.pool,
            PollHead::View => &self.view,
        }
        .fetch_add(1, Relaxed);
        inner.poll(sale, head, offset, max).await
    }
    async fn winner(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        user: &bigtap::UserId,
    ) -> Result<Option<bigtap::sale::TicketRecord>, StoreError> {
        self.lookups.fetch_add(1, Relaxed);
        inner.winner(sale, user).await
    }
    async fn reclaim(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        every: Duration,
    ) -> Result<(u64, u64), StoreError> {
        self.reclaims.fetch_add(1, Relaxed);
        inner.reclaim(sale, every).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tickets_mine_answers_before_during_and_after_the_window() {
    let redis = redis();
    let node = node(&redis.url()).await;
    let now = now_ms();
    let spec = |starts: u64, ends: u64| json!({"stock": 5, "starts_at_ms": starts, "ends_at_ms": ends, "ticket_ttl_ms": 600_000});
    node.admin(reqwest::Method::PUT, "s", Some(spec(now + 600, now + 2000)))
        .await;
    let before = node.mine("s", "u1").await;
    assert_eq!(
        (before.status, before.body["outcome"].as_str()),
        (StatusCode::NOT_FOUND, Some("none"))
    );
    assert!(
        eventually(Duration::from_secs(3), || async {
            node.take("s", "u1").await.status == StatusCode::CREATED
        })
        .await
    );
    let during = node.mine("s", "u1").await;
    assert_eq!(during.status, StatusCode::OK);
    assert_eq!(during.body["state"], "pending");
    assert_eq!(during.body["outcome"], "won");
    assert!(
        eventually(Duration::from_secs(4), || async {
            node.get("/v1/sales/s").await.body["state"] == "ended"
        })
        .await
    );
    let after = node.mine("s", "u1").await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.body["ticket"], during.body["ticket"]);
    assert_eq!(node.mine("s", "u2").await.status, StatusCode::NOT_FOUND);
    let anonymous = node.get("/v1/sales/s/tickets/mine").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(node.mine("nope", "u1").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_fails_readiness_but_not_liveness() {
    let redis = redis();
    let node = spawn_node(&redis.url(), |c| c.redis_timeout_ms = 300).await;
    assert_eq!(ready(&node).await, StatusCode::OK);
    redis.pause();
    let r = node.get("/readyz").await;
    let h = node.get("/healthz").await;
    redis.resume();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["reason"], "store");
    assert_eq!(h.status, StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(3), || async {
            ready(&node).await == StatusCode::OK
        })
        .await
    );
}

// ---------------------------------------------------------------------------
// Helpers

async fn wait_for_sale(node: &Node, sale: &str) {
    assert!(
        eventually(Duration::from_secs(5), || async {
            node.get(&format!("/v1/sales/{sale}")).await.status == StatusCode::OK
        })
        .await,
        "the sale never reached {}",
        node.base
    );
}

/// Calls of the named commands so far, from `INFO commandstats`.
async fn calls(con: &mut redis::aio::MultiplexedConnection, commands: &[&str]) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            commands.contains(&name).then_some(())?;
            rest.split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// True once ten losers in a row at `node` are refused without one winner
/// lookup reaching Redis.
/// Waits `d` while a buyer asks the node about `sale` every 250 ms (their
/// own ticket), so the sale is not dormant there meanwhile.
async fn while_a_buyer_asks(node: &Node, sale: &str, d: Duration) {
    let asking = async {
        loop {
            let _ = node.mine(sale, "browsing").await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::select! {
        _ = asking => {}
        _ = tokio::time::sleep(d) => {}
    }
}

async fn losers_cost_no_lookup(node: &Node, con: &mut redis::aio::MultiplexedConnection) -> bool {
    let mut round = 0;
    let con = con.clone();
    eventually(Duration::from_secs(5), || {
        round += 1;
        let mut con = con.clone();
        async move {
            let before = calls(&mut con, &["hget"]).await;
            for i in 0..10 {
                let a = node.take("s", &format!("loser{round}x{i}")).await;
                assert_eq!(a.body["outcome"], "sold_out", "{:?}", a.body);
            }
            calls(&mut con, &["hget"]).await == before
        }
    })
    .await
}

const ADMIT_PASS: u8 = 0;
/// The next admit fails without reaching Redis.
const ADMIT_FAIL_UNSENT: u8 = 1;
/// The next admit runs in Redis, and its reply is lost.
const ADMIT_RUN_THEN_FAIL: u8 = 2;

/// Switches in the way of the Redis store: lose an admit, slow or stop the
/// watcher.
struct Flaky {
    admit: AtomicU8,
    tail_delay_ms: AtomicU64,
    tail_blocked: AtomicBool,
}

async fn flaky_node(
    url: &str,
    tweak: impl FnOnce(&mut bigtap::ServeConfig),
) -> (Node, Arc<Forward<Flaky>>) {
    let flaky = Flaky {
        admit: AtomicU8::new(ADMIT_PASS),
        tail_delay_ms: AtomicU64::new(0),
        tail_blocked: AtomicBool::new(false),
    };
    node_with(url, flaky, tweak).await
}

/// A node whose store is Redis behind `faults`.
async fn node_with<F: Faults>(
    url: &str,
    faults: F,
    tweak: impl FnOnce(&mut bigtap::ServeConfig),
) -> (Node, Arc<Forward<F>>) {
    let inner = RedisStore::open(url, "bigtap", Duration::from_millis(500), None).unwrap();
    inner.wait_ready(Duration::from_secs(5)).await.unwrap();
    let store = Arc::new(Forward::new(inner, faults));
    let node = spawn_node_on(store.clone(), url, tweak).await;
    (node, store)
}

fn lost() -> StoreError {
    StoreError::Timeout(Duration::from_millis(1))
}

#[async_trait]
impl Faults for Flaky {
    async fn admit(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        batch: &[Candidate],
    ) -> Result<AdmitReply, StoreError> {
        match self.admit.swap(ADMIT_PASS, Relaxed) {
            ADMIT_FAIL_UNSENT => Err(lost()),
            ADMIT_RUN_THEN_FAIL => {
                inner.admit(sale, node, epoch, batch).await?;
                Err(lost())
            }
            _ => inner.admit(sale, node, epoch, batch).await,
        }
    }
    async fn poll(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        head: PollHead,
        offset: u64,
        max: u64,
    ) -> Result<(Head, Vec<u8>), StoreError> {
        if self.tail_blocked.load(Relaxed) {
            return Err(lost());
        }
        let read = inner.poll(sale, head, offset, max).await;
        let delay = self.tail_delay_ms.load(Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        read
    }
}

/// A store that runs out of memory (`maxmemory` reached, `noeviction`)
/// refuses every write, answering `-OOM` before a script's first write.
/// Buyers are told 503 "nothing was taken" while it lasts (Redis said no,
/// so the outcome is known), the node takes its units back rather than
/// writing them off as unknown, and once memory is freed it sells again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_out_of_memory_is_503_takes_nothing_and_the_node_sells_again_once_memory_is_freed()
{
    let redis = redis();
    let lease_max = 4;
    let node = spawn_node(&redis.url(), |c| c.lease_max = lease_max).await;
    node.open_sale("s", 100).await;
    assert_eq!(node.take("s", "before").await.status, StatusCode::CREATED);
    let mut con = redis_con(&redis.url()).await;
    fill_memory(&mut con).await;
    // More buyers than the node holds units: some commit units it leased
    // before, the rest need a new lease.
    for i in 0..3 * lease_max {
        let a = node.take("s", &format!("full{i}")).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", a.body);
        assert_eq!(a.body, json!({"error": "unavailable"}), "full{i}");
        assert!(a.headers.contains_key("retry-after"), "full{i}");
    }
    set_maxmemory(&mut con, 0).await;
    assert!(
        sells_again(&node, "s", "freed", Duration::from_secs(10)).await,
        "the node never sold again once memory was freed"
    );
    let acct = node.accounting("s").await;
    assert_eq!(acct["balanced"], true, "{acct}");
    // Units written off as of unknown outcome would stay in the node's
    // lease on top of a fresh one.
    assert!(
        acct["leased"].as_u64().unwrap() <= u64::from(lease_max),
        "the node holds units it lost track of: {acct}"
    );
    assert_eq!(acct["pending"], 2, "{acct}");
}
