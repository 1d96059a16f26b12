//! `add_stock.lua` (beside this file): add or withdraw units.
//!
//! Not idempotent: a repeat adds the units again.

use super::{Def, Op, Reply};
use crate::id::{SaleId, WarehouseId};
use crate::sale::StockChange;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "add_stock",
    Op::AddStock,
    false,
    include_str!("../../../lua/add_stock.lua"),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    delta: i64,
    warehouse: Option<WarehouseId>,
) -> Result<StockChange, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.cfg(sale))
        .key(k.acct(sale))
        .key(k.stockw(sale))
        .key(k.wcfg(sale));
    inv.arg(delta)
        .arg(warehouse.as_ref().map_or("", |w| w.as_str()));
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "unknown_sale" => Ok(StockChange::UnknownSale),
        "warehouse_required" => Ok(StockChange::WarehouseRequired),
        "unknown_warehouse" => Ok(StockChange::UnknownWarehouse),
        "ok" => Ok(StockChange::Changed {
            total: r.u64()?,
            available: r.u64()?,
        }),
        "insufficient" => Ok(StockChange::Insufficient {
            total: r.u64()?,
            available: r.u64()?,
        }),
        other => Err(r.unknown_status(other)),
    }
}
