//! `ciosync check`: verify everything `run` needs, change nothing, and say
//! exactly what to fix. One line per check; exit 0 when `run` would work.
//!
//! Two halves: [`gather`] reads (the catalogue facts of [`crate::pg::catalog`],
//! shared with publication and slot setup, and the probes check makes), and
//! pure judgements turn facts into [`Finding`]s: [`judge`] (server, role,
//! publication, slot, `ciosync` schema, webhooks, Customer.io), [`tables`]
//! (the configured tables; [`devices`] the `[[devices]]` ones) and [`failover`] (the version and failover
//! lines). This file runs them in report order; the judgements are
//! unit-tested on facts built by hand in `tests.rs` and `tables_tests.rs`.

mod actions;
mod devices;
mod failover;
mod gather;
mod judge;
mod objects;
mod tables;
#[cfg(test)]
mod tables_tests;
#[cfg(test)]
mod tests;

use std::process::ExitCode;

use tokio_postgres::Client;

use crate::config::Config;
use crate::error::error_chain;
use crate::pg::catalog::{self, Role, Server};
use crate::pg::name::TableName;
use crate::pg::quote::quote_ident;
use crate::wording::count;

/// The statements that let `user` read `name` (`table` as the catalogue
/// has it): USAGE on its schema when the role lacks it, then SELECT.
fn grant_select(name: &TableName, table: &catalog::Table, user: &str) -> String {
    let (schema, _) = name.parts();
    let select = format!("GRANT SELECT ON {} TO {};", name.quoted(), quote_ident(user));
    match table.schema_usage {
        true => select,
        false => format!(
            "GRANT USAGE ON SCHEMA {} TO {}; {select}",
            quote_ident(schema),
            quote_ident(user)
        ),
    }
}

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
/// `run` would work. `exposure` is the config file's own warning, if any
/// ([`crate::config::exposure`]): its secrets readable by every local user.
pub async fn run_and_print(config: &Config, exposure: Option<(String, String)>) -> ExitCode {
    let mut findings = run(config).await;
    if let Some((problem, fix)) = exposure {
        findings.insert(1, Finding::warning("config file", problem, fix));
    }
    for finding in &findings {
        println!("{}", finding.render());
    }
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings.iter().filter(|f| f.level == Level::Warning).count();
    println!("{}, {}", count(errors, "error"), count(warnings, "warning"));
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::EXIT_FAILURE)
    }
}

/// Runs every check.
pub async fn run(config: &Config) -> Vec<Finding> {
    let mut findings = vec![Finding::ok("config", "parsed and valid")];
    check_postgres(config, &mut findings).await;
    findings.push(judge::customerio(config, gather::customerio(config).await));
    findings
}

/// Connects, then the Postgres lines; a query that fails midway is one more
/// line after those found so far.
async fn check_postgres(config: &Config, out: &mut Vec<Finding>) {
    let settings = config.postgres.connection();
    let sql = match settings.connect_sql().await {
        Ok(sql) => sql,
        Err(e) => {
            let refusal = crate::pg::tls::refusal(&e).map(|r| r.to_string());
            out.push(judge::connection_failed(&settings.display(), &error_chain(&e), refusal));
            return;
        }
    };
    let tls = catalog::session_uses_tls(&sql).await.ok().flatten();
    let server = Server::read(&sql).await;
    let version = server.as_ref().ok().map(|s| s.version.as_str());
    out.push(judge::connected(&settings.display(), version, tls));
    let checked = match server {
        Ok(server) => checks_with_sql(&sql, config, &server, out).await,
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        out.push(judge::query_failed(&e));
    }
}

/// The Postgres lines in report order: server, role, tables, publication,
/// slot, failover, the `ciosync` schema, webhooks.
async fn checks_with_sql(
    sql: &Client,
    config: &Config,
    server: &Server,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let providers = failover::PROVIDER_REPLICATION_ROLES;
    out.push(failover::version_finding(&server.version, server.version_num, config));
    out.extend(failover::standby(server.in_recovery));
    out.push(judge::wal_level(&server.wal_level));
    let role = Role::read(sql, &providers).await?;
    out.push(judge::replication_privilege(&role, &providers));
    let mut tables = Vec::new();
    // Read once; its error, if any, is the publication line's.
    let own_filters = crate::source::own_filters::own_filters(sql, config).await;
    let own = own_filters.as_ref().map(Vec::clone).unwrap_or_default();
    for (i, sync) in config.sync.iter().enumerate() {
        let mut facts = gather::sync_table(sql, sync, &config.postgres.slot).await?;
        let (schema, name) = sync.schema_and_name();
        facts.own_filter = own.iter().any(|(s, n)| (s.as_str(), n.as_str()) == (schema, name));
        let record = config.pipeline.record_accepted;
        let entry = crate::config::sync::entry(&config.sync, i);
        out.extend(tables::sync_table(&entry, sync, &role.name, &facts, record));
        out.extend(tables::sync_options(sync, facts.table.as_ref(), record));
        // Objects and relationships are not in the record.
        let person = sync.target == crate::config::Target::Person;
        let soft_without_old_row = sync.soft_delete_column.is_some()
            && facts.table.as_ref().is_some_and(|t| t.identity_kind != catalog::IdentityKind::Full);
        if record && person && (facts.own_filter || soft_without_old_row) {
            let slot = &config.postgres.slot;
            let complete = gather::record_complete(sql, slot, &format!("{schema}.{name}")).await;
            out.extend(tables::record_completeness(sync, complete));
        }
        tables.push(facts.table);
    }
    for events in &config.events {
        let table = catalog::Table::read(sql, &events.table).await?;
        out.extend(tables::event_table(events, &role.name, table.as_ref()));
    }
    for device_table in &config.devices {
        let table = catalog::Table::read(sql, &device_table.table).await?;
        out.extend(devices::devices_table(device_table, &role.name, table.as_ref()));
    }
    let publication = gather::publication(sql, config, &tables, own_filters).await;
    out.push(judge::publication(config, &role, publication));
    let slot = gather::slot(sql, config).await?;
    out.push(judge::slot(config, server.max_replication_slots, slot));
    if failover::applies(config, server.version_num) {
        out.extend(failover::judge(config, &gather::failover(sql, config, server).await?));
    }
    check_state(sql, config, &role, out).await?;
    if let Some(webhooks) = &config.webhooks {
        if webhooks.signing_key.is_some() {
            let tried = gather::webhooks_table(sql, webhooks).await?;
            out.push(judge::webhooks_table(webhooks, tried, &role.name));
        }
        if !webhooks.write_back.is_empty() {
            let facts = gather::write_back(sql, config).await?;
            out.extend(judge::write_back(&facts, &role.name));
        }
        if !webhooks.actions.is_empty() {
            let (tried, denied) = actions::gather(sql, config).await?;
            out.extend(actions::judge(&tried, &denied, &role.name));
        }
    }
    Ok(())
}

/// The `ciosync` schema, then (when the role can use it) the dead letters.
async fn check_state(
    sql: &Client,
    config: &Config,
    role: &Role,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let schema = catalog::Schema::read(sql, crate::state::SCHEMA).await?;
    out.push(judge::state_schema(schema, role));
    if schema.exists && schema.writable {
        out.extend(judge::dead_letters(gather::dead_letters(sql, config).await?, &role.name));
    }
    Ok(())
}
