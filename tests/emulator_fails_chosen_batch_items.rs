//! The emulator's per-item faults, over real HTTP: `reject_ids` refuses a
//! person's items for good (until the fault is cleared) and
//! `item_errors_next` fails the next items once, each reported per item in
//! a 207, so a client's dead-letter and partial-retry paths can be tested.

use ciosync::emulator::{Emulator, EmulatorConfig, Faults};
use serde_json::{json, Value};
use tokio::net::TcpListener;

async fn start(config: EmulatorConfig) -> Emulator {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Emulator::start(listener, config).await.expect("start emulator")
}

/// Sends a Track API request with the default config's credentials (or an
/// inspection request, which ignores them); returns status and JSON body.
async fn send(emu: &Emulator, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", emu.url()))
        .basic_auth("site", Some("key"))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn batch(emu: &Emulator, items: &Value) -> (u16, Value) {
    send(emu, "POST", "/api/v2/batch", &json!({"batch": items})).await
}

fn identify(id: &str) -> Value {
    json!({"type": "person", "action": "identify", "identifiers": {"id": id},
           "attributes": {"plan": "pro"}})
}

fn transient(batch_index: usize) -> Value {
    json!({"batch_index": batch_index, "reason": "internal_error", "field": "",
           "message": "temporarily unable to process this item; retry"})
}

fn rejected(batch_index: usize, field: &str) -> Value {
    json!({"batch_index": batch_index, "reason": "invalid", "field": field,
           "message": "person id refused (emulator fault reject_ids)"})
}

#[tokio::test]
async fn a_rejected_id_fails_only_its_item_until_the_fault_is_cleared() {
    let emu = start(EmulatorConfig::default()).await;
    emu.set_faults(Faults { reject_ids: vec!["bad".into()], ..Faults::default() });
    let items = json!([identify("a"), identify("bad"), identify("c")]);

    assert_eq!(batch(&emu, &items).await, (207, json!({"errors": [rejected(1, "identifiers")]})));
    assert!(emu.customer("a").is_some() && emu.customer("c").is_some());
    assert!(emu.customer("bad").is_none(), "a refused item is not applied");
    // Refused for good: sending it again changes nothing.
    assert_eq!(batch(&emu, &items).await.0, 207);
    assert!(emu.customer("bad").is_none());
    let injected: Vec<bool> = emu.requests().iter().map(|r| r.injected_fault).collect();
    assert_eq!(injected, [true, true]);

    // "Fix the cause": the same item is accepted.
    emu.set_faults(Faults::default());
    assert_eq!(batch(&emu, &items).await, (200, json!({})));
    assert_eq!(emu.customer("bad").and_then(|c| c.get("plan").cloned()), Some(json!("pro")));
}

#[tokio::test]
async fn a_rejected_id_is_refused_on_every_route_and_either_side_of_a_merge() {
    let emu = start(EmulatorConfig::default()).await;
    let faults = json!({"reject_ids": ["bad"]});
    assert_eq!(send(&emu, "PUT", "/_emulator/faults", &faults).await.0, 200);

    let merge = json!({"type": "person", "action": "merge",
                       "primary": {"id": "a"}, "secondary": {"id": "bad"}});
    let device = json!({"type": "person", "action": "add_device", "identifiers": {"id": "bad"},
                        "device": {"token": "t", "platform": "ios"}});
    let by_email = json!({"type": "person", "action": "identify",
                          "identifiers": {"email": "bad@x.io"}});
    let (status, body) = batch(&emu, &json!([merge, device, by_email])).await;
    assert_eq!(status, 207);
    assert_eq!(body, json!({"errors": [rejected(0, "secondary"), rejected(1, "identifiers")]}));
    assert!(emu.customer("bad@x.io").is_some(), "only ids are matched");

    let entity = send(&emu, "POST", "/api/v2/entity", &identify("bad")).await;
    assert_eq!(entity.0, 400);
    assert_eq!(entity.1["errors"][0]["field"], "identifiers");
    let v1 = send(&emu, "PUT", "/api/v1/customers/bad", &json!({"plan": "pro"})).await;
    let v1_error = json!({"meta": {"errors": ["person id refused (emulator fault reject_ids)"]}});
    assert_eq!(v1, (400, v1_error));
    let v1_merge = json!({"primary": {"id": "bad"}, "secondary": {"id": "a"}});
    let (status, body) = send(&emu, "POST", "/api/v1/merge_customers", &v1_merge).await;
    assert_eq!((status, body["meta"]["error"].is_string()), (400, true));
    assert!(emu.customer("bad").is_none());
}

#[tokio::test]
async fn item_errors_next_fails_the_next_items_once_across_requests() {
    let emu = start(EmulatorConfig::default()).await;
    let faults = json!({"item_errors_next": 2});
    assert_eq!(send(&emu, "PUT", "/_emulator/faults", &faults).await.0, 200);

    let items = json!([identify("a"), identify("b"), identify("c")]);
    assert_eq!(batch(&emu, &items).await, (207, json!({"errors": [transient(0), transient(1)]})));
    assert!(emu.customer("a").is_none() && emu.customer("b").is_none());
    assert!(emu.customer("c").is_some());
    assert_eq!(send(&emu, "GET", "/_emulator/faults", &Value::Null).await.1["item_errors_next"], 0);

    // The retry goes through whole.
    assert_eq!(batch(&emu, &items).await, (200, json!({})));
    assert_eq!(emu.customers().len(), 3);

    // Counted across requests: one left over from the first batch of two.
    emu.set_faults(Faults { item_errors_next: 3, ..Faults::default() });
    assert_eq!(batch(&emu, &json!([identify("d"), identify("e")])).await.0, 207);
    assert_eq!(
        batch(&emu, &json!([identify("f"), identify("g")])).await.1,
        json!({"errors": [transient(0)]})
    );
    assert!(emu.customer("g").is_some() && emu.customer("f").is_none());
}

#[tokio::test]
async fn per_item_faults_follow_the_errors_with_200_mode() {
    let emu = start(EmulatorConfig { errors_with_200: true, ..EmulatorConfig::default() }).await;
    emu.set_faults(Faults {
        reject_ids: vec!["bad".into()],
        item_errors_next: 1,
        ..Faults::default()
    });
    let (status, body) = batch(&emu, &json!([identify("a"), identify("bad"), identify("c")])).await;
    assert_eq!(
        (status, body),
        (200, json!({"errors": [transient(0), rejected(1, "identifiers")]}))
    );
    assert!(emu.customer("c").is_some());
}

#[tokio::test]
async fn an_empty_rejected_id_is_refused_as_a_fault() {
    let emu = start(EmulatorConfig::default()).await;
    let (status, body) = send(&emu, "PUT", "/_emulator/faults", &json!({"reject_ids": [""]})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().is_some_and(|m| m.starts_with("reject_ids")), "{body}");
    assert_eq!(emu.faults(), Faults::default());
}
