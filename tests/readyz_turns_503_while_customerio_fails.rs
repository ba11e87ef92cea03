//! While Customer.io answers every request with a 500, changes wait with
//! none delivered: `/readyz` turns 503 after `metrics.stall_timeout_secs`
//! and back to 200 once deliveries resume.

use ciosync_emulator::Faults;

use crate::support::emulator::wait_for_customers;
use crate::support::endpoint::{get, value, wait_for_status};
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

#[tokio::test]
async fn readyz_turns_503_while_customerio_fails() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("readyz_cio", USERS_TABLE, |config| {
            config.replace("stall_timeout_secs = 120", "stall_timeout_secs = 1")
        })
        .await;
    let readyz = daemon.url("/readyz");
    assert!(wait_for_status(&readyz, 200).await, "never ready");

    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    assert!(wait_for_status(&readyz, 503).await, "still ready while nothing is delivered");
    let (_, body) = get(&readyz).await;
    assert!(body.starts_with("not ready: stalled: operations have waited"), "{body}");
    let (_, metrics) = get(&daemon.url("/metrics")).await;
    assert_eq!(value(&metrics, "ciosync_ready"), Some(0.0), "{metrics}");
    assert_eq!(value(&metrics, "ciosync_pending_operations"), Some(1.0), "{metrics}");
    assert!(value(&metrics, "ciosync_customerio_retries_total").unwrap() >= 1.0, "{metrics}");

    emulator.set_faults(Faults::default());
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    assert!(wait_for_status(&readyz, 200).await, "not ready again after recovery");
    daemon.stop().await.unwrap();
}
