//! `[[objects]]` (tables whose rows are Customer.io objects: accounts,
//! companies) and `[[relationships]]` (tables whose rows relate a person
//! to an object: memberships).
//!
//! Each resolves into a [`SyncConfig`] whose [`Target`] says what its rows
//! are, appended to `Config::sync` as the file is read: publication setup,
//! the schema guard, filters, the initial copy, backfills and `check` then
//! treat them as any synced table, and the mapper turns their rows into
//! object or relationship operations (see `mapping::objects`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::sync::{DeleteAction, OnIdChange, OnSchemaChange, SyncConfig, Target};
use super::ConfigError;
use crate::pg::name::TableName;

/// One `[[objects]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectConfig {
    /// `schema.table`, or `table` for `public.table`.
    pub table: TableName,
    /// The Customer.io object type, a string holding an integer from 1
    /// (`"1"`), as Customer.io numbers the types of a workspace.
    pub object_type_id: String,
    /// Column whose value is the object's id; unique and not null.
    pub id_column: String,
    /// Object attribute name = column name.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// A column whose turning non-NULL deletes the object.
    #[serde(default)]
    pub soft_delete_column: Option<String>,
    /// Only rows for which this SQL boolean expression is true are objects
    /// (as `[[sync]]`'s `filter`); a row leaving it deletes the object.
    #[serde(default)]
    pub filter: Option<String>,
    /// `pause` (default) or `skip`.
    #[serde(default)]
    pub on_schema_change: OnSchemaChange,
}

/// One `[[relationships]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipConfig {
    /// `schema.table`, or `table` for `public.table`.
    pub table: TableName,
    /// Column holding the person's Customer.io id.
    pub customer_id_column: String,
    /// The related objects' type (as `[[objects]]`' `object_type_id`).
    pub object_type_id: String,
    /// Column holding the related object's id.
    pub object_id_column: String,
    /// Relationship attribute name = column name.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// `pause` (default) or `skip`.
    #[serde(default)]
    pub on_schema_change: OnSchemaChange,
}

/// Customer.io's rule for an object type id: a string holding an integer
/// from 1, in its plain decimal form (`"1"`, not `"01"` nor `"1.0"`).
fn validate_type_id(field: &str, value: &str) -> Result<(), ConfigError> {
    let plain = !value.is_empty()
        && !value.starts_with('0')
        && value.len() <= 18
        && value.bytes().all(|b| b.is_ascii_digit());
    if !plain {
        return Err(ConfigError::invalid(
            field,
            "must be a Customer.io object type id: an integer from 1, as a string (\"1\"); \
             Data & Integrations > Objects shows each type's",
        ));
    }
    Ok(())
}

fn not_empty(field: String, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(field, "must not be empty"));
    }
    Ok(())
}

impl ObjectConfig {
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let field = |key: &str| format!("objects[{i}].{key}");
        validate_type_id(&field("object_type_id"), &self.object_type_id)?;
        not_empty(field("id_column"), &self.id_column)?;
        if self.attributes.contains_key("relationship") {
            return Err(ConfigError::invalid(
                field("attributes.relationship"),
                "`relationship` is reserved by Customer.io and cannot name an object attribute",
            ));
        }
        self.resolved().validate(&field)
    }

    /// The table as the per-table machinery takes it.
    pub fn resolved(&self) -> SyncConfig {
        SyncConfig {
            table: self.table.clone(),
            id_column: self.id_column.clone(),
            attributes: self.attributes.clone(),
            // An object whose id changes is a new object: the old one is
            // deleted (objects cannot be merged).
            on_id_change: OnIdChange::DeleteOld,
            delete_action: DeleteAction::Delete,
            soft_delete_column: self.soft_delete_column.clone(),
            events: Vec::new(),
            filter: self.filter.clone(),
            on_schema_change: self.on_schema_change,
            target: Target::Object { object_type_id: self.object_type_id.clone() },
        }
    }
}

impl RelationshipConfig {
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let field = |key: &str| format!("relationships[{i}].{key}");
        not_empty(field("customer_id_column"), &self.customer_id_column)?;
        validate_type_id(&field("object_type_id"), &self.object_type_id)?;
        not_empty(field("object_id_column"), &self.object_id_column)?;
        if self.object_id_column == self.customer_id_column {
            return Err(ConfigError::invalid(
                field("object_id_column"),
                "must be another column than customer_id_column",
            ));
        }
        self.resolved().validate(&field)
    }

    /// The table as the per-table machinery takes it: its id column is the
    /// person's, the object's id column is in its [`Target`].
    pub fn resolved(&self) -> SyncConfig {
        SyncConfig {
            table: self.table.clone(),
            id_column: self.customer_id_column.clone(),
            attributes: self.attributes.clone(),
            on_id_change: OnIdChange::DeleteOld,
            delete_action: DeleteAction::Delete,
            soft_delete_column: None,
            events: Vec::new(),
            filter: None,
            on_schema_change: self.on_schema_change,
            target: Target::Relationship {
                object_type_id: self.object_type_id.clone(),
                object_id_column: self.object_id_column.clone(),
            },
        }
    }
}

/// Checks `[[objects]]` and `[[relationships]]` (naming the first bad
/// field), then appends them to `sync` resolved. A table listed twice,
/// here or in another section, is refused by `Config::validate`, which
/// runs next (`tables.rs`).
pub fn resolve_into(
    objects: &[ObjectConfig],
    relationships: &[RelationshipConfig],
    sync: &mut Vec<SyncConfig>,
) -> Result<(), ConfigError> {
    for (i, object) in objects.iter().enumerate() {
        object.validate(i)?;
    }
    for (i, relationship) in relationships.iter().enumerate() {
        relationship.validate(i)?;
    }
    sync.extend(objects.iter().map(ObjectConfig::resolved));
    sync.extend(relationships.iter().map(RelationshipConfig::resolved));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The example config with its `[[objects]]` and `[[relationships]]`
    /// sections uncommented.
    fn example() -> String {
        let mut text = include_str!("../../config/example.toml").to_owned();
        for header in ["# [[objects]]", "# [[relationships]]"] {
            let start = text.find(header).expect("the example has the section");
            let end = start + text[start..].find("\n\n").unwrap_or(text.len() - start);
            let section: String =
                text[start..end].lines().map(|l| format!("{}\n", &l[2..])).collect();
            text = format!("{}{section}{}", &text[..start], &text[end..]);
        }
        text
    }

    #[test]
    fn the_example_sections_parse_and_resolve() {
        let config = Config::from_toml(&example(), Vec::new()).unwrap();
        let (objects, relationships) = (&config.objects[0], &config.relationships[0]);
        assert_eq!((objects.object_type_id.as_str(), objects.id_column.as_str()), ("1", "id"));
        assert_eq!(relationships.object_id_column, "account_id");
        let targets: Vec<&Target> = config.sync.iter().map(|s| &s.target).collect();
        assert_eq!(targets.len(), 3, "the [[sync]] table, then the object and relationship tables");
        assert!(matches!(targets[1], Target::Object { object_type_id } if object_type_id == "1"));
        assert_eq!(config.sync[2].key_columns(), ["user_id", "account_id"]);
        let named: Vec<String> =
            (0..3).map(|i| crate::config::sync::entry(&config.sync, i)).collect();
        assert_eq!(named, ["sync[0]", "objects[0]", "relationships[0]"]);
        let person = crate::config::sync::entry_field(&config.sync, 2, "id_column");
        assert_eq!(person, "relationships[0].customer_id_column");
    }

    #[test]
    fn a_bad_object_type_id_or_a_table_listed_twice_names_the_field() {
        for (from, to, field) in [
            (
                "object_type_id = \"1\"             #",
                "object_type_id = \"acme\" #",
                "objects[0].object_type_id",
            ),
            (
                "object_type_id = \"1\"             # the",
                "object_type_id = \"0\" # the",
                "relationships[0].object_type_id",
            ),
            (
                "table = \"public.memberships\"",
                "table = \"public.accounts\"",
                "relationships[0].table",
            ),
            (
                "object_id_column = \"account_id\"",
                "object_id_column = \"user_id\"",
                "relationships[0].object_id_column",
            ),
            (
                "[objects.attributes]             # object attribute = column\nname",
                "[objects.attributes]\nrelationship",
                "objects[0].attributes.relationship",
            ),
        ] {
            let text = example();
            assert!(text.contains(from), "{from}");
            let error = Config::from_toml(&text.replacen(from, to, 1), Vec::new()).unwrap_err();
            assert!(error.to_string().contains(field), "{field}: {error}");
        }
    }

    /// Each key the shared `[[sync]]` checks judge, in an `[[objects]]` or
    /// `[[relationships]]` entry, is named as the file writes it.
    #[test]
    fn a_bad_shared_key_names_the_objects_or_relationships_entry() {
        let pause = |section| format!("\"pause\"       # or \"skip\": see [[sync]]\n[{section}");
        let stop = |section| format!("\"stop\"\n[{section}");
        let (pause_object, stop_object) = (pause("objects"), stop("objects"));
        let (pause_relationship, stop_relationship) =
            (pause("relationships"), stop("relationships"));
        for (from, to, field) in [
            ("filter = \"NOT is_internal\"", "filter = \"a; b\"", "objects[0].filter"),
            ("filter = \"NOT is_internal\"", "filter = \" \"", "objects[0].filter"),
            (
                "soft_delete_column = \"deleted_at\"  #",
                "soft_delete_column = \"\"  #",
                "objects[0].soft_delete_column",
            ),
            (pause_object.as_str(), stop_object.as_str(), "objects[0].on_schema_change"),
            ("name = \"name\"", "cio_id = \"name\"", "objects[0].attributes.cio_id"),
            ("name = \"name\"", "name = \"\"", "objects[0].attributes.name"),
            ("role = \"role\"", "id = \"role\"", "relationships[0].attributes.id"),
            (
                pause_relationship.as_str(),
                stop_relationship.as_str(),
                "relationships[0].on_schema_change",
            ),
        ] {
            let text = example();
            assert!(text.contains(from), "{from}");
            let error = Config::from_toml(&text.replacen(from, to, 1), Vec::new()).unwrap_err();
            assert!(error.to_string().contains(&format!("{field}: ")), "{field}: {error}");
            assert!(!error.to_string().contains("sync["), "{field}: {error}");
        }
    }

    /// `Config::validate` judges the resolved entries again: it names them
    /// by their section too, not by their place in `Config::sync`.
    #[test]
    fn validating_the_resolved_entries_names_their_section() {
        let config = Config::from_toml(&example(), Vec::new()).unwrap();
        type Break = fn(&mut SyncConfig);
        let cases: [(usize, Break, &str); 4] = [
            (1, |s| s.filter = Some(";".into()), "objects[0].filter"),
            (1, |s| s.soft_delete_column = Some(" ".into()), "objects[0].soft_delete_column"),
            (
                2,
                |s| drop(s.attributes.insert("id".into(), "x".into())),
                "relationships[0].attributes.id",
            ),
            (2, |s| s.id_column.clear(), "relationships[0].customer_id_column"),
        ];
        for (i, break_it, field) in cases {
            let mut config = config.clone();
            break_it(&mut config.sync[i]);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(&format!("{field}: ")), "{field}: {error}");
        }
    }

    #[test]
    fn object_type_ids_are_plain_integers_from_one() {
        for good in ["1", "2", "10", "123456"] {
            assert!(validate_type_id("f", good).is_ok(), "{good}");
        }
        for bad in ["", "0", "01", "-1", "1.0", " 1", "one", "1e3", "9999999999999999999"] {
            let error = validate_type_id("objects[0].object_type_id", bad).unwrap_err();
            assert!(error.to_string().contains("objects[0].object_type_id"), "{error}");
        }
    }
}
