//! Session and purchase tokens (DESIGN §4).
//!
//! A [`KeyRing`] holds HMAC-SHA256 keys by key id; the first key signs and
//! every key verifies, so keys rotate without downtime. Verification parses
//! the token in place (no allocation: the signature is decoded into a stack
//! buffer and ids are inline), rejects an unknown kid, and compares MACs in
//! constant time. Every parse error is a value of [`TokenError`]; nothing a
//! client sends can panic here.
//!
//! Formats:
//! - session: `v1.<kid>.<user>.<exp_s>.<sig>`
//! - purchase: `t1.<kid>.<sale>.<ticket>.<user>.<exp_ms>.<sig>`
//!
//! `sig` is base64url without padding of HMAC-SHA256(key[kid], everything
//! before the last dot).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::id::{is_id_byte, Id, SaleId, TicketId, UserId};

type HmacSha256 = Hmac<Sha256>;

/// Length of an encoded HMAC-SHA256 signature (32 bytes, base64url, no pad).
const SIG_LEN: usize = 43;
/// Longest key id.
const MAX_KID_LEN: usize = 32;
/// Shortest key accepted: a shorter HMAC key is a configuration mistake.
const MIN_KEY_BYTES: usize = 16;

/// Why a key list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no keys given (expected KID:BASE64KEY[,KID:BASE64KEY...])")]
    Empty,
    #[error("key entry {0} is not KID:BASE64KEY")]
    Malformed(usize),
    #[error("key id {0:?} must be 1-32 characters of [A-Za-z0-9_-]")]
    BadKid(String),
    #[error("key {0:?} is not valid base64")]
    BadBase64(String),
    #[error("key {0:?} is shorter than 16 bytes")]
    TooShort(String),
    #[error("key id {0:?} appears twice")]
    Duplicate(String),
}

/// Why a token was refused. Deliberately coarse towards clients (all map to
/// 401), fine-grained for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token has the wrong version prefix")]
    WrongVersion,
    #[error("token names an unknown key id")]
    UnknownKid,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

struct Key {
    kid: Box<str>,
    mac: HmacSha256,
}

/// A set of HMAC keys by id; the first signs, all verify.
pub struct KeyRing {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let kids: Vec<&str> = self.keys.iter().map(|k| &*k.kid).collect();
        f.debug_struct("KeyRing").field("kids", &kids).finish()
    }
}

impl KeyRing {
    /// Parses `KID:BASE64KEY[,KID:BASE64KEY...]` (standard or url-safe base64).
    pub fn parse(spec: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, entry) in spec.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let (kid, b64) = entry.split_once(':').ok_or(KeyError::Malformed(i + 1))?;
            if kid.is_empty() || kid.len() > MAX_KID_LEN || !kid.bytes().all(is_id_byte) {
                return Err(KeyError::BadKid(kid.to_owned()));
            }
            let raw = STANDARD
                .decode(b64)
                .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim_end_matches('=')))
                .map_err(|_| KeyError::BadBase64(kid.to_owned()))?;
            if raw.len() < MIN_KEY_BYTES {
                return Err(KeyError::TooShort(kid.to_owned()));
            }
            if keys.iter().any(|k| &*k.kid == kid) {
                return Err(KeyError::Duplicate(kid.to_owned()));
            }
            let mac = HmacSha256::new_from_slice(&raw)
                .map_err(|_| KeyError::BadBase64(kid.to_owned()))?;
            keys.push(Key {
                kid: kid.into(),
                mac,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(KeyRing { keys })
    }

    /// A ring with one fresh random key, for demos and tests.
    pub fn generate(kid: &str) -> (Self, String) {
        let raw: [u8; 32] = rand::random();
        let spec = format!("{kid}:{}", STANDARD.encode(raw));
        // A valid kid and a 32-byte key always parse.
        let ring = Self::parse(&spec).unwrap_or_else(|e| panic!("generated key must parse: {e}"));
        (ring, spec)
    }

    fn signer(&self) -> &Key {
        &self.keys[0]
    }

    fn find(&self, kid: &[u8]) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid.as_bytes() == kid)
    }

    /// Appends `.<sig>` where sig signs everything already in `out`.
    fn append_sig(key: &Key, out: &mut String) {
        let mut mac = key.mac.clone();
        mac.update(out.as_bytes());
        let tag = mac.finalize().into_bytes();
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, out);
    }

    /// Checks `sig` against HMAC(key, payload) in constant time.
    fn check(key: &Key, payload: &[u8], sig: &[u8]) -> Result<(), TokenError> {
        if sig.len() != SIG_LEN {
            return Err(TokenError::BadSignature);
        }
        let mut given = [0u8; 33];
        let n = URL_SAFE_NO_PAD
            .decode_slice(sig, &mut given)
            .map_err(|_| TokenError::BadSignature)?;
        if n != 32 {
            return Err(TokenError::BadSignature);
        }
        let mut mac = key.mac.clone();
        mac.update(payload);
        let expected = mac.finalize().into_bytes();
        if bool::from(expected.as_slice().ct_eq(&given[..32])) {
            Ok(())
        } else {
            Err(TokenError::BadSignature)
        }
    }

    /// Mints a session token (what the site's login does).
    pub fn mint_session(&self, user: &UserId, exp_s: u64) -> String {
        let key = self.signer();
        let mut s = format!("v1.{}.{}.{}", key.kid, user, exp_s);
        Self::append_sig(key, &mut s);
        s
    }

    /// Verifies a session token and returns its user.
    pub fn verify_session(&self, token: &[u8], now_s: u64) -> Result<UserId, TokenError> {
        let (payload, sig) = split_sig(token)?;
        let mut f = Fields::new(payload);
        if f.next()? != b"v1" {
            return Err(TokenError::WrongVersion);
        }
        let kid = f.next()?;
        let user = UserId(Id::parse_bytes(f.next()?).map_err(|_| TokenError::Malformed)?);
        let exp_s = parse_u64(f.next()?)?;
        f.end()?;
        let key = self.find(kid).ok_or(TokenError::UnknownKid)?;
        Self::check(key, payload, sig)?;
        if exp_s <= now_s {
            return Err(TokenError::Expired);
        }
        Ok(user)
    }

    /// Signs a purchase token.
    pub fn sign_ticket(&self, c: &TicketClaims) -> String {
        let key = self.signer();
        let mut s = String::with_capacity(64 + 3 * 64 + SIG_LEN);
        use std::fmt::Write;
        let _ = write!(
            s,
            "t1.{}.{}.{}.{}.{}",
            key.kid, c.sale, c.ticket, c.user, c.expires_at_ms
        );
        Self::append_sig(key, &mut s);
        s
    }

    /// Verifies a purchase token's signature and form. Expiry is left to the
    /// caller: an order backend confirms against bigtap, which knows whether
    /// the ticket is still pending.
    pub fn verify_ticket(&self, token: &str) -> Result<TicketClaims, TokenError> {
        let (payload, sig) = split_sig(token.as_bytes())?;
        let mut f = Fields::new(payload);
        if f.next()? != b"t1" {
            return Err(TokenError::WrongVersion);
        }
        let kid = f.next()?;
        let sale = SaleId::parse_bytes(f.next()?).map_err(|_| TokenError::Malformed)?;
        let ticket = TicketId::parse_bytes(f.next()?).map_err(|_| TokenError::Malformed)?;
        let user = UserId::parse_bytes(f.next()?).map_err(|_| TokenError::Malformed)?;
        let expires_at_ms = parse_u64(f.next()?)?;
        f.end()?;
        let key = self.find(kid).ok_or(TokenError::UnknownKid)?;
        Self::check(key, payload, sig)?;
        Ok(TicketClaims {
            sale,
            ticket,
            user,
            expires_at_ms,
        })
    }
}

/// What a purchase token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketClaims {
    pub sale: SaleId,
    pub ticket: TicketId,
    pub user: UserId,
    pub expires_at_ms: u64,
}

/// Splits `payload.sig` at the last dot.
fn split_sig(token: &[u8]) -> Result<(&[u8], &[u8]), TokenError> {
    // A token longer than any valid one is refused before any work.
    if token.len() > 512 {
        return Err(TokenError::Malformed);
    }
    let dot = token
        .iter()
        .rposition(|&c| c == b'.')
        .ok_or(TokenError::Malformed)?;
    Ok((&token[..dot], &token[dot + 1..]))
}

/// Dot-separated fields of a token payload.
struct Fields<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    fn new(payload: &'a [u8]) -> Self {
        Fields {
            rest: Some(payload),
        }
    }

    fn next(&mut self) -> Result<&'a [u8], TokenError> {
        let rest = self.rest.ok_or(TokenError::Malformed)?;
        let field = match rest.iter().position(|&c| c == b'.') {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                &rest[..i]
            }
            None => {
                self.rest = None;
                rest
            }
        };
        if field.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(field)
    }

    fn end(&self) -> Result<(), TokenError> {
        match self.rest {
            None => Ok(()),
            Some(_) => Err(TokenError::Malformed),
        }
    }
}

/// A decimal without sign or leading `+`, at most 19 digits.
fn parse_u64(b: &[u8]) -> Result<u64, TokenError> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return Err(TokenError::Malformed);
    }
    b.iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(TokenError::Malformed)
}

/// Compares two secrets in constant time (admin and backend keys).
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && bool::from(given.ct_eq(expected))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &[u8]) -> Option<&[u8]> {
    let rest = header
        .strip_prefix(b"Bearer ")
        .or_else(|| header.strip_prefix(b"bearer "))?;
    let t = rest.trim_ascii();
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW_S: u64 = 1_800_000_000;

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec).unwrap()
    }

    fn two_keys() -> KeyRing {
        ring("k2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=")
    }

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn a_minted_session_token_verifies_to_its_user() {
        let r = two_keys();
        let t = r.mint_session(&user("alice"), NOW_S + 60);
        assert!(t.starts_with("v1.k2.alice."));
        assert_eq!(r.verify_session(t.as_bytes(), NOW_S), Ok(user("alice")));
    }

    #[test]
    fn an_expired_session_is_refused() {
        let r = two_keys();
        let t = r.mint_session(&user("alice"), NOW_S);
        assert_eq!(
            r.verify_session(t.as_bytes(), NOW_S),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_signed_by_a_retired_key_still_verifies_while_listed() {
        let old = ring("k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=");
        let t = old.mint_session(&user("bob"), NOW_S + 60);
        assert_eq!(
            two_keys().verify_session(t.as_bytes(), NOW_S),
            Ok(user("bob"))
        );
    }

    #[test]
    fn an_unknown_kid_is_refused() {
        let other = ring("zz:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=");
        let t = other.mint_session(&user("bob"), NOW_S + 60);
        assert_eq!(
            two_keys().verify_session(t.as_bytes(), NOW_S),
            Err(TokenError::UnknownKid)
        );
    }

    #[test]
    fn a_key_list_with_mistakes_is_explained() {
        assert_eq!(KeyRing::parse("").unwrap_err(), KeyError::Empty);
        assert_eq!(KeyRing::parse("nokey").unwrap_err(), KeyError::Malformed(1));
        assert!(matches!(
            KeyRing::parse("a.b:AAAA").unwrap_err(),
            KeyError::BadKid(_)
        ));
        assert!(matches!(
            KeyRing::parse("a:!!!").unwrap_err(),
            KeyError::BadBase64(_)
        ));
        assert!(matches!(
            KeyRing::parse("a:AAAA").unwrap_err(),
            KeyError::TooShort(_)
        ));
    }

    #[test]
    fn session_fields_out_of_form_are_malformed() {
        let r = two_keys();
        for bad in [
            "",
            ".",
            "v1",
            "v1.k2.alice.1",
            "v1.k2..123.sig",
            "v1.k2.al.ice.123.sig",
            "v1.k2.alice.-5.sig",
            "v1.k2.alice.99999999999999999999.sig",
        ] {
            assert!(r.verify_session(bad.as_bytes(), NOW_S).is_err(), "{bad}");
        }
        assert_eq!(
            r.verify_session(b"v2.k2.alice.1.x", NOW_S),
            Err(TokenError::WrongVersion)
        );
    }

    #[test]
    fn a_purchase_token_round_trips() {
        let r = two_keys();
        let c = TicketClaims {
            sale: SaleId::parse("phone").unwrap(),
            ticket: TicketId::random(),
            user: user("alice"),
            expires_at_ms: 1_800_000_000_123,
        };
        let t = r.sign_ticket(&c);
        assert!(t.starts_with("t1.k2.phone."));
        assert_eq!(r.verify_ticket(&t), Ok(c));
    }

    #[test]
    fn bearer_extracts_the_token() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Basic abc"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn session_tokens_round_trip(u in "[A-Za-z0-9_-]{1,64}", exp in (NOW_S + 1)..u64::MAX / 2) {
            let r = two_keys();
            let t = r.mint_session(&user(&u), exp);
            prop_assert_eq!(r.verify_session(t.as_bytes(), NOW_S), Ok(user(&u)));
        }

        #[test]
        fn every_single_byte_mutation_of_a_session_token_is_refused(
            u in "[A-Za-z0-9_-]{1,64}", pos in any::<prop::sample::Index>(), byte in any::<u8>()
        ) {
            let r = two_keys();
            let t = r.mint_session(&user(&u), NOW_S + 3600);
            let mut m = t.clone().into_bytes();
            let i = pos.index(m.len());
            prop_assume!(m[i] != byte);
            m[i] = byte;
            prop_assert!(r.verify_session(&m, NOW_S).is_err());
        }

        #[test]
        fn every_single_byte_mutation_of_a_purchase_token_is_refused(
            u in "[A-Za-z0-9_-]{1,64}", pos in any::<prop::sample::Index>(), byte in any::<u8>()
        ) {
            let r = two_keys();
            let t = r.sign_ticket(&TicketClaims {
                sale: SaleId::parse("s-1").unwrap(),
                ticket: TicketId::random(),
                user: user(&u),
                expires_at_ms: 1_800_000_000_000,
            });
            let mut m = t.into_bytes();
            let i = pos.index(m.len());
            prop_assume!(m[i] != byte);
            m[i] = byte;
            let s = String::from_utf8_lossy(&m);
            prop_assert!(r.verify_ticket(&s).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_verify_and_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let r = two_keys();
            prop_assert!(r.verify_session(&bytes, NOW_S).is_err());
            prop_assert!(r.verify_ticket(&String::from_utf8_lossy(&bytes)).is_err());
        }
    }
}
