//! A partitioned users table is published via its root, so changes in any
//! partition are synced under the table the config names.

use serde_json::json;

use crate::support::emulator::wait_for_customers;
use crate::support::Scenario;

#[tokio::test]
async fn changes_in_partitions_are_synced_under_the_root_table() {
    let schema = "
        CREATE TABLE users (id bigint PRIMARY KEY, email text, first_name text, plan text,
                            created_at timestamptz, bio text) PARTITION BY RANGE (id);
        CREATE TABLE users_low PARTITION OF users FOR VALUES FROM (0) TO (1000);
        CREATE TABLE users_high PARTITION OF users FOR VALUES FROM (1000) TO (MAXVALUE);";
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("partitioned", schema, |config| config).await;

    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free'), (5000, 'b@x.io', 'free')")
        .await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 5000").await;
    db.exec("DELETE FROM users WHERE id = 1").await;
    assert!(
        wait_for_customers(&emulator, |c| c.len() == 1
            && c.get("5000").is_some_and(|a| a.get("plan") == Some(&json!("pro"))))
        .await
    );
    daemon.stop().await.unwrap();
}
