//! Objects (a company, an account: Customer.io's non-person groups) and
//! their relationships to people, each with attributes. Pure: the model
//! (`model::World`, in `model_links.rs`) resolves people to `cio_id`s and
//! calls in here; this module knows people only by `cio_id`.
//!
//! What Customer.io documents, followed here (Track API document,
//! `object_*` schemas and "Object and relationship limits"):
//! - An object is named by `object_type_id` (a string holding an integer
//!   from 1) and `object_id`, or by the `cio_object_id` Customer.io gives it
//!   on creation; `cio_object_id` only updates ("updates only").
//! - identify creates or updates; `null` or `""` removes an attribute, for
//!   objects and relationships alike (always, whatever `--keep-empty` says
//!   for people).
//! - delete removes the object "and also removes relationships from people".
//! - At most 300 attributes and 100 KB of attributes per object and per
//!   relationship, besides the per-call limits (`validate.rs`).
//!
//! The sizes are counted as the value limit is (`attribute_value_bytes`),
//! plus each name's bytes; KB is read as 1000 bytes, as 32kb is elsewhere.

use std::collections::{BTreeMap, HashMap};

use ciosync_track_api::{attribute_value_bytes, Identifier, MAX_ATTRIBUTES};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::identity::is_empty;

/// Most bytes of attributes an object or a relationship keeps (documented:
/// "Total attribute size: 100 Kilobytes").
pub const MAX_OBJECT_ATTRIBUTE_BYTES: usize = 100_000;

/// First `cio_object_id` handed out is `ob` and this plus one in 10 hex
/// digits, the form of the spec's example `obb7fd050101`.
const CIO_OBJECT_ID_BASE: u64 = 0xb7_fd05_0000;

/// How an item names an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectRef {
    /// `object_type_id` (already checked to be an integer from 1) and `object_id`.
    Key { type_id: u64, object_id: String },
    /// `cio_object_id`.
    Cio(String),
}

/// A person's relationship to an object, as a person item names it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectLink {
    pub object: ObjectRef,
    pub attributes: Map<String, Value>,
}

/// An object's relationship to a person, as an object item names it.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonLink {
    pub person: Identifier,
    pub attributes: Map<String, Value>,
}

/// One object item, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectOp {
    /// Create or update, relating `people` too (`cio_relationships`).
    Identify { object: ObjectRef, attributes: Map<String, Value>, people: Vec<PersonLink> },
    /// Delete the object and its relationships.
    Delete { object: ObjectRef },
    /// `add_relationships` (`add`) or `delete_relationships`.
    Relationships { object: ObjectRef, people: Vec<PersonLink>, add: bool },
}

impl ObjectOp {
    /// The people the item relates or unrelates.
    pub fn people(&self) -> Vec<&Identifier> {
        match self {
            ObjectOp::Identify { people, .. } | ObjectOp::Relationships { people, .. } => {
                people.iter().map(|link| &link.person).collect()
            }
            ObjectOp::Delete { .. } => Vec::new(),
        }
    }
}

/// One object as `GET /_emulator/objects` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectSummary {
    pub object_type_id: String,
    pub object_id: String,
    pub cio_object_id: String,
    pub attributes: Map<String, Value>,
    /// How many people it is related to.
    pub relationship_count: usize,
}

/// One object with the people related to it, as
/// `GET /_emulator/objects/{object_type_id}/{object_id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectView {
    pub object_type_id: String,
    pub object_id: String,
    pub cio_object_id: String,
    pub attributes: Map<String, Value>,
    /// In the order the people were created.
    pub relationships: Vec<RelatedPerson>,
}

/// A person related to an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelatedPerson {
    /// The key `/_emulator/customers` lists the person under.
    pub customer: String,
    pub cio_id: String,
    pub attributes: Map<String, Value>,
}

/// A person's relationship, as `GET /_emulator/customers/{id}/relationships`
/// shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relationship {
    pub object_type_id: String,
    pub object_id: String,
    pub cio_object_id: String,
    pub attributes: Map<String, Value>,
}

/// (object_type_id, object_id): numeric type first, so type 2 lists before 10.
pub type ObjectKey = (u64, String);

#[derive(Debug, Clone, Default)]
struct Stored {
    cio_object_id: String,
    attributes: Map<String, Value>,
    /// Person `cio_id` → relationship attributes.
    related: BTreeMap<String, Map<String, Value>>,
}

/// Every object of the workspace.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    objects: BTreeMap<ObjectKey, Stored>,
    by_cio: HashMap<String, ObjectKey>,
    issued: u64,
}

/// Applies `changes` to `attributes`: `null` and `""` remove.
fn merge_into(attributes: &mut Map<String, Value>, changes: &Map<String, Value>) {
    for (name, value) in changes {
        if is_empty(value) {
            attributes.remove(name);
        } else {
            attributes.insert(name.clone(), value.clone());
        }
    }
}

/// Why `attributes` after `changes` break a documented limit, if they do.
/// `what` is `object` or `relationship`.
pub fn over_limits(
    current: Option<&Map<String, Value>>,
    changes: &Map<String, Value>,
    what: &str,
) -> Option<String> {
    let mut after = current.cloned().unwrap_or_default();
    merge_into(&mut after, changes);
    if after.len() > MAX_ATTRIBUTES {
        // Guess: Customer.io's wording for these two is not documented.
        return Some(format!("{what} cannot have more than {MAX_ATTRIBUTES} attributes"));
    }
    let bytes: usize =
        after.iter().map(|(name, value)| name.len() + attribute_value_bytes(value)).sum();
    (bytes > MAX_OBJECT_ATTRIBUTE_BYTES).then(|| {
        format!("{what} attributes cannot total more than {MAX_OBJECT_ATTRIBUTE_BYTES} bytes")
    })
}

impl Objects {
    /// The key of the object `object` names, if it exists.
    pub fn find(&self, object: &ObjectRef) -> Option<ObjectKey> {
        match object {
            ObjectRef::Key { type_id, object_id } => {
                let key = (*type_id, object_id.clone());
                self.objects.contains_key(&key).then_some(key)
            }
            ObjectRef::Cio(cio) => self.by_cio.get(cio).cloned(),
        }
    }

    /// The key of the object `object` names, created (with a new
    /// `cio_object_id`) if missing and `create`; a `cio_object_id` never
    /// creates.
    pub fn resolve(&mut self, object: &ObjectRef, create: bool) -> Option<ObjectKey> {
        if let Some(key) = self.find(object) {
            return Some(key);
        }
        let ObjectRef::Key { type_id, object_id } = object else {
            return None;
        };
        if !create {
            return None;
        }
        self.issued += 1;
        let cio_object_id = format!("ob{:010x}", CIO_OBJECT_ID_BASE + self.issued);
        let key = (*type_id, object_id.clone());
        self.by_cio.insert(cio_object_id.clone(), key.clone());
        self.objects.insert(key.clone(), Stored { cio_object_id, ..Stored::default() });
        Some(key)
    }

    /// The object's attributes, if it exists.
    pub fn attributes(&self, object: &ObjectRef) -> Option<&Map<String, Value>> {
        self.find(object).and_then(|key| self.objects.get(&key)).map(|s| &s.attributes)
    }

    /// The attributes of the relationship between the object and the
    /// person, if both and the relationship exist.
    pub fn relationship(&self, object: &ObjectRef, cio_id: &str) -> Option<&Map<String, Value>> {
        self.find(object).and_then(|key| self.objects.get(&key)?.related.get(cio_id))
    }

    /// Sets and removes the object's attributes.
    pub fn identify(&mut self, key: &ObjectKey, changes: &Map<String, Value>) {
        if let Some(stored) = self.objects.get_mut(key) {
            merge_into(&mut stored.attributes, changes);
        }
    }

    /// Deletes the object with its relationships.
    pub fn delete(&mut self, key: &ObjectKey) {
        if let Some(stored) = self.objects.remove(key) {
            self.by_cio.remove(&stored.cio_object_id);
        }
    }

    /// Adds the relationship, or updates its attributes.
    pub fn relate(&mut self, key: &ObjectKey, cio_id: &str, changes: &Map<String, Value>) {
        if let Some(stored) = self.objects.get_mut(key) {
            merge_into(stored.related.entry(cio_id.to_owned()).or_default(), changes);
        }
    }

    /// Removes the relationship, if there is one.
    pub fn unrelate(&mut self, key: &ObjectKey, cio_id: &str) {
        if let Some(stored) = self.objects.get_mut(key) {
            stored.related.remove(cio_id);
        }
    }

    /// Removes every relationship of a deleted person.
    pub fn forget_person(&mut self, cio_id: &str) {
        for stored in self.objects.values_mut() {
            stored.related.remove(cio_id);
        }
    }

    /// A merge: the primary gains the secondary's relationships it did not
    /// have, and the relationship attributes it did not have (documented
    /// for merges: "Relationships and relationship attributes that the
    /// primary did not have"); the secondary's go with it.
    pub fn merge_person(&mut self, secondary: &str, primary: &str) {
        for stored in self.objects.values_mut() {
            let Some(gone) = stored.related.remove(secondary) else {
                continue;
            };
            let kept = stored.related.entry(primary.to_owned()).or_default();
            for (name, value) in gone {
                kept.entry(name).or_insert(value);
            }
        }
    }

    /// Every object, by type then id.
    pub fn summaries(&self) -> Vec<ObjectSummary> {
        self.objects
            .iter()
            .map(|((type_id, object_id), stored)| ObjectSummary {
                object_type_id: type_id.to_string(),
                object_id: object_id.clone(),
                cio_object_id: stored.cio_object_id.clone(),
                attributes: stored.attributes.clone(),
                relationship_count: stored.related.len(),
            })
            .collect()
    }

    /// One object with its people; `customer` gives a person's key.
    pub fn view(
        &self,
        object: &ObjectRef,
        customer: impl Fn(&str) -> String,
    ) -> Option<ObjectView> {
        let key = self.find(object)?;
        let stored = self.objects.get(&key)?;
        Some(ObjectView {
            object_type_id: key.0.to_string(),
            object_id: key.1.clone(),
            cio_object_id: stored.cio_object_id.clone(),
            attributes: stored.attributes.clone(),
            relationships: stored
                .related
                .iter()
                .map(|(cio_id, attributes)| RelatedPerson {
                    customer: customer(cio_id),
                    cio_id: cio_id.clone(),
                    attributes: attributes.clone(),
                })
                .collect(),
        })
    }

    /// A person's relationships, by object type then id.
    pub fn of_person(&self, cio_id: &str) -> Vec<Relationship> {
        self.objects
            .iter()
            .filter_map(|((type_id, object_id), stored)| {
                Some(Relationship {
                    object_type_id: type_id.to_string(),
                    object_id: object_id.clone(),
                    cio_object_id: stored.cio_object_id.clone(),
                    attributes: stored.related.get(cio_id)?.clone(),
                })
            })
            .collect()
    }
}
