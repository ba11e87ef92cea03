//! Manual segments: who is in which, by `cio_id`, so membership follows a
//! person through identifier changes. Customer.io creates manual segments
//! with its App API, which the emulator lacks, so a segment exists here
//! once someone is added to it.

use std::collections::{BTreeMap, BTreeSet};

use ciosync_track_api::Identifier;
use serde::Serialize;

use crate::model::World;

/// One identifier `add_customers`/`remove_customers` named that matched
/// nobody; answered 200 like the rest (UNCONFIRMED: the spec says nothing
/// of unknown people), listed so tests can see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignored {
    /// The segment named.
    pub segment_id: i32,
    /// `add` or `remove`.
    pub action: &'static str,
    /// `id`, `email` or `cio_id`.
    pub id_type: &'static str,
    /// The value as sent.
    pub value: String,
}

/// Every manual segment's members.
#[derive(Debug, Default, Clone)]
pub struct Segments {
    members: BTreeMap<i32, BTreeSet<String>>,
    ignored: Vec<Ignored>,
}

/// Which way a call changes a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `add_customers`.
    Add,
    /// `remove_customers`.
    Remove,
}

impl Segments {
    /// Adds or removes the people `identifiers` name; those naming nobody
    /// are noted as ignored. Returns the real changes, in order, by
    /// `cio_id`: adding a member or removing a non-member changes nothing,
    /// so it starts no campaign (as in Customer.io, where a campaign starts
    /// when a person enters or leaves).
    pub fn change(
        &mut self,
        world: &World,
        segment_id: i32,
        change: Change,
        ids: &[Identifier],
    ) -> Vec<(String, Change)> {
        let members = self.members.entry(segment_id).or_default();
        let mut changed = Vec::new();
        for identifier in ids {
            let Some(person) = world.person(identifier) else {
                self.ignored.push(ignored(segment_id, change, identifier));
                continue;
            };
            let cio_id = person.cio_id().to_owned();
            let did = match change {
                Change::Add => members.insert(cio_id.clone()),
                Change::Remove => members.remove(&cio_id),
            };
            if did {
                changed.push((cio_id, change));
            }
        }
        changed
    }

    /// Each segment's current members by key (id, else email, else
    /// `cio_<cio_id>`); people deleted since are left out.
    pub fn members(&self, world: &World) -> BTreeMap<i32, Vec<String>> {
        let key = |cio_id: &String| {
            world.person(&Identifier::CioId(cio_id.clone())).map(|person| person.key())
        };
        self.members
            .iter()
            .map(|(segment, members)| (*segment, members.iter().filter_map(key).collect()))
            .collect()
    }

    /// The identifiers that named nobody, oldest first.
    pub fn ignored(&self) -> &[Ignored] {
        &self.ignored
    }
}

fn ignored(segment_id: i32, change: Change, identifier: &Identifier) -> Ignored {
    let action = if change == Change::Add { "add" } else { "remove" };
    let (id_type, value) = match identifier {
        Identifier::Id(value) => ("id", value),
        Identifier::Email(value) => ("email", value),
        Identifier::CioId(value) => ("cio_id", value),
        Identifier::Phone(value) => ("phone", value),
    };
    Ignored { segment_id, action, id_type, value: value.clone() }
}
