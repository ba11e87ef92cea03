//! `deletes gone --send` forgets a page's customers in the record of what
//! Customer.io accepted before it sends their removals: interrupted
//! (Ctrl-C) after Customer.io applied them, it leaves no claim about a
//! customer Customer.io deleted. A removal Customer.io refuses is put back
//! in the record, so the next run finds that customer again.

use ciosync_emulator::Faults;

use crate::support::daemon::{config_file, interrupt_when, run_binary};
use crate::support::dead_letters::texts;
use crate::support::emulator::{applied_then_wait, wait_for_customers};
use crate::support::Scenario;

#[tokio::test]
async fn deletes_gone_interrupted_after_customerio_applied_leaves_no_claim() {
    let Scenario { db, emulator, daemon } = Scenario::start("gone_ctrl_c").await;
    db.exec(
        "INSERT INTO users (id, email) SELECT n, 'u' || n || '@x.io' FROM generate_series(1, 3) n",
    )
    .await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 3).await);
    // Deleted while no daemon runs: the record still holds 2 and 3.
    daemon.stop().await.unwrap();
    db.exec("DELETE FROM users WHERE id IN (2, 3)").await;
    let config = config_file(&db.config(&emulator.url(), ""));

    // Customer.io refuses the removal of 3: put back, found again.
    emulator.set_faults(Faults { reject_ids: vec!["3".into()], ..Faults::default() });
    let out = run_binary(&["deletes", "gone", "--send"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success() && stdout.starts_with("removed 1, refused 1"), "{stdout}{stderr}");
    let recorded = db.recorded_customers().await;
    assert!(!recorded.contains("2") && recorded.contains("3"), "{recorded:?}");

    emulator.set_faults(applied_then_wait());
    let applied = wait_for_customers(&emulator, |c| !c.contains_key("3"));
    let status = interrupt_when(&["deletes", "gone", "--send"], config.path(), applied).await;
    assert!(!status.success(), "{status:?}");
    assert!(
        !db.recorded_customers().await.contains("3"),
        "the record claims values for a customer Customer.io deleted"
    );
}
