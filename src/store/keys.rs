//! Every Redis key bigtap uses, named in one place (DESIGN §5).
//!
//! Keys of sale S under prefix P all carry the hash tag `{S}`, so every
//! script and every multi-key command of one sale runs in one Redis Cluster
//! slot. The only key outside a sale is `P:sales`, the set of sale ids,
//! which is written and read on its own.

use crate::id::SaleId;

/// The consumer group every order consumer joins (contract).
pub const GROUP: &str = "orders";

/// Key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The set of sale ids (`P:sales`).
    pub fn sales(&self) -> String {
        format!("{}:sales", self.prefix)
    }

    fn sale_key(&self, sale: &SaleId, suffix: &str) -> String {
        format!("{}:{{{}}}:{}", self.prefix, sale, suffix)
    }

    /// Sale settings (hash).
    pub fn cfg(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "cfg")
    }
    /// Per-warehouse counters: `<w>:total`, `<w>:sold` (pending or
    /// confirmed), `<w>:conf` (confirmed).
    pub fn stockw(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "wh")
    }

    /// Journal of moves of units out of this sale (`bigtap sale move`):
    /// move id -> "state:to_sale:units:warehouse", state out|done|undone.
    pub fn moves_out(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "moves:out")
    }

    /// Moves credited to this sale: move id -> "from_sale:units:warehouse",
    /// so a credit is applied once however often it is sent.
    pub fn moves_in(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "moves:in")
    }

    /// The warehouse spec: `list`, `r:<region>`, `default_order`.
    pub fn wcfg(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "wcfg")
    }

    /// Counters: total, avail, leased, pending, confirmed, released, enqueued, epoch.
    pub fn acct(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "acct")
    }
    /// Node leases: node → `units:expires_at_ms:epoch`.
    pub fn leases(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "leases")
    }
    /// user → ticket.
    pub fn winners(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "winners")
    }
    /// ticket → record (see [`super::record`]).
    pub fn tickets(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "tickets")
    }
    /// Pending tickets by expiry (sorted set), of sales admitted before the
    /// sweep cursor existed. `admit` no longer writes it (the order stream
    /// is in issue order and the sweeper walks it); `sweep` drains what is
    /// left, and `confirm` and `release` still take their ticket out.
    pub fn expiry(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "expiry")
    }
    /// The sweep cursor (string): the id of the last order-stream entry the
    /// sweeper has passed. Every pending ticket after it is still to be
    /// judged; the consumer's trim never removes an entry after it.
    pub fn swept(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "swept")
    }
    /// Present while the last lease reclaim scan's interval runs.
    pub fn reclaimed(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "reclaimed")
    }
    /// The eligibility list (set).
    pub fn eligible(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "eligible")
    }
    /// The order stream (contract).
    pub fn orders(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "orders")
    }
    /// The winners digest (string): 8 bytes per win, appended by `admit` in
    /// the order wins are counted, so a node learns every winner by reading
    /// bytes from an offset instead of every stream entry.
    pub fn digests(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "digests")
    }
    /// The dead-letter stream.
    pub fn dead(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "orders:dead")
    }
    /// Failed-attempt counters of pending order entries (entry id →
    /// attempts). Kept in Redis rather than in memory so a consumer that
    /// takes over an entry continues the count of the one that died.
    pub fn attempts(&self, sale: &SaleId) -> String {
        self.sale_key(sale, "orders:attempts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_sale_carries_its_hash_tag() {
        let k = Keys::new("bigtap");
        let s = SaleId::parse("s1").unwrap();
        assert_eq!(k.sales(), "bigtap:sales");
        for key in [
            k.cfg(&s),
            k.acct(&s),
            k.leases(&s),
            k.winners(&s),
            k.tickets(&s),
            k.expiry(&s),
            k.swept(&s),
            k.reclaimed(&s),
            k.eligible(&s),
            k.orders(&s),
            k.digests(&s),
            k.dead(&s),
            k.attempts(&s),
        ] {
            assert!(key.starts_with("bigtap:{s1}:"), "{key}");
        }
        assert_eq!(k.orders(&s), "bigtap:{s1}:orders");
        assert_eq!(k.dead(&s), "bigtap:{s1}:orders:dead");
        assert_eq!(k.attempts(&s), "bigtap:{s1}:orders:attempts");
    }
}
