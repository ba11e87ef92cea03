//! After a `kill -9`, the stream replays the transactions that were not
//! acknowledged. An update of a customer committed *before* the delete the
//! breaker held must not cancel (supersede) that hold when it is replayed:
//! the delete's own replay finds its hold already stored and does not hold
//! it again, so the person would stay in Customer.io with the row gone.
//! Found by the fault soak once it tripped the breaker (issue 26).

use ciosync_emulator::Faults;

use crate::support::daemon::{config_file, run_binary, signal, spawn_binary};
use crate::support::dead_letters::texts;
use crate::support::emulator::{self, wait_for, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

const GUARD: &str = "\n[delete_guard]\nmax_deletes = 1\n";

async fn held(db: &TestDb) -> Vec<(String, String)> {
    db.client
        .query("SELECT customer_id, state FROM ciosync.held_deletes ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_replayed_earlier_update_leaves_the_held_delete_held() {
    let db = TestDb::new("guard_replay").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let config = config_file(&db.config(&emulator.url(), GUARD));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, plan) VALUES (1, 'a'), (2, 'a')").await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 2).await);

    // Customer.io fails: nothing below is delivered, so nothing is
    // acknowledged. The first delete is admitted (and waits to be sent);
    // the second trips the breaker and is held, stored at its commit.
    // (The update between them waits to be sent too.)
    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    db.exec("DELETE FROM users WHERE id = 1").await;
    db.exec("UPDATE users SET plan = 'b' WHERE id = 2").await;
    db.exec("DELETE FROM users WHERE id = 2").await;
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while held(&db).await != [("2".to_owned(), "held".to_owned())] {
        assert!(tokio::time::Instant::now() < deadline, "not held: {:?}", held(&db).await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    signal(&daemon, "KILL");
    daemon.wait().unwrap();

    // The restart replays the update of customer 2, then its delete.
    emulator.set_faults(Faults::default());
    let mut daemon = spawn_binary(config.path(), &logs.path().join("2.log"));
    let end = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, end).await, "the replay was not acknowledged");
    // A replayed removal is held, never sent: customer 1's too.
    let mut rows = held(&db).await;
    rows.sort();
    assert_eq!(
        rows,
        [("1".to_owned(), "held".to_owned()), ("2".to_owned(), "held".to_owned())],
        "the replayed update cancelled the later delete's hold"
    );
    assert_eq!(emulator.customer("2").unwrap()["plan"], "b");

    let approved = run_binary(&["deletes", "approve", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&approved);
    assert!(approved.status.success(), "{stdout}{stderr}");
    assert!(wait_for(&emulator, |e| e.customers().is_empty()).await, "{stdout}");
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
}
