//! What a customer's rows say now, for `ciosync dlq retry` (a refused
//! identify is replaced by the current values, and a refused removal is
//! sent only while the customer is still gone, so a replay never sets a
//! customer back to what it was before a later change that was delivered)
//! and `ciosync deletes approve` (a customer whose identify Customer.io
//! refused because a held person still had its email is identified again).
//!
//! A letter does not name the table it came from, and needs not: the
//! customer id names the person, and a person table's row is read by the
//! same code as the initial copy and backfills ([`TableReader`]: the
//! table's `[[sync]] filter` applies) and mapped by the same [`Mapper`] as
//! a backfill's rows (every mapped attribute, NULLs as `null`; a
//! soft-deleted row maps to a removal). One operation can hold attributes
//! of several tables (the sink merges a customer's identifies), and old
//! letters have nothing more than their columns, so an identify's tables
//! are told by its attribute names: the person tables that map one of them.
//!
//! `dlq retry` reads an object's or a membership's row the same way
//! ([`Rows::mapped`], from [`Rows::object_tables`]): see
//! `commands::dlq::refresh`.

use serde_json::{Map, Value};
use tokio_postgres::Client;

use crate::change::{RowChange, RowOp};
use crate::config::{DeleteAction, SyncConfig, Target};
use crate::customer::CustomerOp;
use crate::mapping::Mapper;
use crate::pg::PgError;
use crate::source::reader::{postgres_now, TableReader};

/// Rounds of "send, read the row again" before a customer whose row keeps
/// changing is given up: the daemon keeps delivering while a command
/// sends, so a command's identify is settled only once the row, read again
/// after Customer.io accepted it, still says the same.
pub const MAX_ROUNDS: u32 = 5;

/// A customer as the person tables have it now.
#[derive(Debug, Clone, PartialEq)]
pub enum Current {
    /// No table has a row for the customer that syncs: none, or only
    /// filtered-out or soft-deleted ones.
    Gone,
    /// One table has a row that syncs; its mapped attributes (NULLs as
    /// `null`, so a refresh also unsets what the row no longer has).
    Live(Map<String, Value>),
    /// Several tables have a row that syncs: which values are newest
    /// cannot be told, so the letter is replayed as it was.
    Several,
}

/// The person tables of the config, described when first asked about.
pub struct Rows<'a> {
    sql: &'a Client,
    syncs: &'a [SyncConfig],
    mapper: Mapper,
    readers: Vec<Option<TableReader>>,
}

impl<'a> Rows<'a> {
    pub fn new(sql: &'a Client, syncs: &'a [SyncConfig]) -> Self {
        Self {
            sql,
            syncs,
            mapper: Mapper::new(syncs),
            readers: syncs.iter().map(|_| None).collect(),
        }
    }

    /// The person tables an identify with these attribute names can come
    /// from: those mapping one of them, or every one for an identify
    /// without attributes; empty when the config maps none of them (it
    /// changed since the letter was written). And the other person tables.
    pub fn tables_of_identify(&self, names: &[String]) -> (Vec<usize>, Vec<usize>) {
        match names.is_empty() {
            true => (self.every_table(), Vec::new()),
            false => self.partition_mapping(self.every_table(), names),
        }
    }

    /// Every person table: any of them with a row for the customer keeps
    /// the person alive.
    pub fn every_table(&self) -> Vec<usize> {
        // Objects and relationships keep no person alive.
        (0..self.syncs.len()).filter(|&i| self.syncs[i].target == Target::Person).collect()
    }

    /// What removing the customer sends, by the `delete_action` of the
    /// first of `tables`.
    pub fn removal(&self, tables: &[usize], customer: &str) -> CustomerOp {
        let id = customer.to_owned();
        match tables.first().map(|&i| self.syncs[i].delete_action) {
            Some(DeleteAction::Suppress) => CustomerOp::Suppress { id },
            _ => CustomerOp::Delete { id },
        }
    }

    /// The customer as `tables` have it now.
    pub async fn current(&mut self, customer: &str, tables: &[usize]) -> Result<Current, PgError> {
        let now = postgres_now(self.sql).await?;
        let mut live = Vec::new();
        for &i in tables {
            if let Some(attributes) = self.read(i, customer, now).await? {
                live.push(attributes);
            }
        }
        Ok(match live.len() {
            0 => Current::Gone,
            1 => Current::Live(live.remove(0)),
            _ => Current::Several,
        })
    }

    /// The mapped attributes of table `i`'s row for `customer`, if it has
    /// one that syncs.
    async fn read(
        &mut self,
        i: usize,
        customer: &str,
        now: i64,
    ) -> Result<Option<Map<String, Value>>, PgError> {
        let ops = self.mapped(i, customer, now).await?;
        Ok(ops.into_iter().find_map(|op| match op {
            CustomerOp::Identify { id, attributes, .. } if id == customer => Some(attributes),
            _ => None,
        }))
    }

    /// What table `i`'s row with `key` (its key columns' text, as
    /// [`TableReader::row_with_key`] takes it) maps to, read as a backfill
    /// reads it (an update with no old row: every mapped attribute; a
    /// soft-deleted row maps to a removal) at `commit_time`; nothing when
    /// no such row exists or it is filtered out.
    pub async fn mapped(
        &mut self,
        i: usize,
        key: &str,
        commit_time: i64,
    ) -> Result<Vec<CustomerOp>, PgError> {
        let reader = match &mut self.readers[i] {
            Some(reader) => reader,
            slot => slot.insert(TableReader::new(self.sql, &self.syncs[i], None).await?),
        };
        let Some(row) = reader.row_with_key(self.sql, key).await? else { return Ok(Vec::new()) };
        let change = RowChange {
            table: reader.table().clone(),
            op: RowOp::Update { old: None, old_is_key_only: false, new: row },
            commit_time,
            position: Default::default(),
        };
        Ok(self.mapper.map(&change).ops)
    }

    /// The `[[objects]]` (`relationships` false) or `[[relationships]]`
    /// tables of the object type `object_type_id`.
    pub fn object_tables(&self, object_type_id: &str, relationships: bool) -> Vec<usize> {
        (0..self.syncs.len())
            .filter(|&i| match &self.syncs[i].target {
                Target::Object { object_type_id: t } => !relationships && t == object_type_id,
                Target::Relationship { object_type_id: t, .. } => {
                    relationships && t == object_type_id
                }
                Target::Person => false,
            })
            .collect()
    }

    /// Those of `tables` mapping one of `names` (all of them when none
    /// does, or there is only one), and the others.
    pub fn mapping_one_of(&self, tables: Vec<usize>, names: &[String]) -> (Vec<usize>, Vec<usize>) {
        if tables.len() < 2 {
            return (tables, Vec::new());
        }
        match self.partition_mapping(tables, names) {
            (mapping, others) if mapping.is_empty() => (others, Vec::new()),
            split => split,
        }
    }

    /// Those of `tables` mapping one of `names`, and the others, in order.
    fn partition_mapping(&self, tables: Vec<usize>, names: &[String]) -> (Vec<usize>, Vec<usize>) {
        tables
            .into_iter()
            .partition(|&i| names.iter().any(|n| self.syncs[i].attributes.contains_key(n)))
    }

    /// Postgres's clock: the `timestamp` of a refreshed identify, as of a
    /// backfill's rows.
    pub async fn now(&self) -> Result<i64, PgError> {
        postgres_now(self.sql).await
    }
}
