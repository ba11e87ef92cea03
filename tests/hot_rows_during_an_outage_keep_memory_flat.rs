//! Customer.io answering 500 while 2,000,000 single-row transactions update
//! 10 customers: every change after the first merges into a waiting call of
//! its customer, and the commits those changes came with cost no memory of
//! their own, so the daemon (the built binary) stays under 64 MB however
//! many transactions it reads. After recovery every customer equals its row
//! and the slot is acknowledged to the end.

use std::time::{Duration, Instant};

use ciosync_emulator::Faults;

use crate::support::customers_match_rows;
use crate::support::emulator;
use crate::support::measured::Measured;
use crate::support::memory::peak_rss_bytes;
use crate::support::postgres::{TestDb, USERS_TABLE};

const CUSTOMERS: i64 = 10;
const TRANSACTIONS: i64 = 2_000_000;
const LIMIT_BYTES: u64 = 64 * 1024 * 1024;
/// Long enough for the debug build to read every transaction.
const READ_ALL: Duration = Duration::from_secs(600);

const UPDATES: &str = r#"ciosync_changes_received_total{table="public.users",operation="update"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_million_hot_row_transactions_during_an_outage_stay_under_64_mb() {
    let db = TestDb::new("hot_rows_outage").await;
    db.exec(USERS_TABLE).await;
    db.exec(&format!(
        "INSERT INTO users (id, email, plan) \
         SELECT g, 'u' || g || '@x.io', 'p0' FROM generate_series(1, {CUSTOMERS}) g"
    ))
    .await;
    let emulator = emulator::start().await;
    let daemon = Measured::start(&db.config(&emulator.url(), ""));
    assert!(customers_match_rows(&db, &emulator).await, "the initial copy did not arrive");
    let before = peak_rss_bytes(daemon.pid());

    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let started = Instant::now();
    // One transaction per row change, generated server-side: COMMIT inside
    // a DO block (a statement of its own, outside any transaction block).
    db.exec("SET synchronous_commit = off").await;
    db.exec(&format!(
        "DO $$ BEGIN
             FOR i IN 1..{TRANSACTIONS} LOOP
                 UPDATE users SET plan = 'p' || i WHERE id = i % {CUSTOMERS} + 1;
                 COMMIT;
             END LOOP;
         END $$"
    ))
    .await;
    let written = started.elapsed();
    let end = db.current_lsn().await;
    let read_all = daemon.wait_for_metric(UPDATES, READ_ALL, |n| n >= TRANSACTIONS as f64).await;
    let read = started.elapsed();
    assert!(read_all, "the daemon did not read every transaction within {READ_ALL:?}");
    // The outage held: nothing of it was delivered or acknowledged.
    assert!(emulator.customers().values().all(|c| c["plan"] == "p0"), "a call got through");
    assert!(db.confirmed_flush(&db.name).await < end, "acknowledged during the outage");
    assert!(
        daemon.metric("ciosync_operations_coalesced_total").await
            >= (TRANSACTIONS - 2 * CUSTOMERS) as f64,
        "the changes did not wait together: the test proves nothing"
    );
    let during = peak_rss_bytes(daemon.pid());

    emulator.set_faults(Faults::default());
    assert!(customers_match_rows(&db, &emulator).await, "customers differ from rows");
    assert!(db.wait_for_confirmed(&db.name, end).await, "the slot was not acknowledged to the end");
    let peak = peak_rss_bytes(daemon.pid());
    assert!(daemon.stop().success());
    eprintln!(
        "{TRANSACTIONS} transactions written in {written:?}, read in {read:?}; peak RSS \
         {before} bytes before the outage, {during} at its end, {peak} after recovery"
    );
    assert!(peak < LIMIT_BYTES, "peak RSS {peak} bytes, over {LIMIT_BYTES}");
}
