//! The node's hot path in process: tokens, the lock-free lease counter under
//! contention, and a whole rejected request (routing, session HMAC, sale
//! lookup, winners replica, sold-out flag, response) without a socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bigtap::admission::stock::LocalStock;
use bigtap::auth::{KeyRing, TicketClaims};
use bigtap::sale::{Eligibility, SaleSpec};
use bigtap::store::embedded::RedisProcess;
use bigtap::{App, SaleId, ServeConfig, TicketId, UserId};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body_util::Empty;

const SESSION_KEYS: &str = "s1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const TICKET_KEYS: &str = "t1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn tokens(c: &mut Criterion) {
    let ring = KeyRing::parse(SESSION_KEYS).unwrap();
    let now = bigtap::clock::unix_ms() / 1000;
    let token = ring.mint_session(&UserId::parse("u0000001").unwrap(), now + 3600);
    c.bench_function("session_verify", |b| {
        b.iter(|| {
            ring.verify_session(std::hint::black_box(token.as_bytes()), now)
                .unwrap()
        })
    });
    let tickets = KeyRing::parse(TICKET_KEYS).unwrap();
    let claims = TicketClaims {
        sale: SaleId::parse("phone").unwrap(),
        ticket: TicketId::random(),
        user: UserId::parse("u0000001").unwrap(),
        expires_at_ms: 1_800_000_000_000,
    };
    c.bench_function("purchase_token_sign", |b| {
        b.iter(|| tickets.sign_ticket(std::hint::black_box(&claims)))
    });
}

fn local_counter(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_counter_take");
    for threads in [1usize, 2, 8] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::from_parameter(threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let stock = Arc::new(LocalStock::new());
                    let per = iters / threads as u64 + 1;
                    stock.grant(1, u32::MAX);
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            let stock = stock.clone();
                            s.spawn(move || {
                                for _ in 0..per {
                                    std::hint::black_box(stock.take());
                                }
                            });
                        }
                    });
                    // Time per take across all threads.
                    start.elapsed() / threads as u32
                })
            },
        );
    }
    g.finish();
}

fn rejected_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisProcess::start_temporary().expect("redis-server is needed for this benchmark");
    let app = rt.block_on(async {
        let mut cfg = ServeConfig::defaults();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.redis = Some(redis.url());
        cfg.session_keys = Some(SESSION_KEYS.into());
        cfg.ticket_keys = Some(TICKET_KEYS.into());
        cfg.admin_key = Some("a".into());
        cfg.backend_key = Some("b".into());
        cfg.user_rate = 0;
        cfg.refresh_ms = 20;
        let app = App::build(cfg).await.unwrap();
        let now = bigtap::clock::unix_ms();
        let sale = SaleId::parse("gone").unwrap();
        let spec = SaleSpec {
            stock: Some(0),
            starts_at_ms: now - 1000,
            ends_at_ms: now + 3_600_000,
            ticket_ttl_ms: 60_000,
            eligibility: Eligibility::Open,
        };
        app.shared().store.put_sale(&sale, &spec).await.unwrap();
        app.shared().sales.load(sale).await.unwrap();
        app
    });
    let shared = app.shared().clone();
    let handle = rt.block_on(async { app.spawn() });
    let ring = KeyRing::parse(SESSION_KEYS).unwrap();
    let token = format!(
        "Bearer {}",
        ring.mint_session(
            &UserId::parse("loser").unwrap(),
            bigtap::clock::unix_ms() / 1000 + 3600
        )
    );
    let request = || {
        hyper::Request::post("/v1/sales/gone/tickets")
            .header("authorization", token.as_str())
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // Warm up until the node has learnt that the sale is sold out and its
    // winners replica is complete (no Redis call per request from then on).
    rt.block_on(async {
        for _ in 0..200 {
            let r = bigtap::http::handle(shared.clone(), request(), [127, 0, 0, 1].into()).await;
            assert_eq!(r.status(), 410);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // The claim the benchmark rests on: a refused buyer costs no Redis
    // call. No winner lookup (HGET) may reach Redis for 1,000 of them.
    rt.block_on(async {
        let client = redis::Client::open(redis.url().as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let lookups = |info: String| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix("cmdstat_hget:calls="))
                .and_then(|v| v.split(',').next()?.parse().ok())
                .unwrap_or(0)
        };
        let info = || redis::cmd("INFO").arg("commandstats").to_owned();
        let before = lookups(info().query_async(&mut con).await.unwrap());
        for _ in 0..1000 {
            let r = bigtap::http::handle(shared.clone(), request(), [127, 0, 0, 1].into()).await;
            assert_eq!(r.status(), 410);
        }
        let after = lookups(info().query_async(&mut con).await.unwrap());
        assert_eq!(after, before, "refused buyers reached Redis");
    });
    c.bench_function("rejected_request_sold_out", |b| {
        b.to_async(&rt).iter(|| async {
            let r = bigtap::http::handle(shared.clone(), request(), [127, 0, 0, 1].into()).await;
            debug_assert_eq!(r.status(), 410);
            r
        })
    });
    rt.block_on(handle.stop());
}

criterion_group!(benches, tokens, local_counter, rejected_request);
criterion_main!(benches);
