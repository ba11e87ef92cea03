//! The emulated workspace: people with their attributes and events, the
//! suppressed identifiers, objects, relationships and devices (stored in
//! `objects` and `devices`, applied in `model_links.rs`), and a log of the
//! calls Customer.io would accept with 200 yet not apply. Pure: no I/O, no
//! clock (callers pass `now`).
//!
//! Behaviour follows the facts sheet §1; where Customer.io is silent the
//! choice is written on the method that makes it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ciosync_track_api::Identifier;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::devices::Devices;
use crate::identity::{
    body_contradicts, identity, identity_name, identity_value, is_empty, key, IDENTITY_ATTRIBUTES,
};
use crate::objects::Objects;
pub use crate::ops::{Op, StoredEvent};

/// First `cio_id` handed out is this plus one, written as 8 hex digits
/// (`03000001`), the form of the spec's example `cio_03000001`.
const CIO_ID_BASE: u64 = 0x0300_0000;

/// A call answered 200 but not applied, as Customer.io's activity log
/// would show it (an *Attribute Update Failure* and its kin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// `identify`, `event`, `merge`…
    pub operation: String,
    /// The identifier the call named, as `kind:value`.
    pub identifier: String,
    /// Why nothing happened.
    pub reason: String,
}

/// One person.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    cio_id: String,
    attributes: Map<String, Value>,
    /// Per attribute, the timestamp of the change that last touched it
    /// (set or removed), so older changes arriving later are dropped.
    stamps: HashMap<String, i64>,
    events: Vec<StoredEvent>,
}

impl Person {
    /// Customer.io's internal id, without the `cio_` prefix.
    pub fn cio_id(&self) -> &str {
        &self.cio_id
    }

    /// Current attributes, including the identifiers `id`, `email` and
    /// `phone` when set (they are attributes in Customer.io too).
    pub fn attributes(&self) -> &Map<String, Value> {
        &self.attributes
    }

    /// Events in arrival order (merged-in events follow the primary's own).
    pub fn events(&self) -> &[StoredEvent] {
        &self.events
    }

    /// The key `customers()` lists this person under: `id`, else `email`,
    /// else `cio_<cio_id>`.
    pub fn key(&self) -> String {
        ["id", "email"]
            .iter()
            .find_map(|name| self.attributes.get(*name).and_then(identity_value))
            .unwrap_or_else(|| format!("cio_{}", self.cio_id))
    }
}

/// Something a call did that a reporting webhook can follow. The model
/// only notes these; the emulator drains them after every change and turns
/// them into webhooks when configured to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// A call created the person with this `cio_id`.
    PersonCreated { cio_id: String },
    /// A person event was stored (not dropped as a repeat or refused).
    EventAccepted {
        /// The person's `cio_id`.
        cio_id: String,
        /// The event's name.
        name: String,
        /// The event's dedupe ULID, if the client sent one.
        event_id: Option<String>,
    },
}

/// Workspace settings that change how operations apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `null` and `""` remove an attribute (UNCONFIRMED for people).
    pub empty_removes: bool,
    /// A person found by `id` may get a new `email`.
    pub allow_email_update_by_id: bool,
    /// Relating to an object that does not exist creates it (UNCONFIRMED).
    pub relationships_create_objects: bool,
}

/// The whole emulated workspace.
#[derive(Debug, Clone)]
pub struct World {
    settings: Settings,
    /// By `cio_id`; zero-padded hex, so this is also creation order.
    people: BTreeMap<String, Person>,
    /// Identifier key (`id:42`, `email:a@b.c` lower-cased, `phone:+1…`) → `cio_id`.
    index: HashMap<String, String>,
    issued_cio_ids: u64,
    suppressed: BTreeSet<String>,
    seen_event_ids: HashSet<String>,
    duplicate_events: usize,
    anonymous_events: Vec<StoredEvent>,
    failures: Vec<Failure>,
    unmodelled: Vec<Value>,
    activity: Vec<Activity>,
    objects: Objects,
    devices: Devices,
}

impl World {
    /// An empty workspace.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            people: BTreeMap::new(),
            index: HashMap::new(),
            issued_cio_ids: 0,
            suppressed: BTreeSet::new(),
            seen_event_ids: HashSet::new(),
            duplicate_events: 0,
            anonymous_events: Vec::new(),
            failures: Vec::new(),
            unmodelled: Vec::new(),
            activity: Vec::new(),
            objects: Objects::default(),
            devices: Devices::default(),
        }
    }

    /// Applies one operation. Never fails: what Customer.io would accept
    /// with 200 but not apply lands in `failures()`.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Identify { target, attributes, timestamp, update_only } => {
                self.identify(&target, attributes, timestamp, update_only)
            }
            Op::Delete { target } => self.delete(&target),
            Op::Suppress { target } => self.suppress(&target),
            Op::Unsuppress { target } => {
                // Frees only the named identifier; the next identify creates
                // a new, empty profile (the old one was deleted on suppress).
                self.suppressed.remove(&key(&target));
            }
            Op::Merge { primary, secondary } => self.merge(&primary, &secondary),
            Op::Event { target, event } => self.event(&target, event),
            Op::AnonymousEvent { event } => {
                if self.first_sighting(&event) {
                    self.anonymous_events.push(event);
                }
            }
            Op::Relationships { target, links, add, create } => {
                self.apply_relationships(&target, links, add, create)
            }
            Op::Object(op) => self.apply_object(op),
            Op::Device(op) => self.apply_device(op),
            Op::Many(ops) => ops.into_iter().for_each(|op| self.apply(op)),
            Op::Unmodelled { item, .. } => self.unmodelled.push(item),
        }
    }

    /// The person an identifier names, if any.
    pub fn person(&self, identifier: &Identifier) -> Option<&Person> {
        self.find(identifier).and_then(|cio| self.people.get(&cio))
    }

    /// Every person, in creation order.
    pub fn people(&self) -> impl Iterator<Item = &Person> {
        self.people.values()
    }

    /// Identifiers blocked by suppress, as `kind:value`.
    pub fn suppressed(&self) -> impl Iterator<Item = &String> {
        self.suppressed.iter()
    }

    /// Calls accepted with 200 but not applied, oldest first.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// Events sent without a person.
    pub fn anonymous_events(&self) -> &[StoredEvent] {
        &self.anonymous_events
    }

    /// Delivery items and the other calls kept without effect, as received.
    pub fn unmodelled(&self) -> &[Value] {
        &self.unmodelled
    }

    /// What happened since the last call, oldest first, and forgets it.
    pub fn take_activity(&mut self) -> Vec<Activity> {
        std::mem::take(&mut self.activity)
    }

    /// How many events were dropped as repeats of a seen `id`.
    pub fn duplicate_events(&self) -> usize {
        self.duplicate_events
    }

    /// The dedupe ids of every event accepted so far, including events of
    /// people deleted since (their ids stay seen, as in Customer.io).
    pub fn seen_event_ids(&self) -> &HashSet<String> {
        &self.seen_event_ids
    }

    fn find(&self, identifier: &Identifier) -> Option<String> {
        match identifier {
            Identifier::CioId(cio) => self.people.contains_key(cio).then(|| cio.clone()),
            other => self.index.get(&key(other)).cloned(),
        }
    }

    fn fail(&mut self, operation: &str, identifier: &Identifier, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::debug!(operation, reason = %reason, "call accepted but not applied");
        self.failures.push(Failure {
            operation: operation.to_owned(),
            identifier: key(identifier),
            reason,
        });
    }

    fn is_blocked(&self, identifier: &Identifier) -> bool {
        self.suppressed.contains(&key(identifier))
    }

    fn create(&mut self, target: &Identifier) -> String {
        self.issued_cio_ids += 1;
        let cio_id = format!("{:08x}", CIO_ID_BASE + self.issued_cio_ids);
        let mut attributes = Map::new();
        if let Some(name) = identity_name(target) {
            attributes.insert(name.to_owned(), Value::String(target.value().to_owned()));
        }
        let person = Person {
            cio_id: cio_id.clone(),
            attributes,
            stamps: HashMap::new(),
            events: Vec::new(),
        };
        self.people.insert(cio_id.clone(), person);
        self.reindex(&cio_id, true);
        self.activity.push(Activity::PersonCreated { cio_id: cio_id.clone() });
        cio_id
    }

    /// Adds (`present`) or drops a person's identifiers in the index.
    fn reindex(&mut self, cio_id: &str, present: bool) {
        let Some(person) = self.people.get(cio_id) else {
            return;
        };
        let keys: Vec<String> = IDENTITY_ATTRIBUTES
            .iter()
            .filter_map(|name| {
                let value = identity_value(person.attributes.get(*name)?)?;
                identity(name, value).map(|identifier| key(&identifier))
            })
            .collect();
        for k in keys {
            if present {
                self.index.insert(k, cio_id.to_owned());
            } else {
                self.index.remove(&k);
            }
        }
    }

    /// Identify, following the spec's rules: the path person if it exists;
    /// else the person a body `id`/`email`/`phone` names, who also gets the
    /// path identifier; else a new person unless `_update`. Identifiers that
    /// point at different people, an unknown `cio_id`, or changing an
    /// identifier without a `cio_` reference: 200 and a logged failure,
    /// nothing applied. Timestamps order changes per attribute: a change
    /// older than the last one applied to that attribute is skipped for
    /// that attribute only (Customer.io does not say whether it orders per
    /// attribute or per person; per attribute loses less data).
    fn identify(
        &mut self,
        target: &Identifier,
        attributes: Map<String, Value>,
        timestamp: i64,
        update_only: bool,
    ) {
        let cio_id = match self.resolve(target, &attributes, update_only) {
            Ok(cio_id) => cio_id,
            Err(reason) => return self.fail("identify", target, reason),
        };
        if let Some(reason) = self.forbidden_identifier_change(&cio_id, target, &attributes) {
            return self.fail("identify", target, reason);
        }
        self.reindex(&cio_id, false);
        let empty_removes = self.settings.empty_removes;
        if let Some(person) = self.people.get_mut(&cio_id) {
            if let Some(name) = identity_name(target) {
                person
                    .attributes
                    .entry(name)
                    .or_insert_with(|| Value::String(target.value().to_owned()));
            }
            for (name, value) in attributes {
                // cio_id is Customer.io's and immutable; a client cannot set it.
                if name == "cio_id" {
                    continue;
                }
                if person.stamps.get(&name).is_some_and(|last| *last > timestamp) {
                    continue;
                }
                person.stamps.insert(name.clone(), timestamp);
                if empty_removes && is_empty(&value) {
                    person.attributes.remove(&name);
                } else {
                    person.attributes.insert(name, value);
                }
            }
        }
        self.reindex(&cio_id, true);
    }

    /// The person an identify applies to, creating them if needed, or why
    /// the call is accepted but dropped.
    fn resolve(
        &mut self,
        target: &Identifier,
        attributes: &Map<String, Value>,
        update_only: bool,
    ) -> Result<String, &'static str> {
        let body_identifiers: Vec<Identifier> = IDENTITY_ATTRIBUTES
            .iter()
            .filter_map(|name| identity(name, identity_value(attributes.get(*name)?)?))
            .collect();
        if self.is_blocked(target) || body_identifiers.iter().any(|i| self.is_blocked(i)) {
            return Err("identifier is suppressed; call ignored");
        }
        let path_person = self.find(target);
        if matches!(target, Identifier::CioId(_)) && path_person.is_none() {
            return Err("cio_id does not exist; request dropped");
        }
        let owners: BTreeSet<String> =
            body_identifiers.iter().filter_map(|i| self.find(i)).collect();
        let mut owners = owners.into_iter();
        match (path_person, owners.next(), owners.next()) {
            (Some(person), None, _) => Ok(person),
            (Some(person), Some(owner), None) if owner == person => Ok(person),
            (Some(_), Some(_), _) | (None, Some(_), Some(_)) => {
                Err("Attribute Update Failure: identifiers belong to different people")
            }
            // The body's person gets the path identifier, unless that would
            // replace one it already has.
            (None, Some(owner), None) if self.has_other_identifier(&owner, target) => Err(
                "Attribute Update Failure: the person already has another identifier of this kind",
            ),
            (None, Some(owner), None) => Ok(owner),
            (None, None, _) if update_only => {
                Err("_update is true and no person matches; nothing created")
            }
            (None, None, _) if body_contradicts(target, attributes) => {
                Err("Attribute Update Failure: the body names a different identifier than the path")
            }
            (None, None, _) => Ok(self.create(target)),
        }
    }

    /// Whether the person holds an identifier of `target`'s kind other than `target`.
    fn has_other_identifier(&self, cio_id: &str, target: &Identifier) -> bool {
        let Some(name) = identity_name(target) else {
            return false;
        };
        self.people
            .get(cio_id)
            .and_then(|person| person.attributes.get(name))
            .and_then(identity_value)
            .and_then(|current| identity(name, current))
            .is_some_and(|current| key(&current) != key(target))
    }

    /// Customer.io changes an existing identifier only when the call names
    /// the person by `cio_id`, or an email by id with the workspace setting.
    fn forbidden_identifier_change(
        &self,
        cio_id: &str,
        target: &Identifier,
        attributes: &Map<String, Value>,
    ) -> Option<String> {
        let person = self.people.get(cio_id)?;
        for name in IDENTITY_ATTRIBUTES {
            let Some(new) = attributes.get(name) else {
                continue;
            };
            let Some(current) = person.attributes.get(name).and_then(identity_value) else {
                continue;
            };
            let unchanged = identity_value(new)
                .and_then(|new| identity(name, new))
                .zip(identity(name, current))
                .is_some_and(|(new, current)| key(&new) == key(&current));
            let allowed = matches!(target, Identifier::CioId(_))
                || (name == "email"
                    && matches!(target, Identifier::Id(_))
                    && self.settings.allow_email_update_by_id);
            if !unchanged && !allowed {
                return Some(format!(
                    "Attribute Update Failure: changing '{name}' needs a cio_ reference"
                ));
            }
        }
        None
    }

    /// Delete, with the person's devices and relationships. A missing
    /// person is not an error (the real status is UNCONFIRMED; the emulator
    /// answers 200 and does nothing).
    fn delete(&mut self, target: &Identifier) {
        if let Some(cio_id) = self.find(target) {
            self.reindex(&cio_id, false);
            self.people.remove(&cio_id);
            self.forget_links(&cio_id);
        }
    }

    /// Suppress: blocks the named identifier and, if the person exists, all
    /// of theirs, then deletes the person with their devices and
    /// relationships.
    fn suppress(&mut self, target: &Identifier) {
        self.suppressed.insert(key(target));
        let Some(cio_id) = self.find(target) else {
            return;
        };
        self.reindex(&cio_id, false);
        self.forget_links(&cio_id);
        if let Some(person) = self.people.remove(&cio_id) {
            self.suppressed.insert(key(&Identifier::CioId(person.cio_id.clone())));
            for name in IDENTITY_ATTRIBUTES {
                if let Some(value) = person.attributes.get(name).and_then(identity_value) {
                    if let Some(identifier) = identity(name, value) {
                        self.suppressed.insert(key(&identifier));
                    }
                }
            }
        }
    }

    /// Merge. The spec says a missing primary makes the call do nothing, so
    /// the emulator answers 200 and logs a failure (likewise for a missing
    /// secondary). Copied: attributes missing or empty on the primary,
    /// except identifiers (the secondary's id/email go away with it, a
    /// guess); all events (the 30-day window is not modelled).
    fn merge(&mut self, primary: &Identifier, secondary: &Identifier) {
        if self.is_blocked(primary) || self.is_blocked(secondary) {
            return self.fail("merge", primary, "identifier is suppressed; call ignored");
        }
        let Some(primary_cio) = self.find(primary) else {
            return self.fail("merge", primary, "primary person does not exist; merge did nothing");
        };
        let Some(secondary_cio) = self.find(secondary) else {
            return self.fail(
                "merge",
                secondary,
                "secondary person does not exist; merge did nothing",
            );
        };
        if primary_cio == secondary_cio {
            return self.fail("merge", primary, "primary and secondary are the same person");
        }
        self.reindex(&secondary_cio, false);
        self.merge_links(&secondary_cio, &primary_cio);
        let Some(gone) = self.people.remove(&secondary_cio) else {
            return;
        };
        let Some(kept) = self.people.get_mut(&primary_cio) else {
            return;
        };
        for (name, value) in gone.attributes {
            if IDENTITY_ATTRIBUTES.contains(&name.as_str()) {
                continue;
            }
            if kept.attributes.get(&name).is_none_or(is_empty) {
                if let Some(stamp) = gone.stamps.get(&name) {
                    kept.stamps.insert(name.clone(), *stamp);
                }
                kept.attributes.insert(name, value);
            }
        }
        kept.events.extend(gone.events);
    }

    /// Event. Ignored for a suppressed identifier or a seen `id`; logged as
    /// a failure for an unknown `cio_id`. An unknown id/email creates the
    /// person, as any ID-based call re-creates a deleted one (facts §1).
    fn event(&mut self, target: &Identifier, event: StoredEvent) {
        if self.is_blocked(target) {
            return self.fail("event", target, "identifier is suppressed; call ignored");
        }
        let cio_id = match (self.find(target), target) {
            (Some(cio_id), _) => cio_id,
            (None, Identifier::CioId(_)) => {
                return self.fail("event", target, "cio_id does not exist; request dropped");
            }
            (None, _) => self.create(target),
        };
        if self.first_sighting(&event) {
            if let Some(person) = self.people.get_mut(&cio_id) {
                self.activity.push(Activity::EventAccepted {
                    cio_id: cio_id.clone(),
                    name: event.name.clone(),
                    event_id: event.id.clone(),
                });
                person.events.push(event);
            }
        }
    }

    /// Records an event's dedupe id; false if it was seen before.
    fn first_sighting(&mut self, event: &StoredEvent) -> bool {
        match &event.id {
            Some(id) if !self.seen_event_ids.insert(id.clone()) => {
                self.duplicate_events += 1;
                false
            }
            _ => true,
        }
    }
}

// Objects, relationships and devices: a child module, so it reaches the people.
#[path = "model_links.rs"]
mod links;

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
