//! `/metrics` reads the slot from Postgres at each scrape: the lag in bytes
//! and in seconds grows while Customer.io fails and returns to about 0 once
//! the changes are delivered; the retained WAL and `wal_status` are the slot's.

use ciosync_emulator::Faults;

use crate::support::emulator::wait_for_customers;
use crate::support::endpoint::{value, wait_for_metrics};
use crate::support::Scenario;

/// "About 0": what Postgres may write on its own after the last change.
const CAUGHT_UP: f64 = 64.0 * 1024.0;

#[tokio::test]
async fn metrics_show_the_slot_lag_and_retained_wal() {
    let Scenario { db, emulator, daemon } = Scenario::start("metrics_slot").await;
    let url = daemon.url("/metrics");
    let lag = |text: &str| value(text, "ciosync_replication_lag_bytes");
    let (ok, text) = wait_for_metrics(&url, |t| {
        value(t, "ciosync_slot_read_ok") == Some(1.0)
            && value(t, "ciosync_slot_wal_status{wal_status=\"reserved\"}") == Some(1.0)
    })
    .await;
    assert!(ok, "the slot was never read:\n{text}");
    assert_eq!(value(&text, "ciosync_slot_wal_status{wal_status=\"missing\"}"), Some(0.0));
    assert!(value(&text, "ciosync_slot_retained_wal_bytes").is_some(), "{text}");
    assert!(value(&text, "ciosync_postgres_wal_lsn_bytes").unwrap() > 0.0, "{text}");
    assert_eq!(value(&text, "ciosync_backfill_rows_done"), Some(0.0), "{text}");

    // Customer.io fails: nothing is confirmed, so the lag covers the changes.
    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let before = db.current_lsn().await;
    db.exec("INSERT INTO users (id, email, bio) SELECT g, 'u' || g || '@x.io', repeat('b', 500) FROM generate_series(1, 200) g").await;
    let written = (db.current_lsn().await - before) as f64;
    let (ok, text) = wait_for_metrics(&url, |t| lag(t) >= Some(written * 0.9)).await;
    assert!(ok, "the lag did not cover {written} bytes of unconfirmed changes:\n{text}");
    let retained = value(&text, "ciosync_slot_retained_wal_bytes").unwrap();
    assert!(retained >= lag(&text).unwrap(), "the slot retains at least what it lags:\n{text}");
    let seconds = |t: &str| value(t, "ciosync_replication_lag_seconds");
    let (ok, text) = wait_for_metrics(&url, |t| seconds(t) >= Some(2.0)).await;
    assert!(ok, "the lag in seconds did not grow while nothing was delivered:\n{text}");

    emulator.set_faults(Faults::default());
    assert!(wait_for_customers(&emulator, |c| c.len() == 200).await);
    let (ok, text) = wait_for_metrics(&url, |t| {
        lag(t).is_some_and(|l| l <= CAUGHT_UP) && seconds(t) == Some(0.0)
    })
    .await;
    assert!(ok, "the lag did not return to about 0:\n{text}");
    daemon.stop().await.unwrap();
}
