//! Campaign webhook actions over real HTTP: campaigns registered through
//! `/_emulator/campaigns`, started by segment membership changes made with
//! the Track API or by the trigger route, and delivered to a small receiver
//! started here that records what arrives. The pure rules (Liquid, spec
//! checks, redaction, queue order) are the unit tests in `src/`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use base64::engine::general_purpose;
use base64::Engine;
use ciosync_emulator::{CampaignSpec, Emulator, EmulatorConfig, WebhookRetry, ACTION_TIMEOUT};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const SITE: &str = "site";
const KEY: &str = "key";
const WAIT: Duration = Duration::from_secs(10);

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Arrival {
    method: String,
    path: String,
    headers: HeaderMap,
    body: String,
}

impl Arrival {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// What the receiver saw, and how many of the next requests it fails or
/// answers only after the emulator's timeout.
#[derive(Default)]
struct Received {
    arrivals: Vec<Arrival>,
    fail_next: usize,
    hang_next: usize,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Received>>);

impl Receiver {
    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = Router::new().fallback(record).with_state(receiver.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, format!("127.0.0.1:{}", addr.port()))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Received) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.with(|received| received.arrivals.clone())
    }
}

async fn record(
    State(receiver): State<Receiver>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let arrival = Arrival {
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let hang = receiver.with(|received| {
        received.arrivals.push(arrival);
        let hang = received.hang_next > 0;
        received.hang_next = received.hang_next.saturating_sub(1);
        hang
    });
    if hang {
        tokio::time::sleep(ACTION_TIMEOUT + Duration::from_millis(500)).await;
    }
    receiver.with(|received| {
        if received.fail_next > 0 {
            received.fail_next -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    })
}

async fn start_emulator() -> Emulator {
    let config = EmulatorConfig {
        campaign_retry: WebhookRetry {
            initial_backoff_ms: 20,
            max_backoff_ms: 50,
            max_attempts: 5,
            give_up_after_ms: 5_000,
        },
        ..EmulatorConfig::new(SITE, KEY)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Emulator::start(listener, config).await.expect("start emulator")
}

/// Sends a request (with Track API credentials); returns status and JSON.
async fn call(emu: &Emulator, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", emu.url()))
        .basic_auth(SITE, Some(KEY));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn identify(emu: &Emulator, id: &str, attributes: Value) {
    let (status, _) = call(emu, "PUT", &format!("/api/v1/customers/{id}"), Some(attributes)).await;
    assert_eq!(status, 200);
}

async fn segment(emu: &Emulator, change: &str, ids: &[&str]) {
    let path = format!("/api/v1/segments/5/{change}_customers");
    let (status, _) = call(emu, "POST", &path, Some(json!({"ids": ids}))).await;
    assert_eq!(status, 200);
}

async fn add_campaign(emu: &Emulator, campaign: Value) -> Value {
    let (status, body) = call(emu, "POST", "/_emulator/campaigns", Some(campaign)).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// Waits until `count` deliveries are listed and none is unfinished.
async fn settled(emu: &Emulator, count: usize) -> Vec<Value> {
    let done = emu
        .wait_until(WAIT, |v| {
            let deliveries = v.deliveries();
            deliveries.len() == count && deliveries.iter().all(|d| d.status.is_finished())
        })
        .await;
    let (_, listed) = call(emu, "GET", "/_emulator/campaigns/deliveries", None).await;
    assert!(done, "deliveries did not settle: {listed}");
    listed.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn entering_and_leaving_a_segment_send_the_campaigns_actions() {
    let emu = start_emulator().await;
    let (receiver, host) = Receiver::start().await;
    let listing = add_campaign(
        &emu,
        json!({
            "name": "joined",
            "trigger": {"segment_id": 5, "on": "enter"},
            "action": {
                "url": format!("http://sync:p%40ss@{host}/in"),
                "body": "{\"id\": {{ customer.id | json }}, \"name\": {{ customer.name | json }}, \"at\": {{ 'now' | date: '%s' }}}"
            }
        }),
    )
    .await;
    assert_eq!(listing["action"]["basic_auth"], true);
    add_campaign(
        &emu,
        json!({
            "name": "left",
            "trigger": {"segment_id": 5, "on": "leave"},
            "action": {
                "method": "PUT",
                "url": format!("http://{host}/out"),
                "headers": {"Authorization": "Bearer tok-123", "X-Team": "core"},
                "body": "{{ customer.email }}"
            }
        }),
    )
    .await;
    identify(&emu, "42", json!({"email": "a@x.io", "name": "Bob \"B\" Smith"})).await;

    segment(&emu, "add", &["42", "nobody"]).await;
    segment(&emu, "add", &["42"]).await; // already a member: no change, no delivery
    settled(&emu, 1).await;
    segment(&emu, "remove", &["42"]).await;
    segment(&emu, "remove", &["42"]).await; // no longer a member: nothing
    let deliveries = settled(&emu, 2).await;

    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), 2, "{arrivals:?}");
    let (joined, left) = (&arrivals[0], &arrivals[1]);
    assert_eq!((joined.method.as_str(), joined.path.as_str()), ("POST", "/in"));
    let basic = format!("Basic {}", general_purpose::STANDARD.encode("sync:p@ss"));
    assert_eq!(joined.header("authorization"), Some(basic.as_str()));
    assert_eq!(joined.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&joined.body).expect("the body is JSON");
    assert_eq!((&body["id"], &body["name"]), (&json!("42"), &json!("Bob \"B\" Smith")));
    assert!(body["at"].as_i64().is_some_and(|at| at > 1_700_000_000));
    assert_eq!((left.method.as_str(), left.path.as_str()), ("PUT", "/out"));
    assert_eq!(left.header("authorization"), Some("Bearer tok-123"));
    assert_eq!(left.header("x-team"), Some("core"));
    assert_eq!(left.body, "a@x.io");
    for (arrival, listed) in arrivals.iter().zip(&deliveries) {
        assert_eq!(arrival.header("x-cio-delivery-id"), listed["delivery_id"].as_str());
        assert_eq!(arrival.header("x-cio-idempotency-key"), listed["idempotency_key"].as_str());
    }
    assert_eq!(deliveries[0]["trigger"], "segment 5 enter");
    assert_eq!(deliveries[1]["trigger"], "segment 5 leave");
    assert_eq!(deliveries[0]["customer_id"], "42");
    assert_eq!(deliveries[0]["attempts"][0]["status"], 200);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_the_same_ids_before_the_next_and_can_be_resent() {
    let emu = start_emulator().await;
    let (receiver, host) = Receiver::start().await;
    add_campaign(
        &emu,
        json!({
            "name": "orders",
            "trigger": {"manual": true},
            "action": {"url": format!("http://{host}/orders"), "body": "{{ event.order.id }}"}
        }),
    )
    .await;
    identify(&emu, "42", json!({"email": "a@x.io"})).await;
    receiver.with(|received| received.fail_next = 2);
    let trigger = |order: u32| json!({"customer_id": "a@x.io", "event": {"order": {"id": order}}});
    let (status, first) =
        call(&emu, "POST", "/_emulator/campaigns/orders/trigger", Some(trigger(1))).await;
    assert_eq!(status, 202, "{first}");
    let (status, _) =
        call(&emu, "POST", "/_emulator/campaigns/orders/trigger", Some(trigger(2))).await;
    assert_eq!(status, 202);
    let deliveries = settled(&emu, 2).await;

    let arrivals = receiver.arrivals();
    let bodies: Vec<&str> = arrivals.iter().map(|a| a.body.as_str()).collect();
    assert_eq!(bodies, ["1", "1", "1", "2"], "the second waits for the first's retries");
    fn ids(a: &Arrival) -> (Option<&str>, Option<&str>) {
        (a.header("x-cio-delivery-id"), a.header("x-cio-idempotency-key"))
    }
    assert_eq!(ids(&arrivals[0]), ids(&arrivals[2]), "a retry keeps its ids");
    assert_eq!(ids(&arrivals[0]).0, first["delivery_id"].as_str());
    assert_ne!(ids(&arrivals[0]), ids(&arrivals[3]));
    let statuses: Vec<&Value> =
        deliveries[0]["attempts"].as_array().into_iter().flatten().map(|a| &a["status"]).collect();
    assert_eq!(statuses, [&json!(500), &json!(500), &json!(200)]);

    let resend = format!(
        "/_emulator/campaigns/deliveries/{}/resend",
        first["delivery_id"].as_str().unwrap_or_default()
    );
    let (status, resent) = call(&emu, "POST", &resend, None).await;
    assert_eq!(status, 202, "{resent}");
    let deliveries = settled(&emu, 2).await;
    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), 5);
    assert_eq!(ids(&arrivals[4]), ids(&arrivals[0]), "a resend is a repeat");
    assert_eq!(arrivals[4].body, "1");
    assert_eq!(deliveries[0]["resends"], 1);
    assert_eq!(deliveries[0]["attempts"].as_array().map(Vec::len), Some(4));
    let (status, _) = call(&emu, "POST", "/_emulator/campaigns/deliveries/nope/resend", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn campaigns_are_listed_without_credentials_and_bad_ones_are_refused() {
    let emu = start_emulator().await;
    let campaign = json!({
        "name": "c",
        "trigger": {"manual": true},
        "action": {
            "url": "https://user:hunter2@example.com/x?key=k3y",
            "headers": {"Authorization": "Bearer tok-123"}
        }
    });
    add_campaign(&emu, campaign.clone()).await;
    let (status, duplicate) = call(&emu, "POST", "/_emulator/campaigns", Some(campaign)).await;
    assert_eq!((status, duplicate["error"].is_string()), (409, true));
    let (status, listed) = call(&emu, "GET", "/_emulator/campaigns", None).await;
    assert_eq!(status, 200);
    let text = listed.to_string();
    for secret in ["user", "hunter2", "k3y", "tok-123"] {
        assert!(!text.contains(secret), "{secret} listed: {text}");
    }
    assert_eq!(listed[0]["action"]["url"], "https://example.com/x?key=%5Bredacted%5D");

    let bad = json!({"name": "b", "trigger": {"segment_id": 5, "on": "stay"}, "action": {"url": "http://h/"}});
    let (status, body) = call(&emu, "POST", "/_emulator/campaigns", Some(bad)).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("trigger.on")), "{body}");
    let (status, _) = call(&emu, "POST", "/_emulator/campaigns", Some(json!({"name": 1}))).await;
    assert_eq!(status, 400);

    let (status, body) =
        call(&emu, "POST", "/_emulator/campaigns/c/trigger", Some(json!({"customer_id": "7"})))
            .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("no such customer")));
    let (status, body) =
        call(&emu, "POST", "/_emulator/campaigns/x/trigger", Some(json!({"customer_id": "7"})))
            .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("no such campaign")));
    let (status, _) = call(&emu, "DELETE", "/_emulator/campaigns/c", None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&emu, "DELETE", "/_emulator/campaigns/c", None).await;
    assert_eq!(status, 404);
    let (_, listed) = call(&emu, "GET", "/_emulator/campaigns", None).await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn a_delivery_failing_past_the_limit_is_failed_and_the_next_goes() {
    let emu = start_emulator().await;
    let (receiver, host) = Receiver::start().await;
    let spec = |name: &str, method: &str, url: String| {
        serde_json::from_value::<CampaignSpec>(json!({
            "name": name,
            "trigger": {"manual": true},
            "action": {"method": method, "url": url, "body": "{{ event.n }}"}
        }))
        .expect("spec")
    };
    emu.add_campaign(spec("flaky", "PATCH", format!("http://{host}/flaky"))).expect("add");
    // Nothing listens on port 9 (discard) on a test machine: refused.
    emu.add_campaign(spec("nowhere", "POST", "http://127.0.0.1:9/x".into())).expect("add");
    emu.add_campaign(spec("lookup", "GET", format!("http://{host}/lookup"))).expect("add");
    assert!(emu.add_campaign(spec("lookup", "GET", format!("http://{host}/x"))).is_err());
    identify(&emu, "42", json!({"email": "a@x.io"})).await;
    receiver.with(|received| received.fail_next = 5); // the configured max_attempts
    let event = |n: u32| json!({"n": n}).as_object().cloned().unwrap_or_default();
    let first = emu.trigger_campaign("flaky", "42", event(1)).expect("first");
    emu.trigger_campaign("flaky", "42", event(2)).expect("second");
    let refused = emu.trigger_campaign("nowhere", "cio_03000001", event(3)).expect("refused");
    assert!(emu.trigger_campaign("lookup", "7", event(4)).is_err(), "unknown person");
    settled(&emu, 3).await;
    emu.trigger_campaign("lookup", "a@x.io", event(4)).expect("get");
    let deliveries = settled(&emu, 4).await;

    let flaky: Vec<String> = receiver
        .arrivals()
        .iter()
        .filter(|a| a.path == "/flaky")
        .map(|a| format!("{} {}", a.method, a.body))
        .collect();
    assert_eq!(flaky, ["PATCH 1", "PATCH 1", "PATCH 1", "PATCH 1", "PATCH 1", "PATCH 2"]);
    let by_id = |id: &str| deliveries.iter().find(|d| d["delivery_id"] == id).cloned();
    let first = by_id(&first.delivery_id).expect("listed");
    assert_eq!(
        (first["status"].as_str(), first["attempts"].as_array().map(Vec::len)),
        (Some("failed"), Some(5))
    );
    let refused = by_id(&refused.delivery_id).expect("listed");
    assert_eq!(refused["status"], "failed");
    assert!(refused["attempts"][0]["error"].as_str().is_some_and(|e| !e.contains("127.0.0.1:9")));
    let lookup = receiver.arrivals().into_iter().find(|a| a.path == "/lookup").expect("GET");
    assert_eq!((lookup.method.as_str(), lookup.body.as_str()), ("GET", ""), "no body on GET");

    let resent = emu.resend_delivery(first["delivery_id"].as_str().unwrap_or_default());
    assert!(resent.is_ok_and(|d| d.resends == 1), "a failed delivery can be sent again");
    let deliveries = settled(&emu, 4).await;
    assert_eq!(deliveries[0]["status"], "delivered");
    assert_eq!(deliveries[0]["attempts"].as_array().map(Vec::len), Some(6));
}

#[tokio::test]
async fn a_delivery_answered_too_late_is_sent_again_with_the_same_ids() {
    let emu = start_emulator().await;
    let (receiver, host) = Receiver::start().await;
    add_campaign(
        &emu,
        json!({"name": "slow", "trigger": {"manual": true}, "action": {"url": format!("http://{host}/slow")}}),
    )
    .await;
    identify(&emu, "42", json!({})).await;
    receiver.with(|received| received.hang_next = 1);
    let (status, _) =
        call(&emu, "POST", "/_emulator/campaigns/slow/trigger", Some(json!({"customer_id": "42"})))
            .await;
    assert_eq!(status, 202);
    let deliveries = settled(&emu, 1).await;
    let attempts = deliveries[0]["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["error"], format!("timed out after {} s", ACTION_TIMEOUT.as_secs()));
    assert_eq!(attempts[1]["status"], 200);
    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), 2);
    for name in ["x-cio-delivery-id", "x-cio-idempotency-key"] {
        assert_eq!(arrivals[0].header(name), arrivals[1].header(name), "{name}");
        assert!(arrivals[0].header(name).is_some());
    }
}
