//! Changes of one customer waiting in the same flush window become one call:
//! identifies merge (later value wins), a delete replaces identifies before
//! it, an identify after a delete stays after it.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::support::emulator::{batch_items, wait_for, wait_for_customers};
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

fn items_of(items: &[Value], id: &str) -> Vec<Value> {
    items.iter().filter(|i| i["identifiers"]["id"] == json!(id)).cloned().collect()
}

#[tokio::test]
async fn changes_waiting_together_become_one_call() {
    let Scenario { db, emulator, daemon } = Scenario::start_with("coalescing", USERS_TABLE, |c| {
        c.replace("linger_ms = 0", "linger_ms = 2000")
    })
    .await;
    // Customer 3 exists first, so its delete and re-insert below are real.
    db.exec("INSERT INTO users (id, email, plan) VALUES (3, 'c@x.io', 'old')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("3")).await);
    emulator.clear_requests();

    db.exec(
        "BEGIN;
         INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free');
         UPDATE users SET plan = 'pro' WHERE id = 1;
         UPDATE users SET first_name = 'Ann' WHERE id = 1;
         INSERT INTO users (id, email) VALUES (2, 'b@x.io');
         UPDATE users SET plan = 'gone-soon' WHERE id = 2;
         COMMIT",
    )
    .await;
    // A later transaction in the same window.
    db.exec(
        "BEGIN;
         DELETE FROM users WHERE id = 2;
         UPDATE users SET plan = 'team' WHERE id = 1;
         DELETE FROM users WHERE id = 3;
         INSERT INTO users (id, email, plan) VALUES (3, 'c2@x.io', 'new');
         COMMIT",
    )
    .await;
    assert!(
        wait_for(&emulator, |e| e
            .customer("3")
            .is_some_and(|c| c.get("plan") == Some(&json!("new")))
            && e.customer("1").is_some_and(|c| c.get("plan") == Some(&json!("team"))))
        .await
    );
    let items = batch_items(&emulator);
    let one = items_of(&items, "1");
    assert_eq!(one.len(), 1, "three identifies of customer 1 merged: {one:?}");
    assert_eq!(one[0]["attributes"]["email"], json!("a@x.io"));
    assert_eq!(one[0]["attributes"]["plan"], json!("team"));
    assert_eq!(one[0]["attributes"]["first_name"], json!("Ann"));
    let two = items_of(&items, "2");
    assert_eq!(two.len(), 1, "the delete replaced the identifies: {two:?}");
    assert_eq!(two[0]["action"], json!("delete"));
    let three: Vec<Value> = items_of(&items, "3").iter().map(|i| i["action"].clone()).collect();
    assert_eq!(three, [json!("delete"), json!("identify")], "the identify stays after the delete");
    assert!(emulator.customer("2").is_none());
    assert_eq!(emulator.customer("3").unwrap().get("email"), Some(&json!("c2@x.io")));
    // 1: two merges; 2: identify and delete merged into the first identify.
    assert_eq!(daemon.counters.ops_coalesced.load(Ordering::Relaxed), 5);
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_hot_row_costs_a_request_per_flush_window_not_per_change() {
    let Scenario { db, emulator, daemon } = Scenario::start_with("hot_rows", USERS_TABLE, |c| {
        c.replace("linger_ms = 0", "linger_ms = 500")
    })
    .await;
    db.exec(
        "INSERT INTO users (id, email, plan) SELECT g, 'u' || g || '@x.io', 'p0' FROM generate_series(1, 10) g",
    )
    .await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 10).await);
    emulator.clear_requests();
    // 1,000 updates over 10 users, in 100 transactions.
    let mut sql = String::new();
    for i in 1..=100 {
        sql.push_str(&format!("BEGIN; UPDATE users SET plan = 'p{i}'; COMMIT;"));
    }
    db.exec(&sql).await;
    assert!(
        wait_for_customers(&emulator, |c| c
            .values()
            .all(|a| a.get("plan") == Some(&json!("p100"))))
        .await
    );
    let requests = emulator.requests().len();
    assert!(requests <= 10, "{requests} requests for 1,000 changes");
    daemon.stop().await.unwrap();
}
