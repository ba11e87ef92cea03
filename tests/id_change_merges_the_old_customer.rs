//! An UPDATE of the id column identifies the new id with every mapped
//! attribute, then merges the old customer into it (or deletes it).

use serde_json::json;

use crate::support::emulator::{batch_items, identifies_of, wait_for, wait_for_customers};
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

#[tokio::test]
async fn id_change_merges_the_old_customer() {
    let Scenario { db, emulator, daemon } = Scenario::start("id_change_merge").await;

    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')").await;
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
    assert_eq!(
        last[2]["attributes"],
        json!({"email": "a@x.io", "first_name": null, "created_at": null, "about": null}),
        "the email, and NULLs so the merge brings nothing back"
    );
    assert_eq!(emulator.customer("100").unwrap().get("email"), Some(&json!("a@x.io")));
    assert_eq!(emulator.failures(), vec![], "Customer.io logged no failure");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn id_change_can_delete_the_old_customer_instead() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("id_change_delete", USERS_TABLE, |c| {
            c.replace("id_column = \"id\"", "id_column = \"id\"\non_id_change = \"delete_old\"")
        })
        .await;

    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    db.exec("UPDATE users SET id = 100 WHERE id = 1").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("100") && !c.contains_key("1")).await);
    let items = batch_items(&emulator);
    let last = &items[items.len() - 2..];
    assert_eq!(last[0], json!({"type": "person", "action": "delete", "identifiers": {"id": "1"}}));
    assert_eq!(last[1]["attributes"], json!({"email": "a@x.io"}));
    assert_eq!(emulator.customer("100").unwrap().get("email"), Some(&json!("a@x.io")));
    assert_eq!(emulator.failures(), vec![], "Customer.io logged no failure");
    daemon.stop().await.unwrap();
}
