//! On a quiet database ciosync writes heartbeats that come back through the
//! stream and move the slot forward; while changes flow it writes none; and
//! with `heartbeat_interval_secs = 0` it writes none at all.

use std::time::Duration;

use crate::support::daemon::InProcess;
use crate::support::emulator;
use crate::support::endpoint::{get, value, wait_for_metrics};
use crate::support::postgres::{TestDb, USERS_TABLE};

fn with_heartbeat(config: String, secs: u64) -> String {
    config.replacen(
        "status_interval_ms = 200\n",
        &format!("status_interval_ms = 200\nheartbeat_interval_secs = {secs}\n"),
        1,
    )
}

#[tokio::test]
async fn heartbeats_advance_the_slot_of_a_quiet_database() {
    let db = TestDb::new("heartbeat").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&with_heartbeat(db.config(&emulator.url(), ""), 1));
    db.wait_for_streaming().await;

    // Nothing is written to this database from here on.
    let before = db.confirmed_flush(&db.name).await;
    let (seen, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_heartbeats_received_total").is_some_and(|n| n >= 2.0)
    })
    .await;
    assert!(seen, "heartbeats came back through the stream:\n{text}");
    let written = value(&text, "ciosync_heartbeats_written_total").unwrap();
    assert!(written >= 2.0, "{text}");
    assert!(
        db.wait_for_confirmed(&db.name, before + 1).await,
        "the slot did not move past {before} on heartbeats"
    );
    assert!(
        emulator.requests().iter().all(|r| r.path != "/api/v2/batch"),
        "a heartbeat is not a change: nothing goes to Customer.io"
    );
    // The daemon is ready throughout: heartbeats are not work to deliver.
    assert_eq!(get(&daemon.url("/readyz")).await.0, 200);

    // While changes flow (every 200 ms, well within the 1 s interval), no
    // heartbeat is needed; one may race the first change.
    let (_, text) = get(&daemon.url("/metrics")).await;
    let written_before = value(&text, "ciosync_heartbeats_written_total").unwrap();
    for i in 0..15 {
        db.exec(&format!("INSERT INTO users (id, email) VALUES ({i}, 'u{i}@x.io')")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, text) = get(&daemon.url("/metrics")).await;
    let written_after = value(&text, "ciosync_heartbeats_written_total").unwrap();
    assert!(
        written_after - written_before <= 1.0,
        "heartbeats written while changes flowed: {written_before} -> {written_after}"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn no_heartbeats_when_turned_off() {
    let db = TestDb::new("no_heartbeat").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&with_heartbeat(db.config(&emulator.url(), ""), 0));
    db.wait_for_streaming().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, text) = get(&daemon.url("/metrics")).await;
    assert_eq!(value(&text, "ciosync_heartbeats_written_total"), Some(0.0), "{text}");
    daemon.stop().await.unwrap();
}
