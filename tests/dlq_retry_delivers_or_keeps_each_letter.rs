//! `dlq retry --all` replays every letter in id order: the ones Customer.io
//! accepts are deleted and their customers exist with their rows' current
//! attributes (an identify is refreshed from its row); one it refuses again
//! stays, with attempts + 1 and the new error.
//!
//! Before issue 26 this test stored letters without rows and expected their
//! payloads' (old) values to be sent: that was the defect.

use ciosync_emulator::Faults;
use serde_json::json;

use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{
    assert_no_secrets, config_with_password, delete, identify, rows, store, texts,
};
use crate::support::emulator;
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn delivered_letters_go_and_refused_ones_stay_with_the_new_error() {
    let db = TestDb::new("dlq_retry").await;
    let emulator = emulator::start().await;
    let text = config_with_password(&db, &emulator.url());
    let config = config_file(&text);

    db.exec(USERS_TABLE).await;
    db.exec(
        "INSERT INTO users (id, email, plan) VALUES \
         (1, 'a@x.io', 'pro'), (2, NULL, 'free'), (3, NULL, 'team'), (5, NULL, 'second')",
    )
    .await;
    // Customer.io refuses customer 3 however often.
    emulator.set_faults(Faults { reject_ids: vec!["3".into()], ..Faults::default() });
    let letters = [
        identify("1", json!({"email": "a@x.io", "plan": "pro"})),
        identify("2", json!({"plan": "free"})),
        identify("3", json!({"plan": "team"})),
        delete("4"),
        // Two letters of one customer: both send the row as it is now.
        identify("5", json!({"plan": "first"})),
        identify("5", json!({"plan": "second"})),
    ];
    store(&text).record(&letters).await.unwrap();
    let before = rows(&db).await;
    let refused_id = before[2].id;

    let out = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_no_secrets(&out, &[]);
    assert!(
        stdout.contains(
            "retried 6: delivered 1, refreshed from the row 4, skipped 0, refused again 1"
        ),
        "{stdout}"
    );
    // In the daemon's words: `reason (field): message`.
    let error = "invalid (identifiers): person id refused (emulator fault reject_ids)";
    assert!(
        stdout.contains(&format!("#{refused_id} refused again (HTTP 207): {error}")),
        "{stdout}"
    );

    let after = rows(&db).await;
    assert_eq!(after.len(), 1, "{after:?}");
    let kept = &after[0];
    assert_eq!((kept.id, kept.customer_id.as_str()), (refused_id, "3"));
    assert_eq!((kept.status, kept.attempts), (207, 2));
    assert_eq!(kept.error, error);
    let moved: bool = db
        .client
        .query_one("SELECT last_attempt_at > first_attempt_at FROM ciosync.dead_letters", &[])
        .await
        .unwrap()
        .get(0);
    assert!(moved, "last_attempt_at was not updated");

    let customers = emulator.customers();
    let attributes = |id: &str| customers.get(id).cloned().map(serde_json::Value::Object);
    assert_eq!(attributes("1").unwrap()["email"], "a@x.io");
    assert_eq!(attributes("1").unwrap()["plan"], "pro");
    assert_eq!(attributes("2").unwrap()["plan"], "free");
    assert_eq!(attributes("5").unwrap()["plan"], "second");
    assert!(attributes("3").is_none() && attributes("4").is_none(), "{customers:?}");
}
