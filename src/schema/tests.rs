use std::collections::BTreeMap;

use super::guard::Strip;
use super::*;
use crate::config::{ChangeEventConfig, DeleteAction, OnIdChange};
use crate::customer::{CustomerOp, Event};
use crate::pg::name::TableName;

fn sync() -> SyncConfig {
    let attributes: BTreeMap<String, String> =
        [("email", "email"), ("first_name", "first_name"), ("created_at", "created_at")]
            .into_iter()
            .map(|(a, c)| (a.to_owned(), c.to_owned()))
            .collect();
    SyncConfig {
        table: TableName::parse("users").unwrap(),
        id_column: "id".to_owned(),
        attributes,
        on_id_change: OnIdChange::Merge,
        delete_action: DeleteAction::Delete,
        soft_delete_column: None,
        events: vec![ChangeEventConfig {
            name: "plan_changed".to_owned(),
            when_changed: Some("plan".to_owned()),
            when: None,
            data: vec![],
        }],
        filter: None,
        on_schema_change: OnSchemaChange::Pause,
        target: Default::default(),
    }
}

fn cols(list: &[(&str, Shape)]) -> Vec<(String, Shape)> {
    list.iter().map(|(n, s)| ((*n).to_owned(), s.clone())).collect()
}

fn users() -> Vec<(String, Shape)> {
    cols(&[
        ("id", Shape::Number),
        ("email", Shape::String),
        ("first_name", Shape::String),
        ("created_at", Shape::Number),
        ("plan", Shape::String),
    ])
}

/// The baseline after the table was first seen whole.
fn first_seen() -> (Needs, Baseline) {
    let needs = Needs::of_sync(&sync());
    let baseline = accept(&needs, &users(), &Baseline::default());
    assert!(judge(&needs, &users(), &Baseline::default()).is_empty());
    (needs, baseline)
}

fn changes(breaks: &[Break]) -> Vec<(&str, &Change)> {
    breaks.iter().map(|b| (b.key.as_str(), &b.change)).collect()
}

#[test]
fn the_first_description_sets_the_shape_of_every_typed_use() {
    let (_, baseline) = first_seen();
    let uses: Vec<(&str, &Shape)> = baseline.uses.iter().map(|(k, s)| (k.as_str(), s)).collect();
    assert_eq!(
        uses,
        vec![
            ("attributes.created_at", &Shape::Number),
            ("attributes.email", &Shape::String),
            ("attributes.first_name", &Shape::String),
            ("events.plan_changed.when_changed", &Shape::String),
        ]
    );
    assert_eq!(baseline.columns, users());
}

#[test]
fn a_renamed_column_is_told_from_a_dropped_one() {
    let (needs, baseline) = first_seen();
    let mut renamed = users();
    renamed[2].0 = "given_name".to_owned();
    assert_eq!(
        changes(&judge(&needs, &renamed, &baseline)),
        vec![("attributes.first_name", &Change::Renamed { to: "given_name".to_owned() })]
    );
    // Gone, and a new column of another type in its place: dropped.
    let mut dropped = users();
    dropped[2] = ("score".to_owned(), Shape::Number);
    assert_eq!(
        changes(&judge(&needs, &dropped, &baseline)),
        vec![("attributes.first_name", &Change::Dropped)]
    );
    // Gone, nothing new: dropped; the only new string column elsewhere: renamed.
    let mut gone = users();
    gone.remove(2);
    assert_eq!(
        changes(&judge(&needs, &gone, &baseline)),
        vec![("attributes.first_name", &Change::Dropped)]
    );
    gone.push(("nickname".to_owned(), Shape::String));
    assert_eq!(
        changes(&judge(&needs, &gone, &baseline)),
        vec![("attributes.first_name", &Change::Renamed { to: "nickname".to_owned() })]
    );
    // Two new string columns, neither in its place: no guess.
    gone.push(("title".to_owned(), Shape::String));
    assert_eq!(
        changes(&judge(&needs, &gone, &baseline)),
        vec![("attributes.first_name", &Change::Dropped)]
    );
}

#[test]
fn a_column_never_seen_is_missing_and_the_id_column_counts_too() {
    let needs = Needs::of_sync(&sync());
    let mut table = users();
    table[0].0 = "user_id".to_owned();
    table[2].0 = "firstname".to_owned();
    let breaks = judge(&needs, &table, &Baseline::default());
    assert_eq!(
        changes(&breaks),
        vec![("id_column", &Change::Missing), ("attributes.first_name", &Change::Missing)]
    );
    assert_eq!(breaks[1].attribute.as_deref(), Some("first_name"));
    assert_eq!(breaks[0].attribute, None);
}

#[test]
fn a_type_change_breaks_only_when_the_json_type_changes() {
    let (needs, baseline) = first_seen();
    // timestamptz → text: numbers would become strings.
    let mut retyped = users();
    retyped[3].1 = Shape::String;
    assert_eq!(
        changes(&judge(&needs, &retyped, &baseline)),
        vec![(
            "attributes.created_at",
            &Change::Retyped { from: Shape::Number, to: Shape::String }
        )]
    );
    // int4 → int8, varchar → text, timestamp → timestamptz: same JSON types.
    for (from, to) in [
        (ValueKind::Int, ValueKind::BigInt),
        (ValueKind::Timestamp, ValueKind::TimestampTz),
        (ValueKind::Float, ValueKind::Numeric),
    ] {
        assert_eq!(Shape::of(&from), Shape::of(&to));
    }
    assert_ne!(Shape::of(&ValueKind::Text), Shape::of(&ValueKind::Json));
    assert_ne!(
        Shape::of(&ValueKind::Array(Box::new(ValueKind::Int))),
        Shape::of(&ValueKind::Array(Box::new(ValueKind::Text)))
    );
    // The id column and columns only checked for NULL may change type.
    let mut id_text = users();
    id_text[0].1 = Shape::String;
    assert!(judge(&needs, &id_text, &baseline).is_empty());
}

#[test]
fn a_remapped_attribute_keeps_its_type_and_a_new_one_takes_its_own() {
    let (_, baseline) = first_seen();
    let mut config = sync();
    // The repair of a rename: the attribute now reads the new column.
    config.attributes.insert("first_name".to_owned(), "given_name".to_owned());
    let needs = Needs::of_sync(&config);
    let mut renamed = users();
    renamed[2].0 = "given_name".to_owned();
    assert!(judge(&needs, &renamed, &baseline).is_empty());
    let accepted = accept(&needs, &renamed, &baseline);
    assert_eq!(accepted.uses["attributes.first_name"], Shape::String);
    // A retyped column mapped to a new attribute name: that one is new.
    let mut retyped = renamed.clone();
    retyped[3].1 = Shape::String;
    config.attributes.remove("created_at");
    config.attributes.insert("created_at_text".to_owned(), "created_at".to_owned());
    let needs = Needs::of_sync(&config);
    assert!(judge(&needs, &retyped, &accepted).is_empty());
    let accepted = accept(&needs, &retyped, &accepted);
    assert_eq!(accepted.uses.get("attributes.created_at"), None, "forgotten once unmapped");
    assert_eq!(accepted.uses["attributes.created_at_text"], Shape::String);
}

#[test]
fn an_event_table_needs_its_columns_and_types_its_data() {
    let events: crate::config::EventTableConfig = toml::from_str(
        r#"
        table = "signups"
        customer_id_column = "user_id"
        name = "signed_up"
        data = { plan = "plan" }
        timestamp_column = "at"
        "#,
    )
    .unwrap();
    let needs = Needs::of_events(&events);
    let table = cols(&[("user_id", Shape::Number), ("plan", Shape::String), ("at", Shape::Number)]);
    let baseline = accept(&needs, &table, &Baseline::default());
    let mut retyped = table.clone();
    retyped[2].1 = Shape::String;
    retyped[1].1 = Shape::Number;
    assert_eq!(
        changes(&judge(&needs, &retyped, &baseline)),
        vec![
            ("timestamp_column", &Change::Retyped { from: Shape::Number, to: Shape::String }),
            ("data.plan", &Change::Retyped { from: Shape::String, to: Shape::Number }),
        ]
    );
}

#[test]
fn a_break_is_said_with_names_and_types_and_its_fix() {
    let (needs, baseline) = first_seen();
    let mut renamed = users();
    renamed[2].0 = "given_name".to_owned();
    let broken = &judge(&needs, &renamed, &baseline)[0];
    assert_eq!(
        broken.to_string(),
        "public.users: column first_name (attributes.first_name) was renamed to given_name"
    );
    assert!(
        broken.fix().contains("set attributes.first_name = \"given_name\""),
        "{}",
        broken.fix()
    );
    assert!(broken.fix().contains("RENAME COLUMN given_name TO first_name"), "{}", broken.fix());
}

#[test]
fn skip_leaves_out_retyped_attributes_and_the_events_whose_columns_broke() {
    let (needs, baseline) = first_seen();
    let mut table = users();
    table[3].1 = Shape::String; // created_at retyped
    table[4].1 = Shape::Number; // plan retyped: the event's from/to would change type
    let breaks = judge(&needs, &table, &baseline);
    let strip = Strip::of(&breaks, false);
    assert_eq!(strip.attributes, vec!["created_at".to_owned()]);
    assert_eq!(strip.events, vec!["plan_changed".to_owned()]);
    let identify = CustomerOp::Identify {
        id: "1".to_owned(),
        attributes: serde_json::json!({"email": "a@example.com", "created_at": "x"})
            .as_object()
            .unwrap()
            .clone(),
        timestamp: 1,
    };
    let event = |name: &str| {
        CustomerOp::Event(Event {
            customer: "1".to_owned(),
            name: name.to_owned(),
            event_id: "01".to_owned(),
            timestamp: 1,
            data: serde_json::Map::new(),
            watch: None,
        })
    };
    let mut ops = vec![
        identify,
        event("plan_changed"),
        event("other"),
        CustomerOp::Delete { id: "1".to_owned() },
    ];
    assert_eq!(strip.apply(&mut ops), 2);
    assert_eq!(ops.len(), 3);
    match &ops[0] {
        CustomerOp::Identify { attributes, .. } => {
            assert_eq!(attributes.keys().collect::<Vec<_>>(), vec!["email"])
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&ops[1], CustomerOp::Event(e) if e.name == "other"));
}

#[test]
fn a_description_gives_each_column_its_shape_in_order() {
    use crate::change::{ReplicaIdentity, Table, TableColumn};
    let column =
        |name: &str, kind: ValueKind| TableColumn { name: name.to_owned(), type_oid: 0, kind };
    let table = Table {
        oid: 1,
        schema: "public".to_owned(),
        name: "users".to_owned(),
        columns: vec![
            column("id", ValueKind::BigInt),
            column("email", ValueKind::Text),
            column("tags", ValueKind::Array(Box::new(ValueKind::Text))),
            column("active", ValueKind::Bool),
            column("profile", ValueKind::Json),
        ],
        replica_identity: ReplicaIdentity::Default,
    };
    assert_eq!(
        columns_of(&table),
        cols(&[
            ("id", Shape::Number),
            ("email", Shape::String),
            ("tags", Shape::Array(Box::new(Shape::String))),
            ("active", Shape::Boolean),
            ("profile", Shape::Json),
        ])
    );
    assert_eq!(Shape::Array(Box::new(Shape::Number)).to_string(), "array of number");
}

#[test]
fn skip_on_an_event_table_leaves_out_broken_data_keys_or_else_its_events() {
    let broken = |key: &str| Break {
        table: "public.signups".to_owned(),
        key: key.to_owned(),
        column: "c".to_owned(),
        change: Change::Retyped { from: Shape::String, to: Shape::Number },
        attribute: None,
        event: None,
        structural: false,
    };
    let event = || {
        CustomerOp::Event(Event {
            customer: "1".to_owned(),
            name: "signed_up".to_owned(),
            event_id: "01".to_owned(),
            timestamp: 1,
            data: serde_json::json!({"plan": "pro", "source": "ad"}).as_object().unwrap().clone(),
            watch: None,
        })
    };
    let strip = Strip::of(&[broken("data.plan")], true);
    assert!(!strip.all_events);
    let mut ops = vec![event()];
    assert_eq!(strip.apply(&mut ops), 1);
    match &ops[..] {
        [CustomerOp::Event(e)] => assert_eq!(e.data.keys().collect::<Vec<_>>(), vec!["source"]),
        other => panic!("{other:?}"),
    }
    let strip = Strip::of(&[broken("timestamp_column")], true);
    let mut ops = vec![event()];
    assert_eq!(strip.apply(&mut ops), 1);
    assert!(ops.is_empty());
    // On a synced table the same keys mean nothing.
    assert_eq!(Strip::of(&[broken("data.plan")], false), Strip::default());
}

#[test]
fn an_event_is_known_by_its_name_whatever_its_columns_are_called() {
    let mut config = sync();
    config.events.push(ChangeEventConfig {
        name: "signup".to_owned(),
        when_changed: None,
        when: Some("plan".to_owned()),
        data: vec!["when_at".to_owned()],
    });
    let needs = Needs::of_sync(&config);
    let mut table = users();
    table.push(("when_at".to_owned(), Shape::Number));
    let baseline = accept(&needs, &table, &Baseline::default());
    table[5].1 = Shape::String;
    let breaks = judge(&needs, &table, &baseline);
    assert_eq!(
        changes(&breaks),
        vec![(
            "events.signup.data.when_at",
            &Change::Retyped { from: Shape::Number, to: Shape::String }
        )]
    );
    assert_eq!(Strip::of(&breaks, false).events, vec!["signup".to_owned()]);
}

#[test]
fn the_id_and_soft_delete_columns_are_structural() {
    let mut config = sync();
    config.soft_delete_column = Some("deleted_at".to_owned());
    let needs = Needs::of_sync(&config);
    let mut table = users();
    table.push(("deleted_at".to_owned(), Shape::Number));
    let baseline = accept(&needs, &table, &Baseline::default());
    table.pop();
    table[0].0 = "user_id".to_owned();
    let breaks = judge(&needs, &table, &baseline);
    assert_eq!(breaks.len(), 2, "{breaks:?}");
    assert!(breaks.iter().all(|b| b.structural), "{breaks:?}");
    let mut renamed = users();
    renamed[2].0 = "given_name".to_owned();
    renamed.push(("deleted_at".to_owned(), Shape::Number));
    let breaks = judge(&needs, &renamed, &baseline);
    assert_eq!(breaks.len(), 1, "{breaks:?}");
    assert!(!breaks[0].structural, "{breaks:?}");
}

#[tokio::test]
async fn skip_still_pauses_when_the_id_column_broke() {
    use crate::change::{ReplicaIdentity, RowChange, RowOp, Table, TableColumn};
    use crate::schema::guard::{Admit, SchemaGuard};
    let config = crate::config::fixture::two_tables("", "on_schema_change = \"skip\"");
    let mut guard = SchemaGuard::new(&config, std::sync::Arc::default());
    let column =
        |name: &str| TableColumn { name: name.to_owned(), type_oid: 0, kind: ValueKind::Text };
    let table = std::sync::Arc::new(Table {
        oid: 7,
        schema: "public".to_owned(),
        name: "users".to_owned(),
        columns: vec![column("user_id"), column("email")],
        replica_identity: ReplicaIdentity::Default,
    });
    // A break, judged with no store: nothing to keep yet.
    guard.on_relation(&table).await.unwrap();
    let change = RowChange {
        table,
        op: RowOp::Insert { new: vec![crate::change::Datum::Null, crate::change::Datum::Null] },
        commit_time: 1,
        position: Default::default(),
    };
    match guard.admit(&change).await {
        Ok(Admit::Pause(breaks)) => assert!(breaks.iter().all(|b| b.structural), "{breaks:?}"),
        other => panic!("a change without its id went on under skip: {other:?}"),
    }
}

/// A relationship's person column is its `customer_id_column` in the file:
/// a break names that key, and it is structural as any id column.
#[test]
fn a_relationships_person_column_is_named_as_the_file_names_it() {
    let mut config = sync();
    config.events.clear();
    config.target = crate::config::Target::Relationship {
        object_type_id: "1".to_owned(),
        object_id_column: "account_id".to_owned(),
    };
    let needs = Needs::of_sync(&config);
    let mut table = users();
    table.push(("account_id".to_owned(), Shape::String));
    let baseline = accept(&needs, &table, &Baseline::default());
    table[0].0 = "person_id".to_owned();
    let breaks = judge(&needs, &table, &baseline);
    assert_eq!(breaks.len(), 1, "{breaks:?}");
    assert!(breaks[0].structural, "{breaks:?}");
    let said = breaks[0].to_string();
    assert!(said.contains("column id (customer_id_column) was renamed to person_id"), "{said}");
    let fix = breaks[0].fix();
    assert!(fix.contains("set customer_id_column = \"person_id\""), "{fix}");
}
