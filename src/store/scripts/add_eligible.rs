//! `add_eligible.lua` (beside this file): add users to a sale's list.
//!
//! Not idempotent in its reply: a repeat counts no user as new.

use super::{Def, Op, Reply};
use crate::id::{SaleId, UserId};
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "add_eligible",
    Op::AddEligible,
    false,
    include_str!("../../../lua/add_eligible.lua"),
);

/// Newly added count, or `None` for an unknown sale.
pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    users: &[UserId],
) -> Result<Option<u64>, StoreError> {
    let k = s.keys();
    let mut added = 0;
    // Chunks keep one script call short; each chunk is atomic on its own
    // and adding is idempotent, so running the command again after a
    // failure is safe.
    for chunk in users.chunks(1000) {
        let names: Vec<&str> = chunk.iter().map(|u| u.as_str()).collect();
        let mut inv = DEF.script().prepare_invoke();
        inv.key(k.cfg(sale)).key(k.eligible(sale));
        inv.arg(&names);
        let items = s.invoke(&DEF, &inv).await?;
        let mut r = Reply::new(&DEF, &items);
        match r.str()? {
            "unknown_sale" => return Ok(None),
            "ok" => added += r.u64()?,
            other => return Err(r.unknown_status(other)),
        }
    }
    Ok(Some(added))
}
