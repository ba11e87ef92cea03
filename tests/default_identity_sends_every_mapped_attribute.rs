//! With the record of what Customer.io accepted turned off
//! (`pipeline.record_accepted = false`), an UPDATE under REPLICA IDENTITY
//! DEFAULT carries no old row, so every mapped attribute of the new row is
//! sent (NULLs as null); and the record is emptied at start, since it would
//! fall behind Customer.io while off.

use serde_json::json;

use crate::support::emulator::{identifies_of, wait_for_attribute};
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

#[tokio::test]
async fn default_identity_sends_every_mapped_attribute() {
    let schema = format!(
        "{USERS_TABLE} ALTER TABLE users REPLICA IDENTITY DEFAULT;
         CREATE SCHEMA ciosync;
         CREATE TABLE ciosync.accepted (slot text NOT NULL, customer_id text NOT NULL,
             attributes jsonb NOT NULL, PRIMARY KEY (slot, customer_id));
         INSERT INTO ciosync.accepted VALUES (current_database(), '9', '{{\"plan\": 1}}');"
    );
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("default_identity", &schema, |c| {
            c + "\n[pipeline]\nrecord_accepted = false\n"
        })
        .await;

    db.exec("INSERT INTO users (id, email, first_name, plan) VALUES (1, 'a@x.io', 'Ann', 'free')")
        .await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);

    let calls = identifies_of(&emulator, "1");
    assert_eq!(
        serde_json::Value::Object(calls[1].clone()),
        json!({"email": "a@x.io", "first_name": "Ann", "plan": "pro", "created_at": null, "about": null})
    );
    let held: i64 =
        db.client.query_one("SELECT count(*) FROM ciosync.accepted", &[]).await.unwrap().get(0);
    assert_eq!(held, 0, "the record was not emptied, or was written while off");
    daemon.stop().await.unwrap();
}
