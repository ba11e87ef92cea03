//! End to end: a change Customer.io refuses for good is dead-lettered by the
//! running daemon (names, not values), the stream goes on, and `dlq retry`
//! delivers it once the cause is gone, with the row's current values.

use ciosync_emulator::Faults;

use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{assert_no_secrets, rows, texts};
use crate::support::emulator::{wait_for_attribute, wait_for_customers};
use crate::support::Scenario;

#[tokio::test]
async fn a_dead_lettered_change_is_delivered_by_dlq_retry() {
    let Scenario { db, emulator, daemon } = Scenario::start("dlq_end_to_end").await;
    emulator.set_faults(Faults { fail_next: 1, fail_status: 400, ..Faults::default() });
    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'pro')").await;
    // Customer 1's request is refused and dead-lettered before customer 2
    // is written (two customers' requests may go in either order).
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while rows(&db).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter was stored");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    db.exec("INSERT INTO users (id, email) VALUES (2, 'b@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("2")).await, "the stream went on");
    assert!(emulator.customer("1").is_none());
    let (names, operation): (Vec<String>, String) = {
        let row = db
            .client
            .query_one("SELECT attributes, operation FROM ciosync.dead_letters", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (names, operation.as_str()),
        // An insert sends its NULL columns as null too (for the record).
        (
            ["about", "created_at", "email", "first_name", "plan"].map(String::from).to_vec(),
            "identify"
        )
    );
    let letter = &rows(&db).await[0];
    assert_eq!((letter.customer_id.as_str(), letter.status), ("1", 400));

    let config = config_file(&db.config(&emulator.url(), ""));
    let out = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "retried 1: delivered 0, refreshed from the row 1, skipped 0, refused again 0\n"
    );
    assert_no_secrets(&out, &[]);
    assert!(wait_for_attribute(&emulator, "1", "plan", "pro".into()).await);
    assert_eq!(emulator.customer("1").unwrap()["email"], "a@x.io");
    assert!(rows(&db).await.is_empty());
    daemon.stop().await.unwrap();
}
