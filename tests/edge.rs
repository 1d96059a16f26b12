//! The HTTP edge under abuse: slowloris, oversized heads and bodies, load
//! shedding, and a graceful stop under load.

mod support;

use std::time::{Duration, Instant};

use bigtap::store::embedded::free_port;
use bigtap::store::redis::RedisStore;
use bigtap::store::Store;
use bigtap::SaleId;
use reqwest::StatusCode;
use support::*;
use support::{procs, proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; true if it did before `deadline`.
async fn closed_by(mut s: TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_slowloris_connections_are_closed_within_the_header_timeout_while_buyers_are_served(
) {
    let redis = redis();
    let n = spawn_node(&redis.url(), |c| c.header_timeout_ms = 500).await;
    n.open_sale("calm", 100).await;
    let addr = n.handle.addr;

    let opened = tokio::time::Instant::now();
    let mut lorises = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // A request head that never ends.
        let at = tokio::time::Instant::now();
        s.write_all(b"POST /v1/sales/calm/tickets HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        lorises.push((s, at));
    }

    // Buyers are served meanwhile, promptly.
    let started = Instant::now();
    for i in 0..50 {
        let a = n.take("calm", &format!("buyer{i}")).await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    }
    let served_in = started.elapsed();
    assert!(
        served_in < Duration::from_secs(5),
        "50 buyers took {served_in:?}"
    );

    // Every stalled connection is closed by the header timeout (500 ms),
    // measured from its own opening, within two ticks of the sweeper
    // (100 ms each: its coarse clock, then its period) and some scheduling
    // slack.
    let limit = Duration::from_millis(500 + 200 + 300);
    let results = futures::future::join_all(lorises.into_iter().map(|(s, at)| async move {
        closed_by(s, at + Duration::from_secs(5))
            .await
            .then(|| at.elapsed())
    }))
    .await;
    let mut lived: Vec<Duration> = results.iter().flatten().copied().collect();
    lived.sort();
    println!(
        "slowloris: {}/1000 closed; lifetimes min {:?} median {:?} max {:?}; 50 buyers served in {served_in:?}; all opened in {:?}",
        lived.len(),
        lived.first(),
        lived.get(lived.len() / 2),
        lived.last(),
        opened.elapsed()
    );
    assert_eq!(lived.len(), 1000, "stalled connections left open");
    assert!(
        lived.iter().all(|d| *d <= limit),
        "a stalled connection lived {:?}, past {limit:?}",
        lived.last()
    );
    assert!(
        lived.iter().all(|d| *d >= Duration::from_millis(500)),
        "a connection was closed before its header timeout: {:?}",
        lived.first()
    );
    assert_eq!(n.take("calm", "after").await.status, StatusCode::CREATED);
}

/// Sends one GET on `s` and reads its whole answer (a small JSON body).
async fn get_on(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("}") {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("a readable socket");
        assert!(
            n > 0,
            "the server closed the connection instead of answering"
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_and_closes_at_the_idle_timeout()
{
    let redis = redis();
    let n = spawn_node(&redis.url(), |c| {
        c.header_timeout_ms = 300;
        c.idle_timeout_ms = 1500;
    })
    .await;
    let mut s = TcpStream::connect(n.handle.addr).await.unwrap();
    assert!(get_on(&mut s, "/healthz").await.starts_with("HTTP/1.1 200"));
    // Idle for longer than the header timeout: a balancer's pooled
    // connection must still be usable.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(get_on(&mut s, "/healthz").await.starts_with("HTTP/1.1 200"));
    // Idle past the idle timeout: the server closes it.
    let idle_from = Instant::now();
    assert!(closed_by(s, tokio::time::Instant::now() + Duration::from_secs(4)).await);
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_millis(2500),
        "closed after {idle:?} idle"
    );
}

#[tokio::test]
async fn oversized_heads_are_answered_431_and_oversized_bodies_413() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("big", 10).await;

    let huge = "a".repeat(20 * 1024);
    let r = n
        .http
        .get(n.url("/v1/sales/big"))
        .header("x-huge", &huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let mut rb = n.http.get(n.url("/v1/sales/big"));
    for i in 0..100 {
        rb = rb.header(format!("x-h{i}"), "v");
    }
    assert_eq!(
        rb.send().await.unwrap().status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );

    // A take body is empty or `{}`: 2 KiB is too large.
    let r = n
        .http
        .post(n.url("/v1/sales/big/tickets"))
        .header("authorization", format!("Bearer {}", session("alice")))
        .body(vec![b' '; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    // Also when the length is not announced (chunked).
    let mut raw = TcpStream::connect(n.handle.addr).await.unwrap();
    let head = format!(
        "POST /v1/sales/big/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        session("alice")
    );
    raw.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..8 {
        raw.write_all(format!("200\r\n{}\r\n", " ".repeat(512)).as_bytes())
            .await
            .unwrap();
    }
    let _ = raw.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 256];
    let got = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let line = String::from_utf8_lossy(&answer[..got]);
    assert!(line.starts_with("HTTP/1.1 413"), "{line}");

    // An admin body beyond its limit.
    let r = n
        .http
        .post(n.url("/v1/admin/sales/big/eligible"))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .body(vec![b' '; 9 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Nothing was taken by any of it.
    assert_eq!(n.take("big", "alice").await.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_inflight_limit_requests_are_shed_at_once_with_503_and_retry_after() {
    let redis = redis();
    let n = spawn_node(&redis.url(), |c| {
        c.max_inflight = 1;
        c.redis_timeout_ms = 3000;
        c.request_timeout_ms = 5000;
    })
    .await;
    n.open_sale("hot", 100).await;
    assert_eq!(n.take("hot", "warm").await.status, StatusCode::CREATED);

    // Hold one take in flight: its commit waits on a hung Redis.
    redis.pause();
    let held = {
        let http = n.http.clone();
        let url = n.url("/v1/sales/hot/tickets");
        tokio::spawn(async move {
            http.post(url)
                .header("authorization", format!("Bearer {}", session("held")))
                .send()
                .await
                .map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let shed = n.get("/v1/sales/hot").await;
    let took = started.elapsed();
    let shed_take = n.take("hot", "other").await;
    let probe = n.get("/healthz").await;
    redis.resume();

    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(shed.headers.contains_key("retry-after"));
    assert_eq!(shed.body["error"], "unavailable");
    assert!(took < Duration::from_millis(500), "shedding took {took:?}");
    assert_eq!(shed_take.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(probe.status, StatusCode::OK, "probes are never shed");

    let held = held.await.unwrap().expect("the held request is answered");
    assert!(
        held == StatusCode::CREATED || held == StatusCode::SERVICE_UNAVAILABLE,
        "{held}"
    );
    // Once the node is idle again, requests pass.
    assert!(
        eventually(Duration::from_secs(5), || async {
            n.get("/v1/sales/hot").await.status == StatusCode::OK
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_answers_every_request_in_flight_exits_0_and_returns_the_lease() {
    let redis = redis();
    let proxy = proxy::Proxy::start(([127, 0, 0, 1], redis.port()).into())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut node = procs::NodeProc::start(
        "edge",
        &proxy.url(),
        free_port().unwrap(),
        &["--drain-ms", "10000", "--redis-timeout-ms", "3000"],
        dir.path(),
    )
    .await
    .unwrap();
    let base = node.url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let now = now_ms();
    let r = http
        .put(format!("{base}/v1/admin/sales/term"))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .json(&serde_json::json!({"stock": 1000, "starts_at_ms": now - 1000, "ends_at_ms": now + 600_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let take = |user: String| {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/sales/term/tickets"))
                .header("authorization", format!("Bearer {}", session(&user)))
                .send()
                .await?;
            let status = r.status();
            r.text().await.map(|body| (status, body))
        })
    };
    assert_eq!(
        take("warm".into()).await.unwrap().unwrap().0,
        StatusCode::CREATED
    );

    // Slow Redis down so that requests are surely in flight at the signal.
    proxy.set(proxy::Mode::Delay(Duration::from_millis(300)));
    let in_flight: Vec<_> = (0..32).map(|i| take(format!("before{i}"))).collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    node.signal_term();
    // Load keeps coming during the drain; these may be refused.
    let after: Vec<_> = (0..32).map(|i| take(format!("after{i}"))).collect();
    let status = node.wait(Duration::from_secs(20)).await;

    let mut answered = 0;
    for t in in_flight {
        let (status, body) = t
            .await
            .unwrap()
            .expect("a request sent before SIGTERM got a complete answer");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        answered += 1;
    }
    let mut refused = 0;
    for t in after {
        if t.await.unwrap().is_err() {
            refused += 1;
        }
    }
    println!(
        "sigterm: {answered}/32 in-flight requests answered; {refused}/32 later requests refused"
    );
    let status = status.expect("the node exited within the drain deadline");
    assert!(status.success(), "exit status {status}");

    proxy.set(proxy::Mode::Pass);
    let store = RedisStore::open(&redis.url(), "bigtap", Duration::from_secs(2), None).unwrap();
    let snap = store
        .snapshot(&SaleId::parse("term").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.leased, 0, "the lease was returned on the way out");
    assert!(snap.balanced);
}

/// The fault harness picks a node's port before the node binds it, and the
/// kernel may hand that port to someone else in between: the node's start
/// then moves to another port instead of failing the run.
#[tokio::test]
async fn a_node_whose_port_is_taken_before_it_binds_starts_on_another() {
    let redis = redis();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let node = procs::NodeProc::start("moved", &redis.url(), port, &[], dir.path())
        .await
        .unwrap();
    assert_ne!(node.port, port);
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("Address already in use"), "{log}");
    let ready = reqwest::get(format!("{}/readyz", node.url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}
