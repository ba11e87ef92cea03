//! Every reporting webhook the emulator can send, one per `object_type` and
//! `metric`, about a person known by id and email and about one known only
//! by email, validates against Customer.io's reporting-webhooks schema as
//! received (the project's own in `tests/fixtures/`, and the published one
//! where available: `support::spec`; push `attempted` against its own
//! schema: see below).

use std::time::Duration;

use ciosync_emulator::Secret;
use ciosync_emulator::{Emulator, EmulatorConfig, WebhookRequest, WEBHOOK_METRICS};
use serde_json::json;
use tokio::net::TcpListener;

use crate::support::spec::{check, Shape};
use crate::support::webhook_receiver::Receiver;

#[tokio::test]
async fn every_webhook_kind_matches_the_published_schema() {
    let receiver = Receiver::start("k").await;
    let config = EmulatorConfig {
        webhook_url: Some(receiver.url().to_owned()),
        webhook_signing_key: Some(Secret::new("k")),
        ..EmulatorConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let emu = Emulator::start(listener, config).await.expect("start emulator");
    let response = reqwest::Client::new()
        .put(format!("{}/api/v1/customers/42", emu.url()))
        .basic_auth("site", Some("key"))
        .json(&json!({"email": "a@x.io"}))
        .send()
        .await
        .expect("identify");
    assert_eq!(response.status().as_u16(), 200);

    let mut sent = Vec::new();
    for (object_type, metrics) in WEBHOOK_METRICS {
        for metric in *metrics {
            let known = WebhookRequest::new(*object_type, *metric).for_customer("42");
            let by_email = WebhookRequest {
                email: Some("b@x.io".into()),
                ..WebhookRequest::new(*object_type, *metric)
            };
            for request in [known, by_email] {
                let record = emu.send_webhook(request).expect("a listed metric is accepted");
                sent.push((record.event_id, format!("{object_type} {metric}")));
            }
        }
    }
    assert!(
        receiver.wait_for_delivered(sent.len(), Duration::from_secs(30)).await,
        "only {} of {} arrived",
        receiver.delivered().len(),
        sent.len()
    );

    let schema = check(Shape::ReportingWebhook);
    // The published `push_drafted` admits only the metric `attempted`, so a
    // push `attempted` body matches two branches of the body's `oneOf` and
    // fails it whatever it holds; that one is checked on its own.
    let push_attempted = check(Shape::PushAttempted);
    let delivered = receiver.delivered();
    for ((event_id, kind), body) in sent.iter().zip(&delivered) {
        assert_eq!(body["event_id"], json!(event_id), "delivered in queue order");
        if kind == "push attempted" {
            push_attempted.assert_valid(body, kind);
        } else {
            schema.assert_valid(body, kind);
        }
    }
    // The validator does reject: a message webhook without its delivery.
    let email = delivered.iter().find(|body| body["object_type"] == "email");
    let mut broken = email.cloned().expect("an email webhook");
    broken["data"].as_object_mut().map(|data| data.remove("delivery_id"));
    schema.assert_invalid(&broken, "an email webhook without its delivery_id");
}
