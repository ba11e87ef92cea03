//! Changes received by table and operation: the one labelled counter the
//! pipeline bumps per change. The table label is bounded by the config
//! (only published tables send changes); values are never labels.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::change::{RowOp, Table};

/// A row change's kind, the `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Insert,
    Update,
    Delete,
}

impl Operation {
    /// Every operation, in label order.
    pub const ALL: [Operation; 3] = [Self::Insert, Self::Update, Self::Delete];

    /// The kind of `op`.
    pub fn of(op: &RowOp) -> Self {
        match op {
            RowOp::Insert { .. } => Self::Insert,
            RowOp::Update { .. } => Self::Update,
            RowOp::Delete { .. } => Self::Delete,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts per relation OID (no allocation per change), named when first seen.
#[derive(Debug, Default)]
pub struct ChangesByTable {
    tables: RwLock<HashMap<u32, TableCounts>>,
}

#[derive(Debug)]
struct TableCounts {
    name: String,
    by_operation: [AtomicU64; 3],
}

impl ChangesByTable {
    /// Counts one change of `table`.
    pub fn add(&self, table: &Table, operation: Operation) {
        {
            let tables = self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(counts) = tables.get(&table.oid) {
                counts.by_operation[operation.index()].fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut tables = self.tables.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let counts = tables.entry(table.oid).or_insert_with(|| TableCounts {
            name: table.qualified_name(),
            by_operation: Default::default(),
        });
        counts.by_operation[operation.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// (table, operation, count) for every table seen, every operation,
    /// sorted; a table known under several OIDs (dropped and recreated) is
    /// summed under its name.
    pub fn snapshot(&self) -> Vec<(String, Operation, u64)> {
        let tables = self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut by_name: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
        for counts in tables.values() {
            let sums = by_name.entry(&counts.name).or_default();
            for op in Operation::ALL {
                sums[op.index()] += counts.by_operation[op.index()].load(Ordering::Relaxed);
            }
        }
        by_name
            .into_iter()
            .flat_map(|(name, sums)| {
                Operation::ALL.map(|op| (name.to_owned(), op, sums[op.index()]))
            })
            .collect()
    }

    /// Changes received in all.
    pub fn total(&self) -> u64 {
        self.snapshot().iter().map(|(_, _, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(oid: u32, name: &str) -> Table {
        Table {
            oid,
            schema: "public".to_owned(),
            name: name.to_owned(),
            columns: Vec::new(),
            replica_identity: crate::change::ReplicaIdentity::Full,
        }
    }

    #[test]
    fn counts_by_table_and_operation_summing_a_recreated_table() {
        let changes = ChangesByTable::default();
        changes.add(&table(1, "users"), Operation::Insert);
        changes.add(&table(1, "users"), Operation::Insert);
        changes.add(&table(2, "accounts"), Operation::Delete);
        changes.add(&table(3, "users"), Operation::Update);
        let snapshot = changes.snapshot();
        assert_eq!(
            snapshot,
            vec![
                ("public.accounts".to_owned(), Operation::Insert, 0),
                ("public.accounts".to_owned(), Operation::Update, 0),
                ("public.accounts".to_owned(), Operation::Delete, 1),
                ("public.users".to_owned(), Operation::Insert, 2),
                ("public.users".to_owned(), Operation::Update, 1),
                ("public.users".to_owned(), Operation::Delete, 0),
            ]
        );
        assert_eq!(changes.total(), 4);
    }
}
