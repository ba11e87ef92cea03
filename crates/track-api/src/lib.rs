//! Customer.io Track API wire types and limits, shared by the sink (which
//! sends them) and the emulator (which accepts them).
//!
//! Only the shapes live here, never behaviour: the sink's batching and retry
//! logic and the emulator's model stay apart. Facts come from Customer.io's
//! OpenAPI document (`specs/customer-io-track-api-openapi.json`) and the
//! facts sheet; where a limit is written "32 KB" we read it as 32,000 bytes,
//! the stricter reading.
//!
//! Beside them, [`Secret`]: the type both sides pass API keys and signing
//! keys in, so neither ever prints one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod secret;

pub use secret::Secret;

/// Largest customer id, in bytes.
pub const MAX_ID_BYTES: usize = 150;
/// Largest attribute name, in bytes.
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 150;
/// Largest attribute value, in bytes (a string's UTF-8 length, otherwise its JSON encoding).
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1000;
/// Most attributes in one identify call.
pub const MAX_ATTRIBUTES: usize = 300;
/// Largest event name, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 100;
/// Largest event data object, in bytes of JSON.
pub const MAX_EVENT_DATA_BYTES: usize = 100_000;
/// Largest `/api/v2/entity` body, in bytes.
pub const MAX_ENTITY_BYTES: usize = 32_000;
/// Largest `/api/v2/batch` body, in bytes.
pub const MAX_BATCH_BYTES: usize = 500_000;
/// Largest single item of a batch, in bytes of JSON.
pub const MAX_BATCH_ITEM_BYTES: usize = 32_000;

/// US Track API host.
pub const US_TRACK_URL: &str = "https://track.customer.io";
/// EU Track API host.
pub const EU_TRACK_URL: &str = "https://track-eu.customer.io";

/// Size in bytes that Customer.io's 1000-byte value limit is measured on:
/// a string's own UTF-8 length, any other value's JSON encoding.
pub fn attribute_value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        other => other.to_string().len(),
    }
}

/// Exactly one identifier of a person, as v2 wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identifier {
    /// The workspace's own id (ciosync always uses this one).
    Id(String),
    /// An email address, where the workspace allows it as an identifier.
    Email(String),
    /// Customer.io's internal id, without the `cio_` prefix.
    CioId(String),
    /// A phone number in E.164, where the workspace allows it.
    Phone(String),
}

impl Identifier {
    /// The identifier's value, whatever its kind.
    pub fn value(&self) -> &str {
        match self {
            Self::Id(v) | Self::Email(v) | Self::CioId(v) | Self::Phone(v) => v,
        }
    }
}

/// A person operation inside `/api/v2/batch` or `/api/v2/entity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PersonAction {
    /// Create or update a person.
    Identify {
        identifiers: Identifier,
        /// Unix seconds of the change; orders close updates (v1's `_timestamp`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<i64>,
        #[serde(default)]
        attributes: Map<String, Value>,
    },
    /// Delete a person.
    Delete { identifiers: Identifier },
    /// Delete a person and block its identifiers.
    Suppress { identifiers: Identifier },
    /// Unblock a suppressed identifier.
    Unsuppress { identifiers: Identifier },
    /// Merge `secondary` into `primary`.
    Merge { primary: Identifier, secondary: Identifier },
    /// A named event for a person.
    Event {
        identifiers: Identifier,
        name: String,
        /// A ULID; Customer.io ignores an event whose id it has seen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attributes: Option<Map<String, Value>>,
    },
    /// Add a push device to a person, or update it (by token).
    AddDevice { identifiers: Identifier, device: AddedDevice },
    /// Remove a person's push device.
    DeleteDevice { identifiers: Identifier, device: DeviceToken },
}

/// The `device` of an `add_device` item (`person_add_device` in the
/// published document: `token` and `platform` required, `last_used` Unix
/// seconds, `attributes` string values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddedDevice {
    pub token: String,
    /// `ios` or `android`.
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<i64>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
}

/// The `device` of a `delete_device` item: only its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceToken {
    pub token: String,
}

/// One batch item of type `person`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonItem {
    /// Always `"person"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What to do.
    #[serde(flatten)]
    pub action: PersonAction,
}

impl PersonItem {
    /// Wraps an action as a `person` item.
    pub fn new(action: PersonAction) -> Self {
        Self { kind: "person".to_owned(), action }
    }
}

/// The body of `POST /api/v2/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest<T = PersonItem> {
    pub batch: Vec<T>,
}

/// One error of a v2 response. In a 207 answer `batch_index` (0-based) says
/// which item failed; in a 400 it is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ItemError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_index: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The body of a v2 error answer (400, 207, and sometimes 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ErrorsResponse {
    #[serde(default)]
    pub errors: Vec<ItemError>,
}

/// v1 error details: the spec gives `errors`, the docs show `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct V1Meta {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The body of a v1 error answer: `{"meta":{"errors":[…]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct V1ErrorResponse {
    pub meta: V1Meta,
}

/// The answer of `GET /api/v1/accounts/region`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionResponse {
    pub url: String,
    pub region: String,
    pub environment_id: u64,
}

/// Where an item is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// An item of `POST /api/v2/batch`, with others.
    Batch,
    /// The whole body of `POST /api/v1/events` (an anonymous event), alone.
    AnonymousEvent,
}

impl Route {
    /// The route a stored item (a dead letter's payload) goes by: a v1
    /// anonymous event is the only one with a top-level `anonymous_id`.
    pub fn of_payload(payload: &serde_json::Value) -> Self {
        if payload.get("anonymous_id").is_some() {
            Self::AnonymousEvent
        } else {
            Self::Batch
        }
    }

    /// The API path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Batch => "/api/v2/batch",
            Self::AnonymousEvent => "/api/v1/events",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identify_item_has_the_v2_shape() {
        let item = PersonItem::new(PersonAction::Identify {
            identifiers: Identifier::Id("42".into()),
            timestamp: Some(1_700_000_000),
            attributes: json!({"plan": "pro", "nickname": null}).as_object().unwrap().clone(),
        });
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            json!({"type": "person", "action": "identify", "identifiers": {"id": "42"},
                   "timestamp": 1_700_000_000, "attributes": {"plan": "pro", "nickname": null}})
        );
        let back: PersonItem =
            serde_json::from_value(serde_json::to_value(&item).unwrap()).unwrap();
        assert_eq!(back, item);
    }

    #[test]
    fn merge_item_has_the_v2_shape() {
        let item = PersonItem::new(PersonAction::Merge {
            primary: Identifier::Id("new".into()),
            secondary: Identifier::Id("old".into()),
        });
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            json!({"type": "person", "action": "merge", "primary": {"id": "new"}, "secondary": {"id": "old"}})
        );
    }

    #[test]
    fn value_size_counts_strings_without_quotes() {
        assert_eq!(attribute_value_bytes(&json!("héllo")), 6);
        assert_eq!(attribute_value_bytes(&json!([1, 2])), 5);
    }
}

/// The body of `POST /api/v1/events` for an anonymous event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnonymousEventRequest {
    pub name: String,
    pub anonymous_id: String,
    /// A ULID; Customer.io ignores an event whose id it has seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub data: Map<String, Value>,
}
