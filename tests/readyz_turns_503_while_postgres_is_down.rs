//! `/readyz` is 503 before the daemon streams and while Postgres is down,
//! and 200 once it streams again; `/healthz` stays 200 throughout.

use ciosync_testkit::throwaway::ThrowawayPostgres;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::endpoint::{get, value, wait_for_status};
use crate::support::postgres::{connect, TestDb, USERS_TABLE};

// Multi-threaded: stopping Postgres blocks this thread, and the daemon must
// keep answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_while_postgres_is_down() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start).await.unwrap().unwrap();
    let db = TestDb::on(&pg, "readyz_pg").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;

    // Started while Postgres is down: not ready, but alive.
    tokio::task::block_in_place(|| pg.stop("fast").unwrap());
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    let (status, body) = get(&daemon.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "not ready: starting: not connected to Postgres yet\n");
    assert_eq!(get(&daemon.url("/healthz")).await, (200, "ok\n".to_owned()));

    tokio::task::block_in_place(|| pg.restart().unwrap());
    assert!(wait_for_status(&daemon.url("/readyz"), 200).await, "never ready after the start");
    assert_eq!(get(&daemon.url("/readyz")).await, (200, "ready\n".to_owned()));

    // Postgres goes away mid-stream: not ready until the stream is back.
    tokio::task::block_in_place(|| pg.stop("fast").unwrap());
    assert!(wait_for_status(&daemon.url("/readyz"), 503).await, "still ready without Postgres");
    let (_, body) = get(&daemon.url("/readyz")).await;
    assert!(body.starts_with("not ready: not connected to Postgres"), "{body}");
    assert_eq!(get(&daemon.url("/healthz")).await.0, 200);
    // /metrics still answers, without what only Postgres can tell.
    let (status, metrics) = get(&daemon.url("/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(value(&metrics, "ciosync_slot_read_ok"), Some(0.0), "{metrics}");
    assert_eq!(value(&metrics, "ciosync_pipeline_phase{phase=\"connecting\"}"), Some(1.0));
    assert!(!metrics.contains("ciosync_replication_lag_bytes "), "{metrics}");

    tokio::task::block_in_place(|| pg.restart().unwrap());
    assert!(wait_for_status(&daemon.url("/readyz"), 200).await, "never ready after the restart");
    let client = connect(&db.url).await;
    client.batch_execute("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await.unwrap();
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    assert_eq!(get(&daemon.url("/readyz")).await.0, 200);

    daemon.stop().await.unwrap();
}
