//! A TRUNCATE of a synced table deletes nobody in Customer.io: it is logged,
//! counted, and the stream goes on.

use std::sync::atomic::Ordering;

use crate::support::emulator::{batch_items, wait_for_customers};
use crate::support::Scenario;

#[tokio::test]
async fn truncate_does_not_delete() {
    let Scenario { db, emulator, daemon } = Scenario::start("truncate").await;

    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 2).await);
    db.exec("TRUNCATE users").await;
    db.exec("INSERT INTO users (id, email) VALUES (3, 'c@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("3")).await);

    assert_eq!(emulator.customers().len(), 3, "nobody was deleted");
    assert!(batch_items(&emulator).iter().all(|i| i["action"] != "delete"));
    assert_eq!(daemon.counters.truncates_ignored.load(Ordering::Relaxed), 1);
    daemon.stop().await.unwrap();
}
