//! ciosync acknowledges a transaction once each of its changes is delivered
//! *or stored* (a held removal, a dead letter). Stored must mean durable:
//! on a server whose `synchronous_commit` is `off` (a common tuning, and
//! the test clusters' setting) a commit returns before its WAL is written,
//! and a crash of Postgres then loses it while the acknowledgement stands.
//! After the crash the daemon resumes after the acknowledged transaction,
//! so a lost held removal is never sent and a lost "superseded" sends a
//! stale delete. Found by the fault soak with the mass delete during the
//! workload (issue 26): customers missing, stale and left behind.

use std::time::Duration;

use ciosync::config::Config;
use ciosync_testkit::throwaway::{ClusterOptions, ThrowawayPostgres};

use crate::support::daemon::{config_file, run_binary, signal, spawn_binary};
use crate::support::dead_letters::texts;
use crate::support::emulator::{self, wait_for, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::CONVERGE;

const GUARD: &str = "\n[delete_guard]\nmax_deletes = 1\n";

/// Every session ciosync opens commits synchronously, whatever the server's
/// default.
#[tokio::test]
async fn every_session_commits_synchronously() {
    let db = TestDb::new("sync_commit").await;
    let server_default: String =
        db.client.query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0);
    assert_eq!(
        server_default, "off",
        "the test cluster must default to off for this to mean anything"
    );
    let config = Config::from_toml(&db.config("http://127.0.0.1:1", ""), Vec::new()).unwrap();
    let sql = config.postgres.connection().connect_sql().await.unwrap();
    let ours: String = sql.query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0);
    assert_eq!(ours, "on");
}

async fn held(db: &TestDb) -> Vec<(String, String)> {
    db.client
        .query("SELECT customer_id, state FROM ciosync.held_deletes ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// A removal held by the breaker, its transaction acknowledged, then
/// Postgres crashes before its WAL writer would have written the hold: the
/// hold is still there afterwards, and approving it deletes the person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_removal_survives_a_crash_right_after_its_acknowledgement() {
    // The WAL writer waits 10 s between rounds, so an asynchronous commit
    // stays unwritten for seconds: long enough to crash before it is.
    let options = ClusterOptions {
        settings: vec!["wal_writer_delay = '10s'".to_owned()],
        ..ClusterOptions::default()
    };
    let pg = tokio::task::spawn_blocking(move || ThrowawayPostgres::start_with(&options))
        .await
        .unwrap()
        .unwrap();
    let db = TestDb::on(&pg, "crash_hold").await;
    // The application's own writes are durable (and so streamed at once).
    db.exec("SET synchronous_commit = on").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let config = config_file(&db.config(&emulator.url(), GUARD));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, plan) VALUES (1, 'a'), (2, 'a')").await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 2).await);

    // The first delete is within the limit and sent; the second trips the
    // breaker and is held.
    db.exec("DELETE FROM users WHERE id = 1").await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 1).await);
    let end = db.exec_then_lsn("DELETE FROM users WHERE id = 2").await;
    assert!(db.wait_for_confirmed(&db.name, end).await, "the held delete was not acknowledged");
    assert_eq!(held(&db).await, [("2".to_owned(), "held".to_owned())]);

    // A crash at once: what was committed but not yet written is gone.
    tokio::task::block_in_place(|| {
        pg.stop("immediate").unwrap();
        pg.restart().unwrap();
    });
    let db = db.reconnected().await;
    assert_eq!(
        held(&db).await,
        [("2".to_owned(), "held".to_owned())],
        "the held removal was lost in the crash although its transaction was acknowledged"
    );
    assert!(emulator.customer("2").is_some(), "a held removal was sent");

    // Approve waits until the daemon, back on the stream, acknowledges again.
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while held(&db).await.iter().any(|(_, state)| state == "held") {
        assert!(tokio::time::Instant::now() < deadline, "never approved: {:?}", held(&db).await);
        let approved = run_binary(&["deletes", "approve", "--all"], config.path()).await;
        let (stdout, stderr) = texts(&approved);
        assert!(approved.status.success(), "{stdout}{stderr}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(wait_for(&emulator, |e| e.customers().is_empty()).await);
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
}
