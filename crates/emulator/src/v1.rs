//! Track API v1 routes: identify (with `cio_relationships`), delete,
//! events, suppress, merge, devices, region.
//!
//! Each handler turns the request into model operations with a pure
//! `*_op` function (validated the way Customer.io validates, with its exact
//! 400 messages where known), then applies them. Success is 200 `{}`;
//! validation failures are 400 `{"meta":{"errors":[…]}}`, except merge,
//! whose documented 400 is `{"meta":{"error":…}}`. A valid request naming a
//! person whose id is in the `reject_ids` fault, or an event whose name is
//! in `reject_event_names`, gets the same 400.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use ciosync_track_api::{
    Identifier, RegionResponse, V1ErrorResponse, V1Meta, EU_TRACK_URL, US_TRACK_URL,
};
use serde_json::{json, Map, Value};

use crate::config::EmulatorConfig;
use crate::devices::DeviceOp;
use crate::faults::mark_injected;
use crate::identity::parse_path_identifier;
use crate::items;
use crate::model::Op;
use crate::state::Shared;
use crate::validate::{
    check_attributes, check_identifier, optional_integer, parse_event, Problem, ValueTypes,
    REASON_INVALID,
};

/// The v1 routes, without auth or faults (the caller layers those).
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/accounts/region", get(region))
        .route("/api/v1/customers/{identifier}", put(identify).delete(delete_customer))
        .route("/api/v1/customers/{identifier}/events", post(event))
        .route("/api/v1/customers/{identifier}/suppress", post(suppress))
        .route("/api/v1/customers/{identifier}/unsuppress", post(unsuppress))
        .route("/api/v1/customers/{identifier}/devices", put(device))
        .route("/api/v1/customers/{identifier}/devices/{device_id}", delete(delete_device))
        .route("/api/v1/events", post(anonymous_event))
        .route("/api/v1/merge_customers", post(merge))
}

/// Current Unix seconds, the time stamped on changes without `_timestamp`.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// 200 with the empty object Customer.io answers.
pub fn ok() -> Response {
    (StatusCode::OK, Json(json!({}))).into_response()
}

/// 400 `{"meta":{"errors":[…]}}`.
pub fn invalid(problems: Vec<Problem>) -> Response {
    let body = V1ErrorResponse {
        meta: V1Meta { errors: problems.into_iter().map(|p| p.message).collect(), error: None },
    };
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn answer(shared: &Shared, op: Result<Op, Vec<Problem>>) -> Response {
    match op {
        Ok(op) => match rejected(shared, &op) {
            None => match shared.apply([op]).pop().flatten() {
                None => ok(),
                Some(problem) => invalid(vec![problem]),
            },
            Some(problem) => mark_injected(invalid(vec![problem])),
        },
        Err(problems) => invalid(problems),
    }
}

/// The problem to answer if the `reject_ids` fault refuses a person `op`
/// names, or `reject_event_names` its event.
pub fn rejected(shared: &Shared, op: &Op) -> Option<Problem> {
    shared.read(|inner| inner.faults.refusal(op)).map(|fault| fault.problem())
}

async fn region(State(shared): State<Shared>) -> Response {
    let config = shared.config();
    let url = if config.region == "eu" { EU_TRACK_URL } else { US_TRACK_URL };
    Json(RegionResponse {
        url: url.to_owned(),
        region: config.region.clone(),
        environment_id: config.environment_id,
    })
    .into_response()
}

async fn identify(State(shared): State<Shared>, Path(raw): Path<String>, body: Bytes) -> Response {
    let op = identify_op(&raw, &body, shared.config(), now_secs());
    answer(&shared, op)
}

async fn delete_customer(State(shared): State<Shared>, Path(raw): Path<String>) -> Response {
    answer(&shared, path_target(&raw).map(|target| Op::Delete { target }))
}

async fn suppress(State(shared): State<Shared>, Path(raw): Path<String>) -> Response {
    answer(&shared, path_target(&raw).map(|target| Op::Suppress { target }))
}

async fn unsuppress(State(shared): State<Shared>, Path(raw): Path<String>) -> Response {
    answer(&shared, path_target(&raw).map(|target| Op::Unsuppress { target }))
}

async fn event(State(shared): State<Shared>, Path(raw): Path<String>, body: Bytes) -> Response {
    let op = path_target(&raw).and_then(|target| {
        let event = parse_event(&body_object(&body)?, "data", None, "", now_secs())?;
        Ok(Op::Event { target, event })
    });
    answer(&shared, op)
}

async fn anonymous_event(State(shared): State<Shared>, body: Bytes) -> Response {
    answer(&shared, anonymous_event_op(&body, now_secs()))
}

/// Adds or updates a device: `{"device": {id, platform, last_used?,
/// attributes?}}` (see `items::device`).
async fn device(State(shared): State<Shared>, Path(raw): Path<String>, body: Bytes) -> Response {
    answer(&shared, device_op(&raw, &body, now_secs()))
}

/// Validates a v1 device body and turns it into an operation.
pub fn device_op(raw: &str, body: &[u8], now: i64) -> Result<Op, Vec<Problem>> {
    let target = path_target(raw)?;
    let body = body_object(body)?;
    let device = items::device(body.get("device"), "id", now).map_err(|problem| vec![problem])?;
    Ok(Op::Device(DeviceOp::Add { target, device }))
}

/// Deletes the person's device with the path's token. An unknown token or
/// person changes nothing and is answered 200 (the real answer is
/// UNCONFIRMED; a delete of something absent is not an error elsewhere).
async fn delete_device(
    State(shared): State<Shared>,
    Path((raw, token)): Path<(String, String)>,
) -> Response {
    let op = path_target(&raw).map(|target| Op::Device(DeviceOp::Delete { target, token }));
    answer(&shared, op)
}

async fn merge(State(shared): State<Shared>, body: Bytes) -> Response {
    match merge_op(&body) {
        Ok(op) => match rejected(&shared, &op) {
            None => {
                shared.apply([op]);
                ok()
            }
            Some(problem) => mark_injected(merge_invalid(problem.message)),
        },
        Err(message) => merge_invalid(message),
    }
}

/// Merge's documented 400: `{"meta":{"error":…}}`.
fn merge_invalid(message: String) -> Response {
    let body = V1ErrorResponse { meta: V1Meta { errors: Vec::new(), error: Some(message) } };
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// The person a (percent-decoded) path segment names.
pub fn path_target(raw: &str) -> Result<Identifier, Vec<Problem>> {
    match check_identifier(raw, "identifier") {
        Some(problem) => Err(vec![problem]),
        None => Ok(parse_path_identifier(raw)),
    }
}

/// The body as a JSON object; an empty body counts as `{}`. The messages
/// are guesses: Customer.io's wording for these cases is unknown.
pub fn body_object(body: &[u8]) -> Result<Map<String, Value>, Vec<Problem>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => {
            Err(vec![Problem::new(REASON_INVALID, "body", "request body must be a JSON object")])
        }
        Err(_) => Err(vec![Problem::new(REASON_INVALID, "body", "request body is not valid JSON")]),
    }
}

/// Validates an identify and turns it into an operation. `_timestamp` and
/// `_update` are control keys, not stored as attributes.
pub fn identify_op(
    raw: &str,
    body: &[u8],
    config: &EmulatorConfig,
    now: i64,
) -> Result<Op, Vec<Problem>> {
    let target = path_target(raw)?;
    let mut attributes = body_object(body)?;
    // A documented property, not an attribute: an object, checked on its own.
    let relationships = attributes
        .remove("cio_relationships")
        .map(|value| items::v1_relationships(&value, &target))
        .transpose()
        .map_err(|problem| vec![problem])?;
    let types =
        if config.strict_v1_values { ValueTypes::StringIntegerBoolean } else { ValueTypes::Any };
    let mut problems = check_attributes(&attributes, "", types);
    let timestamp = optional_integer(&attributes, "_timestamp", "").unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    if !problems.is_empty() {
        return Err(problems);
    }
    let update_only = attributes.remove("_update") == Some(Value::Bool(true));
    attributes.remove("_timestamp");
    let identify =
        Op::Identify { target, attributes, timestamp: timestamp.unwrap_or(now), update_only };
    Ok(match relationships {
        Some(relate) => Op::Many(vec![identify, relate]),
        None => identify,
    })
}

/// Validates an anonymous event. Only `name` is required: the published
/// schema (`anonymousEventsRequest`, every variant) leaves `anonymous_id`
/// optional, and an event without one is how Customer.io's "invite" events
/// reach someone not yet a person (`data.recipient`, documented for
/// anonymous events), so it is kept though it can never join a person.
pub fn anonymous_event_op(body: &[u8], now: i64) -> Result<Op, Vec<Problem>> {
    let object = body_object(body)?;
    let event = parse_event(&object, "data", None, "", now)?;
    Ok(Op::AnonymousEvent { event })
}

/// Validates a merge: `primary` and `secondary` must each name exactly one
/// of `id`, `email`, `cio_id` (a non-empty string). Messages are guesses in
/// the documented `{"meta":{"error":…}}` shape.
pub fn merge_op(body: &[u8]) -> Result<Op, String> {
    let object = body_object(body)
        .map_err(|problems| problems.into_iter().next().map(|p| p.message).unwrap_or_default())?;
    let primary = merge_side(&object, "primary")?;
    let secondary = merge_side(&object, "secondary")?;
    Ok(Op::Merge { primary, secondary })
}

fn merge_side(object: &Map<String, Value>, side: &str) -> Result<Identifier, String> {
    let wrong = || format!("{side} must have exactly one identifier: id, email or cio_id");
    let Some(Value::Object(identifiers)) = object.get(side) else {
        return Err(wrong());
    };
    let mut entries = identifiers.iter();
    let (Some((kind, Value::String(value))), None) = (entries.next(), entries.next()) else {
        return Err(wrong());
    };
    if value.is_empty() {
        return Err(wrong());
    }
    if let Some(problem) = check_identifier(value, side) {
        return Err(problem.message);
    }
    match kind.as_str() {
        "id" => Ok(Identifier::Id(value.clone())),
        "email" => Ok(Identifier::Email(value.clone())),
        "cio_id" => Ok(Identifier::CioId(value.clone())),
        _ => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(result: Result<Op, Vec<Problem>>) -> Vec<String> {
        result.err().unwrap_or_default().into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn identify_strips_control_keys_and_reads_the_timestamp() {
        let body = br#"{"plan":"pro","_timestamp":5,"_update":true}"#;
        let op = identify_op("42", body, &EmulatorConfig::default(), 99);
        let expected = Op::Identify {
            target: Identifier::Id("42".into()),
            attributes: [("plan".to_owned(), json!("pro"))].into_iter().collect(),
            timestamp: 5,
            update_only: true,
        };
        assert_eq!(op, Ok(expected));
    }

    #[test]
    fn identify_rejects_floats_only_in_strict_mode() {
        let strict = EmulatorConfig::default();
        assert_eq!(
            messages(identify_op("1", br#"{"score":0.5}"#, &strict, 0)),
            ["value for attribute 'score' must be a string, integer or boolean"]
        );
        let lenient = EmulatorConfig { strict_v1_values: false, ..strict };
        assert!(identify_op("1", br#"{"score":0.5}"#, &lenient, 0).is_ok());
    }

    #[test]
    fn identify_rejects_long_identifiers_and_bad_bodies() {
        let config = EmulatorConfig::default();
        assert_eq!(
            messages(identify_op(&"x".repeat(151), b"{}", &config, 0)),
            ["identifier cannot be longer than 150 bytes"]
        );
        assert_eq!(
            messages(identify_op("1", b"[1]", &config, 0)),
            ["request body must be a JSON object"]
        );
        assert!(identify_op("1", b"", &config, 0).is_ok());
    }

    #[test]
    fn anonymous_events_need_a_name_but_no_anonymous_id() {
        let invite = br#"{"name":"invite","data":{"recipient":"new@x.io"}}"#;
        let Ok(Op::AnonymousEvent { event }) = anonymous_event_op(invite, 0) else {
            panic!("an invite without anonymous_id is a valid anonymous event");
        };
        assert_eq!((event.name.as_str(), event.anonymous_id), ("invite", None));
        assert!(anonymous_event_op(br#"{"name":"x","anonymous_id":"a"}"#, 0).is_ok());
        assert!(anonymous_event_op(br#"{"anonymous_id":"a"}"#, 0).is_err());
    }

    #[test]
    fn merge_needs_exactly_one_identifier_per_side() {
        assert!(merge_op(br#"{"primary":{"id":"1"},"secondary":{"email":"a@b.c"}}"#).is_ok());
        let two = merge_op(br#"{"primary":{"id":"1","email":"a@b.c"},"secondary":{"id":"2"}}"#);
        assert_eq!(
            two,
            Err("primary must have exactly one identifier: id, email or cio_id".into())
        );
        assert!(merge_op(br#"{"primary":{"id":"1"}}"#).unwrap_err().starts_with("secondary"));
        assert!(merge_op(br#"{"primary":{"phone":"+1"},"secondary":{"id":"2"}}"#).is_err());
    }
}
