//! Customer.io answering 500 and then 429 (with Retry-After) for a while:
//! nothing is acknowledged meanwhile, and after recovery every change has
//! arrived, in commit order per customer (changes that waited together
//! merged into one call).

use std::time::Duration;

use ciosync_emulator::Faults;
use serde_json::json;

use crate::support::emulator::{identifies_of, wait_for_customers};
use crate::support::Scenario;

#[tokio::test]
async fn outage_of_500s_and_429s_loses_nothing_and_keeps_order() {
    let Scenario { db, emulator, daemon } = Scenario::start("cio_outage").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'p0')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    let lsn_before = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, lsn_before).await);

    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    // At or past the end of the first outage transaction.
    let first_end = db.exec_then_lsn("UPDATE users SET plan = 'p1' WHERE id = 1").await;
    db.exec("INSERT INTO users (id, email) VALUES (101, 'u1@x.io')").await;
    for i in 2..=5 {
        db.exec(&format!("UPDATE users SET plan = 'p{i}' WHERE id = 1")).await;
        db.exec(&format!("INSERT INTO users (id, email) VALUES ({}, 'u{i}@x.io')", 100 + i)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let confirmed = db.confirmed_flush(&db.name).await;
    emulator.set_faults(Faults {
        rate_limit_rate: 1.0,
        retry_after_secs: Some(1),
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still_confirmed = db.confirmed_flush(&db.name).await;
    assert!(emulator.customer("101").is_none(), "nothing got through the outage");
    assert!(daemon.counters.requests_retried.load(std::sync::atomic::Ordering::Relaxed) >= 2);

    emulator.set_faults(Faults::default());
    assert!(
        wait_for_customers(&emulator, |c| (101..=105).all(|i| c.contains_key(&i.to_string()))
            && c["1"].get("plan") == Some(&json!("p5")))
        .await,
        "not everything arrived after recovery"
    );
    let plans: Vec<_> =
        identifies_of(&emulator, "1").iter().filter_map(|a| a.get("plan").cloned()).collect();
    // Changes that waited together were merged into one call; those sent
    // arrived in commit order, ending with the last.
    let numbers: Vec<u32> = plans
        .iter()
        .map(|p| p.as_str().and_then(|p| p.strip_prefix('p')).unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "commit order kept: {numbers:?}");
    assert_eq!(numbers.first(), Some(&0));
    assert_eq!(numbers.last(), Some(&5));
    // Nothing written during the outage was acknowledged during it.
    assert!(confirmed < first_end && still_confirmed < first_end, "acked during the outage");
    let end = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, end).await);
    daemon.stop().await.unwrap();
}
