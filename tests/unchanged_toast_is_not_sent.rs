//! A large (TOASTed) column that an UPDATE does not touch arrives as
//! "unchanged TOAST": it is neither sent nor counted as a change, even
//! without the old row.

use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, identifies_of, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn unchanged_toast_is_not_sent() {
    let db = TestDb::new("unchanged_toast").await;
    db.exec(USERS_TABLE).await;
    // DEFAULT identity: no old row, so only the TOAST marker tells us.
    db.exec("ALTER TABLE users REPLICA IDENTITY DEFAULT; ALTER TABLE users ALTER COLUMN bio SET STORAGE EXTERNAL").await;
    let emulator = emulator::start().await;
    // A value under 1000 bytes but stored out of line (EXTERNAL, no compression).
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    db.wait_for_streaming().await;

    db.exec("INSERT INTO users (id, email, plan, bio) VALUES (1, 'a@x.io', 'free', repeat('b', 990) || repeat('c', 9000))").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(
        wait_for_customers(&emulator, |c| c
            .get("1")
            .is_some_and(|a| a.get("plan") == Some(&json!("pro"))))
        .await
    );

    let calls = identifies_of(&emulator, "1");
    assert_eq!(calls.len(), 2);
    assert!(!calls[1].contains_key("about"), "unchanged TOAST was sent: {:?}", calls[1].keys());
    assert_eq!(calls[1].get("plan"), Some(&json!("pro")));
    // The insert left the oversized value out once; had the update carried it,
    // it would have been left out a second time.
    assert_eq!(daemon.counters.attributes_dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
    daemon.stop().await.unwrap();
}
