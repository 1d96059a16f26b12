//! `release.lua` (beside this file): release a ticket; its unit returns to the pool.
//!
//! Idempotent: a repeat finds the ticket in its final state.

use super::{Def, Op};
use crate::id::{SaleId, TicketId};
use crate::sale::Transition;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "release",
    Op::Release,
    true,
    concat!(
        include_str!("../../../lua/records.lua"),
        include_str!("../../../lua/release.lua")
    ),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    ticket: &TicketId,
) -> Result<Transition, StoreError> {
    super::confirm::settle(&DEF, s, sale, ticket).await
}
