//! Typed settings for `bigtap serve`, from flags and environment.
//!
//! Every flag also reads the environment variable shown in `--help`; flags
//! win (DESIGN §6). Defaults are chosen for one machine and are safe for a
//! fleet; each knob says why it exists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Key prefix in Redis unless `--prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "bigtap";

/// Settings of the front tier.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "BIGTAP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Redis URL: redis://, rediss:// (TLS), redis+cluster:// or
    /// rediss+cluster:// (a Redis Cluster; a private CA for TLS:
    /// BIGTAP_REDIS_CA_FILE=ca.pem). Without it, bigtap starts and
    /// supervises its own redis-server on a free loopback port (data in
    /// --data-dir).
    #[arg(long, env = "BIGTAP_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,

    /// Where the embedded redis-server keeps its append-only file.
    #[arg(long, env = "BIGTAP_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,

    /// Name of this node in leases and stream entries (default: unique per process).
    #[arg(long, env = "BIGTAP_NODE_ID")]
    pub node_id: Option<String>,

    /// Key prefix in Redis.
    #[arg(long, env = "BIGTAP_PREFIX", default_value = DEFAULT_PREFIX)]
    pub prefix: String,

    /// How long a silent node's lease lives before any node may reclaim it.
    /// Bounds undersell after a node dies; a live node renews at a third of it.
    #[arg(long, env = "BIGTAP_LEASE_TTL_MS", default_value_t = 3000)]
    pub lease_ttl_ms: u64,

    /// Largest lease one node takes at once. Leases shrink near the end of
    /// the stock so that no node sits on the last units.
    #[arg(long, env = "BIGTAP_LEASE_MAX", default_value_t = 512)]
    pub lease_max: u32,

    /// Requests per second per buyer (burst of 5); 0 turns it off.
    #[arg(long, env = "BIGTAP_USER_RATE", default_value_t = 2)]
    pub user_rate: u32,

    /// Requests per second per client address (burst of 2x); 0 = off.
    /// Behind a load balancer every request comes from the balancer unless
    /// --trust-forwarded-for is given.
    #[arg(long, env = "BIGTAP_ADDRESS_RATE", default_value_t = 0)]
    pub address_rate: u32,

    /// Take the client address from the last X-Forwarded-For entry (the one
    /// the load balancer appended). Only behind a trusted balancer.
    #[arg(long, env = "BIGTAP_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Session-token keys `KID:BASE64KEY[,...]`; the first signs, all verify.
    #[arg(long, env = "BIGTAP_SESSION_KEYS", hide_env_values = true)]
    pub session_keys: Option<String>,

    /// Purchase-token keys `KID:BASE64KEY[,...]`.
    #[arg(long, env = "BIGTAP_TICKET_KEYS", hide_env_values = true)]
    pub ticket_keys: Option<String>,

    /// Bearer key for /v1/admin routes.
    #[arg(long, env = "BIGTAP_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Bearer key for the order backend's ticket routes.
    #[arg(long, env = "BIGTAP_BACKEND_KEY", hide_env_values = true)]
    pub backend_key: Option<String>,

    /// Run against a Redis whose eviction policy or persistence cannot keep
    /// DESIGN §2's promises (or that forbids CONFIG GET, as managed stores do).
    #[arg(long, env = "BIGTAP_ALLOW_UNSAFE_REDIS")]
    pub allow_unsafe_redis: bool,

    /// Origins whose pages may call the buyer routes from a browser (CORS),
    /// comma-separated exact origins such as `https://shop.example`;
    /// default none. Admin, backend and probe routes never answer CORS.
    #[arg(
        long,
        env = "BIGTAP_CORS_ORIGINS",
        default_value = "",
        hide_default_value = true
    )]
    pub cors_origins: crate::http::cors::Origins,

    /// Create a demo sale and print a ready curl line (keys are generated
    /// when none are given).
    #[arg(long)]
    pub demo: bool,

    /// Most winners committed by one `admit` script call.
    #[arg(long, env = "BIGTAP_COMMIT_BATCH", default_value_t = 128)]
    pub commit_batch: usize,

    /// Commit batches in flight at once per sale.
    #[arg(long, env = "BIGTAP_COMMIT_CONCURRENCY", default_value_t = 2)]
    pub commit_concurrency: usize,

    /// While a sale's commit batch is out, the next one keeps filling and
    /// leaves when that batch returns, when it is full, or after this many
    /// milliseconds, whichever comes first (0: at once, up to
    /// --commit-concurrency batches out).
    #[arg(long, env = "BIGTAP_COMMIT_OVERLAP_MS", default_value_t = 2)]
    pub commit_overlap_ms: u64,

    /// Time allowed for one Redis call before the buyer gets 503.
    #[arg(long, env = "BIGTAP_REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,

    /// How often a node refreshes sale settings and accounting from Redis.
    #[arg(long, env = "BIGTAP_REFRESH_MS", default_value_t = 200)]
    pub refresh_ms: u64,

    /// How often expired tickets are swept back into the pool.
    #[arg(long, env = "BIGTAP_SWEEP_MS", default_value_t = 1000)]
    pub sweep_ms: u64,

    /// Open connections at most; further connections wait in the kernel's
    /// accept queue.
    #[arg(long, env = "BIGTAP_MAX_CONNECTIONS", default_value_t = 20000)]
    pub max_connections: usize,

    /// Requests in progress at most; beyond it requests are shed with 503
    /// at once instead of queueing.
    #[arg(long, env = "BIGTAP_MAX_INFLIGHT", default_value_t = 4096)]
    pub max_inflight: usize,

    /// Time a client gets to send its request headers (slowloris defence);
    /// 0 turns it off.
    #[arg(long, env = "BIGTAP_HEADER_TIMEOUT_MS", default_value_t = 5000)]
    pub header_timeout_ms: u64,

    /// How long a keep-alive connection may sit idle between requests. Keep
    /// it above the balancer's idle timeout (AWS ALB: 60 s), so that the
    /// balancer, not bigtap, closes idle connections; 0 = never.
    #[arg(long, env = "BIGTAP_IDLE_TIMEOUT_MS", default_value_t = 75_000)]
    pub idle_timeout_ms: u64,

    /// Time a request may take in total before it is answered with 503.
    #[arg(long, env = "BIGTAP_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,

    /// Largest operations request body accepted (413 beyond); an
    /// eligibility upload of 100,000 ids fits in the default. The take route
    /// accepts at most 1 KiB whatever this says.
    #[arg(long, env = "BIGTAP_BODY_LIMIT", default_value_t = 8 * 1024 * 1024)]
    pub body_limit: usize,

    /// Largest request head (request line plus headers) accepted (431 beyond).
    #[arg(long, env = "BIGTAP_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Most request headers accepted (431 beyond).
    #[arg(long, env = "BIGTAP_MAX_HEADERS", default_value_t = 64)]
    pub max_headers: usize,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "BIGTAP_DRAIN_MS", default_value_t = 10000)]
    pub drain_ms: u64,

    /// Test only: brings back the in-flight leak of requests dropped
    /// half-way (a buyer hanging up), so the fault harness can show that its
    /// liveness checker catches a wedged node. Never set it in production.
    #[arg(long, hide = true)]
    pub test_leak_inflight: bool,
}

impl ServeConfig {
    /// The defaults, as `bigtap serve` with no flags and no environment:
    /// the flags' own defaults, parsed from an empty command line with the
    /// environment switched off, so each default is written once.
    pub fn defaults() -> Self {
        let serve = <ServeConfig as Args>::augment_args(clap::Command::new("serve"))
            .mut_args(|a| a.env(None));
        let parsed = serve
            .try_get_matches_from(["serve"])
            .and_then(|m| <ServeConfig as clap::FromArgMatches>::from_arg_matches(&m));
        match parsed {
            Ok(config) => config,
            // Every flag has a default or is optional: only a defect in the
            // declarations above gets here, and the unit tests catch it.
            Err(e) => panic!("serve flags have no complete defaults: {e}"),
        }
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// This node's id: the configured one, or host-pid-random.
    pub fn node_id(&self) -> String {
        if let Some(n) = &self.node_id {
            return n.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "node".into());
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(32)
            .collect();
        format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        )
    }

    /// Checks combinations that would make the node misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_ttl_ms < 100 {
            return Err(ConfigError::Invalid("--lease-ttl-ms must be at least 100"));
        }
        if self.lease_max == 0 {
            return Err(ConfigError::Invalid("--lease-max must be at least 1"));
        }
        if self.commit_batch == 0 || self.commit_batch > 1000 {
            return Err(ConfigError::Invalid("--commit-batch must be 1..=1000"));
        }
        if self.commit_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "--commit-concurrency must be at least 1",
            ));
        }
        if self.max_inflight == 0 || self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "--max-inflight and --max-connections must be at least 1",
            ));
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::Invalid(
                "--prefix must be non-empty without braces or spaces",
            ));
        }
        if let Some(n) = &self.node_id {
            if <crate::id::Id>::parse(n).is_err() {
                return Err(ConfigError::Invalid(
                    "--node-id must be 1-64 characters of [A-Za-z0-9_-]",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{0} is required (or run with --demo to generate keys)")]
    Missing(&'static str),
    #[error("{0}: {1}")]
    Keys(&'static str, #[source] crate::auth::KeyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_flags_defaults_of_bigtap_serve() {
        let d = ServeConfig::defaults();
        assert_eq!(d.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(d.redis, None);
        assert_eq!(d.data_dir, PathBuf::from(".data"));
        assert_eq!(d.prefix, DEFAULT_PREFIX);
        assert_eq!((d.lease_ttl_ms, d.lease_max), (3000, 512));
        assert_eq!((d.user_rate, d.address_rate), (2, 0));
        assert_eq!((d.commit_batch, d.commit_concurrency), (128, 2));
        assert_eq!(d.commit_overlap_ms, 2);
        assert_eq!(
            (d.redis_timeout_ms, d.refresh_ms, d.sweep_ms),
            (1000, 200, 1000)
        );
        assert_eq!((d.max_connections, d.max_inflight), (20000, 4096));
        assert_eq!(
            (d.header_timeout_ms, d.idle_timeout_ms, d.request_timeout_ms),
            (5000, 75_000, 5000)
        );
        assert_eq!(d.body_limit, 8 * 1024 * 1024);
        assert_eq!((d.max_header_bytes, d.max_headers), (16 * 1024, 64));
        assert_eq!(d.drain_ms, 10000);
        assert!(!d.trust_forwarded_for && !d.allow_unsafe_redis && !d.demo);
        assert!(!d.test_leak_inflight);
        assert!(d.session_keys.is_none() && d.admin_key.is_none());
        assert!(d.validate().is_ok());
    }

    #[test]
    fn the_defaults_ignore_the_environment() {
        // A variable no other test sets, so setting it races with nothing.
        std::env::set_var("BIGTAP_DRAIN_MS", "1");
        let d = ServeConfig::defaults();
        std::env::remove_var("BIGTAP_DRAIN_MS");
        assert_eq!(d.drain_ms, 10000);
    }
}
