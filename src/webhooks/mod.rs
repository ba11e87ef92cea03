//! Customer.io's reporting webhooks (opened, clicked, bounced, …) received
//! and stored in Postgres, each event once.
//!
//! ```text
//! Customer.io ──POST [webhooks] path──▶ ingress (TLS) ──▶ server: method, path, content type, size
//!                                                            │ verify: timestamp, HMAC signature
//!                                                            │ event: parse the JSON
//!                                                            ▼
//!                     200 ◀── committed ◀── store: INSERT … ON CONFLICT (event_id) DO NOTHING
//!                     503 ◀── Postgres failed (Customer.io retries; nothing is lost)
//! ```
//!
//! The receiver runs inside `ciosync run` on its own listener
//! (`[webhooks] listen`), beside the replication pipeline but on its own
//! Postgres connection. Customer.io delivers at least once and retries for
//! seven days, holding later events back until an earlier one succeeds; so
//! the answer is 200 only once the row is committed (or was already there),
//! 503 while Postgres fails, and a 4xx for requests no retry could fix.
//!
//! - the `[webhooks]` section is [`crate::config::webhooks`].
//! - [`verify`]: signature, timestamp, content type and length checks (pure).
//! - [`event`]: the JSON payload → the table's columns (pure).
//! - [`store`]: the table, its creation, the idempotent insert.
//! - [`server`]: the HTTP side, `/healthz` and `/readyz` of the listener.
//! - [`actions`]: Customer.io's campaign webhook actions
//!   (`[[webhooks.actions]]`) on `<path>/actions/<name>`: segment
//!   memberships, row updates and appended rows, each applied once.

pub mod actions;
pub mod event;
pub mod server;
pub mod session;
pub mod store;
pub mod verify;
pub mod write_back;

use axum::http::StatusCode;

pub use crate::telemetry::webhooks::Rejection;

/// The HTTP status answered for a refused request.
pub fn status(rejection: Rejection) -> StatusCode {
    match rejection {
        Rejection::Method => StatusCode::METHOD_NOT_ALLOWED,
        Rejection::Path => StatusCode::NOT_FOUND,
        Rejection::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Rejection::Signature | Rejection::Timestamp => StatusCode::UNAUTHORIZED,
        Rejection::Malformed => StatusCode::BAD_REQUEST,
        Rejection::Database | Rejection::Busy => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_reason() {
        let codes: Vec<u16> = Rejection::ALL.iter().map(|r| status(*r).as_u16()).collect();
        assert_eq!(codes, [405, 404, 415, 413, 401, 401, 400, 503, 503]);
    }
}
