//! `lua/view.lua`: a sale's settings and counters without the cross-checks
//! (O(1) in the fleet size), for the nodes' periodic refresh.
//!
//! Read-only, hence idempotent.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::sale::Snapshot;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "view",
    Op::Account,
    true,
    include_str!("../../../lua/view.lua"),
);

pub async fn call(s: &RedisStore, sale: &SaleId) -> Result<Option<Snapshot>, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.cfg(sale)).key(k.acct(sale));
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "unknown_sale" => return Ok(None),
        "ok" => {}
        other => return Err(r.unknown_status(other)),
    }
    super::account::settings_and_counters(&mut r).map(Some)
}
