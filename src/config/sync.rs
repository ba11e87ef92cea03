//! `[[sync]]` (tables whose rows are people) and `[[events]]` (tables whose
//! inserts are events).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;
use crate::pg::name::TableName;
use crate::track_api;

/// What to do in Customer.io when a row's id column changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnIdChange {
    /// Identify the new id, then merge the old person into it, so the
    /// person's history follows them.
    #[default]
    Merge,
    /// Identify the new id, then delete the old person.
    DeleteOld,
}

/// `on_schema_change`: what a table's schema change that would leave
/// Customer.io stale or give an attribute another JSON type does (a mapped,
/// id, event or soft-delete column renamed or dropped, or retyped to a type
/// whose values become another JSON type). See `crate::schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSchemaChange {
    /// Stop at the first change of the table that would lose or mistype
    /// data: nothing after it is sent or acknowledged until the config or
    /// the table is repaired (`/readyz` fails, the metric and the alert fire).
    #[default]
    Pause,
    /// Go on without what broke (the attribute, the event data key), counted
    /// and alerting; once repaired, a backfill of the affected attributes
    /// re-sends them for every customer.
    Skip,
}

/// One `[[sync]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// `schema.table`, or `table` for `public.table`.
    pub table: TableName,
    /// Column whose value is the Customer.io customer id; must be unique and
    /// not null (primary key or unique index).
    pub id_column: String,
    /// Customer.io attribute name = column name.
    pub attributes: BTreeMap<String, String>,
    /// `merge` (default) or `delete_old`.
    #[serde(default)]
    pub on_id_change: OnIdChange,
    /// What removing a customer sends: `delete` (default) or `suppress`
    /// (delete and block the id, for erasure requests). Applies to a DELETE,
    /// a soft delete, and a row leaving the filter.
    #[serde(default)]
    pub delete_action: DeleteAction,
    /// A column whose turning non-NULL means the row is deleted (e.g.
    /// `deleted_at`); turning NULL again identifies the customer in full.
    #[serde(default)]
    pub soft_delete_column: Option<String>,
    /// Events sent when a column of a row changes (`[[sync.events]]`).
    #[serde(default)]
    pub events: Vec<ChangeEventConfig>,
    /// Only rows for which this SQL boolean expression is true are synced,
    /// e.g. `email_verified AND NOT is_staff`. It becomes the publication's
    /// row filter (`FOR TABLE t WHERE (…)`, PostgreSQL 15), so a row that
    /// stops matching is deleted in Customer.io and one that starts matching
    /// is identified; the initial copy and backfills read matching rows only.
    /// Its columns must be in the table's replica identity. Default: none.
    #[serde(default)]
    pub filter: Option<String>,
    /// `pause` (default) or `skip`.
    #[serde(default)]
    pub on_schema_change: OnSchemaChange,
    /// What the rows are in Customer.io: people (`[[sync]]`), or set by
    /// `[[objects]]` and `[[relationships]]` as they resolve.
    #[serde(skip)]
    pub target: Target,
}

/// What a synced table's rows are in Customer.io.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Target {
    /// People (`[[sync]]`).
    #[default]
    Person,
    /// Objects of this type (`[[objects]]`), by `id_column`.
    Object { object_type_id: String },
    /// Relationships of the person in `id_column` to the object of this
    /// type in `object_id_column` (`[[relationships]]`).
    Relationship { object_type_id: String, object_id_column: String },
}

impl SyncConfig {
    /// The table's schema and name, `public` when the config gives none.
    pub fn schema_and_name(&self) -> (&str, &str) {
        self.table.parts()
    }

    /// The columns the initial copy and backfills page the table by: the
    /// id column; a relationship's person and object columns (a person has
    /// several memberships; a pair listed twice is one relationship).
    pub fn key_columns(&self) -> Vec<String> {
        match &self.target {
            Target::Relationship { object_id_column, .. } => {
                vec![self.id_column.clone(), object_id_column.clone()]
            }
            _ => vec![self.id_column.clone()],
        }
    }

    /// The section the entry was written in: `sync`, `objects` or
    /// `relationships`.
    pub fn section(&self) -> &'static str {
        match self.target {
            Target::Person => "sync",
            Target::Object { .. } => "objects",
            Target::Relationship { .. } => "relationships",
        }
    }

    /// `key` as the entry's section spells it: a relationship's
    /// `id_column` is its `customer_id_column`.
    pub fn key_name<'a>(&self, key: &'a str) -> &'a str {
        match (&self.target, key) {
            (Target::Relationship { .. }, "id_column") => "customer_id_column",
            _ => key,
        }
    }
}

/// How the file names `tables[i]`, an entry of `Config::sync`: `sync[j]`,
/// `objects[j]` or `relationships[j]`, counted within its section (they
/// are appended resolved in the file's order, `objects::resolve_into`), so
/// an error names the entry the user wrote, not its place among them all.
pub fn entry(tables: &[SyncConfig], i: usize) -> String {
    let section = tables[i].section();
    let j = tables[..i].iter().filter(|t| t.section() == section).count();
    format!("{section}[{j}]")
}

/// Key `key` of `tables[i]` as the file names it (`objects[0].filter`,
/// `relationships[1].customer_id_column`); see [`entry`].
pub fn entry_field(tables: &[SyncConfig], i: usize, key: &str) -> String {
    format!("{}.{}", entry(tables, i), tables[i].key_name(key))
}

/// `delete_action`: what removing a customer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteAction {
    /// Delete the person; a later change of the row creates them again.
    #[default]
    Delete,
    /// Delete the person and block the id: later calls with it are ignored.
    Suppress,
}

/// `[[sync.events]]`: an event sent when a column of a synced row changes.
/// Needs the old row: `REPLICA IDENTITY FULL` on the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEventConfig {
    /// The event's name, e.g. `plan_changed`.
    pub name: String,
    /// Fire when this column's value changes; the data holds `from` and `to`.
    #[serde(default)]
    pub when_changed: Option<String>,
    /// Fire when this column changes to a non-NULL value (e.g.
    /// `password_updated_at`).
    #[serde(default)]
    pub when: Option<String>,
    /// Columns whose new values go into the event's data, by column name.
    #[serde(default)]
    pub data: Vec<String>,
}

impl ChangeEventConfig {
    /// The column the event watches.
    pub fn column(&self) -> &str {
        self.when_changed.as_deref().or(self.when.as_deref()).unwrap_or_default()
    }

    /// Where the record of what Customer.io accepted keeps the column's
    /// last value for this event (`crate::record`): its name and column.
    pub fn watch_key(&self) -> String {
        format!("{}/{}", self.name, self.column())
    }
}

/// `[[events]]`: every INSERT into a table becomes an event of the customer
/// the row names (an event table such as `campaign_signups`, or an outbox).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTableConfig {
    /// `schema.table`, or `table` for `public.table`.
    pub table: TableName,
    /// Column holding the Customer.io id of the person the event is for.
    pub customer_id_column: String,
    /// Where the customer id is NULL: a column holding an anonymous id (a
    /// cookie, a device id); the event is then sent as an anonymous event,
    /// which Customer.io attaches to the person later identified with it.
    #[serde(default)]
    pub anonymous_id_column: Option<String>,
    /// A fixed event name …
    #[serde(default)]
    pub name: Option<String>,
    /// … or the column holding it.
    #[serde(default)]
    pub name_column: Option<String>,
    /// Event data key = column.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// A `json`/`jsonb` column whose object is the event's data (keys of
    /// `data` are added to it).
    #[serde(default)]
    pub data_column: Option<String>,
    /// A timestamp column giving the event's time; default the commit time.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// `pause` (default) or `skip`.
    #[serde(default)]
    pub on_schema_change: OnSchemaChange,
}

impl EventTableConfig {
    /// The table's schema and name, `public` when the config gives none.
    pub fn schema_and_name(&self) -> (&str, &str) {
        self.table.parts()
    }
}

/// An event name Customer.io takes: 1 to 100 bytes, not blank.
fn validate_event_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() || name.len() > track_api::MAX_EVENT_NAME_BYTES {
        return Err(ConfigError::invalid(field, "event names must be 1 to 100 bytes, not blank"));
    }
    Ok(())
}

impl SyncConfig {
    /// Checks one table's keys; `field` names a key of it (`sync[i].key`,
    /// `objects[i].key`, …).
    pub(super) fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.id_column.is_empty() {
            let id_column = self.key_name("id_column");
            return Err(ConfigError::invalid(field(id_column), "must not be empty"));
        }
        // An object or a relationship may carry no attribute.
        if self.attributes.is_empty() && self.target == Target::Person {
            return Err(ConfigError::invalid(
                field("attributes"),
                "map at least one attribute (Customer.io attribute = column)",
            ));
        }
        if self.attributes.len() > track_api::MAX_ATTRIBUTES {
            return Err(ConfigError::invalid(
                field("attributes"),
                format!("at most {} attributes", track_api::MAX_ATTRIBUTES),
            ));
        }
        for (attribute, column) in &self.attributes {
            if attribute.is_empty() || attribute.len() > track_api::MAX_ATTRIBUTE_NAME_BYTES {
                return Err(ConfigError::invalid(
                    field(&format!("attributes.{attribute}")),
                    "attribute names must be 1 to 150 bytes",
                ));
            }
            if attribute == "id" || attribute == "cio_id" {
                return Err(ConfigError::invalid(
                    field(&format!("attributes.{attribute}")),
                    "`id` and `cio_id` are identifiers in Customer.io, not attributes; \
                 the id comes from id_column",
                ));
            }
            if column.is_empty() {
                return Err(ConfigError::invalid(
                    field(&format!("attributes.{attribute}")),
                    "column name must not be empty",
                ));
            }
        }
        if let Some(filter) = &self.filter {
            if filter.trim().is_empty() {
                return Err(ConfigError::invalid(
                    field("filter"),
                    "must be an SQL boolean expression such as `email_verified AND NOT \
                 is_staff`; leave it out to sync every row",
                ));
            }
            // The expression is pasted into statements; one statement only.
            if filter.contains(';') {
                return Err(ConfigError::invalid(
                    field("filter"),
                    "must be one SQL expression, without `;`",
                ));
            }
        }
        if self.soft_delete_column.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(ConfigError::invalid(field("soft_delete_column"), "must not be empty"));
        }
        Ok(())
    }
}

impl ChangeEventConfig {
    /// Checks one change event; `field` names a key of it.
    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        validate_event_name(&field("name"), &self.name)?;
        match (&self.when_changed, &self.when) {
            (Some(c), None) | (None, Some(c)) if !c.trim().is_empty() => {}
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    field("when"),
                    "give when_changed or when, not both",
                ))
            }
            _ => {
                return Err(ConfigError::invalid(
                    field("when_changed"),
                    "give the column to watch: when_changed = \"plan\" (any change) or \
                 when = \"password_updated_at\" (changed to a non-NULL value)",
                ))
            }
        }
        if self.data.iter().any(|c| c.trim().is_empty()) {
            return Err(ConfigError::invalid(field("data"), "column names must not be empty"));
        }
        Ok(())
    }
}

/// Checks `[[sync]]` and `[[events]]`, naming the first bad field.
pub fn validate(tables: &[SyncConfig], events: &[EventTableConfig]) -> Result<(), ConfigError> {
    if tables.is_empty() {
        return Err(ConfigError::invalid(
            "sync",
            "at least one [[sync]], [[objects]] or [[relationships]] table is required",
        ));
    }
    // That each table is listed once is `tables.rs`'s check.
    for (i, sync) in tables.iter().enumerate() {
        let entry = entry(tables, i);
        sync.validate(&|key| format!("{entry}.{key}"))?;
        for (j, event) in sync.events.iter().enumerate() {
            event.validate(&|key| format!("{entry}.events[{j}].{key}"))?;
        }
    }
    validate_event_tables(events)
}

fn validate_event_tables(events_tables: &[EventTableConfig]) -> Result<(), ConfigError> {
    for (i, events) in events_tables.iter().enumerate() {
        let field = |key: &str| format!("events[{i}].{key}");
        if events.customer_id_column.trim().is_empty() {
            return Err(ConfigError::invalid(field("customer_id_column"), "must not be empty"));
        }
        match (&events.name, &events.name_column) {
            (Some(fixed), None) => validate_event_name(&field("name"), fixed)?,
            (None, Some(column)) if !column.trim().is_empty() => {}
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    field("name"),
                    "give name (fixed) or name_column, not both",
                ))
            }
            _ => {
                return Err(ConfigError::invalid(
                    field("name"),
                    "give the event's name (name = \"signed_up\") or the column holding it \
                     (name_column = \"name\")",
                ))
            }
        }
        for (key, column) in &events.data {
            if key.is_empty() || column.trim().is_empty() {
                return Err(ConfigError::invalid(
                    field(&format!("data.{key}")),
                    "keys and column names must not be empty",
                ));
            }
        }
        for (key, value) in [
            ("anonymous_id_column", &events.anonymous_id_column),
            ("data_column", &events.data_column),
            ("timestamp_column", &events.timestamp_column),
        ] {
            if value.as_deref().is_some_and(|c| c.trim().is_empty()) {
                return Err(ConfigError::invalid(field(key), "must not be empty"));
            }
        }
    }
    Ok(())
}
