//! `close.lua` (beside this file): stop a sale's admissions for good.
//!
//! Idempotent.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "close",
    Op::Close,
    true,
    include_str!("../../../lua/close.lua"),
);

/// `false` for an unknown sale.
pub async fn call(s: &RedisStore, sale: &SaleId) -> Result<bool, StoreError> {
    let mut inv = DEF.script().prepare_invoke();
    inv.key(s.keys().cfg(sale));
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "ok" => Ok(true),
        "unknown_sale" => Ok(false),
        other => Err(r.unknown_status(other)),
    }
}
