//! SQL quoting for the identifiers and literals ciosync writes into its own
//! statements (names from the config and the catalogue, never user data).

/// A quoted SQL identifier: `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal (`standard_conforming_strings` is on, as it
/// has been by default since PostgreSQL 9.1, so only quotes are doubled).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `"schema"."table"` for a configured table.
pub fn quoted_table(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}
