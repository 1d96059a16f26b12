//! The order consumer's fixtures: a real redis-server with its order
//! streams (entries in the contract format), a programmable HTTP sink that
//! records every call it receives, and a consumer running as a task.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bigtap::orders::{Backoff, Consumer, ConsumerConfig, HttpSink, OrdersError, Sink};
use bigtap::store::embedded::RedisProcess;
use bigtap::SaleId;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{eventually, PATIENCE};

pub fn sale(s: &str) -> SaleId {
    SaleId::parse(s).expect("test sale id")
}

/// A redis-server of its own, and a connection to it.
pub struct Store {
    pub redis: RedisProcess,
    pub conn: MultiplexedConnection,
}

impl Store {
    pub async fn start() -> Store {
        let redis = super::redis();
        let conn = redis::Client::open(redis.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection");
        Store { redis, conn }
    }

    pub fn url(&self) -> String {
        self.redis.url()
    }

    /// The store seam on this server, as the commands open it.
    pub fn seam(&self) -> bigtap::store::redis::RedisStore {
        bigtap::store::redis::RedisStore::open(&self.url(), "bigtap", Duration::from_secs(5), None)
            .expect("store url")
    }

    /// A fresh connection, after the server restarted.
    pub async fn reconnect(&mut self) {
        self.conn = redis::Client::open(self.redis.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection");
    }

    /// Registers `sale` in `bigtap:sales`.
    pub async fn create_sale(&self, sale: &str) {
        let mut c = self.conn.clone();
        let _: () = c.sadd("bigtap:sales", sale).await.expect("SADD");
    }

    /// [`Store::add_winners`], keeping only their tickets.
    pub async fn add_tickets(&self, sale: &str, n: usize) -> HashSet<String> {
        self.add_winners(sale, n)
            .await
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Appends `n` winners to the sale's stream, as the admission script
    /// does; returns `(entry id, ticket)` in order.
    pub async fn add_winners(&self, sale: &str, n: usize) -> Vec<(String, String)> {
        let mut c = self.conn.clone();
        let key = format!("bigtap:{{{sale}}}:orders");
        let mut out = Vec::with_capacity(n);
        // In pipelines of modest size: one huge pipeline would outlast the
        // connection's response timeout.
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            out.extend(self.add_chunk(&mut c, &key, sale, chunk).await);
        }
        out
    }

    async fn add_chunk(
        &self,
        c: &mut MultiplexedConnection,
        key: &str,
        sale: &str,
        indexes: &[usize],
    ) -> Vec<(String, String)> {
        let mut pipe = redis::pipe();
        let mut tickets = Vec::with_capacity(indexes.len());
        for &i in indexes {
            let ticket = bigtap::TicketId::random().to_string();
            let user = format!("user-{i}");
            let issued = 1_700_000_000_000u64 + i as u64;
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("ticket")
                .arg(&ticket)
                .arg("sale")
                .arg(sale)
                .arg("user")
                .arg(&user)
                .arg("issued_at_ms")
                .arg(issued)
                .arg("expires_at_ms")
                .arg(issued + 600_000)
                .arg("node")
                .arg("node-a");
            tickets.push(ticket);
        }
        let ids: Vec<String> = pipe.query_async(c).await.expect("XADD");
        ids.into_iter().zip(tickets).collect()
    }

    /// Pending entries of group `orders` on the sale's stream. A Redis
    /// error fails the test: read as a number, it could pass a check of
    /// "nothing left pending" (or of "something is") by accident.
    pub async fn pending(&self, sale: &str) -> usize {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<redis::streams::StreamPendingReply> = c
            .xpending(format!("bigtap:{{{sale}}}:orders"), "orders")
            .await;
        match r {
            Ok(p) => p.count(),
            Err(e) => panic!("XPENDING on sale {sale} failed: {e}"),
        }
    }

    /// Entries of the sale's stream not yet read by group `orders`.
    pub async fn lag(&self, sale: &str) -> Option<usize> {
        let mut c = self.conn.clone();
        let r: redis::streams::StreamInfoGroupsReply = c
            .xinfo_groups(format!("bigtap:{{{sale}}}:orders"))
            .await
            .ok()?;
        r.groups
            .into_iter()
            .find(|g| g.name == "orders")
            .and_then(|g| g.lag)
    }

    /// True once group `orders` has read and acknowledged every entry. One
    /// XINFO GROUPS answers both questions at the same instant: asked
    /// separately, a read between the two could make a fresh group look done.
    pub async fn drained(&self, sale: &str) -> bool {
        let mut c = self.conn.clone();
        let Ok(r) = c
            .xinfo_groups::<_, redis::streams::StreamInfoGroupsReply>(format!(
                "bigtap:{{{sale}}}:orders"
            ))
            .await
        else {
            return false;
        };
        r.groups
            .iter()
            .any(|g| g.name == "orders" && g.pending == 0 && g.lag == Some(0))
    }

    /// Ids the group has acknowledged: read (at or below the last-delivered
    /// id) and no longer pending.
    pub async fn acknowledged(&self, sale: &str) -> HashSet<String> {
        let mut c = self.conn.clone();
        let key = format!("bigtap:{{{sale}}}:orders");
        let groups: redis::streams::StreamInfoGroupsReply =
            c.xinfo_groups(&key).await.expect("XINFO");
        let last = groups
            .groups
            .iter()
            .find(|g| g.name == "orders")
            .map(|g| g.last_delivered_id.clone())
            .expect("group orders");
        let read: redis::streams::StreamRangeReply =
            c.xrange(&key, "-", &last).await.expect("XRANGE");
        let pending: redis::streams::StreamPendingCountReply = c
            .xpending_count(&key, "orders", "-", "+", 1_000_000)
            .await
            .expect("XPENDING");
        let pending: HashSet<String> = pending.ids.into_iter().map(|p| p.id).collect();
        read.ids
            .into_iter()
            .map(|e| e.id)
            .filter(|id| !pending.contains(id))
            .collect()
    }
}

/// Consumer settings for tests: short intervals, no metrics listener.
pub fn consumer_config(store: &Store) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&store.url());
    c.concurrency = 16;
    c.batch = 64;
    c.discover_interval = Duration::from_millis(100);
    c.claim_idle = Duration::from_millis(500);
    c.retry = Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    c.stats_interval = Duration::from_millis(50);
    c.drain = Duration::from_secs(10);
    c
}

/// A running consumer: the token that stops it and its task.
pub type Running = (CancellationToken, JoinHandle<Result<(), OrdersError>>);

/// Spawns `consumer.run` and returns its stop token and task.
pub fn spawn_consumer(consumer: Consumer) -> Running {
    let token = CancellationToken::new();
    let task = tokio::spawn(consumer.run(token.clone()));
    (token, task)
}

/// Stops a consumer started by [`spawn_consumer`] and fails the test unless
/// it stops cleanly.
pub async fn stop_consumer(token: CancellationToken, task: JoinHandle<Result<(), OrdersError>>) {
    token.cancel();
    task.await
        .expect("consumer task")
        .expect("consumer stops cleanly");
}

/// A consumer of `store` with the test settings, delivering to `sink`.
pub async fn consumer_of(store: &Store, sink: &TestSink) -> Consumer {
    Consumer::connect(consumer_config(store), http_sink(sink))
        .await
        .expect("consumer connects")
}

/// Fails the test unless, within [`PATIENCE`], the sink has received
/// exactly `want` and group `orders` has read and acknowledged every entry
/// of `sale`.
pub async fn assert_delivered_and_acknowledged(
    sink: &TestSink,
    store: &Store,
    sale: &str,
    want: &HashSet<String>,
) {
    assert!(
        eventually(PATIENCE, || async { sink.delivered() == *want }).await,
        "timed out waiting until every winner was delivered"
    );
    assert!(
        eventually(PATIENCE, || async { store.drained(sale).await }).await,
        "timed out waiting until every entry of {sale} was acknowledged"
    );
}

pub fn http_sink(sink: &TestSink) -> Arc<dyn Sink> {
    Arc::new(HttpSink::new(&sink.url(), Duration::from_secs(2)).expect("sink url"))
}

/// What the test sink answers to one call.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Answer after a pause.
    Slow(u16, Duration),
    /// Never answer.
    Hang,
    /// Answer, and record nothing: a backend that loses what it
    /// acknowledged (a negative control).
    Forget(u16),
    /// Answer with this JSON body (otherwise `{}`): the sink stands in for
    /// another server.
    Json(u16, &'static str),
}

/// Decides the answer from the call's index (0-based, over the sink's
/// lifetime) and its ticket.
pub type Behaviour = Arc<dyn Fn(usize, &str) -> Reply + Send + Sync>;

pub fn always(status: u16) -> Behaviour {
    Arc::new(move |_, _| Reply::Status(status))
}

/// One call the sink received.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub idempotency_key: Option<String>,
    pub content_type: Option<String>,
    pub body: serde_json::Value,
    /// The status it answered (or was about to answer); `None` for a hang.
    pub status: Option<u16>,
}

impl Call {
    pub fn ticket(&self) -> &str {
        self.body["ticket"].as_str().unwrap_or("")
    }
    pub fn ok(&self) -> bool {
        matches!(self.status, Some(s) if (200..300).contains(&s))
    }
}

struct SinkState {
    calls: Mutex<Vec<Call>>,
    count: AtomicUsize,
    behaviour: Mutex<Behaviour>,
}

/// An HTTP order backend that records calls and answers as programmed. It
/// can be stopped (connections refused) and started again on the same port.
pub struct TestSink {
    addr: SocketAddr,
    state: Arc<SinkState>,
    running: Mutex<Option<CancellationToken>>,
}

impl TestSink {
    pub async fn start(behaviour: Behaviour) -> TestSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().expect("sink addr");
        let sink = TestSink {
            addr,
            state: Arc::new(SinkState {
                calls: Mutex::new(Vec::new()),
                count: AtomicUsize::new(0),
                behaviour: Mutex::new(behaviour),
            }),
            running: Mutex::new(None),
        };
        sink.serve(listener);
        sink
    }

    pub fn url(&self) -> String {
        format!("http://{}/orders", self.addr)
    }

    /// The sink's root, when it stands in for a node.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *self.state.behaviour.lock().unwrap() = b;
    }

    /// Closes the listener and every connection: the sink is unreachable.
    pub fn stop(&self) {
        if let Some(t) = self.running.lock().unwrap().take() {
            t.cancel();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        let deadline = Instant::now() + PATIENCE;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot rebind sink: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn call_count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Tickets the sink answered with a 2xx.
    pub fn delivered(&self) -> HashSet<String> {
        self.calls()
            .iter()
            .filter(|c| c.ok())
            .map(|c| c.ticket().to_owned())
            .collect()
    }

    /// Calls per ticket, in arrival order.
    pub fn by_ticket(&self) -> HashMap<String, Vec<Call>> {
        let mut m: HashMap<String, Vec<Call>> = HashMap::new();
        for c in self.calls() {
            m.entry(c.ticket().to_owned()).or_default().push(c);
        }
        m
    }

    fn serve(&self, listener: TcpListener) {
        let token = CancellationToken::new();
        *self.running.lock().unwrap() = Some(token.clone());
        let state = self.state.clone();
        tokio::spawn(async move {
            // Dropping the set on stop aborts every open connection.
            let mut conns = JoinSet::new();
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                    _ = token.cancelled() => break,
                };
                let state = state.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }
}

impl Drop for TestSink {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(
    state: Arc<SinkState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let idempotency_key = header("idempotency-key");
    let content_type = header("content-type");
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    let index = state.count.fetch_add(1, Ordering::SeqCst);
    let behaviour = state.behaviour.lock().unwrap().clone();
    let reply = behaviour(index, body["ticket"].as_str().unwrap_or(""));
    let status = match reply {
        Reply::Status(s) | Reply::Slow(s, _) | Reply::Json(s, _) => Some(s),
        Reply::Hang => None,
        Reply::Forget(_) => None,
    };
    if !matches!(reply, Reply::Forget(_)) {
        state.calls.lock().unwrap().push(Call {
            at,
            idempotency_key,
            content_type,
            body,
            status,
        });
    }
    let (status, answer) = match reply {
        Reply::Status(s) | Reply::Forget(s) => (s, "{}"),
        Reply::Json(s, json) => (s, json),
        Reply::Slow(s, d) => {
            tokio::time::sleep(d).await;
            (s, "{}")
        }
        Reply::Hang => std::future::pending().await,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(answer.as_bytes())));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    Ok(resp)
}
