//! Under REPLICA IDENTITY DEFAULT an UPDATE carries no old row, so every
//! mapped attribute of the new row is sent (NULLs as null).

use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, identifies_of, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn default_identity_sends_every_mapped_attribute() {
    let db = TestDb::new("default_identity").await;
    db.exec(USERS_TABLE).await;
    db.exec("ALTER TABLE users REPLICA IDENTITY DEFAULT").await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    db.wait_for_streaming().await;

    db.exec("INSERT INTO users (id, email, first_name, plan) VALUES (1, 'a@x.io', 'Ann', 'free')")
        .await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(
        wait_for_customers(&emulator, |c| c
            .get("1")
            .is_some_and(|a| a.get("plan") == Some(&json!("pro"))))
        .await
    );

    let calls = identifies_of(&emulator, "1");
    assert_eq!(
        serde_json::Value::Object(calls[1].clone()),
        json!({"email": "a@x.io", "first_name": "Ann", "plan": "pro", "created_at": null, "about": null})
    );
    daemon.stop().await.unwrap();
}
