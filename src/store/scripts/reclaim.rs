//! `reclaim.lua` (beside this file): return expired leases to the pool.
//!
//! Idempotent: a repeat finds nothing more to reclaim.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::redis::RedisStore;
use crate::store::StoreError;
use std::time::Duration;

pub static DEF: Def = Def::new(
    "reclaim",
    Op::Reclaim,
    true,
    include_str!("../../../lua/reclaim.lua"),
);

/// (leases reclaimed, units returned to the pool); at most one scan per
/// `every` across the fleet (zero: scan now).
pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    every: Duration,
) -> Result<(u64, u64), StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.acct(sale))
        .key(k.leases(sale))
        .key(k.reclaimed(sale));
    inv.arg(u64::try_from(every.as_millis()).unwrap_or(u64::MAX));
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    Ok((r.u64()?, r.u64()?))
}
