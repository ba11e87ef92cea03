//! How a later operation merges into a waiting one of the same customer
//! (coalescing). Pure; the queue decides whether they may merge at all
//! (the same customer, no barrier or ordering key between them, within the
//! item limits: `super::queue`, `super::order`, `super::size`).
//!
//! While an operation waits, a later one of the same customer (or object)
//! may merge into it instead of queueing behind it:
//! - identify after identify: one identify with both attribute sets, the
//!   later value winning, at the later commit's timestamp;
//! - delete or suppress after identify: it replaces the identify (the person
//!   is going away, the attributes are moot); delete after delete: one
//!   delete; a suppress after a delete replaces it, a delete after a
//!   suppress joins it (suppress deletes too), suppress after suppress: one;
//! - an event never merges and nothing merges into one: each is its own
//!   call, after what came before it and before what comes after;
//! - an object's identify after its identify: one, as for people; an
//!   object's delete never merges (moved ahead, it would overtake a
//!   relationship to the object added in between), nor does a
//!   relationship's operation;
//! - an `add_device` after an `add_device` of the same customer and token,
//!   with no other call on that token between them: one, the later with
//!   both's attributes (Customer.io upserts by token);
//! - anything after a delete, and anything touching a merge: queued behind it.

use crate::customer::CustomerOp;
use crate::object_op::ObjectAction;

/// Merges `later` into `waiting` as the rules above say; `false`, leaving
/// `waiting` as it was, when they do not merge.
pub(super) fn into(waiting: &mut CustomerOp, later: &CustomerOp) -> bool {
    match (waiting, later) {
        (
            CustomerOp::Identify { attributes, timestamp, .. },
            CustomerOp::Identify { attributes: later, timestamp: later_ts, .. },
        ) => {
            for (name, value) in later {
                attributes.insert(name.clone(), value.clone());
            }
            *timestamp = (*timestamp).max(*later_ts);
        }
        (
            waiting @ (CustomerOp::Identify { .. } | CustomerOp::Delete { .. }),
            CustomerOp::Suppress { .. },
        )
        | (waiting @ CustomerOp::Identify { .. }, CustomerOp::Delete { .. }) => {
            *waiting = later.clone();
        }
        (
            CustomerOp::Delete { .. } | CustomerOp::Suppress { .. },
            CustomerOp::Delete { .. } | CustomerOp::Suppress { .. },
        ) => {}
        (CustomerOp::Object(waiting), CustomerOp::Object(later)) => {
            let (
                ObjectAction::Identify { attributes },
                ObjectAction::Identify { attributes: more },
            ) = (&mut waiting.action, &later.action)
            else {
                return false;
            };
            for (name, value) in more {
                attributes.insert(name.clone(), value.clone());
            }
        }
        // Customer.io upserts a device by token, merging attributes:
        // two adds of one token are the later with both's attributes.
        (CustomerOp::AddDevice(waiting), CustomerOp::AddDevice(later))
            if waiting.token == later.token =>
        {
            let mut attributes = std::mem::take(&mut waiting.attributes);
            attributes.extend(later.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
            **waiting = crate::customer::Device { attributes, ..(**later).clone() };
        }
        _ => return false,
    }
    true
}
