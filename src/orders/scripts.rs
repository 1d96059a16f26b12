//! The consumer's Lua scripts (in `lua/`) and the enums their replies decode to.
//!
//! Each state change that spans two keys of a sale is one script, so it is
//! atomic: dead-lettering (XADD dead + XACK), replaying (XADD orders + XDEL
//! dead), trimming below every group's floor, and retiring a consumer name.

use redis::aio::ConnectionLike;
use redis::{Script, Value};

use super::stream::{Keys, GROUP};
use crate::id::SaleId;

/// What [`Scripts::fail`] should do with the failed attempt.
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

/// The reply of `fail.lua`.
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

/// Loaded once per consumer; `Script` falls back from EVALSHA to EVAL on a
/// restarted Redis that forgot the script cache.
pub struct Scripts {
    fail: Script,
    replay: Script,
    trim: Script,
    retire: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            fail: Script::new(include_str!("../../lua/orders_fail.lua")),
            replay: Script::new(include_str!("../../lua/orders_replay.lua")),
            trim: Script::new(include_str!("../../lua/orders_trim.lua")),
            retire: Script::new(include_str!("../../lua/orders_retire.lua")),
        }
    }
}

impl Scripts {
    /// Records a failed attempt of entry `id`; see `lua/fail.lua`.
    #[allow(clippy::too_many_arguments)]
    pub async fn fail<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        keys: &Keys,
        sale: &SaleId,
        consumer: &str,
        id: &str,
        max_attempts: u32,
        error: &str,
        mode: FailMode,
    ) -> redis::RedisResult<FailOutcome> {
        let reply: Vec<Value> = self
            .fail
            .key(keys.orders(sale))
            .key(keys.dead(sale))
            .key(keys.attempts(sale))
            .arg(GROUP)
            .arg(consumer)
            .arg(id)
            .arg(max_attempts.max(1))
            .arg(error)
            .arg(mode.as_arg())
            .invoke_async(conn)
            .await?;
        decode_fail(reply)
    }

    /// Moves dead letter `dead_id` back into the order stream; `None` when
    /// there is no such dead letter.
    pub async fn replay<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        keys: &Keys,
        sale: &SaleId,
        dead_id: &str,
    ) -> redis::RedisResult<Option<String>> {
        self.replay
            .key(keys.orders(sale))
            .key(keys.dead(sale))
            .arg(dead_id)
            .invoke_async(conn)
            .await
    }

    /// Trims the order stream below every group's floor; returns the number
    /// of entries removed.
    pub async fn trim<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        keys: &Keys,
        sale: &SaleId,
    ) -> redis::RedisResult<u64> {
        self.trim.key(keys.orders(sale)).invoke_async(conn).await
    }

    /// Removes `consumer` from the group if it holds nothing; true if removed.
    pub async fn retire<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        keys: &Keys,
        sale: &SaleId,
        consumer: &str,
    ) -> redis::RedisResult<bool> {
        self.retire
            .key(keys.orders(sale))
            .arg(GROUP)
            .arg(consumer)
            .invoke_async(conn)
            .await
    }
}

fn decode_fail(reply: Vec<Value>) -> redis::RedisResult<FailOutcome> {
    let text = |v: Option<&Value>| -> Option<String> {
        v.and_then(|v| redis::from_redis_value_ref(v).ok())
    };
    let num =
        |v: Option<&Value>| -> Option<u64> { v.and_then(|v| redis::from_redis_value_ref(v).ok()) };
    let bad =
        || redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply from fail.lua"));
    let tag = text(reply.first()).ok_or_else(bad)?;
    match tag.as_str() {
        "retry" => Ok(FailOutcome::Retry {
            attempts: num(reply.get(1)).ok_or_else(bad)?,
        }),
        "dead" => Ok(FailOutcome::Dead {
            attempts: num(reply.get(1)).ok_or_else(bad)?,
            dead_id: text(reply.get(2)).ok_or_else(bad)?,
        }),
        "gone" => Ok(FailOutcome::Gone),
        "lost" => Ok(FailOutcome::Lost {
            owner: text(reply.get(1)).unwrap_or_default(),
        }),
        _ => Err(bad()),
    }
}
