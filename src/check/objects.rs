//! `ciosync check` on `[[objects]]` and `[[relationships]]` tables, beside
//! what every synced table gets (`tables.rs`: it exists, is readable, its
//! mapped columns, its filter, publication): an object table's replica
//! identity (objects are kept out of the record of what Customer.io
//! accepted), and a relationship table's object column and what its
//! replica identity lets a DELETE name. Pure.

use super::Finding;
use crate::config::SyncConfig;
use crate::pg::catalog::{IdentityKind, Table};

fn full(sync: &SyncConfig) -> String {
    format!("ALTER TABLE {} REPLICA IDENTITY FULL;", sync.table.quoted())
}

/// An object table's replica identity: without the old row an UPDATE
/// sends every mapped attribute (the record keeps people only).
pub fn object_identity(label: &str, sync: &SyncConfig, table: &Table) -> Option<Finding> {
    match table.identity_kind {
        IdentityKind::Full => Some(Finding::ok(label, "replica identity FULL")),
        IdentityKind::Default | IdentityKind::Index if table.has_primary_key => {
            Some(Finding::warning(
                label,
                "replica identity DEFAULT/INDEX: an object's update carries no old row, so \
                 every mapped attribute is sent on each update (objects are not in the record \
                 of what Customer.io accepted), and a soft delete or a row leaving the filter \
                 sends the object's delete again on each update of the row",
                full(sync),
            ))
        }
        // No identity at all: `tables::replica_identity` says so.
        _ => None,
    }
}

/// A relationship table's object column: it exists.
pub fn object_column(label: &str, object_column: &str, table: &Table) -> Finding {
    if table.has_column(object_column) {
        Finding::ok(label, format!("relates people to objects by {object_column}"))
    } else {
        Finding::error(
            label,
            format!("has no column {object_column} (object_id_column)"),
            "fix [[relationships]] object_id_column",
        )
    }
}

/// What a relationship table's replica identity lets its changes name: a
/// DELETE (and a move to another person or object) needs the old row's
/// person and object, from FULL or a key covering both.
pub fn relationship_identity(
    label: &str,
    sync: &SyncConfig,
    object_column: &str,
    table: &Table,
) -> Option<Finding> {
    let person = sync.id_column.as_str();
    let keyed =
        [person, object_column].iter().all(|c| table.identity_columns.iter().any(|k| k == c));
    match table.identity_kind {
        IdentityKind::Full => Some(Finding::ok(label, "replica identity FULL")),
        IdentityKind::Nothing => None,
        IdentityKind::Default if !table.has_primary_key => None,
        _ if keyed => Some(Finding::ok(
            label,
            format!(
                "replica identity DEFAULT/INDEX covers {person} and {object_column}: deletes \
                 and moves name the relationship; an update adds it again with every attribute"
            ),
        )),
        _ => Some(Finding::warning(
            label,
            format!(
                "replica identity DEFAULT/INDEX does not cover {person} and {object_column}: a \
                 DELETE cannot say which relationship to remove (skipped, counted as \
                 relationship_unknown), and a membership moved to another person or object \
                 leaves the old relationship in Customer.io"
            ),
            full(sync),
        )),
    }
}
