//! The operator's queries on the dead-letter table (`ciosync dlq`): listing
//! in pages, reading a letter to replay, deleting and marking refusals.

use tokio_postgres::Client;

use super::{escape, original_payload};
use crate::pg::error::data_refusal;
use crate::pg::PgError;
use crate::state::State;
use crate::track_api::Route;

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
    /// What the payload says beyond the columns, without attribute values.
    pub outline: Outline,
    /// The item's JSON text as sent, when asked for (it is customer data,
    /// and large).
    pub payload: Option<String>,
}

/// What a letter's payload says about the operation beyond the columns,
/// read without its attribute values: how `dlq list` tells the kinds apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outline {
    /// How a replay sends it: a batch item, or an anonymous event alone.
    pub route: Route,
    /// An event's name.
    pub event_name: Option<String>,
    /// A merge's secondary person, merged into the primary (the customer
    /// id) and deleted.
    pub secondary_id: Option<String>,
}

impl Outline {
    /// The outline of a letter of `operation` whose payload is `payload`.
    pub fn of(operation: &str, payload: &serde_json::Value) -> Self {
        let text = |value: Option<&serde_json::Value>| value?.as_str().map(str::to_owned);
        let secondary = payload.get("secondary");
        Outline {
            route: Route::of_payload(payload),
            event_name: if operation == "event" { text(payload.get("name")) } else { None },
            secondary_id: if operation == "merge" {
                ["id", "email", "cio_id"].iter().find_map(|key| text(secondary?.get(*key)))
            } else {
                None
            },
        }
    }

    /// The outline of a stored letter from its payload's JSON text, with or
    /// without the attribute values, encoded or not.
    pub(super) fn of_stored(operation: &str, stored: String) -> Self {
        let value = serde_json::from_str(&original_payload(stored)).unwrap_or_default();
        Self::of(operation, &value)
    }
}

/// Columns of a [`StoredLetter`] in [`letter_of`]'s order, payload last.
/// The outline is read from the payload without the keys that hold values
/// (an identify's or event's `attributes`, a v1 event's `data`); an escaped
/// letter's encoded payload is read whole, a rare case.
const COLUMNS: &str = "id, customer_id, operation, attributes, status, error, attempts, \
    floor(extract(epoch FROM first_attempt_at))::bigint, \
    floor(extract(epoch FROM last_attempt_at))::bigint, \
    (payload - 'attributes' - 'data')::text";

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
        outline: Outline::of_stored(row.get(2), row.get(9)),
        payload: row.get::<_, Option<String>>(10).map(original_payload),
    }
}

/// One letter as `dlq retry` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayable {
    pub operation: String,
    pub customer_id: String,
    /// Attribute names, never values.
    pub attributes: Vec<String>,
    /// The item's JSON text as it was sent.
    pub payload: String,
}

/// The dead letters of one slot, over a borrowed SQL connection: what
/// `ciosync dlq` reads, updates and deletes.
pub struct DeadLetterTable<'a> {
    sql: &'a Client,
    slot: &'a str,
}

impl<'a> DeadLetterTable<'a> {
    /// Creates the schema and table if missing and returns a handle for `slot`.
    pub async fn open(sql: &'a Client, slot: &'a str) -> Result<Self, PgError> {
        State::open(sql, slot).await?;
        Ok(Self { sql, slot })
    }

    /// Up to `limit` letters with ids above `after`, in id order.
    pub async fn page(
        &self,
        after: i64,
        limit: i64,
        with_payload: bool,
    ) -> Result<Vec<StoredLetter>, PgError> {
        let query = format!(
            "SELECT {} FROM ciosync.dead_letters WHERE slot = $1 AND id > $2 ORDER BY id LIMIT $3",
            columns(with_payload)
        );
        let rows = self
            .sql
            .query(&query, &[&self.slot, &after, &limit])
            .await
            .map_err(PgError::sql("read ciosync.dead_letters"))?;
        Ok(rows.iter().map(letter_of).collect())
    }

    /// One letter's payload (JSON text, as it was sent: an escaped letter's
    /// decoded), if the letter (still) exists.
    pub async fn payload(&self, id: i64) -> Result<Option<String>, PgError> {
        let row = self
            .sql
            .query_opt(
                "SELECT payload::text FROM ciosync.dead_letters WHERE slot = $1 AND id = $2",
                &[&self.slot, &id],
            )
            .await
            .map_err(PgError::sql("read ciosync.dead_letters"))?;
        Ok(row.map(|r| original_payload(r.get(0))))
    }

    /// What `dlq retry` needs of one letter, if it (still) exists: its
    /// operation, customer id, attribute names and payload (as it was
    /// sent: an escaped letter's decoded).
    pub async fn replayable(&self, id: i64) -> Result<Option<Replayable>, PgError> {
        let row = self
            .sql
            .query_opt(
                "SELECT operation, customer_id, attributes, payload::text \
                 FROM ciosync.dead_letters WHERE slot = $1 AND id = $2",
                &[&self.slot, &id],
            )
            .await
            .map_err(PgError::sql("read ciosync.dead_letters"))?;
        Ok(row.map(|r| Replayable {
            operation: r.get(0),
            customer_id: r.get(1),
            attributes: r.get(2),
            payload: original_payload(r.get(3)),
        }))
    }

    /// Records a replay that did not settle (see `command`), with why, and
    /// leaves the status of the last refusal as it was.
    pub async fn kept(&self, id: i64, why: &str) -> Result<(), PgError> {
        self.sql
            .execute(
                "UPDATE ciosync.dead_letters SET attempts = attempts + 1, \
                 last_attempt_at = now(), error = $3 WHERE slot = $1 AND id = $2",
                &[&self.slot, &id, &why],
            )
            .await
            .map_err(PgError::sql("update ciosync.dead_letters"))?;
        Ok(())
    }

    /// The ids of this slot's letters, in order: all of them, or those of
    /// `only` that exist.
    pub async fn ids(&self, only: Option<&[i64]>) -> Result<Vec<i64>, PgError> {
        let rows = self
            .sql
            .query(
                "SELECT id FROM ciosync.dead_letters \
                 WHERE slot = $1 AND ($2::bigint[] IS NULL OR id = ANY($2)) ORDER BY id",
                &[&self.slot, &only],
            )
            .await
            .map_err(PgError::sql("read ciosync.dead_letters"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Deletes these letters (a delivered or discarded one); returns how many went.
    pub async fn delete(&self, ids: &[i64]) -> Result<u64, PgError> {
        self.sql
            .execute(
                "DELETE FROM ciosync.dead_letters WHERE slot = $1 AND id = ANY($2)",
                &[&self.slot, &ids],
            )
            .await
            .map_err(PgError::sql("delete from ciosync.dead_letters"))
    }

    /// Records that a replay was refused again, with Customer.io's new
    /// answer; escaped (see `Row::escaped`) if Postgres refuses its text.
    pub async fn refused_again(&self, id: i64, status: u16, error: &str) -> Result<(), PgError> {
        let update = |error: String| async move {
            self.sql
                .execute(
                    "UPDATE ciosync.dead_letters SET attempts = attempts + 1, \
                     last_attempt_at = now(), status = $3, error = $4 \
                     WHERE slot = $1 AND id = $2",
                    &[&self.slot, &id, &i32::from(status), &error],
                )
                .await
        };
        let what = "update ciosync.dead_letters";
        match update(error.to_owned()).await {
            Err(refused) if data_refusal(&refused).is_some() => {
                update(escape(error)).await.map_err(PgError::stored(what))?;
            }
            result => {
                result.map_err(PgError::stored(what))?;
            }
        }
        Ok(())
    }
}
