use serde_json::json;

use super::*;

pub(super) const SETTINGS: Settings = Settings {
    empty_removes: true,
    allow_email_update_by_id: true,
    relationships_create_objects: false,
};

pub(super) fn id(v: &str) -> Identifier {
    Identifier::Id(v.to_owned())
}

pub(super) fn attrs(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn identify(world: &mut World, target: Identifier, value: Value, timestamp: i64) {
    world.apply(Op::Identify { target, attributes: attrs(value), timestamp, update_only: false });
}

fn event(name: &str, dedupe: Option<&str>) -> StoredEvent {
    StoredEvent {
        name: name.to_owned(),
        kind: "event".to_owned(),
        id: dedupe.map(str::to_owned),
        timestamp: 1,
        data: Map::new(),
        anonymous_id: None,
    }
}

fn attributes_of(world: &World, identifier: Identifier) -> Option<Value> {
    world.person(&identifier).map(|p| Value::Object(p.attributes().clone()))
}

#[test]
fn identify_creates_then_updates_and_unsets() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, id("42"), json!({"plan": "pro", "age": 3}), 10);
    identify(&mut world, id("42"), json!({"plan": "", "age": null, "x": 1}), 11);
    assert_eq!(attributes_of(&world, id("42")), Some(json!({"id": "42", "x": 1})));
    assert_eq!(world.people().count(), 1);
}

#[test]
fn empty_values_are_kept_when_configured() {
    let mut world = World::new(Settings { empty_removes: false, ..SETTINGS });
    identify(&mut world, id("42"), json!({"plan": ""}), 10);
    assert_eq!(attributes_of(&world, id("42")), Some(json!({"id": "42", "plan": ""})));
}

#[test]
fn older_timestamps_do_not_overwrite_per_attribute() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, id("1"), json!({"a": "new", "b": "new"}), 200);
    identify(&mut world, id("1"), json!({"a": "old", "c": "old"}), 100);
    identify(&mut world, id("1"), json!({"b": "same-second"}), 200);
    assert_eq!(
        attributes_of(&world, id("1")),
        Some(json!({"id": "1", "a": "new", "b": "same-second", "c": "old"}))
    );
    // A removal is a change too: an older set must not resurrect it.
    identify(&mut world, id("1"), json!({"a": null}), 300);
    identify(&mut world, id("1"), json!({"a": "stale"}), 250);
    assert!(world.person(&id("1")).is_some_and(|p| !p.attributes().contains_key("a")));
}

#[test]
fn update_only_never_creates() {
    let mut world = World::new(SETTINGS);
    world.apply(Op::Identify {
        target: id("7"),
        attributes: attrs(json!({"a": 1})),
        timestamp: 1,
        update_only: true,
    });
    assert!(world.person(&id("7")).is_none());
    assert_eq!(world.failures().len(), 1);
}

#[test]
fn email_is_case_insensitive_and_body_identifiers_attach() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, Identifier::Email("Ann@Example.com".into()), json!({}), 1);
    // Path id unknown, body email known: that person gets the id.
    identify(&mut world, id("9"), json!({"email": "ann@example.COM", "n": 1}), 2);
    assert_eq!(world.people().count(), 1);
    let person = world.person(&Identifier::Email("ANN@example.com".into()));
    assert_eq!(person.map(Person::key).as_deref(), Some("9"));
}

#[test]
fn identifiers_of_different_people_fail_without_change() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, id("1"), json!({"email": "a@x.io"}), 1);
    identify(&mut world, id("2"), json!({"email": "b@x.io"}), 1);
    identify(&mut world, id("1"), json!({"email": "b@x.io", "plan": "x"}), 2);
    assert_eq!(attributes_of(&world, id("1")), Some(json!({"id": "1", "email": "a@x.io"})));
    assert!(world.failures()[0].reason.contains("Attribute Update Failure"));
}

#[test]
fn ids_change_only_through_cio_id() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, id("1"), json!({}), 1);
    identify(&mut world, id("1"), json!({"id": "2"}), 2);
    assert!(world.person(&id("2")).is_none());
    let cio = world.person(&id("1")).map(|p| p.cio_id().to_owned()).unwrap_or_default();
    assert_eq!(cio, "03000001");
    identify(&mut world, Identifier::CioId(cio), json!({"id": "2"}), 3);
    assert!(world.person(&id("1")).is_none());
    assert!(world.person(&id("2")).is_some());
    identify(&mut world, Identifier::CioId("ffffffff".into()), json!({"a": 1}), 4);
    assert_eq!(world.people().count(), 1);
}

#[test]
fn email_change_by_id_follows_the_setting() {
    for allowed in [true, false] {
        let mut world = World::new(Settings { allow_email_update_by_id: allowed, ..SETTINGS });
        identify(&mut world, id("1"), json!({"email": "old@x.io"}), 1);
        identify(&mut world, id("1"), json!({"email": "new@x.io"}), 2);
        let found = world.person(&Identifier::Email("new@x.io".into())).is_some();
        assert_eq!(found, allowed);
        assert_eq!(world.person(&Identifier::Email("old@x.io".into())).is_some(), !allowed);
    }
}

#[test]
fn delete_then_identify_recreates_empty() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, id("1"), json!({"a": 1}), 1);
    world.apply(Op::Delete { target: id("1") });
    assert!(world.person(&id("1")).is_none());
    identify(&mut world, id("1"), json!({"b": 2}), 2);
    assert_eq!(attributes_of(&world, id("1")), Some(json!({"id": "1", "b": 2})));
}

#[test]
fn suppress_blocks_all_identifiers_until_unsuppressed() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, id("1"), json!({"email": "a@x.io"}), 1);
    world.apply(Op::Suppress { target: id("1") });
    identify(&mut world, id("1"), json!({"a": 1}), 2);
    identify(&mut world, Identifier::Email("A@x.io".into()), json!({"a": 1}), 2);
    world.apply(Op::Event { target: id("1"), event: event("e", None) });
    assert_eq!(world.people().count(), 0);
    assert_eq!(world.failures().len(), 3);
    world.apply(Op::Unsuppress { target: id("1") });
    identify(&mut world, id("1"), json!({"a": 1}), 3);
    assert_eq!(attributes_of(&world, id("1")), Some(json!({"id": "1", "a": 1})));
}

#[test]
fn events_dedupe_by_id() {
    let mut world = World::new(SETTINGS);
    for dedupe in [Some("01H"), Some("01H"), None, None] {
        world.apply(Op::Event { target: id("1"), event: event("e", dedupe) });
    }
    assert_eq!(world.person(&id("1")).map(|p| p.events().len()), Some(3));
    assert_eq!(world.duplicate_events(), 1);
}

#[test]
fn merge_fills_empty_attributes_moves_events_and_deletes_secondary() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, id("p"), json!({"a": "keep"}), 1);
    identify(&mut world, id("s"), json!({"a": "lose", "b": "take"}), 1);
    world.apply(Op::Event { target: id("s"), event: event("e", None) });
    world.apply(Op::Merge { primary: id("p"), secondary: id("s") });
    assert_eq!(attributes_of(&world, id("p")), Some(json!({"id": "p", "a": "keep", "b": "take"})));
    assert_eq!(world.person(&id("p")).map(|p| p.events().len()), Some(1));
    assert!(world.person(&id("s")).is_none());
}

#[test]
fn merge_with_missing_primary_does_nothing() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, id("s"), json!({"b": 1}), 1);
    world.apply(Op::Merge { primary: id("p"), secondary: id("s") });
    assert!(world.person(&id("s")).is_some());
    assert!(world.failures()[0].reason.contains("primary"));
}

#[test]
fn a_body_id_contradicting_the_path_creates_nobody() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, id("1"), json!({"id": "2", "cio_id": "x"}), 1);
    assert_eq!(world.people().count(), 0);
    identify(&mut world, id("1"), json!({"id": "1", "cio_id": "x"}), 1);
    assert_eq!(attributes_of(&world, id("1")), Some(json!({"id": "1"})));
}

#[test]
fn activity_notes_new_people_and_accepted_events_only() {
    let mut world = World::new(SETTINGS);
    identify(&mut world, id("1"), json!({"a": 1}), 1);
    identify(&mut world, id("1"), json!({"a": 2}), 2);
    world.apply(Op::Event { target: id("1"), event: event("e", Some("01A")) });
    world.apply(Op::Event { target: id("1"), event: event("e", Some("01A")) });
    let cio_id = world.person(&id("1")).map(|p| p.cio_id().to_owned()).unwrap_or_default();
    assert_eq!(
        world.take_activity(),
        vec![
            Activity::PersonCreated { cio_id: cio_id.clone() },
            Activity::EventAccepted { cio_id, name: "e".into(), event_id: Some("01A".into()) },
        ],
        "no second creation, no repeated event"
    );
    assert_eq!(world.take_activity(), vec![], "taking forgets");
}
