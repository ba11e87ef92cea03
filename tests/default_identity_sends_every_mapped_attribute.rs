//! Under REPLICA IDENTITY DEFAULT an UPDATE carries no old row, so every
//! mapped attribute of the new row is sent (NULLs as null).

use serde_json::json;

use crate::support::emulator::{identifies_of, wait_for_attribute};
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

#[tokio::test]
async fn default_identity_sends_every_mapped_attribute() {
    let schema = format!("{USERS_TABLE} ALTER TABLE users REPLICA IDENTITY DEFAULT;");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("default_identity", &schema, |c| c).await;

    db.exec("INSERT INTO users (id, email, first_name, plan) VALUES (1, 'a@x.io', 'Ann', 'free')")
        .await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);

    let calls = identifies_of(&emulator, "1");
    assert_eq!(
        serde_json::Value::Object(calls[1].clone()),
        json!({"email": "a@x.io", "first_name": "Ann", "plan": "pro", "created_at": null, "about": null})
    );
    daemon.stop().await.unwrap();
}
