//! Identifiers parsed at the edge: sale ids, user ids and ticket ids.
//!
//! DESIGN §3 fixes their alphabet: 1–64 characters of `[A-Za-z0-9_-]`. An
//! [`Id`] stores those bytes inline (no heap), so the request path can parse a
//! user out of a session token and look it up in maps without allocating.
//! Because the alphabet excludes `.` and `:`, ids can be joined into tokens
//! and Redis values with those separators and split back unambiguously.

use std::fmt;

/// Longest id the contract allows.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an id must not be empty")]
    Empty,
    #[error("an id is at most 64 characters long")]
    TooLong,
    #[error("an id may only contain A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter,
}

/// An id of 1–64 characters of `[A-Za-z0-9_-]`, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    len: u8,
    bytes: [u8; MAX_ID_LEN],
}

impl Id {
    /// Parses an id, checking length and alphabet.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::parse_bytes(s.as_bytes())
    }

    /// Parses an id from raw bytes (a path segment or token field).
    pub fn parse_bytes(b: &[u8]) -> Result<Self, IdError> {
        if b.is_empty() {
            return Err(IdError::Empty);
        }
        if b.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        if !b.iter().all(|&c| is_id_byte(c)) {
            return Err(IdError::BadCharacter);
        }
        let mut bytes = [0u8; MAX_ID_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Id {
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // The constructor admits ASCII only, so this cannot fail; fall back to
        // an empty string rather than panic should that ever change.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

/// True for the bytes of the id alphabet.
pub fn is_id_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Id);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Id::parse(s).map($name)
            }
            pub fn parse_bytes(b: &[u8]) -> Result<Self, IdError> {
                Id::parse_bytes(b).map($name)
            }
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

id_newtype!(
    /// A sale, e.g. `phone-x-launch`.
    SaleId
);
id_newtype!(
    /// A buyer, as named by the site's session token.
    UserId
);
id_newtype!(
    /// A purchase ticket: 32 lowercase hex characters minted by the node that
    /// committed the win, globally unique, so the order backend can use it as
    /// an idempotency key across sales.
    TicketId
);

impl UserId {
    /// The buyer's digest in the winners digest of a sale: 64-bit FNV-1a of
    /// the id. Stable across nodes, processes and versions (it is stored in
    /// Redis), cheap on the request path (no allocation, ~one multiply per
    /// byte). Not a secret: a collision only costs one Redis lookup, which
    /// answers correctly, and user ids come from signed sessions.
    pub fn digest(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        self.as_str()
            .bytes()
            .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
    }
}

id_newtype!(
    /// A warehouse a sale's units ship from, e.g. `berlin-1` (DESIGN §7).
    WarehouseId
);
id_newtype!(
    /// A buyer region naming a warehouse preference order, e.g. `eu`.
    RegionId
);

impl TicketId {
    /// A fresh random ticket id (128 random bits in hex).
    pub fn random() -> Self {
        let n: u128 = rand::random();
        let mut buf = [0u8; 32];
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
        }
        // Hex digits are in the id alphabet and 32 <= 64.
        TicketId(Id::parse_bytes(&buf).unwrap_or_else(|_| unreachable_id()))
    }
}

#[cold]
fn unreachable_id() -> Id {
    Id {
        len: 1,
        bytes: [b'0'; MAX_ID_LEN],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_accepts_the_contract_alphabet() {
        assert_eq!(Id::parse("Phone_X-2").unwrap().as_str(), "Phone_X-2");
        assert!(Id::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn an_id_rejects_empty_long_and_foreign_characters() {
        assert_eq!(Id::parse(""), Err(IdError::Empty));
        assert_eq!(Id::parse(&"a".repeat(65)), Err(IdError::TooLong));
        for bad in ["a.b", "a:b", "a b", "é", "a/b", "{a}"] {
            assert_eq!(Id::parse(bad), Err(IdError::BadCharacter), "{bad}");
        }
    }

    #[test]
    fn random_tickets_are_32_hex_characters_and_differ() {
        let a = TicketId::random();
        let b = TicketId::random();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
