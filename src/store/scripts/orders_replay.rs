//! `orders_replay.lua` (beside this file): move one dead letter back into
//! the order stream.
//!
//! Not idempotent in its reply: a repeat finds no dead letter.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "orders_replay",
    Op::Command,
    false,
    include_str!("../../../lua/orders_replay.lua"),
);

/// The new order entry id, or `None` when there is no such dead letter.
pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    dead_id: &str,
) -> Result<Option<String>, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.orders(sale)).key(k.dead(sale));
    inv.arg(dead_id);
    let items = s.invoke(&DEF, &inv).await?;
    Ok(Reply::new(&DEF, &items).opt_str()?.map(str::to_owned))
}
