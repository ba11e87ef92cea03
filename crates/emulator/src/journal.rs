//! The request log: every Track API request with the status it got, so
//! tests can assert on what a client actually sent (and how often).
//!
//! Bodies are kept because they are test data here; the emulator's own
//! tracing output never includes them. The middleware that records each
//! request is `middleware::record`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest body read at all; above it the answer is 413. Well over the
/// 500,000-byte batch limit, so oversize batches still get Customer.io's 400.
pub const MAX_READ_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One Track API request and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// 1-based position in the log since start or reset.
    pub seq: u64,
    /// HTTP method, e.g. `PUT`.
    pub method: String,
    /// Path as sent, still percent-encoded.
    pub path: String,
    /// Query string, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Status the emulator answered.
    pub status: u16,
    /// The body parsed as JSON, if it was JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The body as text when it was not JSON (lossy UTF-8), if non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_text: Option<String>,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// Unix milliseconds when the request arrived.
    pub received_at_ms: i64,
    /// Whether fault injection decided the answer: an injected status, or
    /// injected per-item errors (`reject_ids`, `item_errors_next`).
    pub injected_fault: bool,
}

/// The route's template, for logs: paths carry ids and emails, which must
/// not reach them (`/api/v1/customers/{identifier}/events`); a path outside
/// the Track API is only called unknown, as it may carry anything.
pub fn route_of(path: &str) -> String {
    crate::catalog::template_of(path).unwrap_or("(unknown route)").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_hide_identifiers() {
        assert_eq!(
            route_of("/api/v1/customers/a%40b.c/events"),
            "/api/v1/customers/{identifier}/events"
        );
        assert_eq!(
            route_of("/api/v1/customers/42/devices/d1"),
            "/api/v1/customers/{identifier}/devices/{device_id}"
        );
        assert_eq!(route_of("/api/v2/batch"), "/api/v2/batch");
        assert_eq!(route_of("/api/v1/customer/a@b.c"), "(unknown route)");
    }
}
