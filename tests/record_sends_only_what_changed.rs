//! The record of what Customer.io accepted (`ciosync.accepted`): under
//! REPLICA IDENTITY DEFAULT, as every ORM leaves its tables, an UPDATE
//! sends only the mapped attributes whose value differs from what
//! Customer.io accepted, and nothing when none does. The record is never
//! ahead of Customer.io (a refused value is not recorded), never behind an
//! acknowledged change (kill -9 between acceptance and the record's write
//! loses no update), and rebuilds itself when wiped.

use std::time::Duration;

use ciosync::record::fingerprint;
use ciosync_emulator::{Emulator, Faults};
use serde_json::{json, Value};

use crate::support::daemon::{config_file, run_binary, signal, spawn_binary};
use crate::support::emulator::{self, identifies_of, wait_for, wait_for_attribute};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{customers_match_rows, eventually, Scenario};

fn default_identity() -> String {
    format!("{USERS_TABLE} ALTER TABLE users REPLICA IDENTITY DEFAULT;")
}

/// The fingerprint the record holds for one customer's attribute.
async fn recorded(db: &TestDb, customer: &str, attribute: &str) -> Option<i64> {
    let row = db
        .client
        .query_opt(
            "SELECT (attributes ->> $2)::bigint FROM ciosync.accepted WHERE customer_id = $1",
            &[&customer, &attribute],
        )
        .await
        .unwrap();
    row.and_then(|r| r.get(0))
}

fn identify_items(emulator: &Emulator) -> usize {
    crate::support::emulator::batch_items(emulator)
        .iter()
        .filter(|i| i["action"] == "identify")
        .count()
}

#[tokio::test]
async fn default_identity_updates_send_only_what_changed() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("record_only_changed", &default_identity(), |c| c).await;
    db.exec(
        "INSERT INTO users (id, email, first_name, plan) \
         SELECT g, 'u' || g || '@x.io', 'Ann', 'free' FROM generate_series(1, 20) g",
    )
    .await;
    assert!(customers_match_rows(&db, &emulator).await);
    assert!(
        eventually(
            || daemon.counters.record_unknown.load(std::sync::atomic::Ordering::Relaxed) >= 20
        )
        .await
    );
    let after_inserts = identify_items(&emulator);

    // Logins and password changes: no mapped column changes.
    db.exec("UPDATE users SET password_hash = 'h1'").await;
    db.exec("UPDATE users SET password_hash = 'h2' WHERE id <= 10").await;
    // A real change of one mapped attribute, for 5 rows; an UPDATE that
    // writes the same values again, for all of them.
    db.exec("UPDATE users SET plan = 'pro' WHERE id <= 5").await;
    db.exec("UPDATE users SET first_name = first_name, plan = plan").await;
    let last = db.exec_then_lsn("UPDATE users SET password_hash = 'h3' WHERE id = 20").await;
    assert!(db.wait_for_confirmed(&db.name, last).await, "the slot was not acknowledged");
    assert!(customers_match_rows(&db, &emulator).await);

    assert_eq!(identify_items(&emulator) - after_inserts, 5, "one identify per row that changed");
    for id in 1..=5 {
        let calls = identifies_of(&emulator, &id.to_string());
        assert_eq!(Value::Object(calls.last().unwrap().clone()), json!({"plan": "pro"}));
    }
    let unchanged = daemon.counters.record_unchanged.load(std::sync::atomic::Ordering::Relaxed);
    // Some of the unchanged updates merge while they wait (coalescing):
    // at least one of the 20 rows' logins was not sent.
    assert!(unchanged > 0, "the unchanged identifies were not counted");
    assert_eq!(recorded(&db, "1", "plan").await, Some(fingerprint(&json!("pro"))));
    assert_eq!(recorded(&db, "6", "plan").await, Some(fingerprint(&json!("free"))));

    // A wiped record: the next updates go whole, and it rebuilds itself.
    db.exec("TRUNCATE ciosync.accepted").await;
    db.exec("UPDATE users SET password_hash = 'h4' WHERE id = 7").await;
    assert!(wait_for(&emulator, |e| identifies_of(e, "7").len() == 2).await);
    let whole = identifies_of(&emulator, "7")[1].clone();
    assert_eq!(
        Value::Object(whole),
        json!({"email": "u7@x.io", "first_name": "Ann", "plan": "free", "created_at": null, "about": null})
    );
    let rebuilt = poll(|| recorded(&db, "7", "email")).await;
    assert_eq!(rebuilt, Some(fingerprint(&json!("u7@x.io"))));
    // Recorded again: the same update sends nothing more.
    let last = db.exec_then_lsn("UPDATE users SET password_hash = 'h5' WHERE id = 7").await;
    assert!(db.wait_for_confirmed(&db.name, last).await);
    assert_eq!(identifies_of(&emulator, "7").len(), 2);
    daemon.stop().await.unwrap();
}

/// Polls `read` until it gives `Some`, for at most the usual convergence time.
async fn poll<F, Fut>(read: F) -> Option<i64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<i64>>,
{
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    loop {
        if let Some(value) = read().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_refused_value_is_never_recorded() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("record_refused", &default_identity(), |c| c).await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("free")).await);

    // Customer.io refuses the change to 'pro' for good: dead-lettered.
    emulator.set_faults(Faults { reject_ids: vec!["1".into()], ..Faults::default() });
    let refused = db.exec_then_lsn("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(db.wait_for_confirmed(&db.name, refused).await, "the dead letter was not acknowledged");
    assert_eq!(recorded(&db, "1", "plan").await, Some(fingerprint(&json!("free"))));
    emulator.set_faults(Faults::default());

    // Back to 'free', which Customer.io still holds: nothing to send. Then
    // 'pro' again, which it never accepted: sent, though the row had it before.
    let back = db.exec_then_lsn("UPDATE users SET plan = 'free' WHERE id = 1").await;
    assert!(db.wait_for_confirmed(&db.name, back).await);
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);
    let calls = identifies_of(&emulator, "1");
    assert_eq!(Value::Object(calls.last().unwrap().clone()), json!({"plan": "pro"}));
    assert!(poll(|| recorded(&db, "1", "plan")).await.is_some());

    // `dlq retry` sends the refused identify (refreshed from the row) on its
    // own: afterwards the record knows the customer is held, no value of them.
    let config = config_file(&db.config(&emulator.url(), ""));
    let out = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let held = "SELECT attributes::text FROM ciosync.accepted WHERE customer_id = '1'";
    let held: Vec<String> =
        db.client.query(held, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(held, ["{}"], "dlq retry sent to the customer and left the record as it was");
    daemon.stop().await.unwrap();
}

/// kill -9 while the record's write waits (its table locked) after
/// Customer.io accepted a change: the change is not acknowledged, so the
/// restart sends it again, and a later change back to the old value is sent
/// too (a record left behind an acknowledged change would hold it back).
#[tokio::test]
async fn kill_9_between_acceptance_and_the_record_loses_no_update() {
    let db = TestDb::new("record_kill9").await;
    db.exec(&default_identity()).await;
    let emulator = emulator::start().await;
    let config = config_file(&db.config(&emulator.url(), ""));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("free")).await);
    assert!(poll(|| recorded(&db, "1", "plan")).await.is_some());

    // Hold the record's write: Customer.io accepts 'pro', the record cannot say so.
    let mut locker = db.reconnected().await;
    let lock = locker.client.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE ciosync.accepted IN EXCLUSIVE MODE").await.unwrap();
    let changed = db.exec_then_lsn("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(db.confirmed_flush(&db.name).await < changed, "acknowledged before the record");
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    lock.rollback().await.unwrap();
    assert_eq!(recorded(&db, "1", "plan").await, Some(fingerprint(&json!("free"))));

    // The restart sends 'pro' again and records it; then the row goes back
    // to 'free', which must be sent.
    let mut daemon = spawn_binary(config.path(), &logs.path().join("2.log"));
    assert!(
        poll(|| async {
            (recorded(&db, "1", "plan").await == Some(fingerprint(&json!("pro")))).then_some(1)
        })
        .await
        .is_some(),
        "the replayed change was not recorded"
    );
    db.exec("UPDATE users SET plan = 'free' WHERE id = 1").await;
    assert!(
        wait_for_attribute(&emulator, "1", "plan", json!("free")).await,
        "the change back was lost"
    );
    assert!(customers_match_rows(&db, &emulator).await);
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
}

/// Every accepted change rewrites its customer's row of the record: with
/// room on the page the new version stays there (a HOT update: no index
/// entry, pruned in place). On full pages each rewrite moved the row and
/// added an index entry: about half of the record's work at full speed
/// (BENCHMARKS.md, "The record's writes").
#[tokio::test]
async fn the_record_is_rewritten_in_place() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("record_in_place", &default_identity(), |c| c).await;
    db.exec(
        "INSERT INTO users (id, email, first_name, plan) \
         SELECT g, 'u' || g || '@x.io', 'Ann', 'free' FROM generate_series(1, 1500) g",
    )
    .await;
    assert!(customers_match_rows(&db, &emulator).await);
    for round in 1..=3 {
        let last = db.exec_then_lsn(&format!("UPDATE users SET plan = 'p{round}'")).await;
        assert!(db.wait_for_confirmed(&db.name, last).await, "round {round} was not acknowledged");
    }
    assert!(customers_match_rows(&db, &emulator).await);
    // The daemon's sessions report their counts when idle, within seconds.
    let updates = || async {
        let row = db
            .client
            .query_one(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables \
                 WHERE schemaname = 'ciosync' AND relname = 'accepted'",
                &[],
            )
            .await
            .unwrap();
        let (all, hot): (i64, i64) = (row.get(0), row.get(1));
        (all >= 4500).then_some((all, hot))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (all, hot) = loop {
        if let Some(counts) = updates().await {
            break counts;
        }
        assert!(tokio::time::Instant::now() < deadline, "the record's updates were not counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(hot * 10 >= all * 9, "{hot} of the record's {all} rewrites stayed in place");
    daemon.stop().await.unwrap();
}
