//! Admission: everything one node does to sell one sale.
//!
//! - [`stock`]  per-sale node state: lock-free lease counter, sold-out
//!   flag, winners replica, eligibility replica.
//! - [`commit`] micro-batched commits of winners through the `admit` script.
//! - [`lease`]  lease refill, renewal, return, and reclaim of dead nodes.
//! - [`sales`]  the registry of sales a node serves and their upkeep tasks.

pub mod commit;
pub mod lease;
pub mod sales;
pub mod stock;
