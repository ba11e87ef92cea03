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
//! A letter's `payload` is the batch item exactly as it was sent, attribute
//! values included: it is customer data. It is stored so a replay sends the
//! same thing, and it never appears in a log line or an error message; only
//! `dlq list --payload` prints it, to the operator who asked.
//!
//! The table's definition is in [`crate::state`] (the schema's migration);
//! every query on it is here.

pub mod command;
pub mod render;

use serde::de::IgnoredAny;
use tokio::sync::Mutex;
use tokio_postgres::{Client, GenericClient};

use crate::source::connection::ConnectionSettings;
use crate::source::SourceError;
use crate::state::State;

/// The operations a dead letter may hold (the table's CHECK constraint).
pub const OPERATIONS: [&str; 3] = ["identify", "delete", "merge"];

/// One operation Customer.io refused for good.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub customer_id: String,
    /// `"identify"`, `"delete"` or `"merge"`.
    pub operation: &'static str,
    /// Attribute names only, never values.
    pub attributes: Vec<String>,
    /// The HTTP status of the refusal; 207 for a per-item error.
    pub status: u16,
    /// Customer.io's text, already cut to 300 bytes.
    pub error: String,
    /// The item JSON exactly as sent, replayable as `{"batch":[payload]}`.
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

    /// Inserts all of `letters` in one transaction: all of them or none.
    ///
    /// On any error the connection is dropped, so the next call reconnects;
    /// the caller retries with backoff. An error is transient unless
    /// [`SourceError::is_transient`] says otherwise: a missing privilege, or
    /// a letter Postgres cannot store (which no retry fixes). Errors never
    /// carry the letters' contents.
    pub async fn record(&self, letters: &[DeadLetter]) -> Result<(), SourceError> {
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
    ) -> Result<(), SourceError> {
        if sql.as_ref().is_some_and(Client::is_closed) {
            *sql = None;
        }
        let client = match sql {
            Some(client) => client,
            None => sql.insert(self.connect().await?),
        };
        let what = "write ciosync.dead_letters";
        let tx = client.transaction().await.map_err(stored(what))?;
        insert(&tx, &self.slot, letters).await?;
        tx.commit().await.map_err(stored(what))
    }

    /// Opens a connection and makes sure the table exists (the migration).
    async fn connect(&self) -> Result<Client, SourceError> {
        let sql = self.settings.connect_sql().await.map_err(SourceError::sql("connect"))?;
        State::open(&sql, &self.slot).await?;
        Ok(sql)
    }
}

/// Rejects what Postgres would refuse, before sending it: its refusal's
/// DETAIL would quote the row, and retrying could never succeed.
fn validate(letter: &DeadLetter) -> Result<(), SourceError> {
    if !OPERATIONS.contains(&letter.operation) {
        return Err(SourceError::Definite(format!(
            "a dead letter's operation must be one of {OPERATIONS:?}, not `{}`",
            letter.operation
        )));
    }
    let json = std::str::from_utf8(&letter.payload)
        .ok()
        .filter(|text| serde_json::from_str::<IgnoredAny>(text).is_ok());
    match json {
        Some(_) => Ok(()),
        _ => Err(SourceError::Definite(format!(
            "a dead letter's payload ({} bytes) is not JSON that Postgres can store",
            letter.payload.len()
        ))),
    }
}

/// Inserts the letters with one prepared statement, inside the caller's transaction.
async fn insert(
    tx: &impl GenericClient,
    slot: &str,
    letters: &[DeadLetter],
) -> Result<(), SourceError> {
    let what = "write ciosync.dead_letters";
    let statement = tx
        .prepare(
            "INSERT INTO ciosync.dead_letters \
             (slot, customer_id, operation, attributes, status, error, payload, attempts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8)",
        )
        .await
        .map_err(stored(what))?;
    for letter in letters {
        let payload = storable_payload(&letter.payload);
        let status = i32::from(letter.status);
        let attempts = i32::try_from(letter.attempts).unwrap_or(i32::MAX);
        tx.execute(
            &statement,
            &[
                &slot,
                &letter.customer_id,
                &letter.operation,
                &letter.attributes,
                &status,
                &letter.error,
                &payload.as_str(),
                &attempts,
            ],
        )
        .await
        .map_err(stored(what))?;
    }
    Ok(())
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

/// Like [`SourceError::sql`], except that an error about the data itself
/// (SQLSTATE class 22 or 23) keeps only its code: its DETAIL quotes the row,
/// which is customer data, and no retry would store it anyway.
fn stored(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SourceError {
    move |source| match source.code().map(|c| c.code()) {
        Some(code) if code.starts_with("22") || code.starts_with("23") => SourceError::Definite(
            format!("postgres: could not {what}: the data was refused (SQLSTATE {code})"),
        ),
        _ => SourceError::Sql { what, source },
    }
}

/// A dead letter as stored, for `ciosync dlq`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLetter {
    pub id: i64,
    pub customer_id: String,
    pub operation: String,
    pub attributes: Vec<String>,
    pub status: i32,
    pub error: String,
    pub attempts: i32,
    /// Unix seconds.
    pub first_attempt_at: i64,
    /// Unix seconds.
    pub last_attempt_at: i64,
    /// The item's JSON text, when asked for (it is customer data, and large).
    pub payload: Option<String>,
}

/// Columns of a [`StoredLetter`] in [`letter_of`]'s order, payload last.
const COLUMNS: &str = "id, customer_id, operation, attributes, status, error, attempts, \
    floor(extract(epoch FROM first_attempt_at))::bigint, \
    floor(extract(epoch FROM last_attempt_at))::bigint";

fn columns(with_payload: bool) -> String {
    if with_payload {
        format!("{COLUMNS}, payload::text")
    } else {
        format!("{COLUMNS}, NULL::text")
    }
}

fn letter_of(row: &tokio_postgres::Row) -> StoredLetter {
    StoredLetter {
        id: row.get(0),
        customer_id: row.get(1),
        operation: row.get(2),
        attributes: row.get(3),
        status: row.get(4),
        error: row.get(5),
        attempts: row.get(6),
        first_attempt_at: row.get(7),
        last_attempt_at: row.get(8),
        payload: row.get(9),
    }
}

/// The dead letters of one slot, over a borrowed SQL connection: what
/// `ciosync dlq` reads, updates and deletes.
pub struct DeadLetterTable<'a> {
    sql: &'a Client,
    slot: &'a str,
}

impl<'a> DeadLetterTable<'a> {
    /// Creates the schema and table if missing and returns a handle for `slot`.
    pub async fn open(sql: &'a Client, slot: &'a str) -> Result<Self, SourceError> {
        State::open(sql, slot).await?;
        Ok(Self { sql, slot })
    }

    /// Up to `limit` letters with ids above `after`, in id order.
    pub async fn page(
        &self,
        after: i64,
        limit: i64,
        with_payload: bool,
    ) -> Result<Vec<StoredLetter>, SourceError> {
        let query = format!(
            "SELECT {} FROM ciosync.dead_letters WHERE slot = $1 AND id > $2 ORDER BY id LIMIT $3",
            columns(with_payload)
        );
        let rows = self
            .sql
            .query(&query, &[&self.slot, &after, &limit])
            .await
            .map_err(SourceError::sql("read ciosync.dead_letters"))?;
        Ok(rows.iter().map(letter_of).collect())
    }

    /// One letter's payload (JSON text), if the letter (still) exists.
    pub async fn payload(&self, id: i64) -> Result<Option<String>, SourceError> {
        let row = self
            .sql
            .query_opt(
                "SELECT payload::text FROM ciosync.dead_letters WHERE slot = $1 AND id = $2",
                &[&self.slot, &id],
            )
            .await
            .map_err(SourceError::sql("read ciosync.dead_letters"))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The ids of this slot's letters, in order: all of them, or those of
    /// `only` that exist.
    pub async fn ids(&self, only: Option<&[i64]>) -> Result<Vec<i64>, SourceError> {
        let rows = self
            .sql
            .query(
                "SELECT id FROM ciosync.dead_letters \
                 WHERE slot = $1 AND ($2::bigint[] IS NULL OR id = ANY($2)) ORDER BY id",
                &[&self.slot, &only],
            )
            .await
            .map_err(SourceError::sql("read ciosync.dead_letters"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Deletes these letters (a delivered or discarded one); returns how many went.
    pub async fn delete(&self, ids: &[i64]) -> Result<u64, SourceError> {
        self.sql
            .execute(
                "DELETE FROM ciosync.dead_letters WHERE slot = $1 AND id = ANY($2)",
                &[&self.slot, &ids],
            )
            .await
            .map_err(SourceError::sql("delete from ciosync.dead_letters"))
    }

    /// Records that a replay was refused again, with Customer.io's new answer.
    pub async fn refused_again(
        &self,
        id: i64,
        status: u16,
        error: &str,
    ) -> Result<(), SourceError> {
        self.sql
            .execute(
                "UPDATE ciosync.dead_letters SET attempts = attempts + 1, \
                 last_attempt_at = now(), status = $3, error = $4 WHERE slot = $1 AND id = $2",
                &[&self.slot, &id, &i32::from(status), &error],
            )
            .await
            .map_err(SourceError::sql("update ciosync.dead_letters"))?;
        Ok(())
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

    #[test]
    fn only_storable_letters_are_sent_and_refusals_never_quote_them() {
        assert!(validate(&letter("identify", br#"{"attributes":{"plan":"pro"}}"#)).is_ok());
        assert!(validate(&letter("merge", br#"{"a":1}"#)).is_ok());
        for bad in [
            letter("event", b"{}"),
            letter("identify", b"{\"plan\":\"secret-value\""),
            letter("identify", b"\xff\xfe"),
        ] {
            let error = validate(&bad).unwrap_err();
            assert!(!error.is_transient(), "{error}");
            assert!(!error.to_string().contains("secret-value"), "{error}");
        }
    }
}
