//! The checker: DESIGN §2's promises, judged from the client log and from
//! Redis. It is a pure function of what it is given, so a doctored history
//! or a doctored Redis picture must make it fail (the negative controls).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use redis::AsyncCommands;

use super::history::{Call, Outcome};

/// What Redis holds for one sale, read after the run settled.
#[derive(Debug, Clone, Default)]
pub struct RedisView {
    pub total: i64,
    pub available: i64,
    pub leased: i64,
    pub pending: i64,
    pub confirmed: i64,
    pub released: i64,
    /// ticket -> (state p|c|r, user)
    pub tickets: HashMap<String, (char, String)>,
    /// user -> ticket
    pub winners: HashMap<String, String>,
    /// (ticket, user) per stream entry, in order.
    pub stream: Vec<(String, String)>,
}

impl RedisView {
    pub async fn read(redis_url: &str, sale: &str) -> redis::RedisResult<RedisView> {
        let client = redis::Client::open(redis_url)?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let key = |s: &str| format!("bigtap:{{{sale}}}:{s}");
        let acct: HashMap<String, String> = con.hgetall(key("acct")).await?;
        let (raw, winners) = records(&mut con, sale).await?;
        let entries: redis::streams::StreamRangeReply = con.xrange_all(key("orders")).await?;
        let get = |k: &str| acct.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let tickets = raw
            .into_iter()
            .map(|(t, rec)| {
                let mut it = rec.split(':');
                let state = it.next().and_then(|s| s.chars().next()).unwrap_or('?');
                let user = it.next().unwrap_or("").to_owned();
                (t, (state, user))
            })
            .collect();
        let field = |e: &redis::streams::StreamId, f: &str| -> String {
            e.get::<String>(f).unwrap_or_default()
        };
        Ok(RedisView {
            total: get("total"),
            available: get("avail"),
            leased: get("leased"),
            pending: get("pending"),
            confirmed: get("confirmed"),
            released: get("released"),
            tickets,
            winners,
            stream: entries
                .ids
                .iter()
                .map(|e| (field(e, "ticket"), field(e, "user")))
                .collect(),
        })
    }

    pub fn balanced(&self) -> bool {
        self.total == self.available + self.leased + self.pending + self.confirmed
    }
}

/// Every win's record as `ticket -> "state:user:issued:expires:warehouse"`,
/// and `user -> ticket`, read from the two places records live: under the
/// user in `:winners` (`state:tag:issued:expires:warehouse`, ticket
/// `<tag>-<user>`), or, for older tickets, in `:tickets` with the bare
/// ticket in `:winners`. Read here on its own, not through the library, so
/// the check does not share the code it checks.
async fn records(
    con: &mut redis::aio::MultiplexedConnection,
    sale: &str,
) -> redis::RedisResult<(HashMap<String, String>, HashMap<String, String>)> {
    let key = |s: &str| format!("bigtap:{{{sale}}}:{s}");
    let mut tickets: HashMap<String, String> = con.hgetall(key("tickets")).await?;
    let raw: HashMap<String, String> = con.hgetall(key("winners")).await?;
    let mut winners = HashMap::new();
    for (user, entry) in raw {
        let f: Vec<&str> = entry.split(':').collect();
        let ticket = match f[..] {
            [state, tag, issued, expires, w] => {
                let ticket = format!("{tag}-{user}");
                tickets.insert(
                    ticket.clone(),
                    format!("{state}:{user}:{issued}:{expires}:{w}"),
                );
                ticket
            }
            _ => entry,
        };
        winners.insert(user, ticket);
    }
    Ok((tickets, winners))
}

/// A sale's accounting per warehouse as the admin route reports it
/// (DESIGN §7), next to what the ticket records say.
#[derive(Debug, Clone, Default)]
pub struct WarehouseView {
    /// warehouse -> (total, unsold, pending, confirmed), from the accounting.
    pub accounts: BTreeMap<String, (i64, i64, i64, i64)>,
    /// warehouse -> live (pending or confirmed) ticket records naming it.
    pub live_records: BTreeMap<String, i64>,
}

impl WarehouseView {
    /// Reads the accounting from `accounting` (the admin GET's body) and
    /// the records from Redis at `redis_url`.
    pub async fn read(
        accounting: &serde_json::Value,
        redis_url: &str,
        sale: &str,
    ) -> redis::RedisResult<WarehouseView> {
        let mut v = WarehouseView::default();
        if let Some(ws) = accounting["warehouses"].as_object() {
            for (w, a) in ws {
                let n = |k: &str| a[k].as_i64().unwrap_or(i64::MIN);
                v.accounts.insert(
                    w.clone(),
                    (n("total"), n("unsold"), n("pending"), n("confirmed")),
                );
            }
        }
        let client = redis::Client::open(redis_url)?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let (raw, _) = records(&mut con, sale).await?;
        for rec in raw.values() {
            let f: Vec<&str> = rec.split(':').collect();
            if matches!(f.first(), Some(&"p") | Some(&"c")) {
                let w = f.get(4).copied().unwrap_or("default");
                *v.live_records.entry(w.to_owned()).or_default() += 1;
            }
        }
        Ok(v)
    }
}

/// DESIGN §7's promises per warehouse: every warehouse balances, the
/// warehouses add up to the sale, no warehouse sold more than it had, and
/// the ticket records agree with the accounting (no unit counted in two
/// warehouses).
pub fn check_warehouses(view: &RedisView, w: &WarehouseView) -> Vec<String> {
    let mut v = Vec::new();
    if w.accounts.is_empty() {
        v.push("the accounting names no warehouse".to_owned());
        return v;
    }
    let (mut total, mut unsold, mut pending, mut confirmed) = (0, 0, 0, 0);
    for (name, &(t, u, p, c)) in &w.accounts {
        if t != u + p + c || u < 0 || p < 0 || c < 0 {
            v.push(format!(
                "warehouse {name}: total {t} != unsold {u} + pending {p} + confirmed {c}"
            ));
        }
        if p + c > t {
            v.push(format!("warehouse {name} sold {} of {t}", p + c));
        }
        let records = w.live_records.get(name).copied().unwrap_or(0);
        if records != p + c {
            v.push(format!(
                "warehouse {name}: {records} live ticket records, accounting says {}",
                p + c
            ));
        }
        total += t;
        unsold += u;
        pending += p;
        confirmed += c;
    }
    for name in w.live_records.keys() {
        if !w.accounts.contains_key(name) {
            v.push(format!(
                "ticket records name warehouse {name}, unknown to the accounting"
            ));
        }
    }
    if (total, pending, confirmed) != (view.total, view.pending, view.confirmed) {
        v.push(format!(
            "warehouses add up to total {total} pending {pending} confirmed {confirmed}, the sale says {} {} {}",
            view.total, view.pending, view.confirmed
        ));
    }
    if unsold != view.available + view.leased {
        v.push(format!(
            "warehouses hold {unsold} unsold, the pool and leases {}",
            view.available + view.leased
        ));
    }
    v
}

/// The figures of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub winners: usize,
    pub oversold: i64,
    pub lost: usize,
    pub double: usize,
    pub stranded: i64,
    pub undelivered: usize,
    /// Takes whose outcome was unknown when answered.
    pub unknown: usize,
    /// Of the buyers with an unknown outcome: the retry replayed a win that
    /// had been recorded / won a new unit / was told sold out.
    pub resolved_won: usize,
    pub resolved_new: usize,
    pub resolved_lost: usize,
    pub unresolved: usize,
    pub unexpected: usize,
    /// Winners whose last answer was not their ticket.
    pub final_not_ticket: usize,
}

/// The checker's verdict.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub figures: Figures,
    pub violations: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    fn fail(&mut self, v: String) {
        self.violations.push(v);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.figures;
        write!(
            f,
            "winners={} oversold={} lost={} double={} stranded={} undelivered={} unknown={} resolved(won={} new={} lost={} open={})",
            g.winners, g.oversold, g.lost, g.double, g.stranded, g.undelivered, g.unknown,
            g.resolved_won, g.resolved_new, g.resolved_lost, g.unresolved
        )?;
        for v in self.violations.iter().take(20) {
            write!(f, "\n  VIOLATION {v}")?;
        }
        if self.violations.len() > 20 {
            write!(f, "\n  ... and {} more", self.violations.len() - 20)?;
        }
        Ok(())
    }
}

/// Judges a run. `delivered` is what the order backend received, when a
/// consumer ran.
pub fn check(calls: &[Call], view: &RedisView, delivered: Option<&HashSet<String>>) -> Report {
    let mut r = Report::default();

    // What every buyer was told.
    let mut told: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for c in calls {
        told.entry(&c.user).or_default().push(c);
    }
    let mut acked: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in calls {
        if let Outcome::Won { ticket, .. } = &c.outcome {
            acked.entry(&c.user).or_default().insert(ticket);
        }
        if let Outcome::Unexpected(s) = c.outcome {
            r.figures.unexpected += 1;
            r.fail(format!("user {} was answered {s}", c.user));
        }
    }
    r.figures.winners = view.winners.len();

    // No oversell: counters, records, and what buyers were told.
    let sold = view.pending + view.confirmed;
    let live_records = view.tickets.values().filter(|(s, _)| *s != 'r').count() as i64;
    let acked_live = acked
        .values()
        .flatten()
        .filter(|t| view.tickets.get(**t).is_none_or(|(s, _)| *s != 'r'))
        .collect::<BTreeSet<_>>()
        .len() as i64;
    let excess = [sold, live_records, acked_live]
        .into_iter()
        .map(|n| n - view.total)
        .max()
        .unwrap_or(0);
    r.figures.oversold = excess.max(0);
    if excess > 0 {
        r.fail(format!(
            "oversold by {excess}: total {}, pending+confirmed {sold}, live ticket records {live_records}, live tickets acknowledged {acked_live}",
            view.total
        ));
    }

    // No lost winner: every acknowledged ticket has its stream entry.
    let stream: HashMap<&str, Vec<&str>> =
        view.stream.iter().fold(HashMap::new(), |mut m, (t, u)| {
            m.entry(t.as_str()).or_default().push(u.as_str());
            m
        });
    for (user, tickets) in &acked {
        for t in tickets {
            match stream.get(t) {
                Some(users) if users.iter().all(|u| u == user) => {}
                Some(users) => {
                    r.figures.lost += 1;
                    r.fail(format!(
                        "ticket {t} of {user} is in the stream under {users:?}"
                    ));
                }
                None => {
                    r.figures.lost += 1;
                    r.fail(format!(
                        "ticket {t} acknowledged to {user} has no stream entry"
                    ));
                }
            }
            if !view.tickets.contains_key(*t) {
                r.fail(format!(
                    "ticket {t} acknowledged to {user} has no ticket record"
                ));
            }
        }
    }
    for (t, users) in &stream {
        if users.len() > 1 {
            r.fail(format!("ticket {t} has {} stream entries", users.len()));
        }
    }

    // One winner per user: what buyers were told, and what Redis holds.
    let mut doubled: BTreeSet<String> = BTreeSet::new();
    for (user, tickets) in &acked {
        if tickets.len() > 1 {
            doubled.insert(user.to_string());
            r.fail(format!("user {user} was given tickets {tickets:?}"));
        }
        if let Some(held) = view.winners.get(*user) {
            if tickets.iter().any(|t| *t != held) {
                doubled.insert(user.to_string());
                r.fail(format!(
                    "user {user} was given {tickets:?} but Redis says {held}"
                ));
            }
        }
    }
    let mut live_by_user: HashMap<&str, usize> = HashMap::new();
    for (state, user) in view.tickets.values() {
        if *state != 'r' {
            *live_by_user.entry(user).or_default() += 1;
        }
    }
    for (user, n) in live_by_user {
        if n > 1 {
            doubled.insert(user.to_owned());
            r.fail(format!("user {user} holds {n} live tickets in Redis"));
        }
    }
    let mut entries_by_user: HashMap<&str, usize> = HashMap::new();
    for (_, u) in &view.stream {
        *entries_by_user.entry(u).or_default() += 1;
    }
    for (user, n) in entries_by_user {
        if n > 1 {
            doubled.insert(user.to_owned());
            r.fail(format!("user {user} has {n} stream entries"));
        }
    }
    r.figures.double = doubled.len();

    // Unknown outcomes: each must have been settled by a retry, and a win
    // recorded in Redis must have reached its buyer (on the retry at least).
    for (user, cs) in &told {
        let unknown = cs
            .iter()
            .filter(|c| !c.resolution && matches!(c.outcome, Outcome::Unknown(_)))
            .count();
        r.figures.unknown += unknown;
        if unknown == 0 {
            continue;
        }
        let settled = cs
            .iter()
            .filter(|c| !matches!(c.outcome, Outcome::Unknown(_)))
            .any(|c| c.resolution || matches!(c.outcome, Outcome::Won { .. }));
        let resolution = cs.iter().rev().find(|c| c.resolution);
        match resolution.map(|c| &c.outcome) {
            Some(Outcome::Won { replay: true, .. }) => r.figures.resolved_won += 1,
            Some(Outcome::Won { replay: false, .. }) => r.figures.resolved_new += 1,
            Some(Outcome::SoldOut) => r.figures.resolved_lost += 1,
            _ if settled => r.figures.resolved_won += 1,
            _ => {
                r.figures.unresolved += 1;
                r.fail(format!("user {user}: unknown outcome never settled"));
            }
        }
    }
    for (user, ticket) in &view.winners {
        if !acked.contains_key(user.as_str()) {
            r.fail(format!(
                "user {user} holds ticket {ticket} in Redis but was never given it, even on retry"
            ));
        }
    }

    // Progress: a sale that sells nothing, or never sells out while fresh
    // buyers keep coming, keeps no promise worth keeping.
    if view.winners.is_empty() && acked.is_empty() {
        r.fail("nothing sold: no buyer won".to_owned());
    }
    if view.pending + view.confirmed != view.total {
        r.fail(format!(
            "the sale never sold out: {} of {} units sold",
            view.pending + view.confirmed,
            view.total
        ));
    }

    // Every winner's last word is their ticket: the final retry of a
    // buyer who won is answered with the same ticket, not sold out, not a
    // timeout.
    for (user, ticket) in &view.winners {
        let Some(cs) = told.get(user.as_str()) else {
            continue;
        };
        let last = cs.iter().rev().find(|c| c.resolution).or(cs.last());
        match last.map(|c| &c.outcome) {
            Some(Outcome::Won { ticket: t, .. }) if t == ticket => {}
            other => {
                r.figures.final_not_ticket += 1;
                r.fail(format!(
                    "winner {user} of {ticket} was last answered {other:?}"
                ));
            }
        }
    }

    // Bounded undersell: nothing left in leases once the TTL passed.
    r.figures.stranded = view.leased;
    if view.leased != 0 {
        r.fail(format!("{} units still leased after the TTL", view.leased));
    }
    if !view.balanced() {
        r.fail(format!(
            "unbalanced: total {} != available {} + leased {} + pending {} + confirmed {}",
            view.total, view.available, view.leased, view.pending, view.confirmed
        ));
    }

    // Every stream entry reached the order backend.
    if let Some(delivered) = delivered {
        for (t, u) in &view.stream {
            if !delivered.contains(t) {
                r.figures.undelivered += 1;
                r.fail(format!("ticket {t} of {u} never reached the order backend"));
            }
        }
    }
    r
}
