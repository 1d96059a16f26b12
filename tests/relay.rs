//! `bigtap relay` end to end: Alertmanager-shaped notifications posted over
//! HTTP to a relay on a loopback port, forwarded to a real HTTP receiver
//! standing in for the pager, which records what reaches it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigtap::clock::ManualClock;
use bigtap::relay::{Relay, RelayArgs, RelayError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The pager: records every notification body; answers 500 while `failing`.
#[derive(Clone, Default)]
struct Pager {
    received: Arc<Mutex<Vec<Value>>>,
    failing: Arc<AtomicBool>,
}

impl Pager {
    async fn start(&self, stop: CancellationToken) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => r.unwrap().0,
                    _ = stop.cancelled() => break,
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let me = me.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let status = if me.failing.load(Ordering::Relaxed) {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                me.received
                                    .lock()
                                    .unwrap()
                                    .push(serde_json::from_slice(&body).unwrap());
                                StatusCode::OK
                            };
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// (alertname, status) of every alert that reached the pager, in order.
    fn alerts(&self) -> Vec<(String, String)> {
        self.received()
            .iter()
            .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap().to_string(),
                    a["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

struct Harness {
    url: String,
    pager: Pager,
    chat: Pager,
    clock: ManualClock,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn args(pager: SocketAddr, chat: SocketAddr) -> RelayArgs {
    RelayArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        forward: vec![
            format!("pager=http://{pager}/hook"),
            format!("chat=http://{chat}/hook"),
        ],
        default_limit: 0,
        forget_after_s: 3600,
        max_alerts: 1000,
        timeout_ms: 2000,
    }
}

async fn start_with(tune: impl FnOnce(&mut RelayArgs)) -> Harness {
    let stop = CancellationToken::new();
    let pager = Pager::default();
    let chat = Pager::default();
    let pager_addr = pager.start(stop.clone()).await;
    let chat_addr = chat.start(stop.clone()).await;
    let mut a = args(pager_addr, chat_addr);
    tune(&mut a);
    let clock = ManualClock::new(1_000_000);
    let bound = Relay::bind_with_clock(&a, Arc::new(clock.clone()))
        .await
        .unwrap();
    let url = format!("http://{}", bound.local_addr());
    tokio::spawn(bound.run(stop.clone()));
    Harness {
        url,
        pager,
        chat,
        clock,
        http: reqwest::Client::new(),
        stop,
    }
}

async fn start() -> Harness {
    start_with(|_| {}).await
}

/// One alert as Alertmanager's webhook shows it.
fn alert(name: &str, status: &str, starts_at: &str, limit: Option<&str>) -> Value {
    let mut annotations = json!({ "summary": format!("{name} summary") });
    if let Some(l) = limit {
        annotations["limit"] = json!(l);
    }
    json!({
        "status": status,
        "labels": { "alertname": name, "deployment": "d1", "sale": "s1", "severity": "critical" },
        "annotations": annotations,
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": format!("fp-{name}"),
    })
}

fn notification(alerts: Vec<Value>) -> Value {
    let status = if alerts.iter().any(|a| a["status"] == "firing") {
        "firing"
    } else {
        "resolved"
    };
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"x\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "pager",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
}

impl Harness {
    async fn post(&self, route: &str, body: &Value) -> StatusCode {
        self.http
            .post(format!("{}/{route}", self.url))
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn notify(&self, alerts: Vec<Value>) -> StatusCode {
        self.post("pager", &notification(alerts)).await
    }
}

const T1: &str = "2026-11-28T12:00:00Z";
const T2: &str = "2026-11-28T12:40:00Z";

#[tokio::test]
async fn an_alert_pages_at_most_its_limit_times_in_one_anomaly_period() {
    let h = start().await;
    for _ in 0..5 {
        assert_eq!(
            h.notify(vec![alert("BigtapServerErrors", "firing", T1, Some("2"))])
                .await,
            StatusCode::OK
        );
    }
    assert_eq!(
        h.pager.alerts(),
        vec![
            ("BigtapServerErrors".to_string(), "firing".to_string()),
            ("BigtapServerErrors".to_string(), "firing".to_string()),
        ],
        "limit 2: the third to fifth repeats of the same period must not reach the pager"
    );
}

#[tokio::test]
async fn limit_zero_means_every_notification_pages() {
    let h = start().await;
    for _ in 0..7 {
        h.notify(vec![alert("BigtapDeadLetters", "firing", T1, Some("0"))])
            .await;
    }
    assert_eq!(h.pager.alerts().len(), 7);
}

#[tokio::test]
async fn the_default_limit_applies_to_an_alert_without_a_limit_annotation() {
    let h = start_with(|a| a.default_limit = 1).await;
    for _ in 0..3 {
        h.notify(vec![alert("BigtapServerErrors", "firing", T1, None)])
            .await;
    }
    // An unparsable annotation is no annotation.
    for _ in 0..3 {
        h.notify(vec![alert("BigtapStoreErrors", "firing", T1, Some("lots"))])
            .await;
    }
    assert_eq!(h.pager.alerts().len(), 2);
}

#[tokio::test]
async fn a_new_anomaly_period_gets_a_fresh_count_and_the_resolution_closes_the_old_one_once() {
    let h = start().await;
    let name = "BigtapStoreErrors";
    for _ in 0..3 {
        h.notify(vec![alert(name, "firing", T1, Some("1"))]).await;
    }
    // Resolved: forwarded once, however often Alertmanager repeats it.
    h.notify(vec![alert(name, "resolved", T1, Some("1"))]).await;
    h.notify(vec![alert(name, "resolved", T1, Some("1"))]).await;
    // A late repeat of the closed period stays out.
    h.notify(vec![alert(name, "firing", T1, Some("1"))]).await;
    // It fires again later: a new period (new startsAt), a new budget.
    for _ in 0..3 {
        h.notify(vec![alert(name, "firing", T2, Some("1"))]).await;
    }
    let f = |s: &str| (name.to_string(), s.to_string());
    assert_eq!(
        h.pager.alerts(),
        vec![f("firing"), f("resolved"), f("firing")]
    );
}

#[tokio::test]
async fn alerts_of_one_group_are_counted_one_by_one() {
    let h = start().await;
    for _ in 0..3 {
        h.notify(vec![
            alert("BigtapServerErrors", "firing", T1, Some("1")),
            alert("BigtapDeadLetters", "firing", T1, Some("0")),
        ])
        .await;
    }
    let got = h.pager.received();
    assert_eq!(
        got.len(),
        3,
        "each notification still carries the unlimited alert"
    );
    assert_eq!(got[0]["alerts"].as_array().unwrap().len(), 2);
    for later in &got[1..] {
        let alerts = later["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0]["labels"]["alertname"], "BigtapDeadLetters");
        // Everything else of the notification is forwarded as it came.
        assert_eq!(later["externalURL"], "http://alertmanager:9093");
        assert_eq!(later["status"], "firing");
    }
}

#[tokio::test]
async fn a_notification_with_every_alert_over_its_limit_is_not_forwarded_at_all() {
    let h = start().await;
    let a = || vec![alert("BigtapServerErrors", "firing", T1, Some("1"))];
    assert_eq!(h.notify(a()).await, StatusCode::OK);
    assert_eq!(h.notify(a()).await, StatusCode::OK);
    assert_eq!(h.pager.received().len(), 1);
}

#[tokio::test]
async fn a_failed_delivery_is_not_counted_and_alertmanager_is_asked_to_retry() {
    let h = start().await;
    let a = || vec![alert("BigtapServerErrors", "firing", T1, Some("2"))];
    h.pager.failing.store(true, Ordering::Relaxed);
    assert_eq!(h.notify(a()).await, StatusCode::BAD_GATEWAY);
    assert_eq!(h.notify(a()).await, StatusCode::BAD_GATEWAY);
    h.pager.failing.store(false, Ordering::Relaxed);
    for _ in 0..4 {
        assert_eq!(h.notify(a()).await, StatusCode::OK);
    }
    assert_eq!(
        h.pager.alerts().len(),
        2,
        "the two failed tries used none of the limit"
    );
}

#[tokio::test]
async fn an_unreachable_pager_is_a_bad_gateway_not_a_notification() {
    let stop = CancellationToken::new();
    // A port nobody listens on: bind, note it, close it.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut a = args(dead, dead);
    a.timeout_ms = 500;
    let bound = Relay::bind(&a).await.unwrap();
    let url = format!("http://{}/pager", bound.local_addr());
    tokio::spawn(bound.run(stop.clone()));
    let status = reqwest::Client::new()
        .post(url)
        .json(&notification(vec![alert("X", "firing", T1, Some("1"))]))
        .send()
        .await
        .unwrap()
        .status();
    stop.cancel();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn routes_are_counted_and_delivered_separately() {
    let h = start().await;
    let a = || {
        notification(vec![alert(
            "BigtapRejectedPathSlow",
            "firing",
            T1,
            Some("1"),
        )])
    };
    for _ in 0..2 {
        h.post("pager", &a()).await;
        h.post("chat", &a()).await;
    }
    assert_eq!(h.pager.alerts().len(), 1);
    assert_eq!(h.chat.alerts().len(), 1);
}

#[tokio::test]
async fn a_forgotten_period_can_page_again_but_never_less() {
    let h = start_with(|a| {
        a.forget_after_s = 60;
        a.max_alerts = 2;
    })
    .await;
    let a = |name: &str| vec![alert(name, "firing", T1, Some("1"))];
    h.notify(a("A")).await;
    h.notify(a("A")).await;
    h.clock.advance_ms(61_000);
    // The ledger is full with A (stale) and B: C needs room, A is forgotten.
    h.notify(a("B")).await;
    h.notify(a("C")).await;
    h.notify(a("A")).await;
    let names: Vec<String> = h.pager.alerts().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["A", "B", "C", "A"]);
}

#[tokio::test]
async fn malformed_notifications_and_unknown_routes_are_refused() {
    let h = start().await;
    let raw = |route: &'static str, body: &'static str| {
        h.http
            .post(format!("{}/{route}", h.url))
            .header("content-type", "application/json")
            .body(body)
    };
    assert_eq!(
        raw("pager", "not json").send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        raw("pager", "{\"alerts\": 3}")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        raw("nowhere", "{}").send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let get = h.http.get(format!("{}/pager", h.url)).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(h.pager.received().is_empty());
    let health = h
        .http
        .get(format!("{}/healthz", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_forward_that_is_not_a_plain_http_url_is_refused_at_start() {
    let base = args(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
    );
    for (forward, want) in [
        ("pager", "Forward"),
        ("pager=https://pager.example/hook", "Forward"),
        ("pa/ger=http://127.0.0.1:1/x", "RouteName"),
    ] {
        let mut a = base.clone();
        a.forward = vec![forward.to_string()];
        let err = Relay::bind(&a).await.err().expect(forward);
        let kind = match err {
            RelayError::Forward(_) => "Forward",
            RelayError::RouteName(_) => "RouteName",
            other => panic!("{forward}: unexpected {other}"),
        };
        assert_eq!(kind, want, "{forward}");
    }
    let mut a = base.clone();
    a.forward = vec![
        "pager=http://127.0.0.1:1/a".into(),
        "pager=http://127.0.0.1:1/b".into(),
    ];
    assert!(matches!(
        Relay::bind(&a).await,
        Err(RelayError::DuplicateRoute(_))
    ));
}

#[tokio::test]
async fn concurrent_repeats_never_exceed_the_limit() {
    let h = Arc::new(start().await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.notify(vec![alert("BigtapServerErrors", "firing", T1, Some("3"))])
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.pager.alerts().len(), 3);
}
