//! Dead letters: listing them and replaying them into the order stream.
//!
//! An entry lands in `P:{S}:orders:dead` after `--max-deliveries` counted
//! failures, or at once when it is malformed. It keeps its original fields
//! and gains `error` (the last failure), `attempts` and `original_id`.
//! Once the backend is fixed, `replay` moves it back: a new entry in the
//! order stream (with `replay_of` = the original id), delivered like any
//! other, with the same ticket and hence the same idempotency key.

use std::collections::BTreeMap;

use redis::aio::ConnectionLike;
use redis::streams::StreamRangeReply;
use serde::Serialize;

use super::scripts::Scripts;
use super::stream::Keys;
use crate::id::SaleId;

/// Dead letters are read in pages of this many.
const PAGE: usize = 500;

/// One dead letter.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream (what `replay --id` takes).
    pub id: String,
    /// All its fields: the original entry's plus `error`, `attempts`,
    /// `original_id`.
    pub fields: BTreeMap<String, String>,
}

impl DeadLetter {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Every dead letter of `sale`, oldest first.
pub async fn list<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    sale: &SaleId,
) -> redis::RedisResult<Vec<DeadLetter>> {
    let key = keys.dead(sale);
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?;
        let n = page.ids.len();
        for e in page.ids {
            let fields = e
                .map
                .iter()
                .map(|(k, v)| {
                    let v = redis::from_redis_value_ref::<String>(v).unwrap_or_default();
                    (k.clone(), v)
                })
                .collect();
            start = format!("({}", e.id);
            out.push(DeadLetter { id: e.id, fields });
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// Replays dead letters of `sale` into its order stream: only `id` when
/// given, else all of them. Returns `(dead id, new order entry id)` per
/// replayed letter; an unknown `id` replays nothing.
pub async fn replay<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    sale: &SaleId,
    id: Option<&str>,
) -> redis::RedisResult<Vec<(String, String)>> {
    let scripts = Scripts::default();
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_owned()],
        None => list(conn, keys, sale)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect(),
    };
    let mut done = Vec::new();
    for dead_id in ids {
        // Each replay is atomic on its own; a crash half-way leaves the rest
        // in the dead-letter stream, ready for the next run.
        if let Some(new_id) = scripts.replay(conn, keys, sale, &dead_id).await? {
            done.push((dead_id, new_id));
        }
    }
    Ok(done)
}
