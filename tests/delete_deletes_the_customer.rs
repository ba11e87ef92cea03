//! A DELETE deletes the customer in Customer.io.

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn delete_deletes_the_customer() {
    let db = TestDb::new("delete").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    db.wait_for_streaming().await;

    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')")
        .await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 2).await);
    db.exec("DELETE FROM users WHERE id = 1").await;
    assert!(wait_for_customers(&emulator, |c| !c.contains_key("1") && c.contains_key("2")).await);
    daemon.stop().await.unwrap();
}
