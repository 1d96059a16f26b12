//! The winners table: every winner a node knows of, by 64-bit digest.
//!
//! One open-addressing hash table holds both parts of the winners replica
//! (see [`super::stock`]): bare digests the tailer reads (other nodes'
//! wins) and ticket entries (a digest and the ticket it stands for, for the
//! wins this node committed or looked up). It only grows: a win is never
//! forgotten while the node serves the sale.
//!
//! Readers never block and never allocate: a lookup hashes the digest and
//! probes slots in order until it finds the digest or an empty slot,
//! usually one or two cache lines. This replaced two lock-free skip lists,
//! whose insert walked some twenty levels of pointers per win (about 9 % of
//! a loaded node's CPU went to remembering winners) and whose lookups cost
//! as much again.
//!
//! Writers (the committer, the tailer, a lookup that found a ticket) take
//! one mutex among themselves. A slot is written once: its value first,
//! then its digest (Release), so a reader that sees the digest (Acquire)
//! sees the value. When the table is half full, the writer builds one four
//! times larger from it and publishes that as the current table; the old
//! ones stay until the sale is dropped, so a reader still probing one is
//! never left with freed memory (they add at most a third to the current
//! table's size). A reader racing an insert may miss it, as it would miss
//! an insert that had not happened yet.
//!
//! Invariants: an entry once found is found by every later lookup; the
//! current table is never more than half full, so every probe ends.

use std::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

/// Slots of the first table: 24 KiB of a sale's memory before any win.
const FIRST_BITS: u32 = 10;
/// Each table has four times the slots of the one before.
const GROWTH_BITS: u32 = 2;
/// Tables at most: the last has 2^30 slots (half a billion wins).
const MAX_TABLES: usize = 11;

/// Insert-only map from a digest to zero or more values (see the module
/// docs). A digest inserted bare has no value; it still counts for
/// [`Table::contains`].
pub(super) struct Table<V> {
    tables: [OnceLock<Slots<V>>; MAX_TABLES],
    /// Index of the current table. Release/Acquire: a reader that sees a
    /// new index sees the table built before it was published.
    current: AtomicUsize,
    /// Serializes writers; readers never take it. Holds the entries in
    /// the current table.
    write: Mutex<usize>,
}

struct Slots<V> {
    /// A stored key per slot; 0 marks an empty slot (see [`key`]).
    keys: Box<[AtomicU64]>,
    values: Box<[OnceLock<Arc<V>>]>,
    mask: usize,
}

/// The stored key of a digest: 0 is the empty slot's mark, so digest 0
/// shares key 1 with digest 1. Both then look present when one is; a
/// digest match is a "may have won" and values are checked by their
/// owner, so a shared key costs at most a lookup.
fn key(digest: u64) -> u64 {
    digest.max(1)
}

impl<V> Slots<V> {
    fn with_bits(bits: u32) -> Self {
        let n = 1usize << bits;
        Slots {
            keys: (0..n).map(|_| AtomicU64::new(0)).collect(),
            values: (0..n).map(|_| OnceLock::new()).collect(),
            mask: n - 1,
        }
    }

    fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// The slots `key` may sit in, in probe order: from its home slot on,
    /// wrapping. The digest is FNV-1a (close ids differ little in their
    /// top bits), so one multiply mixes it before the slot is picked.
    fn probe(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let home = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize;
        (0..=self.mask).map(move |i| (home + i) & self.mask)
    }

    /// The occupied slots holding `key`, in probe order. Stops at the first
    /// empty slot: no entry for `key` lies past it.
    fn matching(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        self.probe(key)
            // Acquire: pairs with the Release in `put`; a key seen means
            // its value (if any) is seen too.
            .map(|i| (i, self.keys[i].load(Acquire)))
            .take_while(|&(_, k)| k != 0)
            .filter(move |&(_, k)| k == key)
            .map(|(i, _)| i)
    }

    /// Writes an entry in the first empty slot of its probe. Writers only
    /// (the caller holds the write lock), and never into a full table.
    fn put(&self, key: u64, value: Option<Arc<V>>) {
        for i in self.probe(key) {
            if self.keys[i].load(Relaxed) == 0 {
                if let Some(v) = value {
                    // The slot was empty, and only one writer runs: unset.
                    let _ = self.values[i].set(v);
                }
                // Release: the value is written before the key is seen.
                self.keys[i].store(key, Release);
                return;
            }
        }
    }
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        let t = Table {
            tables: std::array::from_fn(|_| OnceLock::new()),
            current: AtomicUsize::new(0),
            write: Mutex::new(0),
        };
        let _ = t.tables[0].set(Slots::with_bits(FIRST_BITS));
        t
    }
}

impl<V> Table<V> {
    /// The newest table: it holds every entry inserted before it was read.
    fn slots(&self) -> &Slots<V> {
        // Acquire: pairs with the Release in `grow`.
        let i = self.current.load(Acquire);
        match self.tables[i].get() {
            Some(s) => s,
            // Unreachable: an index is published after its table is set.
            None => self.tables[0].get().unwrap_or_else(|| unreachable!()),
        }
    }

    /// Whether any entry, bare or with a value, holds `digest`.
    pub fn contains(&self, digest: u64) -> bool {
        let key = key(digest);
        self.slots().matching(key).next().is_some()
    }

    /// The first value stored under `digest` that `wanted` accepts.
    pub fn find(&self, digest: u64, wanted: impl Fn(&V) -> bool) -> Option<&V> {
        let key = key(digest);
        let slots = self.slots();
        slots
            .matching(key)
            .filter_map(|i| slots.values[i].get())
            .map(|v| &**v)
            .find(|v| wanted(v))
    }

    /// Adds each digest without a value, unless an entry holds it already.
    pub fn insert_bare(&self, digests: impl IntoIterator<Item = u64>) {
        let mut len = self.write.lock();
        for d in digests {
            if !self.contains(d) {
                self.add(&mut len, key(d), None);
            }
        }
    }

    /// Adds `value` under `digest`, unless a value there is `same` as it.
    /// Returns whether it was added.
    pub fn insert(&self, digest: u64, value: V, same: impl Fn(&V) -> bool) -> bool {
        let mut len = self.write.lock();
        if self.find(digest, same).is_some() {
            return false;
        }
        self.add(&mut len, key(digest), Some(Arc::new(value)));
        true
    }

    /// Entries held (bare digests and values).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        *self.write.lock()
    }

    fn add(&self, len: &mut usize, key: u64, value: Option<Arc<V>>) {
        let mut slots = self.slots();
        if (*len + 1) * 2 > slots.capacity() {
            slots = self.grow(slots);
        }
        slots.put(key, value);
        *len += 1;
    }

    /// Builds the next table from the current one and publishes it. Past
    /// the last size, the current table is kept and fills beyond half
    /// (half a billion wins on one node; probes grow longer, never wrong
    /// until every slot is taken).
    fn grow<'a>(&'a self, old: &'a Slots<V>) -> &'a Slots<V> {
        let next = self.current.load(Relaxed) + 1;
        if next >= MAX_TABLES {
            return old;
        }
        let bits = FIRST_BITS + GROWTH_BITS * next as u32;
        let new = Slots::with_bits(bits);
        for (i, k) in old.keys.iter().enumerate() {
            let k = k.load(Relaxed);
            if k != 0 {
                new.put(k, old.values[i].get().cloned());
            }
        }
        let _ = self.tables[next].set(new);
        // Release: the new table's entries are written before it is seen.
        self.current.store(next, Release);
        self.slots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_bare_digest_is_present_but_has_no_value() {
        let t: Table<u32> = Table::default();
        t.insert_bare([42]);
        assert!(t.contains(42));
        assert!(!t.contains(43));
        assert_eq!(t.find(42, |_| true), None);
    }

    #[test]
    fn two_values_under_one_digest_are_both_found_by_their_owner() {
        let t: Table<&str> = Table::default();
        assert!(t.insert(7, "alice", |v| *v == "alice"));
        assert!(t.insert(7, "bob", |v| *v == "bob"));
        assert!(!t.insert(7, "alice", |v| *v == "alice"));
        assert_eq!(t.find(7, |v| *v == "alice"), Some(&"alice"));
        assert_eq!(t.find(7, |v| *v == "bob"), Some(&"bob"));
        assert_eq!(t.find(7, |v| *v == "carol"), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn digest_zero_is_stored_although_zero_marks_an_empty_slot() {
        let t: Table<u8> = Table::default();
        assert!(!t.contains(0));
        t.insert(0, 9, |v| *v == 9);
        assert!(t.contains(0));
        assert_eq!(t.find(0, |_| true), Some(&9));
    }

    #[test]
    fn the_table_grows_past_half_full_and_keeps_every_entry() {
        let t: Table<u64> = Table::default();
        let n = 10_000u64;
        for d in 1..=n {
            if d % 2 == 0 {
                t.insert(d, d, |v| *v == d);
            } else {
                t.insert_bare([d]);
            }
        }
        assert_eq!(t.len(), n as usize);
        assert!(t.slots().capacity() >= 2 * n as usize);
        for d in 1..=n {
            assert!(t.contains(d), "digest {d} lost");
            assert_eq!(t.find(d, |_| true).copied(), (d % 2 == 0).then_some(d));
        }
        assert!(!t.contains(n + 1));
    }

    #[test]
    fn readers_racing_writers_find_every_entry_inserted_before_they_looked() {
        let t: Arc<Table<u64>> = Arc::default();
        let done = Arc::new(AtomicU64::new(0));
        let writer = {
            let (t, done) = (t.clone(), done.clone());
            std::thread::spawn(move || {
                for d in 1..=50_000u64 {
                    t.insert(d.wrapping_mul(0x2545_f491_4f6c_dd1d), d, |v| *v == d);
                    // Release: a reader that sees `d` done sees its entry.
                    done.store(d, Release);
                }
            })
        };
        let mut checked = 0;
        while checked < 50_000 {
            // Acquire: pairs with the writer's Release above.
            let upto = done.load(Acquire);
            for d in (checked + 1)..=upto {
                let digest = d.wrapping_mul(0x2545_f491_4f6c_dd1d);
                assert_eq!(t.find(digest, |v| *v == d), Some(&d), "entry {d} missed");
            }
            checked = upto;
        }
        writer.join().unwrap();
    }

    proptest! {
        #[test]
        fn every_inserted_digest_is_found_and_no_other(
            digests in proptest::collection::vec(any::<u64>(), 1..3000),
            probes in proptest::collection::vec(any::<u64>(), 0..200),
        ) {
            let t: Table<u64> = Table::default();
            for &d in &digests {
                t.insert(d, d, |v| *v == d);
            }
            for &d in &digests {
                prop_assert_eq!(t.find(d, |v| *v == d), Some(&d));
            }
            for p in probes {
                prop_assert_eq!(t.contains(p), digests.iter().any(|&d| key(d) == key(p)));
            }
        }
    }
}
