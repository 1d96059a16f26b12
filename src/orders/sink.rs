//! Where winners go: the [`Sink`] trait and its HTTP implementation.
//!
//! The consumer only knows "deliver this order, tell me whether it
//! arrived". [`HttpSink`] implements the contract of DESIGN §6:
//! `POST <sink>` with the order as JSON and `Idempotency-Key: <ticket>`;
//! any 2xx means delivered, anything else (another status, a connection
//! error, no answer within the timeout) means try again later. Because a
//! delivery can be repeated (a consumer may die between the backend's 2xx
//! and its own acknowledgement), the backend must treat a repeated key as
//! the same order.
//!
//! `https://` sinks are verified with rustls against the Mozilla roots
//! (webpki-roots), the system's roots, and optionally a CA file of the
//! operator's (`--sink-ca-file`), for backends behind a private CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::stream::Order;

/// How much of an error answer's body is kept for the dead letter's `error`
/// field: enough to read the backend's reason, not enough to bloat Redis.
const ERROR_BODY_CHARS: usize = 200;
/// Bodies are read (so the connection can be reused) up to this size.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Idle keep-alive connections are dropped after this long.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Why one delivery attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The backend answered, but not with a 2xx.
    #[error("sink answered {status}: {body}")]
    Status { status: u16, body: String },
    /// No complete answer within the per-request timeout.
    #[error("sink did not answer within {0:?}")]
    Timeout(Duration),
    /// No connection could be made: the request never reached the backend.
    #[error("sink unreachable: {0}")]
    Unreachable(String),
    /// The connection broke during the exchange.
    #[error("sink request failed: {0}")]
    Transport(String),
}

impl SinkError {
    /// Whether this failure counts toward `--max-deliveries`. A connection
    /// that could not even be opened says nothing about the entry, only
    /// about the backend: counting it would dead-letter a whole sale during
    /// an outage. Such entries are retried with backoff until the backend
    /// is back. Everything that reached the backend counts.
    pub fn counts_as_attempt(&self) -> bool {
        !matches!(self, SinkError::Unreachable(_))
    }
}

/// A destination for orders. One call is one delivery attempt; retries,
/// backoff and acknowledgement are the consumer's business.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    async fn deliver(&self, order: &Order) -> Result<(), SinkError>;
}

/// The sink URL was not usable.
#[derive(Debug, thiserror::Error)]
pub enum SinkUrlError {
    #[error("sink URL {0} is not a URL: {1}")]
    Invalid(String, String),
    #[error("sink URL {0} must start with http:// or https://")]
    Scheme(String),
    #[error("sink CA file {0}: {1}")]
    CaFile(String, String),
}

/// `POST <url>` over pooled HTTP/1.1 keep-alive connections, plain or TLS.
pub struct HttpSink {
    uri: Uri,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpSink {
    /// A sink posting to `url` (`http://` or `https://host:port/path`),
    /// giving each request `timeout` from connect to the last byte of the
    /// answer.
    pub fn new(url: &str, timeout: Duration) -> Result<HttpSink, SinkUrlError> {
        HttpSink::with_ca_file(url, timeout, None)
    }

    /// As [`HttpSink::new`], also trusting the CA certificates (PEM) in
    /// `ca_file` for an `https://` sink.
    pub fn with_ca_file(
        url: &str,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<HttpSink, SinkUrlError> {
        // Errors show the URL without its password.
        let shown = crate::store::redact(url);
        let uri: Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| {
            SinkUrlError::Invalid(shown.clone(), e.to_string())
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(SinkUrlError::Scheme(shown));
        }
        if uri.authority().is_none() {
            return Err(SinkUrlError::Invalid(shown, "no host".into()));
        }
        let tls = tls_config(ca_file)?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        // The TLS layer needs the plain connector to pass https through.
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Ok(HttpSink {
            uri,
            timeout,
            client,
        })
    }

    async fn exchange(&self, order: &Order) -> Result<(), SinkError> {
        let key = HeaderValue::from_str(order.ticket.as_str())
            .map_err(|e| SinkError::Transport(e.to_string()))?;
        let req = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from(order.to_json())))
            .map_err(|e| SinkError::Transport(e.to_string()))?;
        let resp = self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                SinkError::Unreachable(error_chain(&e))
            } else {
                SinkError::Transport(error_chain(&e))
            }
        })?;
        let status = resp.status();
        // Read the body in full so the keep-alive connection can be reused.
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes());
        if status.is_success() {
            // The answer counts even if its body was cut off: the status
            // line is the backend's decision.
            return Ok(());
        }
        let text = match body {
            Ok(b) => String::from_utf8_lossy(&b)
                .chars()
                .take(ERROR_BODY_CHARS)
                .collect(),
            Err(_) => String::new(),
        };
        Err(SinkError::Status {
            status: status.as_u16(),
            body: text,
        })
    }
}

#[async_trait]
impl Sink for HttpSink {
    async fn deliver(&self, order: &Order) -> Result<(), SinkError> {
        match tokio::time::timeout(self.timeout, self.exchange(order)).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::Timeout(self.timeout)),
        }
    }
}

/// Roots for https sinks: Mozilla's (webpki-roots), the system's, and the
/// operator's CA file. An unreadable system store only loses its roots; an
/// unreadable CA file the operator named is an error.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, SinkUrlError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let system = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(system.certs);
    tracing::debug!(added, "system root certificates loaded");
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| SinkUrlError::CaFile(shown.clone(), e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SinkUrlError::CaFile(shown.clone(), e.to_string()))?;
        if certs.is_empty() {
            return Err(SinkUrlError::CaFile(shown, "no certificate in it".into()));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| SinkUrlError::CaFile(shown.clone(), e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkUrlError::CaFile("(tls settings)".into(), e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// An error and its causes on one line, for logs and dead letters.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_are_accepted_and_others_refused_without_showing_a_password() {
        let t = Duration::from_secs(1);
        assert!(HttpSink::new("http://127.0.0.1:9/orders", t).is_ok());
        assert!(HttpSink::new("https://example.com/orders", t).is_ok());
        let Err(e) = HttpSink::new("ftp://u:hunter2@example.com/orders", t) else {
            panic!("ftp:// accepted");
        };
        assert!(matches!(e, SinkUrlError::Scheme(_)));
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(HttpSink::new("not a url", t).is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_refused() {
        let t = Duration::from_secs(1);
        let url = "https://example.com/orders";
        let missing = Path::new("/nonexistent/ca.pem");
        assert!(matches!(
            HttpSink::with_ca_file(url, t, Some(missing)),
            Err(SinkUrlError::CaFile(..))
        ));
        let empty = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            HttpSink::with_ca_file(url, t, Some(empty.path())),
            Err(SinkUrlError::CaFile(..))
        ));
    }

    #[test]
    fn only_failures_that_reached_the_backend_count_as_attempts() {
        assert!(!SinkError::Unreachable("refused".into()).counts_as_attempt());
        assert!(SinkError::Timeout(Duration::from_secs(1)).counts_as_attempt());
        assert!(SinkError::Status {
            status: 500,
            body: String::new()
        }
        .counts_as_attempt());
    }
}
