//! An UPDATE of the id column identifies the new id with every mapped
//! attribute, then merges the old customer into it (or deletes it).

use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, batch_items, identifies_of, wait_for, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn id_change_merges_the_old_customer() {
    let db = TestDb::new("id_change_merge").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    db.wait_for_streaming().await;

    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')")
        .await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    db.exec("UPDATE users SET id = 100 WHERE id = 1").await;
    // Merge moves the email over too; the identify after it is the last call.
    assert!(wait_for_customers(&emulator, |c| c.contains_key("100") && !c.contains_key("1")).await);
    assert!(wait_for(&emulator, |e| identifies_of(e, "100").len() == 2).await);

    let items = batch_items(&emulator);
    let last = &items[items.len() - 3..];
    assert_eq!(last[0]["action"], "identify");
    assert_eq!(last[0]["identifiers"], json!({"id": "100"}));
    assert_eq!(
        last[0]["attributes"],
        json!({"plan": "free"}),
        "email waits until the old person is gone"
    );
    assert_eq!(
        last[1],
        json!({"type": "person", "action": "merge", "primary": {"id": "100"}, "secondary": {"id": "1"}})
    );
    assert_eq!(last[2]["attributes"], json!({"email": "a@x.io"}));
    assert_eq!(
        emulator.customer("100").unwrap().get("email"),
        Some(&json!("a@x.io"))
    );
    assert_eq!(emulator.failures(), vec![], "Customer.io logged no failure");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn id_change_can_delete_the_old_customer_instead() {
    let db = TestDb::new("id_change_delete").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let config = db.config(&emulator.url(), "").replace(
        "id_column = \"id\"",
        "id_column = \"id\"\non_id_change = \"delete_old\"",
    );
    let daemon = InProcess::start(&config);
    db.wait_for_streaming().await;

    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')")
        .await;
    db.exec("UPDATE users SET id = 100 WHERE id = 1").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("100") && !c.contains_key("1")).await);
    let items = batch_items(&emulator);
    let last = &items[items.len() - 2..];
    assert_eq!(
        last[0],
        json!({"type": "person", "action": "delete", "identifiers": {"id": "1"}})
    );
    assert_eq!(last[1]["attributes"], json!({"email": "a@x.io"}));
    assert_eq!(
        emulator.customer("100").unwrap().get("email"),
        Some(&json!("a@x.io"))
    );
    assert_eq!(emulator.failures(), vec![], "Customer.io logged no failure");
    daemon.stop().await.unwrap();
}
