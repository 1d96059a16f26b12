//! The nemesis: a seeded schedule of faults.
#![allow(dead_code)]

use std::fmt;

use super::rng::Rng;
use crate::support::procs::LEASE_TTL_MS;

/// One fault and its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` a front node; it comes back under a new node id.
    KillNode(usize),
    /// `kill -9` the order consumer; it is started again.
    KillConsumer,
    /// `kill -9` redis-server; it comes back on the same port and data.
    KillRedis,
    /// SIGSTOP a node for longer than its lease TTL, then SIGCONT.
    PauseNode(usize),
    /// Delay every chunk between a node and Redis.
    Delay(usize, u64),
    /// Accept but stop forwarding between a node and Redis.
    Blackhole(usize),
    /// Abort every connection between a node and Redis (RST).
    Reset(usize),
    /// SIGSTOP redis-server (a store stalled under load), then SIGCONT.
    StallRedis,
    /// Hold a node's store replies without closing, while a crowd of
    /// buyers hangs up on it at random points of their requests.
    HangUps(usize),
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillNode(_) => "kill_node",
            Fault::KillConsumer => "kill_consumer",
            Fault::KillRedis => "kill_redis",
            Fault::PauseNode(_) => "pause_node",
            Fault::Delay(..) => "delay",
            Fault::Blackhole(_) => "blackhole",
            Fault::Reset(_) => "reset",
            Fault::StallRedis => "stall_redis",
            Fault::HangUps(_) => "hang_ups",
        }
    }

    /// Faults that take a node's selling away while they hold (a reset
    /// or a delay only slows it; a consumer kill does not touch selling).
    pub fn disruptive(&self) -> bool {
        !matches!(
            self,
            Fault::Reset(_) | Fault::Delay(..) | Fault::KillConsumer
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillNode(n)
            | Fault::PauseNode(n)
            | Fault::Blackhole(n)
            | Fault::Reset(n)
            | Fault::HangUps(n) => {
                write!(f, "{}(node{n})", self.kind())
            }
            Fault::Delay(n, ms) => write!(f, "delay(node{n},{ms}ms)"),
            _ => f.write_str(self.kind()),
        }
    }
}

/// A fault at a time, held for a while before it heals.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Gap after the previous step healed (the first: after the load began).
    pub after_ms: u64,
    pub fault: Fault,
    pub hold_ms: u64,
}

/// 1–3 faults, one at a time, drawn from the seed; the first is always
/// disruptive, so every run meets a fault that takes selling away while
/// the sale still has stock.
///
/// Without a proxy between nodes and Redis (`proxied` false: a cluster run),
/// delays and held links become store stalls and resets become node kills.
pub fn plan(rng: &mut Rng, nodes: usize, consumer: bool, proxied: bool) -> Vec<Step> {
    let n = rng.range(1, 3) as usize;
    let node = |rng: &mut Rng| rng.below(nodes as u64) as usize;
    (0..n)
        .map(|i| {
            // Pauses weigh double: whether one catches its node holding
            // units is a race, and the fencing path must be exercised.
            let kinds = if consumer { 10 } else { 9 };
            let target = node(rng);
            let mut fault = draw(rng, kinds, target);
            while i == 0 && !fault.disruptive() {
                let target = node(rng);
                fault = draw(rng, kinds, target);
            }
            if !proxied {
                fault = match fault {
                    Fault::Delay(..) | Fault::Blackhole(_) => Fault::StallRedis,
                    Fault::Reset(n) => Fault::KillNode(n),
                    f => f,
                };
            }
            let hold_ms = match fault {
                // Longer than the lease TTL, so the lease expires under it.
                Fault::PauseNode(_) => LEASE_TTL_MS + rng.range(300, 900),
                Fault::Blackhole(_) => rng.range(600, 1600),
                Fault::Delay(..) => rng.range(400, 1000),
                Fault::StallRedis => rng.range(500, 1500),
                Fault::HangUps(_) => rng.range(600, 1200),
                Fault::Reset(_) => 0,
                _ => rng.range(200, 700),
            };
            Step {
                after_ms: if i == 0 {
                    rng.range(150, 500)
                } else {
                    rng.range(100, 400)
                },
                fault,
                hold_ms,
            }
        })
        .collect()
}

fn draw(rng: &mut Rng, kinds: u64, node: usize) -> Fault {
    match rng.below(kinds) {
        0 => Fault::KillNode(node),
        1 => Fault::KillRedis,
        2 | 3 => Fault::PauseNode(node),
        4 => Fault::Delay(node, rng.range(50, 300)),
        5 => Fault::Blackhole(node),
        6 => Fault::Reset(node),
        7 => Fault::StallRedis,
        8 => Fault::HangUps(node),
        _ => Fault::KillConsumer,
    }
}

/// How long a plan runs, faults and gaps included.
pub fn duration_ms(plan: &[Step]) -> u64 {
    plan.iter().map(|s| s.after_ms + s.hold_ms + 100).sum()
}
