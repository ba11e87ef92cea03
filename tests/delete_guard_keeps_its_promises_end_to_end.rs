//! The mass-delete circuit breaker's promises from the README that the
//! other `delete_guard_*` tests do not reach, each end to end:
//! - a `kill -9` while tripped, with a transaction of held removals stored
//!   but not acknowledged: the restarted daemon holds nothing twice, sends
//!   no removal, and the held set is the same row for row;
//! - `deletes approve` sends only holds whose transaction the slot has
//!   confirmed, says how many wait, and sends those once confirmed;
//! - while tripped, identifies of other customers, events and merges keep
//!   flowing, and a held *suppress* is not cancelled by the customer coming
//!   back (unlike a held delete): approve still suppresses them;
//! - `window_secs`: removals spread over more than the window never trip
//!   it; as many within the window do.

use std::collections::BTreeSet;
use std::time::Duration;

use ciosync_emulator::{Emulator, Faults};
use serde_json::json;

use crate::delete_guard_spills_a_huge_transaction::{
    assert_log_clean, exec_then_marker, wait_for_confirmed_within, Deletes,
};
use crate::support::daemon::{config_file, run_binary, signal, spawn_binary};
use crate::support::dead_letters::texts;
use crate::support::emulator::{
    self, batch_items, wait_for, wait_for_attribute, wait_for_customers,
};
use crate::support::endpoint::{value, wait_for_metrics};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{Scenario, CONVERGE};

/// One row of `ciosync.held_deletes`: (id, customer, action, commit LSN, state).
type HeldRow = (i64, String, String, String, String);

async fn held(db: &TestDb) -> Vec<HeldRow> {
    db.client
        .query(
            "SELECT id, customer_id, action, commit_lsn::text, state \
             FROM ciosync.held_deletes ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// The customers of the rows in state `held`.
async fn held_customers(db: &TestDb) -> BTreeSet<String> {
    held(db).await.into_iter().filter(|r| r.4 == "held").map(|r| r.1).collect()
}

/// Waits until the customers of the `held` rows are `want`.
async fn wait_for_held(db: &TestDb, want: &[&str]) -> bool {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while held_customers(db).await != want {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

fn guard(max_deletes: u64) -> String {
    format!("\n[delete_guard]\nmax_deletes = {max_deletes}\n")
}

/// Users 1-`n`, each in Customer.io once the daemon is streaming.
async fn users(db: &TestDb, emulator: &Emulator, n: usize) {
    db.exec(&format!(
        "INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, {n}) g"
    ))
    .await;
    assert!(wait_for_customers(emulator, |c| c.len() == n).await);
}

/// The trip: users 1-5 deleted with `max_deletes = 2`: 1 and 2 sent, 3-5
/// held, and the slot confirmed past it.
async fn trip(db: &TestDb, emulator: &Emulator) {
    let lsn = exec_then_marker(db, "DELETE FROM users WHERE id <= 5").await;
    assert!(wait_for_confirmed_within(db, lsn, CONVERGE).await, "the trip was not acknowledged");
    assert!(wait_for_held(db, &["3", "4", "5"]).await, "{:?}", held(db).await);
    assert!(wait_for_customers(emulator, |c| !c.contains_key("1") && !c.contains_key("2")).await);
}

/// Runs `ciosync deletes approve --all`, which must succeed; its stdout.
async fn approve_all(config: &std::path::Path) -> String {
    let out = run_binary(&["deletes", "approve", "--all"], config).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    stdout
}

/// `kill -9` of the built binary while tripped, after it stored the holds
/// of a transaction that Customer.io's outage keeps from being
/// acknowledged: the restart reads the transaction again and must neither
/// send its removals (the breaker stays tripped from the table) nor store
/// them twice.
#[tokio::test]
async fn kill_9_while_tripped_replays_without_sending_or_duplicating() {
    let db = TestDb::new("guard_kill9_tripped").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let config = config_file(&db.config(&emulator.url(), &guard(2)));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;
    users(&db, &emulator, 10).await;
    trip(&db, &emulator).await;

    // Customer.io fails the identify of 8: the transaction is stored, not acknowledged.
    emulator.set_faults(Faults { fail_next: 1_000_000, fail_status: 503, ..Faults::default() });
    let lsn = exec_then_marker(
        &db,
        "BEGIN; DELETE FROM users WHERE id IN (6, 7); \
         UPDATE users SET plan = 'pro' WHERE id = 8; COMMIT",
    )
    .await;
    assert!(wait_for_held(&db, &["3", "4", "5", "6", "7"]).await, "{:?}", held(&db).await);
    assert!(db.confirmed_flush(&db.name).await < lsn, "acknowledged: the test proves nothing");
    let before = held(&db).await;
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    db.wait_for_slot_released().await;
    emulator.set_faults(Faults::default());
    emulator.clear_requests();

    let log = logs.path().join("2.log");
    let mut daemon = spawn_binary(config.path(), &log);
    assert!(wait_for_confirmed_within(&db, lsn, CONVERGE).await, "the replay was not acknowledged");
    assert!(
        wait_for_attribute(&emulator, "8", "plan", json!("pro")).await,
        "the identify is replayed"
    );
    assert_eq!(held(&db).await, before, "the held set changed on the replay");
    let mut deletes = Deletes::default();
    deletes.drain(&emulator);
    assert!(
        deletes.customers().is_empty(),
        "removals sent on the replay: {:?}",
        deletes.customers()
    );
    let customers = emulator.customers();
    assert!(["3", "4", "5", "6", "7"].iter().all(|id| customers.contains_key(*id)));

    // Still tripped: a single delete is held too.
    let lsn = exec_then_marker(&db, "DELETE FROM users WHERE id = 9").await;
    assert!(wait_for_confirmed_within(&db, lsn, CONVERGE).await);
    assert!(wait_for_held(&db, &["3", "4", "5", "6", "7", "9"]).await, "{:?}", held(&db).await);
    assert!(emulator.customer("9").is_some(), "held, not sent");
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    assert_log_clean(&log);
}

/// A hold whose transaction the slot has not confirmed (the identify
/// before it in the same transaction is not delivered: Customer.io fails
/// the daemon) is skipped by `approve`, which sends the confirmed ones; it
/// goes once the slot confirms it. `approve` talks to a second, healthy
/// emulator, so what it sends is told apart from the daemon's retries.
#[tokio::test]
async fn approve_sends_only_holds_whose_transaction_is_confirmed() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("guard_unconfirmed", USERS_TABLE, |c| c + &guard(2)).await;
    users(&db, &emulator, 10).await;
    trip(&db, &emulator).await;

    emulator.set_faults(Faults { fail_next: 1_000_000, fail_status: 503, ..Faults::default() });
    let lsn = exec_then_marker(
        &db,
        "BEGIN; UPDATE users SET plan = 'pro' WHERE id = 8; DELETE FROM users WHERE id = 6; COMMIT",
    )
    .await;
    assert!(wait_for_held(&db, &["3", "4", "5", "6"]).await, "{:?}", held(&db).await);
    assert!(db.confirmed_flush(&db.name).await < lsn, "acknowledged: the test proves nothing");

    let approver = emulator::start().await;
    let config = config_file(&db.config(&approver.url(), ""));
    let stdout = approve_all(config.path()).await;
    assert!(stdout.contains("1 held removal waits for the daemon to acknowledge"), "{stdout}");
    assert!(stdout.ends_with("approved: sent 3 removals\n"), "{stdout}");
    let mut sent = Deletes::default();
    sent.drain(&approver);
    assert_eq!(sent.customers(), ["3", "4", "5"].map(String::from).into(), "only the confirmed");
    assert!(wait_for_held(&db, &["6"]).await, "{:?}", held(&db).await);

    // Customer.io is back: the transaction is acknowledged, and its hold can go.
    emulator.set_faults(Faults::default());
    assert!(wait_for_confirmed_within(&db, lsn, CONVERGE).await);
    assert_eq!(approve_all(config.path()).await, "approved: sent 1 removal\n");
    sent.drain(&approver);
    assert_eq!(sent.customers(), ["3", "4", "5", "6"].map(String::from).into());
    assert!(wait_for_held(&db, &[]).await);
    assert!(emulator.customer("6").is_some(), "the daemon itself never sent the held removal");
    daemon.stop().await.unwrap();
}

const EVENTS: &str = r#"
[[events]]
table = "public.signups"
customer_id_column = "user_id"
name = "signed_up"
"#;

/// Tripped (with `delete_action = "suppress"`): another customer's
/// identify, an event and an id change's merge all reach Customer.io; a
/// customer whose suppression is held comes back, which is sent but leaves
/// the hold as it is, and `approve` suppresses them after all.
#[tokio::test]
async fn everything_else_flows_while_tripped_and_a_held_suppress_stands() {
    let schema =
        format!("{USERS_TABLE} CREATE TABLE signups (id serial PRIMARY KEY, user_id bigint);");
    let Scenario { db, emulator, daemon } = Scenario::start_with("guard_flows", &schema, |c| {
        c.replacen("id_column = \"id\"\n", "id_column = \"id\"\ndelete_action = \"suppress\"\n", 1)
            + EVENTS
            + &guard(2)
    })
    .await;
    users(&db, &emulator, 10).await;
    trip(&db, &emulator).await;
    assert!(held(&db).await.iter().all(|r| r.2 == "suppress"), "{:?}", held(&db).await);

    db.exec("UPDATE users SET plan = 'pro' WHERE id = 6").await;
    db.exec("INSERT INTO signups (user_id) VALUES (7)").await;
    db.exec("UPDATE users SET id = 90 WHERE id = 9").await;
    // A customer whose suppression is held signs up again.
    db.exec("INSERT INTO users (id, email, plan) VALUES (3, 'back@x.io', 'back')").await;
    assert!(wait_for_attribute(&emulator, "6", "plan", json!("pro")).await, "identify");
    assert!(wait_for(&emulator, |e| e.events("7").iter().any(|ev| ev.name == "signed_up")).await);
    assert!(
        wait_for_customers(&emulator, |c| c.contains_key("90") && !c.contains_key("9")).await,
        "merge"
    );
    assert!(batch_items(&emulator).iter().any(|i| i["action"] == "merge"));
    assert!(
        wait_for_attribute(&emulator, "3", "plan", json!("back")).await,
        "the comeback is sent"
    );
    let (tripped, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_delete_guard_tripped") == Some(1.0)
    })
    .await;
    assert!(tripped, "{text}");
    assert!(
        wait_for_held(&db, &["3", "4", "5"]).await,
        "the held suppress was cancelled: {:?}",
        held(&db).await
    );

    let config = config_file(&db.config(&emulator.url(), ""));
    // Then the customers identified with an email while tripped, again.
    assert_eq!(
        approve_all(config.path()).await,
        "approved: sent 3 removals\n\
         identified again from their rows: 2 customers given an email while removals were held\n"
    );
    let suppressed = |e: &Emulator| -> BTreeSet<String> {
        e.view(|v| v.world().suppressed().cloned().collect())
    };
    assert!(
        wait_for(&emulator, |e| ["id:3", "id:4", "id:5"]
            .iter()
            .all(|s| suppressed(e).contains(*s)))
        .await,
        "{:?}",
        suppressed(&emulator)
    );
    daemon.stop().await.unwrap();
}

/// `window_secs = 3`, `max_deletes = 2`: three deletes, each more than a
/// window after the one before, are all sent; then three in one statement
/// trip the breaker (two sent, one held).
#[tokio::test]
async fn removals_spread_over_more_than_the_window_do_not_trip_it() {
    const WINDOW: Duration = Duration::from_secs(3);
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("guard_window", USERS_TABLE, |c| {
            c + &guard(2) + &format!("window_secs = {}\n", WINDOW.as_secs())
        })
        .await;
    users(&db, &emulator, 8).await;
    for id in ["1", "2", "3"] {
        db.exec(&format!("DELETE FROM users WHERE id = {id}")).await;
        assert!(
            wait_for_customers(&emulator, |c| !c.contains_key(id)).await,
            "{id} was not deleted"
        );
        // Sent, so counted before now: it leaves the window within it.
        tokio::time::sleep(WINDOW + Duration::from_millis(500)).await;
    }
    assert!(held(&db).await.is_empty(), "spread out, yet held: {:?}", held(&db).await);

    let lsn = exec_then_marker(&db, "DELETE FROM users WHERE id IN (4, 5, 6)").await;
    assert!(wait_for_confirmed_within(&db, lsn, CONVERGE).await);
    assert_eq!(held_customers(&db).await, ["6"].map(String::from).into(), "{:?}", held(&db).await);
    assert!(wait_for_customers(&emulator, |c| !c.contains_key("4") && !c.contains_key("5")).await);
    assert!(emulator.customer("6").is_some());
    daemon.stop().await.unwrap();
}
