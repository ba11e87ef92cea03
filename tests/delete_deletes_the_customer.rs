//! A DELETE deletes the customer in Customer.io.

use crate::support::emulator::wait_for_customers;
use crate::support::Scenario;

#[tokio::test]
async fn delete_deletes_the_customer() {
    let Scenario { db, emulator, daemon } = Scenario::start("delete").await;

    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 2).await);
    db.exec("DELETE FROM users WHERE id = 1").await;
    assert!(wait_for_customers(&emulator, |c| !c.contains_key("1") && c.contains_key("2")).await);
    daemon.stop().await.unwrap();
}
