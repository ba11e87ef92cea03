//! With `[webhooks]`, `ciosync run` stores each reporting event Customer.io
//! posts exactly once, whatever the retries: a signed event delivered three
//! times is one row (and two duplicates counted), and every metric of every
//! object type in Customer.io's spec is accepted with its fields, while the
//! replication pipeline keeps streaming beside it.

use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::endpoint::{get, value};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::webhooks::{count, event, section, stored, Delivery, PATH};

/// Every (object_type, metric) of the reporting-webhook spec.
const SPEC: [(&str, &[&str]); 8] = [
    ("customer", &["subscribed", "unsubscribed", "cio_subscription_preferences_changed"]),
    (
        "email",
        &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "converted",
            "unsubscribed",
            "bounced",
            "dropped",
            "spammed",
            "failed",
            "undeliverable",
        ],
    ),
    (
        "sms",
        &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "clicked",
            "converted",
            "bounced",
            "failed",
            "undeliverable",
            "replied",
        ],
    ),
    (
        "push",
        &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "converted",
            "bounced",
            "dropped",
            "failed",
            "undeliverable",
        ],
    ),
    (
        "in_app",
        &[
            "drafted",
            "attempted",
            "sent",
            "opened",
            "clicked",
            "converted",
            "failed",
            "undeliverable",
        ],
    ),
    ("slack", &["drafted", "attempted", "sent", "clicked", "failed", "undeliverable"]),
    ("webhook", &["drafted", "attempted", "sent", "clicked", "failed", "undeliverable"]),
    (
        "whatsapp",
        &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "converted",
            "bounced",
            "dropped",
            "failed",
            "undeliverable",
            "replied",
        ],
    ),
];

#[tokio::test]
async fn webhooks_store_each_event_once() {
    let db = TestDb::new("webhooks_once").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start_with_webhooks(&db.config(&emulator.url(), &section("")));
    db.wait_for_streaming().await;
    let url = daemon.webhook_url(PATH);

    // One delivery, retried twice (same body, same signature): one row.
    let opened = event(
        "01HXONCE000000000000000001",
        "email",
        "opened",
        json!({"identifiers": {"id": "42", "email": "a@example.com", "cio_id": "d9c106000001"},
               "delivery_id": "RPILAgABcRhIBqSp7kiPekGBIeVh", "campaign_id": 5, "action_id": 96,
               "journey_id": "01HJOURNEY", "trigger_event_id": "01HTRIGGER"}),
    );
    let delivery = Delivery::of(&opened);
    for attempt in 1..=3 {
        let (status, body) = delivery.send(&url).await;
        assert_eq!(status, 200, "attempt {attempt}: {body}");
    }
    assert_eq!(count(&db).await, 1);
    let webhooks = &daemon.counters.webhooks;
    let stored_now = |n| ciosync::telemetry::Counters::get(&webhooks.stored) == n;
    assert!(stored_now(1));
    assert_eq!(ciosync::telemetry::Counters::get(&webhooks.duplicates), 2);
    let row = &stored(&db).await[0];
    let expected: Vec<Option<&str>> = vec![
        Some("01HXONCE000000000000000001"),
        Some("opened"),
        Some("email"),
        Some("1713484800"),
        Some("42"),
        Some("a@example.com"),
        Some("d9c106000001"),
        Some("RPILAgABcRhIBqSp7kiPekGBIeVh"),
        Some("5"),
        None,
        None,
        None,
        Some("96"),
        Some("01HTRIGGER"),
        None,
        None,
    ];
    assert_eq!(row.iter().map(Option::as_deref).collect::<Vec<_>>(), expected);
    let payload: serde_json::Value = db
        .client
        .query_one("SELECT payload FROM ciosync.message_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload, opened, "the payload is kept whole");

    // Every metric of the spec, each its own event: half identified by
    // `identifiers`, half only by the deprecated `customer_id`, ids as
    // numbers or strings.
    let mut sent = 0;
    for (object_type, metrics) in SPEC {
        for metric in metrics {
            sent += 1;
            let mut data = if sent % 2 == 0 {
                json!({"identifiers": {"id": format!("c{sent}"), "email": format!("c{sent}@example.com")}})
            } else {
                json!({"customer_id": format!("c{sent}"), "email_address": format!("c{sent}@example.com")})
            };
            data["delivery_id"] = json!(format!("d{sent}"));
            data["action_id"] = if sent % 3 == 0 { json!(sent.to_string()) } else { json!(sent) };
            match sent % 4 {
                0 => data["campaign_id"] = json!(sent),
                1 => {
                    data["broadcast_id"] = json!(sent);
                    data["trigger_id"] = json!(1);
                }
                2 => data["newsletter_id"] = json!(sent),
                _ => data["transactional_message_id"] = json!(sent.to_string()),
            }
            if *metric == "clicked" {
                data["href"] = json!(format!("https://example.com/{sent}"));
                data["link_id"] = json!(1);
            }
            if matches!(*metric, "bounced" | "failed") {
                data["failure_message"] = json!(format!("550 no mailbox {sent}"));
            }
            let id = format!("01HXSPEC{sent:018}");
            let (status, body) =
                Delivery::of(&event(&id, object_type, metric, data)).send(&url).await;
            assert_eq!(status, 200, "{object_type}/{metric}: {body}");
        }
    }
    assert_eq!(sent, 69, "the spec's metrics");
    let rows = stored(&db).await;
    assert_eq!(rows.len(), 1 + sent);
    let mut n = 0;
    for (object_type, metrics) in SPEC {
        for metric in metrics {
            n += 1;
            let id = format!("01HXSPEC{n:018}");
            let row = rows.iter().find(|r| r[0].as_deref() == Some(id.as_str())).expect("stored");
            let text = |i: usize| row[i].as_deref();
            assert_eq!((text(1), text(2)), (Some(*metric), Some(object_type)), "{id}");
            assert_eq!(text(4), Some(format!("c{n}").as_str()), "{id}: customer id");
            assert_eq!(text(5), Some(format!("c{n}@example.com").as_str()), "{id}: email");
            assert_eq!(text(7), Some(format!("d{n}").as_str()), "{id}: delivery id");
            assert_eq!(text(12), Some(n.to_string().as_str()), "{id}: action id");
            // campaign_id, broadcast_id, newsletter_id, transactional_message_id.
            let parent = 8 + n % 4;
            assert_eq!(text(parent), Some(n.to_string().as_str()), "{id}: parent id");
            let href = (*metric == "clicked").then(|| format!("https://example.com/{n}"));
            assert_eq!(text(14), href.as_deref(), "{id}: href");
            let failure =
                matches!(*metric, "bounced" | "failed").then(|| format!("550 no mailbox {n}"));
            assert_eq!(text(15), failure.as_deref(), "{id}: failure message");
        }
    }
    assert!(stored_now(1 + sent as u64));

    // The counts on /metrics: by label, every received one stored once.
    let (_, metrics) = get(&daemon.url("/metrics")).await;
    assert_eq!(value(&metrics, "ciosync_webhooks_stored_total"), Some(70.0), "{metrics}");
    assert_eq!(value(&metrics, "ciosync_webhooks_duplicates_total"), Some(2.0));
    let received =
        |labels: &str| value(&metrics, &format!("ciosync_webhooks_received_total{{{labels}}}"));
    // Three deliveries of the first event, and the spec's own.
    assert_eq!(received("object_type=\"email\",metric=\"opened\""), Some(4.0));
    assert_eq!(received("object_type=\"sms\",metric=\"replied\""), Some(1.0));
    assert_eq!(
        received("object_type=\"customer\",metric=\"cio_subscription_preferences_changed\""),
        Some(1.0)
    );
    assert_eq!(value(&metrics, "ciosync_webhooks_rejected_total{reason=\"database\"}"), Some(0.0));

    // The pipeline streams beside the receiver.
    db.exec("INSERT INTO users (id, email) VALUES (1, 'u1@example.com')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    daemon.stop().await.unwrap();
}
