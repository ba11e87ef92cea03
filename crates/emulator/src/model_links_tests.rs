use serde_json::json;

use super::*;
use crate::model::tests::{attrs, id, SETTINGS};
use crate::model::Settings;

fn acme() -> ObjectRef {
    ObjectRef::Key { type_id: 1, object_id: "acme".into() }
}

fn identify_person(world: &mut World, who: &str) {
    world.apply(Op::Identify {
        target: id(who),
        attributes: Map::new(),
        timestamp: 1,
        update_only: false,
    });
}

fn identify_object(world: &mut World, object: ObjectRef, attributes: Value) {
    let op =
        Op::Object(ObjectOp::Identify { object, attributes: attrs(attributes), people: vec![] });
    assert_eq!(world.admit(&op), Ok(()));
    world.apply(op);
}

fn relate(world: &mut World, who: &str, object: ObjectRef, attributes: Value, add: bool) {
    let links = vec![ObjectLink { object, attributes: attrs(attributes) }];
    world.apply(Op::Relationships { target: id(who), links, add, create: true });
}

fn relationships(world: &World, who: &str) -> Vec<(String, Value)> {
    world
        .relationships_of(&id(who))
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.object_id, Value::Object(r.attributes)))
        .collect()
}

fn device(token: &str, platform: &str, attributes: Value) -> Device {
    Device {
        token: token.into(),
        platform: platform.into(),
        last_used: 5,
        attributes: attrs(attributes),
    }
}

fn tokens(world: &World, who: &str) -> Option<Vec<String>> {
    world.devices_of(&id(who)).map(|devices| devices.into_iter().map(|d| d.token).collect())
}

#[test]
fn objects_are_created_updated_and_emptied_attribute_by_attribute() {
    let mut world = World::new(SETTINGS);
    identify_object(&mut world, acme(), json!({"name": "Acme", "plan": "pro", "seats": 5}));
    identify_object(&mut world, acme(), json!({"plan": "", "seats": null, "tier": 2}));
    let objects = world.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(Value::Object(objects[0].attributes.clone()), json!({"name": "Acme", "tier": 2}));
    assert_eq!(objects[0].cio_object_id, "obb7fd050001");
    // By cio_object_id: updates the same object, never creates one.
    let by_cio = ObjectRef::Cio("obb7fd050001".into());
    identify_object(&mut world, by_cio, json!({"name": "Acme Inc"}));
    identify_object(&mut world, ObjectRef::Cio("ob0000000000".into()), json!({"name": "x"}));
    assert_eq!(world.objects().len(), 1);
    assert_eq!(world.objects()[0].attributes["name"], "Acme Inc");
    assert_eq!(world.failures()[0].identifier, "cio_object_id:ob0000000000");
}

#[test]
fn relationships_come_from_both_sides_and_go_with_the_object() {
    let mut world = World::new(SETTINGS);
    identify_object(&mut world, acme(), json!({"name": "Acme"}));
    relate(&mut world, "42", acme(), json!({"role": "admin", "since": 3}), true);
    // The object side names existing people only.
    let people = vec![
        PersonLink { person: id("42"), attributes: attrs(json!({"since": "", "team": "a"})) },
        PersonLink { person: id("nobody"), attributes: Map::new() },
    ];
    world.apply(Op::Object(ObjectOp::Relationships { object: acme(), people, add: true }));
    assert_eq!(
        relationships(&world, "42"),
        [("acme".into(), json!({"role": "admin", "team": "a"}))]
    );
    assert!(world.person(&id("nobody")).is_none(), "an object item creates no person");
    assert_eq!(world.failures().len(), 1);
    let view =
        world.object(&acme()).map(|o| (o.relationships.len(), o.relationships[0].customer.clone()));
    assert_eq!(view, Some((1, "42".to_owned())));

    relate(&mut world, "42", acme(), json!({}), false);
    assert!(relationships(&world, "42").is_empty());
    relate(&mut world, "42", acme(), json!({}), true);
    world.apply(Op::Object(ObjectOp::Delete { object: acme() }));
    assert!(world.objects().is_empty() && relationships(&world, "42").is_empty());
}

#[test]
fn relating_to_a_missing_object_follows_the_setting() {
    for creates in [false, true] {
        let mut world = World::new(Settings { relationships_create_objects: creates, ..SETTINGS });
        relate(&mut world, "42", acme(), json!({"role": "x"}), true);
        assert!(world.person(&id("42")).is_some(), "a person item creates its person");
        assert_eq!(world.objects().len(), usize::from(creates));
        assert_eq!(relationships(&world, "42").len(), usize::from(creates));
        assert_eq!(world.failures().len(), usize::from(!creates));
    }
}

#[test]
fn deleting_suppressing_or_merging_a_person_takes_their_links() {
    let mut world = World::new(SETTINGS);
    identify_object(&mut world, acme(), json!({}));
    let other = ObjectRef::Key { type_id: 2, object_id: "course".into() };
    identify_object(&mut world, other.clone(), json!({}));
    for who in ["1", "2", "3", "4"] {
        relate(&mut world, who, acme(), json!({"who": who}), true);
        world.apply(Op::Device(DeviceOp::Add {
            target: id(who),
            device: device(who, "ios", json!({})),
        }));
    }
    relate(&mut world, "4", other, json!({"k": 1}), true);
    world.apply(Op::Delete { target: id("1") });
    world.apply(Op::Suppress { target: id("2") });
    world.apply(Op::Merge { primary: id("3"), secondary: id("4") });
    let view = world.object(&acme()).unwrap_or_else(|| panic!("acme exists"));
    let left: Vec<(String, Value)> =
        view.relationships.into_iter().map(|r| (r.customer, Value::Object(r.attributes))).collect();
    assert_eq!(left, [("3".to_owned(), json!({"who": "3"}))], "the primary keeps its own values");
    assert_eq!(relationships(&world, "3").len(), 2, "and gains the relationship it lacked");
    assert_eq!(tokens(&world, "3"), Some(vec!["3".to_owned()]), "devices do not move in a merge");
    // Their tokens are held by nobody: deleting them elsewhere logs nothing.
    for token in ["1", "2", "4"] {
        world.apply(Op::Device(DeviceOp::Delete { target: id("3"), token: token.into() }));
    }
    assert_eq!(world.failures(), [], "no token is still held by someone gone");
    identify_person(&mut world, "1");
    assert_eq!(tokens(&world, "1"), Some(vec![]), "a re-created person starts without devices");
    assert!(relationships(&world, "1").is_empty());
}

#[test]
fn devices_are_upserted_by_token_and_move_between_people() {
    let mut world = World::new(SETTINGS);
    let add = |who: &str, device| Op::Device(DeviceOp::Add { target: id(who), device });
    world.apply(add("1", device("t1", "ios", json!({"app_version": "1", "device_os": "17"}))));
    world.apply(add("1", device("t1", "android", json!({"app_version": "2"}))));
    world.apply(add("1", device("t2", "ios", json!({}))));
    let first = world.devices_of(&id("1")).unwrap_or_default();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].platform, "android");
    assert_eq!(
        Value::Object(first[0].attributes.clone()),
        json!({"app_version": "2", "device_os": "17"})
    );
    world.apply(add("2", device("t1", "ios", json!({}))));
    assert_eq!(tokens(&world, "1"), Some(vec!["t2".to_owned()]));
    assert_eq!(tokens(&world, "2"), Some(vec!["t1".to_owned()]));
    // Deleting a token someone else holds changes nothing and is logged.
    let delete = |who: &str, token: &str| {
        Op::Device(DeviceOp::Delete { target: id(who), token: token.into() })
    };
    world.apply(delete("1", "t1"));
    assert_eq!(tokens(&world, "2"), Some(vec!["t1".to_owned()]));
    assert_eq!(world.failures().len(), 1);
    world.apply(delete("2", "t1"));
    world.apply(delete("2", "unknown"));
    world.apply(delete("nobody", "t2"));
    assert_eq!(tokens(&world, "2"), Some(vec![]));
    assert!(world.person(&id("nobody")).is_none(), "a delete creates nobody");
    assert_eq!(world.failures().len(), 1);
}

#[test]
fn suppressed_and_unknown_cio_ids_get_no_devices_or_relationships() {
    let mut world = World::new(Settings { relationships_create_objects: true, ..SETTINGS });
    identify_person(&mut world, "1");
    world.apply(Op::Suppress { target: id("1") });
    let add = Op::Device(DeviceOp::Add { target: id("1"), device: device("t", "ios", json!({})) });
    world.apply(add);
    relate(&mut world, "1", acme(), json!({}), true);
    let ghost = Op::Device(DeviceOp::Add {
        target: Identifier::CioId("ffffffff".into()),
        device: device("t", "ios", json!({})),
    });
    world.apply(ghost);
    assert_eq!(world.people().count(), 0);
    assert!(world.objects().is_empty());
    assert_eq!(world.failures().len(), 3);
}

#[test]
fn stored_limits_refuse_what_would_break_them() {
    let mut world = World::new(SETTINGS);
    let chunk = |prefix: &str| {
        Value::Object((0..25).map(|i| (format!("{prefix}{i}"), json!("x".repeat(1000)))).collect())
    };
    for prefix in ["a", "b", "c"] {
        identify_object(&mut world, acme(), chunk(prefix));
    }
    let over = Op::Object(ObjectOp::Identify {
        object: acme(),
        attributes: attrs(chunk("d")),
        people: vec![],
    });
    let refused = world.admit(&over).map_err(|p| (p.reason, p.field, p.message));
    assert_eq!(
        refused,
        Err((
            REASON_TOO_LARGE,
            "attributes".into(),
            "object attributes cannot total more than 100000 bytes".into()
        ))
    );
    // Removing makes room: the same call with the a-attributes emptied fits.
    let mut smaller = attrs(chunk("d"));
    smaller.extend((0..25).map(|i| (format!("a{i}"), Value::Null)));
    let fits =
        Op::Object(ObjectOp::Identify { object: acme(), attributes: smaller, people: vec![] });
    assert_eq!(world.admit(&fits), Ok(()));

    let many: Value = Value::Object((0..301).map(|i| (format!("k{i}"), json!(1))).collect());
    let links = vec![ObjectLink { object: acme(), attributes: attrs(many) }];
    let relate = Op::Relationships { target: id("1"), links, add: true, create: true };
    let identify =
        Op::Identify { target: id("1"), attributes: Map::new(), timestamp: 1, update_only: false };
    let both = Op::Many(vec![identify, relate]);
    let refused = world.admit(&both).map_err(|p| p.message);
    assert_eq!(refused, Err("relationship cannot have more than 300 attributes".into()));
}
