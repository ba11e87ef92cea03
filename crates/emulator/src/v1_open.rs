//! Track API routes Customer.io serves without auth: custom unsubscribe,
//! message metrics and (deprecated) push metrics. The emulator sends no
//! messages, so these mostly change nothing: each call is kept as an item
//! in `/_emulator/unmodelled`, after the checks the published schema makes
//! (400 `{"meta":{"errors":[…]}}`; the spec lists no 400 for the two metric
//! routes, but a body failing their schema is a client bug worth seeing).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use ciosync_track_api::Identifier;
use serde_json::{json, Map, Value};

use crate::model::Op;
use crate::state::{Inner, Shared};
use crate::v1::{body_object, invalid, now_secs, ok};
use crate::validate::{optional_integer, Problem, REASON_INVALID, REASON_REQUIRED};

/// Metrics `POST /api/v1/metrics` takes, over all channels (documented).
pub const METRICS: [&str; 8] =
    ["bounced", "clicked", "converted", "deferred", "delivered", "dropped", "opened", "spammed"];
/// Events `POST /api/v1/push/events` takes (documented).
pub const PUSH_EVENTS: [&str; 3] = ["opened", "converted", "delivered"];

/// The routes that take no credentials (faults still apply).
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/unsubscribe/{delivery_id}", post(unsubscribe))
        .route("/api/v1/metrics", post(metrics))
        .route("/api/v1/push/events", post(push_events))
}

fn problem(field: &str, message: impl Into<String>) -> Problem {
    Problem::new(REASON_INVALID, field, message)
}

/// Sets `unsubscribed: true` on the person the delivery went to, when the
/// emulator sent that delivery's webhooks; `{"unsubscribe": false}` only
/// records the call. Requires a JSON content type, as documented.
async fn unsubscribe(
    State(shared): State<Shared>,
    Path(delivery_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let wanted = match unsubscribe_body(&headers, &body) {
        Ok(wanted) => wanted,
        Err(problems) => return invalid(problems),
    };
    let person = shared.read(|inner| delivery_person(inner, &delivery_id));
    let item = json!({"v1": "unsubscribe", "delivery_id": delivery_id, "unsubscribe": wanted});
    let mut ops = vec![Op::Unmodelled { item, person: None }];
    if let (true, Some(target)) = (wanted, person) {
        let attributes = [("unsubscribed".to_owned(), Value::Bool(true))].into_iter().collect();
        ops.push(Op::Identify { target, attributes, timestamp: now_secs(), update_only: true });
    }
    shared.apply(ops);
    ok()
}

/// Whether the call asks to unsubscribe: yes unless `unsubscribe` is false.
pub fn unsubscribe_body(headers: &HeaderMap, body: &[u8]) -> Result<bool, Vec<Problem>> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("application/json"));
    if !json {
        return Err(vec![problem("content-type", "Content-Type must be application/json")]);
    }
    match body_object(body)?.get("unsubscribe") {
        None => Ok(true),
        Some(Value::Bool(wanted)) => Ok(*wanted),
        Some(_) => Err(vec![problem("unsubscribe", "unsubscribe must be a boolean")]),
    }
}

/// The person a webhook the emulator sent for `delivery_id` was about: the
/// first of its identifiers (`cio_id`, `id`, `email`) naming someone now
/// (a webhook for someone unknown then carries a made-up `cio_id`).
fn delivery_person(inner: &Inner, delivery_id: &str) -> Option<Identifier> {
    let data = inner
        .webhooks
        .records()
        .map(|record| &record.payload["data"])
        .find(|data| data["delivery_id"].as_str() == Some(delivery_id))?;
    let identifiers = &data["identifiers"];
    let named = |kind: &str| identifiers[kind].as_str().map(str::to_owned);
    [
        named("cio_id").map(Identifier::CioId),
        named("id").map(Identifier::Id),
        named("email").map(Identifier::Email),
    ]
    .into_iter()
    .flatten()
    .find(|identifier| inner.world.person(identifier).is_some())
}

async fn metrics(State(shared): State<Shared>, body: Bytes) -> Response {
    keep(&shared, "metrics", metrics_body(&body))
}

async fn push_events(State(shared): State<Shared>, body: Bytes) -> Response {
    keep(&shared, "push_metrics", push_body(&body))
}

fn keep(shared: &Shared, route: &str, body: Result<Map<String, Value>, Vec<Problem>>) -> Response {
    match body {
        Ok(body) => {
            let item = json!({"v1": route, "body": body});
            shared.apply([Op::Unmodelled { item, person: None }]);
            ok()
        }
        Err(problems) => invalid(problems),
    }
}

/// `delivery_id` and `metric` are required; `timestamp` is an integer.
pub fn metrics_body(body: &[u8]) -> Result<Map<String, Value>, Vec<Problem>> {
    let object = body_object(body)?;
    let mut problems = Vec::new();
    if !matches!(object.get("delivery_id"), Some(Value::String(id)) if !id.is_empty()) {
        problems.push(Problem::new(REASON_REQUIRED, "delivery_id", "delivery_id must be present"));
    }
    check_one_of(&object, "metric", &METRICS, true, &mut problems);
    check_timestamp(&object, &mut problems);
    problems.is_empty().then_some(object).ok_or(problems)
}

/// Nothing is required; `event` is one of three, `timestamp` an integer.
pub fn push_body(body: &[u8]) -> Result<Map<String, Value>, Vec<Problem>> {
    let object = body_object(body)?;
    let mut problems = Vec::new();
    check_one_of(&object, "event", &PUSH_EVENTS, false, &mut problems);
    check_timestamp(&object, &mut problems);
    problems.is_empty().then_some(object).ok_or(problems)
}

fn check_one_of(
    object: &Map<String, Value>,
    field: &str,
    allowed: &[&str],
    required: bool,
    problems: &mut Vec<Problem>,
) {
    match object.get(field) {
        None if !required => {}
        Some(Value::String(value)) if allowed.contains(&value.as_str()) => {}
        _ => {
            problems.push(problem(field, format!("{field} must be one of {}", allowed.join(", "))))
        }
    }
}

fn check_timestamp(object: &Map<String, Value>, problems: &mut Vec<Problem>) {
    if let Err(problem) = optional_integer(object, "timestamp", "") {
        problems.push(problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn messages<T>(result: Result<T, Vec<Problem>>) -> Vec<String> {
        result.err().unwrap_or_default().into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn unsubscribe_needs_json_and_defaults_to_yes() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            messages(unsubscribe_body(&headers, b"{}")),
            ["Content-Type must be application/json"]
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(unsubscribe_body(&headers, b""), Ok(true));
        assert_eq!(unsubscribe_body(&headers, br#"{"unsubscribe":false}"#), Ok(false));
        assert!(unsubscribe_body(&headers, br#"{"unsubscribe":"yes"}"#).is_err());
    }

    #[test]
    fn metrics_need_a_delivery_and_a_known_metric() {
        assert!(metrics_body(br#"{"delivery_id":"d","metric":"opened","timestamp":1}"#).is_ok());
        assert_eq!(
            messages(metrics_body(br#"{"metric":"read"}"#)),
            [
                "delivery_id must be present",
                "metric must be one of bounced, clicked, converted, deferred, delivered, dropped, opened, spammed"
            ]
        );
        assert!(push_body(b"{}").is_ok());
        assert!(push_body(br#"{"event":"bounced"}"#).is_err());
        assert!(push_body(br#"{"event":"opened","timestamp":"x"}"#).is_err());
    }
}
