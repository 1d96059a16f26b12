//! The client log: every take a buyer sent and what came back.
#![allow(dead_code)]

use std::time::Duration;

use parking_lot::Mutex;

/// What one take told the buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 201 (new) or 200 (replay), with the ticket.
    Won { ticket: String, replay: bool },
    /// 410.
    SoldOut,
    /// A timeout, a connection error or a 503: the win may or may not have
    /// been recorded.
    Unknown(String),
    /// Any other status: never expected from a well-formed take.
    Unexpected(u16),
}

/// One take.
#[derive(Debug, Clone)]
pub struct Call {
    pub user: String,
    /// Index of the node slot asked.
    pub node: usize,
    pub outcome: Outcome,
    /// Sent after the faults healed, to settle an unknown outcome.
    pub resolution: bool,
}

/// All takes of a run, in completion order.
#[derive(Default)]
pub struct Log(Mutex<Vec<Call>>);

impl Log {
    pub fn push(&self, c: Call) {
        self.0.lock().push(c);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().clone()
    }
}

/// Sends one take and classifies the answer.
pub async fn take(http: &reqwest::Client, base: &str, sale: &str, user: &str) -> Outcome {
    let r = http
        .post(format!("{base}/v1/sales/{sale}/tickets"))
        .header(
            "authorization",
            format!("Bearer {}", crate::support::session(user)),
        )
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => return Outcome::Unknown(kind(&e)),
    };
    let status = r.status().as_u16();
    let body = match r.text().await {
        Ok(b) => b,
        Err(e) => return Outcome::Unknown(kind(&e)),
    };
    classify(status, &body)
}

/// What a take's answer tells the buyer.
fn classify(status: u16, body: &str) -> Outcome {
    match status {
        200 | 201 => {
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            match v["ticket"].as_str() {
                Some(t) => Outcome::Won {
                    ticket: t.to_owned(),
                    replay: status == 200,
                },
                None => Outcome::Unexpected(status),
            }
        }
        410 => Outcome::SoldOut,
        503 => Outcome::Unknown("503".into()),
        other => Outcome::Unexpected(other),
    }
}

/// Sends one take over a fresh socket and closes it after `patience`
/// unless the whole answer came: a buyer who hangs up.
pub async fn take_or_hang_up(base: &str, sale: &str, user: &str, patience: Duration) -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").to_owned();
    let request = format!(
        "POST /v1/sales/{sale}/tickets HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        crate::support::session(user)
    );
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(patience, exchange).await {
        Err(_) => return Outcome::Unknown("hung up".into()),
        Ok(Err(_)) => return Outcome::Unknown("io".into()),
        Ok(Ok(a)) => String::from_utf8_lossy(&a).into_owned(),
    };
    // A node killed mid-request closes the socket without a word.
    let Some(status) = answer.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) else {
        return Outcome::Unknown("closed".into());
    };
    classify(status, answer.split("\r\n\r\n").nth(1).unwrap_or(""))
}

fn kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "io".into()
    }
}

/// A client for buyers: short timeouts, so a paused node shows as unknown
/// outcomes rather than a stuck test.
pub fn buyer_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_millis(500))
        .pool_max_idle_per_host(32)
        .build()
        .unwrap()
}
