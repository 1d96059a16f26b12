//! Admission: everything one node does to sell one sale.
//!
//! An [`Admission`] owns a sale on this node: its state ([`stock::Sale`]:
//! the lease counter, the sold-out flag, the replicas), its committer and
//! its lease keeper. [`Admission::take`] is the one way in for a buyer: it
//! runs DESIGN §3's checks in the order [`check::check`] gives, then the
//! take → refill → commit loop, and answers an [`Outcome`]. HTTP only
//! translates that into a response.
//!
//! Invariants owned here:
//! - *Units in flight vs. settled*: a unit is counted in flight before it
//!   leaves the counter and stays so until its commit settles or its
//!   [`stock::Taken`] / [`commit::Job`] is dropped ([`stock`], [`commit`]).
//!   A lease is reconciled with Redis only at a quiet point.
//! - *A node never sits on the last units*: leases shrink to one unit as the
//!   pool empties, idle and ended leases are returned, dead nodes' leases
//!   are reclaimed ([`lease`]).
//! - *A winner gets their ticket after sell-out*: the ticket cache, the
//!   digest lookup and the sold-out proof ([`check`], [`take`]).
//!
//! Submodules:
//! - [`check`]  the check order of DESIGN §3 as one pure function.
//! - [`take`]   one buyer's take: the checks, then take → refill → commit.
//! - [`stock`]  per-sale node state: lock-free lease counter, sold-out
//!   flag, winners replica, eligibility replica.
//! - `winners` the insert-only hash table behind the winners replica.
//! - [`commit`] micro-batched commits of winners through the `admit` script.
//! - [`lease`]  lease refill, renewal, return, and reclaim of dead nodes.
//! - [`sales`]  the registry of sales a node serves and their upkeep tasks.

pub mod check;
pub mod commit;
pub mod lease;
pub mod sales;
pub mod stock;
pub mod take;
#[cfg(test)]
mod tests;
mod winners;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::id::UserId;
use crate::sale::TicketRecord;
use crate::store::StoreError;

pub use check::Ticket;
use commit::Committer;
use lease::LeaseCtx;
use stock::Sale;
pub use take::Taking;

/// How long a buyer who meets a stale sold-out proof waits for the
/// watcher's next pool read to renew it before asking the store: many
/// round trips of a healthy store, and short beside a request's deadline.
const PROOF_WAIT: Duration = Duration::from_millis(50);

/// How a buyer's take ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 201: a new win.
    Won(Ticket),
    /// 200: this buyer already won; the same ticket again.
    Replay(Ticket),
    /// 410: no unit left.
    SoldOut,
    /// 403: not on the sale's list.
    NotEligible,
    /// 410: the window is over or the sale closed.
    Ended,
    /// 425: too early.
    NotStarted { starts_at_ms: u64 },
    /// 503: a commit was sent and its result is not known.
    Unknown,
    /// 503: store unreachable or node overloaded; nothing was taken.
    Unavailable,
    /// 404: the sale is not served here (or Redis no longer knows it).
    NoSale,
    /// 429 or 401 from the node's door.
    Turned(Turned),
}

impl Outcome {
    /// The `outcome` label of the request counters.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Won(_) => "won",
            Outcome::Replay(_) => "replay",
            Outcome::SoldOut => "sold_out",
            Outcome::NotEligible => "not_eligible",
            Outcome::Ended => "ended",
            Outcome::NotStarted { .. } => "not_started",
            Outcome::Unknown => "unknown",
            Outcome::Unavailable => "unavailable",
            Outcome::NoSale => "unknown_sale",
            Outcome::Turned(t) => t.label(),
        }
    }
}

/// Why the node's door turned a buyer away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turned {
    RateLimited { retry_after_s: u64 },
    InvalidSession,
}

impl Turned {
    pub fn label(&self) -> &'static str {
        match self {
            Turned::RateLimited { .. } => "rate_limited",
            Turned::InvalidSession => "invalid_session",
        }
    }
}

impl From<Turned> for Outcome {
    fn from(t: Turned) -> Outcome {
        Outcome::Turned(t)
    }
}

/// The node's own checks that DESIGN §3 interleaves with the sale's: who
/// is buying (per-address limit, then session) and the per-user limit.
/// HTTP implements it from the request; [`check::check`] says when each
/// is asked.
pub trait Door {
    fn identify(&self, now_ms: u64) -> Result<UserId, Turned>;
    fn pace(&self, user: &UserId) -> Result<(), Turned>;
}

/// An outcome, and whether answering it took a store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer<O = Outcome> {
    pub outcome: O,
    pub asked_store: bool,
}

impl<O> Answer<O> {
    fn memory(outcome: impl Into<O>) -> Self {
        Answer {
            outcome: outcome.into(),
            asked_store: false,
        }
    }

    fn store(outcome: impl Into<O>) -> Self {
        Answer {
            outcome: outcome.into(),
            asked_store: true,
        }
    }
}

/// What `GET …/tickets/mine` finds.
// Large only by the ticket; returned once, never stored (see `Round`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mine {
    Ticket(Ticket, crate::sale::TicketState),
    NoTicket,
    Unavailable,
    Turned(Turned),
}

impl From<Turned> for Mine {
    fn from(t: Turned) -> Mine {
        Mine::Turned(t)
    }
}

/// One sale on this node: its state, committer and lease keeping.
pub struct Admission {
    sale: Arc<Sale>,
    committer: Committer,
    lease: Arc<LeaseCtx>,
}

impl Admission {
    pub(crate) fn new(sale: Arc<Sale>, committer: Committer, lease: Arc<LeaseCtx>) -> Self {
        Admission {
            sale,
            committer,
            lease,
        }
    }

    /// The sale's state, to read.
    pub fn sale(&self) -> &Sale {
        &self.sale
    }

    fn clock(&self) -> &dyn Clock {
        &*self.lease.clock
    }

    /// The buyer's ticket record from the store; a win found is
    /// remembered in the ticket cache.
    async fn look_up(&self, user: UserId) -> Result<Option<TicketRecord>, StoreError> {
        let rec = self.lease.store.winner(&self.sale.id, &user).await?;
        if let Some(rec) = &rec {
            self.sale.remember_winner(user, rec.issued(), rec.warehouse);
        }
        Ok(rec)
    }

    /// Whether the sold-out proof, once the watcher's next pool read
    /// renews it, shows `user` lost: waited for at most [`PROOF_WAIT`].
    ///
    /// A stale proof is what a buyer meets first on a sale that was
    /// dormant here (the watcher polled it seldom): the buyer's request
    /// woke the watcher, whose poll renews the proof within a round trip.
    /// Waiting for it keeps a flood that comes back off the store; a
    /// buyer whose digest is in the replica, or a proof that does not
    /// come (store slow or down), still goes to the store. So does every
    /// buyer while the last pool read showed units in a lease or the pool:
    /// no poll can prove anything before they are gone, and waiting would
    /// only delay the lookup.
    async fn proven_loser_after_renewal(&self, user: &UserId) -> bool {
        if self.sale.remaining_hint() != 0 || self.sale.may_have_won(user) {
            return false;
        }
        let renewed = self.sale.proof_renewed();
        tokio::pin!(renewed);
        // Registered before the check: a renewal in between still wakes it.
        renewed.as_mut().enable();
        if !self.sale.replica_complete(self.clock().now_ms()) {
            let _ = tokio::time::timeout(PROOF_WAIT, renewed).await;
        }
        // The proof first, then the buyer's digest (see `take`).
        self.sale.replica_complete(self.clock().now_ms()) && !self.sale.may_have_won(user)
    }

    /// `GET …/tickets/mine`: the buyer's own ticket, before, during and
    /// after the window. A miss the winners replica proves is answered
    /// from memory; a ticket's state comes from the store.
    pub async fn mine(&self, door: &impl Door) -> Answer<Mine> {
        let now = self.clock().now_ms();
        self.sale.note_demand(now);
        let user = match door.identify(now) {
            Ok(user) => user,
            Err(t) => return Answer::memory(t),
        };
        if let Err(t) = door.pace(&user) {
            return Answer::memory(t);
        }
        // The proof first, then the buyer's digest: a digest read in
        // between would otherwise be missed by a proof that counts it.
        if self.sale.replica_complete(now) && !self.sale.may_have_won(&user) {
            return Answer::memory(Mine::NoTicket);
        }
        Box::pin(async move {
            if self.proven_loser_after_renewal(&user).await {
                return Answer::memory(Mine::NoTicket);
            }
            match self.look_up(user).await {
                Ok(Some(rec)) => Answer::store(Mine::Ticket(
                    Ticket {
                        user,
                        issued: rec.issued(),
                        warehouse: rec.warehouse,
                    },
                    rec.state,
                )),
                Ok(None) => Answer::store(Mine::NoTicket),
                Err(_) => Answer::store(Mine::Unavailable),
            }
        })
        .await
    }
}
