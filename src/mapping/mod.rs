//! From row changes to Customer.io operations. Pure: no I/O.
//!
//! | change                                   | operations                                    |
//! |------------------------------------------|-----------------------------------------------|
//! | INSERT                                   | identify with every mapped non-NULL attribute |
//! | UPDATE, old row known (REPLICA IDENTITY FULL) | identify with the changed attributes only; none changed → nothing |
//! | UPDATE, no old row (DEFAULT identity)    | identify with every mapped attribute sent     |
//! | UPDATE of the id column                  | identify the new id, merge the old person into it, then its email and NULLs (or: delete the old, identify the new) |
//! | DELETE                                   | delete (or suppress: `delete_action`)         |
//! | UPDATE setting `soft_delete_column`      | delete (or suppress); clearing it: identify with every mapped non-NULL attribute; no old row and the record on: the removal only if Customer.io may hold the customer ([`Mapped::if_held`]) |
//! | UPDATE changing a `[[sync.events]]` column (old row known) | the identify, then the event(s) |
//! | UPDATE, `[[sync.events]]`, no old row, record on | the identify, then each event carrying the column's new value, decided against the record by the sink |
//! | INSERT, `[[sync.events]]`, no old row, record on | the identify, then each watched value to record (never sent) |
//! | INSERT into an `[[events]]` table        | one event (UPDATE, DELETE: nothing)           |
//!
//! An unchanged TOASTed value is never sent and never counts as a change. A
//! value changed to NULL is sent as `null`, which unsets the attribute.
//! Values over Customer.io's limits are left out with a warning; a change
//! whose id is unusable is skipped. Nothing here stops the stream.

mod by_table;
pub mod devices;
pub mod events;
pub mod filter_expr;
mod id_change;
mod objects;
pub mod own_filter;
mod reasons;
pub mod report;
pub mod value;

pub use reasons::{DropReason, DroppedAttribute, SkipReason};

use serde_json::{Map, Value as Json};

use crate::change::{Datum, ReplicaIdentity, Row, RowChange, RowOp, Table};
use crate::config::{DeleteAction, EventTableConfig, SyncConfig, Target};
use crate::customer::{CustomerOp, Released};
use crate::track_api;
use by_table::ByTable;
use id_change::id_change;

/// Customer.io's reserved `email` attribute, an identifier in email+id workspaces.
pub const EMAIL: &str = "email";

/// What one change became.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mapped {
    /// Operations to send, in order.
    pub ops: Vec<CustomerOp>,
    /// Set when the change produced nothing.
    pub skipped: Option<SkipReason>,
    /// Attributes left out of the operations.
    pub dropped: Vec<DroppedAttribute>,
    /// For an INSERT or a restore (soft delete cleared): the mapped
    /// attributes whose column is NULL, left out of its identify (a new
    /// person has nothing to unset). While the breaker holds removals, the
    /// person may still be in Customer.io with values the row no longer
    /// has (a held delete this identify cancels), so the breaker adds them
    /// as `null` (see `delete_guard::breaker`).
    pub absent: Vec<String>,
    /// For an UPDATE or a DELETE: the email the row held before, which its
    /// operations free in Customer.io (the sink orders another customer's
    /// claim of it after them).
    pub released: Released,
    /// Operations to send only if Customer.io may hold their customer (the
    /// record knows them, or an operation of theirs is still under way),
    /// else the change is skipped for the reason given: where the old row
    /// is not known, a row soft-deleted or outside the filter may have been
    /// so all along, and its removal would be needless. The pipeline
    /// decides ([`crate::sink::Sink::may_hold`]) before the mass-delete
    /// circuit breaker counts a removal.
    pub if_held: Option<(Vec<CustomerOp>, SkipReason)>,
}

/// Maps changes of the synced tables, each by its `[[sync]]` entry, and
/// inserts into event tables by their `[[events]]` entry.
#[derive(Debug, Clone)]
pub struct Mapper {
    tables: ByTable<SyncConfig>,
    event_tables: ByTable<events::EventTable>,
    device_tables: ByTable<devices::DeviceTable>,
    /// Whether the record of what Customer.io accepted is on (see
    /// [`Mapper::with_record`]).
    record: bool,
    /// The filters ciosync evaluates itself (see [`own_filter`]).
    own_filters: own_filter::OwnFilters,
}

impl Mapper {
    /// A mapper for the configured tables.
    pub fn new(syncs: &[SyncConfig]) -> Self {
        let tables = ByTable::of(syncs.iter().map(|s| (s.schema_and_name(), s.clone())));
        Self {
            tables,
            event_tables: ByTable::default(),
            device_tables: ByTable::default(),
            record: false,
            own_filters: own_filter::OwnFilters::default(),
        }
    }

    /// Maps for the record of what Customer.io accepted (`record`: it is on):
    /// - a row sent in full (an insert, a restore) carries its NULL
    ///   attributes as `null` rather than leaving them out, so the record
    ///   knows every attribute from the first identify on, and a backfill
    ///   after it sends nothing for an unchanged row. A mapped attribute
    ///   belongs to the database: a value another source gave it in
    ///   Customer.io is unset where the column is NULL (as a backfill always
    ///   did, and an UPDATE under DEFAULT identity);
    /// - where an UPDATE carries no old row (DEFAULT or INDEX identity),
    ///   `[[sync.events]]` are decided against the column values the record
    ///   keeps, which inserts and updates of the row record.
    pub fn with_record(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// Evaluates the filters of these tables (`schema`, `name`) itself:
    /// their publication does not carry them (see [`own_filter`]).
    pub fn set_own_filters(&mut self, tables: Vec<(String, String)>) {
        self.own_filters = own_filter::OwnFilters::new(tables);
    }

    /// Adds the event tables: their inserts become events. Their keys
    /// (see [`Mapper::set_event_keys`]) are not known yet.
    pub fn with_event_tables(mut self, events: &[EventTableConfig]) -> Self {
        let tables = events.iter().map(|e| {
            (e.schema_and_name(), events::EventTable { config: e.clone(), key: Vec::new() })
        });
        self.event_tables = ByTable::of(tables);
        self
    }

    /// Adds the `[[devices]]` tables: their changes become device calls.
    pub fn with_device_tables(mut self, devices: &[crate::config::DevicesConfig]) -> Self {
        let tables = devices.iter().map(|d| (d.schema_and_name(), devices::DeviceTable::new(d)));
        self.device_tables = ByTable::of(tables);
        self
    }

    /// The columns that identify each event table's rows (`schema`, `name`,
    /// its primary key), from which its events' ids are derived.
    pub fn set_event_keys(&mut self, keys: Vec<((String, String), Vec<String>)>) {
        for ((schema, name), key) in keys {
            if let Some(table) = self.event_tables.get_mut(&schema, &name) {
                table.key = key;
            }
        }
    }

    /// Whether `schema.name` is synced.
    pub fn is_synced(&self, schema: &str, name: &str) -> bool {
        self.tables.get(schema, name).is_some()
    }

    /// The keys a change touches (the new row's and the old row's), as
    /// backfills page the table (`SyncConfig::key_columns`), for backfills
    /// that must yield to the stream. A `[[devices]]` table's keys are its
    /// paging key's (see [`Mapper::set_device_keys`]); `None` when they
    /// cannot be told from the change (see `devices::DeviceTable::keys`):
    /// every row of the table's open chunk is to count as changed.
    pub fn customer_ids(&self, change: &RowChange) -> Option<Vec<String>> {
        let (schema, name) = (&change.table.schema, &change.table.name);
        if let Some(devices) = self.device_tables.get(schema, name) {
            return devices.keys(change);
        }
        let Some(sync) = self.tables.get(schema, name) else {
            return Some(Vec::new());
        };
        let columns = sync.key_columns();
        let index: Option<Vec<usize>> =
            columns.iter().map(|c| change.table.column_index(c)).collect();
        let Some(index) = index else { return Some(Vec::new()) };
        let mut ids: Vec<String> =
            rows_of(change).into_iter().filter_map(|r| objects::key_of(r, &index)).collect();
        ids.dedup();
        Some(ids)
    }

    /// Turns one change into operations.
    pub fn map(&self, change: &RowChange) -> Mapped {
        let (schema, name) = (&change.table.schema, &change.table.name);
        let Some(sync) = self.tables.get(schema, name) else {
            if let Some(devices) = self.device_tables.get(schema, name) {
                return devices::map(&devices.config, change);
            }
            return match self.event_tables.get(schema, name) {
                Some(events) => map_event_row(events, change),
                None => Mapped { skipped: Some(SkipReason::UnknownTable), ..Mapped::default() },
            };
        };
        match &sync.target {
            Target::Person => self.map_rows(sync, change),
            Target::Object { object_type_id } => {
                objects::as_object_ops(object_type_id, self.map_rows(sync, change))
            }
            Target::Relationship { object_type_id, object_id_column } => {
                objects::relationship(sync, object_type_id, object_id_column, change)
            }
        }
    }

    /// A change of a table whose rows are people (or objects, mapped as
    /// people first).
    fn map_rows(&self, sync: &SyncConfig, change: &RowChange) -> Mapped {
        let mut rows = RowMapping::new(sync, change);
        rows.record = self.record;
        let mut out = Mapped::default();
        if let Some(own) = self.own_filters.of(sync, &change.table) {
            rows.filtered(&own, &mut out);
            return out;
        }
        match &change.op {
            RowOp::Insert { new } => rows.insert(new, &mut out),
            RowOp::Update { old, old_is_key_only, new } => {
                rows.update(old.as_ref(), *old_is_key_only, new, &mut out);
                out.released = rows.released(old.as_ref().filter(|_| !*old_is_key_only));
            }
            RowOp::Delete { old } => {
                match rows.id_of(old) {
                    Some(id) => out.ops.push(removal(sync, id)),
                    None => out.skipped = Some(SkipReason::InvalidId),
                }
                let full = change.table.replica_identity == ReplicaIdentity::Full;
                out.released = rows.released(Some(old).filter(|_| full));
            }
        }
        out
    }
}

/// One change of a synced table, with what its mapping needs.
struct RowMapping<'a> {
    sync: &'a SyncConfig,
    change: &'a RowChange,
    table: &'a Table,
    id_index: Option<usize>,
    deleted: SoftDelete,
    /// See [`Mapper::with_record`].
    record: bool,
}

impl<'a> RowMapping<'a> {
    fn new(sync: &'a SyncConfig, change: &'a RowChange) -> Self {
        let table = &*change.table;
        Self {
            sync,
            change,
            table,
            id_index: table.column_index(&sync.id_column),
            deleted: SoftDelete::new(sync, table),
            record: false,
        }
    }

    /// The customer id of `row`, if usable.
    fn id_of(&self, row: &Row) -> Option<String> {
        self.id_index.and_then(|i| customer_id(&row[i]))
    }

    /// The email the row held before the change, from its full old row
    /// (`None`: not sent, so not known).
    fn released(&self, full_old: Option<&Row>) -> Released {
        let Some(index) = self.sync.attributes.get(EMAIL).and_then(|c| self.table.column_index(c))
        else {
            return Released::Nothing;
        };
        match full_old.and_then(|old| old.get(index)) {
            None | Some(Datum::UnchangedToast) => Released::Unknown,
            Some(Datum::Null) => Released::Nothing,
            Some(Datum::Text(bytes)) => Released::Email(bytes.clone()),
        }
    }

    fn identify(&self, id: String, attributes: Map<String, Json>) -> CustomerOp {
        identify(id, attributes, self.change.commit_time)
    }

    fn insert(&self, new: &Row, out: &mut Mapped) {
        let Some(id) = self.id_of(new) else {
            out.skipped = Some(SkipReason::InvalidId);
            return;
        };
        if self.deleted.is_deleted(new) == Some(true) {
            out.skipped = Some(SkipReason::SoftDeleted);
            return;
        }
        let attributes = in_full(self.sync, self.table, new, self.record, out);
        out.ops.push(self.identify(id.clone(), attributes));
        // The watched columns' first values, so the first UPDATE can tell
        // what changed.
        let seeds = self.events_against_record(&id, new, false, out);
        out.ops.extend(seeds.into_iter().map(CustomerOp::Event));
    }

    /// `[[sync.events]]` to decide against the record (see
    /// [`events::against_record`]): none without the record, without
    /// change events, or where the WAL has the old row (REPLICA IDENTITY
    /// FULL), which decides them itself.
    fn events_against_record(
        &self,
        id: &str,
        new: &Row,
        fires: bool,
        out: &mut Mapped,
    ) -> Vec<crate::customer::Event> {
        let wanted = self.record
            && !self.sync.events.is_empty()
            && self.table.replica_identity != ReplicaIdentity::Full;
        if !wanted {
            return Vec::new();
        }
        events::against_record(&self.sync.events, self.change, id, new, fires, &mut out.dropped)
    }

    fn update(&self, old: Option<&Row>, old_is_key_only: bool, new: &Row, out: &mut Mapped) {
        let (sync, table) = (self.sync, self.table);
        let Some(new_id) = self.id_of(new) else {
            out.skipped = Some(SkipReason::InvalidId);
            return;
        };
        let full_old = old.filter(|_| !old_is_key_only);
        // Soft delete: turning deleted removes the customer, staying
        // deleted sends nothing, turning undeleted identifies in full.
        let was_deleted = full_old.and_then(|o| self.deleted.is_deleted(o));
        match (was_deleted, self.deleted.is_deleted(new)) {
            (Some(true), Some(true)) => {
                out.skipped = Some(SkipReason::SoftDeleted);
                return;
            }
            (None, Some(true)) if self.record && full_old.is_none() => {
                out.if_held = Some((vec![removal(sync, new_id)], SkipReason::SoftDeleted));
                return;
            }
            (_, Some(true)) => {
                out.ops.push(removal(sync, new_id));
                return;
            }
            (Some(true), _) => {
                let attributes = in_full(sync, table, new, self.record, out);
                out.ops.push(self.identify(new_id, attributes));
                return;
            }
            _ => {}
        }
        // Derived events go after the identify of the same change, so a
        // campaign they trigger sees the new attributes.
        let derived = match full_old {
            Some(old) if !sync.events.is_empty() => events::from_transition(
                &sync.events,
                self.change,
                &new_id,
                old,
                new,
                &mut out.dropped,
            ),
            Some(_) => Vec::new(),
            None => self.events_against_record(&new_id, new, true, out),
        };
        // The old id is known when the old row is full, or when it is a
        // key-only row because the key changed (and the id is in the key).
        // An id column sent unchanged is the same id: not read again.
        let id_changed = |o: &&Row| self.id_index.is_some_and(|i| o.get(i) != new.get(i));
        let old_id = old.filter(id_changed).and_then(|o| self.id_of(o));
        if let Some(old_id) = old_id.filter(|old_id| *old_id != new_id) {
            // With NULLs: the merge would otherwise bring back values the
            // row no longer has.
            let attributes = attributes(sync, table, new, None, true, &mut out.dropped);
            let time = self.change.commit_time;
            id_change(sync.on_id_change, old_id, new_id, attributes, time, &mut out.ops);
        } else {
            let attributes = attributes(sync, table, new, full_old, true, &mut out.dropped);
            if !attributes.is_empty() {
                out.ops.push(self.identify(new_id, attributes));
            }
        }
        out.ops.extend(derived.into_iter().map(CustomerOp::Event));
        if out.ops.is_empty() {
            out.skipped = Some(SkipReason::NoChange);
        }
    }
}

/// An insert into an event table: its event. Updates and deletes of event
/// rows send nothing (an event that happened cannot un-happen).
fn map_event_row(config: &events::EventTable, change: &RowChange) -> Mapped {
    let mut out = Mapped::default();
    let RowOp::Insert { new } = &change.op else { return out };
    match events::from_event_table(config, change, new, &mut out.dropped) {
        Ok(op) => out.ops.push(op),
        Err(events::EventSkip::InvalidId) => out.skipped = Some(SkipReason::InvalidId),
        Err(events::EventSkip::InvalidName) => out.skipped = Some(SkipReason::InvalidEvent),
    }
    out
}

/// What removing the customer sends, by `delete_action`.
fn removal(sync: &SyncConfig, id: String) -> CustomerOp {
    match sync.delete_action {
        DeleteAction::Delete => CustomerOp::Delete { id },
        DeleteAction::Suppress => CustomerOp::Suppress { id },
    }
}

/// A table's `soft_delete_column`, if it has one.
struct SoftDelete(Option<usize>);

impl SoftDelete {
    fn new(sync: &SyncConfig, table: &Table) -> Self {
        Self(sync.soft_delete_column.as_deref().and_then(|c| table.column_index(c)))
    }

    /// Whether `row` is soft-deleted; `None` without the column, or when its
    /// value is an unchanged TOAST value (not sent, so not known).
    fn is_deleted(&self, row: &Row) -> Option<bool> {
        match row.get(self.0?)? {
            Datum::UnchangedToast => None,
            Datum::Null => Some(false),
            Datum::Text(_) => Some(true),
        }
    }
}

/// The mapped attributes of a row sent in full (an insert, a restore):
/// the non-NULL ones, or all with `nulls` (see
/// [`Mapper::with_record`]); the NULL ones' names go to
/// [`Mapped::absent`].
fn in_full(
    sync: &SyncConfig,
    table: &Table,
    new: &Row,
    nulls: bool,
    out: &mut Mapped,
) -> Map<String, Json> {
    let all = attributes(sync, table, new, None, true, &mut out.dropped);
    out.absent = all.iter().filter(|(_, value)| value.is_null()).map(|(n, _)| n.clone()).collect();
    if nulls {
        return all;
    }
    all.into_iter().filter(|(_, value)| !value.is_null()).collect()
}

fn identify(id: String, attributes: Map<String, Json>, timestamp: i64) -> CustomerOp {
    CustomerOp::Identify { id, attributes, timestamp }
}

/// The rows a change carries: the new one, and the old one when known.
fn rows_of(change: &RowChange) -> Vec<&Row> {
    match &change.op {
        RowOp::Insert { new } => vec![new],
        RowOp::Update { old, new, .. } => old.iter().chain(std::iter::once(new)).collect(),
        RowOp::Delete { old } => vec![old],
    }
}

/// The customer id of a row: its text form, if usable by Customer.io.
pub(crate) fn customer_id(datum: &Datum) -> Option<String> {
    let Datum::Text(bytes) = datum else {
        return None;
    };
    let id = std::str::from_utf8(bytes).ok()?;
    (!id.trim().is_empty() && id.len() <= track_api::MAX_ID_BYTES).then(|| id.to_owned())
}

/// The mapped attributes of `new`. With `old`, only those whose text differs;
/// with `send_nulls`, NULLs are sent as `null` (an update may have cleared
/// them), otherwise left out (an insert has nothing to clear).
fn attributes(
    sync: &SyncConfig,
    table: &Table,
    new: &Row,
    old: Option<&Row>,
    send_nulls: bool,
    dropped: &mut Vec<DroppedAttribute>,
) -> Map<String, Json> {
    let mut out = Map::new();
    for (attribute, column) in &sync.attributes {
        let drop = |reason| DroppedAttribute {
            attribute: attribute.clone(),
            column: column.clone(),
            reason,
        };
        let Some(index) = table.column_index(column) else {
            dropped.push(drop(DropReason::MissingColumn));
            continue;
        };
        let datum = &new[index];
        if *datum == Datum::UnchangedToast {
            continue;
        }
        if let Some(old) = old {
            if old.get(index) == Some(datum) {
                continue;
            }
        }
        match datum {
            Datum::UnchangedToast => {}
            Datum::Null => {
                if send_nulls {
                    out.insert(attribute.clone(), Json::Null);
                }
            }
            Datum::Text(bytes) => {
                let converted = std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| value::to_json(&table.columns[index].kind, text).ok());
                match converted {
                    None => dropped.push(drop(DropReason::Unparseable)),
                    Some(v)
                        if track_api::attribute_value_bytes(&v)
                            > track_api::MAX_ATTRIBUTE_VALUE_BYTES =>
                    {
                        dropped.push(drop(DropReason::ValueTooLong))
                    }
                    Some(v) => {
                        out.insert(attribute.clone(), v);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
