//! The daemon's own state in Postgres, in the schema `ciosync`: what the
//! initial copy has done, so a restart resumes it instead of assuming it
//! finished. This module owns that schema's SQL.
//!
//! Creating the schema needs `CREATE` on the database the first time
//! (`GRANT CREATE ON DATABASE app TO ciosync`), or create it for the role:
//! `CREATE SCHEMA ciosync AUTHORIZATION ciosync`.

use tokio_postgres::Client;

use crate::source::SourceError;

/// The schema ciosync keeps its state in.
pub const SCHEMA: &str = "ciosync";

/// Creates the schema and tables if missing. Idempotent.
const MIGRATION: &str = "
CREATE SCHEMA IF NOT EXISTS ciosync;
CREATE TABLE IF NOT EXISTS ciosync.initial_copy (
    slot         text        NOT NULL,
    table_name   text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('pending', 'copying', 'done')),
    last_key     text,
    rows_copied  bigint      NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot, table_name)
);
COMMENT ON TABLE ciosync.initial_copy IS
    'ciosync: progress of the first copy of each synced table into Customer.io';
";

/// How far the copy of one table got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyState {
    /// Recorded before the slot was created; nothing copied yet.
    Pending,
    /// Copying; every row with a key up to `last_key` was delivered.
    Copying { last_key: Option<String>, rows_copied: i64 },
    /// Every row was delivered.
    Done,
}

/// Access to the `ciosync` schema over one SQL connection.
pub struct State<'a> {
    sql: &'a Client,
    slot: &'a str,
}

impl<'a> State<'a> {
    /// Creates the schema if missing and returns a handle for `slot`.
    pub async fn open(sql: &'a Client, slot: &'a str) -> Result<State<'a>, SourceError> {
        sql.batch_execute(MIGRATION)
            .await
            .map_err(SourceError::sql("create the ciosync schema"))?;
        Ok(Self { sql, slot })
    }

    /// The copy state of every table recorded for this slot.
    pub async fn copies(&self) -> Result<Vec<(String, CopyState)>, SourceError> {
        let rows = self
            .sql
            .query(
                "SELECT table_name, state, last_key, rows_copied FROM ciosync.initial_copy \
                 WHERE slot = $1 ORDER BY table_name",
                &[&self.slot],
            )
            .await
            .map_err(SourceError::sql("read ciosync.initial_copy"))?;
        Ok(rows
            .iter()
            .map(|row| {
                let state: String = row.get(1);
                let copy = match state.as_str() {
                    "pending" => CopyState::Pending,
                    "done" => CopyState::Done,
                    _ => CopyState::Copying { last_key: row.get(2), rows_copied: row.get(3) },
                };
                (row.get(0), copy)
            })
            .collect())
    }

    /// Records that a fresh copy of `tables` is about to start: before the
    /// slot exists, so a crash at any point afterwards is seen on restart.
    pub async fn plan(&self, tables: &[String]) -> Result<(), SourceError> {
        self.sql
            .execute("DELETE FROM ciosync.initial_copy WHERE slot = $1", &[&self.slot])
            .await
            .map_err(SourceError::sql("reset ciosync.initial_copy"))?;
        for table in tables {
            self.sql
                .execute(
                    "INSERT INTO ciosync.initial_copy (slot, table_name, state) \
                     VALUES ($1, $2, 'pending')",
                    &[&self.slot, table],
                )
                .await
                .map_err(SourceError::sql("write ciosync.initial_copy"))?;
        }
        Ok(())
    }

    /// Records that every row of `table` up to `last_key` was delivered.
    pub async fn checkpoint(
        &self,
        table: &str,
        last_key: &str,
        rows_copied: i64,
    ) -> Result<(), SourceError> {
        self.sql
            .execute(
                "UPDATE ciosync.initial_copy SET state = 'copying', last_key = $3, \
                 rows_copied = $4, updated_at = now() WHERE slot = $1 AND table_name = $2",
                &[&self.slot, &table, &last_key, &rows_copied],
            )
            .await
            .map_err(SourceError::sql("write ciosync.initial_copy"))?;
        Ok(())
    }

    /// Records that `table` was copied completely.
    pub async fn finish(&self, table: &str, rows_copied: i64) -> Result<(), SourceError> {
        self.sql
            .execute(
                "UPDATE ciosync.initial_copy SET state = 'done', rows_copied = $3, \
                 updated_at = now() WHERE slot = $1 AND table_name = $2",
                &[&self.slot, &table, &rows_copied],
            )
            .await
            .map_err(SourceError::sql("write ciosync.initial_copy"))?;
        Ok(())
    }
}
