//! A sale's domain values: what an operator, a buyer and the order backend
//! speak of, whatever store keeps them.
//!
//! - [`SaleSpec`] and [`Eligibility`]: a sale's settings as the admin gives
//!   them, with the limits the store can represent ([`MAX_NUMBER`]).
//! - [`Snapshot`], [`SaleState`], [`WarehouseAccount`] and [`Pool`]: a
//!   sale's settings and accounting (DESIGN §2, §7) as one atomic read sees
//!   them.
//! - [`PutOutcome`], [`StockChange`] and [`TransferOutcome`]: what an
//!   operation on a sale did, business refusals included.
//! - [`Issued`], [`Placement`], [`TicketState`], [`TicketRecord`] and
//!   [`Transition`]: a ticket as the buyer and the order backend see it.
//!
//! The store seam ([`crate::store::Store`]) speaks these types; it does not
//! define them. Reply shapes of single scripts (a lease grant, an `admit`
//! verdict) stay with the store.

use crate::id::{TicketId, UserId, WarehouseId};

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

    /// The mode named `open` or `list`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Eligibility::Open),
            "list" => Some(Eligibility::List),
            _ => None,
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

/// What creating or updating a sale did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Updated,
    StockRequired,
}

/// What adding or withdrawing units did; `total` and `available` are the
/// sale's afterwards (unchanged when refused).
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
    /// Whether `balanced` was evaluated (a [`crate::store::Store::view`] does not).
    pub checked: bool,
    /// Lease records the cross-check read (0 when not `checked`).
    pub lease_records: u64,
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec() -> SaleSpec {
        SaleSpec {
            stock: Some(10),
            starts_at_ms: 1_000,
            ends_at_ms: 2_000,
            ticket_ttl_ms: 60_000,
            eligibility: Eligibility::Open,
        }
    }

    /// A sale of 10 units open from 1,000 to 2,000 ms: 4 in the pool, 2
    /// leased, 3 pending, 1 confirmed; read at `now_ms`.
    pub(crate) fn snapshot(now_ms: u64) -> Snapshot {
        Snapshot {
            now_ms,
            starts_at_ms: 1_000,
            ends_at_ms: 2_000,
            stock_total: 10,
            available: 4,
            leased: 2,
            pending: 3,
            confirmed: 1,
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_sale_must_end_after_it_starts_and_give_winners_time_to_pay() {
        assert_eq!(spec().validate(), Ok(()));
        let backwards = SaleSpec {
            ends_at_ms: 1_000,
            ..spec()
        };
        assert_eq!(
            backwards.validate(),
            Err("ends_at_ms must be after starts_at_ms")
        );
        let no_ttl = SaleSpec {
            ticket_ttl_ms: 0,
            ..spec()
        };
        assert_eq!(no_ttl.validate(), Err("ticket_ttl_ms must be positive"));
    }

    #[test]
    fn numbers_a_lua_double_cannot_hold_exactly_are_refused() {
        let huge_stock = SaleSpec {
            stock: Some(MAX_NUMBER + 1),
            ..spec()
        };
        assert_eq!(huge_stock.validate(), Err("stock is too large"));
        let largest = SaleSpec {
            stock: Some(MAX_NUMBER),
            ..spec()
        };
        assert_eq!(largest.validate(), Ok(()));
        let far_end = SaleSpec {
            ends_at_ms: MAX_NUMBER + 1,
            ..spec()
        };
        assert_eq!(far_end.validate(), Err("times must be at most 2^53 - 1"));
    }

    #[test]
    fn a_stock_change_is_non_zero_and_representable_either_way() {
        assert_eq!(validate_stock_delta(0), Err("add must not be 0"));
        assert_eq!(validate_stock_delta(5), Ok(()));
        assert_eq!(validate_stock_delta(-5), Ok(()));
        let too_far = -((MAX_NUMBER + 1) as i64);
        assert_eq!(validate_stock_delta(too_far), Err("add is too large"));
    }

    #[test]
    fn eligibility_reads_back_what_it_prints() {
        for e in [Eligibility::Open, Eligibility::List] {
            assert_eq!(Eligibility::parse(e.as_str()), Some(e));
        }
        assert_eq!(Eligibility::parse("Open"), None);
    }

    #[test]
    fn a_sale_state_follows_the_window_then_the_stock() {
        assert_eq!(snapshot(999).state(), SaleState::Scheduled);
        assert_eq!(snapshot(1_000).state(), SaleState::Open);
        assert_eq!(snapshot(2_000).state(), SaleState::Ended);
        let sold_out = Snapshot {
            available: 0,
            leased: 0,
            ..snapshot(1_500)
        };
        assert_eq!(sold_out.state(), SaleState::SoldOut);
        let leased_only = Snapshot {
            available: 0,
            ..snapshot(1_500)
        };
        assert_eq!(leased_only.state(), SaleState::Open);
        let closed = Snapshot {
            closed: true,
            ..snapshot(999)
        };
        assert_eq!(closed.state(), SaleState::Closed);
    }

    #[test]
    fn a_sale_without_warehouses_accounts_for_all_its_units_in_default() {
        let w = WarehouseAccount::of_sale(&snapshot(1_500));
        assert_eq!(w.warehouse.as_str(), "default");
        assert_eq!((w.total, w.unsold, w.pending, w.confirmed), (10, 6, 3, 1));
        assert_eq!(w.total, w.unsold + w.pending + w.confirmed);
    }
}
