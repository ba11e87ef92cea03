//! Checks of object, relationship and device shapes, shared by v2 items
//! and the v1 routes, turning them into operations. Field names, types and
//! required fields are the published schema's (`object_*`,
//! `person_add_relationships`…, `object_relationships`,
//! `v2_cio_relationships`, `v1_cio_relationships`, `device_object*`); the
//! messages are the emulator's own (Customer.io documents none for these).
//!
//! Stricter than the schema, on purpose: a relationship must name its
//! object or person in `identifiers` (the schema leaves it optional, which
//! makes the entry meaningless), and an object item's people are named by
//! exactly one of `id`, `email`, `cio_id` (the published
//! `v2_cio_relationships` lists those three but, lacking `required`, its
//! `oneOf` matches every entry three times and so refuses all of them: a
//! flaw of the document, not a rule of the API, since its own examples use
//! `{"id": "42"}`).

use ciosync_track_api::{Identifier, MAX_ID_BYTES};
use serde_json::{Map, Value};

use crate::devices::{Device, DeviceOp, PLATFORMS};
use crate::objects::{ObjectLink, ObjectOp, ObjectRef, PersonLink};
use crate::ops::Op;
use crate::validate::{
    check_attributes, check_identifier, Problem, ValueTypes, REASON_INVALID, REASON_REQUIRED,
    REASON_TOO_LARGE,
};

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem::new(REASON_INVALID, field, message)
}

fn required(field: &str) -> Problem {
    Problem::new(REASON_REQUIRED, field, format!("{field} is required"))
}

/// An optional object of attributes (`attributes`,
/// `relationship_attributes`), checked against the per-call limits.
fn attributes(
    object: &Map<String, Value>,
    name: &str,
    field: &str,
) -> Result<Map<String, Value>, Problem> {
    let attributes = match object.get(name) {
        None => return Ok(Map::new()),
        Some(Value::Object(attributes)) => attributes.clone(),
        Some(_) => return Err(invalid(field, format!("{name} must be an object"))),
    };
    // `id` is a plain attribute here, not a person's identifier: the
    // identifier rules (not empty, 150 bytes) do not apply to it.
    let id_field = format!("{field}.id");
    let problem = check_attributes(&attributes, field, ValueTypes::Any).into_iter().find(|p| {
        p.field != id_field
            || !(p.message.starts_with("id attribute") || p.message.starts_with("identifier"))
    });
    match problem {
        Some(problem) => Err(problem),
        None => Ok(attributes),
    }
}

/// How `identifiers` (at `field`) names an object: `object_type_id` (a
/// string holding an integer from 1) and `object_id`, or `cio_object_id`;
/// not both forms (the schema's `oneOf`).
pub fn object_ref(value: Option<&Value>, field: &str) -> Result<ObjectRef, Problem> {
    let wrong = || {
        invalid(field, format!("{field} must hold object_type_id and object_id, or cio_object_id"))
    };
    let ids = match value {
        Some(Value::Object(ids)) => ids,
        None => return Err(required(field)),
        Some(_) => return Err(wrong()),
    };
    let keyed = ids.contains_key("object_type_id") || ids.contains_key("object_id");
    match (keyed, ids.get("cio_object_id")) {
        (true, Some(_)) | (false, None) => Err(wrong()),
        (false, Some(Value::String(cio))) if !cio.is_empty() => Ok(ObjectRef::Cio(cio.clone())),
        (false, Some(_)) => Err(invalid(
            format!("{field}.cio_object_id"),
            "cio_object_id must be a non-empty string",
        )),
        (true, None) => {
            let type_id = object_type_id(ids.get("object_type_id"), field)?;
            let object_id = match ids.get("object_id") {
                Some(Value::String(id)) if !id.is_empty() => id.clone(),
                _ => {
                    let message = "object_id must be a non-empty string";
                    return Err(invalid(format!("{field}.object_id"), message));
                }
            };
            if object_id.len() > MAX_ID_BYTES {
                return Err(Problem::new(
                    REASON_TOO_LARGE,
                    format!("{field}.object_id"),
                    format!("object_id cannot be longer than {MAX_ID_BYTES} bytes"),
                ));
            }
            Ok(ObjectRef::Key { type_id, object_id })
        }
    }
}

/// "Object type IDs are string-formatted integers that begin at 1": a JSON
/// string of digits without a leading zero; a JSON number is refused.
fn object_type_id(value: Option<&Value>, field: &str) -> Result<u64, Problem> {
    let parsed = match value {
        Some(Value::String(text))
            if !text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            text.parse::<u64>().ok()
        }
        _ => None,
    };
    parsed.ok_or_else(|| {
        invalid(
            format!("{field}.object_type_id"),
            "object_type_id must be a string holding an integer from 1, like \"1\"",
        )
    })
}

/// A person named in an object item's `cio_relationships`: exactly one of
/// `id`, `email`, `cio_id`, a non-empty string (no `phone`: the schema
/// lists only these three).
fn link_person(value: Option<&Value>, field: &str) -> Result<Identifier, Problem> {
    let wrong = || invalid(field, format!("{field} must hold exactly one of id, email or cio_id"));
    let Some(Value::Object(ids)) = value else {
        return Err(if value.is_none() { required(field) } else { wrong() });
    };
    let mut entries = ids.iter();
    let (Some((kind, Value::String(id))), None) = (entries.next(), entries.next()) else {
        return Err(wrong());
    };
    if id.is_empty() {
        return Err(wrong());
    }
    if let Some(problem) = check_identifier(id, &format!("{field}.{kind}")) {
        return Err(problem);
    }
    match kind.as_str() {
        "id" => Ok(Identifier::Id(id.clone())),
        "email" => Ok(Identifier::Email(id.clone())),
        "cio_id" => Ok(Identifier::CioId(id.clone())),
        _ => Err(wrong()),
    }
}

/// One relationship entry: where it is (`cio_relationships.0`) and what.
type Entry<'a> = (String, &'a Map<String, Value>);

/// The entries of a `cio_relationships` array at `field`, each an object
/// with `identifiers` and optional `relationship_attributes`.
fn entries<'a>(value: Option<&'a Value>, field: &str) -> Result<Vec<Entry<'a>>, Problem> {
    let Some(Value::Array(items)) = value else {
        return Err(invalid(field, format!("{field} must be an array")));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, entry)| match entry {
            Value::Object(entry) => Ok((format!("{field}.{index}"), entry)),
            _ => Err(invalid(format!("{field}.{index}"), "each relationship must be an object")),
        })
        .collect()
}

/// A person's relationships to objects (`object_relationships`).
pub fn object_links(value: Option<&Value>, field: &str) -> Result<Vec<ObjectLink>, Problem> {
    links(value, field, object_ref, |object, attributes| ObjectLink { object, attributes })
}

/// An object's relationships to people (`v2_cio_relationships`).
fn person_links(value: Option<&Value>, field: &str) -> Result<Vec<PersonLink>, Problem> {
    links(value, field, link_person, |person, attributes| PersonLink { person, attributes })
}

/// Relationship entries: each one's `identifiers` (read by `other`) and its
/// `relationship_attributes`, made into a link by `link`.
fn links<O, L>(
    value: Option<&Value>,
    field: &str,
    other: impl Fn(Option<&Value>, &str) -> Result<O, Problem>,
    link: impl Fn(O, Map<String, Value>) -> L,
) -> Result<Vec<L>, Problem> {
    entries(value, field)?
        .into_iter()
        .map(|(at, entry)| {
            let identified = other(entry.get("identifiers"), &format!("{at}.identifiers"))?;
            let at = format!("{at}.relationship_attributes");
            Ok(link(identified, attributes(entry, "relationship_attributes", &at)?))
        })
        .collect()
}

/// A v2 `type: object` item. `identify_anonymous` applies its attributes
/// and keeps the item (its anonymous people are not modelled).
pub fn object_op(item: &Map<String, Value>, action: &str) -> Result<Op, Problem> {
    let object = object_ref(item.get("identifiers"), "identifiers")?;
    let relationships = item.get("cio_relationships");
    let op = match action {
        "identify" | "identify_anonymous" => {
            let attributes = attributes(item, "attributes", "attributes")?;
            if attributes.contains_key("relationship") {
                // Docs: `relationship` "cannot be used as the name of an
                // object attribute"; what the API answers is UNCONFIRMED.
                return Err(invalid(
                    "attributes.relationship",
                    "relationship is a reserved name and cannot be an object attribute",
                ));
            }
            let people = match (action, relationships) {
                ("identify", Some(value)) => person_links(Some(value), "cio_relationships")?,
                _ => Vec::new(),
            };
            ObjectOp::Identify { object, attributes, people }
        }
        "delete" => ObjectOp::Delete { object },
        "add_relationships" | "delete_relationships" => {
            let value = relationships.ok_or_else(|| required("cio_relationships"))?;
            let people = person_links(Some(value), "cio_relationships")?;
            ObjectOp::Relationships { object, people, add: action == "add_relationships" }
        }
        _ => return Err(invalid("action", format!("unknown action '{action}'"))),
    };
    if action == "identify_anonymous" {
        let kept = Op::Unmodelled { item: Value::Object(item.clone()), person: None };
        return Ok(Op::Many(vec![Op::Object(op), kept]));
    }
    Ok(Op::Object(op))
}

/// A v2 person item about relationships or devices, for `target`.
pub fn person_op(
    item: &Map<String, Value>,
    action: &str,
    target: Identifier,
    now: i64,
) -> Result<Op, Problem> {
    match action {
        "add_relationships" | "delete_relationships" => {
            let value =
                item.get("cio_relationships").ok_or_else(|| required("cio_relationships"))?;
            let links = object_links(Some(value), "cio_relationships")?;
            Ok(Op::Relationships {
                target,
                links,
                add: action == "add_relationships",
                create: true,
            })
        }
        "add_device" => {
            let device = device(item.get("device"), "token", now)?;
            Ok(Op::Device(DeviceOp::Add { target, device }))
        }
        "delete_device" => {
            let Some(Value::Object(device)) = item.get("device") else {
                return Err(invalid("device", "device must be an object with a token"));
            };
            let token = token(device.get("token"), "device.token")?;
            Ok(Op::Device(DeviceOp::Delete { target, token }))
        }
        _ => Err(invalid("action", format!("unknown action '{action}'"))),
    }
}

/// The v2 identify's `cio_relationships`, added after the identify.
pub fn with_relationships(identify: Op, item: &Map<String, Value>) -> Result<Op, Problem> {
    let (Op::Identify { target, .. }, Some(value)) = (&identify, item.get("cio_relationships"))
    else {
        return Ok(identify);
    };
    let links = object_links(Some(value), "cio_relationships")?;
    let relate = Op::Relationships { target: target.clone(), links, add: true, create: false };
    Ok(Op::Many(vec![identify, relate]))
}

/// The v1 identify's `cio_relationships`: `{action, relationships}`, both
/// needed (the schema names neither required; without them the call
/// means nothing, so it is refused).
pub fn v1_relationships(value: &Value, target: &Identifier) -> Result<Op, Problem> {
    let field = "cio_relationships";
    let Value::Object(object) = value else {
        return Err(invalid(
            field,
            "cio_relationships must be an object with action and relationships",
        ));
    };
    let add = match object.get("action").and_then(Value::as_str) {
        Some("add_relationships") => true,
        Some("delete_relationships") => false,
        _ => {
            let message =
                "cio_relationships.action must be add_relationships or delete_relationships";
            return Err(invalid("cio_relationships.action", message));
        }
    };
    let links = object_links(object.get("relationships"), "cio_relationships.relationships")?;
    Ok(Op::Relationships { target: target.clone(), links, add, create: false })
}

fn token(value: Option<&Value>, field: &str) -> Result<String, Problem> {
    match value {
        Some(Value::String(token)) if !token.is_empty() => Ok(token.clone()),
        None => Err(required(field)),
        Some(_) => Err(invalid(field, format!("{field} must be a non-empty string"))),
    }
}

/// A device: the token under `token_key` (v2 `token`, v1 `id`), `platform`
/// `ios` or `android` (both required), `last_used` an integer (the
/// receive time when absent), `attributes` with string values (and the
/// schema's enums for `push_enabled` and `_last_status`). Other fields are
/// allowed by the schema and ignored (the Node client's example sends
/// `primary: true`).
pub fn device(value: Option<&Value>, token_key: &str, now: i64) -> Result<Device, Problem> {
    let Some(Value::Object(device)) = value else {
        return Err(if value.is_none() {
            required("device")
        } else {
            invalid("device", "device must be an object")
        });
    };
    let token = token(device.get(token_key), &format!("device.{token_key}"))?;
    let platform = match device.get("platform") {
        Some(Value::String(platform)) if PLATFORMS.contains(&platform.as_str()) => platform.clone(),
        None => return Err(required("device.platform")),
        Some(_) => {
            return Err(invalid("device.platform", "device platform must be ios or android"))
        }
    };
    let last_used = match device.get("last_used") {
        None => None,
        Some(value) if value.is_i64() => value.as_i64(),
        Some(_) => return Err(invalid("device.last_used", "last_used must be an integer")),
    };
    let attributes = device_attributes(device)?;
    Ok(Device { token, platform, last_used: last_used.unwrap_or(now), attributes })
}

fn device_attributes(device: &Map<String, Value>) -> Result<Map<String, Value>, Problem> {
    let attributes = match device.get("attributes") {
        None => return Ok(Map::new()),
        Some(Value::Object(attributes)) => attributes,
        Some(_) => return Err(invalid("device.attributes", "device attributes must be an object")),
    };
    for (name, value) in attributes {
        let field = format!("device.attributes.{name}");
        let Value::String(text) = value else {
            return Err(invalid(
                field,
                format!("value for device attribute '{name}' must be a string"),
            ));
        };
        let allowed: &[&str] = match name.as_str() {
            "push_enabled" => &["true", "false"],
            "_last_status" => &["", "bounced", "sent", "suppressed"],
            _ => continue,
        };
        if !allowed.contains(&text.as_str()) {
            let message = format!("device attribute {name} must be one of {allowed:?}");
            return Err(invalid(field, message));
        }
    }
    Ok(attributes.clone())
}

#[cfg(test)]
#[path = "items_tests.rs"]
mod tests;
