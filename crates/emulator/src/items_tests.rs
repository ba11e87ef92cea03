use serde_json::json;

use super::*;

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// The field and message an item is refused with.
fn refusal(result: Result<Op, Problem>) -> (String, String) {
    result.err().map(|p| (p.field, p.message)).unwrap_or_default()
}

fn object_item(identifiers: Value) -> Result<Op, Problem> {
    object_op(&object(json!({"identifiers": identifiers})), "delete")
}

#[test]
fn object_type_ids_are_strings_holding_integers_from_1() {
    let ok = object_item(json!({"object_type_id": "12", "object_id": "acme"}));
    let key = ObjectRef::Key { type_id: 12, object_id: "acme".into() };
    assert_eq!(ok, Ok(Op::Object(ObjectOp::Delete { object: key })));
    for bad in [json!(1), json!("0"), json!("01"), json!("1a"), json!(""), json!("-1"), json!(null)]
    {
        let (field, _) = refusal(object_item(json!({"object_type_id": bad, "object_id": "acme"})));
        assert_eq!(field, "identifiers.object_type_id", "{bad}");
    }
}

#[test]
fn objects_are_named_one_way_or_the_other() {
    let cio = object_item(json!({"cio_object_id": "ob1"}));
    assert_eq!(cio, Ok(Op::Object(ObjectOp::Delete { object: ObjectRef::Cio("ob1".into()) })));
    let both = json!({"object_type_id": "1", "object_id": "a", "cio_object_id": "ob1"});
    for bad in [both, json!({}), json!("acme")] {
        assert_eq!(refusal(object_item(bad.clone())).0, "identifiers", "{bad}");
    }
    assert_eq!(refusal(object_op(&Map::new(), "delete")).1, "identifiers is required");
    let long = json!({"object_type_id": "1", "object_id": "x".repeat(151)});
    assert_eq!(refusal(object_item(long)).1, "object_id cannot be longer than 150 bytes");
    let missing = json!({"object_type_id": "1"});
    assert_eq!(refusal(object_item(missing)).1, "object_id must be a non-empty string");
    let empty = json!({"object_type_id": "1", "object_id": ""});
    assert_eq!(refusal(object_item(empty)).0, "identifiers.object_id");
    let unknown = object_op(&object(json!({"identifiers": {"cio_object_id": "o"}})), "merge");
    assert_eq!(refusal(unknown).0, "action");
}

#[test]
fn object_identify_reads_attributes_and_people() {
    let item = object(json!({
        "identifiers": {"object_type_id": "1", "object_id": "acme"},
        "attributes": {"name": "Acme", "gone": null},
        "cio_relationships": [{"identifiers": {"email": "a@x.io"}, "relationship_attributes": {"role": "admin"}}]
    }));
    let Ok(Op::Object(ObjectOp::Identify { attributes, people, .. })) =
        object_op(&item, "identify")
    else {
        panic!("a valid object identify is refused");
    };
    assert_eq!(Value::Object(attributes), json!({"name": "Acme", "gone": null}));
    assert_eq!(people[0].person, Identifier::Email("a@x.io".into()));
    assert_eq!(Value::Object(people[0].attributes.clone()), json!({"role": "admin"}));

    let check = |item: Value, action: &str| refusal(object_op(&object(item), action));
    let ids = json!({"object_type_id": "1", "object_id": "acme"});
    let reserved = json!({"identifiers": ids, "attributes": {"relationship": "x"}});
    assert_eq!(check(reserved, "identify").0, "attributes.relationship");
    let long_value = json!({"identifiers": ids, "attributes": {"plan": "x".repeat(1001)}});
    assert_eq!(
        check(long_value, "identify").1,
        "value for attribute 'plan' cannot be longer than 1000 bytes"
    );
    let id_removed = json!({"identifiers": ids, "attributes": {"id": "", "code": "x".repeat(200)},
                            "cio_relationships": [{"identifiers": {"id": "1"},
                                                   "relationship_attributes": {"id": "y".repeat(200)}}]});
    assert!(
        object_op(&object(id_removed), "identify").is_ok(),
        "an object's `id` is no identifier"
    );
    let id_too_long = json!({"identifiers": ids, "attributes": {"id": "x".repeat(1001)}});
    assert_eq!(
        check(id_too_long, "identify").1,
        "value for attribute 'id' cannot be longer than 1000 bytes"
    );
    let not_an_object = json!({"identifiers": ids, "attributes": [1]});
    assert_eq!(check(not_an_object, "identify").0, "attributes");
    assert_eq!(
        check(json!({"identifiers": ids}), "add_relationships").1,
        "cio_relationships is required"
    );
    for person in
        [json!({"phone": "+1"}), json!({"id": "1", "email": "a@x.io"}), json!({"id": 1}), json!({})]
    {
        let item = json!({"identifiers": ids, "cio_relationships": [{"identifiers": person}]});
        assert_eq!(
            check(item, "add_relationships").0,
            "cio_relationships.0.identifiers",
            "{person}"
        );
    }
    let nameless =
        json!({"identifiers": ids, "cio_relationships": [{"relationship_attributes": {}}]});
    assert_eq!(
        check(nameless, "delete_relationships").1,
        "cio_relationships.0.identifiers is required"
    );
    let bad_attributes = json!({"identifiers": ids,
        "cio_relationships": [{"identifiers": {"id": "1"}, "relationship_attributes": "admin"}]});
    assert_eq!(
        check(bad_attributes, "add_relationships").0,
        "cio_relationships.0.relationship_attributes"
    );
}

#[test]
fn person_relationship_items_name_objects() {
    let item = object(json!({"cio_relationships": [
        {"identifiers": {"object_type_id": "1", "object_id": "acme"}, "relationship_attributes": {"role": "x"}},
        {"identifiers": {"cio_object_id": "ob1"}}
    ]}));
    let Ok(Op::Relationships { links, add: true, create: true, .. }) =
        person_op(&item, "add_relationships", Identifier::Id("1".into()), 0)
    else {
        panic!("a valid add_relationships is refused");
    };
    assert_eq!(links[1].object, ObjectRef::Cio("ob1".into()));
    let person = object(json!({"cio_relationships": [{"identifiers": {"id": "42"}}]}));
    let refused = person_op(&person, "delete_relationships", Identifier::Id("1".into()), 0);
    assert_eq!(refusal(refused).0, "cio_relationships.0.identifiers");
    let not_array = object(json!({"cio_relationships": {"identifiers": {"cio_object_id": "o"}}}));
    let refused = person_op(&not_array, "add_relationships", Identifier::Id("1".into()), 0);
    assert_eq!(refusal(refused).1, "cio_relationships must be an array");
}

#[test]
fn devices_need_a_token_and_a_known_platform() {
    let target = || Identifier::Id("1".into());
    let add =
        |device: Value| person_op(&object(json!({"device": device})), "add_device", target(), 7);
    let full = add(json!({"token": "t", "platform": "android", "last_used": 5,
                          "attributes": {"push_enabled": "true", "app_version": "2"}, "primary": true}));
    let Ok(Op::Device(DeviceOp::Add { device, .. })) = full else {
        panic!("a valid device is refused");
    };
    assert_eq!(
        (device.token.as_str(), device.platform.as_str(), device.last_used),
        ("t", "android", 5)
    );
    let Ok(Op::Device(DeviceOp::Add { device, .. })) =
        add(json!({"token": "t", "platform": "ios"}))
    else {
        panic!("a device without last_used is refused");
    };
    assert_eq!(device.last_used, 7, "the receive time stands in for last_used");
    let cases = [
        (json!({"platform": "ios"}), "device.token"),
        (json!({"token": "", "platform": "ios"}), "device.token"),
        (json!({"token": "t"}), "device.platform"),
        (json!({"token": "t", "platform": "web"}), "device.platform"),
        (json!({"token": "t", "platform": "IOS"}), "device.platform"),
        (json!({"token": "t", "platform": "ios", "last_used": "5"}), "device.last_used"),
        (json!({"token": "t", "platform": "ios", "last_used": 1.5}), "device.last_used"),
        (json!({"token": "t", "platform": "ios", "attributes": {"n": 1}}), "device.attributes.n"),
        (
            json!({"token": "t", "platform": "ios", "attributes": {"push_enabled": "yes"}}),
            "device.attributes.push_enabled",
        ),
        (json!({"token": "t", "platform": "ios", "attributes": []}), "device.attributes"),
        (json!("t"), "device"),
    ];
    for (device, field) in cases {
        assert_eq!(refusal(add(device.clone())).0, field, "{device}");
    }
    assert_eq!(refusal(person_op(&Map::new(), "add_device", target(), 0)).1, "device is required");
    let delete =
        person_op(&object(json!({"device": {"token": "t"}})), "delete_device", target(), 0);
    assert_eq!(delete, Ok(Op::Device(DeviceOp::Delete { target: target(), token: "t".into() })));
    let tokenless = person_op(&object(json!({"device": {}})), "delete_device", target(), 0);
    assert_eq!(refusal(tokenless).0, "device.token");
}

#[test]
fn v1_relationships_need_an_action_and_relationships() {
    let target = Identifier::Id("1".into());
    let ok = json!({"action": "delete_relationships",
                    "relationships": [{"identifiers": {"object_type_id": "1", "object_id": "a"}}]});
    let Ok(Op::Relationships { add: false, create: false, links, .. }) =
        v1_relationships(&ok, &target)
    else {
        panic!("valid v1 cio_relationships refused");
    };
    assert_eq!(links.len(), 1);
    let no_action = json!({"relationships": []});
    assert_eq!(refusal(v1_relationships(&no_action, &target)).0, "cio_relationships.action");
    let no_list = json!({"action": "add_relationships"});
    assert_eq!(refusal(v1_relationships(&no_list, &target)).0, "cio_relationships.relationships");
    assert_eq!(refusal(v1_relationships(&json!([]), &target)).0, "cio_relationships");
}
