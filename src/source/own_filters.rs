//! Which `[[sync]] filter`s ciosync evaluates itself rather than the
//! publication (see `mapping::own_filter`), decided from the publication
//! as it is, or as ciosync will create it:
//!
//! - a published table whose publication carries no row filter: ciosync
//!   evaluates the configured one (a publication created while the
//!   identity lacked the filter's columns, or `FOR ALL TABLES`). So a later
//!   `REPLICA IDENTITY FULL` changes nothing, and nothing needs refitting;
//! - a table the publication does not have yet: the publication carries
//!   the filter where the replica identity carries every column it reads,
//!   and ciosync evaluates it otherwise (Postgres would refuse the table's
//!   UPDATEs and DELETEs).
//!
//! Only with the record of what Customer.io accepted on (which tells
//! whether a row leaving the filter has a customer to remove), and only a
//! filter within the subset ciosync evaluates exactly: otherwise the
//! configured filter goes to the publication as before, with the checks
//! that go with it (`setup::filter_identity_problem`).

use tokio_postgres::Client;

use super::reader::describe_whole;
use super::row_filter;
use super::setup::{self, refused_filter};
use crate::config::sync::entry_field;
use crate::config::{Config, SyncConfig};
use crate::mapping::filter_expr::FilterExpr;
use crate::pg::catalog::{Publication, Table};
use crate::pg::PgError;

/// `(schema, name)` of a synced table.
pub type Named = (String, String);

/// The synced tables whose filter ciosync evaluates itself. An error names
/// the filter that ciosync would have to evaluate and cannot.
pub async fn own_filters(sql: &Client, config: &Config) -> Result<Vec<Named>, PgError> {
    let mut own = Vec::new();
    if !config.pipeline.record_accepted || config.sync.iter().all(|s| s.filter.is_none()) {
        return Ok(own);
    }
    let publication = Publication::read(sql, &config.postgres.publication)
        .await
        .map_err(PgError::sql("read pg_publication"))?;
    for (i, sync) in config.sync.iter().enumerate() {
        let Some(filter) = &sync.filter else { continue };
        let field = entry_field(&config.sync, i, "filter");
        let member = match &publication {
            Some(p) => {
                p.member(sql, &sync.table).await.map_err(PgError::sql("read pg_publication_rel"))?
            }
            None => None,
        };
        let published = member.is_some();
        let mine = match member {
            Some(member) => member.row_filter.is_none(),
            None => identity_lacks(sql, &field, sync, filter).await?,
        };
        if mine {
            let evaluated = evaluable(sql, &field, sync, filter).await;
            if let Err(PgError::Definite(why)) = evaluated {
                // The publication has the table without a filter: making the
                // identity FULL alone would not move the filter there.
                let refit = setup::refit_table_sql(&config.postgres.publication, sync, &[]);
                return Err(PgError::Definite(match published {
                    true => format!(
                        "{why}. Publication {} publishes every row of the table: to filter \
                         there instead, after REPLICA IDENTITY FULL, run: {refit}",
                        config.postgres.publication
                    ),
                    false => why,
                }));
            }
            evaluated?;
            let (schema, name) = sync.schema_and_name();
            own.push((schema.to_owned(), name.to_owned()));
        }
    }
    Ok(own)
}

/// Whether `sync`'s replica identity lacks a column its filter (`field`)
/// reads.
async fn identity_lacks(
    sql: &Client,
    field: &str,
    sync: &SyncConfig,
    filter: &str,
) -> Result<bool, PgError> {
    let (schema, name) = sync.schema_and_name();
    let read = row_filter::read(sql, schema, name, filter)
        .await
        .map_err(|e| refused_filter(field, schema, name, e))?;
    let table =
        Table::read(sql, &sync.table).await.map_err(PgError::sql("read the replica identity"))?;
    Ok(table.is_some_and(|t| !t.identity().missing(&read.columns).is_empty()))
}

/// Refuses, naming the field (`field`), a filter ciosync cannot evaluate exactly:
/// outside the subset, or comparing text under a nondeterministic collation
/// (a case-insensitive ICU one, say), which byte equality would get wrong.
async fn evaluable(
    sql: &Client,
    field: &str,
    sync: &SyncConfig,
    filter: &str,
) -> Result<(), PgError> {
    let (schema, name) = sync.schema_and_name();
    let refuse = |why: String| {
        PgError::Definite(format!(
            "{field} reads columns the replica identity of {schema}.{name} does not \
             carry, so ciosync evaluates it on each change itself, and it cannot: {why}. Write \
             the filter within what ciosync evaluates, or make the table REPLICA IDENTITY FULL \
             (then the publication filters, as Postgres allows)"
        ))
    };
    let whole = describe_whole(sql, schema, name).await?;
    let parsed = FilterExpr::parse(filter, &whole).map_err(|e| refuse(e.to_string()))?;
    let loose: Vec<String> = sql
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT c.collisdeterministic",
            &[&sync.table.quoted()],
        )
        .await
        .map_err(PgError::sql("read the filter columns' collations"))?
        .iter()
        .map(|row| row.get(0))
        .filter(|column: &String| parsed.columns().contains(column))
        .collect();
    if !loose.is_empty() {
        return Err(refuse(format!(
            "{} has a nondeterministic collation, whose equality is not byte equality",
            loose.join(", ")
        )));
    }
    Ok(())
}
