//! The order queue on [`RedisStore`]: what `bigtap orders` and the
//! dead-letter commands do to a sale's order stream (DESIGN §1 Queue, §5).
//!
//! Every operation names one sale, so it touches one hash slot: on a Redis
//! Cluster it goes to the shard that owns the sale. Nothing here reads
//! several sales at once (a multi-stream XREADGROUP would be refused with
//! CROSSSLOT on a cluster); the consumer reads each sale on its own.

use ::redis::Value;

use super::keys::GROUP;
use super::record::StreamEntry;
use super::redis::{read_reply, stream_entries, RedisStore};
use super::scripts::{self, Op};
use super::StoreError;
use crate::id::SaleId;

pub use super::scripts::orders_fail::{FailMode, FailOutcome, Failure};

/// The consumer group's view of one sale's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Entries read but not acknowledged.
    pub pending: u64,
    /// Entries not read yet; `None` when Redis cannot tell (after deletions).
    pub lag: Option<u64>,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
}

/// Dead letters are read in pages of this many.
const DEAD_PAGE: usize = 500;

impl RedisStore {
    /// `XGROUP CREATE <orders> orders 0 MKSTREAM`; an existing group is
    /// fine. Starting at 0 means entries written before the first consumer
    /// ran are delivered too.
    ///
    /// A store out of memory refuses the create before it looks for the
    /// group (`-OOM`, as for any command that may take memory), although
    /// reading and acknowledging need none: then the group is looked up,
    /// and one that exists is just as fine.
    pub async fn ensure_group(&self, sale: &SaleId) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(self.keys().orders(sale))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.query::<()>(Op::Command, true, &cmd).await {
            Err(StoreError::Io(e)) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(StoreError::Io(e)) if e.code() == Some("OOM") => {
                if self.group_exists(sale).await? {
                    Ok(())
                } else {
                    Err(StoreError::Io(e))
                }
            }
            r => r,
        }
    }

    /// Whether the sale's order stream has the consumer group (a read).
    async fn group_exists(&self, sale: &SaleId) -> Result<bool, StoreError> {
        let mut cmd = ::redis::cmd("XINFO");
        cmd.arg("GROUPS").arg(self.keys().orders(sale));
        match self
            .query::<::redis::streams::StreamInfoGroupsReply>(Op::Command, true, &cmd)
            .await
        {
            Ok(r) => Ok(r.groups.iter().any(|g| g.name == GROUP)),
            // No stream, no group.
            Err(StoreError::Io(e)) if e.detail().is_some_and(|d| d.contains("no such key")) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Up to `count` entries of `sale` never delivered to the group, now
    /// pending under `consumer`. Does not block: an empty answer means
    /// nothing new. Not sent twice: a lost reply leaves its entries pending
    /// under `consumer`, to be claimed again after the idle time.
    pub async fn read_new(
        &self,
        sale: &SaleId,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("STREAMS")
            .arg(self.keys().orders(sale))
            .arg(">");
        let v: Value = self.query(Op::ReadOrders, false, &cmd).await?;
        read_reply(Op::ReadOrders.name(), v)
    }

    /// `XAUTOCLAIM`: up to `count` entries of `sale` idle longer than
    /// `idle_ms`, from `cursor` on, now owned by `consumer`. Returns the next
    /// cursor (`"0-0"` at the end) and the entries; entries deleted from the
    /// stream meanwhile come back without fields.
    pub async fn claim_idle(
        &self,
        sale: &SaleId,
        consumer: &str,
        idle_ms: u64,
        cursor: &str,
        count: usize,
    ) -> Result<(String, Vec<StreamEntry>), StoreError> {
        let mut cmd = ::redis::cmd("XAUTOCLAIM");
        cmd.arg(self.keys().orders(sale))
            .arg(GROUP)
            .arg(consumer)
            .arg(idle_ms)
            .arg(cursor)
            .arg("COUNT")
            .arg(count.max(1));
        let v: Value = self.query(Op::ReadOrders, false, &cmd).await?;
        let bad = |detail: String| StoreError::Protocol {
            script: "XAUTOCLAIM",
            detail,
        };
        let Value::Array(parts) = v else {
            return Err(bad(format!("unexpected reply {v:?}")));
        };
        let next = parts
            .first()
            .and_then(super::redis::text)
            .ok_or_else(|| bad("no cursor".into()))?;
        let entries = match parts.get(1) {
            Some(v) => stream_entries("XAUTOCLAIM", v)?,
            None => Vec::new(),
        };
        Ok((next, entries))
    }

    /// Acknowledges delivered entries of `sale` and forgets their attempt
    /// counters; returns how many were still pending.
    pub async fn ack(&self, sale: &SaleId, ids: &[&str]) -> Result<u64, StoreError> {
        scripts::orders_ack::call(self, sale, ids).await
    }

    /// Records a failed delivery of one entry (see `orders_fail.lua`).
    pub async fn fail(
        &self,
        sale: &SaleId,
        failure: &Failure<'_>,
    ) -> Result<FailOutcome, StoreError> {
        scripts::orders_fail::call(self, sale, failure).await
    }

    /// Trims `sale`'s stream below every group's floor; entries removed.
    pub async fn trim(&self, sale: &SaleId) -> Result<u64, StoreError> {
        scripts::orders_trim::call(self, sale).await
    }

    /// Removes `consumer` from `sale`'s group if it holds nothing.
    pub async fn retire(&self, sale: &SaleId, consumer: &str) -> Result<bool, StoreError> {
        scripts::orders_retire::call(self, sale, consumer).await
    }

    /// Pending entries, lag and dead letters of `sale`, in one round trip.
    pub async fn queue_stats(&self, sale: &SaleId) -> Result<QueueStats, StoreError> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("XINFO")
            .arg("GROUPS")
            .arg(self.keys().orders(sale))
            .cmd("XLEN")
            .arg(self.keys().dead(sale));
        let reply = self.read_pipeline(&pipe).await?;
        let mut stats = QueueStats::default();
        if let [groups, dead] = &reply[..] {
            stats.dead_letters = ::redis::from_redis_value_ref(dead).unwrap_or(0);
            let groups: ::redis::streams::StreamInfoGroupsReply =
                ::redis::from_redis_value_ref(groups).map_err(|e| StoreError::Protocol {
                    script: "XINFO GROUPS",
                    detail: e.to_string(),
                })?;
            if let Some(g) = groups.groups.iter().find(|g| g.name == GROUP) {
                stats.pending = g.pending as u64;
                stats.lag = g.lag.map(|l| l as u64);
            }
        }
        Ok(stats)
    }

    /// Every dead letter of `sale`, oldest first. Each keeps its original
    /// fields and gains `error`, `attempts` and `original_id`.
    pub async fn dead_letters(&self, sale: &SaleId) -> Result<Vec<StreamEntry>, StoreError> {
        let key = self.keys().dead(sale);
        let mut out = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let mut cmd = ::redis::cmd("XRANGE");
            cmd.arg(&key)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(DEAD_PAGE);
            let v: Value = self.query(Op::Command, true, &cmd).await?;
            let page = stream_entries("XRANGE", &v)?;
            let n = page.len();
            if let Some(last) = page.last() {
                start = format!("({}", last.id);
            }
            out.extend(page);
            if n < DEAD_PAGE {
                return Ok(out);
            }
        }
    }

    /// Moves dead letter `dead_id` of `sale` back into the order stream;
    /// the new entry's id, or `None` if there is no such dead letter.
    pub async fn replay(&self, sale: &SaleId, dead_id: &str) -> Result<Option<String>, StoreError> {
        scripts::orders_replay::call(self, sale, dead_id).await
    }
}
