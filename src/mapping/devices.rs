//! Changes of a `[[devices]]` table → Customer.io device calls. Pure.
//!
//! | change | operations |
//! |---|---|
//! | INSERT | `add_device` (a soft-deleted row: `delete_device`, as the initial copy and backfills read it) |
//! | UPDATE | `add_device` with the row (an upsert by token); when the old row is known (FULL identity, or a key that holds both columns and changed) and its customer or token differs: first `delete_device` of the old pair (the sink orders one token's operations across customers); under FULL, an update that changed no column the config reads: nothing |
//! | UPDATE setting `soft_delete_column` | `delete_device` (already set in the known old row: nothing) |
//! | DELETE | `delete_device` of the old row's pair; when the old row does not carry both (DEFAULT identity whose key lacks one): skipped, [`SkipReason::DeviceKeyUnknown`] |
//!
//! A platform other than `ios`/`android` (any case) skips the row
//! ([`SkipReason::InvalidPlatform`]); a NULL or empty customer id or token
//! skips it as [`SkipReason::InvalidId`], a token over [`MAX_TOKEN_BYTES`]
//! as [`SkipReason::TokenTooLong`] (a row whose token grew past it deletes
//! the old device when the old row names it, and still counts the skip).
//! Device attributes go as strings (a bool as `true`/`false`); NULL ones
//! are left out. Their values follow people's limits: one over 1000 bytes
//! is left out (`value_too_long`); an `add_device` item over Customer.io's
//! 32 KB item limit loses its largest attributes when the sink encodes it,
//! as an identify does. Only names are reported, never a value or a token.

use serde_json::{Map, Value as Json};

use super::{customer_id, value, DropReason, DroppedAttribute, Mapped, Mapper, SkipReason};
use crate::change::{Datum, ReplicaIdentity, Row, RowChange, RowOp, Table};
use crate::config::devices::platform_of;
use crate::config::DevicesConfig;
use crate::customer::{CustomerOp, Device};
use crate::track_api;

/// The longest device token sent. Customer.io documents no limit on a
/// token (UNCONFIRMED: neither the Track API document nor its docs pages
/// give one), so this is the safe side: 1000 bytes, its limit on any
/// attribute value, far above any real push token (APNs: 64 hex
/// characters; FCM: about 150 to 250), so no token a phone hands out is
/// skipped, while a column holding something else entirely is not sent.
pub const MAX_TOKEN_BYTES: usize = track_api::MAX_ATTRIBUTE_VALUE_BYTES;

/// A `[[devices]]` table as the mapper holds it: its config, and the
/// columns a backfill pages it by (the customer and token columns until
/// [`Mapper::set_device_keys`] says otherwise).
#[derive(Debug, Clone)]
pub(super) struct DeviceTable {
    pub(super) config: DevicesConfig,
    key: Vec<String>,
}

impl DeviceTable {
    pub(super) fn new(config: &DevicesConfig) -> Self {
        let key = vec![config.customer_id_column.clone(), config.token_column.clone()];
        Self { config: config.clone(), key }
    }

    /// The keys a change touches (its new and old rows'), as a backfill
    /// pages the table: a key column's text as Postgres wrote it, a JSON
    /// array of the texts for several columns (`source::reader`'s keys).
    /// A full row with a NULL key column gives none (a backfill never reads
    /// it). A key-only old row of another index than the paging key
    /// (`REPLICA IDENTITY USING INDEX (user_id, token)` beside a surrogate
    /// `id`) gives its device's [`device_alias`] instead, which a chunk's
    /// row holding that device matches (`backfill::Windows`). `None` when
    /// neither can be told (a key column the table lacks, an old row
    /// without the customer or token): any row of the table may be that
    /// one, so an open chunk yields whole.
    pub(super) fn keys(&self, change: &RowChange) -> Option<Vec<String>> {
        let index: Vec<usize> =
            self.key.iter().map(|c| change.table.column_index(c)).collect::<Option<_>>()?;
        let full_old = change.table.replica_identity == ReplicaIdentity::Full;
        let rows: Vec<(&Row, bool)> = match &change.op {
            RowOp::Insert { new } => vec![(new, true)],
            RowOp::Update { old, old_is_key_only, new } => {
                let old = old.iter().map(|old| (old, !*old_is_key_only));
                old.chain(std::iter::once((new, true))).collect()
            }
            RowOp::Delete { old } => vec![(old, full_old)],
        };
        let mut keys = Vec::new();
        for (row, full) in rows {
            let mut texts = Vec::with_capacity(index.len());
            for &i in &index {
                match row.get(i) {
                    Some(Datum::Text(bytes)) => texts.push(std::str::from_utf8(bytes).ok()?),
                    // Never read by a backfill: nothing of a chunk.
                    Some(Datum::Null) if full => break,
                    _ => {
                        let rows = Rows { config: &self.config, table: &change.table };
                        let (customer, token) = rows.pair(row).ok()?;
                        texts.clear();
                        keys.push(device_alias(&customer, &token));
                        break;
                    }
                }
            }
            if texts.len() < index.len() {
                continue;
            }
            keys.push(match texts.as_slice() {
                [one] => (*one).to_owned(),
                several => serde_json::to_string(several).ok()?,
            });
        }
        keys.dedup();
        Some(keys)
    }
}

/// What the stream notes a device under when the change lacks the row's
/// paging key: its customer and token after a NUL each, which no key holds
/// (Postgres text has no NUL).
pub fn device_alias(customer: &str, token: &str) -> String {
    format!("\0{customer}\0{token}")
}

impl Mapper {
    /// The columns the stream notes `schema.name`'s changes under, if it is
    /// a `[[devices]]` table (see [`Mapper::set_device_keys`]).
    pub fn device_key(&self, schema: &str, name: &str) -> Option<&[String]> {
        self.device_tables.get(schema, name).map(|table| &table.key[..])
    }

    /// The columns each `[[devices]]` table (`schema`, `name`) is paged by
    /// (`source::keys::device_keys`), so that while a backfill's window is
    /// open the stream's changes are noted under the keys its chunk holds.
    pub fn set_device_keys(&mut self, keys: Vec<((String, String), Vec<String>)>) {
        for ((schema, name), key) in keys {
            if let Some(table) = self.device_tables.get_mut(&schema, &name) {
                table.key = key;
            }
        }
    }
}

/// Maps one change of a devices table.
pub fn map(config: &DevicesConfig, change: &RowChange) -> Mapped {
    let rows = Rows { config, table: &change.table };
    let mut out = Mapped::default();
    match &change.op {
        RowOp::Insert { new } => rows.upsert(None, new, &mut out),
        RowOp::Update { old, old_is_key_only, new } => {
            let full = old.as_ref().filter(|_| !*old_is_key_only);
            if full.is_some_and(|old| rows.same(old, new)) {
                out.skipped = Some(SkipReason::NoChange);
                return out;
            }
            if full.is_some_and(|old| rows.revoked(old)) && rows.revoked(new) {
                out.skipped = Some(SkipReason::SoftDeleted);
                return out;
            }
            rows.upsert(old.as_ref().and_then(|old| rows.pair(old).ok()), new, &mut out)
        }
        RowOp::Delete { old } => match rows.pair(old) {
            Ok((customer, token)) => out.ops.push(CustomerOp::DeleteDevice { customer, token }),
            Err(reason) => out.skipped = Some(reason),
        },
    }
    out
}

/// One change's table, read through the config.
struct Rows<'a> {
    config: &'a DevicesConfig,
    table: &'a Table,
}

impl Rows<'_> {
    fn datum<'r>(&self, row: &'r Row, column: &str) -> Option<&'r Datum> {
        self.table.column_index(column).and_then(|i| row.get(i))
    }

    /// The row's (customer, token). In a key-only old row (DEFAULT or
    /// INDEX identity) a column outside the key is NULL: the pair is not
    /// known there, which is a different skip than a NULL in a full row.
    fn pair(&self, row: &Row) -> Result<(String, String), SkipReason> {
        let customer = self.datum(row, &self.config.customer_id_column);
        let token = self.datum(row, &self.config.token_column);
        let unknown = |d: Option<&Datum>| matches!(d, None | Some(Datum::Null));
        let full = self.table.replica_identity == ReplicaIdentity::Full;
        if !full && (unknown(customer) || unknown(token)) {
            return Err(SkipReason::DeviceKeyUnknown);
        }
        let Some(customer) = customer.and_then(customer_id) else {
            return Err(SkipReason::InvalidId);
        };
        token.map_or(Err(SkipReason::InvalidId), token_of).map(|token| (customer, token))
    }

    /// Whether the row's `soft_delete_column` is set.
    fn revoked(&self, row: &Row) -> bool {
        let column = self.config.soft_delete_column.as_deref();
        matches!(column.and_then(|c| self.datum(row, c)), Some(Datum::Text(_)))
    }

    /// Whether every column the config reads is the same in both rows.
    fn same(&self, old: &Row, new: &Row) -> bool {
        self.config.columns().into_iter().all(|(_, column)| {
            match (self.datum(old, column), self.datum(new, column)) {
                (_, Some(Datum::UnchangedToast)) => true,
                (old, new) => old == new,
            }
        })
    }

    /// The new row's add (or, soft-deleted, delete), after the delete of
    /// the old pair when it is known and differs.
    fn upsert(&self, old: Option<(String, String)>, new: &Row, out: &mut Mapped) {
        let pair = match self.pair(new) {
            Ok(pair) => pair,
            // The row names no device any more (its customer or token set
            // to NULL: a logout; or a token too long to send): the one it
            // named, if known, goes.
            Err(reason) => {
                let too_long = reason == SkipReason::TokenTooLong;
                match old {
                    Some((customer, token)) => {
                        out.ops.push(CustomerOp::DeleteDevice { customer, token });
                        // The new token is still not sent: counted.
                        out.skipped = too_long.then_some(reason);
                    }
                    // A new row carries every column: NULL is NULL.
                    None if too_long => out.skipped = Some(reason),
                    None => out.skipped = Some(SkipReason::InvalidId),
                }
                return;
            }
        };
        if let Some((customer, token)) = old.filter(|old| *old != pair) {
            // Of the same token, the sink keeps the two in order (one
            // token's operations keep commit order across customers);
            // different tokens need none.
            out.ops.push(CustomerOp::DeleteDevice { customer, token });
        }
        let (customer, token) = pair;
        if self.revoked(new) {
            out.ops.push(CustomerOp::DeleteDevice { customer, token });
            return;
        }
        let platform = match &self.config.platform {
            Some(fixed) => platform_of(fixed),
            None => self.config.platform_column.as_deref().and_then(|c| self.platform_in(new, c)),
        };
        let Some(platform) = platform else {
            out.skipped = Some(SkipReason::InvalidPlatform);
            return;
        };
        let last_used = self.last_used(new, &mut out.dropped);
        let attributes = self.attributes(new, &mut out.dropped);
        let device = Device { customer, token, platform, last_used, attributes };
        out.ops.push(CustomerOp::AddDevice(Box::new(device)));
    }

    /// The platform a column's value names, if any.
    fn platform_in(&self, row: &Row, column: &str) -> Option<&'static str> {
        let Some(Datum::Text(bytes)) = self.datum(row, column) else { return None };
        std::str::from_utf8(bytes).ok().and_then(platform_of)
    }

    fn last_used(&self, row: &Row, dropped: &mut Vec<DroppedAttribute>) -> Option<i64> {
        let column = self.config.last_used_column.as_deref()?;
        let index = self.table.column_index(column);
        let seconds = match index.and_then(|i| row.get(i)) {
            Some(Datum::Text(bytes)) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| value::to_json(&self.table.columns[index?].kind, text).ok())
                .and_then(|json| json.as_i64()),
            _ => return None,
        };
        if seconds.is_none() {
            dropped.push(dropped_one("last_used", column, DropReason::Unparseable));
        }
        seconds
    }

    /// The device attributes, as strings; NULL ones left out.
    fn attributes(&self, row: &Row, dropped: &mut Vec<DroppedAttribute>) -> Map<String, Json> {
        let mut out = Map::new();
        for (name, column) in &self.config.attributes {
            let Some(index) = self.table.column_index(column) else {
                dropped.push(dropped_one(name, column, DropReason::MissingColumn));
                continue;
            };
            let Some(Datum::Text(bytes)) = row.get(index) else { continue };
            let text = std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| value::to_json(&self.table.columns[index].kind, text).ok())
                .map(as_string);
            match text {
                None => dropped.push(dropped_one(name, column, DropReason::Unparseable)),
                Some(text) if text.len() > track_api::MAX_ATTRIBUTE_VALUE_BYTES => {
                    dropped.push(dropped_one(name, column, DropReason::ValueTooLong))
                }
                Some(text) => {
                    out.insert(name.clone(), Json::String(text));
                }
            }
        }
        out
    }
}

fn dropped_one(attribute: &str, column: &str, reason: DropReason) -> DroppedAttribute {
    DroppedAttribute { attribute: attribute.to_owned(), column: column.to_owned(), reason }
}

/// A device attribute's value as Customer.io takes it: a string (a
/// boolean as `true`/`false`, a number as written, anything else as JSON).
fn as_string(value: Json) -> String {
    match value {
        Json::String(text) => text,
        other => other.to_string(),
    }
}

/// A usable device token: not empty, not blank, at most
/// [`MAX_TOKEN_BYTES`].
fn token_of(datum: &Datum) -> Result<String, SkipReason> {
    let Datum::Text(bytes) = datum else { return Err(SkipReason::InvalidId) };
    let token = std::str::from_utf8(bytes).map_err(|_| SkipReason::InvalidId)?;
    if token.trim().is_empty() {
        return Err(SkipReason::InvalidId);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(SkipReason::TokenTooLong);
    }
    Ok(token.to_owned())
}

#[cfg(test)]
#[path = "devices_tests.rs"]
mod tests;
