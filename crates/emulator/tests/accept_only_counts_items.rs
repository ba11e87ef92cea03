//! Accept-only mode (`--accept-only`): v2 requests are authenticated and
//! framed, their items counted where `GET /_emulator/accepted` shows them,
//! and nothing reaches the customer model; bad credentials are still a 401
//! and a malformed body still a 400, neither counted.

use ciosync_emulator::{Accepted, Emulator, EmulatorConfig};
use serde_json::json;
use tokio::net::TcpListener;

async fn start(accept_only: bool) -> Emulator {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = EmulatorConfig { accept_only, ..EmulatorConfig::new("site", "key") };
    Emulator::start(listener, config).await.expect("start")
}

fn identify(id: u32) -> serde_json::Value {
    json!({"type": "person", "action": "identify", "identifiers": {"id": id.to_string()},
           "attributes": {"plan": "pro"}})
}

async fn post(emu: &Emulator, path: &str, key: &str, body: String) -> u16 {
    reqwest::Client::new()
        .post(format!("{}{path}", emu.url()))
        .basic_auth("site", Some(key))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

async fn inspected(emu: &Emulator) -> Accepted {
    let url = format!("{}/_emulator/accepted", emu.url());
    reqwest::get(url).await.expect("GET").json().await.expect("JSON")
}

#[tokio::test]
async fn items_are_counted_and_not_applied() {
    let emu = start(true).await;
    let batch = json!({"batch": (1..=500).map(identify).collect::<Vec<_>>()}).to_string();
    assert_eq!(post(&emu, "/api/v2/batch", "key", batch.clone()).await, 200);
    assert_eq!(post(&emu, "/api/v2/batch", "key", batch).await, 200);
    assert_eq!(post(&emu, "/api/v2/entity", "key", identify(7).to_string()).await, 200);

    let counted = Accepted { accept_only: true, requests: 3, items: 1001 };
    assert_eq!(inspected(&emu).await, counted);
    assert_eq!(emu.accepted(), counted);
    assert!(emu.customers().is_empty(), "accept-only applies nothing");
    let log = emu.requests();
    assert_eq!(log.len(), 3, "every request is still logged");
    assert!(log.iter().all(|r| r.body.is_none() && r.body_bytes > 0), "without its body");
}

#[tokio::test]
async fn bad_auth_is_401_and_a_malformed_body_400_neither_counted() {
    let emu = start(true).await;
    let batch = json!({"batch": [identify(1)]}).to_string();
    assert_eq!(post(&emu, "/api/v2/batch", "wrong", batch).await, 401);
    assert_eq!(post(&emu, "/api/v2/batch", "key", "{\"batch\": [".into()).await, 400);
    assert_eq!(post(&emu, "/api/v2/batch", "key", "{\"batch\": {}}".into()).await, 400);
    assert_eq!(post(&emu, "/api/v2/batch", "key", "[]".into()).await, 400);
    assert_eq!(post(&emu, "/api/v2/entity", "key", "not json".into()).await, 400);
    let big = json!({"batch": [{"x": "y".repeat(600_000)}]}).to_string();
    assert_eq!(post(&emu, "/api/v2/batch", "key", big).await, 400, "over 500 KB");
    assert_eq!(inspected(&emu).await, Accepted { accept_only: true, requests: 0, items: 0 });
}

#[tokio::test]
async fn the_normal_mode_applies_and_counts_nothing() {
    let emu = start(false).await;
    let batch = json!({"batch": [identify(1)]}).to_string();
    assert_eq!(post(&emu, "/api/v2/batch", "key", batch).await, 200);
    assert!(emu.customer("1").is_some());
    assert_eq!(inspected(&emu).await, Accepted { accept_only: false, requests: 0, items: 0 });
}
