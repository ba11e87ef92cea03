//! Checks shared by v1 and v2: attribute and event limits with Customer.io's
//! exact 400 messages (facts sheet §3, from
//! <https://docs.customer.io/journeys/invalid-api-requests>). Messages marked
//! "guess" are the emulator's own wording where Customer.io's is unknown.
//! Pure functions over `serde_json` values.

use std::collections::HashSet;

use ciosync_track_api::{
    attribute_value_bytes, MAX_ATTRIBUTES, MAX_ATTRIBUTE_NAME_BYTES, MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_EVENT_DATA_BYTES, MAX_EVENT_NAME_BYTES, MAX_ID_BYTES,
};
use serde_json::{Map, Value};

use crate::model::StoredEvent;

/// Longest page-event name, in characters: the docs list "must be less than
/// 500 characters" beside the 100-byte event-name limit; the emulator reads
/// it as the limit for `page` events, whose names are URLs (a guess).
pub const MAX_PAGE_NAME_CHARS: usize = 500;

/// `reason` for a missing field in v2 errors (guess).
pub const REASON_REQUIRED: &str = "required";
/// `reason` for a field of the wrong type or value in v2 errors (guess).
pub const REASON_INVALID: &str = "invalid";
/// `reason` for a field over a size limit in v2 errors (guess).
pub const REASON_TOO_LARGE: &str = "too_large";

/// One thing wrong with a request: v1 sends `message`, v2 all three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// One of the `REASON_*` constants.
    pub reason: &'static str,
    /// Dotted path of the offending field, e.g. `attributes.plan`.
    pub field: String,
    /// Human text; Customer.io's exact wording where known.
    pub message: String,
}

impl Problem {
    /// A problem with the given parts.
    pub fn new(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { reason, field: field.into(), message: message.into() }
    }
}

/// Which attribute values are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueTypes {
    /// v1's published schema: string, integer or boolean only.
    StringIntegerBoolean,
    /// v2: any JSON value.
    Any,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Checks an identifier's length (the docs give 150 bytes for ids; the
/// message is a guess).
pub fn check_identifier(value: &str, field: &str) -> Option<Problem> {
    (value.len() > MAX_ID_BYTES).then(|| {
        Problem::new(
            REASON_TOO_LARGE,
            field,
            format!("identifier cannot be longer than {MAX_ID_BYTES} bytes"),
        )
    })
}

/// Checks an identify's attributes against the per-call limits. The count
/// includes the control keys `_timestamp` and `_update`: whether Customer.io
/// counts them is unknown, and counting them is the safe side.
pub fn check_attributes(
    attributes: &Map<String, Value>,
    prefix: &str,
    types: ValueTypes,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if attributes.len() > MAX_ATTRIBUTES {
        problems.push(Problem::new(
            REASON_TOO_LARGE,
            prefix,
            format!("cannot identify more than {MAX_ATTRIBUTES} attributes in one request"),
        ));
    }
    for (name, value) in attributes {
        let field = join(prefix, name);
        if name.len() > MAX_ATTRIBUTE_NAME_BYTES {
            problems.push(Problem::new(
                REASON_TOO_LARGE,
                field.clone(),
                format!("attribute name cannot be longer than {MAX_ATTRIBUTE_NAME_BYTES} bytes"),
            ));
        }
        if attribute_value_bytes(value) > MAX_ATTRIBUTE_VALUE_BYTES {
            problems.push(Problem::new(
                REASON_TOO_LARGE,
                field.clone(),
                format!("value for attribute '{name}' cannot be longer than {MAX_ATTRIBUTE_VALUE_BYTES} bytes"),
            ));
        }
        match name.as_str() {
            "_timestamp" | "_update" => {}
            "id" => problems.extend(check_id_attribute(value, &field, types)),
            _ => {
                let allowed = types == ValueTypes::Any
                    || value.is_string()
                    || value.is_boolean()
                    || value.is_i64()
                    || value.is_u64();
                if !allowed {
                    problems.push(Problem::new(
                        REASON_INVALID,
                        field,
                        // Guess: the schema allows these types, the wording is ours.
                        format!(
                            "value for attribute '{name}' must be a string, integer or boolean"
                        ),
                    ));
                }
            }
        }
    }
    // Many long names give the same message; Customer.io's list would not
    // repeat a line, so neither does the emulator's.
    let mut seen = HashSet::new();
    problems.retain(|problem| seen.insert(problem.message.clone()));
    problems
}

fn check_id_attribute(value: &Value, field: &str, types: ValueTypes) -> Option<Problem> {
    match value {
        Value::String(s) if s.is_empty() => {
            Some(Problem::new(REASON_INVALID, field, "id attribute cannot be an empty string"))
        }
        Value::String(s) => check_identifier(s, field),
        Value::Number(_) if types == ValueTypes::Any => None,
        _ => Some(Problem::new(REASON_INVALID, field, "id attribute must be a string value")),
    }
}

/// Reads an optional integer field (Unix seconds); `Err` names the field.
pub fn optional_integer(
    object: &Map<String, Value>,
    name: &str,
    prefix: &str,
) -> Result<Option<i64>, Problem> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_i64().map(Some).ok_or_else(|| {
            Problem::new(REASON_INVALID, join(prefix, name), format!("{name} must be an integer"))
        }),
    }
}

/// Parses and checks an event from its JSON object. `data_key` is `data`
/// (v1) or `attributes` (v2); `kind` overrides the body's `type` (v2 takes
/// it from the action). The name is trimmed, as Customer.io does.
pub fn parse_event(
    object: &Map<String, Value>,
    data_key: &str,
    kind: Option<&str>,
    prefix: &str,
    now: i64,
) -> Result<StoredEvent, Vec<Problem>> {
    let mut problems = Vec::new();
    let kind = event_kind(object, kind, prefix, &mut problems);
    let name = object.get("name").and_then(Value::as_str).unwrap_or("").trim().to_owned();
    if let Some(problem) = name_problem(&name, &kind, prefix) {
        problems.push(problem);
    }
    let data = event_data(object, data_key, prefix, &mut problems);
    let id = match object.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(_) => {
            // Guess: the spec types the dedupe id as a ULID string.
            problems.push(Problem::new(
                REASON_INVALID,
                join(prefix, "id"),
                "event id must be a non-empty string",
            ));
            None
        }
    };
    let timestamp = optional_integer(object, "timestamp", prefix).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    let anonymous_id = object.get("anonymous_id").and_then(Value::as_str).map(str::to_owned);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(StoredEvent { name, kind, id, timestamp: timestamp.unwrap_or(now), data, anonymous_id })
}

/// `event`, `page` or `screen`: given (v2 takes it from the action), or the
/// body's `type`, `event` when absent.
fn event_kind(
    object: &Map<String, Value>,
    kind: Option<&str>,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> String {
    match (kind, object.get("type")) {
        (Some(kind), _) => kind.to_owned(),
        (None, None | Some(Value::Null)) => "event".to_owned(),
        (None, Some(Value::String(t))) if matches!(t.as_str(), "event" | "page" | "screen") => {
            t.clone()
        }
        (None, Some(_)) => {
            problems.push(Problem::new(
                REASON_INVALID,
                join(prefix, "type"),
                "event type must be event, page or screen",
            ));
            "event".to_owned()
        }
    }
}

/// A page's name is limited in characters, any other event's in bytes.
fn name_problem(name: &str, kind: &str, prefix: &str) -> Option<Problem> {
    if name.is_empty() {
        return Some(Problem::new(
            REASON_REQUIRED,
            join(prefix, "name"),
            "event name must not be blank",
        ));
    }
    if kind == "page" && name.chars().count() >= MAX_PAGE_NAME_CHARS {
        return Some(Problem::new(
            REASON_TOO_LARGE,
            join(prefix, "name"),
            format!("event name must be less than {MAX_PAGE_NAME_CHARS} characters"),
        ));
    }
    if kind != "page" && name.len() > MAX_EVENT_NAME_BYTES {
        return Some(Problem::new(
            REASON_TOO_LARGE,
            join(prefix, "name"),
            format!("event name cannot be longer than {MAX_EVENT_NAME_BYTES} bytes"),
        ));
    }
    None
}

/// The event's data object (`data_key`), empty when absent.
fn event_data(
    object: &Map<String, Value>,
    data_key: &str,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Map<String, Value> {
    match object.get(data_key) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => {
            if Value::Object(data.clone()).to_string().len() > MAX_EVENT_DATA_BYTES {
                problems.push(Problem::new(
                    REASON_TOO_LARGE,
                    join(prefix, data_key),
                    format!("event data cannot be longer than {MAX_EVENT_DATA_BYTES} bytes"),
                ));
            }
            data.clone()
        }
        Some(_) => {
            problems.push(Problem::new(
                REASON_INVALID,
                join(prefix, data_key),
                "event data must be a hash",
            ));
            Map::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.message.as_str()).collect()
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn attribute_limits_use_the_documented_messages() {
        let many: Map<String, Value> =
            (0..=MAX_ATTRIBUTES).map(|i| (format!("a{i}"), json!(1))).collect();
        assert_eq!(
            messages(&check_attributes(&many, "", ValueTypes::Any)),
            ["cannot identify more than 300 attributes in one request"]
        );
        let long =
            object(json!({"n".repeat(151): 1, "m".repeat(151): 2, "plan": "x".repeat(1001)}));
        assert_eq!(
            messages(&check_attributes(&long, "", ValueTypes::Any)),
            [
                "attribute name cannot be longer than 150 bytes",
                "value for attribute 'plan' cannot be longer than 1000 bytes"
            ]
        );
    }

    #[test]
    fn v1_types_are_strict_and_v2_types_are_not() {
        let values =
            object(json!({"f": 0.5, "o": {}, "a": [], "n": null, "s": "", "i": 1, "b": true}));
        let strict = check_attributes(&values, "", ValueTypes::StringIntegerBoolean);
        let mut fields: Vec<&str> = strict.iter().map(|p| p.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["a", "f", "n", "o"]);
        assert!(check_attributes(&values, "", ValueTypes::Any).is_empty());
    }

    #[test]
    fn id_attribute_messages() {
        let empty = check_attributes(&object(json!({"id": ""})), "", ValueTypes::Any);
        assert_eq!(messages(&empty), ["id attribute cannot be an empty string"]);
        let number =
            check_attributes(&object(json!({"id": 5})), "", ValueTypes::StringIntegerBoolean);
        assert_eq!(messages(&number), ["id attribute must be a string value"]);
    }

    #[test]
    fn event_checks_use_the_documented_messages() {
        let check = |value: Value| {
            parse_event(&object(value), "data", None, "", 0).map_err(|p| messages(&p).join("|"))
        };
        assert_eq!(check(json!({"name": "  "})), Err("event name must not be blank".into()));
        assert_eq!(
            check(json!({"name": "x".repeat(101)})),
            Err("event name cannot be longer than 100 bytes".into())
        );
        assert_eq!(
            check(json!({"name": "x", "data": [1]})),
            Err("event data must be a hash".into())
        );
        assert_eq!(
            check(json!({"name": "x", "data": {"d": "x".repeat(100_000)}})),
            Err("event data cannot be longer than 100000 bytes".into())
        );
        let event = check(json!({"name": " signup ", "id": "01J", "timestamp": 5}));
        assert_eq!(
            event.map(|e| (e.name, e.id, e.timestamp)),
            Ok(("signup".into(), Some("01J".into()), 5))
        );
    }
}
