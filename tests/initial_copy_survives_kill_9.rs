//! `kill -9` during the initial copy, rows changed while the daemon is down,
//! a restart: the copy resumes from its checkpoint (it is not taken as done
//! because the slot exists) and every customer ends equal to its row.

use std::time::Duration;

use ciosync_emulator::Faults;

use crate::support::customers_match_rows;
use crate::support::daemon::{config_file, signal, spawn_binary};
use crate::support::emulator::{self, identifies_of};
use crate::support::postgres::{TestDb, USERS_TABLE};

async fn copy_state(db: &TestDb) -> Option<(String, i64)> {
    db.client
        .query_opt(
            "SELECT state, rows_copied FROM ciosync.initial_copy WHERE table_name = 'public.users'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|r| (r.get(0), r.get(1)))
}

#[tokio::test]
async fn kill_9_during_the_initial_copy_then_restart_converges() {
    let db = TestDb::new("copy_kill9").await;
    db.exec(USERS_TABLE).await;
    db.exec(
        "INSERT INTO users (id, email, plan)
         SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, 20000) g",
    )
    .await;
    let emulator = emulator::start().await;
    emulator.set_faults(Faults { latency_ms: 20, ..Faults::default() });
    let config = config_file(&db.config(&emulator.url(), ""));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));

    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    loop {
        if let Some((state, rows)) = copy_state(&db).await {
            if state == "copying" && rows >= 3000 {
                break;
            }
            assert_ne!(state, "done", "the copy finished before it could be killed");
        }
        assert!(tokio::time::Instant::now() < deadline, "the copy never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    let (_, copied_before_kill) = copy_state(&db).await.unwrap();

    db.exec("UPDATE users SET plan = 'pro' WHERE id IN (1, 19999)").await;
    db.exec("DELETE FROM users WHERE id IN (2, 20000)").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (30001, 'new@x.io', 'team')").await;
    emulator.set_faults(Faults::default());

    let mut daemon = spawn_binary(config.path(), &logs.path().join("2.log"));
    let converged = customers_match_rows(&db, &emulator).await;
    let log = std::fs::read_to_string(logs.path().join("2.log")).unwrap();
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    assert!(converged, "customers differ from rows after kill -9 during the copy");
    assert!(log.contains("resuming the initial copy"), "{log}");
    let (state, rows) = copy_state(&db).await.unwrap();
    assert_eq!(state, "done");
    assert!(rows >= 20_000 - 2, "rows copied in all: {rows}");
    // Resumed, not restarted: a row copied before the kill was sent once.
    assert!(copied_before_kill >= 3000);
    assert_eq!(identifies_of(&emulator, "5").len(), 1, "the copy started over");
}
