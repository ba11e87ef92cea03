//! A reporting event as stored: the columns pulled out of Customer.io's
//! JSON, and the metric labels it counts under. Pure, no I/O.
//!
//! Parsing is liberal where Customer.io's documents are loose (ids arrive
//! as numbers or strings; `identifiers` may be missing in older payloads,
//! which carry the deprecated `customer_id` instead) and strict only about
//! what the table cannot do without: `event_id`, `metric`, `object_type`,
//! `timestamp`.

use serde_json::{Map, Value};

use crate::telemetry::webhooks::{METRICS, OBJECT_TYPES, OTHER};

/// Latest `timestamp` accepted: the end of year 9999, as far as
/// `timestamptz` goes comfortably.
const MAX_TIMESTAMP: i64 = 253_402_300_799;

/// One event, ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportingEvent {
    /// Customer.io's id of the event (a ULID): the table's primary key.
    pub event_id: String,
    pub metric: String,
    pub object_type: String,
    /// When it happened, Unix seconds.
    pub occurred_at: i64,
    /// `data.identifiers.id`, else the deprecated `data.customer_id`.
    pub customer_id: Option<String>,
    /// `data.identifiers.email`, else `data.email_address`.
    pub email: Option<String>,
    pub cio_id: Option<String>,
    pub delivery_id: Option<String>,
    pub campaign_id: Option<i64>,
    pub broadcast_id: Option<i64>,
    pub newsletter_id: Option<i64>,
    pub transactional_message_id: Option<i64>,
    pub action_id: Option<i64>,
    pub trigger_event_id: Option<String>,
    /// The link of a `clicked` event.
    pub href: Option<String>,
    /// Why a `bounced`, `failed`, `dropped` or `undeliverable` message failed.
    pub failure_message: Option<String>,
    /// The whole request body, as parsed.
    pub payload: Value,
}

/// Why a body is not an event we can store; never quotes the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("the payload has no usable `{0}`")]
    Missing(&'static str),
    #[error("the payload holds a NUL character, which Postgres cannot store")]
    NulCharacter,
}

impl ReportingEvent {
    /// Parses a request body (already verified as Customer.io's).
    pub fn parse(body: &[u8]) -> Result<Self, Malformed> {
        let payload: Value = serde_json::from_slice(body).map_err(|_| Malformed::NotAnObject)?;
        let Value::Object(top) = &payload else {
            return Err(Malformed::NotAnObject);
        };
        if holds_nul(&payload) {
            return Err(Malformed::NulCharacter);
        }
        let required = |key: &'static str| {
            text(top.get(key)).filter(|v| !v.is_empty()).ok_or(Malformed::Missing(key))
        };
        let event_id = required("event_id")?;
        let metric = required("metric")?;
        let object_type = required("object_type")?;
        let occurred_at = integer(top.get("timestamp"))
            .filter(|t| (0..=MAX_TIMESTAMP).contains(t))
            .ok_or(Malformed::Missing("timestamp"))?;
        let empty = Map::new();
        let data = match top.get("data") {
            Some(Value::Object(data)) => data,
            _ => &empty,
        };
        let identifiers = match data.get("identifiers") {
            Some(Value::Object(ids)) => ids,
            _ => &empty,
        };
        let field = |key: &str| text(data.get(key));
        let id = |key: &str| integer(data.get(key));
        Ok(Self {
            customer_id: text(identifiers.get("id")).or_else(|| field("customer_id")),
            email: text(identifiers.get("email")).or_else(|| field("email_address")),
            cio_id: text(identifiers.get("cio_id")),
            delivery_id: field("delivery_id"),
            campaign_id: id("campaign_id"),
            broadcast_id: id("broadcast_id"),
            newsletter_id: id("newsletter_id"),
            transactional_message_id: id("transactional_message_id"),
            action_id: id("action_id"),
            trigger_event_id: field("trigger_event_id"),
            href: field("href"),
            failure_message: field("failure_message"),
            event_id,
            metric,
            object_type,
            occurred_at,
            payload,
        })
    }

    /// The `object_type` and `metric` label values: the event's own when the
    /// spec lists them, else `other`, so labels stay a fixed set.
    pub fn labels(&self) -> (&'static str, &'static str) {
        (label_of(&OBJECT_TYPES, &self.object_type), label_of(&METRICS, &self.metric))
    }
}

fn label_of<const N: usize>(known: &[&'static str; N], value: &str) -> &'static str {
    known.iter().find(|k| **k == value).copied().unwrap_or(OTHER)
}

/// A string, or a number written as one (ids arrive either way); not
/// `null`, a boolean, an object or an array.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A whole number, or a string holding one; a float with no fraction counts.
fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether any string or key holds U+0000, which `text` and `jsonb` refuse:
/// such an event would fail every retry, so it is refused up front (400)
/// instead of answering 503 for Customer.io's seven days of retries.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<ReportingEvent, Malformed> {
        ReportingEvent::parse(value.to_string().as_bytes())
    }

    #[test]
    fn a_clicked_email_keeps_its_link_and_ids() {
        let event = parse(json!({
            "event_id": "01E4C4CT6YDC7Y5M7FE1GWWPQJ",
            "object_type": "email",
            "metric": "clicked",
            "timestamp": 1613063089,
            "data": {
                "identifiers": {"id": "42", "email": "a@example.com", "cio_id": "d9c106000001"},
                "customer_id": "old-42",
                "delivery_id": "RPILAgABcRhIBqSp7kiPekGBIeVh",
                "campaign_id": 5, "action_id": "96", "trigger_event_id": "01E4TRIGGER",
                "href": "https://example.com/x", "link_id": 3, "recipient": "a@example.com",
            }
        }))
        .unwrap();
        assert_eq!(event.event_id, "01E4C4CT6YDC7Y5M7FE1GWWPQJ");
        assert_eq!(event.occurred_at, 1613063089);
        assert_eq!(event.customer_id.as_deref(), Some("42"));
        assert_eq!(event.email.as_deref(), Some("a@example.com"));
        assert_eq!(event.cio_id.as_deref(), Some("d9c106000001"));
        assert_eq!((event.campaign_id, event.action_id), (Some(5), Some(96)));
        assert_eq!(event.broadcast_id, None);
        assert_eq!(event.trigger_event_id.as_deref(), Some("01E4TRIGGER"));
        assert_eq!(event.href.as_deref(), Some("https://example.com/x"));
        assert_eq!(event.labels(), ("email", "clicked"));
    }

    #[test]
    fn the_deprecated_customer_id_fills_in_for_missing_identifiers() {
        let event = parse(json!({
            "event_id": 123, "object_type": "email", "metric": "bounced", "timestamp": "1613063089",
            "data": {"customer_id": 7, "email_address": "b@example.com",
                     "failure_message": "550 no such user", "broadcast_id": 9}
        }))
        .unwrap();
        assert_eq!(event.event_id, "123");
        assert_eq!(event.customer_id.as_deref(), Some("7"));
        assert_eq!(event.email.as_deref(), Some("b@example.com"));
        assert_eq!(event.failure_message.as_deref(), Some("550 no such user"));
        assert_eq!(event.broadcast_id, Some(9));
        let nulls = parse(json!({
            "event_id": "e", "object_type": "customer", "metric": "subscribed", "timestamp": 1,
            "data": {"identifiers": {"id": null, "email": "c@example.com"}, "customer_id": "c1"}
        }))
        .unwrap();
        assert_eq!(nulls.customer_id.as_deref(), Some("c1"));
        assert_eq!(nulls.email.as_deref(), Some("c@example.com"));
    }

    #[test]
    fn what_the_table_needs_must_be_there() {
        let full = json!({"event_id": "e", "object_type": "sms", "metric": "sent", "timestamp": 5});
        assert!(parse(full.clone()).is_ok(), "data is optional");
        for key in ["event_id", "object_type", "metric", "timestamp"] {
            let mut without = full.clone();
            without.as_object_mut().unwrap().remove(key);
            assert_eq!(parse(without), Err(Malformed::Missing(key)));
            let mut empty = full.clone();
            empty[key] = json!("");
            assert_eq!(parse(empty), Err(Malformed::Missing(key)));
        }
        let mut late = full.clone();
        late["timestamp"] = json!(1e15);
        assert_eq!(parse(late), Err(Malformed::Missing("timestamp")));
        assert_eq!(ReportingEvent::parse(b"{\"event_id\":"), Err(Malformed::NotAnObject));
        assert_eq!(ReportingEvent::parse(b"[1]"), Err(Malformed::NotAnObject));
        let mut nul = full;
        nul["data"] = json!({"subject": "a\u{0}b"});
        assert_eq!(parse(nul), Err(Malformed::NulCharacter));
    }

    #[test]
    fn labels_outside_the_spec_are_other() {
        let event = parse(
            json!({"event_id": "e", "object_type": "pigeon", "metric": "cooed", "timestamp": 5}),
        )
        .unwrap();
        assert_eq!(event.labels(), (OTHER, OTHER));
        let event = parse(json!({"event_id": "e", "object_type": "whatsapp", "metric": "replied", "timestamp": 5}))
            .unwrap();
        assert_eq!(event.labels(), ("whatsapp", "replied"));
    }
}
