//! The typed wrappers of the Lua scripts, one per state change.
//!
//! `lua/NAME.lua` documents its KEYS, ARGV and replies in its header;
//! `NAME.rs` here (the same name) builds exactly those KEYS and ARGV from
//! domain types and decodes exactly those replies into a domain enum, so
//! the two are read side by side and change together. The scripts stay in
//! `lua/`, where operators and reviewers look for them, and are embedded at
//! build time with `include_str!`.
//!
//! Each [`Def`] says whether running its script twice is harmless
//! ([`Def::idempotent`]): only then may a call be sent again after a
//! connection broke with the call's fate unknown (see [`super::conn`]).

use std::sync::OnceLock;

use ::redis::{Cmd, Script, Value};

use super::StoreError;

pub mod account;
pub mod add_eligible;
pub mod add_stock;
pub mod admit;
pub mod close;
pub mod confirm;
pub mod lease;
pub mod move_end;
pub mod move_in;
pub mod move_out;
pub mod orders_ack;
pub mod orders_fail;
pub mod orders_replay;
pub mod orders_retire;
pub mod orders_trim;
pub mod put_sale;
pub mod reclaim;
pub mod release;
pub mod renew;
#[path = "return.rs"]
pub mod return_lease;
pub mod sweep;
pub mod transfer;

/// Index of each operation in [`crate::metrics::STORE_OPS`].
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Lease = 0,
    Admit,
    Renew,
    Return,
    Reclaim,
    Confirm,
    Release,
    Sweep,
    PutSale,
    AddStock,
    AddEligible,
    Close,
    Account,
    Command,
    ReadOrders,
    Ping,
    Transfer,
    Move,
}

impl Op {
    pub fn name(self) -> &'static str {
        crate::metrics::STORE_OPS[self as usize]
    }
}

/// One script: its source, how its calls are measured, and whether a
/// repeat is harmless.
pub struct Def {
    pub name: &'static str,
    pub op: Op,
    /// Running it twice leaves the same state and an equivalent reply.
    pub idempotent: bool,
    source: &'static str,
    script: OnceLock<Script>,
}

impl Def {
    pub const fn new(name: &'static str, op: Op, idempotent: bool, source: &'static str) -> Self {
        Def {
            name,
            op,
            idempotent,
            source,
            script: OnceLock::new(),
        }
    }

    pub fn script(&self) -> &Script {
        self.script.get_or_init(|| Script::new(self.source))
    }

    /// An `EVALSHA` of this script with room for `args` arguments of about
    /// `bytes` bytes in all; the caller adds `numkeys`, the keys and the
    /// arguments (see `RedisStore::invoke_cmd`).
    pub fn evalsha(&self, args: usize, bytes: usize) -> Cmd {
        let hash = self.script().get_hash();
        let mut cmd = Cmd::with_capacity(2 + args, 16 + hash.len() + bytes);
        cmd.arg("EVALSHA").arg(hash);
        cmd
    }
}

/// Every script, for loading them all at start-up.
pub fn all() -> [&'static Def; 22] {
    [
        &account::DEF,
        &add_eligible::DEF,
        &add_stock::DEF,
        &admit::DEF,
        &close::DEF,
        &confirm::DEF,
        &lease::DEF,
        &orders_ack::DEF,
        &orders_fail::DEF,
        &orders_replay::DEF,
        &orders_retire::DEF,
        &orders_trim::DEF,
        &put_sale::DEF,
        &reclaim::DEF,
        &release::DEF,
        &renew::DEF,
        &sweep::DEF,
        &return_lease::DEF,
        &transfer::DEF,
        &move_out::DEF,
        &move_in::DEF,
        &move_end::DEF,
    ]
}

pub(crate) fn protocol(def: &Def, detail: String) -> StoreError {
    StoreError::Protocol {
        script: def.name,
        detail,
    }
}

/// A script reply as a list of items (a bare value becomes a list of one).
pub(crate) fn into_items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// Reads a script reply item by item, with errors naming the script.
pub(crate) struct Reply<'a> {
    def: &'static Def,
    items: &'a [Value],
    pos: usize,
}

impl<'a> Reply<'a> {
    pub fn new(def: &'static Def, items: &'a [Value]) -> Self {
        Reply { def, items, pos: 0 }
    }

    pub fn protocol(&self, detail: String) -> StoreError {
        protocol(self.def, detail)
    }

    pub fn unknown_status(&self, status: &str) -> StoreError {
        self.protocol(format!("unknown status {status:?}"))
    }

    fn next(&mut self) -> Result<&'a Value, StoreError> {
        let v = self.items.get(self.pos).ok_or_else(|| {
            protocol(
                self.def,
                format!("reply too short ({} items)", self.items.len()),
            )
        })?;
        self.pos += 1;
        Ok(v)
    }

    pub fn skip(&mut self, n: usize) {
        self.pos += n;
    }

    /// `None` for a nil item.
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, StoreError> {
        let def = self.def;
        match self.next()? {
            Value::Nil => Ok(None),
            Value::BulkString(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| protocol(def, "non-UTF-8 string".into())),
            Value::SimpleString(s) => Ok(Some(s)),
            other => Err(protocol(def, format!("expected a string, got {other:?}"))),
        }
    }

    pub fn str(&mut self) -> Result<&'a str, StoreError> {
        self.opt_str()?
            .ok_or_else(|| protocol(self.def, "expected a string, got nil".into()))
    }

    pub fn u64(&mut self) -> Result<u64, StoreError> {
        let def = self.def;
        match self.next()? {
            Value::Int(n) if *n >= 0 => Ok(*n as u64),
            Value::BulkString(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| protocol(def, "expected a number".into())),
            other => Err(protocol(
                def,
                format!("expected a non-negative integer, got {other:?}"),
            )),
        }
    }
}

/// Decodes the refusal statuses several scripts share.
pub(crate) fn refusal(r: &Reply<'_>, status: &str) -> Result<super::Refusal, StoreError> {
    use super::Refusal;
    match status {
        "unknown_sale" => Ok(Refusal::UnknownSale),
        "not_started" => Ok(Refusal::NotStarted),
        "ended" => Ok(Refusal::Ended),
        "closed" => Ok(Refusal::Closed),
        other => Err(r.unknown_status(other)),
    }
}
