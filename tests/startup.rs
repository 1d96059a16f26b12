//! Start-up behaviour: unsafe Redis settings are refused, the embedded
//! redis-server runs a sale and stops with the node, and a missing
//! redis-server is explained.

mod support;

use std::process::Command;

use bigtap::store::embedded::RedisProcess;
use bigtap::{App, ServeConfig};
use reqwest::StatusCode;
use support::*;

#[tokio::test]
async fn a_redis_that_may_evict_keys_is_refused_unless_explicitly_allowed() {
    let redis = RedisProcess::start_temporary_with(&["--maxmemory-policy", "allkeys-lru"]).unwrap();
    let err = App::build(config(&redis.url()))
        .await
        .err()
        .expect("unsafe redis is refused");
    let text = err.to_string();
    assert!(text.contains("maxmemory-policy is allkeys-lru"), "{text}");
    assert!(text.contains("--allow-unsafe-redis"), "{text}");

    let mut c = config(&redis.url());
    c.allow_unsafe_redis = true;
    assert!(App::build(c).await.is_ok());
}

#[tokio::test]
async fn a_redis_without_persistence_is_refused() {
    let redis = RedisProcess::start_temporary_with(&["--appendonly", "no"]).unwrap();
    let err = App::build(config(&redis.url()))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("appendonly is off"), "{err}");
}

#[tokio::test]
async fn without_a_redis_url_the_node_runs_its_own_redis_and_stops_it_on_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut c: ServeConfig = config("unused");
    c.redis = None;
    c.data_dir = dir.path().join("data");
    let app = App::build(c).await.expect("embedded mode starts");
    let redis_url = app.redis_url().to_owned();
    let h = app.spawn();
    let base = h.url();
    let n = Node {
        handle: h,
        http: reqwest::Client::new(),
        base,
    };
    n.open_sale("local", 3).await;
    assert_eq!(n.take("local", "alice").await.status, StatusCode::CREATED);
    assert!(
        dir.path().join("data").read_dir().unwrap().count() > 0,
        "the AOF lives in --data-dir"
    );
    n.handle.stop().await;
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let gone = client.get_multiplexed_async_connection().await.is_err();
    assert!(gone, "the embedded redis-server stopped with the node");
}

#[test]
fn without_redis_server_installed_serve_explains_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("PATH", dir.path())
        .env_remove("BIGTAP_REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("redis-server was not found")
            && err.contains("apt-get install -y redis-server"),
        "{err}"
    );
}

#[tokio::test]
async fn one_unreadable_sale_does_not_keep_a_node_from_serving_the_others() {
    let redis = redis();
    let mut con = redis_con(&redis.url()).await;
    // A sale whose settings key is of the wrong type: every read of it fails.
    let _: () = redis::cmd("SET")
        .arg("bigtap:{broken}:cfg")
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: i64 = redis::cmd("SADD")
        .arg("bigtap:sales")
        .arg("broken")
        .query_async(&mut con)
        .await
        .unwrap();
    let first = node(&redis.url()).await;
    first.open_sale("fine", 1).await;
    let second = node(&redis.url()).await;
    assert_eq!(
        second.take("fine", "alice").await.status,
        StatusCode::CREATED
    );
}

#[test]
fn serve_demo_with_its_defaults_runs_a_sale_from_a_relative_data_directory() {
    use std::io::BufRead;
    let base = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .current_dir(base.path())
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .env_remove("BIGTAP_REDIS_URL")
        .env_remove("BIGTAP_DATA_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("curl -si") {
                let _ = tx.send(line);
            }
        }
    });
    let ready = rx.recv_timeout(std::time::Duration::from_secs(20));
    // SAFETY: kill(2) on our own child; SIGTERM asks for a graceful stop.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let line = ready.expect("the demo printed its curl line");
    assert!(line.contains("/v1/sales/demo/tickets"), "{line}");
    assert!(
        base.path().join(".data").join("redis.log").exists(),
        "the default --data-dir is ./.data"
    );
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
}
