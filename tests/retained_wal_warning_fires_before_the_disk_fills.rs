//! While ciosync cannot deliver (Customer.io failing) the slot keeps WAL;
//! once it retains `postgres.retained_wal_warn_bytes` the keeper says so:
//! `ciosync_slot_retained_wal_warning` turns 1, with the threshold exported.

use ciosync_emulator::Faults;

use crate::support::endpoint::{value, wait_for_metrics};
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

#[tokio::test]
async fn retained_wal_over_the_threshold_sets_the_warning() {
    let Scenario { db, emulator, daemon } = Scenario::start_with("wal_warning", USERS_TABLE, |c| {
        c.replacen(
            "status_interval_ms = 200\n",
            "status_interval_ms = 200\nretained_wal_warn_bytes = 16777216\n",
            1,
        )
    })
    .await;
    // Nothing can be delivered, so nothing after this change is acknowledged.
    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    db.exec("CREATE TABLE filler (payload text)").await;
    db.exec("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 40000)").await;
    db.exec("SELECT pg_switch_wal()").await;

    let (seen, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_slot_retained_wal_warning") == Some(1.0)
    })
    .await;
    assert!(seen, "no warning while the slot retains over 16 MiB:\n{text}");
    assert_eq!(value(&text, "ciosync_slot_retained_wal_warn_bytes"), Some(16_777_216.0));
    assert!(value(&text, "ciosync_slot_retained_wal_bytes").is_some_and(|b| b >= 16_777_216.0));
    emulator.set_faults(Faults::default());
    daemon.stop().await.unwrap();
}
