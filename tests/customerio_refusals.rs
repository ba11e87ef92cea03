//! Customer.io's refusals: a 401 keeps the daemon up but not ready, retrying
//! and acknowledging nothing, with a metric to alert on; a 4xx for one
//! customer dead-letters only that customer's change, and the stream goes on.

use std::sync::atomic::Ordering;

use ciosync::pipeline::RunError;
use ciosync::sink::SinkError;
use ciosync_emulator::Faults;

use crate::support::daemon::API_KEY;
use crate::support::emulator::wait_for_customers;
use crate::support::endpoint::{get, value, wait_for_metrics, wait_for_status};
use crate::support::postgres::USERS_TABLE;
use crate::support::{eventually, Scenario};

#[tokio::test]
async fn refused_credentials_keep_the_daemon_up_unready_and_unacknowledged() {
    let Scenario { db, emulator, daemon } = Scenario::start("unauthorized").await;
    // Customer.io refuses the key (revoked, then re-enabled in the workspace).
    emulator.set_faults(Faults { fail_next: u32::MAX, fail_status: 401, ..Faults::default() });
    let inserted = db.exec_then_lsn("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;

    let (seen, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_customerio_unauthorized") == Some(1.0)
    })
    .await;
    assert!(seen, "the refusal shows as a metric:\n{text}");
    let (status, reason) = get(&daemon.url("/readyz")).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("HTTP 401") && reason.contains("customerio.api_key"), "{reason}");
    // The slot is active (an active slot cannot be peeked): its position says it.
    assert!(db.confirmed_flush(&db.name).await < inserted, "the refused insert was acknowledged");
    assert!(emulator.customer("1").is_none());

    // Accepted again: the change is delivered, the gauge and /readyz recover.
    emulator.set_faults(Faults::default());
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    let (seen, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_customerio_unauthorized") == Some(0.0)
    })
    .await;
    assert!(seen, "{text}");
    assert!(wait_for_status(&daemon.url("/readyz"), 200).await);
    daemon.stop().await.expect("a clean stop");
    assert_eq!(db.pending_in_slot().await, 0, "delivered and acknowledged");
}

#[tokio::test]
async fn a_wrong_api_key_is_named_without_being_shown() {
    let message = SinkError::Unauthorized.to_string();
    assert!(
        message.contains("refused the credentials") && message.contains("customerio.api_key"),
        "{message}"
    );
    let Scenario { db, emulator: _emulator, daemon } =
        Scenario::start_with("wrong_key", USERS_TABLE, |c| c.replace(API_KEY, "wrong-key")).await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    let (seen, text) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, "ciosync_customerio_unauthorized") == Some(1.0)
    })
    .await;
    assert!(seen, "{text}");
    assert!(!text.contains("wrong-key"));
    let (_, reason) = get(&daemon.url("/readyz")).await;
    assert!(!reason.contains("wrong-key"), "{reason}");
    daemon.stop().await.expect("a clean stop");
    assert!(db.pending_in_slot().await > 0, "nothing was acknowledged");
}

#[tokio::test]
async fn a_400_for_one_customer_skips_only_that_change() {
    a_refusal_for_one_customer_skips_only_that_change(400).await;
}

#[tokio::test]
async fn a_413_for_one_customer_skips_only_that_change() {
    a_refusal_for_one_customer_skips_only_that_change(413).await;
}

#[tokio::test]
async fn a_422_for_one_customer_skips_only_that_change() {
    a_refusal_for_one_customer_skips_only_that_change(422).await;
}

async fn a_refusal_for_one_customer_skips_only_that_change(status: u16) {
    // Linger long enough for the two rows of the first insert to share a batch.
    let Scenario { db, emulator, daemon } =
        Scenario::start_with(&format!("one_{status}"), USERS_TABLE, |c| {
            c.replace("linger_ms = 0", "linger_ms = 300")
        })
        .await;

    // The batch of two is refused; sent one by one, the first is refused
    // again and dead-lettered, the second accepted.
    emulator.set_faults(Faults { fail_next: 2, fail_status: status, ..Faults::default() });
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')").await;
    db.exec("INSERT INTO users (id, email) VALUES (3, 'c@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("2") && c.contains_key("3")).await);
    assert!(emulator.customer("1").is_none());
    // Stored once the batch it came in completes.
    assert!(eventually(|| daemon.counters.ops_dead_lettered.load(Ordering::Relaxed) == 1).await);
    let letter = db
        .client
        .query_one("SELECT customer_id, operation, status, attempts FROM ciosync.dead_letters", &[])
        .await
        .expect("one dead letter");
    assert_eq!(letter.get::<_, String>(0), "1");
    assert_eq!(letter.get::<_, String>(1), "identify");
    assert_eq!(letter.get::<_, i32>(2), i32::from(status));
    assert_eq!(letter.get::<_, i32>(3), 1);
    let end = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, end).await, "the stream went on and was acknowledged");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_redirect_stops_the_daemon_naming_the_region() {
    let Scenario { db, emulator, daemon } = Scenario::start("redirected").await;
    emulator.set_faults(Faults { fail_next: 1, fail_status: 307, ..Faults::default() });
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;

    let outcome = tokio::time::timeout(crate::support::CONVERGE, daemon.join())
        .await
        .expect("the daemon stops by itself");
    let error = outcome.unwrap_err();
    assert!(matches!(error, RunError::Sink(SinkError::Redirected { status: 307 })), "{error:?}");
    assert!(ciosync::error::error_chain(&error).contains("customerio.region"));
    assert!(db.pending_in_slot().await > 0, "the redirected insert was acknowledged");
}

#[tokio::test]
async fn a_refusal_no_operation_caused_stops_the_daemon_and_skips_nothing() {
    let Scenario { db, emulator, daemon } = Scenario::start("refused_404").await;
    emulator.set_faults(Faults { fail_next: 1, fail_status: 404, ..Faults::default() });
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;

    let counters = daemon.counters.clone();
    let outcome = tokio::time::timeout(crate::support::CONVERGE, daemon.join())
        .await
        .expect("the daemon stops by itself");
    let error = outcome.unwrap_err();
    assert!(matches!(error, RunError::Sink(SinkError::Refused { status: 404, .. })), "{error:?}");
    assert_eq!(counters.ops_dead_lettered.load(Ordering::Relaxed), 0, "an operation was skipped");
    assert!(db.pending_in_slot().await > 0, "the refused insert was acknowledged");
}
