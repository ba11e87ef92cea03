//! A ciosync killed while creating its slot leaves a walsender that waits
//! for running transactions before the slot is consistent, and Postgres
//! drops the slot when that walsender notices its client is gone. A restart
//! in between (systemd restarts at once) must not take the half-made slot
//! for its own: recorded as ours and then dropped, it looked lost, and the
//! daemon stopped with "slot lost" on every start after.

use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for_attribute};
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_made_slot_is_waited_for_not_recorded() {
    let db = TestDb::new("slot_being_created").await;
    db.exec(USERS_TABLE).await;
    // A transaction in progress holds the slot's creation back.
    let running = db.reconnected().await;
    running.exec("BEGIN; INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    let creator = db.reconnected().await;
    let pid: i32 = creator.client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let slot = db.name.clone();
    let creating = tokio::spawn(async move {
        let create = "SELECT pg_create_logical_replication_slot($1, 'pgoutput')";
        let _ = creator.client.query_one(create, &[&slot]).await;
    });
    let seen = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active";
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while db.client.query_one(seen, &[&db.name]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the slot's creation never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // The creator goes (as a killed ciosync's walsender would), and with it
    // the half-made slot; then the transaction ends.
    db.exec(&format!("SELECT pg_cancel_backend({pid})")).await;
    let _ = creating.await;
    running.exec("COMMIT").await;

    assert!(
        wait_for_attribute(&emulator, "1", "email", json!("a@x.io")).await,
        "the daemon did not create its own slot and copy the table"
    );
    db.exec("INSERT INTO users (id, email) VALUES (2, 'b@x.io')").await;
    assert!(wait_for_attribute(&emulator, "2", "email", json!("b@x.io")).await);
    assert!(daemon.is_running(), "the daemon stopped");
    daemon.stop().await.unwrap();
}
