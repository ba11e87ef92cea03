//! Row changes as the source hands them to the mapper.
//!
//! A [`RowChange`] is one INSERT, UPDATE or DELETE of a synced table, already
//! resolved against the table's schema (column names and value kinds), with
//! values still in Postgres's text form. Nothing here does I/O.

use std::sync::Arc;

use bytes::Bytes;

/// How a column's text values become JSON (the mapper's `value` module
/// converts them). Resolved once per column from its type OID (and, for
/// types that are not built in, from `pg_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    /// bool: `t`/`f` → `true`/`false`.
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

/// Postgres's replica identity setting for a table, as sent in pgoutput's
/// Relation message. It decides what the old row of an UPDATE or DELETE holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the old row carries only the primary key, and only when it changed.
    Default,
    /// `n`: no old row at all.
    Nothing,
    /// `f`: the old row carries every column.
    Full,
    /// `i`: the old row carries the columns of the chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// Reads pgoutput's one-byte code; `None` for a byte Postgres never sends.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }
}

/// One column of a synced table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableColumn {
    /// The column's name as Postgres reports it (case preserved).
    pub name: String,
    /// The column's type OID.
    pub type_oid: u32,
    /// How the column's text values become JSON.
    pub kind: ValueKind,
}

/// A synced table's schema as known from the last Relation message, with
/// the column that identifies the customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The relation's OID; pgoutput names tables by it.
    pub oid: u32,
    /// Schema (namespace) name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Columns in the order pgoutput sends them.
    pub columns: Vec<TableColumn>,
    /// The table's replica identity at the time of the Relation message.
    pub replica_identity: ReplicaIdentity,
}

impl Table {
    /// `schema.name`, the form the config and the logs use.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Position of the named column, if the table has it.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// One column value of a row, as pgoutput delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// A TOASTed value that the UPDATE did not change, so Postgres did not
    /// send it. It is never a change and never sent to Customer.io.
    UnchangedToast,
    /// The value's text form (Postgres's output function, UTF-8).
    Text(Bytes),
}

/// A row: one [`Datum`] per column of its [`Table`], in column order.
pub type Row = Vec<Datum>;

/// What happened to a row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOp {
    /// A new row.
    Insert { new: Row },
    /// A changed row. `old` is the whole previous row with REPLICA IDENTITY
    /// FULL, only the key columns when the key changed under DEFAULT/INDEX
    /// identity (other columns are [`Datum::Null`] there), and `None` otherwise.
    Update { old: Option<Row>, old_is_key_only: bool, new: Row },
    /// A removed row: the whole row under FULL, key columns only otherwise.
    Delete { old: Row },
}

/// One committed row change of a synced table, in commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// The table's schema as of this change.
    pub table: Arc<Table>,
    /// The change itself.
    pub op: RowOp,
    /// Commit time of the change's transaction, Unix seconds.
    pub commit_time: i64,
    /// Where the change is in the WAL; the same when a transaction is replayed.
    pub position: WalPosition,
}

/// A change's place in the WAL: its transaction's commit LSN and its index
/// among the transaction's row changes. Replaying a transaction (after a
/// restart before the acknowledgement) yields the same positions, which is
/// what makes event ids deterministic. Rows read by the initial copy or a
/// backfill have the default (0, 0): they never produce events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalPosition {
    pub commit_lsn: u64,
    pub index: u32,
}
