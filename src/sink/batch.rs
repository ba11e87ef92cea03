//! Encoding operations as `/api/v2/batch` items under Customer.io's size
//! limits. Pure.
//!
//! Which items go together is the queue's business (`queue.rs`).

use crate::customer::{CustomerOp, Watch};
use crate::dead_letter::DeadLetter;
use crate::object_op::readable_key;
pub use crate::track_api::Route;
use crate::track_api::{
    attribute_value_bytes, AddedDevice, DeviceToken, Identifier, PersonAction, PersonItem,
    MAX_BATCH_ITEM_BYTES,
};
use serde_json::Value;

/// `{"batch":[` + `]}`.
pub const ENVELOPE_BYTES: usize = 12;

/// One encoded item and what it stands for.
#[derive(Debug, Clone)]
pub struct EncodedItem {
    /// Where it is sent.
    pub route: Route,
    /// The operation's kind, for logs.
    pub kind: &'static str,
    /// The customers it touches (two for a merge).
    pub customers: Vec<String>,
    /// The item's JSON.
    pub json: Vec<u8>,
    /// Attribute names dropped to fit the item limit.
    pub trimmed: Vec<String>,
    /// A change-derived event to decide against the record before sending
    /// (see [`Watch`]).
    pub watch: Option<Box<Watch>>,
}

/// What a watched event's JSON may grow by when the record's earlier value
/// goes in as `from`: `,"from":` and the value, which the record keeps only
/// up to [`crate::record::MAX_KEPT_VALUE_BYTES`] (a longer one goes as
/// `null`). The queue counts it, so the batch stays within its limit.
pub const FROM_RESERVE_BYTES: usize = 8 + crate::record::MAX_KEPT_VALUE_BYTES;

/// Encodes `op` as a v2 person item, dropping its largest attributes until
/// the encoded item fits in 32,000 bytes (Customer.io would refuse the whole
/// item otherwise). `None` for a barrier, which is not sent.
pub fn encode(op: CustomerOp) -> Option<EncodedItem> {
    let kind = op.kind();
    let (action, customers) = match op {
        CustomerOp::Identify { id, attributes, timestamp } => {
            let json = identify_json(&id, timestamp, &attributes);
            if json.len() <= MAX_BATCH_ITEM_BYTES {
                let (route, customers, trimmed) = (Route::Batch, vec![id], Vec::new());
                return Some(EncodedItem { route, kind, customers, json, trimmed, watch: None });
            }
            let action = PersonAction::Identify {
                identifiers: Identifier::Id(id.clone()),
                timestamp: Some(timestamp),
                attributes,
            };
            (action, vec![id])
        }
        CustomerOp::Delete { id } => {
            (PersonAction::Delete { identifiers: Identifier::Id(id.clone()) }, vec![id])
        }
        CustomerOp::Suppress { id } => {
            (PersonAction::Suppress { identifiers: Identifier::Id(id.clone()) }, vec![id])
        }
        CustomerOp::Event(event) => {
            let action = PersonAction::Event {
                identifiers: Identifier::Id(event.customer.clone()),
                name: event.name,
                id: Some(event.event_id),
                timestamp: Some(event.timestamp),
                attributes: Some(event.data),
            };
            if event.watch.is_some() {
                let (json, trimmed) = encode_within_limit(PersonItem::new(action));
                let (route, customers, watch) = (Route::Batch, vec![event.customer], event.watch);
                return Some(EncodedItem { route, kind, customers, json, trimmed, watch });
            }
            (action, vec![event.customer])
        }
        CustomerOp::Merge { primary, secondary } => (
            PersonAction::Merge {
                primary: Identifier::Id(primary.clone()),
                secondary: Identifier::Id(secondary.clone()),
            },
            vec![primary, secondary],
        ),
        CustomerOp::AddDevice(device) => {
            let device = *device;
            let action = PersonAction::AddDevice {
                identifiers: Identifier::Id(device.customer.clone()),
                device: AddedDevice {
                    token: device.token,
                    platform: device.platform.to_owned(),
                    last_used: device.last_used,
                    attributes: device.attributes,
                },
            };
            (action, vec![device.customer])
        }
        CustomerOp::DeleteDevice { customer, token } => {
            let action = PersonAction::DeleteDevice {
                identifiers: Identifier::Id(customer.clone()),
                device: DeviceToken { token },
            };
            (action, vec![customer])
        }
        CustomerOp::AnonymousEvent(event) => {
            let body = crate::track_api::AnonymousEventRequest {
                name: event.name,
                anonymous_id: event.anonymous_id.clone(),
                id: Some(event.event_id),
                timestamp: Some(event.timestamp),
                data: event.data,
            };
            let json = serde_json::to_vec(&body).unwrap_or_default();
            return Some(EncodedItem {
                route: Route::AnonymousEvent,
                kind,
                customers: vec![event.anonymous_id],
                json,
                trimmed: Vec::new(),
                watch: None,
            });
        }
        CustomerOp::Object(op) => return Some(super::object_items::encode_object(op)),
        CustomerOp::Relationship(op) => return Some(super::object_items::encode_relationship(op)),
        CustomerOp::Barrier => return None,
    };
    let (json, trimmed) = encode_within_limit(PersonItem::new(action));
    Some(EncodedItem { route: Route::Batch, kind, customers, json, trimmed, watch: None })
}

/// An identify's item JSON, byte for byte what serde writes for its
/// [`PersonItem`], written without building one: the item's fixed parts
/// are constants, and serde's flattening of the action cost more than the
/// rest of the encoding (issue 24; a test compares the two).
fn identify_json(id: &str, timestamp: i64, attributes: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut json = Vec::with_capacity(128);
    json.extend_from_slice(br#"{"type":"person","action":"identify","identifiers":{"id":"#);
    // Writing to a Vec cannot fail, nor can serialising strings and a Map.
    let _ = serde_json::to_writer(&mut json, id);
    json.extend_from_slice(br#"},"timestamp":"#);
    json.extend_from_slice(timestamp.to_string().as_bytes());
    json.extend_from_slice(br#","attributes":"#);
    let _ = serde_json::to_writer(&mut json, attributes);
    json.push(b'}');
    json
}

/// The item's JSON, measured as sent: while it is over the item limit the
/// largest attribute (of an identify or an `add_device`) is dropped (ties
/// by name, so the result is stable). The rest always fits: ids are at
/// most 150 bytes, a device token 1000.
fn encode_within_limit(mut item: PersonItem) -> (Vec<u8>, Vec<String>) {
    let mut trimmed = Vec::new();
    loop {
        let json = serde_json::to_vec(&item).unwrap_or_default();
        if json.len() <= MAX_BATCH_ITEM_BYTES {
            trimmed.sort();
            return (json, trimmed);
        }
        let attributes = match &mut item.action {
            PersonAction::Identify { attributes, .. } => attributes,
            PersonAction::AddDevice { device, .. } => &mut device.attributes,
            _ => return (json, trimmed),
        };
        let largest = attributes
            .iter()
            .map(|(k, v)| (attribute_value_bytes(v) + k.len(), k.clone()))
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
        match largest {
            Some((_, name)) => {
                attributes.remove(&name);
                trimmed.push(name);
            }
            None => return (json, trimmed),
        }
    }
}

impl EncodedItem {
    /// The bytes it may take in a request body: its JSON, and what a
    /// watched event's `from` may add.
    pub fn wire_bytes(&self) -> usize {
        let from = self.watch.as_ref().is_some_and(|w| w.fires && w.with_from);
        self.json.len() + if from { FROM_RESERVE_BYTES } else { 0 }
    }

    /// The dead letter of this item, refused for good after `attempts`
    /// sends with the refusal's `status` and (cut) `error`.
    pub fn into_dead_letter(self, attempts: u32, status: u16, error: String) -> DeadLetter {
        DeadLetter {
            customer_id: self.customers.first().map(|c| readable_key(c)).unwrap_or_default(),
            operation: self.kind,
            attributes: self.attribute_names(),
            status,
            error,
            payload: self.json,
            attempts: attempts.max(1),
        }
    }

    /// Names of the attributes it sets (an event's data keys), read back
    /// from its JSON (for dead letters, a rare path: not kept on every item).
    pub fn attribute_names(&self) -> Vec<String> {
        // A v2 item holds them in `attributes`, a v1 anonymous event in `data`.
        let key = match self.route {
            Route::Batch => "attributes",
            Route::AnonymousEvent => "data",
        };
        serde_json::from_slice::<serde_json::Value>(&self.json)
            .ok()
            .and_then(|item| match item.get(key).or_else(|| item.get("device")?.get(key)) {
                Some(serde_json::Value::Object(map)) => Some(map.keys().cloned().collect()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// The request body for `items`: `{"batch":[item,item,…]}`, written from the
/// already encoded items so nothing is serialised twice.
pub fn body(items: &[EncodedItem]) -> Vec<u8> {
    body_of(items)
}

/// [`body`] for any sequence of items.
pub fn body_of<'a>(items: impl IntoIterator<Item = &'a EncodedItem>) -> Vec<u8> {
    let items: Vec<&EncodedItem> = items.into_iter().collect();
    let mut out =
        Vec::with_capacity(items.iter().map(|i| i.json.len() + 1).sum::<usize>() + ENVELOPE_BYTES);
    out.extend_from_slice(b"{\"batch\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item.json);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use serde_json::Value;

    fn encode(op: CustomerOp) -> EncodedItem {
        super::encode(op).expect("not a barrier")
    }

    fn identify(id: &str, attributes: Value) -> CustomerOp {
        CustomerOp::Identify {
            id: id.into(),
            attributes: attributes.as_object().unwrap().clone(),
            timestamp: 1,
        }
    }

    #[test]
    fn the_body_is_a_valid_batch_request() {
        let items = vec![
            encode(identify("1", json!({"a": 1}))),
            encode(CustomerOp::Delete { id: "2".into() }),
        ];
        let body: Value = serde_json::from_slice(&body(&items)).unwrap();
        assert_eq!(
            body,
            json!({"batch": [
                {"type": "person", "action": "identify", "identifiers": {"id": "1"}, "timestamp": 1, "attributes": {"a": 1}},
                {"type": "person", "action": "delete", "identifiers": {"id": "2"}}
            ]})
        );
    }

    #[test]
    fn device_items_are_written_as_the_published_document_shows_them() {
        let device = crate::customer::Device {
            customer: "42".into(),
            token: "tok".into(),
            platform: "ios",
            last_used: Some(1_713_484_800),
            attributes: json!({"app_version": "1.2"}).as_object().unwrap().clone(),
        };
        let items = vec![
            encode(CustomerOp::AddDevice(Box::new(device.clone()))),
            encode(CustomerOp::AddDevice(Box::new(crate::customer::Device {
                last_used: None,
                attributes: serde_json::Map::new(),
                ..device
            }))),
            encode(CustomerOp::DeleteDevice { customer: "42".into(), token: "tok".into() }),
        ];
        let body: Value = serde_json::from_slice(&body(&items)).unwrap();
        assert_eq!(
            body,
            json!({"batch": [
                {"type": "person", "action": "add_device", "identifiers": {"id": "42"},
                 "device": {"token": "tok", "platform": "ios", "last_used": 1_713_484_800,
                            "attributes": {"app_version": "1.2"}}},
                {"type": "person", "action": "add_device", "identifiers": {"id": "42"},
                 "device": {"token": "tok", "platform": "ios"}},
                {"type": "person", "action": "delete_device", "identifiers": {"id": "42"},
                 "device": {"token": "tok"}}
            ]})
        );
        assert_eq!(items[0].kind, "add_device");
        assert_eq!(items[0].attribute_names(), ["app_version"], "names for a dead letter");
        assert_eq!(items[2].customers, ["42"]);
    }

    #[test]
    fn an_identify_is_written_as_serde_writes_its_person_item() {
        let cases = [
            ("1", 1_700_000_000, json!({})),
            ("a\"b\\c\u{1}é", -5, json!({"plan": "pro", "n": 3, "f": 1.5, "nil": null})),
            (
                "x",
                0,
                json!({"nested": {"k": [1, "t\n", true]}, "email": "A@x.io", "é\t": "\u{7f}"}),
            ),
        ];
        for (id, timestamp, attributes) in cases {
            let attributes = attributes.as_object().unwrap().clone();
            let item = PersonItem::new(PersonAction::Identify {
                identifiers: Identifier::Id(id.into()),
                timestamp: Some(timestamp),
                attributes: attributes.clone(),
            });
            let json = identify_json(id, timestamp, &attributes);
            assert_eq!(String::from_utf8(json).unwrap(), serde_json::to_string(&item).unwrap());
        }
    }

    #[test]
    fn an_oversized_item_loses_its_largest_attributes() {
        let mut attrs = serde_json::Map::new();
        for i in 0..40 {
            attrs.insert(format!("a{i:02}"), json!("x".repeat(900 + i)));
        }
        attrs.insert("small".into(), json!("s"));
        let item = encode(CustomerOp::Identify { id: "1".into(), attributes: attrs, timestamp: 1 });
        assert!(item.json.len() <= MAX_BATCH_ITEM_BYTES, "{}", item.json.len());
        assert!(!item.trimmed.is_empty());
        assert!(item.trimmed.contains(&"a39".to_owned()), "largest goes first: {:?}", item.trimmed);
        assert!(!item.trimmed.contains(&"small".to_owned()));
    }

    /// An `add_device` is trimmed as an identify is: its largest attributes
    /// go, no more than needed.
    #[test]
    fn an_oversized_device_loses_its_largest_attributes_and_no_more() {
        let device = |count: usize| {
            let attributes = (0..count)
                .map(|i| (format!("a{i}"), json!("v".repeat(900 + i))))
                .chain([("push_enabled".to_owned(), json!("true"))])
                .collect();
            CustomerOp::AddDevice(Box::new(crate::customer::Device {
                customer: "42".into(),
                token: "t".repeat(1000),
                platform: "ios",
                last_used: Some(1),
                attributes,
            }))
        };
        let item = encode(device(40));
        assert!(item.json.len() <= MAX_BATCH_ITEM_BYTES, "{}", item.json.len());
        assert_eq!(item.trimmed, ["a33", "a34", "a35", "a36", "a37", "a38", "a39"]);
        // No more than needed: with one of them back it would not fit.
        assert!(encode(device(34)).trimmed == ["a33"]);
        assert!(encode(device(33)).trimmed.is_empty());
    }
}
