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
//! - [`config`]: the `[webhooks]` section.
//! - [`verify`]: signature, timestamp, content type and length checks (pure).
//! - [`event`]: the JSON payload → the table's columns (pure).
//! - [`store`]: the table, its creation, the idempotent insert.
//! - [`server`]: the HTTP side, `/healthz` and `/readyz` of the listener.

pub mod config;
pub mod event;
pub mod server;
pub mod store;
pub mod verify;
pub mod write_back;

use std::sync::atomic::AtomicU64;

use axum::http::StatusCode;

use crate::telemetry::Counters;

/// Why a request was refused; each is counted in
/// `ciosync_webhooks_rejected_total{reason}` and logged at warn, without
/// the body or the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a POST (405).
    Method,
    /// Not the configured path (404).
    Path,
    /// Not JSON (415).
    ContentType,
    /// Over `max_body_bytes` (413).
    TooLarge,
    /// Missing or wrong `X-CIO-Signature` (401).
    Signature,
    /// Missing, unparseable or stale `X-CIO-Timestamp` (401).
    Timestamp,
    /// Not JSON, or missing what the table needs (400).
    Malformed,
    /// Postgres could not store it (503): Customer.io retries.
    Database,
}

impl Rejection {
    /// Every reason, in the order the exporter lists them.
    pub const ALL: [Rejection; 8] = [
        Self::Method,
        Self::Path,
        Self::ContentType,
        Self::TooLarge,
        Self::Signature,
        Self::Timestamp,
        Self::Malformed,
        Self::Database,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Path => "path",
            Self::ContentType => "content_type",
            Self::TooLarge => "too_large",
            Self::Signature => "signature",
            Self::Timestamp => "timestamp",
            Self::Malformed => "malformed",
            Self::Database => "database",
        }
    }

    /// The HTTP status answered.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::Path => StatusCode::NOT_FOUND,
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Signature | Self::Timestamp => StatusCode::UNAUTHORIZED,
            Self::Malformed => StatusCode::BAD_REQUEST,
            Self::Database => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The receiver's counters, part of [`Counters`]; the exporter turns them
/// into the `ciosync_webhooks_*` metrics.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Verified, well-formed events, by object type × metric (indexes into
    /// [`event::OBJECT_TYPES`] and [`event::METRICS`], the last of each
    /// being `other`).
    received: [[AtomicU64; event::METRICS.len() + 1]; event::OBJECT_TYPES.len() + 1],
    /// Events written to the table.
    pub stored: AtomicU64,
    /// Events already in the table (a retry or a repeat).
    pub duplicates: AtomicU64,
    /// Rows of synced tables changed by write-backs.
    pub write_backs: AtomicU64,
    /// Refused requests, indexed like [`Rejection::ALL`].
    rejected: [AtomicU64; Rejection::ALL.len()],
}

impl WebhookCounters {
    /// Counts one verified event with these labels (from
    /// [`event::ReportingEvent::labels`]).
    pub fn received(&self, object_type: &str, metric: &str) {
        let row = index_of(&event::OBJECT_TYPES, object_type);
        let column = index_of(&event::METRICS, metric);
        Counters::add(&self.received[row][column], 1);
    }

    /// Counts one refused request.
    pub fn rejected(&self, reason: Rejection) {
        let i = Rejection::ALL.iter().position(|r| *r == reason).unwrap_or_default();
        Counters::add(&self.rejected[i], 1);
    }

    /// Refused requests of one reason.
    pub fn rejected_count(&self, reason: Rejection) -> u64 {
        let i = Rejection::ALL.iter().position(|r| *r == reason).unwrap_or_default();
        Counters::get(&self.rejected[i])
    }

    /// Every (object_type, metric, count) counted so far, zero counts left out.
    pub fn received_snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let object_types = event::OBJECT_TYPES.iter().chain([&event::OTHER]);
        object_types
            .zip(&self.received)
            .flat_map(|(object_type, row)| {
                event::METRICS
                    .iter()
                    .chain([&event::OTHER])
                    .zip(row)
                    .map(|(metric, n)| (*object_type, *metric, Counters::get(n)))
            })
            .filter(|(_, _, n)| *n > 0)
            .collect()
    }
}

fn index_of<const N: usize>(known: &[&str; N], value: &str) -> usize {
    known.iter().position(|k| *k == value).unwrap_or(N)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_counts_by_label_and_folds_unknowns_into_other() {
        let counters = WebhookCounters::default();
        counters.received("email", "opened");
        counters.received("email", "opened");
        counters.received("other", "other");
        counters.received("sms", "replied");
        assert_eq!(
            counters.received_snapshot(),
            vec![("email", "opened", 2), ("sms", "replied", 1), ("other", "other", 1)]
        );
        counters.rejected(Rejection::TooLarge);
        assert_eq!(counters.rejected_count(Rejection::TooLarge), 1);
        assert_eq!(counters.rejected_count(Rejection::Method), 0);
    }

    #[test]
    fn statuses_follow_the_reason() {
        let codes: Vec<u16> = Rejection::ALL.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(codes, [405, 404, 415, 413, 401, 401, 400, 503]);
    }
}
