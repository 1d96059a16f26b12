//! A real Redis Cluster for tests: three primaries (no replicas) on random
//! loopback ports, AOF always, created with `redis-cli --cluster create`
//! and waited for until every node says `cluster_state:ok`. Killed on drop.
//! [`RedisCluster::start_tls`] starts it behind TLS as production runs it
//! (MemoryDB, ElastiCache): a TLS port per shard, the cluster bus over
//! TLS, a certificate signed by a CA of the test's own.
//!
//! Also [`CutProxy`], a TCP relay that can drop a connection after the
//! server answered and before the client sees the answer: the one failure
//! after which a client cannot know whether its command ran.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bigtap::store::embedded::RedisProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::tls::{TestCa, TlsFiles};

/// Settings every cluster node gets.
const NODE_ARGS: [&str; 4] = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"];

/// A running three-shard Redis Cluster.
pub struct RedisCluster {
    /// The processes started as the shards' primaries.
    pub shards: Vec<RedisProcess>,
    /// With [`RedisCluster::start_with_replicas`], `replicas[i]` started as
    /// the replica of `shards[i]` (a failover swaps their roles); else empty.
    pub replicas: Vec<RedisProcess>,
    tls: Option<ClusterTls>,
}

/// A TLS cluster's ports and the files its clients need.
struct ClusterTls {
    /// Each shard's TLS port, in the order of `shards`.
    ports: Vec<u16>,
    files: TlsFiles,
    _dir: tempfile::TempDir,
}

/// Tries at starting a TLS shard: its TLS port is chosen free before
/// redis-server binds it, and another process may take it in between.
const TLS_PORT_TRIES: usize = 5;

impl RedisCluster {
    /// Starts three primaries and joins them into one cluster (slots split
    /// evenly). Panics if redis-server or redis-cli is missing.
    pub fn start() -> RedisCluster {
        let shards: Vec<RedisProcess> = (0..3)
            .map(|_| {
                RedisProcess::start_temporary_with(&NODE_ARGS)
                    .expect("redis-server starts in cluster mode")
            })
            .collect();
        Self::join(shards, None)
    }

    /// Like [`Self::start`], behind TLS: every shard also listens on a TLS
    /// port with a certificate for `127.0.0.1` signed by a fresh test CA
    /// (the address is what the cluster tells clients), and the shards
    /// talk to each other over TLS (`tls-cluster`). A TLS client is told
    /// the shards' TLS ports. The plain ports stay for the test's own
    /// `redis-cli` calls.
    pub fn start_tls() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TestCa::new().write(dir.path());
        let mut shards = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..3 {
            let (shard, port) = tls_node(&files);
            shards.push(shard);
            ports.push(port);
        }
        Self::join(
            shards,
            Some(ClusterTls {
                ports,
                files,
                _dir: dir,
            }),
        )
    }

    fn join(shards: Vec<RedisProcess>, tls: Option<ClusterTls>) -> RedisCluster {
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for n in &shards {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed with redis-server");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = RedisCluster {
            shards,
            replicas: Vec::new(),
            tls,
        };
        c.wait_ok();
        c
    }

    /// Like [`Self::start`], with a replica for each shard, so that a shard
    /// can fail over: `replicas[i]` follows `shards[i]`.
    pub fn start_with_replicas() -> RedisCluster {
        Self::start().with_replicas()
    }

    /// Like [`Self::start_tls`], with a replica for each shard, following
    /// its primary over TLS (`tls-replication`), as a managed store's do.
    pub fn start_tls_with_replicas() -> RedisCluster {
        Self::start_tls().with_replicas()
    }

    fn with_replicas(self) -> RedisCluster {
        let mut c = self;
        for i in 0..c.shards.len() {
            let r = match &c.tls {
                None => RedisProcess::start_temporary_with(&NODE_ARGS)
                    .expect("redis-server starts in cluster mode"),
                Some(tls) => tls_node(&tls.files).0,
            };
            let id = cli(c.shards[i].port(), &["cluster", "myid"])
                .trim()
                .to_owned();
            // The primary's cluster-bus address as it announces it
            // (`ip:port@cport`; behind TLS, the bus follows the TLS port).
            let nodes = cli(c.shards[i].port(), &["cluster", "nodes"]);
            let me = nodes
                .lines()
                .find(|l| l.contains("myself"))
                .and_then(|l| l.split_whitespace().nth(1))
                .expect("CLUSTER NODES names the node itself")
                .to_owned();
            let (addr, bus) = me.split_once('@').expect("ip:port@cport");
            let port = addr.rsplit(':').next().unwrap_or_default();
            // A hostname may follow the bus port.
            let bus = bus.split(',').next().unwrap_or_default();
            let out = cli(r.port(), &["cluster", "meet", "127.0.0.1", port, bus]);
            assert!(out.contains("OK"), "cluster meet: {out}");
            // The replica must have learnt of the primary through the bus
            // before it can follow it.
            let follows = poll(|| cli(r.port(), &["cluster", "replicate", &id]).contains("OK"));
            assert!(
                follows,
                "the new node did not become a replica of shard {i}"
            );
            c.replicas.push(r);
        }
        for r in &c.replicas {
            let up =
                poll(|| cli(r.port(), &["info", "replication"]).contains("master_link_status:up"));
            assert!(up, "a replica did not catch up with its primary");
        }
        c.wait_ok();
        c
    }

    /// The ports of shard `i`'s pair (see [`Self::start_with_replicas`]) as
    /// they are now, primary first: a failover swaps them.
    pub fn pair_ports(&self, i: usize) -> (u16, u16) {
        let (a, b) = (self.shards[i].port(), self.replicas[i].port());
        if is_primary(a) {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// A coordinated failover of shard `i` (`CLUSTER FAILOVER` on its
    /// replica, as a managed store does for maintenance): the replica takes
    /// over once it has every write, and the old primary follows it. Waits
    /// until the cluster is up with the new roles.
    pub fn failover(&self, i: usize) {
        let (primary, replica) = self.pair_ports(i);
        let out = cli(replica, &["cluster", "failover"]);
        assert!(out.contains("OK"), "cluster failover: {out}");
        let swapped = poll(|| is_primary(replica) && !is_primary(primary));
        assert!(swapped, "the replica of shard {i} did not take over");
        self.wait_ok();
    }

    /// Waits until shard `i`'s replica has every write its primary has.
    pub fn wait_in_sync(&self, i: usize) {
        let (primary, replica) = self.pair_ports(i);
        let field = |port: u16, name: &str| -> Option<u64> {
            cli(port, &["info", "replication"])
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        };
        let synced = poll(|| {
            let want = field(primary, "master_repl_offset:");
            want.is_some() && want == field(replica, "slave_repl_offset:")
        });
        assert!(synced, "the replica of shard {i} did not catch up");
    }

    /// `kill -9` of shard `i`'s current primary; waits until its replica has
    /// been promoted (after `cluster-node-timeout` and an election) and the
    /// cluster is up again. Returns the port of the process killed.
    pub fn kill_primary(&mut self, i: usize) -> u16 {
        let (primary, replica) = self.pair_ports(i);
        self.process_on(primary).kill();
        let promoted = poll(|| is_primary(replica));
        assert!(promoted, "the replica of shard {i} was not promoted");
        self.wait_ok();
        primary
    }

    /// Starts the process on `port` again (it rejoins as a replica, as a
    /// failed primary does once another has taken over) and waits until it
    /// follows.
    pub fn restart_port(&mut self, port: u16) {
        self.process_on(port)
            .restart()
            .expect("redis-server restarts");
        let follows =
            poll(|| cli(port, &["info", "replication"]).contains("master_link_status:up"));
        assert!(follows, "the restarted node did not rejoin as a replica");
        self.wait_ok();
    }

    fn process_on(&mut self, port: u16) -> &mut RedisProcess {
        self.shards
            .iter_mut()
            .chain(self.replicas.iter_mut())
            .find(|p| p.port() == port)
            .expect("a process of this cluster")
    }

    /// `rediss+cluster://` URL with the first shard's TLS port as seed (a
    /// cluster from [`Self::start_tls`] only).
    pub fn tls_url(&self) -> String {
        let tls = self.tls.as_ref().expect("a cluster started with TLS");
        format!("rediss+cluster://127.0.0.1:{}/", tls.ports[0])
    }

    /// Creates on every node (an ACL is each node's own) the store user
    /// the deployment creates: [`STORE_USER`] with the rules of
    /// [`deployment_access_rules`]. Checks that the user is limited by
    /// them (`CONFIG` refused), and returns the cluster's URL (TLS when it
    /// has TLS) that logs in as that user. The user lives in memory only:
    /// a node restarted forgets it.
    pub fn add_deployment_user(&self) -> String {
        let rules = deployment_access_rules();
        for n in self.shards.iter().chain(&self.replicas) {
            let mut args = vec!["acl", "setuser", STORE_USER, "reset"];
            args.extend(rules.iter().map(String::as_str));
            let password = format!(">{STORE_PASSWORD}");
            args.push(&password);
            let set = cli(n.port(), &args);
            assert_eq!(set.trim(), "OK", "ACL SETUSER {args:?}");
            let config = cli_as_store_user(n.port(), &["config", "get", "appendonly"]);
            assert!(
                config.contains("NOPERM"),
                "the store user may run CONFIG: {config}"
            );
        }
        let (scheme, port) = match &self.tls {
            Some(tls) => ("rediss+cluster", tls.ports[0]),
            None => ("redis+cluster", self.shards[0].port()),
        };
        format!("{scheme}://{STORE_USER}:{STORE_PASSWORD}@127.0.0.1:{port}/")
    }

    /// The users of the clients connected to the running nodes, counted,
    /// leaving out the connection that asks (`CLIENT LIST`).
    pub fn client_users(&self) -> std::collections::BTreeMap<String, usize> {
        let mut users = std::collections::BTreeMap::new();
        let running = self.shards.iter().chain(&self.replicas);
        for n in running.filter(|n| n.pid().is_some()) {
            for line in cli(n.port(), &["client", "list"]).lines() {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|f| f.strip_prefix(name))
                        .map(str::to_owned)
                };
                if field("cmd=").as_deref() == Some("client|list") {
                    continue;
                }
                if let Some(user) = field("user=") {
                    *users.entry(user).or_default() += 1;
                }
            }
        }
        users
    }

    /// Whether the cluster was started behind TLS.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The CA file a client of [`Self::tls_url`] must be given.
    pub fn ca_file(&self) -> &Path {
        &self
            .tls
            .as_ref()
            .expect("a cluster started with TLS")
            .files
            .ca
    }

    /// Waits until every running node agrees that the cluster is up.
    pub fn wait_ok(&self) {
        let running = self.shards.iter().chain(&self.replicas);
        for n in running.filter(|n| n.pid().is_some()) {
            let mut ok = false;
            for _ in 0..200 {
                if cli(n.port(), &["cluster", "info"]).contains("cluster_state:ok") {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(ok, "cluster did not become ready");
        }
    }

    /// `kill -9` of shard `i`: with AOF always, what it acknowledged survives.
    pub fn kill_shard(&mut self, i: usize) {
        self.shards[i].kill();
    }

    /// Starts shard `i` again on its port with its data (AOF and
    /// `nodes.conf`), and waits until the cluster is up again.
    pub fn restart_shard(&mut self, i: usize) {
        self.shards[i].restart().expect("shard restarts");
        self.wait_ok();
    }

    /// `redis+cluster://` URL with the first shard as seed.
    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{}/", self.shards[0].port())
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        cli(self.shards[0].port(), &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// Index in [`Self::shards`] of the shard serving `key`.
    pub fn shard_of(&self, key: &str) -> usize {
        let slot = u32::from(self.slot(key));
        let nodes = cli(self.shards[0].port(), &["cluster", "nodes"]);
        // Lines: id ip:port@cport flags master ping pong epoch state slots...
        let owner = nodes
            .lines()
            .find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let port: u16 = f.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                let owns = f.iter().skip(8).any(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    matches!((a.parse::<u32>(), b.parse::<u32>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
                });
                owns.then_some(port)
            })
            .expect("some shard owns every slot");
        self.shards
            .iter()
            .position(|n| n.port() == owner)
            .expect("the owner is one of ours")
    }

    /// Runs a command with `redis-cli -c` (following redirections) and
    /// returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let port = self.shards[0].port().to_string();
        let mut full = vec!["-c", "-p", port.as_str()];
        full.extend_from_slice(args);
        let out = Command::new("redis-cli")
            .args(&full)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The name these tests give the store user the deployment creates
/// (terraform names it after the deployment, `store_user_name`), and its
/// password.
pub const STORE_USER: &str = "bigtap";
const STORE_PASSWORD: &str = "test-store-password-2f9c";

/// The ACL rules the deployment gives its store user: the default of
/// `store_access_string` in `terraform/variables.tf`, read from there so
/// that what these tests allow is what the deployment allows.
pub fn deployment_access_rules() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/terraform/variables.tf");
    let tf = std::fs::read_to_string(path).expect("terraform/variables.tf");
    let block = tf
        .split("variable \"store_access_string\"")
        .nth(1)
        .expect("variables.tf declares store_access_string");
    let default = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("default"))
        .expect("store_access_string has a default");
    let quoted = default
        .split('"')
        .nth(1)
        .expect("the default is a quoted string");
    quoted.split_whitespace().map(str::to_owned).collect()
}

/// `redis-cli` on `port`, logged in as [`STORE_USER`].
fn cli_as_store_user(port: u16, args: &[&str]) -> String {
    let login = [
        "--no-auth-warning",
        "--user",
        STORE_USER,
        "--pass",
        STORE_PASSWORD,
    ];
    redis_cli(&login, port, args)
}

/// A cluster node on a free TLS port (tried again on another when one is
/// taken before redis-server binds it), talking to the others and to its
/// primary over TLS; the node and its TLS port.
fn tls_node(files: &TlsFiles) -> (RedisProcess, u16) {
    (1..=TLS_PORT_TRIES)
        .find_map(|_| {
            let port = bigtap::store::embedded::free_port().expect("a free port");
            let mut args: Vec<String> = NODE_ARGS.iter().map(|a| a.to_string()).collect();
            args.extend(files.redis_args(port));
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            RedisProcess::start_temporary_with(&args)
                .ok()
                .map(|s| (s, port))
        })
        .expect("redis-server starts in cluster mode with TLS (built with TLS support?)")
}

/// Whether the node on `port` is a primary now (`ROLE`).
fn is_primary(port: u16) -> bool {
    cli(port, &["role"]).lines().next() == Some("master")
}

/// Checks `ok` every 50 ms for up to 20 s; whether it held.
fn poll(mut ok: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn cli(port: u16, args: &[&str]) -> String {
    redis_cli(&[], port, args)
}

/// `redis-cli` with `options` on `port`; its output.
fn redis_cli(options: &[&str], port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(options)
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-node Redis Cluster (it owns every slot) reachable only through a
/// [`CutProxy`]: the node announces the proxy's port, so a cluster client
/// sends every command through the proxy.
pub struct ProxiedClusterNode {
    pub node: RedisProcess,
    pub proxy: CutProxy,
}

impl ProxiedClusterNode {
    pub async fn start() -> ProxiedClusterNode {
        let node = RedisProcess::start_temporary_with(&NODE_ARGS).expect("redis-server starts");
        let out = cli(node.port(), &["cluster", "addslotsrange", "0", "16383"]);
        assert!(out.contains("OK"), "addslotsrange: {out}");
        let proxy = CutProxy::start(([127, 0, 0, 1], node.port()).into()).await;
        let out = cli(
            node.port(),
            &[
                "config",
                "set",
                "cluster-announce-port",
                &proxy.addr.port().to_string(),
            ],
        );
        assert!(out.contains("OK"), "announce port: {out}");
        for _ in 0..200 {
            if cli(node.port(), &["cluster", "info"]).contains("cluster_state:ok") {
                return ProxiedClusterNode { node, proxy };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("one-node cluster did not become ready");
    }

    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{}/", self.proxy.addr.port())
    }
}

/// A TCP relay to one upstream. When armed with [`CutProxy::cut_next_reply`],
/// the next answer the server sends is swallowed and the client's
/// connection closed: the command ran, and the client cannot know it.
pub struct CutProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Answers swallowed so far.
    cuts: Arc<AtomicUsize>,
}

impl CutProxy {
    pub async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (c, n) = (cut.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (c, n) = (c.clone(), n.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, c, n).await;
                    }
                });
            }
        });
        CutProxy { addr, cut, cuts }
    }

    /// Swallows the next answer and closes that client connection.
    pub fn cut_next_reply(&self) {
        // Relaxed: the flag is read by the relay after the client's next
        // write, which happens-after this store through the socket.
        self.cut.store(true, Ordering::Relaxed);
    }

    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::Relaxed)
    }
}

async fn relay(client: TcpStream, server: TcpStream, cut: Arc<AtomicBool>, cuts: Arc<AtomicUsize>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if cut.swap(false, Ordering::Relaxed) {
                    cuts.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    // Dropping both halves closes the client's connection.
    up.abort();
}
