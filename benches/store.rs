//! Commits against a real redis-server: one `admit` call per winner versus
//! batched calls, the design choice behind micro-batching.

use std::time::{Duration, Instant};

use bigtap::sale::{Eligibility, SaleSpec};
use bigtap::store::embedded::RedisProcess;
use bigtap::store::redis::RedisStore;
use bigtap::store::{AdmitReply, Candidate, LeaseReply, Store, Verdict};
use bigtap::{SaleId, TicketId, UserId};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn admit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisProcess::start_temporary().expect("redis-server is needed for this benchmark");
    let _runtime = rt.enter();
    let store = RedisStore::open(&redis.url(), "bench", Duration::from_secs(5), None).unwrap();
    let mut g = c.benchmark_group("admit_per_winner");
    g.sample_size(10);
    let mut round = 0u64;
    for batch in [1usize, 16, 128] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.to_async(&rt).iter_custom(|iters| {
                round += 1;
                let store = store.clone();
                async move {
                    let sale = SaleId::parse(&format!("s{round}")).unwrap();
                    let units = iters * batch as u64;
                    let now = bigtap::clock::unix_ms();
                    let spec = SaleSpec {
                        stock: Some(units),
                        starts_at_ms: now - 1000,
                        ends_at_ms: now + 3_600_000,
                        ticket_ttl_ms: 600_000,
                        eligibility: Eligibility::Open,
                    };
                    store.put_sale(&sale, &spec).await.unwrap();
                    let LeaseReply::Granted { epoch, granted, .. } =
                        store.lease(&sale, "bench", units, 600_000).await.unwrap()
                    else {
                        panic!("the lease was refused")
                    };
                    // Time wins, not refusals: the whole stock is leased.
                    assert_eq!(granted, units, "lease short of the stock");
                    let mut n = 0u64;
                    let start = Instant::now();
                    for _ in 0..iters {
                        let cands: Vec<Candidate> = (0..batch)
                            .map(|_| {
                                n += 1;
                                let user = UserId::parse(&format!("u{n}")).unwrap();
                                Candidate {
                                    user,
                                    ticket: TicketId::for_user(&user),
                                    ship_to: None,
                                }
                            })
                            .collect();
                        let reply = store.admit(&sale, "bench", epoch, &cands).await.unwrap();
                        let AdmitReply::Judged { verdicts, .. } = reply else {
                            panic!("admit refused: {reply:?}")
                        };
                        assert!(
                            verdicts.iter().all(|v| matches!(v, Verdict::WonAt(..))),
                            "a benchmarked commit did not win: {verdicts:?}"
                        );
                    }
                    start.elapsed()
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, admit);
criterion_main!(benches);
