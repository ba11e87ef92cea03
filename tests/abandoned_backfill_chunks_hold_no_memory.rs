//! Backfill chunks that fail between their two watermarks leave nothing
//! behind: their low watermarks, read only later (the pipeline was held up
//! behind Customer.io meanwhile), open no window, so a 1,000,000-row UPDATE
//! afterwards is not recorded anywhere and the daemon (the built binary)
//! stays under 64 MB.
//!
//! Each chunk fails deterministically: the backfills are queued with a
//! `--where` calling a PL/pgSQL function that reads a table, and the table
//! is dropped before the daemon starts. The daemon's check of the condition
//! (parsing and planning the page query) passes, since a PL/pgSQL body is
//! planned only when it runs; every chunk's SELECT then fails (relation
//! missing, a definite error: the backfill is marked failed) after its low
//! watermark was written.

use ciosync_testkit::throwaway::ThrowawayPostgres;
use std::time::{Duration, Instant};

use ciosync_emulator::Faults;

use crate::support::daemon::{config_file, run_binary};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::measured::Measured;
use crate::support::memory::peak_rss_bytes;
use crate::support::postgres::{TestDb, USERS_TABLE};

const ROWS: i64 = 1_000_000;
/// Rows changed before the backfills: far more than the budget holds.
const FILL: i64 = 5_000;
const BUDGET: u64 = 1024 * 1024;
const ABANDONED: i64 = 10;
const LIMIT_BYTES: u64 = 64 * 1024 * 1024;
/// Long enough for the debug build to read the big UPDATE.
const READ_ALL: Duration = Duration::from_secs(600);

const UPDATES: &str = r#"ciosync_changes_received_total{table="public.users",operation="update"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_abandoned_chunks_then_a_million_row_update_stay_under_64_mb() {
    // A cluster of its own: creating a logical slot waits for every write
    // transaction of the cluster, and this one's million-row INSERT and
    // UPDATE last long enough to hold up the slots of the tests beside it.
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start).await.unwrap().unwrap();
    let db = TestDb::on(&pg, "abandoned_chunks").await;
    db.exec(USERS_TABLE).await;
    db.exec(&format!(
        "INSERT INTO users (id, email, plan) \
         SELECT g, 'u' || g || '@x.io', 'p0' FROM generate_series(1, {ROWS}) g;
         CREATE TABLE chosen (id bigint); INSERT INTO chosen VALUES (1);
         CREATE FUNCTION is_chosen(wanted bigint) RETURNS boolean LANGUAGE plpgsql
             AS $f$ BEGIN RETURN EXISTS (SELECT 1 FROM chosen c WHERE c.id = wanted); END $f$;"
    ))
    .await;
    let emulator = emulator::start().await;
    let text = db.config(
        &emulator.url(),
        &format!("[pipeline]\ninitial_sync = false\nmax_pending_bytes = {BUDGET}\n"),
    );
    // A first start creates the slot (and the ciosync schema), copying nothing.
    let first = Measured::start(&text);
    db.wait_for_streaming().await;
    assert!(first.stop().success());

    // Changes the restarted daemon reads first, with Customer.io down: the
    // budget fills among them and reading stops before any watermark.
    db.exec(&format!(
        "UPDATE users SET plan = 'filled', bio = repeat('b', 1000) WHERE id <= {FILL}"
    ))
    .await;
    let config = config_file(&text);
    for _ in 0..ABANDONED {
        let queued =
            run_binary(&["backfill", "--detach", "--where", "is_chosen(id)"], config.path()).await;
        assert!(queued.status.success(), "{}", String::from_utf8_lossy(&queued.stderr));
    }
    db.exec("DROP TABLE chosen").await;
    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let daemon = Measured::start(&text);
    let full = daemon
        .wait_for_metric("ciosync_pending_bytes", READ_ALL, |held| held >= BUDGET as f64)
        .await;
    assert!(full, "the memory budget never filled: the pipeline was not held up");
    assert!(wait_for_failed(&db, ABANDONED).await, "the backfills did not fail");
    let errors = db
        .client
        .query("SELECT error FROM ciosync.backfills WHERE error LIKE '%chosen%'", &[])
        .await
        .unwrap();
    assert_eq!(errors.len() as i64, ABANDONED, "each failed on its chunk's SELECT");
    for error in errors.iter().map(|r| r.get::<_, String>(0)) {
        // Not the daemon's check of the condition, which runs before any
        // watermark: then no window would have been abandoned at all.
        assert!(!error.contains("(--where)"), "failed before its chunk: {error}");
    }
    // Still held up before the fill's end, so every low watermark is read
    // only after its chunk was abandoned.
    assert!(daemon.metric(UPDATES).await < FILL as f64, "the pipeline read past the watermarks");

    let started = Instant::now();
    db.exec(&format!("UPDATE users SET password_hash = 'h' WHERE id <= {ROWS}")).await;
    let written = started.elapsed();
    let end = db.current_lsn().await;
    emulator.set_faults(Faults::default());
    let acked = daemon
        .wait_for_metric("ciosync_last_acked_lsn_bytes", READ_ALL, |lsn| lsn >= end as f64)
        .await;
    let read = started.elapsed();
    assert!(acked, "the daemon did not get through the UPDATE within {READ_ALL:?}");
    assert!(daemon.metric(UPDATES).await >= (FILL + ROWS) as f64);
    assert!(db.wait_for_confirmed(&db.name, end).await);
    let filled = |c: &std::collections::BTreeMap<_, serde_json::Map<_, _>>| {
        c.len() == FILL as usize && c.values().all(|a| a["plan"] == "filled")
    };
    assert!(wait_for_customers(&emulator, filled).await, "the changes before it did not arrive");
    let peak = peak_rss_bytes(daemon.pid());
    assert!(daemon.stop().success());
    eprintln!(
        "UPDATE of {ROWS} rows written in {written:?}, read in {read:?}; peak RSS {peak} bytes"
    );
    assert!(peak < LIMIT_BYTES, "peak RSS {peak} bytes, over {LIMIT_BYTES}");
}

/// Waits until `count` backfills have failed.
async fn wait_for_failed(db: &TestDb, count: i64) -> bool {
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while tokio::time::Instant::now() < deadline {
        let failed: i64 = db
            .client
            .query_one("SELECT count(*) FROM ciosync.backfills WHERE state = 'failed'", &[])
            .await
            .unwrap()
            .get(0);
        if failed == count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
