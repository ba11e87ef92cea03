//! The operations waiting for Customer.io, in commit order: coalescing,
//! batch selection under the per-customer order rule, and the accounting
//! that says which commit may be acknowledged. Pure (no I/O, no clock: the
//! caller passes the time), so every rule here has a unit test.
//!
//! Every queued operation gets the next sequence number. An operation is
//! *unfinished* from its push until its batch completes (accepted, or
//! dead-lettered); a commit recorded after sequence `s` may be acknowledged
//! once no operation numbered `s` or below is unfinished.
//!
//! # Commits
//! A commit's entry is the sequence number it waits for and its end LSN.
//! An operation merged into a waiting one (see below) takes no number: it
//! completes with the operation it joined, which was numbered earlier. So
//! a transaction whose operations all merged, or that had none, waits for
//! exactly what the commit before it waits for, and shares its entry, which
//! only moves on to the newer LSN. That entry is ackable only once every
//! operation numbered up to it completed, the joined ones included, so the
//! acknowledged LSN never passes an undelivered change. Hot rows behind a
//! stuck request therefore hold one entry per *queued* operation, not one
//! per transaction; the entries left count toward the memory budget
//! ([`Queue::pending_bytes`]), so reading pauses before they pile up.
//!
//! # Coalescing
//! While an operation waits, a later one of the same customer may merge into
//! it instead of queueing behind it, as [`super::merge`] says.
//!
//! The merged operation keeps the earlier one's place and sequence number,
//! so the later commit cannot be acknowledged before it is delivered.
//! Nothing merges across a barrier, nor moves an email claim ahead of its
//! release (see [`super::order`]).
//!
//! # Order
//! A batch never holds two operations of one customer, and a customer with a
//! batch in flight gets no other until that batch completes; an operation is
//! never sent while an earlier one of the same customer still waits. So one
//! customer's operations reach Customer.io in commit order, however many
//! batches are in flight. The same holds for operations sharing an email
//! key, and a claim of an email waits for an earlier release no one can
//! name ([`super::order`]), and so do one device token's operations across
//! customers. A relationship waits for its object's operations ahead of
//! it, waiting or in flight (`Order::follows`), and an object's operation
//! for the relationships to it ahead of it; relationships to one object do
//! not wait for each other. A barrier lets nothing after it go before
//! everything ahead of it has completed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use pgwire_replication::Lsn;
use tokio::time::Instant;

use super::batch::{self, EncodedItem, ENVELOPE_BYTES};
use super::merge;
use super::order::{self, HashMap, HashSet, Order};
use super::size::{
    estimate, fits_merged, in_flight, wire_estimate, COMMIT_ENTRY_BYTES, ENCODED_OVERHEAD,
};
use crate::customer::{CustomerOp, Released};
use crate::track_api::MAX_BATCH_BYTES;

/// Most waiting operations looked at to fill one batch, so a queue whose
/// head is held up by busy customers costs bounded work per batch.
const MAX_SCAN: usize = 10_000;

/// What waits: an operation as produced, or one already encoded that did
/// not fit in the previous batch.
#[derive(Debug)]
enum Waiting {
    Op(CustomerOp),
    Encoded(EncodedItem),
}

#[derive(Debug)]
struct Entry {
    waiting: Waiting,
    queued_at: Instant,
    /// Estimated memory held, for the budget.
    bytes: usize,
    /// Estimated size on the wire, to tell when a batch's worth waits.
    wire: usize,
    /// Its ties to other customers' operations (emails claimed or released, a device token).
    order: Order,
}

impl Entry {
    /// The customers it touches: one, or two for a merge. A barrier
    /// touches none (it is never asked).
    fn customers(&self) -> (&str, Option<&str>) {
        match &self.waiting {
            Waiting::Op(CustomerOp::Merge { primary, secondary }) => (primary, Some(secondary)),
            Waiting::Op(op) => (op.customer_id().unwrap_or(""), None),
            Waiting::Encoded(item) => (
                item.customers.first().map_or("", String::as_str),
                item.customers.get(1).map(String::as_str),
            ),
        }
    }

    /// Everything it is ordered by: its customers and its ordering keys (emails, device tokens).
    fn keys(&self) -> impl Iterator<Item = &str> {
        let (first, second) = self.customers();
        std::iter::once(first).chain(second).chain(self.order.keys.iter().map(String::as_str))
    }

    fn is_barrier(&self) -> bool {
        matches!(self.waiting, Waiting::Op(CustomerOp::Barrier))
    }
}

/// What `push` did with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued behind what waits.
    Queued,
    /// Merged into a waiting operation of the same customer: one call saved.
    Coalesced,
}

/// A batch taken out of the queue, to be sent.
#[derive(Debug, Default)]
pub struct Taken {
    /// The encoded items, in queue order.
    pub items: Vec<EncodedItem>,
    /// What to hand back to [`Queue::finish`] when the batch completes.
    pub ticket: Ticket,
}

/// Identifies a batch in flight: its operations, customers and ordering keys.
#[derive(Debug, Default, Clone)]
pub struct Ticket {
    seqs: Vec<u64>,
    customers: Vec<String>,
    bytes: usize,
    /// The transactions of its operations that may free an email no one
    /// can name, one entry per operation.
    unknown_releases: Vec<u64>,
    /// The object keys its relationships follow, one entry per operation.
    follows: Vec<String>,
}

/// Pending operations and commits, in order.
#[derive(Debug, Default)]
pub struct Queue {
    /// Boxed: a B-tree node holds eleven entries and is about half full
    /// (numbers only grow, so each split leaves the left node as it is), and
    /// an entry inline is 224 bytes, 400 a piece with the node's empty slots
    /// (and moved whole by every insert and remove in its node).
    entries: BTreeMap<u64, Box<Entry>>,
    /// Each customer's newest waiting operation (a coalescing target), and
    /// each email key's.
    last_of: HashMap<String, u64>,
    /// Sequence number of the newest barrier pushed.
    last_barrier: u64,
    /// Sequence number of the newest operation that may free an email no
    /// one can name (or that one merged into).
    last_unknown_release: u64,
    /// Such operations in flight, by transaction.
    unknown_releases_in_flight: HashMap<u64, usize>,
    /// Relationships in flight, by the object key they follow: that
    /// object's later operations wait for them.
    followers_in_flight: HashMap<String, usize>,
    /// Commits recorded so far: the transaction the next push belongs to.
    tx: u64,
    /// Customers and ordering keys with a batch in flight.
    busy: HashSet<String>,
    /// Operations pushed and not yet completed.
    unfinished: BTreeSet<u64>,
    /// Commits not yet acknowledged: (first sequence number after the
    /// commit, end LSN, how many commits it stands for). Commits with no
    /// operation queued between them share one entry (see "Commits" above).
    commits: VecDeque<(u64, Lsn, usize)>,
    next_seq: u64,
    queued_bytes: usize,
    queued_wire: usize,
    in_flight_bytes: usize,
    in_flight: usize,
}

impl Queue {
    /// Adds an operation, merging it into a waiting one of the same customer
    /// where the rules above allow.
    pub fn push(&mut self, op: CustomerOp, now: Instant) -> Pushed {
        self.push_releasing(op, &Released::Nothing, now)
    }

    /// [`Queue::push`] for an operation of a change that frees `released`
    /// (the old row's email), ordered before another customer's claim of it.
    pub fn push_releasing(&mut self, op: CustomerOp, released: &Released, now: Instant) -> Pushed {
        let mut order = Order::of(&op, released);
        if order.claims || order.unknown_release {
            order.txs.push(self.tx);
        }
        let order = match self.coalesce(&op, order) {
            // It completes with the operation it joined: no number of its own.
            Ok(()) => return Pushed::Coalesced,
            Err(order) => order,
        };
        self.next_seq += 1;
        let seq = self.next_seq;
        if let CustomerOp::Barrier = op {
            self.last_barrier = seq;
        }
        self.note_order(&order, seq);
        match &op {
            CustomerOp::Merge { primary, secondary } => {
                self.last_of.insert(primary.clone(), seq);
                self.last_of.insert(secondary.clone(), seq);
            }
            CustomerOp::Identify { id, .. }
            | CustomerOp::Delete { id }
            | CustomerOp::Suppress { id } => {
                self.last_of.insert(id.clone(), seq);
            }
            CustomerOp::Event(event) => {
                self.last_of.insert(event.customer.clone(), seq);
            }
            CustomerOp::AnonymousEvent(event) => {
                self.last_of.insert(event.anonymous_id.clone(), seq);
            }
            CustomerOp::Object(object) => {
                self.last_of.insert(object.key().to_owned(), seq);
            }
            CustomerOp::Relationship(relationship) => {
                self.last_of.insert(relationship.customer.clone(), seq);
            }
            CustomerOp::AddDevice(device) => {
                self.last_of.insert(device.customer.clone(), seq);
            }
            CustomerOp::DeleteDevice { customer, .. } => {
                self.last_of.insert(customer.clone(), seq);
            }
            CustomerOp::Barrier => {}
        }
        let (bytes, wire) = (estimate(&op) + order.bytes(), wire_estimate(&op));
        self.queued_bytes += bytes;
        self.queued_wire += wire;
        self.unfinished.insert(seq);
        let waiting = Waiting::Op(op);
        self.entries.insert(seq, Box::new(Entry { waiting, queued_at: now, bytes, wire, order }));
        Pushed::Queued
    }

    /// Records that the waiting operation `seq` is ordered by `order`.
    fn note_order(&mut self, order: &Order, seq: u64) {
        for key in &order.keys {
            self.last_of.insert(key.clone(), seq);
        }
        if order.unknown_release {
            self.last_unknown_release = self.last_unknown_release.max(seq);
        }
    }

    /// Merges `op` into the customer's newest waiting operation if allowed;
    /// `order` back if it did not.
    fn coalesce(&mut self, op: &CustomerOp, order: Order) -> Result<(), Order> {
        let id = match op {
            CustomerOp::Identify { id, .. }
            | CustomerOp::Delete { id }
            | CustomerOp::Suppress { id } => id,
            CustomerOp::AddDevice(device) => &device.customer,
            // Only an identify merges into an identify (below).
            CustomerOp::Object(object) => object.key(),
            CustomerOp::Merge { .. }
            | CustomerOp::Event(_)
            | CustomerOp::AnonymousEvent(_)
            | CustomerOp::Relationship(_)
            | CustomerOp::DeleteDevice { .. }
            | CustomerOp::Barrier => return Err(order),
        };
        let Some(&target) = self.last_of.get(id) else { return Err(order) };
        if target < self.last_barrier {
            return Err(order);
        }
        let Some(entry) = self.entries.get_mut(&target) else { return Err(order) };
        let Waiting::Op(waiting) = &mut entry.waiting else { return Err(order) };
        if !fits_merged(waiting, entry.wire, op) {
            // Merged, the identify would have to lose attributes to fit a
            // limit that each of the two respects alone: queue it behind.
            return Err(order);
        }
        if !order.txs.is_empty() && entry.order.txs.len() >= order::MAX_TXS {
            return Err(order);
        }
        let (last_of, unknown) = (&self.last_of, self.last_unknown_release);
        if !order::may_merge(waiting, target, op, &order, last_of, unknown) {
            return Err(order);
        }
        if !merge::into(waiting, op) {
            return Err(order);
        }
        entry.order.join(order);
        let Waiting::Op(merged) = &entry.waiting else { return Ok(()) };
        let (bytes, wire) = (estimate(merged) + entry.order.bytes(), wire_estimate(merged));
        self.queued_bytes = self.queued_bytes - entry.bytes + bytes;
        self.queued_wire = self.queued_wire - entry.wire + wire;
        entry.bytes = bytes;
        entry.wire = wire;
        let order = entry.order.clone();
        self.note_order(&order, target);
        Ok(())
    }

    /// Records a commit: once every operation pushed so far completes, its
    /// end LSN may be acknowledged. Shares the newest entry when no
    /// operation was queued since (see "Commits" above).
    pub fn commit(&mut self, end_lsn: Lsn) {
        self.tx += 1;
        let after = self.next_seq + 1;
        match self.commits.back_mut() {
            Some((last_after, lsn, count)) if *last_after == after => {
                *lsn = end_lsn;
                *count += 1;
            }
            _ => self.commits.push_back((after, end_lsn, 1)),
        }
    }

    /// The newest commit whose operations, and all before them, completed,
    /// with how many commits that covers; forgets them.
    pub fn ackable(&mut self) -> Option<(Lsn, usize)> {
        let first_unfinished = self.unfinished.first().copied().unwrap_or(u64::MAX);
        let mut newest = None;
        let mut count = 0;
        while let Some(&(after, lsn, commits)) = self.commits.front() {
            if after > first_unfinished {
                break;
            }
            self.commits.pop_front();
            newest = Some(lsn);
            count += commits;
        }
        newest.map(|lsn| (lsn, count))
    }

    /// Takes the next batch that may go now: at most `max_ops` operations of
    /// distinct customers, none busy or behind an earlier waiting operation
    /// of theirs, stopping at a barrier, within the request size limit.
    /// Items over the size limit lose their largest attributes
    /// ([`EncodedItem::trimmed`] says which). `None` if nothing may go.
    pub fn take_batch(&mut self, max_ops: usize) -> Option<Taken> {
        let chosen = loop {
            let chosen = self.choose(max_ops);
            match chosen.first().and_then(|seq| self.entries.get(seq)) {
                Some(entry) if entry.is_barrier() => {
                    // Nothing ahead of it and nothing in flight: it is passed.
                    let seq = chosen[0];
                    if let Some(barrier) = self.entries.remove(&seq) {
                        self.queued_bytes -= barrier.bytes;
                        self.queued_wire -= barrier.wire;
                    }
                    self.unfinished.remove(&seq);
                }
                _ => break chosen,
            }
        };
        let mut taken = Taken::default();
        // The request body's length with the items taken so far, as
        // `batch::body` writes it: the envelope, the items, a comma between two.
        let mut body_bytes = ENVELOPE_BYTES;
        for seq in chosen {
            let Some(entry) = self.entries.remove(&seq) else { continue };
            let entry = *entry;
            let item = match entry.waiting {
                Waiting::Op(op) => match batch::encode(op) {
                    Some(item) => item,
                    None => continue,
                },
                Waiting::Encoded(item) => item,
            };
            // An anonymous event is a request of its own (v1 has no batch):
            // alone when it leads, otherwise it leads the next one.
            let alone = item.route != batch::Route::Batch;
            let with_item = body_bytes + usize::from(!taken.items.is_empty()) + item.wire_bytes();
            // A body of exactly MAX_BATCH_BYTES is within the limit.
            if !taken.items.is_empty() && (alone || with_item > MAX_BATCH_BYTES) {
                // Full: it leads the next batch (and what was chosen after it waits).
                let bytes = ENCODED_OVERHEAD + item.wire_bytes() + entry.order.bytes();
                let wire = item.wire_bytes();
                self.queued_bytes = self.queued_bytes - entry.bytes + bytes;
                self.queued_wire = self.queued_wire - entry.wire + wire;
                let waiting = Waiting::Encoded(item);
                let (queued_at, order) = (entry.queued_at, entry.order);
                self.entries
                    .insert(seq, Box::new(Entry { waiting, queued_at, bytes, wire, order }));
                break;
            }
            body_bytes = with_item;
            for key in item.customers.iter().chain(&entry.order.keys) {
                if self.last_of.get(key) == Some(&seq) {
                    self.last_of.remove(key);
                }
                self.busy.insert(key.clone());
                taken.ticket.customers.push(key.clone());
            }
            if entry.order.unknown_release {
                taken.ticket.unknown_releases.extend(&entry.order.txs);
            }
            taken.ticket.follows.extend(entry.order.follows.iter().cloned());
            self.queued_bytes -= entry.bytes;
            self.queued_wire -= entry.wire;
            // In flight it holds its JSON (twice: the item and the body)
            // and its entries, not its waiting form (`size::in_flight`).
            // Never more than it was counted at while waiting: taking a
            // batch must not push the count past the budget the operations
            // were let in under (a wide row's JSON twice can exceed its
            // waiting estimate; it is counted as before). The record's
            // view of a known customer, read during delivery, is not
            // counted (nor was it before): it would push the count past
            // the budget after the operations were let in.
            let held_in_flight = in_flight(item.wire_bytes()) + entry.order.bytes();
            taken.ticket.bytes += held_in_flight.min(entry.bytes);
            taken.ticket.seqs.push(seq);
            taken.items.push(item);
            if alone {
                break;
            }
        }
        if taken.items.is_empty() {
            return None;
        }
        self.in_flight += 1;
        self.in_flight_bytes += taken.ticket.bytes;
        for tx in &taken.ticket.unknown_releases {
            *self.unknown_releases_in_flight.entry(*tx).or_default() += 1;
        }
        for key in &taken.ticket.follows {
            *self.followers_in_flight.entry(key.clone()).or_default() += 1;
        }
        Some(taken)
    }

    /// The waiting operations that may go together now, in order: of
    /// customers (and ordering keys) neither busy nor behind an earlier waiting
    /// operation of theirs, one per customer, no claim of an email behind an
    /// unknown release held back or in flight, up to the first barrier (or
    /// the barrier itself, when nothing is ahead of it or in flight). Reads
    /// only.
    fn choose(&self, max_ops: usize) -> Vec<u64> {
        let mut chosen = Vec::with_capacity(max_ops.min(self.entries.len()));
        let capacity = max_ops.min(self.entries.len());
        let mut in_batch: HashSet<&str> =
            HashSet::with_capacity_and_hasher(capacity, Default::default());
        let mut blocked: HashSet<&str> = HashSet::default();
        // Transactions with an unknown release in flight or held back: no
        // claim of theirs may go.
        let mut release_pending: HashSet<u64> =
            self.unknown_releases_in_flight.keys().copied().collect();
        // Objects with a relationship to them earlier in line (taken or
        // held) or in flight: their operations wait for it.
        let mut followed: HashSet<&str> = HashSet::default();
        for (index, (&seq, entry)) in self.entries.iter().enumerate().take(MAX_SCAN) {
            if chosen.len() >= max_ops {
                break;
            }
            if entry.is_barrier() {
                if index == 0 && self.in_flight == 0 {
                    // Only the barrier goes; what follows waits for the next call.
                    chosen.push(seq);
                }
                break;
            }
            let held =
                |c: &str| self.busy.contains(c) || in_batch.contains(c) || blocked.contains(c);
            let behind_release =
                entry.order.claims && entry.order.txs.iter().any(|tx| release_pending.contains(tx));
            // A relationship waits for its object's operations ahead, and
            // an object's operation for the relationships to it ahead.
            let follows_held = entry.order.follows.iter().any(|k| held(k));
            let followed_ahead = (!followed.is_empty() || !self.followers_in_flight.is_empty())
                && entry
                    .keys()
                    .any(|k| followed.contains(k) || self.followers_in_flight.contains_key(k));
            followed.extend(entry.order.follows.iter().map(String::as_str));
            if entry.keys().any(held) || behind_release || follows_held || followed_ahead {
                // Held up: so is every later operation of these customers
                // and emails, and every later claim of its transaction if
                // it may release one.
                blocked.extend(entry.keys());
                if entry.order.unknown_release {
                    release_pending.extend(&entry.order.txs);
                }
                continue;
            }
            in_batch.extend(entry.keys());
            chosen.push(seq);
        }
        chosen
    }

    /// A batch completed (accepted or dead-lettered): its customers may go again.
    pub fn finish(&mut self, ticket: &Ticket) {
        for seq in &ticket.seqs {
            self.unfinished.remove(seq);
        }
        for customer in &ticket.customers {
            self.busy.remove(customer);
        }
        self.in_flight -= 1;
        self.in_flight_bytes -= ticket.bytes;
        for tx in &ticket.unknown_releases {
            if let Some(count) = self.unknown_releases_in_flight.get_mut(tx) {
                *count -= 1;
                if *count == 0 {
                    self.unknown_releases_in_flight.remove(tx);
                }
            }
        }
        for key in &ticket.follows {
            if let Some(count) = self.followers_in_flight.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    self.followers_in_flight.remove(key);
                }
            }
        }
    }

    /// Whether an operation of `customer` waits or is in flight.
    pub fn touches(&self, customer: &str) -> bool {
        self.last_of.contains_key(customer) || self.busy.contains(customer)
    }

    /// Forgets everything (the stream broke: it will all come again).
    pub fn clear(&mut self) {
        *self = Self { next_seq: self.next_seq, ..Self::default() };
    }

    /// Operations waiting to be taken.
    pub fn waiting(&self) -> usize {
        self.entries.len()
    }

    /// Estimated memory held by the operations waiting to be taken.
    pub fn waiting_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Estimated encoded size of the operations waiting to be taken.
    pub fn waiting_wire_bytes(&self) -> usize {
        self.queued_wire
    }

    /// Estimated bytes held by waiting and in-flight operations and by the
    /// commits not yet acknowledged: what the memory budget counts.
    pub fn pending_bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes + self.commits.len() * COMMIT_ENTRY_BYTES
    }

    /// Batches in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// When the oldest waiting operation was pushed.
    pub fn oldest(&self) -> Option<Instant> {
        self.entries.values().next().map(|e| e.queued_at)
    }

    /// Whether a barrier waits, behind other operations or first in line:
    /// it should not wait for the linger time, nor should what follows it
    /// once it may pass.
    pub fn has_barrier(&self) -> bool {
        // Barriers pass in order, so one waits exactly when the newest does
        // (`last_barrier` is 0, no operation's number, before the first).
        self.entries.contains_key(&self.last_barrier)
    }

    /// Commits waiting to be acknowledged, as entries (consecutive commits
    /// with no operation queued between them share one).
    pub fn commit_entries(&self) -> usize {
        self.commits.len()
    }

    /// Operations pushed and not completed (waiting or in flight).
    pub fn unfinished(&self) -> usize {
        self.unfinished.len()
    }

    /// The number of the newest operation pushed (merged ones complete
    /// with an earlier one), to ask [`Queue::done_through`] about later.
    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether every operation numbered up to `seq` completed.
    pub fn done_through(&self, seq: u64) -> bool {
        self.unfinished.first().is_none_or(|first| *first > seq)
    }

    /// Whether every pushed operation completed.
    pub fn is_done(&self) -> bool {
        self.unfinished.is_empty()
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "queue_order_tests.rs"]
mod order_tests;
