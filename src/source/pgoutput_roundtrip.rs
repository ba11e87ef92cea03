//! Property test of the pgoutput decoder: any message the wire can carry,
//! written byte by byte in the layout PostgreSQL documents, decodes back to
//! itself, and no proper prefix of it decodes at all.
//!
//! The encoder here is deliberately separate from `pgoutput::encode`: it is
//! written from the protocol documentation, so a shared misreading of the
//! layout cannot make both sides agree.

use bytes::Bytes;
use proptest::prelude::*;

use super::pgoutput::{decode, OldTupleKind, PgOutputMessage, RelationColumn, Tuple, TupleValue};

/// Generated cases per property: enough to cover every kind many times over,
/// few enough that `cargo test --lib` stays fast.
const CASES: u32 = 256;

/// Writes one message in protocol version 1's layout.
fn wire(msg: &PgOutputMessage) -> Vec<u8> {
    let mut w = Vec::new();
    match msg {
        PgOutputMessage::Begin { final_lsn, commit_time_micros, xid } => {
            w.push(b'B');
            w.extend(final_lsn.to_be_bytes());
            w.extend(commit_time_micros.to_be_bytes());
            w.extend(xid.to_be_bytes());
        }
        PgOutputMessage::Commit { flags, commit_lsn, end_lsn, commit_time_micros } => {
            w.push(b'C');
            w.push(*flags);
            w.extend(commit_lsn.to_be_bytes());
            w.extend(end_lsn.to_be_bytes());
            w.extend(commit_time_micros.to_be_bytes());
        }
        PgOutputMessage::Origin { commit_lsn, name } => {
            w.push(b'O');
            w.extend(commit_lsn.to_be_bytes());
            string(&mut w, name);
        }
        PgOutputMessage::Relation { oid, namespace, name, replica_identity, columns } => {
            w.push(b'R');
            w.extend(oid.to_be_bytes());
            string(&mut w, namespace);
            string(&mut w, name);
            w.push(*replica_identity);
            w.extend(int16(columns.len()).to_be_bytes());
            for column in columns {
                w.push(column.flags);
                string(&mut w, &column.name);
                w.extend(column.type_oid.to_be_bytes());
                w.extend(column.type_modifier.to_be_bytes());
            }
        }
        PgOutputMessage::Type { oid, namespace, name } => {
            w.push(b'Y');
            w.extend(oid.to_be_bytes());
            string(&mut w, namespace);
            string(&mut w, name);
        }
        PgOutputMessage::Insert { relation_oid, new } => {
            w.push(b'I');
            w.extend(relation_oid.to_be_bytes());
            w.push(b'N');
            tuple_data(&mut w, new);
        }
        PgOutputMessage::Update { relation_oid, old, new } => {
            w.push(b'U');
            w.extend(relation_oid.to_be_bytes());
            if let Some((kind, old)) = old {
                w.push(old_marker(*kind));
                tuple_data(&mut w, old);
            }
            w.push(b'N');
            tuple_data(&mut w, new);
        }
        PgOutputMessage::Delete { relation_oid, old: (kind, old) } => {
            w.push(b'D');
            w.extend(relation_oid.to_be_bytes());
            w.push(old_marker(*kind));
            tuple_data(&mut w, old);
        }
        PgOutputMessage::Truncate { options, relation_oids } => {
            w.push(b'T');
            w.extend(int32(relation_oids.len()).to_be_bytes());
            w.push(*options);
            for oid in relation_oids {
                w.extend(oid.to_be_bytes());
            }
        }
        PgOutputMessage::Message { flags, lsn, prefix, content } => {
            w.push(b'M');
            w.push(*flags);
            w.extend(lsn.to_be_bytes());
            string(&mut w, prefix);
            w.extend(int32(content.len()).to_be_bytes());
            w.extend_from_slice(content);
        }
    }
    w
}

/// `String`: the bytes, then a NUL.
fn string(w: &mut Vec<u8>, s: &str) {
    w.extend_from_slice(s.as_bytes());
    w.push(0);
}

fn old_marker(kind: OldTupleKind) -> u8 {
    match kind {
        OldTupleKind::Key => b'K',
        OldTupleKind::Full => b'O',
    }
}

/// `TupleData`: an Int16 column count, then per column a kind byte and, for
/// `t` and `b`, an Int32 length and the value's bytes.
fn tuple_data(w: &mut Vec<u8>, tuple: &Tuple) {
    w.extend(int16(tuple.len()).to_be_bytes());
    for value in tuple {
        let (kind, bytes) = match value {
            TupleValue::Null => (b'n', None),
            TupleValue::UnchangedToast => (b'u', None),
            TupleValue::Text(v) => (b't', Some(v)),
            TupleValue::Binary(v) => (b'b', Some(v)),
        };
        w.push(kind);
        if let Some(bytes) = bytes {
            w.extend(int32(bytes.len()).to_be_bytes());
            w.extend_from_slice(bytes);
        }
    }
}

fn int16(n: usize) -> i16 {
    i16::try_from(n).expect("the strategies keep counts within Int16")
}

fn int32(n: usize) -> i32 {
    i32::try_from(n).expect("the strategies keep lengths within Int32")
}

/// Names as the wire carries them: any UTF-8 without NUL, sometimes empty.
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>().prop_filter("NUL ends a String", |c| *c != '\0'), 0..12)
        .prop_map(String::from_iter)
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn tuple() -> impl Strategy<Value = Tuple> {
    let value = prop_oneof![
        Just(TupleValue::Null),
        Just(TupleValue::UnchangedToast),
        payload().prop_map(TupleValue::Text),
        payload().prop_map(TupleValue::Binary),
    ];
    prop::collection::vec(value, 0..8)
}

fn old_tuple() -> impl Strategy<Value = (OldTupleKind, Tuple)> {
    (prop_oneof![Just(OldTupleKind::Key), Just(OldTupleKind::Full)], tuple())
}

fn column() -> impl Strategy<Value = RelationColumn> {
    (any::<u8>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(flags, name, type_oid, type_modifier)| RelationColumn {
            flags,
            name,
            type_oid,
            type_modifier,
        },
    )
}

/// Every message kind the decoder speaks, with arbitrary field values.
fn message() -> impl Strategy<Value = PgOutputMessage> {
    prop_oneof![
        (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(
            |(final_lsn, commit_time_micros, xid)| PgOutputMessage::Begin {
                final_lsn,
                commit_time_micros,
                xid
            }
        ),
        (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time_micros)| PgOutputMessage::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time_micros
            }
        ),
        (any::<u64>(), name())
            .prop_map(|(commit_lsn, name)| PgOutputMessage::Origin { commit_lsn, name }),
        (any::<u32>(), name(), name(), any::<u8>(), prop::collection::vec(column(), 0..6))
            .prop_map(|(oid, namespace, name, replica_identity, columns)| {
                PgOutputMessage::Relation { oid, namespace, name, replica_identity, columns }
            }),
        (any::<u32>(), name(), name()).prop_map(|(oid, namespace, name)| PgOutputMessage::Type {
            oid,
            namespace,
            name
        }),
        (any::<u32>(), tuple())
            .prop_map(|(relation_oid, new)| PgOutputMessage::Insert { relation_oid, new }),
        (any::<u32>(), prop::option::of(old_tuple()), tuple()).prop_map(
            |(relation_oid, old, new)| PgOutputMessage::Update { relation_oid, old, new }
        ),
        (any::<u32>(), old_tuple())
            .prop_map(|(relation_oid, old)| PgOutputMessage::Delete { relation_oid, old }),
        (any::<u8>(), prop::collection::vec(any::<u32>(), 0..8)).prop_map(
            |(options, relation_oids)| PgOutputMessage::Truncate { options, relation_oids }
        ),
        (any::<u8>(), any::<u64>(), name(), payload()).prop_map(|(flags, lsn, prefix, content)| {
            PgOutputMessage::Message { flags, lsn, prefix, content }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn every_encoded_message_decodes_to_itself(msg in message()) {
        let bytes = Bytes::from(wire(&msg));
        prop_assert_eq!(decode(&bytes), Ok(msg));
    }

    #[test]
    fn no_proper_prefix_of_an_encoded_message_decodes(msg in message(), cut in any::<prop::sample::Index>()) {
        let bytes = wire(&msg);
        let prefix = Bytes::copy_from_slice(&bytes[..cut.index(bytes.len())]);
        prop_assert!(decode(&prefix).is_err());
    }
}
