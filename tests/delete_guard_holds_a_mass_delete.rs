//! The mass-delete circuit breaker: with `max_deletes = 5`, a statement
//! deleting 20 users sends the first 5 deletes and holds the other 15 in
//! `ciosync.held_deletes` (durably, so the slot moves past them), while
//! other changes keep flowing. A re-insert of a held customer supersedes the
//! hold; `deletes approve` deletes the rest, `deletes discard` keeps them,
//! and either resets the breaker. A restart while tripped keeps holding.
//! `max_share` limits removals to a share of the estimated rows.
//! `deletes gone` leaves held removals to `deletes approve`, which forgets
//! the customers it sends in the record of what Customer.io accepted, also
//! when it is interrupted while Customer.io applies them.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use ciosync_emulator::{Emulator, Faults};

use crate::support::daemon::{config_file, interrupt_when, run_binary, InProcess};
use crate::support::dead_letters::texts;
use crate::support::emulator::{applied_then_wait, wait_for_customers};
use crate::support::endpoint::{value, wait_for_metrics};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{eventually, Scenario};

pub const GUARD: &str = "\n[delete_guard]\nmax_deletes = 5\n";

/// Starts the scenario with the guard and 25 users in Customer.io.
async fn start(test: &str) -> Scenario {
    let scenario = Scenario::start_with(test, USERS_TABLE, |c| c + GUARD).await;
    scenario
        .db
        .exec("INSERT INTO users (id, email) SELECT n, 'u' || n || '@x.io' FROM generate_series(1, 25) n")
        .await;
    assert!(wait_for_customers(&scenario.emulator, |c| c.len() == 25).await);
    scenario
}

/// (customer id, state) of every held row, in id order.
pub async fn held_rows(db: &TestDb) -> Vec<(String, String)> {
    db.client
        .query("SELECT customer_id, state FROM ciosync.held_deletes ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn wait_for_held(db: &TestDb, cond: impl Fn(&[(String, String)]) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    loop {
        if cond(&held_rows(db).await) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub fn customers_among_first_20(emulator: &Emulator) -> usize {
    emulator.customers().keys().filter(|id| id.parse::<u32>().is_ok_and(|n| n <= 20)).count()
}

/// Deletes users 1-20 in one statement and waits until 15 are held and the
/// slot is acknowledged past the delete.
async fn mass_delete(db: &TestDb, emulator: &Emulator, daemon: &InProcess) {
    mass_removal(db, emulator, daemon, "DELETE FROM users WHERE id <= 20").await;
}

/// Runs `sql`, which removes users 1-20 from Customer.io in one statement,
/// and waits until 15 are held and the slot is acknowledged past it.
pub async fn mass_removal(db: &TestDb, emulator: &Emulator, daemon: &InProcess, sql: &str) {
    let lsn = db.exec_then_lsn(sql).await;
    assert!(db.wait_for_confirmed(&db.name, lsn).await, "held removals count as handled");
    assert_eq!(held_rows(db).await.len(), 15, "all but the first 5 are held");
    assert!(held_rows(db).await.iter().all(|(_, state)| state == "held"));
    assert!(wait_for_customers(emulator, |_| customers_among_first_20(emulator) == 15).await);
    assert_eq!(daemon.counters.delete_guard_tripped.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_mass_delete_is_held_and_approve_sends_all_but_the_superseded() {
    let Scenario { db, emulator, daemon } = start("guard_approve").await;
    mass_delete(&db, &emulator, &daemon).await;

    // Everything else keeps flowing.
    db.exec("INSERT INTO users (id, email) VALUES (100, 'new@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("100")).await);
    let (tripped, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_delete_guard_tripped") == Some(1.0)
            && value(t, "ciosync_deletes_held") == Some(15.0)
    })
    .await;
    assert!(tripped, "{text}");
    assert_eq!(value(&text, "ciosync_deletes_held_total"), Some(15.0));

    // A held customer signs up again: the later change wins.
    let back = held_rows(&db).await[0].0.clone();
    db.exec(&format!("INSERT INTO users (id, email) VALUES ({back}, 'back@x.io')")).await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key(&back)).await);
    assert!(
        wait_for_held(&db, |rows| rows.iter().any(|(id, s)| *id == back && s == "superseded"))
            .await
    );

    let config = config_file(&db.config(&emulator.url(), ""));
    let out = run_binary(&["deletes", "list"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("14 held for slot"), "{stdout}");

    let out = run_binary(&["deletes", "approve", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    // The customers identified with an email while tripped (the comeback
    // among them) are identified again once nothing is held.
    assert_eq!(
        stdout,
        "approved: sent 14 removals\n\
         identified again from their rows: 2 customers given an email while removals were held\n"
    );
    assert!(
        wait_for_customers(&emulator, |c| {
            customers_among_first_20(&emulator) == 1 && c.contains_key(&back)
        })
        .await,
        "the held customers are deleted, the re-created one is not"
    );
    assert!(held_rows(&db)
        .await
        .iter()
        .all(|(id, s)| s == if *id == back { "superseded" } else { "sent" }));
    assert!(
        eventually(|| daemon.counters.delete_guard_tripped.load(Ordering::Relaxed) == 0).await,
        "the breaker resets"
    );

    // Reset: deletes flow again.
    db.exec("DELETE FROM users WHERE id = 21").await;
    assert!(wait_for_customers(&emulator, |c| !c.contains_key("21")).await);
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn discarded_removals_leave_the_customers_in_customerio() {
    let Scenario { db, emulator, daemon } = start("guard_discard").await;
    mass_delete(&db, &emulator, &daemon).await;

    let config = config_file(&db.config(&emulator.url(), ""));
    let out = run_binary(&["deletes", "discard", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "discarded 15 held removals\n");
    assert!(
        eventually(|| daemon.counters.delete_guard_tripped.load(Ordering::Relaxed) == 0).await,
        "the breaker resets"
    );
    assert!(held_rows(&db).await.iter().all(|(_, s)| s == "discarded"));
    assert_eq!(customers_among_first_20(&emulator), 15, "nothing was deleted");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_restart_while_tripped_keeps_holding() {
    let Scenario { db, emulator, daemon } = start("guard_restart").await;
    mass_delete(&db, &emulator, &daemon).await;
    daemon.stop().await.unwrap();
    db.wait_for_slot_released().await;

    let daemon = InProcess::start(&(db.config(&emulator.url(), "") + GUARD));
    db.wait_for_streaming().await;
    assert_eq!(daemon.counters.delete_guard_tripped.load(Ordering::Relaxed), 1);
    // A single delete, far below the limit: held, since the breaker is tripped.
    let lsn = db.exec_then_lsn("DELETE FROM users WHERE id = 25").await;
    assert!(db.wait_for_confirmed(&db.name, lsn).await);
    assert!(wait_for_held(&db, |rows| rows.iter().any(|(id, s)| id == "25" && s == "held")).await);
    assert!(emulator.customer("25").is_some(), "held, not sent");
    daemon.stop().await.unwrap();
}

/// `max_share` alone: the limit is a share of the synced tables' estimated
/// rows (10% of 100 analysed rows: 10 per window), shown by
/// `ciosync_delete_guard_limit`. (Until this test the estimate of an
/// ordinary, unpartitioned table was always 0, so the limit was 1.)
#[tokio::test]
async fn max_share_limits_removals_to_a_share_of_the_rows() {
    let db = TestDb::new("guard_share").await;
    db.exec(USERS_TABLE).await;
    db.exec("INSERT INTO users (id, email) SELECT n, 'u' || n || '@x.io' FROM generate_series(1, 100) n")
        .await;
    // Its own transaction: the estimate is what ANALYZE committed.
    db.exec("ANALYZE users").await;
    let emulator = crate::support::emulator::start().await;
    let guard = "\n[delete_guard]\nmax_deletes = 0\nmax_share = 0.1\n";
    let daemon = InProcess::start(&(db.config(&emulator.url(), "") + guard));
    assert!(wait_for_customers(&emulator, |c| c.len() == 100).await);
    let (estimated, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_delete_guard_limit") == Some(10.0)
    })
    .await;
    assert!(estimated, "the share was never turned into a limit: {text}");

    let lsn = db.exec_then_lsn("DELETE FROM users WHERE id <= 30").await;
    assert!(db.wait_for_confirmed(&db.name, lsn).await, "held removals count as handled");
    assert_eq!(held_rows(&db).await.len(), 20, "all but the first 10 are held");
    assert!(wait_for_customers(&emulator, |c| c.len() == 90).await);
    assert_eq!(daemon.counters.delete_guard_tripped.load(Ordering::Relaxed), 1);
    daemon.stop().await.unwrap();
}

/// `deletes approve` while Customer.io answers only 5xx: it backs off a few
/// times, stops with exit 1, and every removal stays held; once Customer.io
/// is back the same command sends them.
#[tokio::test]
async fn approve_while_customerio_is_down_keeps_everything_held() {
    let Scenario { db, emulator, daemon } = start("guard_approve_outage").await;
    mass_delete(&db, &emulator, &daemon).await;
    let config = config_file(&db.config(&emulator.url(), ""));

    emulator.set_faults(Faults { fail_next: 1000, fail_status: 503, ..Faults::default() });
    let out = run_binary(&["deletes", "approve", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("stopped after sending 0; the rest are still held"), "{stderr}");
    assert!(stderr.contains("HTTP 503"), "{stderr}");
    assert!(held_rows(&db).await.iter().all(|(_, state)| state == "held"));
    assert_eq!(customers_among_first_20(&emulator), 15, "nothing was removed");

    emulator.set_faults(Faults::default());
    let out = run_binary(&["deletes", "approve", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "approved: sent 15 removals\n");
    assert!(wait_for_customers(&emulator, |_| customers_among_first_20(&emulator) == 0).await);
    daemon.stop().await.unwrap();
}

/// The customers whose removal is held.
async fn held_customers(db: &TestDb) -> BTreeSet<String> {
    held_rows(db).await.into_iter().filter(|(_, s)| s == "held").map(|(c, _)| c).collect()
}

/// `deletes gone` leaves to `deletes approve` the customers whose removal
/// the breaker holds (their rows are gone and the record still holds them):
/// neither counted, by it or by `plan`, nor sent by `--send`. Only a
/// customer deleted while no daemon ran (the delete still in the slot) is.
#[tokio::test]
async fn deletes_gone_leaves_held_removals_to_approve() {
    let Scenario { db, emulator, daemon } = start("guard_gone").await;
    mass_delete(&db, &emulator, &daemon).await;
    daemon.stop().await.unwrap();
    let held = held_customers(&db).await;
    assert!(held.is_subset(&db.recorded_customers().await), "the record forgot held customers");
    db.exec("DELETE FROM users WHERE id = 25").await;

    let config = config_file(&(db.config(&emulator.url(), "") + GUARD));
    let out = run_binary(&["plan", "--json"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(4), "{stdout}{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(plan["deletes"], 1, "{stdout}");
    let out = run_binary(&["deletes", "gone"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    let one = "1 customer in the record of what Customer.io accepted has no row that syncs";
    assert!(out.status.success() && stdout.starts_with(one), "{stdout}{stderr}");
    assert!(stdout.contains("--send` removes it from Customer.io"), "{stdout}");

    let out = run_binary(&["deletes", "gone", "--send"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success() && stdout.starts_with("removed 1, refused 0"), "{stdout}{stderr}");
    assert!(emulator.customer("25").is_none(), "the gone customer was not removed");
    assert_eq!(customers_among_first_20(&emulator), 15, "a held removal was sent");
    assert_eq!(held_customers(&db).await, held, "a held removal was decided");
    assert!(held.is_subset(&db.recorded_customers().await));
}

/// `deletes approve` forgets in the record the customers it sent (their
/// next identify goes whole): when it commits, and when it stops after
/// Customer.io applied the removals but answered only errors (its
/// transaction rolled back, the removals still held): the record claims
/// nothing for the customers Customer.io deleted.
#[tokio::test]
async fn approve_forgets_the_customers_it_sent_also_when_it_stops() {
    let Scenario { db, emulator, daemon } = start("guard_approve_record").await;
    mass_delete(&db, &emulator, &daemon).await;
    let mut held = held_customers(&db).await;
    assert!(held.is_subset(&db.recorded_customers().await), "the record forgot held customers");
    let config = config_file(&db.config(&emulator.url(), ""));

    let first = held.pop_first().unwrap();
    let id: i64 = db
        .client
        .query_one("SELECT id FROM ciosync.held_deletes WHERE customer_id = $1", &[&first])
        .await
        .unwrap()
        .get(0);
    let out = run_binary(&["deletes", "approve", "--id", &id.to_string()], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(stdout, "approved: sent 1 removal\n", "{stderr}");
    assert!(emulator.customer(&first).is_none());
    let recorded = db.recorded_customers().await;
    assert!(!recorded.contains(&first), "approve left the sent customer in the record");
    assert!(held.is_subset(&recorded), "approve forgot customers it did not send");

    // Customer.io applies every removal, but each answer is lost.
    emulator.set_faults(Faults {
        fail_next: 1000,
        fail_status: 503,
        fail_after_apply: true,
        ..Faults::default()
    });
    let out = run_binary(&["deletes", "approve", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("stopped after sending 0; the rest are still held"), "{stderr}");
    assert_eq!(held_customers(&db).await, held, "rolled back: still held");
    assert_eq!(customers_among_first_20(&emulator), 0, "Customer.io applied the removals");
    let claimed: Vec<String> = db.recorded_customers().await.intersection(&held).cloned().collect();
    assert!(claimed.is_empty(), "the record claims values for deleted customers: {claimed:?}");
    daemon.stop().await.unwrap();
}

/// `deletes approve` interrupted (Ctrl-C) after Customer.io applied its
/// batch, before its transaction committed: the removals stay held, and
/// the record claims nothing for the customers Customer.io deleted, so one
/// who signs up again with the same values is identified whole (a claim
/// left behind would have the daemon send nothing, and the person would
/// be missing from Customer.io for good).
#[tokio::test]
async fn approve_interrupted_after_customerio_applied_leaves_no_claim() {
    let Scenario { db, emulator, daemon } = start("guard_approve_ctrl_c").await;
    mass_delete(&db, &emulator, &daemon).await;
    let held = held_customers(&db).await;
    assert!(held.is_subset(&db.recorded_customers().await), "the record forgot held customers");
    let config = config_file(&db.config(&emulator.url(), ""));

    emulator.set_faults(applied_then_wait());
    let applied = wait_for_customers(&emulator, |_| customers_among_first_20(&emulator) == 0);
    let status = interrupt_when(&["deletes", "approve", "--all"], config.path(), applied).await;
    assert!(!status.success(), "{status:?}");
    emulator.set_faults(Faults::default());
    assert_eq!(held_customers(&db).await, held, "rolled back: still held");
    let claimed: Vec<String> = db.recorded_customers().await.intersection(&held).cloned().collect();
    assert!(claimed.is_empty(), "the record claims values for deleted customers: {claimed:?}");

    let back = held.first().unwrap().clone();
    db.exec(&format!("INSERT INTO users (id, email) VALUES ({back}, 'u{back}@x.io')")).await;
    assert!(
        wait_for_customers(&emulator, |c| c.contains_key(&back)).await,
        "the row is back, the person is not"
    );
    daemon.stop().await.unwrap();
}
