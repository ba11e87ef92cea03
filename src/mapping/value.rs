//! Postgres text values → JSON, per column type. Pure.
//!
//! The input is what a walsender pinned to `TimeZone=UTC`, `DateStyle=ISO,MDY`
//! and `extra_float_digits=3` prints, so every parser here is hand-written for
//! exactly those formats: this runs for every column of every change.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate};
use serde_json::{Number, Value};

pub use crate::change::ValueKind;

/// A text value that did not parse as its type said it would. It names only
/// the kind, never the value, so it can be logged without leaking user data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value does not parse as {kind}")]
pub struct ValueError {
    /// The kind the value failed to parse as, e.g. `"timestamptz"`.
    pub kind: &'static str,
}

/// The largest integer magnitude a JSON consumer using doubles (JavaScript,
/// Customer.io) holds exactly; beyond it integers travel as strings.
pub const MAX_SAFE_INTEGER: u64 = 1 << 53;

/// Days from 0001-01-01 (CE day 1) to 1970-01-01, for chrono's day count.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// The kind of a built-in type OID, `None` for types not built in, so the
/// caller knows to look the type up in `pg_type` instead.
pub fn builtin_kind(type_oid: u32) -> Option<ValueKind> {
    // box[] uses `;` as its element delimiter, which the array parser does
    // not speak; passing it through as text is lossless.
    if type_oid == 1020 {
        return Some(ValueKind::Text);
    }
    let elem = match type_oid {
        1000 => 16,
        1001 => 17,
        1002 => 18,
        1003 => 19,
        1005 => 21,
        1007 => 23,
        1009 => 25,
        1014 => 1042,
        1015 => 1043,
        1016 => 20,
        1021 => 700,
        1022 => 701,
        1028 => 26,
        1115 => 1114,
        1182 => 1082,
        1183 => 1083,
        1185 => 1184,
        1187 => 1186,
        1231 => 1700,
        1270 => 1266,
        2951 => 2950,
        3807 => 3802,
        199 => 114,
        791 => 790,
        1041 => 869,
        651 => 650,
        1040 => 829,
        143 => 142,
        _ => return scalar_kind(type_oid),
    };
    scalar_kind(elem).map(|k| ValueKind::Array(Box::new(k)))
}

fn scalar_kind(type_oid: u32) -> Option<ValueKind> {
    use ValueKind::*;
    Some(match type_oid {
        16 => Bool,
        17 => Bytea,
        20 => BigInt,
        21 | 23 | 26 => Int,
        114 | 3802 => Json,
        700 | 701 => Float,
        1082 => Date,
        1114 => Timestamp,
        1184 => TimestampTz,
        1700 => Numeric,
        // char, name, text, xml, box, money, bpchar, varchar, time,
        // interval, timetz, uuid, inet, cidr, macaddr: no better JSON shape.
        18 | 19 | 25 | 142 | 603 | 790 | 1042 | 1043 | 1083 | 1186 | 1266 | 2950 | 869 | 650
        | 829 => Text,
        _ => return None,
    })
}

/// Converts one text value (never SQL NULL: the caller maps that to `null`)
/// to the JSON that Customer.io gets for it.
pub fn to_json(kind: &ValueKind, text: &str) -> Result<Value, ValueError> {
    match kind {
        ValueKind::Bool => match text {
            "t" | "true" => Ok(Value::Bool(true)),
            "f" | "false" => Ok(Value::Bool(false)),
            _ => Err(err("bool")),
        },
        // int2/int4/oid never exceed 2^53, so sharing int8's path costs
        // nothing and keeps a mis-resolved domain from losing precision.
        ValueKind::Int => integer(text, "integer"),
        ValueKind::BigInt => integer(text, "bigint"),
        ValueKind::Float => float(text),
        ValueKind::Numeric => numeric(text),
        ValueKind::Text => Ok(Value::String(text.to_owned())),
        ValueKind::Json => serde_json::from_str(text).map_err(|_| err("json")),
        ValueKind::Timestamp => datetime(text, false, true, "timestamp"),
        ValueKind::TimestampTz => datetime(text, true, true, "timestamptz"),
        ValueKind::Date => datetime(text, false, false, "date"),
        ValueKind::Bytea => bytea(text),
        ValueKind::Array(elem) => array(elem, text),
    }
}

fn err(kind: &'static str) -> ValueError {
    ValueError { kind }
}

fn integer(text: &str, kind: &'static str) -> Result<Value, ValueError> {
    let n: i64 = text.parse().map_err(|_| err(kind))?;
    if n.unsigned_abs() > MAX_SAFE_INTEGER {
        Ok(Value::String(text.to_owned()))
    } else {
        Ok(Value::Number(n.into()))
    }
}

fn float(text: &str) -> Result<Value, ValueError> {
    // Rust's parser also takes "inf", "nan" and overflows to infinity; only
    // Postgres' own spellings are accepted as the non-finite values.
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Ok(Value::String(text.to_owned()));
    }
    let f: f64 = text.parse().map_err(|_| err("float"))?;
    Number::from_f64(f).map(Value::Number).ok_or(err("float"))
}

fn numeric(text: &str) -> Result<Value, ValueError> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Ok(Value::String(text.to_owned()));
    }
    // numeric_out always prints plain `-?digits(.digits)?`, never exponents.
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || unsigned.ends_with('.') {
        return Err(err("numeric"));
    }
    let negative = unsigned.len() != text.len();
    if frac.bytes().all(|b| b == b'0') {
        let sig = int.trim_start_matches('0');
        // 2^53 has 16 digits; longer can't be safe and could overflow u64.
        if sig.len() <= 16 {
            let n: u64 = sig.parse().unwrap_or(0);
            if n <= MAX_SAFE_INTEGER {
                let n = n as i64; // ≤ 2^53, so lossless
                let n = if negative { -n } else { n };
                return Ok(Value::Number(n.into()));
            }
        }
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && same_decimal(int, frac, f) => {
            Ok(Number::from_f64(f).map_or_else(|| Value::String(text.to_owned()), Value::Number))
        }
        _ => Ok(Value::String(text.to_owned())),
    }
}

/// Whether the shortest representation of `f` denotes exactly the decimal
/// `int.frac` (sign ignored: parsing preserves it). Both sides are brought
/// to significant digits plus a decimal exponent, without allocating.
fn same_decimal(int: &str, frac: &str, f: f64) -> bool {
    let mut buf = StackStr::<40>::new();
    // `{:e}` prints shortest round-trip digits, e.g. "1.5e0", "-1e-7".
    if write!(buf, "{f:e}").is_err() {
        return false;
    }
    let shown = buf.as_str().trim_start_matches('-');
    let Some((mantissa, exp)) = shown.split_once('e') else {
        return false;
    };
    let Ok(exp) = exp.parse::<i64>() else {
        return false;
    };
    let digits = || int.bytes().chain(frac.bytes());
    let leading = digits().take_while(|&b| b == b'0').count();
    let total = int.len() + frac.len();
    let trailing = frac.bytes().rev().take_while(|&b| b == b'0').count()
        + if frac.bytes().all(|b| b == b'0') {
            int.bytes().rev().take_while(|&b| b == b'0').count()
        } else {
            0
        };
    if leading + trailing >= total {
        return mantissa == "0";
    }
    // Value = 0.d1d2…dn × 10^E on both sides.
    let in_exp = int.len() as i64 - leading as i64;
    if in_exp != exp + 1 {
        return false;
    }
    let sig = digits().skip(leading).take(total - leading - trailing);
    sig.eq(mantissa.bytes().filter(|&b| b != b'.'))
}

/// A fixed-size `fmt::Write` target, so formatting a float allocates nothing.
struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    fn new() -> Self {
        Self { buf: [0; N], len: 0 }
    }
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this cannot fail.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> std::fmt::Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A byte cursor for the fixed-layout date/time formats.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.b.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }
    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }
    /// Reads `min..=max` ASCII digits as a number (saturating, so an endless
    /// fraction cannot overflow).
    fn num(&mut self, min: usize, max: usize) -> Option<i64> {
        let (mut n, mut count) = (0i64, 0);
        for &d in self.b[self.i..].iter().take(max).take_while(|b| b.is_ascii_digit()) {
            n = n.saturating_mul(10).saturating_add(i64::from(d - b'0'));
            count += 1;
        }
        self.i += count;
        (count >= min).then_some(n)
    }
    fn field(&mut self, below: i64) -> Option<i64> {
        self.num(2, 2).filter(|&v| v < below)
    }
}

/// Parses ISO `date`, `timestamp` or `timestamptz` output into Unix seconds
/// (fractional seconds floored). Values chrono cannot place on its calendar
/// come back as the original text rather than failing the whole row.
fn datetime(text: &str, tz: bool, time: bool, kind: &'static str) -> Result<Value, ValueError> {
    if text == "infinity" || text == "-infinity" {
        return Ok(Value::String(text.to_owned()));
    }
    // The era suffix comes last, even after the offset: "…12:00:00+00 BC".
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let (year, month, day, secs) = fields(body, tz, time).ok_or(err(kind))?;
    // Astronomical numbering, as chrono's proleptic Gregorian calendar uses.
    let year = if bc { 1 - year } else { year };
    let Ok(year) = i32::try_from(year) else {
        return Ok(Value::String(text.to_owned()));
    };
    if !(NaiveDate::MIN.year()..=NaiveDate::MAX.year()).contains(&year) {
        return Ok(Value::String(text.to_owned()));
    }
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or(err(kind))?;
    let days = i64::from(date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE;
    Ok(Value::Number((days * 86_400 + secs).into()))
}

/// Splits `Y-MM-DD[ HH:MM:SS[.f][±HH[:MM[:SS]]]]` into year, month, day and
/// seconds from that day's UTC midnight (may be negative or past a day).
fn fields(body: &str, tz: bool, time: bool) -> Option<(i64, u32, u32, i64)> {
    let mut c = Cursor { b: body.as_bytes(), i: 0 };
    let year = c.num(4, 9).filter(|&y| y > 0)?;
    c.expect(b'-')?;
    let month = c.num(2, 2).filter(|m| (1..=12).contains(m))?;
    c.expect(b'-')?;
    let day = c.num(2, 2).filter(|d| (1..=31).contains(d))?;
    let mut secs = 0;
    if time {
        c.expect(b' ')?;
        let h = c.field(24)?;
        c.expect(b':')?;
        let m = c.field(60)?;
        c.expect(b':')?;
        let s = c.field(61)?;
        // The fraction is in [0, 1) and added to a whole second, so flooring
        // is dropping it, before or after the epoch alike.
        if c.eat(b'.') {
            c.num(1, usize::MAX)?;
        }
        secs = h * 3600 + m * 60 + s;
    }
    if tz {
        let sign = if c.eat(b'+') {
            1
        } else {
            c.expect(b'-')?;
            -1
        };
        let mut off = c.num(2, 2)? * 3600;
        // Historic local mean times print as +HH:MM:SS.
        for scale in [60, 1] {
            if !c.eat(b':') {
                break;
            }
            off += c.field(60)? * scale;
        }
        secs -= sign * off;
    }
    // Month and day were range-checked, so the casts are lossless.
    (c.i == c.b.len()).then_some((year, month as u32, day as u32, secs))
}

fn bytea(text: &str) -> Result<Value, ValueError> {
    // Only hex output is supported; escape format would need bytea_output
    // changed on the session, which ciosync never does.
    let hex = text.strip_prefix("\\x").ok_or(err("bytea"))?;
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err("bytea"));
    }
    Ok(Value::String(hex.to_ascii_lowercase()))
}

/// Parses array output (`{…}`, optionally prefixed by `[lo:hi]=` bounds)
/// with `,` as the delimiter, converting each element by `elem`.
fn array(elem: &ValueKind, text: &str) -> Result<Value, ValueError> {
    let b = text.as_bytes();
    let mut i = 0;
    // Bounds only appear when a lower bound isn't 1; JSON has no place
    // for them, so they are checked for shape and dropped.
    if b.first() == Some(&b'[') {
        while b.get(i) == Some(&b'[') {
            let close = b[i..].iter().position(|&c| c == b']').ok_or(err("array"))?;
            let inner = &b[i + 1..i + close];
            if !inner.iter().all(|&c| c.is_ascii_digit() || c == b':' || c == b'-') {
                return Err(err("array"));
            }
            i += close + 1;
        }
        if b.get(i) != Some(&b'=') {
            return Err(err("array"));
        }
        i += 1;
    }
    let mut p = ArrayParser { text, b, i, elem, scratch: String::new() };
    p.skip_ws();
    let v = p.level(0)?;
    p.skip_ws();
    if p.i != b.len() {
        return Err(err("array"));
    }
    Ok(v)
}

struct ArrayParser<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    elem: &'a ValueKind,
    /// One buffer reused for every element's unescaped text.
    scratch: String,
}

impl ArrayParser<'_> {
    fn skip_ws(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    /// Parses one `{…}`; `depth` bounds recursion on hostile input
    /// (Postgres allows at most 6 dimensions).
    fn level(&mut self, depth: usize) -> Result<Value, ValueError> {
        if depth >= 6 || self.b.get(self.i) != Some(&b'{') {
            return Err(err("array"));
        }
        self.i += 1;
        self.skip_ws();
        let mut out = Vec::new();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(Value::Array(out));
        }
        let mut nested = None;
        loop {
            self.skip_ws();
            let sub = self.b.get(self.i) == Some(&b'{');
            // A level holds either sub-arrays or elements, never both.
            if *nested.get_or_insert(sub) != sub {
                return Err(err("array"));
            }
            out.push(if sub { self.level(depth + 1)? } else { self.element()? });
            self.skip_ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Array(out));
                }
                _ => return Err(err("array")),
            }
        }
    }

    fn element(&mut self) -> Result<Value, ValueError> {
        let quoted = self.b.get(self.i) == Some(&b'"');
        self.i += usize::from(quoted);
        self.scratch.clear();
        let mut escaped = false;
        // Unquoted elements lose trailing whitespace, but not escaped one.
        let mut keep = 0;
        loop {
            let start = self.i;
            let stops: &[u8] = if quoted { b"\\\"" } else { b"\\\",{}" };
            let rel = self.b[start..].iter().position(|c| stops.contains(c));
            let end = rel.map_or(self.b.len(), |r| start + r);
            // Stops are ASCII, so these are char boundaries.
            self.scratch.push_str(&self.text[start..end]);
            keep = keep.max(self.scratch.trim_end_matches(|c: char| c.is_ascii_whitespace()).len());
            self.i = end;
            match self.b.get(end) {
                Some(b'\\') => {
                    let ch = self.text[end + 1..].chars().next().ok_or(err("array"))?;
                    self.scratch.push(ch);
                    keep = self.scratch.len();
                    escaped = true;
                    self.i = end + 1 + ch.len_utf8();
                }
                Some(b'"') if quoted => {
                    self.i += 1;
                    break;
                }
                Some(b',' | b'}') if !quoted => break,
                _ => return Err(err("array")),
            }
        }
        if !quoted {
            self.scratch.truncate(keep);
            if self.scratch.is_empty() {
                return Err(err("array"));
            }
            if !escaped && self.scratch.eq_ignore_ascii_case("NULL") {
                return Ok(Value::Null);
            }
        }
        to_json(self.elem, &self.scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use ValueKind::*;

    fn arr(k: ValueKind) -> ValueKind {
        Array(Box::new(k))
    }

    /// One row per line: `kind, input => Ok(json) | Err(error kind)`. A macro
    /// only so rustfmt keeps the rows on single lines.
    macro_rules! table {
        ($($kind:expr, $text:expr => $want:expr;)*) => {
            vec![$(($kind, $text, $want)),*]
        };
    }

    /// Every input is real Postgres 15 output under the pinned session
    /// settings, except the rows expecting an error.
    #[test]
    fn converts_every_kind() {
        let rows: Vec<(ValueKind, &str, Result<Value, &str>)> = table! {
        Bool, "t" => Ok(json!(true));
        Bool, "f" => Ok(json!(false));
        Bool, "yes" => Err("bool");
        Int, "42" => Ok(json!(42));
        Int, "-32768" => Ok(json!(-32768));
        Int, "4294967295" => Ok(json!(4294967295u32));
        Int, "abc" => Err("integer");
        Int, "" => Err("integer");
        BigInt, "9007199254740992" => Ok(json!(9007199254740992i64));
        BigInt, "-9007199254740992" => Ok(json!(-9007199254740992i64));
        BigInt, "9007199254740993" => Ok(json!("9007199254740993"));
        BigInt, "-9223372036854775808" => Ok(json!("-9223372036854775808"));
        BigInt, "9223372036854775808" => Err("bigint");
        BigInt, "1.5" => Err("bigint");
        Float, "0.1" => Ok(json!(0.1));
        Float, "1e+100" => Ok(json!(1e100));
        Float, "1.5e-300" => Ok(json!(1.5e-300));
        Float, "1e-07" => Ok(json!(1e-7));
        Float, "3.4e+38" => Ok(json!(3.4e38));
        Float, "123456789012" => Ok(json!(123456789012.0));
        Float, "-0" => Ok(json!(-0.0));
        Float, "NaN" => Ok(json!("NaN"));
        Float, "Infinity" => Ok(json!("Infinity"));
        Float, "-Infinity" => Ok(json!("-Infinity"));
        Float, "inf" => Err("float");
        Float, "1e400" => Err("float");
        Float, "x" => Err("float");
        Numeric, "42" => Ok(json!(42));
        Numeric, "42.000" => Ok(json!(42));
        Numeric, "-0.0" => Ok(json!(0));
        Numeric, "1.50" => Ok(json!(1.5));
        Numeric, "0.1" => Ok(json!(0.1));
        Numeric, "-0.00001" => Ok(json!(-0.00001));
        Numeric, "9007199254740992" => Ok(json!(9007199254740992i64));
        Numeric, "9007199254740993" => Ok(json!("9007199254740993"));
        Numeric, "100000000000000000000" => Ok(json!(1e20));
        Numeric, "12345678901234567890.123" => Ok(json!("12345678901234567890.123"));
        Numeric, "0.1000000000000000055511151231257827" => Ok(json!("0.1000000000000000055511151231257827"));
        Numeric, "NaN" => Ok(json!("NaN"));
        Numeric, "Infinity" => Ok(json!("Infinity"));
        Numeric, "-Infinity" => Ok(json!("-Infinity"));
        Numeric, "1e5" => Err("numeric");
        Numeric, "1." => Err("numeric");
        Numeric, ".5" => Err("numeric");
        Numeric, "--1" => Err("numeric");
        Text, "a b ü" => Ok(json!("a b ü"));
        Text, "" => Ok(json!(""));
        Json, r#"{"a": [1, null]}"# => Ok(json!({"a": [1, null]}));
        Json, "null" => Ok(json!(null));
        Json, "{" => Err("json");
        TimestampTz, "2024-03-01 12:34:56.123456+00" => Ok(json!(1709296496));
        TimestampTz, "2024-03-01 12:34:56.9+05:30" => Ok(json!(1709276696));
        TimestampTz, "1900-01-01 00:00:00+05:21:10" => Ok(json!(-2209008070i64));
        TimestampTz, "2000-02-29 00:00:00-03" => Ok(json!(951793200));
        TimestampTz, "1969-12-31 23:59:59.5+00" => Ok(json!(-1));
        TimestampTz, "0044-03-15 00:00:00+00 BC" => Ok(json!(-63517824000i64));
        TimestampTz, "0001-01-01 00:00:00+00 BC" => Ok(json!(-62167219200i64));
        TimestampTz, "4713-01-01 00:00:00+00 BC" => Ok(json!(-210863520000i64));
        TimestampTz, "10000-01-01 00:00:00+00" => Ok(json!(253402300800i64));
        TimestampTz, "294276-12-31 23:59:59.999999+00" => Ok(json!("294276-12-31 23:59:59.999999+00"));
        TimestampTz, "infinity" => Ok(json!("infinity"));
        TimestampTz, "-infinity" => Ok(json!("-infinity"));
        TimestampTz, "2024-03-01 12:34:56" => Err("timestamptz");
        TimestampTz, "2024-02-30 00:00:00+00" => Err("timestamptz");
        TimestampTz, "2024-03-01 12:34:56+00 AD" => Err("timestamptz");
        Timestamp, "2024-03-01 12:34:56" => Ok(json!(1709296496));
        Timestamp, "0044-03-15 12:00:00.5 BC" => Ok(json!(-63517780800i64));
        Timestamp, "2024-03-01 24:00:00" => Err("timestamp");
        Timestamp, "2024-03-01 12:34:56+00" => Err("timestamp");
        Timestamp, "2024-03-01" => Err("timestamp");
        Date, "2024-03-01" => Ok(json!(1709251200));
        Date, "0044-03-15 BC" => Ok(json!(-63517824000i64));
        Date, "10000-01-01" => Ok(json!(253402300800i64));
        Date, "5874897-12-31" => Ok(json!("5874897-12-31"));
        Date, "-infinity" => Ok(json!("-infinity"));
        Date, "0000-01-01" => Err("date");
        Date, "2024-13-01" => Err("date");
        Date, "24-03-01" => Err("date");
        Bytea, r"\x0123ab" => Ok(json!("0123ab"));
        Bytea, r"\x" => Ok(json!(""));
        Bytea, r"\x0123AB" => Ok(json!("0123ab"));
        Bytea, r"\001" => Err("bytea");
        Bytea, r"\x012" => Err("bytea");
        Bytea, r"\xzz" => Err("bytea");
        arr(Int), "{1,2,NULL}" => Ok(json!([1, 2, null]));
        arr(Int), "{{1,2},{3,4}}" => Ok(json!([[1, 2], [3, 4]]));
        arr(Int), "{{{1}}}" => Ok(json!([[[1]]]));
        arr(Int), "{{NULL}}" => Ok(json!([[null]]));
        arr(Int), "{}" => Ok(json!([]));
        arr(Int), "[0:1]={1,2}" => Ok(json!([1, 2]));
        arr(Int), "[1:1][-2:-1]={{1,2}}" => Ok(json!([[1, 2]]));
        arr(Int), "{1,x}" => Err("integer");
        arr(Int), "{1,2" => Err("array");
        arr(Int), "{1,,2}" => Err("array");
        arr(Int), "{1,{2}}" => Err("array");
        arr(Int), "{1}x" => Err("array");
        arr(Int), "[0:1]{1,2}" => Err("array");
        arr(Int), "{{{{{{{1}}}}}}}" => Err("array");
        arr(Int), "" => Err("array");
        arr(Text), r#"{"a b",NULL,"NULL","null","","with \"quote\"","back\\slash",x}"#
            => Ok(json!(["a b", null, "NULL", "null", "", "with \"quote\"", "back\\slash", "x"]));
        arr(Text), r#"{"  a  ",b c ,a\ }"# => Ok(json!(["  a  ", "b c", "a "]));
        arr(Text), r#"{"a}","{}","a,b",é,"\\x"}"# => Ok(json!(["a}", "{}", "a,b", "é", "\\x"]));
        arr(Text), "{{a},{b}}" => Ok(json!([["a"], ["b"]]));
        arr(Text), r#"{"a}"# => Err("array");
        arr(Text), r#"{a"b}"# => Err("array");
        arr(Text), r"{a\}" => Err("array");
        arr(Bool), "{t,f,NULL}" => Ok(json!([true, false, null]));
        arr(BigInt), "{1,9223372036854775807}" => Ok(json!([1, "9223372036854775807"]));
        arr(Float), "{NaN,Infinity,1e-07}" => Ok(json!(["NaN", "Infinity", 1e-7]));
        arr(Numeric), "{1.5,NaN}" => Ok(json!([1.5, "NaN"]));
        arr(TimestampTz), r#"{"2024-03-01 07:04:56.123456+00"}"# => Ok(json!([1709276696]));
        arr(Timestamp), r#"{"0044-03-15 12:00:00.5 BC",infinity}"# => Ok(json!([-63517780800i64, "infinity"]));
        arr(Date), "{2024-03-01}" => Ok(json!([1709251200]));
        arr(Json), r#"{"{\"a\": 1}","[1, \"x,y\"]","null"}"# => Ok(json!([{"a": 1}, [1, "x,y"], null]));
        arr(Bytea), r#"{"\\x01","\\x",NULL}"# => Ok(json!(["01", "", null]));
        };
        for (kind, text, want) in rows {
            let got = to_json(&kind, text).map_err(|e| e.kind);
            assert_eq!(got, want, "{kind:?} {text:?}");
        }
    }

    /// A whole numeric below zero stays a negative number, also at ±2^53,
    /// the last magnitude sent as a number.
    #[test]
    fn negative_whole_numerics_keep_their_sign() {
        assert_eq!(to_json(&Numeric, "-42"), Ok(json!(-42)));
        assert_eq!(to_json(&Numeric, "-42.00"), Ok(json!(-42)));
        assert_eq!(to_json(&Numeric, "-9007199254740992"), Ok(json!(-9007199254740992i64)));
        assert_eq!(to_json(&Numeric, "-9007199254740993"), Ok(json!("-9007199254740993")));
    }

    /// `numeric(p, s)` prints zeros up to its scale (`0.10`, `0.000100`):
    /// they change nothing, so the value is still the exact number.
    #[test]
    fn numerics_padded_to_their_scale_are_exact_numbers() {
        assert_eq!(to_json(&Numeric, "0.10"), Ok(json!(0.1)));
        assert_eq!(to_json(&Numeric, "0.000100"), Ok(json!(0.0001)));
        assert_eq!(to_json(&Numeric, "-0.0500"), Ok(json!(-0.05)));
        assert_eq!(to_json(&Numeric, "120.50"), Ok(json!(120.5)));
    }

    /// Digits that are all zeros denote zero: only a float that is zero
    /// matches them. `numeric` answers such text before it asks (as the
    /// integer 0), so this is asked of `same_decimal` itself.
    #[test]
    fn only_zero_is_the_same_decimal_as_all_zero_digits() {
        assert!(same_decimal("0", "000", 0.0));
        assert!(same_decimal("000", "", -0.0));
        assert!(!same_decimal("0", "000", 1e-300));
        assert!(!same_decimal("0", "", 5.0));
    }

    /// `array_out` never prints whitespace outside quotes, but `array_in`
    /// allows it around elements and braces: it is skipped the same way.
    #[test]
    fn whitespace_around_array_elements_is_skipped() {
        assert_eq!(to_json(&arr(Int), "{ 1 ,\t2 }"), Ok(json!([1, 2])));
        assert_eq!(to_json(&arr(Int), " { {1} , {2} } "), Ok(json!([[1], [2]])));
        assert_eq!(to_json(&arr(Text), "{ a b , c}"), Ok(json!(["a b", "c"])));
    }

    /// A `"` inside an unquoted element is malformed, even right before a
    /// delimiter: an error, not a guess at what was meant.
    #[test]
    fn a_quote_inside_an_unquoted_array_element_is_an_error() {
        for text in [r#"{a",b}"#, r#"{a"}"#, r#"{a"b}"#] {
            assert_eq!(to_json(&arr(Text), text), Err(err("array")), "{text}");
        }
    }

    #[test]
    fn maps_builtin_oids() {
        let pairs: [(u32, u32, ValueKind); 28] = [
            (16, 1000, Bool),
            (17, 1001, Bytea),
            (18, 1002, Text),
            (19, 1003, Text),
            (20, 1016, BigInt),
            (21, 1005, Int),
            (23, 1007, Int),
            (25, 1009, Text),
            (26, 1028, Int),
            (114, 199, Json),
            (142, 143, Text),
            (700, 1021, Float),
            (701, 1022, Float),
            (790, 791, Text),
            (1042, 1014, Text),
            (1043, 1015, Text),
            (1082, 1182, Date),
            (1083, 1183, Text),
            (1114, 1115, Timestamp),
            (1184, 1185, TimestampTz),
            (1186, 1187, Text),
            (1266, 1270, Text),
            (1700, 1231, Numeric),
            (2950, 2951, Text),
            (3802, 3807, Json),
            (869, 1041, Text),
            (650, 651, Text),
            (829, 1040, Text),
        ];
        for (oid, array_oid, kind) in pairs {
            assert_eq!(builtin_kind(oid), Some(kind.clone()), "{oid}");
            assert_eq!(builtin_kind(array_oid), Some(arr(kind)), "{array_oid}");
        }
        // box and box[]: `;`-delimited arrays pass through as text.
        assert_eq!(builtin_kind(603), Some(Text));
        assert_eq!(builtin_kind(1020), Some(Text));
        assert_eq!(builtin_kind(16384), None);
    }

    /// Garbage and mutated real values must give an answer, never a panic.
    #[test]
    fn never_panics_on_garbage() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: usize| {
            // xorshift64: deterministic, so a failure reproduces.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let atoms: Vec<&str> = "{|}|,|\"|\\| |\t|NULL|[|]|:|=|-|+|.|e|x|0|1|9|t|f|NaN|Infinity| BC\
            |2024-03-01| 12:34:56|:30|\\x|ab|é|\u{1F600}|e+400|99999999999999999999"
            .split('|')
            .collect();
        let seeds = [
            "2024-03-01 12:34:56.123456+05:30:00 BC",
            r#"{{1,2},{"a\"b",NULL}}"#,
            "[0:1]={1.5,-0.00001}",
            r"\x0123ab",
        ];
        // Every kind builtin_kind can produce, plus a nested array kind.
        let mut kinds = vec![arr(arr(Text))];
        for kind in (0..4000).filter_map(builtin_kind) {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        for _ in 0..3000 {
            let mut s = String::new();
            if next(2) == 0 {
                s.push_str(seeds[next(seeds.len())]);
                for _ in 0..next(4) {
                    let cut = next(s.len() + 1);
                    if s.is_char_boundary(cut) {
                        s.insert_str(cut, atoms[next(atoms.len())]);
                    }
                }
            } else {
                for _ in 0..next(12) {
                    s.push_str(atoms[next(atoms.len())]);
                }
            }
            for kind in &kinds {
                let _ = to_json(kind, &s);
            }
        }
        assert!(to_json(&arr(Int), &"{".repeat(10_000)).is_err());
    }
}
