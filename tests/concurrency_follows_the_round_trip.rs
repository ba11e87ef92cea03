//! The requests in flight follow Customer.io's round trip: at 150 ms the
//! limit grows past its start of 4 (the default budget needs about 15),
//! never past `max_in_flight`, and halves when Customer.io answers 429.

use ciosync_emulator::Faults;

use crate::support::emulator::{wait_for, wait_for_customers};
use crate::support::endpoint::{get, value, wait_for_metrics};
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

const LIMIT: &str = "ciosync_customerio_concurrency_limit";

#[tokio::test]
async fn the_limit_grows_with_a_slow_round_trip_and_halves_on_429() {
    let Scenario { db, emulator, daemon } = Scenario::start_with("concurrency", USERS_TABLE, |c| {
        c.replace("linger_ms = 0", "linger_ms = 0\nmax_batch_ops = 10\nmax_in_flight = 24")
    })
    .await;
    let (_, metrics) = get(&daemon.url("/metrics")).await;
    assert_eq!(value(&metrics, LIMIT), Some(4.0), "{metrics}");

    emulator.set_faults(Faults { latency_ms: 150, ..Faults::default() });
    db.exec(
        "INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 3000) g",
    )
    .await;
    let (grew, metrics) =
        wait_for_metrics(&daemon.url("/metrics"), |m| value(m, LIMIT).is_some_and(|l| l >= 10.0))
            .await;
    assert!(grew, "the limit stayed low at a 150 ms round trip: {metrics}");
    assert!(wait_for_customers(&emulator, |c| c.len() == 3000).await, "not all delivered");
    let (_, metrics) = get(&daemon.url("/metrics")).await;
    let grown = value(&metrics, LIMIT).unwrap();
    assert!(grown <= 24.0, "over max_in_flight: {grown}");

    // Every request answered 429 for a while: the limit halves (at least once).
    emulator.set_faults(Faults {
        rate_limit_rate: 1.0,
        retry_after_secs: Some(1),
        ..Faults::default()
    });
    db.exec("UPDATE users SET plan = 'pro' WHERE id <= 200").await;
    let limited = |e: &ciosync_emulator::Emulator| e.requests().iter().any(|r| r.status == 429);
    assert!(wait_for(&emulator, limited).await, "no 429 answered");
    let (shrank, metrics) = wait_for_metrics(&daemon.url("/metrics"), |m| {
        value(m, LIMIT).is_some_and(|l| l <= grown / 2.0)
    })
    .await;
    assert!(shrank, "the limit did not halve on 429s (was {grown}): {metrics}");
    emulator.set_faults(Faults::default());
    assert!(
        wait_for_customers(&emulator, |c| c.values().filter(|p| p.get("plan").is_some()).count()
            == 200)
        .await
    );
    daemon.stop().await.unwrap();
}
