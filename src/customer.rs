//! What ciosync asks Customer.io to do: the mapper's output, the sink's input.

use serde_json::{Map, Value};

pub use crate::object_op::{ObjectAction, ObjectOp, RelationshipAction, RelationshipOp};

/// One operation on one Customer.io person.
///
/// Operations on the same customer must reach Customer.io in the order they
/// are produced (commit order). Every operation is safe to repeat: an identify
/// sets the same values again, a delete of a missing person changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerOp {
    /// Create or update the person `id` with these attributes. A `null`
    /// value asks Customer.io to unset the attribute. `timestamp` is the
    /// commit time (Unix seconds), so Customer.io keeps the later of two close
    /// updates.
    Identify { id: String, attributes: Map<String, Value>, timestamp: i64 },
    /// Delete the person `id`.
    Delete { id: String },
    /// Delete the person `id` and block the id, so later calls do not
    /// re-create them (for erasure requests: `delete_action = "suppress"`).
    Suppress { id: String },
    /// A named event for the person `id` (it triggers campaigns).
    Event(Event),
    /// An event of someone not known as a person yet, by an anonymous id
    /// (a cookie, a device id); Customer.io attaches it to the person later
    /// identified with that `anonymous_id` (event merging).
    AnonymousEvent(AnonymousEvent),
    /// Merge `secondary` into `primary` (which must exist), deleting `secondary`.
    Merge { primary: String, secondary: String },
    /// An operation on a Customer.io object (`[[objects]]`), ordered by the
    /// object's key (see [`crate::object_op`]).
    Object(ObjectOp),
    /// A person's relationship to an object added or removed
    /// (`[[relationships]]`), ordered with the person's other operations.
    Relationship(RelationshipOp),
    /// Add a push device to the person `Device::customer`, or update it (by
    /// token): `add_device`.
    AddDevice(Box<Device>),
    /// Remove the person `customer`'s device with this token: `delete_device`.
    DeleteDevice { customer: String, token: String },
    /// Everything before must be accepted before anything after is sent.
    /// Needed where two customers' operations depend on each other (an email
    /// moving from one person to another), since Customer.io does not promise
    /// to apply the items of one batch in order.
    Barrier,
}

impl CustomerOp {
    /// The customer whose order this operation belongs to; `None` for a barrier.
    pub fn customer_id(&self) -> Option<&str> {
        match self {
            Self::Identify { id, .. } | Self::Delete { id } | Self::Suppress { id } => Some(id),
            Self::Event(event) => Some(&event.customer),
            // Ordered per anonymous id, like a customer's operations.
            Self::AnonymousEvent(event) => Some(&event.anonymous_id),
            Self::Merge { primary, .. } => Some(primary),
            Self::Object(op) => Some(op.key()),
            Self::Relationship(op) => Some(&op.customer),
            Self::AddDevice(device) => Some(&device.customer),
            Self::DeleteDevice { customer, .. } => Some(customer),
            Self::Barrier => None,
        }
    }

    /// A short name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Identify { .. } => "identify",
            Self::Delete { .. } => "delete",
            Self::Suppress { .. } => "suppress",
            Self::Event(event) if event.only_records() => "watch",
            Self::Event(_) | Self::AnonymousEvent(_) => "event",
            Self::Merge { .. } => "merge",
            Self::Object(op) => op.kind(),
            Self::Relationship(op) => op.kind(),
            Self::AddDevice(_) => "add_device",
            Self::DeleteDevice { .. } => "delete_device",
            Self::Barrier => "barrier",
        }
    }
}

/// A push device of one person, as Customer.io's v2 `add_device` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// The person's id.
    pub customer: String,
    /// The device token.
    pub token: String,
    /// `ios` or `android`.
    pub platform: &'static str,
    /// When the device was last used, Unix seconds (`None`: Customer.io
    /// takes the time it receives the call).
    pub last_used: Option<i64>,
    /// Device attributes, every value a string.
    pub attributes: Map<String, Value>,
}

/// An event for one person, as Customer.io's v2 `event` action takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The person's id.
    pub customer: String,
    /// The event's name (what campaigns trigger on).
    pub name: String,
    /// A ULID derived from the event-table row (its table, primary key and
    /// name) or, for a change-derived event or a table without a primary
    /// key, from where the event came from in the WAL, so a replayed
    /// transaction or event table sends the same id and Customer.io ignores
    /// the repeat (see `mapping::events`).
    pub event_id: String,
    /// When it happened, Unix seconds (the row's own time where configured).
    pub timestamp: i64,
    /// The event's data (`attributes` in the v2 API).
    pub data: Map<String, Value>,
    /// For a change-derived event decided against the record of what
    /// Customer.io accepted (the old row is not sent): the column's new
    /// value, compared with the value recorded before, just before sending.
    pub watch: Option<Box<Watch>>,
}

/// A `[[sync.events]]` event whose old value comes from the record (see
/// `crate::record`), not from the WAL: under DEFAULT or INDEX identity an
/// UPDATE carries no old row. The sink sends it only if the record holds an
/// earlier value of the column and that value differs; either way the
/// record then holds the new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// Where the record keeps the column's value for this event: the
    /// event's name and column.
    pub key: String,
    /// The column's new value, as event data carries it (`null` for NULL).
    pub value: Value,
    /// Whether the event may fire: `false` only records the value (an
    /// insert, or a `when` column changed to NULL).
    pub fires: bool,
    /// Whether the data gets `from`, the value recorded before
    /// (`when_changed`); the record then keeps the value itself, not only
    /// its fingerprint.
    pub with_from: bool,
    /// Where the change is in the WAL (commit LSN, index in the
    /// transaction), kept with the value: a change at or before the one the
    /// record's value came from is a replay (the slot was not acknowledged
    /// that far) and decides nothing. `(0, 0)` for a row read by the
    /// initial copy or a backfill, which only records a value the record
    /// lacks.
    pub at: (u64, u32),
}

impl Event {
    /// Whether this only records a column's value and is never sent.
    pub fn only_records(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| !w.fires)
    }
}

/// An event by an anonymous id (Track API v1 `POST /api/v1/events`, which
/// v2's batch has no form for).
#[derive(Debug, Clone, PartialEq)]
pub struct AnonymousEvent {
    pub anonymous_id: String,
    pub name: String,
    /// A ULID, as for [`Event::event_id`].
    pub event_id: String,
    pub timestamp: i64,
    pub data: Map<String, Value>,
}

/// The email an operation frees in Customer.io: the one the row held before
/// the change (its old row's `email`), so the sink can send that release
/// before another customer's identify claims the same email (Customer.io
/// refuses to give a second person an email the first still has).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Released {
    /// Nothing: an insert, a table without `email`, an old row whose email was NULL.
    #[default]
    Nothing,
    /// This email (REPLICA IDENTITY FULL: the old row is known), as the
    /// old row's text: read only when an operation frees it (issue 24).
    Email(bytes::Bytes),
    /// Perhaps an email, which one is not known: the old row is not sent
    /// (DEFAULT identity).
    Unknown,
}
