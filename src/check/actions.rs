//! `check`'s lines for `[[webhooks.actions]]`: whether each action can
//! write what it writes, tried for real in a transaction that is rolled
//! back (its tables and the `ciosync` schema created when missing, its statement planned with
//! `EXPLAIN`, which checks the columns and the role's privileges without
//! running it), and the replication-origin functions an action that writes
//! a streamed table needs. Each failing line prints the SQL that fixes it.

use tokio_postgres::{Client, Error};

use super::gather::ORIGIN_FUNCTIONS;
use super::Finding;
use crate::config::actions::{self, Action, Effect};
use crate::config::Config;
use crate::error::error_chain;
use crate::pg::catalog;
use crate::pg::quote::quote_ident;
use crate::pg::PgError;
use crate::webhooks::actions::store;

/// What was tried for one action: `Err` is why it failed, as one line.
pub struct Tried {
    pub action: Action,
    pub result: Result<(), String>,
}

/// Tries every action's writes in one rolled-back transaction.
pub async fn gather(
    sql: &Client,
    config: &Config,
) -> Result<(Vec<Tried>, Vec<&'static str>), Error> {
    let actions = actions::resolve(config).unwrap_or_default();
    let mut denied = Vec::new();
    if config.actions_origin().is_some() {
        for function in ORIGIN_FUNCTIONS {
            if !catalog::may_execute(sql, function).await? {
                denied.push(function);
            }
        }
    }
    sql.batch_execute("BEGIN").await?;
    // The state schema as `run` creates it (an update action's statement
    // touches the record); a role that cannot is told so by the schema's
    // own line.
    sql.batch_execute("SAVEPOINT state").await?;
    if crate::state::migrate(sql).await.is_err() {
        sql.batch_execute("ROLLBACK TO SAVEPOINT state").await?;
    }
    let tables = sql
        .batch_execute(&store::migration_sql(&actions))
        .await
        .map_err(|e| error_chain(&PgError::sql("create the webhook action tables")(e)));
    let mut tried = Vec::new();
    for action in actions {
        let result = match &tables {
            Err(why) => Err(why.clone()),
            Ok(()) => probe(sql, &action).await?,
        };
        tried.push(Tried { action, result });
    }
    sql.batch_execute("ROLLBACK").await?;
    Ok((tried, denied))
}

/// Plans `action`'s statement inside a savepoint.
async fn probe(sql: &Client, action: &Action) -> Result<Result<(), String>, Error> {
    let statement = match &action.effect {
        Effect::Segment { table, .. } => {
            store::segment_sql(table, crate::config::actions::Direction::Enter)
        }
        Effect::Update { statement, .. } => statement.clone(),
        Effect::Insert { table, columns, body_column } => {
            let names: Vec<&String> = columns.iter().map(|(c, _)| c).collect();
            store::insert_sql(table, &names, body_column.as_deref())
        }
    };
    let (name, key, window) = ("ciosync-check", "", 60.0_f64);
    sql.batch_execute("SAVEPOINT action_probe").await?;
    let result = async {
        sql.execute(&format!("EXPLAIN {}", store::KEY_SQL), &[&name, &key, &window]).await?;
        sql.execute(&format!("EXPLAIN {}", store::PRUNE_SQL), &[&name, &window]).await?;
        sql.execute(&format!("EXPLAIN {statement}"), &parameters(action)).await
    }
    .await;
    sql.batch_execute("ROLLBACK TO SAVEPOINT action_probe").await?;
    Ok(result.map(drop).map_err(|e| error_chain(&PgError::sql("plan the action's statement")(e))))
}

/// Typed NULLs for the statement's parameters.
fn parameters(action: &Action) -> Vec<&'static (dyn tokio_postgres::types::ToSql + Sync)> {
    const TEXT: Option<String> = None;
    const JSON: Option<serde_json::Value> = None;
    match action.effect {
        Effect::Segment { .. } => vec![&TEXT, &TEXT, &TEXT],
        Effect::Update { .. } => vec![&TEXT, &JSON],
        Effect::Insert { ref body_column, .. } if body_column.is_some() => vec![&JSON, &JSON],
        Effect::Insert { .. } => vec![&JSON],
    }
}

/// One line per action, then the origin functions' line when needed.
pub fn judge(tried: &[Tried], denied: &[&str], user: &str) -> Vec<Finding> {
    let role = quote_ident(user);
    let mut out: Vec<Finding> = tried
        .iter()
        .map(|t| {
            let label = format!("webhooks.actions {}", t.action.name);
            match &t.result {
                Ok(()) => Finding::ok(
                    &label,
                    format!(
                        "{} action can write (tried, then rolled back); its path is \
                         <webhooks.path>/actions/{}",
                        t.action.kind(),
                        t.action.name
                    ),
                ),
                Err(why) => {
                    Finding::error(&label, format!("cannot write: {why}"), fix(&t.action, &role))
                }
            }
        })
        .collect();
    if !denied.is_empty() {
        let grants: Vec<String> =
            denied.iter().map(|f| format!("GRANT EXECUTE ON FUNCTION {f} TO {role};")).collect();
        out.push(Finding::error(
            "webhooks.actions origin",
            format!(
                "role {user} may not use replication origins, which keep an action's writes to a \
                 streamed table from echoing to Customer.io (run refuses to start without them)"
            ),
            grants.join(" "),
        ));
    }
    out
}

/// The SQL that gives the role what `action` writes with: its own table,
/// and the keys table every action writes.
fn fix(action: &Action, role: &str) -> String {
    format!(
        "{} GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {role};",
        fix_effect(action, role),
        store::KEYS_TABLE
    )
}

fn fix_effect(action: &Action, role: &str) -> String {
    let usage = |table: &crate::pg::name::TableName| {
        format!("GRANT USAGE ON SCHEMA {} TO {role};", quote_ident(table.schema()))
    };
    match &action.effect {
        Effect::Segment { table, .. } => format!(
            "{} GRANT SELECT, INSERT, UPDATE ON {} TO {role}; (or let the role create it: \
             CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {role};)",
            usage(table),
            table.quoted(),
            quote_ident(table.schema())
        ),
        Effect::Update { table, columns, .. } => {
            let names: Vec<String> = columns.iter().map(|(c, _)| quote_ident(c)).collect();
            format!(
                "check that {} has the columns {}; {} GRANT SELECT, UPDATE ({}) ON {} TO {role};",
                table,
                names.join(", "),
                usage(table),
                names.join(", "),
                table.quoted()
            )
        }
        Effect::Insert { table, columns, body_column } => {
            let mut definitions: Vec<String> =
                columns.iter().map(|(c, _)| format!("{} text", quote_ident(c))).collect();
            if let Some(body) = body_column {
                definitions.push(format!("{} jsonb", quote_ident(body)));
            }
            format!(
                "create the table if it is missing, e.g. CREATE TABLE {} (id bigint GENERATED \
                 ALWAYS AS IDENTITY PRIMARY KEY, {}, received_at timestamptz NOT NULL DEFAULT \
                 now()); then {} GRANT INSERT ON {} TO {role};",
                table.quoted(),
                definitions.join(", "),
                usage(table),
                table.quoted()
            )
        }
    }
}
