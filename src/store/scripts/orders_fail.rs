//! `orders_fail.lua` (beside this file): record a failed delivery, and
//! dead-letter the entry once it has used up its attempts.
//!
//! Not idempotent: a repeat counts the attempt twice.

use super::{Def, Op, Reply};
use crate::id::SaleId;
use crate::store::keys::GROUP;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

pub static DEF: Def = Def::new(
    "orders_fail",
    Op::Command,
    false,
    include_str!("../../../lua/orders_fail.lua"),
);

/// What to do with the failed attempt (the sixth ARGV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// The attempt reached the sink: count it.
    Count,
    /// It did not reach the sink: keep the entry, do not count.
    Free,
    /// The entry can never be delivered: dead-letter it now.
    Dead,
}

impl FailMode {
    fn as_arg(self) -> &'static str {
        match self {
            FailMode::Count => "count",
            FailMode::Free => "free",
            FailMode::Dead => "dead",
        }
    }
}

/// The replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Still ours; retry after the backoff.
    Retry { attempts: u64 },
    /// Moved to the dead-letter stream and acknowledged.
    Dead { attempts: u64, dead_id: String },
    /// No longer pending.
    Gone,
    /// Another consumer took it over.
    Lost { owner: String },
}

/// One failed attempt of entry `id` by `consumer`.
pub struct Failure<'a> {
    pub consumer: &'a str,
    pub id: &'a str,
    pub max_attempts: u32,
    pub error: &'a str,
    pub mode: FailMode,
}

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    f: &Failure<'_>,
) -> Result<FailOutcome, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.orders(sale))
        .key(k.dead(sale))
        .key(k.attempts(sale));
    inv.arg(GROUP)
        .arg(f.consumer)
        .arg(f.id)
        .arg(f.max_attempts.max(1))
        .arg(f.error)
        .arg(f.mode.as_arg());
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    match r.str()? {
        "retry" => Ok(FailOutcome::Retry { attempts: r.u64()? }),
        "dead" => Ok(FailOutcome::Dead {
            attempts: r.u64()?,
            dead_id: r.str()?.to_owned(),
        }),
        "gone" => Ok(FailOutcome::Gone),
        "lost" => Ok(FailOutcome::Lost {
            owner: r.opt_str().ok().flatten().unwrap_or_default().to_owned(),
        }),
        other => Err(r.unknown_status(other)),
    }
}
