//! The check order of DESIGN §3 as one pure function.
//!
//! [`check`] reads what a node knows about a sale and a buyer as plain
//! values and names the next thing to do: refuse, ask the node's door (who
//! is buying, the per-user limit), answer from the ticket cache, look the
//! buyer up in the store, prove sell-out, or go on to take a unit. The
//! caller fills in what each step learns and asks again, so the order
//! lives here and nowhere else. Nothing here reads a clock or an atomic.

use crate::id::{UserId, WarehouseId};
use crate::sale::Issued;

/// A buyer's ticket: what the win answer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub user: UserId,
    pub issued: Issued,
    pub warehouse: WarehouseId,
}

#[cfg(test)]
impl Ticket {
    /// A ticket of `user`, for tests.
    pub(crate) fn sample(user: &str) -> Ticket {
        Ticket {
            user: UserId::parse(user).expect("a user id"),
            issued: Issued {
                ticket: crate::id::TicketId::random(),
                issued_at_ms: 900,
                expires_at_ms: 9_000,
            },
            warehouse: crate::sale::Placement::default_warehouse().warehouse,
        }
    }
}

/// The sale as one request sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    pub now_ms: u64,
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    pub closed: bool,
    pub list_only: bool,
    /// The sold-out flag is set and the local lease is spent.
    pub sold_out: bool,
    /// A miss in the winners replica proves the buyer holds no ticket
    /// (a fresh sold-out proof, see `Sale::replica_complete`).
    pub replica_complete: bool,
    /// Who is buying, once the node's door has said.
    pub buyer: Option<Buyer>,
}

/// What the node knows about the buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buyer {
    pub user: UserId,
    pub eligible: bool,
    /// The per-user limit let this request through.
    pub paced: bool,
    /// The buyer's ticket from the ticket cache.
    pub ticket: Option<Ticket>,
    /// The buyer's digest is in the winners replica.
    pub may_have_won: bool,
    /// The store was asked for the buyer's ticket and had none.
    pub looked_up: bool,
}

/// The next step for a buyer, cheapest checks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// 425: too early.
    NotStarted { starts_at_ms: u64 },
    /// 410: the window is over, or the sale closed.
    Ended,
    /// Ask the door who is buying: per-address limit, then session.
    Identify,
    /// 403: not on the sale's list.
    NotEligible,
    /// Ask the door's per-user limit.
    Pace(UserId),
    /// 200: the buyer's ticket again, from memory.
    Replay(Ticket),
    /// The buyer may have won on another node: one lookup.
    LookUp(UserId),
    /// 410 from memory: the proof shows no unit anywhere and no win of
    /// this buyer.
    SoldOut,
    /// Sold out by the local view, but the replica cannot prove this
    /// buyer lost: ask the store.
    ProveSoldOut(UserId),
    /// Go on: take a unit and commit it.
    Acquire(UserId),
}

/// DESIGN §3: not started or ended → who (address limit, session) →
/// eligibility → per-user limit → the buyer's ticket → sold out → commit.
/// (The unknown sale is the registry's answer, before any of this.)
pub fn check(f: &Facts) -> Step {
    if f.closed || f.now_ms >= f.ends_at_ms {
        return Step::Ended;
    }
    if f.now_ms < f.starts_at_ms {
        return Step::NotStarted {
            starts_at_ms: f.starts_at_ms,
        };
    }
    let Some(b) = f.buyer else {
        return Step::Identify;
    };
    if f.list_only && !b.eligible {
        return Step::NotEligible;
    }
    if !b.paced {
        return Step::Pace(b.user);
    }
    if let Some(t) = b.ticket {
        return Step::Replay(t);
    }
    if b.may_have_won && !b.looked_up {
        return Step::LookUp(b.user);
    }
    if f.sold_out {
        return if f.replica_complete && !b.may_have_won {
            Step::SoldOut
        } else {
            Step::ProveSoldOut(b.user)
        };
    }
    Step::Acquire(b.user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse("alice").expect("an id")
    }

    fn open() -> Facts {
        Facts {
            now_ms: 1_000,
            starts_at_ms: 500,
            ends_at_ms: 2_000,
            ..Facts::default()
        }
    }

    fn buyer() -> Buyer {
        Buyer {
            user: user(),
            eligible: true,
            paced: true,
            ticket: None,
            may_have_won: false,
            looked_up: false,
        }
    }

    fn with(b: Buyer) -> Facts {
        Facts {
            buyer: Some(b),
            ..open()
        }
    }

    fn ticket() -> Ticket {
        Ticket::sample("alice")
    }

    #[test]
    fn the_window_is_checked_before_anyone_is_asked_who_they_are() {
        let early = Facts {
            now_ms: 100,
            ..open()
        };
        assert_eq!(check(&early), Step::NotStarted { starts_at_ms: 500 });
        let late = Facts {
            now_ms: 2_000,
            ..open()
        };
        assert_eq!(check(&late), Step::Ended);
        let closed = Facts {
            closed: true,
            ..open()
        };
        assert_eq!(check(&closed), Step::Ended);
        assert_eq!(check(&open()), Step::Identify);
    }

    #[test]
    fn a_closed_sale_is_ended_even_before_it_starts() {
        let f = Facts {
            now_ms: 100,
            closed: true,
            ..open()
        };
        assert_eq!(check(&f), Step::Ended);
    }

    #[test]
    fn eligibility_comes_before_the_per_user_limit() {
        let f = Facts {
            list_only: true,
            ..with(Buyer {
                eligible: false,
                paced: false,
                ..buyer()
            })
        };
        assert_eq!(check(&f), Step::NotEligible);
        let open_sale = with(Buyer {
            eligible: false,
            paced: false,
            ..buyer()
        });
        assert_eq!(check(&open_sale), Step::Pace(user()));
    }

    #[test]
    fn a_winner_gets_the_ticket_back_even_after_sell_out() {
        let t = ticket();
        let f = Facts {
            sold_out: true,
            replica_complete: true,
            ..with(Buyer {
                ticket: Some(t),
                may_have_won: true,
                ..buyer()
            })
        };
        assert_eq!(check(&f), Step::Replay(t));
    }

    #[test]
    fn a_digest_hit_is_looked_up_once_then_the_buyer_goes_on() {
        let maybe = Buyer {
            may_have_won: true,
            ..buyer()
        };
        assert_eq!(check(&with(maybe)), Step::LookUp(user()));
        let missed = Buyer {
            looked_up: true,
            ..maybe
        };
        assert_eq!(check(&with(missed)), Step::Acquire(user()));
    }

    #[test]
    fn a_loser_after_sell_out_is_refused_from_memory_only_with_a_fresh_proof() {
        let proven = Facts {
            sold_out: true,
            replica_complete: true,
            ..with(buyer())
        };
        assert_eq!(check(&proven), Step::SoldOut);
        let stale = Facts {
            replica_complete: false,
            ..proven
        };
        assert_eq!(check(&stale), Step::ProveSoldOut(user()));
        let maybe_winner = Facts {
            buyer: Some(Buyer {
                may_have_won: true,
                looked_up: true,
                ..buyer()
            }),
            ..proven
        };
        assert_eq!(check(&maybe_winner), Step::ProveSoldOut(user()));
    }

    #[test]
    fn a_buyer_past_every_check_goes_on_to_commit() {
        assert_eq!(check(&with(buyer())), Step::Acquire(user()));
    }
}
