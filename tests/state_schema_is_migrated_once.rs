//! `State::open` runs on every start and reconnect, several times each: on
//! a schema that records the current version it runs no migration (a table
//! dropped behind its back stays dropped, which only a skipped batch
//! explains), while a schema without the version (as older releases left
//! it) or with another one is migrated and then records it. Several
//! processes opening a fresh database at once all succeed.

use ciosync::state::{schema_is_current, schema_version, State};

use crate::support::postgres::{connect, TestDb};

async fn has_table(db: &TestDb, name: &str) -> bool {
    let query = format!("SELECT to_regclass('ciosync.{name}') IS NOT NULL");
    db.client.query_one(&query, &[]).await.expect("to_regclass").get(0)
}

async fn comment(db: &TestDb) -> Option<String> {
    let query = "SELECT obj_description('ciosync'::regnamespace, 'pg_namespace')";
    db.client.query_one(query, &[]).await.expect("comment").get(0)
}

#[tokio::test]
async fn a_current_schema_is_not_migrated_again_and_an_old_one_is() {
    let db = TestDb::new("schema_once").await;
    State::open(&db.client, "s").await.expect("first open");
    assert_eq!(comment(&db).await, Some(schema_version()));
    assert!(schema_is_current(&db.client).await.expect("version"));

    db.exec("DROP TABLE ciosync.held_refreshes").await;
    State::open(&db.client, "s").await.expect("second open");
    assert!(!has_table(&db, "held_refreshes").await, "the second open ran the migration");

    // As a release before the version check left it: no comment.
    db.exec("COMMENT ON SCHEMA ciosync IS NULL").await;
    assert!(!schema_is_current(&db.client).await.expect("version"));
    State::open(&db.client, "s").await.expect("open of an old schema");
    assert!(has_table(&db, "held_refreshes").await, "the old schema was not migrated");
    assert_eq!(comment(&db).await, Some(schema_version()));

    // Another version's schema is migrated too.
    db.exec(
        "DROP TABLE ciosync.held_refreshes; COMMENT ON SCHEMA ciosync IS 'ciosync state schema 0'",
    )
    .await;
    State::open(&db.client, "s").await.expect("open of another version");
    assert!(has_table(&db, "held_refreshes").await, "another version was not migrated");
}

#[tokio::test]
async fn processes_opening_a_fresh_database_at_once_all_succeed() {
    let db = TestDb::new("schema_at_once").await;
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let url = db.url.clone();
        opens.spawn(async move {
            let client = connect(&url).await;
            State::open(&client, "s").await.map(|_| ()).map_err(|e| e.to_string())
        });
    }
    while let Some(done) = opens.join_next().await {
        done.expect("task").expect("open");
    }
    assert_eq!(comment(&db).await, Some(schema_version()));
}

/// The CHECK constraints on `ciosync.dead_letters`, by name, with their
/// definitions.
async fn operation_checks(db: &TestDb) -> Vec<(String, String)> {
    let query = "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid) \
                 FROM pg_catalog.pg_constraint \
                 WHERE conrelid = 'ciosync.dead_letters'::regclass AND contype = 'c' ORDER BY 1";
    let rows = db.client.query(query, &[]).await.expect("constraints");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// An install of a release before either feature, or of `[[objects]]` or
/// `[[devices]]` alone, has its own check of the dead letters' operations;
/// migrating any of them (twice) leaves the one allowing every kind.
#[tokio::test]
async fn every_older_dead_letter_check_becomes_the_one_of_every_operation() {
    let db = TestDb::new("schema_kinds").await;
    State::open(&db.client, "s").await.expect("first open");
    let only_all = |checks: Vec<(String, String)>, from: &str| {
        let names: Vec<&str> = checks.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["dead_letters_operation_kinds_all"], "from {from}");
        for kind in ciosync::dead_letter::OPERATIONS {
            assert!(checks[0].1.contains(&format!("'{kind}'")), "{kind} from {from}");
        }
    };
    only_all(operation_checks(&db).await, "a fresh database");
    let people = "'identify', 'delete', 'suppress', 'merge', 'event'";
    let older = [
        ("dead_letters_operation_check", "'identify', 'delete', 'merge'".to_owned()),
        ("dead_letters_operation_kinds", people.to_owned()),
        (
            "dead_letters_operation_kinds_objects",
            format!("{people}, 'object_identify', 'object_delete', 'add_relationship', 'delete_relationship'"),
        ),
        ("dead_letters_operation_kinds_devices", format!("{people}, 'add_device', 'delete_device'")),
    ];
    for (name, kinds) in older {
        db.exec(&format!(
            "ALTER TABLE ciosync.dead_letters DROP CONSTRAINT dead_letters_operation_kinds_all; \
             ALTER TABLE ciosync.dead_letters ADD CONSTRAINT {name} CHECK (operation IN ({kinds}))"
        ))
        .await;
        for _ in 0..2 {
            db.exec("COMMENT ON SCHEMA ciosync IS NULL").await;
            State::open(&db.client, "s").await.expect("open of an older install");
            only_all(operation_checks(&db).await, name);
        }
    }
    // An older version started after this one (a rollback, an old standby)
    // adds its own check back beside `_all`: the next migration drops it.
    db.exec(&format!(
        "ALTER TABLE ciosync.dead_letters ADD CONSTRAINT dead_letters_operation_kinds \
         CHECK (operation IN ({people}))"
    ))
    .await;
    db.exec("COMMENT ON SCHEMA ciosync IS NULL").await;
    State::open(&db.client, "s").await.expect("open after a rollback");
    only_all(operation_checks(&db).await, "a rollback");
}

/// The collation of `ciosync.accepted`'s key columns, by column.
async fn key_collations(db: &TestDb) -> Vec<(String, String)> {
    let query =
        "SELECT attname::text, attcollation::regcollation::text FROM pg_catalog.pg_attribute \
                 WHERE attrelid = 'ciosync.accepted'::regclass \
                 AND attname IN ('slot', 'customer_id') ORDER BY 1";
    let rows = db.client.query(query, &[]).await.expect("collations");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The record's rows are found by slot and customer id, compared as bytes
/// (`"C"`), whatever the database's collation: a new install creates them
/// so, and an older one, whose columns took the database's collation, is
/// migrated with its rows kept and found.
#[tokio::test]
async fn the_record_compares_its_keys_as_bytes() {
    let db = TestDb::new("schema_record_keys").await;
    State::open(&db.client, "s").await.expect("first open");
    let bytes = vec![
        ("customer_id".to_owned(), "\"C\"".to_owned()),
        ("slot".to_owned(), "\"C\"".to_owned()),
    ];
    assert_eq!(key_collations(&db).await, bytes, "a new install");

    db.exec(
        "ALTER TABLE ciosync.accepted ALTER COLUMN slot TYPE text COLLATE \"default\", \
         ALTER COLUMN customer_id TYPE text COLLATE \"default\"; \
         INSERT INTO ciosync.accepted (slot, customer_id, attributes) \
         VALUES ('s', 'ä1', '{\"plan\": 7}'), ('s', 'a2', '{}'); \
         COMMENT ON SCHEMA ciosync IS 'ciosync state schema 0'",
    )
    .await;
    assert_ne!(key_collations(&db).await, bytes, "the older install was not made");
    State::open(&db.client, "s").await.expect("open of an older install");
    assert_eq!(key_collations(&db).await, bytes, "an older install");
    let known = ciosync::record::store::load(&db.client, "s", &["ä1".to_owned(), "a2".to_owned()])
        .await
        .expect("load");
    assert_eq!(known.len(), 2, "rows kept and found: {:?}", known.keys());
    assert_eq!(known["ä1"].get("plan"), Some(&7));
}
