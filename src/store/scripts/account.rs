//! `account.lua` (beside this file): one atomic snapshot of a sale.
//!
//! Read-only, hence idempotent.

use super::{Def, Op, Reply};
use crate::id::{SaleId, WarehouseId};
use crate::sale::{Snapshot, WarehouseAccount};
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "account",
    Op::Account,
    true,
    include_str!("../../../lua/account.lua"),
);

pub async fn call(s: &RedisStore, sale: &SaleId) -> Result<Option<Snapshot>, StoreError> {
    Ok(call_full(s, sale).await?.map(|(snap, _)| snap))
}

/// The snapshot and each warehouse's accounting, from one script call.
pub async fn call_full(
    s: &RedisStore,
    sale: &SaleId,
) -> Result<Option<(Snapshot, Vec<WarehouseAccount>)>, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.cfg(sale))
        .key(k.acct(sale))
        .key(k.leases(sale))
        .key(k.stockw(sale))
        .key(k.wcfg(sale));
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "unknown_sale" => return Ok(None),
        "ok" => {}
        other => return Err(r.unknown_status(other)),
    }
    let mut snap = settings_and_counters(&mut r)?;
    snap.balanced = r.u64()? == 1;
    snap.checked = true;
    // lease_units_sum
    r.skip(1);
    let n = r.u64()? as usize;
    let mut warehouses = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let w = r.str()?;
        warehouses.push(WarehouseAccount {
            warehouse: WarehouseId::parse(w)
                .map_err(|_| r.protocol(format!("bad warehouse {w:?}")))?,
            total: r.u64()?,
            unsold: r.u64()?,
            pending: r.u64()?,
            confirmed: r.u64()?,
        });
    }
    snap.lease_records = r.u64()?;
    Ok(Some((snap, warehouses)))
}

/// The settings and counters `account.lua` replies with,
/// in that order (`balanced` unchecked).
pub(super) fn settings_and_counters(r: &mut Reply) -> Result<Snapshot, StoreError> {
    Ok(Snapshot {
        now_ms: r.u64()?,
        starts_at_ms: r.u64()?,
        ends_at_ms: r.u64()?,
        closed: r.u64()? == 1,
        ticket_ttl_ms: r.u64()?,
        list_only: r.str()? == "list",
        eligibility_version: r.u64()?,
        stock_total: r.u64()?,
        available: r.u64()?,
        leased: r.u64()?,
        pending: r.u64()?,
        confirmed: r.u64()?,
        released_total: r.u64()?,
        orders_enqueued: r.u64()?,
        balanced: false,
        checked: false,
        lease_records: 0,
    })
}
