use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::change::{Datum, ReplicaIdentity, Table, TableColumn};
use crate::config::objects::{ObjectConfig, RelationshipConfig};
use crate::mapping::value::ValueKind;
use crate::mapping::Mapper;
use crate::pg::name::TableName;

fn t(s: &str) -> Datum {
    Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn table(name: &str, columns: &[&str], identity: ReplicaIdentity) -> Arc<Table> {
    let col =
        |name: &&str| TableColumn { name: (*name).into(), type_oid: 0, kind: ValueKind::Text };
    Arc::new(Table {
        oid: 1,
        schema: "public".into(),
        name: name.into(),
        columns: columns.iter().map(col).collect(),
        replica_identity: identity,
    })
}

fn accounts() -> SyncConfig {
    ObjectConfig {
        table: TableName::parse("accounts").unwrap(),
        object_type_id: "1".into(),
        id_column: "id".into(),
        attributes: [("name", "name"), ("plan", "plan")]
            .map(|(a, c)| (a.to_owned(), c.to_owned()))
            .into(),
        soft_delete_column: Some("deleted_at".into()),
        filter: None,
        on_schema_change: Default::default(),
    }
    .resolved()
}

fn memberships() -> SyncConfig {
    RelationshipConfig {
        table: TableName::parse("memberships").unwrap(),
        customer_id_column: "user_id".into(),
        object_type_id: "1".into(),
        object_id_column: "account_id".into(),
        attributes: [("role".to_owned(), "role".to_owned())].into(),
        on_schema_change: Default::default(),
    }
    .resolved()
}

fn map(sync: SyncConfig, table: Arc<Table>, op: RowOp) -> Mapped {
    let change = RowChange { table, op, commit_time: 1, position: Default::default() };
    Mapper::new(&[sync]).with_record(true).map(&change)
}

fn account(identity: ReplicaIdentity) -> Arc<Table> {
    table("accounts", &["id", "name", "plan", "deleted_at"], identity)
}

fn membership(identity: ReplicaIdentity) -> Arc<Table> {
    table("memberships", &["id", "user_id", "account_id", "role"], identity)
}

fn object(id: &str, attributes: Value) -> CustomerOp {
    let attributes = attributes.as_object().cloned().unwrap();
    CustomerOp::Object(ObjectOp::new("1", id.into(), ObjectAction::Identify { attributes }))
}

fn object_delete(id: &str) -> CustomerOp {
    CustomerOp::Object(ObjectOp::new("1", id.into(), ObjectAction::Delete))
}

fn relate(customer: &str, object_id: &str, attributes: Option<Value>) -> CustomerOp {
    let action = match attributes {
        Some(a) => RelationshipAction::Add { attributes: a.as_object().cloned().unwrap() },
        None => RelationshipAction::Delete,
    };
    CustomerOp::Relationship(RelationshipOp {
        customer: customer.into(),
        object_type_id: "1".into(),
        object_id: object_id.into(),
        action,
    })
}

#[test]
fn an_account_insert_identifies_the_object_with_nulls() {
    let new = vec![t("acme"), t("Acme"), Datum::Null, Datum::Null];
    let mapped = map(accounts(), account(ReplicaIdentity::Default), RowOp::Insert { new });
    assert_eq!(mapped.ops, vec![object("acme", json!({"name": "Acme", "plan": null}))]);
    assert!(mapped.absent.is_empty() && mapped.released == Released::Nothing);
}

#[test]
fn an_account_update_with_the_old_row_sends_only_what_changed() {
    let old = vec![t("acme"), t("Acme"), t("free"), Datum::Null];
    let mut new = old.clone();
    new[2] = t("pro");
    let op = RowOp::Update { old: Some(old.clone()), old_is_key_only: false, new };
    let mapped = map(accounts(), account(ReplicaIdentity::Full), op);
    assert_eq!(mapped.ops, vec![object("acme", json!({"plan": "pro"}))]);
    let same = RowOp::Update { old: Some(old.clone()), old_is_key_only: false, new: old };
    let mapped = map(accounts(), account(ReplicaIdentity::Full), same);
    assert_eq!((mapped.ops, mapped.skipped), (vec![], Some(SkipReason::NoChange)));
}

#[test]
fn account_deletes_and_soft_deletes_delete_the_object() {
    let old = vec![t("acme"), t("Acme"), t("free"), Datum::Null];
    let mapped = map(accounts(), account(ReplicaIdentity::Full), RowOp::Delete { old });
    assert_eq!(mapped.ops, vec![object_delete("acme")]);
    // No old row: a person's removal would wait for the record; an
    // object's goes (the record keeps people only).
    let new = vec![t("acme"), t("Acme"), t("free"), t("2026-01-01")];
    let op = RowOp::Update { old: None, old_is_key_only: false, new };
    let mapped = map(accounts(), account(ReplicaIdentity::Default), op);
    assert_eq!((mapped.ops, mapped.skipped), (vec![object_delete("acme")], None));
    assert!(mapped.if_held.is_none());
}

#[test]
fn an_account_id_change_deletes_the_old_object() {
    let old = vec![t("acme"), t("Acme"), t("free"), Datum::Null];
    let mut new = old.clone();
    new[0] = t("acme2");
    let op = RowOp::Update { old: Some(old), old_is_key_only: false, new };
    let mapped = map(accounts(), account(ReplicaIdentity::Full), op);
    assert_eq!(
        mapped.ops,
        vec![
            object_delete("acme"),
            CustomerOp::Barrier,
            object("acme2", json!({"name": "Acme", "plan": "free"}))
        ]
    );
}

#[test]
fn a_membership_insert_and_delete_add_and_remove_the_relationship() {
    let row = vec![t("9"), t("42"), t("acme"), t("admin")];
    let mapped =
        map(memberships(), membership(ReplicaIdentity::Full), RowOp::Insert { new: row.clone() });
    assert_eq!(mapped.ops, vec![relate("42", "acme", Some(json!({"role": "admin"})))]);
    let mapped = map(memberships(), membership(ReplicaIdentity::Full), RowOp::Delete { old: row });
    assert_eq!(mapped.ops, vec![relate("42", "acme", None)]);
}

#[test]
fn a_membership_delete_without_both_ids_is_skipped_and_named() {
    // DEFAULT identity on a surrogate key: the old row holds only `id`.
    let old = vec![t("9"), Datum::Null, Datum::Null, Datum::Null];
    let mapped = map(memberships(), membership(ReplicaIdentity::Default), RowOp::Delete { old });
    assert_eq!((mapped.ops, mapped.skipped), (vec![], Some(SkipReason::RelationshipUnknown)));
}

#[test]
fn a_membership_update_moves_or_upserts_the_relationship() {
    let old = vec![t("9"), t("42"), t("acme"), t("admin")];
    let mut moved = old.clone();
    moved[2] = t("globex");
    let op = RowOp::Update { old: Some(old.clone()), old_is_key_only: false, new: moved };
    let mapped = map(memberships(), membership(ReplicaIdentity::Full), op);
    assert_eq!(
        mapped.ops,
        vec![relate("42", "acme", None), relate("42", "globex", Some(json!({"role": "admin"})))]
    );
    let mut role = old.clone();
    role[3] = Datum::Null;
    let op = RowOp::Update { old: Some(old.clone()), old_is_key_only: false, new: role.clone() };
    let mapped = map(memberships(), membership(ReplicaIdentity::Full), op);
    assert_eq!(mapped.ops, vec![relate("42", "acme", Some(json!({"role": null})))]);
    let op = RowOp::Update { old: Some(old.clone()), old_is_key_only: false, new: old };
    let mapped = map(memberships(), membership(ReplicaIdentity::Full), op);
    assert_eq!((mapped.ops, mapped.skipped), (vec![], Some(SkipReason::NoChange)));
    // No old row: added again with every attribute (an upsert).
    let op = RowOp::Update { old: None, old_is_key_only: false, new: role };
    let mapped = map(memberships(), membership(ReplicaIdentity::Default), op);
    assert_eq!(mapped.ops, vec![relate("42", "acme", Some(json!({"role": null})))]);
}

#[test]
fn a_membership_whose_account_is_set_to_null_removes_the_relationship() {
    let old = vec![t("9"), t("42"), t("acme"), t("admin")];
    let mut unset = old.clone();
    unset[2] = Datum::Null;
    let op = RowOp::Update { old: Some(old), old_is_key_only: false, new: unset.clone() };
    let mapped = map(memberships(), membership(ReplicaIdentity::Full), op);
    assert_eq!((mapped.ops, mapped.skipped), (vec![relate("42", "acme", None)], None));
    // Without the old row there is nothing to remove: skipped as before.
    let op = RowOp::Update { old: None, old_is_key_only: false, new: unset };
    let mapped = map(memberships(), membership(ReplicaIdentity::Default), op);
    assert_eq!((mapped.ops, mapped.skipped), (vec![], Some(SkipReason::InvalidId)));
}

#[test]
fn backfill_keys_of_a_membership_are_both_ids() {
    let row = vec![t("9"), t("42"), t("acme"), t("admin")];
    let change = RowChange {
        table: membership(ReplicaIdentity::Full),
        op: RowOp::Insert { new: row },
        commit_time: 1,
        position: Default::default(),
    };
    assert_eq!(
        Mapper::new(&[memberships()]).customer_ids(&change).unwrap(),
        vec![r#"["42","acme"]"#]
    );
}
