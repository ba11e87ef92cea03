//! The emulator over real HTTP: what only a request through its router can
//! show (the 401 bodies, the v1 routes reaching the model, size limits past
//! the HTTP layer, request-level and per-item faults as the middleware and
//! handlers apply them, the inspection endpoints, the binary). The rules
//! themselves (the model, validation messages, auth, fault decisions) are
//! the unit tests in `src/`. Its own test binary, in this crate, so the
//! `ciosync-emulator` binary is built for it (`CARGO_BIN_EXE_…`);
//! `cargo test -p ciosync-emulator` runs it with the unit tests.

use std::time::Duration;

use base64::engine::general_purpose;
use base64::Engine;
use ciosync_emulator::{Emulator, EmulatorConfig, Faults};
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

/// Which credentials pass is `auth.rs`'s unit tests (both alphabets, with
/// and without padding); here: the 401 bodies each API answers, and the
/// inspection routes open without credentials.
#[tokio::test]
async fn refused_credentials_get_each_apis_401_and_inspection_needs_none() {
    let emu = start_default().await;
    let url_safe = auth(&general_purpose::URL_SAFE_NO_PAD.encode(format!("{SITE}:{KEY}")));
    let (status, _, _) = send(&emu, "GET", "/api/v1/accounts/region", None, Some(url_safe)).await;
    assert_eq!(status, 200, "the header reaches the check as sent");
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

/// What each call does to a person is `model_tests.rs`; here: the v1
/// routes reach it, a percent-encoded email in the path naming the person
/// with that email.
#[tokio::test]
async fn v1_routes_reach_the_model() {
    let emu = start_default().await;
    assert_eq!(identify(&emu, "42", json!({"email": "Ann@X.io"})).await, (200, json!({})));
    assert_eq!(identify(&emu, "ANN%40x.io", json!({"vip": true})).await.0, 200);
    assert_eq!(
        emu.customers().into_values().map(Value::Object).collect::<Vec<_>>(),
        [json!({"id": "42", "email": "Ann@X.io", "vip": true})]
    );
    let event = json!({"name": "paid", "id": "01HZY5V6J3K9Q3W8Z6X1N2M3P4"});
    assert_eq!(call(&emu, "POST", "/api/v1/customers/42/events", Some(&event)).await.0, 200);
    assert_eq!(emu.events("42").len(), 1);

    assert_eq!(call(&emu, "POST", "/api/v1/customers/42/suppress", None).await.0, 200);
    assert!(emu.customers().is_empty());
    assert_eq!(identify(&emu, "42", json!({"plan": "pro"})).await.0, 200);
    assert!(emu.customers().is_empty(), "suppressed: the identify is ignored");
    assert_eq!(call(&emu, "POST", "/api/v1/customers/42/unsuppress", None).await.0, 200);
    identify(&emu, "42", json!({"plan": "pro"})).await;
    assert!(emu.customer("42").is_some());

    let merge = json!({"primary": {"id": "42"}, "secondary": {"id": "7"}});
    identify(&emu, "7", json!({"city": "Oslo"})).await;
    assert_eq!(call(&emu, "POST", "/api/v1/merge_customers", Some(&merge)).await.0, 200);
    assert!(emu.customer("7").is_none());
    assert_eq!(emu.customer("42").and_then(|c| c.get("city").cloned()), Some(json!("Oslo")));
    assert_eq!(call(&emu, "DELETE", "/api/v1/customers/42", None).await.0, 200);
    assert!(emu.customers().is_empty());
}

/// The size limits are Customer.io's, answered with its messages, not cut
/// short by the HTTP layer: a v1 event with 100 KB of data reaches the
/// check (`validate.rs` tests the messages), a batch over 500 KB and an
/// entity over 32 KB are refused whole.
#[tokio::test]
async fn size_limits_are_checked_past_the_http_layer() {
    let emu = start_default().await;
    let event = json!({"name": "e", "data": {"d": "x".repeat(100_000)}});
    let (status, _, answer) = call(&emu, "POST", "/api/v1/customers/1/events", Some(&event)).await;
    assert_eq!(
        (status, answer),
        (400, v1_errors(&["event data cannot be longer than 100000 bytes"]))
    );
    let huge = json!({"batch": [], "pad": "x".repeat(500_000)}).to_string();
    let (status, _, _) =
        send(&emu, "POST", "/api/v2/batch", Some(huge), Some(standard_auth())).await;
    assert_eq!(status, 400);
    let big_entity = json!({"type": "person", "action": "identify", "identifiers": {"id": "c"},
                            "attributes": {"pad": "x".repeat(32_000)}});
    let (status, _, _) = call(&emu, "POST", "/api/v2/entity", Some(&big_entity)).await;
    assert_eq!(status, 400);
    assert!(emu.customers().is_empty());
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
    let entity = json!({"type": "person", "action": "identify", "identifiers": {"id": "c"}});
    assert_eq!(call(&emu, "POST", "/api/v2/entity", Some(&entity)).await.2, json!({}));
    assert!(emu.customer("c").is_some());
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

fn identify_item(id: &str) -> Value {
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

/// Per-item faults as the handlers apply them (which items `reject_ids`
/// matches is `faults.rs`'s unit tests): a refused item is not applied and
/// is listed in the 207 while the others are, until the fault is cleared;
/// every other route refuses the request.
#[tokio::test]
async fn a_rejected_id_fails_only_its_item_on_every_route_until_cleared() {
    let emu = start_default().await;
    emu.set_faults(Faults { reject_ids: vec!["bad".into()], ..Faults::default() });
    let merge = json!({"type": "person", "action": "merge",
                       "primary": {"id": "a"}, "secondary": {"id": "bad"}});
    let items = json!([identify_item("a"), identify_item("bad"), merge]);
    let expected = json!({"errors": [rejected(1, "identifiers"), rejected(2, "secondary")]});
    assert_eq!(batch(&emu, items.clone()).await, (207, expected.clone()));
    assert!(emu.customer("a").is_some());
    assert!(emu.customer("bad").is_none(), "a refused item is not applied");
    // Refused for good: sending it again changes nothing.
    assert_eq!(batch(&emu, items.clone()).await, (207, expected));
    assert!(emu.customer("bad").is_none());
    let injected: Vec<bool> = emu.requests().iter().map(|r| r.injected_fault).collect();
    assert_eq!(injected, [true, true]);

    let (status, _, body) = call(&emu, "POST", "/api/v2/entity", Some(&identify_item("bad"))).await;
    assert_eq!((status, body["errors"][0]["field"].clone()), (400, json!("identifiers")));
    let v1 = identify(&emu, "bad", json!({"plan": "pro"})).await;
    let v1_error = json!({"meta": {"errors": ["person id refused (emulator fault reject_ids)"]}});
    assert_eq!(v1, (400, v1_error));
    let v1_merge = json!({"primary": {"id": "bad"}, "secondary": {"id": "a"}});
    let (status, _, body) = call(&emu, "POST", "/api/v1/merge_customers", Some(&v1_merge)).await;
    assert_eq!((status, body["meta"]["error"].is_string()), (400, true));
    assert!(emu.customer("bad").is_none());

    // "Fix the cause": the same items are accepted.
    emu.set_faults(Faults::default());
    assert_eq!(batch(&emu, json!([identify_item("bad")])).await, (200, json!({})));
    assert_eq!(emu.customer("bad").and_then(|c| c.get("plan").cloned()), Some(json!("pro")));
}

/// `item_errors_next` set over HTTP fails the next items once (the count
/// across requests is `faults.rs`'s unit tests); the retry goes through.
#[tokio::test]
async fn item_errors_next_fails_the_next_items_once() {
    let emu = start_default().await;
    let faults = json!({"item_errors_next": 2}).to_string();
    assert_eq!(send(&emu, "PUT", "/_emulator/faults", Some(faults), None).await.0, 200);

    let items = json!([identify_item("a"), identify_item("b"), identify_item("c")]);
    assert_eq!(
        batch(&emu, items.clone()).await,
        (207, json!({"errors": [transient(0), transient(1)]}))
    );
    assert!(emu.customer("a").is_none() && emu.customer("b").is_none());
    assert!(emu.customer("c").is_some());
    assert_eq!(emu.faults().item_errors_next, 0);
    assert_eq!(batch(&emu, items).await, (200, json!({})));
    assert_eq!(emu.customers().len(), 3);
}

/// With `errors_with_200` the item errors, of validation and of faults
/// alike, come in a 200.
#[tokio::test]
async fn errors_with_200_mode_answers_item_errors_with_200() {
    let emu =
        start(EmulatorConfig { errors_with_200: true, ..EmulatorConfig::new(SITE, KEY) }).await;
    emu.set_faults(Faults {
        reject_ids: vec!["bad".into()],
        item_errors_next: 1,
        ..Faults::default()
    });
    let invalid = json!({"type": "person", "action": "delete"});
    let items = json!([identify_item("a"), identify_item("bad"), identify_item("c"), invalid]);
    let (status, body) = batch(&emu, items).await;
    assert_eq!(status, 200);
    let errors = body["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors[..2], [transient(0), rejected(1, "identifiers")]);
    assert_eq!(errors[2]["batch_index"], 3);
    assert!(emu.customer("c").is_some());
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
    let empty_id =
        send(&emu, "PUT", "/_emulator/faults", Some(r#"{"reject_ids":[""]}"#.into()), None).await;
    assert_eq!(empty_id.0, 400);
    assert!(empty_id.2["error"].as_str().is_some_and(|m| m.starts_with("reject_ids")));
    assert_eq!(emu.faults().fail_status, 429, "a refused PUT leaves the faults as they were");

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
