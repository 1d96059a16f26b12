//! `orders_ack.lua` (beside this file): acknowledge delivered entries.
//!
//! Idempotent: acknowledging twice is acknowledging once.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::keys::GROUP;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "orders_ack",
    Op::Command,
    true,
    include_str!("../../../lua/orders_ack.lua"),
);

/// Acknowledges `ids` of `sale`'s stream; returns how many were pending.
pub async fn call(s: &RedisStore, sale: &SaleId, ids: &[&str]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.orders(sale)).key(k.attempts(sale));
    inv.arg(GROUP).arg(ids);
    let items = s.invoke(&DEF, &inv).await?;
    Reply::new(&DEF, &items).u64()
}
