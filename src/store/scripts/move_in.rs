//! `move_in.lua` (beside this file): step 2 of a move between sales:
//! credit the receiving sale, once per move id.
//!
//! Idempotent: a repeat answers `already` and writes nothing.

use super::{Def, Op, Reply};
use crate::id::{SaleId, WarehouseId};
use crate::store::moves::MoveIn;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "move_in",
    Op::Move,
    true,
    include_str!("../../../lua/move_in.lua"),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    id: &str,
    from: &SaleId,
    units: u64,
    warehouse: WarehouseId,
) -> Result<MoveIn, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.cfg(sale))
        .key(k.acct(sale))
        .key(k.stockw(sale))
        .key(k.wcfg(sale))
        .key(k.moves_in(sale));
    inv.arg(id)
        .arg(from.as_str())
        .arg(units)
        .arg(warehouse.as_str());
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "unknown_sale" => Ok(MoveIn::UnknownSale),
        "too_many_warehouses" => Ok(MoveIn::TooManyWarehouses),
        "already" => Ok(MoveIn::Already),
        "ok" => Ok(MoveIn::Credited),
        other => Err(r.unknown_status(other)),
    }
}
