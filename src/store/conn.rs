//! One connection type for every store bigtap runs on: a single Redis or a
//! Redis Cluster, plain or TLS (`rediss://`, with the `tls` feature).
//!
//! Both kinds reconnect by themselves. Neither sends a command a second
//! time on its own: the cluster client is built with no retries, because it
//! would otherwise send a request again after a connection dropped with the
//! request already on the wire, running a script such as `add_stock` or
//! `lease` twice. Whether a failed call may be sent again is decided by
//! [`may_resend`], from the error and from whether the call is idempotent.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use super::url::StoreUrl;

/// A connection to one Redis or to a Redis Cluster. Cheap to clone: clones
/// share one multiplexed connection (per cluster node).
#[derive(Clone)]
pub enum Con {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Con {
    /// Connects lazily (the first command dials), so a store that is down
    /// at start-up is waited for rather than fatal. Within a Tokio runtime.
    /// `ca_pem`: for a TLS URL, the CA certificates (PEM) to trust instead
    /// of the public roots (a store behind a private CA).
    pub fn open(
        url: &StoreUrl,
        timeout: Duration,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Con, RedisError> {
        if url.is_cluster() {
            #[allow(unused_mut)]
            let mut builder = ClusterClient::builder([url.client_url()])
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // Never resend on its own: see the module docs.
                .retries(0);
            if let Some(ca) = ca_pem {
                builder = with_ca_cluster(builder, ca)?;
            }
            let client = builder.build()?;
            Ok(Con::Cluster(
                client.get_pending_async_connection_with_config(ClusterConfig::new()),
            ))
        } else {
            let client = match ca_pem {
                Some(ca) => single_with_ca(url.client_url(), ca)?,
                None => ::redis::Client::open(url.client_url())?,
            };
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                // Attempts at reconnecting; the manager never resends a command.
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            Ok(Con::Single(ConnectionManager::new_lazy_with_config(
                client, config,
            )?))
        }
    }
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Con::Single(c) => c.req_packed_command(cmd),
            Con::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Con::Single(c) => c.req_packed_commands(cmd, offset, count),
            Con::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Single(c) => c.get_db(),
            Con::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(feature = "tls")]
fn single_with_ca(url: &str, ca: Vec<u8>) -> Result<::redis::Client, RedisError> {
    ::redis::Client::build_with_tls(
        url,
        ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        },
    )
}

#[cfg(feature = "tls")]
fn with_ca_cluster(
    b: ::redis::cluster::ClusterClientBuilder,
    ca: Vec<u8>,
) -> Result<::redis::cluster::ClusterClientBuilder, RedisError> {
    Ok(b.certs(::redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca),
    }))
}

#[cfg(not(feature = "tls"))]
fn no_tls() -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "a store CA file needs the tls feature",
    ))
}

#[cfg(not(feature = "tls"))]
fn single_with_ca(_: &str, _: Vec<u8>) -> Result<::redis::Client, RedisError> {
    Err(no_tls())
}

#[cfg(not(feature = "tls"))]
fn with_ca_cluster(
    _: ::redis::cluster::ClusterClientBuilder,
    _: Vec<u8>,
) -> Result<::redis::cluster::ClusterClientBuilder, RedisError> {
    Err(no_tls())
}

/// Most times one call is sent again.
pub const MAX_RESENDS: u32 = 2;

/// Whether a call that failed with `e` may be sent again.
///
/// - Redirections and "try later" answers (MOVED, ASK, TRYAGAIN,
///   CLUSTERDOWN, LOADING, MASTERDOWN, READONLY) mean the server did not run
///   the command: sending it again is always safe. The cluster client
///   refreshes its slot map on MOVED, so the next send goes to the new owner.
/// - A refused connection means nothing was sent.
/// - Any other I/O failure (a reset, a timeout) may have hit after the
///   server ran the command: only an idempotent call may go again.
pub fn may_resend(e: &RedisError, idempotent: bool) -> bool {
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => true,
        _ if e.is_connection_refusal() => true,
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => idempotent,
        _ => false,
    }
}

/// Whether Redis itself answered the call with an error (`-OOM …`,
/// `-READONLY …`, `-BUSY …`, a refused argument): then the call changed
/// nothing. A command is atomic; every script validates before its first
/// write and so fails, if at all, before it; and Redis refuses a write for
/// want of memory (`maxmemory`, `noeviction`) only at a script's first
/// write, never half-way. Not an error of the connection or of parsing the
/// reply: those may come after the call ran.
pub fn answered_with_error(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

/// The pause before the `n`-th resend (n >= 1): long enough for a slot map
/// refresh or a reconnect.
pub fn resend_pause(n: u32) -> Duration {
    Duration::from_millis(25u64 << n.min(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_redis_answered_changed_nothing_and_a_broken_connection_may_have() {
        let oom = ::redis::make_extension_error(
            "OOM".into(),
            Some("command not allowed when used memory > 'maxmemory'".into()),
        );
        assert!(answered_with_error(&oom));
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        let reset: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(!answered_with_error(&refused));
        assert!(!answered_with_error(&reset));
        let unknown = crate::store::StoreError::Io(reset);
        assert!(unknown.maybe_applied());
        assert!(!crate::store::StoreError::Io(oom).maybe_applied());
    }
}
