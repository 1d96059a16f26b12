//! The store side of moving units between two sales (`bigtap sale move`,
//! DESIGN §7 channels): the three steps, each one atomic script on one
//! sale's slot, and the journal of moves out of a sale.
//!
//! The orchestration (which step follows which, resuming a move) is
//! [`crate::moves`]; this module only reads and writes.

use super::redis::RedisStore;
use super::scripts::{self, Op};
use super::StoreError;
use crate::id::{SaleId, WarehouseId};

/// Step 1 (debit and journal) as the source sale answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveOut {
    /// Debited from this warehouse; the journal entry is `out`.
    Debited(WarehouseId),
    /// The move id is journaled already, in this state.
    Exists(String),
    Insufficient {
        available: u64,
        unsold: u64,
    },
    UnknownSale,
    WarehouseRequired,
    UnknownWarehouse,
}

/// Step 2 (credit) as the receiving sale answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveIn {
    Credited,
    /// Credited before (a re-run): nothing changed.
    Already,
    UnknownSale,
    TooManyWarehouses,
}

/// Step 3 (close the journal entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveEnd {
    Closed,
    Already(String),
    Unknown,
}

/// One journal entry of a move out of a sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journaled {
    pub id: String,
    /// `out` (debited, credit not confirmed), `done` or `undone`.
    pub state: String,
    pub to: SaleId,
    pub units: u64,
    pub warehouse: WarehouseId,
}

impl RedisStore {
    pub async fn move_out(
        &self,
        sale: &SaleId,
        id: &str,
        to: &SaleId,
        units: u64,
        warehouse: Option<WarehouseId>,
    ) -> Result<MoveOut, StoreError> {
        scripts::move_out::call(self, sale, id, to, units, warehouse).await
    }

    pub async fn move_in(
        &self,
        sale: &SaleId,
        id: &str,
        from: &SaleId,
        units: u64,
        warehouse: WarehouseId,
    ) -> Result<MoveIn, StoreError> {
        scripts::move_in::call(self, sale, id, from, units, warehouse).await
    }

    pub async fn move_end(
        &self,
        sale: &SaleId,
        id: &str,
        undo: bool,
    ) -> Result<MoveEnd, StoreError> {
        scripts::move_end::call(self, sale, id, undo).await
    }

    /// Every journal entry of moves out of `sale`, sorted by id.
    pub async fn move_journal(&self, sale: &SaleId) -> Result<Vec<Journaled>, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(self.keys().moves_out(sale));
        let flat: Vec<String> = self.query(Op::Move, true, &cmd).await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let [id, rec] = pair else { continue };
            let mut it = rec.split(':');
            let parsed = (|| {
                Some(Journaled {
                    id: id.clone(),
                    state: it.next()?.to_owned(),
                    to: SaleId::parse(it.next()?).ok()?,
                    units: it.next()?.parse().ok()?,
                    warehouse: WarehouseId::parse(it.next()?).ok()?,
                })
            })();
            match parsed {
                Some(j) => out.push(j),
                None => {
                    return Err(StoreError::Protocol {
                        script: Op::Move.name(),
                        detail: format!("unreadable move journal entry {id}: {rec:?}"),
                    })
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
