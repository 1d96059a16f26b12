//! The naive peer for the load test: the design a team would build without
//! bigtap, measured side by side with it (`loadtest/run --vs-naive`).
//!
//! A small hyper 1.x HTTP/1.1 server that answers
//! `POST /v1/sales/{sale}/tickets` for one sale. It verifies the buyer's
//! session token exactly as bigtap does (the library's [`KeyRing`], keys from
//! `BIGTAP_SESSION_KEYS`, so the same minted tokens work for both), then runs
//! one `EVALSHA` per request over one multiplexed Redis connection. The script
//! refuses a buyer who already won, takes a unit while the stock is above
//! zero (`DECR`), records the buyer (`SADD`) and appends the winner to the
//! sale's order stream (`XADD`), all in one atomic step.
//!
//! No leases, no batching, no local sold-out flag, no winners replica: every
//! request, winner or loser, costs the store one script call. Many requests
//! in flight on one multiplexed connection still reach Redis back to back, so
//! Redis serves them in one event-loop pass and one fsync: that is the
//! amortisation this design gets for free, and the one bigtap must beat.
//!
//! A win is answered with the body DESIGN §3 gives every client: the
//! purchase token signed with the same ticket keys (`BIGTAP_TICKET_KEYS`)
//! and a ticket id of the same form (`TicketId::for_user`), so both designs
//! send the same bytes per winner and the load generator pays the same for
//! reading them. `--small-body` answers without the token, as this peer did
//! at first (227 bytes per answer instead of 364), so older runs can be
//! repeated.
//!
//! Answers:
//! - 201 `{"outcome":"won","sale","ticket","token","expires_at_ms","warehouse"}`
//!   a new win (with `--small-body`: `{"outcome":"won","sale","ticket","expires_at_ms"}`)
//! - 200 `{"outcome":"won","replay":true}` the buyer had already won
//! - 410 `{"outcome":"sold_out"}`
//! - 401 `{"error":"invalid_session"}`, 404 `{"error":"unknown_sale"}`,
//!   405 `{"error":"method_not_allowed"}`, 503 `{"error":"unavailable"}`
//!
//! Redis keys (hash tag `{sale}`, so the sale sits in one slot as in bigtap):
//! `naive:{S}:stock` (counter), `naive:{S}:winners` (set of users),
//! `naive:{S}:orders` (stream: ticket, sale, user, issued_at_ms,
//! expires_at_ms). At start the peer sets the stock to `--stock` and deletes
//! the winners and the stream, so each run starts from a fresh sale.
//!
//! ```text
//! BIGTAP_SESSION_KEYS=k1:... BIGTAP_TICKET_KEYS=t1:... \
//!   cargo run --release --example naive -- \
//!     --redis redis://127.0.0.1:6379/ --sale s1 --stock 100000 \
//!     [--listen 127.0.0.1:9091] [--ticket-ttl-ms 900000] [--threads N] [--small-body]
//! ```
//!
//! It prints `listening on ADDR` once bound and stops on SIGINT or SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bigtap::auth::{bearer, KeyRing, TicketClaims};
use bigtap::{SaleId, TicketId};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use redis::aio::MultiplexedConnection;
use tokio::net::TcpListener;

/// The whole store side of the naive design: one atomic script per request
/// (its KEYS, ARGV and replies are listed in the file).
const TAKE_LUA: &str = include_str!("naive.lua");

/// Longer than any fsync stall a loaded test machine shows, so a slow store
/// is measured as slow rather than as failed requests.
const STORE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags (`--help` lists them). Session keys come from
/// `BIGTAP_SESSION_KEYS` (`KID:BASE64KEY[,...]`), as for `bigtap serve`.
#[derive(clap::Parser)]
#[command(name = "naive", about = "The naive design: one EVALSHA per request")]
struct Args {
    /// Address to bind; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:9091")]
    listen: SocketAddr,
    /// The store (redis://HOST:PORT/).
    #[arg(long)]
    redis: String,
    /// The one sale this peer serves.
    #[arg(long, value_parser = |v: &str| SaleId::parse(v).map_err(|e| e.to_string()))]
    sale: SaleId,
    /// Units of the sale (the stock counter is set at start).
    #[arg(long)]
    stock: u64,
    /// Written into each winner's expires_at_ms.
    #[arg(long, default_value_t = 900_000)]
    ticket_ttl_ms: u64,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Answer wins without the purchase token (and its ticket keys).
    #[arg(long)]
    small_body: bool,
}

/// What every request handler shares; read only after start.
struct Peer {
    sessions: KeyRing,
    /// Signs purchase tokens; `None` with `--small-body`.
    tickets: Option<KeyRing>,
    store: MultiplexedConnection,
    script: redis::Script,
    sale: SaleId,
    /// `/v1/sales/{sale}/tickets`, the one path served.
    path: String,
    keys: [String; 3],
    ticket_ttl_ms: u64,
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn answer(
    peer: Arc<Peer>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != peer.path {
        return Ok(json(
            StatusCode::NOT_FOUND,
            &br#"{"error":"unknown_sale"}"#[..],
        ));
    }
    if req.method() != Method::POST {
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            &br#"{"error":"method_not_allowed"}"#[..],
        ));
    }
    let now = now_ms();
    let user = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()))
        .and_then(|token| peer.sessions.verify_session(token, now / 1000).ok());
    let Some(user) = user else {
        let mut resp = json(
            StatusCode::UNAUTHORIZED,
            &br#"{"error":"invalid_session"}"#[..],
        );
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(resp);
    };
    let ticket = TicketId::for_user(&user);
    let expires = now + peer.ticket_ttl_ms;
    let mut store = peer.store.clone();
    let reply: redis::RedisResult<i64> = peer
        .script
        .key(&peer.keys[0])
        .key(&peer.keys[1])
        .key(&peer.keys[2])
        .arg(user.as_str())
        .arg(ticket.as_str())
        .arg(peer.sale.as_str())
        .arg(now)
        .arg(expires)
        .invoke_async(&mut store)
        .await;
    Ok(match reply {
        Ok(1) => json(
            StatusCode::CREATED,
            match &peer.tickets {
                Some(keys) => {
                    let token = keys.sign_ticket(&TicketClaims {
                        sale: peer.sale,
                        ticket,
                        user,
                        expires_at_ms: expires,
                    });
                    format!(
                        r#"{{"outcome":"won","sale":"{}","ticket":"{}","token":"{}","expires_at_ms":{},"warehouse":"default"}}"#,
                        peer.sale, ticket, token, expires
                    )
                }
                None => format!(
                    r#"{{"outcome":"won","sale":"{}","ticket":"{}","expires_at_ms":{}}}"#,
                    peer.sale, ticket, expires
                ),
            },
        ),
        Ok(0) => json(StatusCode::OK, &br#"{"outcome":"won","replay":true}"#[..]),
        Ok(_) => json(StatusCode::GONE, &br#"{"outcome":"sold_out"}"#[..]),
        Err(e) => {
            eprintln!("store: {e}");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &br#"{"error":"unavailable"}"#[..],
            )
        }
    })
}

async fn serve(listener: TcpListener, peer: Arc<Peer>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = peer.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(peer.clone(), req));
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            // Clients closing mid-request are normal under load; ignore.
            let _ = conn.await;
        });
    }
}

/// Connects, resets the sale's keys and loads the script.
async fn open_store(args: &Args) -> Result<(MultiplexedConnection, [String; 3]), String> {
    let client = redis::Client::open(args.redis.as_str()).map_err(|e| format!("--redis: {e}"))?;
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(STORE_RESPONSE_TIMEOUT));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("connect {}: {e}", args.redis))?;
    let keys = ["stock", "winners", "orders"].map(|k| format!("naive:{{{}}}:{k}", args.sale));
    redis::pipe()
        .atomic()
        .del(&keys[1])
        .ignore()
        .del(&keys[2])
        .ignore()
        .set(&keys[0], args.stock)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| format!("reset the sale's keys: {e}"))?;
    redis::Script::new(TAKE_LUA)
        .prepare_invoke()
        .load_async(&mut conn)
        .await
        .map_err(|e| format!("SCRIPT LOAD: {e}"))?;
    Ok((conn, keys))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(args: Args, sessions: KeyRing, tickets: Option<KeyRing>) -> ExitCode {
    let (store, keys) = match open_store(&args).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("naive: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("naive: bind {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("naive: local_addr: {e}");
            return ExitCode::FAILURE;
        }
    }
    let peer = Arc::new(Peer {
        sessions,
        tickets,
        store,
        script: redis::Script::new(TAKE_LUA),
        path: format!("/v1/sales/{}/tickets", args.sale),
        sale: args.sale,
        keys,
        ticket_ttl_ms: args.ticket_ttl_ms,
    });
    tokio::select! {
        _ = serve(listener, peer) => {}
        _ = shutdown_signal() => {}
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let sessions = match std::env::var("BIGTAP_SESSION_KEYS")
        .map_err(|_| "BIGTAP_SESSION_KEYS is not set".to_string())
        .and_then(|spec| KeyRing::parse(&spec).map_err(|e| format!("BIGTAP_SESSION_KEYS: {e}")))
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("naive: {e}");
            return ExitCode::from(2);
        }
    };
    let tickets = if args.small_body {
        None
    } else {
        match std::env::var("BIGTAP_TICKET_KEYS")
            .map_err(|_| "BIGTAP_TICKET_KEYS is not set (or pass --small-body)".to_string())
            .and_then(|spec| KeyRing::parse(&spec).map_err(|e| format!("BIGTAP_TICKET_KEYS: {e}")))
        {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("naive: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(usize::from(n));
    }
    match builder.build() {
        Ok(rt) => rt.block_on(run(args, sessions, tickets)),
        Err(e) => {
            eprintln!("naive: runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
