//! Operations on Customer.io objects (an account, a company: an
//! `object_type_id` and an `object_id`) and on people's relationships to
//! them: what `[[objects]]` and `[[relationships]]` tables map to. Part of
//! the shared vocabulary beside [`crate::customer`], which carries them as
//! `CustomerOp::Object` and `CustomerOp::Relationship`.
//!
//! # Order
//! The sink orders operations by a key per customer
//! (`CustomerOp::customer_id`). An object's operations are ordered by
//! [`object_key`]: a NUL, another NUL, the type, a NUL, the id. Postgres text
//! holds no NUL, so no person id is one, and an email ordering key (one NUL
//! then the email, see `sink::order`) never starts with two. A relationship
//! belongs to its person's order, and follows its object's operations
//! waiting or in flight (`sink::order::Order::follows`): an object created
//! and related in one transaction reaches Customer.io object first. An
//! object's later operations wait for the relationships to it ahead of
//! them: a membership added, then its account deleted, never leaves the
//! membership added last.

use serde_json::{Map, Value};

/// One operation on one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectOp {
    /// A string holding an integer from 1 (`"1"`), as Customer.io wants it.
    pub object_type_id: String,
    pub object_id: String,
    pub action: ObjectAction,
    /// [`object_key`] of the two, kept so the sink can borrow it.
    key: String,
}

/// What an [`ObjectOp`] does.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectAction {
    /// Create or update the object with these attributes; `null` removes one.
    Identify { attributes: Map<String, Value> },
    /// Delete the object (Customer.io removes its relationships too).
    Delete,
}

impl ObjectOp {
    /// An operation on the object `object_id` of type `object_type_id`.
    pub fn new(object_type_id: &str, object_id: String, action: ObjectAction) -> Self {
        let key = object_key(object_type_id, &object_id);
        Self { object_type_id: object_type_id.to_owned(), object_id, action, key }
    }

    /// The key its operations are ordered by (see the module doc).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Only the `wanted` attributes of an identify (`backfill
    /// --attributes`); `None` for an identify left with none.
    pub fn only(mut self, wanted: &[String]) -> Option<Self> {
        if let ObjectAction::Identify { attributes } = &mut self.action {
            attributes.retain(|name, _| wanted.contains(name));
            if attributes.is_empty() {
                return None;
            }
        }
        Some(self)
    }

    /// A short name for logs, metric labels and dead letters.
    pub fn kind(&self) -> &'static str {
        match self.action {
            ObjectAction::Identify { .. } => "object_identify",
            ObjectAction::Delete => "object_delete",
        }
    }
}

/// A person's relationship to one object, added or removed.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationshipOp {
    /// The person's id.
    pub customer: String,
    pub object_type_id: String,
    pub object_id: String,
    pub action: RelationshipAction,
}

/// What a [`RelationshipOp`] does.
#[derive(Debug, Clone, PartialEq)]
pub enum RelationshipAction {
    /// Relate the person to the object (again: an upsert of the
    /// relationship's attributes; `null` removes one).
    Add { attributes: Map<String, Value> },
    /// Remove the relationship.
    Delete,
}

impl RelationshipOp {
    /// A short name for logs, metric labels and dead letters.
    pub fn kind(&self) -> &'static str {
        match self.action {
            RelationshipAction::Add { .. } => "add_relationship",
            RelationshipAction::Delete => "delete_relationship",
        }
    }

    /// The ordering key of the object it relates to.
    pub fn object_key(&self) -> String {
        object_key(&self.object_type_id, &self.object_id)
    }
}

/// The ordering key of an object (see the module doc).
pub fn object_key(object_type_id: &str, object_id: &str) -> String {
    format!("\0\0{object_type_id}\0{object_id}")
}

/// An ordering key as people read it (`object 1/acme` for an object's),
/// for dead letters and logs; anything else as it is.
pub fn readable_key(key: &str) -> String {
    match key.strip_prefix("\0\0").and_then(|rest| rest.split_once('\0')) {
        Some((object_type_id, object_id)) => format!("object {object_type_id}/{object_id}"),
        None => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_cannot_be_person_ids_or_email_keys() {
        let op = ObjectOp::new("1", "acme".into(), ObjectAction::Delete);
        assert_eq!(op.key(), ["\0", "\0", "1", "\0", "acme"].concat());
        assert!(op.key().starts_with("\0\0"), "an email key has one NUL, a person id none");
        assert_eq!(readable_key(op.key()), "object 1/acme");
        assert_eq!(readable_key("42"), "42");
        assert_eq!(op.kind(), "object_delete");
    }

    #[test]
    fn a_backfill_of_some_attributes_sends_only_those() {
        let attributes =
            [("name", 1), ("plan", 2)].map(|(k, v)| (k.to_owned(), v.into())).into_iter().collect();
        let op = ObjectOp::new("1", "acme".into(), ObjectAction::Identify { attributes });
        let plan = op.clone().only(&["plan".to_owned()]).expect("plan is kept");
        let ObjectAction::Identify { attributes } = &plan.action else { panic!("an identify") };
        assert_eq!(attributes.keys().collect::<Vec<_>>(), ["plan"]);
        assert!(op.only(&["seats".to_owned()]).is_none());
        let delete = ObjectOp::new("1", "acme".into(), ObjectAction::Delete);
        assert_eq!(delete.clone().only(&[]), Some(delete));
    }
}
