//! Write-back: a reporting event (an unsubscribe, a bounce) sets one column
//! of the synced user row, without the change echoing back to Customer.io.
//!
//! # Why the write does not come back
//!
//! The write is an ordinary UPDATE of a synced table, so the replication
//! stream carries it like any other. The store's connection runs it in a
//! session with a replication origin (`pg_replication_origin_session_setup`),
//! so its transaction carries that origin; pgoutput then sends an Origin
//! message at the transaction's start (PostgreSQL 15), and the source skips
//! the changes of transactions with this slot's origin ([`origin_name`]).
//! The application writing the same column is not affected: its
//! transactions carry no origin and are synced as usual.
//!
//! The origin functions are superuser-only unless granted; without them
//! `run` stops at start with the `GRANT`s to run, rather than write back
//! with an echo.

use serde::Deserialize;
use tokio_postgres::Client;

use super::event::ReportingEvent;
use crate::config::{Config, ConfigError};
use crate::pg::quote::{quote_ident, quoted_table};
use crate::pg::PgError;

/// `[[webhooks.write_back]]`: on a reporting event, set one column of the
/// synced row of the customer it names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBackConfig {
    /// The event's metric, e.g. `unsubscribed`, `bounced`, `spammed`.
    pub metric: String,
    /// Only events of this object type (`email`, `customer`, …); default any.
    #[serde(default)]
    pub object_type: Option<String>,
    /// A `[[sync]]` table; default the first one.
    #[serde(default)]
    pub table: Option<String>,
    /// The column to set.
    pub column: String,
    /// `true`, `false`, or `event_time` (the event's timestamp).
    pub value: WriteValue,
    /// Find the row by the customer id (`id`, the table's `id_column`) or by
    /// `email` (`email_column`, compared case-insensitively). Default `id`.
    #[serde(default)]
    pub match_by: MatchBy,
    /// The email column, with `match_by = "email"`.
    #[serde(default)]
    pub email_column: Option<String>,
}

/// What the column is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteValue {
    True,
    False,
    EventTime,
}

/// How the row is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchBy {
    #[default]
    Id,
    Email,
}

/// One write-back, resolved against the config: when it applies and the
/// statement (`$1` the customer id or email, `$2` the event's Unix time).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteBack {
    pub metric: String,
    pub object_type: Option<String>,
    pub match_by: MatchBy,
    pub statement: String,
    /// The statement takes the event's time as `$2`.
    pub uses_time: bool,
}

impl WriteBack {
    /// Whether `event` triggers it.
    pub fn applies_to(&self, event: &ReportingEvent) -> bool {
        event.metric == self.metric
            && self.object_type.as_deref().is_none_or(|t| t == event.object_type)
    }
}

/// The replication origin this slot's write-backs carry.
pub fn origin_name(slot: &str) -> String {
    format!("ciosync_write_back_{slot}")
}

/// The configured write-backs, resolved; the field named when one is wrong.
pub fn resolve(config: &Config) -> Result<Vec<WriteBack>, ConfigError> {
    let Some(hooks) = &config.webhooks else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (i, wb) in hooks.write_back.iter().enumerate() {
        let field = |key: &str| format!("webhooks.write_back[{i}].{key}");
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            field: field(key),
            message: message.to_owned(),
        };
        if wb.metric.trim().is_empty() {
            return Err(invalid("metric", "must name a metric, e.g. unsubscribed"));
        }
        if wb.column.trim().is_empty() {
            return Err(invalid("column", "must name the column to set"));
        }
        let sync = match &wb.table {
            None => config.sync.first(),
            Some(table) => {
                let wanted = table.split_once('.').unwrap_or(("public", table));
                config.sync.iter().find(|s| s.schema_and_name() == wanted)
            }
        }
        .ok_or_else(|| invalid("table", "must be a [[sync]] table"))?;
        let (schema, name) = sync.schema_and_name();
        let value = match wb.value {
            WriteValue::True => "true".to_owned(),
            WriteValue::False => "false".to_owned(),
            WriteValue::EventTime => "to_timestamp($2::float8)".to_owned(),
        };
        let matches = match wb.match_by {
            MatchBy::Id => format!("{}::text = $1", quote_ident(&sync.id_column)),
            MatchBy::Email => {
                let column =
                    wb.email_column.as_deref().filter(|c| !c.trim().is_empty()).ok_or_else(
                        || invalid("email_column", "is needed with match_by = \"email\""),
                    )?;
                format!("lower({}::text) = lower($1)", quote_ident(column))
            }
        };
        let column = quote_ident(&wb.column);
        // Only when it changes: no WAL, no trigger, for a repeated event.
        let statement = format!(
            "UPDATE {} SET {column} = {value} WHERE {matches} AND {column} IS DISTINCT FROM {value}",
            quoted_table(schema, name)
        );
        out.push(WriteBack {
            metric: wb.metric.clone(),
            object_type: wb.object_type.clone(),
            match_by: wb.match_by,
            statement,
            uses_time: wb.value == WriteValue::EventTime,
        });
    }
    Ok(out)
}

/// Creates the origin if missing and binds this session to it, so every
/// transaction of `sql` carries it. A missing privilege is definite, with
/// the `GRANT`s that fix it.
pub async fn bind_origin(sql: &Client, origin: &str) -> Result<(), PgError> {
    let result = async {
        sql.execute(
            "SELECT pg_catalog.pg_replication_origin_create($1) \
             WHERE pg_catalog.pg_replication_origin_oid($1) IS NULL",
            &[&origin],
        )
        .await?;
        sql.execute("SELECT pg_catalog.pg_replication_origin_session_setup($1)", &[&origin]).await
    }
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code().is_some_and(|c| c.code() == "42501") => Err(PgError::Definite(
            "webhooks.write_back needs the replication-origin functions, which are \
                 superuser-only by default: GRANT EXECUTE ON FUNCTION \
                 pg_catalog.pg_replication_origin_create(text), \
                 pg_catalog.pg_replication_origin_oid(text), \
                 pg_catalog.pg_replication_origin_session_setup(text) TO <role>; \
                 (without them a write-back would echo back to Customer.io, so none is done)"
                .to_owned(),
        )),
        Err(e) => {
            Err(PgError::Sql { what: "set up the write-back's replication origin", source: e })
        }
    }
}

/// Applies the write-backs `event` triggers, in the caller's transaction;
/// how many rows changed.
pub async fn apply(
    sql: &Client,
    write_backs: &[WriteBack],
    event: &ReportingEvent,
) -> Result<u64, PgError> {
    let mut changed = 0;
    for wb in write_backs.iter().filter(|wb| wb.applies_to(event)) {
        let key = match wb.match_by {
            MatchBy::Id => event.customer_id.as_deref(),
            MatchBy::Email => event.email.as_deref(),
        };
        let Some(key) = key.filter(|k| !k.is_empty()) else { continue };
        let time = event.occurred_at as f64;
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
            if wb.uses_time { &[&key, &time] } else { &[&key] };
        changed += sql
            .execute(&wb.statement, params)
            .await
            .map_err(PgError::sql("write back a reporting event"))?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(write_back: &str) -> Result<Vec<WriteBack>, ConfigError> {
        let text = format!(
            r#"
[postgres]
url = "postgres://u@127.0.0.1/db"
[customerio]
site_id = "s"
api_key = "k"
[[sync]]
table = "public.users"
id_column = "id"
[sync.attributes]
email = "email"
[webhooks]
listen = "127.0.0.1:8080"
signing_key = "k"
{write_back}
"#
        );
        let config = Config::from_toml(&text, Vec::new())?;
        resolve(&config)
    }

    #[test]
    fn statements_set_only_what_changes_on_the_matched_row() {
        let resolved = config(
            "[[webhooks.write_back]]\nmetric = \"unsubscribed\"\ncolumn = \"email_opt_out\"\nvalue = \"true\"\n\
             [[webhooks.write_back]]\nmetric = \"bounced\"\nobject_type = \"email\"\ncolumn = \"bounced_at\"\n\
             value = \"event_time\"\nmatch_by = \"email\"\nemail_column = \"email\"\n",
        )
        .unwrap();
        assert_eq!(
            resolved[0].statement,
            "UPDATE \"public\".\"users\" SET \"email_opt_out\" = true WHERE \"id\"::text = $1 \
             AND \"email_opt_out\" IS DISTINCT FROM true"
        );
        assert!(resolved[1].statement.contains("lower(\"email\"::text) = lower($1)"));
        assert!(resolved[1].statement.contains("\"bounced_at\" = to_timestamp($2::float8)"));
        assert_eq!(resolved[1].object_type.as_deref(), Some("email"));
    }

    #[test]
    fn bad_write_backs_name_the_field() {
        let err = |text: &str| config(text).unwrap_err().to_string();
        assert!(err("[[webhooks.write_back]]\nmetric = \"bounced\"\ncolumn = \"c\"\nvalue = \"true\"\ntable = \"other\"\n")
            .contains("webhooks.write_back[0].table"));
        assert!(err("[[webhooks.write_back]]\nmetric = \"bounced\"\ncolumn = \"c\"\nvalue = \"true\"\nmatch_by = \"email\"\n")
            .contains("webhooks.write_back[0].email_column"));
        assert!(err(
            "[[webhooks.write_back]]\nmetric = \"bounced\"\ncolumn = \"c\"\nvalue = \"maybe\"\n"
        )
        .contains("value"));
    }
}
