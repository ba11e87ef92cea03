//! Size estimates of queued operations: the memory they hold (for the
//! budget) and their size on the wire (to fill a batch, and to keep a
//! merged identify within Customer.io's item limits). Pure.

use serde_json::{Map, Value};

use crate::customer::CustomerOp;
use crate::object_op::ObjectAction;
use crate::track_api::{MAX_ATTRIBUTES, MAX_BATCH_ITEM_BYTES};

/// Memory a waiting operation holds apart from its attributes: its queue
/// entry, the attribute map's first B-tree node (allocated whole, eleven
/// slots, however few attributes), the id and its copy in the coalescing
/// index: about what heaptrack finds (a 1,000,000-row transaction, `cargo
/// bench --bench delivery -- rss`); counting only the strings under-counted
/// it about 3.7 times. What the process holds beyond it is [`HELD_PER_OWN`].
pub(super) const OP_OVERHEAD: usize = 900;
/// Per attribute: its map slot, the key's and the value's allocations.
pub(super) const ATTRIBUTE_OVERHEAD: usize = 72;
/// An encoded item that waits for the next batch: its entry and buffers.
pub(super) const ENCODED_OVERHEAD: usize = 256;
/// An item in flight apart from its JSON: its entry in the delivery task
/// (0.13 KB), its place in the ticket and the busy set (0.19 KB), the
/// fingerprints of what it sets and its share of the record's write
/// (0.21 KB for the bench's rows): what heaptrack found per item of a
/// 100,000-row copy at 150 ms (BENCHMARKS.md, "The initial copy at 150 ms").
/// Not counted: the record's view of a known customer (`record::Whole`,
/// its fingerprints), read during delivery; see `Queue::take_batch`.
pub(super) const IN_FLIGHT_OVERHEAD: usize = 550;
/// A commit entry: its 24 bytes, twice over for the queue's spare capacity
/// (it grows by doubling).
pub(super) const COMMIT_ENTRY_BYTES: usize = 48;

/// What the process holds at the memory budget for each byte the pending
/// operations' own allocations (below) come to, as a fraction: the
/// allocator's slack (freed chunks a heap cannot hand back, and an arena per
/// thread that allocates: the stream's thread fills one while the delivery
/// tasks' threads fill others) and what a batch in flight holds beside its
/// operations (their JSON, the request body, the record's reads and
/// writes). Measured with `cargo bench --bench delivery -- rss` on
/// 2026-12-07 (BENCHMARKS.md): the operations' own allocations came to
/// 15.6 MB at the heap's peak (heaptrack), about what they were counted
/// at, yet the process grew 28 MiB above its idle RSS for the 16 MiB
/// counted: 1.75 times.
pub(super) const HELD_PER_OWN: (usize, usize) = (7, 4);

/// `own` bytes of an operation's allocations as the memory held for them
/// at the budget (see [`HELD_PER_OWN`]).
pub(super) fn held(own: usize) -> usize {
    own * HELD_PER_OWN.0 / HELD_PER_OWN.1
}

/// Estimated memory an operation holds while it waits.
pub(super) fn estimate(op: &CustomerOp) -> usize {
    held(own(op))
}

/// Estimated memory an item of `wire` bytes holds in flight: its JSON
/// twice (the item's, and its copy in the request body) and
/// [`IN_FLIGHT_OVERHEAD`]. Its waiting form (the attribute map, the queue
/// entry) is gone by then.
pub(super) fn in_flight(wire: usize) -> usize {
    held(IN_FLIGHT_OVERHEAD + 2 * wire)
}

/// The operation's own allocations.
fn own(op: &CustomerOp) -> usize {
    match op {
        CustomerOp::Identify { id, attributes, .. } => {
            OP_OVERHEAD
                + id.len()
                + attributes
                    .iter()
                    .map(|(k, v)| ATTRIBUTE_OVERHEAD + k.len() + value_bytes(v))
                    .sum::<usize>()
        }
        CustomerOp::Delete { id } | CustomerOp::Suppress { id } => OP_OVERHEAD + id.len(),
        CustomerOp::Merge { primary, secondary } => OP_OVERHEAD + primary.len() + secondary.len(),
        CustomerOp::Event(event) => {
            OP_OVERHEAD
                + event_bytes(
                    &event.customer,
                    &event.name,
                    &event.event_id,
                    &event.data,
                    ATTRIBUTE_OVERHEAD,
                )
                + event
                    .watch
                    .as_ref()
                    .map_or(0, |w| ATTRIBUTE_OVERHEAD + w.key.len() + value_bytes(&w.value))
        }
        CustomerOp::AnonymousEvent(event) => {
            OP_OVERHEAD
                + event_bytes(
                    &event.anonymous_id,
                    &event.name,
                    &event.event_id,
                    &event.data,
                    ATTRIBUTE_OVERHEAD,
                )
        }
        CustomerOp::Object(op) => super::object_items::object_own(op),
        CustomerOp::Relationship(op) => super::object_items::relationship_own(op),
        CustomerOp::AddDevice(device) => OP_OVERHEAD + device_bytes(device, ATTRIBUTE_OVERHEAD),
        CustomerOp::DeleteDevice { customer, token } => OP_OVERHEAD + customer.len() + token.len(),
        CustomerOp::Barrier => OP_OVERHEAD,
    }
}

/// Whether merging `later` into `waiting` (whose wire estimate is
/// `waiting_wire`) stays within Customer.io's per-item limits: at most 300
/// attributes, and an item of at most 32,000 bytes (with a margin for the
/// estimate). Checked for what merges with attributes (a person's or an
/// object's identify, an `add_device`); anything else merges freely.
pub(super) fn fits_merged(waiting: &CustomerOp, waiting_wire: usize, later: &CustomerOp) -> bool {
    let (Some(attributes), Some(more)) = (attributes_of(waiting), attributes_of(later)) else {
        return true;
    };
    let added = more.keys().filter(|name| !attributes.contains_key(*name)).count();
    attributes.len() + added <= MAX_ATTRIBUTES
        && waiting_wire + wire_estimate(later) <= MAX_BATCH_ITEM_BYTES - MERGE_MARGIN_BYTES
}

/// The attributes of a person's or an object's identify, or of a device.
fn attributes_of(op: &CustomerOp) -> Option<&Map<String, Value>> {
    match op {
        CustomerOp::Identify { attributes, .. } => Some(attributes),
        CustomerOp::AddDevice(device) => Some(&device.attributes),
        CustomerOp::Object(object) => match &object.action {
            ObjectAction::Identify { attributes } => Some(attributes),
            ObjectAction::Delete => None,
        },
        _ => None,
    }
}

/// Room left under the item limit when merging, for what the wire estimate
/// does not see (JSON escapes).
pub(super) const MERGE_MARGIN_BYTES: usize = 2_000;

/// Roughly the operation's size as a batch item: its strings plus JSON syntax.
pub(super) fn wire_estimate(op: &CustomerOp) -> usize {
    const ITEM: usize = 64;
    match op {
        CustomerOp::Identify { id, attributes, .. } => {
            ITEM + 24
                + id.len()
                + attributes.iter().map(|(k, v)| 6 + k.len() + value_bytes(v)).sum::<usize>()
        }
        CustomerOp::Delete { id } | CustomerOp::Suppress { id } => ITEM + id.len(),
        CustomerOp::Merge { primary, secondary } => ITEM + 40 + primary.len() + secondary.len(),
        CustomerOp::Event(event) => {
            ITEM + 80 + event_bytes(&event.customer, &event.name, &event.event_id, &event.data, 6)
        }
        CustomerOp::AnonymousEvent(event) => {
            ITEM + 80
                + event_bytes(&event.anonymous_id, &event.name, &event.event_id, &event.data, 6)
        }
        CustomerOp::Object(op) => super::object_items::object_wire(op),
        CustomerOp::Relationship(op) => super::object_items::relationship_wire(op),
        CustomerOp::AddDevice(device) => {
            ITEM + 80 + device.platform.len() + device_bytes(device, 6)
        }
        CustomerOp::DeleteDevice { customer, token } => ITEM + 40 + customer.len() + token.len(),
        CustomerOp::Barrier => 0,
    }
}

/// A device's strings and attributes, with `per_entry` bytes for each
/// attribute (its platform is a constant: held nowhere).
fn device_bytes(device: &crate::customer::Device, per_entry: usize) -> usize {
    device.customer.len()
        + device.token.len()
        + device.attributes.iter().map(|(k, v)| per_entry + k.len() + value_bytes(v)).sum::<usize>()
}

/// An event's strings and data, with `per_entry` bytes for each data entry.
pub(super) fn event_bytes(
    key: &str,
    name: &str,
    event_id: &str,
    data: &serde_json::Map<String, Value>,
    per_entry: usize,
) -> usize {
    key.len()
        + name.len()
        + event_id.len()
        + data.iter().map(|(k, v)| per_entry + k.len() + value_bytes(v)).sum::<usize>()
}

pub(super) fn value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::Array(a) => a.iter().map(|v| 32 + value_bytes(v)).sum(),
        Value::Object(o) => {
            o.iter().map(|(k, v)| ATTRIBUTE_OVERHEAD + k.len() + value_bytes(v)).sum()
        }
    }
}
