//! A slot ciosync streamed from and that is gone — dropped, or invalidated
//! by `max_slot_wal_keep_size` — stops the daemon with exit status 3 and an
//! error naming the slot and the recovery, creating nothing; with
//! `on_slot_lost = "recreate_and_backfill"` the slot is recreated and every
//! row backfilled, so changes made while it was gone arrive (and nothing
//! Customer.io has is sent again), and `ciosync deletes gone --send`
//! removes the customers deleted meanwhile.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ciosync_testkit::throwaway::ThrowawayPostgres;

use crate::support::daemon::{config_file, run_binary, InProcess};
use serde_json::json;

use crate::backfill_yields_to_newer_changes::wait_for_backfill;
use crate::support::emulator::{self, identifies_of, wait_for_attribute, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{customers_match_rows, CONVERGE};

/// Runs the daemon once until the users table is streamed, then stops it.
async fn stream_once(config: &str, db: &TestDb) {
    let daemon = InProcess::start(config);
    db.wait_for_streaming().await;
    daemon.stop().await.expect("a clean stop");
}

/// `ciosync run` as the built binary, to its exit: status and stderr.
async fn run_to_exit(config: &str) -> (Option<i32>, String) {
    let file = config_file(config);
    let output =
        tokio::time::timeout(CONVERGE, run_binary(&["run", "--log-format", "text"], file.path()))
            .await
            .expect("the daemon exits by itself on a lost slot");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

async fn slot_count(db: &TestDb) -> i64 {
    db.created_objects().await.0
}

#[tokio::test]
async fn a_dropped_slot_exits_3_naming_it_and_creates_nothing() {
    let db = TestDb::new("slot_dropped").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let config = db.config(&emulator.url(), "");
    stream_once(&config, &db).await;

    db.wait_for_slot_released().await;
    db.exec(&format!("SELECT pg_drop_replication_slot('{}')", db.name)).await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'lost@x.io')").await;
    let (code, stderr) = run_to_exit(&config).await;
    assert_eq!(code, Some(3), "{stderr}");
    let line = format!("replication slot {} is lost: it was dropped", db.name);
    assert!(stderr.contains(&line), "{stderr}");
    assert!(stderr.contains("CIOSYNC_POSTGRES_ON_SLOT_LOST=recreate_and_backfill"), "{stderr}");
    assert_eq!(slot_count(&db).await, 0, "a new slot was created");
    assert!(emulator.customer("1").is_none());

    // `check` says the same, as an error.
    let file = config_file(&config);
    let output = run_binary(&["check"], file.path()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("is lost: it was dropped"), "{stdout}");
}

#[tokio::test]
async fn a_lost_slot_is_recreated_and_backfilled_when_configured() {
    let db = TestDb::new("slot_recreated").await;
    db.exec(USERS_TABLE).await;
    db.exec(
        "INSERT INTO users (id, email, plan) \
         SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, 20) g",
    )
    .await;
    let emulator = emulator::start().await;
    let config = db.config(&emulator.url(), "");
    let daemon = InProcess::start(&config);
    db.wait_for_streaming().await;
    assert!(customers_match_rows(&db, &emulator).await, "the initial copy");
    daemon.stop().await.unwrap();

    // Lost, and changes meanwhile that no slot holds: an update, an
    // insert, three deletes.
    db.wait_for_slot_released().await;
    db.exec(&format!("SELECT pg_drop_replication_slot('{}')", db.name)).await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (21, 'c@x.io', 'team')").await;
    db.exec("DELETE FROM users WHERE id >= 18 AND id <= 20").await;

    let recreate = config.replacen(
        "status_interval_ms = 200\n",
        "status_interval_ms = 200\non_slot_lost = \"recreate_and_backfill\"\n",
        1,
    );
    let daemon = InProcess::start(&recreate);
    db.wait_for_streaming().await;
    let id: i64 = db
        .client
        .query_one("SELECT max(id) FROM ciosync.backfills WHERE slot = $1", &[&db.name])
        .await
        .unwrap()
        .get(0);
    assert!(wait_for_backfill(&db, id, "done").await, "the backfill did not finish");
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await, "the gap's update");
    assert!(wait_for_attribute(&emulator, "21", "plan", json!("team")).await, "the gap's insert");
    assert_eq!(daemon.counters.slots_recreated.load(Ordering::Relaxed), 1);
    let row = db
        .client
        .query_one(
            "SELECT times_recreated, (SELECT count(*) FROM ciosync.backfills WHERE slot = $1) \
             FROM ciosync.slots WHERE slot = $1",
            &[&db.name],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1)), (1, 1));
    let ignoring = "SELECT bool_or(ignore_record) FROM ciosync.backfills";
    let ignoring: bool = db.client.query_one(ignoring, &[]).await.unwrap().get(0);
    assert!(!ignoring, "a slot lost on a server never promoted: the record holds");
    // Unchanged customers were not sent again: the record says Customer.io has them.
    for unchanged in 2..=17 {
        assert_eq!(
            identifies_of(&emulator, &unchanged.to_string()).len(),
            1,
            "{unchanged} re-sent"
        );
    }

    // The deletes the stream never carried: counted, then sent.
    let file = config_file(&recreate);
    let out = run_binary(&["deletes", "gone"], file.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.starts_with("3 customers"), "{stdout}");
    assert!(!stdout.contains("18"), "ids shown without --show-ids: {stdout}");
    // More than delete_guard.max_deletes at once needs --force.
    let strict = config_file(&(recreate.clone() + "\n[delete_guard]\nmax_deletes = 2\n"));
    let out = run_binary(&["deletes", "gone", "--send"], strict.path()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("delete_guard.max_deletes (2)") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(emulator.customer("18").is_some(), "sent past the limit");
    let out = run_binary(&["deletes", "gone", "--send"], file.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.starts_with("removed 3,"), "{stdout}");
    assert!(customers_match_rows(&db, &emulator).await, "the gap's deletes");
    let plan = run_binary(&["plan"], file.path()).await;
    assert_eq!(plan.status.code(), Some(0), "{}", String::from_utf8_lossy(&plan.stdout));

    // And the new slot streams.
    db.exec("UPDATE users SET plan = 'team' WHERE id = 2").await;
    assert!(customers_match_rows(&db, &emulator).await, "a change after the recovery");
    daemon.stop().await.unwrap();
}

// Multi-threaded: starting a cluster blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_exits_3() {
    // A cluster of its own: max_slot_wal_keep_size would invalidate the
    // other tests' slots too.
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start).await.unwrap().unwrap();
    let db = TestDb::on(&pg, "slot_invalidated").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let config = db.config(&emulator.url(), "");
    let daemon = InProcess::start(&config);
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    daemon.stop().await.unwrap();

    // The slot falls more than max_slot_wal_keep_size behind; a checkpoint
    // invalidates it.
    db.exec("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'").await;
    db.exec("SELECT pg_reload_conf()").await;
    db.exec("CREATE TABLE filler (payload text)").await;
    let invalidated = eventually_async(|| async {
        db.exec("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 2000)").await;
        db.exec("SELECT pg_switch_wal()").await;
        db.exec("CHECKPOINT").await;
        let status: Option<String> = db
            .client
            .query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                &[&db.name],
            )
            .await
            .unwrap()
            .get(0);
        status.is_none_or(|s| s == "lost")
    })
    .await;
    assert!(invalidated, "the slot was not invalidated");

    db.exec("UPDATE users SET plan = 'after-the-loss' WHERE id = 1").await;
    let (code, stderr) = run_to_exit(&config).await;
    assert_eq!(code, Some(3), "{stderr}");
    let line = format!("replication slot {} is lost: it was invalidated", db.name);
    assert!(stderr.contains(&line), "{stderr}");
    assert!(stderr.contains("max_slot_wal_keep_size"), "{stderr}");

    // Recovery drops the invalidated slot, creates it again, backfills.
    db.exec("ALTER SYSTEM RESET max_slot_wal_keep_size").await;
    db.exec("SELECT pg_reload_conf()").await;
    let recreate = config.replacen(
        "status_interval_ms = 200\n",
        "status_interval_ms = 200\non_slot_lost = \"recreate_and_backfill\"\n",
        1,
    );
    let daemon = InProcess::start(&recreate);
    db.wait_for_streaming().await;
    assert!(
        crate::support::emulator::wait_for_attribute(
            &emulator,
            "1",
            "plan",
            serde_json::json!("after-the-loss")
        )
        .await,
        "the change made while the slot was lost was not backfilled"
    );
    daemon.stop().await.unwrap();
}

/// Polls an async condition until it holds or [`CONVERGE`] passes.
async fn eventually_async<F, Fut>(cond: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !cond().await {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}
