//! A per-item error whose reason is in `customerio.transient_item_errors`
//! is retried, but not for ever: the fifth refusal dead-letters the item
//! (so one poisoned item cannot hold back its customer and the slot), and
//! the stream goes on.

use std::sync::atomic::Ordering;

use ciosync_emulator::Faults;

use crate::support::emulator::wait_for_customers;
use crate::support::{eventually, Scenario};

/// The tries the README promises (`customerio.transient_item_errors`).
const ITEM_ATTEMPTS: u32 = 5;

#[tokio::test]
async fn a_transient_item_error_is_tried_five_times_then_dead_lettered() {
    let Scenario { db, emulator, daemon } = Scenario::start("item_error_cap").await;
    // Exactly as many transient refusals as the cap: a sixth try would pass.
    emulator.set_faults(Faults { item_errors_next: ITEM_ATTEMPTS, ..Faults::default() });
    db.exec("INSERT INTO users (id, email) VALUES (1, 'u1@x.io')").await;
    assert!(eventually(|| daemon.counters.ops_dead_lettered.load(Ordering::Relaxed) == 1).await);

    let tries = emulator
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v2/batch")
        .filter(|r| r.body.as_ref().is_some_and(|b| b.to_string().contains("u1@x.io")))
        .count();
    assert_eq!(tries, ITEM_ATTEMPTS as usize, "tries of the item");
    assert!(emulator.customer("1").is_none(), "the item was never accepted");
    let letter = db
        .client
        .query_one("SELECT status, attempts, error FROM ciosync.dead_letters", &[])
        .await
        .expect("one dead letter");
    assert_eq!(letter.get::<_, i32>(0), 207);
    assert_eq!(letter.get::<_, i32>(1), ITEM_ATTEMPTS as i32);
    assert!(
        letter.get::<_, String>(2).contains("internal_error"),
        "{}",
        letter.get::<_, String>(2)
    );

    // The customer is free again and the stream goes on to the end.
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    let end = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, end).await, "acknowledged to the end");
    daemon.stop().await.unwrap();
}
