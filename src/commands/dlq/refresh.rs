//! `dlq retry` of an object's, a relationship's or a device's letter
//! (`object_identify`, `object_delete`, `add_relationship`,
//! `delete_relationship`, `add_device`, `delete_device`): replayed as its
//! row is now, never as it was refused, so a replay brings back nothing
//! deleted since, removes nothing added back, and sets no value back.
//!
//! The row is found by what the payload names: an object by its type and
//! id in the `[[objects]]` tables of that type, a relationship by its
//! person and object in the `[[relationships]]` tables of that type (the
//! pair is their key, as backfills page them), a device by its person and
//! token in the `[[devices]]` tables. It is read by the same code as the
//! initial copy and backfills (the table's `filter` applies) and mapped by
//! the daemon's mapper (a soft-deleted object is not live), so what is sent
//! is what a backfill of the row would send:
//!
//! | the row now | an add (`object_identify`, `add_relationship`, `add_device`) | a removal |
//! |---|---|---|
//! | live | the row's current operation: *refreshed* | nothing: stale, *skipped* (`RowBack`) |
//! | gone, filtered out, soft-deleted | nothing: *skipped* (`RowGone`) | the letter as it was: *delivered* |
//!
//! An add's operation is read from the tables of its type mapping one of
//! its attribute names (a relationship's, its `relationship_attributes`:
//! [`names_of`]); a row still live in another of them keeps the subject
//! alive, so it is never removed for its own row's being gone
//! ([`Now::Elsewhere`]).
//!
//! Then, as for people ([`super::replay`]'s `converge`), the row is read
//! again after Customer.io accepted the send, and its new state sent while
//! it changed, at most [`MAX_ROUNDS`] times ([`converge`]). A letter whose
//! tables are no longer in the config is kept, saying what to do.

use serde_json::Value;

use super::replay::{encoded, Answer, Halt, Outcome, Replayer, SEVERAL};
use crate::commands::current::MAX_ROUNDS;
use crate::customer::{CustomerOp, ObjectAction, ObjectOp, RelationshipAction, RelationshipOp};
use crate::dead_letter::render::Skip;
use crate::dead_letter::Replayable;

/// The operations of the letters replayed here.
pub(super) const KINDS: [&str; 6] = [
    "object_identify",
    "object_delete",
    "add_relationship",
    "delete_relationship",
    "add_device",
    "delete_device",
];

/// What a letter is about, as its payload names it.
#[derive(Debug, Clone, PartialEq)]
enum Subject {
    Object { object_type_id: String, object_id: String },
    Relationship { customer: String, object_type_id: String, object_id: String },
    Device { customer: String, token: String },
}

/// What the rows say of a letter's subject now.
#[derive(Debug, Clone, PartialEq)]
enum Now {
    /// One live row: the operation that sends it as it is.
    Live(CustomerOp),
    /// No row, or none that syncs.
    Gone,
    /// No row of the letter's tables syncs, but one of another table of
    /// its type does: the subject lives on through that row (which the
    /// daemon syncs), so nothing removes it.
    Elsewhere,
    /// Live rows in several tables: which is newest cannot be told.
    Several,
}

/// Why a letter is kept: no table of the config says what it is now.
const NO_OBJECTS_TABLE: &str = "no [[objects]] table of this object type is in the config \
    any more: add it back and run `ciosync dlq retry` again, or `ciosync dlq discard` this letter";
const NO_RELATIONSHIPS_TABLE: &str = "no [[relationships]] table of this object type is in the \
    config any more: add it back and run `ciosync dlq retry` again, or `ciosync dlq discard` \
    this letter";
const NO_DEVICES_TABLE: &str = "no [[devices]] table is in the config any more: add it back \
    and run `ciosync dlq retry` again, or `ciosync dlq discard` this letter";

impl Subject {
    /// The subject `letter`'s payload names; `None` when it names none
    /// (not an item of its operation).
    fn of(letter: &Replayable) -> Option<Self> {
        let item: Value = serde_json::from_str(&letter.payload).ok()?;
        let text = |value: Option<&Value>| value?.as_str().map(str::to_owned);
        let object = |ids: Option<&Value>| {
            let ids = ids?;
            Some((text(ids.get("object_type_id"))?, text(ids.get("object_id"))?))
        };
        let customer = || text(item.get("identifiers")?.get("id"));
        Some(match letter.operation.as_str() {
            "object_identify" | "object_delete" => {
                let (object_type_id, object_id) = object(item.get("identifiers"))?;
                Self::Object { object_type_id, object_id }
            }
            "add_relationship" | "delete_relationship" => {
                let related = item.get("cio_relationships")?.get(0)?.get("identifiers");
                let (object_type_id, object_id) = object(related)?;
                Self::Relationship { customer: customer()?, object_type_id, object_id }
            }
            "add_device" | "delete_device" => Self::Device {
                customer: customer()?,
                token: super::devices::token_of(&letter.payload)?,
            },
            _ => return None,
        })
    }

    /// The key of its row, as [`crate::commands::current::Rows::mapped`]
    /// takes it: an object's id; a relationship's person and object (the
    /// key columns of its table, in their order).
    fn key(&self) -> String {
        match self {
            Self::Object { object_id, .. } => object_id.clone(),
            Self::Relationship { customer, object_id, .. } => {
                serde_json::to_string(&[customer, object_id]).unwrap_or_default()
            }
            Self::Device { token, .. } => token.clone(),
        }
    }

    /// Whether `op` (what a row was mapped to) is this subject, alive.
    fn is_live(&self, op: &CustomerOp) -> bool {
        match (self, op) {
            (Self::Object { object_type_id, object_id }, CustomerOp::Object(o)) => {
                matches!(o.action, ObjectAction::Identify { .. })
                    && (&o.object_type_id, &o.object_id) == (object_type_id, object_id)
            }
            (
                Self::Relationship { customer, object_type_id, object_id },
                CustomerOp::Relationship(r),
            ) => {
                matches!(r.action, RelationshipAction::Add { .. })
                    && (&r.customer, &r.object_type_id, &r.object_id)
                        == (customer, object_type_id, object_id)
            }
            _ => false,
        }
    }

    /// The operation that removes it, sent when its row went meanwhile.
    fn removal(&self) -> CustomerOp {
        match self.clone() {
            Self::Object { object_type_id, object_id } => {
                CustomerOp::Object(ObjectOp::new(&object_type_id, object_id, ObjectAction::Delete))
            }
            Self::Relationship { customer, object_type_id, object_id } => {
                let action = RelationshipAction::Delete;
                CustomerOp::Relationship(RelationshipOp {
                    customer,
                    object_type_id,
                    object_id,
                    action,
                })
            }
            Self::Device { customer, token } => CustomerOp::DeleteDevice { customer, token },
        }
    }
}

/// Reads what the rows say and sends, for [`converge`].
trait Rounds {
    /// What the rows say of the letter's subject now.
    async fn now(&mut self) -> Result<Now, Halt>;
    /// Sends one item until Customer.io answers it for good.
    async fn send(&mut self, payload: &str) -> Result<Answer, Halt>;
}

/// Sends what `state` calls for (the live row's operation, or `removal`)
/// until the rows, read again after Customer.io accepted it, still say the
/// same; at most [`MAX_ROUNDS`] sends, then [`Outcome::Unsettled`]. Why
/// read again: see `Replayer::converge` (the daemon keeps delivering
/// meanwhile; a change committed before the read after the acceptance is
/// sent again here, a later one lands after this send).
async fn converge(
    rounds: &mut impl Rounds,
    mut state: Now,
    removal: &str,
) -> Result<Outcome, Halt> {
    let mut refreshed = false;
    for _ in 0..MAX_ROUNDS {
        let payload = match &state {
            Now::Live(op) => {
                refreshed = true;
                encoded(op.clone())
            }
            Now::Gone => removal.to_owned(),
            // Not told apart, or another table's (a read of either ends
            // the rounds).
            Now::Several | Now::Elsewhere => break,
        };
        if let Answer::RefusedAgain { status, error } = rounds.send(&payload).await? {
            return Ok(Outcome::RefusedAgain { status, error });
        }
        let now = rounds.now().await?;
        if now == state || matches!(now, Now::Several | Now::Elsewhere) {
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

/// A letter bound to the replayer and the tables its row is read from.
struct Letter<'r, 'a> {
    replayer: &'r mut Replayer<'a>,
    subject: Subject,
    /// The tables an add's operation is read from (narrowed to those
    /// mapping its attributes: see [`Replayer::tables_of`]).
    tables: Vec<usize>,
    /// The other tables of its type: a live row there keeps the subject
    /// alive, so the rows' being gone from `tables` removes nothing.
    others: Vec<usize>,
}

impl Rounds for Letter<'_, '_> {
    async fn now(&mut self) -> Result<Now, Halt> {
        let replayer = &mut *self.replayer;
        if let Subject::Device { customer, token } = &self.subject {
            let op = replayer.devices.current(replayer.sql, customer, token).await?;
            return Ok(op.map_or(Now::Gone, Now::Live));
        }
        let mut live = self.live_in(&self.tables.clone()).await?;
        Ok(match live.len() {
            0 if !self.live_in(&self.others.clone()).await?.is_empty() => Now::Elsewhere,
            0 => Now::Gone,
            1 => Now::Live(live.remove(0)),
            _ => Now::Several,
        })
    }

    async fn send(&mut self, payload: &str) -> Result<Answer, Halt> {
        self.replayer.replay(payload).await
    }
}

impl Letter<'_, '_> {
    /// The subject's live operations in `tables`.
    async fn live_in(&mut self, tables: &[usize]) -> Result<Vec<CustomerOp>, Halt> {
        let key = self.subject.key();
        let mut live = Vec::new();
        for &i in tables {
            let ops = self.replayer.rows.mapped(i, &key, 0).await?;
            live.extend(ops.into_iter().filter(|op| self.subject.is_live(op)));
        }
        Ok(live)
    }
}

impl Replayer<'_> {
    /// An object's, a relationship's or a device's letter, as its row is
    /// now (see the module doc).
    pub(super) async fn row_letter(&mut self, letter: &Replayable) -> Result<Outcome, Halt> {
        let Some(subject) = Subject::of(letter) else {
            return self.as_refused(letter, None).await;
        };
        let removing = letter.operation.contains("delete");
        let every = match self.tables_of(&subject) {
            Ok(tables) => tables,
            Err(why) => return Ok(Outcome::Kept(why)),
        };
        let (tables, others) = match removing {
            true => (every, Vec::new()),
            false => self.rows.mapping_one_of(every, &names_of(letter)),
        };
        let removal = match removing {
            true => letter.payload.clone(),
            false => encoded(subject.removal()),
        };
        let mut bound = Letter { replayer: self, subject, tables, others };
        match (removing, bound.now().await?) {
            (false, Now::Gone | Now::Elsewhere) => Ok(Outcome::Skipped(Skip::RowGone)),
            (true, Now::Live(_) | Now::Several | Now::Elsewhere) => {
                Ok(Outcome::Skipped(Skip::RowBack))
            }
            (false, Now::Several) => self.as_refused(letter, Some(SEVERAL)).await,
            (_, state) => converge(&mut bound, state, &removal).await,
        }
    }

    /// The tables `subject`'s row can be in (none for a device: every
    /// `[[devices]]` table is), or why the letter is kept: the config has
    /// none. An add's operation is read from those mapping one of its
    /// attribute names, as a person's identify is (see [`names_of`]); the
    /// others only tell whether the subject still lives.
    fn tables_of(&self, subject: &Subject) -> Result<Vec<usize>, &'static str> {
        let (type_id, relationships, missing) = match subject {
            Subject::Object { object_type_id, .. } => (object_type_id, false, NO_OBJECTS_TABLE),
            Subject::Relationship { object_type_id, .. } => {
                (object_type_id, true, NO_RELATIONSHIPS_TABLE)
            }
            Subject::Device { .. } if self.devices.is_empty() => return Err(NO_DEVICES_TABLE),
            Subject::Device { .. } => return Ok(Vec::new()),
        };
        let tables = self.rows.object_tables(type_id, relationships);
        if tables.is_empty() {
            return Err(missing);
        }
        Ok(tables)
    }
}

/// The attribute names of a letter's operation: an object's (as stored
/// with the letter), a relationship's, kept in its item's
/// `cio_relationships[0].relationship_attributes` (read from the payload,
/// so a letter stored without them is narrowed too).
fn names_of(letter: &Replayable) -> Vec<String> {
    let mut names = letter.attributes.clone();
    let item: Option<Value> = serde_json::from_str(&letter.payload).ok();
    let related = item.as_ref().and_then(|item| {
        item.get("cio_relationships")?.get(0)?.get("relationship_attributes")?.as_object()
    });
    names.extend(related.into_iter().flat_map(|map| map.keys().cloned()));
    names
}

#[cfg(test)]
#[path = "refresh_tests.rs"]
mod tests;
