//! A change Customer.io refuses for good shows in `/metrics`: counted as
//! dead-lettered, and stored in `ciosync.dead_letters` until `dlq` clears it.

use ciosync_emulator::Faults;

use crate::support::emulator::wait_for_customers;
use crate::support::endpoint::{value, wait_for_metrics};
use crate::support::Scenario;

#[tokio::test]
async fn metrics_count_dead_letters() {
    let Scenario { db, emulator, daemon } = Scenario::start("metrics_dead_letters").await;
    emulator.set_faults(Faults { reject_ids: vec!["7".to_owned()], ..Faults::default() });
    db.exec("INSERT INTO users (id, email) VALUES (7, 'refused@x.io')").await;
    db.exec("INSERT INTO users (id, email) VALUES (8, 'b@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("8")).await);

    let (ok, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_dead_letters_stored") == Some(1.0)
            && value(t, "ciosync_pending_operations") == Some(0.0)
    })
    .await;
    assert!(ok, "the dead letter never showed:\n{text}");
    let outcome =
        |o: &str| value(&text, &format!("ciosync_operations_completed_total{{outcome=\"{o}\"}}"));
    assert_eq!(outcome("dead_lettered"), Some(1.0), "{text}");
    assert_eq!(outcome("accepted"), Some(1.0), "{text}");
    assert!(!text.contains("refused@x.io"), "customer data leaked:\n{text}");

    db.exec("DELETE FROM ciosync.dead_letters").await;
    let (ok, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_dead_letters_stored") == Some(0.0)
    })
    .await;
    assert!(ok, "the stored count did not follow the table:\n{text}");
    daemon.stop().await.unwrap();
}
