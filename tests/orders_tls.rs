//! TLS at both ends of the order pipeline, with CAs made by the test:
//! an https order backend (the consumer delivers to it when given the CA
//! file, and refuses to when not), and a `rediss://` store (every command
//! reaches it given `BIGTAP_REDIS_CA_FILE`).

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigtap::orders::{Consumer, HttpSink, Order, Sink, SinkError};
use bigtap::{SaleId, TicketId, UserId};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::consumer::*;
use support::tls::TestCa;
use support::{eventually, BIN, PATIENCE};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A TLS order backend answering 200 and recording each Idempotency-Key.
struct TlsBackend {
    port: u16,
    ca_pem: String,
    keys: Arc<Mutex<Vec<String>>>,
}

async fn tls_backend() -> TlsBackend {
    let TestCa {
        ca_pem,
        leaf_der,
        key_der,
        ..
    } = TestCa::new();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = keys.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        if let Some(k) = req.headers().get("idempotency-key") {
                            seen.lock()
                                .unwrap()
                                .push(k.to_str().unwrap_or("").to_owned());
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsBackend { port, ca_pem, keys }
}

/// A CA and a certificate for `localhost` signed by it: (CA PEM, cert
/// PEM, key PEM, cert DER, key DER).
impl TlsBackend {
    fn url(&self) -> String {
        format!("https://localhost:{}/orders", self.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winners_reach_an_https_backend_whose_ca_is_given() {
    let backend = tls_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &backend.ca_pem).unwrap();

    let store = Store::start().await;
    store.create_sale("s1").await;
    let winners = store.add_winners("s1", 50).await;
    let sink = HttpSink::with_ca_file(&backend.url(), Duration::from_secs(2), Some(&ca)).unwrap();
    let consumer = Consumer::connect(consumer_config(&store), Arc::new(sink))
        .await
        .unwrap();
    let (token, task) = spawn_consumer(consumer);
    assert!(
        eventually(PATIENCE, || async { store.drained("s1").await }).await,
        "timed out waiting until every winner was delivered over TLS and acknowledged"
    );
    let got: std::collections::HashSet<String> =
        backend.keys.lock().unwrap().iter().cloned().collect();
    let want: std::collections::HashSet<String> = winners.into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, want);
    stop_consumer(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_backend_with_an_unknown_ca_is_not_trusted() {
    let backend = tls_backend().await;
    let sink = HttpSink::new(&backend.url(), Duration::from_secs(2)).unwrap();
    let order = Order {
        ticket: TicketId::random(),
        sale: SaleId::parse("s1").unwrap(),
        user: UserId::parse("u1").unwrap(),
        issued_at_ms: 1,
        expires_at_ms: 2,
        warehouse: None,
    };
    let err = sink.deliver(&order).await.unwrap_err();
    assert!(
        matches!(err, SinkError::Unreachable(_) | SinkError::Transport(_)),
        "{err}"
    );
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(backend.keys.lock().unwrap().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_reaches_a_tls_store_whose_ca_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let files = TestCa::new().write(dir.path());
    let ca = files.ca.to_str().unwrap().to_owned();
    let tls_port = bigtap::store::embedded::free_port().unwrap();
    let args = files.redis_args(tls_port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _redis = bigtap::store::embedded::RedisProcess::start_temporary_with(&args)
        .expect("redis-server starts with TLS");
    let url = format!("rediss://localhost:{tls_port}/");

    // The sale CLI and the dead-letter command, as processes.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env("BIGTAP_REDIS_URL", &url)
            .env("BIGTAP_REDIS_CA_FILE", &ca)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["sale", "create", "tls", "--stock", "3"]).contains("created sale tls"));
    assert!(run(&["sale", "show", "tls"]).contains("\"stock_total\":3"));
    assert!(run(&["orders", "dead", "list", "--sale", "tls"]).is_empty());

    // In process, with the CA given explicitly; and refused without it.
    use bigtap::store::redis::RedisStore;
    use bigtap::store::Store;
    let t = Duration::from_secs(2);
    let store =
        RedisStore::open_with_ca(&url, "bigtap", t, None, Some(std::path::Path::new(&ca))).unwrap();
    let sale = SaleId::parse("tls").unwrap();
    let snap = store.snapshot(&sale).await.unwrap().unwrap();
    assert_eq!(snap.stock_total, 3);
    let untrusted = RedisStore::open_with_ca(&url, "bigtap", t, None, None).unwrap();
    let err = untrusted.ping().await.unwrap_err();
    assert!(
        err.to_string().contains("UnknownIssuer") || err.to_string().contains("certificate"),
        "{err}"
    );
}
