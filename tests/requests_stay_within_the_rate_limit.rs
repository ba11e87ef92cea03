//! Requests to Customer.io stay within `max_requests_per_second`. Checked as
//! a lower bound on when the emulator received them (a limit can only make
//! them later), so a slow machine cannot make this fail.

use crate::support::emulator::wait_for_customers;
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

#[tokio::test]
async fn requests_are_spread_to_the_configured_rate() {
    let Scenario { db, emulator, daemon } = Scenario::start_with("rate_limit", USERS_TABLE, |c| {
        c.replace(
            "retry_max_backoff_secs = 1",
            "retry_max_backoff_secs = 1\nmax_requests_per_second = 5\nmax_batch_ops = 1",
        )
    })
    .await;
    // Eleven customers, one operation per request: eleven requests, four in
    // flight at a time, all within the budget.
    db.exec(
        "INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 11) g",
    )
    .await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 11).await);

    let times: Vec<i64> = emulator
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v2/batch")
        .map(|r| r.received_at_ms)
        .collect();
    assert_eq!(times.len(), 11);
    // A burst of 5, then one every 200 ms: the last comes at least 1.2 s after the first.
    let span = times.last().unwrap() - times.first().unwrap();
    assert!(span >= 1150, "11 requests within {span} ms at 5 requests/s");
    daemon.stop().await.unwrap();
}
