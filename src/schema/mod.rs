//! Schema changes while streaming: never a silent gap, never a wrong type.
//!
//! pgoutput describes a table in a Relation message before its first change
//! in a session and again after every ALTER. Each description is judged
//! against what the config reads from the table (its *uses*: the id column,
//! every mapped attribute, the columns of change events, soft deletes and
//! event tables) and against the table's **shape**: the JSON type each typed
//! use had when ciosync first sent it, kept in `ciosync.table_shapes` so a
//! restart, or an ALTER made while ciosync was down, cannot slip a new type
//! past it.
//!
//! | the table now                                   | judged   |
//! |-------------------------------------------------|----------|
//! | a used column renamed (same position or the only new column of its type) | `renamed` |
//! | a used column gone                              | `dropped` (`missing` if ciosync never saw it) |
//! | a typed use whose values become another JSON type (`timestamptz` → `text`) | `retyped` |
//! | a type change within one JSON type (`int4` → `int8`, `varchar(50)` → `text`, `timestamp` → `timestamptz`) | fine |
//! | a column added, or an unused one changed        | fine     |
//!
//! What a break does is the table's `on_schema_change` (see [`guard`]):
//! `pause` stops at the first change of the table and acknowledges nothing
//! after it; `skip` sends the change without what broke and re-sends the
//! affected attributes once the table or the config is repaired. Pure: the
//! I/O is in [`store`] and [`guard`].

mod devices;
pub mod guard;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::change::{Table, ValueKind};
use crate::config::{EventTableConfig, OnSchemaChange, SyncConfig};

/// The JSON type a column's values become (see `mapping::value`): what an
/// attribute must keep. Integers, floats, numerics and times are all
/// numbers (the rare string fallbacks aside); text, enums and bytea strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Boolean,
    Number,
    String,
    /// json/jsonb: anything.
    Json,
    Array(Box<Shape>),
}

impl Shape {
    /// The shape of a column of `kind`.
    pub fn of(kind: &ValueKind) -> Self {
        match kind {
            ValueKind::Bool => Self::Boolean,
            ValueKind::Int
            | ValueKind::BigInt
            | ValueKind::Float
            | ValueKind::Numeric
            | ValueKind::Timestamp
            | ValueKind::TimestampTz
            | ValueKind::Date => Self::Number,
            ValueKind::Text | ValueKind::Bytea => Self::String,
            ValueKind::Json => Self::Json,
            ValueKind::Array(element) => Self::Array(Box::new(Self::of(element))),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Boolean => f.write_str("boolean"),
            Self::Number => f.write_str("number"),
            Self::String => f.write_str("string"),
            Self::Json => f.write_str("json"),
            Self::Array(element) => write!(f, "array of {element}"),
        }
    }
}

/// One column the config reads, named by its config key
/// (`attributes.first_name`, `id_column`, `events.plan_changed.data.plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub key: String,
    pub column: String,
    /// Whether its values reach Customer.io as they are, so their JSON
    /// type must not change (an attribute, event data); an id, an event
    /// name or a soft-delete flag only needs the column to exist.
    pub typed: bool,
    /// The attribute it fills, for a mapped attribute: what a repair re-sends.
    pub attribute: Option<String>,
    /// The `[[sync.events]]` event it feeds, for an event's column.
    pub event: Option<String>,
    /// See [`Use::is_structural`].
    structural: bool,
}

impl Use {
    fn new(key: String, column: &str, typed: bool) -> Self {
        let structural = key == "id_column" || key == "soft_delete_column";
        Self { key, column: column.to_owned(), typed, attribute: None, event: None, structural }
    }

    fn of_event(event: &str, key: String, column: &str, typed: bool) -> Self {
        Self { event: Some(event.to_owned()), ..Self::new(key, column, typed) }
    }

    /// Whether a change cannot be mapped safely without it: the customer
    /// id, or the column that says a row is deleted (without it a delete
    /// would become an identify, and no backfill sends deletes); for a
    /// `[[devices]]` table also its customer, token and platform columns.
    pub fn is_structural(&self) -> bool {
        self.structural
    }
}

/// What the config reads from one table, and what a break there does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// `schema.table`.
    pub table: String,
    pub uses: Vec<Use>,
    pub policy: OnSchemaChange,
}

impl Needs {
    /// The uses of a `[[sync]]` table.
    pub fn of_sync(sync: &SyncConfig) -> Self {
        // Named as the file names it (a relationship's `customer_id_column`).
        let id = Use::new(sync.key_name("id_column").to_owned(), &sync.id_column, false);
        let mut uses = vec![Use { structural: true, ..id }];
        for (attribute, column) in &sync.attributes {
            let mut used = Use::new(format!("attributes.{attribute}"), column, true);
            used.attribute = Some(attribute.clone());
            uses.push(used);
        }
        if let Some(column) = &sync.soft_delete_column {
            uses.push(Use::new("soft_delete_column".to_owned(), column, false));
        }
        if let crate::config::Target::Relationship { object_id_column, .. } = &sync.target {
            uses.push(Use::new("object_id_column".to_owned(), object_id_column, false));
        }
        for event in &sync.events {
            let name = &event.name;
            if let Some(column) = &event.when_changed {
                // `from` and `to` carry its values.
                uses.push(Use::of_event(name, format!("events.{name}.when_changed"), column, true));
            }
            if let Some(column) = &event.when {
                uses.push(Use::of_event(name, format!("events.{name}.when"), column, false));
            }
            for column in &event.data {
                uses.push(Use::of_event(
                    name,
                    format!("events.{name}.data.{column}"),
                    column,
                    true,
                ));
            }
        }
        let (schema, name) = sync.schema_and_name();
        Self { table: format!("{schema}.{name}"), uses, policy: sync.on_schema_change }
    }

    /// The uses of an `[[events]]` table.
    pub fn of_events(events: &EventTableConfig) -> Self {
        let mut uses =
            vec![Use::new("customer_id_column".to_owned(), &events.customer_id_column, false)];
        let optional = [
            ("anonymous_id_column", &events.anonymous_id_column, false),
            ("name_column", &events.name_column, false),
            ("data_column", &events.data_column, true),
            ("timestamp_column", &events.timestamp_column, true),
        ];
        for (key, column, typed) in optional {
            if let Some(column) = column {
                uses.push(Use::new(key.to_owned(), column, typed));
            }
        }
        for (key, column) in &events.data {
            uses.push(Use::new(format!("data.{key}"), column, true));
        }
        let (schema, name) = events.schema_and_name();
        Self { table: format!("{schema}.{name}"), uses, policy: events.on_schema_change }
    }
}

/// A table's shape as ciosync last accepted it: its columns in order, and
/// the JSON type of each typed use (kept for as long as the use is
/// configured, so an attribute never changes type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub columns: Vec<(String, Shape)>,
    pub uses: BTreeMap<String, Shape>,
}

/// How a used column changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Gone, and the column now at its place (or the only new column of
    /// its type) is `to`.
    Renamed { to: String },
    /// Gone.
    Dropped,
    /// Not in the table, and never seen in it: a name the config got wrong.
    Missing,
    /// Still there, with values of another JSON type.
    Retyped { from: Shape, to: Shape },
}

impl Change {
    /// The `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Renamed { .. } => "renamed",
            Self::Dropped => "dropped",
            Self::Missing => "missing",
            Self::Retyped { .. } => "retyped",
        }
    }
}

/// One use the table no longer serves. Names and types only, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub table: String,
    pub key: String,
    pub column: String,
    pub change: Change,
    /// The attribute it fills, for a mapped attribute.
    pub attribute: Option<String>,
    /// The `[[sync.events]]` event it feeds.
    pub event: Option<String>,
    /// The customer id or the soft-delete column: no change of the table can
    /// be sent safely without it, so it pauses under either setting.
    pub structural: bool,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { table, key, column, .. } = self;
        match &self.change {
            Change::Renamed { to } => {
                write!(f, "{table}: column {column} ({key}) was renamed to {to}")
            }
            Change::Dropped => write!(f, "{table}: column {column} ({key}) was dropped"),
            Change::Missing => write!(f, "{table}: column {column} ({key}) does not exist"),
            Change::Retyped { from, to } => write!(
                f,
                "{table}: column {column} ({key}) now holds values of JSON type {to}, \
                 where ciosync has sent {from}"
            ),
        }
    }
}

impl Break {
    /// The config edit or SQL that repairs it.
    pub fn fix(&self) -> String {
        let Self { key, column, .. } = self;
        match &self.change {
            Change::Renamed { to } => format!(
                "set {key} = \"{to}\" in the config, or rename the column back \
                 (ALTER TABLE {} RENAME COLUMN {to} TO {column})",
                self.table
            ),
            Change::Dropped | Change::Missing => format!(
                "map {key} to an existing column or remove it from the config, or add the \
                 column back"
            ),
            Change::Retyped { from, .. } => format!(
                "change the column back to a type whose values are {from}s, or map it to a \
                 new attribute name (or remove {key} from the config and restart once)"
            ),
        }
    }
}

/// The columns of `table` with their shapes, as pgoutput described them.
pub fn columns_of(table: &Table) -> Vec<(String, Shape)> {
    table.columns.iter().map(|c| (c.name.clone(), Shape::of(&c.kind))).collect()
}

/// Every use `now` no longer serves, judged against `baseline`.
pub fn judge(needs: &Needs, now: &[(String, Shape)], baseline: &Baseline) -> Vec<Break> {
    let mut breaks = Vec::new();
    for used in &needs.uses {
        // Only typed uses have a kept shape ([`accept`] keeps no other).
        let change = match now.iter().find(|(name, _)| *name == used.column) {
            None => Some(gone(&used.column, now, baseline)),
            Some((_, shape)) => match baseline.uses.get(&used.key) {
                Some(before) if before != shape => {
                    Some(Change::Retyped { from: before.clone(), to: shape.clone() })
                }
                _ => None,
            },
        };
        if let Some(change) = change {
            breaks.push(Break {
                table: needs.table.clone(),
                key: used.key.clone(),
                column: used.column.clone(),
                change,
                attribute: used.attribute.clone(),
                event: used.event.clone(),
                structural: used.is_structural(),
            });
        }
    }
    breaks
}

/// How `column`, which `now` lacks, went: renamed when the column now at
/// its former place, or else the only new column of its shape, is new
/// with the same shape; dropped otherwise; missing when never seen.
fn gone(column: &str, now: &[(String, Shape)], baseline: &Baseline) -> Change {
    let Some(place) = baseline.columns.iter().position(|(name, _)| name == column) else {
        return Change::Missing;
    };
    let shape = &baseline.columns[place].1;
    let is_new = |name: &str| !baseline.columns.iter().any(|(known, _)| known == name);
    let candidates: Vec<&String> =
        now.iter().filter(|(name, s)| s == shape && is_new(name)).map(|(name, _)| name).collect();
    let at_place = now.get(place).filter(|(name, s)| s == shape && is_new(name));
    match (at_place, candidates.as_slice()) {
        (Some((name, _)), _) => Change::Renamed { to: name.clone() },
        (None, [name]) => Change::Renamed { to: (*name).clone() },
        _ => Change::Dropped,
    }
}

/// The baseline to keep once `now` was judged without a break: today's
/// columns, the shapes of the uses configured now (a use seen for the
/// first time takes its shape now; one no longer configured is forgotten).
pub fn accept(needs: &Needs, now: &[(String, Shape)], baseline: &Baseline) -> Baseline {
    let uses = needs
        .uses
        .iter()
        .filter(|u| u.typed)
        .filter_map(|u| {
            let shape = baseline.uses.get(&u.key).cloned().or_else(|| {
                now.iter().find(|(name, _)| *name == u.column).map(|(_, s)| s.clone())
            })?;
            Some((u.key.clone(), shape))
        })
        .collect();
    Baseline { columns: now.to_vec(), uses }
}
