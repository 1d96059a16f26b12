//! Process control: `bigtap serve` and `bigtap orders` as real child
//! processes, so a crash is a real `kill -9` and a pause a real SIGSTOP.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{ADMIN_KEY, BACKEND_KEY, BIN, SESSION_KEYS, TICKET_KEYS};

/// Lease TTL of every node in the fault runs.
pub const LEASE_TTL_MS: u64 = 1000;
/// How long a fresh process gets to become ready.
const READY_WITHIN: Duration = Duration::from_secs(15);

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child we spawned; a stale pid fails harmlessly.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn command(log: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("BIGTAP_SESSION_KEYS", SESSION_KEYS)
        .env("BIGTAP_TICKET_KEYS", TICKET_KEYS)
        .env("BIGTAP_ADMIN_KEY", ADMIN_KEY)
        .env("BIGTAP_BACKEND_KEY", BACKEND_KEY)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        Ok(f) => c.stderr(f),
        Err(_) => c.stderr(Stdio::null()),
    };
    c
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Ports a node start tries before it gives up (see [`NodeProc::start`]).
const PORT_TRIES: usize = 5;

fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// A `bigtap serve` process.
pub struct NodeProc {
    child: Option<Child>,
    pub port: u16,
    pub node_id: String,
    pub redis_url: String,
    pub extra: Vec<String>,
    /// Environment besides the test keys (a store's CA file, say).
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl NodeProc {
    /// Starts a node on `port` and waits until it is ready; if something
    /// takes the port first, on another one (read `port` or `url` after).
    pub async fn start(
        node_id: &str,
        redis_url: &str,
        port: u16,
        extra: &[&str],
        log_dir: &Path,
    ) -> Result<NodeProc, String> {
        Self::start_with_env(node_id, redis_url, port, extra, &[], log_dir).await
    }

    /// Like [`NodeProc::start`], with `env` in the node's environment (on
    /// every start, restarts too).
    pub async fn start_with_env(
        node_id: &str,
        redis_url: &str,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<NodeProc, String> {
        let mut n = NodeProc {
            child: None,
            port,
            node_id: node_id.to_owned(),
            redis_url: redis_url.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: owned(env),
            log: log_dir.join(format!("{node_id}.log")),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        };
        // The port was free when the caller chose it, but a listener or an
        // outgoing connection of this process may take it before the node
        // binds (the kernel hands out ports it just freed): choose another
        // rather than fail a run over the test's own race.
        n.spawn_until_bound(true).await?;
        Ok(n)
    }

    /// Spawns the node; when its port is taken, tries again (up to
    /// [`PORT_TRIES`]) on a fresh port, or with `move_port` false on the same
    /// one after a pause.
    async fn spawn_until_bound(&mut self, move_port: bool) -> Result<(), String> {
        for _ in 1..PORT_TRIES {
            let logged = log_len(&self.log);
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(e) if !self.logged_since(logged, "Address already in use") => return Err(e),
                Err(_) if move_port => {
                    self.port = bigtap::store::embedded::free_port().map_err(|e| e.to_string())?;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        self.spawn().await
    }

    /// Whether the node's log gained `text` after its first `from` bytes.
    fn logged_since(&self, from: u64, text: &str) -> bool {
        std::fs::read(&self.log).is_ok_and(|log| {
            let new = log.get(from as usize..).unwrap_or_default();
            String::from_utf8_lossy(new).contains(text)
        })
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let mut c = command(&self.log);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--redis", &self.redis_url])
            .args(["--node-id", &self.node_id]);
        let ttl = LEASE_TTL_MS.to_string();
        let defaults = [
            ("--lease-ttl-ms", ttl.as_str()),
            ("--user-rate", "0"),
            ("--refresh-ms", "50"),
            ("--sweep-ms", "200"),
            ("--redis-timeout-ms", "500"),
        ];
        for (flag, value) in defaults {
            // A flag given in `extra` replaces the default.
            if !self.extra.iter().any(|e| e == flag) {
                c.args([flag, value]);
            }
        }
        c.args(&self.extra);
        let child = c.spawn().map_err(|e| format!("spawn bigtap serve: {e}"))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!(
                        "{} exited during start-up ({status}); see {}",
                        self.node_id,
                        self.log.display()
                    ));
                }
            }
            if let Ok(r) = self.http.get(format!("{}/readyz", self.url())).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("{} not ready in time", self.node_id));
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9`: no drain, no lease returned.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts the node again (after a kill) under a new node id, the way an
    /// orchestrator replaces a crashed instance.
    pub async fn restart_as(&mut self, node_id: &str) -> Result<(), String> {
        self.kill().await;
        self.node_id = node_id.to_owned();
        // Buyers know the node by its port, so it comes back on the same
        // one; a connection that took it meanwhile is waited out.
        self.spawn_until_bound(false).await
    }

    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGSTOP);
        }
    }

    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGCONT);
        }
    }

    /// SIGTERM: the graceful stop.
    pub fn signal_term(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGTERM);
        }
    }

    /// Waits up to `limit` for the process to exit (killing it after that).
    pub async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        match tokio::time::timeout(limit, c.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = c.kill().await;
                None
            }
        }
    }

    /// SIGTERM, then waits up to `limit` for the exit.
    pub async fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal_term();
        self.wait(limit).await
    }

    /// Sum of `bigtap_commits_total{result="fenced"}` on this node.
    pub async fn fenced_commits(&self) -> Option<u64> {
        let text = self.metrics().await?;
        Some(metric_sum(
            &text,
            "bigtap_commits_total",
            "result=\"fenced\"",
        ))
    }

    /// Units the node holds locally, as its gauge last saw them.
    pub async fn local_units(&self) -> Option<u64> {
        let text = self.metrics().await?;
        Some(metric_sum(&text, "bigtap_stock_local_units", ""))
    }

    async fn metrics(&self) -> Option<String> {
        self.http
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }
}

/// Sums the samples of `name` whose labels contain `label`.
pub fn metric_sum(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// True when the binary has a working `orders` subcommand (it is optional
/// in the fault runs until it exists).
pub fn orders_available() -> bool {
    std::process::Command::new(BIN)
        .args(["orders", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--sink"))
        .unwrap_or(false)
}

/// A `bigtap orders` consumer process.
pub struct OrdersProc {
    child: Option<Child>,
    redis_url: String,
    sink: String,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl OrdersProc {
    pub fn start(redis_url: &str, sink: &str, log_dir: &Path) -> Result<OrdersProc, String> {
        Self::start_with_env(redis_url, sink, &[], log_dir)
    }

    /// Like [`OrdersProc::start`], with `env` in the consumer's environment.
    pub fn start_with_env(
        redis_url: &str,
        sink: &str,
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<OrdersProc, String> {
        let mut p = OrdersProc {
            child: None,
            redis_url: redis_url.to_owned(),
            sink: sink.to_owned(),
            env: owned(env),
            log: log_dir.join("orders.log"),
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut c = command(&self.log);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.arg("orders")
            .args(["--redis", &self.redis_url])
            .args(["--sink", &self.sink])
            .args(["--claim-idle-ms", "1000", "--retry-base-ms", "50"])
            .args(["--retry-max-ms", "400", "--sink-timeout-ms", "300"])
            .args(["--discover-ms", "200"])
            .args(["--metrics-listen", "127.0.0.1:0"]);
        self.child = Some(c.spawn().map_err(|e| format!("spawn bigtap orders: {e}"))?);
        // A consumer that refuses its settings exits at once: say why.
        std::thread::sleep(Duration::from_millis(100));
        if !self.is_running() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            return Err(format!("bigtap orders exited at start: {log}"));
        }
        Ok(())
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill().await;
        self.spawn()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}
