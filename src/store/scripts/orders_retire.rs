//! `orders_retire.lua` (beside this file): forget a consumer name that
//! holds no entry.
//!
//! Idempotent.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::keys::GROUP;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "orders_retire",
    Op::Command,
    true,
    include_str!("../../../lua/orders_retire.lua"),
);

/// True if the name was removed.
pub async fn call(s: &RedisStore, sale: &SaleId, consumer: &str) -> Result<bool, StoreError> {
    let mut inv = DEF.script().prepare_invoke();
    inv.key(s.keys().orders(sale));
    inv.arg(GROUP).arg(consumer);
    let items = s.invoke(&DEF, &inv).await?;
    Ok(Reply::new(&DEF, &items).u64()? == 1)
}
