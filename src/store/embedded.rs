//! A `redis-server` child process on a free loopback port.
//!
//! `bigtap serve` without `--redis` runs its own store through this module, and
//! the tests start one per test the same way. The server is configured the way
//! DESIGN §2 requires for its promises (AOF with `appendfsync always`,
//! `maxmemory-policy noeviction`), so the embedded mode is a real deployment on
//! one machine, not a toy. The child is killed when the handle is dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh redis-server gets to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "redis-server was not found on PATH. Install it (Debian/Ubuntu: `apt-get install -y redis-server`, \
         macOS: `brew install redis`) or point bigtap at a running Redis with --redis redis://HOST:PORT"
    )]
    NotInstalled,
    #[error("could not start redis-server: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("redis-server did not answer PING within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, #[source] std::io::Error),
}

/// A supervised `redis-server` child.
pub struct RedisProcess {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Extra redis-server arguments (e.g. cluster mode in tests).
    extra: Vec<String>,
    /// Keeps a temporary data directory alive as long as the server.
    _tmp: Option<tempfile::TempDir>,
}

impl RedisProcess {
    /// Starts redis-server with its data in `dir` (created when missing).
    pub fn start_in(dir: &Path) -> Result<Self, EmbeddedError> {
        Self::start_in_with(dir, &[])
    }

    /// Like [`RedisProcess::start_in`], with extra redis-server arguments.
    pub fn start_in_with(dir: &Path, extra: &[&str]) -> Result<Self, EmbeddedError> {
        std::fs::create_dir_all(dir).map_err(|e| EmbeddedError::DataDir(dir.to_owned(), e))?;
        // Absolute: redis-server applies --dir before it opens --logfile, so
        // a relative log path would be taken relative to the data directory.
        let dir =
            std::fs::canonicalize(dir).map_err(|e| EmbeddedError::DataDir(dir.to_owned(), e))?;
        let mut p = RedisProcess {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _tmp: None,
        };
        p.spawn_on_free_port()?;
        Ok(p)
    }

    /// Starts redis-server with its data in a fresh temporary directory,
    /// removed when the handle is dropped (tests use this).
    pub fn start_temporary() -> Result<Self, EmbeddedError> {
        Self::start_temporary_with(&[])
    }

    /// Like [`RedisProcess::start_temporary`], with extra redis-server arguments.
    pub fn start_temporary_with(extra: &[&str]) -> Result<Self, EmbeddedError> {
        let tmp = tempfile::Builder::new()
            .prefix("bigtap-redis-")
            .tempdir()
            .map_err(|e| EmbeddedError::DataDir(std::env::temp_dir(), e))?;
        let mut p = Self::start_in_with(tmp.path(), extra)?;
        p._tmp = Some(tmp);
        Ok(p)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the child runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, like a crash: whatever was fsynced to the AOF survives.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        // The old socket may linger for a moment; retry the same port.
        loop {
            match self.spawn_on(self.port) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// SIGSTOP / SIGCONT, to simulate a store that hangs.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) with a pid we own; a stale pid fails harmlessly.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    fn spawn_on_free_port(&mut self) -> Result<(), EmbeddedError> {
        // Another process may grab the port between our probe and the
        // server's bind; a few attempts make that race irrelevant.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port().map_err(EmbeddedError::Spawn)?;
            match self.spawn_on(port) {
                Ok(()) => return Ok(()),
                Err(e @ EmbeddedError::NotInstalled) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(EmbeddedError::NotReady(START_TIMEOUT, self.log_path())))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn spawn_on(&mut self, port: u16) -> Result<(), EmbeddedError> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--maxmemory-policy", "noeviction"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => EmbeddedError::NotInstalled,
                _ => EmbeddedError::Spawn(e),
            })?;
        self.child = Some(child);
        self.port = port;
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if !self.is_running() {
                break;
            }
            if ping(port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(EmbeddedError::NotReady(START_TIMEOUT, self.log_path()))
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// True when a server on `port` answers PING with PONG. While Redis loads its
/// AOF it answers `-LOADING`, which is not ready.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}
