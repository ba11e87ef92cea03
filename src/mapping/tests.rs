use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::change::{ReplicaIdentity, TableColumn};
use crate::config::OnIdChange;
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
        table: crate::pg::name::TableName::parse("public.users").unwrap(),
        id_column: "id".into(),
        attributes: [("email", "email"), ("plan", "plan"), ("about", "bio")]
            .into_iter()
            .map(|(a, c)| (a.to_owned(), c.to_owned()))
            .collect(),
        on_id_change,
        delete_action: Default::default(),
        soft_delete_column: None,
        events: Vec::new(),
        filter: None,
        on_schema_change: Default::default(),
        target: Default::default(),
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
    Mapper::new(&[sync(on_id_change)]).map(&RowChange {
        table: table(),
        op,
        commit_time: T,
        position: Default::default(),
    })
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
    // Named, for the breaker to send as null while it holds removals.
    assert_eq!(mapped.absent, ["plan"]);
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
    // Exactly the limit (1000 bytes) is sent.
    let mut new = alice();
    new[3] = t(&"é".repeat(500));
    let mapped = map(RowOp::Insert { new });
    assert!(mapped.dropped.is_empty(), "{:?}", mapped.dropped);
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
        position: Default::default(),
    });
    assert_eq!(mapped.ops.len(), 1);
    assert_eq!(mapped.dropped[0].reason, DropReason::MissingColumn);
}

fn map_config(config: SyncConfig, op: RowOp) -> Mapped {
    let change = RowChange {
        table: table(),
        op,
        commit_time: T,
        position: crate::change::WalPosition { commit_lsn: 0x10, index: 2 },
    };
    Mapper::new(&[config]).map(&change)
}

#[test]
fn delete_action_suppress_suppresses_instead_of_deleting() {
    let mut config = sync(OnIdChange::Merge);
    config.delete_action = crate::config::DeleteAction::Suppress;
    let mapped = map_config(config, RowOp::Delete { old: alice() });
    assert_eq!(mapped.ops, vec![CustomerOp::Suppress { id: "1".into() }]);
}

#[test]
fn soft_delete_removes_on_set_ignores_while_set_and_identifies_in_full_on_clear() {
    // password_hash stands in for deleted_at: any non-NULL value means deleted.
    let mut config = sync(OnIdChange::Merge);
    config.soft_delete_column = Some("password_hash".into());
    let live = row([t("1"), t("a@example.com"), t("free"), Datum::Null, Datum::Null]);
    let mut gone = live.clone();
    gone[4] = t("2024-01-01 00:00:00+00");

    let set = map_config(
        config.clone(),
        RowOp::Update { old: Some(live.clone()), old_is_key_only: false, new: gone.clone() },
    );
    assert_eq!(set.ops, vec![CustomerOp::Delete { id: "1".into() }]);

    let mut still = gone.clone();
    still[2] = t("pro");
    let while_set = map_config(
        config.clone(),
        RowOp::Update { old: Some(gone.clone()), old_is_key_only: false, new: still },
    );
    assert!(while_set.ops.is_empty());
    assert_eq!(while_set.skipped, Some(SkipReason::SoftDeleted));

    let cleared = map_config(
        config.clone(),
        RowOp::Update { old: Some(gone.clone()), old_is_key_only: false, new: live.clone() },
    );
    assert_eq!(cleared.ops, vec![identify("1", json!({"email": "a@example.com", "plan": "free"}))]);
    assert_eq!(cleared.absent, ["about"]);

    let inserted_deleted = map_config(config.clone(), RowOp::Insert { new: gone.clone() });
    assert_eq!(inserted_deleted.skipped, Some(SkipReason::SoftDeleted));

    // Without the old row (DEFAULT identity), a deleted row is removed again:
    // harmless, and a backfill repairs drift the same way.
    let unknown =
        map_config(config, RowOp::Update { old: None, old_is_key_only: false, new: gone });
    assert_eq!(unknown.ops, vec![CustomerOp::Delete { id: "1".into() }]);
}

#[test]
fn change_events_fire_on_the_transition_after_the_identify() {
    let mut config = sync(OnIdChange::Merge);
    config.events = vec![
        crate::config::ChangeEventConfig {
            name: "plan_changed".into(),
            when_changed: Some("plan".into()),
            when: None,
            data: vec!["email".into()],
        },
        crate::config::ChangeEventConfig {
            name: "password_updated".into(),
            when_changed: None,
            when: Some("password_hash".into()),
            data: Vec::new(),
        },
    ];
    let mut new = alice();
    new[2] = t("pro");
    let mapped = map_config(
        config.clone(),
        RowOp::Update { old: Some(alice()), old_is_key_only: false, new: new.clone() },
    );
    assert_eq!(mapped.ops.len(), 2, "{:?}", mapped.ops);
    assert_eq!(mapped.ops[0], identify("1", json!({"plan": "pro"})));
    let CustomerOp::Event(event) = &mapped.ops[1] else { panic!("{:?}", mapped.ops) };
    assert_eq!(event.customer, "1");
    assert_eq!(event.name, "plan_changed");
    assert_eq!(
        serde_json::Value::Object(event.data.clone()),
        json!({"from": "free", "to": "pro", "email": "a@example.com"})
    );
    assert_eq!(event.timestamp, T);

    // An unmapped column's change fires its event alone, no identify.
    let mut rehashed = alice();
    rehashed[4] = t("h2");
    let mapped = map_config(
        config.clone(),
        RowOp::Update { old: Some(alice()), old_is_key_only: false, new: rehashed },
    );
    assert_eq!(mapped.ops.len(), 1);
    assert!(matches!(&mapped.ops[0], CustomerOp::Event(e) if e.name == "password_updated"));

    // No transition, no event; cleared to NULL does not fire `when`.
    let same = map_config(
        config.clone(),
        RowOp::Update { old: Some(alice()), old_is_key_only: false, new: alice() },
    );
    assert!(same.ops.is_empty());
    let mut cleared = alice();
    cleared[4] = Datum::Null;
    let cleared = map_config(
        config.clone(),
        RowOp::Update { old: Some(alice()), old_is_key_only: false, new: cleared },
    );
    assert!(cleared.ops.is_empty(), "{:?}", cleared.ops);

    // Without the old row there is no transition to see.
    let blind = map_config(config, RowOp::Update { old: None, old_is_key_only: false, new });
    assert!(blind.ops.iter().all(|op| !matches!(op, CustomerOp::Event(_))));
}

#[test]
fn event_table_inserts_become_events_with_deterministic_ids() {
    let col = |name: &str, kind: ValueKind| TableColumn { name: name.into(), type_oid: 0, kind };
    let signups = Arc::new(Table {
        oid: 2,
        schema: "public".into(),
        name: "events".into(),
        columns: vec![
            col("user_id", ValueKind::BigInt),
            col("name", ValueKind::Text),
            col("payload", ValueKind::Json),
            col("occurred_at", ValueKind::TimestampTz),
            col("anon", ValueKind::Text),
        ],
        replica_identity: ReplicaIdentity::Default,
    });
    let config = crate::config::EventTableConfig {
        table: crate::pg::name::TableName::parse("events").unwrap(),
        customer_id_column: "user_id".into(),
        anonymous_id_column: Some("anon".into()),
        name: None,
        name_column: Some("name".into()),
        data: [("source".to_owned(), "name".to_owned())].into_iter().collect(),
        data_column: Some("payload".into()),
        timestamp_column: Some("occurred_at".into()),
        on_schema_change: Default::default(),
    };
    let mapper = Mapper::new(&[sync(OnIdChange::Merge)]).with_event_tables(&[config]);
    let insert = |values: Vec<Datum>, index: u32| RowChange {
        table: signups.clone(),
        op: RowOp::Insert { new: values },
        commit_time: T,
        position: crate::change::WalPosition { commit_lsn: 0x99, index },
    };
    let row = vec![
        t("42"),
        t("cta_email"),
        t(r#"{"type": "reset", "actionUrl": "https://x.io/r"}"#),
        t("2024-03-01 12:34:56+00"),
        Datum::Null,
    ];
    let mapped = mapper.map(&insert(row.clone(), 0));
    let [CustomerOp::Event(event)] = mapped.ops.as_slice() else { panic!("{:?}", mapped.ops) };
    assert_eq!((event.customer.as_str(), event.name.as_str()), ("42", "cta_email"));
    assert_eq!(event.timestamp, 1_709_296_496, "the row's own time");
    assert_eq!(
        serde_json::Value::Object(event.data.clone()),
        json!({"type": "reset", "actionUrl": "https://x.io/r", "source": "cta_email"})
    );
    assert_eq!(mapper.map(&insert(row.clone(), 0)).ops, mapped.ops, "a replay has the same id");
    let other = mapper.map(&insert(row.clone(), 1));
    assert_ne!(other.ops, mapped.ops, "another row of the transaction has another id");

    let mut nameless = row.clone();
    nameless[1] = Datum::Null;
    assert_eq!(mapper.map(&insert(nameless, 2)).skipped, Some(SkipReason::InvalidEvent));
    let mut nobody = row.clone();
    nobody[0] = Datum::Null;
    assert_eq!(mapper.map(&insert(nobody, 3)).skipped, Some(SkipReason::InvalidId));
    let mut anonymous = row;
    anonymous[0] = Datum::Null;
    anonymous[4] = t("cookie-7");
    let mapped = mapper.map(&insert(anonymous, 4));
    let [CustomerOp::AnonymousEvent(event)] = mapped.ops.as_slice() else { panic!("{mapped:?}") };
    assert_eq!((event.anonymous_id.as_str(), event.name.as_str()), ("cookie-7", "cta_email"));
    assert_eq!(event.event_id.len(), 26);
}

#[test]
fn reasons_are_logged_with_the_labels_metrics_md_documents() {
    // The log line of a skipped change carries the reason label the
    // metric `ciosync_changes_skipped_total` counts it under, so an
    // operator can go from one to the other.
    let doc = include_str!("../../METRICS.md");
    let row = doc
        .lines()
        .find(|line| line.contains("`ciosync_changes_skipped_total`"))
        .expect("METRICS.md documents skipped changes");
    let skips = [
        SkipReason::NoChange,
        SkipReason::InvalidId,
        SkipReason::UnknownTable,
        SkipReason::SoftDeleted,
        SkipReason::InvalidEvent,
    ];
    for reason in skips {
        assert!(row.contains(&format!("`{}`", reason.as_str())), "{reason:?}: {row}");
    }
    let drops = [DropReason::ValueTooLong, DropReason::Unparseable, DropReason::MissingColumn];
    let labels: Vec<&str> = drops.iter().map(|reason| reason.as_str()).collect();
    assert_eq!(labels, ["value_too_long", "unparseable", "missing_column"]);
}

fn change_of(table: Arc<Table>, op: RowOp) -> RowChange {
    RowChange { table, op, commit_time: T, position: Default::default() }
}

#[test]
fn a_change_touches_the_ids_of_both_rows_for_the_backfill_to_yield_to() {
    let mapper = Mapper::new(&[sync(OnIdChange::Merge)]);
    let ids = |op| mapper.customer_ids(&change_of(table(), op)).unwrap();
    let mut renamed = alice();
    renamed[0] = t("2");
    assert_eq!(ids(RowOp::Insert { new: alice() }), ["1"]);
    let update = RowOp::Update { old: Some(alice()), old_is_key_only: false, new: renamed };
    assert_eq!(ids(update), ["1", "2"], "the old id and the new");
    let same = RowOp::Update { old: Some(alice()), old_is_key_only: false, new: alice() };
    assert_eq!(ids(same), ["1"], "once");
    assert_eq!(ids(RowOp::Update { old: None, old_is_key_only: false, new: alice() }), ["1"]);
    assert_eq!(ids(RowOp::Delete { old: alice() }), ["1"]);
    let no_id = row([Datum::Null, t("b@example.com"), Datum::Null, Datum::Null, Datum::Null]);
    assert!(ids(RowOp::Insert { new: no_id }).is_empty());

    let mut other = (*table()).clone();
    other.name = "orders".into();
    let unknown = change_of(Arc::new(other), RowOp::Insert { new: alice() });
    assert_eq!(mapper.customer_ids(&unknown), Some(Vec::new()));
    assert_eq!(mapper.map(&unknown).skipped, Some(SkipReason::UnknownTable));
    assert!(mapper.map(&unknown).ops.is_empty());
    assert!(mapper.is_synced("public", "users"));
    assert!(!mapper.is_synced("public", "orders") && !mapper.is_synced("other", "users"));
}

/// An outbox-like event table (`user_id`, `name`) whose event name comes
/// from its `name` column, and the change inserting `name` for user 42.
fn outbox_insert(name: Datum) -> (Mapper, RowChange) {
    let col = |name: &str| TableColumn { name: name.into(), type_oid: 0, kind: ValueKind::Text };
    let outbox = Arc::new(Table {
        oid: 3,
        schema: "public".into(),
        name: "outbox".into(),
        columns: vec![col("user_id"), col("name")],
        replica_identity: ReplicaIdentity::Default,
    });
    let config = crate::config::EventTableConfig {
        table: crate::pg::name::TableName::parse("outbox").unwrap(),
        customer_id_column: "user_id".into(),
        anonymous_id_column: None,
        name: None,
        name_column: Some("name".into()),
        data: Default::default(),
        data_column: None,
        timestamp_column: None,
        on_schema_change: Default::default(),
    };
    let mapper = Mapper::new(&[]).with_event_tables(&[config]);
    let change = change_of(outbox, RowOp::Insert { new: vec![t("42"), name] });
    (mapper, change)
}

#[test]
fn an_event_row_whose_name_is_blank_or_over_100_bytes_is_skipped_and_counted() {
    // Customer.io refuses such a name ("event name must not be blank",
    // "…cannot be longer than 100 bytes"): sending it would only make a
    // dead letter out of a row no replay can fix.
    let unusable = [
        Datum::Null,
        t(""),
        t(" "),
        t(" \t\n "),
        t(&"x".repeat(101)),
        t(&"é".repeat(51)), // 51 characters, 102 bytes: the limit is in bytes
    ];
    for name in unusable {
        let (mapper, change) = outbox_insert(name.clone());
        let mapped = mapper.map(&change);
        assert_eq!(mapped.skipped, Some(SkipReason::InvalidEvent), "{name:?}");
        assert!(mapped.ops.is_empty(), "{name:?}: {:?}", mapped.ops);
        let counters = crate::telemetry::Counters::default();
        report::report(&mapped, &change.table, report::Producer::Stream, &counters);
        let skipped = &counters.changes_skipped_invalid_event;
        assert_eq!(crate::telemetry::Counters::get(skipped), 1, "{name:?} was not counted");
    }
    // The name is sent without the whitespace around it (a `char(n)`
    // column pads it), and the limit applies to what is sent.
    let usable = [
        ("x".repeat(100), "x".repeat(100)),
        ("é".repeat(50), "é".repeat(50)),
        (" signed_up\t".to_owned(), "signed_up".to_owned()),
        (format!("  {}  ", "x".repeat(100)), "x".repeat(100)),
        ("a".to_owned(), "a".to_owned()),
    ];
    for (stored, sent) in usable {
        let (mapper, change) = outbox_insert(t(&stored));
        let mapped = mapper.map(&change);
        assert_eq!(mapped.skipped, None, "{stored:?}");
        let [CustomerOp::Event(event)] = mapped.ops.as_slice() else { panic!("{mapped:?}") };
        assert_eq!((event.customer.as_str(), event.name.as_str()), ("42", sent.as_str()));
    }
}

#[test]
fn an_unchanged_toast_value_on_either_side_of_a_watched_column_fires_nothing() {
    // `bio` is large enough to be TOASTed: an UPDATE that does not touch it
    // carries no value for it, so there is no transition to see.
    let mut config = sync(OnIdChange::Merge);
    config.events = vec![
        crate::config::ChangeEventConfig {
            name: "bio_changed".into(),
            when_changed: Some("bio".into()),
            when: None,
            data: Vec::new(),
        },
        crate::config::ChangeEventConfig {
            name: "bio_written".into(),
            when_changed: None,
            when: Some("bio".into()),
            data: Vec::new(),
        },
    ];
    let fired = |old: Datum, new: Datum| -> Vec<String> {
        let (mut before, mut after) = (alice(), alice());
        (before[3], after[3]) = (old, new);
        let op = RowOp::Update { old: Some(before), old_is_key_only: false, new: after };
        let mapped = map_config(config.clone(), op);
        let events = mapped.ops.iter().filter_map(|op| match op {
            CustomerOp::Event(event) => Some(event.name.clone()),
            _ => None,
        });
        events.collect()
    };
    let none: Vec<String> = Vec::new();
    assert_eq!(fired(t("hi"), Datum::UnchangedToast), none, "the new side unchanged");
    assert_eq!(fired(Datum::UnchangedToast, t("hello")), none, "the old side unchanged");
    assert_eq!(fired(Datum::UnchangedToast, Datum::UnchangedToast), none, "both");
    assert_eq!(fired(Datum::Null, Datum::UnchangedToast), none, "NULL to unchanged");
    // The same columns fire once the value is really there.
    assert_eq!(fired(t("hi"), t("hello")), ["bio_changed", "bio_written"]);
}

#[path = "released_tests.rs"]
mod released;

#[path = "watched_tests.rs"]
mod watched_tests;
