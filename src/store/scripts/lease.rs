//! `lease.lua` (beside this file): grant a node units from the pool.
//!
//! Not idempotent: a repeat tops the lease up a second time.

use super::{refusal, Def, Op, Reply};
use crate::id::SaleId;
use crate::store::redis::RedisStore;
use crate::store::{LeaseReply, StoreError};

pub static DEF: Def = Def::new(
    "lease",
    Op::Lease,
    false,
    include_str!("../../../lua/lease.lua"),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    node: &str,
    want: u64,
    ttl_ms: u64,
) -> Result<LeaseReply, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.cfg(sale)).key(k.acct(sale)).key(k.leases(sale));
    inv.arg(node).arg(want).arg(ttl_ms);
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "ok" => Ok(LeaseReply::Granted {
            granted: r.u64()?,
            epoch: r.u64()?,
            lease_units: r.u64()?,
            expires_at_ms: r.u64()?,
            available: r.u64()?,
            leased: r.u64()?,
            orders_enqueued: r.u64()?,
        }),
        other => Ok(LeaseReply::Refused(refusal(&r, other)?)),
    }
}
