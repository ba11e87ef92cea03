//! Objects and relationships as `/api/v2/batch` items, and their size
//! estimates. Pure. The shapes, from the published Track API document
//! (`object_identify`, `object_delete`, `person_add_relationships`,
//! `person_delete_relationships`, `object_relationships`):
//!
//! ```json
//! {"type":"object","identifiers":{"object_type_id":"1","object_id":"acme"},"action":"identify","attributes":{"plan":"pro"}}
//! {"type":"object","identifiers":{"object_type_id":"1","object_id":"acme"},"action":"delete"}
//! {"type":"person","identifiers":{"id":"42"},"action":"add_relationships",
//!  "cio_relationships":[{"identifiers":{"object_type_id":"1","object_id":"acme"},"relationship_attributes":{"role":"admin"}}]}
//! {"type":"person","identifiers":{"id":"42"},"action":"delete_relationships",
//!  "cio_relationships":[{"identifiers":{"object_type_id":"1","object_id":"acme"}}]}
//! ```
//!
//! An object identify has no `timestamp` in the document, so none is sent.

use serde_json::{json, Map, Value};

use super::batch::{EncodedItem, Route};
use super::size::{value_bytes, ATTRIBUTE_OVERHEAD, OP_OVERHEAD};
use crate::customer::{ObjectAction, ObjectOp, RelationshipAction, RelationshipOp};
use crate::track_api::{attribute_value_bytes, MAX_BATCH_ITEM_BYTES};

/// The item of an object operation, its largest attributes dropped while
/// it is over Customer.io's item limit.
pub(super) fn encode_object(op: ObjectOp) -> EncodedItem {
    let kind = op.kind();
    let identifiers = json!({"object_type_id": op.object_type_id, "object_id": op.object_id});
    let customers = vec![op.key().to_owned()];
    let (json, trimmed) = match op.action {
        ObjectAction::Identify { attributes } => within_limit(attributes, |attributes| {
            json!({"type": "object", "identifiers": identifiers, "action": "identify",
                   "attributes": attributes})
        }),
        ObjectAction::Delete => {
            let item = json!({"type": "object", "identifiers": identifiers, "action": "delete"});
            (serde_json::to_vec(&item).unwrap_or_default(), Vec::new())
        }
    };
    EncodedItem { route: Route::Batch, kind, customers, json, trimmed, watch: None }
}

/// The person item adding or removing one relationship.
pub(super) fn encode_relationship(op: RelationshipOp) -> EncodedItem {
    let kind = op.kind();
    let object = json!({"object_type_id": op.object_type_id, "object_id": op.object_id});
    let person = json!({"id": op.customer});
    let (json, trimmed) = match op.action {
        RelationshipAction::Add { attributes } => within_limit(attributes, |attributes| {
            let mut relationship = json!({"identifiers": object});
            if !attributes.is_empty() {
                relationship["relationship_attributes"] = Value::Object(attributes.clone());
            }
            json!({"type": "person", "identifiers": person, "action": "add_relationships",
                   "cio_relationships": [relationship]})
        }),
        RelationshipAction::Delete => {
            let item = json!({"type": "person", "identifiers": person,
                              "action": "delete_relationships",
                              "cio_relationships": [{"identifiers": object}]});
            (serde_json::to_vec(&item).unwrap_or_default(), Vec::new())
        }
    };
    EncodedItem {
        route: Route::Batch,
        kind,
        customers: vec![op.customer],
        json,
        trimmed,
        watch: None,
    }
}

/// The item `build` makes of `attributes`, measured as sent: while it is
/// over the item limit the largest attribute is dropped (ties by name).
fn within_limit(
    mut attributes: Map<String, Value>,
    build: impl Fn(&Map<String, Value>) -> Value,
) -> (Vec<u8>, Vec<String>) {
    let mut trimmed = Vec::new();
    loop {
        let json = serde_json::to_vec(&build(&attributes)).unwrap_or_default();
        let largest = attributes
            .iter()
            .map(|(k, v)| (attribute_value_bytes(v) + k.len(), k.clone()))
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
        match largest {
            Some((_, name)) if json.len() > MAX_BATCH_ITEM_BYTES => {
                attributes.remove(&name);
                trimmed.push(name);
            }
            _ => {
                trimmed.sort();
                return (json, trimmed);
            }
        }
    }
}

fn attributes_bytes(attributes: &Map<String, Value>, per_entry: usize) -> usize {
    attributes.iter().map(|(k, v)| per_entry + k.len() + value_bytes(v)).sum()
}

/// An object operation's own allocations (see `size::estimate`).
pub(super) fn object_own(op: &ObjectOp) -> usize {
    let attributes = match &op.action {
        ObjectAction::Identify { attributes } => attributes_bytes(attributes, ATTRIBUTE_OVERHEAD),
        ObjectAction::Delete => 0,
    };
    OP_OVERHEAD + op.object_type_id.len() + 2 * op.object_id.len() + 8 + attributes
}

/// A relationship operation's own allocations.
pub(super) fn relationship_own(op: &RelationshipOp) -> usize {
    let attributes = match &op.action {
        RelationshipAction::Add { attributes } => attributes_bytes(attributes, ATTRIBUTE_OVERHEAD),
        RelationshipAction::Delete => 0,
    };
    OP_OVERHEAD + op.customer.len() + op.object_type_id.len() + op.object_id.len() + attributes
}

/// Roughly an object operation's size as a batch item.
pub(super) fn object_wire(op: &ObjectOp) -> usize {
    let attributes = match &op.action {
        ObjectAction::Identify { attributes } => 16 + attributes_bytes(attributes, 6),
        ObjectAction::Delete => 0,
    };
    110 + op.object_type_id.len() + op.object_id.len() + attributes
}

/// Roughly a relationship operation's size as a batch item.
pub(super) fn relationship_wire(op: &RelationshipOp) -> usize {
    let attributes = match &op.action {
        RelationshipAction::Add { attributes } => 28 + attributes_bytes(attributes, 6),
        RelationshipAction::Delete => 0,
    };
    150 + op.customer.len() + op.object_type_id.len() + op.object_id.len() + attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(action: ObjectAction) -> ObjectOp {
        ObjectOp::new("1", "acme".into(), action)
    }

    fn relationship(action: RelationshipAction) -> RelationshipOp {
        let (object_type_id, object_id) = ("1".into(), "acme".into());
        RelationshipOp { customer: "42".into(), object_type_id, object_id, action }
    }

    fn parsed(item: &EncodedItem) -> Value {
        serde_json::from_slice(&item.json).expect("json")
    }

    #[test]
    fn object_items_are_the_documented_shapes() {
        let attributes = json!({"plan": "pro", "seats": null}).as_object().cloned().unwrap();
        let item = encode_object(object(ObjectAction::Identify { attributes }));
        assert_eq!(
            parsed(&item),
            json!({"type": "object", "identifiers": {"object_type_id": "1", "object_id": "acme"},
                   "action": "identify", "attributes": {"plan": "pro", "seats": null}})
        );
        assert_eq!(
            (item.kind, item.customers.clone()),
            ("object_identify", vec![crate::object_op::object_key("1", "acme")])
        );
        let item = encode_object(object(ObjectAction::Delete));
        assert_eq!(
            parsed(&item),
            json!({"type": "object", "identifiers": {"object_type_id": "1", "object_id": "acme"},
                   "action": "delete"})
        );
        assert!(object_wire(&object(ObjectAction::Delete)) >= item.json.len());
    }

    #[test]
    fn relationship_items_are_the_documented_shapes() {
        let attributes = json!({"role": "admin"}).as_object().cloned().unwrap();
        let op = relationship(RelationshipAction::Add { attributes });
        let wire = relationship_wire(&op);
        let item = encode_relationship(op);
        assert_eq!(
            parsed(&item),
            json!({"type": "person", "identifiers": {"id": "42"}, "action": "add_relationships",
                   "cio_relationships": [{
                       "identifiers": {"object_type_id": "1", "object_id": "acme"},
                       "relationship_attributes": {"role": "admin"}}]})
        );
        assert!(wire >= item.json.len(), "{wire} < {}", item.json.len());
        assert_eq!(item.customers, vec!["42".to_owned()]);
        let bare =
            encode_relationship(relationship(RelationshipAction::Add { attributes: Map::new() }));
        assert!(parsed(&bare)["cio_relationships"][0].get("relationship_attributes").is_none());
        let item = encode_relationship(relationship(RelationshipAction::Delete));
        assert_eq!(
            parsed(&item),
            json!({"type": "person", "identifiers": {"id": "42"}, "action": "delete_relationships",
                   "cio_relationships": [{
                       "identifiers": {"object_type_id": "1", "object_id": "acme"}}]})
        );
    }

    #[test]
    fn an_object_over_the_item_limit_loses_its_largest_attributes() {
        let mut attributes = Map::new();
        for i in 0..40 {
            attributes.insert(format!("a{i:02}"), Value::String("x".repeat(990)));
        }
        attributes.insert("small".into(), json!(1));
        let item = encode_object(object(ObjectAction::Identify { attributes }));
        assert!(item.json.len() <= MAX_BATCH_ITEM_BYTES);
        assert!(!item.trimmed.is_empty() && !item.trimmed.contains(&"small".to_owned()));
        assert_eq!(parsed(&item)["attributes"]["small"], json!(1));
    }
}
