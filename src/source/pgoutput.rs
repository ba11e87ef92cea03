//! The pgoutput decoder: bytes of one logical replication message in, a typed
//! message out. Pure: no I/O, never panics on malformed or truncated input.
//!
//! Protocol version 1 (PostgreSQL's "Logical Replication Message Formats").
//! `pgwire-replication` already parses Begin, Commit and Message; everything
//! else reaches us as raw `XLogData` bytes, which this module decodes.
//!
//! Errors name the message kind and the field that was malformed (column
//! indexes are 0-based, matching positions in a [`Tuple`]); they never quote
//! column values, because those are user data that must not reach logs.

use std::fmt::{self, Display};

use bytes::{BufMut, Bytes, BytesMut};

/// A decoding failure. The message names what was malformed, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub struct DecodeError(pub String);

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: unchanged TOASTed value, not sent.
    UnchangedToast,
    /// `t`: the value in text format.
    Text(Bytes),
    /// `b`: the value in binary format (only with `binary 'true'`).
    Binary(Bytes),
}

/// A tuple: one value per column of the relation.
pub type Tuple = Vec<TupleValue>;

/// Which old tuple an UPDATE or DELETE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldTupleKind {
    /// `K`: the replica identity key columns only (others are Null).
    Key,
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 1: part of the replica identity key. Under FULL every column has it.
    pub flags: u8,
    /// The column name, which is how the mapping config refers to columns.
    pub name: String,
    /// The column's type OID, needed to interpret text values.
    pub type_oid: u32,
    /// `atttypmod` (-1 when the type has none), e.g. varchar length.
    pub type_modifier: i32,
}

/// A decoded pgoutput message.
///
/// Tuples in Insert/Update/Delete are positional: their columns line up with
/// the most recent Relation message for the same OID, which Postgres always
/// sends before the first change that needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    /// Start of a transaction; `final_lsn` equals its Commit's `commit_lsn`.
    Begin { final_lsn: u64, commit_time_micros: i64, xid: u32 },
    /// End of a transaction; `end_lsn` is what to confirm as flushed.
    Commit { flags: u8, commit_lsn: u64, end_lsn: u64, commit_time_micros: i64 },
    /// The transaction was replayed from another node (only with origins).
    Origin { commit_lsn: u64, name: String },
    /// Schema of a relation; `namespace` is raw, so "" means `pg_catalog`.
    Relation {
        oid: u32,
        namespace: String,
        name: String,
        replica_identity: u8,
        columns: Vec<RelationColumn>,
    },
    /// Name of a non-builtin type used by a following Relation.
    Type { oid: u32, namespace: String, name: String },
    /// A new row.
    Insert { relation_oid: u32, new: Tuple },
    /// A changed row; `old` is present only when the key changed or under FULL.
    Update { relation_oid: u32, old: Option<(OldTupleKind, Tuple)>, new: Tuple },
    /// A deleted row, identified by its key or (under FULL) its whole old row.
    Delete { relation_oid: u32, old: (OldTupleKind, Tuple) },
    /// TRUNCATE of relations; `options` ORs 1 (CASCADE), 2 (RESTART IDENTITY).
    Truncate { options: u8, relation_oids: Vec<u32> },
    /// A `pg_logical_emit_message` payload; `flags` 1 means transactional.
    Message { flags: u8, lsn: u64, prefix: String, content: Bytes },
}

/// Smallest possible Relation column: flags, an empty name's NUL, type OID
/// and type modifier. Used to bound allocation by what the input can hold.
const MIN_RELATION_COLUMN_LEN: usize = 1 + 1 + 4 + 4;

/// A decoder for one message's body: the signature every kind shares.
type BodyDecoder = fn(&mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError>;

/// Decodes one pgoutput message.
///
/// Strict: the whole buffer must be exactly one message. Text and binary
/// values are zero-copy slices of `data`, so they keep its allocation alive.
pub fn decode(data: &Bytes) -> Result<PgOutputMessage, DecodeError> {
    let Some(&tag) = data.first() else {
        return Err(DecodeError("empty message".into()));
    };
    let (kind, body): (&'static str, BodyDecoder) = match tag {
        b'B' => ("Begin", begin),
        b'C' => ("Commit", commit),
        b'O' => ("Origin", origin),
        b'R' => ("Relation", relation),
        b'Y' => ("Type", type_msg),
        b'I' => ("Insert", insert),
        b'U' => ("Update", update),
        b'D' => ("Delete", delete),
        b'T' => ("Truncate", truncate),
        b'M' => ("Message", message),
        other => return Err(unknown_tag(other)),
    };
    let mut c = Cursor { data, pos: 1, kind };
    let msg = body(&mut c)?;
    if c.remaining() != 0 {
        // A length mismatch means we disagree with the server about the
        // layout; guessing on would silently misattribute column values.
        return Err(c.malformed(format_args!("{} trailing bytes after message", c.remaining())));
    }
    Ok(msg)
}

/// Encodes a message in exactly the layout [`decode`] reads; used by tests and
/// fuzzing to build valid input. Values the wire cannot carry (a NUL inside a
/// string, more than `i16::MAX` columns, a value over `i32::MAX` bytes) are
/// written anyway and will not round-trip.
pub fn encode(msg: &PgOutputMessage) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    match msg {
        PgOutputMessage::Begin { final_lsn, commit_time_micros, xid } => {
            b.put_u8(b'B');
            b.put_u64(*final_lsn);
            b.put_i64(*commit_time_micros);
            b.put_u32(*xid);
        }
        PgOutputMessage::Commit { flags, commit_lsn, end_lsn, commit_time_micros } => {
            b.put_u8(b'C');
            b.put_u8(*flags);
            b.put_u64(*commit_lsn);
            b.put_u64(*end_lsn);
            b.put_i64(*commit_time_micros);
        }
        PgOutputMessage::Origin { commit_lsn, name } => {
            b.put_u8(b'O');
            b.put_u64(*commit_lsn);
            put_cstr(&mut b, name);
        }
        PgOutputMessage::Relation { oid, namespace, name, replica_identity, columns } => {
            b.put_u8(b'R');
            b.put_u32(*oid);
            put_cstr(&mut b, namespace);
            put_cstr(&mut b, name);
            b.put_u8(*replica_identity);
            b.put_i16(columns.len() as i16);
            for col in columns {
                b.put_u8(col.flags);
                put_cstr(&mut b, &col.name);
                b.put_u32(col.type_oid);
                b.put_i32(col.type_modifier);
            }
        }
        PgOutputMessage::Type { oid, namespace, name } => {
            b.put_u8(b'Y');
            b.put_u32(*oid);
            put_cstr(&mut b, namespace);
            put_cstr(&mut b, name);
        }
        PgOutputMessage::Insert { relation_oid, new } => {
            b.put_u8(b'I');
            b.put_u32(*relation_oid);
            b.put_u8(b'N');
            put_tuple(&mut b, new);
        }
        PgOutputMessage::Update { relation_oid, old, new } => {
            b.put_u8(b'U');
            b.put_u32(*relation_oid);
            if let Some((kind, tuple)) = old {
                put_old(&mut b, *kind, tuple);
            }
            b.put_u8(b'N');
            put_tuple(&mut b, new);
        }
        PgOutputMessage::Delete { relation_oid, old: (kind, tuple) } => {
            b.put_u8(b'D');
            b.put_u32(*relation_oid);
            put_old(&mut b, *kind, tuple);
        }
        PgOutputMessage::Truncate { options, relation_oids } => {
            b.put_u8(b'T');
            b.put_i32(relation_oids.len() as i32);
            b.put_u8(*options);
            for oid in relation_oids {
                b.put_u32(*oid);
            }
        }
        PgOutputMessage::Message { flags, lsn, prefix, content } => {
            b.put_u8(b'M');
            b.put_u8(*flags);
            b.put_u64(*lsn);
            put_cstr(&mut b, prefix);
            b.put_i32(content.len() as i32);
            b.put_slice(content);
        }
    }
    b.freeze()
}

fn put_cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

fn put_old(b: &mut BytesMut, kind: OldTupleKind, tuple: &[TupleValue]) {
    b.put_u8(match kind {
        OldTupleKind::Key => b'K',
        OldTupleKind::Full => b'O',
    });
    put_tuple(b, tuple);
}

fn put_tuple(b: &mut BytesMut, tuple: &[TupleValue]) {
    b.put_i16(tuple.len() as i16);
    for value in tuple {
        match value {
            TupleValue::Null => b.put_u8(b'n'),
            TupleValue::UnchangedToast => b.put_u8(b'u'),
            TupleValue::Text(v) => put_value(b, b't', v),
            TupleValue::Binary(v) => put_value(b, b'b', v),
        }
    }
}

fn put_value(b: &mut BytesMut, kind: u8, value: &[u8]) {
    b.put_u8(kind);
    b.put_i32(value.len() as i32);
    b.put_slice(value);
}

/// Names tags we know but do not speak, so an operator who enabled streaming
/// or two-phase commit on the slot sees why instead of a bare byte.
fn unknown_tag(tag: u8) -> DecodeError {
    let later = match tag {
        b'S' => Some("Stream Start"),
        b'E' => Some("Stream Stop"),
        b'c' => Some("Stream Commit"),
        b'A' => Some("Stream Abort"),
        b'b' => Some("Begin Prepare"),
        b'P' => Some("Prepare"),
        b'K' => Some("Commit Prepared"),
        b'r' => Some("Rollback Prepared"),
        b'p' => Some("Stream Prepare"),
        _ => None,
    };
    DecodeError(match later {
        Some(name) => format!(
            "unsupported message tag '{}' ({name}, needs protocol version 2 or later; only version 1 is supported)",
            tag as char
        ),
        None if tag.is_ascii_graphic() => format!("unknown message tag '{}'", tag as char),
        None => format!("unknown message tag 0x{tag:02x}"),
    })
}

fn begin(c: &mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError> {
    Ok(PgOutputMessage::Begin {
        final_lsn: c.u64("final LSN")?,
        commit_time_micros: c.i64("commit timestamp")?,
        xid: c.u32("xid")?,
    })
}

fn commit(c: &mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError> {
    Ok(PgOutputMessage::Commit {
        flags: c.u8("flags")?,
        commit_lsn: c.u64("commit LSN")?,
        end_lsn: c.u64("end LSN")?,
        commit_time_micros: c.i64("commit timestamp")?,
    })
}

fn origin(c: &mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError> {
    Ok(PgOutputMessage::Origin { commit_lsn: c.u64("commit LSN")?, name: c.cstr("origin name")? })
}

fn relation(c: &mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError> {
    let oid = c.u32("relation oid")?;
    let namespace = c.cstr("namespace")?;
    let name = c.cstr("relation name")?;
    let replica_identity = c.u8("replica identity")?;
    let n = c.count16("column count")?;
    let mut columns = Vec::with_capacity(n.min(c.remaining() / MIN_RELATION_COLUMN_LEN));
    for i in 0..n {
        columns.push(RelationColumn {
            flags: c.u8(format_args!("column {i} flags"))?,
            name: c.cstr(format_args!("column {i} name"))?,
            type_oid: c.u32(format_args!("column {i} type oid"))?,
            type_modifier: c.i32(format_args!("column {i} type modifier"))?,
        });
    }
    Ok(PgOutputMessage::Relation { oid, namespace, name, replica_identity, columns })
}

fn type_msg(c: &mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError> {
    Ok(PgOutputMessage::Type {
        oid: c.u32("type oid")?,
        namespace: c.cstr("namespace")?,
        name: c.cstr("type name")?,
    })
}

fn insert(c: &mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError> {
    let relation_oid = c.u32("relation oid")?;
    c.expect(b'N', "new tuple marker")?;
    Ok(PgOutputMessage::Insert { relation_oid, new: tuple(c, "new tuple")? })
}

fn update(c: &mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError> {
    let relation_oid = c.u32("relation oid")?;
    let marker = c.u8("tuple marker")?;
    // The old tuple is optional, so the first marker may already be 'N'.
    let old = match old_kind(marker) {
        Some(kind) => {
            let old = tuple(c, "old tuple")?;
            c.expect(b'N', "new tuple marker")?;
            Some((kind, old))
        }
        None if marker == b'N' => None,
        None => return Err(c.unexpected("tuple marker 'K', 'O' or 'N'", marker)),
    };
    Ok(PgOutputMessage::Update { relation_oid, old, new: tuple(c, "new tuple")? })
}

fn delete(c: &mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError> {
    let relation_oid = c.u32("relation oid")?;
    let marker = c.u8("old tuple marker")?;
    let Some(kind) = old_kind(marker) else {
        return Err(c.unexpected("old tuple marker 'K' or 'O'", marker));
    };
    Ok(PgOutputMessage::Delete { relation_oid, old: (kind, tuple(c, "old tuple")?) })
}

fn truncate(c: &mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError> {
    let n = c.count32("relation count")?;
    let options = c.u8("options")?;
    // Checked up front so a forged count cannot drive a huge allocation.
    let room = c.remaining() / 4;
    if n > room {
        return Err(c.truncated(format_args!("relation oids ({n} declared, room for {room})")));
    }
    let mut relation_oids = Vec::with_capacity(n);
    for i in 0..n {
        relation_oids.push(c.u32(format_args!("relation oid {i}"))?);
    }
    Ok(PgOutputMessage::Truncate { options, relation_oids })
}

fn message(c: &mut Cursor<'_>) -> Result<PgOutputMessage, DecodeError> {
    let flags = c.u8("flags")?;
    let lsn = c.u64("LSN")?;
    let prefix = c.cstr("prefix")?;
    let len = c.count32("content length")?;
    Ok(PgOutputMessage::Message { flags, lsn, prefix, content: c.bytes(len, "content")? })
}

fn old_kind(marker: u8) -> Option<OldTupleKind> {
    match marker {
        b'K' => Some(OldTupleKind::Key),
        b'O' => Some(OldTupleKind::Full),
        _ => None,
    }
}

/// Reads TupleData; `which` ("old tuple"/"new tuple") keeps errors precise.
fn tuple(c: &mut Cursor<'_>, which: &'static str) -> Result<Tuple, DecodeError> {
    let n = c.count16(format_args!("{which} column count"))?;
    // Each column takes at least its kind byte, so the remaining input caps
    // how many can really follow, whatever the count claims.
    let mut values = Vec::with_capacity(n.min(c.remaining()));
    for i in 0..n {
        let kind = c.u8(format_args!("{which} column {i} kind"))?;
        let value = match kind {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' | b'b' => {
                let len = c.count32(format_args!("{which} column {i} length"))?;
                let bytes = c.bytes(len, format_args!("{which} column {i} value"))?;
                if kind == b't' {
                    TupleValue::Text(bytes)
                } else {
                    TupleValue::Binary(bytes)
                }
            }
            other => {
                return Err(c.malformed(format_args!(
                    "unknown kind {} for {which} column {i}",
                    ByteName(other)
                )));
            }
        };
        values.push(value);
    }
    Ok(values)
}

/// Shows a protocol byte as a character when printable, else as hex.
struct ByteName(u8);

impl Display for ByteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// A bounds-checked reader over one message. Field descriptions are taken as
/// `Display` (often `format_args!`) so the happy path never formats strings.
struct Cursor<'a> {
    data: &'a Bytes,
    /// Invariant: `pos <= data.len()`.
    pos: usize,
    /// Message kind, prefixed to every error.
    kind: &'static str,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn truncated(&self, what: impl Display) -> DecodeError {
        DecodeError(format!("{}: truncated {what}", self.kind))
    }

    fn malformed(&self, what: impl Display) -> DecodeError {
        DecodeError(format!("{}: {what}", self.kind))
    }

    fn unexpected(&self, expected: &str, found: u8) -> DecodeError {
        self.malformed(format_args!("expected {expected}, found {}", ByteName(found)))
    }

    /// Reads a marker byte that has exactly one legal value.
    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), DecodeError> {
        match self.u8(what)? {
            b if b == byte => Ok(()),
            b => Err(self.unexpected(&format!("{what} {}", ByteName(byte)), b)),
        }
    }

    fn array<const N: usize>(&mut self, what: impl Display) -> Result<[u8; N], DecodeError> {
        let end = self.pos.saturating_add(N);
        let found = self.data.get(self.pos..end).and_then(|s| s.try_into().ok());
        let Some(bytes) = found else {
            return Err(self.truncated(what));
        };
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self, what: impl Display) -> Result<u8, DecodeError> {
        let [b] = self.array(what)?;
        Ok(b)
    }

    fn i16(&mut self, what: impl Display) -> Result<i16, DecodeError> {
        self.array(what).map(i16::from_be_bytes)
    }

    fn i32(&mut self, what: impl Display) -> Result<i32, DecodeError> {
        self.array(what).map(i32::from_be_bytes)
    }

    /// OIDs and xids are unsigned on the server; the wire carries the bits.
    fn u32(&mut self, what: impl Display) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn i64(&mut self, what: impl Display) -> Result<i64, DecodeError> {
        self.array(what).map(i64::from_be_bytes)
    }

    /// LSNs are unsigned positions in the WAL.
    fn u64(&mut self, what: impl Display) -> Result<u64, DecodeError> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// An Int16 count; the server never sends a negative one.
    fn count16<W: Display + Copy>(&mut self, what: W) -> Result<usize, DecodeError> {
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| self.malformed(format_args!("negative {what} ({n})")))
    }

    /// An Int32 count or length; negative is malformed (v1 has no -1 NULL
    /// lengths: NULL is its own kind byte).
    fn count32<W: Display + Copy>(&mut self, what: W) -> Result<usize, DecodeError> {
        let n = self.i32(what)?;
        usize::try_from(n).map_err(|_| self.malformed(format_args!("negative {what} ({n})")))
    }

    /// `n` bytes as a zero-copy slice of the input.
    fn bytes(&mut self, n: usize, what: impl Display) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated(what));
        }
        let start = self.pos;
        self.pos += n;
        Ok(self.data.slice(start..self.pos))
    }

    /// A NUL-terminated UTF-8 string. Names are short, so owning them is cheap.
    fn cstr<W: Display + Copy>(&mut self, what: W) -> Result<String, DecodeError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(self.truncated(format_args!("{what} (no NUL terminator)")));
        };
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|_| self.malformed(format_args!("invalid UTF-8 in {what}")))?
            .to_owned();
        self.pos += nul + 1;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds bytes field by field, independently of `encode`, so the
    /// per-kind tests check both directions against the documented layout.
    #[derive(Default)]
    struct W(Vec<u8>);

    impl W {
        fn tag(t: u8) -> Self {
            W(vec![t])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn raw(mut self, v: &[u8]) -> Self {
            self.0.extend_from_slice(v);
            self
        }
        fn cstr(self, s: &str) -> Self {
            self.raw(s.as_bytes()).u8(0)
        }
        fn text(self, s: &str) -> Self {
            self.u8(b't').i32(s.len() as i32).raw(s.as_bytes())
        }
        fn done(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// Decodes `bytes`, checks it equals `expected`, and that `encode` gives the bytes back.
    fn check(bytes: Bytes, expected: PgOutputMessage) {
        assert_eq!(decode(&bytes).unwrap(), expected);
        assert_eq!(encode(&expected), bytes);
    }

    fn err(bytes: &[u8]) -> String {
        decode(&Bytes::copy_from_slice(bytes)).unwrap_err().0
    }

    /// One or more samples of every message kind and every tuple value kind.
    fn samples() -> Vec<PgOutputMessage> {
        use PgOutputMessage::*;
        let row = vec![
            text("42"),
            TupleValue::Null,
            TupleValue::UnchangedToast,
            TupleValue::Binary(Bytes::from_static(&[0, 1, 255])),
            text(""),
        ];
        let col = |flags, name: &str, type_oid, type_modifier| RelationColumn {
            flags,
            name: name.into(),
            type_oid,
            type_modifier,
        };
        vec![
            Begin { final_lsn: 0x16B_3748, commit_time_micros: 780_000_000_000_000, xid: 771 },
            Commit { flags: 0, commit_lsn: 1, end_lsn: u64::MAX, commit_time_micros: -1 },
            Origin { commit_lsn: 99, name: "node_a".into() },
            Origin { commit_lsn: 0, name: String::new() },
            Relation {
                oid: 16385,
                namespace: "public".into(),
                name: "users".into(),
                replica_identity: b'd',
                columns: vec![
                    col(1, "id", 20, -1),
                    col(0, "email", 1043, 259),
                    col(0, "naïve", 3802, -1),
                ],
            },
            Relation {
                oid: 1,
                namespace: String::new(),
                name: "t".into(),
                replica_identity: b'n',
                columns: vec![],
            },
            Type { oid: 70000, namespace: "public".into(), name: "mood".into() },
            Insert { relation_oid: 16385, new: row.clone() },
            Insert { relation_oid: 16385, new: vec![] },
            Update { relation_oid: 16385, old: None, new: row.clone() },
            Update {
                relation_oid: 16385,
                old: Some((OldTupleKind::Key, vec![text("41"), TupleValue::Null])),
                new: row.clone(),
            },
            Update {
                relation_oid: 16385,
                old: Some((OldTupleKind::Full, row.clone())),
                new: row.clone(),
            },
            Delete { relation_oid: 16385, old: (OldTupleKind::Key, vec![text("42")]) },
            Delete { relation_oid: 16385, old: (OldTupleKind::Full, row) },
            Truncate { options: 3, relation_oids: vec![16385, 16390, u32::MAX] },
            Truncate { options: 0, relation_oids: vec![] },
            Message {
                flags: 1,
                lsn: 77,
                prefix: "ciosync".into(),
                content: Bytes::from_static(b"{\"a\":1}"),
            },
            Message { flags: 0, lsn: 0, prefix: String::new(), content: Bytes::new() },
        ]
    }

    #[test]
    fn begin_from_literal_bytes() {
        let bytes = Bytes::from_static(&[
            b'B', 0, 0, 0, 0, 0x01, 0x6B, 0x37, 0x48, // final LSN 0/16B3748
            0, 0x02, 0xC5, 0xF2, 0x61, 0x8D, 0xE0, 0x00, // commit time
            0, 0, 0x03, 0x03, // xid 771
        ]);
        let expected = PgOutputMessage::Begin {
            final_lsn: 0x16B_3748,
            commit_time_micros: 0x0002_C5F2_618D_E000,
            xid: 771,
        };
        check(bytes, expected);
    }

    #[test]
    fn commit_from_bytes() {
        let bytes = W::tag(b'C').u8(0).i64(10).i64(20).i64(30).done();
        check(
            bytes,
            PgOutputMessage::Commit {
                flags: 0,
                commit_lsn: 10,
                end_lsn: 20,
                commit_time_micros: 30,
            },
        );
    }

    #[test]
    fn origin_from_bytes() {
        let bytes = W::tag(b'O').i64(5).cstr("pg_1").done();
        check(bytes, PgOutputMessage::Origin { commit_lsn: 5, name: "pg_1".into() });
    }

    #[test]
    fn relation_from_bytes() {
        let bytes = W::tag(b'R')
            .i32(16385)
            .cstr("")
            .cstr("users")
            .u8(b'f')
            .i16(2)
            .u8(1)
            .cstr("id")
            .i32(23)
            .i32(-1)
            .u8(1)
            .cstr("email")
            .i32(1043)
            .i32(104)
            .done();
        let columns = vec![
            RelationColumn { flags: 1, name: "id".into(), type_oid: 23, type_modifier: -1 },
            RelationColumn { flags: 1, name: "email".into(), type_oid: 1043, type_modifier: 104 },
        ];
        // The empty namespace stays empty: callers decide whether it means pg_catalog.
        let expected = PgOutputMessage::Relation {
            oid: 16385,
            namespace: String::new(),
            name: "users".into(),
            replica_identity: b'f',
            columns,
        };
        check(bytes, expected);
    }

    #[test]
    fn type_from_bytes() {
        // OIDs above i32::MAX arrive as negative Int32s on the wire.
        let bytes = W::tag(b'Y').i32(-2).cstr("public").cstr("mood").done();
        check(
            bytes,
            PgOutputMessage::Type {
                oid: u32::MAX - 1,
                namespace: "public".into(),
                name: "mood".into(),
            },
        );
    }

    #[test]
    fn insert_from_bytes() {
        let bytes = W::tag(b'I')
            .i32(7)
            .u8(b'N')
            .i16(4)
            .text("1")
            .u8(b'n')
            .u8(b'u')
            .u8(b'b')
            .i32(2)
            .raw(&[0, 9])
            .done();
        let new = vec![
            text("1"),
            TupleValue::Null,
            TupleValue::UnchangedToast,
            TupleValue::Binary(Bytes::from_static(&[0, 9])),
        ];
        check(bytes, PgOutputMessage::Insert { relation_oid: 7, new });
    }

    #[test]
    fn update_from_bytes() {
        let new = W::tag(b'U').i32(7).u8(b'N').i16(1).text("b").done();
        check(new, PgOutputMessage::Update { relation_oid: 7, old: None, new: vec![text("b")] });

        let key = W::tag(b'U')
            .i32(7)
            .u8(b'K')
            .i16(2)
            .text("a")
            .u8(b'n')
            .u8(b'N')
            .i16(2)
            .text("b")
            .u8(b'u')
            .done();
        let expected = PgOutputMessage::Update {
            relation_oid: 7,
            old: Some((OldTupleKind::Key, vec![text("a"), TupleValue::Null])),
            new: vec![text("b"), TupleValue::UnchangedToast],
        };
        check(key, expected);

        let full = W::tag(b'U').i32(7).u8(b'O').i16(1).text("a").u8(b'N').i16(1).text("b").done();
        let expected = PgOutputMessage::Update {
            relation_oid: 7,
            old: Some((OldTupleKind::Full, vec![text("a")])),
            new: vec![text("b")],
        };
        check(full, expected);
    }

    #[test]
    fn delete_from_bytes() {
        let key = W::tag(b'D').i32(7).u8(b'K').i16(2).text("a").u8(b'n').done();
        check(
            key,
            PgOutputMessage::Delete {
                relation_oid: 7,
                old: (OldTupleKind::Key, vec![text("a"), TupleValue::Null]),
            },
        );
        let full = W::tag(b'D').i32(7).u8(b'O').i16(1).text("a").done();
        check(
            full,
            PgOutputMessage::Delete { relation_oid: 7, old: (OldTupleKind::Full, vec![text("a")]) },
        );
    }

    #[test]
    fn truncate_from_bytes() {
        let bytes = W::tag(b'T').i32(2).u8(1).i32(10).i32(11).done();
        check(bytes, PgOutputMessage::Truncate { options: 1, relation_oids: vec![10, 11] });
    }

    #[test]
    fn message_from_bytes() {
        let bytes = W::tag(b'M').u8(1).i64(42).cstr("p").i32(3).raw(b"a\0b").done();
        check(
            bytes,
            PgOutputMessage::Message {
                flags: 1,
                lsn: 42,
                prefix: "p".into(),
                content: Bytes::from_static(b"a\0b"),
            },
        );
    }

    #[test]
    fn round_trip_every_sample() {
        for m in samples() {
            assert_eq!(decode(&encode(&m)).as_ref(), Ok(&m));
        }
    }

    #[test]
    fn every_proper_prefix_is_an_error() {
        for m in samples() {
            let full = encode(&m);
            for len in 0..full.len() {
                assert!(
                    decode(&full.slice(..len)).is_err(),
                    "prefix of {len} bytes of {m:?} decoded"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        for m in samples() {
            let mut bytes = encode(&m).to_vec();
            bytes.push(0);
            assert!(err(&bytes).contains("1 trailing bytes"), "{m:?}");
        }
    }

    #[test]
    fn values_are_zero_copy_slices() {
        let bytes = W::tag(b'I').i32(7).u8(b'N').i16(1).text("hello").done();
        let PgOutputMessage::Insert { new, .. } = decode(&bytes).unwrap() else {
            panic!("not an insert")
        };
        let TupleValue::Text(v) = &new[0] else { panic!("not text") };
        let range = bytes.as_ptr_range();
        assert!(range.contains(&v.as_ptr()) && v.as_ptr_range().end <= range.end);
    }

    #[test]
    fn truncation_errors_name_the_field_not_the_value() {
        let bytes = W::tag(b'I')
            .i32(7)
            .u8(b'N')
            .i16(3)
            .text("a")
            .u8(b'n')
            .text("secret@example.com")
            .done();
        let e = err(&bytes[..bytes.len() - 3]);
        assert_eq!(e, "Insert: truncated new tuple column 2 value");
        assert!(!e.contains("secret"));
        // Cut inside column 2's length field.
        assert_eq!(err(&bytes[..17]), "Insert: truncated new tuple column 2 length");
        let e = DecodeError(e).to_string();
        assert!(e.starts_with("malformed pgoutput message: "), "{e}");
    }

    #[test]
    fn empty_and_unknown_tags_are_errors() {
        assert_eq!(err(&[]), "empty message");
        assert!(err(b"S\0\0\0\x01\x01").contains("Stream Start"));
        assert!(err(b"c").contains("Stream Commit"));
        assert_eq!(err(b"Z"), "unknown message tag 'Z'");
        assert_eq!(err(&[0]), "unknown message tag 0x00");
    }

    #[test]
    fn bad_strings_are_errors() {
        let bad_utf8 = W::tag(b'Y').i32(1).cstr("public").raw(&[0xff, 0xfe]).u8(0).done();
        assert_eq!(err(&bad_utf8), "Type: invalid UTF-8 in type name");
        let no_nul = W::tag(b'O').i64(1).raw(b"abc").done();
        assert_eq!(err(&no_nul), "Origin: truncated origin name (no NUL terminator)");
        let bad_col = W::tag(b'R')
            .i32(1)
            .cstr("s")
            .cstr("t")
            .u8(b'd')
            .i16(1)
            .u8(0)
            .raw(&[0xc3])
            .u8(0)
            .i32(1)
            .i32(1)
            .done();
        assert_eq!(err(&bad_col), "Relation: invalid UTF-8 in column 0 name");
    }

    #[test]
    fn negative_counts_and_lengths_are_errors() {
        let tuple_len = W::tag(b'I').i32(1).u8(b'N').i16(1).u8(b't').i32(-1).done();
        assert_eq!(err(&tuple_len), "Insert: negative new tuple column 0 length (-1)");
        let tuple_count = W::tag(b'D').i32(1).u8(b'K').i16(-1).done();
        assert_eq!(err(&tuple_count), "Delete: negative old tuple column count (-1)");
        let rel_count = W::tag(b'R').i32(1).cstr("s").cstr("t").u8(b'd').i16(-5).done();
        assert_eq!(err(&rel_count), "Relation: negative column count (-5)");
        let trunc = W::tag(b'T').i32(-1).u8(0).done();
        assert_eq!(err(&trunc), "Truncate: negative relation count (-1)");
        let msg = W::tag(b'M').u8(0).i64(0).cstr("p").i32(i32::MIN).done();
        assert_eq!(err(&msg), "Message: negative content length (-2147483648)");
    }

    #[test]
    fn bad_markers_and_kinds_are_errors() {
        let kind = W::tag(b'I').i32(1).u8(b'N').i16(1).u8(b'x').done();
        assert_eq!(err(&kind), "Insert: unknown kind 'x' for new tuple column 0");
        let insert = W::tag(b'I').i32(1).u8(b'K').i16(0).done();
        assert_eq!(err(&insert), "Insert: expected new tuple marker 'N', found 'K'");
        let update = W::tag(b'U').i32(1).u8(b'X').i16(0).done();
        assert_eq!(err(&update), "Update: expected tuple marker 'K', 'O' or 'N', found 'X'");
        let update_twice_old = W::tag(b'U').i32(1).u8(b'K').i16(0).u8(b'O').i16(0).done();
        assert_eq!(err(&update_twice_old), "Update: expected new tuple marker 'N', found 'O'");
        let delete = W::tag(b'D').i32(1).u8(b'N').i16(0).done();
        assert_eq!(err(&delete), "Delete: expected old tuple marker 'K' or 'O', found 'N'");
    }

    #[test]
    fn huge_declared_counts_fail_fast_without_big_allocations() {
        let cases = [
            W::tag(b'I').i32(1).u8(b'N').i16(i16::MAX).u8(b'n').u8(b'n').done(),
            W::tag(b'I').i32(1).u8(b'N').i16(1).u8(b't').i32(i32::MAX).raw(b"abc").done(),
            W::tag(b'R').i32(1).cstr("").cstr("t").u8(b'd').i16(i16::MAX).u8(0).done(),
            W::tag(b'T').i32(i32::MAX).u8(0).i32(1).done(),
            W::tag(b'M').u8(0).i64(0).cstr("").i32(i32::MAX).done(),
        ];
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            for bytes in &cases {
                assert!(decode(bytes).is_err());
            }
        }
        // Generous bound for a shared debug build; an allocation per huge
        // count would take far longer (and likely abort).
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(
            err(&cases[3]),
            "Truncate: truncated relation oids (2147483647 declared, room for 1)"
        );
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Strict decoding means any accepted input is in canonical form, so a
    /// successful decode must re-encode to exactly the same bytes.
    fn assert_canonical_if_ok(bytes: &Bytes) {
        if let Ok(m) = decode(bytes) {
            assert_eq!(&encode(&m), bytes, "{m:?}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        const TAGS: &[u8] = b"BCORYIUDTMSEcAbPKrpntuNb";
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut buf = Vec::with_capacity(64);
        for _ in 0..200_000 {
            buf.clear();
            let len = rng.below(64);
            for i in 0..len {
                let b = rng.next() as u8;
                buf.push(if i == 0 && rng.next() & 1 == 0 {
                    TAGS[rng.below(TAGS.len())]
                } else {
                    b
                });
            }
            assert_canonical_if_ok(&Bytes::copy_from_slice(&buf));
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic() {
        let mut rng = XorShift(42);
        for m in samples() {
            let valid = encode(&m).to_vec();
            for _ in 0..2_000 {
                let mut bytes = valid.clone();
                for _ in 0..=rng.below(3) {
                    let i = rng.below(bytes.len());
                    // Small values hit the interesting counts, kinds and NULs.
                    bytes[i] =
                        if rng.next() & 1 == 0 { rng.next() as u8 } else { rng.below(4) as u8 };
                }
                assert_canonical_if_ok(&Bytes::from(bytes));
            }
        }
    }
}
