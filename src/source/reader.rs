//! Reading a synced table (or an event table) in key order, one page at a
//! time, as the rows the mapper understands. Used by the initial copy, by
//! backfills and by event replays (`backfill --events`).

use std::sync::Arc;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::change::{Datum, ReplicaIdentity, Row, Table, TableColumn};
use crate::config::{CopiedTable, DevicesConfig, EventTableConfig, SyncConfig};
use crate::mapping::filter_expr::FilterExpr;
use crate::pg::quote::{quote_ident, quote_literal, quoted_table};
use crate::pg::PgError;
use crate::source::keys::device_key;
pub use crate::source::keys::{event_keys, primary_key};
use crate::source::living::{column_type, living_devices, living_events};
use crate::source::relation::RelationCache;

/// Pages through one table: the key columns first (a synced table's id
/// column; an event table's primary key), then the columns the mapper reads.
pub struct TableReader {
    table: Arc<Table>,
    select: String,
    key: Key,
    /// A condition came from outside the config (`backfill --where`, read
    /// from `ciosync.backfills`): each page runs in a read-only transaction.
    guarded: bool,
}

impl TableReader {
    /// Describes the table; `filter` is an SQL condition rows must meet
    /// besides the table's own `[[sync]] filter`, which always applies: a
    /// row the publication filters out is never read either.
    ///
    /// `filter` (a backfill's `--where`) is whatever was written into
    /// `ciosync.backfills`, so it is held to one read-only statement: the
    /// page query is first parsed alone with the extended protocol, which
    /// refuses a second statement (`true) AS rows; DROP TABLE …`), and every
    /// page runs inside `BEGIN READ ONLY`, which refuses writes and DDL
    /// from the functions the condition may call.
    pub async fn new(
        sql: &Client,
        sync: &SyncConfig,
        filter: Option<&str>,
    ) -> Result<Self, PgError> {
        let table = describe(sql, sync).await?;
        let (schema, name) = sync.schema_and_name();
        let key = Key::of(sql, schema, name, &sync.key_columns()).await?;
        Self::with(sql, table, key, sync.filter.as_deref(), filter).await
    }

    /// Pages through an event table by its primary key `key` (every column,
    /// the key's first), from `since` (Unix seconds, on its
    /// `timestamp_column`) when given, and only rows meeting `filter` (a
    /// replay's `--where`, held as a backfill's). With `living` (the synced
    /// tables), only rows whose customer has a row there that syncs (see
    /// `source::living::living_events`) or that name no customer.
    pub async fn of_events(
        sql: &Client,
        events: &EventTableConfig,
        key: &[String],
        since: Option<i64>,
        filter: Option<&str>,
        living: Option<&[SyncConfig]>,
    ) -> Result<Self, PgError> {
        let (schema, name) = events.schema_and_name();
        let whole = describe_whole(sql, schema, name).await?;
        let (mut columns, rest): (Vec<_>, Vec<_>) =
            whole.columns.iter().cloned().partition(|c| key.contains(&c.name));
        columns.sort_by_key(|c| key.iter().position(|k| *k == c.name));
        columns.extend(rest);
        let table = Table { columns, ..whole };
        let key = Key::of(sql, schema, name, key).await?;
        let mut own: Vec<String> = since_condition(events, since).into_iter().collect();
        if let Some(syncs) = living.filter(|syncs| !syncs.is_empty()) {
            own.push(living_events(sql, events, syncs).await?);
        }
        let own = (!own.is_empty()).then(|| own.join(" AND "));
        Self::with(sql, table, key, own.as_deref(), filter).await
    }

    /// How many rows the reader reads in all (rows with a NULL key column
    /// are not read: see [`Self::query_raw`]).
    pub async fn count(&self, sql: &Client) -> Result<i64, PgError> {
        let query = format!(
            "SELECT count(*) FROM ({} WHERE {}) AS counted",
            self.select,
            self.key.not_null()
        );
        // Guarded as the pages are; unguarded, it may run inside the
        // caller's transaction (`plan`'s snapshot).
        let read = async {
            if !self.guarded {
                return sql.query_one(&query, &[]).await;
            }
            sql.batch_execute("BEGIN READ ONLY").await?;
            let counted = sql.query_one(&query, &[]).await;
            sql.batch_execute("ROLLBACK").await?;
            counted
        };
        Ok(read.await.map_err(PgError::sql("count a table's rows"))?.get(0))
    }

    /// Pages through a `[[devices]]` table by its primary key (by the
    /// customer and token columns when it has none), every column read.
    pub async fn of_devices(sql: &Client, devices: &DevicesConfig) -> Result<Self, PgError> {
        Self::of_devices_where(sql, devices, None, None).await
    }

    /// [`Self::of_devices`], only rows meeting `filter` (a backfill's
    /// `--where`, held as for a synced table). With `living` (the config's
    /// `[[sync]]` tables), only rows whose customer has a row that syncs in
    /// a people table, or that are soft-deleted (see
    /// `source::living::living_devices`).
    pub async fn of_devices_where(
        sql: &Client,
        devices: &DevicesConfig,
        filter: Option<&str>,
        living: Option<&[SyncConfig]>,
    ) -> Result<Self, PgError> {
        let (schema, name) = devices.schema_and_name();
        let key = device_key(sql, devices).await?;
        let whole = describe_whole(sql, schema, name).await?;
        let (mut columns, rest): (Vec<_>, Vec<_>) =
            whole.columns.iter().cloned().partition(|c| key.contains(&c.name));
        columns.sort_by_key(|c| key.iter().position(|k| *k == c.name));
        columns.extend(rest);
        let table = Table { columns, ..whole };
        let key = Key::of(sql, schema, name, &key).await?;
        let own = match living {
            Some(syncs) => living_devices(sql, devices, syncs).await?,
            None => None,
        };
        Self::with(sql, table, key, own.as_deref(), filter).await
    }

    /// The reader of a table the initial copy or a backfill reads, with
    /// `filter` as [`Self::new`] takes it; a devices table's held to
    /// `living` as [`Self::of_devices_where`] holds it.
    pub async fn of_copied(
        sql: &Client,
        table: CopiedTable<'_>,
        filter: Option<&str>,
        living: Option<&[SyncConfig]>,
    ) -> Result<Self, PgError> {
        match table {
            CopiedTable::Sync(sync) => Self::new(sql, sync, filter).await,
            CopiedTable::Devices(devices) => {
                Self::of_devices_where(sql, devices, filter, living).await
            }
        }
    }

    async fn with(
        sql: &Client,
        table: Table,
        key: Key,
        own: Option<&str>,
        filter: Option<&str>,
    ) -> Result<Self, PgError> {
        let columns =
            table.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        // Each condition lives in a subquery of its own, so neither can
        // change how the other or the key condition outside combines with
        // it: `filter` (outside the config's hands) is applied last, around
        // the rows the config's own conditions left, so a `true) OR (true`
        // cannot undo them.
        let mut source = quoted_table(&table.schema, &table.name);
        for (i, condition) in own.into_iter().chain(filter).enumerate() {
            source = format!("(SELECT * FROM {source} WHERE ({condition})) AS ciosync_rows_{i}");
        }
        let reader = Self {
            table: Arc::new(table),
            select: format!("SELECT {columns} FROM {source}"),
            key,
            guarded: filter.is_some(),
        };
        if reader.guarded {
            // The conditions outside `filter` are ciosync's own, so a page
            // query is one statement whenever this one is.
            let probe =
                format!("{} WHERE false ORDER BY {} LIMIT 0", reader.select, reader.key.order());
            sql.prepare(&probe).await.map_err(|e| match e.code() {
                Some(_) => refused_condition(&e),
                None => PgError::sql("check the backfill's condition")(e),
            })?;
        }
        Ok(reader)
    }

    /// The columns it pages by, in the key's order.
    pub fn key_columns(&self) -> &[String] {
        &self.key.1
    }

    /// The table as the rows describe it (id column first).
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// The rows with these keys (that still exist and match the filter).
    pub async fn rows_with_keys(
        &self,
        sql: &Client,
        keys: &[String],
    ) -> Result<Vec<(String, Row)>, PgError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let list: Option<Vec<String>> = keys.iter().map(|k| self.key.value(k)).collect();
        let Some(list) = list else { return Ok(Vec::new()) };
        let condition = format!("{} IN ({})", self.key.columns(), list.join(", "));
        self.query(sql, &condition, keys.len()).await
    }

    /// The row with this key, if it exists and matches the filters. `None`
    /// too when `key` is not a value of the id column's type (Postgres
    /// refuses the cast, SQLSTATE class 22): no row can have it. Used by
    /// `ciosync dlq retry`, which asks every person table about a customer
    /// id that may come from another one.
    pub async fn row_with_key(&self, sql: &Client, key: &str) -> Result<Option<Row>, PgError> {
        let Some(value) = self.key.value(key) else { return Ok(None) };
        let condition = format!("{} = {value}", self.key.columns());
        match self.query_raw(sql, &condition, 1).await {
            Ok(mut rows) => Ok(rows.pop().map(|(_, row)| row)),
            Err(error) if error.code().is_some_and(|c| c.code().starts_with("22")) => Ok(None),
            Err(error) => Err(PgError::sql("read a row of a table")(error)),
        }
    }

    /// Up to `limit` rows meeting `condition` (SQL the caller built from
    /// quoted names and literals), in key order.
    pub async fn rows_where(
        &self,
        sql: &Client,
        condition: &str,
        limit: usize,
    ) -> Result<Vec<(String, Row)>, PgError> {
        self.query(sql, condition, limit).await
    }

    /// Up to `limit` rows after key `after`, in key order, each with its key
    /// (see [`Key`]). Text values come straight from Postgres's output
    /// functions (simple query protocol), as in the replication stream.
    pub async fn page(
        &self,
        sql: &Client,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Row)>, PgError> {
        let condition = match after.map(|key| self.key.value(key)) {
            Some(Some(value)) => format!("{} > {value}", self.key.columns()),
            Some(None) => {
                return Err(PgError::Definite("a backfill's saved key is not the table's".into()))
            }
            None => "true".to_owned(),
        };
        self.query(sql, &condition, limit).await
    }

    /// Up to `limit` rows meeting `condition`, in key order.
    async fn query(
        &self,
        sql: &Client,
        condition: &str,
        limit: usize,
    ) -> Result<Vec<(String, Row)>, PgError> {
        self.query_raw(sql, condition, limit).await.map_err(|error| {
            let read_only = tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION;
            if self.guarded && error.code() == Some(&read_only) {
                refused_condition(&error)
            } else {
                PgError::sql("read a page of a table")(error)
            }
        })
    }

    /// [`Self::query`] with Postgres's error as it is.
    async fn query_raw(
        &self,
        sql: &Client,
        condition: &str,
        limit: usize,
    ) -> Result<Vec<(String, Row)>, tokio_postgres::Error> {
        // A row with a NULL key column has no key to page by (nor a
        // customer or object to send): it is not read. Left to the page, it
        // would fill a place of the LIMIT and, dropped after, make a full
        // page look like the last one (NULLs of a two-column key sort
        // among the rows, not after them).
        let query = format!(
            "{} WHERE ({condition}) AND {} ORDER BY {} LIMIT {limit}",
            self.select,
            self.key.not_null(),
            self.key.order()
        );
        let messages = if self.guarded {
            sql.batch_execute("BEGIN READ ONLY").await?;
            let read = sql.simple_query(&query).await;
            sql.batch_execute(if read.is_ok() { "COMMIT" } else { "ROLLBACK" }).await?;
            read?
        } else {
            sql.simple_query(&query).await?
        };
        let width = self.table.columns.len();
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            // Every row has the select's width: the query is one statement.
            .filter(|row| row.len() == width)
            .filter_map(|row| {
                let key = self.key.text(&row)?;
                let values = (0..width)
                    .map(|i| match row.get(i) {
                        Some(text) => Datum::Text(bytes::Bytes::copy_from_slice(text.as_bytes())),
                        None => Datum::Null,
                    })
                    .collect();
                Some((key, values))
            })
            .collect())
    }
}

/// Why a backfill's condition cannot be read from: not one SQL condition
/// (a second statement, a syntax error, a name the table lacks), or it
/// tried to write. Definite: the backfill fails with this message instead
/// of being retried.
fn refused_condition(error: &tokio_postgres::Error) -> PgError {
    PgError::Definite(format!(
        "the backfill's condition (--where) must be one read-only SQL condition on the table: {}",
        crate::error::error_chain(error)
    ))
}

/// The id column, the mapped columns, the soft-delete column, the columns
/// `[[sync.events]]` watch and the filter reads (when ciosync can evaluate
/// it: see `mapping::own_filter`) of a table, with their value kinds, and
/// its replica identity. Without the soft-delete column the mapper could
/// not tell a soft-deleted row, and would copy it; with the watched
/// columns and the identity, it records their values where the WAL will
/// not carry old rows (see `crate::record`).
async fn describe(sql: &Client, sync: &SyncConfig) -> Result<Table, PgError> {
    let (schema, name) = sync.schema_and_name();
    let whole = describe_whole(sql, schema, name).await?;
    let filtered = sync.filter.as_deref().and_then(|f| FilterExpr::parse(f, &whole).ok());
    let key = sync.key_columns();
    let mut wanted: Vec<&str> = key.iter().map(String::as_str).collect();
    let watched = sync.events.iter().map(|e| e.column());
    let read = filtered.iter().flat_map(|f| f.columns().iter().map(String::as_str));
    let rest = sync.attributes.values().map(String::as_str).chain(watched);
    for column in rest.chain(sync.soft_delete_column.as_deref()).chain(read) {
        if !wanted.contains(&column) {
            wanted.push(column);
        }
    }
    let mut columns = Vec::new();
    for column in wanted {
        let Some(found) = whole.columns.iter().find(|c| c.name == column) else {
            if key.iter().any(|k| k == column) {
                return Err(PgError::Definite(format!(
                    "table {schema}.{name} has no column {column} (its id column)"
                )));
            }
            // A missing mapped column is reported per row by the mapper.
            continue;
        };
        columns.push(found.clone());
    }
    Ok(Table { columns, ..whole })
}

/// Every column of `schema.name` with its value kind, and its replica
/// identity; the table as the stream's relation shows it (`oid` 0).
pub async fn describe_whole(sql: &Client, schema: &str, name: &str) -> Result<Table, PgError> {
    let rows = sql
        .query(
            "SELECT a.attname::text, a.atttypid FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &name],
        )
        .await
        .map_err(PgError::sql("describe a synced table"))?;
    let mut kinds = RelationCache::default();
    let mut columns = Vec::with_capacity(rows.len());
    for row in &rows {
        let type_oid: u32 = row.get(1);
        let kind = kinds.kind(sql, type_oid).await?;
        columns.push(TableColumn { name: row.get(0), type_oid, kind });
    }
    let identity = sql
        .query_opt(
            "SELECT c.relreplident::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &name],
        )
        .await
        .map_err(PgError::sql("describe a synced table"))?
        .and_then(|row| row.get::<_, Option<String>>(0))
        .and_then(|code| ReplicaIdentity::from_code(*code.as_bytes().first()?));
    Ok(Table {
        oid: 0,
        schema: schema.to_owned(),
        name: name.to_owned(),
        columns,
        replica_identity: identity.unwrap_or(ReplicaIdentity::Default),
    })
}

/// The columns a table is paged by, with their types as SQL, to compare a
/// saved key in the columns' own order. A key's text (a backfill's
/// progress) is the column's text for one column, a JSON array of the
/// columns' texts for several.
struct Key(Vec<(String, String)>, Vec<String>);

impl Key {
    async fn of(
        sql: &Client,
        schema: &str,
        name: &str,
        columns: &[String],
    ) -> Result<Self, PgError> {
        let mut key = Vec::with_capacity(columns.len());
        for column in columns {
            key.push((quote_ident(column), column_type(sql, schema, name, column).await?));
        }
        Ok(Self(key, columns.to_vec()))
    }

    /// `a` or `(a, b)`.
    fn columns(&self) -> String {
        match &self.0[..] {
            [(column, _)] => column.clone(),
            columns => format!("({})", self.order_of(columns)),
        }
    }

    /// `a IS NOT NULL AND b IS NOT NULL`.
    fn not_null(&self) -> String {
        let each: Vec<String> = self.0.iter().map(|(c, _)| format!("{c} IS NOT NULL")).collect();
        each.join(" AND ")
    }

    /// `a, b`.
    fn order(&self) -> String {
        self.order_of(&self.0)
    }

    fn order_of(&self, columns: &[(String, String)]) -> String {
        columns.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// A key's text as an SQL value to compare [`Self::columns`] with;
    /// `None` if it is not a key of this many columns, or holds a NUL: no
    /// Postgres text can (no row has it), and a query holding one is
    /// refused by the client before it is sent.
    fn value(&self, key: &str) -> Option<String> {
        let cast = |(text, (_, type_)): (&str, &(String, String))| {
            format!("CAST({} AS {type_})", quote_literal(text))
        };
        match &self.0[..] {
            [_] if key.contains('\0') => None,
            [only] => Some(cast((key, only))),
            columns => {
                let texts: Vec<String> = serde_json::from_str(key).ok()?;
                if texts.len() != columns.len() || texts.iter().any(|t| t.contains('\0')) {
                    return None;
                }
                let values: Vec<String> =
                    texts.iter().map(String::as_str).zip(columns).map(cast).collect();
                Some(format!("({})", values.join(", ")))
            }
        }
    }

    /// The key of a row read with the key's columns first.
    fn text(&self, row: &tokio_postgres::SimpleQueryRow) -> Option<String> {
        match self.0.len() {
            1 => row.get(0).map(str::to_owned),
            n => {
                let texts: Option<Vec<&str>> = (0..n).map(|i| row.get(i)).collect();
                serde_json::to_string(&texts?).ok()
            }
        }
    }
}

/// An event replay's `--since` as a condition on the event table's
/// `timestamp_column` (a timestamp or date column, as `check` requires).
fn since_condition(events: &EventTableConfig, since: Option<i64>) -> Option<String> {
    let column = events.timestamp_column.as_deref()?;
    Some(format!("{} >= to_timestamp({})", quote_ident(column), since?))
}

/// Postgres's clock in Unix seconds: the `timestamp` of copied rows, on the
/// same clock as the commit times of the changes around them.
pub async fn postgres_now(sql: &tokio_postgres::Client) -> Result<i64, PgError> {
    Ok(sql
        .query_one("SELECT floor(extract(epoch FROM clock_timestamp()))::bigint", &[])
        .await
        .map_err(PgError::sql("read the clock"))?
        .get(0))
}
