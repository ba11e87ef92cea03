//! Events: from inserts into event tables (`[[events]]`) and from column
//! transitions of synced rows (`[[sync.events]]`), each with an id that is
//! the same every time it is sent again. Pure.
//!
//! # Exactly once, from Customer.io's side
//!
//! Delivery is at least once: a transaction delivered but not yet
//! acknowledged when ciosync stops comes again from the slot, and
//! `backfill --events` sends an event table's rows again. Customer.io
//! ignores an event whose `id` (a ULID) it has seen, so an id is never
//! taken from a clock or a random source:
//! - an event-table row's event is identified by the row itself: its
//!   table, its primary key's values and the event's name
//!   ([`row_event_id`]), so the stream and a replay give it the same id;
//! - the rest (a change-derived event, an event table without a primary
//!   key) by where it comes from in the WAL: its transaction's commit LSN,
//!   the change's index in the transaction, and which configured event it
//!   is ([`event_id`]); a replay of the slot gives it the same id.
//!
//! The ULID's time part is the event's timestamp; its random part is a
//! hash of the rest.

use serde_json::{Map, Value as Json};

use super::value::{self, ValueKind};
use super::{customer_id, DropReason, DroppedAttribute};
use crate::change::{Datum, Row, RowChange, Table};
use crate::config::{ChangeEventConfig, EventTableConfig};
use crate::customer::{AnonymousEvent, CustomerOp, Event, Watch};
use crate::track_api;

/// Why an insert into an event table produced no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSkip {
    /// The customer id (and the anonymous id, if configured) is NULL,
    /// empty or too long.
    InvalidId,
    /// The name column is NULL, blank or over 100 bytes.
    InvalidName,
}

/// An `[[events]]` entry with the columns that identify its rows: the
/// table's primary key, read from the catalogue when a lease starts (none:
/// the table has no primary key, and its events get WAL-derived ids).
#[derive(Debug, Clone)]
pub struct EventTable {
    pub config: EventTableConfig,
    pub key: Vec<String>,
}

/// Who an event-table row's event is for.
enum Subject {
    Customer(String),
    Anonymous(String),
}

/// The event an insert into an event table stands for: a person's, or an
/// anonymous one where the customer id is NULL and `anonymous_id_column`
/// holds a value. A `name_column` value is trimmed (a `char(n)` column pads
/// it); NULL, blank, or over 100 bytes once trimmed, it skips the row, as
/// Customer.io would refuse the event on every try.
pub fn from_event_table(
    EventTable { config, key }: &EventTable,
    change: &RowChange,
    new: &Row,
    dropped: &mut Vec<DroppedAttribute>,
) -> Result<CustomerOp, EventSkip> {
    let table = &*change.table;
    let datum = |column: &str| table.column_index(column).map(|i| &new[i]);
    let subject = match datum(&config.customer_id_column).and_then(customer_id) {
        Some(id) => Subject::Customer(id),
        None => config
            .anonymous_id_column
            .as_deref()
            .and_then(datum)
            .and_then(customer_id)
            .map(Subject::Anonymous)
            .ok_or(EventSkip::InvalidId)?,
    };
    let name = match (&config.name, &config.name_column) {
        (Some(fixed), _) => fixed.clone(),
        (None, Some(column)) => match datum(column) {
            Some(Datum::Text(bytes)) => std::str::from_utf8(bytes)
                .ok()
                .map(str::trim)
                .filter(|n| !n.is_empty() && n.len() <= track_api::MAX_EVENT_NAME_BYTES)
                .ok_or(EventSkip::InvalidName)?
                .to_owned(),
            _ => return Err(EventSkip::InvalidName),
        },
        (None, None) => return Err(EventSkip::InvalidName),
    };
    let mut data = Map::new();
    if let Some(column) = &config.data_column {
        match converted(table, new, column) {
            Ok(Some(Json::Object(object))) => data = object,
            Ok(None | Some(Json::Null)) => {}
            Ok(Some(_)) | Err(DropReason::Unparseable) => {
                dropped.push(drop(column, column, DropReason::Unparseable))
            }
            Err(reason) => dropped.push(drop(column, column, reason)),
        }
    }
    for (key, column) in &config.data {
        match converted(table, new, column) {
            Ok(Some(v)) => {
                data.insert(key.clone(), v);
            }
            Ok(None) => {
                data.insert(key.clone(), Json::Null);
            }
            Err(reason) => dropped.push(drop(key, column, reason)),
        }
    }
    let timestamp = config
        .timestamp_column
        .as_deref()
        .and_then(|column| converted(table, new, column).ok().flatten())
        .and_then(|v| v.as_i64())
        .unwrap_or(change.commit_time);
    let event_id = row_event_id(table, new, key, &name, timestamp)
        .unwrap_or_else(|| event_id(change, 0, &name));
    Ok(match subject {
        Subject::Customer(customer) => {
            CustomerOp::Event(Event { customer, name, event_id, timestamp, data, watch: None })
        }
        Subject::Anonymous(anonymous_id) => CustomerOp::AnonymousEvent(AnonymousEvent {
            anonymous_id,
            name,
            event_id,
            timestamp,
            data,
        }),
    })
}

/// The events `[[sync.events]]` derive from one UPDATE of a synced row,
/// given its full old row. `when_changed`: the column's value changed (data
/// `from` and `to`); `when`: it changed to a non-NULL value. The listed
/// `data` columns add their new values. Unchanged TOAST values never count
/// as a change.
pub fn from_transition(
    configs: &[ChangeEventConfig],
    change: &RowChange,
    customer: &str,
    old: &Row,
    new: &Row,
    dropped: &mut Vec<DroppedAttribute>,
) -> Vec<Event> {
    let table = &*change.table;
    let mut events = Vec::new();
    for config in configs {
        let Some(index) = watched_index(config, table, dropped) else { continue };
        let column = config.column();
        let (before, after) = (&old[index], &new[index]);
        if before == after || *before == Datum::UnchangedToast || *after == Datum::UnchangedToast {
            continue;
        }
        let mut data = Map::new();
        if config.when_changed.is_some() {
            for (key, datum) in [("from", before), ("to", after)] {
                match to_json(&table.columns[index].kind, datum) {
                    Ok(v) => {
                        data.insert(key.to_owned(), v);
                    }
                    Err(reason) => dropped.push(drop(key, column, reason)),
                }
            }
        } else if *after == Datum::Null {
            continue;
        }
        for column in &config.data {
            match converted(table, new, column) {
                Ok(v) => {
                    data.insert(column.clone(), v.unwrap_or(Json::Null));
                }
                Err(reason) => dropped.push(drop(column, column, reason)),
            }
        }
        events.push(change_event(config, change, customer, data, None));
    }
    events
}

/// The events `[[sync.events]]` derive from one change of a synced row
/// whose old row is not known (DEFAULT or INDEX identity), to be decided
/// against the record of what Customer.io accepted (see
/// [`crate::customer::Watch`]): one per event whose column is in `new` (an
/// unchanged TOAST value did not change). `fires` is false for an insert:
/// it only records the values, so the first update can tell a change.
/// A `when` column changed to NULL records its value and fires nothing.
pub fn against_record(
    configs: &[ChangeEventConfig],
    change: &RowChange,
    customer: &str,
    new: &Row,
    fires: bool,
    dropped: &mut Vec<DroppedAttribute>,
) -> Vec<Event> {
    let table = &*change.table;
    let mut events = Vec::new();
    for config in configs {
        let Some(index) = watched_index(config, table, dropped) else { continue };
        let column = config.column();
        if new[index] == Datum::UnchangedToast {
            continue;
        }
        let value = match to_json(&table.columns[index].kind, &new[index]) {
            Ok(value) => value,
            Err(reason) => {
                dropped.push(drop(&config.name, column, reason));
                continue;
            }
        };
        let with_from = config.when_changed.is_some();
        let fires = fires && (with_from || !value.is_null());
        let mut data = Map::new();
        if fires {
            if with_from {
                data.insert("to".to_owned(), value.clone());
            }
            for column in &config.data {
                match converted(table, new, column) {
                    Ok(v) => {
                        data.insert(column.clone(), v.unwrap_or(Json::Null));
                    }
                    Err(reason) => dropped.push(drop(column, column, reason)),
                }
            }
        }
        let key = config.watch_key();
        let at = (change.position.commit_lsn, change.position.index);
        let watch = Watch { key, value, fires, with_from, at };
        events.push(change_event(config, change, customer, data, Some(Box::new(watch))));
    }
    events
}

fn change_event(
    config: &ChangeEventConfig,
    change: &RowChange,
    customer: &str,
    data: Map<String, Json>,
    watch: Option<Box<Watch>>,
) -> Event {
    Event {
        customer: customer.to_owned(),
        name: config.name.clone(),
        // By what the event is (name and column), not by its place in the
        // config, so reordering [[sync.events]] keeps replayed ids; the
        // same whether the old value came from the WAL or the record.
        event_id: event_id(change, 1, &format!("{}\u{0}{}", config.name, config.column())),
        timestamp: change.commit_time,
        data,
        watch,
    }
}

/// Where `config`'s watched column is in `table`; a column the table lacks
/// is noted in `dropped`.
fn watched_index(
    config: &ChangeEventConfig,
    table: &Table,
    dropped: &mut Vec<DroppedAttribute>,
) -> Option<usize> {
    let index = table.column_index(config.column());
    if index.is_none() {
        dropped.push(drop(&config.name, config.column(), DropReason::MissingColumn));
    }
    index
}

/// A column's value as JSON: `None` for NULL or an unchanged TOAST value.
fn converted(table: &Table, row: &Row, column: &str) -> Result<Option<Json>, DropReason> {
    let index = table.column_index(column).ok_or(DropReason::MissingColumn)?;
    match &row[index] {
        Datum::Null | Datum::UnchangedToast => Ok(None),
        datum => to_json(&table.columns[index].kind, datum).map(Some),
    }
}

fn to_json(kind: &ValueKind, datum: &Datum) -> Result<Json, DropReason> {
    match datum {
        Datum::Null | Datum::UnchangedToast => Ok(Json::Null),
        Datum::Text(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| value::to_json(kind, text).ok())
            .ok_or(DropReason::Unparseable),
    }
}

fn drop(attribute: &str, column: &str, reason: DropReason) -> DroppedAttribute {
    DroppedAttribute { attribute: attribute.to_owned(), column: column.to_owned(), reason }
}

/// The event's ULID: 48 bits of the commit time in milliseconds, then 80
/// bits of a hash of the change's WAL position, which event of the change it
/// is (`which`) and its name. Stable across runs and versions (FNV-1a, not
/// Rust's hasher, whose output may change between releases).
pub fn event_id(change: &RowChange, which: u32, name: &str) -> String {
    let mut input = Vec::with_capacity(24 + name.len());
    input.extend_from_slice(&change.position.commit_lsn.to_be_bytes());
    input.extend_from_slice(&change.position.index.to_be_bytes());
    input.extend_from_slice(&which.to_be_bytes());
    input.extend_from_slice(name.as_bytes());
    hashed_ulid(change.commit_time, &input)
}

/// The ULID of an event-table row's event: 48 bits of its timestamp in
/// milliseconds, then 80 bits of a hash of the table's name, the values of
/// its `key` columns (their text, as Postgres prints it both in the stream
/// and in a query) and the event's name. `None` when the table has no key
/// or the row lacks a key value. The hash input starts with a tag no
/// WAL-derived id's has, so the two kinds never meet.
pub fn row_event_id(
    table: &Table,
    row: &Row,
    key: &[String],
    name: &str,
    timestamp: i64,
) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let mut input = Vec::with_capacity(64 + name.len());
    input.extend_from_slice(b"row\0");
    for part in [&table.schema, &table.name] {
        input.extend_from_slice(&(part.len() as u32).to_be_bytes());
        input.extend_from_slice(part.as_bytes());
    }
    for column in key {
        let Datum::Text(bytes) = &row[table.column_index(column)?] else { return None };
        input.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        input.extend_from_slice(bytes);
    }
    input.extend_from_slice(name.as_bytes());
    Some(hashed_ulid(timestamp, &input))
}

/// A ULID of `timestamp` (Unix seconds; before 1970 counts as 1970) and
/// an 80-bit hash of `input`.
fn hashed_ulid(timestamp: i64, input: &[u8]) -> String {
    let high = fnv1a(0xcbf2_9ce4_8422_2325, input);
    let low = fnv1a(0x8422_2325_cbf2_9ce4, input);
    let millis = (timestamp.max(0) as u64).saturating_mul(1000) & 0xFFFF_FFFF_FFFF;
    let random = (u128::from(high) << 16) | u128::from(low & 0xFFFF);
    ulid(millis, random & ((1u128 << 80) - 1))
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Crockford base32 of `millis` (48 bits) then `random` (80 bits): 26 characters.
fn ulid(millis: u64, random: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let value = (u128::from(millis) << 80) | random;
    (0..26).rev().map(|i| ALPHABET[((value >> (i * 5)) & 0x1F) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::change::{ReplicaIdentity, RowOp, TableColumn, WalPosition};

    fn change(commit_lsn: u64, index: u32) -> RowChange {
        RowChange {
            table: Arc::new(Table {
                oid: 1,
                schema: "public".into(),
                name: "t".into(),
                columns: vec![TableColumn {
                    name: "id".into(),
                    type_oid: 0,
                    kind: ValueKind::Text,
                }],
                replica_identity: ReplicaIdentity::Full,
            }),
            op: RowOp::Insert { new: vec![Datum::Null] },
            commit_time: 1_700_000_000,
            position: WalPosition { commit_lsn, index },
        }
    }

    #[test]
    fn ids_are_ulids_stable_for_a_position_and_distinct_across_positions() {
        let id = event_id(&change(0x1_6B37_4D48, 3), 0, "signed_up");
        assert_eq!(id.len(), 26);
        assert!(id.bytes().all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)), "{id}");
        // The time part is the commit time: 1,700,000,000,000 ms.
        assert_eq!(&id[..10], &ulid(1_700_000_000_000, 0)[..10]);
        assert_eq!(id, event_id(&change(0x1_6B37_4D48, 3), 0, "signed_up"), "replay");
        let others = [
            event_id(&change(0x1_6B37_4D48, 4), 0, "signed_up"),
            event_id(&change(0x1_6B37_4D49, 3), 0, "signed_up"),
            event_id(&change(0x1_6B37_4D48, 3), 1, "signed_up"),
            event_id(&change(0x1_6B37_4D48, 3), 0, "other"),
        ];
        for other in others {
            assert_ne!(id, other);
        }
    }

    #[test]
    fn ids_stay_what_earlier_versions_made() {
        // A replay after an upgrade must send the ids the old version sent,
        // or Customer.io records the events twice: the hash is FNV-1a (the
        // published 64-bit test vectors) and the id of a position is pinned.
        assert_eq!(fnv1a(0xcbf2_9ce4_8422_2325, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(0xcbf2_9ce4_8422_2325, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(0xcbf2_9ce4_8422_2325, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            event_id(&change(0x1_6B37_4D48, 3), 2, "signed_up"),
            "01HF7YAT00V6ZXCVZ9JBRC4TR1"
        );
    }

    fn keyed(schema: &str, name: &str, key: &[&str]) -> (Table, Row) {
        let column =
            |name: &str| TableColumn { name: name.into(), type_oid: 0, kind: ValueKind::Text };
        let table = Table {
            oid: 7,
            schema: schema.into(),
            name: name.into(),
            columns: vec![column("a"), column("b"), column("other")],
            replica_identity: ReplicaIdentity::Default,
        };
        let text = |t: &str| Datum::Text(bytes::Bytes::copy_from_slice(t.as_bytes()));
        let mut row: Row = key.iter().map(|k| text(k)).collect();
        row.resize(3, text("x"));
        (table, row)
    }

    #[test]
    fn a_rows_id_comes_from_its_table_key_and_name_and_is_pinned() {
        let key = ["a".to_owned(), "b".to_owned()];
        let (table, row) = keyed("public", "visits", &["4", "17"]);
        let id = row_event_id(&table, &row, &key, "visited", 1_700_000_000).unwrap();
        // A replay in a later version must send what this one streamed.
        assert_eq!(id, "01HF7YAT0081VP0FZK7GZV6H1A");
        assert_eq!(&id[..10], &ulid(1_700_000_000_000, 0)[..10], "the event's time");
        let mut other_column = row.clone();
        other_column[2] = Datum::Null;
        assert_eq!(
            Some(&id),
            row_event_id(&table, &other_column, &key, "visited", 1_700_000_000).as_ref()
        );
        let others = [
            row_event_id(&table, &row, &key, "visited_", 1_700_000_000),
            row_event_id(
                &keyed("public", "visits", &["41", "7"]).0,
                &keyed("public", "visits", &["41", "7"]).1,
                &key,
                "visited",
                1_700_000_000,
            ),
            row_event_id(
                &keyed("publi", "cvisits", &["4", "17"]).0,
                &row,
                &key,
                "visited",
                1_700_000_000,
            ),
            row_event_id(&table, &row, &key[..1], "visited", 1_700_000_000),
        ];
        for other in others {
            assert_ne!(Some(&id), other.as_ref());
        }
        // No key, or a key value it cannot read: the WAL-derived id instead.
        assert_eq!(row_event_id(&table, &row, &[], "visited", 0), None);
        let mut null_key = row.clone();
        null_key[1] = Datum::Null;
        assert_eq!(row_event_id(&table, &null_key, &key, "visited", 0), None);
        assert_eq!(row_event_id(&table, &row, &["gone".to_owned()], "visited", 0), None);
    }

    #[test]
    fn ulid_encodes_time_then_randomness_in_crockford_base32() {
        assert_eq!(ulid(0, 0), "00000000000000000000000000");
        assert_eq!(ulid(0xFFFF_FFFF_FFFF, (1u128 << 80) - 1), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(ulid(1, 0), "00000000010000000000000000");
    }
}
