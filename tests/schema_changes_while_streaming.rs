//! Migrations while ciosync streams: a renamed, dropped or retyped column
//! the config reads never leaves Customer.io silently stale and never
//! sends an attribute as another JSON type (README, "When the table
//! changes"). Each test writes before and after the DDL, repairs as the
//! README says, and checks every customer against its row.

use serde_json::{json, Value};

use crate::support::daemon::{config_file, run_binary, InProcess};
use crate::support::emulator::{batch_items, wait_for_attribute, wait_for_customers};
use crate::support::endpoint::{get, value, wait_for_metrics, wait_for_status};
use crate::support::postgres::TestDb;
use crate::support::Scenario;

fn mismatch(reason: &str) -> String {
    format!(r#"ciosync_schema_mismatch{{table="public.users",reason="{reason}"}}"#)
}

/// Every value an identify item ever gave `attribute`.
fn sent_values(emulator: &ciosync_emulator::Emulator, attribute: &str) -> Vec<Value> {
    batch_items(emulator)
        .iter()
        .filter(|i| i["action"] == "identify")
        .filter_map(|i| i["attributes"].get(attribute).cloned())
        .collect()
}

/// The usual scenario with `on_schema_change = "skip"` on the users table.
async fn skipping(test: &str) -> Scenario {
    Scenario::start_with(test, crate::support::postgres::USERS_TABLE, |config| {
        config.replace("id_column = \"id\"\n", "id_column = \"id\"\non_schema_change = \"skip\"\n")
    })
    .await
}

/// Customer 1 with a `created_at` of 2026-01-02 03:04:05 UTC, delivered.
async fn insert_with_created_at(db: &TestDb, emulator: &ciosync_emulator::Emulator) {
    db.exec(
        "INSERT INTO users (id, email, plan, created_at) \
         VALUES (1, 'a@x.io', 'free', '2026-01-02 03:04:05+00')",
    )
    .await;
    assert!(wait_for_attribute(emulator, "1", "created_at", json!(CREATED_AT)).await);
}

/// 2026-01-02 03:04:05 UTC in Unix seconds.
const CREATED_AT: i64 = 1_767_323_045;

fn attribute(emulator: &ciosync_emulator::Emulator, id: &str, name: &str) -> Option<Value> {
    emulator.customer(id).and_then(|c| c.get(name).cloned())
}

#[tokio::test]
async fn a_renamed_column_pauses_the_stream_until_the_config_follows_it() {
    let Scenario { db, emulator, daemon } = Scenario::start("schema_rename").await;
    db.exec(
        "INSERT INTO users (id, email, first_name, plan) \
         VALUES (1, 'a@x.io', 'U1', 'free'), (2, 'b@x.io', 'U2', 'free')",
    )
    .await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 2).await);

    db.exec("ALTER TABLE users RENAME COLUMN first_name TO given_name").await;
    let broken_at = db.exec_then_lsn("UPDATE users SET given_name = 'G2' WHERE id = 2").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;

    let (paused, metrics) =
        wait_for_metrics(&daemon.url("/metrics"), |m| value(m, &mismatch("renamed")) == Some(1.0))
            .await;
    assert!(paused, "no renamed mismatch reported: {metrics}");
    assert!(wait_for_status(&daemon.url("/readyz"), 503).await, "still ready while paused");
    let (_, body) = get(&daemon.url("/readyz")).await;
    assert!(body.contains("paused: a schema change"), "{body}");
    // Nothing from the break on was sent or acknowledged.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(attribute(&emulator, "2", "first_name"), Some(json!("U2")));
    assert_eq!(attribute(&emulator, "1", "plan"), Some(json!("free")));
    assert!(db.confirmed_flush(&db.name).await < broken_at, "the slot moved past the break");
    daemon.stop().await.unwrap();

    // `check` names the break and its fix.
    let config = config_file(&db.config(&emulator.url(), ""));
    let output = run_binary(&["check"], config.path()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("column first_name (attributes.first_name) was renamed to given_name"),
        "{stdout}"
    );
    assert!(stdout.contains(r#"set attributes.first_name = "given_name""#), "{stdout}");

    // The repair the log names: map the attribute to the new column.
    let fixed = db
        .config(&emulator.url(), "")
        .replace(r#"first_name = "first_name""#, r#"first_name = "given_name""#);
    let daemon = InProcess::start(&fixed);
    assert!(wait_for_attribute(&emulator, "2", "first_name", json!("G2")).await);
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);
    assert!(wait_for_status(&daemon.url("/readyz"), 200).await, "not ready after the repair");
    let (_, metrics) = get(&daemon.url("/metrics")).await;
    assert_eq!(value(&metrics, &mismatch("renamed")), Some(0.0), "{metrics}");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_retyped_column_pauses_and_a_revert_in_the_database_resumes_and_resends_it() {
    let Scenario { db, emulator, daemon } = Scenario::start("schema_retype").await;
    insert_with_created_at(&db, &emulator).await;

    // Within one JSON type: not a break.
    db.exec("ALTER TABLE users ALTER COLUMN plan TYPE varchar(20)").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);

    // timestamptz → text: created_at would go out as a string.
    db.exec("ALTER TABLE users ALTER COLUMN created_at TYPE text").await;
    db.exec(
        "INSERT INTO users (id, email, plan, created_at) \
         VALUES (2, 'b@x.io', 'team', '2026-12-06 09:33:42+00')",
    )
    .await;
    let (paused, metrics) =
        wait_for_metrics(&daemon.url("/metrics"), |m| value(m, &mismatch("retyped")) == Some(1.0))
            .await;
    assert!(paused, "no retyped mismatch reported: {metrics}");
    assert_eq!(value(&metrics, &mismatch("renamed")), Some(0.0), "{metrics}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(emulator.customer("2").is_none(), "a change after the break was sent");

    // Reverted in the database: the daemon sees it on its next look (every
    // 10 s), sends what changed meanwhile without created_at, and re-sends
    // created_at from the rows.
    db.exec(
        "ALTER TABLE users ALTER COLUMN created_at TYPE timestamptz \
         USING created_at::timestamptz",
    )
    .await;
    assert!(wait_for_attribute(&emulator, "2", "plan", json!("team")).await, "never resumed");
    assert!(
        wait_for_attribute(&emulator, "2", "created_at", json!(1_796_549_622)).await,
        "created_at not re-sent: {:?}",
        emulator.customer("2")
    );
    assert_eq!(attribute(&emulator, "1", "created_at"), Some(json!(CREATED_AT)));
    let sent = sent_values(&emulator, "created_at");
    assert!(sent.iter().all(Value::is_number), "created_at went out as another type: {sent:?}");
    assert!(wait_for_status(&daemon.url("/readyz"), 200).await, "not ready after the revert");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn skip_goes_on_without_the_broken_attribute_and_resends_it_once_repaired() {
    let Scenario { db, emulator, daemon } = skipping("schema_skip").await;
    db.exec(
        "INSERT INTO users (id, email, first_name, plan) \
         VALUES (1, 'a@x.io', 'U1', 'free'), (2, 'b@x.io', 'U2', 'free')",
    )
    .await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 2).await);

    db.exec("ALTER TABLE users RENAME COLUMN first_name TO given_name").await;
    db.exec("UPDATE users SET given_name = 'G2', plan = 'pro' WHERE id = 2").await;
    db.exec("INSERT INTO users (id, email, given_name, plan) VALUES (3, 'c@x.io', 'G3', 'team')")
        .await;
    // The rest of each change goes on; first_name is left out, and said.
    assert!(wait_for_attribute(&emulator, "2", "plan", json!("pro")).await);
    assert!(wait_for_attribute(&emulator, "3", "plan", json!("team")).await);
    assert_eq!(attribute(&emulator, "2", "first_name"), Some(json!("U2")));
    assert_eq!(attribute(&emulator, "3", "first_name"), None);
    let (_, metrics) = get(&daemon.url("/metrics")).await;
    assert_eq!(value(&metrics, &mismatch("renamed")), Some(1.0), "{metrics}");
    // first_name of customers 2 and 3.
    assert_eq!(value(&metrics, "ciosync_schema_left_out_total"), Some(2.0), "{metrics}");
    assert!(wait_for_status(&daemon.url("/readyz"), 200).await, "skip keeps the daemon ready");
    let skipped: Vec<String> = db
        .client
        .query_one(
            "SELECT skipped FROM ciosync.table_shapes WHERE slot = $1 AND table_name = 'public.users'",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(skipped, vec!["first_name".to_owned()]);
    daemon.stop().await.unwrap();

    // Repaired in the config and restarted, with no further change of the
    // table: the backfill the daemon queues re-sends first_name to everyone.
    let fixed = db
        .config(&emulator.url(), "")
        .replace(r#"first_name = "first_name""#, r#"first_name = "given_name""#);
    let daemon = InProcess::start(&fixed);
    assert!(wait_for_attribute(&emulator, "2", "first_name", json!("G2")).await);
    assert!(wait_for_attribute(&emulator, "3", "first_name", json!("G3")).await);
    assert_eq!(attribute(&emulator, "1", "first_name"), Some(json!("U1")));
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_backfill_while_a_column_is_retyped_leaves_its_attribute_out() {
    let Scenario { db, emulator, daemon } = skipping("schema_backfill").await;
    insert_with_created_at(&db, &emulator).await;
    db.exec("ALTER TABLE users ALTER COLUMN created_at TYPE text").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);

    let config = config_file(&db.config(&emulator.url(), ""));
    // Ignoring the record, so the row goes whole but for the retyped attribute.
    let output = run_binary(&["backfill", "--ignore-record"], config.path()).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let sent = sent_values(&emulator, "created_at");
    assert!(sent.iter().all(Value::is_number), "created_at went out as another type: {sent:?}");
    assert_eq!(attribute(&emulator, "1", "created_at"), Some(json!(CREATED_AT)));
    // The backfill did send the row.
    let identifies = crate::support::emulator::identifies_of(&emulator, "1");
    assert!(identifies.len() >= 3, "{identifies:?}");
    daemon.stop().await.unwrap();
}
