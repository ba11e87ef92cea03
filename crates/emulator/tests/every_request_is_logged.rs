//! Every request to the Track API side of the emulator lands in the request
//! log with the status it got, known route or not, so a user can see which
//! of their calls went nowhere; and the log never holds credentials.

use base64::engine::general_purpose;
use base64::Engine;
use ciosync_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;
use tokio::net::TcpListener;

const KEY: &str = "sekrit-key-123";

#[tokio::test]
async fn unknown_routes_are_logged_with_their_404_and_no_credentials() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let emu = Emulator::start(listener, EmulatorConfig::new("site", KEY)).await.expect("start");
    let basic = format!("Basic {}", general_purpose::STANDARD.encode(format!("site:{KEY}")));
    let client = reqwest::Client::new();
    let sent = [
        ("GET", "/nowhere"),
        ("POST", "/api/v1/customers/42/unknown_thing"),
        ("PATCH", "/api/v2/batch"),
        ("DELETE", "/api/v3/anything?x=1"),
        ("POST", "/_emulator/not_an_inspection_route"),
    ];
    for (method, path) in sent {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = client
            .request(method, format!("{}{path}", emu.url()))
            .header("authorization", &basic)
            .header("x-api-key", KEY)
            .body(r#"{"a":1}"#)
            .send()
            .await
            .expect("send");
        assert!(matches!(response.status().as_u16(), 404 | 405), "{path}");
    }
    let log: Vec<Value> = client
        .get(format!("{}/_emulator/requests", emu.url()))
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    let seen: Vec<(String, String, u64)> = log
        .iter()
        .map(|entry| {
            let path = entry["path"].as_str().unwrap_or_default();
            let query = entry["query"].as_str().map(|q| format!("?{q}")).unwrap_or_default();
            let method = entry["method"].as_str().unwrap_or_default().to_owned();
            (method, format!("{path}{query}"), entry["status"].as_u64().unwrap_or(0))
        })
        .collect();
    let expected: Vec<(String, String, u64)> = vec![
        ("GET".into(), "/nowhere".into(), 404),
        ("POST".into(), "/api/v1/customers/42/unknown_thing".into(), 404),
        // A known path with a method it does not take.
        ("PATCH".into(), "/api/v2/batch".into(), 405),
        ("DELETE".into(), "/api/v3/anything?x=1".into(), 404),
        ("POST".into(), "/_emulator/not_an_inspection_route".into(), 404),
    ];
    assert_eq!(seen, expected, "every request, in order, with its status");
    assert_eq!(log[0]["body"]["a"], 1, "the body is kept as for known routes");
    let text = serde_json::to_string(&log).expect("text");
    assert!(!text.contains(KEY) && !text.contains(&basic[6..]), "no credentials: {text}");
    emu.shutdown().await;
}
