//! `[webhooks]`: the reporting-webhook receiver's settings. The section is
//! optional; without it nothing listens and no table is created.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::listener::Limits;
use crate::pg::name::TableName;
use crate::pg::quote::{quote_ident, quote_literal, quoted_table};
use crate::secret::Secret;

/// Default path Customer.io posts to.
pub const DEFAULT_PATH: &str = "/webhooks/customerio";
/// Default table the events are stored in.
pub const DEFAULT_TABLE: &str = "ciosync.message_events";
/// Default allowed distance between `X-CIO-Timestamp` and our clock, seconds.
pub const DEFAULT_TIMESTAMP_TOLERANCE_SECS: u64 = 300;
/// Default largest body accepted: 1 MiB. A reporting event is a few KB; a
/// `sent` event with "Body Content" on carries the message, still far less.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default time a client has to send a request's headers, seconds.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// Default most connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default time a kept-alive connection may stay silent, seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 30;
/// Default budget of request-body bytes held at once over all connections:
/// 16 MiB, sixteen bodies of the largest size by default.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;
/// Largest `max_buffered_bytes` accepted: 1 GiB.
pub const MAX_BUFFERED_BYTES: usize = 1024 * 1024 * 1024;

/// `[webhooks]`: receive Customer.io's reporting webhooks (opened, clicked,
/// bounced, …) and store each event once in a Postgres table. It listens on
/// its own address, meant to face Customer.io through an ingress or reverse
/// proxy that terminates TLS; ciosync itself speaks plain HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// IP address and port to listen on, e.g. `0.0.0.0:8080`. Required.
    /// Must differ from `metrics.listen`, which must never face the internet.
    /// Env: `CIOSYNC_WEBHOOKS_LISTEN`.
    pub listen: String,
    /// The path Customer.io posts to. Default `/webhooks/customerio`.
    #[serde(default = "default_path")]
    pub path: String,
    /// The reporting webhook's signing key (Customer.io: Settings → Reporting
    /// webhooks). Not empty. Required unless only `[[webhooks.actions]]`
    /// are wanted (then `path` serves nothing). Env:
    /// `CIOSYNC_WEBHOOKS_SIGNING_KEY`.
    #[serde(default)]
    pub signing_key: Option<Secret>,
    /// `schema.table` the events go into; created (with the schema) when
    /// missing. Default `ciosync.message_events`.
    #[serde(default = "default_table")]
    pub table: String,
    /// A request whose `X-CIO-Timestamp` is further than this from now, in
    /// either direction, is refused (401) as a replay, seconds (1-86400).
    /// Default 300.
    #[serde(default = "default_timestamp_tolerance_secs")]
    pub timestamp_tolerance_secs: u64,
    /// Largest request body accepted, bytes (1 KiB-64 MiB); larger ones are
    /// refused (413) before they are read whole. Default 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers, seconds (1-300); a
    /// connection still sending them then is closed, so slow clients cannot
    /// hold connections open. Default 10.
    #[serde(default = "default_header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// Time a kept-alive connection may stay silent after an answer before
    /// it is closed, seconds (1-3600). Default 30.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Most connections open at once (1-65536). At the cap, the oldest
    /// connection without a request in progress (still sending its
    /// headers, or idle) is closed to make room for a newcomer; only when
    /// all are serving requests is the newcomer refused (503). Default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Request-body bytes held in memory at once over all connections
    /// (`max_body_bytes` to 1 GiB); a body arriving while the budget is
    /// spent is refused (503, Customer.io retries), so many slow senders
    /// cannot take more memory than this. Default 16 MiB.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: usize,
    /// Events that set a column of the synced row (`[[webhooks.write_back]]`).
    #[serde(default)]
    pub write_back: Vec<WriteBackConfig>,
    /// Campaign webhook actions (`[[webhooks.actions]]`), each on
    /// `<path>/actions/<name>`.
    #[serde(default)]
    pub actions: Vec<super::actions::ActionConfig>,
}

fn default_path() -> String {
    DEFAULT_PATH.to_owned()
}
fn default_table() -> String {
    DEFAULT_TABLE.to_owned()
}
fn default_timestamp_tolerance_secs() -> u64 {
    DEFAULT_TIMESTAMP_TOLERANCE_SECS
}
fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_header_timeout_secs() -> u64 {
    DEFAULT_HEADER_TIMEOUT_SECS
}
fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_idle_timeout_secs() -> u64 {
    DEFAULT_IDLE_TIMEOUT_SECS
}
fn default_max_buffered_bytes() -> usize {
    DEFAULT_MAX_BUFFERED_BYTES
}

impl WebhooksConfig {
    /// The address to listen on; [`WebhooksConfig::validate`] checked that it parses.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.trim().parse().map_err(|_| ConfigError::Invalid {
            field: "webhooks.listen".to_owned(),
            message: format!(
                "must be an IP address and a port, such as 0.0.0.0:8080 (got {:?})",
                self.listen
            ),
        })
    }

    /// The table as (schema, name); `validate` checked both are identifiers.
    pub fn schema_and_table(&self) -> (&str, &str) {
        self.table.split_once('.').unwrap_or(("public", &self.table))
    }

    /// What a client may hold of the receiver's listener.
    pub fn limits(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections,
        }
    }

    /// The timestamp tolerance as a duration.
    pub fn timestamp_tolerance(&self) -> Duration {
        Duration::from_secs(self.timestamp_tolerance_secs)
    }

    /// Checks every value, naming the first bad field. `metrics_listen` is
    /// the metrics endpoint's address, which this one must not share.
    pub fn validate(&self, metrics_listen: Option<SocketAddr>) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            field: format!("webhooks.{field}"),
            message,
        };
        let addr = self.listen_addr()?;
        if let Some(metrics) = metrics_listen {
            let same_port = addr.port() == metrics.port() && addr.port() != 0;
            let overlaps = addr.ip() == metrics.ip()
                || addr.ip().is_unspecified()
                || metrics.ip().is_unspecified();
            if same_port && overlaps {
                return Err(invalid(
                    "listen",
                    format!(
                        "must differ from metrics.listen ({metrics}): the metrics endpoint must \
                         never face the internet, the webhook receiver does"
                    ),
                ));
            }
        }
        if !is_receiver_path(&self.path) {
            return Err(invalid(
                "path",
                format!(
                    "must be a path such as {DEFAULT_PATH}: a leading /, then letters, digits, \
                     / - _ . ~, and not /healthz or /readyz (got {:?})",
                    self.path
                ),
            ));
        }
        let key = self.signing_key.as_ref().map(|k| k.expose().trim());
        if key.is_none() && !self.write_back.is_empty() {
            return Err(invalid(
                "signing_key",
                "is needed by [[webhooks.write_back]], which acts on reporting webhooks \
                 (or set CIOSYNC_WEBHOOKS_SIGNING_KEY)"
                    .to_owned(),
            ));
        }
        if key.is_some_and(str::is_empty) || (key.is_none() && self.actions.is_empty()) {
            return Err(invalid(
                "signing_key",
                "must not be empty: copy the reporting webhook's signing key from Customer.io \
                 (or set CIOSYNC_WEBHOOKS_SIGNING_KEY)"
                    .to_owned(),
            ));
        }
        match self.table.split_once('.') {
            Some((schema, table)) if is_plain_identifier(schema) && is_plain_identifier(table) => {}
            _ => {
                return Err(invalid(
                    "table",
                    format!(
                        "must be schema.table, each 1 to 63 lower-case letters, digits or \
                         underscores, not starting with a digit (got {:?})",
                        self.table
                    ),
                ))
            }
        }
        self.validate_limits()
    }

    /// The numeric limits: tolerance, sizes, timeouts, connections.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            field: format!("webhooks.{field}"),
            message,
        };
        if !(1..=86_400).contains(&self.timestamp_tolerance_secs) {
            return Err(invalid(
                "timestamp_tolerance_secs",
                "must be between 1 and 86400".to_owned(),
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid(
                "max_body_bytes",
                "must be between 1024 and 67108864 (64 MiB)".to_owned(),
            ));
        }
        if !(1..=300).contains(&self.header_timeout_secs) {
            return Err(invalid("header_timeout_secs", "must be between 1 and 300".to_owned()));
        }
        if !(1..=3600).contains(&self.idle_timeout_secs) {
            return Err(invalid("idle_timeout_secs", "must be between 1 and 3600".to_owned()));
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return Err(invalid("max_connections", "must be between 1 and 65536".to_owned()));
        }
        if !(self.max_body_bytes..=MAX_BUFFERED_BYTES).contains(&self.max_buffered_bytes) {
            return Err(invalid(
                "max_buffered_bytes",
                format!(
                    "must be between max_body_bytes ({}) and 1073741824 (1 GiB): one body of \
                     the largest size must fit",
                    self.max_body_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// A path the receiver can serve: a leading `/`, then URL-safe characters,
/// no empty segment, and not one of the listener's probes.
fn is_receiver_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
        && !path.contains("//")
        && !matches!(path, "/healthz" | "/readyz")
}

/// A name usable unquoted: 1 to 63 lower-case letters, digits or
/// underscores, not starting with a digit.
fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

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
    pub table: Option<TableName>,
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
        // Webhooks name people: an object or membership table matches no id.
        let sync = match &wb.table {
            None => config.people().next(),
            Some(table) => config.people().find(|s| s.table == *table),
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
        let update = format!(
            "UPDATE {} SET {column} = {value} WHERE {matches} AND {column} IS DISTINCT FROM {value}",
            quoted_table(schema, name)
        );
        let statement = if forgets_nothing(sync, &[&wb.column]) {
            update
        } else {
            let returning =
                format!("{update} RETURNING {}::text AS customer_id", quote_ident(&sync.id_column));
            forgetting_written(config, sync, &[&wb.column], returning, None)
        };
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

/// Whether writing `columns` leaves the record of what Customer.io
/// accepted as it is: none is mapped or watched for change events.
fn forgets_nothing(sync: &super::SyncConfig, columns: &[&str]) -> bool {
    !sync.attributes.values().any(|c| columns.contains(&c.as_str()))
        && !sync.events.iter().any(|e| columns.contains(&e.column()))
}

/// `update` (an UPDATE of `sync`'s table `RETURNING <id>::text AS
/// customer_id`, written by ciosync and so never streamed), with the
/// record forgetting what it held of the written `columns`.
///
/// The attributes mapped from them leave the record (Customer.io did not
/// get the write), so the application's next change of a column is sent,
/// even back to the value the record held; so do the values kept for
/// change events, so the next change records the value anew instead of
/// firing an event for ciosync's own write. One row per written row.
///
/// `present`: a jsonb expression holding the values written, when the
/// statement writes only the columns it has (a webhook action): a column
/// it lacks was not written, so the record keeps what it held of it.
pub fn forgetting_written(
    config: &Config,
    sync: &super::SyncConfig,
    columns: &[&str],
    update: String,
    present: Option<&str>,
) -> String {
    if forgets_nothing(sync, columns) {
        return update;
    }
    // `jsonb - text[]` skips NULL elements: a key whose column was not written.
    let key = |key: &str, column: &str| match present {
        None => quote_literal(key),
        Some(values) => format!(
            "CASE WHEN {values} ? {} THEN {} END",
            quote_literal(column),
            quote_literal(key)
        ),
    };
    let mapped: Vec<String> = sync
        .attributes
        .iter()
        .filter(|(_, column)| columns.contains(&column.as_str()))
        .map(|(attribute, column)| key(attribute, column))
        .collect();
    let watched: Vec<String> = sync
        .events
        .iter()
        .filter(|event| columns.contains(&event.column()))
        .map(|event| key(&event.watch_key(), event.column()))
        .collect();
    format!(
        "WITH written AS ({update}), \
         forgotten AS (UPDATE ciosync.accepted a SET attributes = a.attributes - \
         ARRAY[{}]::text[], watched = a.watched - ARRAY[{}]::text[] FROM written w \
         WHERE a.slot = {} AND a.customer_id = w.customer_id COLLATE pg_catalog.\"C\") \
         SELECT 1 FROM written",
        mapped.join(", "),
        watched.join(", "),
        quote_literal(&config.postgres.slot)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> WebhooksConfig {
        toml::from_str(text).expect("valid section")
    }

    const MINIMAL: &str = "listen = \"0.0.0.0:8080\"\nsigning_key = \"k\"\n";

    #[test]
    fn defaults() {
        let config = parse(MINIMAL);
        config.validate(Some("127.0.0.1:9820".parse().unwrap())).unwrap();
        assert_eq!(config.path, DEFAULT_PATH);
        assert_eq!(config.schema_and_table(), ("ciosync", "message_events"));
        assert_eq!(config.timestamp_tolerance_secs, 300);
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.header_timeout_secs, 10);
        assert_eq!(config.max_connections, 256);
        assert_eq!(config.idle_timeout_secs, 30);
        assert_eq!(config.max_buffered_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn bad_values_name_the_field() {
        let metrics = Some("127.0.0.1:9820".parse().unwrap());
        let cases = [
            ("listen = \"0.0.0.0:9820\"\nsigning_key = \"k\"", "webhooks.listen"),
            ("listen = \"127.0.0.1:9820\"\nsigning_key = \"k\"", "webhooks.listen"),
            ("listen = \"localhost\"\nsigning_key = \"k\"", "webhooks.listen"),
            ("listen = \"0.0.0.0:8080\"\nsigning_key = \" \"", "webhooks.signing_key"),
            (&format!("{MINIMAL}path = \"hooks\""), "webhooks.path"),
            (&format!("{MINIMAL}path = \"/readyz\""), "webhooks.path"),
            (&format!("{MINIMAL}table = \"events\""), "webhooks.table"),
            (&format!("{MINIMAL}table = \"a.b; DROP\""), "webhooks.table"),
            (&format!("{MINIMAL}table = \"A.b\""), "webhooks.table"),
            (
                &format!("{MINIMAL}timestamp_tolerance_secs = 0"),
                "webhooks.timestamp_tolerance_secs",
            ),
            (&format!("{MINIMAL}max_body_bytes = 10"), "webhooks.max_body_bytes"),
            (&format!("{MINIMAL}header_timeout_secs = 0"), "webhooks.header_timeout_secs"),
            (&format!("{MINIMAL}max_connections = 0"), "webhooks.max_connections"),
            (&format!("{MINIMAL}idle_timeout_secs = 0"), "webhooks.idle_timeout_secs"),
            (&format!("{MINIMAL}max_buffered_bytes = 1000"), "webhooks.max_buffered_bytes"),
            (
                &format!("{MINIMAL}max_body_bytes = 4096\nmax_buffered_bytes = 4095"),
                "webhooks.max_buffered_bytes",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).validate(metrics).unwrap_err().to_string();
            assert!(err.contains(field), "expected {field} in: {err}");
        }
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let config = parse("listen = \"0.0.0.0:8080\"\nsigning_key = \"whsec-very-secret\"");
        assert!(!format!("{config:?}").contains("whsec-very-secret"));
    }

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
