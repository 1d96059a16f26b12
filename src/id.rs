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

/// Longest ticket id: a 16-hex tag, `-` and the buyer's id (see
/// [`TicketId::for_user`]).
pub const MAX_TICKET_LEN: usize = TAG_LEN + 1 + MAX_ID_LEN;

/// Hex digits of a ticket's random tag.
const TAG_LEN: usize = 16;

/// An id of 1–`N` characters of `[A-Za-z0-9_-]` (64 unless said otherwise),
/// stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id<const N: usize = MAX_ID_LEN> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Id<N> {
    /// Parses an id, checking length and alphabet.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::parse_bytes(s.as_bytes())
    }

    /// Parses an id from raw bytes (a path segment or token field).
    pub fn parse_bytes(b: &[u8]) -> Result<Self, IdError> {
        if b.is_empty() {
            return Err(IdError::Empty);
        }
        if b.len() > N {
            return Err(IdError::TooLong);
        }
        if !b.iter().all(|&c| is_id_byte(c)) {
            return Err(IdError::BadCharacter);
        }
        let mut bytes = [0u8; N];
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

impl<const N: usize> fmt::Debug for Id<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for Id<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        id_newtype!($(#[$doc])* $name, MAX_ID_LEN);
    };
    ($(#[$doc:meta])* $name:ident, $cap:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Id<{ $cap }>);

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
    /// A purchase ticket, minted by the node that committed the win, globally
    /// unique, so the order backend can use it as an idempotency key across
    /// sales: `<16 lowercase hex>-<user>` (see [`TicketId::for_user`]), or
    /// 32 lowercase hex for tickets minted before records moved to the
    /// winners hash. Up to [`MAX_TICKET_LEN`] characters of the id alphabet.
    TicketId,
    MAX_TICKET_LEN
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
    /// A fresh ticket for `user`: 64 random bits in hex, `-`, the user.
    ///
    /// The ticket names its holder, so the store keeps one record per win,
    /// under the user (the one-ticket-per-user check), and finds it from
    /// the ticket alone (the order backend's calls) without a second index.
    /// A user holds at most one ticket per sale, so 64 random bits keep the
    /// ids of one user's tickets in different sales apart.
    pub fn for_user(user: &UserId) -> Self {
        let tag = TicketBits {
            tagged: true,
            bits: rand::random::<u64>().into(),
        };
        Self::from_bits(tag, user)
    }

    /// A random ticket id of the older form (128 random bits in hex), still
    /// used where an id names no buyer (e.g. a stock move's id).
    pub fn random() -> Self {
        let bits = TicketBits {
            tagged: false,
            bits: rand::random(),
        };
        Self::build(bits, "")
    }

    /// The tag and holder of a ticket of the form `<16 hex>-<user>`; `None`
    /// for the older 32-hex form (which has no `-`).
    pub fn holder(&self) -> Option<(&str, UserId)> {
        let s = self.as_str();
        let (tag, user) = (s.get(..TAG_LEN)?, s.get(TAG_LEN + 1..)?);
        if s.as_bytes().get(TAG_LEN) != Some(&b'-') || !tag.bytes().all(is_lower_hex) {
            return None;
        }
        Some((tag, UserId::parse(user).ok()?))
    }

    /// The ticket in 16 bytes, for a holder the caller keeps apart (a
    /// node's memory of its winners). `None` for an id of neither form, or
    /// one naming another holder.
    pub fn bits(&self, holder: &UserId) -> Option<TicketBits> {
        if let Some((tag, user)) = self.holder() {
            let tag = u64::from_str_radix(tag, 16).ok()?;
            return (user == *holder).then_some(TicketBits {
                tagged: true,
                bits: u128::from(tag),
            });
        }
        let s = self.as_str();
        if s.len() != 32 || !s.bytes().all(is_lower_hex) {
            return None;
        }
        Some(TicketBits {
            tagged: false,
            bits: u128::from_str_radix(s, 16).ok()?,
        })
    }

    /// The ticket `bits` stands for, held by `holder`: the inverse of
    /// [`TicketId::bits`].
    pub fn from_bits(t: TicketBits, holder: &UserId) -> Self {
        Self::build(t, holder.as_str())
    }

    /// `<16 hex>-<holder>` for a tagged ticket, 32 hex (no holder) else.
    fn build(t: TicketBits, holder: &str) -> Self {
        let mut buf = [0u8; MAX_TICKET_LEN];
        let len = if t.tagged {
            hex_into(t.bits, &mut buf[..TAG_LEN]);
            buf[TAG_LEN] = b'-';
            let u = holder.as_bytes();
            buf[TAG_LEN + 1..TAG_LEN + 1 + u.len()].copy_from_slice(u);
            TAG_LEN + 1 + u.len()
        } else {
            hex_into(t.bits, &mut buf[..32]);
            32
        };
        // Hex, '-' and a user id are in the alphabet, and fit by
        // MAX_TICKET_LEN (a holder is a user id: at most 64 bytes).
        TicketId(Id::parse_bytes(&buf[..len]).unwrap_or_else(|_| unreachable_id()))
    }
}

/// A ticket id without its holder: the 64-bit tag of `<16 hex>-<user>`, or
/// the 128 bits of the older 32-hex form (see [`TicketId::bits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketBits {
    pub tagged: bool,
    pub bits: u128,
}

/// A digit of the lowercase hex that tickets are written in.
fn is_lower_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

/// Writes the low `4 * out.len()` bits of `n` as lowercase hex.
fn hex_into(n: u128, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let len = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> (4 * (len - 1 - i))) & 0xf) as usize];
    }
}

#[cold]
fn unreachable_id<const N: usize>() -> Id<N> {
    Id {
        len: 1,
        bytes: [b'0'; N],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_accepts_the_contract_alphabet() {
        assert_eq!(<Id>::parse("Phone_X-2").unwrap().as_str(), "Phone_X-2");
        assert!(<Id>::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn an_id_rejects_empty_long_and_foreign_characters() {
        assert_eq!(<Id>::parse(""), Err(IdError::Empty));
        assert_eq!(<Id>::parse(&"a".repeat(65)), Err(IdError::TooLong));
        for bad in ["a.b", "a:b", "a b", "é", "a/b", "{a}"] {
            assert_eq!(<Id>::parse(bad), Err(IdError::BadCharacter), "{bad}");
        }
    }

    #[test]
    fn a_ticket_in_bits_comes_back_whole_for_its_holder_only() {
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let tagged = TicketId::for_user(&alice);
        let bits = tagged.bits(&alice).expect("a tagged ticket");
        assert!(bits.tagged);
        assert_eq!(TicketId::from_bits(bits, &alice), tagged);
        // Kept for another holder, it would come back as theirs: refused.
        assert_eq!(tagged.bits(&bob), None);
        // The older form names no holder and comes back whole for anyone.
        let old = TicketId::random();
        let bits = old.bits(&bob).expect("a 32-hex ticket");
        assert!(!bits.tagged);
        assert_eq!(TicketId::from_bits(bits, &alice), old);
        // Neither form: upper-case hex, a short tag, another shape.
        for other in ["0123456789ABCDEF0123456789abcdef", "0123-alice", "ticket-1"] {
            assert_eq!(
                TicketId::parse(other).unwrap().bits(&alice),
                None,
                "{other}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn every_ticket_a_node_mints_survives_its_bits(
            user in "[A-Za-z0-9_-]{1,64}",
            tag in proptest::prelude::any::<u64>(),
            random in proptest::prelude::any::<u128>(),
        ) {
            let user = UserId::parse(&user).unwrap();
            let t = TicketId::from_bits(TicketBits { tagged: true, bits: u128::from(tag) }, &user);
            proptest::prop_assert_eq!(t.holder().map(|(_, u)| u), Some(user));
            proptest::prop_assert_eq!(t.bits(&user).map(|b| TicketId::from_bits(b, &user)), Some(t));
            let r = TicketId::from_bits(TicketBits { tagged: false, bits: random }, &user);
            proptest::prop_assert_eq!(r.as_str().len(), 32);
            proptest::prop_assert_eq!(r.bits(&user).map(|b| b.bits), Some(random));
        }
    }

    #[test]
    fn a_ticket_for_a_user_names_its_holder_after_a_random_tag() {
        let alice = UserId::parse("alice_01-x").unwrap();
        let (a, b) = (TicketId::for_user(&alice), TicketId::for_user(&alice));
        assert_ne!(a, b);
        let (tag, holder) = a.holder().expect("a tagged ticket");
        assert_eq!(holder, alice);
        assert_eq!(tag.len(), 16);
        assert!(tag.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.as_str(), format!("{tag}-alice_01-x"));
    }

    #[test]
    fn the_longest_user_still_fits_in_a_ticket() {
        let long = UserId::parse(&"u".repeat(MAX_ID_LEN)).unwrap();
        let t = TicketId::for_user(&long);
        assert_eq!(t.as_str().len(), MAX_TICKET_LEN);
        assert_eq!(t.holder().map(|(_, u)| u), Some(long));
        assert_eq!(
            TicketId::parse(&"a".repeat(MAX_TICKET_LEN + 1)),
            Err(IdError::TooLong)
        );
    }

    #[test]
    fn older_and_foreign_tickets_name_no_holder() {
        assert_eq!(TicketId::random().holder(), None);
        for id in [
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdeF-u",
            "0123456789abcde-u",
            "0123456789abcdef-",
            "0123456789abcdef_u",
        ] {
            let t = TicketId::parse(id).unwrap();
            assert_eq!(t.holder(), None, "{id}");
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
