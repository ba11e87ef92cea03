//! The tables' judgements of `ciosync check`, from catalogue facts built
//! by hand: no database.

use super::gather::{FilterProbe, SyncTable};
use super::tables;
use super::{Finding, Level};
use crate::config::fixture::two_tables;
use crate::config::{Config, EventTableConfig};
use crate::pg::catalog::{Column, IdentityKind, Table};

/// `public.users` with a primary key `id`, `email`, `is_staff`.
fn users() -> Table {
    table(&[("id", "bigint"), ("email", "text"), ("is_staff", "boolean")])
}

/// A table keyed by its `id` column (primary key, replica identity DEFAULT).
fn table(columns: &[(&str, &str)]) -> Table {
    Table {
        is_table: true,
        partitioned: false,
        identity_kind: IdentityKind::Default,
        identity_columns: vec!["id".into()],
        has_primary_key: true,
        unique_columns: vec!["id".into()],
        can_select: true,
        schema_usage: true,
        owned: true,
        columns: columns
            .iter()
            .map(|(name, type_name)| Column {
                name: (*name).into(),
                type_name: (*type_name).into(),
                not_null: *name == "id",
            })
            .collect(),
    }
}

fn judge(config: &Config, table: Option<Table>, filter: Option<FilterProbe>) -> Vec<Finding> {
    let facts = SyncTable { table, filter, shape: None, own_filter: false };
    tables::sync_table(
        "sync[0]",
        &config.sync[0],
        "ciosync",
        &facts,
        config.pipeline.record_accepted,
    )
}

fn messages(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.message.as_str()).collect()
}

#[test]
fn a_ready_table_gets_its_lines_in_report_order() {
    let lines = judge(&two_tables("", ""), Some(users()), None);
    assert_eq!(
        messages(&lines),
        [
            "id column id is unique and not null",
            "the 1 mapped column exists",
            "replica identity DEFAULT/INDEX: updates send only the attributes that changed \
             (by the record of what Customer.io accepted), but an email moved between \
             customers by two separate transactions is not ordered, and a claim Customer.io \
             drops (answering 200) stays recorded until the email changes again; FULL \
             orders every move",
        ]
    );
    assert!(lines.iter().all(|f| f.check == "table public.users"));
    assert_eq!(lines[2].level, Level::Warning);
    assert_eq!(
        lines[2].fix.as_deref(),
        Some("ALTER TABLE \"public\".\"users\" REPLICA IDENTITY FULL;")
    );
}

#[test]
fn a_missing_table_or_a_view_is_one_line() {
    let mut view = users();
    view.is_table = false;
    for table in [None, Some(view)] {
        let lines = judge(&two_tables("", ""), table, None);
        assert_eq!(messages(&lines), ["does not exist (or is not a table)"]);
        assert_eq!(lines[0].level, Level::Error);
    }
}

#[test]
fn an_unreadable_table_without_its_id_column_stops_there() {
    let mut keyless = table(&[("uuid", "uuid"), ("email", "text")]);
    keyless.can_select = false;
    let lines = judge(&two_tables("", "filter = \"NOT is_staff\""), Some(keyless), None);
    assert_eq!(messages(&lines), ["role ciosync cannot read it", "has no column id (id_column)"]);
    assert_eq!(
        lines[0].fix.as_deref(),
        Some("GRANT SELECT ON \"public\".\"users\" TO \"ciosync\";")
    );
}

#[test]
fn an_id_column_must_be_unique_and_not_null() {
    let mut nullable = users();
    nullable.columns[0].not_null = false;
    let mut not_unique = users();
    not_unique.unique_columns.clear();
    for table in [nullable, not_unique] {
        let lines = judge(&two_tables("", ""), Some(table), None);
        assert_eq!(lines[0].level, Level::Error);
        assert_eq!(
            lines[0].fix.as_deref(),
            Some(
                "ALTER TABLE \"public\".\"users\" ALTER COLUMN \"id\" SET NOT NULL; CREATE \
                 UNIQUE INDEX ON \"public\".\"users\" (\"id\");"
            )
        );
    }
}

#[test]
fn mapped_columns_the_table_lacks_are_named() {
    let lines = judge(&two_tables("", ""), Some(table(&[("id", "bigint")])), None);
    assert_eq!(lines[1].message, "mapped columns missing: email");
    assert_eq!(lines[1].level, Level::Error);
    let mut two = two_tables("", "");
    two.sync[0].attributes.insert("staff".into(), "is_staff".into());
    assert_eq!(judge(&two, Some(users()), None)[1].message, "all 2 mapped columns exist");
}

#[test]
fn the_replica_identity_line_follows_its_kind_and_the_primary_key() {
    let with = |kind, has_primary_key| {
        let mut table = users();
        table.identity_kind = kind;
        table.has_primary_key = has_primary_key;
        judge(&two_tables("", ""), Some(table), None)[2].clone()
    };
    assert_eq!(with(IdentityKind::Full, true).message, "replica identity FULL");
    assert!(with(IdentityKind::Nothing, true).message.starts_with("replica identity NOTHING"));
    let keyless = with(IdentityKind::Default, false);
    assert!(keyless.message.starts_with("replica identity DEFAULT without a primary key"));
    assert_eq!(keyless.level, Level::Error);
    assert_eq!(with(IdentityKind::Index, false).level, Level::Warning, "email is mapped");
    // Without email, nothing asks for FULL: the record diffs the updates.
    let mut no_email = two_tables("", "");
    no_email.sync[0].attributes.remove("email");
    no_email.sync[0].attributes.insert("plan".into(), "email".into());
    let line = judge(&no_email, Some(users()), None)[2].clone();
    assert_eq!(line.level, Level::Ok, "{}", line.message);
    assert!(line.message.contains("FULL is not needed"), "{}", line.message);
    let mut unkeyed = users();
    unkeyed.identity_columns = vec!["email".into()];
    let line = judge(&two_tables("", ""), Some(unkeyed), None)[2].clone();
    assert_eq!(line.level, Level::Warning);
    assert!(line.message.contains("without id column id"), "{}", line.message);
    assert_eq!(
        line.fix.as_deref(),
        Some("ALTER TABLE \"public\".\"users\" REPLICA IDENTITY FULL;")
    );
}

#[test]
fn without_the_record_default_identity_sends_every_attribute() {
    let mut config = two_tables("", "");
    config.pipeline.record_accepted = false;
    let line = judge(&config, Some(users()), None)[2].clone();
    assert_eq!(line.level, Level::Warning);
    assert!(line.message.contains("every mapped attribute is sent"), "{}", line.message);
}

#[test]
fn a_filter_is_judged_on_what_postgres_said_and_the_replica_identity() {
    let config = two_tables("", "filter = \"NOT is_staff\"");
    let refused = FilterProbe::Refused("column \"is_staf\" does not exist".into());
    let line = judge(&config, Some(users()), Some(refused)).pop().expect("a filter line");
    assert_eq!(
        line,
        Finding::error(
            "table public.users",
            "sync[0].filter (NOT is_staff) does not work on the table: column \"is_staf\" does \
             not exist",
            "fix sync[0].filter: an SQL boolean expression over the columns of public.users"
        )
    );
    let reads = FilterProbe::Reads(vec!["is_staff".into()]);
    let outside = judge(&config, Some(users()), Some(reads.clone())).pop().expect("a line");
    assert!(outside.message.starts_with("sync[0].filter reads is_staff of public.users"));
    assert_eq!(outside.level, Level::Error);
    let mut full = users();
    full.identity_kind = IdentityKind::Full;
    let inside = judge(&config, Some(full.clone()), Some(reads)).pop().expect("a line");
    assert_eq!(
        inside.message,
        "sync[0].filter works on the table; the columns it reads (is_staff) are in the replica \
         identity"
    );
    let constant = judge(&config, Some(full), Some(FilterProbe::Reads(Vec::new())));
    assert_eq!(constant[3].message, "sync[0].filter works on the table and reads no column");
}

#[test]
fn soft_deletes_and_change_events_need_their_columns_and_the_full_identity() {
    let config = two_tables(
        "",
        "soft_delete_column = \"deleted_at\"\n\n[[sync.events]]\nname = \"plan_changed\"\n\
         when_changed = \"plan\"\ndata = [\"email\"]\n",
    );
    let sync = &config.sync[0];
    assert!(tables::sync_options(sync, None, false).is_empty());
    let lacking = users();
    assert_eq!(
        messages(&tables::sync_options(sync, Some(&lacking), false)),
        [
            "has no column deleted_at (soft_delete_column)",
            "[[sync.events]] name columns it does not have: plan"
        ]
    );
    let mut default = table(&[
        ("id", "bigint"),
        ("email", "text"),
        ("plan", "text"),
        ("deleted_at", "timestamp with time zone"),
    ]);
    let lines = tables::sync_options(sync, Some(&default), false);
    assert!(lines[0]
        .message
        .starts_with("soft_delete_column deleted_at needs REPLICA IDENTITY FULL"));
    assert!(lines[1].message.starts_with("[[sync.events]] need the old row"));
    assert_eq!(lines[1].level, Level::Error);
    // With the record on, events are decided against it: no FULL needed.
    let lines = tables::sync_options(sync, Some(&default), true);
    assert!(lines[1].message.starts_with("1 change event configured, decided against the record"));
    assert_eq!(lines[1].level, Level::Ok);
    assert!(lines[0].message.starts_with("soft deletes by deleted_at, told from updates"));
    assert_eq!(lines[0].level, Level::Ok);
    default.identity_kind = IdentityKind::Full;
    assert_eq!(
        messages(&tables::sync_options(sync, Some(&default), true)),
        ["soft deletes by deleted_at", "1 change event configured"]
    );
    let mut two = config.clone();
    let again = two.sync[0].events[0].clone();
    two.sync[0].events.push(again);
    let lines = tables::sync_options(&two.sync[0], Some(&default), true);
    assert_eq!(lines[1].message, "2 change events configured");
    assert!(tables::sync_options(&two_tables("", "").sync[0], Some(&default), true).is_empty());
}

fn outbox() -> EventTableConfig {
    toml::from_str(
        "table = \"public.outbox\"\ncustomer_id_column = \"user_id\"\nname_column = \"name\"\n\
         data_column = \"payload\"\ntimestamp_column = \"occurred_at\"\n",
    )
    .expect("a valid [[events]] table")
}

#[test]
fn an_event_table_needs_a_key_and_columns_of_fitting_types() {
    let events = outbox();
    assert_eq!(
        messages(&tables::event_table(&events, "ciosync", None)),
        ["does not exist (or is not a table)"]
    );
    let fitting = table(&[
        ("id", "bigint"),
        ("user_id", "text"),
        ("name", "text"),
        ("payload", "jsonb"),
        ("occurred_at", "timestamp with time zone"),
    ]);
    assert_eq!(
        messages(&tables::event_table(&events, "ciosync", Some(&fitting))),
        ["its inserts become events; ids from its primary key, so `backfill --events` can \
          replay it"]
    );
    // What keeps a replay from working is said, as a fact, not a problem.
    let mut untimed = events.clone();
    untimed.timestamp_column = None;
    let lines = tables::event_table(&untimed, "ciosync", Some(&fitting));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].level, Level::Ok);
    assert!(lines[0].message.contains("cannot replay it without timestamp_column"));
    let mut full = fitting.clone();
    (full.has_primary_key, full.identity_kind) = (false, IdentityKind::Full);
    let lines = tables::event_table(&events, "ciosync", Some(&full));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].message.contains("ids come from the WAL"), "{}", lines[0].message);
    let mut wrong = table(&[
        ("id", "bigint"),
        ("user_id", "text"),
        ("payload", "text"),
        ("occurred_at", "bigint"),
    ]);
    wrong.has_primary_key = false;
    let lines = tables::event_table(&events, "ciosync", Some(&wrong));
    assert!(lines[0].message.starts_with("has no primary key"), "{}", lines[0].message);
    assert_eq!(
        lines[1].message,
        "no column name (name_column); data_column payload is text, not json or jsonb; \
         timestamp_column occurred_at is bigint, not a timestamp"
    );
    let mut unreadable = fitting.clone();
    unreadable.can_select = false;
    let lines = tables::event_table(&events, "ciosync", Some(&unreadable));
    assert_eq!(lines[0].level, Level::Warning, "{lines:?}");
    assert!(lines[0].message.contains("`backfill --events` cannot replay it"), "{lines:?}");
    assert_eq!(
        lines[0].fix.as_deref(),
        Some("GRANT SELECT ON \"public\".\"outbox\" TO \"ciosync\";")
    );
    let last = lines.last().expect("a line");
    assert_eq!(last.message, "its inserts become events", "no replay promised: {lines:?}");
    // Without USAGE on the schema, SELECT alone reads nothing: both grants.
    unreadable.schema_usage = false;
    let lines = tables::event_table(&events, "ciosync", Some(&unreadable));
    assert_eq!(
        lines[0].fix.as_deref(),
        Some(
            "GRANT USAGE ON SCHEMA \"public\" TO \"ciosync\"; \
             GRANT SELECT ON \"public\".\"outbox\" TO \"ciosync\";"
        )
    );
}

#[test]
fn a_column_renamed_or_retyped_since_the_daemon_streamed_it_is_named_with_its_fix() {
    use crate::schema::{accept, Baseline, Needs, Shape};
    let config = two_tables("", "on_schema_change = \"skip\"");
    let sync = &config.sync[0];
    let before = vec![("id".to_owned(), Shape::Number), ("email".to_owned(), Shape::String)];
    let kept = accept(&Needs::of_sync(sync), &before, &Baseline::default());
    let lines_for = |now: Vec<(String, Shape)>| {
        let facts = SyncTable {
            table: Some(users()),
            filter: None,
            shape: Some((now, kept.clone())),
            own_filter: false,
        };
        tables::sync_table("sync[0]", sync, "ciosync", &facts, true)
    };
    let renamed = lines_for(vec![("id".into(), Shape::Number), ("mail".into(), Shape::String)]);
    let line = &renamed[1];
    assert_eq!(line.level, Level::Error);
    assert_eq!(
        line.message,
        "public.users: column email (attributes.email) was renamed to mail (renamed; \
         on_schema_change = Skip)"
    );
    assert!(line.fix.as_deref().unwrap().contains("set attributes.email = \"mail\""));
    let retyped = lines_for(vec![("id".into(), Shape::Number), ("email".into(), Shape::Json)]);
    assert!(retyped[1].message.contains("now holds values of JSON type json"), "{:?}", retyped[1]);
    let whole = lines_for(before.clone());
    assert_eq!(
        whole[1].message,
        "the 1 mapped column exists, with the JSON types ciosync has sent"
    );
    assert_eq!(whole[1].level, Level::Ok);
}

#[test]
fn an_incomplete_record_is_a_warning_only_where_it_was_read() {
    let config = two_tables("", "");
    let sync = &config.sync[0];
    assert!(tables::record_completeness(sync, None).is_none());
    assert!(tables::record_completeness(sync, Some(true)).is_none());
    let warned = tables::record_completeness(sync, Some(false)).expect("a warning");
    assert_eq!(warned.level, Level::Warning);
    assert!(warned.message.starts_with("the record of what Customer.io accepted is not complete"));
    assert!(warned.fix.as_deref().is_some_and(|f| f.starts_with("ciosync backfill --table ")));
}

/// A config of one `[[objects]]` table (`sync[0]` once resolved) and one
/// `[[relationships]]` table (`sync[1]`).
fn memberships_config() -> Config {
    memberships_config_with("")
}

/// [`memberships_config`] with `object_lines` added to the `[[objects]]` entry.
fn memberships_config_with(object_lines: &str) -> Config {
    let text = r#"
[postgres]
url = "postgres://ciosync@127.0.0.1:5432/app"

[customerio]
site_id = "s"
api_key = "k"

[[relationships]]
table = "memberships"
customer_id_column = "user_id"
object_type_id = "1"
object_id_column = "account_id"

[[objects]]
table = "accounts"
object_type_id = "1"
id_column = "id"
"#;
    Config::from_toml(&(text.to_owned() + object_lines), Vec::new()).expect("valid")
}

fn judge_at(config: &Config, i: usize, table: Table) -> Vec<Finding> {
    judge_filtered(config, i, Some(table), None)
}

fn judge_filtered(
    config: &Config,
    i: usize,
    table: Option<Table>,
    filter: Option<FilterProbe>,
) -> Vec<Finding> {
    let facts = SyncTable { table, filter, shape: None, own_filter: false };
    let entry = crate::config::sync::entry(&config.sync, i);
    tables::sync_table(&entry, &config.sync[i], "ciosync", &facts, true)
}

/// An object's or a relationship's line names its key as the file does:
/// `objects[0].filter` (not its place among the synced tables), a
/// relationship's `customer_id_column`, the entry's section in each fix.
#[test]
fn object_and_relationship_lines_name_their_entry_as_the_file_does() {
    let config = memberships_config_with(
        "filter = \"NOT is_internal\"\n[objects.attributes]\nname = \"name\"\n",
    );
    let refused = FilterProbe::Refused("column \"is_internal\" does not exist".into());
    let lines = judge_filtered(&config, 0, Some(users()), Some(refused));
    let filter = lines.last().expect("a filter line");
    assert!(
        filter.message.starts_with("objects[0].filter (NOT is_internal) does not work"),
        "{filter:?}"
    );
    assert_eq!(
        filter.fix.as_deref(),
        Some(
            "fix objects[0].filter: an SQL boolean expression over the columns of public.accounts"
        )
    );
    let reads = FilterProbe::Reads(vec!["is_staff".into()]);
    let outside = judge_filtered(&config, 0, Some(users()), Some(reads)).pop().expect("a line");
    assert!(
        outside.message.starts_with("objects[0].filter reads is_staff of public.accounts"),
        "{outside:?}"
    );
    let mapped =
        lines.iter().find(|f| f.message.starts_with("mapped columns missing")).expect("name");
    assert_eq!(mapped.fix.as_deref(), Some("fix [objects.attributes] or add the columns"));
    let missing = judge_filtered(&config, 0, None, None);
    assert_eq!(missing[0].fix.as_deref(), Some("create the table, or fix [[objects]] table"));
    let no_id = judge_at(&config, 0, table(&[("key", "bigint")]));
    assert_eq!(no_id[0].fix.as_deref(), Some("fix [[objects]] id_column"));
    let no_person = judge_at(&config, 1, table(&[("id", "bigint"), ("account_id", "text")]));
    assert_eq!(messages(&no_person), ["has no column user_id (customer_id_column)"]);
    assert_eq!(no_person[0].fix.as_deref(), Some("fix [[relationships]] customer_id_column"));
}

#[test]
fn a_relationship_table_needs_no_unique_person_and_an_identity_naming_both_ids() {
    let config = memberships_config();
    let columns = [("id", "bigint"), ("user_id", "bigint"), ("account_id", "text")];
    let lines = judge_at(&config, 1, table(&columns));
    assert!(!messages(&lines).iter().any(|m| m.contains("unique")), "{lines:?}");
    let warning = lines.iter().find(|f| f.level == Level::Warning).expect("a warning");
    assert!(warning.message.contains("relationship_unknown"), "{warning:?}");
    assert_eq!(
        warning.fix.as_deref(),
        Some("ALTER TABLE \"public\".\"memberships\" REPLICA IDENTITY FULL;")
    );
    let mut keyed = table(&columns);
    keyed.identity_columns = vec!["user_id".into(), "account_id".into()];
    let lines = judge_at(&config, 1, keyed);
    assert!(lines.iter().all(|f| f.level == Level::Ok), "{lines:?}");
    let lines = judge_at(&config, 1, table(&[("id", "bigint"), ("user_id", "bigint")]));
    assert!(messages(&lines).contains(&"has no column account_id (object_id_column)"));
}

#[test]
fn an_object_table_under_default_identity_sends_every_attribute() {
    let config = memberships_config();
    let lines = judge_at(&config, 0, users());
    let warning = lines.iter().find(|f| f.level == Level::Warning).expect("a warning");
    assert!(warning.message.contains("every mapped attribute"), "{warning:?}");
}

#[test]
fn an_object_or_relationship_table_the_role_cannot_read_names_the_grant() {
    let config = memberships_config();
    let columns = [("id", "bigint"), ("user_id", "bigint"), ("account_id", "text")];
    for (i, name) in [(0, "accounts"), (1, "memberships")] {
        let mut unreadable = table(&columns);
        unreadable.can_select = false;
        let lines = judge_at(&config, i, unreadable);
        assert_eq!(lines[0].level, Level::Error, "{lines:?}");
        assert_eq!(lines[0].message, "role ciosync cannot read it");
        let grant = format!("GRANT SELECT ON \"public\".\"{name}\" TO \"ciosync\";");
        assert_eq!(lines[0].fix.as_deref(), Some(grant.as_str()));
    }
}
