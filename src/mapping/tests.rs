use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::change::{ReplicaIdentity, TableColumn};
use crate::mapping::value::ValueKind;

const T: i64 = 1_700_000_000;

fn table() -> Arc<Table> {
    let col = |name: &str, kind: ValueKind| TableColumn { name: name.into(), type_oid: 0, kind };
    Arc::new(Table {
        oid: 1,
        schema: "public".into(),
        name: "users".into(),
        columns: vec![
            col("id", ValueKind::Text),
            col("email", ValueKind::Text),
            col("plan", ValueKind::Text),
            col("bio", ValueKind::Text),
            col("password_hash", ValueKind::Text),
        ],
        replica_identity: ReplicaIdentity::Full,
    })
}

fn sync(on_id_change: OnIdChange) -> SyncConfig {
    SyncConfig {
        table: "public.users".into(),
        id_column: "id".into(),
        attributes: [("email", "email"), ("plan", "plan"), ("about", "bio")]
            .into_iter()
            .map(|(a, c)| (a.to_owned(), c.to_owned()))
            .collect(),
        on_id_change,
        filter: None,
    }
}

fn t(s: &str) -> Datum {
    Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn row(values: [Datum; 5]) -> Row {
    values.to_vec()
}

fn map(op: RowOp) -> Mapped {
    map_with(op, OnIdChange::Merge)
}

fn map_with(op: RowOp, on_id_change: OnIdChange) -> Mapped {
    Mapper::new(&[sync(on_id_change)]).map(&RowChange { table: table(), op, commit_time: T })
}

fn identify(id: &str, attributes: serde_json::Value) -> CustomerOp {
    CustomerOp::Identify {
        id: id.into(),
        attributes: attributes.as_object().unwrap().clone(),
        timestamp: T,
    }
}

fn alice() -> Row {
    row([t("1"), t("a@example.com"), t("free"), t("hi"), t("h1")])
}

#[test]
fn insert_identifies_with_every_mapped_non_null_attribute() {
    let new = row([t("1"), t("a@example.com"), Datum::Null, t("hi"), t("h1")]);
    let mapped = map(RowOp::Insert { new });
    assert_eq!(mapped.ops, vec![identify("1", json!({"email": "a@example.com", "about": "hi"}))]);
    assert_eq!(mapped.skipped, None);
}

#[test]
fn update_with_old_row_sends_only_changed_attributes() {
    let mut new = alice();
    new[2] = t("pro");
    let mapped = map(RowOp::Update { old: Some(alice()), old_is_key_only: false, new });
    assert_eq!(mapped.ops, vec![identify("1", json!({"plan": "pro"}))]);
}

#[test]
fn update_to_null_unsets_the_attribute() {
    let mut new = alice();
    new[3] = Datum::Null;
    let mapped = map(RowOp::Update { old: Some(alice()), old_is_key_only: false, new });
    assert_eq!(mapped.ops, vec![identify("1", json!({"about": null}))]);
}

#[test]
fn update_of_unmapped_columns_only_sends_nothing() {
    let mut new = alice();
    new[4] = t("h2");
    let mapped = map(RowOp::Update { old: Some(alice()), old_is_key_only: false, new });
    assert!(mapped.ops.is_empty());
    assert_eq!(mapped.skipped, Some(SkipReason::NoChange));
    let noop = map(RowOp::Update { old: Some(alice()), old_is_key_only: false, new: alice() });
    assert_eq!(noop.skipped, Some(SkipReason::NoChange));
}

#[test]
fn unchanged_toast_is_never_sent_nor_a_change() {
    let mut new = alice();
    new[3] = Datum::UnchangedToast;
    let mapped =
        map(RowOp::Update { old: Some(alice()), old_is_key_only: false, new: new.clone() });
    assert_eq!(mapped.skipped, Some(SkipReason::NoChange));
    new[2] = t("pro");
    let mapped = map(RowOp::Update { old: None, old_is_key_only: false, new });
    assert_eq!(mapped.ops, vec![identify("1", json!({"email": "a@example.com", "plan": "pro"}))]);
}

#[test]
fn update_without_old_row_sends_every_mapped_attribute_including_nulls() {
    let new = row([t("1"), t("a@example.com"), Datum::Null, t("hi"), t("h1")]);
    let mapped = map(RowOp::Update { old: None, old_is_key_only: false, new });
    assert_eq!(
        mapped.ops,
        vec![identify("1", json!({"email": "a@example.com", "plan": null, "about": "hi"}))]
    );
}

#[test]
fn id_change_identifies_the_new_id_then_merges_the_old() {
    let mut new = alice();
    new[0] = t("2");
    let mapped =
        map(RowOp::Update { old: Some(alice()), old_is_key_only: false, new: new.clone() });
    assert_eq!(
        mapped.ops,
        vec![
            identify("2", json!({"plan": "free", "about": "hi"})),
            CustomerOp::Merge { primary: "2".into(), secondary: "1".into() },
            identify("2", json!({"email": "a@example.com"})),
        ]
    );
    let key_only = row([t("1"), Datum::Null, Datum::Null, Datum::Null, Datum::Null]);
    let mapped = map_with(
        RowOp::Update { old: Some(key_only), old_is_key_only: true, new },
        OnIdChange::DeleteOld,
    );
    assert_eq!(
        mapped.ops,
        vec![
            CustomerOp::Delete { id: "1".into() },
            CustomerOp::Barrier,
            identify("2", json!({"email": "a@example.com", "plan": "free", "about": "hi"})),
        ]
    );
}

#[test]
fn id_change_with_nulls_unsets_them_after_the_merge() {
    let new = row([t("2"), t("a@example.com"), Datum::Null, t("hi"), t("h1")]);
    let mapped =
        map(RowOp::Update { old: Some(alice()), old_is_key_only: false, new: new.clone() });
    assert_eq!(
        mapped.ops,
        vec![
            identify("2", json!({"about": "hi"})),
            CustomerOp::Merge { primary: "2".into(), secondary: "1".into() },
            identify("2", json!({"email": "a@example.com", "plan": null})),
        ]
    );
    let mapped = map_with(
        RowOp::Update { old: Some(alice()), old_is_key_only: false, new },
        OnIdChange::DeleteOld,
    );
    assert_eq!(
        mapped.ops[2],
        identify("2", json!({"email": "a@example.com", "about": "hi"})),
        "a new person has nothing to unset"
    );
}

#[test]
fn delete_deletes_the_customer() {
    let mapped = map(RowOp::Delete { old: alice() });
    assert_eq!(mapped.ops, vec![CustomerOp::Delete { id: "1".into() }]);
}

#[test]
fn unusable_ids_skip_the_change() {
    for id in [Datum::Null, t(""), t(&"x".repeat(151))] {
        let mut new = alice();
        new[0] = id;
        let mapped = map(RowOp::Insert { new });
        assert!(mapped.ops.is_empty());
        assert_eq!(mapped.skipped, Some(SkipReason::InvalidId));
    }
    let mut ok = alice();
    ok[0] = t(&"x".repeat(150));
    assert_eq!(map(RowOp::Insert { new: ok }).ops.len(), 1);
}

#[test]
fn oversized_values_are_left_out_and_the_rest_sent() {
    let mut new = alice();
    new[3] = t(&"é".repeat(501));
    let mapped = map(RowOp::Insert { new });
    assert_eq!(mapped.ops, vec![identify("1", json!({"email": "a@example.com", "plan": "free"}))]);
    assert_eq!(
        mapped.dropped,
        vec![DroppedAttribute {
            attribute: "about".into(),
            column: "bio".into(),
            reason: DropReason::ValueTooLong
        }]
    );
}

#[test]
fn a_mapped_column_missing_from_the_table_is_reported() {
    let mut config = sync(OnIdChange::Merge);
    config.attributes.insert("nickname".into(), "nick".into());
    let mapped = Mapper::new(&[config]).map(&RowChange {
        table: table(),
        op: RowOp::Insert { new: alice() },
        commit_time: T,
    });
    assert_eq!(mapped.ops.len(), 1);
    assert_eq!(mapped.dropped[0].reason, DropReason::MissingColumn);
}
