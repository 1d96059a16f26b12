//! Whole-sale behaviour against a real redis-server: the race across nodes,
//! the ticket lifecycle, lease fencing, and a Redis restart.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bigtap::store::redis::RedisStore;
use bigtap::store::{AdmitReply, Candidate, LeaseReply, NextSweep, Store, Swept, Verdict};
use bigtap::{SaleId, TicketId, UserId};
use futures::stream::{self, StreamExt};
use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::store::candidates;
use support::*;

/// What a buyer saw: status and ticket, if any.
type Seen = (u16, Option<String>);

async fn xlen(redis_url: &str, key: &str) -> u64 {
    let mut con = redis_con(redis_url).await;
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut con)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_racing_ten_thousand_requests_sell_exactly_the_stock_once_per_buyer() {
    let redis = redis();
    let slow_ok = |c: &mut bigtap::ServeConfig| {
        c.redis_timeout_ms = 5000;
        c.request_timeout_ms = 10_000;
        c.lease_max = 64;
    };
    let a = spawn_node(&redis.url(), slow_ok).await;
    let b = spawn_node(&redis.url(), slow_ok).await;
    a.open_sale("race", 500).await;
    // Node b learns of the sale by discovery.
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.get("/v1/sales/race").await.status == StatusCode::OK
        })
        .await
    );

    let buyers: Vec<String> = (0..5000).map(|i| format!("buyer{i}")).collect();
    let results: Vec<(String, Vec<Seen>)> = stream::iter(buyers.iter().cloned())
        .map(|user| {
            let (a, b) = (&a, &b);
            async move {
                // Each buyer presses twice at once, once on each node.
                let (x, y) = tokio::join!(a.take("race", &user), b.take("race", &user));
                let pick = |r: Answer| {
                    (
                        r.status.as_u16(),
                        r.body["ticket"].as_str().map(str::to_owned),
                    )
                };
                (user, vec![pick(x), pick(y)])
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;

    let mut winners: HashMap<String, String> = HashMap::new();
    let mut created = 0;
    for (user, answers) in &results {
        for (status, ticket) in answers {
            match status {
                201 | 200 => {
                    if *status == 201 {
                        created += 1;
                    }
                    let t = ticket.clone().expect("a ticket in every win");
                    let prev = winners.entry(user.clone()).or_insert_with(|| t.clone());
                    assert_eq!(*prev, t, "{user} was answered with two different tickets");
                }
                410 => {}
                other => panic!("unexpected status {other} for {user}"),
            }
        }
    }
    assert_eq!(created, 500, "exactly one new win per unit");
    assert_eq!(winners.len(), 500, "exactly 500 distinct winners");
    let tickets: HashSet<&String> = winners.values().collect();
    assert_eq!(tickets.len(), 500, "no ticket shared by two buyers");
    assert_eq!(xlen(&redis.url(), "bigtap:{race}:orders").await, 500);
    let acct = a.accounting("race").await;
    assert_eq!(acct["pending"], 500);
    assert_eq!(acct["available"], 0);
    assert_eq!(acct["leased"], 0);
    assert_eq!(acct["balanced"], true);
}

#[tokio::test]
async fn a_released_unit_returns_to_the_pool_and_sells_again() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("one", 1).await;
    let alice = n.ticket("one", "alice").await;
    assert_eq!(n.take("one", "bob").await.status, StatusCode::GONE);
    let r = n
        .backend(Method::POST, "one", &format!("{alice}/release"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let bob_won = eventually(Duration::from_secs(3), || async {
        n.take("one", "bob").await.status == StatusCode::CREATED
    })
    .await;
    assert!(bob_won, "the released unit sells again");
    let late = n
        .backend(Method::POST, "one", &format!("{alice}/confirm"))
        .await;
    assert_eq!(
        (late.status, late.body),
        (StatusCode::CONFLICT, json!({"state": "released"}))
    );
    let acct = n.accounting("one").await;
    assert_eq!(
        (acct["pending"].as_u64(), acct["released_total"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(acct["balanced"], true);
}

#[tokio::test]
async fn the_sweeper_releases_tickets_whose_payment_time_ran_out() {
    let redis = redis();
    let n = node(&redis.url()).await;
    let now = now_ms();
    n.admin(Method::PUT, "quick", Some(json!({"stock": 1, "starts_at_ms": now - 1000, "ends_at_ms": now + 60_000, "ticket_ttl_ms": 200})))
        .await;
    let t = n.ticket("quick", "alice").await;
    let released = eventually(Duration::from_secs(5), || async {
        n.backend(Method::GET, "quick", &t).await.body["state"] == "released"
    })
    .await;
    assert!(released, "the sweeper released the expired ticket");
    let acct = n.accounting("quick").await;
    assert_eq!(acct["released_total"], 1);
    assert_eq!(acct["balanced"], true);
    let late = n
        .backend(Method::POST, "quick", &format!("{t}/confirm"))
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert!(
        eventually(Duration::from_secs(3), || async {
            n.take("quick", "bob").await.status == StatusCode::CREATED
        })
        .await
    );
}

/// The group's names and last-delivered ids on the sale's order stream.
async fn order_groups(redis_url: &str, sale: &str) -> Vec<(String, String)> {
    let mut con = redis_con(redis_url).await;
    let r: redis::streams::StreamInfoGroupsReply = con
        .xinfo_groups(format!("bigtap:{{{sale}}}:orders"))
        .await
        .unwrap();
    r.groups
        .into_iter()
        .map(|g| (g.name, g.last_delivered_id))
        .collect()
}

/// A consumer never has to create the group (it takes memory, which a full
/// store refuses): the sale comes with its order stream and the group
/// `orders` reading from its first entry. An update leaves it alone. Where
/// the stream already has the group (the sale's settings deleted by hand),
/// creating the sale again does not stop halfway on `BUSYGROUP`: the
/// script looks before its first write.
#[tokio::test]
async fn a_new_sale_comes_with_its_order_stream_and_the_orders_group_reading_from_the_start() {
    let redis = redis();
    let n = spawn_node(&redis.url(), |_| {}).await;
    let now = now_ms();
    let spec = json!({"stock": 2, "starts_at_ms": now - 1000, "ends_at_ms": now + 60_000, "ticket_ttl_ms": 60_000});
    let created = n.admin(Method::PUT, "fresh", Some(spec.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let from_the_start = vec![("orders".to_owned(), "0-0".to_owned())];
    assert_eq!(order_groups(&redis.url(), "fresh").await, from_the_start);
    assert_eq!(xlen(&redis.url(), "bigtap:{fresh}:orders").await, 0);

    let updated = n.admin(Method::PUT, "fresh", Some(spec.clone())).await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(order_groups(&redis.url(), "fresh").await, from_the_start);

    // The sale's settings are gone, its stream and group are not.
    let mut con = redis_con(&redis.url()).await;
    let _: () = con.del("bigtap:{fresh}:cfg").await.unwrap();
    let again = n.admin(Method::PUT, "fresh", Some(spec)).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(order_groups(&redis.url(), "fresh").await, from_the_start);
}

#[tokio::test]
async fn a_delivered_order_stays_in_the_stream_until_the_sweeper_passes_it_and_its_ticket_is_released_at_its_ttl(
) {
    let redis = redis();
    // The node's own sweeper is off: this test sweeps by hand, after the trim.
    let n = spawn_node(&redis.url(), |c| c.sweep_ms = 600_000).await;
    let now = now_ms();
    n.admin(Method::PUT, "due", Some(json!({"stock": 2, "starts_at_ms": now - 1000, "ends_at_ms": now + 60_000, "ticket_ttl_ms": 300})))
        .await;
    let mut tickets = Vec::new();
    for user in ["alice", "bob"] {
        let t = n.take("due", user).await;
        assert_eq!(t.status, StatusCode::CREATED, "{user}: {:?}", t.body);
        tickets.push(t.body["ticket"].as_str().unwrap().to_owned());
    }
    // The order backend received both orders: read and acknowledged.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    // The group `orders` came with the sale.
    let stream = "bigtap:{due}:orders";
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("orders")
        .arg("c1")
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    let ids: Vec<String> = format!("{read:?}")
        .split('"')
        .filter(|s| {
            s.len() > 2 && s.contains('-') && s.chars().all(|c| c.is_ascii_digit() || c == '-')
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 2, "{read:?}");
    let _: u64 = redis::cmd("XACK")
        .arg(stream)
        .arg("orders")
        .arg(&ids)
        .query_async(&mut con)
        .await
        .unwrap();
    // Every group is done with alice's entry, but her ticket is pending and
    // the sweeper has not passed it: the trim keeps it.
    let store = RedisStore::open(&redis.url(), "bigtap", Duration::from_secs(2), None).unwrap();
    let sale = SaleId::parse("due").unwrap();
    assert_eq!(store.trim(&sale).await.unwrap(), 0);
    assert_eq!(xlen(&redis.url(), stream).await, 2);
    // Before the TTL a sweep releases nothing and says when the first
    // ticket falls due.
    let early = store.sweep(&sale, 100).await.unwrap();
    assert_eq!(early.released, 0);
    assert!(
        matches!(early.next, NextSweep::In(d) if d <= Duration::from_millis(300)),
        "{early:?}"
    );
    // Past the TTL the sweeper reaches both tickets through the stream: a
    // sweep that stops at its limit says to sweep again now; then none is
    // left to fall due.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.sweep(&sale, 1).await.unwrap(),
        Swept {
            released: 1,
            next: NextSweep::Now
        }
    );
    assert_eq!(
        store.sweep(&sale, 100).await.unwrap(),
        Swept {
            released: 1,
            next: NextSweep::AfterTtl
        }
    );
    for t in &tickets {
        assert_eq!(
            n.backend(Method::GET, "due", t).await.body["state"],
            "released"
        );
    }
    let acct = n.accounting("due").await;
    assert_eq!(
        (acct["pending"].as_u64(), acct["released_total"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(acct["balanced"], true);
    // Now the sweeper has passed them, the trim may go up to its cursor.
    assert_eq!(store.trim(&sale).await.unwrap(), 1);
    assert_eq!(store.sweep(&sale, 100).await.unwrap().released, 0);
}

/// Writes a win the way releases before one-record-per-win did: the record
/// in `:tickets` under a 32-hex ticket, the bare ticket in `:winners`, its
/// stream entry, and the counters moved as `admit` moves them.
async fn win_recorded_the_older_way(
    redis_url: &str,
    sale: &str,
    user: &str,
    expires_at_ms: u64,
) -> String {
    let mut con = redis_con(redis_url).await;
    let key = |s: &str| format!("bigtap:{{{sale}}}:{s}");
    let ticket = TicketId::random().to_string();
    let issued = now_ms();
    redis::pipe()
        .atomic()
        .hset(
            key("tickets"),
            &ticket,
            format!("p:{user}:{issued}:{expires_at_ms}"),
        )
        .hset(key("winners"), user, &ticket)
        .cmd("XADD")
        .arg(key("orders"))
        .arg("*")
        .arg(&[("ticket", ticket.as_str()), ("sale", sale), ("user", user)])
        .arg(&[("issued_at_ms", issued), ("expires_at_ms", expires_at_ms)])
        .hincr(key("acct"), "avail", -1)
        .hincr(key("acct"), "pending", 1)
        .hincr(key("acct"), "enqueued", 1)
        .hincr(key("wh"), "default:sold", 1)
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    ticket
}

#[tokio::test]
async fn a_win_is_one_record_under_its_buyer_and_wins_recorded_the_older_way_still_replay_settle_and_sweep(
) {
    let redis = redis();
    // The node's own sweeper is off: this test sweeps by hand.
    let n = spawn_node(&redis.url(), |c| c.sweep_ms = 600_000).await;
    let now = now_ms();
    n.admin(Method::PUT, "mixed", Some(json!({"stock": 4, "starts_at_ms": now - 1000, "ends_at_ms": now + 60_000, "ticket_ttl_ms": 60_000})))
        .await;
    let bobs = win_recorded_the_older_way(&redis.url(), "mixed", "bob", now - 1).await;
    let carols = win_recorded_the_older_way(&redis.url(), "mixed", "carol", now + 60_000).await;

    // A new win: one record, under the buyer, named by the ticket.
    let alices = n.ticket("mixed", "alice").await;
    let tag = alices.strip_suffix("-alice").unwrap_or_default();
    assert_eq!(tag.len(), 16, "{alices}");
    let mut con = redis_con(&redis.url()).await;
    let entry: String = con.hget("bigtap:{mixed}:winners", "alice").await.unwrap();
    assert!(entry.starts_with(&format!("p:{tag}:")), "{entry}");
    assert!(entry.ends_with(":default"), "{entry}");
    let older: u64 = con.hlen("bigtap:{mixed}:tickets").await.unwrap();
    assert_eq!(older, 2, "the win wrote nothing to the tickets hash");

    // An older winner asking again gets the older ticket back.
    let carol = n.take("mixed", "carol").await;
    assert_eq!(carol.status, StatusCode::OK, "{:?}", carol.body);
    assert_eq!(carol.body["ticket"], carols.as_str());

    // The order backend settles both kinds by ticket.
    let backend = |t: String, action: &'static str| {
        let n = &n;
        async move {
            n.backend(Method::POST, "mixed", &format!("{t}/{action}"))
                .await
        }
    };
    assert_eq!(
        backend(carols.clone(), "confirm").await.status,
        StatusCode::OK
    );
    assert_eq!(
        backend(alices.clone(), "release").await.status,
        StatusCode::OK
    );
    for (t, state) in [
        (&carols, "confirmed"),
        (&alices, "released"),
        (&bobs, "pending"),
    ] {
        let got = n.backend(Method::GET, "mixed", t).await;
        assert_eq!(got.body["state"], state, "{t}: {:?}", got.body);
    }
    let entry: String = con.hget("bigtap:{mixed}:winners", "alice").await.unwrap();
    assert!(entry.starts_with(&format!("r:{tag}:")), "{entry}");
    // A ticket naming alice with another tag is not hers.
    let forged = format!("{}-alice", "0".repeat(16));
    assert_eq!(
        n.backend(Method::GET, "mixed", &forged).await.status,
        StatusCode::NOT_FOUND
    );

    // The sweeper walks the stream and releases the older ticket that is due.
    let store = RedisStore::open(&redis.url(), "bigtap", Duration::from_secs(2), None).unwrap();
    let sale = SaleId::parse("mixed").unwrap();
    assert_eq!(store.sweep(&sale, 100).await.unwrap().released, 1);
    assert_eq!(
        n.backend(Method::GET, "mixed", &bobs).await.body["state"],
        "released"
    );
    let acct = n.accounting("mixed").await;
    assert_eq!(
        (
            acct["pending"].as_u64(),
            acct["confirmed"].as_u64(),
            acct["released_total"].as_u64()
        ),
        (Some(0), Some(1), Some(2))
    );
    assert_eq!(acct["balanced"], true);

    // A commit must propose a ticket that names its buyer.
    let LeaseReply::Granted { epoch, .. } = store.lease(&sale, "other", 1, 10_000).await.unwrap()
    else {
        panic!("lease refused")
    };
    let dave = UserId::parse("dave").unwrap();
    let unnamed = [Candidate {
        user: dave,
        ticket: TicketId::random(),
        ship_to: None,
    }];
    assert!(store.admit(&sale, "other", epoch, &unnamed).await.is_err());
    let elses = [Candidate {
        user: dave,
        ticket: TicketId::for_user(&UserId::parse("erin").unwrap()),
        ship_to: None,
    }];
    assert!(store.admit(&sale, "other", epoch, &elses).await.is_err());
    // The script itself refuses a tag that is not 16 lowercase hex digits,
    // before its first write.
    let script = std::fs::read_to_string("lua/records.lua").unwrap()
        + &std::fs::read_to_string("lua/admit.lua").unwrap();
    let keys: Vec<String> = [
        "cfg", "acct", "leases", "winners", "tickets", "eligible", "orders", "wh", "wcfg",
        "digests",
    ]
    .iter()
    .map(|k| format!("bigtap:{{mixed}}:{k}"))
    .collect();
    let entries = xlen(&redis.url(), "bigtap:{mixed}:orders").await;
    for tag in ["0123456789ABCDEF", "0123456789abcde", "0123456789abcdeg"] {
        let r: redis::RedisResult<redis::Value> = redis::cmd("EVAL")
            .arg(&script)
            .arg(keys.len())
            .arg(&keys)
            .arg(&["mixed", "other"])
            .arg(epoch)
            .arg(1)
            .arg(&["dave", tag, ""])
            .arg(vec![0u8; 8])
            .query_async(&mut con)
            .await;
        assert!(r.is_err(), "{tag}: {r:?}");
    }
    assert_eq!(xlen(&redis.url(), "bigtap:{mixed}:orders").await, entries);
    let dave: Option<String> = con.hget("bigtap:{mixed}:winners", "dave").await.unwrap();
    assert_eq!(dave, None);
}

#[tokio::test]
async fn a_confirm_after_the_ticket_expired_is_refused_even_before_the_sweeper_runs() {
    let redis = redis();
    let n = spawn_node(&redis.url(), |c| c.sweep_ms = 600_000).await;
    let now = now_ms();
    n.admin(Method::PUT, "quick", Some(json!({"stock": 1, "starts_at_ms": now - 1000, "ends_at_ms": now + 60_000, "ticket_ttl_ms": 100})))
        .await;
    let t = n.ticket("quick", "alice").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = n
        .backend(Method::POST, "quick", &format!("{t}/confirm"))
        .await;
    assert_eq!(
        (c.status, c.body),
        (StatusCode::CONFLICT, json!({"state": "released"}))
    );
    assert_eq!(
        n.accounting("quick").await["available"].as_u64().unwrap()
            + n.accounting("quick").await["leased"].as_u64().unwrap(),
        1
    );
}

#[tokio::test]
async fn one_commit_batch_judges_repeats_holders_the_list_and_the_lease_in_the_contract_order() {
    let redis = redis();
    let n = spawn_node(&redis.url(), |c| c.lease_max = 1).await;
    let now = now_ms();
    n.admin(Method::PUT, "vip", Some(json!({"stock": 10, "starts_at_ms": now - 1000, "ends_at_ms": now + 60_000, "ticket_ttl_ms": 60_000, "eligibility": "list"})))
        .await;
    let users = json!({"users": ["alice", "bob", "carol", "dave"]});
    n.admin(Method::POST, "vip/eligible", Some(users)).await;
    let bob = n.take("vip", "bob").await;
    assert_eq!(bob.status, StatusCode::CREATED, "{:?}", bob.body);
    let bobs = bob.body["ticket"].as_str().unwrap().to_owned();

    // A second node holding two units commits one batch.
    let sale = SaleId::parse("vip").unwrap();
    let other = RedisStore::open(&redis.url(), "bigtap", Duration::from_secs(2), None).unwrap();
    let LeaseReply::Granted { granted, epoch, .. } =
        other.lease(&sale, "other", 2, 10_000).await.unwrap()
    else {
        panic!("lease refused")
    };
    assert_eq!(granted, 2);
    let batch = candidates(&["alice", "alice", "bob", "mallory", "carol", "dave"]);
    let AdmitReply::Judged {
        lease_units_left,
        verdicts,
        ..
    } = other.admit(&sale, "other", epoch, &batch).await.unwrap()
    else {
        panic!("the batch was refused as a whole")
    };
    let alices = batch[0].ticket.to_string();
    let judged: Vec<(&str, String)> = verdicts
        .iter()
        .map(|v| match v {
            Verdict::WonAt(i, _) => ("won", i.ticket.to_string()),
            Verdict::ReplayAt(i, _) => ("replay", i.ticket.to_string()),
            Verdict::NotEligible => ("not_eligible", String::new()),
            Verdict::Fenced => ("fenced", String::new()),
            Verdict::NoUnits => ("no_units", String::new()),
            other => panic!("unexpected verdict {other:?}"),
        })
        .collect();
    assert_eq!(
        judged,
        vec![
            ("won", alices.clone()),
            ("replay", alices.clone()),
            ("replay", bobs),
            ("not_eligible", String::new()),
            ("won", batch[4].ticket.to_string()),
            ("no_units", String::new()),
        ]
    );
    assert_eq!(lease_units_left, 0);
    // Alice holds one ticket: her repeat in the batch wrote nothing.
    assert_eq!(xlen(&redis.url(), "bigtap:{vip}:orders").await, 3);
    assert_eq!(n.mine("vip", "alice").await.body["ticket"], alices.as_str());
    assert_eq!(n.accounting("vip").await["balanced"], true);
}

#[tokio::test]
async fn a_node_that_stops_renewing_loses_its_lease_and_its_late_commit_is_refused() {
    let redis = redis();
    let n = node(&redis.url()).await; // lease TTL 1 s, reclaims every 0.5 s
    n.open_sale("lease", 10).await;
    let sale = SaleId::parse("lease").unwrap();
    // A second node that leases and then falls silent (paused, partitioned).
    let ghost = RedisStore::open(&redis.url(), "bigtap", Duration::from_secs(2), None).unwrap();
    let LeaseReply::Granted { granted, epoch, .. } =
        ghost.lease(&sale, "ghost", 6, 1000).await.unwrap()
    else {
        panic!("lease refused")
    };
    assert_eq!(granted, 6);
    assert_eq!(n.accounting("lease").await["leased"], 6);

    let reclaimed = eventually(Duration::from_secs(5), || async {
        n.accounting("lease").await["leased"] == 0
    })
    .await;
    assert!(
        reclaimed,
        "the silent node's lease was reclaimed after its TTL"
    );

    let late = ghost
        .admit(&sale, "ghost", epoch, &candidates(&["mallory"]))
        .await
        .unwrap();
    assert_eq!(
        late,
        AdmitReply::Judged {
            lease_units_left: 0,
            digests_len: 0,
            verdicts: vec![Verdict::Fenced]
        }
    );
    assert_eq!(
        xlen(&redis.url(), "bigtap:{lease}:orders").await,
        0,
        "the fenced commit wrote nothing"
    );

    for i in 0..10 {
        assert_eq!(
            n.take("lease", &format!("u{i}")).await.status,
            StatusCode::CREATED,
            "unit {i} sells"
        );
    }
    assert_eq!(n.take("lease", "late").await.status, StatusCode::GONE);
    let acct = n.accounting("lease").await;
    assert_eq!(
        (acct["pending"].as_u64(), acct["balanced"].as_bool()),
        (Some(10), Some(true))
    );
}

#[tokio::test]
async fn while_redis_is_away_buyers_get_503_and_service_resumes_by_itself() {
    let mut redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 100).await;
    let alice = n.take("phone", "alice").await;
    assert_eq!(alice.status, StatusCode::CREATED);

    redis.kill();
    let down = n.take("phone", "bob").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    // Bob's commit went out on the connection Redis dropped: whether it
    // landed is not known, and the answer may say so (DESIGN §3).
    assert_eq!(down.body["error"], "unavailable", "{:?}", down.body);
    assert!(down.headers.contains_key("retry-after"));
    assert_eq!(
        n.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A winner still gets the ticket back from memory.
    let replay = n.take("phone", "alice").await;
    assert_eq!(
        (replay.status, &replay.body["ticket"]),
        (StatusCode::OK, &alice.body["ticket"])
    );

    redis.restart().unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        n.take("phone", "carol").await.status == StatusCode::CREATED
    })
    .await;
    assert!(back, "service resumed without a restart of bigtap");
    assert_eq!(n.get("/readyz").await.status, StatusCode::OK);
    let bob = n.take("phone", "bob").await;
    assert!(
        bob.status == StatusCode::CREATED || bob.status == StatusCode::OK,
        "{:?}",
        bob.status
    );
    let acct = n.accounting("phone").await;
    assert_eq!(acct["balanced"], true);
    assert!(
        acct["orders_enqueued"].as_u64().unwrap() >= 3,
        "alice's win survived the restart: {acct}"
    );
    let again = n.take("phone", "alice").await;
    assert_eq!(again.body["ticket"], alice.body["ticket"]);
}

#[tokio::test]
async fn a_node_stopped_gracefully_returns_its_unused_units() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 1000).await;
    n.take("phone", "alice").await;
    assert!(n.accounting("phone").await["leased"].as_u64().unwrap() > 0);
    let other = node(&redis.url()).await;
    n.handle.stop().await;
    let acct = other.accounting("phone").await;
    assert_eq!(acct["leased"], 0, "{acct}");
    assert_eq!(acct["available"], 999);
}

#[tokio::test]
async fn a_node_joining_after_the_order_stream_was_trimmed_still_knows_every_winner() {
    let redis = redis();
    let a = node(&redis.url()).await;
    a.open_sale("trim", 3).await;
    let mut tickets = Vec::new();
    for u in ["a", "b", "c"] {
        tickets.push(a.take("trim", u).await.body["ticket"].clone());
    }
    let mut con = redis_con(&redis.url()).await;
    let _: i64 = redis::cmd("XTRIM")
        .arg("bigtap:{trim}:orders")
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut con)
        .await
        .unwrap();

    let b = node(&redis.url()).await;
    // Let b see the sale and its accounting (no units left anywhere).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A winner of node a, first seen at b: one lookup, then from memory.
    for _ in 0..2 {
        let replay = b.take("trim", "b").await;
        assert_eq!(
            (replay.status, &replay.body["ticket"]),
            (StatusCode::OK, &tickets[1])
        );
    }
    // The first loser's request makes the one lease call that finds the
    // pool empty; every later loser is refused from memory.
    for loser in ["zed", "yan", "xia"] {
        assert_eq!(b.take("trim", loser).await.status, StatusCode::GONE);
    }
    let m = b.get("/metrics").await.body.as_str().unwrap().to_owned();
    let memory = metric(
        &m,
        "bigtap_http_request_duration_seconds_count{route=\"take\",answered_by=\"memory\"}",
    );
    let store = metric(
        &m,
        "bigtap_http_request_duration_seconds_count{route=\"take\",answered_by=\"store\"}",
    );
    assert_eq!(
        (memory, store),
        (3.0, 2.0),
        "the repeated replay and the later losers came from memory"
    );
}

#[tokio::test]
async fn right_after_sell_out_losers_are_refused_from_memory_without_waiting_for_a_refresh() {
    let redis = redis();
    // Refreshes never run during the test: only what requests learn counts.
    let n = spawn_node(&redis.url(), |c| c.refresh_ms = 600_000).await;
    n.open_sale("fast", 2).await;
    assert_eq!(n.take("fast", "w1").await.status, StatusCode::CREATED);
    assert_eq!(n.take("fast", "w2").await.status, StatusCode::CREATED);
    for i in 0..20 {
        assert_eq!(
            n.take("fast", &format!("loser{i}")).await.status,
            StatusCode::GONE
        );
    }
    let m = n.get("/metrics").await.body.as_str().unwrap().to_owned();
    let memory = metric(
        &m,
        "bigtap_http_request_duration_seconds_count{route=\"take\",answered_by=\"memory\"}",
    );
    // Two commits and at most one lease call that found the pool empty.
    assert!(memory >= 19.0, "losers answered from memory: {memory}\n{m}");
}

/// Every node reclaims expired leases every half lease TTL, and a scan reads
/// every lease record: across a fleet that would cost the store the square
/// of its size. One scan per interval serves the whole fleet; the other
/// calls of the interval return at once, and a call that must scan now
/// (zero interval) still does.
#[tokio::test]
async fn one_reclaim_scan_per_interval_serves_the_fleet_and_expired_leases_still_come_back() {
    let redis = redis();
    let (store, sale) = store_with_open_sale(&redis.url(), "r", 100).await;
    let lease = |node: &'static str, units: u64| {
        let store = store.clone();
        async move {
            let reply = store.lease(&sale, node, units, 50).await.unwrap();
            assert!(matches!(reply, LeaseReply::Granted { granted, .. } if granted == units));
        }
    };
    let interval = Duration::from_millis(1500);

    // Node a's lease runs out; the first call of the interval scans.
    lease("a", 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.reclaim(&sale, interval).await.unwrap(), (1, 3));

    // Node b's runs out within the same interval: the calls of the other
    // nodes return at once, until one must scan now.
    lease("b", 5).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        assert_eq!(store.reclaim(&sale, interval).await.unwrap(), (0, 0));
    }
    assert_eq!(store.reclaim(&sale, Duration::ZERO).await.unwrap(), (1, 5));

    // Once the interval is over, the next call scans again. (The
    // accounting cross-check counts the lease records it read: nodes space
    // their checks out by it.)
    lease("c", 7).await;
    assert_eq!(
        store.snapshot(&sale).await.unwrap().unwrap().lease_records,
        1
    );
    tokio::time::sleep(interval).await;
    assert_eq!(store.reclaim(&sale, interval).await.unwrap(), (1, 7));
    let acct = store.snapshot(&sale).await.unwrap().unwrap();
    assert_eq!(
        (acct.available, acct.leased, acct.lease_records),
        (100, 0, 0)
    );
    assert!(acct.balanced);
}

/// The Redis store at `url`, ready, with an open sale `id` of `stock` units.
async fn store_with_open_sale(url: &str, id: &str, stock: u64) -> (RedisStore, SaleId) {
    let store = RedisStore::open(url, "bigtap", Duration::from_secs(2), None).unwrap();
    store.wait_ready(Duration::from_secs(5)).await.unwrap();
    let sale = SaleId::parse(id).unwrap();
    store.put_sale(&sale, &open_sale_spec(stock)).await.unwrap();
    (store, sale)
}

/// A lease whose units were all won (spent) moves no unit when it goes:
/// returned by its node, reclaimed by any node once expired, or replaced
/// by its own node's next lease. Lua's -0 reaches `HINCRBY` as "-0", which
/// Redis refuses as not an integer; a node whose spent lease had expired
/// could then lease no more until another node's reclaim removed it.
#[tokio::test]
async fn a_spent_lease_is_returned_reclaimed_or_replaced_without_an_error() {
    let redis = redis();
    let (store, sale) = store_with_open_sale(&redis.url(), "spent", 4).await;
    // Each node leases one unit and sells it.
    let mut epochs = HashMap::new();
    for (node, buyer) in [("a", "u1"), ("b", "u2"), ("c", "u3")] {
        let LeaseReply::Granted { epoch, .. } = store.lease(&sale, node, 1, 100).await.unwrap()
        else {
            panic!("no lease for {node}");
        };
        let won = store
            .admit(&sale, node, epoch, &candidates(&[buyer]))
            .await
            .unwrap();
        assert!(
            matches!(&won, AdmitReply::Judged { verdicts, .. } if matches!(verdicts[..], [Verdict::Won(_) | Verdict::WonAt(..)])),
            "{won:?}"
        );
        epochs.insert(node, epoch);
    }
    assert_eq!(
        store.return_lease(&sale, "c", epochs["c"]).await.unwrap(),
        bigtap::store::ReturnReply::Returned(0)
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    // a's own spent lease has expired: its next lease replaces it.
    let again = store.lease(&sale, "a", 1, 60_000).await.unwrap();
    assert!(
        matches!(again, LeaseReply::Granted { granted: 1, .. }),
        "{again:?}"
    );
    // b's has expired too: a reclaim removes it and moves no unit.
    assert_eq!(store.reclaim(&sale, Duration::ZERO).await.unwrap(), (1, 0));
    let acct = store.snapshot(&sale).await.unwrap().unwrap();
    assert_eq!((acct.available, acct.leased, acct.lease_records), (0, 1, 1));
    assert!(acct.balanced);
}
