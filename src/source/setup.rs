//! Creating what replication needs: the publication (`FOR TABLE` the synced
//! tables) and the logical slot (`pgoutput`), each only if missing. An
//! existing publication or slot that does not fit is an error that says what
//! to run, never silently changed. The catalogue is read through
//! [`crate::pg::catalog`], the facts `ciosync check` judges too; what they
//! mean for the config (a [`Fix`], a [`SlotState`]) is decided here.

use tokio_postgres::Client;

use super::own_filters::{own_filters, Named};
use super::row_filter;
use crate::config::sync::{entry, entry_field};
use crate::config::{Config, SyncConfig};
use crate::pg::catalog::{Member, Publication, Slot, Table};
use crate::pg::is_definite_sqlstate;
use crate::pg::quote::{quote_ident, quoted_table};
use crate::pg::PgError;

/// Something in the database that does not fit the config, with the SQL that
/// fixes it when one statement can (`run`). Structured so `ciosync check`
/// prints the problem and the fix apart without parsing text; `Display`
/// gives the one-line form `run` errors carry: `problem: run SQL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// What does not fit, naming the object.
    pub problem: String,
    /// The statement that makes it fit; `None` when the fix is a choice left
    /// to the operator (the problem text then says what the choices are).
    pub run: Option<String>,
}

impl Fix {
    fn run(problem: impl Into<String>, sql: impl Into<String>) -> Self {
        Self { problem: problem.into(), run: Some(sql.into()) }
    }
}

impl std::fmt::Display for Fix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.run {
            Some(sql) => write!(f, "{}: run {sql}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

/// The SQL that creates the configured publication: every synced table,
/// with its row filter when the config gives one and ciosync does not
/// evaluate it itself (`own`, see [`super::own_filters`]).
pub fn create_publication_sql(config: &Config, own: &[Named]) -> String {
    let tables: Vec<String> = config
        .sync
        .iter()
        .map(|sync| published_table(sync, own))
        .chain(config.events.iter().map(|e| {
            let (schema, name) = e.schema_and_name();
            quoted_table(schema, name)
        }))
        .chain(config.devices.iter().map(|d| {
            let (schema, name) = d.schema_and_name();
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

/// A table as a publication's table list names it: `"s"."t"`, then
/// ` WHERE (filter)` when the config filters its rows and ciosync does not
/// evaluate the filter itself (`own`).
fn published_table(sync: &SyncConfig, own: &[Named]) -> String {
    let (schema, name) = sync.schema_and_name();
    match &sync.filter {
        Some(filter) if !is_own(sync, own) => {
            format!("{} WHERE ({filter})", quoted_table(schema, name))
        }
        _ => quoted_table(schema, name),
    }
}

/// Whether ciosync evaluates `sync`'s filter itself.
fn is_own(sync: &SyncConfig, own: &[Named]) -> bool {
    own.iter().any(|(s, n)| (s.as_str(), n.as_str()) == sync.schema_and_name())
}

/// The SQL that gives one table of an existing publication the configured
/// row filter and every column. Dropped and added again in one transaction:
/// `SET TABLE` would replace the whole table list (losing tables ciosync
/// does not sync), and the transaction leaves no moment in which the table
/// is unpublished and its changes are skipped.
pub fn refit_table_sql(publication: &str, sync: &SyncConfig, own: &[Named]) -> String {
    let (schema, name) = sync.schema_and_name();
    let publication = quote_ident(publication);
    format!(
        "BEGIN; ALTER PUBLICATION {publication} DROP TABLE {}; ALTER PUBLICATION {publication} \
         ADD TABLE {}; COMMIT",
        quoted_table(schema, name),
        published_table(sync, own)
    )
}

/// Why an existing publication would lose changes of the synced tables, or
/// send rows the config leaves out (it does not publish inserts, updates or
/// deletes; it names a partitioned table's changes after its partitions; it
/// publishes only some columns; its row filter is not the entry's `filter`), with
/// the SQL that fixes it. `None` when it fits or does not exist. A
/// configured filter Postgres refuses is an error naming the field.
pub async fn publication_misfit(
    sql: &Client,
    config: &Config,
    own: &[Named],
) -> Result<Option<Fix>, PgError> {
    let publication = Publication::read(sql, &config.postgres.publication)
        .await
        .map_err(PgError::sql("read pg_publication"))?;
    let Some(publication) = publication else { return Ok(None) };
    let name = &publication.name;
    let quoted = quote_ident(name);
    if !publication.publishes_all_changes {
        return Ok(Some(Fix::run(
            format!("publication {name} does not publish every INSERT, UPDATE and DELETE"),
            format!(
                "ALTER PUBLICATION {quoted} SET (publish = 'insert, update, delete, truncate')"
            ),
        )));
    }
    for (i, sync) in config.sync.iter().enumerate() {
        let member = publication
            .member(sql, &sync.table)
            .await
            .map_err(PgError::sql("read pg_publication_rel"))?;
        let Some(member) = member else { continue };
        let table = &sync.table;
        if member.partitioned && !publication.via_root {
            return Ok(Some(Fix::run(
                format!(
                    "{table} is partitioned and publication {name} names its changes after the \
                     partitions"
                ),
                format!("ALTER PUBLICATION {quoted} SET (publish_via_partition_root = true)"),
            )));
        }
        if member.some_columns {
            return Ok(Some(Fix::run(
                format!("publication {name} publishes only some columns of {table}"),
                refit_table_sql(name, sync, own),
            )));
        }
        if let Some(problem) = row_filter_misfit(sql, config, i, sync, &member, own).await? {
            return Ok(Some(problem));
        }
    }
    Ok(None)
}

/// How the publication's row filter of a synced table differs from its
/// entry's `filter` (`sync[i].filter`, `objects[i].filter`), if it does, with its fix (see
/// [`row_filter`] for the comparison). Only a table in the publication's
/// own table list (`member.listed`) can have a row filter.
async fn row_filter_misfit(
    sql: &Client,
    config: &Config,
    i: usize,
    sync: &SyncConfig,
    member: &Member,
    own: &[Named],
) -> Result<Option<Fix>, PgError> {
    let publication = &config.postgres.publication;
    if member.row_filter.is_none() && is_own(sync, own) {
        // ciosync evaluates the filter itself.
        return Ok(None);
    }
    let (schema, name) = sync.schema_and_name();
    let entry = entry(&config.sync, i);
    let field = format!("{entry}.filter");
    let problem = match (member.row_filter.as_deref(), sync.filter.as_deref()) {
        (None, None) => return Ok(None),
        (None, Some(_)) if !member.listed => {
            return Ok(Some(Fix {
                problem: format!(
                    "publication {publication} includes {schema}.{name} through FOR ALL TABLES \
                     or FOR TABLES IN SCHEMA, which carries no row filter, but {field} is set; \
                     give postgres.publication a new name (ciosync then creates it FOR TABLE \
                     with the filter) or remove {field}"
                ),
                run: None,
            }));
        }
        (Some(published), None) => format!(
            "publication {publication} filters the rows of {schema}.{name} (WHERE {published}) \
             but {entry} has no filter, so rows outside it would never reach Customer.io"
        ),
        (None, Some(configured)) => format!(
            "publication {publication} publishes every row of {schema}.{name} but {field} is \
             ({configured}), so rows outside it would reach Customer.io"
        ),
        (Some(published), Some(configured)) => {
            let read = row_filter::read(sql, schema, name, configured)
                .await
                .map_err(|e| refused_filter(&field, schema, name, e))?;
            if read.canonical == published {
                return Ok(None);
            }
            format!(
                "publication {publication} filters the rows of {schema}.{name} with WHERE \
                 {published}, not with {field} ({configured}, which Postgres reads as {})",
                read.canonical
            )
        }
    };
    Ok(Some(Fix::run(problem, refit_table_sql(publication, sync, own))))
}

/// Postgres refusing a configured filter: definite, naming the field, when
/// the expression is at fault (a missing column, a syntax error, …).
pub(super) fn refused_filter(
    field: &str,
    schema: &str,
    name: &str,
    error: tokio_postgres::Error,
) -> PgError {
    match error.as_db_error() {
        Some(db)
            if is_definite_sqlstate(db.code().code()) || db.code().code().starts_with("22") =>
        {
            PgError::Definite(format!(
                "{field} is not a valid row filter for {schema}.{name}: {}",
                db.message()
            ))
        }
        _ => PgError::Sql { what: "read the configured row filter", source: error },
    }
}

/// A failed `CREATE PUBLICATION`. Postgres allows only simple row filters
/// (columns, constants, built-in types, operators and immutable functions:
/// no `now()`, no subquery) and refuses others with 0A000, which would
/// otherwise look transient: that is definite, naming the filters.
fn refused_publication(config: &Config, error: tokio_postgres::Error) -> PgError {
    let filters: Vec<String> = (0..config.sync.len())
        .filter(|i| config.sync[*i].filter.is_some())
        .map(|i| entry_field(&config.sync, i, "filter"))
        .collect();
    match error.as_db_error() {
        Some(db) if db.code().code() == "0A000" && !filters.is_empty() => {
            PgError::Definite(format!(
                "Postgres refuses {} as a publication row filter: {}{}",
                filters.join(" or "),
                db.message(),
                db.detail().map(|d| format!(": {d}")).unwrap_or_default()
            ))
        }
        _ => PgError::Sql { what: "create the publication", source: error },
    }
}

/// The filter columns of each filtered table that its replica identity does
/// not carry, as one message with the fix; `None` when all are carried.
pub async fn filter_identity_problem(
    sql: &Client,
    config: &Config,
    own: &[Named],
) -> Result<Option<Fix>, PgError> {
    for (i, sync) in config.sync.iter().enumerate() {
        let Some(filter) = &sync.filter else { continue };
        if is_own(sync, own) {
            continue;
        }
        let (schema, name) = sync.schema_and_name();
        let field = entry_field(&config.sync, i, "filter");
        let read = row_filter::read(sql, schema, name, filter)
            .await
            .map_err(|e| refused_filter(&field, schema, name, e))?;
        let table = Table::read(sql, &sync.table)
            .await
            .map_err(PgError::sql("read the replica identity"))?;
        let Some(table) = table else { continue };
        let missing = table.identity().missing(&read.columns);
        if !missing.is_empty() {
            let (what, fix) = row_filter::identity_problem(
                &field,
                &format!("{schema}.{name}"),
                &quoted_table(schema, name),
                &missing,
            );
            return Ok(Some(Fix::run(what, fix)));
        }
    }
    Ok(None)
}

/// Synced tables missing from an existing publication, as `schema.table`.
/// `None` when the publication does not exist.
pub async fn publication_missing_tables(
    sql: &Client,
    config: &Config,
) -> Result<Option<Vec<String>>, PgError> {
    let publication = Publication::read(sql, &config.postgres.publication)
        .await
        .map_err(PgError::sql("read pg_publication"))?;
    let Some(publication) = publication else { return Ok(None) };
    if publication.all_tables {
        return Ok(Some(Vec::new()));
    }
    let mut missing = Vec::new();
    let published = config
        .sync
        .iter()
        .map(|s| &s.table)
        .chain(config.events.iter().map(|e| &e.table))
        .chain(config.devices.iter().map(|d| &d.table));
    for table in published {
        let found = publication
            .includes(sql, table)
            .await
            .map_err(PgError::sql("read pg_publication_tables"))?;
        if !found {
            missing.push(table.to_string());
        }
    }
    Ok(Some(missing))
}

/// The state of the configured slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// No slot of that name.
    Missing,
    /// A logical pgoutput slot in this database. `failover`: whether it is a
    /// failover slot (`None` before PostgreSQL 17, which has none).
    Usable { active: bool, confirmed_flush_lsn: Option<String>, failover: Option<bool> },
    /// Our kind of slot, invalidated: Postgres removed WAL it still needed
    /// (`max_slot_wal_keep_size`), so it can no longer be streamed from.
    Invalidated,
    /// A slot that cannot be used: the reason says why.
    Unusable(String),
}

/// Reads the configured slot from `pg_replication_slots`.
pub async fn slot_state(sql: &Client, config: &Config) -> Result<SlotState, PgError> {
    let slot = &config.postgres.slot;
    let row = Slot::read(sql, slot).await.map_err(PgError::sql("read pg_replication_slots"))?;
    Ok(slot_state_of(slot, row))
}

/// What the slot named `slot` is to ciosync, from its catalogue row.
pub fn slot_state_of(slot: &str, row: Option<Slot>) -> SlotState {
    let Some(row) = row else {
        return SlotState::Missing;
    };
    if row.slot_type != "logical" || row.plugin.as_deref() != Some("pgoutput") {
        return SlotState::Unusable(format!(
            "slot {slot} is a {} slot with plugin {}; ciosync needs a logical pgoutput \
             slot: choose another postgres.slot or drop it with \
             SELECT pg_drop_replication_slot('{slot}')",
            row.slot_type,
            row.plugin.unwrap_or_else(|| "none".into())
        ));
    }
    if row.database.as_deref() != Some(row.current_database.as_str()) {
        return SlotState::Unusable(format!(
            "slot {slot} belongs to database {}, not {}: choose another postgres.slot",
            row.database.unwrap_or_default(),
            row.current_database
        ));
    }
    // PostgreSQL 13 to 15 show an invalidated slot's wal_status as `lost`,
    // or as NULL once its restart_lsn is cleared.
    if row.wal_status.as_deref().is_none_or(|s| s == "lost") {
        return SlotState::Invalidated;
    }
    SlotState::Usable {
        active: row.active,
        confirmed_flush_lsn: row.confirmed_flush_lsn,
        failover: row.failover,
    }
}

/// Creates the publication where missing (if `publication`), then makes
/// sure the slot can be streamed from: created on the first start,
/// recorded, and never created again silently once lost (see
/// [`super::slot`]). Returns the slot's state.
pub async fn ensure(
    sql: &Client,
    config: &Config,
    counters: &crate::telemetry::Counters,
    publication: bool,
) -> Result<SlotState, PgError> {
    if publication {
        ensure_publication(sql, config).await?;
    }
    super::slot::ensure(sql, config, counters, true).await
}

/// Creates the publication if missing; an existing one that lacks a synced
/// table is an error with the `ALTER PUBLICATION` to run.
/// Returns the tables whose filter ciosync evaluates itself (see
/// [`super::own_filters`]).
pub async fn ensure_publication(sql: &Client, config: &Config) -> Result<Vec<Named>, PgError> {
    let own = own_filters(sql, config).await?;
    // Publishing a filter the replica identity cannot evaluate would make
    // Postgres refuse the application's own UPDATEs and DELETEs: checked
    // before creating the publication and before printing any fix for it.
    if let Some(fix) = filter_identity_problem(sql, config, &own).await? {
        return Err(PgError::Definite(fix.to_string()));
    }
    match publication_missing_tables(sql, config).await? {
        None => {
            let statement = create_publication_sql(config, &own);
            sql.batch_execute(&statement).await.map_err(|e| refused_publication(config, e))?;
            tracing::info!(publication = %config.postgres.publication, "publication created");
        }
        Some(missing) if !missing.is_empty() => {
            // With each synced table's filter, so one statement fixes it.
            let tables = missing
                .iter()
                .map(|t| {
                    let (schema, name) = t.split_once('.').unwrap_or(("public", t));
                    config
                        .sync
                        .iter()
                        .find(|s| s.schema_and_name() == (schema, name))
                        .map_or_else(|| quoted_table(schema, name), |s| published_table(s, &own))
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(PgError::Definite(format!(
                "publication {} exists but does not include {}: run ALTER PUBLICATION {} ADD \
                 TABLE {tables}",
                config.postgres.publication,
                missing.join(", "),
                quote_ident(&config.postgres.publication),
            )));
        }
        Some(_) => {
            if let Some(fix) = publication_misfit(sql, config, &own).await? {
                return Err(PgError::Definite(fix.to_string()));
            }
        }
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(filter_line: &str) -> Config {
        crate::config::fixture::two_tables("", filter_line)
    }

    fn slot(slot_type: &str, plugin: Option<&str>, database: &str, wal: Option<&str>) -> Slot {
        Slot {
            slot_type: slot_type.into(),
            plugin: plugin.map(Into::into),
            database: Some(database.into()),
            current_database: "app".into(),
            active: false,
            confirmed_flush_lsn: Some("0/1".into()),
            wal_status: wal.map(Into::into),
            failover: Some(true),
        }
    }

    #[test]
    fn a_slot_row_is_usable_only_as_a_logical_pgoutput_slot_of_this_database() {
        assert_eq!(slot_state_of("cio", None), SlotState::Missing);
        let usable = slot("logical", Some("pgoutput"), "app", Some("reserved"));
        assert_eq!(
            slot_state_of("cio", Some(usable)),
            SlotState::Usable {
                active: false,
                confirmed_flush_lsn: Some("0/1".into()),
                failover: Some(true)
            }
        );
        let physical = slot_state_of("cio", Some(slot("physical", None, "app", Some("reserved"))));
        assert!(
            matches!(&physical, SlotState::Unusable(why) if why.starts_with("slot cio is a physical slot with plugin none")),
            "{physical:?}"
        );
        let elsewhere = slot_state_of("cio", Some(slot("logical", Some("pgoutput"), "crm", None)));
        assert_eq!(
            elsewhere,
            SlotState::Unusable(
                "slot cio belongs to database crm, not app: choose another postgres.slot".into()
            )
        );
        for wal in [None, Some("lost")] {
            let lost = slot("logical", Some("pgoutput"), "app", wal);
            assert_eq!(slot_state_of("cio", Some(lost)), SlotState::Invalidated, "{wal:?}");
        }
    }

    #[test]
    fn a_fix_reads_as_one_line_for_run_errors() {
        let fix = Fix::run("publication cio lacks x", "ALTER PUBLICATION \"cio\" ADD TABLE x");
        assert_eq!(
            fix.to_string(),
            "publication cio lacks x: run ALTER PUBLICATION \"cio\" ADD TABLE x"
        );
        let choice = Fix { problem: "rename it or remove sync[0].filter".into(), run: None };
        assert_eq!(choice.to_string(), "rename it or remove sync[0].filter");
    }

    #[test]
    fn the_publication_carries_each_tables_filter() {
        assert_eq!(
            create_publication_sql(&config(""), &[]),
            "CREATE PUBLICATION \"cio\" FOR TABLE \"public\".\"users\", \"crm\".\"accounts\" \
             WITH (publish_via_partition_root = true)"
        );
        assert_eq!(
            create_publication_sql(&config("filter = \"email_verified AND NOT is_staff\""), &[]),
            "CREATE PUBLICATION \"cio\" FOR TABLE \"public\".\"users\" WHERE (email_verified \
             AND NOT is_staff), \"crm\".\"accounts\" WITH (publish_via_partition_root = true)"
        );
    }

    #[test]
    fn a_refit_replaces_one_table_and_leaves_the_others() {
        let config = config("filter = \"plan = 'pro' OR plan IS NULL\"");
        assert_eq!(
            refit_table_sql("cio", &config.sync[0], &[]),
            "BEGIN; ALTER PUBLICATION \"cio\" DROP TABLE \"public\".\"users\"; ALTER PUBLICATION \
             \"cio\" ADD TABLE \"public\".\"users\" WHERE (plan = 'pro' OR plan IS NULL); COMMIT"
        );
        assert_eq!(
            refit_table_sql("cio", &config.sync[1], &[]),
            "BEGIN; ALTER PUBLICATION \"cio\" DROP TABLE \"crm\".\"accounts\"; ALTER PUBLICATION \
             \"cio\" ADD TABLE \"crm\".\"accounts\"; COMMIT"
        );
    }
}
