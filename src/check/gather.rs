//! The reading half of `ciosync check`: the facts the judgements
//! ([`super::judge`], [`super::tables`], [`super::failover`]) decide over.
//! Catalogue facts come from [`crate::pg::catalog`], the same reads
//! publication and slot setup make; those that need nothing more (the
//! server, the role, an `[[events]]` table, a schema) `check.rs` reads from
//! there directly. What is gathered here combines them with ciosync's own
//! reads: the probes that try a filter or the webhook table, setup's view of
//! the publication and the slot, the `ciosync` schema's tables, and the
//! Track API's answer.
//!
//! Nothing here changes the database: probes run in transactions that are
//! rolled back. An `Err` is a query that failed, which `check` reports as
//! one line after the findings so far.

use std::sync::Arc;

use tokio_postgres::{Client, Error};

use crate::config::webhooks::WebhooksConfig;
use crate::config::{Config, SyncConfig};
use crate::error::error_chain;
use crate::pg::catalog::{self, Slot, Table};
use crate::pg::name::TableName;
use crate::pg::PgError;
use crate::schema::store::{columns_now, kept_shape};
use crate::schema::{Baseline, Shape};
use crate::sink::client::TrackClient;
use crate::sink::SinkError;
use crate::source::own_filters::Named;
use crate::source::row_filter;
use crate::source::setup::{self, Fix, SlotState};
use crate::telemetry::Counters;
use crate::webhooks::event::ReportingEvent;
use crate::webhooks::store as webhook_store;

/// What `sync[i].filter` does on its table, tried for real.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterProbe {
    /// Postgres refused the expression (or the probe): its message.
    Refused(String),
    /// It works; the table's columns it reads.
    Reads(Vec<String>),
}

/// A `[[sync]]` table: the catalogue's facts, and its filter tried when it
/// has one and the role can read the table's id column (else the table's
/// own findings say what to fix first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTable {
    /// `None` when no relation has that name.
    pub table: Option<Table>,
    pub filter: Option<FilterProbe>,
    /// The table's columns now with their shapes, and the shape the daemon
    /// kept for it, when it has streamed it (see `crate::schema`).
    pub shape: Option<(Vec<(String, Shape)>, Baseline)>,
    /// Whether ciosync evaluates the filter itself (see
    /// `source::own_filters`); set by the caller, which reads that once.
    pub own_filter: bool,
}

/// Whether the record of what Customer.io accepted is complete for
/// `table` (`schema.name`, see `record::store::mark_complete`); `None`
/// when it cannot be read (not created yet, or no privilege).
pub async fn record_complete(sql: &Client, slot: &str, table: &str) -> Option<bool> {
    let row = sql
        .query_opt(
            "SELECT attributes ? $2 FROM ciosync.accepted WHERE slot = $1 AND customer_id = ''",
            &[&slot, &table],
        )
        .await
        .ok()?;
    Some(row.is_some_and(|row| row.get(0)))
}

pub async fn sync_table(sql: &Client, sync: &SyncConfig, slot: &str) -> Result<SyncTable, Error> {
    let table = Table::read(sql, &sync.table).await?;
    let shape = match kept_shape(sql, slot, &sync.table.to_string()).await {
        Some(kept) => {
            let (schema, name) = sync.table.parts();
            columns_now(sql, schema, name).await.ok().flatten().map(|now| (now, kept))
        }
        None => None,
    };
    let probe_filter =
        table.as_ref().is_some_and(|t| t.is_table && t.can_select && t.has_column(&sync.id_column));
    let filter = match (&sync.filter, probe_filter) {
        (Some(filter), true) => Some(filter_probe(sql, &sync.table, filter).await),
        _ => None,
    };
    Ok(SyncTable { table, filter, shape, own_filter: false })
}

/// Tries `filter` on the table: a `WHERE` that reads no row, then the
/// row-filter probe that names the columns it reads.
async fn filter_probe(sql: &Client, table: &TableName, filter: &str) -> FilterProbe {
    let refused = |e: Error| {
        FilterProbe::Refused(
            e.as_db_error().map(|d| d.message().to_owned()).unwrap_or(error_chain(&e)),
        )
    };
    let probe = format!("SELECT 1 FROM {} WHERE ({filter}) LIMIT 0", table.quoted());
    if let Err(e) = sql.batch_execute(&probe).await {
        return refused(e);
    }
    let (schema, name) = table.parts();
    match row_filter::read(sql, schema, name, filter).await {
        Ok(read) => FilterProbe::Reads(read.columns),
        Err(e) => refused(e),
    }
}

/// The publication as setup sees it.
#[derive(Debug)]
pub enum Publication {
    /// Its catalogue rows could not be read.
    Unreadable(PgError),
    /// It exists but lacks these synced tables (`schema.table`).
    Incomplete(Vec<String>),
    /// It includes every synced table; whether it fits (setup's misfit),
    /// and the tables whose filter ciosync evaluates itself.
    Complete(Result<Option<Fix>, PgError>, Vec<Named>),
    /// It does not exist; the synced tables the role does not own (which
    /// keep it from creating the publication), and those whose filter
    /// ciosync would evaluate itself.
    Absent { not_owned: Vec<String>, own: Vec<Named> },
}

/// `tables`: the `[[sync]]` tables as [`sync_table`] read them, in order;
/// `own`: the filters ciosync evaluates itself (`source::own_filters`),
/// or why it cannot.
pub async fn publication(
    sql: &Client,
    config: &Config,
    tables: &[Option<Table>],
    own: Result<Vec<Named>, PgError>,
) -> Publication {
    let own = match own {
        Ok(own) => own,
        Err(e) => return Publication::Unreadable(e),
    };
    match setup::publication_missing_tables(sql, config).await {
        Err(e) => Publication::Unreadable(e),
        Ok(Some(missing)) if missing.is_empty() => {
            Publication::Complete(setup::publication_misfit(sql, config, &own).await, own)
        }
        Ok(Some(missing)) => Publication::Incomplete(missing),
        Ok(None) => Publication::Absent {
            not_owned: config
                .sync
                .iter()
                .zip(tables)
                .filter(|(_, table)| table.as_ref().is_some_and(|t| !t.owned))
                .map(|(sync, _)| sync.table.to_string())
                .collect(),
            own,
        },
    }
}

/// The configured slot.
#[derive(Debug)]
pub struct SlotFacts {
    pub state: Result<SlotState, PgError>,
    /// When it is missing: whether the daemon streamed from it before
    /// (then it was lost), and how many slots exist (of the server's
    /// `max_replication_slots`). False and 0 otherwise.
    pub recorded: bool,
    pub in_use: i32,
}

pub async fn slot(sql: &Client, config: &Config) -> Result<SlotFacts, Error> {
    let state = setup::slot_state(sql, config).await;
    let (mut recorded, mut in_use) = (false, 0);
    if matches!(state, Ok(SlotState::Missing)) {
        recorded = crate::state::slot_was_used(sql, &config.postgres.slot).await?;
        if !recorded {
            in_use = catalog::slots_in_use(sql).await?;
        }
    }
    Ok(SlotFacts { state, recorded, in_use })
}

/// What failover needs on the primary (PostgreSQL 17+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverFacts {
    /// The slot's `failover` flag; `None` when the slot does not exist.
    pub slot_failover: Option<bool>,
    pub physical: Vec<catalog::PhysicalSlot>,
    /// `synchronized_standby_slots`, empty when unset.
    pub synchronized: String,
}

pub async fn failover(
    sql: &Client,
    config: &Config,
    server: &catalog::Server,
) -> Result<FailoverFacts, Error> {
    let slot = Slot::read(sql, &config.postgres.slot).await?;
    Ok(FailoverFacts {
        slot_failover: slot.and_then(|s| s.failover),
        physical: catalog::physical_slots(sql).await?,
        synchronized: server.synchronized_standby_slots.clone(),
    })
}

/// `ciosync.dead_letters`, when the role can use the `ciosync` schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetters {
    /// The daemon has not created the table yet.
    NoTable,
    /// The role cannot insert into it.
    NotWritable,
    /// This many wait for the configured slot.
    Waiting(i64),
}

pub async fn dead_letters(sql: &Client, config: &Config) -> Result<DeadLetters, Error> {
    let exists: bool =
        sql.query_one("SELECT to_regclass('ciosync.dead_letters') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(DeadLetters::NoTable);
    }
    let writable: bool = sql
        .query_one(
            "SELECT has_table_privilege('ciosync.dead_letters', 'INSERT') \
                AND has_sequence_privilege('ciosync.dead_letters_id_seq', 'USAGE')",
            &[],
        )
        .await?
        .get(0);
    if !writable {
        return Ok(DeadLetters::NotWritable);
    }
    let waiting: i64 = sql
        .query_one(
            "SELECT count(*) FROM ciosync.dead_letters WHERE slot = $1",
            &[&config.postgres.slot],
        )
        .await?
        .get(0);
    Ok(DeadLetters::Waiting(waiting))
}

/// Whether the reporting-webhook receiver can create (when missing) and
/// write its table: tried for real in a transaction that is rolled back.
/// `Err` is why not, as one line.
pub async fn webhooks_table(
    sql: &Client,
    webhooks: &WebhooksConfig,
) -> Result<Result<(), String>, Error> {
    let (schema, table) = webhooks.schema_and_table();
    let probe = ReportingEvent::parse(
        br#"{"event_id":"ciosync-check","object_type":"email","metric":"sent","timestamp":0}"#,
    )
    .expect("the probe event parses");
    sql.batch_execute("BEGIN").await?;
    let tried = async {
        sql.batch_execute(&webhook_store::migration_sql(schema, table))
            .await
            .map_err(PgError::sql("create the table"))?;
        webhook_store::insert(sql, webhooks, &probe).await
    }
    .await;
    sql.batch_execute("ROLLBACK").await?;
    Ok(tried.map(|_| ()).map_err(|e| error_chain(&e)))
}

/// The replication-origin functions a write-back needs: without them it
/// would echo to Customer.io.
pub const ORIGIN_FUNCTIONS: [&str; 3] = [
    "pg_catalog.pg_replication_origin_create(text)",
    "pg_catalog.pg_replication_origin_oid(text)",
    "pg_catalog.pg_replication_origin_session_setup(text)",
];

/// What `[[webhooks.write_back]]` needs of the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBack {
    /// The [`ORIGIN_FUNCTIONS`] it may not execute.
    pub denied_functions: Vec<&'static str>,
    /// Each write-back whose table is synced, in order.
    pub columns: Vec<WrittenColumn>,
}

/// One write-back's column and whether the role may update it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenColumn {
    /// Its index in `[[webhooks.write_back]]`.
    pub index: usize,
    pub table: TableName,
    pub column: String,
    /// `None`: not a column of the table.
    pub may_update: Option<bool>,
}

pub async fn write_back(sql: &Client, config: &Config) -> Result<WriteBack, Error> {
    let mut denied_functions = Vec::new();
    for function in ORIGIN_FUNCTIONS {
        if !catalog::may_execute(sql, function).await? {
            denied_functions.push(function);
        }
    }
    let mut columns = Vec::new();
    let write_backs = config.webhooks.iter().flat_map(|w| w.write_back.iter());
    for (index, wb) in write_backs.enumerate() {
        let sync = match &wb.table {
            None => config.sync.first(),
            Some(table) => config.sync.iter().find(|s| s.table == *table),
        };
        let Some(sync) = sync else { continue };
        let may_update = catalog::may_update_column(sql, &sync.table, &wb.column).await.ok();
        columns.push(WrittenColumn {
            index,
            table: sync.table.clone(),
            column: wb.column.clone(),
            may_update,
        });
    }
    Ok(WriteBack { denied_functions, columns })
}

/// What the Track API said to the configured credentials.
#[derive(Debug)]
pub enum Customerio {
    /// The client could not be built (a bug): why.
    NoClient(String),
    Answered {
        /// Never with credentials: `track_url` may hold none.
        base_url: String,
        region: Result<String, SinkError>,
    },
}

pub async fn customerio(config: &Config) -> Customerio {
    let sink = match TrackClient::new(&config.customerio, Arc::new(Counters::default())) {
        Ok(s) => s,
        Err(e) => return Customerio::NoClient(error_chain(&e)),
    };
    let region = sink.region().await.map(|r| r.region);
    Customerio::Answered { base_url: sink.base_url().to_owned(), region }
}
