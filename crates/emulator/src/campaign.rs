//! Campaigns with one webhook action ("Send and receive data"), the pure
//! part: what a campaign author sets, checked once when it is registered,
//! and how it is listed without its credentials. Queueing and the record of
//! deliveries are in `campaign_log`, sending in `campaign_sender`.
//!
//! Facts followed (Customer.io docs, Send and receive data with webhooks):
//! the methods are GET, POST (the default), PUT, DELETE and PATCH; the
//! author sets the URL, and Basic auth by writing `user:pass@` into it;
//! custom headers are the author's, `Content-Type: application/json`
//! pre-filled; the body is Liquid (see `liquid`). Segment-triggered
//! campaigns start when a person enters or leaves a segment. A "manual"
//! trigger is the emulator's own: a test says who enters, with which event.

use std::collections::BTreeMap;

use ciosync_track_api::Secret;
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::liquid::Template;

/// Headers the emulator sets on every delivery itself, which an author may
/// not set (community answer, UNCONFIRMED: Customer.io sends the first two
/// on action webhooks).
pub const DELIVERY_ID_HEADER: &str = "x-cio-delivery-id";
/// See `DELIVERY_ID_HEADER`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "x-cio-idempotency-key";
const RESERVED_HEADERS: &[&str] =
    &[DELIVERY_ID_HEADER, IDEMPOTENCY_KEY_HEADER, "content-length", "host", "transfer-encoding"];

/// What the listing shows in place of a credential.
pub const REDACTED: &str = "[redacted]";

/// A campaign as `POST /_emulator/campaigns` takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// Unique among the registered campaigns; the key of the other routes.
    pub name: String,
    /// `{"segment_id": 5, "on": "enter"}` (or `"leave"`), or `{"manual": true}`.
    pub trigger: TriggerSpec,
    /// The one webhook action.
    pub action: ActionSpec,
}

/// The trigger as written: either a segment and a direction, or manual.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerSpec {
    /// The manual segment whose membership changes start the campaign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_id: Option<i32>,
    /// `enter` or `leave`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    /// `true`: started only by `POST /_emulator/campaigns/{name}/trigger`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manual: Option<bool>,
}

/// The webhook action as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// GET, POST, PUT, DELETE or PATCH; POST if left out.
    #[serde(default)]
    pub method: Option<String>,
    /// `http(s)://[user:pass@]host[:port]/path`.
    pub url: String,
    /// Header name to value, sent as given (values may be credentials and
    /// are never listed).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// The Liquid template of the body; empty if left out.
    #[serde(default)]
    pub body: String,
}

/// When a campaign starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A person entering (`enter: true`) or leaving a manual segment.
    Segment {
        /// The segment.
        segment_id: i32,
        /// Entering, else leaving.
        enter: bool,
    },
    /// Only on demand.
    Manual,
}

impl Trigger {
    /// How deliveries name their trigger: `segment 5 enter`, `manual`.
    pub fn describe(&self) -> String {
        match self {
            Trigger::Segment { segment_id, enter: true } => format!("segment {segment_id} enter"),
            Trigger::Segment { segment_id, enter: false } => format!("segment {segment_id} leave"),
            Trigger::Manual => "manual".to_owned(),
        }
    }

    fn spec(&self) -> TriggerSpec {
        match *self {
            Trigger::Segment { segment_id, enter } => TriggerSpec {
                segment_id: Some(segment_id),
                on: Some(if enter { "enter" } else { "leave" }.to_owned()),
                manual: None,
            },
            Trigger::Manual => TriggerSpec { manual: Some(true), ..TriggerSpec::default() },
        }
    }
}

/// The HTTP request of an action, less its body: everything a delivery
/// needs to be sent, credentials included. `Debug` shows no credential.
#[derive(Clone, PartialEq, Eq)]
pub struct ActionRequest {
    /// Upper case, one of the five.
    pub method: String,
    /// The URL without its user info.
    pub url: String,
    /// User and password taken from the URL, percent-decoded.
    pub basic_auth: Option<(String, Secret)>,
    /// The author's headers, names in lower case.
    pub headers: Vec<(String, Secret)>,
}

impl std::fmt::Debug for ActionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("ActionRequest")
            .field("method", &self.method)
            .field("url", &self.listed_url())
            .field("basic_auth", &self.basic_auth.is_some())
            .field("headers", &header_names)
            .finish()
    }
}

impl ActionRequest {
    /// The URL with query values hidden (they may be tokens), for listings.
    pub fn listed_url(&self) -> String {
        let Ok(mut url) = url::Url::parse(&self.url) else {
            return REDACTED.to_owned();
        };
        if url.query().is_some() {
            let names: Vec<String> = url.query_pairs().map(|(name, _)| name.into_owned()).collect();
            url.query_pairs_mut().clear().extend_pairs(names.iter().map(|name| (name, REDACTED)));
        }
        url.to_string()
    }
}

/// A registered campaign.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Its unique name.
    pub name: String,
    /// When it starts.
    pub trigger: Trigger,
    /// Where and how its action sends.
    pub request: ActionRequest,
    /// The body template, parsed.
    pub body: Template,
    /// The body template as written.
    pub body_source: String,
}

impl Campaign {
    /// Checks `spec`, naming the first bad field.
    pub fn from_spec(spec: CampaignSpec) -> Result<Self, String> {
        check_name(&spec.name)?;
        let trigger = trigger(&spec.trigger)?;
        let body = Template::parse(&spec.action.body).map_err(|e| format!("action.body: {e}"))?;
        Ok(Self {
            name: spec.name,
            trigger,
            request: request(&spec.action)?,
            body,
            body_source: spec.action.body,
        })
    }

    /// How `GET /_emulator/campaigns` lists it: no user info in the URL,
    /// query values and header values redacted, `basic_auth` saying whether
    /// the URL carried credentials.
    pub fn listing(&self) -> Value {
        let headers: BTreeMap<&str, &str> =
            self.request.headers.iter().map(|(name, _)| (name.as_str(), REDACTED)).collect();
        json!({
            "name": self.name,
            "trigger": self.trigger.spec(),
            "action": {
                "method": self.request.method,
                "url": self.request.listed_url(),
                "basic_auth": self.request.basic_auth.is_some(),
                "headers": headers,
                "body": self.body_source,
            },
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("name must not be empty".to_owned());
    }
    if name.contains('/') || name == "deliveries" {
        // Both would collide with the routes under /_emulator/campaigns/.
        return Err(format!("name {name:?} must not contain '/' nor be \"deliveries\""));
    }
    Ok(())
}

fn trigger(spec: &TriggerSpec) -> Result<Trigger, String> {
    match (spec.segment_id, spec.on.as_deref(), spec.manual) {
        (None, None, Some(true)) => Ok(Trigger::Manual),
        (Some(segment_id), Some(on @ ("enter" | "leave")), None) => {
            Ok(Trigger::Segment { segment_id, enter: on == "enter" })
        }
        (Some(_), Some(on), None) => {
            Err(format!("trigger.on must be \"enter\" or \"leave\", not {on:?}"))
        }
        _ => Err(
            "trigger must be {\"segment_id\": N, \"on\": \"enter\"|\"leave\"} or {\"manual\": true}"
                .to_owned(),
        ),
    }
}

fn request(spec: &ActionSpec) -> Result<ActionRequest, String> {
    let method = spec.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "DELETE" | "PATCH") {
        return Err(format!(
            "action.method must be GET, POST, PUT, DELETE or PATCH, not {:?}",
            spec.method.as_deref().unwrap_or_default()
        ));
    }
    // The URL's own error text could echo the credentials: not used.
    let mut url = url::Url::parse(&spec.url)
        .map_err(|_| "action.url is not a URL (http(s)://[user:pass@]host/path)".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err("action.url must be an http or https URL with a host".to_owned());
    }
    let basic_auth = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        let user = percent_decode(url.username());
        let password = Secret::new(percent_decode(url.password().unwrap_or_default()));
        Some((user, password))
    };
    // Cannot fail on an http(s) URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(ActionRequest { method, url: url.to_string(), basic_auth, headers: headers(spec)? })
}

fn headers(spec: &ActionSpec) -> Result<Vec<(String, Secret)>, String> {
    let mut headers = Vec::new();
    for (name, value) in &spec.headers {
        let lower = name.to_ascii_lowercase();
        if HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(format!("action.headers: {name:?} is not a header name"));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!("action.headers: {name} is set by the emulator itself"));
        }
        if HeaderValue::from_str(value.expose()).is_err() {
            // Never the value itself: it may be a credential.
            return Err(format!("action.headers: the value of {name} is not a valid header value"));
        }
        headers.push((lower, value.clone()));
    }
    Ok(headers)
}

/// `%XX` sequences to bytes, then UTF-8 (lossily); others as they are.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|pair| std::str::from_utf8(pair).ok());
        match (bytes[i], hex.and_then(|pair| u8::from_str_radix(pair, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: Value) -> Result<Campaign, String> {
        let spec: CampaignSpec = serde_json::from_value(value).map_err(|e| e.to_string())?;
        Campaign::from_spec(spec)
    }

    fn valid() -> Value {
        json!({
            "name": "vip",
            "trigger": {"segment_id": 5, "on": "enter"},
            "action": {
                "url": "http://bob:p%40ss@127.0.0.1:9/hook?token=t0p&x=1",
                "headers": {"Authorization": "Bearer s3cret", "X-Team": "core"},
                "body": "{\"id\": {{ customer.id | json }}}"
            }
        })
    }

    #[test]
    fn basic_auth_comes_out_of_the_url_and_the_method_defaults_to_post() {
        let campaign = spec(valid()).expect("valid");
        assert_eq!(campaign.trigger, Trigger::Segment { segment_id: 5, enter: true });
        assert_eq!(campaign.request.method, "POST");
        assert_eq!(campaign.request.url, "http://127.0.0.1:9/hook?token=t0p&x=1");
        let (user, password) = campaign.request.basic_auth.clone().expect("basic auth");
        assert_eq!((user.as_str(), password.expose()), ("bob", "p@ss"));
        assert_eq!(campaign.request.headers[0].0, "authorization");
    }

    #[test]
    fn the_listing_and_debug_hold_no_credential() {
        let campaign = spec(valid()).expect("valid");
        let listed = campaign.listing().to_string();
        let debug = format!("{campaign:?}");
        for secret in ["bob", "p%40ss", "p@ss", "s3cret", "t0p", "core"] {
            assert!(!listed.contains(secret), "{secret} listed: {listed}");
            assert!(!debug.contains(secret), "{secret} in Debug: {debug}");
        }
        let listing = campaign.listing();
        assert_eq!(listing["action"]["basic_auth"], true);
        assert_eq!(listing["action"]["headers"]["authorization"], REDACTED);
        assert_eq!(
            listing["action"]["url"],
            "http://127.0.0.1:9/hook?token=%5Bredacted%5D&x=%5Bredacted%5D"
        );
        assert_eq!(listing["trigger"], json!({"segment_id": 5, "on": "enter"}));
    }

    #[test]
    fn bad_campaigns_are_refused_naming_the_field() {
        let with = |pointer: &str, value: Value| {
            let mut campaign = valid();
            let (parent, field) = pointer.rsplit_once('/').unwrap_or_default();
            if let Some(object) = campaign.pointer_mut(parent).and_then(Value::as_object_mut) {
                object.insert(field.to_owned(), value);
            }
            spec(campaign).expect_err(pointer)
        };
        assert!(with("/name", json!("")).contains("name"));
        assert!(with("/name", json!("deliveries")).contains("name"));
        assert!(with("/trigger", json!({"segment_id": 5})).contains("trigger"));
        assert!(with("/trigger", json!({"segment_id": 5, "on": "stay"})).contains("trigger.on"));
        assert!(with("/trigger", json!({"manual": true, "segment_id": 5})).contains("trigger"));
        assert!(with("/action/method", json!("TRACE")).contains("action.method"));
        assert!(with("/action/url", json!("ftp://x/y")).contains("action.url"));
        let bad_url = with("/action/url", json!("http://user:hunter2@[bad"));
        assert!(bad_url.contains("action.url") && !bad_url.contains("hunter2"));
        assert!(with("/action/headers", json!({"X-CIO-Delivery-ID": "1"})).contains("emulator"));
        let bad_value = with("/action/headers", json!({"Authorization": "a\nb"}));
        assert!(bad_value.contains("Authorization") && !bad_value.contains("a\nb"));
        assert!(with("/action/body", json!("{% if x %}")).contains("action.body"));
        assert!(spec(
            json!({"name": "m", "trigger": {"manual": true}, "action": {"url": "https://h/"}})
        )
        .is_ok_and(|c| c.trigger == Trigger::Manual && c.body_source.is_empty()));
    }

    #[test]
    fn percent_decoding_leaves_stray_percents_alone() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
    }
}
