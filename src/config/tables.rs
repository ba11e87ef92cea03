//! Each table the config names is one entry's: a `[[sync]]`, `[[objects]]`,
//! `[[relationships]]`, `[[events]]` or `[[devices]]` table, listed once
//! (its rows can only be one thing in Customer.io). A table named by two
//! entries is refused naming both, so the operator sees which two to
//! reconcile.

use std::collections::HashMap;

use super::{Config, ConfigError};
use crate::pg::name::TableName;

/// The config's table entries, as `(field, section, table)` in the order
/// of the file's sections: `sync[i].table` (people, before `[[objects]]`
/// and `[[relationships]]` are appended resolved), then `objects[i]`,
/// `relationships[i]`, `events[i]`, `devices[i]`.
fn entries(config: &Config) -> Vec<(String, &'static str, &TableName)> {
    let people = config.people().map(|s| &s.table);
    let sections: [(&'static str, Vec<&TableName>); 5] = [
        ("sync", people.collect()),
        ("objects", config.objects.iter().map(|o| &o.table).collect()),
        ("relationships", config.relationships.iter().map(|r| &r.table).collect()),
        ("events", config.events.iter().map(|e| &e.table).collect()),
        ("devices", config.devices.iter().map(|d| &d.table).collect()),
    ];
    sections
        .into_iter()
        .flat_map(|(section, tables)| {
            tables
                .into_iter()
                .enumerate()
                .map(move |(i, t)| (format!("{section}[{i}].table"), section, t))
        })
        .collect()
}

/// Refuses the first table named by a second entry, naming both.
pub fn each_once(config: &Config) -> Result<(), ConfigError> {
    let mut first: HashMap<&TableName, (String, &'static str)> = HashMap::new();
    for (field, section, table) in entries(config) {
        let Some((earlier, earlier_section)) = first.get(table) else {
            first.insert(table, (field, section));
            continue;
        };
        let message = if *earlier_section == section {
            format!("{table} is listed twice: also {earlier}")
        } else {
            format!(
                "{table} is also {earlier}: a table can be only one of [[sync]], [[objects]], \
                 [[relationships]], [[events]] and [[devices]]{}",
                hint(earlier_section, section)
            )
        };
        return Err(ConfigError::invalid(field, message));
    }
    Ok(())
}

/// What to do instead, where there is something.
fn hint(first: &str, second: &str) -> &'static str {
    match (first, second) {
        ("sync", "events") => " (events from a [[sync]] table's changes: [[sync.events]])",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = r#"
[postgres]
url = "postgres://ciosync@127.0.0.1:5432/app"

[customerio]
site_id = "s"
api_key = "k"

[[sync]]
table = "users"
id_column = "id"
[sync.attributes]
email = "email"

[[objects]]
table = "accounts"
object_type_id = "1"
id_column = "id"

[[objects]]
table = "teams"
object_type_id = "2"
id_column = "id"

[[relationships]]
table = "memberships"
customer_id_column = "user_id"
object_type_id = "1"
object_id_column = "account_id"

[[events]]
table = "signups"
customer_id_column = "user_id"
name = "signed_up"
"#;

    fn devices(table: &str) -> String {
        format!(
            "\n[[devices]]\ntable = \"{table}\"\ncustomer_id_column = \"user_id\"\n\
             token_column = \"token\"\nplatform = \"ios\"\n"
        )
    }

    fn error(text: &str) -> String {
        Config::from_toml(text, Vec::new()).unwrap_err().to_string()
    }

    #[test]
    fn a_devices_table_named_by_another_entry_names_both() {
        assert!(Config::from_toml(&(BASE.to_owned() + &devices("push_tokens")), Vec::new()).is_ok());
        for (table, other) in [
            ("users", "sync[0].table"),
            ("public.teams", "objects[1].table"),
            ("memberships", "relationships[0].table"),
            ("signups", "events[0].table"),
        ] {
            let error = error(&(BASE.to_owned() + &devices("push_tokens") + &devices(table)));
            assert!(error.contains("devices[1].table: "), "{error}");
            assert!(error.contains(&format!("is also {other}")), "{error}");
            assert!(error.contains("a table can be only one of"), "{error}");
        }
    }

    #[test]
    fn objects_relationships_and_events_name_the_entry_they_repeat() {
        let cases = [
            ("table = \"teams\"", "table = \"users\"", "objects[1].table", "is also sync[0].table"),
            (
                "table = \"memberships\"",
                "table = \"accounts\"",
                "relationships[0].table",
                "is also objects[0].table",
            ),
            (
                "table = \"teams\"",
                "table = \"accounts\"",
                "objects[1].table",
                "listed twice: also objects[0].table",
            ),
            ("table = \"signups\"", "table = \"users\"", "events[0].table", "[[sync.events]]"),
        ];
        for (from, to, field, said) in cases {
            let error = error(&BASE.replacen(from, to, 1));
            assert!(error.contains(&format!("{field}: public.")), "{error}");
            assert!(error.contains(said), "{error}");
        }
    }
}
