//! The sale operations an operator runs: put, stock, eligible, close, show,
//! audit, transfer and move (DESIGN §3 "Operations", §7).
//!
//! Each is one typed function over the store: its input is parsed at the
//! edge (an HTTP body, command-line flags), it validates everything before
//! its first write, and it answers a typed result or an [`OpsError`]. The
//! admin routes (`http::admin`), the `bigtap sale` commands ([`crate::cli`])
//! and the demo all call these functions, so an operation is written once.
//!
//! Rendering lives here too, in one place per result: `to_json` is the body
//! of the admin route, `Display` is the line the command prints. Errors are
//! mapped by each caller (an HTTP status, or a message and exit code); their
//! `Display` is the command line's wording.
//!
//! What stays with the caller: node-local effects (a node reloading a sale
//! it serves after a change) and edge-only checks of a request's shape.

use std::fmt;
use std::path::Path;

use serde_json::{json, Value};

use crate::audit::{AuditError, AuditReport};
use crate::id::{SaleId, UserId, WarehouseId};
use crate::inventory::{Inventory, RawSpec, SpecError};
use crate::moves::{AbortAfter, MoveError, Plan};
use crate::sale::{
    validate_stock_delta, Eligibility, PutOutcome, SaleSpec, Snapshot, StockChange,
    TransferOutcome, WarehouseAccount, MAX_NUMBER,
};
use crate::store::redis::RedisStore;
use crate::store::{Store, StoreError};

/// Time a winner has to pay when a sale does not say: 15 minutes.
pub const DEFAULT_TICKET_TTL_MS: u64 = 15 * 60 * 1000;

/// Why an operation did nothing. `Display` is the command line's wording;
/// the admin routes map each variant to their contract status and body.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A setting the store cannot represent or the sale cannot mean.
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("--stock is required to create a sale")]
    StockRequired,
    #[error("unknown sale {0}")]
    UnknownSale(SaleId),
    #[error("sale {0} has several warehouses: give --warehouse")]
    WarehouseRequired(SaleId),
    #[error("sale {0} has no such warehouse")]
    UnknownWarehouse(SaleId),
    /// A withdrawal larger than the unleased units.
    #[error("only {available} units are unleased; cannot withdraw {withdraw}")]
    InsufficientAvailable {
        total: u64,
        available: u64,
        withdraw: u64,
    },
    /// A transfer from a warehouse with fewer unsold units.
    #[error("{from} has only {unsold} unsold units")]
    InsufficientUnsold { from: WarehouseId, unsold: u64 },
    /// A transfer from a warehouse the sale does not have (boxed: two ids
    /// would make every result of this module large).
    #[error("sale {} has no warehouse {}", .0.0, .0.1)]
    UnknownSource(Box<(SaleId, WarehouseId)>),
    #[error("a sale has at most 64 warehouses")]
    TooManyWarehouses,
    #[error("--from and --to must differ and --units must be positive")]
    SameWarehouse,
    #[error("--from and --to must differ and --units must be positive")]
    NoUnits,
    #[error("--units must be at most 2^53 - 1")]
    TooManyUnits,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Move(#[from] MoveError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// A sale's settings as an operator gives them (`PUT …/sales/{sale}`,
/// `bigtap sale create`), parsed but not yet validated.
#[derive(Debug, Clone, Default)]
pub struct PutSale {
    /// Units for a new sale (or the warehouses' sum); an update never
    /// changes stock.
    pub stock: Option<u64>,
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    /// `None`: [`DEFAULT_TICKET_TTL_MS`].
    pub ticket_ttl_ms: Option<u64>,
    /// `None`: open to every buyer.
    pub eligibility: Option<Eligibility>,
    pub inventory: RawSpec,
}

impl PutSale {
    /// The spec and inventory the store is given, once both are valid.
    pub fn validate(&self) -> Result<(SaleSpec, Inventory), OpsError> {
        let (stock, inventory) = Inventory::from_spec(self.stock, &self.inventory)?;
        let spec = SaleSpec {
            stock,
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: self.ends_at_ms,
            ticket_ttl_ms: self.ticket_ttl_ms.unwrap_or(DEFAULT_TICKET_TTL_MS),
            eligibility: self.eligibility.unwrap_or(Eligibility::Open),
        };
        spec.validate().map_err(OpsError::Invalid)?;
        Ok((spec, inventory))
    }
}

/// A created or updated sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Put {
    pub sale: SaleId,
    pub created: bool,
}

impl fmt::Display for Put {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.created {
            true => write!(f, "created sale {}", self.sale),
            false => write!(f, "updated sale {} (stock unchanged)", self.sale),
        }
    }
}

/// Creates a sale, or updates its window, ticket TTL and eligibility mode.
pub async fn put(store: &dyn Store, sale: &SaleId, req: &PutSale) -> Result<Put, OpsError> {
    let (spec, inventory) = req.validate()?;
    let created = match store.put_sale_with(sale, &spec, &inventory).await? {
        PutOutcome::Created => true,
        PutOutcome::Updated => false,
        PutOutcome::StockRequired => return Err(OpsError::StockRequired),
    };
    Ok(Put {
        sale: *sale,
        created,
    })
}

/// A sale's accounting after a stock change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stocked {
    pub total: u64,
    pub available: u64,
}

impl Stocked {
    pub fn to_json(&self) -> Value {
        json!({"stock_total": self.total, "available": self.available})
    }
}

impl fmt::Display for Stocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stock_total {}, available {}",
            self.total, self.available
        )
    }
}

/// A change of a sale's units: non-zero and representable. Built first,
/// so a bad `add` is refused before anything else of the request is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta(i64);

impl StockDelta {
    pub fn new(add: i64) -> Result<Self, OpsError> {
        validate_stock_delta(add).map_err(OpsError::Invalid)?;
        Ok(StockDelta(add))
    }

    /// Units added (positive) or withdrawn (negative).
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Adds (`delta` > 0) or withdraws (`delta` < 0) units of one warehouse
/// (`None`: the sale's only one). A withdrawal takes unleased units only.
pub async fn stock(
    store: &dyn Store,
    sale: &SaleId,
    delta: StockDelta,
    warehouse: Option<WarehouseId>,
) -> Result<Stocked, OpsError> {
    let add = delta.get();
    match store.add_stock_to(sale, add, warehouse).await? {
        StockChange::Changed { total, available } => Ok(Stocked { total, available }),
        StockChange::Insufficient { total, available } => Err(OpsError::InsufficientAvailable {
            total,
            available,
            withdraw: add.unsigned_abs(),
        }),
        StockChange::UnknownSale => Err(OpsError::UnknownSale(*sale)),
        StockChange::WarehouseRequired => Err(OpsError::WarehouseRequired(*sale)),
        StockChange::UnknownWarehouse => Err(OpsError::UnknownWarehouse(*sale)),
    }
}

/// Users added to a sale's eligibility list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// Newly listed (a user listed before is not counted).
    pub added: u64,
    pub given: usize,
}

impl Added {
    pub fn to_json(&self) -> Value {
        json!({"added": self.added, "given": self.given})
    }
}

impl fmt::Display for Added {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} users added ({} given)", self.added, self.given)
    }
}

/// Adds users to the sale's eligibility list.
pub async fn eligible(
    store: &dyn Store,
    sale: &SaleId,
    users: &[UserId],
) -> Result<Added, OpsError> {
    match store.add_eligible(sale, users).await? {
        Some(added) => Ok(Added {
            added,
            given: users.len(),
        }),
        None => Err(OpsError::UnknownSale(*sale)),
    }
}

/// A sale closed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    pub sale: SaleId,
}

impl Closed {
    pub fn to_json(&self) -> Value {
        json!({"state": "closed"})
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "closed sale {}", self.sale)
    }
}

/// Stops admissions of the sale for good.
pub async fn close(store: &dyn Store, sale: &SaleId) -> Result<Closed, OpsError> {
    match store.close(sale).await? {
        true => Ok(Closed { sale: *sale }),
        false => Err(OpsError::UnknownSale(*sale)),
    }
}

/// A sale's accounting (DESIGN §3, §7) and each warehouse's, from one
/// atomic read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounting {
    pub snapshot: Snapshot,
    pub warehouses: Vec<WarehouseAccount>,
}

impl Accounting {
    /// `{"stock_total","available","leased","pending","confirmed",
    /// "released_total","orders_enqueued","balanced","state","warehouses"}`.
    pub fn to_json(&self) -> Value {
        let mut v = counters_json(&self.snapshot);
        v["warehouses"] = warehouses_json(&self.warehouses);
        v
    }
}

impl fmt::Display for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// The counters of DESIGN §3's accounting, and the sale's state.
fn counters_json(s: &Snapshot) -> Value {
    json!({
        "stock_total": s.stock_total,
        "available": s.available,
        "leased": s.leased,
        "pending": s.pending,
        "confirmed": s.confirmed,
        "released_total": s.released_total,
        "orders_enqueued": s.orders_enqueued,
        "balanced": s.balanced,
        "state": s.state().as_str(),
    })
}

/// `{"<w>": {"total","unsold","pending","confirmed"}}` (DESIGN §7).
fn warehouses_json(accounts: &[WarehouseAccount]) -> Value {
    let mut m = serde_json::Map::with_capacity(accounts.len());
    for a in accounts {
        m.insert(
            a.warehouse.as_str().to_string(),
            json!({"total": a.total, "unsold": a.unsold, "pending": a.pending, "confirmed": a.confirmed}),
        );
    }
    Value::Object(m)
}

/// The sale's accounting, `balanced` evaluated in the same atomic read.
pub async fn show(store: &dyn Store, sale: &SaleId) -> Result<Accounting, OpsError> {
    match store.accounting(sale).await? {
        Some((snapshot, warehouses)) => Ok(Accounting {
            snapshot,
            warehouses,
        }),
        None => Err(OpsError::UnknownSale(*sale)),
    }
}

/// A sale's settings and counters, as the admin route answers a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub sale: SaleId,
    pub snapshot: Snapshot,
}

impl Settings {
    /// The accounting counters plus `"sale","starts_at_ms","ends_at_ms",
    /// "ticket_ttl_ms","eligibility"`.
    pub fn to_json(&self) -> Value {
        let s = &self.snapshot;
        let mut v = counters_json(s);
        v["sale"] = json!(self.sale.as_str());
        v["starts_at_ms"] = json!(s.starts_at_ms);
        v["ends_at_ms"] = json!(s.ends_at_ms);
        v["ticket_ttl_ms"] = json!(s.ticket_ttl_ms);
        v["eligibility"] = json!(if s.list_only { "list" } else { "open" });
        v
    }
}

/// The sale's settings and counters (without the cross-checks).
pub async fn settings(store: &dyn Store, sale: &SaleId) -> Result<Settings, OpsError> {
    match store.snapshot(sale).await? {
        Some(snapshot) => Ok(Settings {
            sale: *sale,
            snapshot,
        }),
        None => Err(OpsError::UnknownSale(*sale)),
    }
}

/// Units to move between two warehouses of one sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub from: WarehouseId,
    pub to: WarehouseId,
    pub units: u64,
}

impl Transfer {
    pub fn validate(&self) -> Result<(), OpsError> {
        if self.from == self.to {
            Err(OpsError::SameWarehouse)
        } else if self.units == 0 {
            Err(OpsError::NoUnits)
        } else if self.units > MAX_NUMBER {
            Err(OpsError::TooManyUnits)
        } else {
            Ok(())
        }
    }
}

/// A transfer done, and each warehouse's unsold units afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    pub transfer: Transfer,
    pub from_unsold: u64,
    pub to_unsold: u64,
}

impl Transferred {
    pub fn to_json(&self) -> Value {
        let t = &self.transfer;
        json!({
            "from": t.from.as_str(),
            "to": t.to.as_str(),
            "units": t.units,
            "from_unsold": self.from_unsold,
            "to_unsold": self.to_unsold,
        })
    }
}

impl fmt::Display for Transferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.transfer;
        write!(
            f,
            "moved {}: {} has {} unsold, {} has {} unsold",
            t.units, t.from, self.from_unsold, t.to, self.to_unsold
        )
    }
}

/// Moves unsold units between two warehouses of a sale in one atomic
/// step (`to` may be new); the pool and the leases do not change.
pub async fn transfer(
    store: &dyn Store,
    sale: &SaleId,
    t: Transfer,
) -> Result<Transferred, OpsError> {
    t.validate()?;
    match store.transfer(sale, t.from, t.to, t.units).await? {
        TransferOutcome::Moved {
            from_unsold,
            to_unsold,
        } => Ok(Transferred {
            transfer: t,
            from_unsold,
            to_unsold,
        }),
        TransferOutcome::Insufficient { unsold } => Err(OpsError::InsufficientUnsold {
            from: t.from,
            unsold,
        }),
        TransferOutcome::UnknownSale => Err(OpsError::UnknownSale(*sale)),
        TransferOutcome::UnknownWarehouse => {
            Err(OpsError::UnknownSource(Box::new((*sale, t.from))))
        }
        TransferOutcome::TooManyWarehouses => Err(OpsError::TooManyWarehouses),
    }
}

/// Moves unleased unsold units between two sales, journaled (see
/// [`crate::moves`]); `say` hears each step. Answers the closing line.
pub async fn move_units(
    store: &RedisStore,
    plan: &Plan,
    abort_after: AbortAfter,
    say: impl FnMut(String),
) -> Result<String, OpsError> {
    Ok(crate::moves::run(store, plan, abort_after, say).await?)
}

/// Reconciles a sale's records (and, given the ids the order backend
/// received, the backend); the report lists every discrepancy.
pub async fn audit(
    store: &RedisStore,
    sale: &SaleId,
    delivered: Option<&Path>,
) -> Result<AuditReport, OpsError> {
    Ok(crate::audit::audit_store(store, sale, delivered).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale() -> SaleId {
        SaleId::parse("s1").unwrap()
    }

    fn w(name: &str) -> WarehouseId {
        WarehouseId::parse(name).unwrap()
    }

    fn put_sale() -> PutSale {
        PutSale {
            stock: Some(10),
            starts_at_ms: 1_000,
            ends_at_ms: 2_000,
            ..PutSale::default()
        }
    }

    #[test]
    fn a_sale_put_without_ttl_or_mode_is_open_with_fifteen_minutes_to_pay() {
        let (spec, inventory) = put_sale().validate().unwrap();
        assert_eq!(spec.ticket_ttl_ms, 15 * 60 * 1000);
        assert_eq!(spec.eligibility, Eligibility::Open);
        assert_eq!(spec.stock, Some(10));
        assert_eq!(inventory, Inventory::single(10));
    }

    #[test]
    fn a_sale_put_is_refused_before_the_store_when_its_window_is_backwards() {
        let backwards = PutSale {
            ends_at_ms: 500,
            ..put_sale()
        };
        let e = backwards.validate().unwrap_err();
        assert_eq!(e.to_string(), "ends_at_ms must be after starts_at_ms");
    }

    #[test]
    fn a_sale_put_whose_stock_disagrees_with_its_warehouses_is_refused() {
        let mut req = put_sale();
        req.inventory.warehouses = Some([("north".to_string(), 4)].into_iter().collect());
        assert!(matches!(
            req.validate(),
            Err(OpsError::Spec(SpecError::StockMismatch {
                stock: 10,
                sum: 4
            }))
        ));
    }

    #[test]
    fn a_transfer_names_two_warehouses_and_a_representable_positive_count() {
        let t = Transfer {
            from: w("a"),
            to: w("b"),
            units: 3,
        };
        assert!(t.validate().is_ok());
        let same = Transfer { to: w("a"), ..t };
        assert!(matches!(same.validate(), Err(OpsError::SameWarehouse)));
        let none = Transfer { units: 0, ..t };
        assert!(matches!(none.validate(), Err(OpsError::NoUnits)));
        let huge = Transfer {
            units: MAX_NUMBER + 1,
            ..t
        };
        assert!(matches!(huge.validate(), Err(OpsError::TooManyUnits)));
    }

    #[test]
    fn the_accounting_renders_counters_state_and_each_warehouse() {
        let snapshot = Snapshot {
            released_total: 5,
            orders_enqueued: 9,
            balanced: true,
            checked: true,
            ..crate::sale::tests::snapshot(1_500)
        };
        let a = Accounting {
            snapshot,
            warehouses: vec![WarehouseAccount::of_sale(&snapshot)],
        };
        assert_eq!(
            a.to_json(),
            json!({
                "stock_total": 10, "available": 4, "leased": 2, "pending": 3,
                "confirmed": 1, "released_total": 5, "orders_enqueued": 9,
                "balanced": true, "state": "open",
                "warehouses": {"default": {"total": 10, "unsold": 6, "pending": 3, "confirmed": 1}},
            })
        );
        assert_eq!(a.to_string(), a.to_json().to_string());
    }

    #[test]
    fn the_settings_of_a_put_add_the_window_ttl_and_mode_to_the_counters() {
        let s = Settings {
            sale: sale(),
            snapshot: Snapshot {
                starts_at_ms: 1_000,
                ends_at_ms: 2_000,
                ticket_ttl_ms: 60_000,
                list_only: true,
                ..Snapshot::default()
            },
        };
        let v = s.to_json();
        assert_eq!(v["sale"], "s1");
        assert_eq!(v["ticket_ttl_ms"], 60_000);
        assert_eq!(v["eligibility"], "list");
        assert_eq!(v["state"], "scheduled");
        assert!(v.get("warehouses").is_none());
    }

    #[test]
    fn each_result_prints_the_line_the_command_always_printed() {
        let created = Put {
            sale: sale(),
            created: true,
        };
        assert_eq!(created.to_string(), "created sale s1");
        let updated = Put {
            created: false,
            ..created
        };
        assert_eq!(updated.to_string(), "updated sale s1 (stock unchanged)");
        let stocked = Stocked {
            total: 8,
            available: 5,
        };
        assert_eq!(stocked.to_string(), "stock_total 8, available 5");
        assert_eq!(stocked.to_json(), json!({"stock_total": 8, "available": 5}));
        let added = Added { added: 2, given: 3 };
        assert_eq!(added.to_string(), "2 users added (3 given)");
        assert_eq!(Closed { sale: sale() }.to_string(), "closed sale s1");
        let moved = Transferred {
            transfer: Transfer {
                from: w("a"),
                to: w("b"),
                units: 3,
            },
            from_unsold: 1,
            to_unsold: 7,
        };
        assert_eq!(moved.to_string(), "moved 3: a has 1 unsold, b has 7 unsold");
        assert_eq!(
            moved.to_json(),
            json!({"from": "a", "to": "b", "units": 3, "from_unsold": 1, "to_unsold": 7})
        );
    }

    #[test]
    fn a_stock_delta_is_non_zero_and_representable() {
        assert_eq!(StockDelta::new(-3).map(StockDelta::get).ok(), Some(-3));
        assert!(matches!(
            StockDelta::new(0),
            Err(OpsError::Invalid("add must not be 0"))
        ));
        assert!(matches!(
            StockDelta::new(i64::MIN),
            Err(OpsError::Invalid("add is too large"))
        ));
    }

    #[test]
    fn a_refused_withdrawal_says_how_many_units_are_unleased() {
        let e = OpsError::InsufficientAvailable {
            total: 10,
            available: 2,
            withdraw: 5,
        };
        assert_eq!(
            e.to_string(),
            "only 2 units are unleased; cannot withdraw 5"
        );
    }
}
