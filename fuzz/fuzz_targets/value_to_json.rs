//! Text-to-JSON conversion for every value kind: the first byte picks the
//! kind (scalars, arrays of them, arrays of arrays), the rest is the text,
//! read lossily as UTF-8 because Postgres text values are always valid UTF-8.
#![no_main]

use ciosync::mapping::value::{to_json, ValueKind};
use libfuzzer_sys::fuzz_target;

const SCALARS: [ValueKind; 11] = [
    ValueKind::Bool,
    ValueKind::Int,
    ValueKind::BigInt,
    ValueKind::Float,
    ValueKind::Numeric,
    ValueKind::Text,
    ValueKind::Json,
    ValueKind::Timestamp,
    ValueKind::TimestampTz,
    ValueKind::Date,
    ValueKind::Bytea,
];

/// Byte `b` → a scalar kind, an array of one, or an array of arrays of one.
fn kind(b: u8) -> ValueKind {
    let scalar = SCALARS[usize::from(b) % SCALARS.len()].clone();
    match usize::from(b) / SCALARS.len() % 3 {
        0 => scalar,
        1 => ValueKind::Array(Box::new(scalar)),
        _ => ValueKind::Array(Box::new(ValueKind::Array(Box::new(scalar)))),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let _ = to_json(&kind(first), &text);
});
