//! The HTTP front tier: accept loop, connection limits, load shedding,
//! per-request timeout, graceful drain.
//!
//! Defences, each configurable (see `config`): a cap on open connections (a
//! permit is taken before `accept`, so excess connections wait in the
//! kernel's backlog instead of costing memory here); a head deadline
//! (slowloris) and an idle deadline for keep-alive connections, kept by one
//! sweeper (`deadline`); limits on header count and size (431, from hyper) and body
//! size (413); load shedding, which answers 503 at once when more than
//! `--max-inflight` requests are in progress, so an overloaded node fails
//! fast instead of queueing; a per-request timeout (503). On shutdown the
//! listener closes first, then in-flight requests get `--drain-ms` to
//! finish.

mod admin;
mod backend;
mod buyer;
pub mod cors;
mod deadline;
pub mod response;
mod router;
mod shared;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
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

use crate::metrics::Route;
use response::Body;

pub use shared::{Health, Shared};

/// Serves HTTP on `listener` until `shutdown`, then drains.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let c = &shared.config;
    let connections = Arc::new(Semaphore::new(c.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Head and idle deadlines are kept by one sweeper (see `deadline`),
        // not by a timer per request.
        .header_read_timeout(None)
        .max_headers(c.max_headers)
        .max_buf_size(c.max_header_bytes.max(8192));
    let deadlines = deadline::Deadlines::new(deadline::Limits {
        head_ms: c.header_timeout_ms,
        idle_ms: c.idle_timeout_ms,
    });
    let sweeper_stop = CancellationToken::new();
    tokio::spawn(deadlines.clone().sweep(sweeper_stop.clone()));
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
        let watch = deadlines.open();
        let w = watch.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let (s, w) = (s.clone(), w.clone());
            async move {
                w.busy();
                let resp = handle(s, req, peer.ip()).await;
                w.idle();
                Ok::<_, Infallible>(resp)
            }
        });
        let io = TokioIo::new(deadline::Watched::new(stream, watch.clone()));
        let conn = graceful.watch(builder.serve_connection(io, svc));
        let gauge = shared.metrics.open_connections.clone();
        gauge.increment(1.0);
        tokio::spawn(async move {
            // Past its head or idle deadline, the socket's calls fail
            // (deadline::Watched) and hyper ends the connection.
            let _ = conn.await;
            watch.done();
            gauge.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    shared.health.set_draining();
    let drain = Duration::from_millis(shared.config.drain_ms);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain deadline passed; closing remaining connections"),
    }
    sweeper_stop.cancel();
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
    let held = InFlight::enter(&shared);
    // Read before the request moves into its handler; shed and timed-out
    // buyer answers need the CORS headers as much as any other. Preflights
    // set their own.
    let cors_origin = (target.buyer() && req.method() != hyper::Method::OPTIONS)
        .then(|| cors::allowed_origin(&shared.config.cors_origins, req.headers()));
    // Probes and metrics are never shed: an overloaded node must still say
    // so, and still be measured.
    let exempt = matches!(route, Route::Probe | Route::Metrics);
    let mut reply = if held.count > shared.config.max_inflight && !exempt {
        m.shed.increment(1);
        response::unavailable()
    } else {
        let limit = Duration::from_millis(shared.config.request_timeout_ms);
        // The take route bounds its own waits (it must tell a commit of
        // unknown outcome from one never tried, DESIGN §3); this outer
        // deadline only backstops it.
        let limit = match target {
            router::Target::Take(_) => limit + crate::admission::take::SETTLE_GRACE,
            _ => limit,
        };
        match within(start + limit, router::dispatch(&shared, req, peer, target)).await {
            Some(r) => r,
            None => response::unavailable().via_store(),
        }
    };
    held.finish();
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

/// One request counted in [`Shared::inflight`] for as long as it lives.
///
/// The count is given back in `Drop`, not after an `.await`: when a buyer
/// hangs up, hyper drops the request future at whatever `.await` it was
/// parked on, and code after that point never runs. A count given back
/// only on the happy path leaks one slot per hang-up until the node sheds
/// everything.
struct InFlight<'a> {
    shared: &'a Shared,
    /// Requests in progress, this one included.
    count: usize,
    /// Set when the request ran to its end (not dropped half-way).
    finished: bool,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        // Relaxed: the count is a gauge read for shedding and `/readyz`; no
        // other memory is published through it, and a stale read sheds one
        // request early or late, nothing worse.
        let count = shared.inflight.fetch_add(1, Relaxed) + 1;
        InFlight {
            shared,
            count,
            finished: false,
        }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.shared.config.test_leak_inflight {
            // Negative control for the fault harness (never set in
            // production): the pre-guard behaviour, where a dropped request
            // never gave its slot back. A completed request still does.
            if !self.finished {
                return;
            }
        }
        self.shared.inflight.fetch_sub(1, Relaxed);
    }
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

pin_project_lite::pin_project! {
    /// A deadline armed only if the first poll of `fut` does not finish: a
    /// request answered from memory never touches the timer wheel
    /// (registering and cancelling a timer per request showed up in
    /// profiles), while one that waits on Redis is bounded as before.
    /// `None` when the time ran out.
    ///
    /// A struct rather than an `async fn`: an `async fn` keeps both its
    /// argument and the pinned copy of it in its state, which doubled the
    /// request future, and every request moves that future whole.
    struct Within<F> {
        #[pin]
        fut: F,
        until: Instant,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

fn within<F: Future>(until: Instant, fut: F) -> Within<F> {
    Within {
        fut,
        until,
        timer: None,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        let until = tokio::time::Instant::from_std(*this.until);
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        timer.as_mut().poll(cx).map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, F: Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_request_future_stays_small_enough_to_move_cheaply() {
        // hyper moves each request's future into its connection's slot, and
        // every layer moves its callee's future once more: a future of
        // kilobytes costs every request, refused ones too, that many
        // kilobytes copied. The store paths are boxed to keep it small
        // (it was 9,928 bytes before they were).
        let size = future_size(handle::<Incoming>);
        assert!(size <= 1536, "the request future grew to {size} bytes");
    }
}
