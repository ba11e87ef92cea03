//! The webhook receiver's counters and the label vocabularies they are
//! counted under (`ciosync_webhooks_*`); the receiver in `webhooks` counts,
//! the exporter reads.

use std::sync::atomic::AtomicU64;

use super::Counters;

/// `object_type` values of the reporting-webhook spec; anything else counts
/// as `other` in `ciosync_webhooks_received_total`.
pub const OBJECT_TYPES: [&str; 8] =
    ["customer", "email", "sms", "push", "in_app", "slack", "webhook", "whatsapp"];

/// Every `metric` of the spec, over all object types; anything else counts
/// as `other`.
pub const METRICS: [&str; 16] = [
    "subscribed",
    "unsubscribed",
    "cio_subscription_preferences_changed",
    "drafted",
    "attempted",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "converted",
    "bounced",
    "dropped",
    "spammed",
    "failed",
    "undeliverable",
    "replied",
];

/// The label value of anything outside [`OBJECT_TYPES`] or [`METRICS`].
pub const OTHER: &str = "other";

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
    /// The listener's budget of buffered body bytes was spent (503):
    /// Customer.io retries.
    Busy,
}

impl Rejection {
    /// Every reason, in the order the exporter lists them.
    pub const ALL: [Rejection; 9] = [
        Self::Method,
        Self::Path,
        Self::ContentType,
        Self::TooLarge,
        Self::Signature,
        Self::Timestamp,
        Self::Malformed,
        Self::Database,
        Self::Busy,
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
            Self::Busy => "busy",
        }
    }
}

/// The receiver's counters, part of [`Counters`]; the exporter turns them
/// into the `ciosync_webhooks_*` metrics.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Verified, well-formed events, by object type × metric (indexes into
    /// [`OBJECT_TYPES`] and [`METRICS`], the last of each
    /// being `other`).
    received: [[AtomicU64; METRICS.len() + 1]; OBJECT_TYPES.len() + 1],
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
    /// `webhooks::event::ReportingEvent::labels`).
    pub fn received(&self, object_type: &str, metric: &str) {
        let row = index_of(&OBJECT_TYPES, object_type);
        let column = index_of(&METRICS, metric);
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
        let object_types = OBJECT_TYPES.iter().chain([&OTHER]);
        object_types
            .zip(&self.received)
            .flat_map(|(object_type, row)| {
                METRICS
                    .iter()
                    .chain([&OTHER])
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
}
