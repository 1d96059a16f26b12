//! [`RedisStore`]: the one store every bigtap process uses (`serve`,
//! `orders`, `sale`, `sale audit`, `orders dead`).
//!
//! It implements [`Store`] (what the front tier needs) with one script per
//! state change ([`super::scripts`]), and offers the order consumer, the
//! dead-letter commands and the audit their own operations as inherent
//! methods ([`super::queue`], [`super::dump`]), so the `Store` trait stays as
//! small as the front tier needs and no other module sends a Redis command.
//!
//! Every call reads or writes the keys of one sale ([`Keys`]), all in one
//! hash slot, so on a Redis Cluster each call goes to one shard unchanged.
//! Calls share one auto-reconnecting multiplexed connection ([`Con`]) and
//! wait a bounded time: while Redis is away they fail fast with
//! [`StoreError::Timeout`] or [`StoreError::Io`], and the connection comes
//! back by itself. A failed call is sent again only where that is safe
//! ([`super::conn::may_resend`]). Scripts are invoked by SHA and loaded
//! again transparently after a Redis restart (NOSCRIPT).

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::{Cmd, ErrorKind, RedisResult, ScriptInvocation, ServerErrorKind, Value};
use async_trait::async_trait;

use super::conn::{may_resend, resend_pause, Con, MAX_RESENDS};
use super::keys::Keys;
use super::record::{parse_ticket, parse_winner, StreamEntry, WinnerEntry};
use super::scripts::{self, Def, Op};
use super::url::StoreUrl;
use super::*;
use crate::metrics::Metrics;

/// Environment variable naming the store's CA file (see [`RedisStore::open`]).
pub const CA_FILE_ENV: &str = "BIGTAP_REDIS_CA_FILE";

/// The Redis implementation of [`Store`], and the rest of the store seam.
#[derive(Clone)]
pub struct RedisStore {
    con: Con,
    keys: Arc<Keys>,
    url: Arc<StoreUrl>,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl RedisStore {
    /// One field of a hash (idempotent: resent on a lost connection).
    async fn hget(&self, key: String, field: &str) -> Result<Option<String>, StoreError> {
        let mut cmd = ::redis::cmd("HGET");
        cmd.arg(key).arg(field);
        self.query(Op::Command, true, &cmd).await
    }

    /// The record of a ticket minted before records moved, in `:tickets`.
    async fn older_ticket(
        &self,
        sale: &SaleId,
        ticket: &TicketId,
    ) -> Result<Option<TicketRecord>, StoreError> {
        match self.hget(self.keys.tickets(sale), ticket.as_str()).await? {
            None => Ok(None),
            Some(rec) => parse_ticket(*ticket, &rec)
                .map(Some)
                .ok_or_else(|| unreadable(&rec)),
        }
    }

    /// Connects lazily: the first call (or [`RedisStore::wait_ready`])
    /// dials. `url` is `redis://`, `rediss://`, `redis+cluster://` or
    /// `rediss+cluster://`. Must be called within a Tokio runtime.
    ///
    /// For a TLS URL, the environment variable [`CA_FILE_ENV`]
    /// (`BIGTAP_REDIS_CA_FILE`) names a PEM file of CA certificates to trust
    /// instead of the public roots; every process opens its store here, so
    /// the variable works alike for `serve`, `orders` and `sale`.
    pub fn open(
        url: &str,
        prefix: &str,
        timeout: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, StoreError> {
        let ca_file = std::env::var_os(CA_FILE_ENV).filter(|v| !v.is_empty());
        Self::open_with_ca(
            url,
            prefix,
            timeout,
            metrics,
            ca_file.as_deref().map(Path::new),
        )
    }

    /// As [`RedisStore::open`], with the CA file given explicitly (ignored
    /// for a URL without TLS).
    pub fn open_with_ca(
        url: &str,
        prefix: &str,
        timeout: Duration,
        metrics: Option<Arc<Metrics>>,
        ca_file: Option<&Path>,
    ) -> Result<Self, StoreError> {
        let url = StoreUrl::parse(url)?;
        let ca_pem = match ca_file {
            Some(path) if url.is_tls() => Some(
                std::fs::read(path)
                    .map_err(|e| StoreError::CaFile(path.display().to_string(), e))?,
            ),
            _ => None,
        };
        let con = Con::open(&url, timeout, ca_pem)?;
        Ok(RedisStore {
            con,
            keys: Arc::new(Keys::new(prefix)),
            url: Arc::new(url),
            timeout,
            metrics,
        })
    }

    /// The store's URL, printable (the password is hidden).
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// How long one call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
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
    /// (On a cluster this reaches one node; the others load a script on
    /// its first NOSCRIPT.)
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        for def in scripts::all() {
            let mut con = self.con.clone();
            self.timed(Op::Command, async move {
                def.script().load_async(&mut con).await
            })
            .await?;
        }
        Ok(())
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
            m.store_call(op, start.elapsed().as_secs_f64(), failed);
        }
        match r {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(StoreError::Io(e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Runs `attempt` and sends it again while [`may_resend`] allows, all
    /// within one call's timeout.
    async fn resending<T, F, Fut>(
        &self,
        op: Op,
        idempotent: bool,
        attempt: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Con) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.timed(op, async {
            let mut resends = 0;
            loop {
                match attempt(self.con.clone()).await {
                    Err(e) if resends < MAX_RESENDS && may_resend(&e, idempotent) => {
                        resends += 1;
                        tokio::time::sleep(resend_pause(resends)).await;
                    }
                    r => return r,
                }
            }
        })
        .await
    }

    /// Runs a script invocation built by its wrapper; returns the reply's items.
    pub(crate) async fn invoke(
        &self,
        def: &'static Def,
        inv: &ScriptInvocation<'_>,
    ) -> Result<Vec<Value>, StoreError> {
        let v: Value = self
            .resending(def.op, def.idempotent, |mut con| async move {
                inv.invoke_async(&mut con).await
            })
            .await?;
        Ok(scripts::into_items(v))
    }

    /// Runs a script call packed by its wrapper as one `EVALSHA` command
    /// ([`Def::evalsha`]), loading the script when Redis does not have it.
    /// For the hot path: `ScriptInvocation` keeps every argument in its own
    /// buffer and copies them all into a command per call; a command packs
    /// them into one buffer as they are added.
    pub(crate) async fn invoke_cmd(
        &self,
        def: &'static Def,
        cmd: &Cmd,
    ) -> Result<Vec<Value>, StoreError> {
        let v: Value = self
            .resending(def.op, def.idempotent, |mut con| async move {
                match cmd.query_async(&mut con).await {
                    // Not run: safe to send again once the script is loaded.
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        def.script().load_async(&mut con).await?;
                        cmd.query_async(&mut con).await
                    }
                    r => r,
                }
            })
            .await?;
        Ok(scripts::into_items(v))
    }

    /// Runs one plain command. `idempotent` as for scripts.
    pub(crate) async fn query<T: ::redis::FromRedisValue>(
        &self,
        op: Op,
        idempotent: bool,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        self.resending(op, idempotent, |mut con| async move {
            cmd.query_async(&mut con).await
        })
        .await
    }

    /// Several commands on the keys of one sale (one slot), in one round
    /// trip; `atomic` wraps them in MULTI/EXEC. Read-only use only: a
    /// pipeline is sent again after a broken connection.
    pub(crate) async fn read_pipeline(
        &self,
        pipe: &::redis::Pipeline,
    ) -> Result<Vec<Value>, StoreError> {
        self.resending(Op::Command, true, |mut con| async move {
            pipe.query_async(&mut con).await
        })
        .await
    }

    /// One page of `SSCAN`/`HSCAN` over `key`: the next cursor and the
    /// flat list of members (or field/value pairs).
    async fn scan_page(
        &self,
        command: &'static str,
        key: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let mut cmd = ::redis::cmd(command);
        cmd.arg(key).arg(cursor).arg("COUNT").arg(1000);
        self.query(Op::Command, true, &cmd).await
    }
}

/// Text of a reply item, if it is one.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A hash reply (RESP2 flat array or RESP3 map) as ordered pairs.
pub(crate) fn pairs(v: &Value) -> Option<Vec<(String, String)>> {
    match v {
        Value::Nil => Some(Vec::new()),
        Value::Array(items) => items
            .chunks(2)
            .map(|kv| match kv {
                [k, v] => Some((text(k)?, text(v)?)),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.iter().map(|(k, v)| Some((text(k)?, text(v)?))).collect(),
        _ => None,
    }
}

/// One stream entry `[id, [field, value, ...]]` (a deleted entry's fields
/// are nil: it comes back with none).
pub(crate) fn stream_entry(v: &Value) -> Option<StreamEntry> {
    let Value::Array(parts) = v else { return None };
    let id = text(parts.first()?)?;
    let fields = match parts.get(1) {
        None | Some(Value::Nil) => Default::default(),
        Some(f) => pairs(f)?.into_iter().collect(),
    };
    Some(StreamEntry { id, fields })
}

/// The entries of an XRANGE-shaped reply.
pub(crate) fn stream_entries(op: &'static str, v: &Value) -> Result<Vec<StreamEntry>, StoreError> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|e| {
                stream_entry(e).ok_or_else(|| StoreError::Protocol {
                    script: op,
                    detail: format!("unreadable stream entry {e:?}"),
                })
            })
            .collect(),
        other => Err(StoreError::Protocol {
            script: op,
            detail: format!("expected stream entries, got {other:?}"),
        }),
    }
}

/// The entries of the single stream an XREAD/XREADGROUP of one key read:
/// nil, `[[key, entries]]` (RESP2) or `{key: entries}` (RESP3).
pub(crate) fn read_reply(op: &'static str, v: Value) -> Result<Vec<StreamEntry>, StoreError> {
    let streams: Vec<Value> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(s) => s
            .into_iter()
            .filter_map(|kv| match kv {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
        other => {
            return Err(StoreError::Protocol {
                script: op,
                detail: format!("unexpected read reply {other:?}"),
            })
        }
    };
    let mut out = Vec::new();
    for s in &streams {
        out.extend(stream_entries(op, s)?);
    }
    Ok(out)
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.query(Op::Ping, true, &::redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Protocol {
                script: Op::Ping.name(),
                detail: pong,
            })
        }
    }

    async fn safety(&self) -> Result<SafetyReport, StoreError> {
        let mut report = SafetyReport::default();
        for (name, slot) in [
            ("maxmemory-policy", &mut report.maxmemory_policy),
            ("appendonly", &mut report.appendonly),
            ("appendfsync", &mut report.appendfsync),
        ] {
            let mut cmd = ::redis::cmd("CONFIG");
            cmd.arg("GET").arg(name);
            let r: Result<HashMap<String, String>, _> = self.query(Op::Command, true, &cmd).await;
            // A refused CONFIG GET (managed stores) leaves the field unknown.
            *slot = r.ok().and_then(|m| m.get(name).cloned());
        }
        Ok(report)
    }

    async fn sales(&self) -> Result<Vec<SaleId>, StoreError> {
        let mut cmd = ::redis::cmd("SMEMBERS");
        cmd.arg(self.keys.sales());
        let names: Vec<String> = self.query(Op::Command, true, &cmd).await?;
        let mut sales: Vec<SaleId> = names.iter().filter_map(|n| SaleId::parse(n).ok()).collect();
        sales.sort();
        Ok(sales)
    }

    async fn put_sale(&self, sale: &SaleId, spec: &SaleSpec) -> Result<PutOutcome, StoreError> {
        // Listed first: a crash between the two leaves a listed sale without
        // keys (harmless, skipped by readers), never a sale nobody can find.
        let mut cmd = ::redis::cmd("SADD");
        cmd.arg(self.keys.sales()).arg(sale.as_str());
        let _: i64 = self.query(Op::Command, true, &cmd).await?;
        let inventory = Inventory::single(spec.stock.unwrap_or(0));
        scripts::put_sale::call(self, sale, spec, &inventory).await
    }

    async fn add_stock(&self, sale: &SaleId, delta: i64) -> Result<StockChange, StoreError> {
        scripts::add_stock::call(self, sale, delta, None).await
    }

    async fn put_sale_with(
        &self,
        sale: &SaleId,
        spec: &SaleSpec,
        inventory: &Inventory,
    ) -> Result<PutOutcome, StoreError> {
        let mut cmd = ::redis::cmd("SADD");
        cmd.arg(self.keys.sales()).arg(sale.as_str());
        let _: i64 = self.query(Op::Command, true, &cmd).await?;
        scripts::put_sale::call(self, sale, spec, inventory).await
    }

    async fn add_stock_to(
        &self,
        sale: &SaleId,
        delta: i64,
        warehouse: Option<WarehouseId>,
    ) -> Result<StockChange, StoreError> {
        scripts::add_stock::call(self, sale, delta, warehouse).await
    }

    async fn transfer(
        &self,
        sale: &SaleId,
        from: WarehouseId,
        to: WarehouseId,
        units: u64,
    ) -> Result<TransferOutcome, StoreError> {
        scripts::transfer::call(self, sale, from, to, units).await
    }

    async fn accounting(
        &self,
        sale: &SaleId,
    ) -> Result<Option<(Snapshot, Vec<WarehouseAccount>)>, StoreError> {
        scripts::account::call_full(self, sale).await
    }

    async fn add_eligible(
        &self,
        sale: &SaleId,
        users: &[UserId],
    ) -> Result<Option<u64>, StoreError> {
        scripts::add_eligible::call(self, sale, users).await
    }

    async fn close(&self, sale: &SaleId) -> Result<bool, StoreError> {
        scripts::close::call(self, sale).await
    }

    async fn snapshot(&self, sale: &SaleId) -> Result<Option<Snapshot>, StoreError> {
        scripts::account::call(self, sale).await
    }

    /// Plain reads, not a script: the settings, the counters and the
    /// store's clock in one round trip, at about two thirds of what the
    /// same reads cost the store as a script, which every node runs
    /// several times a second.
    async fn view(&self, sale: &SaleId) -> Result<Option<Snapshot>, StoreError> {
        let mut pipe = ::redis::pipe();
        self.add_view(&mut pipe, sale);
        let reply = self.read_pipeline(&pipe).await?;
        view_of(&reply)
    }

    async fn eligible_users(&self, sale: &SaleId) -> Result<Vec<UserId>, StoreError> {
        let key = self.keys.eligible(sale);
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
        scripts::lease::call(self, sale, node, want, ttl_ms).await
    }

    async fn renew(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        ttl_ms: u64,
    ) -> Result<RenewReply, StoreError> {
        scripts::renew::call(self, sale, node, epoch, ttl_ms).await
    }

    async fn return_lease(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
    ) -> Result<ReturnReply, StoreError> {
        scripts::return_lease::call(self, sale, node, epoch).await
    }

    async fn reclaim(&self, sale: &SaleId, every: Duration) -> Result<(u64, u64), StoreError> {
        scripts::reclaim::call(self, sale, every).await
    }

    async fn admit(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        batch: &[Candidate],
    ) -> Result<AdmitReply, StoreError> {
        scripts::admit::call(self, sale, node, epoch, batch).await
    }

    async fn winner(
        &self,
        sale: &SaleId,
        user: &UserId,
    ) -> Result<Option<TicketRecord>, StoreError> {
        let entry = self.hget(self.keys.winners(sale), user.as_str()).await?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        match parse_winner(*user, &entry) {
            Some(WinnerEntry::Record(rec)) => Ok(Some(rec)),
            Some(WinnerEntry::Ticket(older)) => self.older_ticket(sale, &older).await,
            None => Err(unreadable(&entry)),
        }
    }

    async fn ticket(
        &self,
        sale: &SaleId,
        ticket: &TicketId,
    ) -> Result<Option<TicketRecord>, StoreError> {
        // A ticket that names its holder has its record under them
        // (lua/records.lua); it is theirs only if the tags agree.
        if let Some((_, holder)) = ticket.holder() {
            let entry = self.hget(self.keys.winners(sale), holder.as_str()).await?;
            if let Some(WinnerEntry::Record(rec)) = entry.and_then(|e| parse_winner(holder, &e)) {
                if rec.ticket == *ticket {
                    return Ok(Some(rec));
                }
            }
        }
        self.older_ticket(sale, ticket).await
    }

    async fn confirm(&self, sale: &SaleId, ticket: &TicketId) -> Result<Transition, StoreError> {
        scripts::confirm::call(self, sale, ticket).await
    }

    async fn release(&self, sale: &SaleId, ticket: &TicketId) -> Result<Transition, StoreError> {
        scripts::release::call(self, sale, ticket).await
    }

    async fn sweep(&self, sale: &SaleId, limit: u64) -> Result<Swept, StoreError> {
        scripts::sweep::call(self, sale, limit).await
    }

    async fn read_digests(
        &self,
        sale: &SaleId,
        offset: u64,
        max: u64,
    ) -> Result<Vec<u8>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let cmd = self.digests_cmd(sale, offset, max);
        self.query(Op::ReadOrders, true, &cmd).await
    }

    async fn pool(&self, sale: &SaleId) -> Result<Option<Pool>, StoreError> {
        let v: Vec<Option<u64>> = self.query(Op::Command, true, &self.pool_cmd(sale)).await?;
        Ok(pool_of(&v))
    }

    /// One pipeline, so one pass of the store's event loop for all its
    /// reads: while a sale is quiet a node polls it every 100 to 200 ms,
    /// and in a large fleet the passes, not the reads, are what the store
    /// pays for. Redis runs a connection's commands in order, on a cluster
    /// too (one slot, one shard; `TIME`, which has no key, goes with them).
    async fn poll(
        &self,
        sale: &SaleId,
        head: PollHead,
        offset: u64,
        max: u64,
    ) -> Result<(Head, Vec<u8>), StoreError> {
        if head == PollHead::Nothing && max == 0 {
            return Ok((Head::Nothing, Vec::new()));
        }
        let mut pipe = ::redis::pipe();
        match head {
            PollHead::Nothing => {}
            PollHead::Pool => {
                pipe.add_command(self.pool_cmd(sale));
            }
            PollHead::View => self.add_view(&mut pipe, sale),
        }
        if max > 0 {
            pipe.add_command(self.digests_cmd(sale, offset, max));
        }
        let reply = self.read_pipeline(&pipe).await?;
        let (head_reply, bytes) = if max > 0 {
            match reply.split_last() {
                Some((bytes, rest)) => (rest, Some(bytes)),
                None => return Err(poll_protocol("no reply".into())),
            }
        } else {
            (&reply[..], None)
        };
        let head = match head {
            PollHead::Nothing => Head::Nothing,
            PollHead::Pool => {
                let [pool] = head_reply else {
                    return Err(poll_protocol(format!("{} replies", reply.len())));
                };
                let pool: Vec<Option<u64>> = ::redis::from_redis_value_ref(pool)
                    .map_err(|e| poll_protocol(e.to_string()))?;
                Head::Pool(pool_of(&pool))
            }
            PollHead::View => Head::View(view_of(head_reply)?),
        };
        let bytes = match bytes {
            Some(v) => {
                ::redis::from_redis_value_ref(v).map_err(|e| poll_protocol(e.to_string()))?
            }
            None => Vec::new(),
        };
        Ok((head, bytes))
    }
}

impl RedisStore {
    fn pool_cmd(&self, sale: &SaleId) -> Cmd {
        let mut cmd = ::redis::cmd("HMGET");
        cmd.arg(self.keys.acct(sale))
            .arg("avail")
            .arg("leased")
            .arg("enqueued");
        cmd
    }

    /// The view's reads (see [`view_of`]): settings, counters, clock.
    fn add_view(&self, pipe: &mut ::redis::Pipeline, sale: &SaleId) {
        pipe.cmd("HMGET")
            .arg(self.keys.cfg(sale))
            .arg(&VIEW_SETTINGS[..]);
        pipe.cmd("HMGET")
            .arg(self.keys.acct(sale))
            .arg(&VIEW_COUNTERS[..]);
        pipe.cmd("TIME");
    }

    fn digests_cmd(&self, sale: &SaleId, offset: u64, max: u64) -> Cmd {
        let mut cmd = ::redis::cmd("GETRANGE");
        cmd.arg(self.keys.digests(sale))
            .arg(offset)
            .arg(offset + max - 1);
        cmd
    }
}

fn poll_protocol(detail: String) -> StoreError {
    StoreError::Protocol {
        script: Op::ReadOrders.name(),
        detail,
    }
}

/// The settings a view reads from the sale's `cfg` hash, in this order.
const VIEW_SETTINGS: [&str; 6] = ["starts", "ends", "closed", "ttl", "elig", "elig_version"];
/// The counters a view reads from the sale's `acct` hash, in this order.
const VIEW_COUNTERS: [&str; 7] = [
    "total",
    "avail",
    "leased",
    "pending",
    "confirmed",
    "released",
    "enqueued",
];

/// A view from the replies to [`RedisStore::add_view`]'s three reads;
/// `None` for an unknown sale (every sale's settings have `starts`,
/// `ends` and `ttl`: `put_sale.lua`). A counter not yet written is 0.
fn view_of(reply: &[Value]) -> Result<Option<Snapshot>, StoreError> {
    let protocol = |detail: String| StoreError::Protocol {
        script: Op::Account.name(),
        detail,
    };
    let [cfg, acct, time] = reply else {
        return Err(protocol(format!(
            "{} replies to a view's 3 reads",
            reply.len()
        )));
    };
    let cfg: Vec<Option<String>> =
        ::redis::from_redis_value_ref(cfg).map_err(|e| protocol(e.to_string()))?;
    let acct: Vec<Option<u64>> =
        ::redis::from_redis_value_ref(acct).map_err(|e| protocol(e.to_string()))?;
    let (secs, micros): (u64, u64) =
        ::redis::from_redis_value_ref(time).map_err(|e| protocol(e.to_string()))?;
    let [starts, ends, closed, ttl, elig, version] = &cfg[..] else {
        return Err(protocol(format!("{} settings", cfg.len())));
    };
    let Some(starts) = starts else {
        return Ok(None);
    };
    let number = |name: &str, v: Option<&String>| -> Result<u64, StoreError> {
        v.and_then(|t| t.parse().ok())
            .ok_or_else(|| protocol(format!("sale setting {name} is {v:?}")))
    };
    let counter = |i: usize| acct.get(i).copied().flatten().unwrap_or(0);
    if acct.len() != VIEW_COUNTERS.len() {
        return Err(protocol(format!("{} counters", acct.len())));
    }
    Ok(Some(Snapshot {
        now_ms: secs * 1000 + micros / 1000,
        starts_at_ms: number("starts", Some(starts))?,
        ends_at_ms: number("ends", ends.as_ref())?,
        closed: closed.as_deref() == Some("1"),
        ticket_ttl_ms: number("ttl", ttl.as_ref())?,
        list_only: elig.as_deref() == Some("list"),
        eligibility_version: match version {
            Some(_) => number("elig_version", version.as_ref())?,
            None => 0,
        },
        stock_total: counter(0),
        available: counter(1),
        leased: counter(2),
        pending: counter(3),
        confirmed: counter(4),
        released_total: counter(5),
        orders_enqueued: counter(6),
        balanced: false,
        checked: false,
        lease_records: 0,
    }))
}

/// The pool from `HMGET acct avail leased enqueued`; `None` without a sale.
fn pool_of(v: &[Option<u64>]) -> Option<Pool> {
    match v {
        [Some(available), leased, enqueued] => Some(Pool {
            available: *available,
            leased: leased.unwrap_or(0),
            orders_enqueued: enqueued.unwrap_or(0),
        }),
        _ => None,
    }
}

fn unreadable(rec: &str) -> StoreError {
    StoreError::Protocol {
        script: Op::Command.name(),
        detail: format!("unreadable ticket record {rec:?}"),
    }
}
