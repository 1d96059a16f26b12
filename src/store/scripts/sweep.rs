//! `sweep.lua` (beside this file): release expired pending tickets.
//!
//! Idempotent: a repeat releases only tickets that are due anyway. It walks
//! the order stream from the sweep cursor (see the script's header).

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::redis::RedisStore;
use crate::store::{NextSweep, StoreError, Swept};
use std::time::Duration;

pub static DEF: Def = Def::new(
    "sweep",
    Op::Sweep,
    true,
    concat!(
        include_str!("../../../lua/records.lua"),
        include_str!("../../../lua/sweep.lua")
    ),
);

pub async fn call(s: &RedisStore, sale: &SaleId, limit: u64) -> Result<Swept, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.tickets(sale))
        .key(k.acct(sale))
        .key(k.expiry(sale))
        .key(k.stockw(sale))
        .key(k.orders(sale))
        .key(k.swept(sale))
        .key(k.winners(sale));
    inv.arg(limit);
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    let released = r.u64()?;
    let next = match r.str()? {
        "more" => NextSweep::Now,
        "due" => NextSweep::In(Duration::from_millis(r.u64()?)),
        "none" => NextSweep::AfterTtl,
        other => return Err(r.unknown_status(other)),
    };
    Ok(Swept { released, next })
}
