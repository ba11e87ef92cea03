//! The holds of the transaction being read that are not written yet: at
//! most a chunk of them, by bytes. The breaker writes a full chunk to
//! `ciosync.held_deletes` as `pending` (see [`super::breaker`]) and empties
//! it, so a transaction of any size holds one chunk in memory.

use std::collections::HashMap;

use super::store::{Action, Hold};

/// What one buffered hold costs besides its id (stored twice: in the hold
/// and as its index key), about: the hold and an index entry.
const HOLD_BYTES: usize = std::mem::size_of::<Hold>() + 48;

/// The open transaction's holds; see the module doc.
#[derive(Debug)]
pub struct OpenHolds {
    /// Not written yet, one per customer (the last removal is the one kept).
    buffer: Vec<Hold>,
    /// Where each customer's hold is in `buffer`.
    index: HashMap<String, usize>,
    bytes: usize,
    max_bytes: usize,
    /// Holds of this transaction already written as `pending`.
    written: u64,
}

impl OpenHolds {
    /// An empty transaction whose chunk is full at `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self { buffer: Vec::new(), index: HashMap::new(), bytes: 0, max_bytes, written: 0 }
    }

    /// Adds a hold (replacing the customer's earlier one in the chunk);
    /// returns whether the chunk is full and should be written.
    pub fn hold(&mut self, hold: Hold) -> bool {
        match self.index.get(&hold.customer_id) {
            Some(&i) => self.buffer[i] = hold,
            None => {
                self.bytes += HOLD_BYTES + 2 * hold.customer_id.len();
                self.index.insert(hold.customer_id.clone(), self.buffer.len());
                self.buffer.push(hold);
            }
        }
        self.bytes >= self.max_bytes
    }

    /// A later operation touched the customer: its buffered delete is
    /// superseded (a suppress never is). One already written is the
    /// table's to supersede.
    pub fn supersede(&mut self, customer_id: &str) {
        if let Some(&i) = self.index.get(customer_id) {
            if self.buffer[i].action == Action::Delete {
                self.buffer[i].superseded = true;
            }
        }
    }

    /// The chunk, to be written.
    pub fn chunk(&self) -> &[Hold] {
        &self.buffer
    }

    /// The chunk was written as `pending`: empties it.
    pub fn chunk_written(&mut self) {
        self.written += self.buffer.len() as u64;
        self.empty_chunk();
    }

    /// Whether any hold was written as `pending` in this transaction: then
    /// its commit moves them, else it stores the chunk directly.
    pub fn spilled(&self) -> bool {
        self.written > 0
    }

    /// Whether this transaction holds anything, written or not.
    pub fn holds_any(&self) -> bool {
        self.spilled() || !self.buffer.is_empty()
    }

    /// Starts over for the next transaction (after its commit, or when the
    /// stream broke and it will come again).
    pub fn reset(&mut self) {
        self.written = 0;
        self.empty_chunk();
    }

    /// The bytes the chunk holds now, about.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn empty_chunk(&mut self) {
        self.buffer.clear();
        self.index.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(id: &str, action: Action) -> Hold {
        Hold { customer_id: id.into(), action, superseded: false }
    }

    #[test]
    fn the_chunk_fills_by_bytes_and_empties_when_written() {
        let mut open = OpenHolds::new(10 * (HOLD_BYTES + 2 * 3));
        let full: Vec<bool> =
            (100..110).map(|id| open.hold(hold(&id.to_string(), Action::Delete))).collect();
        assert_eq!(full.iter().filter(|f| **f).count(), 1, "full at the tenth: {full:?}");
        assert!(full[9]);
        assert!(open.holds_any() && !open.spilled());
        open.chunk_written();
        assert!(open.chunk().is_empty() && open.bytes() == 0);
        assert!(open.spilled() && open.holds_any());
        open.reset();
        assert!(!open.holds_any());
    }

    #[test]
    fn the_last_removal_of_a_customer_is_kept_and_only_a_delete_is_superseded() {
        let mut open = OpenHolds::new(1 << 20);
        open.hold(hold("1", Action::Delete));
        open.hold(hold("2", Action::Suppress));
        let bytes = open.bytes();
        open.supersede("1");
        open.supersede("2");
        assert_eq!(open.chunk()[0], Hold { superseded: true, ..hold("1", Action::Delete) });
        assert_eq!(open.chunk()[1], hold("2", Action::Suppress));
        // Deleted again after the re-insert: held again, not counted twice.
        open.hold(hold("1", Action::Delete));
        assert_eq!(open.chunk(), &[hold("1", Action::Delete), hold("2", Action::Suppress)]);
        assert_eq!(open.bytes(), bytes);
    }
}
