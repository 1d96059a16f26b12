//! One buyer's take: DESIGN §3's checks, then take → refill → commit.
//!
//! Everything up to the sold-out answer is decided from memory: the sale
//! window, the door (rate limits, session), the eligibility and winners
//! replicas and the sold-out flag. Only a buyer holding a local unit (or a
//! sold-out miss while the winners replica may still be behind, or a digest
//! hit for a ticket this node has not seen) reaches the store.
//!
//! Every wait is bounded by the request's deadline; a commit still
//! unsettled at the deadline is settled by one lookup within
//! [`SETTLE_GRACE`], or answered as unknown, never as "nothing was taken".

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::check::{check, Buyer, Facts, Step, Ticket};
use super::commit::Settled;
use super::lease::{self, Refill};
use super::{Admission, Answer, Door, Outcome};
use crate::id::{RegionId, UserId};
use crate::store::{Refusal, Verdict};

/// Commits a buyer may see fenced or short of units (a lease moved under
/// it) before giving up with 503.
const FENCED_ATTEMPTS: usize = 4;
/// Refills a buyer may wait through while others take the new units first.
/// Each costs a Redis round trip, so this bounds the time as well; the
/// per-request timeout bounds it too.
const REFILL_ROUNDS: usize = 64;

/// How long a buyer whose commit outlived the request deadline may wait
/// for one lookup that settles it (won, or still unknown). The outer
/// request timeout allows for it.
pub const SETTLE_GRACE: Duration = Duration::from_millis(500);

/// A take: answered from memory, or waiting on the store (boxed, see
/// [`Admission::take`]).
// Large only by the answer it holds: boxing it would cost the allocation
// per answer from memory that this type exists to avoid.
#[allow(clippy::large_enum_variant)]
pub enum Taking {
    /// Answered without a wait; `None` once the answer was handed out.
    Ready(Option<Answer>),
    Waiting(Pin<Box<dyn Future<Output = Answer> + Send>>),
}

impl Future for Taking {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        match self.get_mut() {
            Taking::Ready(a) => match a.take() {
                Some(a) => Poll::Ready(a),
                // Polled after it answered: a caller's bug, answered
                // safely rather than with a panic.
                None => Poll::Ready(Answer::store(Outcome::Unavailable)),
            },
            Taking::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}

/// What the checks from memory ended with.
// Large only by the ticket an answer may carry; it lives for one step.
#[allow(clippy::large_enum_variant)]
enum Next {
    Answer(Answer),
    /// The buyer's digest is in the winners replica: look the ticket up.
    LookUp(UserId),
    /// Sold out, and the replica cannot prove this buyer lost.
    ProveSoldOut(UserId),
    /// Take a unit and commit it.
    Acquire(UserId),
}

/// How one round of the take loop ended.
// Large only by the ticket it may carry; returned once, never stored, so
// boxing would only add an allocation per answer.
#[allow(clippy::large_enum_variant)]
enum Round {
    Answered(Answer),
    /// The commit found its lease fenced or short of units: try again.
    Fenced,
    /// A refill ran (or was waited for): take again.
    Refilled,
    /// The refill found the pool empty and the lease spent.
    SoldOut,
}

impl Admission {
    /// The sale as this request sees it, before anyone is identified.
    fn facts(&self, now_ms: u64) -> Facts {
        let s = &self.sale;
        let mut f = Facts {
            now_ms,
            starts_at_ms: s.starts_at_ms(),
            ends_at_ms: s.ends_at_ms(),
            closed: s.closed(),
            list_only: s.list_only(),
            ..Facts::default()
        };
        self.observe_sold_out(&mut f, now_ms);
        f
    }

    fn observe_sold_out(&self, f: &mut Facts, now_ms: u64) {
        f.sold_out = self.sale.is_sold_out() && self.sale.stock.units() == 0;
        f.replica_complete = self.sale.replica_complete(now_ms);
        // Looked at again after the proof, never before: the proof counts
        // wins whose digests were in the filter before it could hold, and
        // the buyer's may have come in since `buyer` looked (a watcher's
        // read during this request's store calls). A stale "not there"
        // with a fresh proof would tell a winner "sold out".
        if let Some(b) = f.buyer.as_mut() {
            b.may_have_won = b.may_have_won || self.sale.may_have_won(&b.user);
        }
    }

    /// What this node knows about `user`.
    fn buyer(&self, user: UserId) -> Buyer {
        let s = &self.sale;
        // Every remembered winner's digest is in the set first (see
        // `Sale::remember_winner`), so a buyer whose digest is not there,
        // the common case, costs one lookup instead of two.
        let may_have_won = s.may_have_won(&user);
        Buyer {
            user,
            eligible: !s.list_only() || s.is_eligible(&user),
            paced: false,
            ticket: may_have_won
                .then(|| s.winner(&user))
                .flatten()
                .map(|(issued, warehouse)| Ticket {
                    user,
                    issued,
                    warehouse,
                }),
            may_have_won,
            looked_up: false,
        }
    }

    /// Takes a ticket for the buyer `door` identifies, shipping to
    /// `ship_to` (DESIGN §7), within `deadline`.
    ///
    /// Every check that needs no store runs here, before anything is
    /// awaited, so a buyer answered from memory gets a ready [`Taking`]:
    /// no allocation, and a request future the size of an answer. Only a
    /// buyer who must wait on the store gets a boxed future, once; its
    /// state (the lease, the commit, their timers) would otherwise sit in
    /// every request's future and be copied with it on each move.
    pub fn take(
        self: &Arc<Self>,
        door: &impl Door,
        ship_to: Option<RegionId>,
        deadline: Instant,
    ) -> Taking {
        let now = self.clock().now_ms();
        self.sale.note_demand(now);
        let mut f = self.facts(now);
        match self.advance(&mut f, now, Some(door), false) {
            Next::Answer(a) => Taking::Ready(Some(a)),
            next => Taking::Waiting(Box::pin(self.clone().wait(f, next, ship_to, now, deadline))),
        }
    }

    /// Runs DESIGN §3's checks from memory until they answer or name a
    /// step that needs the store. `door` is asked only before the first
    /// wait: by then the buyer is identified and paced, and
    /// [`check::check`] asks neither again.
    fn advance(&self, f: &mut Facts, now: u64, door: Option<&dyn Door>, leased: bool) -> Next {
        loop {
            match check(f) {
                Step::NotStarted { starts_at_ms } => {
                    return Next::Answer(Answer::memory(Outcome::NotStarted { starts_at_ms }))
                }
                Step::Ended => return Next::Answer(Answer::memory(Outcome::Ended)),
                Step::Identify => match door.map(|d| d.identify(now)) {
                    Some(Ok(user)) => f.buyer = Some(self.buyer(user)),
                    Some(Err(t)) => return Next::Answer(Answer::memory(t)),
                    None => return Next::Answer(Answer::store(Outcome::Unavailable)),
                },
                Step::NotEligible => return Next::Answer(Answer::memory(Outcome::NotEligible)),
                Step::Pace(user) => match door.map(|d| d.pace(&user)) {
                    Some(Ok(())) => set(f, |b| b.paced = true),
                    Some(Err(t)) => return Next::Answer(Answer::memory(t)),
                    None => return Next::Answer(Answer::store(Outcome::Unavailable)),
                },
                Step::Replay(t) => return Next::Answer(Answer::memory(Outcome::Replay(t))),
                Step::LookUp(user) => return Next::LookUp(user),
                Step::SoldOut if leased => return Next::Answer(Answer::store(Outcome::SoldOut)),
                Step::SoldOut => return Next::Answer(Answer::memory(Outcome::SoldOut)),
                Step::ProveSoldOut(user) => return Next::ProveSoldOut(user),
                Step::Acquire(user) => return Next::Acquire(user),
            }
        }
    }

    /// The store steps of a take, from `next` on: take → refill → commit
    /// rounds, lookups, and the checks again between them.
    async fn wait(
        self: Arc<Self>,
        mut f: Facts,
        mut next: Next,
        ship_to: Option<RegionId>,
        now: u64,
        deadline: Instant,
    ) -> Answer {
        // Set once a lease call reached the store and found it sold out.
        let mut leased = false;
        let (mut fenced, mut refills) = (0, 0);
        loop {
            match next {
                Next::Answer(a) => return a,
                Next::LookUp(user) => match self.won_elsewhere(user, deadline).await {
                    Some(a) => return a,
                    None => set(&mut f, |b| b.looked_up = true),
                },
                Next::ProveSoldOut(user) => return self.prove_sold_out(user).await,
                Next::Acquire(user) => {
                    match self.round(user, ship_to, now, deadline).await {
                        Round::Answered(a) => return a,
                        Round::Fenced => fenced += 1,
                        Round::Refilled => refills += 1,
                        Round::SoldOut => {
                            // Answered now, whatever the rounds left: this
                            // buyer's request made the lease call.
                            leased = true;
                            self.observe_sold_out(&mut f, self.clock().now_ms());
                            f.sold_out = true;
                            next = self.advance(&mut f, now, None, leased);
                            continue;
                        }
                    }
                    if fenced >= FENCED_ATTEMPTS || refills >= REFILL_ROUNDS {
                        return Answer::store(Outcome::Unavailable);
                    }
                    self.observe_sold_out(&mut f, self.clock().now_ms());
                }
            }
            next = self.advance(&mut f, now, None, leased);
        }
    }

    /// A buyer whose digest is in the winners replica but whose ticket this
    /// node has not seen (won on another node): one lookup, then the ticket
    /// is remembered here. `None`: no ticket (a digest collision); the
    /// buyer buys on.
    async fn won_elsewhere(&self, user: UserId, deadline: Instant) -> Option<Answer> {
        match tokio::time::timeout_at(deadline, self.look_up(user)).await {
            Ok(Ok(Some(rec))) => Some(Answer::store(Outcome::Replay(Ticket {
                user,
                issued: rec.issued(),
                warehouse: rec.warehouse,
            }))),
            Ok(Ok(None)) => None,
            Ok(Err(_)) | Err(_) => Some(Answer::store(Outcome::Unavailable)),
        }
    }

    /// The sold-out answer when the replica cannot prove the buyer lost:
    /// the store says whether they won elsewhere.
    async fn prove_sold_out(&self, user: UserId) -> Answer {
        if self.proven_loser_after_renewal(&user).await {
            return Answer::memory(Outcome::SoldOut);
        }
        match self.look_up(user).await {
            Ok(Some(rec)) => Answer::store(Outcome::Replay(Ticket {
                user,
                issued: rec.issued(),
                warehouse: rec.warehouse,
            })),
            Ok(None) => Answer::store(Outcome::SoldOut),
            Err(_) => Answer::store(Outcome::Unavailable),
        }
    }

    /// One round: take a unit and commit it, or refill the lease.
    async fn round(
        &self,
        user: UserId,
        ship_to: Option<RegionId>,
        now: u64,
        deadline: Instant,
    ) -> Round {
        let sale = &self.sale;
        let Some(unit) = sale.take_unit() else {
            return match tokio::time::timeout_at(deadline, lease::refill(&self.lease, sale)).await {
                Ok(Refill::Ready) => Round::Refilled,
                Ok(Refill::SoldOut) => Round::SoldOut,
                Ok(Refill::Refused(r)) => Round::Answered(self.refusal(r)),
                // Nothing was taken: a plain 503.
                Ok(Refill::Failed) | Err(_) => Round::Answered(Answer::store(Outcome::Unavailable)),
            };
        };
        // Relaxed: an idleness hint for the lease keeper, read on its own.
        sale.last_take_ms.store(now, Relaxed);
        lease::maybe_prefetch(&self.lease, sale);
        let settled =
            tokio::time::timeout_at(deadline, self.committer.commit(sale, user, ship_to, unit))
                .await;
        match settled {
            Ok(Settled::Judged(Verdict::NotEligible)) => {
                Round::Answered(Answer::store(Outcome::NotEligible))
            }
            Ok(Settled::Judged(Verdict::Fenced | Verdict::NoUnits)) => Round::Fenced,
            // Every other verdict is a win or a replay.
            Ok(Settled::Judged(v)) => match v.ticket() {
                Some((issued, placement, replay)) => {
                    let t = Ticket {
                        user,
                        issued,
                        warehouse: placement.warehouse,
                    };
                    Round::Answered(Answer::store(if replay {
                        Outcome::Replay(t)
                    } else {
                        Outcome::Won(t)
                    }))
                }
                None => Round::Fenced,
            },
            Ok(Settled::Refused(r)) => Round::Answered(self.refusal(r)),
            Ok(Settled::NotSent) => Round::Answered(Answer::store(Outcome::Unavailable)),
            // Sent, and no verdict came back in time: it may have won.
            Ok(Settled::Failed) | Err(_) => Round::Answered(self.settle_unknown(user).await),
        }
    }

    /// A commit whose verdict never came back (store timeout, reply lost)
    /// may have recorded the win. One bounded lookup of the buyer's ticket
    /// settles it when the store answers; otherwise the buyer is told the
    /// outcome is unknown (DESIGN §3), never a plain "nothing was taken".
    async fn settle_unknown(&self, user: UserId) -> Answer {
        if let Some((issued, warehouse)) = self.sale.winner(&user) {
            return Answer::store(Outcome::Won(Ticket {
                user,
                issued,
                warehouse,
            }));
        }
        match tokio::time::timeout(SETTLE_GRACE, self.look_up(user)).await {
            Ok(Ok(Some(rec))) => Answer::store(Outcome::Won(Ticket {
                user,
                issued: rec.issued(),
                warehouse: rec.warehouse,
            })),
            _ => Answer::store(Outcome::Unknown),
        }
    }

    fn refusal(&self, r: Refusal) -> Answer {
        Answer::store(match r {
            Refusal::UnknownSale => Outcome::NoSale,
            Refusal::NotStarted => Outcome::NotStarted {
                starts_at_ms: self.sale.starts_at_ms(),
            },
            Refusal::Ended | Refusal::Closed => Outcome::Ended,
        })
    }
}

/// Records what a step learnt about the buyer.
fn set(f: &mut Facts, learn: impl FnOnce(&mut Buyer)) {
    if let Some(b) = f.buyer.as_mut() {
        learn(b);
    }
}
