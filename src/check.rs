//! `ciosync check`: verify everything `run` needs, change nothing, and say
//! exactly what to fix. One line per check; exit 0 when `run` would work.
//! The version and failover lines live in [`failover`].

mod failover;
#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::sync::Arc;

use tokio_postgres::Client;

use crate::config::webhooks::WebhooksConfig;
use crate::config::{Config, OnSlotLost, Region, SyncConfig};
use crate::error::error_chain;
use crate::pg::connection::ConnectionSettings;
use crate::pg::quote::{quote_ident, quoted_table};
use crate::pg::PgError;
use crate::pg::{lost_message, Lost};
use crate::sink::client::TrackClient;
use crate::sink::SinkError;
use crate::source::row_filter;
use crate::source::setup::{self, SlotState};
use crate::telemetry::Counters;
use crate::webhooks::event::ReportingEvent;
use crate::webhooks::store as webhook_store;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// One line of the report, with the fix to apply when it is not ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub check: String,
    pub message: String,
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &str, message: impl Into<String>) -> Self {
        Self { level: Level::Ok, check: check.into(), message: message.into(), fix: None }
    }
    fn warning(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Warning,
            check: check.into(),
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
    fn error(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            check: check.into(),
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// The report line: `ok      check: message`, then `        fix: …`.
    pub fn render(&self) -> String {
        let level = match self.level {
            Level::Ok => "ok     ",
            Level::Warning => "warning",
            Level::Error => "error  ",
        };
        let mut line = format!("{level} {}: {}", self.check, self.message);
        if let Some(fix) = &self.fix {
            line.push_str(&format!("\n        fix: {fix}"));
        }
        line
    }
}

/// Runs every check and prints the report; the exit status says whether
/// `run` would work.
pub async fn run_and_print(config: &Config) -> ExitCode {
    let findings = run(config).await;
    for finding in &findings {
        println!("{}", finding.render());
    }
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings.iter().filter(|f| f.level == Level::Warning).count();
    println!("{errors} error(s), {warnings} warning(s)");
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::EXIT_FAILURE)
    }
}

/// Runs every check.
pub async fn run(config: &Config) -> Vec<Finding> {
    let mut findings = vec![Finding::ok("config", "parsed and valid")];
    check_postgres(&config.postgres.connection(), config, &mut findings).await;
    findings.push(check_customerio(config).await);
    findings
}

async fn check_postgres(settings: &ConnectionSettings, config: &Config, out: &mut Vec<Finding>) {
    let sql = match settings.connect_sql().await {
        Ok(sql) => sql,
        Err(e) => {
            let fix = match crate::pg::tls::refusal(&e) {
                Some(refusal) => refusal.to_string(),
                None => "check postgres.url (host, port, user, password, database, sslmode) \
                         and that the server accepts this client in pg_hba.conf"
                    .to_owned(),
            };
            out.push(Finding::error(
                "postgres connection",
                format!("cannot connect to {}: {}", settings.display(), error_chain(&e)),
                fix,
            ));
            return;
        }
    };
    let tls: Option<bool> = sql
        .query_opt("SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0));
    let version: String = sql
        .query_one("SHOW server_version", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|_| "unknown".into());
    out.push(Finding::ok(
        "postgres connection",
        format!(
            "connected to {} (PostgreSQL {version}, TLS {})",
            settings.display(),
            if tls == Some(true) { "on" } else { "off" }
        ),
    ));
    if let Err(e) = checks_with_sql(&sql, config, out).await {
        out.push(Finding::error(
            "postgres",
            format!("a check query failed: {}", error_chain(&e)),
            "run check again; if it persists, check the role's privileges",
        ));
    }
}

async fn checks_with_sql(
    sql: &Client,
    config: &Config,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let row = sql
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
            &[],
        )
        .await?;
    let (version, version_text): (i32, String) = (row.get(0), row.get(1));
    out.push(failover::version_finding(&version_text, version, config));
    if let Some(standby) = failover::in_recovery(sql).await? {
        out.push(standby);
    }
    let wal_level: String = sql.query_one("SHOW wal_level", &[]).await?.get(0);
    out.push(if wal_level == "logical" {
        Finding::ok("wal_level", "logical")
    } else {
        Finding::error(
            "wal_level",
            format!("is {wal_level}; logical replication needs logical"),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        )
    });
    let role = sql
        .query_one(
            "SELECT rolreplication, rolsuper, current_user::text FROM pg_catalog.pg_roles \
             WHERE rolname = current_user",
            &[],
        )
        .await?;
    let (replication, superuser, user): (bool, bool, String) =
        (role.get(0), role.get(1), role.get(2));
    let provider_role = failover::provider_replication_role(sql).await?;
    out.push(match (replication || superuser, provider_role) {
        (true, _) => Finding::ok("replication privilege", format!("role {user} may replicate")),
        (false, Some(granted)) => Finding::ok(
            "replication privilege",
            format!("role {user} may replicate (member of {granted})"),
        ),
        (false, None) => Finding::error(
            "replication privilege",
            format!(
                "role {user} has neither REPLICATION nor SUPERUSER, nor a managed service's \
                 replication role ({})",
                failover::PROVIDER_REPLICATION_ROLES.join(", ")
            ),
            format!(
                "ALTER ROLE {user_ident} REPLICATION; (on Amazon RDS or Aurora: GRANT \
                 rds_replication TO {user_ident};)",
                user_ident = quote_ident(&user)
            ),
        ),
    });
    for (i, sync) in config.sync.iter().enumerate() {
        check_table(sql, i, sync, &user, out).await?;
        check_sync_options(sql, sync, out).await?;
    }
    for events in &config.events {
        check_event_table(sql, events, out).await?;
    }
    check_publication(sql, config, &user, out).await?;
    check_slot(sql, config, out).await?;
    failover::check(sql, config, version, out).await?;
    check_state_schema(sql, config, &user, out).await?;
    if let Some(webhooks) = &config.webhooks {
        out.push(check_webhooks_table(sql, webhooks, &user).await?);
        check_write_back(sql, config, &user, out).await?;
    }
    Ok(())
}

/// `[[webhooks.write_back]]`: the replication-origin functions that keep a
/// write-back from echoing, and UPDATE on each written column.
async fn check_write_back(
    sql: &Client,
    config: &Config,
    user: &str,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let Some(webhooks) = &config.webhooks else { return Ok(()) };
    if webhooks.write_back.is_empty() {
        return Ok(());
    }
    let label = "webhooks.write_back";
    let role = quote_ident(user);
    let mut missing = Vec::new();
    for function in [
        "pg_catalog.pg_replication_origin_create(text)",
        "pg_catalog.pg_replication_origin_oid(text)",
        "pg_catalog.pg_replication_origin_session_setup(text)",
    ] {
        let allowed: bool = sql
            .query_one("SELECT has_function_privilege($1, 'EXECUTE')", &[&function])
            .await?
            .get(0);
        if !allowed {
            missing.push(format!("GRANT EXECUTE ON FUNCTION {function} TO {role};"));
        }
    }
    for (i, wb) in webhooks.write_back.iter().enumerate() {
        let sync = match &wb.table {
            None => config.sync.first(),
            Some(table) => config.sync.iter().find(|s| s.table == *table),
        };
        let Some(sync) = sync else { continue };
        let (schema, name) = sync.schema_and_name();
        let quoted = quoted_table(schema, name);
        let allowed = sql
            .query_one(
                "SELECT has_column_privilege($1::text::regclass, $2::text, 'UPDATE')",
                &[&quoted, &wb.column],
            )
            .await;
        match allowed {
            Ok(row) if row.get::<_, bool>(0) => {}
            Ok(_) => missing
                .push(format!("GRANT UPDATE ({}) ON {quoted} TO {role};", quote_ident(&wb.column))),
            Err(_) => out.push(Finding::error(
                label,
                format!("write_back[{i}].column {} is not a column of {schema}.{name}", wb.column),
                "fix webhooks.write_back column or table",
            )),
        }
    }
    out.push(if missing.is_empty() {
        Finding::ok(
            label,
            "the role may use replication origins (no echo) and update the written columns",
        )
    } else {
        Finding::error(
            label,
            format!(
                "role {user} lacks what write-back needs (without the origin functions a \
                 write-back would echo to Customer.io, so run refuses to start)"
            ),
            missing.join(" "),
        )
    });
    Ok(())
}

/// Whether the reporting-webhook receiver can create (when missing) and
/// write its table: tried for real in a transaction that is rolled back.
async fn check_webhooks_table(
    sql: &Client,
    webhooks: &WebhooksConfig,
    user: &str,
) -> Result<Finding, tokio_postgres::Error> {
    let label = format!("webhooks.table {}", webhooks.table);
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
    let qualified = quoted_table(schema, table);
    let role = quote_ident(user);
    Ok(match tried {
        Ok(_) => {
            Finding::ok(&label, "can be created if missing and written (tried, then rolled back)")
        }
        Err(error) => Finding::error(
            &label,
            format!("the webhook receiver could not create or write it: {}", error_chain(&error)),
            format!(
                "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {role}; or create the table as the \
                 README shows and GRANT USAGE ON SCHEMA {} TO {role}; GRANT INSERT ON {qualified} \
                 TO {role};",
                quote_ident(schema),
                quote_ident(schema),
            ),
        ),
    })
}

async fn check_table(
    sql: &Client,
    i: usize,
    sync: &SyncConfig,
    user: &str,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let (schema, name) = sync.schema_and_name();
    let label = format!("table {schema}.{name}");
    let quoted = quoted_table(schema, name);
    let row = sql
        .query_opt(
            "SELECT c.oid, c.relreplident::text, \
                    has_table_privilege(c.oid, 'SELECT') \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await?;
    let Some(row) = row else {
        out.push(Finding::error(
            &label,
            "does not exist (or is not a table)",
            "create the table, or fix [[sync]] table",
        ));
        return Ok(());
    };
    let oid: u32 = row.get(0);
    let identity: String = row.get(1);
    let can_select: bool = row.get(2);
    if !can_select {
        out.push(Finding::error(
            &label,
            format!("role {user} cannot read it"),
            format!("GRANT SELECT ON {quoted} TO {};", quote_ident(user)),
        ));
    }
    let columns: Vec<(String, bool)> = sql
        .query(
            "SELECT attname::text, attnotnull FROM pg_catalog.pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let has = |c: &str| columns.iter().any(|(n, _)| n == c);
    let id = &sync.id_column;
    if !has(id) {
        out.push(Finding::error(
            &label,
            format!("has no column {id} (id_column)"),
            "fix [[sync]] id_column",
        ));
        return Ok(());
    }
    let not_null = columns.iter().any(|(n, nn)| n == id && *nn);
    let unique: bool = sql
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
               WHERE i.indrelid = $1 AND i.indisunique AND i.indnkeyatts = 1 \
                 AND i.indpred IS NULL AND a.attname = $2)",
            &[&oid, id],
        )
        .await?
        .get(0);
    if unique && not_null {
        out.push(Finding::ok(&label, format!("id column {id} is unique and not null")));
    } else {
        out.push(Finding::error(
            &label,
            format!("id column {id} must be unique and not null (a primary key or unique index)"),
            format!(
                "ALTER TABLE {quoted} ALTER COLUMN {0} SET NOT NULL; CREATE UNIQUE INDEX ON \
                 {quoted} ({0});",
                quote_ident(id)
            ),
        ));
    }
    let missing: Vec<&str> =
        sync.attributes.values().map(String::as_str).filter(|c| !has(c)).collect();
    if missing.is_empty() {
        out.push(Finding::ok(
            &label,
            format!("all {} mapped columns exist", sync.attributes.len()),
        ));
    } else {
        out.push(Finding::error(
            &label,
            format!("mapped columns missing: {}", missing.join(", ")),
            "fix [sync.attributes] or add the columns",
        ));
    }
    let has_pk: bool = sql
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index WHERE indrelid = $1 AND indisprimary)",
            &[&oid],
        )
        .await?
        .get(0);
    let full = format!("ALTER TABLE {quoted} REPLICA IDENTITY FULL;");
    out.push(match identity.as_str() {
        "f" => Finding::ok(&label, "replica identity FULL"),
        "n" => Finding::error(
            &label,
            "replica identity NOTHING: Postgres refuses UPDATE and DELETE on a published table \
             without one",
            full,
        ),
        "d" if !has_pk => Finding::error(
            &label,
            "replica identity DEFAULT without a primary key: Postgres refuses UPDATE and DELETE \
             on it once published",
            full,
        ),
        _ => Finding::warning(
            &label,
            "replica identity DEFAULT/INDEX: updates carry no old row, so every mapped \
             attribute is sent on each update (not only the changed ones), and a change of a \
             non-key id column is not seen as an id change",
            full,
        ),
    });
    if let (Some(filter), true) = (&sync.filter, can_select) {
        out.push(check_filter(sql, i, sync, filter).await?);
    }
    Ok(())
}

/// A table's columns (name, type name) and replica identity; `None` when it
/// is not a table.
async fn table_shape(
    sql: &Client,
    schema: &str,
    name: &str,
) -> Result<Option<(Vec<(String, String)>, String)>, tokio_postgres::Error> {
    let row = sql
        .query_opt(
            "SELECT c.oid, c.relreplident::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let oid: u32 = row.get(0);
    let columns = sql
        .query(
            "SELECT attname::text, format_type(atttypid, NULL) FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Some((columns, row.get(1))))
}

/// `soft_delete_column` and `[[sync.events]]`: their columns exist, and the
/// replica identity lets ciosync see transitions.
async fn check_sync_options(
    sql: &Client,
    sync: &SyncConfig,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    if sync.soft_delete_column.is_none() && sync.events.is_empty() {
        return Ok(());
    }
    let (schema, name) = sync.schema_and_name();
    let Some((columns, identity)) = table_shape(sql, schema, name).await? else {
        return Ok(()); // check_table said so
    };
    let label = format!("table {schema}.{name}");
    let has = |c: &str| columns.iter().any(|(n, _)| n == c);
    let full = format!("ALTER TABLE {} REPLICA IDENTITY FULL;", quoted_table(schema, name));
    if let Some(column) = &sync.soft_delete_column {
        if !has(column) {
            out.push(Finding::error(
                &label,
                format!("has no column {column} (soft_delete_column)"),
                "fix soft_delete_column or add the column",
            ));
        } else if identity != "f" {
            out.push(Finding::error(
                &label,
                format!(
                    "soft_delete_column {column} needs REPLICA IDENTITY FULL: without the old \
                     row a soft delete cannot be told from an update of a deleted row, so each \
                     such update sends the removal again (and counts against the mass-delete \
                     circuit breaker), and an undelete is sent as a plain update"
                ),
                full.clone(),
            ));
        } else {
            out.push(Finding::ok(&label, format!("soft deletes by {column}")));
        }
    }
    if sync.events.is_empty() {
        return Ok(());
    }
    let mut missing: Vec<&str> = sync
        .events
        .iter()
        .flat_map(|e| std::iter::once(e.column()).chain(e.data.iter().map(String::as_str)))
        .filter(|c| !has(c))
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        out.push(Finding::error(
            &label,
            format!("[[sync.events]] name columns it does not have: {}", missing.join(", ")),
            "fix when_changed, when or data, or add the columns",
        ));
    } else if identity != "f" {
        out.push(Finding::error(
            &label,
            "[[sync.events]] need the old row of each update to see a transition, which only REPLICA IDENTITY FULL sends: no change event would ever fire",
            full,
        ));
    } else {
        out.push(Finding::ok(&label, format!("{} change event(s) configured", sync.events.len())));
    }
    Ok(())
}

/// An `[[events]]` table: it exists and has the columns the config names,
/// of types that can hold what they are for.
async fn check_event_table(
    sql: &Client,
    events: &crate::config::EventTableConfig,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let (schema, name) = events.schema_and_name();
    let label = format!("event table {schema}.{name}");
    let Some((columns, identity)) = table_shape(sql, schema, name).await? else {
        out.push(Finding::error(
            &label,
            "does not exist (or is not a table)",
            "create the table, or fix [[events]] table",
        ));
        return Ok(());
    };
    // Published, the table's UPDATEs and DELETEs (an outbox cleaned up after
    // use, say) need a replica identity, or Postgres refuses them.
    let has_pk: bool = sql
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index \
             WHERE indrelid = to_regclass($1) AND indisprimary)",
            &[&quoted_table(schema, name)],
        )
        .await?
        .get(0);
    if identity == "n" || (identity == "d" && !has_pk) {
        out.push(Finding::error(
            &label,
            "has no primary key (or replica identity NOTHING): once it is published, Postgres \
             refuses UPDATE and DELETE on it, which would break the application's own writes",
            format!(
                "add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL;",
                quoted_table(schema, name)
            ),
        ));
    }
    let type_of = |c: &str| columns.iter().find(|(n, _)| n == c).map(|(_, t)| t.as_str());
    let named = std::iter::once(("customer_id_column", events.customer_id_column.as_str()))
        .chain(events.anonymous_id_column.as_deref().map(|c| ("anonymous_id_column", c)))
        .chain(events.name_column.as_deref().map(|c| ("name_column", c)))
        .chain(events.data.values().map(|c| ("data", c.as_str())))
        .chain(events.data_column.as_deref().map(|c| ("data_column", c)))
        .chain(events.timestamp_column.as_deref().map(|c| ("timestamp_column", c)));
    let mut problems = Vec::new();
    for (key, column) in named {
        match (key, type_of(column)) {
            (_, None) => problems.push(format!("no column {column} ({key})")),
            ("data_column", Some(t)) if t != "jsonb" && t != "json" => {
                problems.push(format!("data_column {column} is {t}, not json or jsonb"))
            }
            ("timestamp_column", Some(t)) if !t.starts_with("timestamp") && t != "date" => {
                problems.push(format!("timestamp_column {column} is {t}, not a timestamp"))
            }
            _ => {}
        }
    }
    out.push(if problems.is_empty() {
        Finding::ok(&label, "its inserts become events")
    } else {
        Finding::error(&label, problems.join("; "), "fix [[events]] or the table")
    });
    Ok(())
}

/// `sync[i].filter`: it works on the table, and its columns are in the
/// replica identity (otherwise publishing it makes Postgres refuse the
/// table's UPDATEs and DELETEs). Whether the publication has it is
/// [`check_publication`]'s part.
async fn check_filter(
    sql: &Client,
    i: usize,
    sync: &SyncConfig,
    filter: &str,
) -> Result<Finding, tokio_postgres::Error> {
    let (schema, name) = sync.schema_and_name();
    let label = format!("table {schema}.{name}");
    let field = format!("sync[{i}].filter");
    let quoted = quoted_table(schema, name);
    let refused = |e: tokio_postgres::Error| {
        let reason = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or(error_chain(&e));
        Finding::error(
            &label,
            format!("{field} ({filter}) does not work on the table: {reason}"),
            format!("fix {field}: an SQL boolean expression over the columns of {schema}.{name}"),
        )
    };
    let probe = format!("SELECT 1 FROM {quoted} WHERE ({filter}) LIMIT 0");
    if let Err(e) = sql.batch_execute(&probe).await {
        return Ok(refused(e));
    }
    let read = match row_filter::read(sql, schema, name, filter).await {
        Ok(read) => read,
        Err(e) => return Ok(refused(e)),
    };
    let Some(identity) = row_filter::identity(sql, schema, name).await? else {
        return Ok(Finding::ok(&label, format!("{field} works on the table")));
    };
    let missing = identity.missing(&read.columns);
    Ok(if missing.is_empty() {
        Finding::ok(
            &label,
            match read.columns.as_slice() {
                [] => format!("{field} works on the table and reads no column"),
                columns => format!(
                    "{field} works on the table; the columns it reads ({}) are in the replica \
                     identity",
                    columns.join(", ")
                ),
            },
        )
    } else {
        let (what, fix) =
            row_filter::identity_problem(&field, &format!("{schema}.{name}"), &quoted, &missing);
        Finding::error(&label, what, fix)
    })
}

async fn check_publication(
    sql: &Client,
    config: &Config,
    user: &str,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let label = format!("publication {}", config.postgres.publication);
    let missing = match setup::publication_missing_tables(sql, config).await {
        Ok(m) => m,
        Err(e) => {
            out.push(Finding::error(&label, error_chain(&e), "check the role's privileges"));
            return Ok(());
        }
    };
    match missing {
        Some(missing) if missing.is_empty() => match setup::publication_misfit(sql, config).await {
            Ok(None) if config.sync.iter().any(|s| s.filter.is_some()) => out.push(Finding::ok(
                &label,
                "exists and includes every synced table, with the configured row filters",
            )),
            Ok(None) => out.push(Finding::ok(&label, "exists and includes every synced table")),
            Ok(Some(fix)) => out.push(misfit_finding(&label, fix)),
            Err(PgError::Definite(problem)) => {
                out.push(Finding::error(&label, problem, "see above"))
            }
            Err(e) => {
                out.push(Finding::error(&label, error_chain(&e), "check the role's privileges"))
            }
        },
        Some(missing) => {
            out.push(judge_missing_tables(&label, &config.postgres.publication, &missing))
        }
        None => {
            // CREATE PUBLICATION … FOR TABLE needs CREATE on the database and
            // ownership of every table.
            let can_create: bool = sql
                .query_one("SELECT has_database_privilege(current_database(), 'CREATE')", &[])
                .await?
                .get(0);
            let mut not_owned = Vec::new();
            for sync in &config.sync {
                let (schema, name) = sync.schema_and_name();
                let owned: Option<bool> = sql
                    .query_opt(
                        "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c \
                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND c.relname = $2",
                        &[&schema, &name],
                    )
                    .await?
                    .map(|r| r.get(0));
                if owned == Some(false) {
                    not_owned.push(format!("{schema}.{name}"));
                }
            }
            let creatable = Creatable { user, can_create, not_owned: &not_owned };
            out.push(judge_absent_publication(&label, &creatable, config));
        }
    }
    Ok(())
}

/// A publication that exists but lacks synced tables (`schema.table`):
/// the `ALTER PUBLICATION … ADD TABLE` that adds them.
fn judge_missing_tables(label: &str, publication: &str, missing: &[String]) -> Finding {
    let tables = missing
        .iter()
        .map(|t| {
            let (s, n) = t.split_once('.').unwrap_or(("public", t));
            quoted_table(s, n)
        })
        .collect::<Vec<_>>()
        .join(", ");
    Finding::error(
        label,
        format!("exists but does not include {}", missing.join(", ")),
        format!("ALTER PUBLICATION {} ADD TABLE {tables};", quote_ident(publication)),
    )
}

/// What decides whether `ciosync run` can create a missing publication:
/// `CREATE PUBLICATION … FOR TABLE` needs CREATE on the database and
/// ownership of every table.
struct Creatable<'a> {
    user: &'a str,
    can_create: bool,
    /// Synced tables (`schema.table`) the role does not own.
    not_owned: &'a [String],
}

/// A publication that does not exist: fine when `run` can create it, else
/// the statement for the tables' owner to run.
fn judge_absent_publication(label: &str, facts: &Creatable, config: &Config) -> Finding {
    if facts.can_create && facts.not_owned.is_empty() {
        return Finding::ok(label, "does not exist yet; run will create it");
    }
    let why = if facts.can_create {
        format!("it does not own {}", facts.not_owned.join(", "))
    } else {
        "no CREATE privilege on the database".to_owned()
    };
    Finding::error(
        label,
        format!("does not exist and role {} cannot create it ({why})", facts.user),
        format!("as the tables' owner: {};", setup::create_publication_sql(config)),
    )
}

/// A publication that exists but does not fit: the problem, and the
/// statement to run when there is one (else the problem text says what to do).
fn misfit_finding(label: &str, fix: setup::Fix) -> Finding {
    match fix.run {
        Some(sql) => Finding::error(label, fix.problem, format!("{sql};")),
        None => Finding::error(label, fix.problem, "see above"),
    }
}

async fn check_slot(
    sql: &Client,
    config: &Config,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let label = format!("replication slot {}", config.postgres.slot);
    let state = match setup::slot_state(sql, config).await {
        Ok(s) => s,
        Err(e) => {
            out.push(Finding::error(&label, error_chain(&e), "check the role's privileges"));
            return Ok(());
        }
    };
    match state {
        SlotState::Usable { active: false, confirmed_flush_lsn, .. } => out.push(Finding::ok(
            &label,
            format!(
                "exists (pgoutput), confirmed up to {}",
                confirmed_flush_lsn.unwrap_or_else(|| "nothing yet".into())
            ),
        )),
        SlotState::Usable { active: true, .. } => out.push(Finding::warning(
            &label,
            "exists but another session is streaming from it (another ciosync?); run waits \
             until it is free",
            "stop the other consumer; only one may use a slot",
        )),
        SlotState::Unusable(reason) => out.push(Finding::error(&label, reason, "see above")),
        SlotState::Invalidated => out.push(lost_slot(&label, config, Lost::Invalidated)),
        SlotState::Missing if slot_recorded(sql, config).await? => {
            out.push(lost_slot(&label, config, Lost::Dropped))
        }
        SlotState::Missing => {
            let row = sql
                .query_one(
                    "SELECT count(*)::int, current_setting('max_replication_slots')::int \
                     FROM pg_catalog.pg_replication_slots",
                    &[],
                )
                .await?;
            let (used, max): (i32, i32) = (row.get(0), row.get(1));
            out.push(if used < max {
                Finding::ok(&label, "does not exist yet; run will create it")
            } else {
                Finding::error(
                    &label,
                    format!("does not exist and all {max} replication slots are in use"),
                    "raise max_replication_slots (restart needed) or drop an unused slot",
                )
            });
        }
    }
    Ok(())
}

/// A lost slot: `run` stops on it (or recreates it when configured to).
fn lost_slot(label: &str, config: &Config, how: Lost) -> Finding {
    let message = lost_message(&config.postgres.slot, how);
    match config.postgres.on_slot_lost {
        OnSlotLost::Stop => Finding::error(label, message, "see above"),
        OnSlotLost::RecreateAndBackfill => Finding::warning(
            label,
            message,
            "postgres.on_slot_lost = recreate_and_backfill: run will recreate it and backfill",
        ),
    }
}

/// Whether the daemon streamed from this slot before (read only).
async fn slot_recorded(sql: &Client, config: &Config) -> Result<bool, tokio_postgres::Error> {
    crate::state::slot_was_used(sql, &config.postgres.slot).await
}

/// The daemon keeps its own state in the `ciosync` schema: the initial
/// copy's progress, backfills, and the dead letters, which any refusal by
/// Customer.io writes (so the schema is needed even without an initial copy).
async fn check_state_schema(
    sql: &Client,
    config: &Config,
    user: &str,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let label = format!("schema {}", crate::state::SCHEMA);
    let row = sql
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1), \
                    COALESCE((SELECT has_schema_privilege(oid, 'CREATE') AND has_schema_privilege(oid, 'USAGE') \
                              FROM pg_catalog.pg_namespace WHERE nspname = $1), false), \
                    has_database_privilege(current_database(), 'CREATE')",
            &[&crate::state::SCHEMA],
        )
        .await?;
    let (exists, usable, can_create): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    out.push(match (exists, usable, can_create) {
        (true, true, _) => Finding::ok(
            &label,
            "exists and is writable (initial copy progress, backfills, dead letters)",
        ),
        (false, _, true) => Finding::ok(&label, "does not exist yet; run will create it"),
        (true, false, _) => Finding::error(
            &label,
            format!("exists but role {user} cannot write to it"),
            format!("GRANT USAGE, CREATE ON SCHEMA ciosync TO {};", quote_ident(user)),
        ),
        (false, _, false) => Finding::error(
            &label,
            format!(
                "does not exist and role {user} cannot create it (it records the initial copy, \
                 backfills and dead letters)"
            ),
            format!("CREATE SCHEMA ciosync AUTHORIZATION {};", quote_ident(user)),
        ),
    });
    if exists && usable {
        check_dead_letters(sql, config, user, out).await?;
    }
    Ok(())
}

/// Dead letters waiting for this slot are worth a look before (re)starting,
/// and the role must be able to write them: a refused operation it cannot
/// store holds up everything after it.
async fn check_dead_letters(
    sql: &Client,
    config: &Config,
    user: &str,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let label = "dead letters";
    let exists: bool =
        sql.query_one("SELECT to_regclass('ciosync.dead_letters') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(());
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
        let role = quote_ident(user);
        out.push(Finding::error(
            label,
            format!(
                "role {user} cannot write ciosync.dead_letters: an operation Customer.io refuses \
                 would be retried until it can, and nothing after it acknowledged"
            ),
            format!(
                "GRANT INSERT ON ciosync.dead_letters TO {role}; \
                 GRANT USAGE ON SEQUENCE ciosync.dead_letters_id_seq TO {role};"
            ),
        ));
        return Ok(());
    }
    let waiting: i64 = sql
        .query_one(
            "SELECT count(*) FROM ciosync.dead_letters WHERE slot = $1",
            &[&config.postgres.slot],
        )
        .await?
        .get(0);
    out.push(if waiting == 0 {
        Finding::ok(label, "none")
    } else {
        Finding::warning(
            label,
            format!("{waiting} operation(s) Customer.io refused wait in ciosync.dead_letters"),
            "ciosync dlq list (then dlq retry once the cause is fixed, or dlq discard)",
        )
    });
    Ok(())
}

async fn check_customerio(config: &Config) -> Finding {
    let label = "customer.io credentials";
    let sink = match TrackClient::new(&config.customerio, Arc::new(Counters::default())) {
        Ok(s) => s,
        Err(e) => return Finding::error(label, error_chain(&e), "report this as a bug"),
    };
    match sink.region().await {
        Ok(region) => {
            let configured = match config.customerio.region {
                Region::Us => "us",
                Region::Eu => "eu",
            };
            if config.customerio.track_url.is_none() && region.region != configured {
                Finding::warning(
                    label,
                    format!(
                        "accepted, but the workspace is in region {} while region = {configured}",
                        region.region
                    ),
                    format!("set region = \"{}\" in [customerio]", region.region),
                )
            } else {
                Finding::ok(
                    label,
                    format!("accepted by {} (region {})", sink.base_url(), region.region),
                )
            }
        }
        Err(SinkError::Unauthorized) => Finding::error(
            label,
            format!("{} refused the site id and API key (HTTP 401)", sink.base_url()),
            "set customerio.site_id and customerio.api_key (or CIOSYNC_CUSTOMERIO_SITE_ID / \
             CIOSYNC_CUSTOMERIO_API_KEY) to the Track API credentials of the workspace",
        ),
        Err(e) => Finding::error(
            label,
            format!("cannot reach {}: {}", sink.base_url(), error_chain(&e)),
            "check network access to the Track API, or customerio.region / track_url",
        ),
    }
}
