//! Track API v1 routes beyond people and events, with auth: form
//! submissions and manual segments. Answers and 400 shapes are the
//! documented ones (`{"meta":{"errors":[…]}}`); the messages are guesses.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use ciosync_track_api::Identifier;
use serde_json::{json, Map, Value};

use crate::faults::mark_injected;
use crate::model::Op;
use crate::segments::Change;
use crate::state::Shared;
use crate::v1::{body_object, invalid, now_secs, ok, rejected};
use crate::validate::{check_identifier, Problem, REASON_INVALID, REASON_REQUIRED};

/// Most ids one segment call may carry (documented).
pub const MAX_SEGMENT_IDS: usize = 1000;
/// Keys Customer.io ignores in form data (documented).
const RESERVED_FORM_KEYS: [&str; 5] =
    ["form_id", "form_name", "form_type", "form_url", "form_url_param"];

/// The routes, without auth or faults (the caller layers those).
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/forms/{form_id}/submit", post(submit_form))
        .route("/api/v1/segments/{segment_id}/add_customers", post(add_to_segment))
        .route("/api/v1/segments/{segment_id}/remove_customers", post(remove_from_segment))
}

fn problem(field: &str, message: impl Into<String>) -> Problem {
    Problem::new(REASON_INVALID, field, message)
}

async fn submit_form(
    State(shared): State<Shared>,
    Path(form_id): Path<String>,
    body: Bytes,
) -> Response {
    let op = match form_op(&body, now_secs()) {
        Ok(op) => op,
        Err(problems) => return invalid(problems),
    };
    if let Some(problem) = rejected(&shared, &op) {
        return mark_injected(invalid(vec![problem]));
    }
    let item = json!({"v1": "submit_form", "form_id": form_id});
    shared.apply([op, Op::Unmodelled { item, person: None }]);
    StatusCode::NO_CONTENT.into_response()
}

/// A form submission as the identify it amounts to: `data` must hold
/// exactly one of `email` and `id`, and string values only; reserved keys
/// are dropped.
pub fn form_op(body: &[u8], now: i64) -> Result<Op, Vec<Problem>> {
    let object = body_object(body)?;
    let Some(Value::Object(data)) = object.get("data") else {
        return Err(vec![Problem::new(REASON_REQUIRED, "data", "data must be an object")]);
    };
    let mut problems: Vec<Problem> = data
        .iter()
        .filter(|(_, value)| !value.is_string())
        .map(|(name, _)| problem(name, format!("value for form field '{name}' must be a string")))
        .collect();
    let target = match (data.get("email"), data.get("id")) {
        (Some(Value::String(email)), None) => Some(Identifier::Email(email.clone())),
        (None, Some(Value::String(id))) => Some(Identifier::Id(id.clone())),
        _ => None,
    };
    let target = target.filter(|target| check_identifier(target.value(), "data").is_none());
    let Some(target) = target else {
        problems
            .push(problem("data", "data must identify the person by exactly one of email or id"));
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let attributes: Map<String, Value> = data
        .iter()
        .filter(|(name, _)| !RESERVED_FORM_KEYS.contains(&name.as_str()))
        .filter(|(name, _)| !matches!(name.as_str(), "id" | "email"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Ok(Op::Identify { target, attributes, timestamp: now, update_only: false })
}

async fn add_to_segment(
    State(shared): State<Shared>,
    Path(segment): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    change_segment(&shared, &segment, query.as_deref(), &body, Change::Add)
}

async fn remove_from_segment(
    State(shared): State<Shared>,
    Path(segment): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    change_segment(&shared, &segment, query.as_deref(), &body, Change::Remove)
}

fn change_segment(
    shared: &Shared,
    segment: &str,
    query: Option<&str>,
    body: &[u8],
    change: Change,
) -> Response {
    let (segment_id, ids) = match segment_call(segment, query, body) {
        Ok(call) => call,
        Err(problems) => return invalid(problems),
    };
    let people: Vec<(&str, &Identifier)> = ids.iter().map(|id| ("ids", id)).collect();
    if let Some(fault) = shared.read(|inner| inner.faults.rejection(&people)) {
        return mark_injected(invalid(vec![fault.problem()]));
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    shared.update(|inner| {
        crate::journal::log_with_effects(|entry| inner.record(entry));
        let changed = inner.segments.change(&inner.world, segment_id, change, &ids);
        inner.campaigns.on_segment_change(&inner.world, segment_id, &changed, now_ms);
    });
    ok()
}

/// The segment id (an int32, as the spec types it) and the people named:
/// `ids`, 1 to 1000 strings, of the kind the `id_type` query names (`id` by
/// default, `email`, `cio_id`). Values that cannot be of that kind (an
/// email without `@`) are ignored, as documented.
pub fn segment_call(
    segment: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<(i32, Vec<Identifier>), Vec<Problem>> {
    let segment_id = segment
        .parse::<i32>()
        .map_err(|_| vec![problem("segment_id", "segment_id must be an integer")])?;
    let id_type = id_type(query)?;
    let object = body_object(body)?;
    let ids = match object.get("ids") {
        Some(Value::Array(ids)) if !ids.is_empty() && ids.len() <= MAX_SEGMENT_IDS => ids,
        _ => {
            let message = format!("ids must be an array of 1 to {MAX_SEGMENT_IDS} strings");
            return Err(vec![Problem::new(REASON_REQUIRED, "ids", message)]);
        }
    };
    if ids.iter().any(|id| !id.is_string()) {
        return Err(vec![problem("ids", "ids must be strings")]);
    }
    let identifiers = ids.iter().filter_map(Value::as_str).filter_map(|value| match id_type {
        "email" => value.contains('@').then(|| Identifier::Email(value.to_owned())),
        "cio_id" => Some(Identifier::CioId(value.to_owned())),
        _ => Some(Identifier::Id(value.to_owned())),
    });
    Ok((segment_id, identifiers.collect()))
}

fn id_type(query: Option<&str>) -> Result<&'static str, Vec<Problem>> {
    let given = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "id_type")
        .map(|(_, value)| value.into_owned());
    match given.as_deref() {
        None | Some("id") => Ok("id"),
        Some("email") => Ok("email"),
        Some("cio_id") => Ok("cio_id"),
        Some(_) => Err(vec![problem("id_type", "id_type must be one of id, email, cio_id")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages<T>(result: Result<T, Vec<Problem>>) -> Vec<String> {
        result.err().unwrap_or_default().into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn forms_identify_by_exactly_one_identifier_with_string_fields() {
        let body = br#"{"data":{"email":"a@b.c","first_name":"Ann","form_name":"x"}}"#;
        let expected = Op::Identify {
            target: Identifier::Email("a@b.c".into()),
            attributes: [("first_name".to_owned(), json!("Ann"))].into_iter().collect(),
            timestamp: 7,
            update_only: false,
        };
        assert_eq!(form_op(body, 7), Ok(expected));
        let both = br#"{"data":{"email":"a@b.c","id":"1"}}"#;
        assert_eq!(
            messages(form_op(both, 0)),
            ["data must identify the person by exactly one of email or id"]
        );
        let number = br#"{"data":{"id":"1","age":3}}"#;
        assert_eq!(messages(form_op(number, 0)), ["value for form field 'age' must be a string"]);
        assert_eq!(messages(form_op(b"{}", 0)), ["data must be an object"]);
    }

    #[test]
    fn segment_calls_need_an_integer_id_and_1_to_1000_string_ids() {
        let ids = segment_call("7", Some("id_type=email"), br#"{"ids":["a@b.c","nope"]}"#);
        assert_eq!(ids, Ok((7, vec![Identifier::Email("a@b.c".into())])));
        assert_eq!(
            segment_call("7", None, br#"{"ids":["1"]}"#),
            Ok((7, vec![Identifier::Id("1".into())]))
        );
        assert_eq!(
            messages(segment_call("x", None, br#"{"ids":["1"]}"#)),
            ["segment_id must be an integer"]
        );
        let too_many = json!({"ids": vec!["1"; MAX_SEGMENT_IDS + 1]}).to_string();
        assert_eq!(
            messages(segment_call("7", None, too_many.as_bytes())),
            ["ids must be an array of 1 to 1000 strings"]
        );
        assert!(segment_call("7", None, br#"{"ids":[]}"#).is_err());
        assert!(segment_call("7", Some("id_type=phone"), br#"{"ids":["1"]}"#).is_err());
    }
}
