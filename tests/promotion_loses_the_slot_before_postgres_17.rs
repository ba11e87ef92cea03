//! PostgreSQL 15 and 16 have no failover slots: a promoted standby lacks
//! ciosync's slot, though `ciosync.slots` (replicated with the data) says it
//! was used. The daemon, finding the promoted server through the multi-host
//! URL, stops with exit status 3 and the way back in its message, creating
//! nothing; started once with `on_slot_lost = "recreate_and_backfill"` it
//! recreates the slot and backfills, so changes made meanwhile arrive.

use crate::support::daemon::{config_file, config_text, spawn_binary, InProcess};
use crate::support::emulator;
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::standby::Pair;
use crate::support::{customers_match_rows, CONVERGE};

async fn slot_is_lost_on(major: u32) {
    let Some(pair) = Pair::start(major, false).await else { return };
    let db = TestDb::on(&pair.primary, "promotion_loses_slot").await;
    db.exec(USERS_TABLE).await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')").await;
    let emulator = emulator::start().await;
    let config = config_text(&pair.url(&db.name), &db.name, &emulator.url(), "");
    let file = config_file(&config);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("run.log");
    let mut daemon = spawn_binary(file.path(), &log);
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (2, 'b@x.io', 'free')").await;
    assert!(customers_match_rows(&db, &emulator).await, "before the promotion");

    let standby = pair.on_standby(&db).await;
    pair.wait_for_replay(&db, &standby).await;
    let promoted = pair.fail_over().await;
    let db = standby.reconnected().await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (3, 'c@x.io', 'team')").await;

    let status = tokio::time::timeout(CONVERGE, tokio::task::spawn_blocking(move || daemon.wait()))
        .await
        .expect("the daemon exits by itself once the promoted server lacks the slot")
        .unwrap()
        .unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    let line =
        format!("replication slot {} is lost: it was dropped, or this server took over", db.name);
    assert!(stderr.contains(&line), "{stderr}");
    assert!(stderr.contains("CIOSYNC_POSTGRES_ON_SLOT_LOST=recreate_and_backfill"), "{stderr}");
    assert_eq!(db.created_objects().await.0, 0, "a slot was created on the promoted server");

    let recreate = config.replacen(
        "status_interval_ms = 200\n",
        "status_interval_ms = 200\non_slot_lost = \"recreate_and_backfill\"\n",
        1,
    );
    let daemon = InProcess::start(&recreate);
    db.wait_for_streaming().await;
    assert!(customers_match_rows(&db, &emulator).await, "the backfill sent the gap");
    // A promoted server may lack what Customer.io already has, in the rows
    // and in the record alike: the recovery sends every row whole.
    let ignoring: Vec<bool> = db
        .client
        .query("SELECT ignore_record FROM ciosync.backfills", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ignoring, [true], "the recovery backfill diffed against the record");
    daemon.stop().await.expect("a clean stop");
    drop(promoted);
}

// Multi-threaded: starting clusters blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_15() {
    slot_is_lost_on(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_16() {
    slot_is_lost_on(16).await;
}
