//! An event replay's `--where` (`backfill --events TABLE --where SQL`) is
//! held as a backfill's is: one read-only SQL condition, every read of it in
//! a `READ ONLY` transaction, by the command and by the daemon (which runs
//! whatever was written into `ciosync.backfills`). A condition that writes
//! through a function, that calls `nextval` (a write a rollback does not
//! undo), or that adds a statement is refused naming `--where`; nothing is
//! written and the stream goes on. The ordinary backfill's `nextval` case
//! too (its other cases: `backfill_selects_rows_and_attributes`).

use serde_json::json;

use crate::backfill_yields_to_newer_changes::{backfill_state, wait_for_backfill};
use crate::support::daemon::{config_file, run_binary};
use crate::support::emulator::wait_for_attribute;
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::Scenario;

const SCHEMA: &str = "
    CREATE TABLE outbox (id bigserial PRIMARY KEY, user_id bigint, name text,
                         occurred_at timestamptz);
    INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 3) g;
    INSERT INTO outbox (user_id, name, occurred_at)
        SELECT 1 + g % 3, 'step', now() - g * interval '1 minute' FROM generate_series(1, 6) g;
    CREATE TABLE loot (v text);
    CREATE FUNCTION steal() RETURNS boolean LANGUAGE sql
        AS $$ INSERT INTO loot VALUES ('taken') RETURNING true $$;
    CREATE SEQUENCE counter;
";

const EVENTS: &str = r#"
[[events]]
table = "outbox"
customer_id_column = "user_id"
name_column = "name"
timestamp_column = "occurred_at"
"#;

/// Each condition, and the table and `events` flag it is tried with.
const CASES: [(&str, &str, bool); 4] = [
    ("(SELECT steal())", "public.outbox", true),
    ("nextval('counter') > 0", "public.outbox", true),
    (
        "true)) AS rows; INSERT INTO loot VALUES ('taken'); SELECT * FROM (SELECT 1 AS id WHERE (true",
        "public.outbox",
        true,
    ),
    ("nextval('counter') > 0", "public.users", false),
];

/// Nothing the conditions tried is in the database.
async fn assert_nothing_written(db: &TestDb, after: &str) {
    let taken: i64 = db.client.query_one("SELECT count(*) FROM loot", &[]).await.unwrap().get(0);
    assert_eq!(taken, 0, "{after}: a condition wrote as the role");
    let called: bool =
        db.client.query_one("SELECT is_called FROM counter", &[]).await.unwrap().get(0);
    assert!(!called, "{after}: a condition advanced the sequence");
}

#[tokio::test]
async fn a_replay_condition_that_writes_is_refused_by_the_command_and_the_daemon() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("replay_where_guard", &format!("{USERS_TABLE}{SCHEMA}"), |c| {
            c + EVENTS
        })
        .await;
    let config = config_file(&(db.config(&emulator.url(), "") + EVENTS));
    for (clause, table, events) in CASES {
        let flag = if events { "--events" } else { "--table" };
        let out = run_binary(&["backfill", flag, table, "--where", clause], config.path()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {table} --where {clause}: {stderr}");
        assert!(stderr.contains("--where"), "{stderr}");
    }
    assert_nothing_written(&db, "the command").await;
    let queued: i64 =
        db.client.query_one("SELECT count(*) FROM ciosync.backfills", &[]).await.unwrap().get(0);
    assert_eq!(queued, 0, "a refused condition was queued");

    // Written into ciosync.backfills directly: the daemon refuses them too.
    let slot: String = db
        .client
        .query_one(
            "SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for (clause, table, events) in CASES {
        let id: i64 = db
            .client
            .query_one(
                "INSERT INTO ciosync.backfills (slot, table_name, where_clause, events) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[&slot, &table, &clause, &events],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            wait_for_backfill(&db, id, "failed").await,
            "{table} --where {clause}: {:?}",
            backfill_state(&db, id).await
        );
        let error: String = db
            .client
            .query_one("SELECT error FROM ciosync.backfills WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert!(error.contains("--where"), "{error}");
    }
    assert_nothing_written(&db, "the daemon").await;
    db.exec("UPDATE users SET plan = 'after' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("after")).await);
    daemon.stop().await.unwrap();
}
