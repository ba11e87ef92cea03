//! Conditions that hold a replay or a re-send to the customers who still
//! sync: Customer.io creates the person an event or an `add_device` names,
//! so rows of customers deleted, filtered out or soft-deleted since (or
//! never synced) are left out, as the stream would never create them.

use tokio_postgres::Client;

use crate::config::{DevicesConfig, EventTableConfig, SyncConfig, Target};
use crate::pg::quote::{quote_ident, quote_literal, quoted_table};
use crate::pg::PgError;

/// A condition on an event table's rows: the customer it names lives in
/// one of the people tables (see [`living_customers`]; every customer
/// when the config syncs no people) or it names none (an anonymous event, or a row
/// the mapper skips), and the row has a time of its own. Customer.io
/// creates the person an event names, so a replay of old events must leave
/// out the customers deleted since.
pub(super) async fn living_events(
    sql: &Client,
    events: &EventTableConfig,
    syncs: &[SyncConfig],
) -> Result<String, PgError> {
    let table = events.schema_and_name();
    // Without a people table there is no one to hold the customers to (as
    // for devices): every row goes.
    let living = living_customers(sql, table, &events.customer_id_column, syncs)
        .await?
        .unwrap_or_else(|| "true".to_owned());
    // A row without a time of its own would be dated now, under another id
    // than the stream gave it.
    let time = events.timestamp_column.as_deref().map(quote_ident);
    let timed = time.map(|t| format!("{t} IS NOT NULL AND isfinite({t}) AND ")).unwrap_or_default();
    Ok(format!("{timed}{living}"))
}

/// A condition on a `[[devices]]` table's rows: the customer lives in one
/// of the people tables (`[[sync]]` entries of people; see
/// [`living_customers`]), or the row is soft-deleted (its `delete_device`
/// creates nobody: Customer.io ignores one for a person it lacks). An
/// `add_device` creates the person it names, so a backfill, or the initial
/// copy, must not send one for a person deleted, filtered out or never
/// synced. `None` when the config syncs no people: nothing to hold the
/// customers to.
pub(super) async fn living_devices(
    sql: &Client,
    devices: &DevicesConfig,
    syncs: &[SyncConfig],
) -> Result<Option<String>, PgError> {
    let table = devices.schema_and_name();
    let living = living_customers(sql, table, &devices.customer_id_column, syncs).await?;
    let Some(living) = living else { return Ok(None) };
    Ok(Some(match &devices.soft_delete_column {
        Some(column) => format!("({} IS NOT NULL OR {living})", quote_ident(column)),
        None => living,
    }))
}

/// The customer named by `column` of `table`'s row has a row in one of
/// the people tables of `syncs` that syncs (the table's `filter` holds,
/// the row is not soft-deleted), or the column is NULL; `None` when
/// `syncs` has no people table (an object's or a membership's id is no
/// person's). The ids match as the mapper sends
/// them, as text; the comparison is made in the synced id column's own
/// type, so its index serves: directly when both columns have one type,
/// else through a cast guarded by `pg_input_is_valid` (PostgreSQL 16+; on
/// 15 the ids are compared as text, which reads the synced table once per
/// row).
async fn living_customers(
    sql: &Client,
    (schema, name): (&str, &str),
    customer: &str,
    syncs: &[SyncConfig],
) -> Result<Option<String>, PgError> {
    let people: Vec<&SyncConfig> = syncs.iter().filter(|s| s.target == Target::Person).collect();
    if people.is_empty() {
        return Ok(None);
    }
    let their_type = column_type(sql, schema, name, customer).await?;
    let guarded_casts = super::slot::server_version_num(sql).await? >= 160_000;
    let theirs = format!("{}.{}", quoted_table(schema, name), quote_ident(customer));
    let mut alternatives = vec![format!("{theirs} IS NULL")];
    for sync in people {
        let (s_schema, s_name) = sync.schema_and_name();
        let (id_type, collation) = column_of(sql, s_schema, s_name, &sync.id_column).await?;
        // Compared in the id column's collation, if it has one: two columns
        // of different collations compared as they are fail ("could not
        // determine which collation to use"), and this one's index serves.
        let collate = collation.map(|c| format!(" COLLATE {c}")).unwrap_or_default();
        let ours = format!("ciosync_person.{}", quote_ident(&sync.id_column));
        let text_equal = format!("{ours}::text = {theirs}::text{collate}");
        let same = if id_type == their_type {
            format!("{ours} = {theirs}{collate} AND {text_equal}")
        } else if guarded_casts {
            let type_ = quote_literal(&id_type);
            format!(
                "{ours} = CASE WHEN pg_catalog.pg_input_is_valid({theirs}::text, {type_}) \
                 THEN CAST({theirs}::text AS {id_type}) END AND {text_equal}"
            )
        } else {
            text_equal
        };
        // The table's own filter applies to its rows alone (it may name the
        // table: `users.is_staff IS NOT TRUE`).
        let rows = match &sync.filter {
            Some(filter) => format!(
                "(SELECT * FROM {} WHERE ({filter})) AS ciosync_person",
                quoted_table(s_schema, s_name)
            ),
            None => format!("{} AS ciosync_person", quoted_table(s_schema, s_name)),
        };
        let kept = sync
            .soft_delete_column
            .as_ref()
            .map(|c| format!(" AND ciosync_person.{} IS NULL", quote_ident(c)))
            .unwrap_or_default();
        alternatives.push(format!("EXISTS (SELECT 1 FROM {rows} WHERE {same}{kept})"));
    }
    Ok(Some(format!("({})", alternatives.join(" OR "))))
}

/// `schema.name`'s `column` type as SQL.
pub(super) async fn column_type(
    sql: &Client,
    schema: &str,
    name: &str,
    column: &str,
) -> Result<String, PgError> {
    Ok(column_of(sql, schema, name, column).await?.0)
}

/// `schema.name`'s `column` type as SQL, and its collation if the type
/// has one.
async fn column_of(
    sql: &Client,
    schema: &str,
    name: &str,
    column: &str,
) -> Result<(String, Option<String>), PgError> {
    let row = sql
        .query_opt(
            "SELECT format_type(a.atttypid, a.atttypmod), \
                    NULLIF(a.attcollation, 0)::regcollation::text \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND NOT a.attisdropped",
            &[&schema, &name, &column],
        )
        .await
        .map_err(PgError::sql("read a column's type"))?
        .ok_or_else(|| {
            PgError::Definite(format!("table {schema}.{name} has no column {column}"))
        })?;
    Ok((row.get(0), row.get(1)))
}
