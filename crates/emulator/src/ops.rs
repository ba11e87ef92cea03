//! One operation on the workspace, already validated: what v1 routes and
//! v2 items both turn into, and what the model (`model::World`) applies.

use ciosync_track_api::Identifier;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::devices::DeviceOp;
use crate::objects::{ObjectLink, ObjectOp};

/// One operation on the workspace, already validated. v1 routes and v2
/// items both turn into these.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create or update a person.
    Identify {
        /// Who, from the path (v1) or `identifiers` (v2).
        target: Identifier,
        /// Attributes without the control keys `_timestamp` and `_update`.
        attributes: Map<String, Value>,
        /// The change's Unix seconds (`_timestamp` / v2 `timestamp`), or
        /// the receive time when the client sent none.
        timestamp: i64,
        /// `_update: true`: never create.
        update_only: bool,
    },
    /// Delete a person.
    Delete { target: Identifier },
    /// Delete a person and block its identifiers.
    Suppress { target: Identifier },
    /// Unblock one identifier.
    Unsuppress { target: Identifier },
    /// Merge `secondary` into `primary` and delete `secondary`.
    Merge { primary: Identifier, secondary: Identifier },
    /// An event for a person.
    Event { target: Identifier, event: StoredEvent },
    /// An event without a person (`POST /api/v1/events`).
    AnonymousEvent { event: StoredEvent },
    /// Add (`add`) or remove a person's relationships to objects: v2 person
    /// `add_relationships`/`delete_relationships`, and the
    /// `cio_relationships` of a v2 or v1 person identify.
    Relationships {
        target: Identifier,
        links: Vec<ObjectLink>,
        add: bool,
        /// Whether an unknown `id`/`email`/`phone` creates the person; false
        /// after an identify in the same item, which decided that already.
        create: bool,
    },
    /// An object item: identify, delete, add or delete relationships.
    Object(ObjectOp),
    /// A person's device: add (or update) or delete.
    Device(DeviceOp),
    /// The operations of one item, applied in order and refused together
    /// (an identify with `cio_relationships`).
    Many(Vec<Op>),
    /// A valid item the emulator accepts without modelling (deliveries,
    /// the anonymous side of an object `identify_anonymous`): kept for
    /// inspection only. `person` is who it is for, if anyone, so faults can
    /// refuse it by person.
    Unmodelled { item: Value, person: Option<Identifier> },
}

impl Op {
    /// The people this operation names, each with the v2 field that names
    /// it (`identifiers`, `primary` and `secondary` for a merge,
    /// `cio_relationships` for the people an object item relates). Fault
    /// injection refuses operations by these.
    pub fn people(&self) -> Vec<(&'static str, &Identifier)> {
        match self {
            Op::Identify { target, .. }
            | Op::Delete { target }
            | Op::Suppress { target }
            | Op::Unsuppress { target }
            | Op::Event { target, .. }
            | Op::Relationships { target, .. } => vec![("identifiers", target)],
            Op::Merge { primary, secondary } => {
                vec![("primary", primary), ("secondary", secondary)]
            }
            Op::Device(device) => vec![("identifiers", device.target())],
            Op::Object(object) => {
                object.people().into_iter().map(|person| ("cio_relationships", person)).collect()
            }
            Op::Many(ops) => ops.iter().flat_map(Op::people).collect(),
            Op::Unmodelled { person: Some(person), .. } => vec![("identifiers", person)],
            Op::AnonymousEvent { .. } | Op::Unmodelled { person: None, .. } => Vec::new(),
        }
    }
}

/// One event as stored on a person (or in the anonymous list).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    /// Event name, trimmed of leading and trailing spaces.
    pub name: String,
    /// `event`, `page` or `screen`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The deduplication ULID, if the client sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unix seconds: the client's `timestamp`, else the receive time.
    pub timestamp: i64,
    /// v1 `data` or v2 `attributes`.
    pub data: Map<String, Value>,
    /// Only on anonymous events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
}
