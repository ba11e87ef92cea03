//! The emulator sends Customer.io-style reporting webhooks to a receiver
//! that checks them as a customer's endpoint would: signed with the key
//! (`X-CIO-Signature` over `v0:{X-CIO-Timestamp}:{body}`), valid against
//! Customer.io's schema (`support::spec`), sent on demand and after accepted events, retried
//! with the same `event_id` while later ones wait, and listed without the
//! key.

use std::time::Duration;

use ciosync_emulator::Secret;
use ciosync_emulator::{Emulator, EmulatorConfig, WebhookRequest, WebhookRetry, WebhookStatus};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::spec::{check, Shape};
use crate::support::webhook_receiver::Receiver;

const KEY: &str = "whsec-emulator-test-5b1f0c";
const WAIT: Duration = Duration::from_secs(15);

async fn start(
    receiver: &Receiver,
    edit: impl FnOnce(EmulatorConfig) -> EmulatorConfig,
) -> Emulator {
    let config = EmulatorConfig {
        webhook_url: Some(receiver.url().to_owned()),
        webhook_signing_key: Some(Secret::new(KEY)),
        webhook_retry: WebhookRetry {
            initial_backoff_ms: 200,
            max_backoff_ms: 1_000,
            max_attempts: 10,
            give_up_after_ms: 30_000,
        },
        ..EmulatorConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Emulator::start(listener, edit(config)).await.expect("start emulator")
}

/// A request to the emulator with the default credentials; status and body text.
async fn call(emu: &Emulator, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", emu.url()))
        .basic_auth("site", Some("key"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// `GET /_emulator/webhooks`, checked to hold no trace of the key.
async fn listed(emu: &Emulator) -> Value {
    let (status, text) = call(emu, "GET", "/_emulator/webhooks", None).await;
    assert_eq!(status, 200);
    assert!(!text.contains(KEY), "the signing key is listed: {text}");
    serde_json::from_str(&text).expect("webhook list is JSON")
}

fn event_ids(bodies: &[Value]) -> Vec<String> {
    bodies.iter().map(|b| b["event_id"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn an_on_demand_webhook_arrives_signed_and_schema_valid() {
    let receiver = Receiver::start(KEY).await;
    let emu = start(&receiver, |config| config).await;
    let schema = check(Shape::ReportingWebhook);

    let request = json!({"object_type": "email", "metric": "bounced", "customer_id": "42",
                         "email": "a@x.io", "data": {"failure_message": "mailbox full"}});
    let (status, text) = call(&emu, "POST", "/_emulator/webhooks", Some(request)).await;
    assert_eq!(status, 202, "{text}");
    let queued: Value = serde_json::from_str(&text).expect("JSON");
    assert!(receiver.wait_for_delivered(1, WAIT).await, "no webhook arrived");

    let received = receiver.received();
    assert_eq!(receiver.refused(), Vec::<String>::new());
    assert_eq!(received[0].content_type, "application/json");
    assert_eq!(received[0].signature.len(), 64);
    let body = &received[0].body;
    schema.assert_valid(body, "email bounced webhook");
    assert_eq!(body["event_id"], queued["event_id"]);
    assert_eq!(body["event_id"].as_str().map(str::len), Some(26), "a ULID");
    assert_eq!(
        (body["object_type"].as_str(), body["metric"].as_str()),
        (Some("email"), Some("bounced"))
    );
    assert_eq!(
        body["data"]["identifiers"],
        json!({"id": "42", "email": "a@x.io", "cio_id": body["data"]["identifiers"]["cio_id"]})
    );
    assert_eq!(body["data"]["customer_id"], "42");
    assert_eq!(body["data"]["failure_message"], "mailbox full");

    let list = listed(&emu).await;
    assert_eq!(list[0]["status"], "delivered");
    assert_eq!(list[0]["attempts"][0]["status"], 200);
    assert_eq!(list[0]["attempts"][0]["timestamp"], received[0].timestamp);

    // Requests naming no real webhook are refused, naming the field.
    let (status, text) =
        call(&emu, "POST", "/_emulator/webhooks", Some(json!({"metric": "replied"}))).await;
    assert_eq!(status, 400);
    assert!(text.contains("metric"), "{text}");
}

#[tokio::test]
async fn accepted_events_are_followed_by_sent_then_delivered() {
    let receiver = Receiver::start(KEY).await;
    let emu = start(&receiver, |config| EmulatorConfig {
        webhook_on_activity: vec!["sent".into(), "delivered".into()],
        webhook_on_new_person: true,
        ..config
    })
    .await;
    let schema = check(Shape::ReportingWebhook);

    let identify = json!({"email": "a@x.io"});
    assert_eq!(call(&emu, "PUT", "/api/v1/customers/42", Some(identify)).await.0, 200);
    let event = json!({"name": "signup", "id": "01HZY5V6J3K9Q3W8Z6X1N2M3P4"});
    assert_eq!(call(&emu, "POST", "/api/v1/customers/42/events", Some(event.clone())).await.0, 200);
    // A repeat of a seen event id is dropped by Customer.io: no webhooks.
    // Delivery keeps queue order, so a marker queued after it and arriving
    // fourth shows nothing was queued for the repeat.
    assert_eq!(call(&emu, "POST", "/api/v1/customers/42/events", Some(event)).await.0, 200);
    let marker = emu.send_webhook(WebhookRequest::new("email", "opened")).expect("queue");
    assert!(receiver.wait_for_delivered(4, WAIT).await, "webhooks missing: {:?}", emu.webhooks());
    let mut bodies = receiver.delivered();
    assert_eq!(bodies.pop().map(|b| b["event_id"].clone()), Some(json!(marker.event_id)));

    let kinds: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| (b["object_type"].as_str().unwrap_or(""), b["metric"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(kinds, vec![("customer", "subscribed"), ("email", "sent"), ("email", "delivered")]);
    for body in &bodies {
        schema.assert_valid(body, "automatic webhook");
        assert_eq!(body["data"]["identifiers"]["id"], "42");
        assert_eq!(body["data"]["identifiers"]["email"], "a@x.io");
    }
    assert_eq!(bodies[1]["data"]["delivery_id"], bodies[2]["data"]["delivery_id"], "one message");
    assert_eq!(bodies[1]["data"]["subject"], "signup");
    assert_eq!(bodies[1]["data"]["trigger_event_id"], "01HZY5V6J3K9Q3W8Z6X1N2M3P4");
    assert_eq!(receiver.refused(), Vec::<String>::new());
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_its_event_id_and_holds_back_the_next() {
    let receiver = Receiver::start(KEY).await;
    receiver.fail_first(3);
    let emu = start(&receiver, |config| config).await;

    let first =
        emu.send_webhook(WebhookRequest::new("email", "opened").for_customer("1")).expect("queue");
    // Queue the second while the first is failing.
    let failing = emu
        .wait_until(WAIT, |v| v.webhooks().first().is_some_and(|w| !w.attempts.is_empty()))
        .await;
    assert!(failing, "the first webhook was never attempted");
    let second = json!({"object_type": "customer", "metric": "unsubscribed", "customer_id": "2"});
    assert_eq!(call(&emu, "POST", "/_emulator/webhooks", Some(second)).await.0, 202);
    assert!(receiver.wait_for_delivered(2, WAIT).await, "not delivered: {:?}", emu.webhooks());

    let received = receiver.received();
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 500, 500, 200, 200]);
    let bodies: Vec<Value> = received.iter().map(|r| r.body.clone()).collect();
    let ids = event_ids(&bodies);
    assert!(ids[..4].iter().all(|id| *id == first.event_id), "retries keep the event_id: {ids:?}");
    assert_ne!(ids[4], first.event_id, "the second arrives only after the first succeeded");
    assert_eq!(bodies[0], bodies[3], "the body is the same on every attempt");
    assert_eq!(receiver.refused(), Vec::<String>::new(), "every attempt is signed afresh");

    let list = listed(&emu).await;
    let attempts: Vec<&Value> = list[0]["attempts"]
        .as_array()
        .map(|a| a.iter().map(|x| &x["status"]).collect())
        .unwrap_or_default();
    assert_eq!(attempts, vec![&json!(500), &json!(500), &json!(500), &json!(200)]);
    assert_eq!(
        (&list[0]["status"], &list[1]["status"]),
        (&json!("delivered"), &json!("delivered"))
    );
}

#[tokio::test]
async fn a_webhook_failing_past_the_cap_is_recorded_as_failed_and_the_next_goes() {
    let receiver = Receiver::start(KEY).await;
    receiver.fail_first(2);
    let emu = start(&receiver, |config| EmulatorConfig {
        webhook_retry: WebhookRetry {
            initial_backoff_ms: 50,
            max_attempts: 2,
            ..config.webhook_retry
        },
        ..config
    })
    .await;

    let doomed =
        emu.send_webhook(WebhookRequest::new("sms", "sent").for_customer("1")).expect("queue");
    let next =
        emu.send_webhook(WebhookRequest::new("sms", "delivered").for_customer("1")).expect("queue");
    assert!(
        receiver.wait_for_delivered(1, WAIT).await,
        "the next never went: {:?}",
        emu.webhooks()
    );

    assert_eq!(event_ids(&receiver.delivered()), vec![next.event_id]);
    // The receiver has the request before the emulator has its answer.
    let deadline = tokio::time::Instant::now() + WAIT;
    while emu.webhooks()[1].status != WebhookStatus::Delivered {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", emu.webhooks());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let webhooks = emu.webhooks();
    assert_eq!(webhooks[0].event_id, doomed.event_id);
    assert_eq!(webhooks[0].status, WebhookStatus::Failed);
    assert_eq!(webhooks[0].attempts.len(), 2, "max_attempts is the cap");
    listed(&emu).await;
}
