//! After a known workload, `/metrics` shows every counter with the value
//! the workload implies, the LSN gauges where the slot is, and no customer
//! data anywhere.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::emulator::wait_for_customers;
use crate::support::endpoint::{get, value, wait_for_metrics};
use crate::support::Scenario;

const INSERTS: u64 = 25;

#[tokio::test]
async fn metrics_count_what_was_delivered() {
    let Scenario { db, emulator, daemon } = Scenario::start("metrics_count").await;
    // 20 rows in one transaction, 5 in a transaction each, one update that
    // changes no mapped column, then a TRUNCATE (which deletes nobody).
    db.exec("INSERT INTO users (id, email, plan) SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, 20) g").await;
    for i in 21..=INSERTS {
        db.exec(&format!("INSERT INTO users (id, email) VALUES ({i}, 'u{i}@x.io')")).await;
    }
    db.exec("UPDATE users SET password_hash = 'x' WHERE id = 1").await;
    assert!(wait_for_customers(&emulator, |c| c.len() == INSERTS as usize).await);
    let before_truncate = db.current_lsn().await;
    db.exec("TRUNCATE users").await;

    let url = daemon.url("/metrics");
    let (settled, text) = wait_for_metrics(&url, |text| {
        value(text, "ciosync_changes_skipped_total{reason=\"truncate\"}") == Some(1.0)
            && value(text, "ciosync_pending_operations") == Some(0.0)
            && value(text, "ciosync_last_acked_lsn_bytes") >= Some(before_truncate as f64)
    })
    .await;
    assert!(settled, "the counters never settled:\n{text}");
    let (status, _) = get(&url).await;
    assert_eq!(status, 200);

    let batches = emulator.requests().iter().filter(|r| r.path == "/api/v2/batch").count();
    let expected = [
        (
            r#"ciosync_changes_received_total{table="public.users",operation="insert"}"#,
            INSERTS as f64,
        ),
        (r#"ciosync_changes_received_total{table="public.users",operation="update"}"#, 1.0),
        (r#"ciosync_changes_received_total{table="public.users",operation="delete"}"#, 0.0),
        ("ciosync_changes_skipped_total{reason=\"no_change\"}", 1.0),
        ("ciosync_changes_skipped_total{reason=\"invalid_id\"}", 0.0),
        ("ciosync_operations_completed_total{outcome=\"accepted\"}", INSERTS as f64),
        ("ciosync_operations_completed_total{outcome=\"dead_lettered\"}", 0.0),
        (
            "ciosync_customerio_requests_total{endpoint=\"batch\",status_class=\"2xx\"}",
            batches as f64,
        ),
        ("ciosync_customerio_requests_total{endpoint=\"batch\",status_class=\"5xx\"}", 0.0),
        ("ciosync_customerio_request_duration_seconds_count", batches as f64),
        ("ciosync_customerio_request_items_sum", INSERTS as f64),
        ("ciosync_customerio_retries_total", 0.0),
        ("ciosync_customerio_rate_limited_total", 0.0),
        ("ciosync_replication_undecodable_messages_total", 0.0),
        ("ciosync_postgres_reconnects_total", 0.0),
        ("ciosync_pending_operations", 0.0),
        ("ciosync_pending_bytes", 0.0),
        ("ciosync_pipeline_phase{phase=\"streaming\"}", 1.0),
        ("ciosync_pipeline_phase{phase=\"connecting\"}", 0.0),
        ("ciosync_ready", 1.0),
        ("ciosync_replication_lag_seconds", 0.0),
    ];
    for (series, want) in expected {
        assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
    }
    // One transaction per INSERT statement, the UPDATE and the TRUNCATE.
    let acked = value(&text, "ciosync_transactions_acked_total").unwrap();
    assert!(acked >= 1.0 + (INSERTS - 20) as f64 + 2.0, "transactions acked: {acked}");
    assert!(value(&text, "ciosync_pending_peak_bytes").unwrap() > 0.0);

    // The LSN gauges: the last acknowledgement is where the slot is (or
    // ahead, until the next status update), and nothing beyond what came in.
    let acked_lsn = value(&text, "ciosync_last_acked_lsn_bytes").unwrap();
    let received_lsn = value(&text, "ciosync_last_received_lsn_bytes").unwrap();
    assert!(acked_lsn > before_truncate as f64 && received_lsn >= acked_lsn, "{text}");
    assert!(db.wait_for_confirmed(&db.name, acked_lsn as u64).await);

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let last_delivery = value(&text, "ciosync_last_delivery_timestamp_seconds").unwrap();
    assert!((now - 60.0..=now + 1.0).contains(&last_delivery), "{last_delivery} vs {now}");
    assert!(value(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(text.contains("ciosync_build_info{version=\""), "{text}");

    assert!(!text.contains("@x.io"), "customer data leaked:\n{text}");
    daemon.stop().await.unwrap();
}
