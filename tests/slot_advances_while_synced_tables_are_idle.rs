//! When the synced tables are idle but the database is busy, keepalive
//! positions are acknowledged so the slot does not hold back WAL.

use crate::support::daemon::InProcess;
use crate::support::emulator;
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn slot_advances_while_synced_tables_are_idle() {
    let db = TestDb::new("idle_slot").await;
    db.exec(USERS_TABLE).await;
    db.exec("CREATE TABLE other (id serial PRIMARY KEY, payload text)").await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    db.wait_for_streaming().await;

    let before = db.confirmed_flush(&db.name).await;
    db.exec("INSERT INTO other (payload) SELECT repeat('x', 200) FROM generate_series(1, 20000)")
        .await;
    let busy_end = db.current_lsn().await;
    assert!(busy_end > before + 1_000_000, "the workload wrote WAL");
    assert!(
        db.wait_for_confirmed(&db.name, busy_end).await,
        "the slot did not advance past unrelated writes"
    );
    assert!(
        emulator.requests().iter().all(|r| r.path != "/api/v2/batch"),
        "nothing was sent for them"
    );
    daemon.stop().await.unwrap();
}
