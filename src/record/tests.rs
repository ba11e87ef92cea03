use serde_json::{json, Map, Value};

use super::*;

fn attributes(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

fn known(value: Value) -> Fingerprints {
    attributes(value).iter().map(|(name, value)| (name.clone(), fingerprint(value))).collect()
}

#[test]
fn a_fingerprint_is_stable_and_tells_values_and_types_apart() {
    // The first 8 bytes of SHA-256("\"Ann\""), as stored: a change of
    // hash would make every stored record useless at an upgrade.
    assert_eq!(
        fingerprint(&json!("Ann")),
        i64::from_be_bytes([0xc1, 0x3d, 0x58, 0x48, 0x57, 0x22, 0x26, 0x64])
    );
    let values = [
        json!("1"),
        json!(1),
        json!(1.5),
        json!(null),
        json!(true),
        json!([1]),
        json!({"a": 1}),
        json!(""),
    ];
    for (i, a) in values.iter().enumerate() {
        for b in &values[i + 1..] {
            assert_ne!(fingerprint(a), fingerprint(b), "{a} and {b}");
        }
    }
}

#[test]
fn an_unknown_customer_is_sent_whole() {
    let mut sent = attributes(json!({"email": "a@x.io", "plan": null}));
    let (diff, set) = diff(&mut sent, None);
    assert_eq!(diff, Diff::Unknown);
    assert_eq!(sent.len(), 2);
    assert_eq!(set, known(json!({"email": "a@x.io", "plan": null})));
}

#[test]
fn what_customerio_holds_is_taken_out() {
    let record = known(json!({"email": "a@x.io", "plan": "free", "first_name": "Ann"}));
    let mut sent =
        attributes(json!({"email": "a@x.io", "plan": "pro", "first_name": "Ann", "about": null}));
    let (diff, set) = diff(&mut sent, Some(&record));
    assert_eq!(diff, Diff::Stripped(2));
    assert_eq!(Value::Object(sent), json!({"plan": "pro", "about": null}));
    assert_eq!(set, known(json!({"plan": "pro", "about": null})));
}

#[test]
fn nothing_differs_nothing_is_sent() {
    let record = known(json!({"email": "a@x.io", "plan": "free", "unmapped_since": 1}));
    let mut sent = attributes(json!({"email": "a@x.io", "plan": "free"}));
    let (diff, set) = diff(&mut sent, Some(&record));
    assert_eq!(diff, Diff::Unchanged);
    assert!(set.is_empty());
    // A known customer's identify without attributes changes nothing either.
    assert_eq!(diff_of(json!({}), Some(&record)), Diff::Unchanged);
    // An unknown one's creates the person: it goes.
    assert_eq!(diff_of(json!({}), None), Diff::Unknown);
}

#[test]
fn a_null_is_a_value_like_any_other() {
    let record = known(json!({"plan": null}));
    assert_eq!(diff_of(json!({"plan": null}), Some(&record)), Diff::Unchanged);
    assert_eq!(diff_of(json!({"plan": "free"}), Some(&record)), Diff::Stripped(0));
    // Not in the record (a newly mapped attribute): sent, even as null.
    assert_eq!(diff_of(json!({"plan": null, "tier": null}), Some(&record)), Diff::Stripped(1));
}

fn diff_of(value: Value, record: Option<&Fingerprints>) -> Diff {
    diff(&mut attributes(value), record).0
}

fn set(customer: &str, value: Value) -> Effect {
    Effect::Set {
        customer: customer.into(),
        attributes: Assigned::from(&known(value)),
        whole: None,
    }
}

#[test]
fn a_write_keeps_the_order_of_what_was_accepted() {
    let write = Write::of([
        set("1", json!({"plan": "free", "email": "a@x.io"})),
        Effect::None,
        set("1", json!({"plan": "pro"})),
        set("2", json!({"plan": "free"})),
        Effect::Forget(vec!["2".into(), "3".into()]),
        Effect::Forget(vec!["4".into()]),
        set("4", json!({"email": "d@x.io"})),
    ]);
    assert_eq!(write.set.len(), 2, "{write:?}");
    let set = |customer: &str| write.set[customer].attributes.fingerprints();
    assert_eq!(set("1"), known(json!({"plan": "pro", "email": "a@x.io"})));
    // Forgotten, then set: the old row goes, only the new values stay.
    assert_eq!(set("4"), known(json!({"email": "d@x.io"})));
    assert_eq!(write.forget, ["2", "3", "4"]);
    assert!(Write::of([Effect::None]).is_empty());
}

#[test]
fn a_merge_forgets_the_secondary_and_keeps_the_primary_with_no_value() {
    let merged = Effect::Merge { primary: "1".into(), secondary: "2".into() };
    let write =
        Write::of([set("1", json!({"plan": "pro"})), set("2", json!({"plan": "free"})), merged]);
    // Held by Customer.io with no value known (the store writes the
    // secondary's watched values to the primary and deletes the secondary).
    assert_eq!(write.merges, [("1".to_owned(), "2".to_owned())]);
    assert!(write.set.is_empty() && write.forget.is_empty(), "{write:?}");
    assert!(!write.is_empty());
}

#[test]
fn a_watched_value_keeps_its_value_only_when_asked_and_short() {
    let plan = WatchedValue::of(&json!("pro"), true, (0x10, 2));
    assert_eq!(plan.fingerprint, fingerprint(&json!("pro")));
    assert_eq!(plan.value, Some(json!("pro")));
    assert_eq!(WatchedValue::from_json(&plan.to_json()), Some(plan));
    assert_eq!(WatchedValue::of(&json!("pro"), false, (0, 0)).value, None);
    let long = json!("x".repeat(MAX_KEPT_VALUE_BYTES));
    let kept = WatchedValue::of(&long, true, (1, 0));
    assert_eq!((kept.value, kept.fingerprint), (None, fingerprint(&long)));
    assert_eq!(WatchedValue::from_json(&json!({"value": 1})), None);
}

#[test]
fn what_an_accepted_identify_sets_is_stored_as_an_object_of_fingerprints() {
    let fingerprints = known(json!({"plan": "pro", "odd \"name\"\\": 1, "": null}));
    let assigned = Assigned::from(&fingerprints);
    let stored: Value = serde_json::from_str(assigned.as_str()).expect("JSON");
    assert_eq!(stored.as_object().map(Map::len), Some(3), "{stored}");
    assert_eq!(assigned.fingerprints(), fingerprints);
    assert_eq!(Assigned::of([]).as_str(), "{}");
}

/// An identify item as the sink encodes it.
fn item(attributes: Value) -> Vec<u8> {
    let item = json!({"type": "person", "action": "identify", "identifiers": {"id": "7"},
                      "timestamp": 1, "attributes": attributes});
    serde_json::to_vec(&item).expect("JSON")
}

/// The item diffed as the sink does, against the attributes' values
/// diffed as `diff` does: the same outcome, item and fingerprints.
fn both_ways(attributes: Value, record: Option<&Fingerprints>) -> Diff {
    let json = item(attributes.clone());
    let diffed = item::Identify::read(&json).expect("an item").diff(&json, record);
    let mut values = self::attributes(attributes);
    let (diff, set) = diff(&mut values, record);
    assert_eq!(diffed.diff, diff);
    assert_eq!(diffed.assigned.fingerprints(), set);
    let sent: Value =
        serde_json::from_slice(diffed.json.as_deref().unwrap_or(&json)).expect("JSON");
    assert_eq!(sent["attributes"], Value::Object(values), "{sent}");
    assert_eq!(sent["identifiers"], json!({"id": "7"}));
    diff
}

#[test]
fn the_sink_diffs_the_item_it_encoded_as_the_values_are_diffed() {
    let values = json!({"email": "a@x.io", "plan": "pro", "score": 0.30000000000000004,
                        "tags": ["a", {"b": [1.5, null]}], "quote \"\\": "\u{1}é", "n": -3});
    assert_eq!(both_ways(values.clone(), None), Diff::Unknown);
    let record = known(json!({"email": "a@x.io", "plan": "free", "score": 0.30000000000000004,
                              "tags": ["a", {"b": [1.5, null]}], "quote \"\\": "\u{1}é"}));
    assert_eq!(both_ways(values.clone(), Some(&record)), Diff::Stripped(4));
    assert_eq!(both_ways(json!({"plan": "free"}), Some(&record)), Diff::Unchanged);
    assert_eq!(both_ways(json!({"plan": "team"}), Some(&record)), Diff::Stripped(0));
    assert_eq!(both_ways(json!({}), Some(&record)), Diff::Unchanged);
    assert_eq!(both_ways(json!({}), None), Diff::Unknown);
    // The fingerprint of the text sent is the value's.
    let json = item(json!({"tags": ["a", {"b": [1.5, null]}]}));
    let set = item::Identify::read(&json).expect("an item").diff(&json, None).assigned;
    assert_eq!(set.fingerprints()["tags"], fingerprint(&json!(["a", {"b": [1.5, null]}])));
    assert!(item::Identify::read(b"not json").is_none());
}

#[test]
fn an_effect_is_small_as_one_waits_with_each_operation_in_flight() {
    assert!(std::mem::size_of::<Effect>() <= 56, "{}", std::mem::size_of::<Effect>());
}

#[test]
fn a_whole_is_what_was_known_with_what_was_sent_over_it() {
    let held =
        Known { attributes: known(json!({"plan": "free", "email": "a@x.io"})), ..Known::default() };
    let sent = known(json!({"plan": "pro", "name": "Ann"}));
    let sent = || sent.iter().map(|(name, fp)| (name.as_str(), *fp));
    assert_eq!(Whole::of(None, sent()), None, "an unknown customer");
    assert_eq!(Whole::of(Some(&held), sent()), None, "a row of no version read");
    let held = Known { version: Some(7), ..held.clone() };
    let whole = Whole::of(Some(&held), sent()).expect("a whole");
    assert_eq!(whole.version, 7);
    let all = known(json!({"plan": "pro", "email": "a@x.io", "name": "Ann"}));
    assert_eq!(whole.attributes.fingerprints(), all);
}

#[test]
fn a_customer_forgotten_or_merged_earlier_in_the_write_is_not_written_whole() {
    let whole = || Some(Box::new(Whole { attributes: Assigned::of([("plan", 1)]), version: 7 }));
    let set = |customer: &str| Effect::Set {
        customer: customer.into(),
        attributes: Assigned::of([("plan", 1)]),
        whole: whole(),
    };
    let merged = Effect::Merge { primary: "3".into(), secondary: "4".into() };
    let write = Write::of([
        Effect::Forget(vec!["1".into()]),
        set("1"),
        merged,
        set("3"),
        set("4"),
        set("5"),
    ]);
    let wholes: Vec<(&str, bool)> =
        ["1", "3", "4", "5"].iter().map(|c| (*c, write.set[*c].whole.is_some())).collect();
    assert_eq!(wholes, [("1", false), ("3", false), ("4", false), ("5", true)]);
}
