//! `ciosync.accepted`: the record's table, one row per slot and customer,
//! `attributes` a JSON object of attribute name → fingerprint, `watched`
//! one of event (`name/column`) → `{"fp": fingerprint, "value": value}`.
//! Every query on it is here; its definition is in [`crate::state`].
//!
//! The sink's delivery tasks run several at once, each reading the record
//! before it sends and writing it after, so the store keeps a few
//! connections ([`CONNECTIONS`]), each opened lazily and dropped after an
//! error (the next use reconnects). Each prepares the read and the write
//! once: parsed and planned per batch, the read cost Postgres about an
//! eighth more (BENCHMARKS.md, "The record's lookups").

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value as Json;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Client, Statement, ToStatement};

use super::{Fingerprints, Known, KnownBy, WatchedValue, Whole, Write};
use crate::pg::connection::ConnectionSettings;
use crate::pg::PgError;
use crate::state::State;

/// Connections the store keeps at most.
pub const CONNECTIONS: usize = 4;

const READ: &str = "read ciosync.accepted";
const WRITE: &str = "write ciosync.accepted";

/// What the record holds of a batch's customers, and the version of each
/// row (`record::Whole`).
const LOAD: &str = "SELECT customer_id, attributes, watched, xmin::text::int8 \
                    FROM ciosync.accepted WHERE slot = $1 AND customer_id = ANY($2)";
/// Known customers' fingerprints written whole, each only while its row is
/// the version read (`record::Whole`); their watched values merged.
const REPLACE: &str = "UPDATE ciosync.accepted AS a SET attributes = u.f::jsonb, \
                       watched = CASE WHEN u.w = '{}' THEN a.watched \
                                      ELSE a.watched || u.w::jsonb END \
                       FROM unnest($2::text[], $3::int8[], $4::text[], $5::text[]) AS u(c, v, f, w) \
                       WHERE a.slot = $1 AND a.customer_id = u.c AND a.xmin = u.v::text::xid \
                       RETURNING a.customer_id";
/// A batch's fingerprints and watched values, merged into what is held.
/// As text, cast to jsonb by the statement: the attributes' objects are
/// written as they were built (`Assigned`), no JSON tree per customer.
const SET: &str = "INSERT INTO ciosync.accepted AS a (slot, customer_id, attributes, watched) \
                   SELECT $1, c, f::jsonb, w::jsonb \
                   FROM unnest($2::text[], $3::text[], $4::text[]) AS u(c, f, w) \
                   ON CONFLICT (slot, customer_id) \
                   DO UPDATE SET attributes = a.attributes || EXCLUDED.attributes, \
                                 watched = a.watched || EXCLUDED.watched";

/// The record of one slot (one Customer.io workspace's view).
pub struct RecordStore {
    settings: ConnectionSettings,
    slot: String,
    connections: Vec<Mutex<Option<Session>>>,
    next: AtomicUsize,
}

impl RecordStore {
    /// A store for `slot`'s record; no connection is opened yet.
    pub fn new(settings: ConnectionSettings, slot: String) -> Self {
        let connections = (0..CONNECTIONS).map(|_| Mutex::new(None)).collect();
        Self { settings, slot, connections, next: AtomicUsize::new(0) }
    }

    /// What the record holds for each of `customers` that it knows.
    pub async fn load(&self, customers: &[&str]) -> Result<KnownBy, PgError> {
        if customers.is_empty() {
            return Ok(KnownBy::default());
        }
        let mut checked_out = self.checkout().await?;
        let session = checked_out.session();
        let loaded = load_known(&session.client, &session.load, &self.slot, customers).await;
        checked_out.keep_if_ok(loaded)
    }

    /// Whether Customer.io may hold `customer` of `table`, by the record:
    /// `Some(true)` when the record knows them, `Some(false)` when it does
    /// not and it is complete for `table` (see [`mark_complete`]), `None`
    /// when it cannot tell (not complete: it may lack customers
    /// Customer.io holds).
    pub async fn holds(&self, customer: &str, table: &str) -> Result<Option<bool>, PgError> {
        let mut checked_out = self.checkout().await?;
        let read = checked_out
            .session()
            .client
            .query(
                "SELECT customer_id = $2, attributes ? $3 FROM ciosync.accepted \
                 WHERE slot = $1 AND customer_id IN ($2, '')",
                &[&self.slot, &customer, &table],
            )
            .await;
        let rows = checked_out.keep_if_ok(read).map_err(PgError::stored(READ))?;
        let known = rows.iter().any(|row| row.get::<_, bool>(0));
        let complete = rows.iter().any(|row| !row.get::<_, bool>(0) && row.get::<_, bool>(1));
        Ok(match (known, complete) {
            (true, _) => Some(true),
            (false, true) => Some(false),
            (false, false) => None,
        })
    }

    /// Stores one batch's effects in one transaction: the customers
    /// forgotten, then the attributes set (merged into what is held).
    pub async fn write(&self, write: &Write) -> Result<(), PgError> {
        if write.is_empty() {
            return Ok(());
        }
        let mut checked_out = self.checkout().await?;
        let written = write_in(checked_out.session(), &self.slot, write).await;
        checked_out.keep_if_ok(written).map_err(PgError::stored(WRITE))
    }

    /// Forgets everything the record holds for this slot; returns how many
    /// customers it held. For a start with the record turned off: what it
    /// holds would soon be behind Customer.io.
    pub async fn forget_all(&self) -> Result<u64, PgError> {
        let mut checked_out = self.checkout().await?;
        let deleted = checked_out
            .session()
            .client
            .execute("DELETE FROM ciosync.accepted WHERE slot = $1", &[&self.slot])
            .await;
        checked_out.keep_if_ok(deleted).map_err(PgError::stored(WRITE))
    }

    /// One of the connections (the first free one, else the next in turn),
    /// opened if needed.
    async fn checkout(&self) -> Result<CheckedOut<'_>, PgError> {
        let mut guard = match self.connections.iter().find_map(|c| c.try_lock().ok()) {
            Some(guard) => guard,
            None => {
                let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
                self.connections[turn].lock().await
            }
        };
        if guard.as_ref().is_some_and(|session| session.client.is_closed()) {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        Ok(CheckedOut(guard))
    }

    async fn connect(&self) -> Result<Session, PgError> {
        let client = self.settings.connect_sql().await.map_err(PgError::sql("connect"))?;
        State::open(&client, &self.slot).await?;
        let load = client.prepare(LOAD).await.map_err(PgError::stored(READ))?;
        let set = client.prepare(SET).await.map_err(PgError::stored(WRITE))?;
        let replace = client.prepare(REPLACE).await.map_err(PgError::stored(WRITE))?;
        Ok(Session { client, load, set, replace })
    }
}

/// One of the store's connections, with its statements prepared.
struct Session {
    client: Client,
    load: Statement,
    set: Statement,
    replace: Statement,
}

/// A connection in use; dropped after an error, so the next use reconnects.
struct CheckedOut<'a>(MutexGuard<'a, Option<Session>>);

impl CheckedOut<'_> {
    fn session(&mut self) -> &mut Session {
        self.0.as_mut().expect("checked out connections are open")
    }

    fn keep_if_ok<T, E>(&mut self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            *self.0 = None;
        }
        result
    }
}

async fn write_in(
    session: &mut Session,
    slot: &str,
    write: &Write,
) -> Result<(), tokio_postgres::Error> {
    let mut customers: Vec<&str> =
        write.set.keys().chain(write.watch.keys()).map(String::as_str).collect();
    customers.sort_unstable();
    customers.dedup();
    let watched: HashMap<&str, String> =
        write.watch.iter().map(|(c, w)| (c.as_str(), watched_json(w).to_string())).collect();
    let watched_of = |c: &str| watched.get(c).map_or("{}", String::as_str);
    // In a transaction even when it is one statement: a daemon killed while
    // its write waits (a lock) leaves no write behind, its COMMIT never sent.
    let tx = session.client.transaction().await?;
    if !write.forget.is_empty() {
        tx.execute(
            "DELETE FROM ciosync.accepted WHERE slot = $1 AND customer_id = ANY($2)",
            &[&slot, &write.forget],
        )
        .await?;
    }
    for (primary, secondary) in &write.merges {
        // The primary, held with no value known, takes the secondary's
        // watched values (the merged row's), and the secondary is gone.
        tx.execute(
            "WITH gone AS (DELETE FROM ciosync.accepted WHERE slot = $1 AND customer_id = $3 \
             RETURNING watched) \
             INSERT INTO ciosync.accepted AS a (slot, customer_id, attributes, watched) \
             VALUES ($1, $2, '{}', COALESCE((SELECT watched FROM gone), '{}')) \
             ON CONFLICT (slot, customer_id) DO UPDATE SET attributes = '{}', \
             watched = EXCLUDED.watched",
            &[&slot, primary, secondary],
        )
        .await?;
    }
    let wholes: Vec<(&str, &Whole)> =
        customers.iter().filter_map(|c| Some((*c, write.set.get(*c)?.whole.as_deref()?))).collect();
    if !wholes.is_empty() {
        let ids: Vec<&str> = wholes.iter().map(|(c, _)| *c).collect();
        let versions: Vec<i64> = wholes.iter().map(|(_, w)| i64::from(w.version)).collect();
        let attributes: Vec<&str> = wholes.iter().map(|(_, w)| w.attributes.as_str()).collect();
        let watched: Vec<&str> = ids.iter().map(|c| watched_of(c)).collect();
        let rows =
            tx.query(&session.replace, &[&slot, &ids, &versions, &attributes, &watched]).await?;
        let replaced: HashSet<&str> = rows.iter().map(|row| row.get(0)).collect();
        // The rest (rows changed since they were read among them) is merged.
        customers.retain(|c| !replaced.contains(c));
    }
    if !customers.is_empty() {
        let attributes: Vec<&str> = customers
            .iter()
            .map(|c| write.set.get(*c).map_or("{}", |set| set.attributes.as_str()))
            .collect();
        let watched: Vec<&str> = customers.iter().map(|c| watched_of(c)).collect();
        tx.execute(&session.set, &[&slot, &customers, &attributes, &watched]).await?;
    }
    tx.commit().await
}

/// What `slot`'s record holds for each of `customers` that it knows, read
/// on the caller's connection (`ciosync plan` reads it in its snapshot).
pub async fn load(
    client: &Client,
    slot: &str,
    customers: &[String],
) -> Result<HashMap<String, Fingerprints>, PgError> {
    let known = load_known(client, LOAD, slot, customers).await?;
    Ok(known.into_iter().map(|(customer, known)| (customer, known.attributes)).collect())
}

/// What `slot`'s record holds for each of `customers` that it knows,
/// watched values too.
async fn load_known<S: ToStatement + ?Sized, C: ToSql + Sync>(
    client: &Client,
    load: &S,
    slot: &str,
    customers: &[C],
) -> Result<KnownBy, PgError> {
    let rows = client.query(load, &[&slot, &customers]).await.map_err(PgError::stored(READ))?;
    Ok(rows
        .iter()
        .map(|row| {
            let (attributes, watched): (JsonText, JsonText) = (row.get(1), row.get(2));
            let known = Known {
                attributes: fingerprints_of(attributes.0),
                watched: watched_of(&serde_json::from_slice(watched.0).unwrap_or(Json::Null)),
                version: u32::try_from(row.get::<_, i64>(3)).ok(),
            };
            (row.get::<_, String>(0), known)
        })
        .collect())
}

/// Forgets `customers` in `slot`'s record, on the caller's connection: for
/// the commands that send to Customer.io on their own.
pub async fn forget(client: &Client, slot: &str, customers: &[String]) -> Result<u64, PgError> {
    if customers.is_empty() {
        return Ok(0);
    }
    client
        .execute(
            "DELETE FROM ciosync.accepted WHERE slot = $1 AND customer_id = ANY($2)",
            &[&slot, &customers],
        )
        .await
        .map_err(PgError::stored(WRITE))
}

/// Marks `slot`'s record complete for `table` (`schema.name`), or not: it
/// then holds every customer of the table Customer.io may hold (an initial
/// copy or a backfill of the whole table recorded each one), so a customer
/// it lacks is one Customer.io lacks. Kept in the record's own table, as
/// the row of the empty customer id (no customer has it: ids are not
/// empty), so that emptying the record (TRUNCATE, `record_accepted =
/// false`) takes the mark with it.
pub async fn mark_complete(
    client: &Client,
    slot: &str,
    table: &str,
    complete: bool,
) -> Result<(), PgError> {
    let statement = match complete {
        true => {
            "INSERT INTO ciosync.accepted AS a (slot, customer_id, attributes) \
             VALUES ($1, '', jsonb_build_object($2::text, 1)) ON CONFLICT (slot, customer_id) \
             DO UPDATE SET attributes = a.attributes || EXCLUDED.attributes"
        }
        false => {
            "UPDATE ciosync.accepted SET attributes = attributes - $2::text \
             WHERE slot = $1 AND customer_id = ''"
        }
    };
    client.execute(statement, &[&slot, &table]).await.map_err(PgError::stored(WRITE))?;
    Ok(())
}

/// Marks `customers` in `slot`'s record as held by Customer.io with values
/// the record does not know (their attribute fingerprints emptied, their
/// watched values kept), on the caller's connection: for the commands that
/// identify on their own. Their next identify goes whole, as after
/// [`forget`], and a removal that only matters if Customer.io holds them
/// (`Sink::may_hold`) is still sent.
pub async fn blank(client: &Client, slot: &str, customers: &[String]) -> Result<u64, PgError> {
    if customers.is_empty() {
        return Ok(0);
    }
    client
        .execute(
            "INSERT INTO ciosync.accepted AS a (slot, customer_id, attributes) \
             SELECT $1, c, '{}' FROM unnest($2::text[]) AS u(c) \
             ON CONFLICT (slot, customer_id) DO UPDATE SET attributes = '{}'",
            &[&slot, &customers],
        )
        .await
        .map_err(PgError::stored(WRITE))
}

/// What [`forget_keeping`] took out of the record: customer, attributes
/// and watched values as they were stored.
#[derive(Debug, Default)]
pub struct Forgotten(Vec<(String, Json, Json)>);

/// [`forget`], keeping what was forgotten, so that the customers whose
/// removal Customer.io then refuses can be put back ([`restore`]).
pub async fn forget_keeping(
    client: &Client,
    slot: &str,
    customers: &[String],
) -> Result<Forgotten, PgError> {
    if customers.is_empty() {
        return Ok(Forgotten::default());
    }
    let rows = client
        .query(
            "DELETE FROM ciosync.accepted WHERE slot = $1 AND customer_id = ANY($2) \
             RETURNING customer_id, attributes, watched",
            &[&slot, &customers],
        )
        .await
        .map_err(PgError::stored(WRITE))?;
    Ok(Forgotten(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()))
}

/// Puts back what [`forget_keeping`] took out for `customers`, those
/// whose removal Customer.io definitely refused: it still holds what it
/// held. A customer recorded again meanwhile keeps that newer write (and
/// one the daemon records later merges over this). The one gap: the
/// daemon removing the same customer (its row back and deleted again) and
/// recording that between the forget and this, though Customer.io refused
/// this very removal moments before.
pub async fn restore(
    client: &Client,
    slot: &str,
    forgotten: &Forgotten,
    customers: &[String],
) -> Result<u64, PgError> {
    let kept: Vec<&(String, Json, Json)> =
        forgotten.0.iter().filter(|(c, _, _)| customers.contains(c)).collect();
    if kept.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = kept.iter().map(|(c, _, _)| c.as_str()).collect();
    let attributes: Vec<&Json> = kept.iter().map(|(_, a, _)| a).collect();
    let watched: Vec<&Json> = kept.iter().map(|(_, _, w)| w).collect();
    client
        .execute(
            "INSERT INTO ciosync.accepted (slot, customer_id, attributes, watched) \
             SELECT $1, c, f, w FROM unnest($2::text[], $3::jsonb[], $4::jsonb[]) AS u(c, f, w) \
             ON CONFLICT (slot, customer_id) DO NOTHING",
            &[&slot, &ids, &attributes, &watched],
        )
        .await
        .map_err(PgError::stored(WRITE))
}

/// The stored object read back; anything but integers is skipped (a value
/// the record does not know is sent again).
/// The stored fingerprints read back from their JSON text, without a JSON
/// tree: anything but an object reads as none, a member that is not an
/// integer fingerprint is skipped (as if not recorded: sent again).
fn fingerprints_of(json: &[u8]) -> Fingerprints {
    serde_json::from_slice::<Stored>(json).map(|stored| stored.0).unwrap_or_default()
}

/// A `json` or `jsonb` column's value as its JSON text, as Postgres sends
/// it in binary: `jsonb` is a version byte (1) and the text.
struct JsonText<'a>(&'a [u8]);

impl<'a> FromSql<'a> for JsonText<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        match (ty, raw) {
            (&Type::JSONB, [1, text @ ..]) => Ok(Self(text)),
            (&Type::JSONB, _) => Err("unsupported jsonb encoding version".into()),
            _ => Ok(Self(raw)),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

/// Stored fingerprints: an object's integer members (see [`fingerprints_of`]).
struct Stored(Fingerprints);

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Stored;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of fingerprints")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Stored, A::Error> {
                let mut fingerprints = Fingerprints::default();
                fingerprints.reserve(map.size_hint().unwrap_or(8));
                while let Some(name) = map.next_key::<String>()? {
                    if let Integer(Some(fp)) = map.next_value()? {
                        fingerprints.insert(name, fp);
                    }
                }
                Ok(Stored(fingerprints))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// A JSON value that is an `i64`, or anything else (skipped whole).
struct Integer(Option<i64>);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Integer(value.as_i64()))
    }
}

fn watched_json(watched: &HashMap<String, WatchedValue>) -> Json {
    Json::Object(watched.iter().map(|(key, value)| (key.clone(), value.to_json())).collect())
}

/// The stored watched values read back; anything malformed is skipped (as
/// if nothing were recorded: the event is not derived, the value recorded).
fn watched_of(watched: &Json) -> HashMap<String, WatchedValue> {
    watched
        .as_object()
        .map(|object| {
            object
                .iter()
                .filter_map(|(key, stored)| Some((key.clone(), WatchedValue::from_json(stored)?)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_fingerprints_read_back_as_the_json_tree_read_them() {
        let json = br#"{"plan":-5,"email":9223372036854775807,"big":9223372036854775808,
                        "f":1.5,"s":"7","n":null,"o":{"a":1},"l":[1,2],"name\u00e9":3}"#;
        let read = fingerprints_of(json);
        let expected: Fingerprints = [("plan", -5), ("email", i64::MAX), ("name\u{e9}", 3)]
            .into_iter()
            .map(|(name, fp)| (name.to_owned(), fp))
            .collect();
        assert_eq!(read, expected);
        // Each member as `Value::as_i64` reads it (what the store did before).
        let tree: Json = serde_json::from_slice(json).unwrap();
        let by_tree: Fingerprints = tree
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(name, fp)| Some((name.clone(), fp.as_i64()?)))
            .collect();
        assert_eq!(read, by_tree);
        for other in [&b"[1]"[..], b"null", b"7", b"\"x\"", b"{", b""] {
            assert!(fingerprints_of(other).is_empty(), "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn jsonb_is_read_as_its_text_after_the_version_byte() {
        let text = JsonText::from_sql(&Type::JSONB, b"\x01{\"a\":1}").unwrap();
        assert_eq!(text.0, b"{\"a\":1}");
        assert!(JsonText::from_sql(&Type::JSONB, b"\x02{}").is_err());
        assert!(JsonText::from_sql(&Type::JSONB, b"").is_err());
        assert_eq!(JsonText::from_sql(&Type::JSON, b"{}").unwrap().0, b"{}");
        assert!(JsonText::accepts(&Type::JSONB) && !JsonText::accepts(&Type::TEXT));
    }
}
