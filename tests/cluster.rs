//! The whole pipeline on a real three-shard Redis Cluster (as MemoryDB or
//! ElastiCache in cluster mode run it), through `redis+cluster://` URLs:
//! the sale CLI, two `serve` nodes, the order consumer (delivery, kill -9
//! takeover, dead letters and replay, trim) and `sale audit`. Every call
//! names one sale, so each goes to one shard; the sales are chosen to live
//! on different shards.
//!
//! A shard that fails over to its replica, on purpose and by a crash,
//! plain and behind TLS: the processes follow it without a restart and
//! keep every win.
//!
//! The same behind TLS, as production runs it: the processes the
//! deployment starts, on `rediss+cluster://` with the store's CA given,
//! through sales, delivery, the audit and a shard's crash.
//!
//! Also: a script whose answer was lost on the way back is not run a second
//! time behind the caller's back (the cluster client would resend it).

mod support;

use std::collections::{BTreeSet, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bigtap::sale::{Eligibility, SaleSpec};
use bigtap::store::redis::RedisStore;
use bigtap::store::{LeaseReply, Store};
use bigtap::SaleId;
use reqwest::StatusCode;
use support::cluster::{ProxiedClusterNode, RedisCluster};
use support::consumer::{always, http_sink, spawn_consumer, stop_consumer, Reply, TestSink};
use support::*;

/// Sale names, one on each of the three shards (placement read from the
/// cluster itself, not computed).
fn sales_on_every_shard(cluster: &RedisCluster) -> Vec<&'static str> {
    const CANDIDATES: [&str; 24] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra",
        "tango", "uniform", "victor", "whiskey", "xray",
    ];
    let mut seen = HashSet::new();
    let picked: Vec<&'static str> = CANDIDATES
        .into_iter()
        .filter(|s| seen.insert(cluster.shard_of(&format!("bigtap:{{{s}}}:cfg"))))
        .collect();
    assert_eq!(
        picked.len(),
        cluster.shards.len(),
        "the sales do not cover every shard; the test would prove less than it says"
    );
    picked
}

/// Writes to `path` the tickets of `sale` the backend acknowledged, one a
/// line, as `sale audit --delivered` reads them.
fn write_delivered(sink: &TestSink, sale: &str, path: &std::path::Path) {
    let got: BTreeSet<String> = sink
        .calls()
        .iter()
        .filter(|c| c.ok() && c.body["sale"] == sale)
        .map(|c| c.ticket().to_owned())
        .collect();
    std::fs::write(path, got.into_iter().collect::<Vec<_>>().join("\n")).unwrap();
}

/// `bigtap orders` as a child process, consuming every sale.
fn consumer(redis_url: &str, sink: &str, name: &str, extra: &[&str]) -> Consumer {
    let child = Command::new(BIN)
        .args([
            "orders",
            "--sink",
            sink,
            "--consumer",
            name,
            "--metrics-listen",
            "127.0.0.1:0",
            "--discover-ms",
            "100",
            "--poll-max-ms",
            "50",
            "--claim-idle-ms",
            "1500",
            "--sink-timeout-ms",
            "1000",
            "--retry-base-ms",
            "20",
            "--retry-max-ms",
            "200",
            "--max-deliveries",
            "2",
        ])
        .args(extra)
        .env("BIGTAP_REDIS_URL", redis_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bigtap orders starts");
    Consumer(child)
}

/// A `bigtap orders` process, killed when dropped: a test that fails
/// halfway must not leave it running.
struct Consumer(Child);

impl std::ops::Deref for Consumer {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Consumer {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Once it has been waited for, `kill` sends nothing.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops a consumer the way systemd does (SIGTERM), waiting for its drain.
fn terminate(mut c: Consumer) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let status = c.wait().expect("consumer exits");
    assert!(status.success(), "consumer exited with {status}");
}

/// Buys `n` tickets of `sale` on the two nodes in turn; returns the tickets.
async fn buy(nodes: &[&Node], sale: &str, n: usize) -> Vec<String> {
    let mut tickets = Vec::new();
    for i in 0..n {
        let a = nodes[i % nodes.len()]
            .take(sale, &format!("buyer{i}"))
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "{sale} buyer {i}: {:?}",
            a.body
        );
        tickets.push(a.body["ticket"].as_str().unwrap().to_owned());
    }
    tickets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_on_different_shards_of_a_redis_cluster_sell_exactly_their_stock() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let n = node(&url).await;
    let sales = sales_on_every_shard(&cluster);
    for s in &sales {
        n.open_sale(s, 5).await;
    }
    for s in &sales {
        for i in 0..7 {
            let a = n.take(s, &format!("u{i}")).await;
            let want = if i < 5 {
                StatusCode::CREATED
            } else {
                StatusCode::GONE
            };
            assert_eq!(a.status, want, "sale {s} buyer {i}: {:?}", a.body);
        }
        assert_eq!(
            n.take(s, "u0").await.status,
            StatusCode::OK,
            "replay on {s}"
        );
        let acct = n.accounting(s).await;
        assert_eq!(
            (acct["pending"].as_u64(), acct["balanced"].as_bool()),
            (Some(5), Some(true)),
            "{s}: {acct}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sale_cli_two_nodes_and_the_audit_run_on_a_three_shard_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let sales = sales_on_every_shard(&cluster);
    for s in &sales {
        let out = ok_stdout(&bigtap(&["sale", "create", s, "--stock", "6"], &url));
        assert!(out.contains(&format!("created sale {s}")), "{out}");
        let out = ok_stdout(&bigtap(&["sale", "stock", s, "--add", "2"], &url));
        assert!(out.contains("stock_total 8"), "{out}");
    }
    let n1 = node(&url).await;
    let n2 = node(&url).await;
    for s in &sales {
        buy(&[&n1, &n2], s, 8).await;
        for i in 8..10 {
            let node = if i % 2 == 0 { &n1 } else { &n2 };
            let a = node.take(s, &format!("late{i}")).await;
            assert_eq!(a.status, StatusCode::GONE, "{s}: {:?}", a.body);
        }
        let show: serde_json::Value =
            serde_json::from_str(&ok_stdout(&bigtap(&["sale", "show", s], &url))).unwrap();
        assert_eq!(
            (show["pending"].as_u64(), show["balanced"].as_bool()),
            (Some(8), Some(true)),
            "{s}: {show}"
        );
        let audit = ok_stdout(&bigtap(&["sale", "audit", s], &url));
        assert!(audit.contains("clean: no discrepancy"), "{audit}");
        assert!(audit.contains("8 tickets"), "{audit}");
        let out = ok_stdout(&bigtap(&["sale", "close", s], &url));
        assert!(out.contains("closed sale"), "{out}");
        assert_eq!(n1.take(s, "after-close").await.status, StatusCode::GONE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_on_a_cluster_survive_kill_9_dead_letter_a_poison_order_replay_it_and_trim() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let sales = sales_on_every_shard(&cluster);
    let n1 = node(&url).await;
    let n2 = node(&url).await;
    let mut tickets = Vec::new();
    for s in &sales {
        n1.open_sale(s, 20).await;
        assert!(
            eventually(PATIENCE, || async {
                n2.get(&format!("/v1/sales/{s}")).await.status == StatusCode::OK
            })
            .await,
            "timed out waiting until the second node knows the sale"
        );
    }
    for s in &sales {
        tickets.extend(buy(&[&n1, &n2], s, 20).await);
    }
    let all: HashSet<String> = tickets.iter().cloned().collect();
    let poison = tickets[3].clone();
    let poison_sale = sales[0];

    // A consumer takes the entries and hangs on the sink: then it is killed.
    let sink = TestSink::start(Arc::new(|_, _| Reply::Hang)).await;
    let mut a = consumer(&url, &sink.url(), "a", &[]);
    assert!(
        eventually(PATIENCE, || async { sink.call_count() > 0 }).await,
        "timed out waiting until the first consumer is delivering"
    );
    a.kill().expect("kill -9");
    a.wait().expect("reaped");

    // The backend refuses one order; a second consumer takes over the rest.
    let bad = poison.clone();
    sink.set_behaviour(Arc::new(move |_, t| {
        Reply::Status(if t == bad { 500 } else { 200 })
    }));
    let b = consumer(&url, &sink.url(), "b", &[]);
    let mut want = all.clone();
    want.remove(&poison);
    assert!(
        eventually(PATIENCE, || async { want.is_subset(&sink.delivered()) }).await,
        "timed out waiting until every other winner reached the sink"
    );
    let list = || {
        ok_stdout(&bigtap(
            &["orders", "dead", "list", "--sale", poison_sale],
            &url,
        ))
    };
    assert!(
        eventually(PATIENCE, || async { list().contains(&poison) }).await,
        "timed out waiting until the poison order was dead-lettered"
    );
    let dead = list();
    assert_eq!(dead.lines().count(), 1, "{dead}");

    // Fixed backend: replay it.
    sink.set_behaviour(always(200));
    let out = ok_stdout(&bigtap(
        &["orders", "dead", "replay", "--sale", poison_sale],
        &url,
    ));
    assert!(out.contains("replayed 1 dead letter"), "{out}");
    assert!(
        eventually(PATIENCE, || async { sink.delivered() == all }).await,
        "timed out waiting until every winner reached the sink"
    );
    assert!(
        eventually(PATIENCE, || async {
            sales.iter().all(|s| {
                let info = cluster.cli(&["XPENDING", &format!("bigtap:{{{s}}}:orders"), "orders"]);
                info.lines().next().map(str::trim) == Some("0")
            })
        })
        .await,
        "timed out waiting until every entry was acknowledged"
    );

    // The audit agrees, given what the backend received.
    let dir = tempfile::tempdir().unwrap();
    let delivered = dir.path().join("delivered.txt");
    for s in &sales {
        write_delivered(&sink, s, &delivered);
        let audit = ok_stdout(&bigtap(
            &[
                "sale",
                "audit",
                s,
                "--delivered",
                delivered.to_str().unwrap(),
            ],
            &url,
        ));
        assert!(audit.contains("clean: no discrepancy"), "{audit}");
    }
    terminate(b);

    // The backend confirms every order (the buyers paid), so the nodes'
    // sweepers pass their entries: the trim keeps whatever they have not
    // passed, since a pending ticket there may still fall due.
    for call in sink.calls().iter().filter(|c| c.ok()) {
        let s = call.body["sale"].as_str().unwrap_or_default();
        let r = n1
            .backend(
                reqwest::Method::POST,
                s,
                &format!("{}/confirm", call.ticket()),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{s} {}: {:?}",
            call.ticket(),
            r.body
        );
    }
    // A consumer with --trim removes what every group (and the sweeper) is
    // done with.
    let c = consumer(&url, &sink.url(), "c", &["--trim"]);
    assert!(
        eventually(PATIENCE, || async {
            sales.iter().all(|s| {
                cluster
                    .cli(&["XLEN", &format!("bigtap:{{{s}}}:orders")])
                    .trim()
                    == "1"
            })
        })
        .await,
        "timed out waiting until every stream was trimmed to its floor"
    );
    terminate(c);
    let calls = sink.by_ticket();
    assert!(
        calls
            .values()
            .all(|c| c.iter().filter(|c| c.ok()).count() >= 1),
        "every ticket was acknowledged by the backend at least once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_killed_with_kill_9_comes_back_with_every_acknowledged_win() {
    let mut cluster = RedisCluster::start();
    let url = cluster.url();
    let sale = "alpha";
    let shard = cluster.shard_of(&format!("bigtap:{{{sale}}}:cfg"));
    let n = node(&url).await;
    n.open_sale(sale, 10).await;
    let mut won = buy(&[&n], sale, 5).await;

    cluster.kill_shard(shard);
    let a = n.take(sale, "during-the-outage").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", a.body);
    cluster.restart_shard(shard);

    for i in 5..10 {
        let mut a = n.take(sale, &format!("buyer{i}")).await;
        for _ in 0..100 {
            if a.status != StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            a = n.take(sale, &format!("buyer{i}")).await;
        }
        assert_eq!(a.status, StatusCode::CREATED, "buyer{i}: {:?}", a.body);
        won.push(a.body["ticket"].as_str().unwrap().to_owned());
    }
    // The first five wins survived the crash: their buyers replay them.
    for (i, ticket) in won.iter().enumerate().take(5) {
        let a = n.take(sale, &format!("buyer{i}")).await;
        assert_eq!(a.status, StatusCode::OK, "buyer{i}: {:?}", a.body);
        assert_eq!(a.body["ticket"].as_str(), Some(ticket.as_str()));
    }
    let audit = ok_stdout(&bigtap(&["sale", "audit", sale], &url));
    assert!(
        audit.contains("clean: no discrepancy") && audit.contains("10 tickets"),
        "{audit}"
    );
}

/// A Redis Cluster and the processes the deployment runs on it. Behind
/// TLS, each process is given the store's CA as the deployment gives it
/// (`BIGTAP_REDIS_CA_FILE`).
struct Fleet {
    cluster: RedisCluster,
    url: String,
    /// The CA file's path, on a TLS cluster.
    ca_file: Option<String>,
    /// Processes log in as the deployment's store user, which may not read
    /// the store's settings; they run as the deployment runs them then.
    as_store_user: bool,
    logs: tempfile::TempDir,
    nodes: Vec<procs::NodeProc>,
    http: reqwest::Client,
}

impl Fleet {
    /// `cluster`, no node yet.
    fn on(cluster: RedisCluster) -> Fleet {
        let (url, ca_file) = if cluster.has_tls() {
            let ca = cluster.ca_file().to_str().unwrap().to_owned();
            (cluster.tls_url(), Some(ca))
        } else {
            (cluster.url(), None)
        };
        Fleet {
            url,
            ca_file,
            as_store_user: false,
            cluster,
            logs: tempfile::tempdir().unwrap(),
            nodes: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// From now on every process logs in as the store user the deployment
    /// creates, limited by the deployment's ACL rules. Like the
    /// deployment's units (`terraform/templates/user_data.sh.tftpl`), it
    /// lets serve run on a store whose settings it may not read.
    fn with_deployment_user(mut self) -> Fleet {
        self.url = self.cluster.add_deployment_user();
        self.as_store_user = true;
        self
    }

    /// The environment a process needs besides the test keys.
    fn env(&self) -> Vec<(&str, &str)> {
        let mut env: Vec<(&str, &str)> = self
            .ca_file
            .iter()
            .map(|f| (bigtap::store::redis::CA_FILE_ENV, f.as_str()))
            .collect();
        if self.as_store_user {
            env.push(("BIGTAP_ALLOW_UNSAFE_REDIS", "true"));
        }
        env
    }

    /// `bigtap args…`; its output, which must be a success.
    fn cli(&self, args: &[&str]) -> String {
        ok_stdout(
            &bigtap_command(&self.url)
                .envs(self.env())
                .args(args)
                .output()
                .expect("bigtap runs"),
        )
    }

    /// Two `bigtap serve` processes.
    async fn start_nodes(&mut self) {
        for id in ["tls-a", "tls-b"] {
            let port = bigtap::store::embedded::free_port().unwrap();
            let n = procs::NodeProc::start_with_env(
                id,
                &self.url,
                port,
                &[],
                &self.env(),
                self.logs.path(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}: {}", self.log(id)));
            self.nodes.push(n);
        }
    }

    /// Buys as `user` from node `i`.
    async fn take(&self, i: usize, sale: &str, user: &str) -> Answer {
        let r = self
            .http
            .post(format!("{}/v1/sales/{sale}/tickets", self.nodes[i].url()))
            .header("authorization", format!("Bearer {}", session(user)))
            .send()
            .await
            .expect("request sent");
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.json().await.unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Buys as `user` from node `i` until it answers other than 503.
    async fn take_until_answered(&self, i: usize, sale: &str, user: &str) -> Answer {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let a = self.take(i, sale, user).await;
            if a.status != StatusCode::SERVICE_UNAVAILABLE
                || tokio::time::Instant::now() >= deadline
            {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ticket `user` holds once node `i` answers other than 503: a
    /// buyer whose commit was sent as the store failed may find it landed
    /// after all (200); any other wins now (201).
    async fn ticket_after_a_fault(&self, i: usize, sale: &str, user: &str) -> String {
        let a = self.take_until_answered(i, sale, user).await;
        assert!(
            matches!(a.status, StatusCode::CREATED | StatusCode::OK),
            "node {i}, {user}: {} {:?}; {}",
            a.status,
            a.body,
            self.log(&self.nodes[i].node_id)
        );
        a.body["ticket"].as_str().unwrap().to_owned()
    }

    /// Waits until the backend has acknowledged exactly `tickets`.
    async fn wait_delivered(&self, sink: &TestSink, tickets: &HashSet<String>) {
        assert!(
            eventually(PATIENCE, || async { sink.delivered() == *tickets }).await,
            "timed out waiting until every winner reached the backend: {} of {}; {}",
            sink.delivered().len(),
            tickets.len(),
            self.log("orders")
        );
    }

    /// A process's log, for a failure's message.
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// Production's store is a Redis Cluster behind TLS (MemoryDB, ElastiCache
/// in cluster mode), reached as a user limited by an ACL. Here every shard
/// speaks TLS with a certificate of a CA the test made, the shards talk to
/// each other over TLS, and the processes the deployment runs reach it
/// through `rediss+cluster://` as the user the deployment creates, with
/// the deployment's ACL rules (`terraform/variables.tf`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_tls_cluster_the_cli_two_serve_processes_and_the_consumer_sell_deliver_and_audit_clean(
) {
    let mut fleet = Fleet::on(RedisCluster::start_tls()).with_deployment_user();
    let sales = sales_on_every_shard(&fleet.cluster);
    for s in &sales {
        let out = fleet.cli(&["sale", "create", s, "--stock", "4"]);
        assert!(out.contains(&format!("created sale {s}")), "{out}");
    }
    // Not given the CA, a command does not trust the store (so it is TLS
    // that carried the commands above, with the certificate checked).
    let untrusted = bigtap(&["sale", "show", sales[0]], &fleet.url);
    assert!(
        !untrusted.status.success(),
        "a store of an unknown CA was trusted"
    );
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );

    fleet.start_nodes().await;
    let mut tickets = HashSet::new();
    for s in &sales {
        for i in 0..4 {
            let a = fleet.take(i % 2, s, &format!("buyer{i}")).await;
            assert_eq!(a.status, StatusCode::CREATED, "{s} buyer{i}: {:?}", a.body);
            tickets.insert(a.body["ticket"].as_str().unwrap().to_owned());
        }
        let late = fleet.take(0, s, "late").await;
        assert_eq!(late.status, StatusCode::GONE, "{s}: {:?}", late.body);
        // buyer0 won on the first node; the second knows it too.
        let again = fleet.take(1, s, "buyer0").await;
        assert_eq!(again.status, StatusCode::OK, "{s}: {:?}", again.body);
        assert!(tickets.contains(again.body["ticket"].as_str().unwrap_or_default()));
    }
    assert_eq!(tickets.len(), 4 * sales.len());

    let sink = TestSink::start(always(200)).await;
    let _orders =
        procs::OrdersProc::start_with_env(&fleet.url, &sink.url(), &fleet.env(), fleet.logs.path())
            .expect("bigtap orders starts on the TLS cluster");
    fleet.wait_delivered(&sink, &tickets).await;
    let delivered = fleet.logs.path().join("delivered.txt");
    for s in &sales {
        write_delivered(&sink, s, &delivered);
        let audit = fleet.cli(&[
            "sale",
            "audit",
            s,
            "--delivered",
            delivered.to_str().unwrap(),
        ]);
        assert!(
            audit.contains("clean: no discrepancy") && audit.contains("4 tickets"),
            "{s}: {audit}"
        );
    }
    // Every connection the processes hold was made as the limited user.
    let users = fleet.cluster.client_users();
    assert!(users.keys().eq([support::cluster::STORE_USER]), "{users:?}");
}

/// The same TLS cluster through a crash: a shard killed with `kill -9`
/// leaves its sale's buyers with 503 (nothing sold twice, nothing lost),
/// and once it is back both serve processes sell that sale again over new
/// TLS connections, with every win from before the crash kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_shard_killed_with_kill_9_comes_back_and_both_serve_processes_sell_its_sale_again() {
    let mut fleet = Fleet::on(RedisCluster::start_tls());
    let sale = "alpha";
    let shard = fleet.cluster.shard_of(&format!("bigtap:{{{sale}}}:cfg"));
    fleet.cli(&["sale", "create", sale, "--stock", "10"]);
    fleet.start_nodes().await;
    let mut before = Vec::new();
    for i in 0..4 {
        let a = fleet.take(i % 2, sale, &format!("before{i}")).await;
        assert_eq!(a.status, StatusCode::CREATED, "before{i}: {:?}", a.body);
        before.push(a.body["ticket"].as_str().unwrap().to_owned());
    }

    fleet.cluster.kill_shard(shard);
    for i in 0..2 {
        let a = fleet.take(i, sale, &format!("outage{i}")).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", a.body);
    }
    fleet.cluster.restart_shard(shard);

    // The buyers of the outage hold a ticket now; fresh ones win.
    for i in 0..2 {
        fleet
            .ticket_after_a_fault(i, sale, &format!("outage{i}"))
            .await;
        let a = fleet
            .take_until_answered(i, sale, &format!("after{i}"))
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "node {i} sells again: {:?}",
            a.body
        );
    }
    for (i, ticket) in before.iter().enumerate() {
        let a = fleet.take((i + 1) % 2, sale, &format!("before{i}")).await;
        assert_eq!(a.status, StatusCode::OK, "before{i}: {:?}", a.body);
        assert_eq!(a.body["ticket"].as_str(), Some(ticket.as_str()));
    }
    let audit = fleet.cli(&["sale", "audit", sale]);
    assert!(
        audit.contains("clean: no discrepancy") && audit.contains("8 tickets"),
        "{audit}"
    );
}

/// A sale's shard fails over as a managed store's does: first on purpose
/// (maintenance: the replica takes over with every write, and the old
/// primary answers MOVED from then on), then by the loss of the primary
/// (`kill -9`: the replica is promoted once the cluster sees it gone). The
/// two serve processes are not restarted: both sell the sale again after
/// each, and every win from before is given back. An order consumer runs
/// throughout: its blocking reads meet both failovers (a primary turned
/// replica unblocks them with an error), and it delivers every winner.
async fn a_shard_fails_over_twice_and_every_process_carries_on(cluster: RedisCluster) {
    let mut fleet = Fleet::on(cluster);
    // Not on the seed's shard: the seed stays up, as a managed store's
    // endpoint does.
    let (sale, shard) = sales_on_every_shard(&fleet.cluster)
        .into_iter()
        .map(|s| (s, fleet.cluster.shard_of(&format!("bigtap:{{{s}}}:cfg"))))
        .find(|&(_, shard)| shard != 0)
        .expect("a sale off the seed's shard");
    fleet.cli(&["sale", "create", sale, "--stock", "12"]);
    fleet.start_nodes().await;
    let sink = TestSink::start(always(200)).await;
    let _orders =
        procs::OrdersProc::start_with_env(&fleet.url, &sink.url(), &fleet.env(), fleet.logs.path())
            .expect("bigtap orders starts");
    let mut won: Vec<(String, String)> = Vec::new();
    for i in 0..4 {
        let user = format!("buyer{i}");
        let a = fleet.take(i % 2, sale, &user).await;
        assert_eq!(a.status, StatusCode::CREATED, "{user}: {:?}", a.body);
        won.push((user, a.body["ticket"].as_str().unwrap().to_owned()));
    }

    fleet.cluster.failover(shard);
    for i in 0..2 {
        let user = format!("after-failover{i}");
        let a = fleet.take_until_answered(i, sale, &user).await;
        assert_eq!(a.status, StatusCode::CREATED, "node {i}: {:?}", a.body);
        won.push((user, a.body["ticket"].as_str().unwrap().to_owned()));
    }

    fleet.cluster.wait_in_sync(shard);
    let lost = fleet.cluster.kill_primary(shard);
    for i in 0..2 {
        let user = format!("after-promotion{i}");
        let ticket = fleet.ticket_after_a_fault(i, sale, &user).await;
        won.push((user, ticket));
    }
    fleet.cluster.restart_port(lost);

    for (i, (user, ticket)) in won.iter().enumerate() {
        let a = fleet.take((i + 1) % 2, sale, user).await;
        assert_eq!(a.status, StatusCode::OK, "{user}: {:?}", a.body);
        assert_eq!(a.body["ticket"].as_str(), Some(ticket.as_str()), "{user}");
    }
    let audit = fleet.cli(&["sale", "audit", sale]);
    assert!(
        audit.contains("clean: no discrepancy") && audit.contains("8 tickets"),
        "{audit}"
    );
    let tickets: HashSet<String> = won.into_iter().map(|(_, t)| t).collect();
    fleet.wait_delivered(&sink, &tickets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_whose_shard_fails_over_sells_again_on_both_nodes_with_every_win_kept() {
    a_shard_fails_over_twice_and_every_process_carries_on(RedisCluster::start_with_replicas())
        .await;
}

/// The same behind TLS, as MemoryDB runs it: replicas follow over TLS, and
/// the processes reach each new primary over TLS with the CA they were given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_sale_whose_shard_fails_over_sells_again_on_both_nodes_with_every_win_kept() {
    a_shard_fails_over_twice_and_every_process_carries_on(RedisCluster::start_tls_with_replicas())
        .await;
}

/// A one-node cluster behind a proxy that loses the next answer.
async fn store_behind_a_cut_proxy() -> (ProxiedClusterNode, RedisStore, SaleId) {
    let c = ProxiedClusterNode::start().await;
    let store = RedisStore::open(&c.url(), "bigtap", Duration::from_secs(2), None).unwrap();
    store.wait_ready(Duration::from_secs(10)).await.unwrap();
    let sale = SaleId::parse("cut").unwrap();
    store.put_sale(&sale, &open_sale_spec(100)).await.unwrap();
    (c, store, sale)
}

/// Reads the sale after the connection broke (it comes back by itself).
async fn snapshot_after_the_cut(store: &RedisStore, sale: &SaleId) -> bigtap::sale::Snapshot {
    for _ in 0..100 {
        if let Ok(Some(s)) = store.snapshot(sale).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the store did not come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_change_whose_answer_was_lost_is_not_applied_twice() {
    let (c, store, sale) = store_behind_a_cut_proxy().await;
    c.proxy.cut_next_reply();
    let r = store.add_stock(&sale, 5).await;
    assert_eq!(c.proxy.cuts(), 1, "the answer was lost");
    let s = snapshot_after_the_cut(&store, &sale).await;
    assert_eq!(
        s.stock_total, 105,
        "add_stock ran once, not again behind the caller's back (call answered {r:?})"
    );
    assert!(r.is_err(), "the caller learns the outcome is unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_answer_was_lost_is_not_granted_twice() {
    let (c, store, sale) = store_behind_a_cut_proxy().await;
    c.proxy.cut_next_reply();
    let r = store.lease(&sale, "n1", 10, 60_000).await;
    assert_eq!(c.proxy.cuts(), 1, "the answer was lost");
    let s = snapshot_after_the_cut(&store, &sale).await;
    assert_eq!(
        (s.leased, s.available),
        (10, 90),
        "lease ran once (call answered {r:?})"
    );
    assert!(!matches!(r, Ok(LeaseReply::Granted { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_read_whose_answer_was_lost_is_sent_again() {
    let (c, store, sale) = store_behind_a_cut_proxy().await;
    c.proxy.cut_next_reply();
    let s = store.snapshot(&sale).await;
    assert_eq!(c.proxy.cuts(), 1, "the answer was lost");
    assert_eq!(s.unwrap().unwrap().stock_total, 100);
}

/// Appends `n` winners to `sale`'s stream the way `admit` does, in
/// pipelines (one sale = one slot, so a pipeline is fine on a cluster).
async fn xadd_winners<C: redis::aio::ConnectionLike + Send>(con: &mut C, sale: &str, n: usize) {
    let key = format!("bigtap:{{{sale}}}:orders");
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("ticket")
                .arg(bigtap::TicketId::random().as_str())
                .arg("sale")
                .arg(sale)
                .arg("user")
                .arg(format!("user-{i}"))
                .arg("issued_at_ms")
                .arg(1)
                .arg("expires_at_ms")
                .arg(2)
                .arg("node")
                .arg("bench")
                .ignore();
        }
        let () = pipe.query_async(con).await.expect("XADD");
    }
}

/// Delivers a burst of `n` winners spread over `sales` sales from the store
/// at `url` to a sink answering 200; returns deliveries per second, from
/// the consumer's start to the last acknowledgement.
async fn burst(url: &str, sales: &[String], n: usize) -> f64 {
    let seam = RedisStore::open(url, "bigtap", Duration::from_secs(5), None).unwrap();
    seam.wait_ready(Duration::from_secs(10)).await.unwrap();
    let now = now_ms();
    let spec = SaleSpec {
        stock: Some(1),
        starts_at_ms: now,
        ends_at_ms: now + 3_600_000,
        ticket_ttl_ms: 600_000,
        eligibility: Eligibility::Open,
    };
    let per_sale = n / sales.len();
    if url.contains("+cluster") {
        let seed = url.replace("redis+cluster://", "redis://");
        let client = redis::cluster::ClusterClient::new(vec![seed]).unwrap();
        let mut con = client.get_async_connection().await.unwrap();
        for s in sales {
            seam.put_sale(&SaleId::parse(s).unwrap(), &spec)
                .await
                .unwrap();
            xadd_winners(&mut con, s, per_sale).await;
        }
    } else {
        let mut con = redis_con(url).await;
        for s in sales {
            seam.put_sale(&SaleId::parse(s).unwrap(), &spec)
                .await
                .unwrap();
            xadd_winners(&mut con, s, per_sale).await;
        }
    }
    let total = per_sale * sales.len();
    let sink = TestSink::start(always(200)).await;
    // The defaults of `bigtap orders`.
    let cfg = bigtap::orders::ConsumerConfig::new(url);
    let consumer = bigtap::orders::Consumer::connect(cfg, http_sink(&sink))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (token, task) = spawn_consumer(consumer);
    assert!(
        eventually(PATIENCE, || async { sink.call_count() >= total }).await,
        "timed out waiting until every winner reached the sink"
    );
    let ids: Vec<SaleId> = sales.iter().map(|s| SaleId::parse(s).unwrap()).collect();
    assert!(
        eventually(PATIENCE, || async {
            for s in &ids {
                match seam.queue_stats(s).await {
                    Ok(q) if q.pending == 0 && q.lag == Some(0) => {}
                    _ => return false,
                }
            }
            true
        })
        .await,
        "timed out waiting until every entry was acknowledged"
    );
    let took = started.elapsed().as_secs_f64();
    assert_eq!(sink.delivered().len(), total);
    stop_consumer(token, task).await;
    total as f64 / took
}

/// Delivery throughput on a three-shard cluster against a single server:
/// the same burst, both measured in this run, with one sale and with many.
/// A measurement (printed, never asserted):
/// `BIGTAP_BURST=20000 BIGTAP_BURST_SALES=500 cargo test --release --test
/// cluster -- --nocapture throughput` gives the README's figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_throughput_on_a_cluster_is_measured_against_a_single_server() {
    let n: usize = std::env::var("BIGTAP_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let many: usize = std::env::var("BIGTAP_BURST_SALES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    for sales in [1, many] {
        let names: Vec<String> = (0..sales).map(|i| format!("burst{i}")).collect();
        let single = redis();
        let single_rate = burst(&single.url(), &names, n).await;
        drop(single);
        let cluster = RedisCluster::start();
        let cluster_rate = burst(&cluster.url(), &names, n).await;
        println!(
            "burst of {n} winners over {sales} sale(s): single server {single_rate:.0} deliveries/s, \
             three-shard cluster {cluster_rate:.0} deliveries/s (cluster/single {:.2})",
            cluster_rate / single_rate
        );
    }
}
