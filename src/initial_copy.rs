//! The initial copy: every row that exists when ciosync first starts reaches
//! Customer.io, consistently with the stream that follows.
//!
//! # Why no row is missed or overwritten with an older value
//!
//! On the first start there is no slot. The slot is created on a
//! replication connection with `SNAPSHOT 'export'` (and `FAILOVER` where
//! `postgres.failover_slot` wants a failover slot), and a second connection
//! imports that snapshot (`SET TRANSACTION SNAPSHOT`) before the first one
//! does anything else. The copy therefore reads the table exactly as of the
//! slot's consistent point: a row committed before it is in the copy, a
//! change committed after it comes only from the stream. The stream starts
//! after the copy is delivered, so for every customer the copied values
//! reach Customer.io before any later change of that row.
//!
//! # Surviving a restart
//!
//! Progress is recorded in `ciosync.initial_copy` (see `state`): the plan is
//! written before the slot is created, and after each page the key of the
//! last delivered row. A restart never takes "the slot exists" to mean "the
//! copy finished": it resumes each unfinished table after its last key. The
//! snapshot is gone by then, so the rest is read as it is now; that is still
//! safe, because every change since the slot's consistent point is still in
//! the slot (nothing is acknowledged before the copy ends) and is replayed
//! in commit order afterwards, ending at the row's latest value.
//!
//! `[[devices]]` tables are copied the same way, after the person tables:
//! each row becomes an `add_device` (a soft-deleted one a `delete_device`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use pgwire_replication::Lsn;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::change::{RowChange, RowOp};
use crate::config::{Config, CopiedTable};
use crate::mapping::report::{report, Producer};
use crate::mapping::Mapper;
use crate::pg::connection::{ConnectionSettings, Located};
use crate::pg::gated::Gated;
use crate::pg::quote::{quote_ident, quote_literal};
use crate::pg::PgError;
use crate::sink::{Sink, SinkError};
use crate::source::reader::{postgres_now, TableReader};
use crate::source::setup::{self, SlotState};
use crate::state::{CopyState, State};
use crate::telemetry::{Counters, Phase};

/// Rows read per page; each page is delivered and checkpointed before the
/// next. Its rows go into the sink only as the memory budget has room, but
/// the page's text is read whole.
pub const PAGE_ROWS: usize = 1000;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Why the copy stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Postgres failed or refused.
    #[error(transparent)]
    Source(#[from] PgError),
    /// Customer.io refused for good.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// How the copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Nothing (left) to copy, or everything copied.
    Complete,
    /// Shutdown came first; the next start resumes.
    Interrupted,
}

/// Everything the copy of one table needs.
struct Copier<'a> {
    sink: &'a mut Sink,
    mapper: &'a Mapper,
    counters: &'a Counters,
    shutdown: &'a CancellationToken,
    commit_time: i64,
    /// With the record of what Customer.io accepted on: the connection
    /// that marks it complete for each table copied, and the slot.
    record: Option<(&'a Client, &'a str)>,
    /// The `[[sync]]` tables: a device is copied only for a customer with
    /// a row that syncs in a people table (an `add_device` would create a
    /// person the copy left out), or as the `delete_device` of a
    /// soft-deleted row (see `source::living::living_devices`).
    syncs: &'a [crate::config::SyncConfig],
}

/// Runs or resumes the initial copy as the config and the recorded state say.
pub async fn run(
    settings: &ConnectionSettings,
    config: &Config,
    sink: &mut Sink,
    mapper: &mut Mapper,
    counters: &Counters,
    shutdown: &CancellationToken,
) -> Result<CopyOutcome, CopyError> {
    let sql = settings.connect_sql().await.map_err(PgError::sql("connect"))?;
    // `failover_slot = "on"` on a server without failover slots stops here,
    // before anything is created.
    let failover = crate::source::slot::failover_wanted(&sql, config).await?;
    // Which filters the publication leaves to ciosync decides how this
    // lease maps changes (`mapping::own_filter`).
    mapper.set_own_filters(setup::ensure_publication(&sql, config).await?);
    // Event-table rows' events are identified by their primary key.
    mapper.set_event_keys(crate::source::reader::event_keys(&sql, &config.events).await?);
    // Devices tables' changes are noted by the key a backfill pages them by.
    mapper.set_device_keys(crate::source::keys::device_keys(&sql, &config.devices).await?);
    let mapper = &*mapper;
    let slot = &config.postgres.slot;
    // A lost slot stops here (or is recreated, with backfills queued), before
    // anything is copied; without an initial copy a new slot is made here.
    let slot_state =
        crate::source::slot::ensure(&sql, config, counters, !config.pipeline.initial_sync).await?;
    if !config.pipeline.initial_sync {
        return Ok(CopyOutcome::Complete);
    }
    let state = State::open(&sql, slot).await?;
    // Postgres's clock, read before the slot exists: every change the stream
    // carries later has a commit time at or after it.
    let commit_time = postgres_now(&sql).await?;
    let record = config.pipeline.record_accepted.then_some((&sql, slot.as_str()));
    let syncs = &config.sync[..];
    let mut copier = Copier { sink, mapper, counters, shutdown, commit_time, record, syncs };
    if slot_state == SlotState::Missing {
        let tables: Vec<String> = CopiedTable::all(config).map(CopiedTable::name).collect();
        state.plan(&tables).await?;
        let reader = settings.connect_sql_located().await.map_err(PgError::sql("connect"))?;
        create_slot_and_import_snapshot(settings, config, &reader, failover).await?;
        let reader = reader.client;
        state.record_slot().await?;
        tracing::info!(%slot, tables = tables.len(), "replication slot created; initial copy starts");
        for table in CopiedTable::all(config) {
            if copier.copy_table(&reader, &state, table, None, 0, true).await?
                == CopyOutcome::Interrupted
            {
                return Ok(CopyOutcome::Interrupted);
            }
        }
        reader.batch_execute("COMMIT").await.map_err(PgError::sql("end the copy"))?;
        return Ok(CopyOutcome::Complete);
    }
    let mut copies = state.copies().await?;
    // Resumed in the order of the first copy (the config's: people, then
    // objects, then relationships, then devices), so a relationship never
    // goes before its object's copy.
    let order: Vec<String> = CopiedTable::all(config).map(CopiedTable::name).collect();
    copies.sort_by_key(|(table, _)| order.iter().position(|t| t == table));
    if copies.is_empty() {
        tracing::info!(%slot, "slot exists with no initial copy recorded; nothing to copy");
    }
    for (table, copy) in copies {
        let Some(copied) = CopiedTable::find(config, &table) else { continue };
        let (after, rows_copied) = match copy {
            CopyState::Done => continue,
            CopyState::Pending => (None, 0),
            CopyState::Copying { last_key, rows_copied } => (last_key, rows_copied),
        };
        tracing::info!(%table, rows_copied, "resuming the initial copy");
        if copier.copy_table(&sql, &state, copied, after, rows_copied, false).await?
            == CopyOutcome::Interrupted
        {
            return Ok(CopyOutcome::Interrupted);
        }
    }
    Ok(CopyOutcome::Complete)
}

/// Creates the slot with an exported snapshot and imports the snapshot into
/// a read-only REPEATABLE READ transaction on `reader`, which the copy then
/// reads in. The exporting session stays idle until the import is done.
/// With `failover`, the slot is a failover slot (PostgreSQL 17+).
async fn create_slot_and_import_snapshot(
    settings: &ConnectionSettings,
    config: &Config,
    reader: &Located,
    failover: bool,
) -> Result<(), PgError> {
    // On the server the reader reached: the snapshot exists only there.
    let replication = settings
        .replication_config(
            reader.host,
            &config.postgres.slot,
            &config.postgres.publication,
            config.status_interval(),
        )
        .await?;
    let mut session = Gated::connect(replication).await.map_err(PgError::replication)?;
    // The login within connect_timeout_secs (CREATE_REPLICATION_SLOT may
    // rightly wait long for running transactions).
    if let Err(error) = session.identify_system().await {
        // Refused on a session that lives on (a proxy in between): fine.
        if !session.is_running() {
            return Err(PgError::replication(error));
        }
    }
    let rows = session
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export'{})",
            quote_ident(&config.postgres.slot),
            if failover { ", FAILOVER" } else { "" }
        ))
        .await
        .map_err(PgError::Replication)?;
    let snapshot = rows
        .first()
        .and_then(|row| row.get(2).cloned().flatten())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .ok_or_else(|| PgError::Definite("CREATE_REPLICATION_SLOT returned no snapshot".into()))?;
    reader
        .client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&snapshot)
        ))
        .await
        .map_err(PgError::sql("import the slot's snapshot"))?;
    // Imported: the exporting session may end now.
    drop(session);
    Ok(())
}

impl Copier<'_> {
    /// Copies one table in key order, after `after` if given (`rows_copied`
    /// rows were copied before it). With `in_snapshot`, `sql` is inside the
    /// imported snapshot's transaction; otherwise each page reads the table
    /// as it is now.
    async fn copy_table(
        &mut self,
        sql: &Client,
        state: &State<'_>,
        copied: CopiedTable<'_>,
        mut after: Option<String>,
        mut rows_copied: i64,
        in_snapshot: bool,
    ) -> Result<CopyOutcome, CopyError> {
        let name = copied.name();
        self.counters.health.set_phase(Phase::InitialCopy);
        let reader = TableReader::of_copied(sql, copied, None, Some(self.syncs)).await?;
        let mut last_log = Instant::now();
        // Pages pushed and not yet checkpointed, oldest first.
        let mut pages = Pages::default();
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(CopyOutcome::Interrupted);
            }
            let rows = reader.page(sql, after.as_deref(), PAGE_ROWS).await?;
            let count = rows.len();
            for (key, new) in rows {
                // A page of wide rows may hold several times the budget.
                if !self.wait_for_room(state, &name, &mut pages).await? {
                    return Ok(CopyOutcome::Interrupted);
                }
                after = Some(key);
                let change = RowChange {
                    table: reader.table().clone(),
                    op: RowOp::Insert { new },
                    commit_time: self.commit_time,
                    position: Default::default(),
                };
                self.deliver(&change);
            }
            if let (true, Some(key)) = (count > 0, &after) {
                rows_copied += count as i64;
                Counters::add(&self.counters.rows_copied, count as u64);
                // The page's end is a commit of the sink: ackable once its
                // operations and every earlier page's completed.
                let marker = pages.push(key.clone(), rows_copied);
                self.sink.commit(marker);
            }
            // The next page is read while this one's batches are in flight.
            self.sink.reap()?;
            self.checkpoint_delivered(state, &name, &mut pages).await?;
            if last_log.elapsed() >= PROGRESS_EVERY {
                tracing::info!(table = %name, rows_copied, "initial copy in progress");
                last_log = Instant::now();
            }
            if count < PAGE_ROWS {
                break;
            }
        }
        if !self.flush().await? {
            return Ok(CopyOutcome::Interrupted);
        }
        self.checkpoint_delivered(state, &name, &mut pages).await?;
        if let (Some((record_sql, slot)), CopiedTable::Sync(sync)) = (self.record, copied) {
            // Every row that syncs was identified and, once accepted, recorded.
            let (schema, table) = sync.schema_and_name();
            let table = format!("{schema}.{table}");
            crate::record::store::mark_complete(record_sql, slot, &table, true).await?;
        }
        state.finish(&name, rows_copied).await?;
        tracing::info!(table = %name, rows_copied, in_snapshot, "initial copy of the table done");
        Ok(CopyOutcome::Complete)
    }

    /// Maps one row and queues its operations; skipped rows are counted as in the stream.
    fn deliver(&mut self, change: &RowChange) {
        let mapped = self.mapper.map(change);
        report(&mapped, &change.table, Producer::InitialCopy, self.counters);
        for op in mapped.ops {
            self.sink.push(op);
        }
    }

    /// Returns once the memory budget has room for the next row's
    /// operations, checkpointing the pages delivered meanwhile (their
    /// commits hold budget until taken); `false` if shutdown came first.
    /// Stopping here is safe: a page not checkpointed is read again.
    async fn wait_for_room(
        &mut self,
        state: &State<'_>,
        name: &str,
        pages: &mut Pages,
    ) -> Result<bool, CopyError> {
        while self.sink.is_full() {
            self.checkpoint_delivered(state, name, pages).await?;
            if !self.sink.is_full() {
                break;
            }
            if !self.sink.has_in_flight() {
                // A send held back (the quiet time after a discard), or stuck.
                let waited = tokio::select! {
                    result = self.sink.wait_for_room() => result.map(|()| true),
                    _ = self.shutdown.cancelled() => Ok(false),
                };
                return Ok(waited?);
            }
            let finished = tokio::select! {
                finished = self.sink.completion() => finished,
                _ = self.shutdown.cancelled() => return Ok(false),
            };
            self.sink.complete(finished)?;
        }
        Ok(true)
    }

    /// Records in `ciosync.initial_copy` the newest page that, with every
    /// page before it, was delivered.
    async fn checkpoint_delivered(
        &mut self,
        state: &State<'_>,
        name: &str,
        pages: &mut Pages,
    ) -> Result<(), PgError> {
        let Some((marker, _)) = self.sink.ackable() else { return Ok(()) };
        if let Some((key, rows_copied)) = pages.delivered(marker) {
            state.checkpoint(name, &key, rows_copied).await?;
        }
        Ok(())
    }

    /// Delivers what waits; `false` if shutdown came first.
    async fn flush(&mut self) -> Result<bool, SinkError> {
        tokio::select! {
            result = self.sink.flush() => result.map(|()| true),
            _ = self.shutdown.cancelled() => Ok(false),
        }
    }
}

/// Pages pushed to the sink and not yet checkpointed, each marked by a
/// commit of its own (a counter, not a WAL position: the copy runs before
/// the stream, and its commits are all taken before the stream starts).
#[derive(Debug, Default)]
struct Pages {
    pushed: u64,
    waiting: VecDeque<(u64, String, i64)>,
}

impl Pages {
    /// A page ending at `key` with `rows_copied` rows so far; its marker.
    fn push(&mut self, key: String, rows_copied: i64) -> Lsn {
        self.pushed += 1;
        self.waiting.push_back((self.pushed, key, rows_copied));
        Lsn::from(self.pushed)
    }

    /// The newest page at or before `marker` (every page before it is
    /// delivered too), forgetting those: its last key and row count.
    fn delivered(&mut self, marker: Lsn) -> Option<(String, i64)> {
        let mut newest = None;
        while self.waiting.front().is_some_and(|(page, _, _)| *page <= marker.as_u64()) {
            newest = self.waiting.pop_front().map(|(_, key, rows)| (key, rows));
        }
        newest
    }
}
