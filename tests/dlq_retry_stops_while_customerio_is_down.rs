//! While Customer.io answers only 5xx, `dlq retry` backs off a few times,
//! then stops with exit 1 and keeps the letter untouched.

use ciosync::sink::send::MAX_TRIES;
use ciosync_emulator::Faults;
use serde_json::json;

use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{
    assert_no_secrets, config_with_password, identify, rows, store, texts,
};
use crate::support::emulator;
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn an_outage_stops_the_retry_and_keeps_the_letters() {
    let db = TestDb::new("dlq_outage").await;
    let emulator = emulator::start().await;
    let text = config_with_password(&db, &emulator.url());
    let config = config_file(&text);
    // The identify is replayed with the row's current values.
    db.exec(USERS_TABLE).await;
    db.exec("INSERT INTO users (id, plan) VALUES (1, 'pro')").await;
    store(&text).record(&[identify("1", json!({"plan": "pro"}))]).await.unwrap();
    let before = rows(&db).await;
    emulator.set_faults(Faults { fail_next: 1000, fail_status: 503, ..Faults::default() });

    let out = run_binary(&["dlq", "retry", "--id", &before[0].id.to_string()], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains(&format!("after {MAX_TRIES} tries")), "{stderr}");
    assert!(stderr.contains("HTTP 503") && stderr.contains("try again later"), "{stderr}");
    assert_no_secrets(&out, &[]);
    let batches = emulator.requests().iter().filter(|r| r.path == "/api/v2/batch").count();
    assert_eq!(batches, MAX_TRIES as usize);
    assert_eq!(rows(&db).await, before);
}
