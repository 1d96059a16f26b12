//! The state one server shares between its requests and tasks.
//!
//! [`crate::app`] builds it and runs the tasks that keep it; the routes
//! read it. It lives with the routes so that they depend on nothing of the
//! app: the app depends on them, not the other way round.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::admission::sales::Sales;
use crate::auth::KeyRing;
use crate::clock::Clock;
use crate::config::ServeConfig;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::store::Store;

/// State shared by every request and task of one server. Outside the
/// crate only the store and the sales are reachable (the CLI and the
/// benchmarks drive them); the rest is the server's own.
pub struct Shared {
    pub(crate) config: ServeConfig,
    pub(crate) node: Arc<str>,
    pub store: Arc<dyn Store>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) session_keys: KeyRing,
    pub(crate) ticket_keys: KeyRing,
    pub(crate) admin_key: Vec<u8>,
    pub(crate) backend_key: Vec<u8>,
    pub(crate) limits: Limits,
    pub sales: Arc<Sales>,
    /// The node's clock; admission reads the same one.
    pub(crate) clock: Arc<dyn Clock>,
    /// Requests in progress (load shedding).
    pub(crate) inflight: AtomicUsize,
    /// What the probes report.
    pub(crate) health: Health,
}

/// What the probes report beyond what they check themselves (DESIGN §3).
#[derive(Debug, Default)]
pub struct Health {
    /// The embedded redis-server could not be restarted, again and again:
    /// the node cannot recover by itself, so liveness fails and whatever
    /// replaces instances replaces it.
    store_lost: AtomicBool,
    /// The node stopped accepting and is draining: not ready.
    draining: AtomicBool,
}

impl Health {
    pub fn can_recover(&self) -> bool {
        // Relaxed for both flags: each is its own message to the probes;
        // nothing else is read or written in an order that depends on them.
        !self.store_lost.load(Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Relaxed);
    }

    pub(crate) fn set_store_lost(&self, lost: bool) {
        self.store_lost.store(lost, Relaxed);
    }
}
