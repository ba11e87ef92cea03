//! A 207 with mixed item errors: the transient ones are retried, the
//! definite one is dead-lettered, the stream goes on and is acknowledged;
//! once the cause is fixed, `ciosync dlq retry --all` delivers it.

use std::sync::atomic::Ordering;

use ciosync_emulator::Faults;

use crate::support::daemon::{config_file, run_binary, API_KEY};
use crate::support::emulator::wait_for_customers;
use crate::support::postgres::USERS_TABLE;
use crate::support::{eventually, Scenario};

#[tokio::test]
async fn transient_item_errors_are_retried_and_definite_ones_dead_lettered() {
    let edit = |c: String| c.replace("linger_ms = 0", "linger_ms = 300");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("item_errors", USERS_TABLE, edit).await;
    // In the batch of four: customer 2 refused for good, the first two
    // other items refused for now.
    emulator.set_faults(Faults {
        reject_ids: vec!["2".into()],
        item_errors_next: 2,
        ..Faults::default()
    });
    db.exec(
        "INSERT INTO users (id, email, plan) SELECT g, 'u' || g || '@x.io', 'p' || g \
         FROM generate_series(1, 4) g",
    )
    .await;
    assert!(
        wait_for_customers(&emulator, |c| ["1", "3", "4"].iter().all(|id| c.contains_key(*id)))
            .await
    );
    let batches: Vec<u16> = emulator.requests().iter().map(|r| r.status).collect();
    assert_eq!(batches[0], 207, "{batches:?}");
    assert!(emulator.customer("2").is_none());
    // Stored once the batch it came in completes.
    assert!(eventually(|| daemon.counters.ops_dead_lettered.load(Ordering::Relaxed) == 1).await);
    assert!(daemon.counters.requests_retried.load(Ordering::Relaxed) >= 1);

    // The stream goes on and everything, the dead letter included, is acknowledged.
    db.exec("INSERT INTO users (id, email) VALUES (5, 'u5@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("5")).await);
    let end = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, end).await);
    let letter = db
        .client
        .query_one(
            "SELECT customer_id, operation, status, error, attributes FROM ciosync.dead_letters",
            &[],
        )
        .await
        .expect("exactly one dead letter");
    assert_eq!(letter.get::<_, String>(0), "2");
    assert_eq!(letter.get::<_, String>(1), "identify");
    assert_eq!(letter.get::<_, i32>(2), 207);
    assert!(letter.get::<_, String>(3).contains("invalid"), "{}", letter.get::<_, String>(3));
    let mut names: Vec<String> = letter.get(4);
    names.sort();
    assert!(names.contains(&"email".to_owned()) && names.contains(&"plan".to_owned()), "{names:?}");
    daemon.stop().await.unwrap();

    // The cause fixed, the operator replays it.
    emulator.set_faults(Faults::default());
    let config = config_file(&edit(db.config(&emulator.url(), "")));
    let out = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains(API_KEY) && !stderr.contains(API_KEY));
    let customer = emulator.customer("2").expect("delivered by dlq retry");
    assert_eq!(customer.get("plan"), Some(&serde_json::json!("p2")));
    let left: i64 =
        db.client.query_one("SELECT count(*) FROM ciosync.dead_letters", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);
}
