//! The order stream's data, as the consumer sees it: the [`Order`] a stream
//! entry holds (parsed in the store seam, [`crate::store::record`]) and the
//! key names ([`crate::store::keys`]). Re-exported here so users of the
//! consumer need not reach into the store.

pub use crate::store::{Keys, Order, GROUP};
