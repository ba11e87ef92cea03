//! A dead letter Postgres cannot store (here a customer id with a NUL byte)
//! is a definite error that quotes nothing of the letter, stores nothing of
//! the call, and leaves the store usable.

use serde_json::json;

use crate::support::dead_letters::{config_with_password, identify, rows, store};
use crate::support::postgres::TestDb;

#[tokio::test]
async fn an_unstorable_letter_fails_definitely_without_quoting_it() {
    let db = TestDb::new("dlq_unstorable").await;
    let store = store(&config_with_password(&db, "http://127.0.0.1:9"));
    let good = identify("1", json!({"plan": "value-a"}));
    let mut bad = identify("secret-id", json!({"plan": "value-b"}));
    bad.customer_id.push('\0');

    let error = store.record(&[good.clone(), bad]).await.unwrap_err();
    let message = ciosync::pipeline::error_chain(&error);
    assert!(!error.is_transient(), "{message}");
    assert!(message.contains("SQLSTATE"), "{message}");
    assert!(!message.contains("secret-id") && !message.contains("value-"), "{message}");
    assert!(rows(&db).await.is_empty(), "part of a failed call was stored");

    store.record(&[good]).await.unwrap();
    assert_eq!(rows(&db).await.len(), 1);
}
