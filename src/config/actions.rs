//! `[[webhooks.actions]]`: endpoints for Customer.io's campaign webhook
//! actions ("Send and receive data"), each writing into Postgres what a
//! campaign decided: segment memberships, columns of the synced row, rows
//! appended to a table. Validated here; [`resolve`] turns each into what
//! the receiver runs ([`Action`]).
//!
//! A campaign's webhook is unsigned: each action has its own secret, sent
//! as Basic auth (`https://ciosync:<secret>@host/…` in the action's URL) or
//! as `Authorization: Bearer <secret>`. The secret comes from
//! `CIOSYNC_WEBHOOKS_ACTIONS_<NAME>_SECRET` (the name upper-cased, `-` as
//! `_`) or, less safely, the file's `secret`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::webhooks::MatchBy;
use super::{Config, ConfigError};
use crate::pg::name::TableName;
use crate::secret::Secret;

/// Default table of segment memberships.
pub const DEFAULT_SEGMENT_TABLE: &str = "ciosync.segment_memberships";
/// Default Basic-auth user name.
pub const DEFAULT_USERNAME: &str = "ciosync";
/// Default time an idempotency key is remembered: 7 days, the period over
/// which Customer.io retries a reporting webhook (UNCONFIRMED for actions).
pub const DEFAULT_DEDUPE_WINDOW_SECS: u64 = 7 * 24 * 3600;
/// Shortest secret accepted: guessing one must be hopeless.
pub const MIN_SECRET_LEN: usize = 16;
/// The environment variable prefix of action secrets.
pub const SECRET_ENV_PREFIX: &str = "CIOSYNC_WEBHOOKS_ACTIONS_";

/// What an action does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Keep a table of segment memberships: a person entered or left.
    Segment,
    /// Set columns of a `[[sync]]` table's row, never echoed back.
    Update,
    /// Append a row to a table, the body kept as jsonb beside it.
    Insert,
}

/// Which way a segment action moves a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Enter,
    Leave,
}

/// `[[webhooks.actions]]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The endpoint's name: `<webhooks.path>/actions/<name>`. 1 to 63
    /// lower-case letters, digits, `-` or `_`.
    pub name: String,
    /// `segment`, `update` or `insert`.
    pub kind: ActionKind,
    /// The shared secret (at least 16 characters). Better from
    /// `CIOSYNC_WEBHOOKS_ACTIONS_<NAME>_SECRET`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// The Basic-auth user name. Default `ciosync`.
    #[serde(default = "default_username")]
    pub username: String,
    /// `segment`: the memberships table, created when missing (default
    /// `ciosync.segment_memberships`). `update`: a `[[sync]]` table
    /// (default the first). `insert`: the table to append to (required;
    /// it must exist).
    #[serde(default)]
    pub table: Option<TableName>,
    /// Where in the body the customer id is (a dotted path such as
    /// `customer.id`). Default `customer_id`; with `match_by = "email"`,
    /// where the email is (default `email`).
    #[serde(default)]
    pub customer_id: Option<String>,
    /// `update`: find the row by `id` (the table's `id_column`) or `email`
    /// (`email_column`, compared case-insensitively). Default `id`.
    #[serde(default)]
    pub match_by: MatchBy,
    /// `update` with `match_by = "email"`: the email column.
    #[serde(default)]
    pub email_column: Option<String>,
    /// `segment`: where the segment's id or name is. Default `segment`.
    #[serde(default)]
    pub segment: Option<String>,
    /// `segment`: `enter` or `leave`, when the action always moves one way.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// `segment`: where the body says which way, when one action does both
    /// (`enter`/`entered`/`true` or `leave`/`left`/`false`).
    #[serde(default)]
    pub direction_field: Option<String>,
    /// Where the time of the change is (Unix seconds, or an RFC 3339
    /// string). `segment`: a change older than the one already applied is
    /// ignored, so a late retry cannot undo a newer change. Default: none
    /// (the time the request arrived).
    #[serde(default)]
    pub occurred_at: Option<String>,
    /// `update` and `insert`: column = where its value is in the body.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// `insert`: the jsonb column that gets the whole body; `""` for none.
    /// Default `payload`.
    #[serde(default)]
    pub body_column: Option<String>,
    /// Where the request's idempotency key is. Default: the
    /// `X-CIO-Idempotency-Key` header when sent, else a hash of the body.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// How long a key is remembered, seconds (60 to 90 days). Default 7 days.
    #[serde(default = "default_dedupe_window_secs")]
    pub dedupe_window_secs: u64,
}

fn default_username() -> String {
    DEFAULT_USERNAME.to_owned()
}
fn default_dedupe_window_secs() -> u64 {
    DEFAULT_DEDUPE_WINDOW_SECS
}

/// A place in the JSON body: object keys and array indexes, from a dotted
/// path such as `customer.id` or `items.0.sku`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
}

impl FieldPath {
    /// Parses a dotted path; no empty step.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.split('.').any(str::is_empty) || text.len() > 256 {
            return Err(format!(
                "must be a dotted path into the body such as customer.id (got {text:?})"
            ));
        }
        Ok(Self { text: text.to_owned() })
    }

    /// The value at this path in `body`, if any (`null` counts as present).
    pub fn find<'a>(&self, body: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        self.text.split('.').try_fold(body, |value, step| match value {
            serde_json::Value::Object(map) => map.get(step),
            serde_json::Value::Array(items) => {
                step.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        })
    }

    /// The path as written, for messages.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// How a segment action knows which way a person moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    Always(Direction),
    Field(FieldPath),
}

/// What an action writes, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Segment memberships in `table`.
    Segment { table: TableName, segment: FieldPath, which: Which },
    /// Columns of a synced table's row; the statement takes `$1` the
    /// customer id (or email) and `$2` the new values as a jsonb object.
    Update { table: TableName, columns: Vec<(String, FieldPath)>, statement: String },
    /// A row appended to `table`.
    Insert { table: TableName, columns: Vec<(String, FieldPath)>, body_column: Option<String> },
}

/// One action, resolved against the config.
#[derive(Debug, Clone)]
pub struct Action {
    pub name: String,
    pub username: String,
    pub secret: Secret,
    /// Where the customer id (or email) is.
    pub customer: FieldPath,
    pub occurred_at: Option<FieldPath>,
    pub idempotency_key: Option<FieldPath>,
    pub dedupe_window: Duration,
    pub effect: Effect,
}

impl Action {
    /// The kind's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self.effect {
            Effect::Segment { .. } => "segment",
            Effect::Update { .. } => "update",
            Effect::Insert { .. } => "insert",
        }
    }

    /// Whether its writes must carry the write-back origin so the source
    /// skips them: they touch a table ciosync streams.
    pub fn writes_streamed_table(&self, config: &Config) -> bool {
        match &self.effect {
            Effect::Segment { .. } => false,
            Effect::Update { .. } => true,
            Effect::Insert { table, .. } => {
                config.sync.iter().any(|s| s.table == *table)
                    || config.events.iter().any(|e| e.table == *table)
            }
        }
    }
}

/// The environment variable holding `name`'s secret.
pub fn secret_variable(name: &str) -> String {
    format!("{SECRET_ENV_PREFIX}{}_SECRET", name.to_ascii_uppercase().replace('-', "_"))
}

/// Sets the `secret` of the action a `CIOSYNC_WEBHOOKS_ACTIONS_<NAME>_SECRET`
/// variable names, in the parsed document; an action the file lacks is an
/// error naming the variable, like an unknown key.
pub fn apply_secret_env(
    doc: &mut toml::Table,
    variable: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let unknown = || {
        ConfigError::invalid(
            variable,
            "names no [[webhooks.actions]] entry (the variable is CIOSYNC_WEBHOOKS_ACTIONS_<NAME>_SECRET, \
             the name upper-cased with - as _)",
        )
    };
    let actions = doc
        .get_mut("webhooks")
        .and_then(|w| w.get_mut("actions"))
        .and_then(toml::Value::as_array_mut)
        .ok_or_else(unknown)?;
    let entry = actions
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|t| {
            t.get("name")
                .and_then(toml::Value::as_str)
                .is_some_and(|n| secret_variable(n) == variable)
        })
        .ok_or_else(unknown)?;
    entry.insert("secret".to_owned(), toml::Value::String(value.to_owned()));
    Ok(())
}

/// Every configured action, resolved; the first bad field named.
pub fn resolve(config: &Config) -> Result<Vec<Action>, ConfigError> {
    let Some(hooks) = &config.webhooks else { return Ok(Vec::new()) };
    let mut out: Vec<Action> = Vec::new();
    for (i, action) in hooks.actions.iter().enumerate() {
        let resolved = resolve_one(config, action, &|key| format!("webhooks.actions[{i}].{key}"))?;
        if out.iter().any(|a| secret_variable(&a.name) == secret_variable(&resolved.name)) {
            return Err(ConfigError::invalid(
                format!("webhooks.actions[{i}].name"),
                format!(
                    "{:?} is used by an earlier action, or differs from one only by - and _ \
                     (both would take their secret from {}); names must differ",
                    resolved.name,
                    secret_variable(&resolved.name)
                ),
            ));
        }
        out.push(resolved);
    }
    Ok(out)
}

fn resolve_one(
    config: &Config,
    a: &ActionConfig,
    field: &dyn Fn(&str) -> String,
) -> Result<Action, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::invalid(field(key), message);
    let path = |key: &str, text: Option<&String>, default: &str| {
        FieldPath::parse(text.map_or(default, String::as_str)).map_err(|m| invalid(key, m))
    };
    if !is_action_name(&a.name) {
        return Err(invalid(
            "name",
            format!("must be 1 to 63 lower-case letters, digits, - or _ (got {:?})", a.name),
        ));
    }
    let secret = a.secret.clone().filter(|s| !s.expose().trim().is_empty()).ok_or_else(|| {
        invalid(
            "secret",
            format!("is missing: set {} (or secret in the file)", secret_variable(&a.name)),
        )
    })?;
    if secret.expose().len() < MIN_SECRET_LEN || secret.expose().contains(char::is_whitespace) {
        return Err(invalid(
            "secret",
            format!("must be at least {MIN_SECRET_LEN} characters without blanks, e.g. `openssl rand -hex 24`"),
        ));
    }
    if a.username.is_empty() || a.username.contains([':', ' ']) {
        return Err(invalid("username", "must be a user name without : or blanks".to_owned()));
    }
    if !(60..=90 * 24 * 3600).contains(&a.dedupe_window_secs) {
        return Err(invalid(
            "dedupe_window_secs",
            "must be between 60 and 7776000 (90 days)".to_owned(),
        ));
    }
    let default_customer = if a.match_by == MatchBy::Email { "email" } else { "customer_id" };
    let customer = path("customer_id", a.customer_id.as_ref(), default_customer)?;
    let occurred_at =
        a.occurred_at.as_ref().map(|p| path("occurred_at", Some(p), "")).transpose()?;
    let idempotency_key =
        a.idempotency_key.as_ref().map(|p| path("idempotency_key", Some(p), "")).transpose()?;
    let unused = |key: &str, set: bool, kinds: &str| {
        if set {
            Err(invalid(key, format!("applies only to kind = {kinds}")))
        } else {
            Ok(())
        }
    };
    let effect =
        match a.kind {
            ActionKind::Segment => {
                unused("columns", !a.columns.is_empty(), "\"update\" or \"insert\"")?;
                unused("body_column", a.body_column.is_some(), "\"insert\"")?;
                unused("email_column", a.email_column.is_some(), "\"update\"")?;
                unused("match_by", a.match_by != MatchBy::Id, "\"update\"")?;
                let table = a
                    .table
                    .clone()
                    .unwrap_or_else(|| TableName::parse(DEFAULT_SEGMENT_TABLE).expect("valid"));
                let which = match (&a.direction, &a.direction_field) {
                    (Some(d), None) => Which::Always(*d),
                    (None, Some(p)) => Which::Field(path("direction_field", Some(p), "")?),
                    _ => return Err(invalid(
                        "direction",
                        "set exactly one of direction (\"enter\" or \"leave\") and direction_field"
                            .to_owned(),
                    )),
                };
                Effect::Segment {
                    table,
                    segment: path("segment", a.segment.as_ref(), "segment")?,
                    which,
                }
            }
            ActionKind::Update => {
                unused("segment", a.segment.is_some(), "\"segment\"")?;
                unused(
                    "direction",
                    a.direction.is_some() || a.direction_field.is_some(),
                    "\"segment\"",
                )?;
                unused("body_column", a.body_column.is_some(), "\"insert\"")?;
                update_effect(config, a, &invalid, &path)?
            }
            ActionKind::Insert => {
                unused("segment", a.segment.is_some(), "\"segment\"")?;
                unused(
                    "direction",
                    a.direction.is_some() || a.direction_field.is_some(),
                    "\"segment\"",
                )?;
                unused("email_column", a.email_column.is_some(), "\"update\"")?;
                let table = a.table.clone().ok_or_else(|| {
                    invalid("table", "is needed: the table to append to".to_owned())
                })?;
                let columns = columns(a, &invalid, &path)?;
                let body_column = match a.body_column.as_deref() {
                    None => Some("payload".to_owned()),
                    Some("") => None,
                    Some(c) => Some(c.to_owned()),
                };
                if columns.is_empty() && body_column.is_none() {
                    return Err(invalid(
                        "columns",
                        "must map at least one column, or keep body_column".to_owned(),
                    ));
                }
                Effect::Insert { table, columns, body_column }
            }
        };
    Ok(Action {
        name: a.name.clone(),
        username: a.username.clone(),
        secret,
        customer,
        occurred_at,
        idempotency_key,
        dedupe_window: Duration::from_secs(a.dedupe_window_secs),
        effect,
    })
}

type Invalid<'a> = dyn Fn(&str, String) -> ConfigError + 'a;
type PathOf<'a> = dyn Fn(&str, Option<&String>, &str) -> Result<FieldPath, ConfigError> + 'a;

fn columns(
    a: &ActionConfig,
    invalid: &Invalid,
    path: &PathOf,
) -> Result<Vec<(String, FieldPath)>, ConfigError> {
    a.columns
        .iter()
        .map(|(column, at)| {
            if column.trim().is_empty() {
                return Err(invalid("columns", "a column name is empty".to_owned()));
            }
            Ok((column.clone(), path(&format!("columns.{column}"), Some(at), "")?))
        })
        .collect()
}

fn update_effect(
    config: &Config,
    a: &ActionConfig,
    invalid: &Invalid,
    path: &PathOf,
) -> Result<Effect, ConfigError> {
    // Actions name people: an object or membership table matches no id.
    let sync = match &a.table {
        None => config.people().next(),
        Some(table) => config.people().find(|s| s.table == *table),
    }
    .ok_or_else(|| invalid("table", "must be a [[sync]] table".to_owned()))?;
    let columns = columns(a, invalid, path)?;
    if columns.is_empty() {
        return Err(invalid("columns", "must map at least one column to set".to_owned()));
    }
    if columns.iter().any(|(c, _)| *c == sync.id_column) {
        return Err(invalid("columns", format!("must not set the id column {:?}", sync.id_column)));
    }
    let matches = match a.match_by {
        // The text converted to the id column's type (as JSON converts), so
        // the comparison can use the table's primary key index.
        MatchBy::Id => format!(
            "t.{id} = (jsonb_populate_record(NULL::{}, jsonb_build_object({}, $1::text))).{id}",
            sync.table.quoted(),
            crate::pg::quote::quote_literal(&sync.id_column),
            id = crate::pg::quote::quote_ident(&sync.id_column),
        ),
        MatchBy::Email => {
            let column =
                a.email_column.as_deref().filter(|c| !c.trim().is_empty()).ok_or_else(|| {
                    invalid("email_column", "is needed with match_by = \"email\"".to_owned())
                })?;
            format!("lower(t.{}::text) = lower($1)", crate::pg::quote::quote_ident(column))
        }
    };
    let written: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let statement = super::webhooks::forgetting_written(
        config,
        sync,
        &written,
        update_sql(&sync.table, &written, &matches, &sync.id_column),
        Some("$2::jsonb"),
    );
    Ok(Effect::Update { table: sync.table.clone(), columns, statement })
}

/// The UPDATE of an `update` action: each written column takes the body's
/// value converted as Postgres converts JSON to the column's type
/// (`jsonb_populate_record`) when the body has it, and only when some
/// value differs (no WAL, no trigger for a repeat).
fn update_sql(table: &TableName, columns: &[&str], matches: &str, id_column: &str) -> String {
    use crate::pg::quote::{quote_ident, quote_literal};
    let new = |c: &str| {
        format!(
            "CASE WHEN $2::jsonb ? {} THEN v.{q} ELSE t.{q} END",
            quote_literal(c),
            q = quote_ident(c)
        )
    };
    let sets: Vec<String> =
        columns.iter().map(|c| format!("{} = {}", quote_ident(c), new(c))).collect();
    let old: Vec<String> = columns.iter().map(|c| format!("t.{}", quote_ident(c))).collect();
    let fresh: Vec<String> = columns.iter().map(|c| new(c)).collect();
    format!(
        "UPDATE {t} AS t SET {} FROM jsonb_populate_record(NULL::{t}, $2::jsonb) AS v \
         WHERE {matches} AND ROW({}) IS DISTINCT FROM ROW({}) RETURNING t.{}::text AS customer_id",
        sets.join(", "),
        old.join(", "),
        fresh.join(", "),
        quote_ident(id_column),
        t = table.quoted(),
    )
}

/// An endpoint name: 1 to 63 of `a-z 0-9 - _`.
fn is_action_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
#[path = "actions_tests.rs"]
mod tests;
