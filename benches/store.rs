//! Commits against a real redis-server: one `admit` call per winner versus
//! batched calls, the design choice behind micro-batching.

use std::time::{Duration, Instant};

use bigtap::store::embedded::RedisProcess;
use bigtap::store::redis::RedisStore;
use bigtap::SaleId;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod support;

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
                    let epoch = support::leased_sale(&store, &sale, units).await;
                    let mut n = 0usize;
                    let start = Instant::now();
                    for _ in 0..iters {
                        let cands = support::buyers("", &mut n, batch);
                        support::admit_all(&store, &sale, epoch, &cands).await;
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
