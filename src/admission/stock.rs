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
//! Counting needs only `Relaxed` on the word: each CAS sees the single
//! modification order of the word itself. One pair is stronger: a take
//! publishes (Release) the in-flight count made just before it, so the
//! lease reconciliation that reads the word (Acquire) and finds the unit
//! gone also finds it in flight, and never raises the balance over a unit
//! that is on its way to Redis (see `Sale::reconcile`).
//!
//! # Replicas
//!
//! The winners replica is one insert-only hash table of 64-bit digests
//! (`super::winners`). It holds two kinds of entry. A *bare digest* for
//! each winner the watcher reads from the sale's winners digest in Redis
//! (8 bytes per win, appended by `admit` in the order wins are counted):
//! other nodes' wins, and this node's own only when they land past a
//! stretch it has not read yet. So a loser after sell-out is refused
//! without asking Redis, and a node learns a winner for 8 bytes of reply
//! instead of a stream entry, whatever the fleet size. A *ticket entry*
//! for each ticket this node committed or looked up, under the same digest
//! (the entry holds a second, independent hash of its user, so two users
//! of one digest do not share a ticket; see [`holder_check`]): a winner
//! who asks again gets the ticket back from memory; a winner won elsewhere
//! costs one lookup here the first time. An entry is 48 bytes (the ticket
//! as its tag, the warehouse as an index), kept in the table's records
//! rather than behind an allocation of its own.
//! Invariant: every winner this node knows of has an entry (a win of its
//! own a ticket entry, which spares each commit a second insert). Readers
//! never block. In front of the table, a filter of one bit per slot (16
//! per unit of the sale) answers most fresh buyers with one load: a clear
//! bit proves the digest absent, and only a set bit costs a probe.

use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::OnceLock;

use crossbeam_skiplist::SkipSet;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::winners::Table;
use crate::id::{SaleId, TicketBits, TicketId, UserId, WarehouseId};
use crate::metrics::SaleGauges;
use crate::sale::{Issued, SaleState, Snapshot};

/// How old a sold-out proof may be and still answer a replica miss from
/// memory (see [`Sale::replica_complete`]): five polls of the watcher. It
/// bounds how long a unit released on one node and won on another can go
/// unseen here.
pub const PROOF_FRESH_MS: u64 = 250;

/// A sale no buyer has asked this node about for this long is dormant
/// here: its watcher polls the store seldom (see `sales::watch_loop`).
pub const DORMANT_AFTER_MS: u64 = 2_000;

/// How finely a sale's last demand is kept.
const DEMAND_GRAIN_MS: u64 = 100;

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
        // Relaxed: only a first guess; the CAS below checks it.
        let mut cur = self.word.load(Relaxed);
        loop {
            let (epoch, units) = unpack(cur);
            if units == 0 {
                return None;
            }
            // Release on success: pairs with the Acquire of `word()`, so a
            // reconciler that sees this unit gone sees it counted in flight.
            match self
                .word
                .compare_exchange_weak(cur, pack(epoch, units - 1), Release, Relaxed)
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
        // Relaxed: a reading for decisions a CAS or Redis checks again.
        unpack(self.word.load(Relaxed)).1
    }

    pub fn epoch(&self) -> Epoch {
        // Relaxed: as in `units`; a stale epoch is fenced by Redis.
        unpack(self.word.load(Relaxed)).0
    }

    /// The packed word, for a compare-and-replace later.
    fn word(&self) -> u64 {
        // Acquire: pairs with the Release of `take`; whoever sees a unit
        // gone also sees it counted in flight (`Sale::take_unit` counts
        // first).
        self.word.load(Acquire)
    }

    /// Replaces the word if it is still `expected`.
    fn replace(&self, expected: u64, next: u64) -> bool {
        // Relaxed: the caller read `expected` with Acquire; any take since
        // changed the word and fails this CAS.
        self.word
            .compare_exchange(expected, next, Relaxed, Relaxed)
            .is_ok()
    }

    /// CAS loop applying `f(epoch, units) -> Some(new word)`; `None` aborts.
    fn update(&self, f: impl Fn(Epoch, u32) -> Option<u64>) -> bool {
        // Relaxed (load and CAS): grants, give-backs and clears publish
        // nothing but the word itself, whose modification order is total.
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

/// A unit taken from the local lease and not yet settled. Dropping it
/// unsettled (a buyer gone before the commit was queued) gives the unit
/// back and ends its flight.
#[must_use]
pub struct Taken<'a> {
    sale: &'a Sale,
    pub epoch: Epoch,
    spent: bool,
}

impl Taken<'_> {
    /// Hands the unit to a commit: from here the commit job owns its
    /// flight and must call `Sale::settle_one` exactly once.
    pub fn hand_over(mut self) -> Epoch {
        self.spent = true;
        self.epoch
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if !self.spent {
            self.sale.stock.give_back(self.epoch);
            self.sale.settle_one();
        }
    }
}

/// See `Sale::quiet_point`.
#[derive(Debug, Clone, Copy)]
pub struct QuietPoint {
    word: u64,
    settled: u64,
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
    pub(super) stock: LocalStock,
    mirror: Mirror,
    /// Set when the pool was empty and the local lease spent; cleared when a
    /// refresh sees units back in the pool.
    sold_out: AtomicBool,
    /// Single flight for lease refills.
    refilling: AtomicBool,
    pub(super) refilled: Notify,
    /// Units the last lease granted (to decide when to prefetch the next).
    pub(super) last_grant: AtomicU64,
    /// Local time of the last unit taken (an idle node returns its lease).
    pub(super) last_take_ms: AtomicU64,
    /// When a buyer last asked this node about the sale (node clock, ms),
    /// to [`DEMAND_GRAIN_MS`]: see [`Sale::note_demand`]. Read by every
    /// request, so on a line of its own, away from the commit counters.
    demand_ms: CachePadded<AtomicU64>,
    /// Wakes the watcher when a buyer comes to a dormant sale.
    demand: Notify,
    /// Woken each time a pool read renews the sold-out proof.
    proof_renewed: Notify,
    /// Units taken and not yet settled by a commit reply. Counted *before*
    /// the unit leaves the counter (see [`Sale::take_unit`]), so a
    /// reconciliation that sees the unit gone also sees it in flight.
    inflight: AtomicU64,
    /// Commits settled so far (reconciliation checks nothing moved).
    settled: AtomicU64,
    /// Wins enqueued when Redis last showed the pool empty and no unit in
    /// any lease, and when (node clock, ms): see [`Sale::replica_complete`].
    proof_enqueued: AtomicU64,
    proof_at_ms: AtomicU64,
    /// Set while the sale is over and settled: its upkeep tasks sleep.
    retired: AtomicBool,
    /// A ticket of this sale was confirmed or released through this node
    /// since its last sweep (see `lifecycle::sweep_loop`).
    sweep_asked: AtomicBool,
    pub(super) revived: Notify,
    /// The winners replica (see the module docs): bare digests and ticket
    /// entries, by digest.
    winners: Table<Cached>,
    /// The warehouses the ticket entries name, by index.
    warehouses: Names,
    /// In front of the winners table: a clear bit proves a digest absent.
    filter: DigestFilter,
    /// Bytes of the winners digest known without a gap, from offset 0:
    /// read by the watcher, or appended by this node's own commit right at
    /// the end of what it knew. `/ 8` is what the sold-out proof counts
    /// (not the set's size: own wins may sit past others not read yet).
    digests_known: AtomicU64,
    eligible: SkipSet<UserId>,
    eligible_loaded: AtomicU64,
    /// The eligibility version seen at the previous refresh (see
    /// [`Sale::eligibility_stale`]).
    eligible_seen: AtomicU64,
    pub(super) gauges: SaleGauges,
}

/// A ticket entry: whose ticket it is, the ticket, and where it ships
/// from, in 48 bytes. A node keeps one per win it committed, so their size
/// drives the replica's memory per win (with the table's slots and the
/// records' spare room, about 180 bytes of the server's memory, measured);
/// the ids stored whole (user, ticket, warehouse) made it 240.
#[derive(Debug, Clone, Copy)]
struct Cached {
    /// The holder's check (see [`holder_check`]): tells apart the users of
    /// one digest.
    holder: u64,
    /// The ticket without its holder (see [`TicketBits`]), in halves: a
    /// `u128` field would align the entry to 16 bytes.
    ticket_hi: u64,
    ticket_lo: u64,
    issued_at_ms: u64,
    expires_at_ms: u64,
    /// Index in the sale's [`Names`].
    warehouse: u8,
    tagged: bool,
}

impl Cached {
    fn new(user: &UserId, issued: &Issued, warehouse: u8) -> Option<Self> {
        let t = issued.ticket.bits(user)?;
        Some(Cached {
            holder: holder_check(user),
            ticket_hi: (t.bits >> 64) as u64,
            ticket_lo: t.bits as u64,
            issued_at_ms: issued.issued_at_ms,
            expires_at_ms: issued.expires_at_ms,
            warehouse,
            tagged: t.tagged,
        })
    }

    fn issued(&self, user: &UserId) -> Issued {
        let bits = TicketBits {
            tagged: self.tagged,
            bits: (u128::from(self.ticket_hi) << 64) | u128::from(self.ticket_lo),
        };
        Issued {
            ticket: TicketId::from_bits(bits, user),
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// A 64-bit hash of a user id independent of its digest (SipHash, where
/// the digest is FNV-1a): an entry holds it instead of the id. Two users
/// are taken for one only if both their digests and their checks are
/// equal, about one chance in 2^64 for each pair of users whose digests
/// collide (which is itself about one pair in a sale of a million winners
/// and a million other buyers); an id stored whole would add 65 bytes to
/// every entry. It never leaves the process, so it need not be stable
/// across builds.
fn holder_check(user: &UserId) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(user.as_str())
}

/// Most warehouses [`Names`] holds: a sale has at most 64 at a time.
const MAX_NAMES: usize = 64;

/// The warehouses a node's ticket entries name, each once, so an entry
/// holds a byte instead of a 65-byte id. Readers never lock: a name is set
/// before the count that shows it (Release/Acquire). Full (a sale that
/// named more than [`MAX_NAMES`] warehouses over its life), a win is kept
/// as a bare digest and a replay costs one lookup.
struct Names {
    names: [OnceLock<WarehouseId>; MAX_NAMES],
    len: AtomicUsize,
    write: Mutex<()>,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            names: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
            write: Mutex::new(()),
        }
    }
}

impl Names {
    fn get(&self, i: u8) -> Option<WarehouseId> {
        self.names.get(usize::from(i))?.get().copied()
    }

    fn find(&self, w: &WarehouseId) -> Option<u8> {
        // Acquire: pairs with the Release in `index`; every name counted is set.
        let len = self.len.load(Acquire);
        let i = self.names[..len].iter().position(|n| n.get() == Some(w))?;
        u8::try_from(i).ok()
    }

    /// The index of `w`, added if new; `None` when full.
    fn index(&self, w: &WarehouseId) -> Option<u8> {
        if let Some(i) = self.find(w) {
            return Some(i);
        }
        let _one_writer = self.write.lock();
        // Another writer may have added it since the look above.
        if let Some(i) = self.find(w) {
            return Some(i);
        }
        let len = self.len.load(Relaxed);
        self.names.get(len)?.set(*w).ok()?;
        // Release: the name is set before a reader sees it counted.
        self.len.store(len + 1, Release);
        u8::try_from(len).ok()
    }
}

impl std::fmt::Debug for Sale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sale").field("id", &self.id).finish()
    }
}

/// One bit per slot in front of the digest set: a digest is put in the
/// filter before the set, so a clear bit proves it is not in the set, and
/// a fresh buyer (winner to be, or loser after sell-out) costs one load
/// instead of a skip-list search. A set bit may be another digest's (about
/// one in 16 when the sale's units have all been won), and then the set
/// answers. Sized for the units the sale had when this node first saw it;
/// units added later only make set bits likelier, never a digest missed.
struct DigestFilter {
    words: Box<[AtomicU64]>,
    /// 64 minus log2 of the bits: a mixed digest's top bits pick the slot.
    shift: u32,
}

impl DigestFilter {
    /// Bits per unit of the sale: one in 16 of a fresh buyer's lookups
    /// reaches the set once every unit is won.
    const BITS_PER_UNIT: u64 = 16;
    /// 512 bytes at least, 2 MiB at most (a sale of a million units and
    /// more shares bits, and its lookups reach the set more often).
    const MIN_BITS: u64 = 1 << 12;
    const MAX_BITS: u64 = 1 << 24;

    fn for_units(units: u64) -> Self {
        let bits = units
            .saturating_mul(Self::BITS_PER_UNIT)
            .clamp(Self::MIN_BITS, Self::MAX_BITS)
            .next_power_of_two();
        DigestFilter {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            shift: 64 - bits.trailing_zeros(),
        }
    }

    fn slot(&self, digest: u64) -> (usize, u64) {
        // The digest is FNV-1a: ids that differ only in their last byte
        // differ little in its top bits. One multiply spreads every bit
        // into the top ones.
        let i = digest.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift;
        ((i >> 6) as usize, 1 << (i & 63))
    }

    fn insert(&self, digest: u64) {
        let (w, bit) = self.slot(digest);
        // Relaxed: the bit is set before the digest goes into the set, and
        // before `digests_known` is published (Release); a reader that
        // relies on a digest being there has acquired that, and so sees
        // the bit too. A reader racing the insert may miss both, as it
        // would miss the set entry alone.
        self.words[w].fetch_or(bit, Relaxed);
    }

    fn may_contain(&self, digest: u64) -> bool {
        let (w, bit) = self.slot(digest);
        self.words[w].load(Relaxed) & bit != 0
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
    pub(super) fn new(id: SaleId, snap: &Snapshot, gauges: SaleGauges) -> Self {
        let sale = Sale {
            id,
            stock: LocalStock::new(),
            mirror: Mirror::default(),
            sold_out: AtomicBool::new(false),
            refilling: AtomicBool::new(false),
            refilled: Notify::new(),
            last_grant: AtomicU64::new(0),
            last_take_ms: AtomicU64::new(0),
            demand_ms: CachePadded::new(AtomicU64::new(0)),
            demand: Notify::new(),
            proof_renewed: Notify::new(),
            inflight: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            proof_enqueued: AtomicU64::new(0),
            proof_at_ms: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            sweep_asked: AtomicBool::new(false),
            revived: Notify::new(),
            winners: Table::default(),
            warehouses: Names::default(),
            filter: DigestFilter::for_units(snap.stock_total),
            digests_known: AtomicU64::new(0),
            eligible: SkipSet::new(),
            eligible_loaded: AtomicU64::new(0),
            eligible_seen: AtomicU64::new(0),
            gauges,
        };
        sale.apply(snap);
        sale
    }

    /// Takes in a fresh snapshot from Redis.
    pub(super) fn apply(&self, s: &Snapshot) {
        // Relaxed: each mirrored value is a hint on its own, at most one
        // refresh old; Redis decides every admission again, and no reader
        // needs two of them from the same snapshot.
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
            // lease again. Relaxed: the flag is a hint the lease call
            // checks; a stale value costs one lease call or one lookup.
            self.sold_out.store(false, Relaxed);
        }
        let g = &self.gauges;
        g.total.set(s.stock_total as f64);
        g.available.set(s.available as f64);
        g.leased.set(s.leased as f64);
        g.pending.set(s.pending as f64);
        g.confirmed.set(s.confirmed as f64);
        if s.checked {
            g.balanced.set(if s.balanced { 1.0 } else { 0.0 });
        }
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
    /// Units in leases, any node's, at the last view or pool read.
    pub fn leased_hint(&self) -> u64 {
        // Relaxed: a hint, as in `apply`.
        self.mirror.leased.load(Relaxed)
    }

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

    /// Takes in the pool as Redis showed it in one atomic read made at
    /// `read_at_ms` (node clock) or later: a lease reply, or the watcher's
    /// pool read. When it shows no unit anywhere, it proves the winners
    /// replica complete once the replica holds `orders_enqueued` wins.
    pub(super) fn observe_pool(
        &self,
        available: u64,
        leased: u64,
        orders_enqueued: u64,
        read_at_ms: u64,
    ) {
        // Relaxed: hints, as in `apply`.
        let m = &self.mirror;
        m.available.store(available, Relaxed);
        m.leased.store(leased, Relaxed);
        m.orders_enqueued.store(orders_enqueued, Relaxed);
        if available > 0 {
            // A unit came back (release, sweep, reclaim): buyers may lease.
            // Relaxed: a hint, as in `apply`.
            self.sold_out.store(false, Relaxed);
        }
        if available == 0 && leased == 0 {
            // Relaxed: published by the Release of `proof_at_ms` just after.
            self.proof_enqueued.fetch_max(orders_enqueued, Relaxed);
            // Release: pairs with the Acquire in `replica_complete`; a reader
            // of this time also reads the count proven with it.
            self.proof_at_ms.fetch_max(read_at_ms, Release);
            self.proof_renewed.notify_waiters();
        }
    }

    /// Resolves when the next pool read renews the sold-out proof (from
    /// the moment it is enabled or first polled).
    pub(super) fn proof_renewed(&self) -> tokio::sync::futures::Notified<'_> {
        self.proof_renewed.notified()
    }

    /// Notes that a buyer asked about the sale at `now_ms` (node clock).
    /// Once nobody has for [`DORMANT_AFTER_MS`] the sale is dormant here and
    /// its watcher polls the store seldom; the first buyer after that wakes
    /// it for a poll at once.
    ///
    /// On every request, refusals included: a load and a compare, and a
    /// write at most once per `DEMAND_GRAIN_MS`, so the cores do not
    /// trade the cache line back and forth at a flood's rate.
    #[inline]
    pub fn note_demand(&self, now_ms: u64) {
        // Relaxed (both): a hint that only spaces polls out; the sold-out
        // proof keeps its own time and never depends on it.
        if now_ms.saturating_sub(self.demand_ms.load(Relaxed)) < DEMAND_GRAIN_MS {
            return;
        }
        let before = self.demand_ms.swap(now_ms, Relaxed);
        if now_ms.saturating_sub(before) >= DORMANT_AFTER_MS {
            self.demand.notify_one();
        }
    }

    /// Whether no buyer has asked this node about the sale for
    /// [`DORMANT_AFTER_MS`].
    pub fn dormant(&self, now_ms: u64) -> bool {
        // Relaxed: as in `note_demand`.
        now_ms.saturating_sub(self.demand_ms.load(Relaxed)) >= DORMANT_AFTER_MS
    }

    /// Resolves when a buyer comes back to a dormant sale (at once if one
    /// came since the last call).
    pub(super) async fn demand_returned(&self) {
        self.demand.notified().await;
    }

    pub fn is_sold_out(&self) -> bool {
        // Relaxed: a hint; a sold-out answer from memory also needs the
        // proof, read with Acquire in `replica_complete`.
        self.sold_out.load(Relaxed)
    }

    pub(super) fn mark_sold_out(&self) {
        // Relaxed: as in `is_sold_out`.
        self.sold_out.store(true, Relaxed);
    }

    /// True when a replica miss proves the buyer has no ticket: at most
    /// [`PROOF_FRESH_MS`] ago Redis showed no unit in the pool or in any
    /// lease (no new win can happen before a unit comes back), and the
    /// replica holds every win Redis had counted then.
    ///
    /// The proof is renewed by the watcher every poll while the sale is sold
    /// out; when it is not (store unreachable, watcher behind), a miss is
    /// asked of Redis instead of answered from a stale view.
    pub fn replica_complete(&self, now_ms: u64) -> bool {
        let at = self.proof_at_ms.load(Acquire);
        at > 0
            && now_ms.saturating_sub(at) <= PROOF_FRESH_MS
            // Relaxed: ordered after the Acquire of `proof_at_ms` above.
            && self.winners_known() >= self.proof_enqueued.load(Relaxed)
    }

    /// Whether the pool may be empty everywhere, by the last view: the
    /// watcher then renews the sold-out proof at every poll.
    pub fn may_be_sold_out(&self) -> bool {
        self.remaining_hint() == 0 || self.is_sold_out()
    }

    /// Wins Redis had counted at the last view.
    pub fn orders_enqueued_hint(&self) -> u64 {
        self.mirror.orders_enqueued.load(Relaxed)
    }

    /// Asks for a sweep at the sweeper's next check: a ticket was settled,
    /// and the sweep cursor may now pass its entry.
    pub fn ask_sweep(&self) {
        // Relaxed: a request flag; the sweep reads the store, not memory.
        self.sweep_asked.store(true, Relaxed);
    }

    /// Whether a sweep was asked for since the last call.
    pub(crate) fn sweep_was_asked(&self) -> bool {
        // Relaxed: as in `ask_sweep`.
        self.sweep_asked.swap(false, Relaxed)
    }

    pub fn is_retired(&self) -> bool {
        // Relaxed: the flag publishes nothing; waking is the Notify's job.
        self.retired.load(Relaxed)
    }

    /// Retires or revives the sale's upkeep. Returns true on a change.
    pub(super) fn set_retired(&self, retired: bool) -> bool {
        // Relaxed: see `is_retired`; `while_retired` re-checks the flag
        // after registering with the Notify, so no wake-up is lost.
        let changed = self.retired.swap(retired, Relaxed) != retired;
        if changed && !retired {
            self.revived.notify_waiters();
        }
        changed
    }

    /// Waits while the sale is retired (or until `stop`); returns at once
    /// otherwise.
    pub async fn while_retired(&self, stop: &tokio_util::sync::CancellationToken) {
        loop {
            let revived = self.revived.notified();
            tokio::pin!(revived);
            revived.as_mut().enable();
            if !self.is_retired() {
                return;
            }
            tokio::select! {
                _ = revived => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Takes one unit of the local lease for a commit. The unit is counted
    /// in flight first, then taken; it stays in flight until the returned
    /// [`Taken`] is settled or dropped, whatever happens to the buyer.
    #[inline]
    pub(super) fn take_unit(&self) -> Option<Taken<'_>> {
        // Relaxed: published by the Release of the take's CAS that follows.
        self.inflight.fetch_add(1, Relaxed);
        match self.stock.take() {
            Some(epoch) => Some(Taken {
                sale: self,
                epoch,
                spent: false,
            }),
            None => {
                // Relaxed: no unit left the counter, so no reconciler relied
                // on this count; one that saw it merely waited a round.
                self.inflight.fetch_sub(1, Relaxed);
                None
            }
        }
    }

    /// Units taken and not yet settled.
    pub fn inflight(&self) -> u64 {
        // Relaxed: a reading for the lease keeper's choices; reconciling
        // re-reads it with Acquire (`quiet_point`, `reconcile`).
        self.inflight.load(Relaxed)
    }

    /// A commit ended (whatever its verdict): the unit is no longer in flight.
    pub(super) fn settle_one(&self) {
        // Relaxed: published by the Release of `inflight` just after.
        self.settled.fetch_add(1, Relaxed);
        // Release: pairs with the Acquire in `quiet_point`; a reconciler that
        // sees the count drop also sees `settled` moved, so it cannot mistake
        // a commit that settled meanwhile for a quiet lease.
        self.inflight.fetch_sub(1, Release);
    }

    /// Where the lease stands before asking Redis for this node's balance,
    /// or `None` while commits are in flight (the balance Redis reports
    /// would count their units, which have already left the counter).
    pub(super) fn quiet_point(&self) -> Option<QuietPoint> {
        let word = self.stock.word();
        // Acquire: pairs with the Release of `settle_one`.
        if self.inflight.load(Acquire) != 0 {
            return None;
        }
        Some(QuietPoint {
            word,
            // Relaxed: ordered after the Acquire of `inflight` above.
            settled: self.settled.load(Relaxed),
        })
    }

    /// Raises the local units of `epoch` to `lease_units`, the balance Redis
    /// reported after `q` was taken, if nothing moved meanwhile: no unit
    /// taken (the counter word is unchanged), none in flight, none settled.
    /// A unit taken in between would otherwise be counted twice, once in
    /// flight and once again in the raised balance.
    pub(super) fn reconcile(&self, q: QuietPoint, epoch: Epoch, lease_units: u32) -> bool {
        // Acquire: as in `quiet_point`; `settled` (Relaxed) is read after
        // it, so a settle that ended a flight is seen in both.
        if self.inflight.load(Acquire) != 0 || self.settled.load(Relaxed) != q.settled {
            return false;
        }
        let (e, units) = unpack(q.word);
        e == epoch && units < lease_units && self.stock.replace(q.word, pack(epoch, lease_units))
    }

    /// Starts a refill if none is running; `true` means the caller leads it.
    pub(super) fn begin_refill(&self) -> bool {
        // Relaxed: the flag guards no memory (the lease state it leads to
        // is itself atomic); it only keeps lease calls to one at a time.
        self.refilling
            .compare_exchange(false, true, Relaxed, Relaxed)
            .is_ok()
    }

    pub(super) fn end_refill(&self) {
        // Relaxed: as in `begin_refill`; the waiters learn of the end from
        // the Notify, which orders itself.
        self.refilling.store(false, Relaxed);
        self.refilled.notify_waiters();
    }

    /// The buyer's ticket and its warehouse, if this node knows them.
    pub fn winner(&self, user: &UserId) -> Option<(Issued, WarehouseId)> {
        self.cached(user.digest(), user)
    }

    fn cached(&self, digest: u64, user: &UserId) -> Option<(Issued, WarehouseId)> {
        // Another user of the same digest has their own entry.
        let holder = holder_check(user);
        let c = self.winners.find(digest, |c| c.holder == holder)?;
        Some((c.issued(user), self.warehouses.get(c.warehouse)?))
    }

    /// Whether the buyer may have won (their digest is in the winners
    /// table; a collision is possible, a false "no" is not for wins this
    /// node knows of).
    pub fn may_have_won(&self, user: &UserId) -> bool {
        let d = user.digest();
        self.filter.may_contain(d) && self.winners.contains(d)
    }

    /// Records a win (from a commit or a lookup) as a ticket entry.
    ///
    /// The filter bit goes in first: a reader that finds it clear skips the
    /// table, so no winner may be in it without the bit. A user's first
    /// ticket entry stays; a second user of the same digest gets one of
    /// their own.
    pub(super) fn remember_winner(&self, user: UserId, issued: Issued, warehouse: WarehouseId) {
        self.remember(user.digest(), user, issued, warehouse);
    }

    fn remember(&self, d: u64, user: UserId, issued: Issued, warehouse: WarehouseId) {
        self.filter.insert(d);
        let entry = self
            .warehouses
            .index(&warehouse)
            .and_then(|w| Cached::new(&user, &issued, w));
        match entry {
            Some(e) => {
                self.winners.insert(d, e, |c| c.holder == e.holder);
            }
            // A ticket of no known form, or too many warehouses: the win
            // is still known, and its ticket is looked up when asked for.
            None => self.winners.insert_bare([d]),
        }
    }

    /// Where the watcher reads the winners digest next.
    pub fn digests_offset(&self) -> u64 {
        self.digests_known.load(Acquire)
    }

    /// Takes in bytes of the winners digest read at `offset` (whole 8-byte
    /// digests only); returns where to read next.
    pub(super) fn read_digests(&self, offset: u64, bytes: &[u8]) -> u64 {
        let digests = bytes.chunks_exact(8).map(|d| {
            let mut b = [0u8; 8];
            b.copy_from_slice(d);
            u64::from_be_bytes(b)
        });
        for d in digests.clone() {
            self.filter.insert(d);
        }
        self.winners.insert_bare(digests);
        let end = offset + (bytes.len() as u64 / 8) * 8;
        // Release: pairs with the Acquire in `winners_known`; a reader of the
        // count finds the wins it counts in the table.
        self.digests_known.fetch_max(end, Release).max(end)
    }

    /// This node's commit appended `wins` digests, ending at `len`: when it
    /// knew everything before them, it now knows everything up to `len`
    /// without waiting for the watcher. (Its wins have ticket entries
    /// already: `remember_winner` ran for each.)
    pub(super) fn appended_digests(&self, wins: u64, len: u64) {
        let start = len.saturating_sub(8 * wins);
        // Release: as in `read_digests`.
        let _ = self
            .digests_known
            // Relaxed on failure: nothing is read then.
            .compare_exchange(start, len, Release, Relaxed);
    }

    /// Wins known from the winners digest without a gap.
    pub fn winners_known(&self) -> u64 {
        self.digests_known.load(Acquire) / 8
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
    pub(super) fn eligibility_stale(&self) -> Option<u64> {
        // Relaxed: versions only pick when to reload; readers of the list
        // ask the skip set itself, which is safe to read while it grows.
        let want = self.mirror.eligibility_version.load(Relaxed);
        let previous = self.eligible_seen.swap(want, Relaxed);
        (want != self.eligible_loaded.load(Relaxed) && want == previous).then_some(want)
    }

    pub(super) fn load_eligible(&self, version: u64, users: impl IntoIterator<Item = UserId>) {
        for u in users {
            self.eligible.insert(u);
        }
        // Relaxed: see `eligibility_stale`.
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
    use std::time::Duration;

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

    fn sale() -> Sale {
        let metrics = crate::metrics::Metrics::new("test");
        Sale::new(
            SaleId::parse("s").unwrap(),
            &Snapshot::default(),
            metrics.sale_gauges("s"),
        )
    }

    #[test]
    fn a_remembered_winner_is_found_with_one_ticket_entry() {
        let sale = sale();
        let user = UserId::parse("alice").unwrap();
        let other = UserId::parse("bob").unwrap();
        let issued = Issued {
            ticket: crate::id::TicketId::for_user(&user),
            issued_at_ms: 1,
            expires_at_ms: 2,
        };
        let w = WarehouseId::parse(crate::inventory::DEFAULT_WAREHOUSE).unwrap();
        sale.remember_winner(user, issued, w);
        // The buyer's lookup reads the table only behind a filter hit.
        assert!(sale.filter.may_contain(user.digest()));
        assert_eq!(sale.winners.len(), 1);
        assert!(sale.may_have_won(&user));
        assert_eq!(sale.winner(&user), Some((issued, w)));
        assert!(!sale.may_have_won(&other));
        assert_eq!(sale.winner(&other), None);
    }

    #[test]
    fn users_sharing_a_digest_each_get_their_own_ticket_and_never_the_other_s() {
        let sale = sale();
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let w = WarehouseId::parse(crate::inventory::DEFAULT_WAREHOUSE).unwrap();
        let issued = |user: &UserId| Issued {
            ticket: crate::id::TicketId::for_user(user),
            issued_at_ms: 1,
            expires_at_ms: 2,
        };
        let (a, b) = (issued(&alice), issued(&bob));
        let d = alice.digest();
        let carol = UserId::parse("carol").unwrap();
        sale.remember(d, alice, a, w);
        assert_eq!(sale.cached(d, &bob), None);
        sale.remember(d, bob, b, w);
        assert_eq!(sale.cached(d, &alice), Some((a, w)));
        assert_eq!(sale.cached(d, &bob), Some((b, w)));
        assert_eq!(sale.cached(d, &carol), None);
        // A user's first ticket entry stays.
        sale.remember(d, alice, b, w);
        assert_eq!(sale.cached(d, &alice), Some((a, w)));
    }

    #[test]
    fn a_ticket_entry_is_48_bytes() {
        // Its size is the replica's memory per win, with the slots.
        assert_eq!(std::mem::size_of::<Cached>(), 48);
    }

    #[test]
    fn a_ticket_of_the_older_form_and_its_warehouse_come_back_whole() {
        let sale = sale();
        let alice = UserId::parse("alice").unwrap();
        let (berlin, paris) = (
            WarehouseId::parse("berlin-1").unwrap(),
            WarehouseId::parse("paris").unwrap(),
        );
        let old = Issued {
            ticket: TicketId::random(),
            issued_at_ms: 1_700_000_000_000,
            expires_at_ms: 1_700_000_900_000,
        };
        sale.remember_winner(alice, old, berlin);
        let bob = UserId::parse("bob").unwrap();
        let new = Issued {
            ticket: TicketId::for_user(&bob),
            ..old
        };
        sale.remember_winner(bob, new, paris);
        assert_eq!(sale.winner(&alice), Some((old, berlin)));
        assert_eq!(sale.winner(&bob), Some((new, paris)));
    }

    #[test]
    fn threads_naming_the_same_warehouses_at_once_agree_on_one_index_each() {
        const THREADS: usize = 4;
        let names = Arc::new(Names::default());
        let ws: Vec<WarehouseId> = (0..MAX_NAMES)
            .map(|i| WarehouseId::parse(&format!("w{i}")).unwrap())
            .collect();
        let start = Arc::new(std::sync::Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (names, ws, start) = (names.clone(), ws.clone(), start.clone());
                std::thread::spawn(move || {
                    // Every thread names each new warehouse at the same
                    // moment: a name added twice would take two indexes.
                    ws.iter()
                        .map(|w| {
                            start.wait();
                            names.index(w)
                        })
                        .collect::<Vec<Option<u8>>>()
                })
            })
            .collect();
        let seen: Vec<_> = threads.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
        assert_eq!(names.len.load(Relaxed), ws.len());
        for (w, i) in ws.iter().zip(&seen[0]) {
            assert_eq!(i.and_then(|i| names.get(i)), Some(*w));
        }
    }

    #[test]
    fn a_win_past_the_warehouse_names_is_kept_bare_and_looked_up_when_asked() {
        let sale = sale();
        let issued = |user: &UserId| Issued {
            ticket: TicketId::for_user(user),
            issued_at_ms: 1,
            expires_at_ms: 2,
        };
        for i in 0..MAX_NAMES {
            let user = UserId::parse(&format!("u{i}")).unwrap();
            let w = WarehouseId::parse(&format!("w{i}")).unwrap();
            sale.remember_winner(user, issued(&user), w);
            assert_eq!(sale.winner(&user).map(|(_, w)| w), Some(w));
        }
        let late = UserId::parse("late").unwrap();
        let w = WarehouseId::parse("one-too-many").unwrap();
        sale.remember_winner(late, issued(&late), w);
        // Still known to have won (no unit is taken for them), but the
        // ticket comes from the store.
        assert!(sale.may_have_won(&late));
        assert_eq!(sale.winner(&late), None);
        // A known warehouse still takes new entries.
        let next = UserId::parse("next").unwrap();
        let w0 = WarehouseId::parse("w0").unwrap();
        sale.remember_winner(next, issued(&next), w0);
        assert_eq!(sale.winner(&next).map(|(_, w)| w), Some(w0));
    }

    #[test]
    fn the_digest_filter_is_sized_by_the_units_within_its_bounds() {
        let bits = |units| DigestFilter::for_units(units).words.len() as u64 * 64;
        assert_eq!(bits(0), DigestFilter::MIN_BITS);
        assert_eq!(bits(10_000), (10_000 * 16u64).next_power_of_two());
        assert_eq!(bits(50_000_000), DigestFilter::MAX_BITS);
    }

    #[test]
    fn a_sold_out_sale_s_filter_sends_few_fresh_buyers_on_to_the_set() {
        // Every unit won: the filter is as full as it gets.
        let units = 10_000u64;
        let filter = DigestFilter::for_units(units);
        let digest = |i: u64| UserId::parse(&format!("u{i:07}")).unwrap().digest();
        for i in 0..units {
            filter.insert(digest(i));
        }
        let passed = (units..units + 100_000)
            .filter(|&i| filter.may_contain(digest(i)))
            .count();
        // About one in 16 by design; well under one in 8 unless the filter
        // is too small for the sale or its slots are badly spread.
        assert!(
            passed < 100_000 / 8,
            "{passed} of 100000 fresh buyers passed"
        );
    }

    #[test]
    fn a_unit_taken_while_the_lease_is_renewed_is_not_counted_twice() {
        let sale = sale();
        sale.stock.grant(1, 5);
        let before_renewal = sale.quiet_point().expect("nothing in flight");
        // A buyer takes a unit while the renewal is on its way; Redis, not
        // having seen the commit yet, reports the whole lease of 5.
        let unit = sale.take_unit().expect("a unit");
        assert!(!sale.reconcile(before_renewal, 1, 5));
        assert_eq!(sale.stock.units(), 4);
        drop(unit);
        assert_eq!((sale.stock.units(), sale.inflight()), (5, 0));
    }

    #[test]
    fn a_unit_lost_to_a_commit_of_unknown_outcome_is_recovered_when_all_is_quiet() {
        let sale = sale();
        sale.stock.grant(1, 5);
        // Sent, never answered: the unit stays out of the counter.
        let _ = sale.take_unit().expect("a unit").hand_over();
        sale.settle_one();
        assert_eq!(sale.stock.units(), 4);
        // Redis never ran that commit: the lease still holds 5.
        let q = sale.quiet_point().expect("nothing in flight");
        assert!(sale.reconcile(q, 1, 5));
        assert_eq!(sale.stock.units(), 5);
    }

    #[test]
    fn no_reconciliation_while_a_commit_is_in_flight() {
        let sale = sale();
        sale.stock.grant(1, 5);
        let _flying = sale.take_unit().expect("a unit").hand_over();
        assert!(sale.quiet_point().is_none());
    }

    #[test]
    fn a_sale_is_dormant_until_a_buyer_asks_and_again_two_seconds_after_the_last() {
        let sale = sale();
        assert!(sale.dormant(10_000), "no buyer yet");
        sale.note_demand(10_000);
        assert!(!sale.dormant(10_000 + DORMANT_AFTER_MS - 1));
        // Asked within the grain: not written again, so dormant on time.
        sale.note_demand(10_050);
        assert!(sale.dormant(10_000 + DORMANT_AFTER_MS));
        sale.note_demand(10_200);
        assert!(!sale.dormant(10_000 + DORMANT_AFTER_MS));
        assert!(sale.dormant(10_200 + DORMANT_AFTER_MS));
    }

    #[tokio::test]
    async fn only_a_buyer_who_comes_back_to_a_dormant_sale_wakes_the_watcher() {
        let sale = sale();
        sale.note_demand(10_000);
        // The first buyer ever woke it: take that wake-up.
        tokio::time::timeout(Duration::from_millis(10), sale.demand_returned())
            .await
            .expect("the first buyer wakes the watcher");
        sale.note_demand(10_500);
        sale.note_demand(11_900);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), sale.demand_returned())
                .await
                .is_err(),
            "woken while buyers kept coming"
        );
        sale.note_demand(11_900 + DORMANT_AFTER_MS);
        tokio::time::timeout(Duration::from_millis(10), sale.demand_returned())
            .await
            .expect("a buyer back after two quiet seconds wakes the watcher");
    }

    #[test]
    fn a_sold_out_proof_expires_and_then_proves_nothing() {
        let sale = sale();
        sale.observe_pool(0, 0, 0, 1_000);
        assert!(sale.replica_complete(1_000 + PROOF_FRESH_MS));
        assert!(!sale.replica_complete(1_001 + PROOF_FRESH_MS));
        // A proof counting a win the replica lacks proves nothing either.
        sale.observe_pool(0, 0, 1, 2_000);
        assert!(!sale.replica_complete(2_000));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The filter never hides a digest put in it: a clear bit is proof.
        #[test]
        fn a_digest_put_in_the_filter_is_always_found(
            units in 0u64..100_000,
            digests in proptest::collection::vec(any::<u64>(), 1..500),
        ) {
            let filter = DigestFilter::for_units(units);
            for &d in &digests {
                filter.insert(d);
            }
            for &d in &digests {
                prop_assert!(filter.may_contain(d));
            }
        }

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

        /// Takers racing lease changes: every thread starts at one barrier,
        /// grants come under several epochs (a new epoch replaces the old
        /// lease), and a taken unit always belongs to a lease that was
        /// granted. No drain afterwards: the units handed out plus those
        /// left can never exceed what the live leases granted, and a unit
        /// of a replaced lease is never handed out after its replacement.
        #[test]
        fn takers_racing_new_epochs_never_get_more_than_the_leases_granted(
            grants in proptest::collection::vec((1u32..4, 0u32..200), 1..8),
            threads in 2usize..6,
        ) {
            use std::sync::Barrier;
            let s = Arc::new(LocalStock::new());
            let barrier = Arc::new(Barrier::new(threads + 1));
            let taken: Vec<Vec<Epoch>> = std::thread::scope(|scope| {
                let takers: Vec<_> = (0..threads)
                    .map(|_| {
                        let (s, barrier) = (s.clone(), barrier.clone());
                        scope.spawn(move || {
                            barrier.wait();
                            let mut got = Vec::new();
                            for _ in 0..400 {
                                if let Some(e) = s.take() {
                                    got.push(e);
                                }
                            }
                            got
                        })
                    })
                    .collect();
                barrier.wait();
                for (e, n) in &grants {
                    s.grant(*e, *n);
                }
                takers.into_iter().map(|t| t.join().unwrap()).collect()
            });
            // Per epoch, what a sequence of grants can have made available:
            // the sum of the grants of that epoch's runs (a run restarts
            // when the epoch changes).
            let mut granted: std::collections::HashMap<Epoch, u64> = Default::default();
            for (e, n) in &grants {
                *granted.entry(*e).or_default() += u64::from(*n);
            }
            let mut by_epoch: std::collections::HashMap<Epoch, u64> = Default::default();
            for e in taken.iter().flatten() {
                *by_epoch.entry(*e).or_default() += 1;
            }
            for (e, n) in &by_epoch {
                prop_assert!(*e != 0, "a unit with no lease was handed out");
                prop_assert!(n <= &granted[e], "epoch {} handed out {} of {}", e, n, granted[e]);
            }
            let total: u64 = by_epoch.values().sum();
            let last = grants.last().map(|g| g.0).unwrap_or(0);
            prop_assert!(total + u64::from(s.units()) <= granted.values().sum::<u64>());
            prop_assert!(s.units() == 0 || s.epoch() == last);
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
