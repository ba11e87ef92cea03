//! Creating what replication needs: the publication (`FOR TABLE` the synced
//! tables) and the logical slot (`pgoutput`), each only if missing. An
//! existing publication or slot that does not fit is an error that says what
//! to run, never silently changed.

use tokio_postgres::Client;

use crate::config::Config;
use crate::source::SourceError;

/// A quoted SQL identifier: `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal (`standard_conforming_strings` is on, as it
/// has been by default since PostgreSQL 9.1, so only quotes are doubled).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `"schema"."table"` for a configured table.
pub fn quoted_table(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// The SQL that creates the configured publication.
pub fn create_publication_sql(config: &Config) -> String {
    let tables: Vec<String> = config
        .sync
        .iter()
        .map(|s| {
            let (schema, name) = s.schema_and_name();
            quoted_table(schema, name)
        })
        .chain(config.events.iter().map(|e| {
            let (schema, name) = e.schema_and_name();
            quoted_table(schema, name)
        }))
        .collect();
    // Via the partition root: pgoutput then names a partitioned table's
    // changes after the table the config names, not after its partitions.
    format!(
        "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
        quote_ident(&config.postgres.publication),
        tables.join(", ")
    )
}

/// Why an existing publication would lose changes of the synced tables
/// (it does not publish inserts, updates or deletes; it names a partitioned
/// table's changes after its partitions; it filters rows or columns), with
/// the SQL that fixes it. `None` when it fits or does not exist.
pub async fn publication_misfit(
    sql: &Client,
    config: &Config,
) -> Result<Option<String>, SourceError> {
    let publication = &config.postgres.publication;
    let row = sql
        .query_opt(
            "SELECT oid, pubinsert AND pubupdate AND pubdelete, pubviaroot \
             FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[publication],
        )
        .await
        .map_err(SourceError::sql("read pg_publication"))?;
    let Some(row) = row else { return Ok(None) };
    let (oid, publishes_all, via_root): (u32, bool, bool) = (row.get(0), row.get(1), row.get(2));
    let quoted = quote_ident(publication);
    if !publishes_all {
        return Ok(Some(format!(
            "publication {publication} does not publish every INSERT, UPDATE and DELETE: run \
             ALTER PUBLICATION {quoted} SET (publish = 'insert, update, delete, truncate')"
        )));
    }
    for sync in &config.sync {
        let (schema, name) = sync.schema_and_name();
        let table = sql
            .query_opt(
                "SELECT c.relkind = 'p', \
                        EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel r WHERE r.prpubid = $3 \
                                AND r.prrelid = c.oid AND (r.prqual IS NOT NULL OR r.prattrs IS NOT NULL)) \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &name, &oid],
            )
            .await
            .map_err(SourceError::sql("read pg_publication_rel"))?;
        let Some(table) = table else { continue };
        let (partitioned, filtered): (bool, bool) = (table.get(0), table.get(1));
        if partitioned && !via_root {
            return Ok(Some(format!(
                "{schema}.{name} is partitioned and publication {publication} names its changes \
                 after the partitions: run ALTER PUBLICATION {quoted} SET \
                 (publish_via_partition_root = true)"
            )));
        }
        if filtered {
            return Ok(Some(format!(
                "publication {publication} filters the rows or columns of {schema}.{name}: run \
                 ALTER PUBLICATION {quoted} SET TABLE {}",
                quoted_table(schema, name)
            )));
        }
    }
    Ok(None)
}

/// Synced tables missing from an existing publication, as `schema.table`.
/// `None` when the publication does not exist.
pub async fn publication_missing_tables(
    sql: &Client,
    config: &Config,
) -> Result<Option<Vec<String>>, SourceError> {
    let exists = sql
        .query_opt(
            "SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&config.postgres.publication],
        )
        .await
        .map_err(SourceError::sql("read pg_publication"))?;
    let Some(row) = exists else { return Ok(None) };
    if row.get::<_, bool>(0) {
        return Ok(Some(Vec::new()));
    }
    let mut missing = Vec::new();
    let published = config
        .sync
        .iter()
        .map(|s| s.schema_and_name())
        .chain(config.events.iter().map(|e| e.schema_and_name()));
    for (schema, name) in published {
        let found = sql
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_publication_tables \
                 WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&config.postgres.publication, &schema, &name],
            )
            .await
            .map_err(SourceError::sql("read pg_publication_tables"))?;
        if found.is_none() {
            missing.push(format!("{schema}.{name}"));
        }
    }
    Ok(Some(missing))
}

/// The state of the configured slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// No slot of that name.
    Missing,
    /// A logical pgoutput slot in this database.
    Usable { active: bool, confirmed_flush_lsn: Option<String> },
    /// Our kind of slot, invalidated: Postgres removed WAL it still needed
    /// (`max_slot_wal_keep_size`), so it can no longer be streamed from.
    Invalidated,
    /// A slot that cannot be used: the reason says why.
    Unusable(String),
}

/// Reads the configured slot from `pg_replication_slots`.
pub async fn slot_state(sql: &Client, config: &Config) -> Result<SlotState, SourceError> {
    let row = sql
        .query_opt(
            "SELECT slot_type, plugin, database, active, confirmed_flush_lsn::text, \
                    current_database(), wal_status \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&config.postgres.slot],
        )
        .await
        .map_err(SourceError::sql("read pg_replication_slots"))?;
    let Some(row) = row else {
        return Ok(SlotState::Missing);
    };
    let slot_type: String = row.get(0);
    let plugin: Option<String> = row.get(1);
    let database: Option<String> = row.get(2);
    let current: String = row.get(5);
    let slot = &config.postgres.slot;
    if slot_type != "logical" || plugin.as_deref() != Some("pgoutput") {
        return Ok(SlotState::Unusable(format!(
            "slot {slot} is a {slot_type} slot with plugin {}; ciosync needs a logical pgoutput \
             slot: choose another postgres.slot or drop it with \
             SELECT pg_drop_replication_slot('{slot}')",
            plugin.unwrap_or_else(|| "none".into())
        )));
    }
    if database.as_deref() != Some(current.as_str()) {
        return Ok(SlotState::Unusable(format!(
            "slot {slot} belongs to database {}, not {current}: choose another postgres.slot",
            database.unwrap_or_default()
        )));
    }
    // PostgreSQL 13 to 15 show an invalidated slot's wal_status as `lost`,
    // or as NULL once its restart_lsn is cleared.
    let wal_status: Option<String> = row.get(6);
    if wal_status.as_deref().is_none_or(|s| s == "lost") {
        return Ok(SlotState::Invalidated);
    }
    Ok(SlotState::Usable { active: row.get(3), confirmed_flush_lsn: row.get(4) })
}

/// Creates the publication where missing, then makes sure the slot can be
/// streamed from: created on the first start, recorded, and never created
/// again silently once lost (see [`super::slot`]).
pub async fn ensure(
    sql: &Client,
    config: &Config,
    counters: &crate::telemetry::Counters,
) -> Result<(), SourceError> {
    ensure_publication(sql, config).await?;
    super::slot::ensure(sql, config, counters, true).await?;
    Ok(())
}

/// Creates the publication if missing; an existing one that lacks a synced
/// table is an error with the `ALTER PUBLICATION` to run.
pub async fn ensure_publication(sql: &Client, config: &Config) -> Result<(), SourceError> {
    match publication_missing_tables(sql, config).await? {
        None => {
            let statement = create_publication_sql(config);
            sql.batch_execute(&statement)
                .await
                .map_err(SourceError::sql("create the publication"))?;
            tracing::info!(publication = %config.postgres.publication, "publication created");
        }
        Some(missing) if !missing.is_empty() => {
            let tables = missing
                .iter()
                .map(|t| {
                    let (schema, name) = t.split_once('.').unwrap_or(("public", t));
                    quoted_table(schema, name)
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SourceError::Definite(format!(
                "publication {} exists but does not include {}: run ALTER PUBLICATION {} ADD \
                 TABLE {tables}",
                config.postgres.publication,
                missing.join(", "),
                quote_ident(&config.postgres.publication),
            )));
        }
        Some(_) => {
            if let Some(problem) = publication_misfit(sql, config).await? {
                return Err(SourceError::Definite(problem));
            }
        }
    }
    Ok(())
}
