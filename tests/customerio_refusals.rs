//! Customer.io's definite refusals: a 401 stops the daemon with a message
//! about the credentials and acknowledges nothing; a 4xx for one customer
//! skips only that customer's change, and the stream goes on.

use std::sync::atomic::Ordering;

use ciosync::emulator::Faults;
use ciosync::pipeline::RunError;
use ciosync::sink::SinkError;

use crate::support::daemon::{InProcess, API_KEY};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn refused_credentials_stop_the_daemon_without_acknowledging() {
    let db = TestDb::new("unauthorized").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), "").replace(API_KEY, "wrong-key"));
    db.wait_for_streaming().await;
    let before = db.confirmed_flush(&db.name).await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')")
        .await;

    let outcome = tokio::time::timeout(crate::support::CONVERGE, daemon.join())
        .await
        .expect("the daemon stops by itself");
    let error = outcome.unwrap_err();
    assert!(
        matches!(error, RunError::Sink(SinkError::Unauthorized)),
        "{error:?}"
    );
    let message = ciosync::pipeline::error_chain(&error);
    assert!(
        message.contains("refused the credentials") && message.contains("customerio.api_key"),
        "{message}"
    );
    assert!(!message.contains("wrong-key"));
    assert_eq!(
        db.confirmed_flush(&db.name).await,
        before,
        "the refused insert was acknowledged"
    );
}

#[tokio::test]
async fn a_4xx_for_one_customer_skips_only_that_change() {
    let db = TestDb::new("one_4xx").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), ""));
    db.wait_for_streaming().await;

    // The batch of two is refused (400); sent one by one, the first is
    // refused again and skipped, the second accepted.
    emulator.set_faults(Faults {
        fail_next: 2,
        fail_status: 400,
        ..Faults::default()
    });
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')")
        .await;
    db.exec("INSERT INTO users (id, email) VALUES (3, 'c@x.io')")
        .await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("2") && c.contains_key("3")).await);
    assert!(emulator.customer("1").is_none());
    assert_eq!(daemon.counters.ops_rejected.load(Ordering::Relaxed), 1);
    let end = db.current_lsn().await;
    assert!(
        db.wait_for_confirmed(&db.name, end).await,
        "the stream went on and was acknowledged"
    );
    daemon.stop().await.unwrap();
}
