//! A table's name as the config gives it: `schema.table`, or `table` for a
//! table in `public`. Split and checked once, when the config is read, so
//! every later use has both parts.

use std::fmt;

use serde::Deserialize;

use super::quote::quoted_table;

/// A table's schema and name. Written `schema.table` (its `Display`), or
/// `table` alone in a config for `public.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct TableName {
    schema: String,
    name: String,
}

impl TableName {
    /// Parses `schema.table` or `table` (in `public`). Neither part may be
    /// empty, and the name holds no further `.`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (schema, name) = text.split_once('.').unwrap_or(("public", text));
        if schema.is_empty() || name.is_empty() || name.contains('.') {
            return Err("must be `schema.table` or `table`".to_owned());
        }
        Ok(Self { schema: schema.to_owned(), name: name.to_owned() })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// (schema, name).
    pub fn parts(&self) -> (&str, &str) {
        (&self.schema, &self.name)
    }

    /// `"schema"."name"`, for statements.
    pub fn quoted(&self) -> String {
        quoted_table(&self.schema, &self.name)
    }
}

impl TryFrom<String> for TableName {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_in_public_and_both_parts_are_needed() {
        let users = TableName::parse("users").unwrap();
        assert_eq!(users.parts(), ("public", "users"));
        assert_eq!(users.to_string(), "public.users");
        assert_eq!(TableName::parse("app.users").unwrap().parts(), ("app", "users"));
        assert_eq!(TableName::parse("app.Users\"x").unwrap().quoted(), "\"app\".\"Users\"\"x\"");
        for bad in ["", ".users", "app.", "a.b.c"] {
            assert!(TableName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn it_reads_from_a_config_string() {
        #[derive(Deserialize)]
        struct T {
            table: TableName,
        }
        let t: T = toml::from_str("table = \"app.users\"").unwrap();
        assert_eq!(t.table.parts(), ("app", "users"));
        let error = toml::from_str::<T>("table = \"a.b.c\"").map(|_| ()).unwrap_err();
        assert!(error.to_string().contains("must be `schema.table` or `table`"), "{error}");
    }
}
