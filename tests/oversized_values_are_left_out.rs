//! A value over Customer.io's 1000-byte limit is left out of the call, the
//! rest is sent; an unusable id skips the change; the stream goes on.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::TestDb;

#[tokio::test]
async fn oversized_values_are_left_out_and_the_rest_sent() {
    let db = TestDb::new("limits").await;
    db.exec(
        "CREATE TABLE users (id text PRIMARY KEY, email text, first_name text, plan text,
                             created_at timestamptz, bio text);
         ALTER TABLE users REPLICA IDENTITY FULL;",
    )
    .await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    db.wait_for_streaming().await;

    db.exec("INSERT INTO users (id, email, bio) VALUES ('u1', 'a@x.io', repeat('x', 1001))").await;
    db.exec(&format!("INSERT INTO users (id, email) VALUES ('{}', 'long@x.io')", "i".repeat(151)))
        .await;
    db.exec("INSERT INTO users (id, email) VALUES ('u2', 'b@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("u1") && c.contains_key("u2")).await);

    let u1 = emulator.customer("u1").unwrap();
    assert_eq!(u1.get("email"), Some(&json!("a@x.io")));
    assert!(u1.get("about").is_none(), "the oversized value was sent");
    assert_eq!(emulator.customers().len(), 2, "the over-long id was skipped");
    assert_eq!(daemon.counters.attributes_dropped.load(Ordering::Relaxed), 1);
    assert_eq!(daemon.counters.changes_skipped_invalid_id.load(Ordering::Relaxed), 1);
    daemon.stop().await.unwrap();
}
