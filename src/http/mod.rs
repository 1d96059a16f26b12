//! The HTTP front tier: accept loop, connection limits, load shedding,
//! per-request timeout, graceful drain.
//!
//! Defences, each configurable (see `config`): a cap on open connections (a
//! permit is taken before `accept`, so excess connections wait in the
//! kernel's backlog instead of costing memory here); a header read timeout
//! (slowloris); limits on header count and size (431, from hyper) and body
//! size (413); load shedding, which answers 503 at once when more than
//! `--max-inflight` requests are in progress, so an overloaded node fails
//! fast instead of queueing; a per-request timeout (503). On shutdown the
//! listener closes first, then in-flight requests get `--drain-ms` to
//! finish.

mod admin;
mod backend;
mod buyer;
pub mod cors;
pub mod response;
mod router;

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::app::Shared;
use response::Body;

pub use admin::accounting as accounting_json;

/// Serves HTTP on `listener` until `shutdown`, then drains.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let c = &shared.config;
    let connections = Arc::new(Semaphore::new(c.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(
            (c.header_timeout_ms > 0).then(|| Duration::from_millis(c.header_timeout_ms)),
        )
        .max_headers(c.max_headers)
        .max_buf_size(c.max_header_bytes.max(8192));
    let graceful = GracefulShutdown::new();
    tracing::info!(addr = ?listener.local_addr().ok(), node = %shared.node, "listening");
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let s = shared.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let s = s.clone();
            async move { Ok::<_, Infallible>(handle(s, req, peer.ip()).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
        let gauge = shared.metrics.open_connections.clone();
        gauge.increment(1.0);
        tokio::spawn(async move {
            let _ = conn.await;
            gauge.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    let drain = Duration::from_millis(shared.config.drain_ms);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain deadline passed; closing remaining connections"),
    }
}

/// A request body the routes can read: hyper's `Incoming` on the wire, any
/// other body in benchmarks and tests that skip the socket.
pub trait RequestBody:
    hyper::body::Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + Unpin
    + 'static
{
}

impl<T> RequestBody for T where
    T: hyper::body::Body<
            Data = bytes::Bytes,
            Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        > + Send
        + Unpin
        + 'static
{
}

/// One request: shed, route, time out, count. Public so that benchmarks can
/// drive the whole request path in process, without a socket.
pub async fn handle<B: RequestBody>(
    shared: Arc<Shared>,
    req: Request<B>,
    peer: std::net::IpAddr,
) -> Response<Body> {
    let start = Instant::now();
    let target = router::target(req.uri().path());
    let route = target.route();
    let m = &shared.metrics;
    // The in-flight gauge is published when metrics are rendered, not here:
    // two gauge writes per request cost more than the count itself.
    let inflight = shared.inflight.fetch_add(1, Relaxed) + 1;
    // Read before the request moves into its handler; shed and timed-out
    // buyer answers need the CORS headers as much as any other. Preflights
    // set their own.
    let cors_origin = (target.buyer() && req.method() != hyper::Method::OPTIONS)
        .then(|| cors::allowed_origin(&shared.config.cors_origins, req.headers()));
    let mut reply = if inflight > shared.config.max_inflight && route != router::PROBE {
        m.shed.increment(1);
        response::unavailable()
    } else {
        let limit = Duration::from_millis(shared.config.request_timeout_ms);
        match within(limit, router::dispatch(&shared, req, peer, target)).await {
            Some(r) => r,
            None => response::unavailable().via_store(),
        }
    };
    shared.inflight.fetch_sub(1, Relaxed);
    if let Some(origin) = cors_origin {
        cors::decorate(&shared.config.cors_origins, origin, &mut reply.resp);
    }
    let status = reply.resp.status().as_u16();
    m.request(
        route,
        response::slot(status, reply.outcome),
        status_str(status),
        reply.outcome,
    );
    m.latency(route, reply.from_memory, start.elapsed().as_secs_f64());
    reply.resp
}

fn status_str(s: u16) -> &'static str {
    match s {
        200 => "200",
        204 => "204",
        201 => "201",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        410 => "410",
        413 => "413",
        425 => "425",
        429 => "429",
        431 => "431",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

/// Reads a body of at most `limit` bytes (413 beyond, 400 if it breaks off).
pub(crate) async fn read_limited<B: RequestBody>(
    body: B,
    limit: usize,
) -> Result<bytes::Bytes, response::Reply> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(response::too_large()),
        Err(_) => Err(response::bad_request("unreadable_body")),
    }
}

/// A deadline armed only if the first poll of `fut` does not finish: a
/// request answered from memory never touches the timer wheel (registering
/// and cancelling a timer per request showed up in profiles), while one
/// that waits on Redis is bounded as before. `None` when the time ran out.
async fn within<F: std::future::Future>(limit: Duration, fut: F) -> Option<F::Output> {
    use std::task::Poll;
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(out) => Some(out),
        Poll::Pending => tokio::time::timeout(limit, fut).await.ok(),
    }
}
