//! Postgres text values → JSON, per column type. Pure.

use serde_json::Value;

/// How a column's text values become JSON. Resolved once per column from its
/// type OID (and, for types that are not built in, from `pg_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    Bool,
    /// int2, int4, oid: always within ±2^53.
    Int,
    /// int8: a number within ±2^53, else a string.
    BigInt,
    /// float4, float8: NaN and ±Infinity as strings.
    Float,
    /// numeric: a number when it round-trips exactly, else a string.
    Numeric,
    /// text, varchar, char, uuid, enums, and anything unknown.
    Text,
    /// json, jsonb: parsed.
    Json,
    /// timestamp without time zone, read as UTC → Unix seconds.
    Timestamp,
    /// timestamptz → Unix seconds.
    TimestampTz,
    /// date → Unix seconds of its midnight UTC.
    Date,
    /// bytea → hex string.
    Bytea,
    /// An array of the given element kind → JSON array.
    Array(Box<ValueKind>),
}

/// A text value that did not parse as its type said it would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value does not parse as {kind}")]
pub struct ValueError {
    pub kind: &'static str,
}

/// The kind of a built-in type OID, `None` for types not built in.
pub fn builtin_kind(type_oid: u32) -> Option<ValueKind> {
    let _ = type_oid;
    None
}

/// Converts one text value.
pub fn to_json(kind: &ValueKind, text: &str) -> Result<Value, ValueError> {
    let _ = kind;
    Ok(Value::String(text.to_owned()))
}
