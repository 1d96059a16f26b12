//! The `bigtap` binary run as a command against a test Redis.

use std::process::{Command, Output};

use super::{SESSION_KEYS, TICKET_KEYS};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_bigtap");

/// `bigtap` with the test keys and `redis_url` in its environment, and
/// nothing of the environment's own consumer name.
pub fn bigtap_command(redis_url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("BIGTAP_REDIS_URL", redis_url)
        .env("BIGTAP_SESSION_KEYS", SESSION_KEYS)
        .env("BIGTAP_TICKET_KEYS", TICKET_KEYS)
        .env_remove("BIGTAP_ORDERS_CONSUMER");
    c
}

/// Runs `bigtap args…` to completion.
pub fn bigtap(args: &[&str], redis_url: &str) -> Output {
    bigtap_command(redis_url)
        .args(args)
        .output()
        .expect("bigtap runs")
}

/// The standard output of a run that must have succeeded.
pub fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
