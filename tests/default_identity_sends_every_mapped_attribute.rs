//! With the record of what Customer.io accepted turned off
//! (`pipeline.record_accepted = false`), an UPDATE under REPLICA IDENTITY
//! DEFAULT carries no old row, so every mapped attribute of the new row is
//! sent (NULLs as null); and the record is emptied at start, and again
//! whenever the slot's lease is taken again, since it would fall behind
//! Customer.io while off.

use std::time::Duration;

use serde_json::json;

use crate::support::emulator::{identifies_of, wait_for_attribute};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{Scenario, CONVERGE};

#[tokio::test]
async fn default_identity_sends_every_mapped_attribute() {
    let schema = format!(
        "{USERS_TABLE} ALTER TABLE users REPLICA IDENTITY DEFAULT;
         CREATE SCHEMA ciosync;
         CREATE TABLE ciosync.accepted (slot text NOT NULL, customer_id text NOT NULL,
             attributes jsonb NOT NULL, PRIMARY KEY (slot, customer_id));
         INSERT INTO ciosync.accepted VALUES (current_database(), '9', '{{\"plan\": 1}}');"
    );
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("default_identity", &schema, |c| {
            c + "\n[pipeline]\nrecord_accepted = false\n"
        })
        .await;

    db.exec("INSERT INTO users (id, email, first_name, plan) VALUES (1, 'a@x.io', 'Ann', 'free')")
        .await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);

    let calls = identifies_of(&emulator, "1");
    assert_eq!(
        serde_json::Value::Object(calls[1].clone()),
        json!({"email": "a@x.io", "first_name": "Ann", "plan": "pro", "created_at": null, "about": null})
    );
    let held: i64 =
        db.client.query_one("SELECT count(*) FROM ciosync.accepted", &[]).await.unwrap().get(0);
    assert_eq!(held, 0, "the record was not emptied, or was written while off");
    daemon.stop().await.unwrap();
}

/// The session holding this database's slot lease (an advisory lock).
async fn lease_session(db: &TestDb) -> Option<i32> {
    let row = db
        .client
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap();
    row.map(|r| r.get(0))
}

/// Emptied under each lease, not only at start: a customer written to the
/// record while this instance worked the slot (as by another instance with
/// the record on, taking the lease meanwhile) is forgotten once the lease
/// is lost (its session ended) and taken again.
#[tokio::test]
async fn the_record_is_emptied_again_under_a_lease_taken_again() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("record_off_lease", USERS_TABLE, |c| {
            c + "\n[pipeline]\nrecord_accepted = false\n"
        })
        .await;
    db.exec("INSERT INTO ciosync.accepted VALUES (current_database(), '9', '{\"plan\": 1}')").await;
    let first = lease_session(&db).await.expect("the daemon holds the lease");
    db.exec(&format!("SELECT pg_terminate_backend({first})")).await;

    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !db.recorded_customers().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the record was not emptied again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = lease_session(&db).await;
    assert!(second.is_some_and(|pid| pid != first), "the lease was not taken again");
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    assert!(wait_for_attribute(&emulator, "1", "email", json!("a@x.io")).await, "stopped working");
    daemon.stop().await.unwrap();
}
