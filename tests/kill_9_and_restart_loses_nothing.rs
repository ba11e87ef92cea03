//! `kill -9` of the daemon mid-stream, changes written while it is down, a
//! restart: every customer ends equal to its row.

use crate::support::customers_match_rows;
use crate::support::daemon::{config_file, signal, spawn_binary};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn kill_9_with_writes_while_down_then_restart_converges() {
    let db = TestDb::new("kill9").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let config = config_file(&db.config(&emulator.url(), ""));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;

    db.exec("INSERT INTO users (id, email, plan) SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, 300) g").await;
    // Kill it while the stream is mid-way.
    assert!(wait_for_customers(&emulator, |c| !c.is_empty()).await);
    signal(&daemon, "KILL");
    daemon.wait().unwrap();

    db.exec("UPDATE users SET plan = 'pro' WHERE id % 3 = 0").await;
    db.exec("DELETE FROM users WHERE id % 10 = 0").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (1000, 'late@x.io', 'team')").await;

    let mut daemon = spawn_binary(config.path(), &logs.path().join("2.log"));
    let converged = customers_match_rows(&db, &emulator).await;
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    assert!(converged, "customers differ from rows after kill -9 and restart");
}
