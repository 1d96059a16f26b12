//! Routing by path segments, without allocation.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::RequestBody;
use hyper::{Method, Request};

use super::response::{self, Reply};
use super::Shared;
use super::{admin, backend, buyer, cors};
use crate::admission::Taking;
use crate::auth::KeyRing;
use crate::id::{SaleId, TicketId};
use crate::metrics::Route;

/// Where a request goes, parsed from the path into copyable values so the
/// request itself can then be moved into its handler.
#[derive(Clone, Copy)]
pub enum Target {
    Take(Option<SaleId>),
    Mine(Option<SaleId>),
    Status(Option<SaleId>),
    Ticket(Option<(SaleId, TicketId)>, backend::Action),
    Admin(Option<SaleId>, admin::Action),
    Healthz,
    Readyz,
    Metrics,
    NotFound,
}

impl Target {
    /// Whether this is a buyer route, the only kind a browser page may call
    /// (CORS, DESIGN §3).
    pub fn buyer(&self) -> bool {
        matches!(self, Target::Take(_) | Target::Mine(_) | Target::Status(_))
    }

    /// The metrics route.
    pub fn route(&self) -> Route {
        match self {
            Target::Take(_) => Route::Take,
            Target::Mine(_) => Route::Mine,
            Target::Status(_) => Route::SaleStatus,
            Target::Ticket(..) => Route::Backend,
            Target::Admin(..) => Route::Admin,
            Target::Healthz | Target::Readyz => Route::Probe,
            Target::Metrics => Route::Metrics,
            Target::NotFound => Route::Unknown,
        }
    }
}

/// Parses a request path once, for both dispatch and metrics.
pub fn target(path: &str) -> Target {
    let mut seg = path.trim_start_matches('/').split('/');
    let parts = (
        seg.next(),
        seg.next(),
        seg.next(),
        seg.next(),
        seg.next(),
        seg.next(),
        seg.next(),
    );
    match parts {
        (Some("v1"), Some("sales"), Some(s), Some("tickets"), None, None, None) => {
            Target::Take(SaleId::parse(s).ok())
        }
        (Some("v1"), Some("sales"), Some(s), Some("tickets"), Some("mine"), None, None) => {
            Target::Mine(SaleId::parse(s).ok())
        }
        (Some("v1"), Some("sales"), Some(s), None, None, None, None) => {
            Target::Status(SaleId::parse(s).ok())
        }
        (Some("v1"), Some("sales"), Some(s), Some("tickets"), Some(t), action, None) => {
            let ids = SaleId::parse(s).ok().zip(TicketId::parse(t).ok());
            Target::Ticket(ids, backend::Action::parse(action))
        }
        (Some("v1"), Some("admin"), Some("sales"), Some(s), action, None, None) => {
            Target::Admin(SaleId::parse(s).ok(), admin::Action::parse(action))
        }
        (Some("healthz"), None, ..) => Target::Healthz,
        (Some("readyz"), None, ..) => Target::Readyz,
        (Some("metrics"), None, ..) => Target::Metrics,
        _ => Target::NotFound,
    }
}

pub fn dispatch<B: RequestBody>(
    shared: &Arc<Shared>,
    req: Request<B>,
    peer: IpAddr,
    target: Target,
) -> Routed<'_> {
    let method = req.method();
    let cors = &shared.config.cors_origins;
    if method == Method::OPTIONS && target.buyer() && cors.enabled() {
        return Routed::ready(cors::preflight(cors, req.headers()));
    }
    Routed::ready(match target {
        Target::Take(sale) => {
            if method != Method::POST {
                return Routed::ready(response::method_not_allowed("POST"));
            }
            let Some(sale) = sale else {
                return Routed::ready(response::bad_request("bad_sale_id"));
            };
            return buyer::take(shared, sale, req, peer);
        }
        Target::Mine(sale) => {
            if method != Method::GET {
                return Routed::ready(response::method_not_allowed("GET"));
            }
            let Some(sale) = sale else {
                return Routed::ready(response::bad_request("bad_sale_id"));
            };
            return Routed::Waiting(Box::pin(buyer::mine(shared, sale, req, peer)));
        }
        Target::Status(sale) => {
            if method != Method::GET {
                return Routed::ready(response::method_not_allowed("GET"));
            }
            let Some(sale) = sale else {
                return Routed::ready(response::bad_request("bad_sale_id"));
            };
            let mut reply = buyer::status(shared, sale);
            cors::vary(cors, &mut reply.resp);
            reply
        }
        Target::Ticket(ids, action) => {
            let Some((sale, ticket)) = ids else {
                return Routed::ready(Reply::plain(response::bad_request("bad_id").resp));
            };
            return Routed::Waiting(Box::pin(backend::route(shared, sale, ticket, action, req)));
        }
        Target::Admin(sale, action) => {
            let Some(sale) = sale else {
                return Routed::ready(Reply::plain(response::bad_request("bad_sale_id").resp));
            };
            return Routed::Waiting(Box::pin(admin::route(shared, sale, action, req)));
        }
        Target::Readyz => return Routed::Waiting(Box::pin(ready(shared))),
        Target::Healthz => live(shared),
        Target::Metrics => {
            shared
                .metrics
                .inflight
                .set(shared.inflight.load(std::sync::atomic::Ordering::Relaxed) as f64);
            let mut r = response::json(hyper::StatusCode::OK, shared.metrics.render());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Reply::plain(r)
        }
        Target::NotFound => Reply::plain(response::not_found().resp),
    })
}

/// A route's reply in the making.
///
/// Answers from memory are ready at once; a take waits in its own small
/// future ([`Taking`]); every other route that waits is boxed. The request
/// future holds only this, so it stays the size of a reply: hyper moves
/// each request's future whole, and an `async` dispatcher would carry the
/// state of every route in every request.
pub enum Routed<'a> {
    /// Answered; `None` once handed out.
    Ready(Option<Reply>),
    /// A take: its answer becomes the reply.
    Take {
        taking: Taking,
        keys: &'a KeyRing,
        sale: SaleId,
    },
    Waiting(Pin<Box<dyn Future<Output = Reply> + Send + 'a>>),
}

impl Routed<'_> {
    pub fn ready(reply: Reply) -> Self {
        Routed::Ready(Some(reply))
    }
}

impl Future for Routed<'_> {
    type Output = Reply;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        match self.get_mut() {
            Routed::Ready(r) => match r.take() {
                Some(r) => Poll::Ready(r),
                // Polled again after it answered: a caller's bug, answered
                // safely rather than with a panic.
                None => Poll::Ready(response::unavailable()),
            },
            Routed::Take { taking, keys, sale } => Pin::new(taking)
                .poll(cx)
                .map(|answer| buyer::reply(keys, *sale, answer)),
            Routed::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}

/// Liveness, for whatever replaces instances: 200 while the process serves
/// or will recover by itself. A store outage is not a liveness failure
/// (replacing every node because the store blinked would make it worse).
fn live(shared: &Shared) -> Reply {
    if shared.health.can_recover() {
        Reply::plain(response::json(
            hyper::StatusCode::OK,
            &b"{\"status\":\"ok\"}"[..],
        ))
    } else {
        Reply::plain(response::json(
            hyper::StatusCode::SERVICE_UNAVAILABLE,
            &b"{\"status\":\"unrecoverable\",\"reason\":\"store_lost\"}"[..],
        ))
    }
}

/// Readiness, for the balancer: 200 only while this node can sell. Not
/// while it drains, not while it sheds load (every buyer would get 503),
/// not while the store does not answer.
async fn ready(shared: &Shared) -> Reply {
    let not_ready = |body: &'static [u8]| {
        Reply::plain(response::json(hyper::StatusCode::SERVICE_UNAVAILABLE, body))
    };
    if shared.health.is_draining() {
        return not_ready(b"{\"status\":\"not_ready\",\"reason\":\"draining\"}");
    }
    // This probe itself is in flight: count the others.
    let busy = shared
        .inflight
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(1);
    if busy >= shared.config.max_inflight {
        return not_ready(b"{\"status\":\"not_ready\",\"reason\":\"overloaded\"}");
    }
    match shared.store.ping().await {
        Ok(()) => Reply::plain(response::json(
            hyper::StatusCode::OK,
            &b"{\"status\":\"ready\"}"[..],
        ))
        .via_store(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            not_ready(b"{\"status\":\"not_ready\",\"reason\":\"store\"}").via_store()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_metric_routes() {
        let route = |p: &str| target(p).route();
        assert_eq!(route("/v1/sales/s/tickets"), Route::Take);
        assert_eq!(route("/v1/sales/s"), Route::SaleStatus);
        assert_eq!(route("/v1/sales/s/tickets/mine"), Route::Mine);
        assert_eq!(route("/v1/sales/s/tickets/t/confirm"), Route::Backend);
        assert_eq!(route("/v1/admin/sales/s/stock"), Route::Admin);
        assert_eq!(route("/readyz"), Route::Probe);
        assert_eq!(route("/metrics"), Route::Metrics);
        assert_eq!(route("/nope"), Route::Unknown);
        assert_eq!(route("/v1/sales/s/tickets/t/confirm/extra"), Route::Unknown);
    }
}
