//! Per-connection deadlines without a timer per request.
//!
//! A connection is in one of three phases, kept in one atomic word with the
//! coarse time it entered it:
//!
//! - **head**: reading a request head (from accept, or from the first byte
//!   after an idle spell). Bounded by `--header-timeout-ms`: the slowloris
//!   defence.
//! - **busy**: a request is being answered. Bounded by the request timeout
//!   elsewhere, not here.
//! - **idle**: between requests on a keep-alive connection. Bounded by
//!   `--idle-timeout-ms`, which must outlast the balancer's idle timeout:
//!   a server that closes an idle connection first races the balancer's
//!   next request on it, and the buyer gets a 502.
//!
//! One sweeper task per server reads every word a few times a second and
//! cancels the connections past their phase's limit. The request path only
//! stores to its own connection's word; time comes from a coarse clock the
//! sweeper advances, so a read does not even ask the OS for the time.
//! Before, hyper's header timer was armed per request and also closed idle
//! keep-alive connections after the header timeout (5 s), well before the
//! balancer's 60 s.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// How often the sweeper looks; deadlines are kept to within this.
const TICK: Duration = Duration::from_millis(100);

const HEAD: u64 = 0;
const BUSY: u64 = 1;
const IDLE: u64 = 2;
const PHASE_SHIFT: u32 = 62;
const SINCE_MASK: u64 = (1 << PHASE_SHIFT) - 1;

fn pack(phase: u64, since_ms: u64) -> u64 {
    (phase << PHASE_SHIFT) | (since_ms & SINCE_MASK)
}

/// The limits, in ms; 0 turns a limit off.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub head_ms: u64,
    pub idle_ms: u64,
}

/// The deadlines of one server's connections.
pub struct Deadlines {
    limits: Limits,
    /// Milliseconds since `epoch`, advanced by the sweeper.
    now_ms: AtomicU64,
    epoch: Instant,
    open: Mutex<Vec<Arc<Conn>>>,
}

/// One connection's phase word and its cancellation.
pub struct Conn {
    word: AtomicU64,
    clock: Arc<Deadlines>,
    pub closed: CancellationToken,
}

impl Deadlines {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Deadlines {
            limits,
            now_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            open: Mutex::new(Vec::new()),
        })
    }

    fn now(&self) -> u64 {
        // Relaxed, here and for the connection words: each word and the
        // clock are values on their own, read independently. A stale read
        // moves an expiry by at most one sweep tick, which the deadline
        // already allows (expiry = deadline + one tick); no other memory is
        // published through them.
        self.now_ms.load(Relaxed)
    }

    /// Registers a new connection, reading its first head from now.
    pub fn open(self: &Arc<Self>) -> Arc<Conn> {
        let c = Arc::new(Conn {
            word: AtomicU64::new(pack(HEAD, self.now())),
            clock: self.clone(),
            closed: CancellationToken::new(),
        });
        self.open.lock().push(c.clone());
        c
    }

    /// Cancels connections past their limit every [`TICK`] until `stop`.
    pub async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.cancelled() => return,
            }
            let now = self.epoch.elapsed().as_millis() as u64;
            self.now_ms.store(now, Relaxed);
            self.open.lock().retain(|c| {
                if c.closed.is_cancelled() {
                    return false;
                }
                if self.expired(c.word.load(Relaxed), now) {
                    c.closed.cancel();
                    return false;
                }
                true
            });
        }
    }

    fn expired(&self, word: u64, now: u64) -> bool {
        let since = word & SINCE_MASK;
        let limit = match word >> PHASE_SHIFT {
            HEAD => self.limits.head_ms,
            IDLE => self.limits.idle_ms,
            _ => 0,
        };
        // `since` was stamped by the coarse clock, which runs up to a tick
        // behind: allowing a tick more never closes a connection early.
        limit > 0 && now.saturating_sub(since) > limit + TICK.as_millis() as u64
    }
}

impl Conn {
    /// A request head is complete: the request is being answered.
    pub fn busy(&self) {
        self.word.store(pack(BUSY, self.clock.now()), Relaxed);
    }

    /// The answer is ready: the connection waits for the next request.
    pub fn idle(&self) {
        self.word.store(pack(IDLE, self.clock.now()), Relaxed);
    }

    /// Bytes arrived: an idle connection starts reading a head.
    fn read_some(&self) {
        let w = self.word.load(Relaxed);
        if w >> PHASE_SHIFT == IDLE {
            // A lost race with `busy` is harmless: hyper calls the service
            // only after this read, so `busy` comes later and wins.
            self.word.store(pack(HEAD, self.clock.now()), Relaxed);
        }
    }

    /// Ends the connection's watch (it closed by itself).
    pub fn done(&self) {
        self.closed.cancel();
    }
}

/// A socket whose reads tell its connection's phase word.
pub struct Watched<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, conn: Arc<Conn>) -> Self {
        Watched { inner, conn }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read_some();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines() -> Arc<Deadlines> {
        Deadlines::new(Limits {
            head_ms: 100,
            idle_ms: 1000,
        })
    }

    #[test]
    fn a_head_is_bounded_by_the_header_limit_and_an_idle_spell_by_the_idle_limit() {
        let d = deadlines();
        let tick = TICK.as_millis() as u64;
        assert!(!d.expired(pack(HEAD, 0), 100 + tick));
        assert!(d.expired(pack(HEAD, 0), 101 + tick));
        assert!(!d.expired(pack(IDLE, 0), 1000 + tick));
        assert!(d.expired(pack(IDLE, 0), 1001 + tick));
        assert!(!d.expired(pack(BUSY, 0), 1_000_000));
    }

    #[test]
    fn a_connection_moves_from_idle_to_head_on_its_first_byte_only() {
        let d = deadlines();
        let c = d.open();
        c.busy();
        c.read_some();
        assert_eq!(c.word.load(Relaxed) >> PHASE_SHIFT, BUSY);
        c.idle();
        c.read_some();
        assert_eq!(c.word.load(Relaxed) >> PHASE_SHIFT, HEAD);
    }

    #[test]
    fn a_zero_limit_never_expires() {
        let d = Deadlines::new(Limits {
            head_ms: 0,
            idle_ms: 0,
        });
        assert!(!d.expired(pack(HEAD, 0), u64::MAX >> 2));
        assert!(!d.expired(pack(IDLE, 0), u64::MAX >> 2));
    }
}
