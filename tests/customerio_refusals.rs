//! Customer.io's definite refusals: a 401 stops the daemon with a message
//! about the credentials and acknowledges nothing; a 4xx for one customer
//! dead-letters only that customer's change, and the stream goes on.

use std::sync::atomic::Ordering;

use ciosync::emulator::Faults;
use ciosync::pipeline::RunError;
use ciosync::sink::SinkError;

use crate::support::daemon::API_KEY;
use crate::support::emulator::wait_for_customers;
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

#[tokio::test]
async fn refused_credentials_stop_the_daemon_without_acknowledging() {
    let Scenario { db, emulator: _emulator, daemon } =
        Scenario::start_with("unauthorized", USERS_TABLE, |c| c.replace(API_KEY, "wrong-key"))
            .await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;

    let outcome = tokio::time::timeout(crate::support::CONVERGE, daemon.join())
        .await
        .expect("the daemon stops by itself");
    let error = outcome.unwrap_err();
    assert!(matches!(error, RunError::Sink(SinkError::Unauthorized)), "{error:?}");
    let message = ciosync::pipeline::error_chain(&error);
    assert!(
        message.contains("refused the credentials") && message.contains("customerio.api_key"),
        "{message}"
    );
    assert!(!message.contains("wrong-key"));
    assert!(db.pending_in_slot().await > 0, "the refused insert was acknowledged");
}

#[tokio::test]
async fn a_4xx_for_one_customer_skips_only_that_change() {
    // Linger long enough for the two rows of the first insert to share a batch.
    let Scenario { db, emulator, daemon } = Scenario::start_with("one_4xx", USERS_TABLE, |c| {
        c.replace("linger_ms = 0", "linger_ms = 300")
    })
    .await;

    // The batch of two is refused (400); sent one by one, the first is
    // refused again and dead-lettered, the second accepted.
    emulator.set_faults(Faults { fail_next: 2, fail_status: 400, ..Faults::default() });
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')").await;
    db.exec("INSERT INTO users (id, email) VALUES (3, 'c@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("2") && c.contains_key("3")).await);
    assert!(emulator.customer("1").is_none());
    assert_eq!(daemon.counters.ops_rejected.load(Ordering::Relaxed), 1);
    assert_eq!(daemon.counters.ops_dead_lettered.load(Ordering::Relaxed), 1);
    let letter = db
        .client
        .query_one("SELECT customer_id, operation, status, attempts FROM ciosync.dead_letters", &[])
        .await
        .expect("one dead letter");
    assert_eq!(letter.get::<_, String>(0), "1");
    assert_eq!(letter.get::<_, String>(1), "identify");
    assert_eq!(letter.get::<_, i32>(2), 400);
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
    assert!(ciosync::pipeline::error_chain(&error).contains("customerio.region"));
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
    assert_eq!(counters.ops_rejected.load(Ordering::Relaxed), 0, "an operation was skipped");
    assert!(db.pending_in_slot().await > 0, "the refused insert was acknowledged");
}
