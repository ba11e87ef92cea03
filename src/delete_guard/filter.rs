//! Which customers may have a held delete, in memory of a fixed size
//! whatever is held: every operation of the stream asks, and a million held
//! customers must not cost a million strings.
//!
//! A Bloom filter answers "maybe" for every customer inserted and, now and
//! then, for one that was not (more often the more are inserted); "maybe"
//! costs the caller one lookup in `ciosync.held_deletes`, which is the
//! truth. It never answers "no" for an inserted customer, so no held delete
//! is missed. Nothing can be removed from it; a small exact set of
//! customers looked up since and found with nothing held keeps a customer
//! changed again and again from costing a lookup each time.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

/// Bit positions each customer sets: few enough to stay quick, enough for
/// about 2% false positives at one customer per 8 bits.
const HASHES: u64 = 5;
/// What one entry of the exact set costs besides its id's bytes, about.
const CLEARED_ENTRY_BYTES: usize = 48;

/// The customers that may have a held delete; see the module doc.
#[derive(Debug)]
pub struct HeldFilter {
    /// The filter's bits, allocated on the first insert.
    bits: Vec<u64>,
    /// Its size once allocated, in 64-bit words (at least one).
    words: usize,
    hasher: RandomState,
    /// Customers inserted since the last clear (repeats counted).
    inserted: u64,
    /// Customers inserted and since found to have no held delete.
    cleared: HashSet<String>,
    cleared_bytes: usize,
    max_cleared_bytes: usize,
}

impl HeldFilter {
    /// An empty filter of `filter_bytes` (rounded down to whole 64-bit
    /// words, at least one) whose exact set stays within `cleared_bytes`.
    pub fn new(filter_bytes: usize, cleared_bytes: usize) -> Self {
        Self {
            bits: Vec::new(),
            words: (filter_bytes / 8).max(1),
            hasher: RandomState::new(),
            inserted: 0,
            cleared: HashSet::new(),
            cleared_bytes: 0,
            max_cleared_bytes: cleared_bytes,
        }
    }

    /// Adds a customer whose delete is (or is about to be) held.
    pub fn insert(&mut self, customer_id: &str) {
        if self.bits.is_empty() {
            self.bits = vec![0; self.words];
        }
        for bit in self.positions(customer_id) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
        if self.cleared.remove(customer_id) {
            self.cleared_bytes -= CLEARED_ENTRY_BYTES + customer_id.len();
        }
        self.inserted += 1;
    }

    /// Whether the customer may have a held delete: `false` is certain.
    pub fn may_hold(&self, customer_id: &str) -> bool {
        !self.bits.is_empty()
            && !self.cleared.contains(customer_id)
            && self.positions(customer_id).all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// Records that the customer was looked up and has no held delete left
    /// (until it is inserted again). When the exact set is full it starts
    /// over: a forgotten entry only costs one more lookup.
    pub fn forget(&mut self, customer_id: &str) {
        let cost = CLEARED_ENTRY_BYTES + customer_id.len();
        if self.cleared.contains(customer_id) || cost > self.max_cleared_bytes {
            return;
        }
        if self.cleared_bytes + cost > self.max_cleared_bytes {
            self.cleared = HashSet::new();
            self.cleared_bytes = 0;
        }
        self.cleared.insert(customer_id.to_owned());
        self.cleared_bytes += cost;
    }

    /// Whether nothing was inserted since the last clear: the common case,
    /// which every operation of the stream checks first.
    pub fn is_empty(&self) -> bool {
        self.inserted == 0
    }

    /// Customers inserted since the last clear, repeats counted.
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    /// Forgets everything and frees the bits: nothing is held any more.
    pub fn clear(&mut self) {
        self.bits = Vec::new();
        self.inserted = 0;
        self.cleared = HashSet::new();
        self.cleared_bytes = 0;
    }

    /// The filter's bits for `customer_id` (double hashing: the two halves
    /// of one 64-bit hash, the second made odd).
    fn positions(&self, customer_id: &str) -> impl Iterator<Item = usize> {
        let hash = self.hasher.hash_one(customer_id);
        let (h1, h2) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        let m = (self.words * 64) as u64;
        (0..HASHES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inserted_customer_is_always_maybe_and_an_empty_filter_never() {
        let mut f = HeldFilter::new(1024, 1024);
        assert!(f.is_empty() && !f.may_hold("1"));
        for id in 0..5_000 {
            f.insert(&id.to_string());
        }
        assert!(!f.is_empty());
        assert!((0..5_000).all(|id| f.may_hold(&id.to_string())), "no false negative");
        assert_eq!(f.inserted(), 5_000);
        f.clear();
        assert!(f.is_empty() && !f.may_hold("1"));
    }

    #[test]
    fn false_positives_stay_rare_at_one_customer_per_eight_bits() {
        let n = 100_000;
        let mut f = HeldFilter::new(n, 0);
        for id in 0..n {
            f.insert(&format!("held-{id}"));
        }
        let wrong = (0..n).filter(|id| f.may_hold(&format!("other-{id}"))).count();
        assert!(wrong < n / 25, "{wrong} of {n} false positives");
    }

    #[test]
    fn a_forgotten_customer_is_no_until_inserted_again() {
        let mut f = HeldFilter::new(64, 1024);
        f.insert("7");
        f.forget("7");
        assert!(!f.may_hold("7"));
        f.insert("7");
        assert!(f.may_hold("7"));
    }

    #[test]
    fn the_exact_set_stays_within_its_bytes() {
        let mut f = HeldFilter::new(64, 10 * (CLEARED_ENTRY_BYTES + 4));
        for id in 1000..2000 {
            f.insert(&id.to_string());
            f.forget(&id.to_string());
            assert!(f.cleared_bytes <= f.max_cleared_bytes);
        }
        assert!(f.cleared.len() <= 10);
        // The newest forgotten are still known, the older ones are maybe again.
        assert!(!f.may_hold("1999"));
        assert!(f.may_hold("1000"));
    }

    #[test]
    fn the_exact_set_counts_each_customer_once_and_fills_to_its_last_byte() {
        let cost = CLEARED_ENTRY_BYTES + 2;
        let mut f = HeldFilter::new(64, 2 * cost);
        for id in ["10", "11"] {
            f.insert(id);
        }
        f.forget("10");
        f.forget("10");
        assert_eq!(f.cleared_bytes, cost, "forgotten twice, counted once");
        f.forget("11");
        assert_eq!(f.cleared_bytes, 2 * cost);
        assert!(!f.may_hold("10") && !f.may_hold("11"), "two entries fit exactly");
        f.insert("10");
        assert_eq!(f.cleared_bytes, cost, "inserted again: its entry and its bytes go");
        assert!(f.may_hold("10"));

        // With room to spare, nothing is evicted.
        let mut f = HeldFilter::new(64, 3 * cost);
        for id in ["20", "21"] {
            f.insert(id);
            f.forget(id);
        }
        assert!(!f.may_hold("20") && !f.may_hold("21"), "both still known");

        // An entry as large as the whole set still fits; a larger one is
        // not kept (it would only evict the rest).
        let mut f = HeldFilter::new(64, cost);
        f.insert("12");
        f.forget("12");
        assert!(!f.may_hold("12"));
        f.insert("123");
        f.forget("123");
        assert!(f.may_hold("123") && !f.may_hold("12"));
    }
}
