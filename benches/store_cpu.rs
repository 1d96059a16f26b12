//! Redis CPU per committed winner, script against script, on a store with
//! nothing else to do: one `admit` call of k winners against k calls of the
//! naive design's script (`loadtest/naive.lua`) sent together, so that
//! Redis serves them in one event-loop pass as it does a multiplexed
//! connection's requests in flight. Both pay one fsync per pass
//! (`appendfsync always`, as `bigtap serve` runs Redis).
//!
//! `loadtest/run --vs-naive` measures the same ratio under load, where the
//! server, the load generator and Redis share the machine. This bench
//! leaves the scheduling out, so a change to `lua/admit.lua` can be judged
//! in under a minute, and it splits `admit`'s cost into a price per call and a
//! price per winner (from k = 1 and k = 64).
//!
//! `cargo bench --bench store_cpu` prints one line per k: medians of
//! `ROUNDS` rounds that alternate the two designs. Under `cargo test` (no
//! `--bench` argument) it runs one short round of each, as criterion's
//! benches do, so the test suite checks that it still works.

use std::time::Duration;

use bigtap::store::embedded::RedisProcess;
use bigtap::store::redis::RedisStore;
use bigtap::{SaleId, TicketId, UserId};
use redis::aio::MultiplexedConnection;

mod support;

/// Winners committed per design, per k and per round.
const WINNERS: usize = 64 * 100;
/// Rounds per k; the line shows their medians.
const ROUNDS: usize = 5;
/// Winners per design and k under `cargo test`, in one round.
const SMOKE_WINNERS: usize = 64 * 2;
/// Winners per event-loop pass. 64 naive calls are about 12 KB, within the
/// one 16 KB read Redis makes of a connection per pass.
const PER_PASS: [usize; 4] = [1, 8, 27, 64];

const NAIVE_LUA: &str = include_str!("../loadtest/naive.lua");

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let redis = RedisProcess::start_temporary().expect("redis-server is needed for this benchmark");
    let size = if std::env::args().any(|a| a == "--bench") {
        Size {
            winners: WINNERS,
            rounds: ROUNDS,
        }
    } else {
        Size {
            winners: SMOKE_WINNERS,
            rounds: 1,
        }
    };
    rt.block_on(run(&redis.url(), size));
}

/// How much one run measures.
#[derive(Clone, Copy)]
struct Size {
    /// Winners per design, per k and per round.
    winners: usize,
    rounds: usize,
}

async fn run(url: &str, size: Size) {
    let Size { winners, rounds } = size;
    let store = RedisStore::open(url, "bench", Duration::from_secs(10), None).expect("open");
    store
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("Redis ready");
    let mut con = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let naive = redis::Script::new(NAIVE_LUA);
    naive
        .prepare_invoke()
        .load_async(&mut con)
        .await
        .expect("SCRIPT LOAD");

    println!(
        "Redis CPU per committed winner (µs), one fsync per pass; median of {rounds} round(s) of {winners} winners"
    );
    println!(
        "{:>16} {:>8} {:>8} {:>16}",
        "winners / pass", "naive", "admit", "admit / naive"
    );
    let (mut naive_at, mut admit_at) = (Vec::new(), Vec::new());
    for &k in &PER_PASS {
        let (mut n, mut a) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let tag = format!("k{k}r{round}");
            n.push(naive_round(&mut con, naive.get_hash(), &tag, k, winners).await);
            a.push(admit_round(&store, &mut con, &tag, k, winners).await);
        }
        let (n, a) = (median(n), median(a));
        naive_at.push((k, n));
        admit_at.push((k, a));
        println!("{k:>16} {n:>8.2} {a:>8.2} {:>16.2}", a / n);
    }
    for (name, at) in [("naive", &naive_at), ("admit", &admit_at)] {
        if let Some((per_pass, per_winner)) = split(at) {
            println!("{name}: {per_pass:.1} µs per pass (its fsync included) + {per_winner:.2} µs per winner");
        }
    }
}

/// Splits cost(k) = per_pass / k + per_winner using the first and last k.
fn split(at: &[(usize, f64)]) -> Option<(f64, f64)> {
    let (&(k1, c1), &(k2, c2)) = (at.first()?, at.last()?);
    let (k1, k2) = (k1 as f64, k2 as f64);
    let per_winner = (c2 * k2 - c1 * k1) / (k2 - k1);
    Some(((c1 - per_winner) * k1, per_winner))
}

/// Commits `winners` winners (rounded down to whole passes) with the naive
/// script, `k` calls per pass;
/// returns Redis CPU per winner in µs.
async fn naive_round(
    con: &mut MultiplexedConnection,
    sha: &str,
    tag: &str,
    k: usize,
    winners: usize,
) -> f64 {
    let keys = ["stock", "winners", "orders"].map(|n| format!("naive:{{{tag}}}:{n}"));
    redis::cmd("SET")
        .arg(&keys[0])
        .arg(winners)
        .query_async::<()>(con)
        .await
        .expect("SET stock");
    let now = bigtap::clock::unix_ms();
    let before = redis_cpu(con).await;
    let mut user = 0usize;
    let passes = winners / k;
    for _ in 0..passes {
        let mut pipe = redis::pipe();
        for _ in 0..k {
            user += 1;
            let u = UserId::parse(&format!("{tag}u{user}")).expect("user id");
            pipe.cmd("EVALSHA")
                .arg(sha)
                .arg(3)
                .arg(&keys)
                .arg(u.as_str())
                .arg(TicketId::for_user(&u).as_str())
                .arg(tag)
                .arg(now)
                .arg(now + 600_000);
        }
        let won: Vec<i64> = pipe.query_async(con).await.expect("naive pass");
        assert!(
            won.iter().all(|&w| w == 1),
            "a naive call did not win: {won:?}"
        );
    }
    (redis_cpu(con).await - before) / (passes * k) as f64
}

/// Commits `winners` winners (rounded down to whole calls) through
/// `RedisStore::admit`, `k` per call;
/// returns Redis CPU per winner in µs.
async fn admit_round(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    tag: &str,
    k: usize,
    winners: usize,
) -> f64 {
    let sale = SaleId::parse(tag).expect("sale id");
    let epoch = support::leased_sale(store, &sale, winners as u64).await;
    let before = redis_cpu(con).await;
    let mut user = 0usize;
    let passes = winners / k;
    for _ in 0..passes {
        let batch = support::buyers(tag, &mut user, k);
        support::admit_all(store, &sale, epoch, &batch).await;
    }
    (redis_cpu(con).await - before) / (passes * k) as f64
}

/// Redis's own CPU so far (user + system, main thread and all), in µs.
async fn redis_cpu(con: &mut MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(con)
        .await
        .expect("INFO cpu");
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO cpu has no {name}"))
    };
    (field("used_cpu_sys") + field("used_cpu_user")) * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
