//! `orders_trim.lua` (beside this file): remove order entries every group
//! and the sweeper has passed.
//!
//! Idempotent: a repeat finds nothing more below the floor.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "orders_trim",
    Op::Command,
    true,
    include_str!("../../../lua/orders_trim.lua"),
);

/// The number of entries removed.
pub async fn call(s: &RedisStore, sale: &SaleId) -> Result<u64, StoreError> {
    let mut inv = DEF.script().prepare_invoke();
    inv.key(s.keys().orders(sale)).key(s.keys().swept(sale));
    let items = s.invoke(&DEF, &inv).await?;
    Reply::new(&DEF, &items).u64()
}
