//! A Customer.io that accepts the connection but does not answer: each
//! request ends at `customerio.request_timeout_secs`, counts as `no_answer`,
//! and is retried; nothing is acknowledged meanwhile, and once answers come
//! back the change is delivered.

use ciosync_emulator::Faults;
use serde_json::json;

use crate::support::emulator::wait_for_attribute;
use crate::support::endpoint::{get, value, wait_for_metrics};
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

#[tokio::test]
async fn hanging_requests_time_out_and_are_retried() {
    let Scenario { db, emulator, daemon } = Scenario::start_with("hangs", USERS_TABLE, |c| {
        c.replacen(
            "retry_max_backoff_secs = 1\n",
            "retry_max_backoff_secs = 1\nrequest_timeout_secs = 1\n",
            1,
        )
    })
    .await;
    emulator.set_faults(Faults { latency_ms: 5_000, ..Faults::default() });
    let inserted = db.exec_then_lsn("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    let series = "ciosync_customerio_requests_total{endpoint=\"batch\",status_class=\"no_answer\"}";
    let (seen, text) =
        wait_for_metrics(&daemon.url("/metrics"), |t| value(t, series).is_some_and(|n| n >= 2.0))
            .await;
    assert!(seen, "requests did not time out and retry:\n{text}");
    assert!(db.confirmed_flush(&db.name).await < inserted, "acknowledged while undelivered");

    emulator.set_faults(Faults::default());
    assert!(wait_for_attribute(&emulator, "1", "email", json!("a@x.io")).await);
    let (_, text) = get(&daemon.url("/metrics")).await;
    assert!(value(&text, "ciosync_customerio_retries_total").is_some_and(|n| n >= 2.0), "{text}");
    daemon.stop().await.unwrap();
    assert_eq!(db.pending_in_slot().await, 0, "delivered and acknowledged");
}
