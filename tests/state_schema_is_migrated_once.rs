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
