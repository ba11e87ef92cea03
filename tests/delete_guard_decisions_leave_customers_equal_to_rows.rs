//! While the breaker holds a removal, the held person is still in
//! Customer.io. Two things the stream sends meanwhile would then land on a
//! different world than without the breaker, where the removal went first
//! (both found by the fault soak with the mass delete during the workload,
//! issue 26):
//! - an identify giving another customer the held person's email:
//!   Customer.io refuses it (an HTTP 200 and an "Attribute Update
//!   Failure"), so `deletes approve`, once nothing is held, identifies that
//!   customer again from its row;
//! - a re-insert (or a restore) that cancels the held delete: the person
//!   keeps the values they had, so the identify carries the row's NULLs
//!   as `null`.

use serde_json::json;

use crate::support::daemon::{config_file, run_binary, signal, spawn_binary};
use crate::support::dead_letters::texts;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::CONVERGE;

const GUARD: &str = "\n[delete_guard]\nmax_deletes = 1\n";

async fn held(db: &TestDb) -> Vec<(String, String)> {
    db.client
        .query("SELECT customer_id, state FROM ciosync.held_deletes ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Two users, the first deleted within the limit (sent), the second's
/// delete held by the breaker.
async fn trip(db: &TestDb, emulator: &ciosync_emulator::Emulator) {
    db.exec(USERS_TABLE).await;
    db.wait_for_streaming().await;
    db.exec(
        "INSERT INTO users (id, email, plan) \
         VALUES (1, 'one@example.com', 'pro'), (2, 'two@example.com', 'pro')",
    )
    .await;
    assert!(wait_for_customers(emulator, |c| c.len() == 2).await);
    db.exec("DELETE FROM users WHERE id = 1").await;
    assert!(wait_for_customers(emulator, |c| c.len() == 1).await);
    db.exec("DELETE FROM users WHERE id = 2").await;
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while held(db).await != [("2".to_owned(), "held".to_owned())] {
        assert!(tokio::time::Instant::now() < deadline, "not held: {:?}", held(db).await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_customer_given_a_held_persons_email_is_identified_again_once_approved() {
    let db = TestDb::new("guard_email").await;
    let emulator = emulator::start().await;
    let config = config_file(&db.config(&emulator.url(), GUARD));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    trip(&db, &emulator).await;

    // Someone signs up again with the held person's email.
    let end = db
        .exec_then_lsn(
            "INSERT INTO users (id, email, first_name) VALUES (3, 'two@example.com', 'Tess')",
        )
        .await;
    assert!(db.wait_for_confirmed(&db.name, end).await, "the insert was not acknowledged");
    assert!(
        emulator.customer("3").is_none(),
        "Customer.io took an email another person still has: nothing to repair"
    );
    let noted: i64 = db
        .client
        .query_one("SELECT count(*) FROM ciosync.held_refreshes WHERE customer_id = '3'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(noted, 1, "the customer was not noted for approve");

    // Approve waits for the slot to pass the delete; then, nothing held any
    // more, it identifies customer 3 again.
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut outputs = String::new();
    while held(&db).await.iter().any(|(_, state)| state == "held") {
        assert!(tokio::time::Instant::now() < deadline, "never approved: {outputs}");
        let approved = run_binary(&["deletes", "approve", "--all"], config.path()).await;
        let (stdout, stderr) = texts(&approved);
        assert!(approved.status.success(), "{stdout}{stderr}");
        outputs.push_str(&stdout);
    }
    assert!(
        outputs.contains("identified again from their rows: 1 customer given an email"),
        "{outputs}"
    );
    assert!(wait_for_customers(&emulator, |c| c.len() == 1).await);
    let three = emulator.customer("3").expect("customer 3 identified again");
    assert_eq!(three["email"], json!("two@example.com"));
    assert_eq!(three["first_name"], json!("Tess"));
    let left: i64 = db
        .client
        .query_one("SELECT count(*) FROM ciosync.held_refreshes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "settled refreshes are forgotten");
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
}

#[tokio::test]
async fn a_reinsert_cancelling_a_held_delete_clears_what_the_row_no_longer_has() {
    let db = TestDb::new("guard_reinsert").await;
    let emulator = emulator::start().await;
    let config = config_file(&db.config(&emulator.url(), GUARD));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    trip(&db, &emulator).await;

    // The same id comes back without a plan: the held delete is cancelled
    // (the person stays, with their history), and the plan must go.
    let end = db.exec_then_lsn("INSERT INTO users (id, email) VALUES (2, 'two@example.com')").await;
    assert!(db.wait_for_confirmed(&db.name, end).await, "the insert was not acknowledged");
    assert_eq!(held(&db).await, [("2".to_owned(), "superseded".to_owned())]);
    let two = emulator.customer("2").expect("the held person stays");
    assert_eq!(two["email"], json!("two@example.com"));
    assert!(two.get("plan").is_none(), "the old plan stayed: {two:?}");
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
}
