//! What a backfill reads: a synced table's rows by its id column, a
//! `[[devices]]` table's by its primary key (each row an `add_device`, a
//! soft-deleted one a `delete_device`, as the initial copy sends them; only
//! rows of customers who sync, see `source::living`), or,
//! for an event replay (`ciosync backfill --events`), an event table's rows in
//! primary-key order, mapped as the inserts they were. Both run in the
//! runner between watermarks. Replayed events get the ids the stream gave
//! them (`mapping::events::row_event_id`), so Customer.io drops those it
//! has. And which of a row's operations a backfill sends
//! ([`select_attributes`]).

use std::sync::Arc;

use super::runner::Mapping;
use crate::change::{Row, RowChange, RowOp, Table};
use crate::config::{Config, CopiedTable};
use crate::customer::CustomerOp;
use crate::mapping::Mapper;
use crate::pg::PgError;
use crate::schema::store::retyped_attributes;
use crate::source::reader::{primary_key, TableReader};
use crate::state::Backfill;
use crate::telemetry::Counters;

/// The reader of a synced or devices table's backfill, and the attributes
/// it leaves out (their columns now hold another JSON type than Customer.io
/// has; none for a devices table, whose device attributes go as strings).
pub(super) async fn rows(
    sql: &tokio_postgres::Client,
    config: &Config,
    backfill: &Backfill,
) -> Result<(TableReader, Vec<String>), PgError> {
    let Some(table) = CopiedTable::find(config, &backfill.table) else {
        return Err(PgError::Definite(
            "the table is not synced by this config, nor one of its [[devices]] tables".into(),
        ));
    };
    let reader =
        TableReader::of_copied(sql, table, backfill.where_clause.as_deref(), Some(&config.sync))
            .await?;
    let CopiedTable::Sync(sync) = table else { return Ok((reader, Vec::new())) };
    let retyped = retyped_attributes(sql, &config.postgres.slot, sync).await?;
    if !retyped.is_empty() {
        tracing::warn!(
            backfill = backfill.id,
            table = %backfill.table,
            attributes = ?retyped,
            "left out of the backfill: their columns now hold another JSON type than \
             Customer.io has (README, \"When the table changes\")"
        );
    }
    Ok((reader, retyped))
}

/// Whether the backfill reads a `[[devices]]` table: its rows become device
/// calls, which the record of what Customer.io accepted does not keep.
pub(super) fn of_devices(config: &Config, backfill: &Backfill) -> bool {
    !backfill.events && config.devices.iter().any(|d| d.table.to_string() == backfill.table)
}

/// The mapping and the reader of an event replay (`backfill --events`):
/// the event table's rows by its primary key, which the events' ids are
/// derived from as in the stream, so Customer.io drops the events it has.
pub(super) async fn mapping(
    sql: &tokio_postgres::Client,
    config: &Config,
    counters: &Arc<Counters>,
    backfill: &Backfill,
) -> Result<(Mapping, TableReader), PgError> {
    let Some(events) = config.events.iter().find(|e| e.table.to_string() == backfill.table) else {
        return Err(PgError::Definite("the table is not an event table of this config".into()));
    };
    // The command checked its own config; the daemon's is what counts.
    if events.timestamp_column.is_none() {
        return Err(PgError::Definite(
            "the event table has no timestamp_column in the daemon's config: a replay would \
             date every event now"
                .into(),
        ));
    }
    let (schema, name) = events.schema_and_name();
    let key = primary_key(sql, schema, name).await?;
    if key.is_empty() {
        return Err(PgError::Definite(
            "the event table has no primary key: a replay could not give its events the ids \
             the stream gave them"
                .into(),
        ));
    }
    let mut mapper = Mapper::new(&[]).with_event_tables(std::slice::from_ref(events));
    mapper.set_event_keys(vec![((schema.to_owned(), name.to_owned()), key.clone())]);
    let reader = TableReader::of_events(
        sql,
        events,
        &key,
        backfill.since,
        backfill.where_clause.as_deref(),
        Some(&config.sync),
    )
    .await?;
    Ok((Mapping { mapper, counters: counters.clone() }, reader))
}

/// An event-table row read now as a replay maps it: the insert it was.
pub(super) fn as_insert(table: &Arc<Table>, new: Row, timestamp: i64) -> RowChange {
    RowChange {
        table: table.clone(),
        op: RowOp::Insert { new },
        commit_time: timestamp,
        position: Default::default(),
    }
}

/// Keeps only the listed attributes of each identify (all without a list);
/// an identify left with nothing is dropped. Removals are dropped too: a soft-deleted row read by a
/// backfill maps to a delete, and a backfill re-sends rows, it does not
/// remove people behind the mass-delete circuit breaker's back (those
/// removals reached Customer.io, or its hold, when the rows changed).
pub(super) fn select_attributes(
    ops: Vec<CustomerOp>,
    wanted: Option<&[String]>,
) -> Vec<CustomerOp> {
    ops.into_iter()
        .filter_map(|op| match (op, wanted) {
            (CustomerOp::Delete { .. } | CustomerOp::Suppress { .. }, _) => None,
            // A row read now is no transition: its watched values are only
            // recorded where the record lacks them, no event fires.
            (CustomerOp::Event(mut event), _) if event.watch.is_some() => {
                if let Some(watch) = event.watch.as_mut() {
                    watch.fires = false;
                }
                event.data.clear();
                Some(CustomerOp::Event(event))
            }
            (CustomerOp::Object(object), Some(wanted)) => {
                object.only(wanted).map(CustomerOp::Object)
            }
            (CustomerOp::Identify { id, mut attributes, timestamp }, Some(wanted)) => {
                attributes.retain(|name, _| wanted.iter().any(|w| w == name));
                (!attributes.is_empty()).then_some(CustomerOp::Identify {
                    id,
                    attributes,
                    timestamp,
                })
            }
            (other, _) => Some(other),
        })
        .collect()
}
