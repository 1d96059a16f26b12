//! Dead letters: listing them and replaying them into the order stream.
//!
//! An entry lands in `P:{S}:orders:dead` after `--max-deliveries` counted
//! failures, or at once when it is malformed. It keeps its original fields
//! and gains `error` (the last failure), `attempts` and `original_id`.
//! Once the backend is fixed, `replay` moves it back: a new entry in the
//! order stream (with `replay_of` = the original id), delivered like any
//! other, with the same ticket and hence the same idempotency key.
//!
//! The Redis side lives in the store seam ([`RedisStore::dead_letters`],
//! [`RedisStore::replay`]); this module is what the commands make of it.

use crate::id::SaleId;
use crate::store::redis::RedisStore;
use crate::store::{StoreError, StreamEntry};

/// One dead letter: its id in the dead-letter stream (what `replay --id`
/// takes) and all its fields.
pub type DeadLetter = StreamEntry;

/// Every dead letter of `sale`, oldest first.
pub async fn list(store: &RedisStore, sale: &SaleId) -> Result<Vec<DeadLetter>, StoreError> {
    store.dead_letters(sale).await
}

/// Replays dead letters of `sale` into its order stream: only `id` when
/// given, else all of them. Returns `(dead id, new order entry id)` per
/// replayed letter; an unknown `id` replays nothing.
pub async fn replay(
    store: &RedisStore,
    sale: &SaleId,
    id: Option<&str>,
) -> Result<Vec<(String, String)>, StoreError> {
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_owned()],
        None => list(store, sale).await?.into_iter().map(|d| d.id).collect(),
    };
    let mut done = Vec::new();
    for dead_id in ids {
        // Each replay is atomic on its own; a crash half-way leaves the rest
        // in the dead-letter stream, ready for the next run.
        if let Some(new_id) = store.replay(sale, &dead_id).await? {
            done.push((dead_id, new_id));
        }
    }
    Ok(done)
}
