//! A campaign webhook action's JSON body → what to write (pure, no I/O).
//!
//! Errors name the field path and what is wrong with it, never the value:
//! the body is customer data.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::actions::{Action, Direction, Effect, FieldPath, Which};

/// Longest customer id, segment or idempotency key accepted, bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// The header Customer.io sends with each delivery of a campaign webhook,
/// unchanged on its retries (seen in practice; UNCONFIRMED in the docs).
pub const IDEMPOTENCY_HEADER: &str = "x-cio-idempotency-key";

/// Where a request's idempotency key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The body field `idempotency_key` names.
    Body,
    /// `X-CIO-Idempotency-Key`.
    Header,
    /// A SHA-256 of the body: the same body is the same call.
    BodyHash,
}

/// What one request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The customer id, or the email with `match_by = "email"`; an
    /// `insert` action needs none.
    pub customer: Option<String>,
    /// The time of the change as sent (Unix seconds or RFC 3339), if any.
    pub occurred_at: Option<String>,
    pub key: String,
    pub key_source: KeySource,
    pub what: What,
}

/// The effect's inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    Segment {
        segment: String,
        direction: Direction,
    },
    /// Column → the body's value, for the columns the body has.
    Values(serde_json::Map<String, Value>),
}

/// Reads `body` (parsed) for `action`; `raw` is the body as received (for
/// the hash key), `header_key` the `X-CIO-Idempotency-Key` header.
pub fn read(
    action: &Action,
    body: &Value,
    raw: &[u8],
    header_key: Option<&str>,
) -> Result<Call, String> {
    if !body.is_object() {
        return Err("the body is not a JSON object".to_owned());
    }
    let needs_customer = !matches!(action.effect, Effect::Insert { .. });
    let customer = text_at(body, &action.customer, needs_customer)?;
    let occurred_at = match &action.occurred_at {
        Some(path) => text_at(body, path, false)?,
        None => None,
    };
    if let (Some(path), Some(time)) = (&action.occurred_at, &occurred_at) {
        check_time(path, time)?;
    }
    let (key, key_source) = match (&action.idempotency_key, header_key.map(str::trim)) {
        (Some(path), _) => (text_at(body, path, true)?.expect("required"), KeySource::Body),
        (None, Some(header)) if !header.is_empty() => {
            if header.len() > MAX_KEY_BYTES {
                return Err(format!("{IDEMPOTENCY_HEADER} is over {MAX_KEY_BYTES} bytes"));
            }
            (header.to_owned(), KeySource::Header)
        }
        _ => (format!("sha256:{}", hex::encode(Sha256::digest(raw))), KeySource::BodyHash),
    };
    let what = match &action.effect {
        Effect::Segment { segment, which, .. } => {
            let segment = text_at(body, segment, true)?.expect("required");
            let direction = match which {
                Which::Always(direction) => *direction,
                Which::Field(path) => direction_at(body, path)?,
            };
            What::Segment { segment, direction }
        }
        Effect::Update { columns, .. } | Effect::Insert { columns, .. } => What::Values(
            columns
                .iter()
                .filter_map(|(column, path)| path.find(body).map(|v| (column.clone(), v.clone())))
                .collect(),
        ),
    };
    if let What::Values(values) = &what {
        let nothing = match &action.effect {
            Effect::Update { .. } => values.is_empty(),
            Effect::Insert { body_column, .. } => values.is_empty() && body_column.is_none(),
            Effect::Segment { .. } => false,
        };
        if nothing {
            return Err("the body has none of the fields the action's columns name".to_owned());
        }
    }
    Ok(Call { customer, occurred_at, key, key_source, what })
}

/// The text of a string or number at `path`; `None` when absent (an error
/// when `required`). Other JSON types and empty or over-long text are errors.
fn text_at(body: &Value, path: &FieldPath, required: bool) -> Result<Option<String>, String> {
    let text = match path.find(body) {
        None | Some(Value::Null) if !required => return Ok(None),
        None | Some(Value::Null) => return Err(format!("the body has no {}", path.as_str())),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(format!("{} is not a string or a number", path.as_str())),
    };
    if text.is_empty() {
        return Err(format!("{} is empty", path.as_str()));
    }
    if text.len() > MAX_KEY_BYTES {
        return Err(format!("{} is over {MAX_KEY_BYTES} bytes", path.as_str()));
    }
    Ok(Some(text))
}

/// A time in Unix seconds, or text Postgres parses (RFC 3339); a number
/// past year 5138 is milliseconds sent by mistake, which would make every
/// later change look older.
fn check_time(path: &FieldPath, time: &str) -> Result<(), String> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let seconds = match time.split_once('.') {
        None => digits(time),
        Some((whole, fraction)) => digits(whole) && digits(fraction),
    };
    let number = time.parse::<f64>().ok();
    match number {
        // Postgres reads digits (with a fraction) as Unix seconds.
        Some(n) if seconds && n < 1e11 => Ok(()),
        Some(_) if seconds => Err(format!(
            "{} must be Unix seconds (this looks like milliseconds) or an RFC 3339 time",
            path.as_str()
        )),
        // 1e5, -5, NaN, inf: a number Postgres would not read as a time.
        Some(_) => Err(format!("{} must be Unix seconds or an RFC 3339 time", path.as_str())),
        None => Ok(()),
    }
}

/// `enter`/`entered`/`true` or `leave`/`left`/`false` (any case), or a JSON boolean.
fn direction_at(body: &Value, path: &FieldPath) -> Result<Direction, String> {
    let word = match path.find(body) {
        Some(Value::Bool(true)) => return Ok(Direction::Enter),
        Some(Value::Bool(false)) => return Ok(Direction::Leave),
        Some(Value::String(s)) => s.trim().to_ascii_lowercase(),
        _ => String::new(),
    };
    match word.as_str() {
        "enter" | "entered" | "true" => Ok(Direction::Enter),
        "leave" | "left" | "false" => Ok(Direction::Leave),
        _ => Err(format!("{} must be enter, entered, true, leave, left or false", path.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::actions::{Action, Effect, FieldPath, Which};
    use crate::pg::name::TableName;
    use crate::secret::Secret;
    use serde_json::json;

    fn segment_action(which: Which, key: Option<&str>) -> Action {
        Action {
            name: "segments".into(),
            username: "ciosync".into(),
            secret: Secret::new("x".repeat(20)),
            customer: FieldPath::parse("customer.id").unwrap(),
            occurred_at: Some(FieldPath::parse("at").unwrap()),
            idempotency_key: key.map(|k| FieldPath::parse(k).unwrap()),
            dedupe_window: std::time::Duration::from_secs(60),
            effect: Effect::Segment {
                table: TableName::parse("ciosync.segment_memberships").unwrap(),
                segment: FieldPath::parse("segment").unwrap(),
                which,
            },
        }
    }

    fn field(path: &str) -> Which {
        Which::Field(FieldPath::parse(path).unwrap())
    }

    #[test]
    fn a_segment_body_reads_its_fields() {
        let body =
            json!({"customer": {"id": 42}, "segment": "vip", "change": "Left", "at": 1700000000});
        let call =
            read(&segment_action(field("change"), None), &body, b"raw", Some("k-1")).unwrap();
        assert_eq!(call.customer.as_deref(), Some("42"));
        assert_eq!(call.occurred_at.as_deref(), Some("1700000000"));
        assert_eq!((call.key.as_str(), call.key_source), ("k-1", KeySource::Header));
        assert_eq!(call.what, What::Segment { segment: "vip".into(), direction: Direction::Leave });
        let body = json!({"customer": {"id": "7"}, "segment": 3, "change": true});
        let call = read(&segment_action(field("change"), None), &body, b"raw", None).unwrap();
        assert_eq!(call.what, What::Segment { segment: "3".into(), direction: Direction::Enter });
        assert_eq!(call.occurred_at, None);
        assert_eq!(call.key_source, KeySource::BodyHash);
        assert_eq!(call.key.len(), "sha256:".len() + 64);
    }

    #[test]
    fn the_key_comes_from_the_body_then_the_header_then_the_hash() {
        let body = json!({"customer": {"id": 1}, "segment": "s", "key": "abc"});
        let action = segment_action(Which::Always(Direction::Enter), Some("key"));
        let call = read(&action, &body, b"raw", Some("header")).unwrap();
        assert_eq!((call.key.as_str(), call.key_source), ("abc", KeySource::Body));
        let missing = json!({"customer": {"id": 1}, "segment": "s"});
        assert_eq!(read(&action, &missing, b"raw", Some("h")).unwrap_err(), "the body has no key");
        let plain = segment_action(Which::Always(Direction::Enter), None);
        let a = read(&plain, &missing, b"one", Some(" ")).unwrap();
        let b = read(&plain, &missing, b"two", None).unwrap();
        assert_ne!(a.key, b.key, "different bodies hash apart");
    }

    #[test]
    fn errors_name_the_field_never_the_value() {
        let action = segment_action(field("change"), None);
        let cases = [
            (json!([1, 2]), "the body is not a JSON object"),
            (json!({"segment": "s", "change": "enter"}), "the body has no customer.id"),
            (
                json!({"customer": {"id": ""}, "segment": "s", "change": "enter"}),
                "customer.id is empty",
            ),
            (
                json!({"customer": {"id": {"secret": 1}}, "segment": "s", "change": "enter"}),
                "customer.id is not a string or a number",
            ),
            (json!({"customer": {"id": 1}, "change": "enter"}), "the body has no segment"),
            (
                json!({"customer": {"id": 1}, "segment": "s", "change": "private-value"}),
                "change must be enter, entered, true, leave, left or false",
            ),
            (
                json!({"customer": {"id": "x".repeat(600)}, "segment": "s", "change": "enter"}),
                "customer.id is over 512 bytes",
            ),
        ];
        for (body, expected) in cases {
            let error = read(&action, &body, b"raw", None).unwrap_err();
            assert_eq!(error, expected);
            assert!(!error.contains("private-value"));
        }
    }

    #[test]
    fn values_keep_only_the_columns_the_body_has() {
        let mut action = segment_action(Which::Always(Direction::Enter), None);
        action.effect = Effect::Update {
            table: TableName::parse("public.users").unwrap(),
            columns: vec![
                ("lead_score".into(), FieldPath::parse("score").unwrap()),
                ("stage".into(), FieldPath::parse("journey.stage").unwrap()),
                ("tier".into(), FieldPath::parse("tier").unwrap()),
            ],
            statement: String::new(),
        };
        let body = json!({"customer": {"id": 1}, "score": 17, "journey": {"stage": null}});
        let call = read(&action, &body, b"raw", None).unwrap();
        let expected: serde_json::Map<String, Value> =
            [("lead_score".to_owned(), json!(17)), ("stage".to_owned(), Value::Null)]
                .into_iter()
                .collect();
        assert_eq!(call.what, What::Values(expected));
        let millis = json!({"customer": {"id": 1}, "score": 1, "at": 1700000000000_u64});
        assert!(read(&action, &millis, b"raw", None).unwrap_err().contains("milliseconds"));
        for odd in [json!(-5), json!("1e5"), json!("NaN"), json!("inf")] {
            let body = json!({"customer": {"id": 1}, "score": 1, "at": odd});
            let error = read(&action, &body, b"raw", None).unwrap_err();
            assert_eq!(error, "at must be Unix seconds or an RFC 3339 time", "{odd}");
        }
        for fine in [json!(1700000000), json!("1700000000.25"), json!("2026-12-07T05:00:00Z")] {
            let body = json!({"customer": {"id": 1}, "score": 1, "at": fine});
            assert!(read(&action, &body, b"raw", None).is_ok(), "{fine}");
        }
        let none = json!({"customer": {"id": 1}});
        assert!(read(&action, &none, b"raw", None).unwrap_err().contains("none of the fields"));
        // An insert keeping no body and finding no field has nothing to insert.
        let Effect::Update { table, columns, .. } = action.effect.clone() else { unreachable!() };
        action.effect =
            Effect::Insert { table: table.clone(), columns: columns.clone(), body_column: None };
        assert!(read(&action, &none, b"raw", None).unwrap_err().contains("none of the fields"));
        action.effect = Effect::Insert { table, columns, body_column: Some("payload".into()) };
        assert!(read(&action, &none, b"raw", None).is_ok(), "the body alone is a row");
    }
}
