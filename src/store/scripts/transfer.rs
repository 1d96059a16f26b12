//! `transfer.lua` (beside this file): move unsold units between two
//! warehouses of a sale.
//!
//! Not idempotent: a repeat moves the units again.

use super::{Def, Op, Reply};
use crate::id::{SaleId, WarehouseId};
use crate::sale::TransferOutcome;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "transfer",
    Op::Transfer,
    false,
    include_str!("../../../lua/transfer.lua"),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    from: WarehouseId,
    to: WarehouseId,
    units: u64,
) -> Result<TransferOutcome, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.cfg(sale)).key(k.stockw(sale)).key(k.wcfg(sale));
    inv.arg(from.as_str()).arg(to.as_str()).arg(units);
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "unknown_sale" => Ok(TransferOutcome::UnknownSale),
        "unknown_warehouse" => Ok(TransferOutcome::UnknownWarehouse),
        "too_many_warehouses" => Ok(TransferOutcome::TooManyWarehouses),
        "insufficient" => Ok(TransferOutcome::Insufficient { unsold: r.u64()? }),
        "ok" => Ok(TransferOutcome::Moved {
            from_unsold: r.u64()?,
            to_unsold: r.u64()?,
        }),
        other => Err(r.unknown_status(other)),
    }
}
