//! An UPDATE that changes no mapped attribute (a no-op, or only unmapped
//! columns) sends no call at all, and is still acknowledged.

use crate::support::emulator::{batch_items, wait_for_customers};
use crate::support::Scenario;

#[tokio::test]
async fn noop_and_unmapped_updates_send_nothing() {
    let Scenario { db, emulator, daemon } = Scenario::start("noop_updates").await;

    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    db.exec("UPDATE users SET plan = 'free' WHERE id = 1").await;
    db.exec("UPDATE users SET password_hash = 'new-hash' WHERE id = 1").await;
    // A marker after them: once it arrives, the updates before it were processed.
    db.exec("INSERT INTO users (id, email) VALUES (2, 'b@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("2")).await);
    let lsn = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, lsn).await, "slot acknowledged past the no-ops");

    let items = batch_items(&emulator);
    assert_eq!(items.len(), 2, "only the two inserts were sent: {items:?}");
    assert_eq!(
        daemon.counters.changes_skipped_no_change.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    daemon.stop().await.unwrap();
}
