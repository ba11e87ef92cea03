//! The workspace's objects, relationships and devices: `World`'s side of
//! them (a child module of `model`, so it reaches the people). The stores
//! are `objects` and `devices`; here people are resolved and the calls
//! answered 200 but not applied are logged as failures.
//!
//! UNCONFIRMED, chosen here (Customer.io's documents are silent):
//! - A person item (`add_relationships`, `add_device`) naming an unknown
//!   `id`/`email`/`phone` creates the person, as any ID-based call does
//!   (facts sheet §1); an unknown `cio_id` or a suppressed identifier is
//!   logged and ignored.
//! - An object item relating an unknown person does not create them: that
//!   relationship is logged and skipped.
//! - Relating to an object that does not exist creates it only with
//!   `relationships_create_objects` (off by default, the safe side: a
//!   client then has to identify objects before relating to them, which
//!   works whatever Customer.io does); otherwise it is logged and skipped.
//!   A `cio_object_id` never creates an object.
//! - Limits that depend on what is stored (an object's or a relationship's
//!   300 attributes and 100 KB) refuse the item, as a per-call limit does:
//!   a 207 item error in a batch, a 400 elsewhere.

use ciosync_track_api::Identifier;
use serde_json::{Map, Value};

use super::{Failure, Person, World};
use crate::devices::{Deleted, Device, DeviceOp};
use crate::objects::{
    over_limits, ObjectLink, ObjectOp, ObjectRef, ObjectSummary, ObjectView, PersonLink,
    Relationship,
};
use crate::ops::Op;
use crate::validate::{Problem, REASON_TOO_LARGE};

/// How a failure names an object: `object:TYPE:ID` or `cio_object_id:…`.
fn object_name(object: &ObjectRef) -> String {
    match object {
        ObjectRef::Key { type_id, object_id } => format!("object:{type_id}:{object_id}"),
        ObjectRef::Cio(cio) => format!("cio_object_id:{cio}"),
    }
}

impl World {
    /// Whether `op` fits the limits that depend on what is stored; `Err`
    /// names the problem, and the op must then not be applied.
    pub fn admit(&self, op: &Op) -> Result<(), Problem> {
        match op {
            Op::Many(ops) => ops.iter().try_for_each(|op| self.admit(op)),
            Op::Relationships { target, links, add: true, .. } => {
                let cio_id = self.find(target);
                links.iter().try_for_each(|link| {
                    self.admit_link(&link.object, cio_id.as_deref(), &link.attributes)
                })
            }
            Op::Object(ObjectOp::Identify { object, attributes, people }) => {
                let current = self.objects.attributes(object);
                if let Some(message) = over_limits(current, attributes, "object") {
                    return Err(Problem::new(REASON_TOO_LARGE, "attributes", message));
                }
                self.admit_people(object, people)
            }
            Op::Object(ObjectOp::Relationships { object, people, add: true }) => {
                self.admit_people(object, people)
            }
            _ => Ok(()),
        }
    }

    fn admit_people(&self, object: &ObjectRef, people: &[PersonLink]) -> Result<(), Problem> {
        people.iter().try_for_each(|link| {
            let cio_id = self.find(&link.person);
            self.admit_link(object, cio_id.as_deref(), &link.attributes)
        })
    }

    fn admit_link(
        &self,
        object: &ObjectRef,
        cio_id: Option<&str>,
        changes: &Map<String, Value>,
    ) -> Result<(), Problem> {
        let current = cio_id.and_then(|cio_id| self.objects.relationship(object, cio_id));
        match over_limits(current, changes, "relationship") {
            None => Ok(()),
            Some(message) => Err(Problem::new(REASON_TOO_LARGE, "cio_relationships", message)),
        }
    }

    /// Every object, by type then id.
    pub fn objects(&self) -> Vec<ObjectSummary> {
        self.objects.summaries()
    }

    /// One object with the people related to it.
    pub fn object(&self, object: &ObjectRef) -> Option<ObjectView> {
        self.objects.view(object, |cio_id| {
            self.people.get(cio_id).map(Person::key).unwrap_or_else(|| format!("cio_{cio_id}"))
        })
    }

    /// A person's devices, if the person exists.
    pub fn devices_of(&self, person: &Identifier) -> Option<Vec<Device>> {
        self.find(person).map(|cio_id| self.devices.of_person(&cio_id))
    }

    /// A person's relationships, if the person exists.
    pub fn relationships_of(&self, person: &Identifier) -> Option<Vec<Relationship>> {
        self.find(person).map(|cio_id| self.objects.of_person(&cio_id))
    }

    /// A deleted or suppressed person's relationships and devices go too.
    pub(super) fn forget_links(&mut self, cio_id: &str) {
        self.objects.forget_person(cio_id);
        self.devices.forget_person(cio_id);
    }

    /// A merge keeps the secondary's relationships the primary lacked; its
    /// devices go with it (see `devices`).
    pub(super) fn merge_links(&mut self, secondary: &str, primary: &str) {
        self.objects.merge_person(secondary, primary);
        self.devices.forget_person(secondary);
    }

    /// The person a person item is for: found, or created when `create`
    /// and named by `id`/`email`/`phone`; `None` (and a logged failure for
    /// a suppressed identifier or an unknown `cio_id`) otherwise.
    fn person_for(&mut self, operation: &str, target: &Identifier, create: bool) -> Option<String> {
        if self.is_blocked(target) {
            self.fail(operation, target, "identifier is suppressed; call ignored");
            return None;
        }
        match (self.find(target), target) {
            (Some(cio_id), _) => Some(cio_id),
            (None, Identifier::CioId(_)) => {
                self.fail(operation, target, "cio_id does not exist; request dropped");
                None
            }
            (None, _) if create => Some(self.create(target)),
            (None, _) => None,
        }
    }

    fn fail_object(&mut self, operation: &str, object: &ObjectRef, reason: &str) {
        tracing::debug!(operation, reason, "object call accepted but not applied");
        self.failures.push(Failure {
            operation: operation.to_owned(),
            identifier: object_name(object),
            reason: reason.to_owned(),
        });
    }

    /// Person-side relationships. `create` false: an identify in the same
    /// item already decided whether the person exists.
    pub(super) fn apply_relationships(
        &mut self,
        target: &Identifier,
        links: Vec<ObjectLink>,
        add: bool,
        create: bool,
    ) {
        if !create && self.find(target).is_none() {
            return;
        }
        let operation = if add { "add_relationships" } else { "delete_relationships" };
        let Some(cio_id) = self.person_for(operation, target, add) else {
            return;
        };
        for link in links {
            self.link(operation, &link.object, &cio_id, &link.attributes, add);
        }
    }

    fn link(
        &mut self,
        operation: &str,
        object: &ObjectRef,
        cio_id: &str,
        attributes: &Map<String, Value>,
        add: bool,
    ) {
        let create = add && self.settings.relationships_create_objects;
        match self.objects.resolve(object, create) {
            Some(key) if add => self.objects.relate(&key, cio_id, attributes),
            Some(key) => self.objects.unrelate(&key, cio_id),
            None if add => {
                self.fail_object(operation, object, "object does not exist; relationship not added")
            }
            None => {}
        }
    }

    pub(super) fn apply_object(&mut self, op: ObjectOp) {
        match op {
            ObjectOp::Identify { object, attributes, people } => {
                let Some(key) = self.objects.resolve(&object, true) else {
                    let reason = "cio_object_id does not exist; request dropped";
                    return self.fail_object("identify", &object, reason);
                };
                self.objects.identify(&key, &attributes);
                self.relate_people("identify", &object, people, true);
            }
            ObjectOp::Delete { object } => {
                if let Some(key) = self.objects.find(&object) {
                    self.objects.delete(&key);
                }
            }
            ObjectOp::Relationships { object, people, add } => {
                let operation = if add { "add_relationships" } else { "delete_relationships" };
                self.relate_people(operation, &object, people, add);
            }
        }
    }

    /// Object-side relationships: people are found, never created.
    fn relate_people(
        &mut self,
        operation: &str,
        object: &ObjectRef,
        people: Vec<PersonLink>,
        add: bool,
    ) {
        for link in people {
            match self.find(&link.person) {
                Some(cio_id) => self.link(operation, object, &cio_id, &link.attributes, add),
                None if add => {
                    let reason = "person does not exist; relationship not added";
                    self.fail(operation, &link.person, reason);
                }
                None => {}
            }
        }
    }

    pub(super) fn apply_device(&mut self, op: DeviceOp) {
        match op {
            DeviceOp::Add { target, device } => {
                if let Some(cio_id) = self.person_for("add_device", &target, true) {
                    if let Some(from) = self.devices.add(&cio_id, device) {
                        tracing::debug!(from = %from, to = %cio_id, "device token moved");
                    }
                }
            }
            DeviceOp::Delete { target, token } => {
                let Some(cio_id) = self.person_for("delete_device", &target, false) else {
                    return;
                };
                if self.devices.delete(&cio_id, &token) == Deleted::OtherPerson {
                    let reason = "the device belongs to another person; not deleted";
                    self.fail("delete_device", &target, reason);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "model_links_tests.rs"]
mod tests;
