//! `dlq retry`: each letter replayed in id order, a person's letter with
//! the row as it is now (see the `retry` help; an object's, a
//! relationship's and a device's in [`super::refresh`]), until Customer.io
//! gives a definite answer or the command must stop.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_postgres::Client;

use super::{emit, CommandError};
use crate::commands::current::{Current, Rows, MAX_ROUNDS};
use crate::config::Config;
use crate::customer::CustomerOp;
use crate::dead_letter::render::{self, Refusal, RetrySummary, Skip};
use crate::dead_letter::{DeadLetterTable, Replayable};
use crate::pg::PgError;
use crate::sink::batch::encode;
use crate::sink::client::TrackClient;
use crate::sink::retry::{cut_error_text, describe_item_error};
use crate::sink::send::{self, Policy, Stop};
use crate::telemetry::Counters;
use crate::track_api::ItemError;
use crate::track_api::Route;

/// Replays each letter in id order and prints the summary, also when it
/// stops early.
pub(super) async fn retry(
    config: &Config,
    sql: &Client,
    table: &DeadLetterTable<'_>,
    ids: &[i64],
) -> Result<(), CommandError> {
    let client = TrackClient::new(&config.customerio, Arc::new(Counters::default()))?;
    let max_backoff = Duration::from_secs(config.customerio.retry_max_backoff_secs);
    let rows = Rows::new(sql, &config.sync);
    let slot = config.postgres.slot.as_str();
    let devices = super::devices::Devices::new(&config.devices);
    let mut replayer = Replayer { client, max_backoff, rows, sql, slot, devices };
    let mut summary = RetrySummary::default();
    let outcome = replay_all(&mut replayer, table, ids, &mut summary).await;
    emit(&render::retry_summary(&summary))?;
    outcome
}

async fn replay_all(
    replayer: &mut Replayer<'_>,
    table: &DeadLetterTable<'_>,
    ids: &[i64],
    summary: &mut RetrySummary,
) -> Result<(), CommandError> {
    for (i, &id) in ids.iter().enumerate() {
        // Gone meanwhile: another `dlq` command delivered or discarded it.
        let Some(letter) = table.replayable(id).await? else { continue };
        let outcome = match replayer.settle(&letter).await {
            Ok(outcome) => outcome,
            Err(Halt::Postgres(error)) => return Err(error.into()),
            Err(Halt::Customerio(reason)) => {
                return Err(CommandError::Stopped { id, left: ids.len() - i - 1, reason });
            }
        };
        match outcome {
            Outcome::Delivered { note } => {
                table.delete(&[id]).await?;
                summary.delivered += 1;
                if let Some(note) = note {
                    summary.sent_as_refused.push((id, note));
                }
            }
            Outcome::Refreshed => {
                table.delete(&[id]).await?;
                summary.refreshed += 1;
            }
            Outcome::Skipped(skip) => {
                table.delete(&[id]).await?;
                summary.skipped.push((id, skip));
            }
            Outcome::RefusedAgain { status, error } => {
                table.refused_again(id, status, &error).await?;
                summary.refused.push(Refusal { id, status, error });
            }
            Outcome::Unsettled => {
                table.kept(id, UNSETTLED).await?;
                summary.kept.push((id, UNSETTLED));
            }
            Outcome::Kept(why) => {
                table.kept(id, why).await?;
                summary.kept.push((id, why));
            }
        }
    }
    Ok(())
}

/// The error a letter is kept with when its row changed after every one of
/// [`MAX_ROUNDS`] sends.
const UNSETTLED: &str = "its row kept changing while `dlq retry` sent it; \
    nothing was lost: run `dlq retry` again";

/// What became of one letter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    /// Sent as it was refused; `note` says why when it was an identify or
    /// a removal that could not be checked against the rows.
    Delivered {
        note: Option<&'static str>,
    },
    /// An identify, sent with the row's current values instead.
    Refreshed,
    /// Nothing sent: it would set the customer back.
    Skipped(Skip),
    RefusedAgain {
        status: u16,
        error: String,
    },
    /// The row changed after every send; kept.
    Unsettled,
    /// Not sent, kept, for this reason.
    Kept(&'static str),
}

/// Why `retry` stopped: Customer.io cannot take anything now, or Postgres failed.
pub(super) enum Halt {
    Customerio(Stop),
    Postgres(PgError),
}

impl From<PgError> for Halt {
    fn from(error: PgError) -> Self {
        Halt::Postgres(error)
    }
}

impl From<Stop> for Halt {
    fn from(stop: Stop) -> Self {
        Halt::Customerio(stop)
    }
}

/// Sends letters and reads the rows they are about.
pub(super) struct Replayer<'a> {
    client: TrackClient,
    max_backoff: Duration,
    /// The synced tables: people, objects, relationships.
    pub(super) rows: Rows<'a>,
    /// For the record of what Customer.io accepted, which forgets every
    /// customer a replay sent to (see [`crate::record`]), and for the
    /// `[[devices]]` tables.
    pub(super) sql: &'a Client,
    slot: &'a str,
    /// The `[[devices]]` tables, for device letters.
    pub(super) devices: super::devices::Devices<'a>,
}

impl Replayer<'_> {
    /// Replays one letter so that it never sets its customer back:
    /// - an identify is replaced by the row's current values (a full
    ///   identify), or skipped when the row is gone or no longer syncs (its
    ///   removal went, or goes, through the stream);
    /// - a delete or suppression is sent only while the customer has no
    ///   row that syncs; a row with that id again makes it stale: skipped;
    /// - events (facts, each with its own id, which Customer.io dedupes)
    ///   are sent as they were; so are merges, after which the primary is
    ///   refreshed from its row ([`Self::merge`]);
    /// - an object's, a relationship's and a device's letter are sent as
    ///   their rows are now, by the same rules ([`super::refresh`]).
    ///
    /// An identify whose attributes no person table maps any more, or a
    /// customer with a row in several tables, is sent as it was, noted.
    async fn settle(&mut self, letter: &Replayable) -> Result<Outcome, Halt> {
        let customer = customer_of(letter);
        match letter.operation.as_str() {
            "identify" => {
                let (tables, others) = self.rows.tables_of_identify(&letter.attributes);
                if tables.is_empty() {
                    return self.as_refused(letter, Some(UNMAPPED)).await;
                }
                match self.rows.current(&customer, &tables).await? {
                    Current::Gone => Ok(Outcome::Skipped(Skip::RowGone)),
                    Current::Several => self.as_refused(letter, Some(SEVERAL)).await,
                    live => {
                        self.converge(&customer, (&tables, &others), live, &letter.payload).await
                    }
                }
            }
            "delete" | "suppress" => {
                let tables = self.rows.every_table();
                match self.rows.current(&customer, &tables).await? {
                    Current::Gone => {
                        let tables = (&tables[..], &[][..]);
                        self.converge(&customer, tables, Current::Gone, &letter.payload).await
                    }
                    _ => Ok(Outcome::Skipped(Skip::RowBack)),
                }
            }
            "merge" => self.merge(letter, &customer).await,
            kind if super::refresh::KINDS.contains(&kind) => self.row_letter(letter).await,
            _ => self.as_refused(letter, None).await,
        }
    }

    /// A merge as it was, then its primary (`customer`) refreshed from its
    /// row. The id change that made the merge sent the primary's email (and
    /// its NULLs) after it, and Customer.io refuses to give the primary an
    /// email the secondary still has (an "Attribute Update Failure" on an
    /// HTTP 200): with the merge refused, that identify was lost too, and
    /// the merge alone does not bring the email over.
    async fn merge(&mut self, letter: &Replayable, customer: &str) -> Result<Outcome, Halt> {
        let merged = self.as_refused(letter, None).await?;
        if merged != (Outcome::Delivered { note: None }) {
            return Ok(merged);
        }
        let tables = self.rows.every_table();
        match self.rows.current(customer, &tables).await? {
            live @ Current::Live(_) => {
                match self.converge(customer, (&tables, &[]), live, &letter.payload).await? {
                    Outcome::Refreshed => Ok(Outcome::Delivered { note: Some(MERGED) }),
                    other => Ok(other),
                }
            }
            _ => Ok(merged),
        }
    }

    pub(super) async fn as_refused(
        &self,
        letter: &Replayable,
        note: Option<&'static str>,
    ) -> Result<Outcome, Halt> {
        Ok(match self.replay(&letter.payload).await? {
            Answer::Delivered => Outcome::Delivered { note },
            Answer::RefusedAgain { status, error } => Outcome::RefusedAgain { status, error },
        })
    }

    /// Sends what `state` calls for (the row's values, or the removal:
    /// `removal`, the letter's own payload for a removal letter) until the
    /// rows, read again after Customer.io accepted it, still say the same.
    ///
    /// Why read again: the daemon keeps delivering while this runs. Were
    /// the row updated after it was read here, the daemon could deliver
    /// the newer values before this send lands, and this send would then
    /// set them back. A change committed before the read after the
    /// acceptance is seen by that read and sent again here; a change
    /// committed after it is delivered by the daemon after this send was
    /// accepted, so it lands last. The same holds the other way: a row
    /// deleted (or re-inserted) meanwhile gets its removal (or its values)
    /// again. At most [`MAX_ROUNDS`] sends; a row that changes after each
    /// of them leaves the letter kept, to be retried later.
    async fn converge(
        &mut self,
        customer: &str,
        (tables, others): (&[usize], &[usize]),
        mut state: Current,
        removal: &str,
    ) -> Result<Outcome, Halt> {
        let mut refreshed = false;
        for _ in 0..MAX_ROUNDS {
            let payload = match &state {
                Current::Live(attributes) => {
                    refreshed = true;
                    let timestamp = self.rows.now().await?;
                    let op = CustomerOp::Identify {
                        id: customer.to_owned(),
                        attributes: attributes.clone(),
                        timestamp,
                    };
                    encoded(op)
                }
                Current::Gone if removal_kind(removal).is_some() => removal.to_owned(),
                Current::Gone => encoded(self.rows.removal(tables, customer)),
                // Not told apart: what the letter says went out last.
                Current::Several => break,
            };
            if let Answer::RefusedAgain { status, error } = self.replay(&payload).await? {
                return Ok(Outcome::RefusedAgain { status, error });
            }
            let now = self.rows.current(customer, tables).await?;
            if now == state
                || now == Current::Several
                || self.elsewhere(customer, others, &now).await?
            {
                return Ok(if refreshed {
                    Outcome::Refreshed
                } else {
                    Outcome::Delivered { note: None }
                });
            }
            state = now;
        }
        Ok(Outcome::Unsettled)
    }

    /// Whether `now`, what an identify's tables (those mapping its
    /// attributes) say, is gone while one of the `others` person tables
    /// still has a row of `customer` that syncs: the customer lives on, and
    /// nothing may remove it.
    async fn elsewhere(
        &mut self,
        customer: &str,
        others: &[usize],
        now: &Current,
    ) -> Result<bool, Halt> {
        if *now != Current::Gone {
            return Ok(false);
        }
        Ok(!others.is_empty() && self.rows.current(customer, others).await? != Current::Gone)
    }
}

impl Replayer<'_> {
    /// [`replay`], with the record forgetting the customers the payload
    /// names before and after it: the daemon sends their next identify
    /// whole, so the values this sent can never be taken for the ones its
    /// record holds.
    ///
    /// Before, each forget committed on its own (no transaction is open on
    /// this connection): however the command ends, even killed while
    /// Customer.io applies the send, the record claims nothing for these
    /// customers that the send may have changed. After, because nothing
    /// holds the daemon back meanwhile: it may deliver an operation of
    /// the same customer and record it between the first forget and this
    /// send, which then changes what Customer.io holds (a removal, or older
    /// values that [`Replayer::converge`] sends again).
    pub(super) async fn replay(&self, payload: &str) -> Result<Answer, Halt> {
        self.unclaim(payload).await?;
        let answer = replay(&self.client, payload, self.max_backoff).await;
        self.unclaim(payload).await?;
        Ok(answer?)
    }

    /// The record claims nothing of what `payload` may change: a removal's
    /// customer, and a merge's secondary, are forgotten; the customers an
    /// identify or an event names (and a merge's primary) are kept as held
    /// by Customer.io, with no fingerprint (`record::store::blank`), so a
    /// later removal that only matters if Customer.io holds them still goes.
    async fn unclaim(&self, payload: &str) -> Result<(), Halt> {
        let customers = customers_in(payload);
        let (gone, held): (Vec<String>, Vec<String>) = if removal_kind(payload).is_some() {
            (customers, Vec::new())
        } else if let [primary, secondary] = customers.as_slice() {
            (vec![secondary.clone()], vec![primary.clone()])
        } else {
            (Vec::new(), customers)
        };
        crate::record::store::forget(self.sql, self.slot, &gone).await?;
        crate::record::store::blank(self.sql, self.slot, &held).await?;
        Ok(())
    }
}

/// The customers a payload names: a person item's `identifiers.id`, a
/// merge's primary and secondary (an anonymous event names none). Not an
/// id holding a NUL: the record, a Postgres text, holds none (and
/// Postgres refuses it as a parameter).
fn customers_in(payload: &str) -> Vec<String> {
    let Ok(item) = serde_json::from_str::<serde_json::Value>(payload) else { return Vec::new() };
    ["identifiers", "primary", "secondary"]
        .iter()
        .filter_map(|key| item.get(key)?.get("id")?.as_str().map(str::to_owned))
        .filter(|id| !id.contains('\0'))
        .collect()
}

/// The note of a merge whose primary was refreshed after it.
const MERGED: &str = "a merge; then its primary was refreshed from the row";
/// Why an identify was sent as it was refused.
const UNMAPPED: &str = "no person table of the config maps its attributes any more";
pub(super) const SEVERAL: &str = "several tables have a row for it; which values are newest \
    cannot be told";

/// The customer a letter's payload names (`identifiers.id`): an escaped
/// letter's column is escaped, its payload is not. The column otherwise.
fn customer_of(letter: &Replayable) -> String {
    serde_json::from_str::<serde_json::Value>(&letter.payload)
        .ok()
        .and_then(|v| v.get("identifiers")?.get("id")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| letter.customer_id.clone())
}

/// `delete` or `suppress` when `payload` is a removal item.
fn removal_kind(payload: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    let action = value.get("action")?.as_str()?;
    ["delete", "suppress"].contains(&action).then(|| action.to_owned())
}

/// An operation as the sink encodes it, as JSON text.
pub(super) fn encoded(op: CustomerOp) -> String {
    let json = encode(op).map(|item| item.json).unwrap_or_default();
    String::from_utf8_lossy(&json).into_owned()
}

/// Sends one payload (as it was sent: [`DeadLetterTable::payload`] decodes
/// an escaped letter's) by its route until Customer.io gives a definite
/// answer, or stops.
async fn replay(
    client: &TrackClient,
    payload: &str,
    max_backoff: Duration,
) -> Result<Answer, Stop> {
    // A v1 anonymous event is sent as it is; anything else as a batch item.
    let route = serde_json::from_str(payload).map_or(Route::Batch, |v| Route::of_payload(&v));
    let body = match route {
        Route::Batch => batch_body(payload),
        Route::AnonymousEvent => Bytes::from(payload.to_owned()),
    };
    Ok(match send::until_answered(client, route, body, 1, Policy::command(max_backoff)).await? {
        send::Answer::Accepted => Answer::Delivered,
        send::Answer::PartlyRejected(errors) => {
            Answer::RefusedAgain { status: 207, error: item_errors_text(&errors) }
        }
        send::Answer::Rejected { status, message } => {
            Answer::RefusedAgain { status, error: message }
        }
    })
}

/// `{"batch":[payload]}`: the letter as the one item of a batch request.
fn batch_body(payload: &str) -> Bytes {
    Bytes::from(format!("{{\"batch\":[{payload}]}}"))
}

/// Customer.io's definite answer about one letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    Delivered,
    RefusedAgain { status: u16, error: String },
}

/// A per-item refusal in the words the daemon stores it with (`reason
/// (field): message`, as `sink::deliver` writes it), so a letter's error
/// reads the same whoever wrote it; cut to 300 bytes.
fn item_errors_text(errors: &[ItemError]) -> String {
    let texts: Vec<String> = errors.iter().map(describe_item_error).collect();
    cut_error_text(texts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayable(operation: &str, customer: &str, payload: &str) -> Replayable {
        Replayable {
            operation: operation.into(),
            customer_id: customer.into(),
            attributes: Vec::new(),
            payload: payload.into(),
        }
    }

    #[test]
    fn the_customer_is_read_from_the_payload_when_it_names_one() {
        let escaped = replayable("delete", "jos\\u{e9}", r#"{"identifiers":{"id":"jos\u00e9"}}"#);
        assert_eq!(customer_of(&escaped), "jos\u{e9}");
        let anonymous = replayable("event", "cookie-1", r#"{"anonymous_id":"cookie-1"}"#);
        assert_eq!(customer_of(&anonymous), "cookie-1");
    }

    #[test]
    fn only_removal_payloads_are_sent_as_removals() {
        assert_eq!(removal_kind(r#"{"action":"suppress"}"#).as_deref(), Some("suppress"));
        assert_eq!(removal_kind(r#"{"action":"delete"}"#).as_deref(), Some("delete"));
        assert_eq!(removal_kind(r#"{"action":"identify"}"#), None);
        assert_eq!(removal_kind("not json"), None);
    }

    #[test]
    fn item_errors_read_like_the_daemons_and_are_cut() {
        let error = |field: Option<&str>, message: Option<&str>| ItemError {
            batch_index: Some(0),
            reason: Some("invalid".into()),
            field: field.map(str::to_owned),
            message: message.map(str::to_owned),
        };
        assert_eq!(item_errors_text(&[error(Some(""), Some("bad"))]), "invalid: bad");
        assert_eq!(item_errors_text(&[error(None, None)]), "invalid");
        assert_eq!(item_errors_text(&[ItemError::default()]), "refused");
        let long = item_errors_text(&[error(Some("f"), Some(&"é".repeat(400)))]);
        assert!(
            long.len() <= crate::sink::retry::MAX_ERROR_TEXT_BYTES
                && long.len() >= crate::sink::retry::MAX_ERROR_TEXT_BYTES - 1,
            "{long}"
        );
    }

    #[test]
    fn an_unsettled_letter_is_told_in_words_for_every_kind() {
        // Objects', relationships' and devices' letters are kept with it too.
        assert!(UNSETTLED.starts_with("its row kept changing"), "{UNSETTLED}");
        assert!(!UNSETTLED.contains("customer"), "{UNSETTLED}");
    }

    #[test]
    fn ids_holding_a_nul_are_never_claimed_in_the_record() {
        let payload = r#"{"type":"person","action":"delete","identifiers":{"id":"9\u0000"}}"#;
        assert!(customers_in(payload).is_empty(), "Postgres refuses such a parameter");
        assert_eq!(customers_in(r#"{"identifiers":{"id":"9"}}"#), ["9"]);
    }

    #[test]
    fn the_body_is_a_batch_of_the_payload() {
        let body = batch_body(r#"{"type": "person", "action": "delete"}"#);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value, serde_json::json!({"batch": [{"type": "person", "action": "delete"}]}));
    }
}
