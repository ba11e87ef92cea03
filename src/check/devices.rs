//! A `[[devices]]` table: it exists, role `user` can read it (the initial
//! copy and backfills do), has the columns the config names with types
//! that fit, and its replica identity lets a DELETE name the device it
//! removes (the customer and the token). Pure: the facts come from
//! [`crate::pg::catalog::Table`].

use super::Finding;
use crate::config::DevicesConfig;
use crate::pg::catalog::{IdentityKind, Table};

/// The lines of one devices table, for role `user`, in report order.
pub fn devices_table(devices: &DevicesConfig, user: &str, table: Option<&Table>) -> Vec<Finding> {
    let label = format!("devices table {}", devices.table);
    let Some(table) = table.filter(|t| t.is_table) else {
        return vec![Finding::error(
            &label,
            "does not exist (or is not a table)",
            "create the table, or fix [[devices]] table",
        )];
    };
    let mut out = Vec::new();
    if !table.can_select {
        out.push(Finding::error(
            &label,
            format!("role {user} cannot read it (the initial copy and backfills do)"),
            super::grant_select(&devices.table, table, user),
        ));
    }
    let problems = column_problems(devices, table);
    if !problems.is_empty() {
        out.push(Finding::error(&label, problems.join("; "), "fix [[devices]] or the table"));
        return out;
    }
    out.push(identity(devices, table, &label));
    out
}

/// Each column the config names that the table lacks, or whose type
/// cannot hold what it is for.
fn column_problems(devices: &DevicesConfig, table: &Table) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, column) in devices.columns() {
        let Some(found) = table.column(column) else {
            problems.push(format!("no column {column} ({key})"));
            continue;
        };
        let t = found.type_name.as_str();
        let time = t.starts_with("timestamp") || t == "date";
        let integer = matches!(t, "bigint" | "integer" | "smallint");
        if key == "last_used_column" && !time && !integer {
            problems.push(format!(
                "last_used_column {column} is {t}, not a timestamp (or Unix seconds)"
            ));
        }
        let single = !matches!(t, "json" | "jsonb" | "boolean") && !t.ends_with("[]");
        if key == "token_column" && !single {
            problems.push(format!("{key} {column} is {t}, not a single text value"));
        }
    }
    problems
}

/// Whether a DELETE's old row carries the customer and the token: under
/// FULL identity always; under DEFAULT (or USING INDEX) only when the key
/// holds both columns. Otherwise deletes cannot be sent: an error naming
/// both fixes.
fn identity(devices: &DevicesConfig, table: &Table, label: &str) -> Finding {
    let (customer, token) = (&devices.customer_id_column, &devices.token_column);
    let keyed =
        |t: &Table| t.identity_columns.contains(customer) && t.identity_columns.contains(token);
    let quoted = devices.table.quoted();
    match table.identity_kind {
        IdentityKind::Full => Finding::ok(
            label,
            "replica identity FULL: inserts and updates add devices, deletes remove them",
        ),
        IdentityKind::Default | IdentityKind::Index if keyed(table) => Finding::ok(
            label,
            format!(
                "its key holds {customer} and {token}: inserts and updates add devices, \
                 deletes remove them"
            ),
        ),
        IdentityKind::Nothing => Finding::error(
            label,
            "replica identity NOTHING: Postgres refuses its UPDATEs and DELETEs once published",
            format!("ALTER TABLE {quoted} REPLICA IDENTITY FULL;"),
        ),
        IdentityKind::Default | IdentityKind::Index => Finding::error(
            label,
            format!(
                "a DELETE carries only the replica identity's key ({}), without both {customer} \
                 and {token}: deleted devices would stay in Customer.io (each such DELETE is \
                 skipped and counted as device_key_unknown)",
                if table.identity_columns.is_empty() {
                    "none".to_owned()
                } else {
                    table.identity_columns.join(", ")
                }
            ),
            format!(
                "ALTER TABLE {quoted} REPLICA IDENTITY FULL; (or make ({customer}, {token}) the \
                 primary key)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Level;
    use crate::pg::catalog::Column;

    fn config() -> DevicesConfig {
        toml::from_str(
            "table = \"devices\"\ncustomer_id_column = \"user_id\"\ntoken_column = \"token\"\n\
             platform = \"ios\"\nlast_used_column = \"seen_at\"",
        )
        .unwrap()
    }

    fn table(identity_kind: IdentityKind, key: &[&str]) -> Table {
        let column = |name: &str, type_name: &str| Column {
            name: name.into(),
            type_name: type_name.into(),
            not_null: false,
        };
        Table {
            is_table: true,
            partitioned: false,
            identity_kind,
            identity_columns: key.iter().map(|c| c.to_string()).collect(),
            has_primary_key: !key.is_empty(),
            unique_columns: Vec::new(),
            can_select: true,
            schema_usage: true,
            owned: true,
            columns: vec![
                column("id", "bigint"),
                column("user_id", "bigint"),
                column("token", "text"),
                column("seen_at", "timestamp with time zone"),
            ],
        }
    }

    #[test]
    fn full_identity_or_a_key_on_customer_and_token_can_send_deletes() {
        let full = devices_table(&config(), "ciosync", Some(&table(IdentityKind::Full, &["id"])));
        assert_eq!(full[0].level, Level::Ok, "{full:?}");
        let keyed = devices_table(
            &config(),
            "ciosync",
            Some(&table(IdentityKind::Default, &["user_id", "token"])),
        );
        assert_eq!(keyed[0].level, Level::Ok, "{keyed:?}");
    }

    #[test]
    fn a_surrogate_key_under_default_identity_names_both_fixes() {
        let found =
            devices_table(&config(), "ciosync", Some(&table(IdentityKind::Default, &["id"])));
        assert_eq!(found[0].level, Level::Error);
        let fix = found[0].fix.as_deref().unwrap();
        assert!(fix.contains("ALTER TABLE \"public\".\"devices\" REPLICA IDENTITY FULL"), "{fix}");
        assert!(fix.contains("(user_id, token) the primary key"), "{fix}");
        assert!(found[0].message.contains("device_key_unknown"), "{}", found[0].message);
    }

    #[test]
    fn missing_and_mistyped_columns_are_named() {
        let mut mistyped = table(IdentityKind::Full, &[]);
        mistyped.columns[3].type_name = "text".into();
        let found = devices_table(&config(), "ciosync", Some(&mistyped));
        assert!(found[0].message.contains("last_used_column seen_at is text"), "{found:?}");
        let mut missing = table(IdentityKind::Full, &[]);
        missing.columns.remove(2);
        let found = devices_table(&config(), "ciosync", Some(&missing));
        assert!(found[0].message.contains("no column token (token_column)"), "{found:?}");
        let absent = devices_table(&config(), "ciosync", None);
        assert!(absent[0].message.contains("does not exist"));
    }

    #[test]
    fn a_table_the_role_cannot_read_names_the_grant() {
        let mut unreadable = table(IdentityKind::Full, &[]);
        unreadable.can_select = false;
        let found = devices_table(&config(), "ciosync", Some(&unreadable));
        assert_eq!(found[0].level, Level::Error, "{found:?}");
        assert!(found[0].message.contains("role ciosync cannot read it"), "{found:?}");
        assert_eq!(
            found[0].fix.as_deref(),
            Some("GRANT SELECT ON \"public\".\"devices\" TO \"ciosync\";")
        );
        // The rest is still judged.
        assert_eq!(found.len(), 2, "{found:?}");
        let readable = devices_table(&config(), "ciosync", Some(&table(IdentityKind::Full, &[])));
        assert!(readable.iter().all(|f| f.level == Level::Ok), "{readable:?}");
    }
}
