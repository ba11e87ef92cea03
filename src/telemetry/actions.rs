//! The campaign webhook actions' counters
//! (`ciosync_webhook_actions_total{action, outcome}`): the receiver counts,
//! the exporter reads. Action names come from the config, so the series
//! are bounded; a request for an unknown name is counted as the reporting
//! receiver's `path` rejection instead.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::RwLock;

use super::Counters;

/// What became of one request to an action endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    /// Rows were written (200).
    Applied,
    /// Nothing to write: already so, older than what is there, or no such row (200).
    Unchanged,
    /// Its idempotency key was seen within the window (200, nothing written).
    Duplicate,
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// A method other than POST, PUT or PATCH (405).
    Method,
    /// Not JSON (415).
    ContentType,
    /// Over `max_body_bytes` (413).
    TooLarge,
    /// Not a JSON object, or a field the action needs is missing or wrong (400).
    Malformed,
    /// Postgres refused the values, e.g. text into a number column (422).
    Refused,
    /// Postgres failed or the body budget was spent (503, Customer.io retries).
    Unavailable,
}

impl ActionOutcome {
    /// Every outcome, in the order the exporter lists them.
    pub const ALL: [ActionOutcome; 10] = [
        Self::Applied,
        Self::Unchanged,
        Self::Duplicate,
        Self::Unauthorized,
        Self::Method,
        Self::ContentType,
        Self::TooLarge,
        Self::Malformed,
        Self::Refused,
        Self::Unavailable,
    ];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Duplicate => "duplicate",
            Self::Unauthorized => "unauthorized",
            Self::Method => "method",
            Self::ContentType => "content_type",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).unwrap_or_default()
    }
}

type Row = [AtomicU64; ActionOutcome::ALL.len()];

/// Per action, per outcome.
#[derive(Debug, Default)]
pub struct ActionCounters {
    by_action: RwLock<BTreeMap<String, Row>>,
}

impl ActionCounters {
    /// Makes `name`'s series exist (at 0) from the start.
    pub fn register(&self, name: &str) {
        let mut map = self.by_action.write().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned()).or_default();
    }

    /// Counts one request of a registered action.
    pub fn count(&self, name: &str, outcome: ActionOutcome) {
        let map = self.by_action.read().unwrap_or_else(|e| e.into_inner());
        if let Some(row) = map.get(name) {
            Counters::add(&row[outcome.index()], 1);
        }
    }

    /// Every (action, outcome, count), registered actions only.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        let map = self.by_action.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .flat_map(|(name, row)| {
                ActionOutcome::ALL
                    .iter()
                    .zip(row)
                    .map(|(o, n)| (name.clone(), o.as_str(), Counters::get(n)))
            })
            .collect()
    }

    /// `ciosync_webhook_actions_total`, for the exporter.
    pub(super) fn families(&self, out: &mut super::exporter::Families) {
        let snapshot = self.snapshot();
        let series: Vec<(Vec<&str>, f64)> = snapshot
            .iter()
            .map(|(name, outcome, n)| (vec![name.as_str(), *outcome], *n as f64))
            .collect();
        out.series(&super::names::WEBHOOK_ACTIONS, &series);
    }

    /// One count, for tests.
    pub fn get(&self, name: &str, outcome: ActionOutcome) -> u64 {
        let map = self.by_action.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).map_or(0, |row| Counters::get(&row[outcome.index()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registered_actions_are_counted() {
        let counters = ActionCounters::default();
        counters.register("segments");
        counters.count("segments", ActionOutcome::Applied);
        counters.count("segments", ActionOutcome::Applied);
        counters.count("unknown", ActionOutcome::Applied);
        assert_eq!(counters.get("segments", ActionOutcome::Applied), 2);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.len(), ActionOutcome::ALL.len());
        assert!(snapshot.iter().all(|(name, _, _)| name == "segments"));
    }
}
