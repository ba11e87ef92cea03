//! The operations of a person's id change (`on_id_change`). Pure.

use serde_json::{Map, Value as Json};

use super::{identify, EMAIL};
use crate::config::OnIdChange;
use crate::customer::CustomerOp;

/// The operations of an id change. In workspaces that identify people by
/// email too, Customer.io refuses to give a second person an email the old
/// person still has (an "Attribute Update Failure" on an HTTP 200), so the
/// email must reach the new person only once the old one is gone:
/// - merge: identify the new id with its non-NULL attributes except `email`,
///   merge the old person into it (the primary must exist first), then
///   identify `email` and the NULL attributes (as `null`, so the merge does
///   not bring back values the row no longer has);
/// - delete_old: delete the old person, a barrier (the two touch different
///   customers, and a batch's order is not guaranteed), then identify the new
///   id with its non-NULL attributes.
pub(super) fn id_change(
    on_id_change: OnIdChange,
    old_id: String,
    new_id: String,
    attributes: Map<String, Json>,
    timestamp: i64,
    ops: &mut Vec<CustomerOp>,
) {
    let (after, before): (Map<String, Json>, Map<String, Json>) =
        attributes.into_iter().partition(|(name, value)| name == EMAIL || value.is_null());
    match on_id_change {
        OnIdChange::Merge => {
            ops.push(identify(new_id.clone(), before, timestamp));
            ops.push(CustomerOp::Merge { primary: new_id.clone(), secondary: old_id });
            if !after.is_empty() {
                ops.push(identify(new_id, after, timestamp));
            }
        }
        OnIdChange::DeleteOld => {
            let mut attributes = before;
            attributes.extend(after.into_iter().filter(|(_, value)| !value.is_null()));
            ops.push(CustomerOp::Delete { id: old_id });
            ops.push(CustomerOp::Barrier);
            ops.push(identify(new_id, attributes, timestamp));
        }
    }
}
