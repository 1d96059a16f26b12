//! The reference shop page: what a shop's web page does to sell through
//! bigtap, served on an origin of its own so that the browser speaks CORS
//! to bigtap exactly as it would from `https://shop.example`.
//!
//! The page is plain HTML and one small script (`shop.html`, `shop.js`,
//! compiled into the binary); it is also the reference client code for
//! shops. This module owns only the tiny static server that `bigtap serve
//! --demo` starts on a second port, and the page's settings, which stand in
//! for what the shop's login would give the page: bigtap's address, the
//! sale, and one session token per demo buyer.
//!
//! Routes: `GET /` the page, `GET /shop.js` its script, `GET /shop.json`
//! its settings; anything else is 404. The page server touches none of
//! bigtap's state; [`setup`] creates the demo sale through [`crate::ops`].

pub mod setup;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const PAGE: &str = include_str!("shop.html");
const SCRIPT: &str = include_str!("shop.js");

/// One demo buyer: what the shop's login hands the page after sign-in.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Buyer {
    pub user: String,
    /// A session token (DESIGN §4) minted by the shop for this user.
    pub session: String,
}

/// The page's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shop {
    /// bigtap's public base URL, e.g. `http://127.0.0.1:8080`.
    pub api: String,
    /// The sale the page sells (a `?sale=` query parameter overrides it).
    pub sale: String,
    pub buyers: Vec<Buyer>,
}

/// Serves the shop page on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, shop: Shop, stop: CancellationToken) {
    let settings = Bytes::from(serde_json::to_vec(&shop).unwrap_or_default());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Some(Duration::from_secs(5)));
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "shop page: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let settings = settings.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let settings = settings.clone();
            async move { Ok::<_, Infallible>(answer(&req, settings)) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Binds the shop page's listener: next to bigtap's port when it is free
/// (a stable address to bookmark), else any free port.
pub async fn bind_next_to(api: SocketAddr) -> std::io::Result<TcpListener> {
    if api.port() != 0 && api.port() < u16::MAX {
        let next = SocketAddr::new(api.ip(), api.port() + 1);
        if let Ok(l) = TcpListener::bind(next).await {
            return Ok(l);
        }
    }
    TcpListener::bind(SocketAddr::new(api.ip(), 0)).await
}

fn answer(req: &Request<Incoming>, settings: Bytes) -> Response<Full<Bytes>> {
    let found = |body: Bytes, kind: &'static str| {
        let mut r = Response::new(Full::new(body));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
        // Settings carry fresh sessions; the page is small: never cached.
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    };
    if req.method() != Method::GET {
        let mut r = Response::new(Full::new(Bytes::from_static(b"method not allowed\n")));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return r;
    }
    match req.uri().path() {
        "/" | "/index.html" => found(
            Bytes::from_static(PAGE.as_bytes()),
            "text/html; charset=utf-8",
        ),
        "/shop.js" => found(
            Bytes::from_static(SCRIPT.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        "/shop.json" => found(settings, "application/json"),
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}
