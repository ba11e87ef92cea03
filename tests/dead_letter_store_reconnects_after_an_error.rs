//! `DeadLetterStore::record` drops a broken connection and reconnects on
//! the next call, so a Postgres restart or a killed session costs at most
//! one failed call, and the retried letters are written once.

use serde_json::json;

use crate::support::dead_letters::{config_with_password, identify, rows, store};
use crate::support::postgres::TestDb;

#[tokio::test]
async fn a_killed_session_costs_at_most_one_failed_call() {
    let db = TestDb::new("dlq_reconnect").await;
    let store = store(&config_with_password(&db, "http://127.0.0.1:9"));
    store.record(&[identify("1", json!({"plan": "value-a"}))]).await.unwrap();

    db.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'ciosync'",
    )
    .await;
    let letter = [identify("2", json!({"plan": "value-b"}))];
    if let Err(error) = store.record(&letter).await {
        let message = ciosync::pipeline::error_chain(&error);
        assert!(error.is_transient(), "{message}");
        assert!(!message.contains("value-b"), "{message}");
        store.record(&letter).await.expect("the next call reconnects");
    }
    let customers: Vec<String> = rows(&db).await.into_iter().map(|r| r.customer_id).collect();
    assert_eq!(customers, ["1", "2"]);
}
