//! A TCP proxy between a node and Redis that can delay, blackhole or reset
//! the connections passing through it.
//!
//! - **Delay** holds every chunk for a while before forwarding it.
//! - **Blackhole** accepts and keeps connections but stops reading from
//!   them, like a partition: the bytes wait in the kernel's buffers and flow
//!   again when the partition heals, so commands the node gave up on reach
//!   Redis late (which is what lease fencing is for).
//! - **Reset** aborts every open connection with an RST.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Delay(Duration),
    Blackhole,
}

struct State {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped by [`Proxy::reset`]; every connection watches it.
    resets: watch::Sender<u64>,
    connections: AtomicU64,
    /// `fenced` verdicts of `admit` seen in Redis's replies.
    fenced: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            upstream,
            mode: watch::channel(Mode::Pass).0,
            resets: watch::channel(0).0,
            connections: AtomicU64::new(0),
            fenced: AtomicU64::new(0),
        });
        let s = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let s = s.clone();
                s.connections.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    relay(&s, client).await;
                });
            }
        });
        Ok(Proxy {
            port,
            state,
            accept,
        })
    }

    /// The Redis URL that goes through this proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn set(&self, mode: Mode) {
        self.state.mode.send_replace(mode);
    }

    /// Aborts every open connection (RST).
    pub fn reset(&self) {
        self.state.resets.send_modify(|n| *n += 1);
    }

    /// Commits Redis refused as fenced on this link: a Redis-side count
    /// that includes late commits whose node had already given up on them.
    pub fn fenced_verdicts(&self) -> u64 {
        self.state.fenced.load(Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

async fn relay(s: &State, client: TcpStream) {
    let mut resets = s.resets.subscribe();
    resets.mark_unchanged();
    let Ok(server) = TcpStream::connect(s.upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client, server) = (Arc::new(client), Arc::new(server));
    let up = pump(s.mode.subscribe(), client.clone(), server.clone(), None);
    let down = pump(
        s.mode.subscribe(),
        server.clone(),
        client.clone(),
        Some(&s.fenced),
    );
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = resets.changed() => {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    }
}

/// Copies `from` to `to`, obeying the mode. A delay is a latency: each
/// chunk is forwarded `d` after it was read, without holding up the next.
async fn pump(
    mode: watch::Receiver<Mode>,
    from: Arc<TcpStream>,
    to: Arc<TcpStream>,
    fenced: Option<&AtomicU64>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let mut read_mode = mode.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut scan = VerdictScan::default();
        loop {
            // While blackholed, do not read: the bytes wait in the kernel.
            if !wait_open(&mut read_mode).await {
                return;
            }
            let n = tokio::select! {
                r = read(&from, &mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                // The mode changed while waiting for data: re-check it.
                _ = read_mode.changed() => continue,
            };
            if let Some(counter) = fenced {
                counter.fetch_add(scan.feed(&buf[..n]), Relaxed);
            }
            let current = *read_mode.borrow();
            let due = match current {
                Mode::Delay(d) => tokio::time::Instant::now() + d,
                _ => tokio::time::Instant::now(),
            };
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let mut write_mode = mode;
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if !wait_open(&mut write_mode).await || write_all(&to, &chunk).await.is_err() {
                return;
            }
        }
        // Half-close towards the other side, as a real peer would.
        let _ = shutdown_write(&to);
    };
    tokio::join!(reader, writer);
}

/// Counts `admit`'s fenced verdicts in a RESP reply stream.
///
/// `admit` answers one bulk string per candidate after a six-element
/// header, so a fenced candidate is `$6\r\nfenced\r\n` inside a longer
/// array; `renew` and `return` answer a lone `{"fenced"}`, the same
/// string right after `*1\r\n`, which this does not count. No other
/// reply on a node's link holds the string: ids are `[A-Za-z0-9_-]`.
#[derive(Default)]
pub struct VerdictScan {
    /// The end of the stream so far: enough to see a verdict split
    /// between chunks, and the four bytes before it.
    tail: Vec<u8>,
}

impl VerdictScan {
    const VERDICT: &'static [u8] = b"$6\r\nfenced\r\n";
    const LONE: &'static [u8] = b"*1\r\n";

    /// The fenced verdicts that end in `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> u64 {
        let old = self.tail.len();
        self.tail.extend_from_slice(chunk);
        let v = Self::VERDICT.len();
        let mut n = 0;
        for end in (old + 1).max(v)..=self.tail.len() {
            let at = end - v;
            if &self.tail[at..end] == Self::VERDICT
                && !(at >= Self::LONE.len() && &self.tail[at - Self::LONE.len()..at] == Self::LONE)
            {
                n += 1;
            }
        }
        let keep = (v + Self::LONE.len() - 1).min(self.tail.len());
        self.tail.drain(..self.tail.len() - keep);
        n
    }
}

/// Waits while the mode is blackhole; false when the proxy is gone.
async fn wait_open(mode: &mut watch::Receiver<Mode>) -> bool {
    while *mode.borrow_and_update() == Mode::Blackhole {
        if mode.changed().await.is_err() {
            return false;
        }
    }
    true
}

async fn read(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn shutdown_write(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a socket we own.
    let r = unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
