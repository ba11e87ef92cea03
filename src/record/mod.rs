//! The record of what Customer.io accepted: for every synced customer, a
//! fingerprint of each attribute value ciosync last had accepted, kept in
//! `ciosync.accepted` (see [`store`]). The sink diffs each identify against
//! it just before sending, so an UPDATE under any replica identity sends
//! only the attributes whose value differs from what Customer.io has, and
//! none at all when nothing differs.
//!
//! ```text
//! queue ─take_batch─▶ delivery task: prepare (load the batch's customers, strip equal attributes)
//!                                       │
//!                     /api/v2/batch ◀───┘ ──accepted──▶ write the effects ──▶ finished (ackable)
//! ```
//!
//! Why the diff is exact: the queue never puts two operations of one
//! customer in flight at once, so when an identify is prepared every
//! earlier operation of its customer has completed, accepted (and written
//! here) or dead-lettered (and not written). What the record says is what
//! Customer.io holds, whatever was coalesced, retried or refused before.
//!
//! Two rules keep it so:
//! - **Never ahead of Customer.io.** An effect is written only after
//!   Customer.io accepted the operation. A record claiming a value
//!   Customer.io lacks would keep a later change back to that value from
//!   being sent.
//! - **Written before the acknowledgement.** A batch counts as completed
//!   only once its effects are stored, so the slot is never acknowledged
//!   past a change whose acceptance the record lacks. (A record behind
//!   Customer.io on an acknowledged change would lose an update too: the
//!   attribute set from A to B and back to A, the record still saying A
//!   after a restart.) Stored and not acknowledged (a crash in between)
//!   only re-sends: the replayed changes are diffed against the newer
//!   record, in order.
//!
//! A customer the record lacks (a first identify, a wiped or partial
//! record, a lookup that failed) is sent whole, as without a record, and
//! counted; the record fills itself from what is accepted. A delete or a
//! suppression forgets the customer; a merge forgets the secondary and
//! keeps the primary with no fingerprint (Customer.io's merge combines two
//! people's attributes in its own way), so the next identify of either is
//! sent whole, and the primary is still known to be held (for a removal
//! that only matters if it is: `Sink::may_hold`). The operator's commands that send on
//! their own (`dlq retry`, `deletes approve`, `deletes gone --send`) forget
//! the customers they send before each send, in a statement committed on
//! its own, so that no interruption (a stop, a Ctrl-C, a kill, a failed
//! commit) leaves the record claiming what the send may have changed; and
//! again after it, as the daemon may have recorded one of them meanwhile.
//!
//! A fingerprint is the first 8 bytes of the SHA-256 of the value's JSON
//! as sent: no one can choose a value that passes for another.
//!
//! # Watched columns
//!
//! Where an UPDATE carries no old row (DEFAULT or INDEX identity), a
//! `[[sync.events]]` event cannot see its column's transition in the WAL.
//! The record keeps, per customer and event, the column's last value
//! (`watched`): its fingerprint, and for `when_changed` the value itself
//! (up to [`MAX_KEPT_VALUE_BYTES`]), which the event carries as `from`.
//! An insert records it; each update's event is sent only if the record
//! holds an earlier value and it differs, and records the new one. The
//! same ordering argument holds: when an event is prepared, every earlier
//! operation of its customer has completed and its value is written.
//!
//! Unlike attributes, a watched value is written whether Customer.io
//! accepted the event or refused it (then it is a dead letter, which `dlq
//! retry` sends): it says which value the last change had, not what
//! Customer.io holds, so a refused event is not derived a second time by
//! the next unrelated update. With no earlier value (the first update after
//! an upgrade, after a delete or merge forgot the customer, or with a
//! wiped record) the event is not sent, counted, and the value recorded.

pub mod item;
pub mod store;

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

/// The record's maps hash with foldhash, not SipHash: each change looks its
/// customer up and each attribute's name, several times (BENCHMARKS.md,
/// "The record's instructions"). Seeded at random per process, as the
/// sink's queue ([`crate::sink`]'s `order`); the keys are attribute names
/// of the operator's config and customer ids of their own tables.
pub type Hashed = foldhash::fast::RandomState;

/// Attribute name → fingerprint of the value Customer.io accepted.
pub type Fingerprints = HashMap<String, i64, Hashed>;

/// What the record holds of each customer it knows, by customer id.
pub type KnownBy = HashMap<String, Known, Hashed>;

/// A watched value's JSON longer than this is kept as its fingerprint
/// only: the event it changes carries `from: null`.
pub const MAX_KEPT_VALUE_BYTES: usize = 1000;

/// The last value of a watched column (see the module's doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedValue {
    pub fingerprint: i64,
    /// The value itself, for a `when_changed` event's `from`.
    pub value: Option<Json>,
    /// The change it came from (see [`crate::customer::Watch::at`]).
    pub at: (u64, u32),
}

impl WatchedValue {
    /// What the record keeps of `value`: the value itself only when asked
    /// (`keep`) and not over [`MAX_KEPT_VALUE_BYTES`].
    pub fn of(value: &Json, keep: bool, at: (u64, u32)) -> Self {
        let json = serde_json::to_vec(value).unwrap_or_default();
        let fingerprint = fingerprint_of_json(&json);
        let value = (keep && json.len() <= MAX_KEPT_VALUE_BYTES).then(|| value.clone());
        Self { fingerprint, value, at }
    }

    /// As stored in `ciosync.accepted.watched`.
    pub fn to_json(&self) -> Json {
        let mut object = Map::new();
        object.insert("fp".to_owned(), Json::from(self.fingerprint));
        object.insert("at".to_owned(), Json::from(vec![self.at.0, u64::from(self.at.1)]));
        if let Some(value) = &self.value {
            object.insert("value".to_owned(), value.clone());
        }
        Json::Object(object)
    }

    /// Read back; `None` for anything else (as if nothing were recorded).
    pub fn from_json(stored: &Json) -> Option<Self> {
        let fingerprint = stored.get("fp")?.as_i64()?;
        let at = stored.get("at").and_then(|at| {
            let lsn = at.get(0)?.as_u64()?;
            Some((lsn, u32::try_from(at.get(1)?.as_u64()?).ok()?))
        });
        let value = stored.get("value").cloned();
        Some(Self { fingerprint, value, at: at.unwrap_or_default() })
    }
}

/// What the record holds of one customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    pub attributes: Fingerprints,
    /// Watched column values, by event (`name/column`).
    pub watched: HashMap<String, WatchedValue>,
    /// The row's version as read (its `xmin`), see [`Whole`].
    pub version: Option<u32>,
}

/// The fingerprint of one attribute value, as stored.
pub fn fingerprint(value: &Json) -> i64 {
    // Written straight into the hash: no copy of the JSON per attribute.
    let mut hasher = Sha256::new();
    let _ = serde_json::to_writer(&mut hasher, value);
    first_bytes(hasher)
}

/// The fingerprint of a value given as its JSON, as sent.
pub fn fingerprint_of_json(json: &[u8]) -> i64 {
    let mut hasher = Sha256::new();
    hasher.update(json);
    first_bytes(hasher)
}

fn first_bytes(hasher: Sha256) -> i64 {
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// What an operation, once accepted, changes in the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Effect {
    /// Nothing (an event).
    #[default]
    None,
    /// These attributes now hold these values; `whole`, when the customer
    /// was known, is every attribute's.
    Set { customer: String, attributes: Assigned, whole: Option<Box<Whole>> },
    /// Nothing is known of these customers any more (a delete, a
    /// suppression).
    Forget(Vec<String>),
    /// A merge: `secondary` is gone; `primary` is held by Customer.io with
    /// the attributes of both combined in its own way, which the record
    /// does not know (so it keeps the customer, with no fingerprint). The
    /// row that changed its id is the secondary's: its watched values go
    /// to the primary.
    Merge { primary: String, secondary: String },
    /// A watched column of this customer now holds this value (boxed: an
    /// effect waits with each operation in flight, and this is the largest).
    Watch { customer: String, key: String, value: Box<WatchedValue> },
}

/// What diffing one identify's attributes against the record came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diff {
    /// The record knows nothing of the customer: send every attribute.
    Unknown,
    /// Customer.io holds every attribute's value already: send nothing.
    Unchanged,
    /// These attributes hold their value already and were taken out; the
    /// rest differ.
    Stripped(usize),
}

/// Takes out of `attributes` (an identify's) those whose value Customer.io
/// already holds by the record's `known` (`None`: nothing known of the
/// customer), and returns the fingerprints of what is left, which
/// accepting the identify sets. When every attribute is held, nothing is
/// taken out: the identify is not sent at all ([`Diff::Unchanged`]). A
/// known customer's identify with no attributes (it only made sure the
/// person exists) is unchanged too. (The sink diffs the item it encoded
/// instead, the same way: [`item::Identify`].)
pub fn diff(
    attributes: &mut Map<String, Json>,
    known: Option<&Fingerprints>,
) -> (Diff, Fingerprints) {
    let mut sent: Fingerprints =
        attributes.iter().map(|(name, value)| (name.clone(), fingerprint(value))).collect();
    let held: Vec<String> = sent
        .iter()
        .filter(|(name, fp)| holds(known, name, **fp))
        .map(|(name, _)| name.clone())
        .collect();
    let diff = outcome(known, sent.len(), held.len());
    match diff {
        Diff::Unknown => {}
        Diff::Unchanged => sent.clear(),
        Diff::Stripped(_) => {
            for name in &held {
                attributes.remove(name);
                sent.remove(name);
            }
        }
    }
    (diff, sent)
}

/// Whether Customer.io holds `name` at the value of fingerprint `fp` by the
/// record's `known`.
pub fn holds(known: Option<&Fingerprints>, name: &str, fp: i64) -> bool {
    known.is_some_and(|known| known.get(name) == Some(&fp))
}

/// What an identify of `sent` attributes, `held` of them held by the
/// record's `known` ([`holds`]), comes to (see [`diff`]).
pub fn outcome(known: Option<&Fingerprints>, sent: usize, held: usize) -> Diff {
    match known {
        None => Diff::Unknown,
        Some(_) if held == sent => Diff::Unchanged,
        Some(_) => Diff::Stripped(held),
    }
}

/// The fingerprints an accepted identify sets, as the JSON object the
/// record stores them in (`{"name":fingerprint,…}`): built once per
/// identify, in one allocation, and written as it is. Held from the
/// identify's preparation until its batch is written to the record, for
/// every batch in flight, so it is kept small (a map of names would take
/// eight allocations for six attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned(Box<str>);

impl Assigned {
    /// The object of these names and fingerprints.
    pub fn of<'n, I>(fingerprints: I) -> Self
    where
        I: IntoIterator<Item = (&'n str, i64)>,
        I::IntoIter: Clone,
    {
        let fingerprints = fingerprints.into_iter();
        // A name's quotes, colon and comma, and at most 20 digits.
        let capacity = 2 + fingerprints.clone().map(|(name, _)| name.len() + 24).sum::<usize>();
        let mut json = Vec::with_capacity(capacity);
        json.push(b'{');
        for (name, fp) in fingerprints {
            if json.len() > 1 {
                json.push(b',');
            }
            // Writing a str or an integer to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut json, name);
            json.push(b':');
            let _ = serde_json::to_writer(&mut json, &fp);
        }
        json.push(b'}');
        Self(String::from_utf8(json).unwrap_or_else(|_| "{}".to_owned()).into_boxed_str())
    }

    /// The object, as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Read back into a map.
    pub fn fingerprints(&self) -> Fingerprints {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl From<&Fingerprints> for Assigned {
    fn from(fingerprints: &Fingerprints) -> Self {
        Self::of(fingerprints.iter().map(|(name, fp)| (name.as_str(), *fp)))
    }
}

/// Every fingerprint a known customer's row holds once an identify is
/// accepted: what the record held, as read at `version`, with the
/// identify's. The store writes it in place of what the row holds, only
/// while the row is still that version; one changed meanwhile (a command
/// forgot or blanked the customer, a webhook took attributes out) gets the
/// identify's merged in instead, as before: a stale view is never written
/// back. Replacing spares Postgres merging two JSON objects per customer,
/// up to a quarter of the write (BENCHMARKS.md, "The record's lookups").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whole {
    pub attributes: Assigned,
    pub version: u32,
}

impl Whole {
    /// `known`'s fingerprints with `sent`'s over them; `None` when the
    /// record did not know the customer, or not its row's version.
    pub fn of<'n>(
        known: Option<&'n Known>,
        sent: impl IntoIterator<Item = (&'n str, i64)>,
    ) -> Option<Box<Self>> {
        let known = known?;
        let version = known.version?;
        let mut all: HashMap<&str, i64, Hashed> =
            known.attributes.iter().map(|(name, fp)| (name.as_str(), *fp)).collect();
        all.extend(sent);
        let attributes = Assigned::of(all.iter().map(|(name, fp)| (*name, *fp)));
        Some(Box::new(Self { attributes, version }))
    }
}

/// One customer's attributes in a [`Write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// What accepted identifies set, merged into what the row holds.
    pub attributes: Assigned,
    /// Or all of the row's, when it is still the version read.
    pub whole: Option<Box<Whole>>,
}

/// The effects of one batch's accepted operations, as one write: the
/// customers forgotten, then the attributes set per customer (merged into
/// what the record holds, later wins). A customer forgotten after a set is
/// only forgotten; set after being forgotten, only what was set is kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Write {
    pub set: HashMap<String, Set>,
    pub watch: HashMap<String, HashMap<String, WatchedValue>>,
    pub forget: Vec<String>,
    /// Merges, `(primary, secondary)`: after the forgets, before the sets.
    pub merges: Vec<(String, String)>,
}

impl Write {
    /// Adds the effects in the order they were accepted.
    pub fn of(effects: impl IntoIterator<Item = Effect>) -> Self {
        let effects = effects.into_iter();
        let mut write = Self::default();
        write.set.reserve(effects.size_hint().0);
        for effect in effects {
            match effect {
                Effect::None => {}
                Effect::Set { customer, attributes, whole } => match write.set.entry(customer) {
                    Entry::Vacant(entry) => {
                        // Forgotten or merged by this write: the row read is gone.
                        let gone = write.forget.contains(entry.key())
                            || write.merges.iter().any(|(p, s)| [p, s].contains(&entry.key()));
                        let whole = whole.filter(|_| !gone);
                        entry.insert(Set { attributes, whole });
                    }
                    Entry::Occupied(mut entry) => {
                        // Set twice in one batch: the later values win,
                        // merged (neither whole has the other's).
                        let mut merged = entry.get().attributes.fingerprints();
                        merged.extend(attributes.fingerprints());
                        entry.insert(Set { attributes: Assigned::from(&merged), whole: None });
                    }
                },
                Effect::Watch { customer, key, value } => {
                    write.watch.entry(customer).or_default().insert(key, *value);
                }
                Effect::Merge { primary, secondary } => {
                    for customer in [&primary, &secondary] {
                        write.set.remove(customer);
                        write.watch.remove(customer);
                        write.forget.retain(|c| c != customer);
                    }
                    write.merges.push((primary, secondary));
                }
                Effect::Forget(customers) => write.forget_all(customers),
            }
        }
        write
    }

    fn forget_all(&mut self, customers: impl IntoIterator<Item = String>) {
        for customer in customers {
            self.set.remove(&customer);
            self.watch.remove(&customer);
            if !self.forget.contains(&customer) {
                self.forget.push(customer);
            }
        }
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.watch.is_empty()
            && self.forget.is_empty()
            && self.merges.is_empty()
    }
}

#[cfg(test)]
mod tests;
