//! bigtap: a flash-sale admission service.
//!
//! Map of the modules, in the order a request meets them:
//!
//! - [`cli`]      the binary's commands (`serve`, `sale`, `users`, `ticket`):
//!   flags to typed inputs, then a library call; `main.rs` only parses.
//! - [`config`]   typed settings from flags and environment.
//! - [`app`]      builds one server (its store, sales and `http::Shared`) and
//!   runs it until stopped.
//! - [`http`]     accept loop, routing, contract responses (DESIGN §3), and
//!   the state requests share (`Shared`); it depends on nothing of `app`.
//! - [`auth`]     session and purchase tokens (DESIGN §4).
//! - [`limits`]   per-address and per-user rate limits.
//! - [`admission`] one sale on a node: `Admission::take` runs DESIGN §3's
//!   check order (one pure function, `admission::check`), then take →
//!   refill → commit, and answers an `Outcome` that HTTP translates.
//!   Inside: the lock-free lease counter and replicas (`stock`), the
//!   insert-only winners table behind the replica (`winners`), the
//!   micro-batched committer (`commit`), lease refill, renewal, return and
//!   reclaim (`lease`), and the registry of sales with their upkeep tasks
//!   (`sales`).
//! - [`lifecycle`] the sweeper of expired tickets (confirm and release are
//!   scripts behind the store).
//! - [`sale`]     a sale's domain values: settings, accounting, outcomes of
//!   operations, tickets; the store speaks them, it does not define them.
//! - [`store`]    the Redis seam: a trait over [`sale`] values, its Redis
//!   implementation, the Lua scripts, and an embedded redis-server for
//!   one-command runs.
//! - [`orders`]   the order-stream consumer delivering winners to the backend.
//! - [`relay`]    `bigtap relay`: limit(n) notifications per alert and
//!   anomaly period between Alertmanager and the pager.
//! - [`inventory`] warehouses, regions and their validation (DESIGN §7);
//!   the warehouse itself is assigned by the `admit` script.
//! - [`moves`]    `bigtap sale move`: journaled moves of units between sales.
//! - [`ops`]      the sale operations (put, stock, eligible, close, show,
//!   audit, transfer, move) with typed results and their rendering, shared
//!   by the admin routes, the `sale` commands and the demo.
//! - [`audit`]    reconciliation of a sale's records after an incident.
//! - [`metrics`]  metric names and the Prometheus exporter.
//! - [`shutdown`] signals to a cancellation token.
//! - [`id`]       sale, user, ticket, warehouse and region ids parsed at the edge.
//! - [`clock`]    the time seam: the app injects one clock, admission reads it.
//! - [`demo`]     the reference shop page `serve --demo` shows on a second origin,
//!   and the demo sale it creates.

pub mod admission;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod http;
pub mod id;
pub mod inventory;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod moves;
pub mod ops;
pub mod orders;
pub mod relay;
pub mod sale;
pub mod shutdown;
pub mod store;

pub use app::{App, AppHandle};
pub use config::ServeConfig;
pub use id::{SaleId, TicketId, UserId};
