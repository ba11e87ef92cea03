//! The backfills asked for (`ciosync.backfills`): queued by `ciosync
//! backfill`, run and resumed by the daemon of the slot.

use super::State;
use crate::pg::PgError;

/// One requested backfill.
#[derive(Debug, Clone, PartialEq)]
pub struct Backfill {
    pub id: i64,
    pub table: String,
    pub where_clause: Option<String>,
    /// Customer.io attributes to send; `None` for every mapped one.
    pub attributes: Option<Vec<String>>,
    pub state: String,
    pub last_key: Option<String>,
    pub rows_done: i64,
    pub rows_total: Option<i64>,
    pub error: Option<String>,
    /// Seconds since the backfill started running, if it did.
    pub running_secs: Option<f64>,
    /// Send every row whole, whatever the record of what Customer.io
    /// accepted says (its customers are forgotten chunk by chunk).
    pub ignore_record: bool,
    /// An event replay: `table` is an `[[events]]` table, whose rows are
    /// sent again as events, from `since` (Unix seconds) when set.
    pub events: bool,
    pub since: Option<i64>,
}

const BACKFILL_COLUMNS: &str = "id, table_name, where_clause, attributes, state, last_key, \
    rows_done, rows_total, error, extract(epoch FROM (coalesce(finished_at, now()) - started_at))::float8, \
    ignore_record, events, extract(epoch FROM since)::bigint";

/// A backfill to queue (see [`Backfill`]).
#[derive(Debug, Default)]
pub struct Queued<'a> {
    pub table: &'a str,
    pub where_clause: Option<&'a str>,
    pub attributes: Option<&'a [String]>,
    pub rows_total: i64,
    pub ignore_record: bool,
    pub events: bool,
    pub since: Option<i64>,
}

fn backfill_of(row: &tokio_postgres::Row) -> Backfill {
    Backfill {
        id: row.get(0),
        table: row.get(1),
        where_clause: row.get(2),
        attributes: row.get(3),
        state: row.get(4),
        last_key: row.get(5),
        rows_done: row.get(6),
        rows_total: row.get(7),
        error: row.get(8),
        running_secs: row.get(9),
        ignore_record: row.get(10),
        events: row.get(11),
        since: row.get(12),
    }
}

impl State<'_> {
    /// Queues a backfill; returns its id.
    pub async fn enqueue_backfill(&self, queued: &Queued<'_>) -> Result<i64, PgError> {
        let Queued { table, where_clause, attributes, rows_total, ignore_record, events, since } =
            queued;
        let row = self
            .sql
            .query_one(
                "INSERT INTO ciosync.backfills (slot, table_name, where_clause, attributes, \
                 rows_total, ignore_record, events, since) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::bigint)) RETURNING id",
                &[
                    &self.slot,
                    table,
                    where_clause,
                    attributes,
                    rows_total,
                    ignore_record,
                    events,
                    since,
                ],
            )
            .await
            .map_err(PgError::sql("queue a backfill"))?;
        Ok(row.get(0))
    }

    /// Every backfill of this slot, newest first.
    pub async fn backfills(&self) -> Result<Vec<Backfill>, PgError> {
        let rows = self
            .sql
            .query(
                &format!(
                    "SELECT {BACKFILL_COLUMNS} FROM ciosync.backfills WHERE slot = $1 ORDER BY id DESC"
                ),
                &[&self.slot],
            )
            .await
            .map_err(PgError::sql("read ciosync.backfills"))?;
        Ok(rows.iter().map(backfill_of).collect())
    }

    /// One backfill of this slot.
    pub async fn backfill(&self, id: i64) -> Result<Option<Backfill>, PgError> {
        let row = self
            .sql
            .query_opt(
                &format!(
                    "SELECT {BACKFILL_COLUMNS} FROM ciosync.backfills WHERE slot = $1 AND id = $2"
                ),
                &[&self.slot, &id],
            )
            .await
            .map_err(PgError::sql("read ciosync.backfills"))?;
        Ok(row.as_ref().map(backfill_of))
    }

    /// The oldest backfill still to run (a running one first: it resumes).
    pub async fn next_backfill(&self) -> Result<Option<Backfill>, PgError> {
        let row = self
            .sql
            .query_opt(
                &format!(
                    "SELECT {BACKFILL_COLUMNS} FROM ciosync.backfills \
                     WHERE slot = $1 AND state IN ('queued', 'running') \
                     ORDER BY state = 'running' DESC, id LIMIT 1"
                ),
                &[&self.slot],
            )
            .await
            .map_err(PgError::sql("read ciosync.backfills"))?;
        Ok(row.as_ref().map(backfill_of))
    }

    /// Marks a backfill running (keeping its first start time).
    pub async fn start_backfill(&self, id: i64) -> Result<(), PgError> {
        self.sql
            .execute(
                "UPDATE ciosync.backfills SET state = 'running', \
                 started_at = coalesce(started_at, now()), updated_at = now() \
                 WHERE id = $1 AND state IN ('queued', 'running')",
                &[&id],
            )
            .await
            .map_err(PgError::sql("write ciosync.backfills"))?;
        Ok(())
    }

    /// Records delivered progress; `false` if the backfill was cancelled meanwhile.
    pub async fn backfill_progress(
        &self,
        id: i64,
        last_key: &str,
        rows_done: i64,
    ) -> Result<bool, PgError> {
        let updated = self
            .sql
            .execute(
                "UPDATE ciosync.backfills SET last_key = $2, rows_done = $3, updated_at = now() \
                 WHERE id = $1 AND state = 'running'",
                &[&id, &last_key, &rows_done],
            )
            .await
            .map_err(PgError::sql("write ciosync.backfills"))?;
        Ok(updated == 1)
    }

    /// Ends a backfill as `done`, `cancelled` or `failed`.
    pub async fn end_backfill(
        &self,
        id: i64,
        state: &str,
        error: Option<&str>,
    ) -> Result<bool, PgError> {
        let updated = self
            .sql
            .execute(
                "UPDATE ciosync.backfills SET state = $2, error = $3, finished_at = now(), \
                 updated_at = now() WHERE id = $1 AND state IN ('queued', 'running')",
                &[&id, &state, &error],
            )
            .await
            .map_err(PgError::sql("write ciosync.backfills"))?;
        Ok(updated == 1)
    }
}
