//! Track API v2 routes: `/api/v2/entity` (one item) and `/api/v2/batch`.
//!
//! A batch is checked as a whole first (size, JSON, a `batch` array): any
//! failure there is a 400 `{"errors":[{reason, field, message}]}` and nothing
//! applies. Then each item is checked on its own; valid items apply in
//! order, invalid ones are listed in a 207 `{"errors":[{batch_index, …}]}`
//! (or a 200 with the same body when `errors_with_200` is set). The
//! `reason` and `field` wording is the emulator's guess; `message` reuses
//! Customer.io's v1 texts where the same limit applies. Injected per-item
//! faults (`reject_ids`, `reject_event_names`, `item_errors_next`) fail
//! valid items the same way.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ciosync_track_api::{
    ErrorsResponse, Identifier, ItemError, MAX_BATCH_BYTES, MAX_BATCH_ITEM_BYTES, MAX_ENTITY_BYTES,
};
use serde_json::{Map, Value};

use crate::accept_only;
use crate::faults::{mark_injected, ItemFault};
use crate::items;
use crate::model::Op;
use crate::state::Shared;
use crate::v1::{now_secs, ok};
use crate::validate::{
    check_attributes, check_identifier, optional_integer, parse_event, Problem, ValueTypes,
    REASON_INVALID, REASON_REQUIRED, REASON_TOO_LARGE,
};

/// The v2 routes, without auth or faults (the caller layers those).
pub fn routes() -> Router<Shared> {
    Router::new().route("/api/v2/entity", post(entity)).route("/api/v2/batch", post(batch))
}

fn item_error(problem: Problem, batch_index: Option<usize>) -> ItemError {
    ItemError {
        batch_index,
        reason: Some(problem.reason.to_owned()),
        field: Some(problem.field),
        message: Some(problem.message),
    }
}

fn errors(status: StatusCode, errors: Vec<ItemError>) -> Response {
    (status, Json(ErrorsResponse { errors })).into_response()
}

/// The answer in accept-only mode: 200, or a 400 for a framing problem.
fn only_accept(framed: Result<(), Problem>) -> Response {
    match framed {
        Ok(()) => ok(),
        Err(problem) => errors(StatusCode::BAD_REQUEST, vec![item_error(problem, None)]),
    }
}

/// One item: applied, or a 400 naming the problem. Of the per-item faults
/// only `reject_ids` and `reject_event_names` apply here;
/// `item_errors_next` is for batches.
async fn entity(State(shared): State<Shared>, body: Bytes) -> Response {
    if shared.config().accept_only {
        return only_accept(accept_only::entity(shared.accepted(), &body));
    }
    match entity_op(&body, now_secs()) {
        Ok(op) => match shared.read(|inner| inner.faults.refusal(&op)) {
            None => match shared.apply([op]).pop().flatten() {
                None => ok(),
                Some(problem) => errors(StatusCode::BAD_REQUEST, vec![item_error(problem, None)]),
            },
            Some(fault) => mark_injected(errors(
                StatusCode::BAD_REQUEST,
                vec![item_error(fault.problem(), None)],
            )),
        },
        Err(problem) => errors(StatusCode::BAD_REQUEST, vec![item_error(problem, None)]),
    }
}

async fn batch(State(shared): State<Shared>, body: Bytes) -> Response {
    if shared.config().accept_only {
        return only_accept(accept_only::batch(shared.accepted(), &body));
    }
    let items = match batch_ops(&body, now_secs()) {
        Ok(items) => items,
        Err(problem) => return errors(StatusCode::BAD_REQUEST, vec![item_error(problem, None)]),
    };
    // Decided for the whole batch under one lock, so concurrent batches
    // take `item_errors_next` in turn rather than interleaved.
    let injected: Vec<Option<ItemFault>> = shared.with_faults(|faults| {
        items.iter().map(|item| item.as_ref().ok().and_then(|op| faults.decide_item(op))).collect()
    });
    let any_injected = injected.iter().any(Option::is_some);
    let mut failed = Vec::new();
    let mut ops = Vec::with_capacity(items.len());
    let mut indexes = Vec::with_capacity(items.len());
    for (index, (item, fault)) in items.into_iter().zip(injected).enumerate() {
        match (item, fault) {
            (Ok(op), None) => {
                ops.push(op);
                indexes.push(index);
            }
            (Ok(_), Some(fault)) => failed.push(item_error(fault.problem(), Some(index))),
            (Err(problem), _) => failed.push(item_error(problem, Some(index))),
        }
    }
    // Items refused by what is stored (an object's limits) are not applied.
    for (index, refused) in indexes.into_iter().zip(shared.apply(ops)) {
        if let Some(problem) = refused {
            failed.push(item_error(problem, Some(index)));
        }
    }
    failed.sort_by_key(|error| error.batch_index);
    let response = if failed.is_empty() {
        ok()
    } else if shared.config().errors_with_200 {
        errors(StatusCode::OK, failed)
    } else {
        errors(StatusCode::MULTI_STATUS, failed)
    };
    if any_injected {
        mark_injected(response)
    } else {
        response
    }
}

/// Checks an `/api/v2/entity` body: at most 32,000 bytes, one valid item.
pub fn entity_op(body: &[u8], now: i64) -> Result<Op, Problem> {
    if body.len() > MAX_ENTITY_BYTES {
        return Err(Problem::new(
            REASON_TOO_LARGE,
            "body",
            format!("request must be smaller than {MAX_ENTITY_BYTES} bytes"),
        ));
    }
    let value = serde_json::from_slice::<Value>(body)
        .map_err(|_| Problem::new(REASON_INVALID, "body", "request body is not valid JSON"))?;
    item_op(&value, now)
}

/// Checks an `/api/v2/batch` body as a whole, then each item: `Err` is a
/// whole-request 400, `Ok` holds one result per item in order.
pub fn batch_ops(body: &[u8], now: i64) -> Result<Vec<Result<Op, Problem>>, Problem> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(Problem::new(
            REASON_TOO_LARGE,
            "batch",
            format!("batch must be smaller than {MAX_BATCH_BYTES} bytes"),
        ));
    }
    let value = serde_json::from_slice::<Value>(body)
        .map_err(|_| Problem::new(REASON_INVALID, "body", "request body is not valid JSON"))?;
    let Some(Value::Array(items)) = value.get("batch") else {
        return Err(Problem::new(REASON_REQUIRED, "batch", "batch must be an array of items"));
    };
    Ok(items
        .iter()
        .map(|item| {
            if item.to_string().len() > MAX_BATCH_ITEM_BYTES {
                return Err(Problem::new(
                    REASON_TOO_LARGE,
                    "",
                    format!("batch item must be {MAX_BATCH_ITEM_BYTES} bytes or smaller"),
                ));
            }
            item_op(item, now)
        })
        .collect())
}

/// Checks one item (`person`, `object` or `delivery`) and turns it into an
/// operation; deliveries are accepted but not modelled.
pub fn item_op(value: &Value, now: i64) -> Result<Op, Problem> {
    let Value::Object(item) = value else {
        return Err(Problem::new(REASON_INVALID, "", "item must be a JSON object"));
    };
    let action = match item.get("action") {
        Some(Value::String(action)) => action.as_str(),
        Some(_) => return Err(Problem::new(REASON_INVALID, "action", "action must be a string")),
        None => return Err(Problem::new(REASON_REQUIRED, "action", "action is required")),
    };
    match item.get("type").and_then(Value::as_str) {
        Some("person") => person_op(item, action, now),
        Some("object") => items::object_op(item, action),
        Some("delivery") => delivery_op(item, action),
        Some(_) => {
            Err(Problem::new(REASON_INVALID, "type", "type must be person, object or delivery"))
        }
        None => Err(Problem::new(REASON_REQUIRED, "type", "type is required")),
    }
}

fn person_op(item: &Map<String, Value>, action: &str, now: i64) -> Result<Op, Problem> {
    let first =
        |problems: Vec<Problem>| problems.into_iter().next().unwrap_or_else(|| unknown(action));
    match action {
        "identify" => {
            let target = person_identifier(item, "identifiers")?;
            let mut attributes = match item.get("attributes") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(attributes)) => attributes.clone(),
                Some(_) => {
                    return Err(Problem::new(
                        REASON_INVALID,
                        "attributes",
                        "attributes must be an object",
                    ));
                }
            };
            if let Some(problem) =
                check_attributes(&attributes, "attributes", ValueTypes::Any).into_iter().next()
            {
                return Err(problem);
            }
            let timestamp = optional_integer(item, "timestamp", "")?;
            let update_only = attributes.remove("_update") == Some(Value::Bool(true));
            let identify = Op::Identify {
                target,
                attributes,
                timestamp: timestamp.unwrap_or(now),
                update_only,
            };
            items::with_relationships(identify, item)
        }
        "delete" => Ok(Op::Delete { target: person_identifier(item, "identifiers")? }),
        "suppress" => Ok(Op::Suppress { target: person_identifier(item, "identifiers")? }),
        "unsuppress" => Ok(Op::Unsuppress { target: person_identifier(item, "identifiers")? }),
        "merge" => Ok(Op::Merge {
            primary: person_identifier(item, "primary")?,
            secondary: person_identifier(item, "secondary")?,
        }),
        "event" | "page" | "screen" => {
            let target = person_identifier(item, "identifiers")?;
            let event = parse_event(item, "attributes", Some(action), "", now).map_err(first)?;
            Ok(Op::Event { target, event })
        }
        "add_relationships" | "delete_relationships" | "add_device" | "delete_device" => {
            items::person_op(item, action, person_identifier(item, "identifiers")?, now)
        }
        _ => Err(unknown(action)),
    }
}

fn unknown(action: &str) -> Problem {
    Problem::new(REASON_INVALID, "action", format!("unknown action '{action}'"))
}

/// A person's `identifiers` (or `primary`/`secondary`): exactly one of
/// `id`, `email`, `phone`, `cio_id`, as a non-empty string.
fn person_identifier(item: &Map<String, Value>, field: &str) -> Result<Identifier, Problem> {
    let wrong = || {
        Problem::new(
            REASON_INVALID,
            field,
            format!("{field} must hold exactly one of id, email, phone or cio_id"),
        )
    };
    let identifiers = match item.get(field) {
        Some(Value::Object(identifiers)) => identifiers,
        None => return Err(Problem::new(REASON_REQUIRED, field, format!("{field} is required"))),
        Some(_) => return Err(wrong()),
    };
    let mut entries = identifiers.iter();
    let (Some((kind, Value::String(value))), None) = (entries.next(), entries.next()) else {
        return Err(wrong());
    };
    if value.is_empty() {
        return Err(wrong());
    }
    if let Some(problem) = check_identifier(value, &format!("{field}.{kind}")) {
        return Err(problem);
    }
    match kind.as_str() {
        "id" => Ok(Identifier::Id(value.clone())),
        "email" => Ok(Identifier::Email(value.clone())),
        "phone" => Ok(Identifier::Phone(value.clone())),
        "cio_id" => Ok(Identifier::CioId(value.clone())),
        _ => Err(wrong()),
    }
}

fn delivery_op(item: &Map<String, Value>, action: &str) -> Result<Op, Problem> {
    if action != "event" {
        return Err(unknown(action));
    }
    if !item.get("identifiers").is_some_and(Value::is_object) {
        return Err(Problem::new(REASON_REQUIRED, "identifiers", "identifiers is required"));
    }
    if item.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(Problem::new(REASON_REQUIRED, "name", "name is required"));
    }
    Ok(Op::Unmodelled { item: Value::Object(item.clone()), person: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(result: Result<Op, Problem>) -> String {
        result.err().map(|p| p.field).unwrap_or_default()
    }

    #[test]
    fn identify_item_reads_timestamp_and_update_flag() {
        let item = json!({"type": "person", "action": "identify", "identifiers": {"email": "a@b.c"},
                          "timestamp": 7, "attributes": {"score": 0.5, "_update": true}});
        let expected = Op::Identify {
            target: Identifier::Email("a@b.c".into()),
            attributes: [("score".to_owned(), json!(0.5))].into_iter().collect(),
            timestamp: 7,
            update_only: true,
        };
        assert_eq!(item_op(&item, 0), Ok(expected));
    }

    #[test]
    fn identifiers_must_hold_exactly_one() {
        let two = json!({"type": "person", "action": "delete", "identifiers": {"id": "1", "email": "a@b.c"}});
        assert_eq!(field(item_op(&two, 0)), "identifiers");
        let none = json!({"type": "person", "action": "delete"});
        assert_eq!(field(item_op(&none, 0)), "identifiers");
        let number = json!({"type": "person", "action": "delete", "identifiers": {"id": 1}});
        assert_eq!(field(item_op(&number, 0)), "identifiers");
    }

    #[test]
    fn whole_request_problems_are_separate_from_item_problems() {
        assert_eq!(batch_ops(b"nope", 0).err().map(|p| p.field), Some("body".into()));
        assert_eq!(batch_ops(br#"{"batch":{}}"#, 0).err().map(|p| p.field), Some("batch".into()));
        let big = vec![b' '; MAX_BATCH_BYTES + 1];
        assert_eq!(batch_ops(&big, 0).err().map(|p| p.reason), Some(REASON_TOO_LARGE));
        let items = batch_ops(br#"{"batch":[{"type":"person"},{"type":"object","action":"delete","identifiers":{"cio_object_id":"o"}}]}"#, 0);
        let oks: Vec<bool> = items.unwrap_or_default().iter().map(Result::is_ok).collect();
        assert_eq!(oks, [false, true]);
    }

    #[test]
    fn oversize_items_fail_alone() {
        let item = json!({"type": "person", "action": "identify", "identifiers": {"id": "1"},
                          "attributes": {"a": "x".repeat(900), "b": "x".repeat(900)}});
        let mut big = item.clone();
        big["attributes"] =
            Value::Object((0..40).map(|i| (format!("k{i}"), json!("x".repeat(900)))).collect());
        let body = json!({"batch": [item.clone(), big]}).to_string();
        let results = batch_ops(body.as_bytes(), 0).unwrap_or_default();
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().err().map(|p| p.reason), Some(REASON_TOO_LARGE));
    }

    #[test]
    fn device_items_name_their_person_and_objects_nobody() {
        let device = json!({"type": "person", "action": "add_device", "identifiers": {"id": "7"},
                            "device": {"token": "t", "platform": "ios"}});
        let person = Identifier::Id("7".into());
        assert_eq!(
            item_op(&device, 0).map(|op| op.people() == [("identifiers", &person)]),
            Ok(true)
        );
        let object = json!({"type": "object", "action": "delete",
                            "identifiers": {"object_type_id": "1", "object_id": "7"}});
        assert_eq!(item_op(&object, 0).map(|op| op.people().is_empty()), Ok(true));
    }

    #[test]
    fn event_items_take_attributes_as_data() {
        let item = json!({"type": "person", "action": "event", "identifiers": {"id": "1"},
                          "name": "signup", "id": "01J", "attributes": {"plan": "pro"}});
        let Ok(Op::Event { event, .. }) = item_op(&item, 3) else {
            panic!("event item rejected");
        };
        assert_eq!((event.name.as_str(), event.timestamp, event.data.len()), ("signup", 3, 1));
        let blank =
            json!({"type": "person", "action": "event", "identifiers": {"id": "1"}, "name": ""});
        assert_eq!(
            item_op(&blank, 0).err().map(|p| p.message),
            Some("event name must not be blank".into())
        );
    }
}
