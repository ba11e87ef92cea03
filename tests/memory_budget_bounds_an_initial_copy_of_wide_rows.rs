//! The initial copy of wide rows, with Customer.io slow, stays within the
//! memory budget: a page's rows go into the sink only while the budget has
//! room (a 1,000-row page of 6.5 KB rows would be six times the 1 MiB
//! budget), and every row arrives whole.
//!
//! The exact peak of `ciosync_pending_bytes` (`pending_bytes_peak`, kept at
//! every change since the start) must stay under the budget plus one row's
//! operation; the copy is the only producer until it ends.

use std::sync::atomic::Ordering;

use ciosync_emulator::Faults;

use crate::memory_budget_bounds_a_backfill_of_wide_rows::{
    every_row_arrived_whole, wide_config, wide_rows_schema, BUDGET, ONE_OP,
};
use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for};
use crate::support::postgres::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_copy_of_wide_rows_stays_within_the_memory_budget() {
    let db = TestDb::new("budget_copy").await;
    db.exec(&wide_rows_schema()).await;
    let emulator = emulator::start().await;
    // Slow answers, so the copy outruns delivery and the budget fills.
    emulator.set_faults(Faults { latency_ms: 20, ..Faults::default() });
    let daemon = InProcess::start(&wide_config(db.config(&emulator.url(), ""), true));
    let copied = |e: &ciosync_emulator::Emulator| every_row_arrived_whole(e, 'w');
    assert!(wait_for(&emulator, copied).await, "not every row arrived whole");

    let peak = daemon.counters.pending_bytes_peak.load(Ordering::Relaxed);
    eprintln!("budget {BUDGET}, peak {peak}");
    assert!(peak >= BUDGET, "the budget never filled ({peak} bytes): the test proves nothing");
    assert!(peak < BUDGET + ONE_OP, "held {peak} bytes with a budget of {BUDGET}");
    daemon.stop().await.unwrap();
}
