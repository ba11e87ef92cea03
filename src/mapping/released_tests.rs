//! What email a change frees ([`Mapped::released`]), which the sink orders
//! before another customer's claim of it.

use super::*;

fn released_by(op: RowOp, identity: ReplicaIdentity, sync: SyncConfig) -> Released {
    let table = Arc::new(Table { replica_identity: identity, ..(*table()).clone() });
    let change = RowChange { table, op, commit_time: T, position: Default::default() };
    Mapper::new(&[sync]).map(&change).released
}

fn released(op: RowOp, identity: ReplicaIdentity) -> Released {
    released_by(op, identity, sync(OnIdChange::Merge))
}

fn with_email(email: Datum) -> Row {
    row([t("1"), email, t("pro"), Datum::Null, Datum::Null])
}

fn update(old: Option<Row>, old_is_key_only: bool) -> RowOp {
    RowOp::Update { old, old_is_key_only, new: with_email(t("new@x.io")) }
}

#[test]
fn an_update_frees_the_old_rows_email_when_the_old_row_is_known() {
    let full = ReplicaIdentity::Full;
    let old = Some(with_email(t("Old@x.io")));
    assert_eq!(released(update(old, false), full), Released::Email("Old@x.io".into()));
    assert_eq!(released(update(Some(with_email(Datum::Null)), false), full), Released::Nothing);
    let toast = Some(with_email(Datum::UnchangedToast));
    assert_eq!(released(update(toast, false), full), Released::Unknown);
}

#[test]
fn without_the_old_row_what_an_update_frees_is_unknown() {
    let default = ReplicaIdentity::Default;
    assert_eq!(released(update(None, false), default), Released::Unknown);
    // The key changed: the old row holds the key only, its email is NULL there.
    let key_only = row([t("0"), Datum::Null, Datum::Null, Datum::Null, Datum::Null]);
    assert_eq!(released(update(Some(key_only), true), default), Released::Unknown);
}

#[test]
fn a_delete_frees_the_email_under_full_identity_only() {
    let delete = || RowOp::Delete { old: with_email(t("a@x.io")) };
    assert_eq!(released(delete(), ReplicaIdentity::Full), Released::Email("a@x.io".into()));
    for identity in [ReplicaIdentity::Default, ReplicaIdentity::Index, ReplicaIdentity::Nothing] {
        assert_eq!(released(delete(), identity), Released::Unknown);
    }
}

#[test]
fn an_insert_or_a_table_without_email_frees_nothing() {
    let insert = RowOp::Insert { new: with_email(t("a@x.io")) };
    assert_eq!(released(insert, ReplicaIdentity::Default), Released::Nothing);
    let mut no_email = sync(OnIdChange::Merge);
    no_email.attributes.remove(EMAIL);
    assert_eq!(
        released_by(update(None, false), ReplicaIdentity::Default, no_email.clone()),
        Released::Nothing
    );
    // Mapped, but the column is gone from the table.
    no_email.attributes.insert(EMAIL.into(), "mail".into());
    assert_eq!(
        released_by(update(None, false), ReplicaIdentity::Default, no_email),
        Released::Nothing
    );
}
