//! `[[sync]] filter` syncs only the rows it matches: the initial copy reads
//! only those, a non-matching insert never reaches Customer.io, an update
//! that leaves the filter deletes the customer, and one that enters it
//! identifies them with every mapped attribute.

use std::sync::atomic::Ordering;

use serde_json::json;

use ciosync_emulator::Emulator;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, batch_items, identifies_of, wait_for_customers};
use crate::support::eventually;
use crate::support::postgres::TestDb;

/// The users table with the two columns the filter reads.
pub const FILTERED_USERS: &str = "
    CREATE TABLE public.users (
        id bigint PRIMARY KEY,
        email text,
        first_name text,
        plan text,
        created_at timestamptz,
        bio text,
        email_verified boolean NOT NULL DEFAULT false,
        is_staff boolean NOT NULL DEFAULT false
    );
    ALTER TABLE public.users REPLICA IDENTITY FULL;
";

/// The test config for `db` with `filter` on the users table.
pub fn config_with_filter(db: &TestDb, track_url: &str, filter: &str) -> String {
    let text = db.config(track_url, "");
    let with = text
        .replace("id_column = \"id\"\n", &format!("id_column = \"id\"\nfilter = \"{filter}\"\n"));
    assert_ne!(text, with, "the test config has the expected form");
    with
}

#[tokio::test]
async fn only_rows_matching_the_filter_are_copied_and_streamed() {
    let (daemon, db, emulator) = filter_workload("sync_filter", "").await;
    daemon.stop().await.unwrap();
    // The publication filters: the non-matching rows never reached ciosync.
    assert!(db.publication_filters("users").await.is_some());
    drop(emulator);
}

/// Under DEFAULT identity (what ORMs leave) the publication cannot carry a
/// filter on columns outside the key: Postgres would refuse the table's
/// UPDATEs. ciosync publishes the table whole and evaluates the filter on
/// each change itself, telling a row that leaves from one outside all
/// along by the record of what Customer.io accepted: the same workload
/// sends the same requests, and rows outside the filter cost none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_outside_the_replica_identity_is_evaluated_by_ciosync() {
    let identity = "ALTER TABLE public.users REPLICA IDENTITY DEFAULT;";
    let (daemon, db, emulator) = filter_workload("sync_filter_own", identity).await;
    assert_eq!(db.publication_filters("users").await, None, "published with a row filter");
    // The application updates and deletes rows on every column.
    db.exec("UPDATE users SET plan = 'staff' WHERE is_staff").await;
    db.exec("DELETE FROM users WHERE id = 3").await;
    let lsn = db.exec_then_lsn("DELETE FROM users WHERE id = 4").await;
    assert!(wait_for_customers(&emulator, |c| !c.contains_key("4")).await);
    assert!(db.wait_for_confirmed(&db.name, lsn).await, "the slot was not acknowledged");
    let mentions =
        |id: &str| batch_items(&emulator).iter().filter(|i| i["identifiers"]["id"] == id).count();
    // 2 and 3 were never in Customer.io: nothing sent, not even a delete.
    assert_eq!((mentions("2"), mentions("3")), (0, 0), "a filtered-out row was sent");
    // 1 left once (its removal), and updates while outside sent nothing.
    assert_eq!(mentions("1"), 2, "{:?}", batch_items(&emulator));
    assert!(daemon.counters.changes_skipped_filtered_out.load(Ordering::Relaxed) >= 4);
    daemon.stop().await.unwrap();
}

/// Copy, inserts, a row leaving and one entering the filter
/// `email_verified AND NOT is_staff`, with `identity` applied to the table.
async fn filter_workload(name: &str, identity: &str) -> (InProcess, TestDb, Emulator) {
    let db = TestDb::new(name).await;
    db.exec(&format!("{FILTERED_USERS} {identity}")).await;
    db.exec(
        "INSERT INTO users (id, email, email_verified, is_staff) VALUES
             (1, 'a@x.io', true, false), (2, 'b@x.io', false, false),
             (3, 'c@x.io', true, true), (4, 'd@x.io', true, false)",
    )
    .await;
    let emulator = emulator::start().await;
    let text = config_with_filter(&db, &emulator.url(), "email_verified AND NOT is_staff");
    let daemon = InProcess::start(&text);
    db.wait_for_streaming().await;

    // The initial copy read the matching rows only.
    assert!(wait_for_customers(&emulator, |c| c.len() == 2).await);
    assert!(emulator.customer("1").is_some() && emulator.customer("4").is_some());
    assert!(eventually(|| daemon.counters.rows_copied.load(Ordering::Relaxed) == 2).await);

    // A non-matching insert is not even in the stream: once a later change
    // is acknowledged, nothing was sent for it.
    db.exec("INSERT INTO users (id, email, is_staff) VALUES (5, 'e@x.io', true)").await;
    let lsn = db
        .exec_then_lsn(
            "INSERT INTO users (id, email, email_verified, plan) VALUES (6, 'f@x.io', true, 'pro')",
        )
        .await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("6")).await);
    assert!(db.wait_for_confirmed(&db.name, lsn).await, "the slot was not acknowledged");
    let mentions =
        |id: &str| batch_items(&emulator).iter().filter(|i| i["identifiers"]["id"] == id).count();
    assert_eq!(
        (mentions("2"), mentions("3"), mentions("5")),
        (0, 0, 0),
        "a filtered-out row was sent"
    );

    // Leaving the filter deletes the customer.
    db.exec("UPDATE users SET is_staff = true WHERE id = 1").await;
    assert!(wait_for_customers(&emulator, |c| !c.contains_key("1")).await);
    let deletes = batch_items(&emulator)
        .into_iter()
        .filter(|i| i["action"] == "delete" && i["identifiers"]["id"] == "1")
        .count();
    assert_eq!(deletes, 1);

    // Entering it identifies with every mapped attribute, though the update
    // changed none of them.
    db.exec("UPDATE users SET first_name = 'Eve', plan = 'team' WHERE id = 5").await;
    db.exec("UPDATE users SET is_staff = false, email_verified = true WHERE id = 5").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("5")).await);
    let sent = identifies_of(&emulator, "5");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        serde_json::Value::Object(sent[0].clone()),
        json!({"email": "e@x.io", "first_name": "Eve", "plan": "team", "created_at": null, "about": null})
    );
    (daemon, db, emulator)
}
