//! `renew.lua` (beside this file): extend a node's live lease.
//!
//! Idempotent: a repeat sets the same expiry again.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::redis::RedisStore;
use crate::store::{RenewReply, StoreError};

pub static DEF: Def = Def::new(
    "renew",
    Op::Renew,
    true,
    include_str!("../../../lua/renew.lua"),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    node: &str,
    epoch: u64,
    ttl_ms: u64,
) -> Result<RenewReply, StoreError> {
    let mut inv = DEF.script().prepare_invoke();
    inv.key(s.keys().leases(sale));
    inv.arg(node).arg(epoch).arg(ttl_ms);
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "ok" => Ok(RenewReply::Renewed {
            lease_units: r.u64()?,
            expires_at_ms: r.u64()?,
        }),
        "fenced" => Ok(RenewReply::Fenced),
        other => Err(r.unknown_status(other)),
    }
}
