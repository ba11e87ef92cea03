//! The emulator over real HTTP: auth, the v1 and v2 behaviours a sink relies
//! on, fault injection, the inspection endpoints, the binary, and every kind
//! of answer checked against Customer.io's published OpenAPI schemas.

use std::time::Duration;

use base64::engine::general_purpose;
use base64::Engine;
use ciosync::emulator::{Emulator, EmulatorConfig, Faults};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const SITE: &str = "site";
/// Encodes with '/' and '+' in the standard alphabet, '_' and '-' URL-safe.
const KEY: &str = "x???~~~";
const WAIT: Duration = Duration::from_secs(5);

async fn start(config: EmulatorConfig) -> Emulator {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Emulator::start(listener, config).await.expect("start emulator")
}

async fn start_default() -> Emulator {
    start(EmulatorConfig::new(SITE, KEY)).await
}

fn auth(encoded: &str) -> String {
    format!("Basic {encoded}")
}

fn standard_auth() -> String {
    auth(&general_purpose::STANDARD.encode(format!("{SITE}:{KEY}")))
}

/// Sends a request with credentials; returns status, `Retry-After` and the
/// body as JSON (`Null` when empty or not JSON).
async fn call(
    emu: &Emulator,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Option<String>, Value) {
    send(emu, method, path, body.map(Value::to_string), Some(standard_auth())).await
}

async fn send(
    emu: &Emulator,
    method: &str,
    path: &str,
    body: Option<String>,
    authorization: Option<String>,
) -> (u16, Option<String>, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", emu.url()));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await.expect("body");
    (status, retry_after, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn identify(emu: &Emulator, path_id: &str, attributes: Value) -> (u16, Value) {
    let (status, _, body) =
        call(emu, "PUT", &format!("/api/v1/customers/{path_id}"), Some(&attributes)).await;
    (status, body)
}

async fn batch(emu: &Emulator, items: Value) -> (u16, Value) {
    let (status, _, body) =
        call(emu, "POST", "/api/v2/batch", Some(&json!({"batch": items}))).await;
    (status, body)
}

fn v1_errors(messages: &[&str]) -> Value {
    json!({"meta": {"errors": messages}})
}

#[tokio::test]
async fn auth_accepts_both_alphabets_and_rejects_wrong_credentials() {
    let emu = start_default().await;
    let raw = format!("{SITE}:{KEY}");
    for encoded in [
        general_purpose::STANDARD.encode(&raw),
        general_purpose::URL_SAFE.encode(&raw),
        general_purpose::URL_SAFE_NO_PAD.encode(&raw),
    ] {
        let (status, _, _) =
            send(&emu, "GET", "/api/v1/accounts/region", None, Some(auth(&encoded))).await;
        assert_eq!(status, 200, "{encoded}");
    }
    let wrong = auth(&general_purpose::STANDARD.encode(format!("{SITE}:nope")));
    let (status, _, body) =
        send(&emu, "PUT", "/api/v1/customers/1", Some("{}".into()), Some(wrong.clone())).await;
    assert_eq!((status, body), (401, json!({"meta": {"error": "Unauthorized request"}})));
    let (status, _, body) =
        send(&emu, "POST", "/api/v2/batch", Some(r#"{"batch":[]}"#.into()), None).await;
    assert_eq!(status, 401);
    assert_eq!(body["errors"][0]["reason"], "unauthorized");
    assert!(emu.customers().is_empty());
    let (status, _, _) = send(&emu, "GET", "/_emulator/customers", None, None).await;
    assert_eq!(status, 200, "inspection needs no credentials");
    emu.shutdown().await;
}

#[tokio::test]
async fn region_reports_the_configured_region() {
    let emu = start(EmulatorConfig {
        region: "eu".into(),
        environment_id: 7,
        ..EmulatorConfig::new(SITE, KEY)
    })
    .await;
    let (status, _, body) = call(&emu, "GET", "/api/v1/accounts/region", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"url": "https://track-eu.customer.io", "region": "eu", "environment_id": 7})
    );
}

#[tokio::test]
async fn identify_updates_unsets_deletes_and_recreates() {
    let emu = start_default().await;
    assert_eq!(
        identify(&emu, "42", json!({"plan": "pro", "seats": 3, "email": "Ann@X.io"})).await,
        (200, json!({}))
    );
    assert_eq!(identify(&emu, "42", json!({"plan": "team", "seats": ""})).await.0, 200);
    assert_eq!(
        emu.customer("42").map(Value::Object),
        Some(json!({"id": "42", "plan": "team", "email": "Ann@X.io"}))
    );
    assert!(emu.customer("ann@x.IO").is_some(), "email lookups ignore case");
    // A percent-encoded email in the path names the same person.
    assert_eq!(identify(&emu, "ANN%40x.io", json!({"vip": true})).await.0, 200);
    assert_eq!(emu.customers().len(), 1);
    assert_eq!(emu.customer("42").and_then(|c| c.get("vip").cloned()), Some(json!(true)));

    let (status, _, _) = call(&emu, "DELETE", "/api/v1/customers/42", None).await;
    assert_eq!(status, 200);
    assert!(emu.customer("42").is_none());
    identify(&emu, "42", json!({"plan": "free"})).await;
    assert_eq!(emu.customer("42").map(Value::Object), Some(json!({"id": "42", "plan": "free"})));
}

#[tokio::test]
async fn timestamps_order_updates_per_attribute() {
    let emu = start_default().await;
    identify(&emu, "1", json!({"plan": "new", "_timestamp": 2_000})).await;
    identify(&emu, "1", json!({"plan": "old", "seats": 1, "_timestamp": 1_000})).await;
    let item = |plan: &str, ts: i64| {
        json!({"type": "person", "action": "identify", "identifiers": {"id": "1"},
               "timestamp": ts, "attributes": {"plan": plan}})
    };
    batch(&emu, json!([item("older", 1_500), item("newest", 3_000)])).await;
    assert_eq!(
        emu.customer("1").map(Value::Object),
        Some(json!({"id": "1", "plan": "newest", "seats": 1}))
    );
}

#[tokio::test]
async fn update_flag_never_creates() {
    let emu = start_default().await;
    assert_eq!(identify(&emu, "9", json!({"a": 1, "_update": true})).await.0, 200);
    assert!(emu.customers().is_empty());
    assert_eq!(emu.failures().len(), 1);
    identify(&emu, "9", json!({"a": 1})).await;
    identify(&emu, "9", json!({"a": 2, "_update": true})).await;
    assert_eq!(emu.customer("9").and_then(|c| c.get("a").cloned()), Some(json!(2)));
}

#[tokio::test]
async fn v1_limits_answer_customer_io_messages() {
    let emu = start_default().await;
    let many: serde_json::Map<String, Value> =
        (0..301).map(|i| (format!("a{i}"), json!(1))).collect();
    let cases = [
        (Value::Object(many), "cannot identify more than 300 attributes in one request"),
        (json!({"n".repeat(151): 1}), "attribute name cannot be longer than 150 bytes"),
        (
            json!({"bio": "x".repeat(1001)}),
            "value for attribute 'bio' cannot be longer than 1000 bytes",
        ),
        (json!({"id": ""}), "id attribute cannot be an empty string"),
    ];
    for (body, message) in cases {
        assert_eq!(identify(&emu, "1", body).await, (400, v1_errors(&[message])));
    }
    let (status, body) = identify(&emu, &"x".repeat(151), json!({})).await;
    assert_eq!((status, body), (400, v1_errors(&["identifier cannot be longer than 150 bytes"])));
    let events = [
        (json!({"name": " "}), "event name must not be blank"),
        (json!({"name": "e".repeat(101)}), "event name cannot be longer than 100 bytes"),
        (json!({"name": "e", "data": "x"}), "event data must be a hash"),
        (
            json!({"name": "e", "data": {"d": "x".repeat(100_000)}}),
            "event data cannot be longer than 100000 bytes",
        ),
    ];
    for (body, message) in events {
        let (status, _, answer) =
            call(&emu, "POST", "/api/v1/customers/1/events", Some(&body)).await;
        assert_eq!((status, answer), (400, v1_errors(&[message])));
    }
    let (status, _, _) = call(&emu, "POST", "/api/v1/events", Some(&json!({"name": "e"}))).await;
    assert_eq!(status, 400, "anonymous events need anonymous_id");
    assert!(emu.customers().is_empty());
}

#[tokio::test]
async fn batch_applies_valid_items_and_reports_invalid_ones_by_index() {
    let emu = start_default().await;
    let (status, body) = batch(
        &emu,
        json!([
            {"type": "person", "action": "identify", "identifiers": {"id": "a"}, "attributes": {"n": 1.5}},
            {"type": "person", "action": "identify", "identifiers": {"id": "b", "email": "b@x.io"}},
            {"type": "person", "action": "event", "identifiers": {"id": "a"}, "name": "signup"},
            {"type": "person", "action": "event", "identifiers": {"id": "a"}, "name": ""},
            {"type": "object", "action": "identify", "identifiers": {"object_type_id": "1", "object_id": "acme"}},
        ]),
    )
    .await;
    assert_eq!(status, 207);
    let indexes: Vec<&Value> =
        body["errors"].as_array().into_iter().flatten().map(|e| &e["batch_index"]).collect();
    assert_eq!(indexes, [&json!(1), &json!(3)]);
    assert_eq!(body["errors"][1]["message"], "event name must not be blank");
    assert_eq!(emu.customer("a").and_then(|c| c.get("n").cloned()), Some(json!(1.5)));
    assert_eq!(emu.events("a").len(), 1);

    for (raw, field) in [("not json", "body"), (r#"{"items":[]}"#, "batch")] {
        let (status, _, body) =
            send(&emu, "POST", "/api/v2/batch", Some(raw.into()), Some(standard_auth())).await;
        assert_eq!((status, body["errors"][0]["field"].clone()), (400, json!(field)));
        assert!(body["errors"][0].get("batch_index").is_none());
    }
    let huge = json!({"batch": [], "pad": "x".repeat(500_000)}).to_string();
    let (status, _, _) =
        send(&emu, "POST", "/api/v2/batch", Some(huge), Some(standard_auth())).await;
    assert_eq!(status, 400);
    let big_entity = json!({"type": "person", "action": "identify", "identifiers": {"id": "c"},
                            "attributes": {"pad": "x".repeat(32_000)}});
    let (status, _, _) = call(&emu, "POST", "/api/v2/entity", Some(&big_entity)).await;
    assert_eq!(status, 400);
    let entity = json!({"type": "person", "action": "identify", "identifiers": {"id": "c"}});
    assert_eq!(call(&emu, "POST", "/api/v2/entity", Some(&entity)).await.2, json!({}));
    assert!(emu.customer("c").is_some());
}

#[tokio::test]
async fn errors_with_200_mode_keeps_the_errors_body() {
    let emu =
        start(EmulatorConfig { errors_with_200: true, ..EmulatorConfig::new(SITE, KEY) }).await;
    let (status, body) = batch(&emu, json!([{"type": "person", "action": "delete"}])).await;
    assert_eq!(status, 200);
    assert_eq!(body["errors"][0]["batch_index"], 0);
}

#[tokio::test]
async fn merge_fills_the_primary_and_removes_the_secondary() {
    let emu = start_default().await;
    identify(&emu, "p", json!({"plan": "pro"})).await;
    identify(&emu, "s", json!({"plan": "free", "city": "Oslo"})).await;
    call(&emu, "POST", "/api/v1/customers/s/events", Some(&json!({"name": "visit"}))).await;
    let merge = json!({"primary": {"id": "p"}, "secondary": {"id": "s"}});
    assert_eq!(call(&emu, "POST", "/api/v1/merge_customers", Some(&merge)).await.0, 200);
    assert_eq!(
        emu.customer("p").map(Value::Object),
        Some(json!({"id": "p", "plan": "pro", "city": "Oslo"}))
    );
    assert_eq!(emu.events("p").len(), 1);
    assert!(emu.customer("s").is_none());

    let two = json!({"primary": {"id": "p", "email": "p@x.io"}, "secondary": {"id": "s"}});
    let (status, _, body) = call(&emu, "POST", "/api/v1/merge_customers", Some(&two)).await;
    assert_eq!(status, 400);
    assert!(body["meta"]["error"].as_str().is_some_and(|m| m.starts_with("primary")));
    // A missing primary: 200, nothing merged, a failure logged.
    identify(&emu, "t", json!({})).await;
    let (status, _) = batch(
        &emu,
        json!([{"type": "person", "action": "merge",
                                          "primary": {"id": "ghost"}, "secondary": {"id": "t"}}]),
    )
    .await;
    assert_eq!(status, 200);
    assert!(emu.customer("t").is_some());
    assert!(emu.failures().iter().any(|f| f.operation == "merge"));
}

#[tokio::test]
async fn suppress_blocks_later_calls_until_unsuppressed() {
    let emu = start_default().await;
    identify(&emu, "1", json!({"email": "a@x.io"})).await;
    assert_eq!(call(&emu, "POST", "/api/v1/customers/1/suppress", None).await.0, 200);
    assert_eq!(identify(&emu, "1", json!({"plan": "pro"})).await, (200, json!({})));
    assert_eq!(identify(&emu, "A%40x.io", json!({"plan": "pro"})).await.0, 200);
    batch(
        &emu,
        json!([{"type": "person", "action": "event", "identifiers": {"id": "1"}, "name": "e"}]),
    )
    .await;
    assert!(emu.customers().is_empty());
    call(&emu, "POST", "/api/v1/customers/1/unsuppress", None).await;
    identify(&emu, "1", json!({"plan": "pro"})).await;
    assert_eq!(emu.customer("1").map(Value::Object), Some(json!({"id": "1", "plan": "pro"})));
}

#[tokio::test]
async fn events_with_a_repeated_id_are_stored_once() {
    let emu = start_default().await;
    let event = json!({"name": "paid", "id": "01HZY5V6J3K9Q3W8Z6X1N2M3P4", "data": {"amount": 5}});
    for _ in 0..2 {
        assert_eq!(call(&emu, "POST", "/api/v1/customers/1/events", Some(&event)).await.0, 200);
    }
    let item = json!({"type": "person", "action": "event", "identifiers": {"id": "1"},
                      "name": "paid", "id": "01HZY5V6J3K9Q3W8Z6X1N2M3P4"});
    assert_eq!(batch(&emu, json!([item])).await.0, 200);
    let events = emu.events("1");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data.get("amount"), Some(&json!(5)));
}

#[tokio::test]
async fn faults_fail_rate_limit_and_delay_track_requests_only() {
    let emu = start_default().await;
    emu.set_faults(Faults { fail_next: 2, ..Faults::default() });
    assert_eq!(identify(&emu, "1", json!({})).await.0, 500);
    assert_eq!(identify(&emu, "1", json!({})).await.0, 500);
    assert_eq!(send(&emu, "GET", "/_emulator/customers", None, None).await.0, 200);
    assert_eq!(identify(&emu, "1", json!({"a": 1})).await.0, 200);
    let injected: Vec<bool> = emu.requests().iter().map(|r| r.injected_fault).collect();
    assert_eq!(injected, [true, true, false]);

    emu.set_faults(Faults { rate_limit_rate: 1.0, retry_after_secs: Some(3), ..Faults::default() });
    let (status, retry_after, _) = call(&emu, "GET", "/api/v1/accounts/region", None).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("3")));

    emu.set_faults(Faults {
        fail_next: 1,
        fail_status: 503,
        fail_after_apply: true,
        latency_ms: 50,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    assert_eq!(identify(&emu, "2", json!({"applied": true})).await.0, 503);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(emu.customer("2").is_some(), "fail_after_apply applies before failing");
    assert_eq!(emu.faults().fail_next, 0);
}

#[tokio::test]
async fn inspection_endpoints_show_and_control_state() {
    let emu = start_default().await;
    identify(&emu, "1", json!({"plan": "pro"})).await;
    call(&emu, "POST", "/api/v1/customers/1/events", Some(&json!({"name": "e"}))).await;
    let get = |path: &'static str| send(&emu, "GET", path, None, None);
    assert_eq!(get("/_emulator/customers").await.2, json!({"1": {"id": "1", "plan": "pro"}}));
    assert_eq!(get("/_emulator/customers/1").await.2, json!({"id": "1", "plan": "pro"}));
    assert_eq!(get("/_emulator/customers/2").await.0, 404);
    assert_eq!(get("/_emulator/customers/1/events").await.2[0]["name"], "e");
    let requests = get("/_emulator/requests").await.2;
    assert_eq!(requests[0]["body"], json!({"plan": "pro"}));
    assert_eq!(requests[1]["status"], 200);
    assert_eq!(send(&emu, "DELETE", "/_emulator/requests", None, None).await.0, 204);
    assert!(emu.requests().is_empty());

    let faults = json!({"fail_next": 1, "fail_status": 429, "retry_after_secs": 9});
    assert_eq!(send(&emu, "PUT", "/_emulator/faults", Some(faults.to_string()), None).await.0, 200);
    assert_eq!(get("/_emulator/faults").await.2["fail_status"], 429);
    assert_eq!(identify(&emu, "1", json!({})).await.0, 429);
    let bad =
        send(&emu, "PUT", "/_emulator/faults", Some(r#"{"error_rate":2}"#.into()), None).await;
    assert_eq!(bad.0, 400);
    assert_eq!(
        send(&emu, "PUT", "/_emulator/faults", Some(r#"{"typo":1}"#.into()), None).await.0,
        400
    );

    assert_eq!(send(&emu, "POST", "/_emulator/reset", None, None).await.0, 204);
    assert!(emu.customers().is_empty() && emu.requests().is_empty());
}

#[tokio::test]
async fn wait_until_wakes_on_changes_and_times_out() {
    let emu = start_default().await;
    let url = emu.url();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        reqwest::Client::new()
            .put(format!("{url}/api/v1/customers/late"))
            .header("authorization", standard_auth())
            .body("{}")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert!(emu.wait_until(WAIT, |v| v.customer("late").is_some()).await);
    assert_eq!(sender.await.ok().and_then(Result::ok), Some(200));
    assert!(!emu.wait_until(Duration::from_millis(50), |v| v.customers().len() > 1).await);
}

/// The binary prints its address, serves (with the faults its flags set),
/// and exits 0 on SIGTERM.
#[cfg(unix)]
#[tokio::test]
async fn binary_announces_its_port_and_stops_on_sigterm() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ciosync-emulator"))
        .args(["--listen", "127.0.0.1:0", "--site-id", SITE, "--reject-id", "refused"])
        .env("CIOSYNC_EMULATOR_API_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ciosync-emulator");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("ready line in time")
        .expect("read ready line");
    let url = line
        .trim()
        .strip_prefix("ciosync-emulator listening on ")
        .expect("ready line format")
        .to_owned();
    assert!(!url.ends_with(":0"), "the real port is printed: {url}");
    let status = reqwest::Client::new()
        .put(format!("{url}/api/v1/customers/1"))
        .header("authorization", standard_auth())
        .body("{}")
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(status.ok(), Some(200));
    let refused = reqwest::Client::new()
        .put(format!("{url}/api/v1/customers/refused"))
        .header("authorization", standard_auth())
        .body("{}")
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(refused.ok(), Some(400), "--reject-id sets the reject_ids fault");
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    let exit = tokio::time::timeout(WAIT, child.wait()).await.expect("exit in time").expect("wait");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn binary_rejects_bad_arguments_with_status_2() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ciosync-emulator"))
        .args(["--site-id", "s", "--api-key", "k", "--error-rate", "3"])
        .output()
        .expect("run ciosync-emulator");
    assert_eq!(output.status.code(), Some(2));
}
