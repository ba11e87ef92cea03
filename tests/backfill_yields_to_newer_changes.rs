//! A backfill racing live updates of the same rows ends with the newest
//! value of every row: chunks yield to the stream between watermarks.
//!
//! The race is made wide on purpose: the backfill's `--where` calls a slow
//! function, so each chunk's SELECT runs for a while on a snapshot taken at
//! its start while updates commit. Those updates sit between the chunk's
//! watermarks; a backfill that did not yield would send the stale values
//! after them. The check reads the requests in the order Customer.io got
//! them, so it does not rely on Customer.io's timestamp ordering either.

use std::time::Duration;

use serde_json::json;

use crate::support::customers_match_rows;
use crate::support::daemon::{config_file, run_binary};
use crate::support::emulator::batch_items;
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

const USERS: i64 = 3000;

pub async fn backfill_state(db: &crate::support::postgres::TestDb, id: i64) -> (String, i64) {
    let row = db
        .client
        .query_one("SELECT state, rows_done FROM ciosync.backfills WHERE id = $1", &[&id])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

pub async fn wait_for_backfill(
    db: &crate::support::postgres::TestDb,
    id: i64,
    state: &str,
) -> bool {
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE * 2;
    while tokio::time::Instant::now() < deadline {
        if backfill_state(db, id).await.0 == state {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_racing_live_updates_ends_with_the_newest_values() {
    let schema = format!(
        "{USERS_TABLE} INSERT INTO users (id, email, plan)
         SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, {USERS}) g;
         CREATE FUNCTION slowly() RETURNS boolean LANGUAGE sql VOLATILE
             AS 'SELECT pg_sleep(0.0002); SELECT true';"
    );
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("backfill_race", &schema, |c| c).await;
    assert!(customers_match_rows(&db, &emulator).await, "the initial copy did not finish");
    let config = config_file(&db.config(&emulator.url(), ""));

    // Customer.io lost everything: the backfill must bring back every
    // attribute, also of rows the stream changes (and sends only `plan` of)
    // while their chunk is read.
    emulator.reset();
    // The record still says Customer.io has everything: ignore it.
    let args = ["backfill", "--detach", "--ignore-record", "--where", "slowly()"];
    let queued = run_binary(&args, config.path()).await;
    assert!(queued.status.success(), "{}", String::from_utf8_lossy(&queued.stderr));
    let stdout = String::from_utf8_lossy(&queued.stdout).into_owned();
    assert!(stdout.contains(&format!("{USERS} rows")), "{stdout}");
    let id: i64 =
        db.client.query_one("SELECT max(id) FROM ciosync.backfills", &[]).await.unwrap().get(0);

    for round in 0..40 {
        db.exec(&format!("UPDATE users SET plan = 'round{round}' WHERE id % 50 = {}", round % 50))
            .await;
        db.exec(&format!("UPDATE users SET plan = 'late{round}' WHERE id = {}", USERS - round))
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let racing = backfill_state(&db, id).await.0 == "running";
    assert!(wait_for_backfill(&db, id, "done").await, "the backfill did not finish");
    assert!(customers_match_rows(&db, &emulator).await, "customers differ from rows");
    // The last plan each customer was sent is its row's plan.
    let mut last_sent = std::collections::HashMap::new();
    for item in batch_items(&emulator) {
        if let Some(plan) = item["attributes"].get("plan") {
            last_sent.insert(item["identifiers"]["id"].as_str().unwrap().to_owned(), plan.clone());
        }
    }
    let rows = db.client.query("SELECT id::text, plan FROM users", &[]).await.unwrap();
    let stale: Vec<String> = rows
        .iter()
        .filter(|r| last_sent.get(&r.get::<_, String>(0)) != Some(&json!(r.get::<_, String>(1))))
        .map(|r| r.get(0))
        .collect();
    assert!(stale.is_empty(), "the backfill sent stale values last for {} customers", stale.len());
    assert!(racing, "the updates did not race the backfill (it finished too early)");
    assert_eq!(backfill_state(&db, id).await.1, USERS);
    daemon.stop().await.unwrap();
}
