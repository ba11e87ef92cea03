//! `[[sync.events]]` where the WAL has no old row: events carrying a
//! [`crate::customer::Watch`], decided against the record by the sink.

use super::*;
use crate::config::ChangeEventConfig;
use crate::customer::{Event, Watch};

fn with_events() -> SyncConfig {
    let mut config = sync(OnIdChange::Merge);
    config.events = vec![
        ChangeEventConfig {
            name: "plan_changed".into(),
            when_changed: Some("plan".into()),
            when: None,
            data: vec!["email".into()],
        },
        ChangeEventConfig {
            name: "password_updated".into(),
            when_changed: None,
            when: Some("password_hash".into()),
            data: Vec::new(),
        },
    ];
    config
}

fn map_on(identity: ReplicaIdentity, record: bool, op: RowOp) -> Mapped {
    let table = Arc::new(Table { replica_identity: identity, ..(*table()).clone() });
    let position = crate::change::WalPosition { commit_lsn: 0x10, index: 2 };
    let change = RowChange { table, op, commit_time: T, position };
    Mapper::new(&[with_events()]).with_record(record).map(&change)
}

fn update(new: Row) -> RowOp {
    RowOp::Update { old: None, old_is_key_only: false, new }
}

fn events_of(mapped: &Mapped) -> Vec<&Event> {
    mapped
        .ops
        .iter()
        .filter_map(|op| match op {
            CustomerOp::Event(event) => Some(event),
            _ => None,
        })
        .collect()
}

fn watch(key: &str, value: serde_json::Value, fires: bool, with_from: bool) -> Option<Box<Watch>> {
    Some(Box::new(Watch { key: key.into(), value, fires, with_from, at: (0x10, 2) }))
}

#[test]
fn an_update_without_the_old_row_carries_each_event_to_decide_against_the_record() {
    let mapped = map_on(ReplicaIdentity::Default, true, update(alice()));
    assert_eq!(
        mapped.ops[0],
        identify("1", json!({"email": "a@example.com", "plan": "free", "about": "hi"}))
    );
    let events = events_of(&mapped);
    assert_eq!(events.len(), 2, "{:?}", mapped.ops);
    assert_eq!(events[0].name, "plan_changed");
    assert_eq!(events[0].watch, watch("plan_changed/plan", json!("free"), true, true));
    // `from` is added by the sink, from the record.
    assert_eq!(
        serde_json::Value::Object(events[0].data.clone()),
        json!({"to": "free", "email": "a@example.com"})
    );
    assert_eq!(events[1].watch, watch("password_updated/password_hash", json!("h1"), true, false));
    assert!(events[1].data.is_empty());
    assert!(events.iter().all(|e| !e.only_records() && e.timestamp == T));
    // The same id as the old row's transition would give: a replay, or a
    // switch of identity, is deduplicated by Customer.io.
    let mut new = alice();
    new[2] = t("pro");
    let full = RowOp::Update { old: Some(alice()), old_is_key_only: false, new };
    let from_wal = map_on(ReplicaIdentity::Full, true, full);
    assert_eq!(events_of(&from_wal)[0].event_id, events[0].event_id);
    assert_eq!(events_of(&from_wal)[0].watch, None);
}

#[test]
fn an_insert_records_the_watched_values_and_fires_nothing() {
    let mapped = map_on(ReplicaIdentity::Default, true, RowOp::Insert { new: alice() });
    assert!(matches!(mapped.ops[0], CustomerOp::Identify { .. }));
    let events = events_of(&mapped);
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.only_records() && e.data.is_empty()), "{events:?}");
    assert_eq!(mapped.ops[1].kind(), "watch");
    // A `when` column changed to NULL records NULL and fires nothing.
    let mut cleared = alice();
    cleared[4] = Datum::Null;
    let mapped = map_on(ReplicaIdentity::Default, true, update(cleared));
    assert_eq!(
        events_of(&mapped)[1].watch,
        watch("password_updated/password_hash", json!(null), false, false)
    );
    // A `when_changed` column changed to NULL may fire (from something to null).
    let mut no_plan = alice();
    no_plan[2] = Datum::Null;
    let mapped = map_on(ReplicaIdentity::Default, true, update(no_plan));
    assert_eq!(events_of(&mapped)[0].watch, watch("plan_changed/plan", json!(null), true, true));
}

#[test]
fn nothing_is_watched_without_the_record_with_the_old_row_or_for_an_unchanged_toast() {
    let off = map_on(ReplicaIdentity::Default, false, update(alice()));
    assert!(events_of(&off).is_empty(), "{:?}", off.ops);
    let inserted = map_on(ReplicaIdentity::Default, false, RowOp::Insert { new: alice() });
    assert_eq!(inserted.ops.len(), 1);
    let index = map_on(ReplicaIdentity::Index, true, update(alice()));
    assert_eq!(events_of(&index).len(), 2);
    let full = map_on(ReplicaIdentity::Full, true, RowOp::Insert { new: alice() });
    assert_eq!(full.ops.len(), 1, "{:?}", full.ops);
    // An unchanged TOAST value did not change: its event is not carried.
    let mut toasted = alice();
    toasted[2] = Datum::UnchangedToast;
    let mapped = map_on(ReplicaIdentity::Default, true, update(toasted));
    let names: Vec<&str> = events_of(&mapped).iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["password_updated"]);
}
