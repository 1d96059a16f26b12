//! The order-stream consumer against a real redis-server and a real HTTP
//! sink: delivery, crash takeover, retries with backoff, dead letters and
//! replay, several consumers, graceful shutdown, and sale discovery.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bigtap::orders::{Consumer, DeadCommand, OrdersArgs, OrdersCommand};
use bigtap::store::redis::RedisStore;
use bigtap::store::Store as _;
use clap::{CommandFactory, Parser};
use support::consumer::*;
use support::{eventually, metric, BIN, PATIENCE};

/// Waits until `sale` has a dead letter and every other entry was
/// acknowledged, then returns the dead letters.
async fn dead_letters_once_settled(
    store: &Store,
    sale_name: &str,
    what: &str,
) -> Vec<bigtap::orders::dead::DeadLetter> {
    let s = sale(sale_name);
    let seam = store.seam();
    assert!(
        eventually(PATIENCE, || async {
            !bigtap::orders::dead::list(&seam, &s)
                .await
                .unwrap()
                .is_empty()
        })
        .await,
        "timed out waiting until {what}"
    );
    assert!(
        eventually(PATIENCE, || async { store.drained(sale_name).await }).await,
        "timed out waiting until everything else was acknowledged"
    );
    bigtap::orders::dead::list(&seam, &s).await.unwrap()
}

fn counter(text: &str, outcome: &str) -> u64 {
    metric(
        text,
        &format!("bigtap_orders_deliveries_total{{outcome=\"{outcome}\"}}"),
    ) as u64
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    orders: OrdersArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_winner_reaches_the_sink_with_its_ticket_as_idempotency_key() {
    let store = Store::start().await;
    store.create_sale("s1").await;
    let winners = store.add_winners("s1", 200).await;
    let sink = TestSink::start(always(200)).await;
    let mut cfg = consumer_config(&store);
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let consumer = Consumer::connect(cfg, http_sink(&sink)).await.unwrap();
    let metrics_addr = consumer.metrics_addr().expect("metrics bound");
    let (token, task) = spawn_consumer(consumer);

    let want: HashSet<String> = winners.iter().map(|(_, t)| t.clone()).collect();
    assert_delivered_and_acknowledged(&sink, &store, "s1", &want).await;

    let issued: HashMap<&str, usize> = winners
        .iter()
        .enumerate()
        .map(|(i, (_, t))| (t.as_str(), i))
        .collect();
    for call in sink.calls() {
        let ticket = call.ticket();
        let i = issued[ticket] as u64;
        assert_eq!(call.idempotency_key.as_deref(), Some(ticket));
        assert_eq!(call.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            call.body,
            serde_json::json!({
                "ticket": ticket,
                "sale": "s1",
                "user": format!("user-{i}"),
                "issued_at_ms": 1_700_000_000_000u64 + i,
                "expires_at_ms": 1_700_000_000_000u64 + i + 600_000,
            })
        );
    }

    let url = format!("http://{metrics_addr}/metrics");
    assert!(
        eventually(PATIENCE, || async {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            counter(&text, "ok") >= 200
                && text.contains("bigtap_orders_pending{sale=\"s1\"} 0")
                && text.contains("bigtap_orders_lag{sale=\"s1\"} 0")
                && text.contains("bigtap_orders_dead_letters{sale=\"s1\"} 0")
                && text.contains("bigtap_orders_delivery_duration_seconds_bucket")
        })
        .await,
        "timed out waiting until the gauges show an empty backlog"
    );
    stop_consumer(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_left_pending_by_a_killed_consumer_are_delivered_by_another() {
    let store = Store::start().await;
    store.create_sale("s1").await;
    let winners = store.add_winners("s1", 100).await;
    // The first 30 calls succeed, then the backend hangs: the first consumer
    // dies with deliveries in flight.
    let sink = TestSink::start(Arc::new(|i, _| {
        if i < 30 {
            Reply::Status(200)
        } else {
            Reply::Hang
        }
    }))
    .await;
    let mut cfg = consumer_config(&store);
    cfg.concurrency = 8;
    let first = Consumer::connect(cfg.clone(), http_sink(&sink))
        .await
        .unwrap();
    let (_token, task) = spawn_consumer(first);
    assert!(
        eventually(PATIENCE, || async { sink.call_count() >= 38 }).await,
        "timed out waiting until the first consumer is stuck mid-stream"
    );
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(
        store.pending("s1").await > 0,
        "the crash left entries pending"
    );

    sink.set_behaviour(always(200));
    cfg.consumer = bigtap::orders::config::unique_consumer_name();
    let second = Consumer::connect(cfg, http_sink(&sink)).await.unwrap();
    let (token, task) = spawn_consumer(second);
    let want: HashSet<String> = winners.iter().map(|(_, t)| t.clone()).collect();
    assert_delivered_and_acknowledged(&sink, &store, "s1", &want).await;
    for call in sink.calls() {
        // A repeat is the same order under the same key, never a new one.
        assert_eq!(call.idempotency_key.as_deref(), Some(call.ticket()));
    }
    assert!(
        sink.calls().len() > want.len(),
        "the hung deliveries were repeated"
    );
    stop_consumer(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_then_unreachable_sink_gets_everything_once_it_recovers_with_growing_waits() {
    let store = Store::start().await;
    store.create_sale("s1").await;
    let winners = store.add_winners("s1", 20).await;
    // The first 12 calls fail; later ones succeed once the sink is back.
    let sink = TestSink::start(Arc::new(|i, _| {
        if i < 12 {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let mut cfg = consumer_config(&store);
    cfg.concurrency = 4;
    cfg.max_deliveries = 1000;
    let backoff = bigtap::orders::Backoff {
        base: Duration::from_millis(40),
        max: Duration::from_millis(400),
    };
    cfg.retry = backoff;
    let consumer = Consumer::connect(cfg, http_sink(&sink)).await.unwrap();
    let metrics = consumer.metrics();
    let (token, task) = spawn_consumer(consumer);

    assert!(
        eventually(PATIENCE, || async { sink.call_count() >= 12 }).await,
        "timed out waiting until the sink answered its failures"
    );
    sink.stop();
    let retries_before = counter(&metrics.render(), "retry");
    assert!(
        eventually(PATIENCE, || async {
            counter(&metrics.render(), "retry") >= retries_before + 4
        })
        .await,
        "timed out waiting until the consumer keeps retrying the unreachable sink"
    );
    sink.restart().await;

    let want: HashSet<String> = winners.iter().map(|(_, t)| t.clone()).collect();
    assert_delivered_and_acknowledged(&sink, &store, "s1", &want).await;
    assert!(counter(&metrics.render(), "retry") >= 12);
    assert_eq!(counter(&metrics.render(), "dead"), 0);
    let mut conn = store.conn.clone();
    let counters: usize = redis::cmd("HLEN")
        .arg("bigtap:{s1}:orders:attempts")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        counters, 0,
        "attempt counters are cleared on acknowledgement"
    );

    // Each wait is at least half its ceiling, and ceilings double: the k-th
    // failure of a ticket is followed by at least base * 2^(k-1) / 2.
    let mut longest = 0;
    for calls in sink.by_ticket().values() {
        longest = longest.max(calls.len());
        for (k, pair) in calls.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let floor = backoff.ceiling(k as u32 + 1) / 2;
            assert!(
                gap >= floor,
                "attempt {} came {gap:?} after the previous, before {floor:?}",
                k + 2
            );
        }
    }
    assert!(
        longest >= 3,
        "some ticket failed repeatedly (longest run {longest})"
    );
    stop_consumer(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_entry_is_dead_lettered_after_max_deliveries_and_replayed_once_the_sink_is_fixed()
{
    let store = Store::start().await;
    store.create_sale("s1").await;
    let winners = store.add_winners("s1", 10).await;
    let (poison_id, poison) = winners[3].clone();
    let p = poison.clone();
    let sink = TestSink::start(Arc::new(move |_, t| {
        if t == p {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let mut cfg = consumer_config(&store);
    cfg.max_deliveries = 4;
    let consumer = Consumer::connect(cfg, http_sink(&sink)).await.unwrap();
    let metrics = consumer.metrics();
    let (token, task) = spawn_consumer(consumer);

    let dead = dead_letters_once_settled(&store, "s1", "the poison entry is dead-lettered").await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.field("ticket"), Some(poison.as_str()));
    assert_eq!(d.field("sale"), Some("s1"));
    assert_eq!(d.field("node"), Some("node-a"));
    assert_eq!(d.field("attempts"), Some("4"));
    assert_eq!(d.field("original_id"), Some(poison_id.as_str()));
    assert!(d.field("error").unwrap_or("").contains("500"), "{d:?}");
    assert_eq!(
        sink.by_ticket()[&poison].len(),
        4,
        "exactly max-deliveries attempts"
    );
    let others: HashSet<String> = winners
        .iter()
        .map(|(_, t)| t.clone())
        .filter(|t| *t != poison)
        .collect();
    assert_eq!(sink.delivered(), others);
    assert_eq!(counter(&metrics.render(), "dead"), 1);
    assert!(
        eventually(PATIENCE, || async {
            metrics
                .render()
                .contains("bigtap_orders_dead_letters{sale=\"s1\"} 1")
        })
        .await,
        "timed out waiting until the dead-letter gauge counts it"
    );

    // The operator lists the dead letters, fixes the backend, and replays.
    let url = store.url();
    let cli =
        Cli::try_parse_from(["orders", "--redis", &url, "dead", "list", "--sale", "s1"]).unwrap();
    let Some(OrdersCommand::Dead(cmd)) = &cli.orders.command else {
        panic!("dead list parses");
    };
    let mut out = Vec::new();
    cli.orders.run_dead(cmd, &mut out).await.unwrap();
    let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(line["id"], d.id.as_str());
    assert_eq!(line["fields"]["ticket"], poison.as_str());

    sink.set_behaviour(always(200));
    let cli = Cli::try_parse_from([
        "orders", "--redis", &url, "dead", "replay", "--sale", "s1", "--id", &d.id,
    ])
    .unwrap();
    let Some(OrdersCommand::Dead(cmd @ DeadCommand::Replay { .. })) = &cli.orders.command else {
        panic!("dead replay parses");
    };
    let mut out = Vec::new();
    cli.orders.run_dead(cmd, &mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).contains("replayed 1 dead letter(s)"));

    let again = cli.orders.run_dead(cmd, &mut Vec::new()).await;
    assert!(
        matches!(again, Err(bigtap::orders::OrdersError::NoDeadLetter { .. })),
        "a dead letter is replayed once: {again:?}"
    );

    assert!(
        eventually(PATIENCE, || async { sink.delivered().contains(&poison) }).await,
        "timed out waiting until the replayed order was delivered"
    );
    // The ticket still has exactly one entry in the order stream.
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("bigtap:{s1}:orders")
        .arg("-")
        .arg("+")
        .query_async(&mut store.conn.clone())
        .await
        .unwrap();
    let with_ticket = entries
        .iter()
        .filter(|(_, f)| f.iter().any(|(k, v)| k == "ticket" && v == &poison))
        .count();
    assert_eq!(with_ticket, 1, "one order entry per ticket after a replay");
    assert!(
        eventually(PATIENCE, || async { store.drained("s1").await }).await,
        "timed out waiting until and acknowledged"
    );
    assert!(bigtap::orders::dead::list(&store.seam(), &sale("s1"))
        .await
        .unwrap()
        .is_empty());
    stop_consumer(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_entry_is_dead_lettered_without_bothering_the_sink() {
    let store = Store::start().await;
    store.create_sale("s1").await;
    let mut conn = store.conn.clone();
    let bad: String = redis::cmd("XADD")
        .arg("bigtap:{s1}:orders")
        .arg("*")
        .arg("ticket")
        .arg("not a ticket!")
        .arg("sale")
        .arg("s1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let good = store.add_winners("s1", 1).await;
    let sink = TestSink::start(always(200)).await;
    let (token, task) = spawn_consumer(consumer_of(&store, &sink).await);
    let dead =
        dead_letters_once_settled(&store, "s1", "the malformed entry is dead-lettered").await;
    assert_eq!(dead[0].field("original_id"), Some(bad.as_str()));
    assert!(dead[0].field("error").unwrap().contains("malformed"));
    assert_eq!(sink.delivered(), HashSet::from([good[0].1.clone()]));
    assert_eq!(sink.call_count(), 1);
    stop_consumer(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_at_once_share_the_work_and_lose_nothing() {
    let store = Store::start().await;
    let mut want = HashSet::new();
    for s in ["s1", "s2"] {
        store.create_sale(s).await;
        want.extend(store.add_tickets(s, 300).await);
    }
    let sink = TestSink::start(Arc::new(|_, _| Reply::Slow(200, Duration::from_millis(5)))).await;
    let mut cfg = consumer_config(&store);
    cfg.concurrency = 8;
    // Nobody is dead here: no entry should change hands.
    cfg.claim_idle = Duration::from_secs(60);
    let mut cfg_b = cfg.clone();
    cfg_b.consumer = bigtap::orders::config::unique_consumer_name();
    let a = Consumer::connect(cfg, http_sink(&sink)).await.unwrap();
    let b = Consumer::connect(cfg_b, http_sink(&sink)).await.unwrap();
    let (ma, mb) = (a.metrics(), b.metrics());
    let (ta, ja) = spawn_consumer(a);
    let (tb, jb) = spawn_consumer(b);

    assert!(
        eventually(PATIENCE, || async { sink.delivered() == want }).await,
        "timed out waiting until every winner was delivered"
    );
    assert!(
        eventually(PATIENCE, || async {
            store.drained("s1").await && store.drained("s2").await
        })
        .await,
        "timed out waiting until every entry was acknowledged"
    );
    assert_eq!(
        sink.calls().len(),
        want.len(),
        "each entry went to exactly one consumer"
    );
    let (oka, okb) = (counter(&ma.render(), "ok"), counter(&mb.render(), "ok"));
    assert_eq!(oka + okb, want.len() as u64);
    assert!(oka > 0 && okb > 0, "both consumers worked ({oka} / {okb})");
    stop_consumer(ta, ja).await;
    stop_consumer(tb, jb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_acknowledges_exactly_what_the_sink_received() {
    let store = Store::start().await;
    store.create_sale("s1").await;
    let winners = store.add_winners("s1", 500).await;
    let sink = TestSink::start(Arc::new(|_, _| Reply::Slow(200, Duration::from_millis(20)))).await;
    let mut cfg = consumer_config(&store);
    cfg.concurrency = 16;
    let consumer = Consumer::connect(cfg.clone(), http_sink(&sink))
        .await
        .unwrap();
    let (token, task) = spawn_consumer(consumer);
    assert!(
        eventually(PATIENCE, || async { sink.call_count() >= 100 }).await,
        "timed out waiting until deliveries are under way"
    );
    stop_consumer(token, task).await;

    let ticket_of: HashMap<&str, &str> = winners
        .iter()
        .map(|(id, t)| (id.as_str(), t.as_str()))
        .collect();
    let acked: HashSet<String> = store
        .acknowledged("s1")
        .await
        .iter()
        .map(|id| ticket_of[id.as_str()].to_owned())
        .collect();
    let delivered = sink.delivered();
    assert!(acked.len() < winners.len(), "stopped mid-stream");
    // Nothing acknowledged undelivered, and nothing in flight abandoned.
    assert_eq!(acked, delivered);

    // A later consumer finishes the rest.
    let (token, task) = spawn_consumer(consumer_of(&store, &sink).await);
    let want: HashSet<String> = winners.iter().map(|(_, t)| t.clone()).collect();
    assert_delivered_and_acknowledged(&sink, &store, "s1", &want).await;
    stop_consumer(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_created_while_the_consumer_runs_are_picked_up() {
    let store = Store::start().await;
    let sink = TestSink::start(always(200)).await;
    let (token, task) = spawn_consumer(consumer_of(&store, &sink).await);
    let mut want = HashSet::new();
    for s in ["early", "late"] {
        store.create_sale(s).await;
        want.extend(store.add_tickets(s, 5).await);
        assert!(
            eventually(PATIENCE, || async { want.is_subset(&sink.delivered()) }).await,
            "timed out waiting until the new sale's winners were delivered"
        );
    }
    stop_consumer(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_resume_after_redis_restarts() {
    let mut store = Store::start().await;
    store.create_sale("s1").await;
    let mut want: HashSet<String> = store.add_tickets("s1", 20).await;
    let sink = TestSink::start(always(200)).await;
    let (token, task) = spawn_consumer(consumer_of(&store, &sink).await);
    assert!(
        eventually(PATIENCE, || async { store.drained("s1").await }).await,
        "timed out waiting until the first winners were delivered"
    );

    // AOF with fsync on every write: the stream and the group survive.
    tokio::task::block_in_place(|| store.redis.restart()).expect("redis restarts");
    store.reconnect().await;
    want.extend(store.add_tickets("s1", 20).await);
    assert_delivered_and_acknowledged(&sink, &store, "s1", &want).await;
    stop_consumer(token, task).await;
}

/// Fills the store's memory, and checks that creating `group` on the
/// sale's order stream is now refused for want of memory, even when the
/// group exists.
async fn fill_until_a_group_is_refused(
    con: &mut redis::aio::MultiplexedConnection,
    sale: &str,
    group: &str,
) {
    support::fill_memory(con).await;
    let refused: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(format!("bigtap:{{{sale}}}:orders"))
        .arg(group)
        .arg("0")
        .query_async(con)
        .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.code() == Some("OOM")),
        "the store is not out of memory: {refused:?}"
    );
}

/// A store that is out of memory (`maxmemory` reached, `noeviction`)
/// refuses every command that may take memory, creating a consumer group
/// included, even one that exists; reading and acknowledging take none. A
/// consumer that starts then (restarted, or added to catch up) still
/// starts, delivers every winner of a sale it consumed before and
/// acknowledges it. A sale whose stream has no group yet (made before
/// `put_sale.lua` made the group with the sale; here its name is only
/// listed), which cannot be made until memory is freed, waits for it
/// without holding up the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_started_while_the_store_is_out_of_memory_delivers_and_acknowledges_every_winner(
) {
    let store = Store::start().await;
    store.create_sale("s1").await;
    let mut want: HashSet<String> = store.add_tickets("s1", 20).await;
    let sink = TestSink::start(always(200)).await;
    let (token, task) = spawn_consumer(consumer_of(&store, &sink).await);
    assert_delivered_and_acknowledged(&sink, &store, "s1", &want).await;
    stop_consumer(token, task).await;
    want.extend(store.add_tickets("s1", 30).await);
    store.create_sale("s2").await;
    let later: HashSet<String> = store.add_tickets("s2", 10).await;

    let mut con = store.conn.clone();
    fill_until_a_group_is_refused(&mut con, "s1", "orders").await;

    let (token, task) = spawn_consumer(consumer_of(&store, &sink).await);
    assert_delivered_and_acknowledged(&sink, &store, "s1", &want).await;
    assert!(
        sink.delivered().is_disjoint(&later),
        "a sale without a group was read"
    );
    support::set_maxmemory(&mut con, 0).await;
    want.extend(later);
    assert_delivered_and_acknowledged(&sink, &store, "s2", &want).await;
    stop_consumer(token, task).await;
}

/// `sale put` makes a new sale's order stream with its consumer group, so
/// a consumer that first meets the sale once the store is already out of
/// memory has no group to create: it delivers and acknowledges every
/// winner at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_made_before_the_store_filled_up_is_consumed_while_it_is_full() {
    let store = Store::start().await;
    let seam = store.seam();
    seam.put_sale(&sale("s1"), &support::open_sale_spec(100))
        .await
        .unwrap();
    let want = store.add_tickets("s1", 25).await;

    let mut con = store.conn.clone();
    fill_until_a_group_is_refused(&mut con, "s1", "another").await;

    let sink = TestSink::start(always(200)).await;
    let (token, task) = spawn_consumer(consumer_of(&store, &sink).await);
    assert_delivered_and_acknowledged(&sink, &store, "s1", &want).await;
    stop_consumer(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sales_named_are_consumed() {
    let store = Store::start().await;
    store.create_sale("mine").await;
    store.create_sale("theirs").await;
    let mine = store.add_winners("mine", 5).await;
    store.add_winners("theirs", 5).await;
    let sink = TestSink::start(always(200)).await;
    let mut cfg = consumer_config(&store);
    cfg.sales = Some(vec![sale("mine")]);
    let (token, task) = spawn_consumer(Consumer::connect(cfg, http_sink(&sink)).await.unwrap());
    assert!(
        eventually(PATIENCE, || async { store.drained("mine").await }).await,
        "timed out waiting until the named sale was drained"
    );
    let want: HashSet<String> = mine.into_iter().map(|(_, t)| t).collect();
    assert_eq!(sink.delivered(), want);
    stop_consumer(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_removes_only_entries_every_group_is_done_with() {
    let store = Store::start().await;
    store.create_sale("s1").await;
    let mut conn = store.conn.clone();
    // Another reader of the stream that has consumed nothing yet.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("bigtap:{s1}:orders")
        .arg("audit")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    store.add_winners("s1", 50).await;
    let sink = TestSink::start(always(200)).await;
    let mut cfg = consumer_config(&store);
    cfg.trim = true;
    let (token, task) = spawn_consumer(Consumer::connect(cfg, http_sink(&sink)).await.unwrap());
    assert!(
        eventually(PATIENCE, || async { store.drained("s1").await }).await,
        "timed out waiting until everything was delivered"
    );
    // Several stats rounds (each of which trims) pass; "audit" still holds
    // the whole stream back.
    let rounds = Instant::now();
    assert!(
        eventually(PATIENCE, || async {
            rounds.elapsed() > Duration::from_millis(300)
        })
        .await,
        "timed out waiting until a few trim rounds passed"
    );
    let len: usize = redis::cmd("XLEN")
        .arg("bigtap:{s1}:orders")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 50);
    // The sweeper passes the entries (these have no ticket record, so there
    // is nothing to release): the trim never goes past its cursor.
    let swept = RedisStore::open(&store.redis.url(), "bigtap", Duration::from_secs(2), None)
        .unwrap()
        .sweep(&bigtap::SaleId::parse("s1").unwrap(), 1000)
        .await
        .unwrap();
    assert_eq!(swept.released, 0);
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg("bigtap:{s1}:orders")
        .arg("audit")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        eventually(PATIENCE, || async {
            let len: usize = redis::cmd("XLEN")
                .arg("bigtap:{s1}:orders")
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            len <= 1
        })
        .await,
        "timed out waiting until the consumed entries were trimmed"
    );
    stop_consumer(token, task).await;
}

#[test]
fn the_orders_flags_have_the_documented_defaults() {
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from([
        "orders",
        "--redis",
        "redis://r/",
        "--sink",
        "http://b/orders",
        "--sale",
        "a",
        "--sale",
        "b",
    ])
    .unwrap();
    let (cfg, _sink) = cli.orders.consumer_config().unwrap();
    assert_eq!(cfg.prefix, "bigtap");
    assert_eq!(cfg.sales, Some(vec![sale("a"), sale("b")]));
    assert_eq!(cfg.max_deliveries, 10);
    assert_eq!(cfg.claim_idle, Duration::from_secs(30));
    assert_eq!(cfg.concurrency, 64);
    assert_eq!(cli.orders.sink_timeout_ms, 5000);
    assert_eq!(cfg.metrics_listen, Some("127.0.0.1:9091".parse().unwrap()));
    assert!(!cfg.trim);
    let too_slow = [
        "orders",
        "--redis",
        "redis://r/",
        "--sink",
        "http://b/",
        "--claim-idle-ms",
        "12000",
    ];
    assert!(Cli::try_parse_from(too_slow)
        .unwrap()
        .orders
        .consumer_config()
        .is_err());
    assert!(Cli::try_parse_from(["orders", "--redis", "redis://r/"])
        .unwrap()
        .orders
        .consumer_config()
        .is_err());
}

/// A burst of winners is delivered and acknowledged in full; the rate is
/// printed as a measurement (never asserted): `BIGTAP_BURST=20000 cargo test
/// --release --test orders -- --nocapture burst` gives the figure the README
/// quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_winners_is_delivered_and_acknowledged_in_full() {
    let n: usize = std::env::var("BIGTAP_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let store = Store::start().await;
    store.create_sale("bench").await;
    store.add_winners("bench", n).await;
    let sink = TestSink::start(always(200)).await;
    let mut cfg = consumer_config(&store);
    // The defaults of `bigtap orders`.
    cfg.concurrency = 64;
    cfg.batch = 256;
    let consumer = Consumer::connect(cfg, http_sink(&sink)).await.unwrap();
    let started = Instant::now();
    let (token, task) = spawn_consumer(consumer);
    assert!(
        eventually(PATIENCE, || async { store.drained("bench").await }).await,
        "timed out waiting until every entry was acknowledged"
    );
    let took = started.elapsed();
    assert_eq!(sink.delivered().len(), n);
    println!(
        "delivered and acknowledged {n} orders in {:.2} s: {:.0} deliveries/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    stop_consumer(token, task).await;
}

/// Runs `bigtap` with `args` and `env` until a line of its log contains
/// `marker`; returns that line. Kills the process afterwards.
fn log_line_of(args: &[&str], env: &[(&str, &str)], marker: &str) -> String {
    use std::io::BufRead;
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bigtap starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(&marker) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let line = rx.recv_timeout(PATIENCE);
    let _ = child.kill();
    let _ = child.wait();
    line.expect("the log line appears")
}

fn output_of(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("bigtap runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_password_never_shows_in_logs_errors_or_help() {
    let store = Store::start().await;
    let port = store.redis.port();
    let set = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "config",
            "set",
            "requirepass",
            "s3cret",
        ])
        .output()
        .expect("redis-cli runs");
    assert!(String::from_utf8_lossy(&set.stdout).contains("OK"));
    let url = format!("redis://:s3cret@127.0.0.1:{port}/");
    let keys = [
        (
            "BIGTAP_SESSION_KEYS",
            "s1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ),
        (
            "BIGTAP_TICKET_KEYS",
            "t1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
        ),
        ("BIGTAP_ADMIN_KEY", "admin"),
        ("BIGTAP_BACKEND_KEY", "backend"),
        ("BIGTAP_ALLOW_UNSAFE_REDIS", "true"),
        ("BIGTAP_REDIS_URL", url.as_str()),
        ("RUST_LOG", "info"),
    ];

    let serving = log_line_of(
        &["serve", "--listen", "127.0.0.1:0"],
        &keys,
        "bigtap serving",
    );
    assert!(serving.contains(":***@127.0.0.1"), "{serving}");
    let consuming = log_line_of(
        &[
            "orders",
            "--sink",
            "https://orders:pw2@127.0.0.1:9/orders",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &keys,
        "order consumer running",
    );
    assert!(consuming.contains(":***@127.0.0.1"), "{consuming}");

    let wrong = format!("redis://:hunter2@127.0.0.1:{port}/");
    let refused = output_of(
        &["sale", "show", "s1"],
        &[("BIGTAP_REDIS_URL", wrong.as_str())],
    );
    assert!(
        refused.contains(":***@"),
        "the error names the store: {refused}"
    );
    let bad_scheme = output_of(
        &["orders", "dead", "list", "--sale", "s1"],
        &[("BIGTAP_REDIS_URL", "memcache://:hunter2@127.0.0.1:1")],
    );
    assert!(bad_scheme.contains("not usable"), "{bad_scheme}");

    for shown in [
        serving,
        consuming,
        refused,
        bad_scheme,
        output_of(&["serve", "--help"], &keys),
        output_of(&["orders", "--help"], &keys),
        output_of(&["sale", "--help"], &keys),
    ] {
        for secret in ["s3cret", "hunter2", "pw2"] {
            assert!(!shown.contains(secret), "{secret} shown in: {shown}");
        }
    }
}
