//! `confirm.lua` (beside this file): confirm a pending ticket (paid).
//!
//! Idempotent: a repeat finds the ticket in its final state.

use super::{Def, Op, Reply};
use crate::id::{SaleId, TicketId};
use crate::sale::{TicketState, Transition};
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "confirm",
    Op::Confirm,
    true,
    concat!(
        include_str!("../../../lua/records.lua"),
        include_str!("../../../lua/confirm.lua")
    ),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    ticket: &TicketId,
) -> Result<Transition, StoreError> {
    settle(&DEF, s, sale, ticket).await
}

/// One ticket's move to a final state, through `confirm.lua` or
/// `release.lua`: both take the same keys and argument and answer
/// `{"unknown"}` or `{state, changed}`.
pub(super) async fn settle(
    def: &'static Def,
    s: &RedisStore,
    sale: &SaleId,
    ticket: &TicketId,
) -> Result<Transition, StoreError> {
    let k = s.keys();
    let mut inv = def.script().prepare_invoke();
    inv.key(k.tickets(sale))
        .key(k.acct(sale))
        .key(k.expiry(sale))
        .key(k.stockw(sale))
        .key(k.winners(sale));
    inv.arg(ticket.as_str());
    let items = s.invoke(def, &inv).await?;
    let mut r = Reply::new(def, &items);
    let state = match r.str()? {
        "unknown" => return Ok(None),
        "confirmed" => TicketState::Confirmed,
        "released" => TicketState::Released,
        other => return Err(r.protocol(format!("unknown state {other:?}"))),
    };
    Ok(Some((state, r.u64()? == 1)))
}
