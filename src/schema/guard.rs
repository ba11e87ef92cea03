//! The schema guard, between the source and the mapper: it judges each
//! Relation message of a configured table ([`super::judge`]) and decides
//! what each change of a broken table may do.
//!
//! | `on_schema_change` | a change of a broken table |
//! |--------------------|----------------------------|
//! | `pause` (default)  | not sent: the session delivers what came before it, acknowledges up to the transaction before, and the daemon pauses (`/readyz` fails) until the config is fixed and ciosync restarted, or the table is repaired |
//! | `skip`             | as `pause` when the id or soft-delete column broke ([`super::Break::structural`]); otherwise sent without what broke (a retyped attribute; the `[[sync.events]]` whose columns broke; an `[[events]]` table's broken data keys, or its events when its id, name, timestamp or data column broke; a renamed or dropped column is already missing from the row), counted; the affected attributes are noted in `ciosync.table_shapes` before the change can be acknowledged |
//!
//! When a table's next description is whole again (the config now maps the
//! new name, or the migration was reverted), the attributes left out meanwhile
//! are re-sent for every customer by a backfill the guard queues itself.
//! A pause whose table is repaired in the database (the catalogue matches
//! the config again) is resumed as a `skip` until the stream reaches the
//! repair: the changes made meanwhile have the broken shape in the WAL for
//! good, so only a re-send can make them right.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::change::{RowChange, Table};
use crate::config::{Config, OnSchemaChange};
use crate::customer::{CustomerOp, ObjectAction, ObjectOp, RelationshipAction, RelationshipOp};
use crate::pg::connection::ConnectionSettings;
use crate::pg::PgError;
use crate::telemetry::Counters;

use super::store::{Kept, ShapeStore};
use super::{accept, columns_of, judge, Break, Change, Needs};

/// What a change may do.
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    /// The table is whole.
    Pass,
    /// Send it without these (see [`Strip::apply`]).
    Strip(Strip),
    /// Send nothing from here on: the table broke under `pause`.
    Pause(Vec<Break>),
}

/// What a change of a table broken under `skip` leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strip {
    /// Attributes whose values would have another JSON type.
    pub attributes: Vec<String>,
    /// `[[sync.events]]` whose columns broke.
    pub events: Vec<String>,
    /// Data keys of an `[[events]]` table's events whose columns broke.
    pub data_keys: Vec<String>,
    /// Every event: an `[[events]]` table's customer, name, timestamp or
    /// data column broke, so its events cannot be built as configured.
    pub all_events: bool,
}

impl Strip {
    /// Leaves out of `ops` what broke; returns how many attributes and
    /// events it left out.
    pub fn apply(&self, ops: &mut Vec<CustomerOp>) -> usize {
        let mut left_out = 0;
        ops.retain_mut(|op| match op {
            CustomerOp::Identify { attributes, .. }
            | CustomerOp::Object(ObjectOp {
                action: ObjectAction::Identify { attributes }, ..
            })
            | CustomerOp::Relationship(RelationshipOp {
                action: RelationshipAction::Add { attributes },
                ..
            }) => {
                for attribute in &self.attributes {
                    left_out += usize::from(attributes.remove(attribute).is_some());
                }
                true
            }
            CustomerOp::Event(event) if self.all_events || self.events.contains(&event.name) => {
                left_out += 1;
                false
            }
            CustomerOp::Event(event) => {
                for key in &self.data_keys {
                    left_out += usize::from(event.data.remove(key).is_some());
                }
                true
            }
            CustomerOp::AnonymousEvent(_) if self.all_events => {
                left_out += 1;
                false
            }
            _ => true,
        });
        left_out
    }

    pub(super) fn of(breaks: &[Break], event_table: bool) -> Self {
        let mut strip = Self::default();
        for broken in breaks {
            let key = broken.key.as_str();
            match (&broken.attribute, &broken.change) {
                (Some(attribute), Change::Retyped { .. }) => {
                    strip.attributes.push(attribute.clone())
                }
                (Some(_), _) => {}
                (None, _) if event_table => match key.strip_prefix("data.") {
                    Some(data_key) => strip.data_keys.push(data_key.to_owned()),
                    None => strip.all_events = true,
                },
                (None, _) => strip.events.extend(broken.event.clone()),
            }
        }
        strip
    }
}

/// How a table was last described.
#[derive(Debug, Clone)]
enum Verdict {
    Whole,
    Broken(Vec<Break>),
}

/// The guard of one daemon: lives across sessions (what was said, what was
/// resolved), reconnecting its store when needed.
pub struct SchemaGuard {
    settings: ConnectionSettings,
    slot: String,
    needs: HashMap<String, Needs>,
    event_tables: HashSet<String>,
    store: Option<ShapeStore>,
    kept: HashMap<String, Kept>,
    /// By relation OID, from this session's Relation messages.
    verdicts: HashMap<u32, (String, Verdict)>,
    /// Breaks already logged (as text: names only).
    said: HashSet<String>,
    /// Tables paused and since repaired in the database, with the breaks
    /// that were repaired: those are skipped until the stream reaches the
    /// repair (another break pauses again).
    resolved: HashMap<String, Vec<Break>>,
    /// `table:[attributes]` whose leaving out is noted (or whose re-send is
    /// queued already) for the table's current break.
    noted: HashSet<String>,
    counters: Arc<Counters>,
}

impl SchemaGuard {
    /// A guard for the configured tables; connects on [`Self::start_session`].
    pub fn new(config: &Config, counters: Arc<Counters>) -> Self {
        let mut needs: HashMap<String, Needs> =
            config.sync.iter().map(Needs::of_sync).map(|n| (n.table.clone(), n)).collect();
        let events: Vec<Needs> = config.events.iter().map(Needs::of_events).collect();
        let event_tables = events.iter().map(|n| n.table.clone()).collect();
        needs.extend(events.into_iter().map(|n| (n.table.clone(), n)));
        needs.extend(config.devices.iter().map(Needs::of_devices).map(|n| (n.table.clone(), n)));
        for table in needs.keys() {
            counters.schema.watch(table);
        }
        Self {
            settings: config.postgres.connection(),
            slot: config.postgres.slot.clone(),
            needs,
            event_tables,
            store: None,
            kept: HashMap::new(),
            verdicts: HashMap::new(),
            said: HashSet::new(),
            resolved: HashMap::new(),
            noted: HashSet::new(),
            counters,
        }
    }

    /// A new session describes every table again: forget this one's
    /// descriptions, (re)connect and read what is kept.
    pub async fn start_session(&mut self) -> Result<(), PgError> {
        self.verdicts.clear();
        if self.store.as_ref().is_none_or(ShapeStore::is_closed) {
            self.store = None;
            let store = ShapeStore::open(&self.settings, &self.slot).await?;
            self.kept = store.load().await?;
            self.store = Some(store);
        }
        // Repaired while no change of theirs came (a restart with the
        // config fixed, say): their re-send need not wait for one.
        let waiting: Vec<Needs> = self
            .needs
            .values()
            .filter(|n| self.kept.get(&n.table).is_some_and(|k| !k.skipped.is_empty()))
            .cloned()
            .collect();
        for needs in waiting {
            self.catch_up(&needs, &[]).await?;
        }
        Ok(())
    }

    fn store(&mut self) -> Result<&mut ShapeStore, PgError> {
        self.store.as_mut().ok_or(PgError::SqlSessionEnded)
    }

    /// Judges a Relation message.
    pub async fn on_relation(&mut self, table: &Table) -> Result<(), PgError> {
        let name = table.qualified_name();
        let Some(needs) = self.needs.get(&name).cloned() else { return Ok(()) };
        let now = columns_of(table);
        let kept = self.kept.get(&name).cloned().unwrap_or_default();
        let breaks = judge(&needs, &now, &kept.baseline);
        self.counters.schema.set(&name, breaks.iter().map(|b| b.change.reason()));
        if !breaks.is_empty() {
            for broken in &breaks {
                self.say(broken, needs.policy);
            }
            self.verdicts.insert(table.oid, (name, Verdict::Broken(breaks)));
            return Ok(());
        }
        let baseline = accept(&needs, &now, &kept.baseline);
        if !kept.skipped.is_empty() {
            let mapped: Vec<String> =
                needs.uses.iter().filter_map(|u| u.attribute.clone()).collect();
            let resend: Vec<String> =
                kept.skipped.iter().filter(|a| mapped.contains(a)).cloned().collect();
            let id = self.store()?.repaired(&name, &baseline, &resend).await?;
            tracing::warn!(
                table = %name,
                attributes = ?resend,
                backfill = ?id,
                "schema repaired: the attributes left out since it broke are re-sent by a backfill"
            );
        } else if baseline != kept.baseline {
            self.store()?.save(&name, &baseline).await?;
        }
        let prefix = format!("{name}:");
        self.noted.retain(|n| !n.starts_with(&prefix));
        if self.resolved.remove(&name).is_some() | self.said.iter().any(|s| s.starts_with(&prefix))
        {
            tracing::info!(table = %name, "the table matches the config again");
            self.said.retain(|s| !s.starts_with(&prefix));
        }
        self.kept.insert(name.clone(), Kept { baseline, skipped: Vec::new() });
        self.verdicts.insert(table.oid, (name, Verdict::Whole));
        Ok(())
    }

    /// One ERROR line per break (names and types, never a value).
    fn say(&mut self, broken: &Break, policy: OnSchemaChange) {
        if self.said.insert(broken.to_string()) {
            tracing::error!(
                table = %broken.table,
                column = %broken.column,
                config = %broken.key,
                reason = broken.change.reason(),
                policy = ?policy,
                fix = %broken.fix(),
                "schema change breaks the sync: {broken}"
            );
        }
    }

    /// What `change` may do; under `skip`, notes what is left out first.
    pub async fn admit(&mut self, change: &RowChange) -> Result<Admit, PgError> {
        let Some((name, Verdict::Broken(breaks))) = self.verdicts.get(&change.table.oid) else {
            return Ok(Admit::Pass);
        };
        let (name, breaks) = (name.clone(), breaks.clone());
        let Some(needs) = self.needs.get(&name) else { return Ok(Admit::Pass) };
        let resolved = self.resolved.get(&name) == Some(&breaks);
        let pause = needs.policy == OnSchemaChange::Pause || breaks.iter().any(|b| b.structural);
        if pause && !resolved {
            return Ok(Admit::Pause(breaks));
        }
        let attributes = left_out(needs, &breaks);
        let noted = format!("{name}:{attributes:?}");
        if !self.noted.contains(&noted) {
            let baseline = self.kept.get(&name).map(|k| k.baseline.clone()).unwrap_or_default();
            self.store()?.note_skipped(&name, &baseline, &attributes).await?;
            let kept = self.kept.entry(name.clone()).or_default();
            kept.skipped.extend(attributes);
            kept.skipped.sort();
            kept.skipped.dedup();
            self.noted.insert(noted);
        }
        Ok(Admit::Strip(Strip::of(&breaks, self.event_tables.contains(&name))))
    }

    /// While paused: whether `table`, as the database has it now, is whole
    /// again. If so, its broken stretch of the stream is resumed as a skip,
    /// and the attributes it loses are re-sent by a backfill queued now
    /// (its rows are read after that stretch, and sent after it in stream
    /// order: see `backfill`).
    pub async fn resolve_if_repaired(
        &mut self,
        table: &str,
        breaks: &[Break],
    ) -> Result<bool, PgError> {
        let Some(needs) = self.needs.get(table).cloned() else { return Ok(false) };
        if !self.catch_up(&needs, &left_out(&needs, breaks)).await? {
            return Ok(false);
        }
        if self.resolved.insert(table.to_owned(), breaks.to_vec()).is_none() {
            tracing::warn!(
                table,
                "the table was repaired in the database: resuming; what changed while it was \
                 broken is sent without the broken attributes, then re-sent by a backfill"
            );
        }
        Ok(true)
    }

    /// When `needs`' table, as the database has it now, is whole: queues a
    /// backfill of `attributes` and of those left out before, and clears
    /// them (this session notes nothing more for it). Whether it was whole.
    async fn catch_up(&mut self, needs: &Needs, attributes: &[String]) -> Result<bool, PgError> {
        let table = &needs.table;
        let kept = self.kept.get(table).cloned().unwrap_or_default();
        let Some(store) = self.store.as_mut() else { return Ok(false) };
        let Some(now) = store.columns_now(table).await? else { return Ok(false) };
        if !judge(needs, &now, &kept.baseline).is_empty() {
            return Ok(false);
        }
        let mapped: Vec<&String> = needs.uses.iter().filter_map(|u| u.attribute.as_ref()).collect();
        let mut resend: Vec<String> =
            kept.skipped.iter().chain(attributes).filter(|a| mapped.contains(a)).cloned().collect();
        resend.sort();
        resend.dedup();
        let id = store.repaired(table, &kept.baseline, &resend).await?;
        if let Some(id) = id {
            tracing::warn!(
                table = %table,
                attributes = ?resend,
                backfill = id,
                "schema repaired: the attributes left out while it was broken are re-sent by a backfill"
            );
        }
        self.kept.insert(table.clone(), Kept { baseline: kept.baseline, skipped: Vec::new() });
        self.noted.insert(format!("{table}:{attributes:?}"));
        Ok(true)
    }
}

/// The attributes a break leaves out: the broken ones, or every mapped
/// attribute when the break loses whole changes (the id column, say).
fn left_out(needs: &Needs, breaks: &[Break]) -> Vec<String> {
    let all: Vec<String> = needs.uses.iter().filter_map(|u| u.attribute.clone()).collect();
    if breaks.iter().any(|b| b.attribute.is_none() && !b.key.starts_with("events.")) {
        return all;
    }
    breaks.iter().filter_map(|b| b.attribute.clone()).collect()
}
