//! All records of one sale read at one instant, for `bigtap sale audit`.

use std::collections::{BTreeMap, BTreeSet};

use ::redis::Value;

use super::record::{parse_winner, ticket_form, StreamEntry, WinnerEntry};
use super::redis::{pairs, stream_entries, text, RedisStore};
use super::StoreError;
use crate::id::{SaleId, UserId};

/// The raw records of one sale: counters, ticket records, winners, leases,
/// the pending-ticket index of older sales, the order stream and the sweep
/// cursor, and the per-warehouse counters and spec (DESIGN §7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaleRecords {
    pub acct: BTreeMap<String, String>,
    /// ticket → record, unparsed (the audit reports unreadable ones), every
    /// record in the `:tickets` form (see `one_form`).
    pub tickets: Vec<(String, String)>,
    /// user → ticket.
    pub winners: BTreeMap<String, String>,
    pub leases: Vec<(String, String)>,
    pub expiry: BTreeSet<String>,
    pub stream: Vec<StreamEntry>,
    /// The sweep cursor: the id of the last stream entry the sweeper has
    /// passed (`None` before the first sweep).
    pub swept: Option<String>,
    /// Per-warehouse counters `<w>:total`, `<w>:sold`, `<w>:conf`.
    pub warehouse_counters: BTreeMap<String, String>,
    /// The warehouse spec (`list`, region orders, default order); empty for
    /// a sale created before warehouses existed.
    pub warehouse_spec: BTreeMap<String, String>,
}

fn bad(what: &str, v: &Value) -> StoreError {
    StoreError::Protocol {
        script: "audit read",
        detail: format!("unexpected {what} reply {v:?}"),
    }
}

impl RedisStore {
    /// Reads every record of `sale` in one MULTI/EXEC block, so the picture
    /// is a single instant (all keys share the sale's slot, so this works
    /// on a cluster too). `None` for an unknown sale. Read-only; it blocks
    /// Redis for as long as the sale is large.
    pub async fn sale_records(&self, sale: &SaleId) -> Result<Option<SaleRecords>, StoreError> {
        let k = self.keys();
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("EXISTS")
            .arg(k.cfg(sale))
            .cmd("HGETALL")
            .arg(k.acct(sale))
            .cmd("HGETALL")
            .arg(k.tickets(sale))
            .cmd("HGETALL")
            .arg(k.winners(sale))
            .cmd("HGETALL")
            .arg(k.leases(sale))
            .cmd("ZRANGE")
            .arg(k.expiry(sale))
            .arg(0)
            .arg(-1)
            .cmd("XRANGE")
            .arg(k.orders(sale))
            .arg("-")
            .arg("+")
            .cmd("GET")
            .arg(k.swept(sale))
            .cmd("HGETALL")
            .arg(k.stockw(sale))
            .cmd("HGETALL")
            .arg(k.wcfg(sale));
        let reply = self.read_pipeline(&pipe).await?;
        // An atomic pipeline answers with the EXEC array as its one item.
        let reply = match &reply[..] {
            [Value::Array(items)] => items.clone(),
            _ => reply,
        };
        let [exists, acct, tickets, winners, leases, expiry, stream, swept, wh, wcfg] = &reply[..]
        else {
            return Err(StoreError::Protocol {
                script: "audit read",
                detail: format!("expected 10 replies, got {}", reply.len()),
            });
        };
        if !matches!(exists, Value::Int(1)) {
            return Ok(None);
        }
        let hash = |what: &str, v: &Value| pairs(v).ok_or_else(|| bad(what, v));
        let expiry = match expiry {
            Value::Array(items) => items.iter().filter_map(text).collect(),
            other => return Err(bad("ZRANGE", other)),
        };
        let (tickets, winners) = one_form(
            hash("HGETALL tickets", tickets)?,
            hash("HGETALL winners", winners)?,
        );
        Ok(Some(SaleRecords {
            acct: hash("HGETALL acct", acct)?.into_iter().collect(),
            tickets,
            winners,
            leases: hash("HGETALL leases", leases)?,
            expiry,
            stream: stream_entries("XRANGE", stream)?,
            swept: match swept {
                Value::Nil => None,
                v => Some(text(v).ok_or_else(|| bad("GET swept", v))?),
            },
            warehouse_counters: hash("HGETALL wh", wh)?.into_iter().collect(),
            warehouse_spec: hash("HGETALL wcfg", wcfg)?.into_iter().collect(),
        }))
    }
}

/// Puts every record in the older two-hash form: a record kept under its
/// user in `:winners` (lua/records.lua) becomes a `:tickets` entry, and the
/// user's winners entry its ticket. Entries that are not records stay as
/// they are, for the audit to name.
fn one_form(
    mut tickets: Vec<(String, String)>,
    winners: Vec<(String, String)>,
) -> (Vec<(String, String)>, BTreeMap<String, String>) {
    let winners = winners
        .into_iter()
        .map(|(user, entry)| {
            let parsed = UserId::parse(&user)
                .ok()
                .and_then(|u| parse_winner(u, &entry));
            match parsed {
                Some(WinnerEntry::Record(rec)) => {
                    let ticket = rec.ticket.as_str().to_owned();
                    tickets.push((ticket.clone(), ticket_form(&rec)));
                    (user, ticket)
                }
                _ => (user, entry),
            }
        })
        .collect();
    (tickets, winners)
}
