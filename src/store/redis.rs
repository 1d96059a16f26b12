//! [`Store`] on Redis: one Lua script per state change.
//!
//! Keys of sale S (prefix P, default `bigtap`), all in S's hash slot:
//! `P:{S}:cfg`, `:acct`, `:leases`, `:winners`, `:tickets`, `:expiry`,
//! `:eligible`, `:orders` (the contract stream). `P:sales` lists the sales;
//! it is written before a sale's own keys, so a sale is never invisible.
//!
//! A URL of scheme `redis+cluster://` (or `rediss+cluster://`) names a seed
//! node of a Redis Cluster (MemoryDB, ElastiCache cluster mode); every
//! script touches one sale's keys, all in one slot, so each call routes to
//! one shard unchanged.
//!
//! Calls go through one auto-reconnecting multiplexed connection with a
//! bounded wait: while Redis is away, calls fail fast with
//! [`StoreError::Timeout`] or [`StoreError::Io`], and the connection comes
//! back by itself. Scripts are invoked by SHA and reloaded transparently
//! after a Redis restart (NOSCRIPT).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, RedisResult, Script, Value};
use async_trait::async_trait;

use super::*;
use crate::metrics::Metrics;

/// Index of each operation in [`crate::metrics::STORE_OPS`].
#[derive(Clone, Copy)]
enum Op {
    Lease = 0,
    Admit,
    Renew,
    Return,
    Reclaim,
    Confirm,
    Release,
    Sweep,
    PutSale,
    AddStock,
    AddEligible,
    Close,
    Account,
    Command,
    ReadOrders,
    Ping,
}

impl Op {
    fn name(self) -> &'static str {
        crate::metrics::STORE_OPS[self as usize]
    }
}

struct Scripts {
    lease: Script,
    admit: Script,
    renew: Script,
    ret: Script,
    reclaim: Script,
    confirm: Script,
    release: Script,
    sweep: Script,
    put_sale: Script,
    add_stock: Script,
    add_eligible: Script,
    close: Script,
    account: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            lease: Script::new(include_str!("../../lua/lease.lua")),
            admit: Script::new(include_str!("../../lua/admit.lua")),
            renew: Script::new(include_str!("../../lua/renew.lua")),
            ret: Script::new(include_str!("../../lua/return.lua")),
            reclaim: Script::new(include_str!("../../lua/reclaim.lua")),
            confirm: Script::new(include_str!("../../lua/confirm.lua")),
            release: Script::new(include_str!("../../lua/release.lua")),
            sweep: Script::new(include_str!("../../lua/sweep.lua")),
            put_sale: Script::new(include_str!("../../lua/put_sale.lua")),
            add_stock: Script::new(include_str!("../../lua/add_stock.lua")),
            add_eligible: Script::new(include_str!("../../lua/add_eligible.lua")),
            close: Script::new(include_str!("../../lua/close.lua")),
            account: Script::new(include_str!("../../lua/account.lua")),
        }
    }

    fn all(&self) -> [&Script; 13] {
        [
            &self.lease,
            &self.admit,
            &self.renew,
            &self.ret,
            &self.reclaim,
            &self.confirm,
            &self.release,
            &self.sweep,
            &self.put_sale,
            &self.add_stock,
            &self.add_eligible,
            &self.close,
            &self.account,
        ]
    }
}

/// A connection to one Redis or to a Redis Cluster.
#[derive(Clone)]
enum Con {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Con::Single(c) => c.req_packed_command(cmd),
            Con::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Con::Single(c) => c.req_packed_commands(cmd, offset, count),
            Con::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Single(c) => c.get_db(),
            Con::Cluster(c) => c.get_db(),
        }
    }
}

/// The seed URL of a cluster URL (`redis+cluster://h:p` → `redis://h:p`).
fn cluster_seed(url: &str) -> Option<String> {
    ["redis", "rediss"].iter().find_map(|scheme| {
        url.strip_prefix(&format!("{scheme}+cluster://"))
            .map(|rest| format!("{scheme}://{rest}"))
    })
}

/// The Redis implementation of [`Store`].
#[derive(Clone)]
pub struct RedisStore {
    con: Con,
    scripts: Arc<Scripts>,
    prefix: Arc<str>,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl RedisStore {
    /// Connects lazily: the first call (or [`RedisStore::wait_ready`]) dials.
    /// Must be called within a Tokio runtime.
    pub fn open(
        url: &str,
        prefix: &str,
        timeout: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, StoreError> {
        let con = match cluster_seed(url) {
            Some(seed) => {
                let client = ClusterClient::builder([seed])
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .build()?;
                Con::Cluster(client.get_pending_async_connection_with_config(ClusterConfig::new()))
            }
            None => {
                let client = ::redis::Client::open(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Con::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
        };
        Ok(RedisStore {
            con,
            scripts: Arc::new(Scripts::new()),
            prefix: prefix.into(),
            timeout,
            metrics,
        })
    }

    /// Waits until Redis answers and has the scripts loaded, or `limit` passes.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.load_scripts().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// SCRIPT LOAD of every script, so the first buyer does not pay for it.
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        for s in self.scripts.all() {
            let mut con = self.con.clone();
            self.timed(Op::Command, async move { s.load_async(&mut con).await })
                .await?;
        }
        Ok(())
    }

    fn key(&self, sale: &SaleId, suffix: &str) -> String {
        format!("{}:{{{}}}:{}", self.prefix, sale, suffix)
    }

    fn sales_key(&self) -> String {
        format!("{}:sales", self.prefix)
    }

    async fn timed<T>(
        &self,
        op: Op,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let r = tokio::time::timeout(self.timeout, fut).await;
        let failed = !matches!(r, Ok(Ok(_)));
        if let Some(m) = &self.metrics {
            m.store_latency[op as usize].record(start.elapsed().as_secs_f64());
            if failed {
                m.store_errors[op as usize].increment(1);
            }
        }
        match r {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(StoreError::Io(e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Runs `script` with `keys` and `args`, returning the reply's items.
    async fn eval(
        &self,
        op: Op,
        script: &Script,
        keys: &[String],
        args: &[A<'_>],
    ) -> Result<Vec<Value>, StoreError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            match *a {
                A::S(v) => inv.arg(v),
                A::U(v) => inv.arg(v),
                A::I(v) => inv.arg(v),
            };
        }
        let mut con = self.con.clone();
        let v: Value = self
            .timed(op, async { inv.invoke_async(&mut con).await })
            .await?;
        Ok(into_items(v))
    }

    fn refusal(op: Op, status: &str) -> Result<Refusal, StoreError> {
        match status {
            "unknown_sale" => Ok(Refusal::UnknownSale),
            "not_started" => Ok(Refusal::NotStarted),
            "ended" => Ok(Refusal::Ended),
            "closed" => Ok(Refusal::Closed),
            other => Err(protocol(op, format!("unknown status {other:?}"))),
        }
    }

    /// One page of `SSCAN`/`HSCAN` over `key`: the next cursor and the
    /// flat list of members (or field/value pairs).
    async fn scan_page(
        &self,
        command: &'static str,
        key: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let mut con = self.con.clone();
        self.timed(Op::Command, async {
            ::redis::cmd(command)
                .arg(key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
        })
        .await
    }

    fn sale_keys(&self, sale: &SaleId, names: &[&str]) -> Vec<String> {
        names.iter().map(|n| self.key(sale, n)).collect()
    }
}

/// A script reply as a list of items (a bare value becomes a list of one).
fn into_items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// A script argument.
#[derive(Clone, Copy)]
enum A<'a> {
    S(&'a str),
    U(u64),
    I(i64),
}

fn protocol(op: Op, detail: String) -> StoreError {
    StoreError::Protocol {
        script: op.name(),
        detail,
    }
}

/// Reads a script reply item by item, with errors naming the script.
struct Reply<'a> {
    op: Op,
    items: &'a [Value],
    pos: usize,
}

impl<'a> Reply<'a> {
    fn new(op: Op, items: &'a [Value]) -> Self {
        Reply { op, items, pos: 0 }
    }

    fn next(&mut self) -> Result<&'a Value, StoreError> {
        let v = self.items.get(self.pos).ok_or_else(|| {
            protocol(
                self.op,
                format!("reply too short ({} items)", self.items.len()),
            )
        })?;
        self.pos += 1;
        Ok(v)
    }

    fn str(&mut self) -> Result<&'a str, StoreError> {
        let op = self.op;
        match self.next()? {
            Value::BulkString(b) => {
                std::str::from_utf8(b).map_err(|_| protocol(op, "non-UTF-8 string".into()))
            }
            Value::SimpleString(s) => Ok(s),
            other => Err(protocol(op, format!("expected a string, got {other:?}"))),
        }
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let op = self.op;
        match self.next()? {
            Value::Int(n) if *n >= 0 => Ok(*n as u64),
            Value::BulkString(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| protocol(op, "expected a number".into())),
            other => Err(protocol(
                op,
                format!("expected a non-negative integer, got {other:?}"),
            )),
        }
    }

    fn ticket(&mut self) -> Result<TicketId, StoreError> {
        let op = self.op;
        let s = self.str()?;
        TicketId::parse(s).map_err(|_| protocol(op, format!("bad ticket id {s:?}")))
    }
}

/// Parses a ticket record `state:user:issued:expires`.
fn parse_record(ticket: TicketId, rec: &str) -> Option<TicketRecord> {
    let mut it = rec.split(':');
    let state = match it.next()? {
        "p" => TicketState::Pending,
        "c" => TicketState::Confirmed,
        "r" => TicketState::Released,
        _ => return None,
    };
    let user = UserId::parse(it.next()?).ok()?;
    let issued_at_ms = it.next()?.parse().ok()?;
    let expires_at_ms = it.next()?.parse().ok()?;
    Some(TicketRecord {
        ticket,
        user,
        state,
        issued_at_ms,
        expires_at_ms,
    })
}

fn transition(op: Op, items: &[Value]) -> Result<Transition, StoreError> {
    let mut r = Reply::new(op, items);
    let state = match r.str()? {
        "unknown" => return Ok(None),
        "confirmed" => TicketState::Confirmed,
        "released" => TicketState::Released,
        other => return Err(protocol(op, format!("unknown state {other:?}"))),
    };
    Ok(Some((state, r.u64()? == 1)))
}

fn bulk_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// Parses one stream entry `[id, [field, value, ...]]`.
/// The id of a stream entry, whatever its fields.
fn entry_id(v: &Value) -> Option<&str> {
    let Value::Array(parts) = v else { return None };
    bulk_str(parts.first()?)
}

fn parse_entry(v: &Value) -> Option<OrderEntry> {
    let Value::Array(parts) = v else { return None };
    let id = bulk_str(parts.first()?)?.to_owned();
    let Value::Array(fv) = parts.get(1)? else {
        return None;
    };
    let mut fields: HashMap<&str, &str> = HashMap::with_capacity(8);
    for pair in fv.chunks(2) {
        if let [f, v] = pair {
            fields.insert(bulk_str(f)?, bulk_str(v)?);
        }
    }
    Some(OrderEntry {
        id,
        user: UserId::parse(fields.get("user")?).ok()?,
        issued: Issued {
            ticket: TicketId::parse(fields.get("ticket")?).ok()?,
            issued_at_ms: fields.get("issued_at_ms")?.parse().ok()?,
            expires_at_ms: fields.get("expires_at_ms")?.parse().ok()?,
        },
    })
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let pong: String = self
            .timed(Op::Ping, async {
                ::redis::cmd("PING").query_async(&mut con).await
            })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(protocol(Op::Ping, pong))
        }
    }

    async fn safety(&self) -> Result<SafetyReport, StoreError> {
        let mut report = SafetyReport::default();
        for (name, slot) in [
            ("maxmemory-policy", &mut report.maxmemory_policy),
            ("appendonly", &mut report.appendonly),
            ("appendfsync", &mut report.appendfsync),
        ] {
            let mut con = self.con.clone();
            let r: Result<HashMap<String, String>, _> = self
                .timed(Op::Command, async {
                    ::redis::cmd("CONFIG")
                        .arg("GET")
                        .arg(name)
                        .query_async(&mut con)
                        .await
                })
                .await;
            // A refused CONFIG GET (managed stores) leaves the field unknown.
            *slot = r.ok().and_then(|m| m.get(name).cloned());
        }
        Ok(report)
    }

    async fn sales(&self) -> Result<Vec<SaleId>, StoreError> {
        let mut con = self.con.clone();
        let key = self.sales_key();
        let names: Vec<String> = self
            .timed(Op::Command, async {
                ::redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        Ok(names.iter().filter_map(|n| SaleId::parse(n).ok()).collect())
    }

    async fn put_sale(&self, sale: &SaleId, spec: &SaleSpec) -> Result<PutOutcome, StoreError> {
        // Listed first: a crash between the two leaves a listed sale without
        // keys (harmless, skipped by readers), never a sale nobody can find.
        let mut con = self.con.clone();
        let key = self.sales_key();
        let _: i64 = self
            .timed(Op::Command, async {
                ::redis::cmd("SADD")
                    .arg(&key)
                    .arg(sale.as_str())
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let stock: i64 = spec.stock.map(|s| s as i64).unwrap_or(-1);
        let items = self
            .eval(
                Op::PutSale,
                &self.scripts.put_sale,
                &self.sale_keys(sale, &["cfg", "acct"]),
                &[
                    A::I(stock),
                    A::U(spec.starts_at_ms),
                    A::U(spec.ends_at_ms),
                    A::U(spec.ticket_ttl_ms),
                    A::S(spec.eligibility.as_str()),
                ],
            )
            .await?;
        match Reply::new(Op::PutSale, &items).str()? {
            "created" => Ok(PutOutcome::Created),
            "updated" => Ok(PutOutcome::Updated),
            "stock_required" => Ok(PutOutcome::StockRequired),
            other => Err(protocol(Op::PutSale, format!("unknown status {other:?}"))),
        }
    }

    async fn add_stock(&self, sale: &SaleId, delta: i64) -> Result<StockChange, StoreError> {
        let items = self
            .eval(
                Op::AddStock,
                &self.scripts.add_stock,
                &self.sale_keys(sale, &["cfg", "acct"]),
                &[A::I(delta)],
            )
            .await?;
        let mut r = Reply::new(Op::AddStock, &items);
        match r.str()? {
            "unknown_sale" => Ok(StockChange::UnknownSale),
            "ok" => Ok(StockChange::Changed {
                total: r.u64()?,
                available: r.u64()?,
            }),
            "insufficient" => Ok(StockChange::Insufficient {
                total: r.u64()?,
                available: r.u64()?,
            }),
            other => Err(protocol(Op::AddStock, format!("unknown status {other:?}"))),
        }
    }

    async fn add_eligible(
        &self,
        sale: &SaleId,
        users: &[UserId],
    ) -> Result<Option<u64>, StoreError> {
        let mut added = 0;
        // Chunks keep one script call short; each chunk is atomic on its own
        // and adding is idempotent, so a retry after a failure is safe.
        for chunk in users.chunks(1000) {
            let names: Vec<&str> = chunk.iter().map(|u| u.as_str()).collect();
            let mut inv = self.scripts.add_eligible.prepare_invoke();
            inv.key(self.key(sale, "cfg"))
                .key(self.key(sale, "eligible"));
            inv.arg(&names);
            let mut con = self.con.clone();
            let v: Value = self
                .timed(Op::AddEligible, async { inv.invoke_async(&mut con).await })
                .await?;
            let items = into_items(v);
            let mut r = Reply::new(Op::AddEligible, &items);
            match r.str()? {
                "unknown_sale" => return Ok(None),
                "ok" => added += r.u64()?,
                other => {
                    return Err(protocol(
                        Op::AddEligible,
                        format!("unknown status {other:?}"),
                    ))
                }
            }
        }
        Ok(Some(added))
    }

    async fn close(&self, sale: &SaleId) -> Result<bool, StoreError> {
        let items = self
            .eval(
                Op::Close,
                &self.scripts.close,
                &self.sale_keys(sale, &["cfg"]),
                &[],
            )
            .await?;
        Ok(Reply::new(Op::Close, &items).str()? == "ok")
    }

    async fn snapshot(&self, sale: &SaleId) -> Result<Option<Snapshot>, StoreError> {
        let items = self
            .eval(
                Op::Account,
                &self.scripts.account,
                &self.sale_keys(sale, &["cfg", "acct", "leases", "expiry"]),
                &[],
            )
            .await?;
        let mut r = Reply::new(Op::Account, &items);
        if r.str()? == "unknown_sale" {
            return Ok(None);
        }
        Ok(Some(Snapshot {
            now_ms: r.u64()?,
            starts_at_ms: r.u64()?,
            ends_at_ms: r.u64()?,
            closed: r.u64()? == 1,
            ticket_ttl_ms: r.u64()?,
            list_only: r.str()? == "list",
            eligibility_version: r.u64()?,
            stock_total: r.u64()?,
            available: r.u64()?,
            leased: r.u64()?,
            pending: r.u64()?,
            confirmed: r.u64()?,
            released_total: r.u64()?,
            orders_enqueued: r.u64()?,
            balanced: r.u64()? == 1,
        }))
    }

    async fn eligible_users(&self, sale: &SaleId) -> Result<Vec<UserId>, StoreError> {
        let key = self.key(sale, "eligible");
        let mut cursor: u64 = 0;
        let mut users = Vec::new();
        loop {
            let (next, batch) = self.scan_page("SSCAN", &key, cursor).await?;
            users.extend(batch.iter().filter_map(|u| UserId::parse(u).ok()));
            if next == 0 {
                return Ok(users);
            }
            cursor = next;
        }
    }

    async fn lease(
        &self,
        sale: &SaleId,
        node: &str,
        want: u64,
        ttl_ms: u64,
    ) -> Result<LeaseReply, StoreError> {
        let items = self
            .eval(
                Op::Lease,
                &self.scripts.lease,
                &self.sale_keys(sale, &["cfg", "acct", "leases"]),
                &[A::S(node), A::U(want), A::U(ttl_ms)],
            )
            .await?;
        let mut r = Reply::new(Op::Lease, &items);
        match r.str()? {
            "ok" => Ok(LeaseReply::Granted {
                granted: r.u64()?,
                epoch: r.u64()?,
                lease_units: r.u64()?,
                expires_at_ms: r.u64()?,
                available: r.u64()?,
                leased: r.u64()?,
                orders_enqueued: r.u64()?,
            }),
            other => Ok(LeaseReply::Refused(Self::refusal(Op::Lease, other)?)),
        }
    }

    async fn renew(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        ttl_ms: u64,
    ) -> Result<RenewReply, StoreError> {
        let items = self
            .eval(
                Op::Renew,
                &self.scripts.renew,
                &self.sale_keys(sale, &["leases"]),
                &[A::S(node), A::U(epoch), A::U(ttl_ms)],
            )
            .await?;
        let mut r = Reply::new(Op::Renew, &items);
        match r.str()? {
            "ok" => Ok(RenewReply::Renewed {
                lease_units: r.u64()?,
                expires_at_ms: r.u64()?,
            }),
            "fenced" => Ok(RenewReply::Fenced),
            other => Err(protocol(Op::Renew, format!("unknown status {other:?}"))),
        }
    }

    async fn return_lease(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
    ) -> Result<ReturnReply, StoreError> {
        let items = self
            .eval(
                Op::Return,
                &self.scripts.ret,
                &self.sale_keys(sale, &["acct", "leases"]),
                &[A::S(node), A::U(epoch)],
            )
            .await?;
        let mut r = Reply::new(Op::Return, &items);
        match r.str()? {
            "ok" => Ok(ReturnReply::Returned(r.u64()?)),
            "fenced" => Ok(ReturnReply::Fenced),
            other => Err(protocol(Op::Return, format!("unknown status {other:?}"))),
        }
    }

    async fn reclaim(&self, sale: &SaleId) -> Result<(u64, u64), StoreError> {
        let items = self
            .eval(
                Op::Reclaim,
                &self.scripts.reclaim,
                &self.sale_keys(sale, &["acct", "leases"]),
                &[],
            )
            .await?;
        let mut r = Reply::new(Op::Reclaim, &items);
        Ok((r.u64()?, r.u64()?))
    }

    async fn admit(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        batch: &[Candidate],
    ) -> Result<AdmitReply, StoreError> {
        let mut inv = self.scripts.admit.prepare_invoke();
        for k in self.sale_keys(
            sale,
            &[
                "cfg", "acct", "leases", "winners", "tickets", "expiry", "eligible", "orders",
            ],
        ) {
            inv.key(k);
        }
        inv.arg(sale.as_str()).arg(node).arg(epoch).arg(batch.len());
        for c in batch {
            inv.arg(c.user.as_str()).arg(c.ticket.as_str());
        }
        let mut con = self.con.clone();
        let v: Value = self
            .timed(Op::Admit, async { inv.invoke_async(&mut con).await })
            .await?;
        let items = into_items(v);
        let mut r = Reply::new(Op::Admit, &items);
        let status = r.str()?;
        if status != "ok" {
            return Ok(AdmitReply::Refused(Self::refusal(Op::Admit, status)?));
        }
        let lease_units_left = r.u64()?;
        let mut verdicts = Vec::with_capacity(batch.len());
        for _ in batch {
            let code = r.str()?;
            let verdict = match code {
                "won" | "replay" => {
                    let issued = Issued {
                        ticket: r.ticket()?,
                        issued_at_ms: r.u64()?,
                        expires_at_ms: r.u64()?,
                    };
                    if code == "won" {
                        Verdict::Won(issued)
                    } else {
                        Verdict::Replay(issued)
                    }
                }
                other => {
                    let v = match other {
                        "not_eligible" => Verdict::NotEligible,
                        "fenced" => Verdict::Fenced,
                        "no_units" => Verdict::NoUnits,
                        _ => return Err(protocol(Op::Admit, format!("unknown verdict {other:?}"))),
                    };
                    r.pos += 3;
                    v
                }
            };
            verdicts.push(verdict);
        }
        Ok(AdmitReply::Judged {
            lease_units_left,
            verdicts,
        })
    }

    async fn winner(
        &self,
        sale: &SaleId,
        user: &UserId,
    ) -> Result<Option<TicketRecord>, StoreError> {
        let mut con = self.con.clone();
        let key = self.key(sale, "winners");
        let ticket: Option<String> = self
            .timed(Op::Command, async {
                ::redis::cmd("HGET")
                    .arg(&key)
                    .arg(user.as_str())
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let Some(ticket) = ticket.and_then(|t| TicketId::parse(&t).ok()) else {
            return Ok(None);
        };
        self.ticket(sale, &ticket).await
    }

    async fn ticket(
        &self,
        sale: &SaleId,
        ticket: &TicketId,
    ) -> Result<Option<TicketRecord>, StoreError> {
        let mut con = self.con.clone();
        let key = self.key(sale, "tickets");
        let rec: Option<String> = self
            .timed(Op::Command, async {
                ::redis::cmd("HGET")
                    .arg(&key)
                    .arg(ticket.as_str())
                    .query_async(&mut con)
                    .await
            })
            .await?;
        match rec {
            None => Ok(None),
            Some(rec) => parse_record(*ticket, &rec)
                .map(Some)
                .ok_or_else(|| protocol(Op::Command, format!("unreadable ticket record {rec:?}"))),
        }
    }

    async fn confirm(&self, sale: &SaleId, ticket: &TicketId) -> Result<Transition, StoreError> {
        let items = self
            .eval(
                Op::Confirm,
                &self.scripts.confirm,
                &self.sale_keys(sale, &["tickets", "acct", "expiry"]),
                &[A::S(ticket.as_str())],
            )
            .await?;
        transition(Op::Confirm, &items)
    }

    async fn release(&self, sale: &SaleId, ticket: &TicketId) -> Result<Transition, StoreError> {
        let items = self
            .eval(
                Op::Release,
                &self.scripts.release,
                &self.sale_keys(sale, &["tickets", "acct", "expiry"]),
                &[A::S(ticket.as_str())],
            )
            .await?;
        transition(Op::Release, &items)
    }

    async fn sweep(&self, sale: &SaleId, limit: u64) -> Result<u64, StoreError> {
        let items = self
            .eval(
                Op::Sweep,
                &self.scripts.sweep,
                &self.sale_keys(sale, &["tickets", "acct", "expiry"]),
                &[A::U(limit)],
            )
            .await?;
        Reply::new(Op::Sweep, &items).u64()
    }

    async fn last_order_id(&self, sale: &SaleId) -> Result<Option<String>, StoreError> {
        let mut con = self.con.clone();
        let key = self.key(sale, "orders");
        let v: Value = self
            .timed(Op::ReadOrders, async {
                ::redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        match v {
            Value::Array(entries) => Ok(entries.first().and_then(entry_id).map(str::to_owned)),
            _ => Ok(None),
        }
    }

    async fn winners(&self, sale: &SaleId) -> Result<Vec<(UserId, Issued)>, StoreError> {
        let winners_key = self.key(sale, "winners");
        let tickets_key = self.key(sale, "tickets");
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, flat) = self.scan_page("HSCAN", &winners_key, cursor).await?;
            let pairs: Vec<(UserId, TicketId)> = flat
                .chunks(2)
                .filter_map(|p| match p {
                    [u, t] => Some((UserId::parse(u).ok()?, TicketId::parse(t).ok()?)),
                    _ => None,
                })
                .collect();
            if !pairs.is_empty() {
                let mut con = self.con.clone();
                let mut cmd = ::redis::cmd("HMGET");
                cmd.arg(&tickets_key);
                for (_, t) in &pairs {
                    cmd.arg(t.as_str());
                }
                let recs: Vec<Option<String>> = self
                    .timed(Op::Command, async { cmd.query_async(&mut con).await })
                    .await?;
                for ((user, ticket), rec) in pairs.into_iter().zip(recs) {
                    if let Some(r) = rec.as_deref().and_then(|r| parse_record(ticket, r)) {
                        out.push((
                            user,
                            Issued {
                                ticket,
                                issued_at_ms: r.issued_at_ms,
                                expires_at_ms: r.expires_at_ms,
                            },
                        ));
                    }
                }
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    async fn read_orders(
        &self,
        sale: &SaleId,
        after: &str,
        count: usize,
    ) -> Result<OrderPage, StoreError> {
        let mut con = self.con.clone();
        let key = self.key(sale, "orders");
        let v: Value = self
            .timed(Op::ReadOrders, async {
                ::redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(after)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        // Reply: nil, or [[key, [[id, [f, v, ...]], ...]]] (RESP2), or a map (RESP3).
        let streams = match v {
            Value::Nil => return Ok(OrderPage::default()),
            Value::Array(s) => s
                .into_iter()
                .filter_map(|kv| match kv {
                    Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
            other => {
                return Err(protocol(
                    Op::ReadOrders,
                    format!("unexpected XREAD reply {other:?}"),
                ))
            }
        };
        let mut page = OrderPage::default();
        let mut read = 0;
        for s in streams {
            if let Value::Array(entries) = s {
                for e in &entries {
                    read += 1;
                    let Some(id) = entry_id(e) else {
                        return Err(protocol(
                            Op::ReadOrders,
                            format!("stream entry without an id {e:?}"),
                        ));
                    };
                    match parse_entry(e) {
                        Some(entry) => page.entries.push(entry),
                        None => {
                            tracing::warn!(%sale, id, "skipping an unreadable order-stream entry");
                            page.unreadable += 1;
                        }
                    }
                    page.last_id = Some(id.to_owned());
                }
            }
        }
        page.full = read >= count;
        Ok(page)
    }

    async fn pool(&self, sale: &SaleId) -> Result<Option<Pool>, StoreError> {
        let mut con = self.con.clone();
        let key = self.key(sale, "acct");
        let v: Vec<Option<u64>> = self
            .timed(Op::Command, async {
                ::redis::cmd("HMGET")
                    .arg(&key)
                    .arg("avail")
                    .arg("leased")
                    .arg("enqueued")
                    .query_async(&mut con)
                    .await
            })
            .await?;
        Ok(match v.as_slice() {
            [Some(available), leased, enqueued] => Some(Pool {
                available: *available,
                leased: leased.unwrap_or(0),
                orders_enqueued: enqueued.unwrap_or(0),
            }),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_record_parses_into_its_parts() {
        let t = TicketId::random();
        let r = parse_record(t, "p:alice:100:200").unwrap();
        assert_eq!(r.state, TicketState::Pending);
        assert_eq!(r.user.as_str(), "alice");
        assert_eq!((r.issued_at_ms, r.expires_at_ms), (100, 200));
        assert!(parse_record(t, "x:alice:1:2").is_none());
        assert!(parse_record(t, "p:alice:1").is_none());
    }
}
