//! Baseline for the load test: the cheapest answer hyper can give.
//!
//! A bare hyper 1.x HTTP/1.1 server (keep-alive, tokio multi-thread runtime)
//! that answers every request with `410 {"outcome":"sold_out"}`, the same
//! bytes a bigtap node sends to a buyer after sell-out. `loadtest/run` measures
//! it with the same wrk settings as the sale, so the report can say how close
//! bigtap comes to the cost of HTTP alone on this machine.
//!
//! ```text
//! cargo run --release --example baseline -- --listen 127.0.0.1:9090 [--threads N]
//! ```
//!
//! It prints `listening on ADDR` once bound (so `--listen 127.0.0.1:0` works)
//! and stops on SIGINT or SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = br#"{"outcome":"sold_out"}"#;

/// The flags (`--help` lists them).
#[derive(clap::Parser)]
#[command(
    name = "baseline",
    about = "The cheapest answer hyper can give: 410 to every request"
)]
struct Args {
    /// Address to bind; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

async fn answer(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    *resp.status_mut() = StatusCode::GONE;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

async fn serve(listener: TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer));
            // Clients closing mid-request are normal under load; ignore.
            let _ = conn.await;
        });
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baseline: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("baseline: bind {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(addr) => println!("listening on {addr}"),
            Err(e) => {
                eprintln!("baseline: local_addr: {e}");
                return ExitCode::FAILURE;
            }
        }
        tokio::select! {
            _ = serve(listener) => {}
            _ = shutdown_signal() => {}
        }
        ExitCode::SUCCESS
    })
}
