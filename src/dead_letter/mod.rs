//! Dead letters: operations Customer.io refused for good, kept in
//! `ciosync.dead_letters` so nothing is dropped silently and an operator can
//! replay (`ciosync dlq retry`) or discard them once the cause is fixed.
//!
//! ```text
//! sink: 207 item error / 400 ──DeadLetter──▶ DeadLetterStore::record ──INSERT──▶ ciosync.dead_letters
//!                                                                                  │
//!                     ciosync dlq list | retry | discard ◀── DeadLetterTable ◀─────┘
//! ```
//!
//! Every kind of operation the sink sends can be a dead letter
//! ([`OPERATIONS`]): identifies, deletes, suppressions, merges, events and
//! device calls go
//! as `/api/v2/batch` items and are replayed that way; an anonymous event
//! goes alone to `POST /api/v1/events` and is replayed there (its payload is
//! the v1 body, the only one with a top-level `anonymous_id`: see
//! [`crate::track_api::Route::of_payload`]).
//!
//! A letter's `payload` is the item exactly as it was sent, attribute
//! values included: it is customer data. It is stored so a replay of an
//! event or a merge sends the same thing (an identify or a removal is
//! checked against the customer's current row first: [`current`]), and it
//! never appears in a log line or an error message; only `dlq list
//! --payload` prints it, to the operator who asked.
//!
//! Postgres may refuse to store a letter as it is (SQLSTATE class 22 or 23:
//! a NUL in a text field, a character the database's encoding lacks, a
//! `jsonb` limit). Such a letter is stored escaped instead
//! (`Row::escaped`): its text fields as printable ASCII, its payload
//! base64-encoded under [`ENCODED_PAYLOAD_KEY`], which `ciosync dlq` decodes
//! and replays as it was sent. Only that letter, in a savepoint: the others
//! of the call are stored as they are. A letter that cannot be stored even
//! so (a constraint someone added, a missing privilege) is an error, which
//! the sink retries for as long as it takes, loudly
//! (`sink::deliver`), rather than drop it or stop the daemon.
//!
//! The table's definition is in [`crate::state`] (the schema's migration);
//! every query on it is here.

pub mod render;
mod table;

pub use table::{DeadLetterTable, Outline, Replayable, StoredLetter};

use serde::de::IgnoredAny;
use tokio::sync::Mutex;
use tokio_postgres::{Client, GenericClient, Statement, Transaction};

use crate::pg::connection::ConnectionSettings;
use crate::pg::PgError;
use crate::state::State;

/// The operations a dead letter may hold: every kind the sink sends
/// (`CustomerOp::kind`; person and anonymous events are both `event`), as
/// the table's CHECK constraint `dead_letters_operation_kinds_all` allows.
pub const OPERATIONS: [&str; 11] = [
    "identify",
    "delete",
    "suppress",
    "merge",
    "event",
    "add_device",
    "delete_device",
    "object_identify",
    "object_delete",
    "add_relationship",
    "delete_relationship",
];

/// The key of an escaped letter's payload: `{"ciosync_payload_base64": "…"}`
/// holds the item as sent, base64-encoded (see `Row::escaped`).
pub const ENCODED_PAYLOAD_KEY: &str = "ciosync_payload_base64";

/// One operation Customer.io refused for good.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The person's id; an anonymous event's `anonymous_id`; a merge's primary.
    pub customer_id: String,
    /// One of [`OPERATIONS`].
    pub operation: &'static str,
    /// Attribute names only, never values.
    pub attributes: Vec<String>,
    /// The HTTP status of the refusal; 207 for a per-item error.
    pub status: u16,
    /// Customer.io's text, already cut to 300 bytes.
    pub error: String,
    /// The item JSON exactly as sent: replayable as `{"batch":[payload]}`,
    /// or as the whole body of `POST /api/v1/events` for an anonymous event.
    pub payload: Vec<u8>,
    /// How often it was sent before it was given up.
    pub attempts: u32,
}

/// Writes dead letters for one slot; connects lazily and reconnects after an error.
///
/// Shared by the sink's tasks in an `Arc`: the mutex serialises writers on
/// the one connection, which is plenty for something that should be rare.
pub struct DeadLetterStore {
    settings: ConnectionSettings,
    slot: String,
    sql: Mutex<Option<Client>>,
}

impl DeadLetterStore {
    /// A store for `slot`'s dead letters; no connection is opened yet.
    pub fn new(settings: ConnectionSettings, slot: String) -> Self {
        Self { settings, slot, sql: Mutex::new(None) }
    }

    /// Inserts all of `letters` in one transaction: all of them or none. A
    /// letter Postgres refuses as it is (class 22 or 23) is stored escaped
    /// instead, with a warning naming the SQLSTATE (see the module doc).
    ///
    /// On any error the connection is dropped, so the next call reconnects;
    /// the caller retries with backoff, whatever the error (the sink never
    /// gives up on a refused operation). [`PgError::is_transient`] tells
    /// an outage from what needs an operator: a missing privilege, a letter
    /// that cannot be stored even escaped. Errors never carry the letters'
    /// contents.
    pub async fn record(&self, letters: &[DeadLetter]) -> Result<(), PgError> {
        if letters.is_empty() {
            return Ok(());
        }
        letters.iter().try_for_each(validate)?;
        let mut guard = self.sql.lock().await;
        let result = self.record_locked(&mut guard, letters).await;
        if result.is_err() {
            *guard = None;
        }
        result
    }

    async fn record_locked(
        &self,
        sql: &mut Option<Client>,
        letters: &[DeadLetter],
    ) -> Result<(), PgError> {
        if sql.as_ref().is_some_and(Client::is_closed) {
            *sql = None;
        }
        let client = match sql {
            Some(client) => client,
            None => sql.insert(self.connect().await?),
        };
        let mut tx = client.transaction().await.map_err(PgError::stored(WRITE))?;
        let escaped = insert(&mut tx, &self.slot, letters).await?;
        tx.commit().await.map_err(PgError::stored(WRITE))?;
        if let Some((count, sqlstate)) = escaped {
            tracing::warn!(
                letters = count,
                sqlstate,
                "Postgres refused a dead letter as it was; stored it escaped (text fields as \
                 ASCII, the payload base64-encoded): `ciosync dlq retry` sends it as it was"
            );
        }
        Ok(())
    }

    /// Opens a connection and makes sure the table exists (the migration).
    async fn connect(&self) -> Result<Client, PgError> {
        let sql = self.settings.connect_sql().await.map_err(PgError::sql("connect"))?;
        State::open(&sql, &self.slot).await?;
        Ok(sql)
    }
}

/// What the letters are written as.
const WRITE: &str = "write ciosync.dead_letters";

/// Rejects a letter the table's CHECK would refuse, before sending it: its
/// refusal's DETAIL would quote the row. Only a bug makes one, so nothing
/// escapes it.
fn validate(letter: &DeadLetter) -> Result<(), PgError> {
    if OPERATIONS.contains(&letter.operation) {
        return Ok(());
    }
    Err(PgError::Definite(format!(
        "a dead letter's operation must be one of {OPERATIONS:?}, not `{}`",
        letter.operation
    )))
}

/// One letter as the INSERT's text parameters.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    customer_id: String,
    attributes: Vec<String>,
    error: String,
    /// JSON text for the `jsonb` column.
    payload: String,
}

impl Row {
    /// The letter as it is; its payload as `jsonb` can hold it
    /// ([`storable_payload`]), or encoded if it is not JSON at all (which
    /// the sink never sends).
    fn plain(letter: &DeadLetter) -> Self {
        let json = std::str::from_utf8(&letter.payload)
            .ok()
            .filter(|text| serde_json::from_str::<IgnoredAny>(text).is_ok());
        Row {
            customer_id: letter.customer_id.clone(),
            attributes: letter.attributes.clone(),
            error: letter.error.clone(),
            payload: match json {
                Some(_) => storable_payload(&letter.payload),
                None => encoded_payload(&letter.payload),
            },
        }
    }

    /// The letter as any database can store it, after Postgres refused it
    /// as it was with `sqlstate`: text fields as printable ASCII (anything
    /// else escaped, `\u{0}`), the error noting why, and the payload
    /// base64-encoded under [`ENCODED_PAYLOAD_KEY`], so a replay still sends
    /// exactly what was refused.
    fn escaped(letter: &DeadLetter, sqlstate: &str) -> Self {
        Row {
            customer_id: escape(&letter.customer_id),
            attributes: letter.attributes.iter().map(|name| escape(name)).collect(),
            error: format!(
                "{} [stored escaped: Postgres refused the letter as it was, SQLSTATE {sqlstate}]",
                escape(&letter.error)
            ),
            payload: encoded_payload(&letter.payload),
        }
    }
}

/// `text` in printable ASCII, every other character escaped (`\u{e9}`):
/// every server encoding holds it, and it has no NUL.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == ' ' || c.is_ascii_graphic() {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    out
}

/// `{"ciosync_payload_base64": "…"}`: the payload as ASCII JSON.
fn encoded_payload(payload: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
    serde_json::json!({ ENCODED_PAYLOAD_KEY: encoded }).to_string()
}

/// The payload to replay or show, from the stored JSON text: an escaped
/// letter's encoded payload decoded, anything else as it is.
pub fn original_payload(stored: String) -> String {
    use base64::Engine;
    if !stored.contains(ENCODED_PAYLOAD_KEY) {
        return stored;
    }
    let encoded = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&stored)
        .ok()
        .filter(|object| object.len() == 1)
        .and_then(|object| object.get(ENCODED_PAYLOAD_KEY)?.as_str().map(str::to_owned));
    let decoded =
        encoded.and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok());
    match decoded {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => stored,
    }
}

/// The INSERT of one letter.
const INSERT: &str = "INSERT INTO ciosync.dead_letters \
     (slot, customer_id, operation, attributes, status, error, payload, attempts) \
     VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8)";

/// Inserts the letters with one prepared statement, inside the caller's
/// transaction, each in a savepoint: a letter Postgres refuses as it is
/// (class 22 or 23) is inserted escaped instead. Returns how many were
/// escaped and the first refusal's SQLSTATE, if any.
async fn insert(
    tx: &mut Transaction<'_>,
    slot: &str,
    letters: &[DeadLetter],
) -> Result<Option<(usize, String)>, PgError> {
    let statement = tx.prepare(INSERT).await.map_err(PgError::stored(WRITE))?;
    let mut escaped: Option<(usize, String)> = None;
    for letter in letters {
        let savepoint = tx.savepoint("dead_letter").await.map_err(PgError::stored(WRITE))?;
        match insert_row(&savepoint, &statement, slot, letter, &Row::plain(letter)).await {
            Ok(()) => savepoint.commit().await.map_err(PgError::stored(WRITE))?,
            Err(error) => {
                let Some(sqlstate) = crate::pg::error::data_refusal(&error) else {
                    return Err(PgError::stored(WRITE)(error));
                };
                savepoint.rollback().await.map_err(PgError::stored(WRITE))?;
                let row = Row::escaped(letter, &sqlstate);
                insert_row(&*tx, &statement, slot, letter, &row)
                    .await
                    .map_err(PgError::stored(WRITE))?;
                let (count, _) = escaped.get_or_insert((0, sqlstate));
                *count += 1;
            }
        }
    }
    Ok(escaped)
}

async fn insert_row(
    client: &impl GenericClient,
    statement: &Statement,
    slot: &str,
    letter: &DeadLetter,
    row: &Row,
) -> Result<(), tokio_postgres::Error> {
    let status = i32::from(letter.status);
    let attempts = i32::try_from(letter.attempts).unwrap_or(i32::MAX);
    client
        .execute(
            statement,
            &[
                &slot,
                &row.customer_id,
                &letter.operation,
                &row.attributes,
                &status,
                &row.error,
                &row.payload.as_str(),
                &attempts,
            ],
        )
        .await
        .map(drop)
}

/// The payload as jsonb can hold it: jsonb refuses U+0000, which JSON (and
/// so a `json` column's value) can carry as `\u0000`; such characters become
/// U+FFFD. Anything else is kept as it is.
fn storable_payload(payload: &[u8]) -> String {
    fn scrub(value: &mut serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) if text.contains('\0') => {
                *text = text.replace('\0', "\u{FFFD}");
                true
            }
            serde_json::Value::Array(items) => items.iter_mut().fold(false, |c, v| scrub(v) | c),
            serde_json::Value::Object(map) => map.values_mut().fold(false, |c, v| scrub(v) | c),
            _ => false,
        }
    }
    let text = String::from_utf8_lossy(payload);
    if !text.contains("\\u0000") {
        return text.into_owned();
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(mut value) => {
            if scrub(&mut value) {
                value.to_string()
            } else {
                text.into_owned()
            }
        }
        Err(_) => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_stored_as_they_are_unless_jsonb_cannot_hold_them() {
        // A backslash followed by u0000 in the text is not a NUL.
        let plain = br#"{"attributes":{"path":"C:\\u0000dir"}}"#;
        assert_eq!(storable_payload(plain), String::from_utf8_lossy(plain));
        let nul = br#"{"attributes":{"bio":"a\u0000b","list":["\u0000"]}}"#;
        let stored: serde_json::Value = serde_json::from_str(&storable_payload(nul)).unwrap();
        assert_eq!(stored["attributes"]["bio"], "a\u{FFFD}b");
        assert_eq!(stored["attributes"]["list"][0], "\u{FFFD}");
    }

    fn letter(operation: &'static str, payload: &[u8]) -> DeadLetter {
        DeadLetter {
            customer_id: "42".into(),
            operation,
            attributes: vec!["plan".into()],
            status: 207,
            error: "bad".into(),
            payload: payload.to_vec(),
            attempts: 1,
        }
    }

    #[test]
    fn the_store_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<DeadLetterStore>();
    }

    /// One operation of each kind the sink sends, as it encodes them.
    fn every_kind() -> Vec<crate::sink::batch::EncodedItem> {
        use crate::customer::{
            AnonymousEvent, CustomerOp, Event, ObjectAction, ObjectOp, RelationshipAction,
            RelationshipOp,
        };
        let data = |key: &str| serde_json::json!({ key: "secret-value" }).as_object().cloned();
        let ops = vec![
            CustomerOp::Identify {
                id: "1".into(),
                attributes: data("plan").unwrap(),
                timestamp: 1,
            },
            CustomerOp::Delete { id: "2".into() },
            CustomerOp::Suppress { id: "3".into() },
            CustomerOp::Merge { primary: "4".into(), secondary: "5".into() },
            CustomerOp::Event(Event {
                customer: "6".into(),
                name: "signed_up".into(),
                event_id: "01HZY".into(),
                timestamp: 1,
                data: data("source").unwrap(),
                watch: None,
            }),
            CustomerOp::AnonymousEvent(AnonymousEvent {
                anonymous_id: "cookie-7".into(),
                name: "viewed_pricing".into(),
                event_id: "01HZZ".into(),
                timestamp: 1,
                data: data("path").unwrap(),
            }),
            CustomerOp::Object(ObjectOp::new(
                "1",
                "acme".into(),
                ObjectAction::Identify { attributes: data("plan").unwrap() },
            )),
            CustomerOp::Object(ObjectOp::new("1", "acme".into(), ObjectAction::Delete)),
            CustomerOp::Relationship(RelationshipOp {
                customer: "8".into(),
                object_type_id: "1".into(),
                object_id: "acme".into(),
                action: RelationshipAction::Add { attributes: data("role").unwrap() },
            }),
            CustomerOp::Relationship(RelationshipOp {
                customer: "8".into(),
                object_type_id: "1".into(),
                object_id: "acme".into(),
                action: RelationshipAction::Delete,
            }),
            CustomerOp::AddDevice(Box::new(crate::customer::Device {
                customer: "8".into(),
                token: "tok".into(),
                platform: "ios",
                last_used: Some(1),
                attributes: data("app_version").unwrap(),
            })),
            CustomerOp::DeleteDevice { customer: "9".into(), token: "tok".into() },
        ];
        ops.into_iter().map(|op| crate::sink::batch::encode(op).expect("not a barrier")).collect()
    }

    #[test]
    fn every_kind_the_sink_sends_can_be_a_dead_letter_and_replays_by_its_route() {
        let items = every_kind();
        let kinds: Vec<&str> = items.iter().map(|i| i.kind).collect();
        for operation in OPERATIONS {
            assert!(kinds.contains(&operation), "{operation} is never sent");
        }
        for item in items {
            let route = item.route;
            let letter = item.into_dead_letter(0, 207, "invalid".into());
            assert!(validate(&letter).is_ok(), "{}", letter.operation);
            assert_eq!(letter.attempts, 1);
            let payload: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
            let outline = Outline::of(letter.operation, &payload);
            assert_eq!(outline.route, route, "{} replays the way it was sent", letter.operation);
            match letter.operation {
                "event" => assert!(outline.event_name.is_some(), "{payload}"),
                "merge" => {
                    assert_eq!(letter.customer_id, "4", "the primary");
                    assert_eq!(outline.secondary_id.as_deref(), Some("5"));
                }
                _ => assert_eq!((outline.event_name, outline.secondary_id), (None, None)),
            }
            // Names, never values; an anonymous event's too.
            if ["identify", "event", "object_identify"].contains(&letter.operation) {
                assert_eq!(letter.attributes.len(), 1, "{}", letter.operation);
            }
            assert!(!letter.attributes.iter().any(|a| a.contains("secret")));
        }
    }

    #[test]
    fn the_table_check_allows_exactly_the_operations() {
        let check = crate::state::MIGRATION
            .rsplit("CHECK (operation IN (")
            .next()
            .and_then(|rest| rest.split("))").next())
            .expect("the migration checks the operation");
        let allowed: Vec<&str> = check.split(',').map(|k| k.trim().trim_matches('\'')).collect();
        assert_eq!(allowed, OPERATIONS);
    }

    #[test]
    fn an_unknown_operation_is_refused_before_it_is_sent() {
        let error = validate(&letter("barrier", b"{}")).unwrap_err();
        assert!(!error.is_transient(), "{error}");
        assert!(error.to_string().contains("barrier"), "{error}");
    }

    #[test]
    fn a_payload_that_is_not_json_is_stored_encoded() {
        for bad in [&b"{\"plan\":\"secret-value\""[..], b"\xff\xfe"] {
            let row = Row::plain(&letter("identify", bad));
            assert!(!row.payload.contains("secret-value"), "{}", row.payload);
            let _: serde_json::Value = serde_json::from_str(&row.payload).expect("JSON");
            assert_eq!(original_payload(row.payload), String::from_utf8_lossy(bad));
        }
        let good = Row::plain(&letter("identify", br#"{"attributes":{"plan":"pro"}}"#));
        assert_eq!(good.payload, r#"{"attributes":{"plan":"pro"}}"#);
        assert_eq!(original_payload(good.payload.clone()), good.payload);
    }

    #[test]
    fn every_nul_in_a_payload_is_replaced_wherever_it_is() {
        // jsonb refuses U+0000: each one, in arrays and objects at any
        // depth, becomes U+FFFD, and the rest stays as it was.
        let payload = br#"{"attributes":{"tags":["a\u0000","b\u0000","c"],"n":{"x":"\u0000"}}}"#;
        let stored = storable_payload(payload);
        assert!(!stored.contains("\\u0000"), "{stored}");
        let value: serde_json::Value = serde_json::from_str(&stored).expect("JSON");
        let expected = serde_json::json!({"attributes": {
            "tags": ["a\u{FFFD}", "b\u{FFFD}", "c"], "n": {"x": "\u{FFFD}"}}});
        assert_eq!(value, expected);
        // NULs only in an array, two of them.
        let stored = storable_payload(br#"{"tags":["a\u0000","b\u0000"]}"#);
        assert_eq!(stored, "{\"tags\":[\"a\u{FFFD}\",\"b\u{FFFD}\"]}");
    }

    #[test]
    fn an_escaped_letter_is_printable_ascii_and_replays_what_was_sent() {
        let payload = "{\"type\":\"person\",\"action\":\"event\",\"name\":\"caf\u{e9}\",\
                       \"identifiers\":{\"id\":\"jos\u{e9}\"},\"attributes\":{\"b\\u0000\":\"\u{1F600}\"}}";
        let mut refused = letter("event", payload.as_bytes());
        refused.customer_id = "jos\u{e9}\0".into();
        refused.attributes = vec!["b\0".into()];
        refused.error = "bad \u{1F600}".into();
        let row = Row::escaped(&refused, "22P05");
        let printable = |t: &str| t.chars().all(|c| c == ' ' || c.is_ascii_graphic());
        assert_eq!(row.customer_id, "jos\\u{e9}\\u{0}");
        assert_eq!(row.attributes, ["b\\u{0}"]);
        assert!(row.error.starts_with("bad \\u{1f600} [stored escaped"), "{}", row.error);
        assert!(row.error.contains("SQLSTATE 22P05"), "{}", row.error);
        for text in [&row.customer_id, &row.error, &row.payload] {
            assert!(printable(text), "{text}");
        }
        assert_eq!(original_payload(row.payload.clone()), payload, "decoded as it was sent");
        let outline = Outline::of_stored("event", row.payload);
        assert_eq!(outline.event_name.as_deref(), Some("caf\u{e9}"));
        // Stored text that merely mentions the key is not decoded.
        let mentions = format!(r#"{{"{ENCODED_PAYLOAD_KEY}": "x", "other": 1}}"#);
        assert_eq!(original_payload(mentions.clone()), mentions);
    }
}
