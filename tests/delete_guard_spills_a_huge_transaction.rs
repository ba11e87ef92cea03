//! A mass delete far bigger than the memory budget, in one transaction,
//! with the breaker tripping: the daemon writes the held removals to
//! `ciosync.held_deletes` as they come (`pending` until the commit) instead
//! of keeping them until the commit, so its peak memory (the built binary,
//! read from `/proc`) stays bounded; every removal past the limit is held
//! once, none reaches Customer.io, and `deletes approve` / `discard` act on
//! them afterwards, never before the commit. A `kill -9` in the middle of
//! the transaction leaves nothing an operator can act on, and the replay
//! holds each removal once, as does the replay of a transaction stored but
//! not acknowledged. A later change of a customer in the same
//! transaction supersedes its written hold.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ciosync_emulator::{Emulator, Faults};
use ciosync_testkit::throwaway::ThrowawayPostgres;

use crate::support::daemon::{config_file, run_binary, signal, spawn_binary};
use crate::support::dead_letters::texts;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::leaks::leak_in;
use crate::support::memory::{mib, peak_rss_bytes};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::Scenario;

/// Removals a window may send before the breaker trips.
const LIMIT: usize = 5;
/// The daemon's peak resident memory must stay under this: it runs at
/// about 30 MiB, and the default memory budget is 16 MiB.
const PEAK_RSS_LIMIT: u64 = 64 * 1024 * 1024;
/// A debug build holds a million removals in about two minutes on a busy
/// two-core machine.
const HOLD_TIMEOUT: Duration = Duration::from_secs(600);
/// The smallest budget: a chunk of the open transaction's holds is then
/// about 350 removals, so a few thousand make many chunks.
const SMALL_BUDGET: &str = "\n[pipeline]\ninitial_sync = false\nmax_pending_bytes = 1048576\n";

/// The users table, its primary key as the replica identity (a DELETE
/// carries only the id), without the daemon having seen any row of it.
async fn users(test: &str, rows: usize) -> TestDb {
    users_on(crate::support::postgres::cluster(), test, rows).await
}

/// [`users`] on the cluster `pg`.
async fn users_on(pg: &ThrowawayPostgres, test: &str, rows: usize) -> TestDb {
    let db = TestDb::on(pg, test).await;
    db.exec(&USERS_TABLE.replace("ALTER TABLE public.users REPLICA IDENTITY FULL;", "")).await;
    db.exec(&format!(
        "INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, {rows}) g"
    ))
    .await;
    db
}

/// The config with the breaker at [`LIMIT`] and `extra` (no initial copy:
/// only the mass delete reaches the daemon).
fn guard_config(db: &TestDb, emulator: &Emulator, extra: &str) -> String {
    db.config(&emulator.url(), &format!("{extra}\n[delete_guard]\nmax_deletes = {LIMIT}\n"))
}

/// Runs `sql` and returns the WAL position right after its commit, then
/// commits an empty transaction with a logical message after it: the
/// daemon's own writes (the held rows) move the WAL on past its last
/// commit, and only a later commit or a keepalive (every 30 s when idle)
/// lets its acknowledgement reach the position; the message is that commit.
pub async fn exec_then_marker(db: &TestDb, sql: &str) -> u64 {
    let lsn = db.exec_then_lsn(sql).await;
    db.exec("SELECT pg_logical_emit_message(true, 'ciosync-test', 'after')").await;
    lsn
}

/// Waits (up to `timeout`) until the slot is confirmed at or past `lsn`.
pub async fn wait_for_confirmed_within(db: &TestDb, lsn: u64, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if db.confirmed_flush(&db.name).await >= lsn {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// (rows, distinct customers) of `ciosync.held_deletes` by state.
async fn held_by_state(db: &TestDb) -> HashMap<String, (i64, i64)> {
    db.client
        .query(
            "SELECT state, count(*), count(DISTINCT customer_id) FROM ciosync.held_deletes \
             GROUP BY state",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// The held rows' ids in the table, in order, and their customers.
async fn held_rows(db: &TestDb) -> Vec<(i64, String)> {
    db.client
        .query(
            "SELECT id, customer_id FROM ciosync.held_deletes WHERE state = 'held' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The customers Customer.io was asked to delete, with how often, read off
/// the emulator's request log as it goes (the log keeps only the newest).
#[derive(Default)]
pub struct Deletes(HashMap<String, u32>);

impl Deletes {
    pub fn drain(&mut self, emulator: &Emulator) {
        for request in emulator.take_requests() {
            if request.path != "/api/v2/batch" || request.status != 200 {
                continue;
            }
            let items = request.body.as_ref().and_then(|b| b["batch"].as_array().cloned());
            for item in items.unwrap_or_default() {
                if item["action"] == "delete" {
                    let id = item["identifiers"]["id"].as_str().map(str::to_owned);
                    *self.0.entry(id.expect("a delete names its id")).or_default() += 1;
                }
            }
        }
    }

    pub fn customers(&self) -> BTreeSet<String> {
        self.0.keys().cloned().collect()
    }
}

/// Runs `ciosync deletes <args>` to success while draining the emulator's
/// log into `deletes`; returns its standard output.
async fn deletes_command(
    args: &[&str],
    config: &std::path::Path,
    emulator: &Emulator,
    deletes: &mut Deletes,
) -> String {
    let command = run_binary(args, config);
    tokio::pin!(command);
    let out = loop {
        tokio::select! {
            out = &mut command => break out,
            _ = tokio::time::sleep(Duration::from_millis(100)) => deletes.drain(emulator),
        }
    };
    deletes.drain(emulator);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
    stdout
}

/// Waits until the built binary's log has a line containing `text`.
async fn wait_for_log(log: &std::path::Path, text: &str) -> bool {
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while !std::fs::read_to_string(log).unwrap().contains(text) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Fails if the built binary's log carries a secret or a customer value.
pub fn assert_log_clean(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(leak_in(&text), None, "the daemon's log leaks");
}

/// Waits until no ciosync session is left in the database: a killed
/// daemon's backends end once they notice.
pub async fn wait_for_sessions_gone(db: &TestDb) {
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    loop {
        let left: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND application_name = 'ciosync'",
                &[&db.name],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} sessions of the killed daemon");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_million_row_delete_is_held_within_the_memory_budget() {
    const ROWS: usize = 1_000_000;
    // A cluster of its own: creating a logical slot waits for every write
    // transaction of the cluster, and this one's million-row INSERT and
    // DELETE last long enough to hold up the slots of the tests beside it.
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start).await.unwrap().unwrap();
    let db = users_on(&pg, "guard_spill_million", ROWS).await;
    let emulator = emulator::start().await;
    let config = config_file(&guard_config(&db, &emulator, "\n[pipeline]\ninitial_sync = false\n"));
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("daemon.log");
    let mut daemon = spawn_binary(config.path(), &log);
    db.wait_for_streaming().await;

    let started = Instant::now();
    let lsn = exec_then_marker(&db, "DELETE FROM users").await;
    let confirmed = wait_for_confirmed_within(&db, lsn, HOLD_TIMEOUT).await;
    let peak = peak_rss_bytes(daemon.id());
    eprintln!(
        "{ROWS} removals held in {:.1?}; the daemon's peak RSS {}",
        started.elapsed(),
        mib(peak)
    );
    assert!(confirmed, "the mass delete was not acknowledged within {HOLD_TIMEOUT:?}");
    assert!(peak < PEAK_RSS_LIMIT, "peak RSS {} over {}", mib(peak), mib(PEAK_RSS_LIMIT));

    let held = held_by_state(&db).await;
    let expected = (ROWS - LIMIT) as i64;
    assert_eq!(held.get("held"), Some(&(expected, expected)), "each held once: {held:?}");
    assert_eq!(held.len(), 1, "nothing else in the table: {held:?}");
    let mut deletes = Deletes::default();
    deletes.drain(&emulator);
    assert_eq!(deletes.customers().len(), LIMIT, "only the removals within the limit were sent");

    // A restart reads which customers have held deletes: bounded too.
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    assert_log_clean(&log);
    let mut daemon = spawn_binary(config.path(), &log);
    db.wait_for_streaming().await;
    let peak = peak_rss_bytes(daemon.id());
    eprintln!("restarted with {expected} held; the daemon's peak RSS {}", mib(peak));
    assert!(peak < PEAK_RSS_LIMIT, "peak RSS {} over {}", mib(peak), mib(PEAK_RSS_LIMIT));

    // Approve a thousand of them, discard the rest.
    let chosen: Vec<(i64, String)> =
        held_rows(&db).await.into_iter().step_by(997).take(1000).collect();
    let mut args = vec!["deletes".to_owned(), "approve".to_owned()];
    args.extend(chosen.iter().flat_map(|(id, _)| ["--id".to_owned(), id.to_string()]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = deletes.customers();
    let stdout = deletes_command(&args, config.path(), &emulator, &mut deletes).await;
    assert_eq!(stdout, "approved: sent 1000 removals\n");
    let approved: BTreeSet<String> = deletes.customers().difference(&before).cloned().collect();
    assert_eq!(approved, chosen.iter().map(|(_, c)| c.clone()).collect::<BTreeSet<_>>());
    let stdout =
        deletes_command(&["deletes", "discard", "--all"], config.path(), &emulator, &mut deletes)
            .await;
    assert_eq!(stdout, format!("discarded {} held removals\n", expected - 1000));
    assert_eq!(deletes.customers().len(), LIMIT + 1000, "nothing else was sent");
    assert!(wait_for_log(&log, "circuit breaker reset").await, "the breaker never reset");

    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    assert_log_clean(&log);
}

/// `kill -9` while the daemon is still reading the transaction (some chunks
/// written, the daemon held up on the next by a lock): no command lists,
/// approves or discards what it wrote; the restart reads the transaction
/// again and holds each removal once, sending none but the first few again.
#[tokio::test]
async fn kill_9_in_the_middle_of_a_held_transaction_holds_each_removal_once() {
    const ROWS: usize = 20_000;
    let db = users("guard_spill_kill9", ROWS).await;
    let emulator = emulator::start().await;
    let config = config_file(&guard_config(&db, &emulator, SMALL_BUDGET));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;

    let lsn = exec_then_marker(&db, "DELETE FROM users").await;
    let pending = || async { held_by_state(&db).await.get("pending").map_or(0, |c| c.0) };
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while pending().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no chunk was written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Hold the daemon up on its next write, then kill it there.
    let blocker = db.reconnected().await;
    blocker.exec("BEGIN; LOCK TABLE ciosync.held_deletes IN EXCLUSIVE MODE").await;
    let written = pending().await;
    assert!(
        0 < written && written < (ROWS - LIMIT) as i64,
        "{written} written: the kill is not in the middle of the transaction"
    );
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    blocker.exec("ROLLBACK").await;
    wait_for_sessions_gone(&db).await;

    let in_table = held_by_state(&db).await;
    assert!(in_table.contains_key("pending") && !in_table.contains_key("held"), "{in_table:?}");
    let mut deletes = Deletes::default();
    let out = run_binary(&["deletes", "list"], config.path()).await;
    assert_eq!(texts(&out).0, format!("no held removals for slot {}\n", db.name));
    let stdout =
        deletes_command(&["deletes", "approve", "--all"], config.path(), &emulator, &mut deletes)
            .await;
    assert!(stdout.ends_with("approved: sent 0 removals\n"), "{stdout}");
    assert!(stdout.contains("wait for the daemon"), "{stdout}");
    let stdout =
        deletes_command(&["deletes", "discard", "--all"], config.path(), &emulator, &mut deletes)
            .await;
    assert_eq!(stdout, "discarded 0 held removals\n");
    assert!(deletes.customers().len() <= LIMIT, "only the first few were sent");

    let log = logs.path().join("2.log");
    let mut daemon = spawn_binary(config.path(), &log);
    assert!(wait_for_confirmed_within(&db, lsn, HOLD_TIMEOUT).await, "never acknowledged");
    let held = held_by_state(&db).await;
    let expected = (ROWS - LIMIT) as i64;
    assert_eq!(held.get("held"), Some(&(expected, expected)), "each held once: {held:?}");
    assert_eq!(held.len(), 1, "nothing pending is left: {held:?}");
    deletes.drain(&emulator);
    let sent = deletes.customers();
    assert_eq!(sent.len(), LIMIT, "the same first few were sent, and no other: {sent:?}");
    let held_customers: BTreeSet<String> = held_rows(&db).await.into_iter().map(|r| r.1).collect();
    assert!(sent.is_disjoint(&held_customers));
    assert_eq!(sent.len() + held_customers.len(), ROWS, "every removal is sent or held");

    // Now they can be decided: discard two, approve the rest.
    let rows = held_rows(&db).await;
    let kept = &rows[..2];
    let args =
        ["deletes", "discard", "--id", &kept[0].0.to_string(), "--id", &kept[1].0.to_string()];
    let stdout = deletes_command(&args, config.path(), &emulator, &mut deletes).await;
    assert_eq!(stdout, "discarded 2 held removals\n");
    let stdout =
        deletes_command(&["deletes", "approve", "--all"], config.path(), &emulator, &mut deletes)
            .await;
    assert_eq!(stdout, format!("approved: sent {} removals\n", expected - 2));
    let deleted = deletes.customers();
    assert_eq!(deleted.len(), ROWS - 2);
    assert!(kept.iter().all(|(_, customer)| !deleted.contains(customer)), "discarded stay");

    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    assert_log_clean(&log);
}

/// `kill -9` after the commit stored the holds but before it was
/// acknowledged (Customer.io fails the removals sent before the trip): the
/// replay stores each removal once, and sends none, not even the first few
/// (a replayed transaction's removals only ever go to the table).
#[tokio::test]
async fn kill_9_between_storing_and_acknowledging_holds_nothing_twice() {
    const ROWS: usize = 5_000;
    let db = users("guard_spill_replay", ROWS).await;
    let emulator = emulator::start().await;
    let config = config_file(&guard_config(&db, &emulator, SMALL_BUDGET));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;

    emulator.set_faults(Faults { fail_next: 1_000_000, fail_status: 503, ..Faults::default() });
    let lsn = exec_then_marker(&db, "DELETE FROM users").await;
    let stored = (ROWS - LIMIT) as i64;
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while held_by_state(&db).await.get("held") != Some(&(stored, stored)) {
        assert!(tokio::time::Instant::now() < deadline, "the holds were never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(db.confirmed_flush(&db.name).await < lsn, "acknowledged: the test proves nothing");
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    emulator.set_faults(Faults::default());
    emulator.clear_requests();

    let log = logs.path().join("2.log");
    let mut daemon = spawn_binary(config.path(), &log);
    assert!(wait_for_confirmed_within(&db, lsn, HOLD_TIMEOUT).await, "never acknowledged");
    let held = held_by_state(&db).await;
    assert_eq!(held.get("held"), Some(&(ROWS as i64, ROWS as i64)), "each held once: {held:?}");
    assert_eq!(held.len(), 1, "nothing pending is left: {held:?}");
    let mut deletes = Deletes::default();
    deletes.drain(&emulator);
    assert!(deletes.customers().is_empty(), "a replayed removal was sent");
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    assert_log_clean(&log);
}

/// In one transaction: a mass delete (chunks written), then one of the
/// customers whose removal was written comes back, another comes back and
/// goes again. The first hold is superseded (the identify is sent), the
/// second is held, each customer has one row.
#[tokio::test]
async fn a_change_later_in_the_transaction_supersedes_a_written_hold() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("guard_spill_supersede", USERS_TABLE, |c| {
            c + SMALL_BUDGET.replace("initial_sync = false\n", "").as_str()
                + &format!("\n[delete_guard]\nmax_deletes = {LIMIT}\n")
        })
        .await;
    db.exec("INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 2000) g")
        .await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 2000).await);

    // Ids 1-5 are sent, 6-2000 held; 10 and 20 were written in the first
    // chunk (about 350 holds) long before the INSERTs come.
    let lsn = exec_then_marker(
        &db,
        "BEGIN; \
             DELETE FROM users; \
             INSERT INTO users (id, email) VALUES (10, 'back@x.io'), (20, 'again@x.io'); \
             UPDATE users SET plan = 'pro' WHERE id = 10; \
             DELETE FROM users WHERE id = 20; \
             COMMIT",
    )
    .await;
    assert!(wait_for_confirmed_within(&db, lsn, crate::support::CONVERGE).await);
    let state_of = |id: &'static str| {
        let db = &db;
        async move {
            db.client
                .query("SELECT state FROM ciosync.held_deletes WHERE customer_id = $1", &[&id])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(state_of("10").await, ["superseded"]);
    assert_eq!(state_of("20").await, ["held"]);
    let held = held_by_state(&db).await;
    assert_eq!(held.get("held"), Some(&(1994, 1994)), "{held:?}");
    assert_eq!(held.get("superseded"), Some(&(1, 1)), "{held:?}");
    assert!(
        wait_for_customers(&emulator, |c| {
            c.get("10").is_some_and(|a| a.get("plan") == Some(&"pro".into()))
        })
        .await,
        "the customer who came back is identified"
    );
    assert_eq!(emulator.customers().len(), 2000 - LIMIT, "only the first few were deleted");
    daemon.stop().await.unwrap();
}
