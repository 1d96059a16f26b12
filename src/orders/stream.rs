//! The order stream's data: key names and the entry format (DESIGN §5).
//!
//! The admission script appends one entry per winner to `P:{S}:orders` with
//! the fields `ticket`, `sale`, `user`, `issued_at_ms`, `expires_at_ms`,
//! `node`. This module turns such an entry into an [`Order`], and an order
//! into the JSON body the sink receives. An entry that does not parse can
//! never be delivered; the consumer dead-letters it at once instead of
//! retrying it.
//!
//! Every key of a sale carries the hash tag `{S}`, so the scripts that touch
//! the stream, its dead-letter stream and its attempt counters run on one
//! Redis Cluster slot.

use std::collections::HashMap;

use redis::Value;
use serde::Serialize;

use crate::id::{SaleId, TicketId, UserId};

/// The consumer group every `bigtap orders` process joins (contract).
pub const GROUP: &str = "orders";

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The set of sale ids (`P:sales`).
    pub fn sales(&self) -> String {
        format!("{}:sales", self.prefix)
    }

    /// The order stream of a sale (`P:{S}:orders`).
    pub fn orders(&self, sale: &SaleId) -> String {
        format!("{}:{{{}}}:orders", self.prefix, sale)
    }

    /// The dead-letter stream of a sale (`P:{S}:orders:dead`).
    pub fn dead(&self, sale: &SaleId) -> String {
        format!("{}:{{{}}}:orders:dead", self.prefix, sale)
    }

    /// Failed-attempt counters of a sale's pending entries
    /// (`P:{S}:orders:attempts`, entry id → attempts). Kept in Redis rather
    /// than in memory so a consumer that takes over an entry continues the
    /// count of the one that died instead of starting again at zero.
    pub fn attempts(&self, sale: &SaleId) -> String {
        format!("{}:{{{}}}:orders:attempts", self.prefix, sale)
    }
}

/// One winner, as the order backend receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub ticket: TicketId,
    pub sale: SaleId,
    pub user: UserId,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

/// The sink's JSON body. `node` stays out: it is bigtap's bookkeeping, not
/// part of the order.
#[derive(Serialize)]
struct Body<'a> {
    ticket: &'a str,
    sale: &'a str,
    user: &'a str,
    issued_at_ms: u64,
    expires_at_ms: u64,
}

impl Order {
    /// The body of `POST <sink>`:
    /// `{"ticket","sale","user","issued_at_ms","expires_at_ms"}`.
    pub fn to_json(&self) -> Vec<u8> {
        let body = Body {
            ticket: self.ticket.as_str(),
            sale: self.sale.as_str(),
            user: self.user.as_str(),
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// Parses a stream entry's fields. `sale` is the stream's sale: an entry
    /// that names another sale is malformed, because its idempotency key
    /// would then be delivered under the wrong sale.
    pub fn from_fields(sale: &SaleId, fields: &HashMap<String, Value>) -> Result<Order, String> {
        let text = |name: &str| -> Result<String, String> {
            match fields.get(name) {
                Some(v) => redis::from_redis_value_ref::<String>(v)
                    .map_err(|_| format!("field {name} is not text")),
                None => Err(format!("field {name} is missing")),
            }
        };
        let number = |name: &str| -> Result<u64, String> {
            text(name)?
                .parse::<u64>()
                .map_err(|_| format!("field {name} is not a non-negative integer"))
        };
        let ticket = TicketId::parse(&text("ticket")?).map_err(|e| format!("ticket: {e}"))?;
        let user = UserId::parse(&text("user")?).map_err(|e| format!("user: {e}"))?;
        let named = SaleId::parse(&text("sale")?).map_err(|e| format!("sale: {e}"))?;
        if &named != sale {
            return Err(format!("entry names sale {named} in the stream of {sale}"));
        }
        Ok(Order {
            ticket,
            sale: named,
            user,
            issued_at_ms: number("issued_at_ms")?,
            expires_at_ms: number("expires_at_ms")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::BulkString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn keys_carry_the_sale_hash_tag() {
        let k = Keys::new("bigtap");
        let s = SaleId::parse("s1").unwrap();
        assert_eq!(k.sales(), "bigtap:sales");
        assert_eq!(k.orders(&s), "bigtap:{s1}:orders");
        assert_eq!(k.dead(&s), "bigtap:{s1}:orders:dead");
        assert_eq!(k.attempts(&s), "bigtap:{s1}:orders:attempts");
    }

    #[test]
    fn an_entry_becomes_the_contract_body() {
        let s = SaleId::parse("s1").unwrap();
        let f = fields(&[
            ("ticket", "t1"),
            ("sale", "s1"),
            ("user", "u1"),
            ("issued_at_ms", "10"),
            ("expires_at_ms", "20"),
            ("node", "n1"),
        ]);
        let o = Order::from_fields(&s, &f).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ticket":"t1","sale":"s1","user":"u1","issued_at_ms":10,"expires_at_ms":20})
        );
    }

    #[test]
    fn a_malformed_entry_is_refused_with_a_reason() {
        let s = SaleId::parse("s1").unwrap();
        let f = fields(&[("ticket", "t1"), ("sale", "s1"), ("user", "u1")]);
        assert!(Order::from_fields(&s, &f)
            .unwrap_err()
            .contains("issued_at_ms"));
        let f = fields(&[
            ("ticket", "t1"),
            ("sale", "other"),
            ("user", "u1"),
            ("issued_at_ms", "1"),
            ("expires_at_ms", "2"),
        ]);
        assert!(Order::from_fields(&s, &f).unwrap_err().contains("other"));
    }
}
