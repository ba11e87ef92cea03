//! A partitioned users table is published via its root, so changes in any
//! partition are synced under the table the config names.

use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::endpoint::{value, wait_for_metrics};
use crate::support::postgres::TestDb;
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
    // The publication lists the root, as the config names it.
    let published = r#"ciosync_table_published{table="public.users"}"#;
    let (seen, metrics) =
        wait_for_metrics(&daemon.url("/metrics"), |m| value(m, published) == Some(1.0)).await;
    assert!(seen, "{metrics}");
    daemon.stop().await.unwrap();
}

/// The mass-delete breaker's `max_share` counts a partitioned table by its
/// partitions' rows (the root itself holds none).
#[tokio::test]
async fn the_delete_share_counts_the_partitions_rows() {
    let db = TestDb::new("partitioned_share").await;
    db.exec(
        "CREATE TABLE users (id bigint PRIMARY KEY, email text, first_name text, plan text,
                             created_at timestamptz, bio text) PARTITION BY RANGE (id);
         CREATE TABLE users_low PARTITION OF users FOR VALUES FROM (0) TO (1000);
         CREATE TABLE users_high PARTITION OF users FOR VALUES FROM (1000) TO (MAXVALUE);
         INSERT INTO users (id) SELECT g FROM generate_series(1, 100) g;
         INSERT INTO users (id) SELECT g FROM generate_series(1001, 1100) g;",
    )
    .await;
    db.exec("ANALYZE users").await;
    let emulator = emulator::start().await;
    let guard = "\n[delete_guard]\nmax_deletes = 0\nmax_share = 0.1\n";
    let daemon = InProcess::start(&(db.config(&emulator.url(), "") + guard));
    let (limited, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_delete_guard_limit") == Some(20.0)
    })
    .await;
    assert!(limited, "10% of 200 rows: {text}");
    daemon.stop().await.unwrap();
}
