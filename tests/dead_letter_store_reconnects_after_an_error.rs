//! `DeadLetterStore::record` fails (transient, quoting nothing) when its
//! session is killed mid-write, and the next call reconnects, so a Postgres
//! restart or a killed session costs one failed call, and the retried
//! letters are written once. Any failed call drops its session, even one
//! whose connection still looks open: the next call starts afresh.

use serde_json::json;

use crate::support::dead_letters::{config_with_password, identify, rows, store};
use crate::support::postgres::TestDb;

#[tokio::test]
async fn a_session_killed_mid_write_costs_one_failed_call() {
    let db = TestDb::new("dlq_reconnect").await;
    let store = store(&config_with_password(&db, "http://127.0.0.1:9"));
    store.record(&[identify("1", json!({"plan": "value-a"}))]).await.unwrap();
    let first_pid = store_pid(&db).await.expect("the store's session");

    // Hold the table so the next write waits inside Postgres, then kill the
    // waiting session: the write in flight fails, every time.
    let locker = db.reconnected().await;
    locker
        .client
        .batch_execute("BEGIN; LOCK TABLE ciosync.dead_letters IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let letter = [identify("2", json!({"plan": "value-b"}))];
    let (result, ()) = tokio::join!(store.record(&letter), async {
        wait_for_lock_wait(&db, first_pid).await;
        db.exec(&format!("SELECT pg_terminate_backend({first_pid})")).await;
        locker.client.batch_execute("ROLLBACK").await.unwrap();
    });
    let error = result.expect_err("the write of a killed session failed");
    let message = ciosync::error::error_chain(&error);
    assert!(error.is_transient(), "{message}");
    assert!(!message.contains("value-b"), "{message}");

    store.record(&letter).await.expect("the next call reconnects");
    let second_pid = store_pid(&db).await.expect("a new session");
    assert_ne!(first_pid, second_pid, "the killed session was used again");
    let customers: Vec<String> = rows(&db).await.into_iter().map(|r| r.customer_id).collect();
    assert_eq!(customers, ["1", "2"]);
}

/// A write Postgres refuses (a constraint someone added) leaves the
/// connection open, so only `record` dropping the session after an error
/// makes the next call use a new one: this catches a store that keeps it,
/// which the killed-session test above may miss when the client has already
/// seen its connection close.
#[tokio::test]
async fn any_failed_call_costs_the_session_even_when_it_looks_healthy() {
    let db = TestDb::new("dlq_reconnect_refused").await;
    let store = store(&config_with_password(&db, "http://127.0.0.1:9"));
    store.record(&[identify("1", json!({"plan": "value-a"}))]).await.unwrap();
    let first_pid = store_pid(&db).await.expect("the store's session");

    db.exec("ALTER TABLE ciosync.dead_letters ADD CONSTRAINT not_2 CHECK (customer_id <> '2')")
        .await;
    let letter = [identify("2", json!({"plan": "value-b"}))];
    let error = store.record(&letter).await.expect_err("the constraint refuses the letter");
    assert!(!error.is_transient(), "{}", ciosync::error::error_chain(&error));
    db.exec("ALTER TABLE ciosync.dead_letters DROP CONSTRAINT not_2").await;

    store.record(&letter).await.expect("stored once the constraint is gone");
    let pids = store_pids(&db).await;
    assert!(
        pids.iter().any(|&pid| pid != first_pid),
        "the session of the failed call was used again (sessions: {pids:?}, first {first_pid})"
    );
    let customers: Vec<String> = rows(&db).await.into_iter().map(|r| r.customer_id).collect();
    assert_eq!(customers, ["1", "2"]);
}

/// The pids of every session of the store (the dropped one may still be
/// on its way out).
async fn store_pids(db: &TestDb) -> Vec<i32> {
    db.client
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'ciosync'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The pid of the store's session (it connects as `application_name = ciosync`).
async fn store_pid(db: &TestDb) -> Option<i32> {
    db.client
        .query_opt(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'ciosync'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Waits until session `pid` waits for a lock.
async fn wait_for_lock_wait(db: &TestDb, pid: i32) {
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    loop {
        let waiting: bool = db
            .client
            .query_one(
                "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity \
                 WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the write never waited for the lock");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
