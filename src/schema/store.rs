//! `ciosync.table_shapes`: each synced table's [`Baseline`] and the
//! attributes left out under `on_schema_change = "skip"` since it broke.
//! Written only when a shape changes or breaks: rarely, never per change.

use std::collections::HashMap;

use tokio_postgres::Client;

use super::{Baseline, Shape};
use crate::pg::connection::ConnectionSettings;
use crate::pg::PgError;
use crate::source::relation::RelationCache;
use crate::state::State;

/// What is kept for one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    pub baseline: Baseline,
    /// Attributes left out since the table broke, to re-send once repaired.
    pub skipped: Vec<String>,
}

/// The slot's rows of `ciosync.table_shapes`, over a connection of its own.
pub struct ShapeStore {
    sql: Client,
    slot: String,
}

impl ShapeStore {
    /// Connects (creating the ciosync schema's tables if missing).
    pub async fn open(settings: &ConnectionSettings, slot: &str) -> Result<Self, PgError> {
        let sql = settings.connect_sql().await.map_err(PgError::sql("connect"))?;
        State::open(&sql, slot).await?;
        Ok(Self { sql, slot: slot.to_owned() })
    }

    /// Whether the connection ended (a new store is then opened).
    pub fn is_closed(&self) -> bool {
        self.sql.is_closed()
    }

    /// Every table's shape and skipped attributes. A shape that does not
    /// read (written by another version) counts as none: it is taken anew.
    pub async fn load(&self) -> Result<HashMap<String, Kept>, PgError> {
        let rows = self
            .sql
            .query(
                "SELECT table_name, shape, skipped FROM ciosync.table_shapes WHERE slot = $1",
                &[&self.slot],
            )
            .await
            .map_err(PgError::sql("read ciosync.table_shapes"))?;
        Ok(rows
            .iter()
            .map(|row| {
                let shape: serde_json::Value = row.get(1);
                let baseline = serde_json::from_value(shape).unwrap_or_default();
                (row.get(0), Kept { baseline, skipped: row.get(2) })
            })
            .collect())
    }

    /// Keeps `baseline` for `table`.
    pub async fn save(&self, table: &str, baseline: &Baseline) -> Result<(), PgError> {
        self.sql
            .execute(
                "INSERT INTO ciosync.table_shapes (slot, table_name, shape) VALUES ($1, $2, $3) \
                 ON CONFLICT (slot, table_name) DO UPDATE SET shape = excluded.shape, \
                 updated_at = now()",
                &[&self.slot, &table, &json(baseline)],
            )
            .await
            .map_err(PgError::sql("write ciosync.table_shapes"))?;
        Ok(())
    }

    /// Adds `attributes` to what `table` left out (before the first change
    /// without them can be acknowledged).
    pub async fn note_skipped(
        &self,
        table: &str,
        baseline: &Baseline,
        attributes: &[String],
    ) -> Result<(), PgError> {
        self.sql
            .execute(
                "INSERT INTO ciosync.table_shapes AS t (slot, table_name, shape, skipped) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (slot, table_name) DO UPDATE SET \
                 skipped = ARRAY(SELECT DISTINCT unnest(t.skipped || excluded.skipped) ORDER BY 1), \
                 updated_at = now()",
                &[&self.slot, &table, &json(baseline), &attributes],
            )
            .await
            .map_err(PgError::sql("write ciosync.table_shapes"))?;
        Ok(())
    }

    /// The table is whole again: keeps `baseline`, queues a backfill of the
    /// attributes it left out (those still mapped, `attributes`) and clears
    /// them, in one transaction. Returns the backfill's id, if one was queued.
    pub async fn repaired(
        &mut self,
        table: &str,
        baseline: &Baseline,
        attributes: &[String],
    ) -> Result<Option<i64>, PgError> {
        let write = PgError::sql("write ciosync.table_shapes");
        let tx = self.sql.transaction().await.map_err(write)?;
        let mut id = None;
        if !attributes.is_empty() {
            let row = tx
                .query_one(
                    "INSERT INTO ciosync.backfills (slot, table_name, attributes) \
                     VALUES ($1, $2, $3) RETURNING id",
                    &[&self.slot, &table, &attributes],
                )
                .await
                .map_err(PgError::sql("queue a backfill"))?;
            id = Some(row.get(0));
        }
        tx.execute(
            "UPDATE ciosync.table_shapes SET shape = $3, skipped = '{}', updated_at = now() \
             WHERE slot = $1 AND table_name = $2",
            &[&self.slot, &table, &json(baseline)],
        )
        .await
        .map_err(PgError::sql("write ciosync.table_shapes"))?;
        tx.commit().await.map_err(PgError::sql("write ciosync.table_shapes"))?;
        Ok(id)
    }
}

impl ShapeStore {
    /// The columns `table` (`schema.table`) has now, with their shapes;
    /// `None` when there is no such table.
    pub async fn columns_now(&self, table: &str) -> Result<Option<Vec<(String, Shape)>>, PgError> {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        columns_now(&self.sql, schema, name).await
    }
}

/// The columns `schema.name` has now, in order, with their shapes; `None`
/// when there is no such table.
pub async fn columns_now(
    sql: &Client,
    schema: &str,
    name: &str,
) -> Result<Option<Vec<(String, Shape)>>, PgError> {
    let rows = sql
        .query(
            "SELECT a.attname::text, a.atttypid FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 \
             AND NOT a.attisdropped ORDER BY a.attnum",
            &[&schema, &name],
        )
        .await
        .map_err(PgError::sql("read a table's columns"))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut kinds = RelationCache::default();
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let kind = kinds.kind(sql, row.get(1)).await?;
        columns.push((row.get(0), Shape::of(&kind)));
    }
    Ok(Some(columns))
}

/// The shape kept for `table` of `slot`, read only (for `check`): `None`
/// when there is none, or no `ciosync.table_shapes` to read.
pub async fn kept_shape(sql: &Client, slot: &str, table: &str) -> Option<Baseline> {
    let row = sql
        .query_opt(
            "SELECT shape FROM ciosync.table_shapes WHERE slot = $1 AND table_name = $2",
            &[&slot, &table],
        )
        .await
        .ok()??;
    serde_json::from_value(row.get(0)).ok()
}

/// The mapped attributes of `sync` whose columns now hold values of
/// another JSON type than the attribute has had (for a backfill, which
/// reads the table as it is now and must leave them out).
pub async fn retyped_attributes(
    sql: &Client,
    slot: &str,
    sync: &crate::config::SyncConfig,
) -> Result<Vec<String>, PgError> {
    let Some(kept) = kept_shape(sql, slot, &sync.table.to_string()).await else {
        return Ok(Vec::new());
    };
    let (schema, name) = sync.table.parts();
    let Some(now) = columns_now(sql, schema, name).await? else { return Ok(Vec::new()) };
    Ok(super::judge(&super::Needs::of_sync(sync), &now, &kept)
        .into_iter()
        .filter(|b| matches!(b.change, super::Change::Retyped { .. }))
        .filter_map(|b| b.attribute)
        .collect())
}

fn json(baseline: &Baseline) -> serde_json::Value {
    serde_json::to_value(baseline).unwrap_or_default()
}
