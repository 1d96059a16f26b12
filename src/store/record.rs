//! The record formats the scripts write, each parsed here and only here:
//! a win's record (`:winners` hash, or `:tickets` for tickets minted
//! before records moved; `lua/records.lua` says which) and the order-stream
//! entry.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::id::{SaleId, TicketId, UserId, WarehouseId};
use crate::inventory::DEFAULT_WAREHOUSE;
use crate::sale::{Issued, TicketRecord, TicketState};

/// Parses an older ticket's record in `:tickets`,
/// `state:user:issued_at_ms:expires_at_ms[:warehouse]` (state `p`, `c` or
/// `r`); a record written
/// before warehouses existed has none and ships from `default`. Anything
/// else is `None`.
pub fn parse_ticket(ticket: TicketId, rec: &str) -> Option<TicketRecord> {
    let mut it = rec.split(':');
    let state = parse_state(it.next()?)?;
    let user = UserId::parse(it.next()?).ok()?;
    let issued_at_ms = it.next()?.parse().ok()?;
    let expires_at_ms = it.next()?.parse().ok()?;
    let warehouse = WarehouseId::parse(it.next().unwrap_or(DEFAULT_WAREHOUSE)).ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(TicketRecord {
        ticket,
        user,
        state,
        issued_at_ms,
        expires_at_ms,
        warehouse,
    })
}

/// What a user's entry in the winners hash holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinnerEntry {
    /// The win's record itself (tickets `<tag>-<user>`).
    Record(TicketRecord),
    /// The bare ticket of an older win, whose record is in `:tickets`.
    Ticket(TicketId),
}

/// Parses `user`'s winners entry: a record
/// `state:tag:issued_at_ms:expires_at_ms:warehouse` (the ticket is
/// `<tag>-<user>`), or a bare older ticket. Anything else is `None`.
pub fn parse_winner(user: UserId, raw: &str) -> Option<WinnerEntry> {
    let Some((state, rest)) = raw.split_once(':') else {
        return TicketId::parse(raw).ok().map(WinnerEntry::Ticket);
    };
    let mut it = rest.split(':');
    let tag = it.next()?;
    let ticket = TicketId::parse(&format!("{tag}-{user}")).ok()?;
    if ticket.holder().map(|(t, _)| t) != Some(tag) {
        return None;
    }
    let issued_at_ms = it.next()?.parse().ok()?;
    let expires_at_ms = it.next()?.parse().ok()?;
    let warehouse = WarehouseId::parse(it.next()?).ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(WinnerEntry::Record(TicketRecord {
        ticket,
        user,
        state: parse_state(state)?,
        issued_at_ms,
        expires_at_ms,
        warehouse,
    }))
}

/// `rec` in the `:tickets` form `state:user:issued_at_ms:expires_at_ms:warehouse`
/// ([`parse_ticket`] reads it back), so readers of whole sales (the audit)
/// see every record in one form.
pub fn ticket_form(rec: &TicketRecord) -> String {
    let state = match rec.state {
        TicketState::Pending => "p",
        TicketState::Confirmed => "c",
        TicketState::Released => "r",
    };
    format!(
        "{state}:{}:{}:{}:{}",
        rec.user, rec.issued_at_ms, rec.expires_at_ms, rec.warehouse
    )
}

fn parse_state(s: &str) -> Option<TicketState> {
    match s {
        "p" => Some(TicketState::Pending),
        "c" => Some(TicketState::Confirmed),
        "r" => Some(TicketState::Released),
        _ => None,
    }
}

/// One raw stream entry: its id and fields (values that are not UTF-8 are
/// kept lossily, so a damaged entry can still be shown and dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamEntry {
    pub id: String,
    pub fields: BTreeMap<String, String>,
}

impl StreamEntry {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// One winner as the order stream records it (DESIGN §5 fields `ticket`,
/// `sale`, `user`, `issued_at_ms`, `expires_at_ms`; `node` and later
/// additions are bookkeeping, not part of the order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub ticket: TicketId,
    pub sale: SaleId,
    pub user: UserId,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    /// Where the unit ships from (DESIGN §7); `None` for an entry written
    /// before warehouses existed (its unit is of warehouse `default`).
    pub warehouse: Option<WarehouseId>,
}

/// The order backend's JSON body.
#[derive(Serialize)]
struct Body<'a> {
    ticket: &'a str,
    sale: &'a str,
    user: &'a str,
    issued_at_ms: u64,
    expires_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    warehouse: Option<&'a str>,
}

impl Order {
    /// Parses an entry of `sale`'s stream. An entry naming another sale is
    /// malformed: its idempotency key would reach the backend under the
    /// wrong sale. The error says which field is wrong.
    pub fn from_entry(sale: &SaleId, entry: &StreamEntry) -> Result<Order, String> {
        let text = |name: &str| entry.field(name).ok_or(format!("field {name} is missing"));
        let number = |name: &str| -> Result<u64, String> {
            text(name)?
                .parse::<u64>()
                .map_err(|_| format!("field {name} is not a non-negative integer"))
        };
        let ticket = TicketId::parse(text("ticket")?).map_err(|e| format!("ticket: {e}"))?;
        let user = UserId::parse(text("user")?).map_err(|e| format!("user: {e}"))?;
        let named = SaleId::parse(text("sale")?).map_err(|e| format!("sale: {e}"))?;
        if &named != sale {
            return Err(format!("entry names sale {named} in the stream of {sale}"));
        }
        let warehouse = entry
            .field("warehouse")
            .map(WarehouseId::parse)
            .transpose()
            .map_err(|e| format!("warehouse: {e}"))?;
        Ok(Order {
            ticket,
            sale: named,
            user,
            issued_at_ms: number("issued_at_ms")?,
            expires_at_ms: number("expires_at_ms")?,
            warehouse,
        })
    }

    pub fn issued(&self) -> Issued {
        Issued {
            ticket: self.ticket,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }

    /// The body of `POST <sink>` (DESIGN §6):
    /// `{"ticket","sale","user","issued_at_ms","expires_at_ms"}`, plus
    /// `"warehouse"` (DESIGN §7) when the entry names one.
    pub fn to_json(&self) -> Vec<u8> {
        let body = Body {
            ticket: self.ticket.as_str(),
            sale: self.sale.as_str(),
            user: self.user.as_str(),
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            warehouse: self.warehouse.as_ref().map(|w| w.as_str()),
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pairs: &[(&str, &str)]) -> StreamEntry {
        StreamEntry {
            id: "1-0".into(),
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_ticket_record_parses_into_its_parts() {
        let t = TicketId::random();
        let r = parse_ticket(t, "p:alice:100:200").unwrap();
        assert_eq!(r.state, TicketState::Pending);
        assert_eq!(r.user.as_str(), "alice");
        assert_eq!((r.issued_at_ms, r.expires_at_ms), (100, 200));
        assert!(parse_ticket(t, "x:alice:1:2").is_none());
        assert!(parse_ticket(t, "p:alice:1").is_none());
        assert!(parse_ticket(t, "p:alice:1:2:w:x").is_none());
        assert!(parse_ticket(t, "p:alice:1:2:").is_none());
        assert_eq!(r.warehouse.as_str(), "default");
        let r = parse_ticket(t, "c:alice:1:2:berlin-1").unwrap();
        assert_eq!(r.warehouse.as_str(), "berlin-1");
        assert!(parse_ticket(t, "p::1:2").is_none());
    }

    #[test]
    fn a_winners_entry_is_a_record_naming_its_ticket_or_an_older_bare_ticket() {
        let alice = UserId::parse("alice").unwrap();
        let Some(WinnerEntry::Record(r)) =
            parse_winner(alice, "c:0123456789abcdef:100:200:berlin-1")
        else {
            panic!("a record")
        };
        assert_eq!(r.ticket.as_str(), "0123456789abcdef-alice");
        assert_eq!((r.user, r.state), (alice, TicketState::Confirmed));
        assert_eq!((r.issued_at_ms, r.expires_at_ms), (100, 200));
        assert_eq!(r.warehouse.as_str(), "berlin-1");
        assert_eq!(parse_ticket(r.ticket, &ticket_form(&r)), Some(r));
        let old = "00112233445566778899aabbccddeeff";
        assert_eq!(
            parse_winner(alice, old),
            Some(WinnerEntry::Ticket(TicketId::parse(old).unwrap()))
        );
        for bad in [
            "p:0123456789abcdef:1:2",
            "p:0123456789abcdef:1:2:w:x",
            "x:0123456789abcdef:1:2:w",
            "p:0123456789abcde:1:2:w",
            "p:0123456789ABCDEF:1:2:w",
            "p:0123456789abcdef:one:2:w",
            "a.b",
        ] {
            assert_eq!(parse_winner(alice, bad), None, "{bad}");
        }
    }

    #[test]
    fn an_entry_becomes_the_contract_body() {
        let s = SaleId::parse("s1").unwrap();
        let e = entry(&[
            ("ticket", "t1"),
            ("sale", "s1"),
            ("user", "u1"),
            ("issued_at_ms", "10"),
            ("expires_at_ms", "20"),
            ("node", "n1"),
            ("warehouse", "north"),
        ]);
        let o = Order::from_entry(&s, &e).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ticket":"t1","sale":"s1","user":"u1","issued_at_ms":10,"expires_at_ms":20,"warehouse":"north"})
        );
    }

    #[test]
    fn a_malformed_entry_is_refused_with_a_reason() {
        let s = SaleId::parse("s1").unwrap();
        let e = entry(&[("ticket", "t1"), ("sale", "s1"), ("user", "u1")]);
        assert!(Order::from_entry(&s, &e)
            .unwrap_err()
            .contains("issued_at_ms"));
        let e = entry(&[
            ("ticket", "t1"),
            ("sale", "other"),
            ("user", "u1"),
            ("issued_at_ms", "1"),
            ("expires_at_ms", "2"),
        ]);
        assert!(Order::from_entry(&s, &e).unwrap_err().contains("other"));
    }
}
