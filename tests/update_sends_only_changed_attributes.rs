//! With REPLICA IDENTITY FULL an UPDATE sends only the mapped attributes
//! whose values changed; one changed to NULL is sent as null.

use serde_json::json;

use crate::support::emulator::{identifies_of, wait_for_attribute};
use crate::support::Scenario;

#[tokio::test]
async fn update_sends_only_changed_attributes() {
    let Scenario { db, emulator, daemon } = Scenario::start("update_only_changed").await;

    db.exec("INSERT INTO users (id, email, first_name, plan, bio) VALUES (1, 'a@x.io', 'Ann', 'free', 'hi')").await;
    db.exec("UPDATE users SET plan = 'pro', bio = NULL WHERE id = 1").await;

    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);
    let calls = identifies_of(&emulator, "1");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(serde_json::Value::Object(calls[1].clone()), json!({"plan": "pro", "about": null}));
    let customer = emulator.customer("1").unwrap();
    assert_eq!(customer.get("email"), Some(&json!("a@x.io")));
    assert!(customer.get("about").is_none(), "null unsets the attribute");
    daemon.stop().await.unwrap();
}
