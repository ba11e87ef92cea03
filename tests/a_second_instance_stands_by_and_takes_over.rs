//! High availability: two ciosync processes on the same slot. The first
//! works it; the second stands by (not ready on `/readyz`, with the reason;
//! one info line; no heartbeats, no deliveries, no warnings) and, after the
//! first is killed with SIGKILL, takes over within seconds with nothing
//! lost: every customer ends equal to its row.

use std::time::{Duration, Instant};

use crate::support::customers_match_rows;
use crate::support::daemon::{config_file, signal, spawn_binary};
use crate::support::emulator;
use crate::support::endpoint::{get, value, wait_for_metrics, wait_for_status};
use crate::support::postgres::{TestDb, USERS_TABLE};

/// How long a takeover may take at most: the lease is asked for every
/// second, and the stream then starts at once.
const TAKEOVER_BOUND: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn the_standby_takes_over_after_kill_9_losing_nothing() {
    let db = TestDb::new("ha_pair").await;
    db.exec(USERS_TABLE).await;
    db.exec("INSERT INTO users (id, email, plan) SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, 50) g").await;
    let emulator = emulator::start().await;
    let text = db.config(&emulator.url(), "");
    let (port_a, port_b) = (free_port(), free_port());
    let config_a = config_file(&text.replace("127.0.0.1:0", &format!("127.0.0.1:{port_a}")));
    let config_b = config_file(&text.replace("127.0.0.1:0", &format!("127.0.0.1:{port_b}")));
    let logs = tempfile::tempdir().unwrap();
    let mut a = spawn_binary(config_a.path(), &logs.path().join("a.log"));
    db.wait_for_streaming().await;
    assert!(customers_match_rows(&db, &emulator).await, "the first instance's initial copy");
    let ready_a = format!("http://127.0.0.1:{port_a}/readyz");
    assert!(wait_for_status(&ready_a, 200).await, "the first instance never got ready");

    let b_log = logs.path().join("b.log");
    let mut b = spawn_binary(config_b.path(), &b_log);
    let ready_b = format!("http://127.0.0.1:{port_b}/readyz");
    let metrics_b = format!("http://127.0.0.1:{port_b}/metrics");
    assert!(wait_for_status(&ready_b, 503).await, "the second instance never answered");
    let (standing_by, _) = wait_for_metrics(&metrics_b, |m| {
        value(m, "ciosync_pipeline_phase{phase=\"standby\"}") == Some(1.0)
    })
    .await;
    assert!(standing_by, "the second instance never stood by");
    let (status, reason) = get(&ready_b).await;
    assert_eq!(status, 503);
    assert!(reason.contains("standing by: another ciosync instance works this slot"), "{reason}");

    // The first keeps working while the second waits through a few retries.
    db.exec("UPDATE users SET plan = 'pro' WHERE id <= 10").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (100, 'c@x.io', 'team')").await;
    assert!(customers_match_rows(&db, &emulator).await, "changes while both run");
    let (_, metrics) = get(&metrics_b).await;
    for series in ["ciosync_heartbeats_written_total", "ciosync_initial_copy_rows_total"] {
        assert_eq!(value(&metrics, series), Some(0.0), "the standby worked: {series}");
    }
    assert_eq!(value(&metrics, "ciosync_pipeline_phase{phase=\"standby\"}"), Some(1.0));

    // SIGKILL the first; write at once; the second takes over.
    signal(&a, "KILL");
    let killed = Instant::now();
    a.wait().unwrap();
    db.exec("UPDATE users SET plan = 'team' WHERE id BETWEEN 5 AND 15").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (101, 'd@x.io', 'free')").await;
    assert!(wait_for_status(&ready_b, 200).await, "the second instance never took over");
    let takeover = killed.elapsed();
    assert!(customers_match_rows(&db, &emulator).await, "a change was lost in the takeover");
    let converged = killed.elapsed();
    eprintln!("takeover: ready after {takeover:?}, customers equal rows after {converged:?}");
    assert!(takeover < TAKEOVER_BOUND, "the takeover took {takeover:?}");

    signal(&b, "TERM");
    assert!(b.wait().unwrap().success());
    let log = std::fs::read_to_string(&b_log).unwrap();
    let said = log.matches("standing by to take over").count();
    assert_eq!(said, 1, "the standby said it stands by {said} times:\n{log}");
    assert!(log.contains("took over the slot's lease"), "{log}");
    let noisy: Vec<&str> =
        log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert!(noisy.is_empty(), "the standby warned while waiting:\n{}", noisy.join("\n"));
}
