//! The consumer's settings, independent of how they were given (flags,
//! environment, or a test building them by hand), and the retry backoff.

use std::net::SocketAddr;
use std::time::Duration;

use crate::id::SaleId;

/// How a consumer runs. [`ConsumerConfig::new`] gives the defaults of
/// `bigtap orders`. `Debug` hides the store password.
#[derive(Clone)]
pub struct ConsumerConfig {
    /// The store URL (`redis://`, `rediss://`, `redis+cluster://`,
    /// `rediss+cluster://`). Printed only through `StoreUrl` (redacted).
    pub redis_url: String,
    /// Key prefix (`bigtap`).
    pub prefix: String,
    /// The sales to consume; `None` means every member of `P:sales`,
    /// re-read every `discover_interval`.
    pub sales: Option<Vec<SaleId>>,
    /// This consumer's name in the group. Names must be unique among
    /// running consumers: two processes under one name would each believe
    /// the other's entries are their own.
    pub consumer: String,
    /// Entries delivered at once (each holds one in-flight sink call or one
    /// backoff sleep).
    pub concurrency: usize,
    /// Largest number of entries fetched by one XREADGROUP or XAUTOCLAIM.
    pub batch: usize,
    /// How often the set of sales is re-read.
    pub discover_interval: Duration,
    /// Longest pause between two reads of a sale that has no new entries
    /// (the pause doubles from 2 ms while the sale stays quiet). Bounds the
    /// delay of a quiet sale's next winner; the idle cost is one read per
    /// sale per `poll_max`.
    pub poll_max: Duration,
    /// Entries pending this long under another (presumably dead) consumer
    /// are taken over.
    pub claim_idle: Duration,
    /// Counted failed attempts after which an entry is dead-lettered.
    pub max_deliveries: u32,
    /// Backoff between attempts of one entry.
    pub retry: Backoff,
    /// How long in-flight deliveries may take to finish at shutdown.
    pub drain: Duration,
    /// Trim each order stream below every group's floor (see `orders_trim.lua`).
    pub trim: bool,
    /// How often gauges are refreshed (and streams trimmed, with `trim`).
    pub stats_interval: Duration,
    /// Where to serve `GET /metrics`; `None` serves nothing.
    pub metrics_listen: Option<SocketAddr>,
}

impl ConsumerConfig {
    /// The defaults of `bigtap orders` for `redis_url`, all sales, a unique
    /// consumer name, and no metrics listener.
    pub fn new(redis_url: &str) -> Self {
        ConsumerConfig {
            redis_url: redis_url.to_owned(),
            prefix: "bigtap".to_owned(),
            sales: None,
            consumer: unique_consumer_name(),
            concurrency: 64,
            batch: 256,
            discover_interval: Duration::from_secs(2),
            poll_max: Duration::from_millis(250),
            claim_idle: Duration::from_secs(30),
            max_deliveries: 10,
            retry: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
            drain: Duration::from_secs(10),
            trim: false,
            stats_interval: Duration::from_secs(1),
            metrics_listen: None,
        }
    }

    /// Checks the relations between settings that would otherwise show up
    /// as duplicate deliveries or a stuck consumer.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.batch == 0 {
            return Err("--concurrency and --batch must be at least 1".into());
        }
        if self.max_deliveries == 0 {
            return Err("--max-deliveries must be at least 1".into());
        }
        if self.retry.base.is_zero() || self.retry.max < self.retry.base {
            return Err("--retry-base-ms must be positive and at most --retry-max-ms".into());
        }
        // An entry sleeping in backoff must not look abandoned, or another
        // consumer would take it over while its owner is about to retry.
        if self.retry.max >= self.claim_idle {
            return Err("--retry-max-ms must be below --claim-idle-ms".into());
        }
        if self.prefix.is_empty() || self.consumer.is_empty() {
            return Err("--prefix and --consumer must not be empty".into());
        }
        Ok(())
    }
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("redis_url", &crate::store::redact(&self.redis_url))
            .field("prefix", &self.prefix)
            .field("sales", &self.sales)
            .field("consumer", &self.consumer)
            .field("concurrency", &self.concurrency)
            .field("batch", &self.batch)
            .field("discover_interval", &self.discover_interval)
            .field("poll_max", &self.poll_max)
            .field("claim_idle", &self.claim_idle)
            .field("max_deliveries", &self.max_deliveries)
            .field("retry", &self.retry)
            .field("drain", &self.drain)
            .field("trim", &self.trim)
            .field("stats_interval", &self.stats_interval)
            .field("metrics_listen", &self.metrics_listen)
            .finish()
    }
}

/// `hostname-pid-random`: readable in XINFO CONSUMERS, unique per process.
pub fn unique_consumer_name() -> String {
    let host = hostname().unwrap_or_else(|| "host".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..end])
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Exponential backoff with "equal jitter": the n-th retry waits between
/// half and all of `min(max, base * 2^(n-1))`. The floor of half keeps the
/// waits growing (a dead backend sees fewer and fewer calls); the random
/// half spreads consumers that failed together so they do not retry in
/// lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the `failures`-th wait (`failures` >= 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }

    /// The wait after the `failures`-th failure; `jitter` in [0, 1) comes
    /// from the caller so tests can fix it.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let c = self.ceiling(failures);
        let half = c / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let b = b();
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(5), Duration::from_millis(1600));
        assert_eq!(b.ceiling(6), Duration::from_secs(2));
        assert_eq!(b.ceiling(1000), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_ceiling() {
        let b = b();
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(400));
        assert!(b.delay(3, 0.5) > Duration::from_millis(200));
        // The smallest n+1-th wait is never shorter than the largest n-th.
        for n in 1..8 {
            assert!(b.delay(n + 1, 0.0) >= b.delay(n, 1.0).min(b.max / 2));
        }
    }

    #[test]
    fn a_backoff_longer_than_the_claim_idle_time_is_refused() {
        let mut c = ConsumerConfig::new("redis://127.0.0.1/");
        assert!(c.validate().is_ok());
        c.retry.max = c.claim_idle;
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_settings_print_without_the_store_password() {
        let c = ConsumerConfig::new("rediss+cluster://app:s3cret@cfg.example:6379");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("app:***@"),
            "{shown}"
        );
    }

    #[test]
    fn consumer_names_differ_per_instance() {
        assert_ne!(unique_consumer_name(), unique_consumer_name());
    }
}
