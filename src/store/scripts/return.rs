//! `return.lua` (beside this file): give a node's leased units back.
//!
//! Not idempotent in its reply: a repeat answers `fenced`.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::redis::RedisStore;
use crate::store::{ReturnReply, StoreError};

pub static DEF: Def = Def::new(
    "return",
    Op::Return,
    false,
    include_str!("../../../lua/return.lua"),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    node: &str,
    epoch: u64,
) -> Result<ReturnReply, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.acct(sale)).key(k.leases(sale));
    inv.arg(node).arg(epoch);
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "ok" => Ok(ReturnReply::Returned(r.u64()?)),
        "fenced" => Ok(ReturnReply::Fenced),
        other => Err(r.unknown_status(other)),
    }
}
