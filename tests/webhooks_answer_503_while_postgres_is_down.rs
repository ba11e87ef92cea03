//! While Postgres is down the webhook receiver answers 503 (so Customer.io
//! retries) and its `/readyz` 503; once Postgres is back the same delivery
//! is stored and answered 200.

use ciosync::telemetry::Counters;
use ciosync::webhooks::Rejection;
use ciosync_testkit::throwaway::ThrowawayPostgres;
use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator;
use crate::support::endpoint::{get, wait_for_status};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::webhooks::{event, section, Delivery, PATH};

// Multi-threaded: stopping Postgres blocks this thread, and the receiver
// must keep answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_answer_503_while_postgres_is_down() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start).await.unwrap().unwrap();
    let db = TestDb::on(&pg, "webhooks_pg_down").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start_with_webhooks(&db.config(&emulator.url(), &section("")));
    let url = daemon.webhook_url(PATH);
    let readyz = daemon.webhook_url("/readyz");
    assert!(wait_for_status(&readyz, 200).await, "the receiver never got ready");
    let first = Delivery::of(&event("01HXDOWN000000000000000001", "email", "sent", json!({})));
    assert_eq!(first.send(&url).await.0, 200);

    tokio::task::block_in_place(|| pg.stop("fast").unwrap());
    let later = Delivery::of(&event(
        "01HXDOWN000000000000000002",
        "email",
        "delivered",
        json!({"identifiers": {"id": "9"}}),
    ));
    let (status, answer) = later.send(&url).await;
    assert_eq!(status, 503, "{answer}");
    assert!(wait_for_status(&readyz, 503).await, "still ready without Postgres");
    let (_, reason) = get(&readyz).await;
    // The listener faces the internet: a reason code, no Postgres error text.
    assert_eq!(reason, "not ready: database_unavailable\n");
    assert_eq!(get(&daemon.webhook_url("/healthz")).await, (200, "ok\n".to_owned()));
    assert!(daemon.counters.webhooks.rejected_count(Rejection::Database) >= 1);

    tokio::task::block_in_place(|| pg.restart().unwrap());
    assert!(wait_for_status(&readyz, 200).await, "never ready after the restart");
    // Customer.io retries the very same request (timestamp and signature).
    let (status, answer) = later.send(&url).await;
    assert_eq!(status, 200, "{answer}");
    let client = crate::support::postgres::connect(&db.url).await;
    let ids: Vec<String> = client
        .query("SELECT event_id FROM ciosync.message_events ORDER BY event_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, ["01HXDOWN000000000000000001", "01HXDOWN000000000000000002"]);
    assert_eq!(Counters::get(&daemon.counters.webhooks.stored), 2);

    daemon.stop().await.unwrap();
}
