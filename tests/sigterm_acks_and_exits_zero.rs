//! SIGTERM: the daemon finishes, sends its final acknowledgement and exits 0;
//! the slot then holds nothing that was delivered.

use crate::support::daemon::{config_file, signal, spawn_binary};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn sigterm_exits_zero_with_the_slot_acked_to_the_last_delivered_commit() {
    let db = TestDb::new("sigterm").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    // A long status interval: the final ack must not rely on a periodic one.
    let text = db
        .config(&emulator.url(), "")
        .replace("status_interval_ms = 200", "status_interval_ms = 5000");
    let config = config_file(&text);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("daemon.log");
    let mut daemon = spawn_binary(config.path(), &log);
    db.wait_for_streaming().await;

    for i in 1..=20 {
        db.exec(&format!("INSERT INTO users (id, email) VALUES ({i}, 'u{i}@x.io')")).await;
    }
    assert!(wait_for_customers(&emulator, |c| c.len() == 20).await);
    signal(&daemon, "TERM");
    let status = daemon.wait().unwrap();
    assert_eq!(status.code(), Some(0), "log: {}", std::fs::read_to_string(&log).unwrap());

    // Every delivered transaction was acknowledged: nothing is left to decode.
    assert_eq!(db.pending_in_slot().await, 0, "the slot still holds delivered transactions");
}
