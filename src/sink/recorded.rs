//! The sink's side of the record of what Customer.io accepted
//! ([`crate::record`]): a batch's identifies diffed against it before they
//! go, and what Customer.io accepted written to it before the batch counts
//! as completed.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::batch::{EncodedItem, Route};
use super::retry::Backoff;
use crate::record::store::RecordStore;
use crate::record::{self, Diff, Effect, Write};
use crate::telemetry::Counters;

/// While the record cannot be written, one log line per this long (per batch).
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// The record, as the delivery tasks use it.
pub struct Recorded {
    pub store: Arc<RecordStore>,
    pub counters: Arc<Counters>,
    pub max_backoff: Duration,
}

impl Recorded {
    /// Diffs each identify of `items` against the record: attributes
    /// Customer.io holds already are taken out, and an identify with none
    /// left is not sent. Returns what to send, each with what accepting it
    /// changes in the record. Should the record not be readable, every
    /// identify goes whole (as without a record), counted.
    pub async fn prepare(&self, items: Vec<EncodedItem>) -> Vec<(EncodedItem, Effect)> {
        let customers = identified(&items);
        let known = match self.store.load(&customers).await {
            Ok(known) => known,
            Err(error) => {
                Counters::add(&self.counters.record_failures, 1);
                tracing::warn!(
                    error = %crate::error::error_chain(&error),
                    "cannot read ciosync.accepted; sending this batch's identifies whole"
                );
                Default::default()
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if item.route != Route::Batch {
                out.push((item, Effect::None));
                continue;
            }
            match item.kind {
                "identify" => {
                    let known = item.customers.first().and_then(|c| known.get(c));
                    if let Some(prepared) = self.diff(item, known) {
                        out.push(prepared);
                    }
                }
                "delete" | "suppress" | "merge" => {
                    let effect = Effect::Forget(item.customers.clone());
                    out.push((item, effect));
                }
                _ => out.push((item, Effect::None)),
            }
        }
        out
    }

    /// One identify against what the record `known`s of its customer;
    /// `None` when it need not be sent.
    fn diff(
        &self,
        item: EncodedItem,
        known: Option<&record::Fingerprints>,
    ) -> Option<(EncodedItem, Effect)> {
        let customer = item.customers.first().cloned().unwrap_or_default();
        let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&item.json) else {
            // The sink encoded it; should it not parse, send it, learning nothing.
            return Some((item, Effect::None));
        };
        let mut empty = serde_json::Map::new();
        let attributes = match json.get_mut("attributes") {
            Some(serde_json::Value::Object(attributes)) => attributes,
            _ => &mut empty,
        };
        let (diff, set) = record::diff(attributes, known);
        let effect = Effect::Set { customer, attributes: set };
        match diff {
            Diff::Unknown => {
                Counters::add(&self.counters.record_unknown, 1);
                Some((item, effect))
            }
            Diff::Unchanged => {
                Counters::add(&self.counters.record_unchanged, 1);
                None
            }
            Diff::Stripped(0) => Some((item, effect)),
            Diff::Stripped(held) => {
                Counters::add(&self.counters.record_attributes_unchanged, held as u64);
                let json = serde_json::to_vec(&json).unwrap_or_default();
                Some((EncodedItem { json, ..item }, effect))
            }
        }
    }

    /// Writes the effects of the operations Customer.io accepted, retrying
    /// until they are stored: the batch does not count as completed (so
    /// nothing is acknowledged) before, or a restart could find the record
    /// behind an acknowledged change (see [`crate::record`]).
    pub async fn store(&self, effects: Vec<Effect>) {
        let write = Write::of(effects);
        if write.is_empty() {
            return;
        }
        let mut backoff = Backoff::new(self.max_backoff);
        let mut logged: Option<Instant> = None;
        let mut failing = None;
        while let Err(error) = self.store.write(&write).await {
            failing.get_or_insert_with(|| self.counters.health.failing_to_store_record());
            Counters::add(&self.counters.record_failures, 1);
            self.counters.health.attempted();
            let delay = backoff.next_delay(None);
            if logged.is_none_or(|at| at.elapsed() >= FAILURE_LOG_INTERVAL) {
                logged = Some(Instant::now());
                tracing::error!(
                    error = %crate::error::error_chain(&error),
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot write ciosync.accepted (the record of what Customer.io accepted); \
                     retrying, nothing is acknowledged meanwhile"
                );
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// The customers of `items`' identifies, each once.
fn identified(items: &[EncodedItem]) -> Vec<String> {
    let mut customers: Vec<String> = items
        .iter()
        .filter(|i| i.route == Route::Batch && i.kind == "identify")
        .filter_map(|i| i.customers.first().cloned())
        .collect();
    customers.sort_unstable();
    customers.dedup();
    customers
}
