//! A burst of 429s with `Retry-After`: the sender pauses for it (no request
//! arrives meanwhile), slows down, and nothing is lost.

use std::sync::atomic::Ordering;

use ciosync_emulator::Faults;

use crate::support::emulator::wait_for_customers;
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

#[tokio::test]
async fn a_429_burst_pauses_the_sender_and_loses_nothing() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("rate_limited", USERS_TABLE, |c| {
            c.replace("linger_ms = 0", "linger_ms = 0\nmax_batch_ops = 5\nmax_in_flight = 4")
        })
        .await;
    emulator.set_faults(Faults {
        fail_next: 3,
        fail_status: 429,
        retry_after_secs: Some(1),
        ..Faults::default()
    });
    db.exec(
        "INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 200) g",
    )
    .await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 200).await, "something was lost");
    assert!(daemon.counters.rate_limited.load(Ordering::Relaxed) >= 1);

    let requests = emulator.requests();
    let first_429 = requests.iter().find(|r| r.status == 429).expect("a 429").received_at_ms;
    // Requests already on the wire when the 429 came back may still arrive
    // just after it; after that, nothing until Retry-After has passed.
    let during_pause = requests
        .iter()
        .filter(|r| r.received_at_ms > first_429 + 150 && r.received_at_ms < first_429 + 900)
        .count();
    assert_eq!(during_pause, 0, "requests sent during the Retry-After pause");
    let end = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, end).await);
    daemon.stop().await.unwrap();
}
