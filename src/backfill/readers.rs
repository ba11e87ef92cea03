//! What a backfill reads: a synced table's rows by its id column, or, for
//! an event replay (`ciosync backfill --events`), an event table's rows in
//! primary-key order, mapped as the inserts they were. Both run in the
//! runner between watermarks. Replayed events get the ids the stream gave
//! them (`mapping::events::row_event_id`), so Customer.io drops those it
//! has.

use std::sync::Arc;

use super::runner::Mapping;
use crate::change::{Row, RowChange, RowOp, Table};
use crate::config::Config;
use crate::mapping::Mapper;
use crate::pg::PgError;
use crate::schema::store::retyped_attributes;
use crate::source::reader::{primary_key, TableReader};
use crate::state::Backfill;
use crate::telemetry::Counters;

/// The reader of a synced table's backfill, and the attributes it leaves
/// out (their columns now hold another JSON type than Customer.io has).
pub(super) async fn rows(
    sql: &tokio_postgres::Client,
    config: &Config,
    backfill: &Backfill,
) -> Result<(TableReader, Vec<String>), PgError> {
    let Some(sync) = config.sync.iter().find(|s| s.table.to_string() == backfill.table) else {
        return Err(PgError::Definite("the table is not synced by this config".into()));
    };
    let reader = TableReader::new(sql, sync, backfill.where_clause.as_deref()).await?;
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
