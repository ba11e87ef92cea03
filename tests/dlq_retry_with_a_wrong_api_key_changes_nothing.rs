//! `dlq retry` with credentials Customer.io refuses stops at once with exit
//! 1, names `customerio.api_key`, and keeps every letter as it was.

use serde_json::json;

use crate::support::daemon::{config_file, run_binary, API_KEY};
use crate::support::dead_letters::{
    assert_no_secrets, config_with_password, identify, rows, store, texts,
};
use crate::support::emulator;
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn a_refused_api_key_exits_1_naming_it_and_deletes_nothing() {
    let db = TestDb::new("dlq_wrong_key").await;
    let emulator = emulator::start().await;
    let wrong_key = "wrong-key-c0ffee";
    let text = config_with_password(&db, &emulator.url()).replace(API_KEY, wrong_key);
    let config = config_file(&text);
    // The identifies are replayed with the rows' current values.
    db.exec(USERS_TABLE).await;
    db.exec("INSERT INTO users (id, plan) VALUES (1, 'pro'), (2, 'free')").await;
    store(&text)
        .record(&[identify("1", json!({"plan": "pro"})), identify("2", json!({"plan": "free"}))])
        .await
        .unwrap();
    let before = rows(&db).await;

    let out = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("customerio.api_key"), "{stderr}");
    assert!(
        stdout.contains(
            "retried 0: delivered 0, refreshed from the row 0, skipped 0, refused again 0"
        ),
        "{stdout}"
    );
    assert_no_secrets(&out, &[wrong_key]);

    assert_eq!(rows(&db).await, before, "a letter was changed or deleted");
    assert!(emulator.customers().is_empty());
}
