//! A large (TOASTed) column that an UPDATE does not touch arrives as
//! "unchanged TOAST": it is neither sent nor counted as a change, even
//! without the old row.

use serde_json::json;

use crate::support::emulator::{identifies_of, wait_for_attribute};
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

#[tokio::test]
async fn unchanged_toast_is_not_sent() {
    // DEFAULT identity: no old row, so only the TOAST marker tells us. bio is
    // stored out of line (EXTERNAL) once it is large, as the insert makes it.
    let schema = format!(
        "{USERS_TABLE} ALTER TABLE users REPLICA IDENTITY DEFAULT;
         ALTER TABLE users ALTER COLUMN bio SET STORAGE EXTERNAL;"
    );
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("unchanged_toast", &schema, |c| c).await;

    db.exec("INSERT INTO users (id, email, plan, bio) VALUES (1, 'a@x.io', 'free', repeat('b', 990) || repeat('c', 9000))").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);

    let calls = identifies_of(&emulator, "1");
    assert_eq!(calls.len(), 2);
    assert!(!calls[1].contains_key("about"), "unchanged TOAST was sent: {:?}", calls[1].keys());
    assert_eq!(calls[1].get("plan"), Some(&json!("pro")));
    // The insert left the oversized value out once; had the update carried it,
    // it would have been left out a second time.
    assert_eq!(daemon.counters.attributes_dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
    daemon.stop().await.unwrap();
}
