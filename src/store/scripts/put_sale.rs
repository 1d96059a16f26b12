//! `put_sale.lua` (beside this file): create a sale or update its settings.
//!
//! Not idempotent in its reply: a repeat of a creation answers `updated`.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::inventory::Inventory;
use crate::sale::{PutOutcome, SaleSpec};
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "put_sale",
    Op::PutSale,
    false,
    include_str!("../../../lua/put_sale.lua"),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    spec: &SaleSpec,
    inventory: &Inventory,
) -> Result<PutOutcome, StoreError> {
    let k = s.keys();
    let stock: i64 = spec.stock.map(|s| s as i64).unwrap_or(-1);
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.cfg(sale))
        .key(k.acct(sale))
        .key(k.stockw(sale))
        .key(k.wcfg(sale))
        .key(k.orders(sale));
    inv.arg(stock)
        .arg(spec.starts_at_ms)
        .arg(spec.ends_at_ms)
        .arg(spec.ticket_ttl_ms)
        .arg(spec.eligibility.as_str());
    inv.arg(inventory.warehouses.len());
    for (w, units) in &inventory.warehouses {
        inv.arg(w.as_str()).arg(*units);
    }
    inv.arg(inventory.regions.len());
    for (region, order) in &inventory.regions {
        inv.arg(region.as_str()).arg(order.len());
        for w in order {
            inv.arg(w.as_str());
        }
    }
    let default_order = inventory.default_order.as_deref().unwrap_or(&[]);
    inv.arg(default_order.len());
    for w in default_order {
        inv.arg(w.as_str());
    }
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "created" => Ok(PutOutcome::Created),
        "updated" => Ok(PutOutcome::Updated),
        "stock_required" => Ok(PutOutcome::StockRequired),
        other => Err(r.unknown_status(other)),
    }
}
