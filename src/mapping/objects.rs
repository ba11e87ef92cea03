//! `[[objects]]` and `[[relationships]]` rows as Customer.io operations. Pure.
//!
//! An object table is mapped as a person table is (the same diff, NULLs,
//! soft deletes, filters; an id change deletes the old object and
//! identifies the new one), then its person operations become the object's
//! ([`as_object_ops`]): an identify an object identify, a delete an object
//! delete. A removal that a person table sends only if Customer.io may hold
//! the person (no old row: [`Mapped::if_held`]) is sent: the record of what
//! Customer.io accepted keeps people only, and deleting an object
//! Customer.io lacks changes nothing.
//!
//! A relationship table ([`relationship`]):
//!
//! | change | operations |
//! |---|---|
//! | INSERT | add the relationship with every mapped attribute (NULL as `null`) |
//! | UPDATE, person or object changed (the old row names both) | delete the old relationship, add the new one |
//! | UPDATE, same person and object | add again with the changed attributes (FULL identity; none changed: nothing), or every one (no old row) |
//! | DELETE | delete the relationship; an old row not naming both: skipped (`relationship_unknown`) |

use crate::change::{Row, RowChange, RowOp};
use crate::config::SyncConfig;
use crate::customer::{
    CustomerOp, ObjectAction, ObjectOp, RelationshipAction, RelationshipOp, Released,
};

use super::{attributes, customer_id, Mapped, SkipReason};

/// The person operations of an `[[objects]]` table's change as the
/// operations on objects of `object_type_id` they stand for.
pub(super) fn as_object_ops(object_type_id: &str, mut mapped: Mapped) -> Mapped {
    let mut ops = std::mem::take(&mut mapped.ops);
    if let Some((held, _)) = mapped.if_held.take() {
        ops.extend(held);
        mapped.skipped = None;
    }
    let object = |id, action| CustomerOp::Object(ObjectOp::new(object_type_id, id, action));
    mapped.ops = ops
        .into_iter()
        .filter_map(|op| match op {
            CustomerOp::Identify { id, attributes, .. } => {
                Some(object(id, ObjectAction::Identify { attributes }))
            }
            CustomerOp::Delete { id } | CustomerOp::Suppress { id } => {
                Some(object(id, ObjectAction::Delete))
            }
            CustomerOp::Barrier => Some(CustomerOp::Barrier),
            // An object table has no events, and its id changes delete.
            _ => None,
        })
        .collect();
    // Objects free no email and are never re-sent with NULLs by the breaker.
    mapped.released = Released::Nothing;
    mapped.absent.clear();
    if mapped.ops.is_empty() && mapped.skipped.is_none() {
        mapped.skipped = Some(SkipReason::NoChange);
    }
    mapped
}

/// The person and object a relationship row names.
struct Ends {
    customer: Option<usize>,
    object: Option<usize>,
}

impl Ends {
    fn of(row: &Row, ends: &Ends) -> Option<(String, String)> {
        let customer = customer_id(row.get(ends.customer?)?)?;
        let object = customer_id(row.get(ends.object?)?)?;
        Some((customer, object))
    }
}

/// A row's key as backfills read it (`source::reader`): the one column's
/// text, or the texts of several as a JSON array; `None` if one is not a
/// usable id.
pub(super) fn key_of(row: &Row, index: &[usize]) -> Option<String> {
    let texts: Option<Vec<String>> = index.iter().map(|&i| customer_id(row.get(i)?)).collect();
    match texts?.as_slice() {
        [one] => Some(one.clone()),
        several => serde_json::to_string(several).ok(),
    }
}

/// A `[[relationships]]` table's change (see the module doc).
pub(super) fn relationship(
    sync: &SyncConfig,
    object_type_id: &str,
    object_id_column: &str,
    change: &RowChange,
) -> Mapped {
    let table = &*change.table;
    let ends = Ends {
        customer: table.column_index(&sync.id_column),
        object: table.column_index(object_id_column),
    };
    let op = |(customer, object_id): (String, String), action| {
        let object_type_id = object_type_id.to_owned();
        CustomerOp::Relationship(RelationshipOp { customer, object_type_id, object_id, action })
    };
    let mut out = Mapped::default();
    let all =
        |new: &Row, out: &mut Mapped| attributes(sync, table, new, None, true, &mut out.dropped);
    match &change.op {
        RowOp::Insert { new } => match Ends::of(new, &ends) {
            Some(pair) => {
                let attributes = all(new, &mut out);
                out.ops.push(op(pair, RelationshipAction::Add { attributes }));
            }
            None => out.skipped = Some(SkipReason::InvalidId),
        },
        RowOp::Update { old, old_is_key_only, new } => {
            let old_pair = old.as_ref().and_then(|o| Ends::of(o, &ends));
            let Some(pair) = Ends::of(new, &ends) else {
                // The row relates no one any more (a side set to NULL): the
                // relationship it held, if known, goes.
                match old_pair {
                    Some(old_pair) => out.ops.push(op(old_pair, RelationshipAction::Delete)),
                    None => out.skipped = Some(SkipReason::InvalidId),
                }
                return out;
            };
            match old_pair {
                Some(old_pair) if old_pair != pair => {
                    out.ops.push(op(old_pair, RelationshipAction::Delete));
                    let attributes = all(new, &mut out);
                    out.ops.push(op(pair, RelationshipAction::Add { attributes }));
                }
                _ => {
                    let full_old = old.as_ref().filter(|_| !*old_is_key_only);
                    let attributes = attributes(sync, table, new, full_old, true, &mut out.dropped);
                    if full_old.is_some() && attributes.is_empty() {
                        out.skipped = Some(SkipReason::NoChange);
                    } else {
                        out.ops.push(op(pair, RelationshipAction::Add { attributes }));
                    }
                }
            }
        }
        RowOp::Delete { old } => match Ends::of(old, &ends) {
            Some(pair) => out.ops.push(op(pair, RelationshipAction::Delete)),
            None => out.skipped = Some(SkipReason::RelationshipUnknown),
        },
    }
    out
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
