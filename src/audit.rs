//! `bigtap sale audit`: reconcile one sale's records after the fact.
//!
//! The scripts keep a sale's records consistent by construction; the audit
//! checks that they are, from the outside, the way an operator would after a
//! Redis failover, a restore from backup or a suspected bug. It reads through
//! the store seam ([`RedisStore::sale_records`]: one `MULTI`/`EXEC` block in
//! the sale's slot, so the picture is a single instant, on a single Redis or
//! a cluster alike) the ticket
//! records (`:tickets`), the winners hash (`:winners`), the order stream
//! (`:orders`), the counters (`:acct`), the leases and the pending-ticket
//! index, and optionally a file of ticket ids the order backend received
//! (one per line). It writes nothing.
//!
//! Every discrepancy is listed, not only the first: a ticket without its
//! stream entry (a winner the backend will never hear of), a stream entry
//! without a ticket, a user with two tickets, a counter that disagrees with
//! the records, a delivered id nobody issued, an entry never delivered.
//!
//! The read is one atomic step, so its cost grows with the sale: a sale of
//! a hundred thousand tickets blocks Redis for tens of milliseconds. Run it
//! after the rush, not during it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::id::{SaleId, TicketId};
use crate::sale::TicketState;
use crate::store::record::parse_ticket;
use crate::store::redis::RedisStore;
use crate::store::{SaleRecords, StoreError};

/// Why the audit could not run (as opposed to what it found).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("unknown sale {0}")]
    UnknownSale(String),
    #[error("delivered-ids file {0}: {1}")]
    Delivered(String, #[source] std::io::Error),
}

/// One thing that does not add up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discrepancy {
    /// A ticket record with no entry in the order stream: the order backend
    /// will never hear of this winner.
    TicketWithoutStreamEntry { ticket: String, user: String },
    /// A stream entry whose ticket has no record.
    StreamEntryWithoutTicket { entry: String, ticket: String },
    /// A ticket that appears in several stream entries.
    DuplicateStreamEntry { ticket: String, entries: usize },
    /// A stream entry that names another user than the ticket record.
    StreamUserMismatch {
        ticket: String,
        stream_user: String,
        record_user: String,
    },
    /// A stream entry lacking a contract field.
    MalformedStreamEntry { entry: String },
    /// A user holding more than one ticket record of the sale.
    UserWithSeveralTickets {
        user: String,
        tickets: Vec<String>,
        live: usize,
    },
    /// A winners entry whose ticket has no record, or a record of someone else.
    WinnerWithoutTicket { user: String, ticket: String },
    /// A ticket record that the winners hash does not point to.
    TicketNotInWinners { ticket: String, user: String },
    /// A ticket record that cannot be parsed.
    UnreadableTicket { ticket: String, record: String },
    /// A counter that disagrees with the records it summarises.
    CounterMismatch {
        counter: &'static str,
        counter_value: i64,
        records: i64,
    },
    /// `total != available + leased + pending + confirmed`.
    Unbalanced {
        total: i64,
        available: i64,
        leased: i64,
        pending: i64,
        confirmed: i64,
    },
    /// More units sold than exist.
    Oversold { sold: i64, total: i64 },
    /// A counter below zero.
    NegativeCounter { counter: &'static str, value: i64 },
    /// An entry of the expiry index (of sales admitted before the sweep
    /// cursor) that is not a pending ticket.
    ExpiryIndexMismatch { ticket: String },
    /// A pending ticket the sweeper will never reach: neither in the expiry
    /// index nor with an order-stream entry after the sweep cursor, so it
    /// would never be released at its TTL.
    PendingOutOfSweeperReach { ticket: String },
    /// The order backend received a ticket id that was never issued.
    DeliveredUnknown { ticket: String },
    /// A stream entry the order backend never received.
    NotDelivered { ticket: String, user: String },
    /// A warehouse counter that disagrees with the ticket records.
    WarehouseMismatch {
        warehouse: String,
        counter: &'static str,
        counter_value: i64,
        records: i64,
    },
    /// A warehouse with more units sold than it holds, or a negative count.
    WarehouseOversold {
        warehouse: String,
        total: i64,
        sold: i64,
        confirmed: i64,
    },
    /// The warehouses' totals or unsold units do not add up to the sale's.
    WarehousesUnbalanced {
        what: &'static str,
        warehouses: i64,
        sale: i64,
    },
    /// A ticket whose stream entry names another warehouse, or a warehouse
    /// the sale does not have.
    WarehouseOfTicket { ticket: String, detail: String },
}

impl fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Discrepancy::*;
        match self {
            TicketWithoutStreamEntry { ticket, user } => write!(
                f,
                "ticket {ticket} of user {user} has no entry in the order stream"
            ),
            StreamEntryWithoutTicket { entry, ticket } => write!(
                f,
                "stream entry {entry} names ticket {ticket}, which has no record"
            ),
            DuplicateStreamEntry { ticket, entries } => {
                write!(f, "ticket {ticket} appears in {entries} stream entries")
            }
            StreamUserMismatch {
                ticket,
                stream_user,
                record_user,
            } => write!(
                f,
                "ticket {ticket}: stream says user {stream_user}, record says {record_user}"
            ),
            MalformedStreamEntry { entry } => {
                write!(f, "stream entry {entry} lacks a contract field")
            }
            UserWithSeveralTickets {
                user,
                tickets,
                live,
            } => write!(
                f,
                "user {user} holds {} tickets ({live} live): {}",
                tickets.len(),
                tickets.join(", ")
            ),
            WinnerWithoutTicket { user, ticket } => write!(
                f,
                "winners says user {user} holds ticket {ticket}, but no such ticket record of that user exists"
            ),
            TicketNotInWinners { ticket, user } => write!(
                f,
                "ticket {ticket} of user {user} is not the user's entry in the winners hash"
            ),
            UnreadableTicket { ticket, record } => {
                write!(f, "ticket {ticket} has an unreadable record {record:?}")
            }
            CounterMismatch {
                counter,
                counter_value,
                records,
            } => write!(
                f,
                "counter {counter} is {counter_value} but the records say {records}"
            ),
            Unbalanced {
                total,
                available,
                leased,
                pending,
                confirmed,
            } => write!(
                f,
                "unbalanced: total {total} != available {available} + leased {leased} + pending {pending} + confirmed {confirmed}"
            ),
            Oversold { sold, total } => write!(
                f,
                "oversold: {sold} units pending or confirmed, only {total} exist"
            ),
            NegativeCounter { counter, value } => {
                write!(f, "counter {counter} is negative ({value})")
            }
            ExpiryIndexMismatch { ticket } => write!(
                f,
                "ticket {ticket}: in the expiry index but not pending"
            ),
            PendingOutOfSweeperReach { ticket } => write!(
                f,
                "ticket {ticket}: pending, but neither indexed nor after the sweep cursor; it would never be released"
            ),
            DeliveredUnknown { ticket } => write!(
                f,
                "the order backend received ticket {ticket}, which was never issued"
            ),
            NotDelivered { ticket, user } => write!(
                f,
                "ticket {ticket} of user {user} never reached the order backend"
            ),
            WarehouseMismatch {
                warehouse,
                counter,
                counter_value,
                records,
            } => write!(
                f,
                "warehouse {warehouse}: {counter} is {counter_value} but the records say {records}"
            ),
            WarehouseOversold {
                warehouse,
                total,
                sold,
                confirmed,
            } => write!(
                f,
                "warehouse {warehouse}: {sold} sold ({confirmed} confirmed) of {total} units"
            ),
            WarehousesUnbalanced {
                what,
                warehouses,
                sale,
            } => write!(
                f,
                "warehouses' {what} add up to {warehouses} but the sale says {sale}"
            ),
            WarehouseOfTicket { ticket, detail } => write!(f, "ticket {ticket}: {detail}"),
        }
    }
}

/// What the audit read and found.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub sale: String,
    /// Counters of `:acct` (missing ones read as 0).
    pub total: i64,
    pub available: i64,
    pub leased: i64,
    pub pending: i64,
    pub confirmed: i64,
    pub released: i64,
    pub enqueued: i64,
    /// Ticket records by state.
    pub tickets: usize,
    pub pending_records: usize,
    pub confirmed_records: usize,
    pub released_records: usize,
    pub winners: usize,
    pub stream_entries: usize,
    pub lease_units: i64,
    /// Distinct ids in the delivered file, when one was given.
    pub delivered: Option<usize>,
    pub discrepancies: Vec<Discrepancy>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sale {}", self.sale)?;
        writeln!(
            f,
            "  counters: total {} available {} leased {} pending {} confirmed {} released {} enqueued {}",
            self.total,
            self.available,
            self.leased,
            self.pending,
            self.confirmed,
            self.released,
            self.enqueued
        )?;
        writeln!(
            f,
            "  records: {} tickets ({} pending, {} confirmed, {} released), {} winners, {} stream entries, {} units in leases",
            self.tickets,
            self.pending_records,
            self.confirmed_records,
            self.released_records,
            self.winners,
            self.stream_entries,
            self.lease_units
        )?;
        if let Some(d) = self.delivered {
            writeln!(f, "  delivered: {d} distinct ticket ids")?;
        }
        if self.is_clean() {
            write!(f, "  clean: no discrepancy")
        } else {
            write!(f, "  {} discrepancies:", self.discrepancies.len())?;
            for d in &self.discrepancies {
                write!(f, "\n  - {d}")?;
            }
            Ok(())
        }
    }
}

/// The part of a ticket record the audit compares.
struct Record {
    state: TicketState,
    user: String,
    warehouse: String,
}

/// A ticket record, parsed by the store's one parser.
fn parse_record(ticket: &str, raw: &str) -> Option<Record> {
    let rec = parse_ticket(TicketId::parse(ticket).ok()?, raw)?;
    Some(Record {
        state: rec.state,
        user: rec.user.as_str().to_owned(),
        warehouse: rec.warehouse.as_str().to_owned(),
    })
}

/// Reads a file of delivered ticket ids, one per line (blank lines and
/// surrounding spaces ignored).
/// A stream id `ms-seq` as a pair that orders like the stream.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn read_delivered(path: &Path) -> Result<BTreeSet<String>, AuditError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| AuditError::Delivered(path.display().to_string(), e))?;
    Ok(raw
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Audits sale `sale` in the store at `redis_url` (any URL the store seam
/// takes, cluster included) under key prefix `prefix` (default `bigtap`).
/// Read-only. `delivered` is a file of ticket ids the order backend
/// received, one per line.
pub async fn audit(
    redis_url: &str,
    prefix: &str,
    sale: &SaleId,
    delivered: Option<&Path>,
) -> Result<AuditReport, AuditError> {
    let store = RedisStore::open(redis_url, prefix, AUDIT_TIMEOUT, None)?;
    audit_store(&store, sale, delivered).await
}

/// How long the one atomic read may take: long for a large sale.
pub const AUDIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// [`audit`] on an open store.
pub async fn audit_store(
    store: &RedisStore,
    sale: &SaleId,
    delivered: Option<&Path>,
) -> Result<AuditReport, AuditError> {
    let delivered = delivered.map(read_delivered).transpose()?;
    let records = store
        .sale_records(sale)
        .await?
        .ok_or_else(|| AuditError::UnknownSale(sale.to_string()))?;
    Ok(reconcile(sale, &records, delivered.as_ref()))
}

/// The raw records of one sale, as read (at one instant) by the store.
type Snapshot = SaleRecords;

fn reconcile(sale: &SaleId, s: &Snapshot, delivered: Option<&BTreeSet<String>>) -> AuditReport {
    use Discrepancy::*;
    let mut found = Vec::new();
    let counter =
        |name: &str| -> i64 { s.acct.get(name).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let mut r = AuditReport {
        sale: sale.to_string(),
        total: counter("total"),
        available: counter("avail"),
        leased: counter("leased"),
        pending: counter("pending"),
        confirmed: counter("confirmed"),
        released: counter("released"),
        enqueued: counter("enqueued"),
        winners: s.winners.len(),
        stream_entries: s.stream.len(),
        delivered: delivered.map(BTreeSet::len),
        ..AuditReport::default()
    };

    // Ticket records.
    let mut records: BTreeMap<&str, Record> = BTreeMap::new();
    let mut by_user: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for (ticket, raw) in &s.tickets {
        match parse_record(ticket, raw) {
            Some(rec) => {
                match rec.state {
                    TicketState::Pending => r.pending_records += 1,
                    TicketState::Confirmed => r.confirmed_records += 1,
                    TicketState::Released => r.released_records += 1,
                }
                by_user
                    .entry(rec.user.clone())
                    .or_default()
                    .push((ticket.clone(), rec.state != TicketState::Released));
                records.insert(ticket, rec);
            }
            None => found.push(UnreadableTicket {
                ticket: ticket.clone(),
                record: raw.clone(),
            }),
        }
    }
    r.tickets = s.tickets.len();
    for (user, held) in &by_user {
        if held.len() > 1 {
            found.push(UserWithSeveralTickets {
                user: user.clone(),
                tickets: held.iter().map(|(t, _)| t.clone()).collect(),
                live: held.iter().filter(|(_, live)| *live).count(),
            });
        }
    }

    // Winners hash against the records, both ways.
    for (user, ticket) in &s.winners {
        if records
            .get(ticket.as_str())
            .is_none_or(|rec| rec.user != *user)
        {
            found.push(WinnerWithoutTicket {
                user: user.clone(),
                ticket: ticket.clone(),
            });
        }
    }
    for (ticket, rec) in &records {
        if s.winners.get(&rec.user).map(String::as_str) != Some(*ticket) {
            found.push(TicketNotInWinners {
                ticket: (*ticket).to_owned(),
                user: rec.user.clone(),
            });
        }
    }

    // The stream against the records, both ways.
    let mut in_stream: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &s.stream {
        let (id, fields) = (&e.id, &e.fields);
        let (Some(ticket), Some(user)) = (fields.get("ticket"), fields.get("user")) else {
            found.push(MalformedStreamEntry { entry: id.clone() });
            continue;
        };
        let required = ["sale", "issued_at_ms", "expires_at_ms"];
        if required.iter().any(|f| !fields.contains_key(*f))
            || fields.get("sale").map(String::as_str) != Some(sale.as_str())
        {
            found.push(MalformedStreamEntry { entry: id.clone() });
        }
        *in_stream.entry(ticket).or_default() += 1;
        match records.get(ticket.as_str()) {
            None => found.push(StreamEntryWithoutTicket {
                entry: id.clone(),
                ticket: ticket.clone(),
            }),
            Some(rec) if rec.user != *user => found.push(StreamUserMismatch {
                ticket: ticket.clone(),
                stream_user: user.clone(),
                record_user: rec.user.clone(),
            }),
            Some(_) => {}
        }
    }
    for (ticket, n) in &in_stream {
        if *n > 1 {
            found.push(DuplicateStreamEntry {
                ticket: (*ticket).to_owned(),
                entries: *n,
            });
        }
    }
    for (ticket, rec) in &records {
        if !in_stream.contains_key(ticket) {
            found.push(TicketWithoutStreamEntry {
                ticket: (*ticket).to_owned(),
                user: rec.user.clone(),
            });
        }
    }

    // Every pending ticket within the sweeper's reach: in the index of older
    // sales, or with a stream entry after the sweep cursor (the sweeper
    // walks the stream from there and the trim keeps what it has not
    // passed). A pending ticket out of reach would never be released.
    let cursor = s.swept.as_deref().and_then(stream_id).unwrap_or((0, 0));
    let mut ahead: BTreeSet<&str> = BTreeSet::new();
    for e in &s.stream {
        if stream_id(&e.id).is_some_and(|id| id > cursor) {
            if let Some(ticket) = e.fields.get("ticket") {
                ahead.insert(ticket);
            }
        }
    }
    for (ticket, rec) in &records {
        if rec.state == TicketState::Pending
            && !s.expiry.contains(*ticket)
            && !ahead.contains(*ticket)
        {
            found.push(PendingOutOfSweeperReach {
                ticket: (*ticket).to_owned(),
            });
        }
    }
    // The index of older sales holds pending tickets only (confirm,
    // release and sweep take a ticket out as it settles).
    for ticket in &s.expiry {
        if records
            .get(ticket.as_str())
            .is_none_or(|rec| rec.state != TicketState::Pending)
        {
            found.push(ExpiryIndexMismatch {
                ticket: ticket.clone(),
            });
        }
    }

    // Counters against the records.
    r.lease_units = s
        .leases
        .iter()
        .map(|(_, v)| {
            v.split(':')
                .next()
                .and_then(|u| u.parse::<i64>().ok())
                .unwrap_or(0)
        })
        .sum();
    for (name, value) in [
        ("total", r.total),
        ("avail", r.available),
        ("leased", r.leased),
        ("pending", r.pending),
        ("confirmed", r.confirmed),
        ("released", r.released),
        ("enqueued", r.enqueued),
    ] {
        if value < 0 {
            found.push(NegativeCounter {
                counter: name,
                value,
            });
        }
    }
    let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    for (name, value, records) in [
        ("pending", r.pending, as_i64(r.pending_records)),
        ("confirmed", r.confirmed, as_i64(r.confirmed_records)),
        ("released", r.released, as_i64(r.released_records)),
        ("enqueued", r.enqueued, as_i64(s.stream.len())),
        ("leased", r.leased, r.lease_units),
    ] {
        if value != records {
            found.push(CounterMismatch {
                counter: name,
                counter_value: value,
                records,
            });
        }
    }
    if r.total != r.available + r.leased + r.pending + r.confirmed {
        found.push(Unbalanced {
            total: r.total,
            available: r.available,
            leased: r.leased,
            pending: r.pending,
            confirmed: r.confirmed,
        });
    }
    let sold = (r.pending + r.confirmed).max(as_i64(r.pending_records + r.confirmed_records));
    if sold > r.total {
        found.push(Oversold {
            sold,
            total: r.total,
        });
    }

    warehouses(s, &r, &records, &mut found);

    // The order backend.
    if let Some(delivered) = delivered {
        for ticket in delivered {
            if !records.contains_key(ticket.as_str()) && !in_stream.contains_key(ticket.as_str()) {
                found.push(DeliveredUnknown {
                    ticket: ticket.clone(),
                });
            }
        }
        for e in &s.stream {
            let fields = &e.fields;
            if let Some(ticket) = fields.get("ticket") {
                if !delivered.contains(ticket) {
                    found.push(NotDelivered {
                        ticket: ticket.clone(),
                        user: fields.get("user").cloned().unwrap_or_default(),
                    });
                }
            }
        }
    }

    r.discrepancies = found;
    r
}

/// Per warehouse (DESIGN §7): the counters against the ticket records,
/// each warehouse's own balance, the warehouses against the sale, and each
/// stream entry's warehouse against its ticket's. Skipped for a sale
/// created before warehouses existed (no spec).
fn warehouses(
    s: &Snapshot,
    r: &AuditReport,
    records: &BTreeMap<&str, Record>,
    found: &mut Vec<Discrepancy>,
) {
    use Discrepancy::*;
    let Some(list) = s.warehouse_spec.get("list") else {
        return;
    };
    let list: Vec<&str> = list.split(',').filter(|w| !w.is_empty()).collect();
    let counter = |w: &str, c: &str| -> i64 {
        s.warehouse_counters
            .get(&format!("{w}:{c}"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut held: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (ticket, rec) in records {
        if !list.contains(&rec.warehouse.as_str()) {
            found.push(WarehouseOfTicket {
                ticket: (*ticket).to_owned(),
                detail: format!("ships from {}, which the sale does not have", rec.warehouse),
            });
            continue;
        }
        let e = held.entry(rec.warehouse.as_str()).or_default();
        match rec.state {
            TicketState::Pending => e.0 += 1,
            TicketState::Confirmed => e.1 += 1,
            TicketState::Released => {}
        }
    }
    let (mut sum_total, mut sum_unsold) = (0, 0);
    for w in &list {
        let (total, sold, conf) = (counter(w, "total"), counter(w, "sold"), counter(w, "conf"));
        let (pending_records, confirmed_records) = held.get(w).copied().unwrap_or_default();
        for (name, value, recs) in [
            ("pending", sold - conf, pending_records),
            ("confirmed", conf, confirmed_records),
        ] {
            if value != recs {
                found.push(WarehouseMismatch {
                    warehouse: (*w).to_owned(),
                    counter: name,
                    counter_value: value,
                    records: recs,
                });
            }
        }
        if sold > total || conf < 0 || sold < conf {
            found.push(WarehouseOversold {
                warehouse: (*w).to_owned(),
                total,
                sold,
                confirmed: conf,
            });
        }
        sum_total += total;
        sum_unsold += total - sold;
    }
    for (what, warehouses, sale) in [
        ("totals", sum_total, r.total),
        ("unsold units", sum_unsold, r.available + r.leased),
    ] {
        if warehouses != sale {
            found.push(WarehousesUnbalanced {
                what,
                warehouses,
                sale,
            });
        }
    }
    for e in &s.stream {
        let (Some(ticket), Some(w)) = (e.fields.get("ticket"), e.fields.get("warehouse")) else {
            continue;
        };
        if let Some(rec) = records.get(ticket.as_str()) {
            if rec.warehouse != *w {
                found.push(WarehouseOfTicket {
                    ticket: ticket.clone(),
                    detail: format!(
                        "the stream says warehouse {w}, the record {}",
                        rec.warehouse
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut acct = BTreeMap::new();
        for (k, v) in [
            ("total", "3"),
            ("avail", "1"),
            ("leased", "0"),
            ("pending", "1"),
            ("confirmed", "1"),
            ("released", "1"),
            ("enqueued", "3"),
        ] {
            acct.insert(k.to_owned(), v.to_owned());
        }
        let entry = |id: &str, t: &str, u: &str| {
            let f: BTreeMap<String, String> = [
                ("ticket", t),
                ("sale", "s"),
                ("user", u),
                ("issued_at_ms", "1"),
                ("expires_at_ms", "2"),
                ("node", "n"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            crate::store::StreamEntry {
                id: id.to_owned(),
                fields: f,
            }
        };
        Snapshot {
            acct,
            tickets: vec![
                ("ta".into(), "p:alice:1:2".into()),
                ("tb".into(), "c:bob:1:2".into()),
                ("tc".into(), "r:carol:1:2".into()),
            ],
            winners: [("alice", "ta"), ("bob", "tb"), ("carol", "tc")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            leases: vec![],
            expiry: ["ta".to_owned()].into_iter().collect(),
            stream: vec![
                entry("1-0", "ta", "alice"),
                entry("2-0", "tb", "bob"),
                entry("3-0", "tc", "carol"),
            ],
            swept: None,
            warehouse_counters: BTreeMap::new(),
            warehouse_spec: BTreeMap::new(),
        }
    }

    /// The same sale with warehouses a (2 units: alice's pending ticket,
    /// carol's released one, so one unsold) and b (1 unit: bob's confirmed
    /// ticket).
    fn with_warehouses() -> Snapshot {
        let mut s = snapshot();
        s.tickets = vec![
            ("ta".into(), "p:alice:1:2:a".into()),
            ("tb".into(), "c:bob:1:2:b".into()),
            ("tc".into(), "r:carol:1:2:a".into()),
        ];
        s.warehouse_spec.insert("list".into(), "a,b".into());
        for (k, v) in [
            ("a:total", "2"),
            ("a:sold", "1"),
            ("a:conf", "0"),
            ("b:total", "1"),
            ("b:sold", "1"),
            ("b:conf", "1"),
        ] {
            s.warehouse_counters.insert(k.into(), v.into());
        }
        s.stream[1].fields.insert("warehouse".into(), "b".into());
        s
    }

    #[test]
    fn consistent_warehouses_give_a_clean_report() {
        let r = reconcile(&sale(), &with_warehouses(), None);
        assert!(r.is_clean(), "{r}");
    }

    #[test]
    fn each_kind_of_warehouse_damage_is_named() {
        let mut s = with_warehouses();
        s.warehouse_counters.insert("a:sold".into(), "2".into());
        s.warehouse_counters.insert("b:total".into(), "0".into());
        s.stream[1].fields.insert("warehouse".into(), "a".into());
        s.tickets.push(("td".into(), "r:dave:1:2:zz".into()));
        s.winners.insert("dave".into(), "td".into());
        let text = reconcile(&sale(), &s, None).to_string();
        for needle in [
            "warehouse a: pending is 2 but the records say 1",
            "warehouse b: 1 sold (1 confirmed) of 0 units",
            "warehouses' totals add up to 2 but the sale says 3",
            "warehouses' unsold units add up to -1 but the sale says 1",
            "the stream says warehouse a, the record b",
            "ships from zz",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    fn sale() -> SaleId {
        SaleId::parse("s").unwrap()
    }

    #[test]
    fn a_pending_ticket_after_the_sweep_cursor_is_within_the_sweepers_reach() {
        let mut s = snapshot();
        s.expiry.clear();
        let r = reconcile(&sale(), &s, None);
        assert!(r.is_clean(), "{r}");
        s.swept = Some("0-5".into());
        assert!(reconcile(&sale(), &s, None).is_clean());
    }

    #[test]
    fn a_pending_ticket_the_sweeper_has_passed_is_named() {
        let mut s = snapshot();
        s.expiry.clear();
        s.swept = Some("1-0".into());
        let text = reconcile(&sale(), &s, None).to_string();
        assert!(
            text.contains("ticket ta: pending, but neither indexed nor after the sweep cursor"),
            "{text}"
        );
    }

    #[test]
    fn an_index_entry_that_is_not_pending_is_named() {
        let mut s = snapshot();
        s.expiry.insert("tb".into());
        let text = reconcile(&sale(), &s, None).to_string();
        assert!(
            text.contains("ticket tb: in the expiry index but not pending"),
            "{text}"
        );
    }

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(stream_id("10-0") > stream_id("9-99"));
        assert!(stream_id("10-2") > stream_id("10-1"));
        assert_eq!(stream_id("bad"), None);
    }

    #[test]
    fn consistent_records_give_a_clean_report() {
        let r = reconcile(&sale(), &snapshot(), None);
        assert!(r.is_clean(), "{r}");
        assert!(r.to_string().contains("clean"));
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let mut s = snapshot();
        s.stream.remove(0); // alice's entry lost
        s.tickets.push(("td".into(), "p:bob:1:2".into())); // bob's second ticket
        s.acct.insert("pending".into(), "5".into());
        let delivered: BTreeSet<String> = ["tb", "zz"].into_iter().map(str::to_owned).collect();
        let r = reconcile(&sale(), &s, Some(&delivered));
        let text = r.to_string();
        for needle in [
            "ticket ta of user alice has no entry in the order stream",
            "user bob holds 2 tickets",
            "counter pending is 5",
            "unbalanced",
            "oversold",
            "received ticket zz",
            "ticket tc of user carol never reached",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
