//! How people are named: identifiers from v1 paths and attributes, and the
//! index keys under which the model finds them (emails case-insensitive).

use ciosync_track_api::Identifier;
use serde_json::{Map, Value};

/// Attribute names that are also identifiers.
pub const IDENTITY_ATTRIBUTES: [&str; 3] = ["id", "email", "phone"];

/// How the v1 path names a person: `cio_` prefix → cio_id, an `@` → email,
/// anything else → id. Customer.io infers the type from the value's form;
/// a phone number in the path is an id (facts sheet §1).
pub fn parse_path_identifier(raw: &str) -> Identifier {
    if let Some(cio_id) = raw.strip_prefix("cio_") {
        Identifier::CioId(cio_id.to_owned())
    } else if raw.contains('@') {
        Identifier::Email(raw.to_owned())
    } else {
        Identifier::Id(raw.to_owned())
    }
}

/// The index key of an identifier; emails compare case-insensitively.
pub fn key(identifier: &Identifier) -> String {
    match identifier {
        Identifier::Id(v) => format!("id:{v}"),
        Identifier::Email(v) => format!("email:{}", v.to_lowercase()),
        Identifier::Phone(v) => format!("phone:{v}"),
        Identifier::CioId(v) => format!("cio_id:{v}"),
    }
}

/// An identifier attribute's value as text; numbers count (`"id": 42`).
pub fn identity_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The identifier an identity attribute names (`id`, `email`, `phone`).
pub fn identity(name: &str, value: String) -> Option<Identifier> {
    match name {
        "id" => Some(Identifier::Id(value)),
        "email" => Some(Identifier::Email(value)),
        "phone" => Some(Identifier::Phone(value)),
        _ => None,
    }
}

/// Whether a value counts as empty: `null` or `""`.
pub fn is_empty(value: &Value) -> bool {
    value.is_null() || value.as_str() == Some("")
}

/// Whether the attributes carry an identifier of the target's kind with a
/// different value (`PUT /customers/1` with `{"id": "2"}`).
pub fn body_contradicts(target: &Identifier, attributes: &Map<String, Value>) -> bool {
    let Some(name) = identity_name(target) else {
        return false;
    };
    attributes
        .get(name)
        .and_then(identity_value)
        .and_then(|value| identity(name, value))
        .is_some_and(|body| key(&body) != key(target))
}

/// The attribute that holds an identifier of this kind (none for cio_id).
pub fn identity_name(identifier: &Identifier) -> Option<&'static str> {
    match identifier {
        Identifier::Id(_) => Some("id"),
        Identifier::Email(_) => Some("email"),
        Identifier::Phone(_) => Some("phone"),
        Identifier::CioId(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_identifiers_are_inferred_from_their_form() {
        assert_eq!(parse_path_identifier("cio_abc"), Identifier::CioId("abc".into()));
        assert_eq!(parse_path_identifier("a@b.c"), Identifier::Email("a@b.c".into()));
        assert_eq!(parse_path_identifier("+14155552671"), Identifier::Id("+14155552671".into()));
    }
}
