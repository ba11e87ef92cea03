//! A backfill of wide rows, with Customer.io failing and then slow, stays
//! within the memory budget, and every row still arrives whole.
//!
//! Two things keep it there. A chunk's page is sized in bytes (a quarter of
//! the budget), not only in rows: 1,000 rows of 6.5 KB would be six times
//! the 1 MiB budget (`runner::ChunkSize` and `fit` are unit-tested). And at
//! a chunk's high watermark its operations go into
//! the sink only while the budget has room: here a 3 MB UPDATE, committed
//! while Customer.io fails, fills the budget behind the first chunk, so the
//! next chunks arrive at a full sink.
//!
//! `ciosync_pending_bytes` is sampled from `/metrics` throughout, and the
//! exact peak (`ciosync_pending_peak_bytes`, kept by the daemon at every
//! change) is read at the end; both must stay under the budget plus one
//! operation. The initial copy is off, so nothing else produces operations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ciosync_emulator::Faults;

use crate::backfill_yields_to_newer_changes::{backfill_state, wait_for_backfill};
use crate::support::daemon::{config_file, run_binary};
use crate::support::emulator::wait_for;
use crate::support::endpoint;
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

/// The smallest budget the config accepts.
pub const BUDGET: u64 = 1024 * 1024;
/// More than one chunk (a quarter of the budget: a few dozen of these
/// rows), so a second chunk follows a first one that had to wait for room.
pub const ROWS: usize = 1500;
/// Customer.io takes values of up to 1000 bytes: five such columns make a
/// 5 KB row.
const WIDE: [&str; 5] = ["first_name", "bio", "wide1", "wide2", "wide3"];
pub const VALUE_BYTES: usize = 1000;
/// An upper bound of one row's identify as the sink estimates it (900
/// bytes of overhead, 72 per attribute, plus the strings: about 6.5 KB for
/// these rows), rounded up. The code guarantees that the held bytes stay
/// below the budget plus the last operation pushed while there was room.
pub const ONE_OP: u64 = 8 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_wide_rows_stays_within_the_memory_budget() {
    let edit = |c: String| wide_config(c, false);
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("budget_backfill", &wide_rows_schema(), edit).await;
    let config = config_file(&edit(db.config(&emulator.url(), "")));

    // Customer.io fails every request: the first chunk goes into the sink
    // and stays there.
    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let sampler = Sampler::start(daemon.url("/metrics"));
    let queued = run_binary(&["backfill", "--detach"], config.path()).await;
    assert!(queued.status.success(), "{}", String::from_utf8_lossy(&queued.stderr));
    let id: i64 =
        db.client.query_one("SELECT max(id) FROM ciosync.backfills", &[]).await.unwrap().get(0);

    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE * 2;
    while sampler.max() < BUDGET / 8 {
        assert!(tokio::time::Instant::now() < deadline, "the first chunk never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Chunks are read while earlier ones wait in the sink (at most
    // `max_pending_bytes` of them undelivered, each cut to a quarter of the
    // budget whatever its page read): the sink fills up to the budget and
    // no further.
    while sampler.max() < BUDGET * 3 / 4 {
        assert!(tokio::time::Instant::now() < deadline, "the sink never filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_chunks = sampler.max();
    assert!(
        first_chunks < BUDGET + ONE_OP,
        "the first chunks held {first_chunks} bytes with a budget of {BUDGET}"
    );
    // Then a change of every row, three times the budget: the stream goes
    // on past the chunk's high watermark and fills the sink to the budget,
    // the rest waiting in the slot, while the next chunks are read.
    db.exec(&format!("UPDATE users SET wide1 = repeat('z', {VALUE_BYTES})")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(backfill_state(&db, id).await.0, "running");
    // Customer.io is back, but slow.
    emulator.set_faults(Faults { latency_ms: 20, ..Faults::default() });

    assert!(wait_for_backfill(&db, id, "done").await, "the backfill did not finish");
    assert_eq!(backfill_state(&db, id).await.1, ROWS as i64);
    let updated = |e: &ciosync_emulator::Emulator| every_row_arrived_whole(e, 'z');
    assert!(wait_for(&emulator, updated).await, "not every row arrived whole");

    let sampled = sampler.stop().await;
    let peak = daemon.counters.pending_bytes_peak.load(Ordering::Relaxed);
    let (_, metrics) = endpoint::get(&daemon.url("/metrics")).await;
    let exported = endpoint::value(&metrics, "ciosync_pending_peak_bytes");
    assert_eq!(exported, Some(peak as f64), "the exported peak is the daemon's");
    eprintln!("budget {BUDGET}, first chunks {first_chunks}, sampled max {sampled}, peak {peak}");
    assert!(sampled <= peak, "a sample above the peak: the peak is not kept");
    assert!(sampled >= BUDGET * 3 / 4, "the budget never filled: the test proves nothing");
    assert!(
        peak < BUDGET + ONE_OP,
        "held {peak} bytes with a budget of {BUDGET} (sampled max {sampled})"
    );
    daemon.stop().await.unwrap();
}

/// `ROWS` rows of five 1000-byte values in `users`, with three more columns.
pub fn wide_rows_schema() -> String {
    format!(
        "{USERS_TABLE} ALTER TABLE users ADD COLUMN wide1 text, ADD COLUMN wide2 text,
                                         ADD COLUMN wide3 text;
         INSERT INTO users (id, email, plan, first_name, bio, wide1, wide2, wide3)
         SELECT g, 'u' || g || '@x.io', 'free', {values}
         FROM generate_series(1, {ROWS}) g;",
        values = WIDE.map(|c| format!("repeat('{}', {VALUE_BYTES})", &c[..1])).join(", ")
    )
}

/// The usual config `text` syncing the three extra columns, with the small
/// budget and small batches (a completion frees little, so reading stops
/// again just under the budget).
pub fn wide_config(text: String, initial_sync: bool) -> String {
    text.replace(
        "about = \"bio\"",
        "about = \"bio\"\nwide1 = \"wide1\"\nwide2 = \"wide2\"\nwide3 = \"wide3\"",
    )
    .replace("linger_ms = 0", "linger_ms = 0\nmax_batch_ops = 10")
        + &format!("\n[pipeline]\ninitial_sync = {initial_sync}\nmax_pending_bytes = {BUDGET}\n")
}

/// Whether Customer.io holds every row with all of its wide values, `wide1`
/// made of `wide1` characters (`w` as inserted).
pub fn every_row_arrived_whole(emulator: &ciosync_emulator::Emulator, wide1: char) -> bool {
    let customers = emulator.customers();
    let text = |c: &serde_json::Map<String, serde_json::Value>, name: &str| {
        c.get(name).and_then(|v| v.as_str()).map(str::to_owned)
    };
    let wide = |c: char| Some(c.to_string().repeat(VALUE_BYTES));
    customers.len() == ROWS
        && customers.values().all(|c| {
            text(c, "first_name") == wide('f')
                && text(c, "about") == wide('b')
                && text(c, "wide1") == wide(wide1)
                && text(c, "wide2") == wide('w')
                && text(c, "wide3") == wide('w')
        })
}

/// Reads `ciosync_pending_bytes` from `/metrics` every 20 ms in the
/// background and keeps the highest value seen.
struct Sampler {
    max: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(url: String) -> Self {
        let max = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (max.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                if let Some(200) = endpoint::status(&url).await {
                    let (_, text) = endpoint::get(&url).await;
                    if let Some(held) = endpoint::value(&text, "ciosync_pending_bytes") {
                        seen.fetch_max(held as u64, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { max, stop, task }
    }

    fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let max = self.max.clone();
        self.task.await.expect("the sampler does not panic");
        max.load(Ordering::Relaxed)
    }
}
