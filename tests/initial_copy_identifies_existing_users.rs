//! The first start copies every existing row to Customer.io inside the
//! slot's exported snapshot; rows changed while the copy runs end correct;
//! `initial_sync = false` skips the copy.

use std::sync::atomic::Ordering;

use ciosync_emulator::Faults;
use serde_json::json;

use crate::support::customers_match_rows;
use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

const USERS: i64 = 50_000;

async fn db_with_users(test: &str) -> TestDb {
    let db = TestDb::new(test).await;
    db.exec(USERS_TABLE).await;
    db.exec(&format!(
        "INSERT INTO users (id, email, plan, created_at)
         SELECT g, 'u' || g || '@x.io', 'free', '2024-01-01 00:00:00+00' FROM generate_series(1, {USERS}) g"
    ))
    .await;
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_copies_every_existing_user_and_changes_during_the_copy_end_correct() {
    let db = db_with_users("initial_copy").await;
    let emulator = emulator::start().await;
    // Slow Customer.io down so the copy is still running while rows change.
    emulator.set_faults(Faults { latency_ms: 20, ..Faults::default() });
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    let copying =
        wait_for(&emulator, |_| daemon.counters.rows_copied.load(Ordering::Relaxed) >= 2_000).await;
    assert!(copying, "the copy never started");
    assert!(
        daemon.counters.rows_copied.load(Ordering::Relaxed) < USERS as u64,
        "too late to race the copy"
    );

    // Already copied, not yet copied, deleted, and new rows.
    db.exec("UPDATE users SET plan = 'pro' WHERE id IN (1, 2, 49999)").await;
    db.exec("DELETE FROM users WHERE id IN (3, 50000)").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (60001, 'new@x.io', 'team')").await;
    emulator.set_faults(Faults::default());

    assert!(
        customers_match_rows(&db, &emulator).await,
        "customers differ from rows after the copy"
    );
    let customer = emulator.customer("42").unwrap();
    assert_eq!(customer.get("created_at"), Some(&json!(1_704_067_200)));
    let state: String = db
        .client
        .query_one("SELECT state FROM ciosync.initial_copy WHERE table_name = 'public.users'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "done");
    assert_eq!(daemon.counters.rows_copied.load(Ordering::Relaxed), USERS as u64);
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn initial_sync_false_skips_the_copy() {
    let db = TestDb::new("no_initial_copy").await;
    db.exec(USERS_TABLE).await;
    db.exec(
        "INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 10) g",
    )
    .await;
    let emulator = emulator::start().await;
    let daemon =
        InProcess::start(&db.config(&emulator.url(), "\n[pipeline]\ninitial_sync = false\n"));
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, email) VALUES (11, 'new@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("11")).await);
    assert_eq!(emulator.customers().len(), 1, "existing rows were copied");
    daemon.stop().await.unwrap();
}
