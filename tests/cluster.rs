//! A sale on a real three-shard Redis Cluster (as MemoryDB or ElastiCache
//! in cluster mode run it): every script touches one sale's slot, so the
//! same scripts run unchanged.

mod support;

use std::process::Command;
use std::time::Duration;

use bigtap::store::embedded::RedisProcess;
use reqwest::StatusCode;
use support::*;

fn cluster() -> Vec<RedisProcess> {
    let nodes: Vec<RedisProcess> = (0..3)
        .map(|_| {
            RedisProcess::start_temporary_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
            ])
            .expect("redis-server starts in cluster mode")
        })
        .collect();
    let mut create = Command::new("redis-cli");
    create.args(["--cluster", "create"]);
    for n in &nodes {
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
    // Wait until every node agrees that the cluster is up.
    for n in &nodes {
        let mut ok = false;
        for _ in 0..100 {
            let info = Command::new("redis-cli")
                .args(["-p", &n.port().to_string(), "cluster", "info"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(ok, "cluster did not become ready");
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_on_different_shards_of_a_redis_cluster_sell_exactly_their_stock() {
    let shards = cluster();
    let url = format!("redis+cluster://127.0.0.1:{}/", shards[0].port());
    let n = node_with(&url, |c| c.redis = Some(url.clone())).await;
    // Sale names chosen to land on different slots (and so, shards).
    let sales = ["alpha", "bravo", "charlie", "delta"];
    for s in sales {
        n.open_sale(s, 5).await;
    }
    for s in sales {
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
    let spread: std::collections::HashSet<String> = sales
        .iter()
        .map(|s| {
            let out = Command::new("redis-cli")
                .args([
                    "-p",
                    &shards[0].port().to_string(),
                    "cluster",
                    "keyslot",
                    &format!("bigtap:{{{s}}}:cfg"),
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    assert!(
        spread.len() > 1,
        "the sales share one slot; the test would prove nothing"
    );
}
