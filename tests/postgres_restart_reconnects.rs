//! Postgres restarted mid-stream (fast and immediate): the daemon reconnects
//! with backoff and nothing is lost.

use ciosync::telemetry::Counters;
use ciosync_emulator::Faults;
use ciosync_testkit::throwaway::ThrowawayPostgres;
use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for, wait_for_customers};
use crate::support::eventually;
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

/// A fast shutdown terminates ordinary sessions, then waits for each
/// walsender's client to confirm all WAL sent. While Customer.io fails the
/// daemon confirms nothing, so it lets go of the stream when its SQL session
/// is terminated, also while its memory budget is full and it reads nothing
/// from the stream; otherwise the shutdown (and the application's database)
/// would wait for Customer.io. Found by the fault soak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_shutdown_is_not_held_up_while_customerio_fails() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start).await.unwrap().unwrap();
    let db = TestDb::on(&pg, "pg_fast_stop").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    // The smallest memory budget, which the rows below overflow.
    let budget = "[pipeline]\nmax_pending_bytes = 1048576\n";
    let daemon = InProcess::start(&db.config(&emulator.url(), budget));
    db.wait_for_streaming().await;

    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    db.exec(
        "INSERT INTO users (id, email, plan, bio) \
         SELECT g, 'u' || g || '@x.io', 'free', repeat('b', 900) FROM generate_series(1, 3000) g",
    )
    .await;
    // Delivered to the daemon, refused by Customer.io: unconfirmed, and
    // the budget full (the slot holds the rest).
    assert!(wait_for(&emulator, |e| e.requests().iter().any(|r| r.status == 500)).await);
    assert!(
        eventually(|| Counters::get(&daemon.counters.pending_bytes) > 1_000_000).await,
        "the memory budget never filled"
    );

    let stopped = tokio::task::block_in_place(|| pg.stop_within("fast", 15));
    assert!(stopped.is_ok(), "the fast shutdown waited for the daemon: {stopped:?}");
    tokio::task::block_in_place(|| pg.restart()).unwrap();
    emulator.set_faults(Faults::default());
    assert!(
        wait_for_customers(&emulator, |c| c.len() == 3000).await,
        "the unconfirmed changes were not sent again"
    );
    daemon.stop().await.unwrap();
}
