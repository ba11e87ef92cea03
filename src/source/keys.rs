//! The columns that identify a table's rows, read from the catalogue: an
//! event table's primary key (what its events' ids are derived from) and a
//! `[[devices]]` table's paging key (what a backfill pages it by and the
//! stream notes while a backfill's window is open).

use tokio_postgres::Client;

use crate::config::{DevicesConfig, EventTableConfig};
use crate::pg::PgError;

/// The primary key's columns of each event table, in the key's order
/// (none for a table without one, or one that does not exist yet): what
/// its events' ids are derived from (`mapping::events::row_event_id`).
pub async fn event_keys(
    sql: &Client,
    events: &[EventTableConfig],
) -> Result<Vec<((String, String), Vec<String>)>, PgError> {
    let mut keys = Vec::with_capacity(events.len());
    for table in events {
        let (schema, name) = table.schema_and_name();
        keys.push(((schema.to_owned(), name.to_owned()), primary_key(sql, schema, name).await?));
    }
    Ok(keys)
}

/// The columns of `schema.name`'s primary key, in its order; none when it
/// has none, or its key has a generated column.
pub async fn primary_key(sql: &Client, schema: &str, name: &str) -> Result<Vec<String>, PgError> {
    let rows = sql
        .query(
            "SELECT a.attname::text, a.attgenerated <> '' FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary \
             ORDER BY k.position",
            &[&schema, &name],
        )
        .await
        .map_err(PgError::sql("read a table's primary key"))?;
    // A generated column is not in the stream's rows (pgoutput leaves it
    // out), so a key with one cannot give the stream and a replay one id.
    if rows.iter().any(|row| row.get::<_, bool>(1)) {
        return Ok(Vec::new());
    }
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The columns a `[[devices]]` table is paged by: its primary key, or the
/// customer and token columns when it has none (or one with a generated
/// column, which the stream's rows leave out).
pub async fn device_key(sql: &Client, devices: &DevicesConfig) -> Result<Vec<String>, PgError> {
    let (schema, name) = devices.schema_and_name();
    let key = primary_key(sql, schema, name).await?;
    if !key.is_empty() {
        return Ok(key);
    }
    Ok(vec![devices.customer_id_column.clone(), devices.token_column.clone()])
}

/// [`device_key`] of each `[[devices]]` table, by (schema, name).
pub async fn device_keys(
    sql: &Client,
    devices: &[DevicesConfig],
) -> Result<Vec<((String, String), Vec<String>)>, PgError> {
    let mut keys = Vec::with_capacity(devices.len());
    for table in devices {
        let (schema, name) = table.schema_and_name();
        keys.push(((schema.to_owned(), name.to_owned()), device_key(sql, table).await?));
    }
    Ok(keys)
}
