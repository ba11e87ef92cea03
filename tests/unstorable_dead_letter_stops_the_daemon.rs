//! A refused operation that cannot be stored as a dead letter (here a
//! constraint the table refuses it by) stops the daemon with a message
//! naming the table, and nothing of it is acknowledged: no change is lost
//! even on this path.

use ciosync::emulator::Faults;
use ciosync::pipeline::RunError;
use ciosync::sink::SinkError;

use crate::support::Scenario;

#[tokio::test]
async fn a_dead_letter_that_cannot_be_stored_stops_the_daemon_unacknowledged() {
    let Scenario { db, emulator, daemon } = Scenario::start("dlq_unstorable_stops").await;
    // The initial copy created the ciosync schema; make the table refuse customer 1.
    db.exec(
        "ALTER TABLE ciosync.dead_letters ADD CONSTRAINT refuse_one CHECK (customer_id <> '1')",
    )
    .await;
    emulator.set_faults(Faults { reject_ids: vec!["1".into()], ..Faults::default() });
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;

    let outcome = tokio::time::timeout(crate::support::CONVERGE, daemon.join())
        .await
        .expect("the daemon stops by itself");
    let error = outcome.unwrap_err();
    assert!(matches!(error, RunError::Sink(SinkError::DeadLetters(_))), "{error:?}");
    let message = ciosync::pipeline::error_chain(&error);
    assert!(
        message.contains("ciosync.dead_letters") && message.contains("SQLSTATE 23514"),
        "{message}"
    );
    assert!(!message.contains("a@x.io"), "{message}");
    assert!(db.pending_in_slot().await > 0, "the refused insert was acknowledged");
}
