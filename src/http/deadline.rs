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
//! closes the connections past their phase's limit. The request path only
//! stores to its own connection's word; time comes from a coarse clock the
//! sweeper advances, so a read does not even ask the OS for the time.
//! Before, hyper's header timer was armed per request and also closed idle
//! keep-alive connections after the header timeout (5 s), well before the
//! balancer's 60 s.
//!
//! Closing takes no lock on the connection's side either: the socket
//! wrapper ([`Watched`]) reads the connection's closed flag before each
//! read or write and fails it once the flag is set, and a read or write
//! that has to wait leaves its task's waker where the sweeper wakes it.
//! A connection past its deadline is always waiting on its socket (a head
//! or idle phase has no handler running), so the wake reaches it there,
//! hyper sees the error and the connection ends. (A cancellation token
//! raced against each connection would take a mutex every time its task
//! is polled, several times per request.)

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
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

/// One connection's phase word and its close signal.
pub struct Conn {
    word: AtomicU64,
    clock: Arc<Deadlines>,
    /// Set once, by the sweeper (past the deadline) or by [`Conn::done`].
    closed: AtomicBool,
    /// The connection's task while its socket waits.
    waker: AtomicWaker,
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
            closed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.open.lock().push(c.clone());
        c
    }

    /// Closes connections past their limit every [`TICK`] until `stop`.
    pub async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.cancelled() => return,
            }
            let now = self.epoch.elapsed().as_millis() as u64;
            self.now_ms.store(now, Relaxed);
            self.open.lock().retain(|c| {
                if c.is_closed() {
                    return false;
                }
                if self.expired(c.word.load(Relaxed), now) {
                    c.close();
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
        self.closed.store(true, Relaxed);
    }

    /// Past its deadline: the socket's next read or write fails, and a
    /// waiting one is woken to find out.
    fn close(&self) {
        // Relaxed: the flag publishes nothing else, and `AtomicWaker` orders
        // this store before the wake-up it delivers (its own state is
        // acquired and released), so the woken task reads the flag as set.
        self.closed.store(true, Relaxed);
        self.waker.wake();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// A socket call has to wait: leave the task's waker for [`Conn::close`],
    /// then look at the flag again, so a close between the first look and
    /// the registration is not missed.
    fn wait(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.is_closed()
    }
}

fn past_deadline() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "connection past its head or idle deadline",
    )
}

/// The close check around one socket call: fails at once when the
/// connection is closed, and registers for the close when the call waits.
fn watched<R>(
    conn: &Conn,
    cx: &mut Context<'_>,
    call: impl FnOnce(&mut Context<'_>) -> Poll<std::io::Result<R>>,
) -> Poll<std::io::Result<R>> {
    if conn.is_closed() {
        return Poll::Ready(Err(past_deadline()));
    }
    let r = call(cx);
    if r.is_pending() && conn.wait(cx) {
        return Poll::Ready(Err(past_deadline()));
    }
    r
}

/// A socket whose reads tell its connection's phase word, and whose reads
/// and writes fail once the connection is closed.
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
        let this = &mut *self;
        let r = watched(&this.conn, cx, |cx| {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        });
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.read_some();
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
        let this = &mut *self;
        watched(&this.conn, cx, |cx| {
            Pin::new(&mut this.inner).poll_write(cx, buf)
        })
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        watched(&this.conn, cx, |cx| {
            Pin::new(&mut this.inner).poll_flush(cx)
        })
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        watched(&this.conn, cx, |cx| {
            Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
        })
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

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bound on how long a woken call may take to end in these tests.
    const PROMPTLY: Duration = Duration::from_secs(5);

    fn is_past_deadline(r: std::io::Result<usize>) -> bool {
        matches!(r, Err(e) if e.kind() == std::io::ErrorKind::TimedOut)
    }

    /// A watched connection's socket with `buffer` bytes of room each way,
    /// and its client's end.
    fn socket(
        buffer: usize,
    ) -> (
        Arc<Conn>,
        Watched<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let c = deadlines().open();
        let (ours, client) = tokio::io::duplex(buffer);
        (c.clone(), Watched::new(ours, c), client)
    }

    /// `call` is parked on its socket; closing the connection wakes it, and
    /// it ends with the deadline's error.
    async fn closing_ends_the_waiting_call(
        c: &Conn,
        call: tokio::task::JoinHandle<std::io::Result<usize>>,
    ) {
        tokio::task::yield_now().await;
        assert!(!call.is_finished(), "the call waits before the close");
        c.close();
        let r = tokio::time::timeout(PROMPTLY, call).await;
        assert!(is_past_deadline(r.expect("woken").expect("no panic")));
    }

    #[tokio::test]
    async fn closing_wakes_a_read_waiting_for_a_head_and_fails_it() {
        let (c, mut sock, _client) = socket(64);
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            sock.read(&mut buf).await
        });
        closing_ends_the_waiting_call(&c, read).await;
    }

    #[tokio::test]
    async fn closing_wakes_a_write_blocked_on_a_full_socket_and_fails_it() {
        // A client that never reads: the socket's buffer fills.
        let (c, mut sock, _client) = socket(16);
        sock.write_all(&[b'x'; 16])
            .await
            .expect("room for 16 bytes");
        let write = tokio::spawn(async move { sock.write(b"more").await });
        closing_ends_the_waiting_call(&c, write).await;
    }

    #[tokio::test]
    async fn a_closed_connection_fails_every_later_call_and_an_open_one_passes_bytes() {
        let (c, mut sock, mut client) = socket(64);
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(sock.read(&mut buf).await.unwrap(), 3);
        assert_eq!(sock.write(b"ok").await.unwrap(), 2);
        c.close();
        client.write_all(b"more").await.unwrap();
        assert!(is_past_deadline(sock.read(&mut buf).await));
        assert!(is_past_deadline(sock.write(b"late").await));
    }

    #[test]
    fn the_sweep_drops_connections_that_closed_by_themselves() {
        let d = deadlines();
        let (a, b) = (d.open(), d.open());
        a.done();
        assert!(a.is_closed() && !b.is_closed());
        d.open.lock().retain(|c| !c.is_closed());
        assert_eq!(d.open.lock().len(), 1);
    }
}
