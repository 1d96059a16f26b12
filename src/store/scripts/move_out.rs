//! `move_out.lua` (beside this file): step 1 of a move between sales:
//! debit and journal.
//!
//! Idempotent by its move id: a repeat answers `exists` and writes nothing.

use super::{Def, Op, Reply};
use crate::id::{SaleId, WarehouseId};
use crate::store::moves::MoveOut;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "move_out",
    Op::Move,
    true,
    include_str!("../../../lua/move_out.lua"),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    id: &str,
    to: &SaleId,
    units: u64,
    warehouse: Option<WarehouseId>,
) -> Result<MoveOut, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.cfg(sale))
        .key(k.acct(sale))
        .key(k.stockw(sale))
        .key(k.wcfg(sale))
        .key(k.moves_out(sale));
    inv.arg(id)
        .arg(to.as_str())
        .arg(units)
        .arg(warehouse.as_ref().map_or("", |w| w.as_str()));
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "unknown_sale" => Ok(MoveOut::UnknownSale),
        "warehouse_required" => Ok(MoveOut::WarehouseRequired),
        "unknown_warehouse" => Ok(MoveOut::UnknownWarehouse),
        "exists" => Ok(MoveOut::Exists(r.str()?.to_owned())),
        "insufficient" => Ok(MoveOut::Insufficient {
            available: r.u64()?,
            unsold: r.u64()?,
        }),
        "ok" => {
            let w = r.str()?;
            Ok(MoveOut::Debited(
                WarehouseId::parse(w).map_err(|_| r.protocol(format!("bad warehouse {w:?}")))?,
            ))
        }
        other => Err(r.unknown_status(other)),
    }
}
