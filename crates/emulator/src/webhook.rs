//! Reporting webhooks, the pure part: which `object_type`/`metric` pairs
//! exist, the payload Customer.io sends for one, its signature, its ULID and
//! the retry timing. No I/O and no clock: callers pass times and randomness.
//! The sender is in `webhook_sender`, the log of what was sent in
//! `webhook_log`.
//!
//! Facts followed (facts sheet §4, `specs/customer-io-reporting-webhooks-openapi.json`):
//! the payload is `{event_id, object_type, metric, timestamp, data}`; `data`
//! carries `identifiers {id, email, cio_id}`, the deprecated `customer_id`,
//! and for messages `delivery_id`, `action_id` and the parent (here always a
//! campaign); `X-CIO-Signature` is the lowercase hex HMAC-SHA256 of
//! `v0:{X-CIO-Timestamp}:{raw body}`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::Sha256;

/// The `object_type` of message webhooks the emulator sends on activity.
pub const EMAIL_OBJECT: &str = "email";
/// The `object_type` of subscription webhooks.
pub const CUSTOMER_OBJECT: &str = "customer";
/// The campaign every emulated message belongs to.
pub const EMULATED_CAMPAIGN_ID: u64 = 1;
/// The campaign action every emulated message comes from.
pub const EMULATED_ACTION_ID: u64 = 1;

/// The `failure_message` of failure metrics unless the request gives one.
const FAILURE_MESSAGE: &str = "emulated failure";

/// Every `object_type` with its metrics, as the published schema lists them.
/// Push `drafted` is left out: the schema's `push_drafted` only admits the
/// metric `attempted`, so no push `drafted` payload can validate.
pub const METRICS: &[(&str, &[&str])] = &[
    (CUSTOMER_OBJECT, &["subscribed", "unsubscribed", "cio_subscription_preferences_changed"]),
    (
        EMAIL_OBJECT,
        &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "converted",
            "unsubscribed",
            "bounced",
            "dropped",
            "spammed",
            "failed",
            "undeliverable",
        ],
    ),
    (
        "sms",
        &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "clicked",
            "converted",
            "bounced",
            "failed",
            "undeliverable",
            "replied",
        ],
    ),
    (
        "push",
        &[
            "attempted",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "converted",
            "bounced",
            "dropped",
            "failed",
            "undeliverable",
        ],
    ),
    (
        "in_app",
        &[
            "drafted",
            "attempted",
            "sent",
            "opened",
            "clicked",
            "converted",
            "failed",
            "undeliverable",
        ],
    ),
    ("slack", &["drafted", "attempted", "sent", "clicked", "failed", "undeliverable"]),
    ("webhook", &["drafted", "attempted", "sent", "clicked", "failed", "undeliverable"]),
    (
        "whatsapp",
        &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "converted",
            "bounced",
            "dropped",
            "failed",
            "undeliverable",
            "replied",
        ],
    ),
];

/// Whether Customer.io sends `metric` for `object_type`.
pub fn is_known_metric(object_type: &str, metric: &str) -> bool {
    METRICS.iter().any(|(object, metrics)| *object == object_type && metrics.contains(&metric))
}

/// One webhook asked for on demand (`POST /_emulator/webhooks`,
/// `Emulator::send_webhook`). Only `metric` is required; the person is
/// looked up in the workspace by `customer_id`, else `email`, else
/// `cio_id`, and whatever is not found there is taken as given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookRequest {
    /// `customer`, `email` (the default), `sms`, `push`, `in_app`, `slack`,
    /// `webhook` or `whatsapp`.
    pub object_type: Option<String>,
    /// One of the metrics of `object_type`, e.g. `bounced`.
    pub metric: String,
    /// The person's id (`identifiers.id` and the deprecated `customer_id`).
    pub customer_id: Option<String>,
    /// The person's email (`identifiers.email`, and the recipient).
    pub email: Option<String>,
    /// The person's `cio_id`; a made-up one if the person is unknown.
    pub cio_id: Option<String>,
    /// The event's Unix seconds; the time it is queued if absent.
    pub timestamp: Option<i64>,
    /// Fields merged over the generated `data` (e.g. `failure_message`,
    /// `subject`, `campaign_id`), replacing generated ones with the same name.
    pub data: Map<String, Value>,
}

impl WebhookRequest {
    /// A request for `metric` of `object_type` with everything else generated.
    pub fn new(object_type: impl Into<String>, metric: impl Into<String>) -> Self {
        Self { object_type: Some(object_type.into()), metric: metric.into(), ..Self::default() }
    }

    /// The same request about the person with this id.
    pub fn for_customer(mut self, id: impl Into<String>) -> Self {
        self.customer_id = Some(id.into());
        self
    }

    /// The `object_type`, `email` unless given.
    pub fn object_type(&self) -> &str {
        self.object_type.as_deref().unwrap_or(EMAIL_OBJECT)
    }

    /// Checks the pair names a real webhook, naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let object_type = self.object_type();
        if !METRICS.iter().any(|(object, _)| *object == object_type) {
            return Err(format!("object_type {object_type:?} is not one Customer.io sends"));
        }
        if !is_known_metric(object_type, &self.metric) {
            return Err(format!("metric {:?} is not sent for {object_type}", self.metric));
        }
        Ok(())
    }
}

/// Who a webhook is about, as `data.identifiers` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPerson {
    /// `id`, `null` for a person known only by email.
    pub id: Option<String>,
    /// `email`, `null` if unknown.
    pub email: Option<String>,
    /// Customer.io's internal id.
    pub cio_id: String,
}

/// The message a non-`customer` webhook reports on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The fake `delivery_id`, shared by all metrics of one message.
    pub delivery_id: String,
    /// The email subject (emails only).
    pub subject: String,
    /// The event that triggered the campaign, if it had an id.
    pub trigger_event_id: Option<String>,
}

/// The webhook body: the fields the schema requires for `metric` of
/// `object_type`, filled with emulated values, then `extra` merged over
/// `data`. `message` is ignored for `customer` webhooks other than
/// `cio_subscription_preferences_changed`.
pub fn payload(
    event_id: &str,
    object_type: &str,
    metric: &str,
    timestamp: i64,
    person: &WebhookPerson,
    message: &Message,
    extra: &Map<String, Value>,
) -> Value {
    let identifiers = json!({"id": person.id, "email": person.email, "cio_id": person.cio_id});
    // Deprecated, but still sent; blank when the person has no id.
    let customer_id = person.id.clone().unwrap_or_default();
    let mut data = Map::new();
    data.insert("identifiers".into(), identifiers);
    data.insert("customer_id".into(), customer_id.into());
    // Subscription preference changes name the message they came from.
    let from_message =
        object_type != CUSTOMER_OBJECT || metric == "cio_subscription_preferences_changed";
    if from_message {
        data.insert("delivery_id".into(), message.delivery_id.clone().into());
        data.insert("action_id".into(), EMULATED_ACTION_ID.into());
        data.insert("campaign_id".into(), EMULATED_CAMPAIGN_ID.into());
        if let Some(trigger) = &message.trigger_event_id {
            data.insert("trigger_event_id".into(), trigger.clone().into());
        }
    }
    if object_type == CUSTOMER_OBJECT {
        data.insert("email_address".into(), json!(person.email));
    } else {
        let failed =
            matches!(metric, "attempted" | "bounced" | "dropped" | "failed" | "undeliverable");
        let recipient = person.email.clone().unwrap_or_default();
        if object_type == "push" {
            let mut device = json!({
                "device_id": format!("emulator-device-{}", person.cio_id),
                "device_platform": "ios",
            });
            if failed {
                device["failure_message"] = FAILURE_MESSAGE.into();
            }
            data.insert("recipients".into(), json!([device]));
        } else {
            data.insert("recipient".into(), recipient.clone().into());
        }
        if object_type == EMAIL_OBJECT {
            data.insert("subject".into(), message.subject.clone().into());
        }
        if failed {
            data.insert("failure_message".into(), FAILURE_MESSAGE.into());
        }
        if metric == "clicked" {
            data.insert("href".into(), "https://example.com/".into());
            data.insert("link_id".into(), 1.into());
        }
        if metric == "replied" {
            data.insert("inbound_event_id".into(), format!("{}-reply", message.delivery_id).into());
            data.insert("to".into(), recipient.into());
        }
    }
    for (name, value) in extra {
        data.insert(name.clone(), value.clone());
    }
    json!({
        "event_id": event_id,
        "object_type": object_type,
        "metric": metric,
        "timestamp": timestamp,
        "data": data,
    })
}

/// `X-CIO-Signature`: lowercase hex HMAC-SHA256, keyed with `key`, of
/// `v0:{timestamp}:{body}`.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A ULID: Crockford base32 of `millis` (48 bits) then `random` (its low
/// 80 bits); 26 characters, sorting by time.
pub fn ulid(millis: u64, random: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let value = (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
    (0..26).rev().map(|i| ALPHABET[((value >> (i * 5)) & 0x1F) as usize] as char).collect()
}

/// Retry timing for webhooks that fail (a non-2xx answer, a timeout or a
/// connection error). While one webhook is being retried, later ones wait
/// (head-of-line blocking, as Customer.io does). The defaults are small,
/// for tests and demos; Customer.io waits an hour before the first retry
/// after most failures, backs off exponentially and gives up after 7 days
/// (`initial_backoff_ms = 3600000`, `give_up_after_ms = 604800000`,
/// `max_attempts = 0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookRetry {
    /// Wait before the first retry, in milliseconds; doubles per failure.
    /// Default 100.
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, in milliseconds. Default 2000.
    pub max_backoff_ms: u64,
    /// Most attempts per webhook, the first included; 0 means no limit
    /// (only `give_up_after_ms`). Default 10.
    pub max_attempts: u32,
    /// Give up on a webhook once this many milliseconds have passed since
    /// its first attempt; it is then listed as failed and the next one goes.
    /// Default 60000.
    pub give_up_after_ms: u64,
}

/// `WebhookRetry::initial_backoff_ms` unless configured.
pub const DEFAULT_WEBHOOK_INITIAL_BACKOFF_MS: u64 = 100;
/// `WebhookRetry::max_backoff_ms` unless configured.
pub const DEFAULT_WEBHOOK_MAX_BACKOFF_MS: u64 = 2_000;
/// `WebhookRetry::max_attempts` unless configured.
pub const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 10;
/// `WebhookRetry::give_up_after_ms` unless configured.
pub const DEFAULT_WEBHOOK_GIVE_UP_AFTER_MS: u64 = 60_000;

impl Default for WebhookRetry {
    fn default() -> Self {
        Self {
            initial_backoff_ms: DEFAULT_WEBHOOK_INITIAL_BACKOFF_MS,
            max_backoff_ms: DEFAULT_WEBHOOK_MAX_BACKOFF_MS,
            max_attempts: DEFAULT_WEBHOOK_MAX_ATTEMPTS,
            give_up_after_ms: DEFAULT_WEBHOOK_GIVE_UP_AFTER_MS,
        }
    }
}

impl WebhookRetry {
    /// Checks the timing, naming the bad field as `webhook_retry.…`.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_as("webhook_retry")
    }

    /// Checks the timing, naming the bad field as `{field}.…` (the same
    /// timing serves campaign deliveries as `campaign_retry`).
    pub fn validate_as(&self, field: &str) -> Result<(), String> {
        if self.initial_backoff_ms == 0 {
            return Err(format!("{field}.initial_backoff_ms must be at least 1"));
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(format!("{field}.max_backoff_ms must not be below initial_backoff_ms"));
        }
        if self.give_up_after_ms == 0 {
            return Err(format!("{field}.give_up_after_ms must be at least 1"));
        }
        Ok(())
    }
}

/// What to do after a webhook's attempt number `attempts` failed,
/// `elapsed_ms` after its first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again after this wait; later webhooks keep waiting.
    RetryIn(Duration),
    /// Stop: record it as failed and go on with the next.
    GiveUp,
}

/// Exponential backoff: `initial_backoff_ms` after the first failure,
/// doubling, at most `max_backoff_ms`; give up at `max_attempts` or once
/// the next try would start after `give_up_after_ms`.
pub fn after_failure(retry: &WebhookRetry, attempts: u32, elapsed_ms: u64) -> AfterFailure {
    if retry.max_attempts != 0 && attempts >= retry.max_attempts {
        return AfterFailure::GiveUp;
    }
    let doublings = attempts.saturating_sub(1).min(63);
    let wait = retry
        .initial_backoff_ms
        .saturating_mul(1u64.checked_shl(doublings).unwrap_or(u64::MAX))
        .min(retry.max_backoff_ms);
    if elapsed_ms.saturating_add(wait) > retry.give_up_after_ms {
        return AfterFailure::GiveUp;
    }
    AfterFailure::RetryIn(Duration::from_millis(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_lowercase_hex_hmac_of_v0_timestamp_body() {
        // RFC 4231 test case 2 checks the HMAC itself: key "Jefe".
        assert_eq!(
            hex::encode(
                <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe")
                    .map(|mut m| {
                        m.update(b"what do ya want for nothing?");
                        m.finalize().into_bytes()
                    })
                    .expect("mac")
            ),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let signature = sign(b"key", 1_700_000_000, b"{}");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"key").expect("mac");
        mac.update(b"v0:1700000000:{}");
        assert_eq!(signature, hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature, signature.to_lowercase());
        assert_eq!(signature.len(), 64);
        assert_ne!(signature, sign(b"key", 1_700_000_001, b"{}"), "the timestamp is signed");
    }

    #[test]
    fn ulid_is_26_crockford_characters_sorting_by_time() {
        assert_eq!(ulid(0, 0), "00000000000000000000000000");
        assert_eq!(ulid(1, 0), "00000000010000000000000000");
        assert_eq!(ulid(u64::MAX, u128::MAX), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert!(ulid(2, u128::MAX) < ulid(3, 0), "time sorts first");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let retry = WebhookRetry {
            initial_backoff_ms: 100,
            max_backoff_ms: 350,
            max_attempts: 5,
            give_up_after_ms: 10_000,
        };
        let waits: Vec<AfterFailure> = (1..=5).map(|n| after_failure(&retry, n, 0)).collect();
        let ms = |n| AfterFailure::RetryIn(Duration::from_millis(n));
        assert_eq!(waits, vec![ms(100), ms(200), ms(350), ms(350), AfterFailure::GiveUp]);
        let unlimited = WebhookRetry { max_attempts: 0, ..retry };
        assert_eq!(after_failure(&unlimited, 1_000, 0), ms(350));
        assert_eq!(after_failure(&unlimited, 1, 9_950), AfterFailure::GiveUp, "time cap");
    }

    #[test]
    fn payload_names_the_person_and_the_message_and_takes_extra_data() {
        let person =
            WebhookPerson { id: Some("42".into()), email: None, cio_id: "03000001".into() };
        let message =
            Message { delivery_id: "d1".into(), subject: "signup".into(), trigger_event_id: None };
        let extra = json!({"failure_message": "mailbox full"});
        let body = payload(
            "01A",
            "email",
            "bounced",
            7,
            &person,
            &message,
            extra.as_object().unwrap_or(&Map::new()),
        );
        assert_eq!(
            body["data"]["identifiers"],
            json!({"id": "42", "email": null, "cio_id": "03000001"})
        );
        assert_eq!(body["data"]["customer_id"], "42");
        assert_eq!(body["data"]["delivery_id"], "d1");
        assert_eq!(body["data"]["failure_message"], "mailbox full");
        assert_eq!(
            (body["metric"].as_str(), body["timestamp"].as_i64()),
            (Some("bounced"), Some(7))
        );
        let customer = payload("01B", "customer", "subscribed", 7, &person, &message, &Map::new());
        assert_eq!(customer["data"]["email_address"], Value::Null);
        assert!(customer["data"].get("delivery_id").is_none());
    }

    #[test]
    fn requests_must_name_a_real_metric() {
        assert_eq!(WebhookRequest::new("email", "bounced").validate(), Ok(()));
        assert!(WebhookRequest::new("email", "replied").validate().is_err());
        assert!(WebhookRequest::new("fax", "sent").validate().unwrap_err().contains("object_type"));
        let default_type = WebhookRequest { metric: "sent".into(), ..WebhookRequest::default() };
        assert_eq!(default_type.object_type(), "email");
    }
}
