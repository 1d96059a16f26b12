//! `move_end.lua` (beside this file): step 3 of a move between sales:
//! close the journal entry as done, or undo the debit.
//!
//! Idempotent: a repeat answers `already` and writes nothing.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::moves::MoveEnd;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "move_end",
    Op::Move,
    true,
    include_str!("../../../lua/move_end.lua"),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    id: &str,
    undo: bool,
) -> Result<MoveEnd, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.acct(sale))
        .key(k.stockw(sale))
        .key(k.wcfg(sale))
        .key(k.moves_out(sale));
    inv.arg(id).arg(if undo { "undone" } else { "done" });
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "unknown" => Ok(MoveEnd::Unknown),
        "already" => Ok(MoveEnd::Already(r.str()?.to_owned())),
        "ok" => Ok(MoveEnd::Closed),
        other => Err(r.unknown_status(other)),
    }
}
