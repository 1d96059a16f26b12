//! Node-local admission logic on a manual clock and paused tokio time.
//!
//! The store here is a small in-process double of the [`Store`] trait that
//! keeps one node's pool, lease and winners: enough for what these tests
//! are about (the lease counter, single-flight refills, the sold-out
//! proof, the ticket cache, batching and settling of commits). What Redis
//! itself decides is tested against a real redis-server in `tests/`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::commit::{CommitCtx, Committer};
use super::lease::LeaseCtx;
use super::stock::{Sale, PROOF_FRESH_MS};
use super::{Admission, Answer, Door, Outcome, Turned, PROOF_WAIT};
use crate::clock::{Clock, ManualClock};
use crate::id::{SaleId, TicketId, UserId};
use crate::metrics::Metrics;
use crate::sale::{
    Placement, Pool, PutOutcome, SaleSpec, Snapshot, StockChange, TicketRecord, TicketState,
    Transition,
};
use crate::store::{
    AdmitReply, Candidate, LeaseReply, RenewReply, ReturnReply, SafetyReport, Store, StoreError,
    Verdict,
};

const START_MS: u64 = 1_000_000;
const TTL_MS: u64 = 60_000;

/// One node's view of a sale's records, kept in memory.
#[derive(Default)]
struct Books {
    pool: u64,
    /// This node's lease balance (epoch 1 once leased).
    lease_units: u64,
    wins: HashMap<UserId, TicketRecord>,
    lease_calls: usize,
    winner_calls: usize,
    /// Candidates per `admit` call, in call order.
    batches: Vec<usize>,
    /// The lease epoch each `admit` call named, in call order.
    epochs: Vec<u64>,
}

/// The in-process store double (see the module docs).
struct Fake {
    books: Mutex<Books>,
    /// `admit` waits until this is true before judging (a slow store).
    admit_gate: watch::Sender<bool>,
    /// `admit` records the wins and then never answers (a lost reply).
    lose_admit_replies: AtomicBool,
    admits_started: AtomicUsize,
    /// What `sales` lists and `snapshot` answers per sale; a sale listed
    /// without a snapshot cannot be read (its `snapshot` fails).
    listed: Mutex<Vec<(SaleId, Option<Snapshot>)>>,
    /// Runs while the next `lease` call is out (what other tasks of the
    /// node do meanwhile).
    during_lease: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Fake {
    fn with_pool(units: u64) -> Arc<Fake> {
        let f = Fake {
            books: Mutex::new(Books {
                pool: units,
                ..Books::default()
            }),
            admit_gate: watch::Sender::new(true),
            lose_admit_replies: AtomicBool::new(false),
            admits_started: AtomicUsize::new(0),
            listed: Mutex::new(Vec::new()),
            during_lease: Mutex::new(None),
        };
        Arc::new(f)
    }

    fn hold_admit(&self, hold: bool) {
        self.admit_gate.send_replace(!hold);
    }

    fn books(&self) -> parking_lot::MutexGuard<'_, Books> {
        self.books.lock()
    }
}

fn not_here() -> StoreError {
    StoreError::Protocol {
        script: "double",
        detail: "not used by admission".into(),
    }
}

#[async_trait]
impl Store for Fake {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn safety(&self) -> Result<SafetyReport, StoreError> {
        Err(not_here())
    }
    async fn sales(&self) -> Result<Vec<SaleId>, StoreError> {
        Ok(self.listed.lock().iter().map(|(id, _)| *id).collect())
    }
    async fn put_sale(&self, _: &SaleId, _: &SaleSpec) -> Result<PutOutcome, StoreError> {
        Err(not_here())
    }
    async fn add_stock(&self, _: &SaleId, _: i64) -> Result<StockChange, StoreError> {
        Err(not_here())
    }
    async fn add_eligible(&self, _: &SaleId, _: &[UserId]) -> Result<Option<u64>, StoreError> {
        Err(not_here())
    }
    async fn close(&self, _: &SaleId) -> Result<bool, StoreError> {
        Err(not_here())
    }
    async fn snapshot(&self, sale: &SaleId) -> Result<Option<Snapshot>, StoreError> {
        match self.listed.lock().iter().find(|(id, _)| id == sale) {
            Some((_, Some(snap))) => Ok(Some(*snap)),
            Some((_, None)) => Err(not_here()),
            None => Ok(None),
        }
    }
    async fn eligible_users(&self, _: &SaleId) -> Result<Vec<UserId>, StoreError> {
        Err(not_here())
    }

    async fn lease(
        &self,
        _: &SaleId,
        _: &str,
        want: u64,
        _: u64,
    ) -> Result<LeaseReply, StoreError> {
        // A round trip: other buyers run meanwhile.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let meanwhile = self.during_lease.lock().take();
        if let Some(f) = meanwhile {
            f();
        }
        let mut b = self.books();
        b.lease_calls += 1;
        let granted = want.min(b.pool);
        b.pool -= granted;
        b.lease_units += granted;
        Ok(LeaseReply::Granted {
            granted,
            epoch: 1,
            lease_units: b.lease_units,
            expires_at_ms: u64::MAX,
            available: b.pool,
            leased: b.lease_units,
            orders_enqueued: b.wins.len() as u64,
        })
    }
    async fn renew(&self, _: &SaleId, _: &str, _: u64, _: u64) -> Result<RenewReply, StoreError> {
        Err(not_here())
    }
    async fn return_lease(&self, _: &SaleId, _: &str, _: u64) -> Result<ReturnReply, StoreError> {
        Err(not_here())
    }
    async fn reclaim(&self, _: &SaleId, _: std::time::Duration) -> Result<(u64, u64), StoreError> {
        Err(not_here())
    }

    async fn admit(
        &self,
        _: &SaleId,
        _: &str,
        epoch: u64,
        batch: &[Candidate],
    ) -> Result<AdmitReply, StoreError> {
        self.admits_started.fetch_add(1, SeqCst);
        let mut gate = self.admit_gate.subscribe();
        if gate.wait_for(|open| *open).await.is_err() {
            return Err(not_here());
        }
        let verdicts = {
            let mut b = self.books();
            b.batches.push(batch.len());
            b.epochs.push(epoch);
            batch
                .iter()
                .map(|c| {
                    if let Some(rec) = b.wins.get(&c.user) {
                        return Verdict::Replay(rec.issued());
                    }
                    if b.lease_units == 0 {
                        return Verdict::NoUnits;
                    }
                    b.lease_units -= 1;
                    let rec = TicketRecord {
                        ticket: c.ticket,
                        user: c.user,
                        state: TicketState::Pending,
                        issued_at_ms: START_MS,
                        expires_at_ms: START_MS + TTL_MS,
                        warehouse: Placement::default_warehouse().warehouse,
                    };
                    b.wins.insert(c.user, rec);
                    Verdict::Won(rec.issued())
                })
                .collect::<Vec<_>>()
        };
        if self.lose_admit_replies.load(SeqCst) {
            std::future::pending::<()>().await;
        }
        let digests_len = 8 * self.books().wins.len() as u64;
        Ok(AdmitReply::Judged {
            lease_units_left: self.books().lease_units,
            digests_len,
            verdicts,
        })
    }

    async fn winner(&self, _: &SaleId, user: &UserId) -> Result<Option<TicketRecord>, StoreError> {
        let mut b = self.books();
        b.winner_calls += 1;
        Ok(b.wins.get(user).copied())
    }
    async fn ticket(&self, _: &SaleId, _: &TicketId) -> Result<Option<TicketRecord>, StoreError> {
        Err(not_here())
    }
    async fn confirm(&self, _: &SaleId, _: &TicketId) -> Result<Transition, StoreError> {
        Err(not_here())
    }
    async fn release(&self, _: &SaleId, _: &TicketId) -> Result<Transition, StoreError> {
        Err(not_here())
    }
    async fn sweep(&self, _: &SaleId, _: u64) -> Result<crate::store::Swept, StoreError> {
        Err(not_here())
    }
    async fn read_digests(&self, _: &SaleId, _: u64, _: u64) -> Result<Vec<u8>, StoreError> {
        Err(not_here())
    }
    async fn pool(&self, _: &SaleId) -> Result<Option<Pool>, StoreError> {
        Err(not_here())
    }
}

/// A buyer the door always lets in.
struct Let(UserId);

impl Door for Let {
    fn identify(&self, _: u64) -> Result<UserId, Turned> {
        Ok(self.0)
    }
    fn pace(&self, _: &UserId) -> Result<(), Turned> {
        Ok(())
    }
}

/// A door that lets the buyer in and counts how often it was asked.
struct Counting {
    user: UserId,
    asked: std::sync::atomic::AtomicUsize,
}

impl Door for Counting {
    fn identify(&self, _: u64) -> Result<UserId, Turned> {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.user)
    }
    fn pace(&self, _: &UserId) -> Result<(), Turned> {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

fn user(i: usize) -> Let {
    Let(UserId::parse(&format!("u{i}")).expect("an id"))
}

/// One sale on one node, on a manual clock, with `units` in the pool.
struct Rig {
    admission: Arc<Admission>,
    sale: Arc<Sale>,
    store: Arc<Fake>,
    clock: ManualClock,
    stop: CancellationToken,
}

impl Rig {
    /// Batches never wait for one another (up to `commit_concurrency` out).
    fn new(units: u64, lease_max: u64, commit_concurrency: usize) -> Rig {
        Rig::overlapping_after(units, lease_max, commit_concurrency, Duration::ZERO)
    }

    /// The next batch waits up to `overlap_after` for the one out.
    fn overlapping_after(
        units: u64,
        lease_max: u64,
        commit_concurrency: usize,
        overlap_after: Duration,
    ) -> Rig {
        let store = Fake::with_pool(units);
        let clock = ManualClock::new(START_MS);
        let metrics = Metrics::new("test");
        let id = SaleId::parse("s").expect("an id");
        let snap = Snapshot {
            now_ms: START_MS,
            starts_at_ms: START_MS - 1,
            ends_at_ms: START_MS + 3_600_000,
            ticket_ttl_ms: TTL_MS,
            stock_total: units,
            available: units,
            ..Snapshot::default()
        };
        let sale = Arc::new(Sale::new(id, &snap, metrics.sale_gauges("s")));
        let dyn_store: Arc<dyn Store> = store.clone();
        let node: Arc<str> = "n1".into();
        let stop = CancellationToken::new();
        let committer = Committer::spawn(
            CommitCtx {
                store: dyn_store.clone(),
                node: node.clone(),
                metrics: metrics.clone(),
                batch: 64,
                concurrency: commit_concurrency,
                overlap_after,
            },
            sale.clone(),
            stop.clone(),
            &TaskTracker::new(),
        );
        let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
        let lease = Arc::new(LeaseCtx {
            store: dyn_store,
            node,
            metrics,
            clock: clock_dyn,
            ttl_ms: TTL_MS,
            lease_max,
        });
        Rig {
            admission: Arc::new(Admission::new(sale.clone(), committer, lease)),
            sale,
            store,
            clock,
            stop,
        }
    }

    async fn take(&self, who: usize) -> Answer {
        self.take_within(who, Duration::from_secs(5)).await
    }

    async fn take_within(&self, who: usize, limit: Duration) -> Answer {
        self.admission
            .take(&user(who), None, Instant::now() + limit)
            .await
    }

    fn spawn_take(&self, who: usize) -> tokio::task::JoinHandle<Answer> {
        let a = self.admission.clone();
        tokio::spawn(async move {
            a.take(&user(who), None, Instant::now() + Duration::from_secs(5))
                .await
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Lets the other tasks run until `done` holds (bounded).
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

fn won(a: &Answer) -> bool {
    matches!(a.outcome, Outcome::Won(_))
}

#[tokio::test(start_paused = true)]
async fn buyers_take_the_lease_until_the_pool_is_empty_then_hear_sold_out() {
    let rig = Rig::new(4, 1, 4);
    for who in 0..4 {
        let a = rig.take(who).await;
        assert!(won(&a), "buyer {who}: {a:?}");
        assert!(a.asked_store);
    }
    assert_eq!(rig.admission.sale().stock.units(), 0);
    let last = rig.take(4).await;
    assert_eq!(last.outcome, Outcome::SoldOut);
    assert!(last.asked_store, "the lease call that found the pool empty");
    let b = rig.store.books();
    assert_eq!((b.pool, b.lease_units, b.wins.len()), (0, 0, 4));
}

#[tokio::test(start_paused = true)]
async fn buyers_arriving_at_an_empty_lease_share_one_refill() {
    let rig = Rig::new(800, 100, 4);
    let buyers: Vec<_> = (0..5).map(|who| rig.spawn_take(who)).collect();
    for b in buyers {
        let a = b.await.expect("the buyer's task");
        assert!(won(&a), "{a:?}");
    }
    assert_eq!(
        rig.store.books().lease_calls,
        1,
        "one lease call for all five"
    );
    // The lease was an eighth of the pool: 100 units, 5 spent.
    assert_eq!(rig.admission.sale().stock.units(), 95);
}

#[tokio::test(start_paused = true)]
async fn the_door_is_asked_once_though_the_take_waits_for_a_refill_first() {
    // The door is asked before the take first waits; the rounds after it
    // run on what it said (`Admission::take`).
    let rig = Rig::new(10, 5, 4);
    let door = Counting {
        user: UserId::parse("carol").expect("an id"),
        asked: Default::default(),
    };
    let a = rig
        .admission
        .take(&door, None, Instant::now() + Duration::from_secs(5))
        .await;
    assert!(won(&a), "{a:?}");
    assert_eq!(rig.store.books().lease_calls, 1, "a refill came first");
    assert_eq!(
        door.asked.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "identify and pace, once each"
    );
}

#[tokio::test(start_paused = true)]
async fn a_winner_asking_again_is_answered_from_the_ticket_cache() {
    let rig = Rig::new(10, 5, 4);
    let first = rig.take(1).await;
    let Outcome::Won(ticket) = first.outcome else {
        panic!("{first:?}")
    };
    let again = rig.take(1).await;
    assert_eq!(again.outcome, Outcome::Replay(ticket));
    assert!(!again.asked_store);
    assert_eq!(rig.store.books().batches, vec![1], "no second commit");
}

/// A buyer who won on another node, asking this node after sell-out: the
/// request's own lease call finds the pool empty (a sold-out proof), and
/// meanwhile this node's watcher read the buyer's digest. The replica is
/// then complete and holds the buyer: asked again after the proof, the
/// buyer is a possible winner, looked up, and gets the ticket, never "sold
/// out".
#[tokio::test(start_paused = true)]
async fn a_winner_whose_digest_arrives_during_the_lease_call_that_proves_sold_out_gets_the_ticket()
{
    let rig = Rig::new(0, 5, 4);
    let winner = user(7).0;
    let rec = TicketRecord {
        ticket: TicketId::for_user(&winner),
        user: winner,
        state: TicketState::Pending,
        issued_at_ms: START_MS,
        expires_at_ms: START_MS + TTL_MS,
        warehouse: Placement::default_warehouse().warehouse,
    };
    rig.store.books().wins.insert(winner, rec);
    let sale = rig.sale.clone();
    *rig.store.during_lease.lock() = Some(Box::new(move || {
        sale.read_digests(0, &winner.digest().to_be_bytes());
    }));

    let again = rig.take(7).await;
    assert_eq!(
        again.outcome,
        Outcome::Replay(super::check::Ticket {
            user: winner,
            issued: rec.issued(),
            warehouse: rec.warehouse,
        })
    );
    assert_eq!(
        rig.store.books().lease_calls,
        1,
        "the proof came from the lease call"
    );
    assert_eq!(rig.store.books().winner_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn a_loser_after_sell_out_is_refused_from_memory_only_while_the_proof_is_fresh() {
    let rig = Rig::new(0, 5, 4);
    // The lease call finds the pool empty: a proof read at START_MS.
    let first = rig.take(1).await;
    assert_eq!(first.outcome, Outcome::SoldOut);
    assert!(first.asked_store);
    let calls = rig.store.books().lease_calls;

    rig.clock.advance_ms(PROOF_FRESH_MS);
    let fresh = rig.take(2).await;
    assert_eq!(fresh.outcome, Outcome::SoldOut);
    assert!(!fresh.asked_store, "a fresh proof answers from memory");
    assert_eq!(rig.store.books().winner_calls, 0);

    rig.clock.advance_ms(1);
    let stale = rig.take(3).await;
    assert_eq!(stale.outcome, Outcome::SoldOut);
    assert!(stale.asked_store, "a stale proof asks the store");
    assert_eq!(rig.store.books().winner_calls, 1);
    assert_eq!(
        rig.store.books().lease_calls,
        calls,
        "no lease call either way"
    );
}

#[tokio::test(start_paused = true)]
async fn a_loser_meeting_a_stale_proof_waits_for_its_renewal_only_while_no_unit_is_out() {
    let rig = Rig::new(0, 5, 4);
    assert_eq!(rig.take(1).await.outcome, Outcome::SoldOut);
    let lookups = || rig.store.books().winner_calls;

    // Units in another node's lease: no poll can renew the proof before
    // they are gone, so the store is asked at once.
    rig.clock.advance_ms(PROOF_FRESH_MS + 1);
    rig.sale.observe_pool(0, 2, 0, rig.clock.now_ms());
    let asked = Instant::now();
    let leased = rig.take(2).await;
    assert_eq!(
        (leased.outcome, leased.asked_store),
        (Outcome::SoldOut, true)
    );
    assert_eq!(
        asked.elapsed(),
        Duration::ZERO,
        "no wait while units are out"
    );
    assert_eq!(lookups(), 1);

    // Nothing anywhere, but the proof went stale and nobody renews it (no
    // watcher runs here): the buyer waits for a renewal, then asks.
    rig.sale.observe_pool(0, 0, 0, rig.clock.now_ms());
    rig.clock.advance_ms(PROOF_FRESH_MS + 1);
    let asked = Instant::now();
    let unrenewed = rig.take(3).await;
    assert_eq!(
        (unrenewed.outcome, unrenewed.asked_store),
        (Outcome::SoldOut, true)
    );
    assert_eq!(asked.elapsed(), PROOF_WAIT, "the wait is bounded");
    assert_eq!(lookups(), 2);

    // The same, and a pool read renews the proof during the wait: the
    // buyer is answered from memory, with no lookup.
    let asked = Instant::now();
    let waiting = rig.spawn_take(4);
    tokio::time::sleep(PROOF_WAIT / 2).await;
    rig.sale.observe_pool(0, 0, 0, rig.clock.now_ms());
    let renewed = waiting.await.expect("the take ran");
    assert_eq!(
        (renewed.outcome, renewed.asked_store),
        (Outcome::SoldOut, false)
    );
    assert_eq!(asked.elapsed(), PROOF_WAIT / 2, "answered at the renewal");
    assert_eq!(lookups(), 2);
}

#[tokio::test(start_paused = true)]
async fn buyers_queued_behind_a_commit_in_flight_share_the_next_admit_call() {
    let rig = Rig::new(100, 50, 1);
    let first = first_commit_held(&rig).await;
    let queued: Vec<_> = (1..4).map(|who| rig.spawn_take(who)).collect();
    until("three units taken behind it", || {
        rig.admission.sale().inflight() == 4
    })
    .await;
    rig.store.hold_admit(false);
    assert!(won(&first.await.expect("the first buyer")));
    for q in queued {
        assert!(won(&q.await.expect("a queued buyer")));
    }
    assert_eq!(rig.store.books().batches, vec![1, 3]);
    assert_eq!(rig.admission.sale().inflight(), 0);
}

#[tokio::test]
async fn a_batch_spanning_a_lease_change_is_sent_as_one_call_per_epoch() {
    let rig = Rig::new(100, 50, 1);
    let first = first_commit_held(&rig).await;
    let sale = rig.admission.sale();
    let old = sale.stock.epoch();
    let mut queued: Vec<_> = (1..3).map(|who| rig.spawn_take(who)).collect();
    until("two units of the old lease taken", || sale.inflight() == 3).await;
    // The lease moved on while those two wait for the next batch.
    sale.stock.grant(old + 1, 10);
    queued.extend((3..5).map(|who| rig.spawn_take(who)));
    until("two units of the new lease taken", || sale.inflight() == 5).await;
    rig.store.hold_admit(false);
    assert!(won(&first.await.expect("the first buyer")));
    for q in queued {
        assert!(won(&q.await.expect("a queued buyer")));
    }
    let books = rig.store.books();
    assert_eq!(books.batches, vec![1, 2, 2]);
    let (old, new) = (u64::from(old), u64::from(old + 1));
    assert_eq!(books.epochs, vec![old, old, new]);
    assert_eq!(sale.inflight(), 0);
}

/// Holds the store and starts buyer 0's commit; returns once its admit
/// call is out.
async fn first_commit_held(rig: &Rig) -> tokio::task::JoinHandle<Answer> {
    rig.store.hold_admit(true);
    let first = rig.spawn_take(0);
    until("the first admit call", || {
        rig.store.admits_started.load(SeqCst) == 1
    })
    .await;
    first
}

/// Holds the store, starts buyer 0's commit, then queues buyers 1..=3
/// behind it; returns all four buyers' tasks.
async fn one_commit_out_and_three_buyers_behind_it(
    rig: &Rig,
) -> Vec<tokio::task::JoinHandle<Answer>> {
    let mut buyers = vec![first_commit_held(rig).await];
    buyers.extend((1..4).map(|who| rig.spawn_take(who)));
    until("three units taken behind it", || {
        rig.admission.sale().inflight() == 4
    })
    .await;
    buyers
}

/// Opens the store and expects every buyer of
/// [`one_commit_out_and_three_buyers_behind_it`] to win.
async fn all_four_win_once_the_store_answers(
    rig: &Rig,
    buyers: Vec<tokio::task::JoinHandle<Answer>>,
) {
    rig.store.hold_admit(false);
    for b in buyers {
        assert!(won(&b.await.expect("a buyer")));
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_batch_may_leave_at_once_when_batches_do_not_wait() {
    let rig = Rig::new(100, 50, 2);
    let buyers = one_commit_out_and_three_buyers_behind_it(&rig).await;
    until("a second admit call beside the first", || {
        rig.store.admits_started.load(SeqCst) == 2
    })
    .await;
    all_four_win_once_the_store_answers(&rig, buyers).await;
    assert_eq!(rig.store.books().batches.iter().sum::<usize>(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_next_batch_fills_while_a_healthy_commit_is_out_and_leaves_when_it_returns() {
    let rig = Rig::overlapping_after(100, 50, 2, Duration::from_millis(2));
    let buyers = one_commit_out_and_three_buyers_behind_it(&rig).await;
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        rig.store.admits_started.load(SeqCst),
        1,
        "a free permit alone does not send the next batch"
    );
    all_four_win_once_the_store_answers(&rig, buyers).await;
    assert_eq!(rig.store.books().batches, vec![1, 3]);
}

#[tokio::test(start_paused = true)]
async fn the_next_batch_leaves_the_moment_the_one_out_returns_not_at_the_overlap_deadline() {
    let rig = Rig::overlapping_after(100, 50, 2, Duration::from_secs(60));
    let buyers = one_commit_out_and_three_buyers_behind_it(&rig).await;
    let returned_at = tokio::time::Instant::now();
    all_four_win_once_the_store_answers(&rig, buyers).await;
    assert!(
        returned_at.elapsed() < Duration::from_secs(1),
        "the waiting batch is woken by the return, not by its deadline: {:?}",
        returned_at.elapsed()
    );
    assert_eq!(rig.store.books().batches, vec![1, 3]);
}

#[tokio::test(start_paused = true)]
async fn past_the_overlap_deadline_the_next_batch_leaves_beside_a_slow_commit() {
    let rig = Rig::overlapping_after(100, 50, 2, Duration::from_millis(2));
    let buyers = one_commit_out_and_three_buyers_behind_it(&rig).await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    until("a second admit call beside the slow one", || {
        rig.store.admits_started.load(SeqCst) == 2
    })
    .await;
    all_four_win_once_the_store_answers(&rig, buyers).await;
    assert_eq!(rig.store.books().batches.iter().sum::<usize>(), 4);
    assert_eq!(rig.admission.sale().inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_commit_whose_reply_is_lost_is_settled_by_one_lookup() {
    let rig = Rig::new(10, 5, 4);
    rig.store.lose_admit_replies.store(true, SeqCst);
    let a = rig.take_within(1, Duration::from_millis(200)).await;
    let Outcome::Won(t) = a.outcome else {
        panic!("the win was recorded; the lookup finds it: {a:?}")
    };
    assert_eq!(
        Some(t.issued),
        rig.store.books().wins.values().next().map(|r| r.issued())
    );
    assert_eq!(rig.store.books().winner_calls, 1);
    // The unit is still in flight (its job waits for a reply), so the
    // lease is not reconciled under it.
    assert_eq!(rig.admission.sale().inflight(), 1);
    assert!(rig.admission.sale().quiet_point().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_commit_neither_answered_nor_recorded_is_unknown_to_the_buyer() {
    let rig = Rig::new(10, 5, 4);
    rig.store.hold_admit(true);
    let a = rig.take_within(1, Duration::from_millis(200)).await;
    assert_eq!(a.outcome, Outcome::Unknown);
    assert!(a.asked_store);
    assert_eq!(rig.store.books().winner_calls, 1, "one settling lookup");
}

#[test]
fn no_two_outcomes_share_a_metric_label() {
    let t = super::Ticket::sample("u");
    let labels: Vec<_> = [
        Outcome::Won(t),
        Outcome::Replay(t),
        Outcome::SoldOut,
        Outcome::NotEligible,
        Outcome::Ended,
        Outcome::NotStarted { starts_at_ms: 0 },
        Outcome::Unknown,
        Outcome::Unavailable,
        Outcome::NoSale,
        Outcome::Turned(Turned::RateLimited { retry_after_s: 1 }),
        Outcome::Turned(Turned::InvalidSession),
    ]
    .iter()
    .map(Outcome::label)
    .collect();
    let mut unique = labels.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), labels.len(), "two outcomes share a label");
}

/// The settings and counters of sale `s` at `now`: a window around
/// `START_MS` of `open_ms` either side, `units` in the pool.
fn snapshot_at(now: u64, open_ms: u64, units: u64) -> Snapshot {
    Snapshot {
        now_ms: now,
        starts_at_ms: START_MS - open_ms,
        ends_at_ms: START_MS + open_ms,
        ticket_ttl_ms: TTL_MS,
        stock_total: units,
        available: units,
        ..Snapshot::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_sale_over_and_settled_retires_and_revives_when_a_unit_or_a_win_is_still_open_or_its_window_moves(
) {
    let rig = Rig::new(0, 4, 1);
    let id = SaleId::parse("s").expect("an id");
    let sale = rig.admission.sale();
    let after = START_MS + 10;
    // Over (the window ended), nothing leased or pending, every win known.
    let over = snapshot_at(after, 5, 0);
    rig.store.listed.lock().push((id, Some(over)));
    super::sales::refresh(&*rig.store, sale)
        .await
        .expect("refresh");
    assert!(sale.is_retired(), "an ended, settled sale sleeps");
    // Each of these alone keeps the upkeep awake: a pending ticket (still
    // to be confirmed, released or swept), a unit in a lease, a win this
    // node has not learnt yet.
    let mut pending = over;
    pending.pending = 1;
    let mut leased = over;
    leased.leased = 1;
    let mut unknown_win = over;
    unknown_win.orders_enqueued = 1;
    for (what, snap) in [
        ("a pending ticket", pending),
        ("a leased unit", leased),
        ("an unknown win", unknown_win),
    ] {
        rig.store.listed.lock()[0].1 = Some(snap);
        super::sales::refresh(&*rig.store, sale)
            .await
            .expect("refresh");
        assert!(!sale.is_retired(), "{what} keeps the upkeep awake");
        rig.store.listed.lock()[0].1 = Some(over);
        super::sales::refresh(&*rig.store, sale)
            .await
            .expect("refresh");
        assert!(sale.is_retired());
    }
    super::sales::refresh(&*rig.store, sale)
        .await
        .expect("refresh");
    assert!(sale.is_retired());
    // The operator moved the window: the sale is open again.
    rig.store.listed.lock()[0].1 = Some(snapshot_at(after, 60_000, 0));
    super::sales::refresh(&*rig.store, sale)
        .await
        .expect("refresh");
    assert!(
        !sale.is_retired(),
        "a sale whose window moved is served again"
    );
}

#[tokio::test(start_paused = true)]
async fn discovery_serves_every_readable_sale_once_and_skips_one_it_cannot_read() {
    let store = Fake::with_pool(10);
    let metrics = Metrics::new("test");
    let node: Arc<str> = "n1".into();
    let dyn_store: Arc<dyn Store> = store.clone();
    let stop = CancellationToken::new();
    let sales = super::sales::Sales::new(super::sales::SalesCtx {
        store: dyn_store.clone(),
        lease: Arc::new(LeaseCtx {
            store: dyn_store.clone(),
            node: node.clone(),
            metrics: metrics.clone(),
            clock: Arc::new(ManualClock::new(START_MS)),
            ttl_ms: TTL_MS,
            lease_max: 4,
        }),
        commit: CommitCtx {
            store: dyn_store,
            node,
            metrics,
            batch: 64,
            concurrency: 1,
            overlap_after: Duration::ZERO,
        },
        refresh: Duration::from_millis(200),
        sweep: Duration::from_secs(1),
        stop: stop.clone(),
        tasks: TaskTracker::new(),
    });
    let (a, b, broken) = (
        SaleId::parse("a").expect("an id"),
        SaleId::parse("b").expect("an id"),
        SaleId::parse("broken").expect("an id"),
    );
    store.listed.lock().extend([
        (a, Some(snapshot_at(START_MS, 60_000, 10))),
        (broken, None),
        (b, Some(snapshot_at(START_MS, 60_000, 10))),
    ]);
    assert_eq!(sales.discover().await.expect("discovery"), 2);
    let mut served = sales.ids();
    served.sort_by_key(|id| id.as_str().to_owned());
    assert_eq!(served, vec![a, b]);
    assert!(sales.get(&broken).is_none());
    // Once served, a sale is not loaded again.
    assert_eq!(sales.discover().await.expect("discovery"), 0);
    let first = sales.get(&a).expect("served");
    let again = sales.load(a).await.expect("load").expect("known");
    assert!(Arc::ptr_eq(&first, &again));
    // A sale the store does not know is not served.
    let unknown = SaleId::parse("nope").expect("an id");
    assert!(sales.load(unknown).await.expect("load").is_none());
    stop.cancel();
}
