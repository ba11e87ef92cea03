//! One transaction moves an email from one row to another; Customer.io (the
//! emulator's uniqueness rule) refuses, with an HTTP 200 the client never
//! sees as a refusal, to give a person an email another person still has.
//! ciosync sends the release first, under REPLICA IDENTITY FULL (the old
//! email is known) and DEFAULT (it is not), with several batches in flight:
//! every person ends with its row's email, nothing refused, nothing
//! dead-lettered.

use ciosync_emulator::Faults;
use serde_json::Value;

use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{customers_match_rows, dead_letters, Scenario};

/// How the test runs: the table's replica identity, and how batches form.
#[derive(Clone, Copy)]
enum Identity {
    Full,
    Default,
}

/// Several batches in flight. `linger_ms`: 200 lets a transaction's
/// operations wait together (so a later identify could merge into an
/// earlier one); 0 sends each at once, a batch per operation.
async fn start(test: &str, identity: Identity, linger_ms: u64) -> Scenario {
    let schema = match identity {
        Identity::Full => USERS_TABLE.to_owned(),
        Identity::Default => format!("{USERS_TABLE} ALTER TABLE users REPLICA IDENTITY DEFAULT;"),
    };
    let settings = format!("linger_ms = {linger_ms}\nmax_in_flight = 4");
    Scenario::start_with(test, &schema, |c| c.replace("linger_ms = 0", &settings)).await
}

/// Inserts the rows and waits until Customer.io has them.
async fn insert(scenario: &Scenario, rows: &[(i64, &str)]) {
    let values: Vec<String> = rows.iter().map(|(id, email)| format!("({id}, '{email}')")).collect();
    scenario.db.exec(&format!("INSERT INTO users (id, email) VALUES {}", values.join(", "))).await;
    assert!(customers_match_rows(&scenario.db, &scenario.emulator).await, "inserted");
}

/// Runs `sql` as one transaction and checks that every person ends with
/// its row's email, with no failure logged and nothing dead-lettered.
async fn move_and_check(scenario: Scenario, sql: &str) {
    let Scenario { db, emulator, daemon } = scenario;
    db.exec(&format!("BEGIN; {sql} COMMIT;")).await;
    let end = db.current_lsn().await;
    let matched = customers_match_rows(&db, &emulator).await;
    assert_eq!(emulator.failures(), vec![], "Customer.io refused nothing");
    assert!(matched, "every person has its row's email: {:?}", emails(&emulator));
    assert!(db.wait_for_confirmed(&db.name, end).await, "acknowledged");
    assert_eq!(dead_letters::rows(&db).await, vec![], "nothing dead-lettered");
    daemon.stop().await.unwrap();
}

fn emails(emulator: &ciosync_emulator::Emulator) -> Vec<(String, Option<Value>)> {
    emulator.customers().into_iter().map(|(id, a)| (id, a.get("email").cloned())).collect()
}

/// A: x -> tmp, B: y -> x, A: tmp -> y. Merged, A's later identify would
/// go first and take y while B still has it.
async fn swap_through_a_temporary_value(test: &str, identity: Identity) {
    let scenario = start(test, identity, 200).await;
    insert(&scenario, &[(1, "x@x.io"), (2, "y@x.io")]).await;
    let sql = "UPDATE users SET email = 'tmp@x.io' WHERE id = 1; \
               UPDATE users SET email = 'x@x.io' WHERE id = 2; \
               UPDATE users SET email = 'y@x.io' WHERE id = 1;";
    move_and_check(scenario, sql).await;
}

/// The first request (A's release) fails once with a 500 and goes again
/// later, so a claim sent beside it in another batch would overtake it.
fn delay_the_first_request(scenario: &Scenario) {
    scenario.emulator.set_faults(Faults { fail_next: 1, ..Faults::default() });
}

/// A releases x by taking z; B takes x.
async fn direct_move(test: &str, identity: Identity) {
    let scenario = start(test, identity, 0).await;
    insert(&scenario, &[(1, "x@x.io"), (2, "w@x.io")]).await;
    delay_the_first_request(&scenario);
    let sql = "UPDATE users SET email = 'z@x.io' WHERE id = 1; \
               UPDATE users SET email = 'x@x.io' WHERE id = 2;";
    move_and_check(scenario, sql).await;
}

/// A releases Ann@ and B takes it written ANN@ (the same email to
/// Customer.io); C only changes the case of its own.
async fn move_in_another_case(test: &str, identity: Identity) {
    let scenario = start(test, identity, 0).await;
    insert(&scenario, &[(1, "Ann@x.io"), (2, "b@x.io"), (3, "c@x.io")]).await;
    delay_the_first_request(&scenario);
    let sql = "UPDATE users SET email = 'z@x.io' WHERE id = 1; \
               UPDATE users SET email = 'ANN@X.IO' WHERE id = 2; \
               UPDATE users SET email = 'C@x.io' WHERE id = 3;";
    move_and_check(scenario, sql).await;
}

#[tokio::test]
async fn swap_through_a_temporary_value_full() {
    swap_through_a_temporary_value("email_swap_tmp_full", Identity::Full).await;
}

#[tokio::test]
async fn swap_through_a_temporary_value_default() {
    swap_through_a_temporary_value("email_swap_tmp_default", Identity::Default).await;
}

#[tokio::test]
async fn direct_move_full() {
    direct_move("email_move_full", Identity::Full).await;
}

#[tokio::test]
async fn direct_move_default() {
    direct_move("email_move_default", Identity::Default).await;
}

#[tokio::test]
async fn move_in_another_case_full() {
    move_in_another_case("email_case_full", Identity::Full).await;
}

#[tokio::test]
async fn move_in_another_case_default() {
    move_in_another_case("email_case_default", Identity::Default).await;
}

/// Under DEFAULT identity every UPDATE carries the email, so any may be
/// releasing one: a bulk UPDATE still goes in full batches. (On two
/// threads, as the daemon runs: the record's queries beside the emulator
/// and the polling below starve on one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_update_under_default_identity_still_fills_batches() {
    const ROWS: i64 = 5_000;
    // A linger long enough that a stall of this process on a loaded
    // machine (the suite runs tests side by side on two cores) does not
    // send a batch half full: what is measured is the ordering rules.
    let scenario = start("email_bulk_default", Identity::Default, 1_000).await;
    let db: &TestDb = &scenario.db;
    db.exec(&format!(
        "INSERT INTO users (id, email, plan) SELECT g, 'u' || g || '@x.io', 'free' \
         FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    assert!(customers_match_rows(db, &scenario.emulator).await, "inserted");
    let before = scenario.emulator.requests().len();
    db.exec("UPDATE users SET plan = 'pro'").await;
    assert!(customers_match_rows(db, &scenario.emulator).await, "updated");
    // The update's requests.
    let updating = |r: &&ciosync_emulator::RecordedRequest| {
        r.body
            .as_ref()
            .and_then(|b| b["batch"].get(0))
            .is_some_and(|i| i["attributes"]["plan"] == "pro")
    };
    let sizes: Vec<usize> = scenario.emulator.requests()[before..]
        .iter()
        .filter(|r| r.path == "/api/v2/batch")
        .filter(updating)
        .filter_map(|r| r.body.as_ref()?.get("batch")?.as_array().map(Vec::len))
        .collect();
    let full = sizes.iter().filter(|&&n| n == 500).count();
    assert!(full >= 9 && sizes.iter().sum::<usize>() == ROWS as usize, "batch sizes: {sizes:?}");
    assert_eq!(scenario.emulator.failures(), vec![]);
    scenario.daemon.stop().await.unwrap();
}
