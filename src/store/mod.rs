//! The store seam: the one way every bigtap process talks to Redis.
//!
//! [`Store`] is every state change and read the front tier makes, in domain
//! types; it is kept to what `serve` needs so a test double stays small.
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

/// Failures to reach or understand the store. Every one means "nothing is
/// known to have happened", except [`StoreError::Timeout`] and
/// [`StoreError::Io`] on a write, whose effect is unknown: callers treat
/// those conservatively (a buyer gets 503, a retry replays the ticket).
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
    /// a refused connection never did.
    pub fn maybe_applied(&self) -> bool {
        match self {
            StoreError::Timeout(_) | StoreError::Protocol { .. } => true,
            StoreError::Io(e) => !e.is_connection_refusal(),
            StoreError::Unsafe(_) | StoreError::Url(_) | StoreError::CaFile(..) => false,
        }
    }
}

/// Who may buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    Open,
    List,
}

impl Eligibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Eligibility::Open => "open",
            Eligibility::List => "list",
        }
    }
}

/// Settings of a sale as the admin gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleSpec {
    /// Units for a new sale; ignored by an update.
    pub stock: Option<u64>,
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    pub ticket_ttl_ms: u64,
    pub eligibility: Eligibility,
}

/// Largest number a sale may hold in a count or time: Lua numbers are
/// doubles, and a larger integer reaches Redis in exponent form, which
/// `HINCRBY` refuses and integer replies cannot encode.
pub const MAX_NUMBER: u64 = (1 << 53) - 1;

impl SaleSpec {
    /// Checks what the store cannot represent or the sale cannot mean.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.ends_at_ms <= self.starts_at_ms {
            return Err("ends_at_ms must be after starts_at_ms");
        }
        if self.ticket_ttl_ms == 0 {
            return Err("ticket_ttl_ms must be positive");
        }
        if self.stock.is_some_and(|s| s > MAX_NUMBER) {
            return Err("stock is too large");
        }
        if [self.starts_at_ms, self.ends_at_ms, self.ticket_ttl_ms]
            .iter()
            .any(|n| *n > MAX_NUMBER)
        {
            return Err("times must be at most 2^53 - 1");
        }
        Ok(())
    }
}

/// Checks a stock change: non-zero and representable.
pub fn validate_stock_delta(delta: i64) -> Result<(), &'static str> {
    if delta == 0 {
        Err("add must not be 0")
    } else if delta.unsigned_abs() > MAX_NUMBER {
        Err("add is too large")
    } else {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Updated,
    StockRequired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange {
    Changed {
        total: u64,
        available: u64,
    },
    Insufficient {
        total: u64,
        available: u64,
    },
    UnknownSale,
    /// The sale has several warehouses and none was named.
    WarehouseRequired,
    UnknownWarehouse,
}

/// What a transfer between two warehouses of a sale did (DESIGN §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferOutcome {
    /// Unsold units of `from` and `to` afterwards.
    Moved {
        from_unsold: u64,
        to_unsold: u64,
    },
    /// `from` has only this many unsold units.
    Insufficient {
        unsold: u64,
    },
    UnknownSale,
    UnknownWarehouse,
    TooManyWarehouses,
}

/// One warehouse's accounting (DESIGN §7): `total = unsold + pending +
/// confirmed`; unsold units are in the pool or in node leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarehouseAccount {
    pub warehouse: WarehouseId,
    pub total: u64,
    pub unsold: u64,
    pub pending: u64,
    pub confirmed: u64,
}

impl WarehouseAccount {
    /// The one warehouse of a store that keeps none, read off the sale.
    pub fn of_sale(s: &Snapshot) -> Self {
        WarehouseAccount {
            warehouse: WarehouseId::parse(crate::inventory::DEFAULT_WAREHOUSE)
                .unwrap_or_else(|_| unreachable!()),
            total: s.stock_total,
            unsold: s.available + s.leased,
            pending: s.pending,
            confirmed: s.confirmed,
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

/// Settings and accounting of a sale, read in one atomic step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Redis `TIME` when the snapshot was taken.
    pub now_ms: u64,
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    pub closed: bool,
    pub ticket_ttl_ms: u64,
    pub list_only: bool,
    pub eligibility_version: u64,
    pub stock_total: u64,
    pub available: u64,
    pub leased: u64,
    pub pending: u64,
    pub confirmed: u64,
    pub released_total: u64,
    pub orders_enqueued: u64,
    /// DESIGN §2's invariant, checked against the records in the same step.
    pub balanced: bool,
    /// Whether `balanced` was evaluated (a [`Store::view`] does not).
    pub checked: bool,
}

impl Snapshot {
    pub fn state(&self) -> SaleState {
        if self.closed {
            SaleState::Closed
        } else if self.now_ms < self.starts_at_ms {
            SaleState::Scheduled
        } else if self.now_ms >= self.ends_at_ms {
            SaleState::Ended
        } else if self.available == 0 && self.leased == 0 {
            SaleState::SoldOut
        } else {
            SaleState::Open
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleState {
    Scheduled,
    Open,
    SoldOut,
    Ended,
    Closed,
}

impl SaleState {
    pub fn as_str(self) -> &'static str {
        match self {
            SaleState::Scheduled => "scheduled",
            SaleState::Open => "open",
            SaleState::SoldOut => "sold_out",
            SaleState::Ended => "ended",
            SaleState::Closed => "closed",
        }
    }
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

/// A buyer holding a locally taken unit, with the ticket id proposed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub user: UserId,
    pub ticket: TicketId,
    /// The buyer's region (`{"ship_to"}` of the take body), which picks
    /// the warehouse preference order.
    pub ship_to: Option<RegionId>,
}

/// Where a won unit ships from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub warehouse: WarehouseId,
    /// Not the buyer's first choice (cross-shipping).
    pub cross: bool,
}

impl Placement {
    /// The warehouse of a sale without warehouses.
    pub fn default_warehouse() -> Self {
        Placement {
            warehouse: WarehouseId::parse(crate::inventory::DEFAULT_WAREHOUSE)
                .unwrap_or_else(|_| unreachable!()),
            cross: false,
        }
    }
}

/// A ticket as the buyer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    pub ticket: TicketId,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketState {
    Pending,
    Confirmed,
    Released,
}

impl TicketState {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Pending => "pending",
            TicketState::Confirmed => "confirmed",
            TicketState::Released => "released",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketRecord {
    pub ticket: TicketId,
    pub user: UserId,
    pub state: TicketState,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub warehouse: WarehouseId,
}

impl TicketRecord {
    /// The ticket as the buyer sees it.
    pub fn issued(&self) -> Issued {
        Issued {
            ticket: self.ticket,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// Result of confirm or release: the ticket's state afterwards and whether
/// this call changed it. `None` for an unknown ticket.
pub type Transition = Option<(TicketState, bool)>;

/// The sale's pool as one atomic read sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pool {
    pub available: u64,
    pub leased: u64,
    pub orders_enqueued: u64,
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
    /// (leases reclaimed, units returned to the pool)
    async fn reclaim(&self, sale: &SaleId) -> Result<(u64, u64), StoreError>;
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
    /// Releases up to `limit` expired pending tickets; returns how many.
    async fn sweep(&self, sale: &SaleId, limit: u64) -> Result<u64, StoreError>;

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
}
