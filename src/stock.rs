//! Per-sale state of one node: the local lease counter, the sold-out flag,
//! and the replicas of the sale's winners and eligibility list.
//!
//! # The local counter
//!
//! [`LocalStock`] is one cache-padded `AtomicU64` holding
//! `(lease epoch << 32) | units`. Taking a unit is a CAS loop that never
//! goes below zero and returns the epoch the unit belongs to, so every
//! commit names the lease it spends from and Redis can fence units of a
//! lease that was reclaimed. Installing a new lease replaces epoch and
//! units in one store: units of a dead lease can never be mixed into a new
//! one. Invariant: the local units of epoch e never exceed the units Redis
//! holds for this node's lease e minus the commits in flight (a failed
//! commit of unknown outcome does not give its unit back, erring towards
//! selling less, never more).
//!
//! All orderings on the word are `Relaxed`: the word is self-contained (it
//! publishes no other memory), and each CAS sees a single modification order
//! of the word itself, which is all the counting needs.
//!
//! # Replicas
//!
//! The winners replica (user -> ticket) is fed by tailing the sale's order
//! stream, so a buyer who won on any node gets the ticket back from memory
//! here, and a loser after sell-out is refused without asking Redis. Both
//! replicas are lock-free skip lists: readers never block.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crossbeam_skiplist::{SkipMap, SkipSet};
use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::id::{SaleId, UserId};
use crate::metrics::SaleGauges;
use crate::store::{Issued, SaleState, Snapshot};

/// A lease epoch as the local counter stores it.
pub type Epoch = u32;

const UNITS_MASK: u64 = 0xffff_ffff;

fn pack(epoch: Epoch, units: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(units)
}

fn unpack(w: u64) -> (Epoch, u32) {
    ((w >> 32) as Epoch, (w & UNITS_MASK) as u32)
}

/// The node's unspent lease: lock-free, never negative.
#[derive(Debug, Default)]
pub struct LocalStock {
    word: CachePadded<AtomicU64>,
}

impl LocalStock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one unit; returns the epoch it belongs to, or `None` when empty.
    #[inline]
    pub fn take(&self) -> Option<Epoch> {
        let mut cur = self.word.load(Relaxed);
        loop {
            let (epoch, units) = unpack(cur);
            if units == 0 {
                return None;
            }
            match self
                .word
                .compare_exchange_weak(cur, pack(epoch, units - 1), Relaxed, Relaxed)
            {
                Ok(_) => return Some(epoch),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Returns a unit that was taken under `epoch` and not spent. A unit of
    /// an older epoch is dropped: that lease is gone.
    pub fn give_back(&self, epoch: Epoch) -> bool {
        self.update(|e, u| (e == epoch).then(|| pack(e, u.saturating_add(1))))
    }

    /// Adds `units` granted under `epoch`. A different epoch replaces the
    /// old lease entirely (its units were reclaimed by Redis).
    pub fn grant(&self, epoch: Epoch, units: u32) {
        self.update(|e, u| {
            Some(if e == epoch {
                pack(e, u.saturating_add(units))
            } else {
                pack(epoch, units)
            })
        });
    }

    /// Drops the units of `epoch` (fenced or returned). A newer lease is
    /// left alone.
    pub fn clear(&self, epoch: Epoch) -> bool {
        self.update(|e, _| (e == epoch).then(|| pack(e, 0)))
    }

    /// Raises the units of `epoch` to `units` if they are below it (used to
    /// reconcile with Redis when no commit is in flight).
    pub fn raise_to(&self, epoch: Epoch, units: u32) -> bool {
        self.update(|e, u| (e == epoch && u < units).then(|| pack(e, units)))
    }

    pub fn units(&self) -> u32 {
        unpack(self.word.load(Relaxed)).1
    }

    pub fn epoch(&self) -> Epoch {
        unpack(self.word.load(Relaxed)).0
    }

    /// CAS loop applying `f(epoch, units) -> Some(new word)`; `None` aborts.
    fn update(&self, f: impl Fn(Epoch, u32) -> Option<u64>) -> bool {
        let mut cur = self.word.load(Relaxed);
        loop {
            let (e, u) = unpack(cur);
            let Some(next) = f(e, u) else { return false };
            match self.word.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Settings and accounting of a sale as this node last read them.
#[derive(Debug, Default)]
struct Mirror {
    starts_at_ms: AtomicU64,
    ends_at_ms: AtomicU64,
    ticket_ttl_ms: AtomicU64,
    closed: AtomicBool,
    list_only: AtomicBool,
    eligibility_version: AtomicU64,
    stock_total: AtomicU64,
    available: AtomicU64,
    leased: AtomicU64,
    orders_enqueued: AtomicU64,
}

/// Everything one node knows about one sale.
pub struct Sale {
    pub id: SaleId,
    pub stock: LocalStock,
    mirror: Mirror,
    /// Set when the pool was empty and the local lease spent; cleared when a
    /// refresh sees units back in the pool.
    sold_out: AtomicBool,
    /// Single flight for lease refills.
    refilling: AtomicBool,
    pub refilled: Notify,
    /// Units the last lease granted (to decide when to prefetch the next).
    pub last_grant: AtomicU64,
    /// Local time of the last unit taken (an idle node returns its lease).
    pub last_take_ms: AtomicU64,
    /// Units taken and not yet settled by a commit reply.
    pub inflight: AtomicU64,
    /// Commits settled so far (reconciliation checks nothing moved).
    pub settled: AtomicU64,
    winners: SkipMap<UserId, Issued>,
    eligible: SkipSet<UserId>,
    eligible_loaded: AtomicU64,
    /// The eligibility version seen at the previous refresh (see
    /// [`Sale::eligibility_stale`]).
    eligible_seen: AtomicU64,
    pub gauges: SaleGauges,
}

impl std::fmt::Debug for Sale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sale").field("id", &self.id).finish()
    }
}

/// Where a buyer stands in the sale window, by this node's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    NotStarted { starts_at_ms: u64 },
    Open,
    Ended,
}

impl Sale {
    pub fn new(id: SaleId, snap: &Snapshot, gauges: SaleGauges) -> Self {
        let sale = Sale {
            id,
            stock: LocalStock::new(),
            mirror: Mirror::default(),
            sold_out: AtomicBool::new(false),
            refilling: AtomicBool::new(false),
            refilled: Notify::new(),
            last_grant: AtomicU64::new(0),
            last_take_ms: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            winners: SkipMap::new(),
            eligible: SkipSet::new(),
            eligible_loaded: AtomicU64::new(0),
            eligible_seen: AtomicU64::new(0),
            gauges,
        };
        sale.apply(snap);
        sale
    }

    /// Takes in a fresh snapshot from Redis.
    pub fn apply(&self, s: &Snapshot) {
        let m = &self.mirror;
        m.starts_at_ms.store(s.starts_at_ms, Relaxed);
        m.ends_at_ms.store(s.ends_at_ms, Relaxed);
        m.ticket_ttl_ms.store(s.ticket_ttl_ms, Relaxed);
        m.closed.store(s.closed, Relaxed);
        m.list_only.store(s.list_only, Relaxed);
        m.eligibility_version.store(s.eligibility_version, Relaxed);
        m.stock_total.store(s.stock_total, Relaxed);
        m.available.store(s.available, Relaxed);
        m.leased.store(s.leased, Relaxed);
        m.orders_enqueued.store(s.orders_enqueued, Relaxed);
        if s.available > 0 {
            // Units came back (release, reclaim, added stock): buyers may
            // lease again.
            self.sold_out.store(false, Relaxed);
        }
        let g = &self.gauges;
        g.total.set(s.stock_total as f64);
        g.available.set(s.available as f64);
        g.leased.set(s.leased as f64);
        g.pending.set(s.pending as f64);
        g.confirmed.set(s.confirmed as f64);
        g.balanced.set(if s.balanced { 1.0 } else { 0.0 });
        g.ends_at.set(s.ends_at_ms as f64 / 1000.0);
        g.open.set(if s.state() == SaleState::Open {
            1.0
        } else {
            0.0
        });
    }

    /// The sale window by this node's clock (Redis decides at commit).
    #[inline]
    pub fn window(&self, now_ms: u64) -> Window {
        let m = &self.mirror;
        if m.closed.load(Relaxed) || now_ms >= m.ends_at_ms.load(Relaxed) {
            Window::Ended
        } else {
            let starts_at_ms = m.starts_at_ms.load(Relaxed);
            if now_ms < starts_at_ms {
                Window::NotStarted { starts_at_ms }
            } else {
                Window::Open
            }
        }
    }

    pub fn closed(&self) -> bool {
        self.mirror.closed.load(Relaxed)
    }

    pub fn list_only(&self) -> bool {
        self.mirror.list_only.load(Relaxed)
    }

    pub fn starts_at_ms(&self) -> u64 {
        self.mirror.starts_at_ms.load(Relaxed)
    }

    pub fn ends_at_ms(&self) -> u64 {
        self.mirror.ends_at_ms.load(Relaxed)
    }

    pub fn stock_total(&self) -> u64 {
        self.mirror.stock_total.load(Relaxed)
    }

    pub fn available_hint(&self) -> u64 {
        self.mirror.available.load(Relaxed)
    }

    /// Units not yet sold as last seen: pool plus leases.
    pub fn remaining_hint(&self) -> u64 {
        self.mirror.available.load(Relaxed) + self.mirror.leased.load(Relaxed)
    }

    /// The sale's public state as this node sees it.
    pub fn state(&self, now_ms: u64) -> SaleState {
        match self.window(now_ms) {
            Window::Ended if self.closed() => SaleState::Closed,
            Window::Ended => SaleState::Ended,
            Window::NotStarted { .. } => SaleState::Scheduled,
            Window::Open if self.remaining_hint() == 0 && self.stock.units() == 0 => {
                SaleState::SoldOut
            }
            Window::Open => SaleState::Open,
        }
    }

    /// Takes in the pool as a lease call saw it (fresher than the last
    /// refresh: it lets a node that finds the pool empty prove at once that
    /// its winners replica is complete).
    pub fn observe_pool(&self, available: u64, leased: u64, orders_enqueued: u64) {
        let m = &self.mirror;
        m.available.store(available, Relaxed);
        m.leased.store(leased, Relaxed);
        m.orders_enqueued.store(orders_enqueued, Relaxed);
    }

    pub fn is_sold_out(&self) -> bool {
        self.sold_out.load(Relaxed)
    }

    pub fn mark_sold_out(&self) {
        self.sold_out.store(true, Relaxed);
    }

    /// True when a replica miss proves the buyer has no ticket: the last
    /// refresh saw no unit in the pool or in any lease (no new win can
    /// happen before units come back), and the replica holds every win
    /// Redis had counted by then.
    pub fn replica_complete(&self) -> bool {
        let m = &self.mirror;
        m.available.load(Relaxed) == 0
            && m.leased.load(Relaxed) == 0
            && self.winners_known() >= m.orders_enqueued.load(Relaxed)
    }

    /// Starts a refill if none is running; `true` means the caller leads it.
    pub fn begin_refill(&self) -> bool {
        // Relaxed: the flag guards no memory (the lease state it leads to
        // is itself atomic); it only keeps lease calls to one at a time.
        self.refilling
            .compare_exchange(false, true, Relaxed, Relaxed)
            .is_ok()
    }

    pub fn end_refill(&self) {
        self.refilling.store(false, Relaxed);
        self.refilled.notify_waiters();
    }

    pub fn winner(&self, user: &UserId) -> Option<Issued> {
        self.winners.get(user).map(|e| *e.value())
    }

    /// Records a win in the replica (from the stream or from a commit).
    pub fn remember_winner(&self, user: UserId, issued: Issued) {
        self.winners.get_or_insert(user, issued);
    }

    pub fn winners_known(&self) -> u64 {
        self.winners.len() as u64
    }

    pub fn is_eligible(&self, user: &UserId) -> bool {
        self.eligible.contains(user)
    }

    /// The eligibility version to load, once the list has stopped changing.
    ///
    /// A large list is uploaded in many chunks, each bumping the version;
    /// reloading after every chunk would rescan the whole set each time.
    /// Waiting until two refreshes in a row see the same version loads it
    /// once, one refresh interval after the upload ends.
    pub fn eligibility_stale(&self) -> Option<u64> {
        let want = self.mirror.eligibility_version.load(Relaxed);
        let previous = self.eligible_seen.swap(want, Relaxed);
        (want != self.eligible_loaded.load(Relaxed) && want == previous).then_some(want)
    }

    pub fn load_eligible(&self, version: u64, users: impl IntoIterator<Item = UserId>) {
        for u in users {
            self.eligible.insert(u);
        }
        self.eligible_loaded.store(version, Relaxed);
    }

    pub fn ticket_ttl_ms(&self) -> u64 {
        self.mirror.ticket_ttl_ms.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn an_empty_counter_gives_nothing() {
        let s = LocalStock::new();
        assert_eq!(s.take(), None);
    }

    #[test]
    fn units_carry_the_epoch_they_were_granted_under() {
        let s = LocalStock::new();
        s.grant(7, 2);
        assert_eq!(s.take(), Some(7));
        assert_eq!(s.take(), Some(7));
        assert_eq!(s.take(), None);
    }

    #[test]
    fn a_new_epoch_replaces_the_old_lease_instead_of_adding_to_it() {
        let s = LocalStock::new();
        s.grant(1, 10);
        s.grant(2, 3);
        assert_eq!((s.epoch(), s.units()), (2, 3));
        s.grant(2, 3);
        assert_eq!(s.units(), 6);
    }

    #[test]
    fn a_unit_of_a_dead_lease_is_not_given_back() {
        let s = LocalStock::new();
        s.grant(1, 1);
        let e = s.take().unwrap();
        s.grant(2, 0);
        assert!(!s.give_back(e));
        assert_eq!(s.units(), 0);
    }

    #[test]
    fn clearing_an_old_epoch_leaves_a_newer_lease_alone() {
        let s = LocalStock::new();
        s.grant(3, 5);
        assert!(!s.clear(2));
        assert_eq!(s.units(), 5);
        assert!(s.clear(3));
        assert_eq!(s.units(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Under concurrent takers, the units handed out equal the units
        /// granted, never more, and the counter never wraps below zero.
        #[test]
        fn concurrent_takers_never_get_more_than_was_leased(
            grants in proptest::collection::vec(0u32..500, 1..6),
            threads in 2usize..8,
        ) {
            let s = Arc::new(LocalStock::new());
            let total: u32 = grants.iter().sum();
            let taken = Arc::new(AtomicU64::new(0));
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    let s = s.clone();
                    let taken = taken.clone();
                    scope.spawn(move || {
                        for _ in 0..(total as usize + 100) {
                            if s.take().is_some() {
                                taken.fetch_add(1, Relaxed);
                            }
                        }
                    });
                }
                for g in &grants {
                    s.grant(1, *g);
                }
            });
            // Drain what the takers did not get to.
            while s.take().is_some() {
                taken.fetch_add(1, Relaxed);
            }
            prop_assert_eq!(taken.load(Relaxed), u64::from(total));
            prop_assert_eq!(s.units(), 0);
        }

        /// Any interleaving of grants, takes, give-backs and clears keeps the
        /// count equal to a sequential model's.
        #[test]
        fn the_counter_matches_a_sequential_model(ops in proptest::collection::vec((0u8..4, 0u32..4, 0u32..20), 0..200)) {
            let s = LocalStock::new();
            let (mut me, mut mu) = (0u32, 0u32);
            for (op, e, n) in ops {
                match op {
                    0 => { s.grant(e, n); if e == me { mu += n } else { me = e; mu = n } }
                    1 => { let got = s.take(); if mu > 0 { mu -= 1; prop_assert_eq!(got, Some(me)) } else { prop_assert_eq!(got, None) } }
                    2 => { s.give_back(e); if e == me { mu += 1 } }
                    _ => { s.clear(e); if e == me { mu = 0 } }
                }
                prop_assert_eq!((s.epoch(), s.units()), (me, mu));
            }
        }
    }
}
