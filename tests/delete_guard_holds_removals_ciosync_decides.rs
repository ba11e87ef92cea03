//! Under REPLICA IDENTITY DEFAULT ciosync itself decides whether an UPDATE
//! removes a customer (a row leaving a filter it evaluates, a row soft
//! deleted): such a removal is sent only if Customer.io may hold the
//! customer, and then through the mass-delete circuit breaker. A mass
//! leave or a mass soft delete is held as a mass DELETE is, while updates
//! of rows outside all along (never in Customer.io) are no removals: they
//! neither count toward the breaker nor send anything. A `kill -9` in a
//! burst of leaves and entries leaves, after a restart, exactly the rows
//! the filter matches in Customer.io.

use std::sync::atomic::Ordering;

use ciosync_emulator::{Emulator, Faults};

use crate::delete_guard_holds_a_mass_delete::{
    customers_among_first_20, held_rows, mass_removal, GUARD,
};
use crate::support::daemon::{config_file, run_binary, signal, spawn_binary};
use crate::support::dead_letters::texts;
use crate::support::emulator::{self, batch_items, wait_for, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{customers_match_rows_where, eventually, Scenario};
use crate::suppress_and_soft_delete::with_soft_delete;
use crate::sync_filter_syncs_only_matching_rows::FILTERED_USERS;

const DEFAULT_IDENTITY: &str = "ALTER TABLE public.users REPLICA IDENTITY DEFAULT;";

/// The filter ciosync evaluates (the publication cannot carry it).
fn with_own_filter(config: String) -> String {
    config.replacen("id_column = \"id\"\n", "id_column = \"id\"\nfilter = \"NOT is_staff\"\n", 1)
}

/// What one test does: the schema and config, the rows (users 1-25 synced,
/// 26-45 outside all along), an update of only the rows outside, and one
/// statement removing users 1-20.
struct Removals<'a> {
    test: &'a str,
    schema: &'a str,
    edit: fn(String) -> String,
    rows: &'a str,
    outside: &'a str,
    remove_1_to_20: &'a str,
}

/// Runs `r` with `max_deletes = 5`: the update of rows outside counts for
/// nothing and sends nothing; the mass removal sends 5, holds 15 like a
/// mass DELETE, and `deletes approve` sends those.
async fn held_like_a_mass_delete(r: Removals<'_>) {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with(r.test, r.schema, |c| (r.edit)(c) + GUARD).await;
    db.exec(r.rows).await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 25).await);

    let requests = emulator.requests().len();
    let lsn = db.exec_then_lsn(r.outside).await;
    assert!(db.wait_for_confirmed(&db.name, lsn).await, "the slot was not acknowledged");
    assert_eq!(
        daemon.counters.delete_guard_tripped.load(Ordering::Relaxed),
        0,
        "updates of rows never in Customer.io counted as removals"
    );
    assert_eq!(held_rows(&db).await, vec![], "rows never in Customer.io were held");
    assert_eq!(emulator.requests().len(), requests, "{:?}", batch_items(&emulator));

    mass_removal(&db, &emulator, &daemon, r.remove_1_to_20).await;
    assert_eq!(emulator.customers().len(), 20, "removed beyond the limit");

    let config = config_file(&(r.edit)(db.config(&emulator.url(), "")));
    let out = run_binary(&["deletes", "approve", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "approved: sent 15 removals\n");
    assert!(wait_for_customers(&emulator, |c| c.len() == 5).await);
    assert_eq!(customers_among_first_20(&emulator), 0);
    assert!(held_rows(&db).await.iter().all(|(_, s)| s == "sent"));
    assert!(
        eventually(|| daemon.counters.delete_guard_tripped.load(Ordering::Relaxed) == 0).await,
        "the breaker resets"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_leave_of_a_filter_ciosync_evaluates_is_held() {
    held_like_a_mass_delete(Removals {
        test: "guard_own_filter",
        schema: &format!("{FILTERED_USERS} {DEFAULT_IDENTITY}"),
        edit: with_own_filter,
        rows: "INSERT INTO users (id, email, is_staff) \
               SELECT n, 'u' || n || '@x.io', n > 25 FROM generate_series(1, 45) n",
        outside: "UPDATE users SET plan = 'staff' WHERE is_staff",
        remove_1_to_20: "UPDATE users SET is_staff = true WHERE id <= 20",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_soft_delete_under_default_identity_is_held() {
    held_like_a_mass_delete(Removals {
        test: "guard_soft_delete_default",
        schema: &format!(
            "{USERS_TABLE} ALTER TABLE users ADD COLUMN deleted_at timestamptz; {DEFAULT_IDENTITY}"
        ),
        edit: with_soft_delete,
        rows: "INSERT INTO users (id, email, deleted_at) \
               SELECT n, 'u' || n || '@x.io', CASE WHEN n > 25 THEN now() END \
               FROM generate_series(1, 45) n",
        outside: "UPDATE users SET plan = 'gone' WHERE deleted_at IS NOT NULL",
        remove_1_to_20: "UPDATE users SET deleted_at = now() WHERE id <= 20",
    })
    .await;
}

/// `kill -9` while a burst of rows leaving and entering the filter (and
/// updates, deletes and inserts inside and outside it) is part sent, the
/// rest failing at Customer.io; more of them while it is down; a restart:
/// Customer.io holds exactly the rows the filter matches, each equal to
/// its row. (A removal the record forgot before Customer.io took it would
/// be skipped after the restart as a row outside all along.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_burst_of_leaves_and_entries_converges_to_the_filter() {
    let db = TestDb::new("kill9_own_filter").await;
    db.exec(&format!("{FILTERED_USERS} {DEFAULT_IDENTITY}")).await;
    let emulator = emulator::start().await;
    let text = with_own_filter(db.config(&emulator.url(), ""));
    // One request of 50 customers a second, one at a time: the burst
    // takes several requests, so Customer.io can fail after the first.
    let slow = text.replacen(
        "linger_ms = 0\n",
        "linger_ms = 0\nmax_batch_ops = 50\nmax_in_flight = 1\nmax_requests_per_second = 1\n",
        1,
    );
    let config = config_file(&slow);
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;
    db.exec(
        "INSERT INTO users (id, email, plan, is_staff) \
         SELECT g, 'u' || g || '@x.io', 'free', g % 3 = 0 FROM generate_series(1, 300) g",
    )
    .await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 200).await);

    let batches = |e: &Emulator, status: u16| {
        e.requests().iter().filter(|r| r.path == "/api/v2/batch" && r.status == status).count()
    };
    let before = batches(&emulator, 200);
    // 100 leave, 50 enter; updates, deletes and inserts in and out.
    db.exec("UPDATE users SET is_staff = NOT is_staff WHERE id % 2 = 0").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id % 5 = 0").await;
    db.exec("DELETE FROM users WHERE id % 7 = 0").await;
    db.exec(
        "INSERT INTO users (id, email, plan, is_staff) \
         SELECT g, 'u' || g || '@x.io', 'team', g % 2 = 0 FROM generate_series(301, 400) g",
    )
    .await;
    assert!(wait_for(&emulator, |e| batches(e, 200) > before).await, "the burst was not sent");
    emulator.set_faults(Faults { fail_next: u32::MAX, ..Faults::default() });
    assert!(wait_for(&emulator, |e| batches(e, 500) >= 2).await, "no request failed");
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    emulator.set_faults(Faults::default());
    assert!(!outside_in_customerio(&db, &emulator).await.is_empty(), "no leave was at stake");

    // While it is down: some leave, some enter, some change.
    db.exec("UPDATE users SET is_staff = false WHERE id % 11 = 0").await;
    db.exec("UPDATE users SET is_staff = true WHERE id % 13 = 0").await;
    db.exec("UPDATE users SET plan = 'late' WHERE id % 17 = 0").await;

    let config = config_file(&text);
    let mut daemon = spawn_binary(config.path(), &logs.path().join("2.log"));
    let converged = customers_match_rows_where(&db, &emulator, "NOT is_staff").await;
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    let outside = outside_in_customerio(&db, &emulator).await;
    assert_eq!(outside, Vec::<String>::new(), "customers outside the filter in Customer.io");
    assert!(converged, "customers differ from the rows the filter matches");
}

/// The customers in the emulator whose rows the filter does not match.
async fn outside_in_customerio(db: &TestDb, emulator: &Emulator) -> Vec<String> {
    let rows = db.client.query("SELECT id::text FROM users WHERE is_staff", &[]).await.unwrap();
    let ids = rows.iter().map(|r| r.get::<_, String>(0));
    ids.filter(|id| emulator.customer(id).is_some()).collect()
}
