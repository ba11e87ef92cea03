//! Playing Customer.io's reporting webhook: signed requests to the
//! receiver, and reading what it stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciosync::webhooks::verify;
use serde_json::Value;

use super::postgres::TestDb;

/// The signing key of every test's `[webhooks]` section.
pub const SIGNING_KEY: &str = "cio-test-signing-key-6f1d";
/// The secret of every test's `[[webhooks.actions]]`.
pub const ACTION_SECRET: &str = "action-secret-8c1f2e9d";
/// The default path.
pub const PATH: &str = "/webhooks/customerio";

/// The `[webhooks]` section the tests append to the config; the listener
/// is replaced by a free port of the test's own.
pub fn section(extra: &str) -> String {
    format!("\n[webhooks]\nlisten = \"127.0.0.1:0\"\nsigning_key = \"{SIGNING_KEY}\"\n{extra}\n")
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A request as Customer.io would send it, and what the test may change.
pub struct Delivery {
    pub method: reqwest::Method,
    pub content_type: Option<&'static str>,
    pub timestamp: String,
    /// `None`: signed with [`SIGNING_KEY`].
    pub signature: Option<String>,
    pub body: Vec<u8>,
}

impl Delivery {
    /// `body` signed now with [`SIGNING_KEY`], as JSON.
    pub fn of(body: &Value) -> Self {
        Self::raw(body.to_string().into_bytes())
    }

    /// Raw bytes, signed now, labelled as JSON.
    pub fn raw(body: Vec<u8>) -> Self {
        Self {
            method: reqwest::Method::POST,
            content_type: Some("application/json"),
            timestamp: now().to_string(),
            signature: None,
            body,
        }
    }

    /// Sends it to `url`: the status and the answer's body.
    pub async fn send(&self, url: &str) -> (u16, String) {
        let signature = self
            .signature
            .clone()
            .unwrap_or_else(|| verify::sign(SIGNING_KEY.as_bytes(), &self.timestamp, &self.body));
        let mut request = reqwest::Client::new()
            .request(self.method.clone(), url)
            .timeout(Duration::from_secs(10))
            .header("X-CIO-Timestamp", &self.timestamp)
            .header("X-CIO-Signature", signature)
            .body(self.body.clone());
        if let Some(content_type) = self.content_type {
            request = request.header("Content-Type", content_type);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

/// A reporting event of `object_type`/`metric` with `data`, its id `event_id`.
pub fn event(event_id: &str, object_type: &str, metric: &str, data: Value) -> Value {
    serde_json::json!({
        "event_id": event_id,
        "object_type": object_type,
        "metric": metric,
        "timestamp": 1_713_484_800,
        "data": data,
    })
}

/// Rows of the events table (default `ciosync.message_events`), by event id:
/// every column but `payload` and `received_at` as text (NULL as `None`).
pub async fn stored(db: &TestDb) -> Vec<Vec<Option<String>>> {
    let rows = db
        .client
        .query(
            "SELECT event_id, metric, object_type, extract(epoch FROM occurred_at)::bigint::text, customer_id, email, cio_id, \
             delivery_id, campaign_id::text, broadcast_id::text, newsletter_id::text, \
             transactional_message_id::text, action_id::text, trigger_event_id, href, \
             failure_message FROM ciosync.message_events ORDER BY event_id",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter().map(|r| (0..16).map(|i| r.get::<_, Option<String>>(i)).collect()).collect()
}

/// How many rows the events table holds (0 when it does not exist yet).
pub async fn count(db: &TestDb) -> i64 {
    db.client
        .query_one("SELECT count(*) FROM ciosync.message_events", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}
