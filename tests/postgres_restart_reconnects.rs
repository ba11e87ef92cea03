//! Postgres restarted mid-stream (fast and immediate): the daemon reconnects
//! with backoff and nothing is lost.

use ciosync::throwaway::ThrowawayPostgres;
use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{connect, TestDb, USERS_TABLE};

// Multi-threaded: stopping Postgres blocks this thread, and the daemon must
// keep answering the walsender meanwhile (a fast shutdown waits for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_stream_loses_nothing() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start).await.unwrap().unwrap();
    let db = TestDb::on(&pg, "pg_restart").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, email, plan) SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, 100) g").await;

    for mode in ["fast", "immediate"] {
        tokio::task::block_in_place(|| {
            pg.stop(mode).unwrap();
            pg.restart().unwrap();
        });
        // The restart ended the test's own session too.
        let client = connect(&db.url).await;
        client
            .batch_execute(&format!("UPDATE users SET plan = '{mode}' WHERE id <= 50"))
            .await
            .unwrap();
        assert!(
            wait_for_customers(&emulator, |c| c.len() == 100
                && (1..=50).all(|i| c[&i.to_string()].get("plan") == Some(&json!(mode))))
            .await,
            "changes after a {mode} restart never arrived"
        );
    }
    assert!(daemon.counters.source_reconnects.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    daemon.stop().await.unwrap();
}
