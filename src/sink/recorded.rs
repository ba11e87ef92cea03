//! The sink's side of the record of what Customer.io accepted
//! ([`crate::record`]): a batch's identifies diffed against it before they
//! go, and what Customer.io accepted written to it before the batch counts
//! as completed.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::batch::{EncodedItem, Route};
use super::retry::Backoff;
use crate::customer::Watch;
use crate::record::item::{Diffed, Identify};
use crate::record::store::RecordStore;
use crate::record::{Diff, Effect, Known, WatchedValue, Whole, Write};
use crate::telemetry::Counters;
use crate::track_api::MAX_BATCH_ITEM_BYTES;

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
    /// left is not sent; decides each watched event (see
    /// [`crate::customer::Watch`]). Returns what to send, each with what
    /// accepting it changes in the record, and what the record takes
    /// whatever Customer.io answers (watched values). Should the record not
    /// be readable, every identify goes whole (as without a record) and no
    /// watched event is sent, counted.
    pub async fn prepare(&self, items: Vec<EncodedItem>) -> Prepared {
        let mut readable = true;
        let known = match self.store.load(&looked_up(&items)).await {
            Ok(known) => known,
            Err(error) => {
                readable = false;
                Counters::add(&self.counters.record_failures, 1);
                tracing::warn!(
                    error = %crate::error::error_chain(&error),
                    "cannot read ciosync.accepted; sending this batch's identifies whole"
                );
                Default::default()
            }
        };
        let mut out = Prepared { send: Vec::with_capacity(items.len()), always: Vec::new() };
        for item in items {
            if item.route != Route::Batch {
                out.send.push((item, Effect::None));
                continue;
            }
            let known = item.customers.first().and_then(|c| known.get(c));
            if item.watch.is_some() {
                // Unreadable, nothing is decided nor written: the next
                // change of the column is decided against the value before.
                if readable {
                    self.decide(item, known, &mut out);
                }
                continue;
            }
            match item.kind {
                "identify" => {
                    if let Some(prepared) = self.diff(item, known) {
                        out.send.push(prepared);
                    }
                }
                "delete" | "suppress" => {
                    let effect = Effect::Forget(item.customers.clone());
                    out.send.push((item, effect));
                }
                "merge" => {
                    let effect = match item.customers.as_slice() {
                        [primary, secondary] => {
                            Effect::Merge { primary: primary.clone(), secondary: secondary.clone() }
                        }
                        customers => Effect::Forget(customers.to_vec()),
                    };
                    out.send.push((item, effect));
                }
                _ => out.send.push((item, Effect::None)),
            }
        }
        out
    }

    /// A watched event against the value the record `known`s of its
    /// column: sent when there is one and it differs (with it as `from`
    /// where wanted); the new value recorded in any case.
    fn decide(&self, mut item: EncodedItem, known: Option<&Known>, out: &mut Prepared) {
        let Some(watch) = item.watch.take() else { return };
        let customer = item.customers.first().cloned().unwrap_or_default();
        let value = WatchedValue::of(&watch.value, watch.with_from, watch.at);
        let before = known.and_then(|k| k.watched.get(&watch.key));
        match decision(&watch, &value, before) {
            Decision::Nothing => return,
            Decision::Record => {}
            Decision::Unknown => Counters::add(&self.counters.record_events_unknown, 1),
            Decision::Fire(None) => out.send.push((item, Effect::None)),
            Decision::Fire(Some(from)) => out.send.push((with_from(item, from), Effect::None)),
        }
        out.always.push(Effect::Watch { customer, key: watch.key, value: Box::new(value) });
    }

    /// One identify against what the record `known`s of its customer;
    /// `None` when it need not be sent.
    fn diff(&self, item: EncodedItem, known: Option<&Known>) -> Option<(EncodedItem, Effect)> {
        let customer = item.customers.first().cloned().unwrap_or_default();
        let Some(identify) = Identify::read(&item.json) else {
            // The sink encoded it; should it not parse, send it, learning nothing.
            return Some((item, Effect::None));
        };
        let Diffed { diff, assigned, json } =
            identify.diff(&item.json, known.map(|k| &k.attributes));
        let whole = match diff {
            Diff::Unchanged => None,
            _ => Whole::of(known, identify.fingerprints()),
        };
        drop(identify);
        let effect = Effect::Set { customer, attributes: assigned, whole };
        match diff {
            Diff::Unknown => Counters::add(&self.counters.record_unknown, 1),
            Diff::Unchanged => {
                Counters::add(&self.counters.record_unchanged, 1);
                return None;
            }
            Diff::Stripped(held) => {
                Counters::add(&self.counters.record_attributes_unchanged, held as u64)
            }
        }
        match json {
            Some(json) => Some((EncodedItem { json, ..item }, effect)),
            None => Some((item, effect)),
        }
    }

    /// Whether Customer.io may hold `customer` of `table` by the record
    /// ([`RecordStore::holds`]); `true` when it cannot tell, or should it
    /// not be readable.
    pub async fn knows(&self, customer: &str, table: &str) -> bool {
        match self.store.holds(customer, table).await {
            Ok(holds) => holds.unwrap_or(true),
            Err(error) => {
                Counters::add(&self.counters.record_failures, 1);
                tracing::warn!(
                    error = %crate::error::error_chain(&error),
                    "cannot read ciosync.accepted; sending a removal that may be needless"
                );
                true
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

/// What a batch comes to, diffed against the record.
#[derive(Default)]
pub struct Prepared {
    /// The items to send, each with what accepting it changes in the record.
    pub send: Vec<(EncodedItem, Effect)>,
    /// What the record takes whatever Customer.io answers.
    pub always: Vec<Effect>,
}

/// The customers of `items`' identifies and watched events, each once.
fn looked_up(items: &[EncodedItem]) -> Vec<&str> {
    let mut customers: Vec<&str> = items
        .iter()
        .filter(|i| i.route == Route::Batch && (i.kind == "identify" || i.watch.is_some()))
        .filter_map(|i| i.customers.first().map(String::as_str))
        .collect();
    customers.sort_unstable();
    customers.dedup();
    customers
}

/// `item` (a watched `when_changed` event) with `from` in its data. Should
/// the item then be over Customer.io's item limit, `from` goes as `null`.
fn with_from(item: EncodedItem, from: serde_json::Value) -> EncodedItem {
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&item.json) else {
        return item;
    };
    let Some(serde_json::Value::Object(data)) = json.get_mut("attributes") else { return item };
    data.insert("from".to_owned(), from);
    let mut encoded = serde_json::to_vec(&json).unwrap_or_default();
    if encoded.len() > MAX_BATCH_ITEM_BYTES {
        if let Some(serde_json::Value::Object(data)) = json.get_mut("attributes") {
            data.insert("from".to_owned(), serde_json::Value::Null);
        }
        encoded = serde_json::to_vec(&json).unwrap_or_default();
    }
    EncodedItem { json: encoded, ..item }
}

/// How long the sink trusts that a customer is not held without reading
/// the record again: an operator's command (`dlq retry`, `deletes
/// approve`) may identify them meanwhile, from another process.
pub const ABSENT_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Customers Customer.io does not hold, by the record or because their
/// removal was just decided, remembered by the sink (see `Sink::may_hold`);
/// each for [`ABSENT_FOR`], at most [`Absent::MAX`] (then it starts over).
#[derive(Debug, Default)]
pub struct Absent(std::collections::HashMap<String, Instant>);

impl Absent {
    /// About 2 MB of ids at most.
    const MAX: usize = 32_768;

    pub fn contains(&self, customer: &str) -> bool {
        self.0.get(customer).is_some_and(|at| at.elapsed() < ABSENT_FOR)
    }

    pub fn insert(&mut self, customer: &str) {
        if self.0.len() >= Self::MAX {
            self.0.retain(|_, at| at.elapsed() < ABSENT_FOR);
            if self.0.len() >= Self::MAX {
                self.0.clear();
            }
        }
        self.0.insert(customer.to_owned(), Instant::now());
    }

    pub fn remove(&mut self, customer: &str) {
        if !self.0.is_empty() {
            self.0.remove(customer);
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// What a watched event comes to against the value recorded `before`.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Nothing sent, nothing recorded: the value is unchanged, or the
    /// change is a replay of one at or before the recorded value's (the
    /// slot was not acknowledged that far), or a copied row's value where
    /// one is recorded.
    Nothing,
    /// Recorded, not sent: an insert's or a copied row's value, or a `when`
    /// column changed to NULL.
    Record,
    /// Recorded, not sent: no earlier value to compare with (counted).
    Unknown,
    /// Sent (with `from`, the value recorded before, where wanted) and recorded.
    Fire(Option<serde_json::Value>),
}

fn decision(watch: &Watch, value: &WatchedValue, before: Option<&WatchedValue>) -> Decision {
    let replayed = |b: &WatchedValue| watch.at == (0, 0) || watch.at <= b.at;
    match before {
        Some(b) if b.fingerprint == value.fingerprint || replayed(b) => Decision::Nothing,
        _ if !watch.fires => Decision::Record,
        None => Decision::Unknown,
        Some(b) => Decision::Fire(
            watch.with_from.then(|| b.value.clone().unwrap_or(serde_json::Value::Null)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn watch(value: serde_json::Value, fires: bool, at: (u64, u32)) -> Watch {
        Watch { key: "plan_changed/plan".into(), value, fires, with_from: true, at }
    }

    fn decided(watch: &Watch, before: Option<&WatchedValue>) -> Decision {
        let value = WatchedValue::of(&watch.value, watch.with_from, watch.at);
        decision(watch, &value, before)
    }

    #[test]
    fn an_event_fires_on_a_newer_change_of_the_recorded_value_only() {
        let free = WatchedValue::of(&json!("free"), true, (100, 0));
        let to_pro = watch(json!("pro"), true, (200, 1));
        assert_eq!(decided(&to_pro, Some(&free)), Decision::Fire(Some(json!("free"))));
        assert_eq!(decided(&watch(json!("free"), true, (200, 1)), Some(&free)), Decision::Nothing);
        assert_eq!(decided(&to_pro, None), Decision::Unknown);
        // A value kept as its fingerprint only: `from` is null.
        let long = WatchedValue { value: None, ..free.clone() };
        assert_eq!(decided(&to_pro, Some(&long)), Decision::Fire(Some(json!(null))));
        let when = Watch { with_from: false, ..to_pro.clone() };
        assert_eq!(decided(&when, Some(&free)), Decision::Fire(None));
    }

    #[test]
    fn a_replayed_change_decides_nothing() {
        // Recorded at (200, 1); the slot was acknowledged before it, so
        // changes up to it come again after a restart.
        let pro = WatchedValue::of(&json!("pro"), true, (200, 1));
        assert_eq!(decided(&watch(json!("free"), true, (150, 0)), Some(&pro)), Decision::Nothing);
        assert_eq!(decided(&watch(json!("team"), true, (200, 1)), Some(&pro)), Decision::Nothing);
        let later = watch(json!("team"), true, (200, 2));
        assert_eq!(decided(&later, Some(&pro)), Decision::Fire(Some(json!("pro"))));
    }

    #[test]
    fn inserts_and_copied_rows_only_record_what_is_missing() {
        let pro = WatchedValue::of(&json!("pro"), true, (200, 1));
        let inserted = watch(json!("free"), false, (300, 0));
        assert_eq!(decided(&inserted, None), Decision::Record);
        assert_eq!(decided(&inserted, Some(&pro)), Decision::Record);
        let copied = watch(json!("free"), false, (0, 0));
        assert_eq!(decided(&copied, None), Decision::Record);
        assert_eq!(decided(&copied, Some(&pro)), Decision::Nothing);
    }
}
