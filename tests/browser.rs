//! The reference shop page in a real browser: headless Chromium, driven
//! through the Chrome DevTools Protocol, loads the page from its own origin,
//! clicks buy and reads what the page shows, while bigtap runs against a
//! real redis-server.
//!
//! Chromium is required: these tests fail, never skip, without it (`make
//! test` and CI install Debian's `chromium`). The browser talks to the test
//! over `--remote-debugging-pipe` (file descriptors 3 and 4, one JSON
//! message per NUL-terminated frame), so no port and no extra crate are
//! needed.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bigtap::demo::{Buyer, Shop};
use serde_json::{json, Value};
use support::*;
use tokio_util::sync::CancellationToken;

/// Longest wait for one protocol answer or one page state.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The browser

struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    messages: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Console output and browser log entries, for failure messages and
    /// the CORS assertion.
    log: Vec<String>,
    _profile: tempfile::TempDir,
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("BIGTAP_CHROMIUM") {
        return p.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "the browser tests need Chromium and found none on PATH: install it \
         (`apt-get install -y chromium`; `make test` and .ci/run do) or point \
         BIGTAP_CHROMIUM at a Chromium binary"
    );
}

impl Browser {
    fn launch() -> Browser {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;

        let profile = tempfile::tempdir().unwrap();
        let (to_browser, browser_reads) = std::io::pipe().unwrap();
        let (test_reads, browser_writes) = std::io::pipe().unwrap();
        let (r, w) = (to_browser.as_raw_fd(), browser_writes.as_raw_fd());
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-pipe",
            "--window-size=900,640",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        // With --disable-dev-shm-usage its shared memory lives in files
        // under TMPDIR; inside the profile they go when the profile does,
        // not left in /tmp by every run.
        .env("TMPDIR", profile.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls
        // (fcntl, dup2) on descriptors this process owns. Both ends are
        // first copied above 4, so that placing one cannot overwrite the
        // other; the copies close on exec, fds 3 and 4 stay open.
        unsafe {
            cmd.pre_exec(move || {
                let r2 = libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 10);
                let w2 = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 10);
                if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("chromium starts");
        drop(to_browser);
        drop(browser_writes);
        let (tx, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(test_reads);
            let mut frame = Vec::new();
            loop {
                frame.clear();
                match reader.read_until(0, &mut frame) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if frame.last() == Some(&0) {
                    frame.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&frame) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            commands: browser_reads,
            messages,
            next_id: 0,
            session: String::new(),
            log: Vec::new(),
            _profile: profile,
        };
        let target = b.send(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = b.send(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.call(domain, json!({}));
        }
        b
    }

    /// Sends one command and waits for its answer, keeping the events seen
    /// meanwhile.
    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut frame = serde_json::to_vec(&msg).unwrap();
        frame.push(0);
        self.commands
            .write_all(&frame)
            .expect("chromium reads its commands");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match self.messages.recv_timeout(left) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("chromium did not answer {method} within {PATIENCE:?}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("chromium exited during {method}"),
            };
            if m["id"] == id {
                if let Some(e) = m.get("error") {
                    panic!("{method} failed: {e}");
                }
                return m["result"].clone();
            }
            self.keep_event(&m);
        }
    }

    fn keep_event(&mut self, m: &Value) {
        let p = &m["params"];
        match m["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].to_string())
                    .collect();
                self.log.push(format!("console: {}", args.join(" ")));
            }
            Some("Runtime.exceptionThrown") => self.log.push(format!(
                "exception: {}",
                p["exceptionDetails"]["exception"]["description"]
            )),
            Some("Log.entryAdded") => self.log.push(format!(
                "log: {}",
                p["entry"]["text"].as_str().unwrap_or("")
            )),
            _ => {}
        }
    }

    /// A command to the page.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    /// Evaluates a JavaScript expression in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is true.
    fn wait_for(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.eval(expression) != json!(true) {
            if Instant::now() > deadline {
                panic!(
                    "the page never showed {what} ({expression}); page text:\n{}\nlog:\n{}",
                    self.eval("document.body.innerText"),
                    self.log.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Loads the page and waits until it has read its settings.
    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(
            "document.body !== null && document.body.dataset.ready === 'true'",
            "its buyers",
        );
    }

    fn click_buy(&mut self, user: &str) {
        let clicked = self.eval(&format!(
            "(() => {{ const b = document.querySelector('[data-user=\"{user}\"] button'); \
             if (!b || b.disabled) return false; b.click(); return true; }})()"
        ));
        assert_eq!(
            clicked,
            json!(true),
            "{user}'s buy button is there and enabled"
        );
    }

    /// What a buyer's row shows: (state, text, ticket).
    fn outcome(&mut self, user: &str) -> (String, String, String) {
        let v = self.eval(&format!(
            "(() => {{ const c = document.querySelector('[data-user=\"{user}\"] .outcome'); \
             return [c.dataset.state, c.textContent, c.dataset.ticket || '']; }})()"
        ));
        let s = |i: usize| v[i].as_str().unwrap_or_default().to_owned();
        (s(0), s(1), s(2))
    }

    /// Waits until a buyer's row shows `state`; what it shows then.
    fn outcome_becomes(&mut self, user: &str, state: &str) -> (String, String, String) {
        self.wait_for(
            &format!(
                "document.querySelector('[data-user=\"{user}\"] .outcome').dataset.state === '{state}'"
            ),
            &format!("{user}: {state}"),
        );
        self.outcome(user)
    }

    /// From now on, records every state a buyer's row passes through.
    fn record_states(&mut self, user: &str) {
        self.eval(&format!(
            "(() => {{ const c = document.querySelector('[data-user=\"{user}\"] .outcome'); \
             window.seen = window.seen || {{}}; const seen = window.seen['{user}'] = []; \
             new MutationObserver(() => seen.push(c.dataset.state)) \
               .observe(c, {{ attributes: true, attributeFilter: ['data-state'] }}); return true; }})()"
        ));
    }

    fn states_seen(&mut self, user: &str) -> Vec<String> {
        let v = self.eval(&format!("window.seen['{user}']"));
        serde_json::from_value(v).unwrap_or_default()
    }

    fn sale_state(&mut self) -> String {
        self.eval("document.getElementById('sale').dataset.state")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The stage: redis-server, one bigtap node, the shop page on its own origin

struct Stage {
    redis: bigtap::store::embedded::RedisProcess,
    node: Node,
    shop_url: String,
    stop: CancellationToken,
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a node and the shop page. `listed`: whether the node allows the
/// page's origin (else it allows only another one).
async fn stage(listed: bool, users: &[&str]) -> Stage {
    let redis = redis();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shop_origin = format!("http://{}", listener.local_addr().unwrap());
    let allowed = if listed {
        shop_origin.clone()
    } else {
        "https://shop.example".to_owned()
    };
    let node = spawn_node(&redis.url(), |c| {
        c.cors_origins = allowed.parse().unwrap();
    })
    .await;
    let shop = Shop {
        api: node.base.clone(),
        sale: "demo".into(),
        buyers: users
            .iter()
            .map(|u| Buyer {
                user: (*u).to_owned(),
                session: session(u),
            })
            .collect(),
    };
    let stop = CancellationToken::new();
    tokio::spawn(bigtap::demo::serve(listener, shop, stop.clone()));
    Stage {
        redis,
        node,
        shop_url: format!("{shop_origin}/"),
        stop,
    }
}

/// Where screenshots go: the target directory, kept as a CI artifact.
fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join(name)
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyers_in_a_browser_win_then_see_their_ticket_again_then_hear_sold_out() {
    let s = stage(true, &["alice", "bob", "carol"]).await;
    s.node.open_sale("drop", 2).await;
    let url = format!("{}?sale=drop", s.shop_url);
    let shot = artifact("browser-shop.png");
    let _ = std::fs::remove_file(&shot);
    let path = shot.clone();
    let (won, replay, bob, carol, sale) = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch();
        b.open(&url);
        b.click_buy("alice");
        let won = b.outcome_becomes("alice", "won");
        b.click_buy("alice");
        let replay = b.outcome_becomes("alice", "replay");
        b.click_buy("bob");
        let bob = b.outcome_becomes("bob", "won");
        b.click_buy("carol");
        let carol = b.outcome_becomes("carol", "sold_out");
        b.wait_for(
            "document.getElementById('sale').dataset.state === 'sold_out'",
            "the sale sold out",
        );
        let sale = b.sale_state();
        b.screenshot(&path);
        (won, replay, bob, carol, sale)
    })
    .await
    .unwrap();
    assert!(won.1.starts_with("Won!"), "{won:?}");
    assert!(!won.2.is_empty(), "the page shows the ticket id");
    assert_eq!(replay.2, won.2, "a replay shows the same ticket");
    assert!(replay.1.starts_with("Already yours"), "{replay:?}");
    assert_ne!(bob.2, won.2);
    assert_eq!(carol.1, "Sold out");
    assert_eq!(sale, "sold_out");
    let acct = s.node.accounting("drop").await;
    assert_eq!(acct["pending"], 2);
    assert_eq!(acct["balanced"], true);
    assert!(shot.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_that_has_not_started_counts_down_in_the_page() {
    let s = stage(true, &["alice"]).await;
    let starts = now_ms() + 60_000;
    let created = s
        .node
        .admin(
            reqwest::Method::PUT,
            "later",
            Some(json!({"stock": 5, "starts_at_ms": starts, "ends_at_ms": starts + 3_600_000, "ticket_ttl_ms": 600_000})),
        )
        .await;
    assert_eq!(created.status, reqwest::StatusCode::CREATED);
    let url = format!("{}?sale=later", s.shop_url);
    let (first, later, sale) = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch();
        b.open(&url);
        b.click_buy("alice");
        let first = b.outcome_becomes("alice", "countdown");
        let seconds = |text: &str| -> u64 {
            text.trim_start_matches("Starts in ")
                .trim_end_matches(" s")
                .parse()
                .unwrap_or_else(|_| panic!("a countdown in seconds: {text:?}"))
        };
        let at_first = seconds(&first.1);
        b.wait_for(
            &format!(
                "(() => {{ const t = document.querySelector('[data-user=\"alice\"] .outcome').textContent; \
                 const m = /^Starts in (\\d+) s$/.exec(t); return m !== null && Number(m[1]) < {at_first}; }})()"
            ),
            "the countdown going down",
        );
        let later = b.outcome("alice");
        (first, seconds(&later.1), b.sale_state())
    })
    .await
    .unwrap();
    let at_first: u64 = first
        .1
        .trim_start_matches("Starts in ")
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!((50..=60).contains(&at_first), "{first:?}");
    assert!(later < at_first);
    assert_eq!(sale, "scheduled");
    assert_eq!(s.node.accounting("later").await["pending"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_an_origin_bigtap_does_not_list_is_blocked_by_the_browser() {
    let s = stage(false, &["alice"]).await;
    s.node.open_sale("demo", 5).await;
    let url = s.shop_url.clone();
    let (outcome, sale, log) = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch();
        b.open(&url);
        b.click_buy("alice");
        let outcome = b.outcome_becomes("alice", "unreachable");
        let sale = b.sale_state();
        // One more round trip: the events sent before its answer, such as
        // the browser's report of why it refused, are collected on the way.
        b.eval("0");
        (outcome, sale, b.log.join("\n"))
    })
    .await
    .unwrap();
    assert!(
        outcome.1.starts_with("Cannot reach the ticket service"),
        "{outcome:?}"
    );
    assert_eq!(sale, "unreachable");
    assert!(
        log.contains("CORS policy"),
        "the browser blamed CORS:\n{log}"
    );
    // The browser refused at the preflight: the purchase was never sent.
    assert_eq!(s.node.accounting("demo").await["pending"], 0);
    // The same buyer outside a browser still can.
    assert_eq!(
        s.node.take("demo", "alice").await.status,
        reqwest::StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_told_to_slow_down_waits_retry_after_and_tries_again_by_itself() {
    let redis = redis();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let node = spawn_node(&redis.url(), |c| {
        c.cors_origins = origin.parse().unwrap();
        c.user_rate = 1;
    })
    .await;
    node.open_sale("demo", 5).await;
    let stop = CancellationToken::new();
    let shop = Shop {
        api: node.base.clone(),
        sale: "demo".into(),
        buyers: vec![Buyer {
            user: "alice".into(),
            session: session("alice"),
        }],
    };
    tokio::spawn(bigtap::demo::serve(listener, shop, stop.clone()));
    let url = format!("{origin}/");
    let seen = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch();
        b.open(&url);
        b.record_states("alice");
        let busy =
            "document.querySelector('[data-user=\"alice\"] .outcome').dataset.state === 'waiting'";
        let idle = "!document.querySelector('[data-user=\"alice\"] button').disabled";
        // The burst allows a few clicks; the next one is told to wait.
        for _ in 0..20 {
            b.wait_for(&format!("{busy} || {idle}"), "an answer");
            if b.eval(busy) == json!(true) {
                break;
            }
            b.click_buy("alice");
        }
        b.outcome_becomes("alice", "replay");
        b.states_seen("alice")
    })
    .await
    .unwrap();
    stop.cancel();
    let waited = seen.iter().position(|s| s == "waiting");
    let replayed = seen.iter().rposition(|s| s == "replay");
    assert!(
        matches!((waited, replayed), (Some(w), Some(r)) if w < r),
        "told to wait, then the same ticket without another click: {seen:?}"
    );
    assert_eq!(node.accounting("demo").await["pending"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_whose_purchase_met_a_hung_store_gets_the_ticket_without_clicking_again() {
    let s = stage(true, &["alice"]).await;
    s.node.open_sale("demo", 5).await;
    let url = s.shop_url.clone();
    // The browser and this side take turns: page loaded → store frozen →
    // page told to wait → store back → the page ends with the ticket.
    let (to_test, from_browser) = std::sync::mpsc::channel::<()>();
    let (to_browser, from_test) = std::sync::mpsc::channel::<()>();
    let browser = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch();
        b.open(&url);
        b.record_states("alice");
        to_test.send(()).unwrap();
        from_test.recv().unwrap();
        b.click_buy("alice");
        b.wait_for(
            "['waiting', 'checking'].includes(\
             document.querySelector('[data-user=\"alice\"] .outcome').dataset.state)",
            "a 503 answered by waiting",
        );
        to_test.send(()).unwrap();
        b.wait_for(
            "['won', 'replay'].includes(\
             document.querySelector('[data-user=\"alice\"] .outcome').dataset.state)",
            "the ticket",
        );
        b.states_seen("alice")
    });
    let next = |rx: std::sync::mpsc::Receiver<()>| {
        tokio::task::spawn_blocking(move || {
            rx.recv().expect("the browser side goes on");
            rx
        })
    };
    let from_browser = next(from_browser).await.unwrap();
    s.redis.pause();
    to_browser.send(()).unwrap();
    next(from_browser).await.unwrap();
    s.redis.resume();
    let seen = browser.await.unwrap();
    assert!(
        seen.iter().any(|s| s == "waiting" || s == "checking"),
        "{seen:?}"
    );
    let acct = s.node.accounting("demo").await;
    assert_eq!(acct["pending"], 1, "one ticket, however many tries");
    assert_eq!(acct["balanced"], true);
}

#[test]
fn serve_demo_opens_with_the_shop_page_where_a_buyer_wins() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .env_remove("BIGTAP_REDIS_URL")
        .env_remove("BIGTAP_DATA_DIR")
        .env_remove("BIGTAP_CORS_ORIGINS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Stop(Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            // SAFETY: kill(2) on our own child; SIGTERM asks for a graceful stop.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _stop = Stop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let first = lines.by_ref().find(|l| !l.trim().is_empty());
        let _ = tx.send(first);
        // Keep reading: the demo goes on printing.
        lines.for_each(drop);
    });
    let first = rx
        .recv_timeout(PATIENCE)
        .expect("serve --demo printed a line")
        .expect("serve --demo printed a line");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("the first line names the shop page: {first:?}"))
        .to_owned();
    assert!(first.contains("shop"), "{first}");
    let mut b = Browser::launch();
    b.open(&url);
    b.click_buy("alice");
    let won = b.outcome_becomes("alice", "won");
    assert!(!won.2.is_empty(), "{won:?}");
    assert_eq!(b.sale_state(), "open");
}
