//! `delete_action = "suppress"` suppresses instead of deleting, and the
//! emulator then ignores a re-created row, as Customer.io does;
//! `soft_delete_column` removes the customer when set and identifies them in
//! full when cleared; the initial copy leaves soft-deleted rows out.
//! `deletes gone --send` refuses tables that differ in `delete_action`.

use ciosync::telemetry::Counters;
use ciosync_emulator::Emulator;
use serde_json::json;

use crate::backfill_yields_to_newer_changes::wait_for_backfill;
use crate::support::daemon::InProcess;
use crate::support::daemon::{config_file, run_binary};
use crate::support::emulator::{batch_items, wait_for, wait_for_attribute, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{eventually, Scenario};

#[tokio::test]
async fn suppress_on_delete_blocks_re_creation() {
    let Scenario { db, emulator, daemon } = Scenario::start_with("suppress", USERS_TABLE, |c| {
        c.replacen("id_column = \"id\"\n", "id_column = \"id\"\ndelete_action = \"suppress\"\n", 1)
    })
    .await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 2).await);
    db.exec("DELETE FROM users WHERE id = 1").await;
    assert!(wait_for(&emulator, |e| e.view(|v| v.world().suppressed().any(|s| s == "id:1"))).await);
    assert!(emulator.customer("1").is_none());

    // The row comes back (a re-signup): the identify is sent and ignored.
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    db.exec("UPDATE users SET plan = 'marker' WHERE id = 2").await;
    assert!(wait_for_attribute(&emulator, "2", "plan", json!("marker")).await);
    assert!(emulator.customer("1").is_none(), "a suppressed person was re-created");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn soft_delete_removes_and_undelete_identifies_in_full() {
    let (_db, _emulator, daemon) = soft_delete_round_trip("soft_delete", "").await;
    daemon.stop().await.unwrap();
}

/// Under DEFAULT identity (what ORMs leave) an UPDATE has no old row: the
/// record of what Customer.io accepted tells a soft delete (the customer
/// is known) from an update of a row deleted all along (not known), so
/// each removal is sent once, and an undelete goes whole (the removal made
/// the record forget the customer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_delete_under_default_identity_removes_once_from_the_record() {
    let (db, emulator, daemon) = soft_delete_round_trip(
        "soft_delete_default",
        "ALTER TABLE users REPLICA IDENTITY DEFAULT;",
    )
    .await;
    // Rows 1 (inserted, twice while deleted) and 3 (inserted deleted, updated).
    assert_eq!(Counters::get(&daemon.counters.changes_skipped_soft_deleted), 4);

    // A record that is not complete for the table (emptied, or from before
    // the record): a customer it lacks may be held, so the removal goes,
    // once.
    db.exec("INSERT INTO users (id, email, deleted_at) VALUES (5, 'e@x.io', now())").await;
    db.exec("DELETE FROM ciosync.accepted WHERE customer_id = ''").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 5").await;
    db.exec("UPDATE users SET plan = 'team' WHERE id = 5").await;
    let last = db.exec_then_lsn("UPDATE users SET plan = 'last' WHERE id = 2").await;
    assert!(db.wait_for_confirmed(&db.name, last).await);
    let removals = batch_items(&emulator)
        .iter()
        .filter(|i| i["action"] == "delete" && i["identifiers"]["id"] == "5")
        .count();
    assert_eq!(removals, 1, "an unknown customer of an incomplete record");
    // check says so, and what makes it complete again.
    let config = config_file(&with_soft_delete(db.config(&emulator.url(), "")));
    let out = run_binary(&["check"], config.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "warning table public.users: the record of what Customer.io accepted is not complete"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("fix: ciosync backfill --table public.users"), "{stdout}");
    // The backfill it names records every row that syncs and marks the
    // record complete again.
    let out = run_binary(&["backfill", "--table", "public.users"], config.path()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for_backfill(&db, 1, "done").await, "the backfill never finished");
    let marked = "SELECT attributes ? 'public.users' FROM ciosync.accepted WHERE customer_id = ''";
    let marked: Vec<bool> =
        db.client.query(marked, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(marked, [true], "the backfill did not mark the record complete");
    daemon.stop().await.unwrap();
}

/// Soft delete, updates while deleted, undelete; returns the running scenario.
async fn soft_delete_round_trip(name: &str, identity: &str) -> (TestDb, Emulator, InProcess) {
    let schema =
        format!("{USERS_TABLE} ALTER TABLE users ADD COLUMN deleted_at timestamptz; {identity}");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with(name, &schema, with_soft_delete).await;
    db.exec(
        "INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free'), (2, 'b@x.io', 'free')",
    )
    .await;
    // Inserted already deleted: never created.
    db.exec("INSERT INTO users (id, email, deleted_at) VALUES (3, 'c@x.io', now())").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1") && c.contains_key("2")).await);

    db.exec("UPDATE users SET deleted_at = now() WHERE id = 1").await;
    assert!(wait_for_customers(&emulator, |c| !c.contains_key("1")).await, "soft delete");
    // Changes while deleted send nothing.
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    db.exec("UPDATE users SET first_name = 'Ada' WHERE id = 1").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 3").await;
    db.exec("UPDATE users SET plan = 'marker' WHERE id = 2").await;
    assert!(wait_for_attribute(&emulator, "2", "plan", json!("marker")).await);
    assert!(emulator.customer("1").is_none());
    assert!(emulator.customer("3").is_none());
    let removals = |id: &str| {
        batch_items(&emulator)
            .iter()
            .filter(|i| i["action"] == "delete" && i["identifiers"]["id"] == id)
            .count()
    };
    assert_eq!(removals("1"), 1, "one soft delete, one removal");
    assert_eq!(removals("3"), 0, "a row deleted all along was removed");

    // Undeleted: identified in full, with the change made while deleted.
    db.exec("UPDATE users SET deleted_at = NULL WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);
    assert_eq!(emulator.customer("1").unwrap()["email"], json!("a@x.io"));
    assert_eq!(emulator.customer("1").unwrap()["first_name"], json!("Ada"));
    (db, emulator, daemon)
}

pub fn with_soft_delete(config: String) -> String {
    config.replacen(
        "id_column = \"id\"\n",
        "id_column = \"id\"\nsoft_delete_column = \"deleted_at\"\n",
        1,
    )
}

// Found by the fault soak: the initial copy (and backfills) did not read the
// soft-delete column, so they created every soft-deleted row's customer.
#[tokio::test]
async fn the_initial_copy_and_backfills_leave_soft_deleted_rows_out() {
    let schema = format!(
        "{USERS_TABLE} ALTER TABLE users ADD COLUMN deleted_at timestamptz; \
         INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free'); \
         INSERT INTO users (id, email, plan, deleted_at) VALUES (2, 'b@x.io', 'pro', now());"
    );
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("soft_delete_copy", &schema, with_soft_delete).await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    let counters = &daemon.counters;
    // Counted once the copy's page is flushed, a moment after it arrived.
    assert!(eventually(|| Counters::get(&counters.rows_copied) == 2).await);
    assert_eq!(emulator.customer("2"), None, "a soft-deleted row was copied");
    assert_eq!(Counters::get(&counters.changes_skipped_soft_deleted), 1, "counted as soft-deleted");
    assert_eq!(Counters::get(&counters.changes_skipped_invalid_id), 0);

    // A backfill (the daemon reads the same way) leaves it out too.
    let config = config_file(&with_soft_delete(db.config(&emulator.url(), "")));
    let out = run_binary(&["backfill"], config.path()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for_backfill(&db, 1, "done").await, "the backfill never finished");
    assert_eq!(emulator.customer("2"), None, "a backfill created a soft-deleted row's customer");
    assert_eq!(Counters::get(&counters.changes_skipped_soft_deleted), 1);

    // Undeleted later: identified in full.
    db.exec("UPDATE users SET deleted_at = NULL WHERE id = 2").await;
    assert!(wait_for_attribute(&emulator, "2", "plan", json!("pro")).await);
    assert_eq!(emulator.customer("2").unwrap()["email"], json!("b@x.io"));
    daemon.stop().await.unwrap();
}

/// A second `[[sync]]` table whose removals suppress.
const MEMBERS_SUPPRESS: &str = r#"
[[sync]]
table = "public.members"
id_column = "id"
delete_action = "suppress"

[sync.attributes]
email = "email"
"#;

/// `deletes gone --send` refuses when the `[[sync]]` tables differ in
/// `delete_action` (the record does not say which table a gone customer
/// came from): exit 1 naming the fix, nothing sent, the record unchanged.
/// Counting them still works; with one action the same customer is removed.
#[tokio::test]
async fn deletes_gone_refuses_tables_that_differ_in_delete_action() {
    let schema = format!("{USERS_TABLE} CREATE TABLE members (id bigint PRIMARY KEY, email text);");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("gone_two_actions", &schema, |c| c).await;
    let lsn =
        db.exec_then_lsn("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')").await;
    // Acknowledged only once the record holds what Customer.io accepted.
    assert!(db.wait_for_confirmed(&db.name, lsn).await);
    daemon.stop().await.unwrap();
    // No daemon runs: the delete stays in the slot, the record holds 2.
    db.exec("DELETE FROM users WHERE id = 2").await;
    assert!(db.recorded_customers().await.contains("2"));

    let two_actions = config_file(&db.config(&emulator.url(), MEMBERS_SUPPRESS));
    let out = run_binary(&["deletes", "gone"], two_actions.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.starts_with("1 customer in the record"), "{stdout}");
    let requests = emulator.requests().len();
    let out = run_binary(&["deletes", "gone", "--send"], two_actions.path()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the [[sync]] tables differ in delete_action"), "{stderr}");
    assert_eq!(emulator.requests().len(), requests, "sent to Customer.io");
    assert!(emulator.customer("2").is_some());
    assert!(db.recorded_customers().await.contains("2"), "the record forgot a customer not sent");

    // One delete_action: removed.
    let one_action = config_file(&db.config(&emulator.url(), ""));
    let out = run_binary(&["deletes", "gone", "--send"], one_action.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.starts_with("removed 1,"), "{stdout}");
    assert!(emulator.customer("2").is_none());
    assert!(!emulator.view(|v| v.world().suppressed().any(|s| s == "id:2")), "suppressed");
}
