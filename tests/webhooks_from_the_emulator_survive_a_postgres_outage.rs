//! End to end: the emulator, playing Customer.io, sends signed reporting
//! webhooks to ciosync's receiver; while Postgres is down the receiver
//! answers 503, the emulator retries (holding the next one back, as
//! Customer.io does), and once Postgres is back both are stored, in order,
//! each once.

use ciosync::secret::Secret;
use ciosync_emulator::{Emulator, EmulatorConfig, WebhookRequest, WebhookRetry, WebhookStatus};
use ciosync_testkit::throwaway::ThrowawayPostgres;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for};
use crate::support::endpoint::wait_for_status;
use crate::support::postgres::{connect, TestDb, USERS_TABLE};
use crate::support::webhooks::{section, PATH, SIGNING_KEY};

// Multi-threaded: stopping Postgres blocks this thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_retries_until_the_receiver_stores_each_webhook_once() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start).await.unwrap().unwrap();
    let db = TestDb::on(&pg, "webhooks_e2e").await;
    db.exec(USERS_TABLE).await;
    let track = emulator::start().await;
    let daemon = InProcess::start_with_webhooks(&db.config(&track.url(), &section("")));
    assert!(wait_for_status(&daemon.webhook_url("/readyz"), 200).await);

    // A second emulator plays Customer.io's reporting side, pointed at the receiver.
    let config = EmulatorConfig {
        webhook_url: Some(daemon.webhook_url(PATH)),
        webhook_signing_key: Some(Secret::new(SIGNING_KEY)),
        webhook_retry: WebhookRetry {
            initial_backoff_ms: 100,
            max_backoff_ms: 500,
            max_attempts: 0,
            give_up_after_ms: 60_000,
        },
        ..EmulatorConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reporting = Emulator::start(listener, config).await.unwrap();

    tokio::task::block_in_place(|| pg.stop("fast").unwrap());
    let bounced = reporting
        .send_webhook(WebhookRequest::new("email", "bounced").for_customer("7"))
        .expect("queued");
    let unsubscribed = reporting
        .send_webhook(WebhookRequest::new("customer", "unsubscribed").for_customer("7"))
        .expect("queued");
    // Refused while Postgres is down, and the second waits behind the first.
    assert!(
        wait_for(&reporting, |e| e
            .webhooks()
            .iter()
            .any(|w| w.event_id == bounced.event_id && w.status == WebhookStatus::Retrying))
        .await
    );
    assert!(reporting
        .webhooks()
        .iter()
        .any(|w| w.event_id == unsubscribed.event_id && w.status == WebhookStatus::Queued));

    tokio::task::block_in_place(|| pg.restart().unwrap());
    assert!(
        wait_for(&reporting, |e| e.webhooks().iter().all(|w| w.status == WebhookStatus::Delivered))
            .await,
        "{:?}",
        reporting.webhooks()
    );
    let client = connect(&db.url).await;
    let rows: Vec<(String, String, Option<String>)> = client
        .query(
            "SELECT event_id, metric, customer_id FROM ciosync.message_events ORDER BY received_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        [
            (bounced.event_id.clone(), "bounced".to_owned(), Some("7".to_owned())),
            (unsubscribed.event_id.clone(), "unsubscribed".to_owned(), Some("7".to_owned())),
        ]
    );
    daemon.stop().await.unwrap();
}
