//! `[[sync]] filter`s ciosync evaluates itself, on each change's new row,
//! for the tables whose publication does not carry them: under REPLICA
//! IDENTITY DEFAULT (what ORMs leave) Postgres refuses every UPDATE of a
//! table whose publication row filter reads a column outside the identity,
//! so such a filter cannot be the publication's (see
//! `source::setup::filter_placement`). The subset of SQL evaluated, and why
//! it is exact, is in [`super::filter_expr`].
//!
//! Which rows enter and leave is told from the new row and the record of
//! what Customer.io accepted: a matching row is identified (diffed against
//! the record, so a customer it lacks goes whole: they enter); a row that
//! does not match is removed only if Customer.io may hold its customer
//! ([`super::Mapped::if_held`]), so a row outside the filter all along costs
//! no call.
//!
//! A filter is parsed against each table shape it meets (the stream's
//! relation, a backfill's reader), and the result kept for the next rows of
//! that shape. One that no longer parses (a migration dropped or retyped a
//! column it reads) decides nothing: known customers keep being updated,
//! nobody enters or leaves; the log says so once per table shape.

use std::sync::{Arc, Mutex};

use super::filter_expr::{FilterExpr, FilterExprError, Truth};
use super::{Mapped, RowMapping, SkipReason};
use crate::change::{ReplicaIdentity, Row, RowOp, Table};
use crate::config::SyncConfig;

/// Table shapes kept per table: the stream's, and a backfill's or the
/// initial copy's reader's.
const SHAPES: usize = 4;

/// The filters ciosync evaluates, by table, parsed per table shape.
#[derive(Debug, Clone, Default)]
pub struct OwnFilters {
    /// `(schema, name)` of the tables whose filter ciosync evaluates.
    tables: Vec<(String, String)>,
    parsed: Arc<Mutex<Vec<Parsed>>>,
}

#[derive(Debug)]
struct Parsed {
    table: Arc<Table>,
    filter: Result<Arc<FilterExpr>, FilterExprError>,
}

/// A filter as one table shape reads it.
pub enum Own {
    Filter(Arc<FilterExpr>),
    /// It does not parse against this shape of the table.
    Broken,
}

impl Own {
    /// The filter on `row`; [`Truth::Undecided`] when broken.
    pub fn truth(&self, row: &Row) -> Truth {
        match self {
            Self::Filter(filter) => filter.truth(row),
            Self::Broken => Truth::Undecided,
        }
    }
}

impl OwnFilters {
    /// Filters of these tables (`schema`, `name`) are evaluated by ciosync.
    pub fn new(tables: Vec<(String, String)>) -> Self {
        Self { tables, parsed: Arc::default() }
    }

    /// Whether any table's filter is evaluated by ciosync.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// `sync`'s filter as `table` reads it, if ciosync evaluates it.
    pub fn of(&self, sync: &SyncConfig, table: &Arc<Table>) -> Option<Own> {
        let text = sync.filter.as_deref()?;
        if !self.tables.iter().any(|(s, n)| (s.as_str(), n.as_str()) == sync.schema_and_name()) {
            return None;
        }
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        let found = parsed.iter().find(|p| Arc::ptr_eq(&p.table, table) || *p.table == **table);
        let filter = match found {
            Some(p) => p.filter.clone(),
            None => {
                let filter = FilterExpr::parse(text, table).map(Arc::new);
                if let Err(error) = &filter {
                    tracing::error!(
                        table = %table.qualified_name(),
                        %error,
                        "the table's filter no longer reads its columns: no row enters or \
                         leaves until the table or the filter is repaired"
                    );
                }
                let same_table = parsed.iter().filter(|p| same_name(&p.table, table)).count();
                if same_table >= SHAPES {
                    if let Some(oldest) = parsed.iter().position(|p| same_name(&p.table, table)) {
                        parsed.remove(oldest);
                    }
                }
                parsed.push(Parsed { table: table.clone(), filter: filter.clone() });
                filter
            }
        };
        Some(filter.map_or(Own::Broken, Own::Filter))
    }
}

impl RowMapping<'_> {
    /// A change of a table whose filter ciosync evaluates (see
    /// this module's doc): a new row it matches is synced as without a filter
    /// (entering in full where the old row is known not to match; without
    /// it, the record sends a customer it lacks whole), one it does not
    /// match, and a DELETE, removes the customer only if Customer.io may
    /// hold them. An UPDATE it cannot decide (a value it reads was not
    /// sent) is sent only if Customer.io may hold the customer.
    pub(super) fn filtered(&self, own: &Own, out: &mut Mapped) {
        let leave = |row: &Row, out: &mut Mapped| match self.id_of(row) {
            Some(id) => {
                out.if_held = Some((vec![super::removal(self.sync, id)], SkipReason::FilteredOut));
            }
            None => out.skipped = Some(SkipReason::InvalidId),
        };
        match &self.change.op {
            RowOp::Insert { new } => match own.truth(new) {
                Truth::True => self.insert(new, out),
                _ => out.skipped = Some(SkipReason::FilteredOut),
            },
            RowOp::Update { old, old_is_key_only, new } => {
                let full_old = old.as_ref().filter(|_| !*old_is_key_only);
                match own.truth(new) {
                    Truth::True if full_old.is_some_and(|o| own.truth(o) != Truth::True) => {
                        self.insert(new, out)
                    }
                    Truth::True => self.update(old.as_ref(), *old_is_key_only, new, out),
                    // The id the customer had: the old one, where the
                    // UPDATE changed it (a key-only old row names it).
                    Truth::False | Truth::Null => {
                        let named = old.as_ref().filter(|o| self.id_of(o).is_some());
                        leave(named.unwrap_or(new), out)
                    }
                    Truth::Undecided => {
                        self.update(old.as_ref(), *old_is_key_only, new, out);
                        if !out.ops.is_empty() {
                            let ops = std::mem::take(&mut out.ops);
                            out.if_held = Some((ops, SkipReason::FilteredOut));
                        }
                    }
                }
                out.released = self.released(full_old);
            }
            RowOp::Delete { old } => {
                leave(old, out);
                let full = self.table.replica_identity == ReplicaIdentity::Full;
                out.released = self.released(Some(old).filter(|_| full));
            }
        }
    }
}

fn same_name(a: &Table, b: &Table) -> bool {
    a.schema == b.schema && a.name == b.name
}
