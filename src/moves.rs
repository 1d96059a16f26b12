//! Moving unsold units between two sales (`bigtap sale move`, DESIGN §7
//! channels): two sales channels of one stock, possibly on different
//! shards, so no single atomic step can cover both.
//!
//! A move is three steps, each atomic on one sale (see [`crate::store::moves`]):
//!
//! 1. `move_out` on the source: debit unleased unsold units and journal the
//!    move as `out`, together.
//! 2. `move_in` on the destination: credit the units, remembering the move
//!    id so a second credit is a no-op.
//! 3. `move_end` on the source: mark the journal entry `done` (or `undone`,
//!    crediting the source back, when the destination cannot take them).
//!
//! Invariant: between steps 1 and 3 the units are owed by a journal entry
//! in state `out`; once a move completes, each unit is counted in exactly
//! one sale. A process killed at any point leaves at most entries in state
//! `out`, and [`run`] first finishes every such entry of the source sale,
//! so running the command again completes or undoes the interrupted move.
//! With an explicit move id, re-running is idempotent at every step.

use crate::id::{SaleId, TicketId, WarehouseId};
use crate::store::moves::{Journaled, MoveIn, MoveOut};
use crate::store::redis::RedisStore;
use crate::store::{Store, StoreError};

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Plan {
    pub from: SaleId,
    pub to: SaleId,
    pub units: u64,
    pub warehouse: Option<WarehouseId>,
    /// A move id of the id alphabet; random when not given.
    pub id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown sale {0}")]
    UnknownSale(SaleId),
    #[error("sale {0} has several warehouses: give --warehouse")]
    WarehouseRequired(SaleId),
    #[error("sale {0} has no such warehouse")]
    UnknownWarehouse(SaleId),
    #[error("only {available} unleased units ({unsold} unsold in the warehouse) in {sale}")]
    Insufficient {
        sale: SaleId,
        available: u64,
        unsold: u64,
    },
    #[error("move {id} was undone: {why}")]
    Undone { id: String, why: &'static str },
    #[error("--units must be positive and the sales must differ")]
    Invalid,
}

/// Test hook: the process aborts right after step `k` (0 = after printing
/// the move id, before step 1), as a kill -9 there would leave it.
pub type AbortAfter = Option<u32>;

fn checkpoint(abort_after: AbortAfter, step: u32) {
    if abort_after == Some(step) {
        std::process::abort();
    }
}

/// Finishes one journaled move: credits the destination (once) and closes
/// the entry; undoes it when the destination cannot take the units.
async fn finish(
    store: &RedisStore,
    from: &SaleId,
    j: &Journaled,
    abort_after: AbortAfter,
) -> Result<(), MoveError> {
    let undo = match store
        .move_in(&j.to, &j.id, from, j.units, j.warehouse)
        .await?
    {
        MoveIn::Credited | MoveIn::Already => None,
        MoveIn::UnknownSale => Some("the destination sale does not exist"),
        MoveIn::TooManyWarehouses => Some("the destination has 64 warehouses already"),
    };
    checkpoint(abort_after, 2);
    store.move_end(from, &j.id, undo.is_some()).await?;
    checkpoint(abort_after, 3);
    match undo {
        Some(why) => Err(MoveError::Undone {
            id: j.id.clone(),
            why,
        }),
        None => Ok(()),
    }
}

/// Runs `plan`: first every interrupted move out of the source sale is
/// finished; if one of them is this plan (same id, or without an id the
/// same destination, units and warehouse), that was the move and no new
/// one starts. `say` receives progress lines for the operator.
pub async fn run(
    store: &RedisStore,
    plan: &Plan,
    abort_after: AbortAfter,
    mut say: impl FnMut(String),
) -> Result<String, MoveError> {
    if plan.units == 0 || plan.from == plan.to {
        return Err(MoveError::Invalid);
    }
    let same = |j: &Journaled| match &plan.id {
        Some(id) => *id == j.id,
        None => {
            j.to == plan.to
                && j.units == plan.units
                && plan.warehouse.is_none_or(|w| w == j.warehouse)
        }
    };
    let mut resumed = None;
    for j in store.move_journal(&plan.from).await? {
        if j.state == "out" {
            say(format!(
                "finishing interrupted move {}: {} units of {} from {} to {}",
                j.id, j.units, j.warehouse, plan.from, j.to
            ));
            finish(store, &plan.from, &j, abort_after).await?;
            if same(&j) && resumed.is_none() {
                resumed = Some(j.id.clone());
            }
        } else if plan.id.as_deref() == Some(j.id.as_str()) {
            return Ok(format!("move {} is {} already", j.id, j.state));
        }
    }
    if let Some(id) = resumed {
        return Ok(format!("move {id} finished"));
    }
    // Refuse before debiting when the destination does not exist, so an
    // ordinary typo never needs an undo.
    if store.pool(&plan.to).await?.is_none() {
        return Err(MoveError::UnknownSale(plan.to));
    }
    let id = plan
        .id
        .clone()
        .unwrap_or_else(|| TicketId::random().as_str().to_owned());
    say(format!(
        "move {id}: {} units from {} to {} (if interrupted, run the same command again)",
        plan.units, plan.from, plan.to
    ));
    checkpoint(abort_after, 0);
    let warehouse = match store
        .move_out(&plan.from, &id, &plan.to, plan.units, plan.warehouse)
        .await?
    {
        MoveOut::Debited(w) => w,
        MoveOut::Exists(state) => return Ok(format!("move {id} is {state} already")),
        MoveOut::Insufficient { available, unsold } => {
            return Err(MoveError::Insufficient {
                sale: plan.from,
                available,
                unsold,
            })
        }
        MoveOut::UnknownSale => return Err(MoveError::UnknownSale(plan.from)),
        MoveOut::WarehouseRequired => return Err(MoveError::WarehouseRequired(plan.from)),
        MoveOut::UnknownWarehouse => return Err(MoveError::UnknownWarehouse(plan.from)),
    };
    checkpoint(abort_after, 1);
    let j = Journaled {
        id: id.clone(),
        state: "out".into(),
        to: plan.to,
        units: plan.units,
        warehouse,
    };
    finish(store, &plan.from, &j, abort_after).await?;
    Ok(format!(
        "move {id} done: {} units of {warehouse} from {} to {}",
        plan.units, plan.from, plan.to
    ))
}
