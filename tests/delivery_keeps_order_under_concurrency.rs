//! Several batches in flight, random 500s and retries: every customer's
//! changes still arrive in commit order, the last value wins, and the slot
//! is acknowledged to the end.

use std::collections::BTreeMap;

use ciosync_emulator::Faults;
use serde_json::Value;

use crate::support::emulator::identifies_of;
use crate::support::postgres::USERS_TABLE;
use crate::support::{customers_match_rows, Scenario};

const CUSTOMERS: i64 = 40;
const ROUNDS: i64 = 15;

#[tokio::test]
async fn order_per_customer_survives_concurrency_and_retries() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("order_concurrency", USERS_TABLE, |c| {
            c.replace("linger_ms = 0", "linger_ms = 5\nmax_in_flight = 4\nmax_batch_ops = 10")
        })
        .await;
    // Each request takes 50 ms, and a quarter fail: batches overlap and are retried.
    emulator.set_faults(Faults { error_rate: 0.25, latency_ms: 50, ..Faults::default() });
    db.exec(&format!(
        "INSERT INTO users (id, email, plan) SELECT g, 'u' || g || '@x.io', 'r0' FROM generate_series(1, {CUSTOMERS}) g"
    ))
    .await;
    for round in 1..=ROUNDS {
        // Each round is one transaction touching every customer, in a shuffled order.
        db.exec(&format!(
            "BEGIN; UPDATE users SET plan = 'r{round}' WHERE id IN \
             (SELECT g FROM generate_series(1, {CUSTOMERS}) g ORDER BY random()); COMMIT;"
        ))
        .await;
    }
    let end = db.current_lsn().await;
    assert!(customers_match_rows(&db, &emulator).await, "the last value of every row arrived");
    emulator.set_faults(Faults::default());

    for id in 1..=CUSTOMERS {
        let rounds: Vec<i64> = identifies_of(&emulator, &id.to_string())
            .iter()
            .filter_map(|a| a.get("plan").and_then(Value::as_str).map(str::to_owned))
            .map(|p| p.trim_start_matches('r').parse().unwrap())
            .collect();
        // Retries may repeat a value (at least once), never go back.
        assert!(rounds.windows(2).all(|w| w[0] <= w[1]), "customer {id} out of order: {rounds:?}");
        assert_eq!(rounds.last(), Some(&ROUNDS));
    }
    // Batches overlapped: with 50 ms per answer, one at a time would leave
    // at least 50 ms between two arrivals.
    let arrivals: Vec<i64> = emulator.requests().iter().map(|r| r.received_at_ms).collect();
    let mut gaps: BTreeMap<bool, usize> = BTreeMap::new();
    for w in arrivals.windows(2) {
        *gaps.entry(w[1] - w[0] < 45).or_default() += 1;
    }
    assert!(gaps.get(&true).copied().unwrap_or(0) > 0, "never two requests in flight: {gaps:?}");
    assert!(db.wait_for_confirmed(&db.name, end).await, "acknowledged to the end");
    daemon.stop().await.unwrap();
}
