//! The store seam: the one way every bigtap process talks to Redis.
//!
//! [`Store`] is every state change and read the front tier makes, in domain
//! types ([`crate::sale`]: the seam speaks them, it does not define them);
//! it is kept to what `serve` needs so a test double stays small.
//! [`redis::RedisStore`] implements it, and also serves the order consumer,
//! the dead-letter commands ([`queue`]) and the audit ([`dump`]) through
//! inherent methods. Business outcomes (won, replay, fenced, sold out) come
//! back as values; only failures to reach or understand Redis are
//! [`StoreError`]s.
//!
//! - [`url`]      store URLs (single server or cluster, TLS), redacted printing.
//! - [`conn`]     the one connection type, and when a call may be sent again.
//! - [`keys`]     every key name.
//! - [`scripts`]  one Lua script per state change, each beside its typed wrapper.
//! - [`record`]   the ticket record and the order-stream entry, parsed once.
//! - [`queue`]    the order stream as a queue: read, claim, ack, fail, dead letters.
//! - [`moves`]    moves of units between two sales: three steps and a journal.
//! - [`dump`]     every record of a sale at one instant (audit).
//! - [`embedded`] a supervised `redis-server` child.
//!
//! Nothing outside this module knows a Redis key or command.

pub mod conn;
pub mod dump;
pub mod embedded;
pub mod keys;
pub mod moves;
pub mod queue;
pub mod record;
pub mod redis;
pub mod scripts;
pub mod url;

pub use dump::SaleRecords;
pub use keys::{Keys, GROUP};
pub use queue::{FailMode, FailOutcome, Failure, QueueStats};
pub use record::{Order, StreamEntry};
pub use url::{redact, StoreUrl, UrlError};

use async_trait::async_trait;

use crate::id::{RegionId, SaleId, TicketId, UserId, WarehouseId};
use crate::inventory::Inventory;
use crate::sale::{
    Issued, Placement, Pool, PutOutcome, SaleSpec, Snapshot, StockChange, TicketRecord,
    TransferOutcome, Transition, WarehouseAccount,
};

/// Failures to reach or understand the store. Every one means "nothing is
/// known to have happened", except a write whose effect is unknown
/// ([`StoreError::maybe_applied`]: a timeout, a reply that cannot be read,
/// a connection lost after sending): callers treat those conservatively (a
/// buyer gets 503, a retry replays the ticket).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("redis: {0}")]
    Io(#[from] ::redis::RedisError),
    #[error("unexpected reply from script {script}: {detail}")]
    Protocol {
        script: &'static str,
        detail: String,
    },
    #[error("unsafe redis settings: {0}")]
    Unsafe(String),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("store CA file {0}: {1}")]
    CaFile(String, #[source] std::io::Error),
}

impl StoreError {
    /// Whether a write that failed this way may still have been applied: a
    /// timeout or a connection lost after sending may have reached Redis;
    /// a refused connection never did, nor did a call Redis answered with
    /// an error ([`conn::answered_with_error`]).
    pub fn maybe_applied(&self) -> bool {
        match self {
            StoreError::Timeout(_) | StoreError::Protocol { .. } => true,
            StoreError::Io(e) => !(e.is_connection_refusal() || conn::answered_with_error(e)),
            StoreError::Unsafe(_) | StoreError::Url(_) | StoreError::CaFile(..) => false,
        }
    }
}

/// Why the store refused to act on a sale at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownSale,
    NotStarted,
    Ended,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseReply {
    /// `granted` may be 0: then the pool is empty, and `epoch` is 0 unless
    /// the node still holds a live lease.
    Granted {
        granted: u64,
        epoch: u64,
        lease_units: u64,
        expires_at_ms: u64,
        /// Sale-wide, after this call.
        available: u64,
        leased: u64,
        orders_enqueued: u64,
    },
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewReply {
    Renewed {
        lease_units: u64,
        expires_at_ms: u64,
    },
    Fenced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnReply {
    Returned(u64),
    Fenced,
}

/// A buyer holding a locally taken unit, with the ticket id proposed for it
/// (one that names the buyer: [`TicketId::for_user`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub user: UserId,
    pub ticket: TicketId,
    /// The buyer's region (`{"ship_to"}` of the take body), which picks
    /// the warehouse preference order.
    pub ship_to: Option<RegionId>,
}

/// What `admit` decided for one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A win from a store that assigns no warehouse (`default`).
    Won(Issued),
    Replay(Issued),
    NotEligible,
    Fenced,
    NoUnits,
    /// A win and the warehouse it ships from (DESIGN §7).
    WonAt(Issued, Placement),
    ReplayAt(Issued, Placement),
}

impl Verdict {
    /// The ticket, where it ships from and whether it is a replay, for a
    /// won or replayed candidate.
    pub fn ticket(&self) -> Option<(Issued, Placement, bool)> {
        match *self {
            Verdict::Won(i) => Some((i, Placement::default_warehouse(), false)),
            Verdict::Replay(i) => Some((i, Placement::default_warehouse(), true)),
            Verdict::WonAt(i, p) => Some((i, p, false)),
            Verdict::ReplayAt(i, p) => Some((i, p, true)),
            Verdict::NotEligible | Verdict::Fenced | Verdict::NoUnits => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitReply {
    Judged {
        lease_units_left: u64,
        /// The winners digest's length after the call: this batch's wins
        /// are its last 8 bytes per win.
        digests_len: u64,
        verdicts: Vec<Verdict>,
    },
    Refused(Refusal),
}

/// What the store's own settings say about DESIGN §2's requirements.
#[derive(Debug, Clone, Default)]
pub struct SafetyReport {
    pub maxmemory_policy: Option<String>,
    pub appendonly: Option<String>,
    pub appendfsync: Option<String>,
}

impl SafetyReport {
    /// Problems that break a promise, in words an operator can act on.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match self.maxmemory_policy.as_deref() {
            Some("noeviction") => {}
            Some(other) => p.push(format!(
                "maxmemory-policy is {other}: Redis may evict sale keys and lose tickets; set it to noeviction"
            )),
            None => p.push("cannot read maxmemory-policy (CONFIG GET refused)".into()),
        }
        match self.appendonly.as_deref() {
            Some("yes") => {}
            Some(_) => p.push(
                "appendonly is off: a Redis restart loses acknowledged wins; set appendonly yes"
                    .into(),
            ),
            None => p.push("cannot read appendonly (CONFIG GET refused)".into()),
        }
        p
    }

    /// Weaker settings that are allowed but worth a warning.
    pub fn warnings(&self) -> Vec<String> {
        match self.appendfsync.as_deref() {
            Some("always") | None => vec![],
            Some(other) => vec![format!(
                "appendfsync is {other}: a crash of the Redis host can lose up to a second of acknowledged wins; \
                 appendfsync always keeps them"
            )],
        }
    }
}

/// Every interaction with the store. Implementations must make each state
/// change atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), StoreError>;
    async fn safety(&self) -> Result<SafetyReport, StoreError>;
    async fn sales(&self) -> Result<Vec<SaleId>, StoreError>;

    async fn put_sale(&self, sale: &SaleId, spec: &SaleSpec) -> Result<PutOutcome, StoreError>;
    async fn add_stock(&self, sale: &SaleId, delta: i64) -> Result<StockChange, StoreError>;

    /// Creates a sale with warehouses (DESIGN §7), or updates its settings
    /// (an update never changes stock or warehouses). A store that keeps
    /// no warehouses creates the sale with its stock only.
    async fn put_sale_with(
        &self,
        sale: &SaleId,
        spec: &SaleSpec,
        inventory: &Inventory,
    ) -> Result<PutOutcome, StoreError> {
        let _ = inventory;
        self.put_sale(sale, spec).await
    }

    /// Adds or withdraws units of one warehouse (`None`: the only one).
    async fn add_stock_to(
        &self,
        sale: &SaleId,
        delta: i64,
        warehouse: Option<WarehouseId>,
    ) -> Result<StockChange, StoreError> {
        match warehouse {
            None => self.add_stock(sale, delta).await,
            Some(_) => Ok(StockChange::UnknownWarehouse),
        }
    }

    /// Moves unsold units between two warehouses of a sale, atomically.
    async fn transfer(
        &self,
        sale: &SaleId,
        from: WarehouseId,
        to: WarehouseId,
        units: u64,
    ) -> Result<TransferOutcome, StoreError> {
        let _ = (sale, from, to, units);
        Ok(TransferOutcome::UnknownWarehouse)
    }

    /// The snapshot and, in the same atomic read, each warehouse's
    /// accounting. A store that keeps no warehouses reports one.
    async fn accounting(
        &self,
        sale: &SaleId,
    ) -> Result<Option<(Snapshot, Vec<WarehouseAccount>)>, StoreError> {
        Ok(self.snapshot(sale).await?.map(|s| {
            let w = WarehouseAccount::of_sale(&s);
            (s, vec![w])
        }))
    }
    /// Newly added count, or `None` for an unknown sale.
    async fn add_eligible(
        &self,
        sale: &SaleId,
        users: &[UserId],
    ) -> Result<Option<u64>, StoreError>;
    /// `false` for an unknown sale.
    async fn close(&self, sale: &SaleId) -> Result<bool, StoreError>;
    async fn snapshot(&self, sale: &SaleId) -> Result<Option<Snapshot>, StoreError>;
    /// Settings and counters without the cross-checks (`checked` false):
    /// O(1) in the fleet size, for the nodes' frequent refreshes.
    async fn view(&self, sale: &SaleId) -> Result<Option<Snapshot>, StoreError> {
        self.snapshot(sale).await
    }
    async fn eligible_users(&self, sale: &SaleId) -> Result<Vec<UserId>, StoreError>;

    async fn lease(
        &self,
        sale: &SaleId,
        node: &str,
        want: u64,
        ttl_ms: u64,
    ) -> Result<LeaseReply, StoreError>;
    async fn renew(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        ttl_ms: u64,
    ) -> Result<RenewReply, StoreError>;
    async fn return_lease(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
    ) -> Result<ReturnReply, StoreError>;
    /// Returns expired leases to the pool: (leases reclaimed, units
    /// returned). Scans at most once per `every` across the fleet (the
    /// other calls of that interval return (0, 0)); zero scans now.
    async fn reclaim(
        &self,
        sale: &SaleId,
        every: std::time::Duration,
    ) -> Result<(u64, u64), StoreError>;
    async fn admit(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        batch: &[Candidate],
    ) -> Result<AdmitReply, StoreError>;

    async fn winner(
        &self,
        sale: &SaleId,
        user: &UserId,
    ) -> Result<Option<TicketRecord>, StoreError>;
    async fn ticket(
        &self,
        sale: &SaleId,
        ticket: &TicketId,
    ) -> Result<Option<TicketRecord>, StoreError>;
    async fn confirm(&self, sale: &SaleId, ticket: &TicketId) -> Result<Transition, StoreError>;
    async fn release(&self, sale: &SaleId, ticket: &TicketId) -> Result<Transition, StoreError>;
    /// Releases up to `limit` expired pending tickets; says how many, and
    /// when the next one falls due.
    async fn sweep(&self, sale: &SaleId, limit: u64) -> Result<Swept, StoreError>;

    /// Bytes of the sale's winners digest from `offset`, at most `max`
    /// (8 per win, in the order wins were counted; empty when none).
    async fn read_digests(
        &self,
        sale: &SaleId,
        offset: u64,
        max: u64,
    ) -> Result<Vec<u8>, StoreError>;

    /// Units in the pool and in leases, and wins enqueued, in one read.
    /// `None` for an unknown sale.
    async fn pool(&self, sale: &SaleId) -> Result<Option<Pool>, StoreError>;

    /// One poll of a sale: `head`, then the digest from `offset` (at most
    /// `max` bytes), read after it, so the digest holds every win the
    /// counters read first counted. A store that can sends it all in one
    /// round trip: a node polls several times a second, and in a large
    /// fleet the store pays for the round trips more than for the reads.
    async fn poll(
        &self,
        sale: &SaleId,
        head: PollHead,
        offset: u64,
        max: u64,
    ) -> Result<(Head, Vec<u8>), StoreError> {
        let head = match head {
            PollHead::Nothing => Head::Nothing,
            PollHead::Pool => Head::Pool(self.pool(sale).await?),
            PollHead::View => Head::View(self.view(sale).await?),
        };
        let bytes = self.read_digests(sale, offset, max).await?;
        Ok((head, bytes))
    }
}

/// What one [`Store::sweep`] did, and when the next is worth making.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub released: u64,
    pub next: NextSweep,
}

/// When a sale's next pending ticket falls due, as a sweep saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextSweep {
    /// The sweep stopped at its limit: more tickets may be due now.
    Now,
    /// The first pending ticket left falls due after this long.
    In(std::time::Duration),
    /// No pending ticket is left: none falls due before one TTL from now
    /// (a ticket issued from now on lives at least that long).
    AfterTtl,
}

/// What a [`Store::poll`] reads before the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollHead {
    Nothing,
    /// [`Store::pool`].
    Pool,
    /// [`Store::view`], which holds the pool too.
    View,
}

/// What a [`Store::poll`] read before the digest; `None` inside for an
/// unknown sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Nothing,
    Pool(Option<Pool>),
    View(Option<Snapshot>),
}

impl Head {
    /// The pool it read, directly or within the view.
    pub fn pool(&self) -> Option<Pool> {
        match self {
            Head::Nothing => None,
            Head::Pool(p) => *p,
            Head::View(v) => v.as_ref().map(|s| Pool {
                available: s.available,
                leased: s.leased,
                orders_enqueued: s.orders_enqueued,
            }),
        }
    }
}
