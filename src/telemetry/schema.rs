//! Schema breaks by table and reason (`ciosync_schema_mismatch`): how many
//! of a table's configured uses its last description broke. Labels are
//! table names from the config and fixed reasons, never values.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Every reason, so a table that broke shows zeros for the others.
pub const REASONS: [&str; 4] = ["renamed", "dropped", "missing", "retyped"];

/// Breaks per (table, reason), as of each table's last description.
#[derive(Debug, Default)]
pub struct SchemaMismatches {
    by_table: Mutex<BTreeMap<String, [u64; 4]>>,
}

impl SchemaMismatches {
    /// Shows `table` with no break (so an alert on the series has one
    /// from the start).
    pub fn watch(&self, table: &str) {
        let mut by_table = self.by_table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        by_table.entry(table.to_owned()).or_default();
    }

    /// Records the reasons of `table`'s breaks (none: whole again).
    pub fn set<'a>(&self, table: &str, reasons: impl IntoIterator<Item = &'a str>) {
        let mut counts = [0u64; 4];
        for reason in reasons {
            if let Some(i) = REASONS.iter().position(|r| *r == reason) {
                counts[i] += 1;
            }
        }
        let mut by_table = self.by_table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        by_table.insert(table.to_owned(), counts);
    }

    /// (table, reason, breaks) for every configured table.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        let by_table = self.by_table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        by_table
            .iter()
            .flat_map(|(table, counts)| {
                REASONS.iter().zip(counts).map(|(reason, n)| (table.clone(), *reason, *n))
            })
            .collect()
    }

    /// Whether any table is broken now.
    pub fn any(&self) -> bool {
        self.snapshot().iter().any(|(_, _, n)| *n > 0)
    }
}
