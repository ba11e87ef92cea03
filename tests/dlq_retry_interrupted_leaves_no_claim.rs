//! `dlq retry` interrupted (Ctrl-C) after Customer.io applied a replayed
//! delete, before the command heard back: the letter is kept, and the
//! record of what Customer.io accepted claims nothing for the customer
//! Customer.io deleted (the command forgets before it sends), so a row
//! inserted again with the same values is identified whole.

use ciosync_emulator::Faults;

use crate::support::daemon::{config_file, interrupt_when};
use crate::support::emulator::{applied_then_wait, wait_for_customers};
use crate::support::postgres::TestDb;
use crate::support::Scenario;

async fn letters(db: &TestDb) -> i64 {
    db.client.query_one("SELECT count(*) FROM ciosync.dead_letters", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn dlq_retry_interrupted_after_customerio_applied_leaves_no_claim() {
    let Scenario { db, emulator, daemon } = Scenario::start("dlq_retry_ctrl_c").await;
    db.exec("INSERT INTO users (id, email) VALUES (9, 'u9@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("9")).await);

    // The delete is refused: a dead letter, and the record still holds 9.
    emulator.set_faults(Faults { reject_ids: vec!["9".into()], ..Faults::default() });
    let lsn = db.exec_then_lsn("DELETE FROM users WHERE id = 9").await;
    assert!(db.wait_for_confirmed(&db.name, lsn).await);
    emulator.set_faults(Faults::default());
    assert_eq!(letters(&db).await, 1, "the delete was dead-lettered");
    assert!(db.recorded_customers().await.contains("9"));

    let config = config_file(&db.config(&emulator.url(), ""));
    emulator.set_faults(applied_then_wait());
    let applied = wait_for_customers(&emulator, |c| !c.contains_key("9"));
    let status = interrupt_when(&["dlq", "retry", "--all"], config.path(), applied).await;
    assert!(!status.success(), "{status:?}");
    emulator.set_faults(Faults::default());
    assert_eq!(letters(&db).await, 1, "interrupted: the letter is kept");
    assert!(
        !db.recorded_customers().await.contains("9"),
        "the record claims values for a customer Customer.io deleted"
    );

    db.exec("INSERT INTO users (id, email) VALUES (9, 'u9@x.io')").await;
    assert!(
        wait_for_customers(&emulator, |c| c.contains_key("9")).await,
        "the row is back, the person is not"
    );
    daemon.stop().await.unwrap();
}
