//! Per-address and per-user rate limits.
//!
//! Both are governor keyed GCRA limiters. The per-user limiter is keyed by a
//! 64-bit keyed hash of the user id rather than the id itself, so a check
//! never allocates an owned key; with a random per-process hash key a
//! collision (two users sharing a budget) is a 2^-64 event. Memory is
//! bounded by [`Limits::retain`], which the server runs periodically and
//! which forgets keys whose budget is full again.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::id::UserId;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// Burst a buyer gets on top of the steady rate: enough for a double click
/// and a retry, not enough to hammer.
const USER_BURST: u32 = 5;

pub struct Limits {
    user: Option<Keyed<u64>>,
    address: Option<Keyed<IpAddr>>,
    hasher: std::collections::hash_map::RandomState,
    clock: DefaultClock,
}

impl Limits {
    /// `0` turns a limit off.
    pub fn new(user_rate: u32, address_rate: u32) -> Self {
        let user = NonZeroU32::new(user_rate).map(|r| {
            let burst = NonZeroU32::new(USER_BURST.max(user_rate)).unwrap_or(r);
            RateLimiter::keyed(Quota::per_second(r).allow_burst(burst))
        });
        let address = NonZeroU32::new(address_rate).map(|r| {
            let burst = r.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            RateLimiter::keyed(Quota::per_second(r).allow_burst(burst))
        });
        Limits {
            user,
            address,
            hasher: Default::default(),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` when the address is over its rate.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Duration> {
        match &self.address {
            None => Ok(()),
            Some(l) => l
                .check_key(&ip)
                .map_err(|n| n.wait_time_from(self.clock.now())),
        }
    }

    /// `Err(wait)` when the user is over its rate.
    pub fn check_user(&self, user: &UserId) -> Result<(), Duration> {
        match &self.user {
            None => Ok(()),
            Some(l) => l
                .check_key(&self.hasher.hash_one(user))
                .map_err(|n| n.wait_time_from(self.clock.now())),
        }
    }

    /// Forgets keys whose budget has refilled; returns how many remain.
    pub fn retain(&self) -> usize {
        let mut n = 0;
        if let Some(l) = &self.user {
            l.retain_recent();
            l.shrink_to_fit();
            n += l.len();
        }
        if let Some(l) = &self.address {
            l.retain_recent();
            l.shrink_to_fit();
            n += l.len();
        }
        n
    }
}

/// Whole seconds for a `Retry-After` header, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buyer_past_the_burst_is_limited_and_others_are_not() {
        let l = Limits::new(1, 0);
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        for _ in 0..USER_BURST {
            assert!(l.check_user(&alice).is_ok());
        }
        assert!(l.check_user(&alice).is_err());
        assert!(l.check_user(&bob).is_ok());
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let l = Limits::new(0, 0);
        let alice = UserId::parse("alice").unwrap();
        for _ in 0..1000 {
            assert!(l.check_user(&alice).is_ok());
            assert!(l.check_address([127, 0, 0, 1].into()).is_ok());
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
