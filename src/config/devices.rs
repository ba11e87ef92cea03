//! `[[devices]]`: a table of push device tokens, each row one device of the
//! customer it names; inserts and updates add (or update) the device in
//! Customer.io, deletes and soft deletes remove it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, OnSchemaChange};
use crate::pg::name::TableName;
use crate::track_api;

/// The platforms Customer.io takes for a device.
pub const PLATFORMS: [&str; 2] = ["ios", "android"];

/// One `[[devices]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesConfig {
    /// `schema.table`, or `table` for `public.table`.
    pub table: TableName,
    /// Column holding the Customer.io id of the person the device belongs to.
    pub customer_id_column: String,
    /// Column holding the device token.
    pub token_column: String,
    /// Column holding the platform; its values are read case-insensitively
    /// as `ios` or `android` (a row with anything else is skipped) …
    #[serde(default)]
    pub platform_column: Option<String>,
    /// … or one platform for every row: `ios` or `android`.
    #[serde(default)]
    pub platform: Option<String>,
    /// A timestamp column: when the device was last used (sent as Unix
    /// seconds; without it Customer.io takes the time it receives the call).
    #[serde(default)]
    pub last_used_column: Option<String>,
    /// Device attribute name = column; values are sent as strings (NULL:
    /// left out).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// A column whose turning non-NULL means the device is gone (e.g.
    /// `revoked_at`): the device is deleted in Customer.io.
    #[serde(default)]
    pub soft_delete_column: Option<String>,
    /// `pause` (default) or `skip`.
    #[serde(default)]
    pub on_schema_change: OnSchemaChange,
}

impl DevicesConfig {
    /// The table's schema and name, `public` when the config gives none.
    pub fn schema_and_name(&self) -> (&str, &str) {
        self.table.parts()
    }

    /// Every column the config reads, with its key (for `check`).
    pub fn columns(&self) -> Vec<(String, &str)> {
        let mut out = vec![
            ("customer_id_column".to_owned(), self.customer_id_column.as_str()),
            ("token_column".to_owned(), self.token_column.as_str()),
        ];
        let optional = [
            ("platform_column", &self.platform_column),
            ("last_used_column", &self.last_used_column),
            ("soft_delete_column", &self.soft_delete_column),
        ];
        for (key, column) in optional {
            out.extend(column.as_deref().map(|c| (key.to_owned(), c)));
        }
        for (name, column) in &self.attributes {
            out.push((format!("attributes.{name}"), column.as_str()));
        }
        out
    }
}

/// A table whose rows the initial copy and backfills read: a `[[sync]]`
/// entry (people, objects, relationships), or a `[[devices]]` table (each
/// row an `add_device`, a soft-deleted one a `delete_device`).
#[derive(Debug, Clone, Copy)]
pub enum CopiedTable<'a> {
    Sync(&'a super::SyncConfig),
    Devices(&'a DevicesConfig),
}

impl<'a> CopiedTable<'a> {
    /// `schema.table`.
    pub fn name(self) -> String {
        match self {
            Self::Sync(sync) => sync.table.to_string(),
            Self::Devices(devices) => devices.table.to_string(),
        }
    }

    /// Its schema and name, `public` when the config gives none.
    pub fn schema_and_name(self) -> (&'a str, &'a str) {
        match self {
            Self::Sync(sync) => sync.schema_and_name(),
            Self::Devices(devices) => devices.schema_and_name(),
        }
    }

    /// The config's table named `qualified` (`schema.table`), if it syncs
    /// one or reads its devices.
    pub fn find(config: &'a super::Config, qualified: &str) -> Option<Self> {
        let sync = config.sync.iter().find(|s| s.table.to_string() == qualified);
        let devices = config.devices.iter().find(|d| d.table.to_string() == qualified);
        sync.map(Self::Sync).or(devices.map(Self::Devices))
    }

    /// Every table the initial copy reads, in its order: the `[[sync]]`
    /// entries (people, objects, relationships), then the devices tables.
    pub fn all(config: &'a super::Config) -> impl Iterator<Item = Self> + 'a {
        let devices = config.devices.iter().map(Self::Devices);
        config.sync.iter().map(Self::Sync).chain(devices)
    }
}

/// `ios` or `android` for a platform as a row or the config writes it
/// (any case, surrounding blanks ignored); `None` for anything else.
pub fn platform_of(text: &str) -> Option<&'static str> {
    let text = text.trim();
    PLATFORMS.into_iter().find(|p| p.eq_ignore_ascii_case(text))
}

/// Checks `[[devices]]`, naming the first bad field. (That a devices table
/// is no other entry's is `tables.rs`'s check.)
pub fn validate(devices: &[DevicesConfig]) -> Result<(), ConfigError> {
    for (i, table) in devices.iter().enumerate() {
        table.validate(&|key: &str| format!("devices[{i}].{key}"))?;
    }
    Ok(())
}

impl DevicesConfig {
    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        for (key, column) in [
            ("customer_id_column", Some(&self.customer_id_column)),
            ("token_column", Some(&self.token_column)),
            ("platform_column", self.platform_column.as_ref()),
            ("last_used_column", self.last_used_column.as_ref()),
            ("soft_delete_column", self.soft_delete_column.as_ref()),
        ] {
            if column.is_some_and(|c| c.trim().is_empty()) {
                return Err(ConfigError::invalid(field(key), "must not be empty"));
            }
        }
        match (&self.platform_column, &self.platform) {
            (Some(_), None) => {}
            (None, Some(fixed)) if PLATFORMS.contains(&fixed.as_str()) => {}
            (None, Some(_)) => {
                return Err(ConfigError::invalid(field("platform"), "must be ios or android"))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    field("platform"),
                    "give platform (fixed) or platform_column, not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    field("platform_column"),
                    "give the column holding each device's platform (platform_column = \
                     \"platform\") or one platform for all (platform = \"ios\")",
                ))
            }
        }
        if self.attributes.len() > track_api::MAX_ATTRIBUTES {
            let most = format!("at most {} attributes, as for a person", track_api::MAX_ATTRIBUTES);
            return Err(ConfigError::invalid(field("attributes"), most));
        }
        for (name, column) in &self.attributes {
            let key = field(&format!("attributes.{name}"));
            if name.is_empty() || name.len() > track_api::MAX_ATTRIBUTE_NAME_BYTES {
                return Err(ConfigError::invalid(key, "attribute names must be 1 to 150 bytes"));
            }
            if column.trim().is_empty() {
                return Err(ConfigError::invalid(key, "column name must not be empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(extra: &str) -> Result<Vec<DevicesConfig>, String> {
        #[derive(Deserialize)]
        struct Doc {
            devices: Vec<DevicesConfig>,
        }
        let text = format!(
            "[[devices]]\ntable = \"push_tokens\"\ncustomer_id_column = \"user_id\"\n\
             token_column = \"token\"\n{extra}"
        );
        let doc: Doc = toml::from_str(&text).map_err(|e| e.to_string())?;
        validate(&doc.devices).map_err(|e| e.to_string())?;
        Ok(doc.devices)
    }

    #[test]
    fn a_platform_column_or_a_fixed_platform_is_required() {
        assert!(devices("platform_column = \"platform\"").is_ok());
        assert!(devices("platform = \"android\"").is_ok());
        let none = devices("").unwrap_err();
        assert!(none.contains("devices[0].platform_column"), "{none}");
        let both = devices("platform = \"ios\"\nplatform_column = \"p\"").unwrap_err();
        assert!(both.contains("devices[0].platform"), "{both}");
        let bad = devices("platform = \"web\"").unwrap_err();
        assert!(bad.contains("devices[0].platform: must be ios or android"), "{bad}");
    }

    #[test]
    fn empty_columns_and_attribute_names_are_named() {
        let empty = devices("platform = \"ios\"\nlast_used_column = \" \"").unwrap_err();
        assert!(empty.contains("devices[0].last_used_column"), "{empty}");
        let attribute =
            devices("platform = \"ios\"\n[devices.attributes]\n\"\" = \"v\"").unwrap_err();
        assert!(attribute.contains("devices[0].attributes."), "{attribute}");
        let unknown = devices("platform = \"ios\"\ntokn = \"t\"").unwrap_err();
        assert!(unknown.contains("tokn"), "{unknown}");
        let many = |n: usize| {
            let lines: String = (0..n).map(|i| format!("a{i} = \"c\"\n")).collect();
            devices(&format!("platform = \"ios\"\n[devices.attributes]\n{lines}"))
        };
        assert!(many(300).is_ok());
        let over = many(301).unwrap_err();
        assert!(over.contains("devices[0].attributes: at most 300 attributes"), "{over}");
    }

    #[test]
    fn platforms_are_read_case_insensitively() {
        assert_eq!(platform_of("iOS"), Some("ios"));
        assert_eq!(platform_of(" ANDROID "), Some("android"));
        assert_eq!(platform_of("web"), None);
        assert_eq!(platform_of(""), None);
    }

    /// The commented-out `[[devices]]` table, uncommented, is valid.
    #[test]
    fn the_example_devices_table_parses() {
        let text = include_str!("../../config/example.toml");
        let start = text.find("# [[devices]]").expect("the example has a [[devices]] table");
        let end = start + text[start..].find("\n\n").unwrap_or(text.len() - start);
        let section: String = text[start..end]
            .lines()
            .filter(|l| !l.starts_with("# #"))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let config =
            crate::config::Config::from_toml(&format!("{text}\n{section}"), Vec::new()).unwrap();
        let devices = &config.devices[0];
        assert_eq!(devices.platform_column.as_deref(), Some("platform"));
        assert_eq!(devices.attributes.len(), 2);
    }
}
