//! The keys every test node runs with, and tokens minted with them.

use bigtap::auth::KeyRing;
use bigtap::UserId;

pub const SESSION_KEYS: &str = "s1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const TICKET_KEYS: &str = "t1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
pub const ADMIN_KEY: &str = "test-admin-key";
pub const BACKEND_KEY: &str = "test-backend-key";

/// The ring that signs the buyers' session tokens.
pub fn session_keys() -> KeyRing {
    KeyRing::parse(SESSION_KEYS).expect("test session keys")
}

/// The ring that signs the tickets, as the order backend verifies them.
pub fn ticket_keys() -> KeyRing {
    KeyRing::parse(TICKET_KEYS).expect("test ticket keys")
}

pub fn now_ms() -> u64 {
    bigtap::clock::unix_ms()
}

/// A session token of `user`, valid for an hour.
pub fn session(user: &str) -> String {
    session_keys().mint_session(
        &UserId::parse(user).expect("test user id"),
        now_ms() / 1000 + 3600,
    )
}
