//! The pipeline's side of the circuit breaker: which removals are held, the
//! customers that may have held deletes (so the common path costs one
//! check), the open transaction's holds, and when to look at the table
//! again.
//!
//! Ordering, with the acknowledgement rule of [`crate::pipeline`]:
//! - a held removal is not pushed to the sink; it is kept with its
//!   transaction, a chunk at a time: a full chunk is written to
//!   `ciosync.held_deletes` as `pending` (under the commit LSN `0/0`),
//!   which no command approves, lists or discards. [`Breaker::commit`]
//!   stores the rest and makes them all `held` under the commit's LSN in
//!   one statement, before the pipeline records that commit in the sink,
//!   so no acknowledgement can pass a removal that is neither delivered nor
//!   stored, and no operator can act on a removal whose transaction may
//!   still be cut short;
//! - rows of a transaction not finished (the daemon stopped, or the stream
//!   broke) stay `pending` until [`Breaker::load`] or the next write
//!   deletes them: the transaction was not acknowledged, so it comes again
//!   whole and is held afresh;
//! - a transaction committed before the newest commit stored (the horizon)
//!   is a replay of one stored but not acknowledged: all its removals are
//!   held, never sent, and its commit keeps only the customers the table
//!   has no row of for that commit, so none is held twice and a decided one
//!   stays decided;
//! - any other operation of a customer with held rows supersedes those of
//!   earlier commits (the open transaction's `pending` one too; a replayed
//!   transaction's operation never cancels a hold committed after it), and
//!   that is stored *before*
//!   the operation is pushed: an `approve` running at the same moment holds
//!   those rows locked while it sends, so the later operation reaches
//!   Customer.io after the approved removal or the removal is never sent;
//! - while anything may be held, an identify giving its customer an email
//!   notes the customer in `ciosync.held_refreshes`, before it is pushed:
//!   Customer.io refuses an email a held person still has, and `deletes
//!   approve` identifies the noted customers again once nothing is held.
//!
//! Memory stays within a share of `pipeline.max_pending_bytes`
//! ([`BREAKER_SHARE`]) whatever is held: the open transaction's unwritten
//! chunk ([`OpenHolds`]) and the filter of customers that may have held
//! deletes ([`HeldFilter`]); everything else is in the table.
//!
//! Storing retries while Postgres is unreachable (the stream cannot make
//! progress then anyway); a definite error stops the daemon, unacknowledged.

use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::Lsn;
use tokio::time::Instant;

use super::filter::HeldFilter;
use super::open::OpenHolds;
use super::store::{Action, HeldStore, Hold};
use super::{Admit, Guard, Limits};
use crate::config::Config;
use crate::customer::CustomerOp;
use crate::error::error_chain;
use crate::mapping::EMAIL;
use crate::pg::connection::ConnectionSettings;
use crate::pg::PgError;
use crate::sink::retry::Backoff;
use crate::telemetry::Counters;

/// Runs `$call` (which awaits `self.store`'s `$store`) until it succeeds,
/// waiting the next backoff step after each transient error; a definite
/// one is returned from the enclosing function.
macro_rules! retrying {
    ($self:ident, $what:expr, |$store:ident| $call:expr) => {{
        let mut backoff = Backoff::new($self.max_backoff);
        loop {
            let $store = &mut $self.store;
            match $call {
                Ok(value) => break value,
                Err(error) => wait_or_fail(&mut backoff, error, $what).await?,
            }
        }
    }};
}

/// How often a tripped breaker counts the held rows, to notice `ciosync
/// deletes approve` or `discard`.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often the synced tables' row estimate is read for `max_share`.
pub const ESTIMATE_INTERVAL: Duration = Duration::from_secs(3600);
/// The breaker's share of memory, as a fraction of
/// `pipeline.max_pending_bytes` (which bounds the sink's operations):
/// 1/8, half of it for the filter of customers with held deletes, a
/// quarter each for the open transaction's chunk and the filter's exact
/// set. A hold of any size stays within it.
pub const BREAKER_SHARE: usize = 8;
/// Held customers read from the table per fetch at start.
const LOAD_PAGE: i32 = 10_000;

/// The guard, the held customers and the open transaction's holds.
pub struct Breaker {
    guard: Guard,
    store: HeldStore,
    /// Customers that may have a delete in state `held`, or `pending` in
    /// the open transaction (a superset: approved and superseded ones stay
    /// until the breaker resets).
    held: HeldFilter,
    /// This transaction's holds not written yet.
    open: OpenHolds,
    /// Rows of a transaction not finished may be in the table (the stream
    /// broke while one was read): deleted before the next write.
    leftovers: bool,
    /// The highest commit LSN stored in `ciosync.held_deletes`: a
    /// transaction committed before it is a replay of one already decided
    /// on (held, sent or discarded), so its removals go to the store, which
    /// keeps only what it has not seen, never straight to Customer.io.
    horizon: u64,
    /// The synced tables, `schema.name`, for the row estimate.
    tables: Vec<String>,
    counters: Arc<Counters>,
    max_backoff: Duration,
    next_poll: Option<Instant>,
    next_estimate: Option<Instant>,
}

impl Breaker {
    /// A breaker for `config`'s slot; [`Breaker::load`] reads what is held.
    pub fn new(settings: ConnectionSettings, config: &Config, counters: Arc<Counters>) -> Self {
        let guard = Guard::new(Limits::of(&config.delete_guard));
        let next_estimate = guard.uses_share().then(Instant::now);
        Counters::set(&counters.delete_guard_limit, guard.limit().unwrap_or(0), None);
        let share = config.pipeline.max_pending_bytes / BREAKER_SHARE;
        Self {
            guard,
            store: HeldStore::new(settings, config.postgres.slot.clone()),
            held: HeldFilter::new(share / 2, share / 4),
            open: OpenHolds::new(share / 4),
            leftovers: true,
            horizon: 0,
            tables: config
                .sync
                .iter()
                .filter(|s| s.target == crate::config::Target::Person)
                .map(|s| {
                    // Quoted, as to_regclass reads it: `Users` is not `users`.
                    let (schema, name) = s.schema_and_name();
                    crate::pg::quote::quoted_table(schema, name)
                })
                .collect(),
            counters,
            max_backoff: Duration::from_secs(config.customerio.retry_max_backoff_secs),
            next_poll: None,
            next_estimate,
        }
    }

    /// At start: deletes what an unfinished transaction left, reads how
    /// much is held and which customers have held deletes; held rows from
    /// before keep the breaker tripped. Retries while Postgres is
    /// unreachable.
    pub async fn load(&mut self) -> Result<(), PgError> {
        self.clear_leftovers().await?;
        let what = "cannot read held removals";
        let (count, horizon) = retrying!(self, what, |s| s.summary().await);
        self.horizon = horizon;
        Counters::set(&self.counters.deletes_held, count, None);
        if count > 0 {
            // A retry after an error reads them all again: inserting twice is harmless.
            retrying!(self, what, |s| s
                .each_held_delete(LOAD_PAGE, |id| self.held.insert(id))
                .await);
            self.guard.trip();
            self.tripped(count);
        }
        Ok(())
    }

    /// Whether [`Breaker::route`] would pass `op` as it is without waiting
    /// for anything: no removal it counts, nothing tripped or held. Lets
    /// the stream skip building `route`'s future, nearly always (issue 24).
    pub fn passes(&self, op: &CustomerOp, guarded: bool) -> bool {
        !(self.is_holding() || guarded && Action::of(op).is_some())
    }

    /// Decides one operation: `Some` to push it to the sink, `None` when it
    /// is held. `guarded` says whether a removal counts (a lone removal of
    /// a row, not the delete of an id change). Any operation that is sent
    /// supersedes the held removals of the customers it touches. `absent`:
    /// the NULL attributes an insert's or a restore's identify leaves out
    /// ([`crate::mapping::Mapped::absent`]), added as `null` while anything
    /// may be held: a held delete this identify cancels left the person in
    /// Customer.io with the values they had.
    pub async fn route(
        &mut self,
        mut op: CustomerOp,
        guarded: bool,
        commit_lsn: u64,
        absent: &[String],
    ) -> Result<Option<CustomerOp>, PgError> {
        if let (true, Some(action)) = (guarded, Action::of(&op)) {
            let replayed = commit_lsn < self.horizon;
            let was_tripped = self.guard.is_tripped();
            if replayed || self.guard.admit(std::time::Instant::now()) == Admit::Hold {
                if !was_tripped && !replayed {
                    self.tripped(0);
                }
                let customer_id = op.customer_id().unwrap_or_default().to_owned();
                // In the filter from now on: a later operation of this
                // transaction must find it once the chunk is written.
                if action == Action::Delete {
                    self.held.insert(&customer_id);
                }
                if self.open.hold(Hold { customer_id, action, superseded: false }) {
                    self.spill().await?;
                }
                return Ok(None);
            }
        }
        if self.is_holding() {
            if let CustomerOp::Identify { attributes, .. } = &mut op {
                for name in absent {
                    attributes.entry(name.clone()).or_insert(serde_json::Value::Null);
                }
            }
        }
        if self.is_holding() && carries_email(&op) {
            if let Some(id) = op.customer_id() {
                let what = "cannot note a customer to identify again after the held removals";
                retrying!(self, what, |s| s.note_refresh(id).await);
            }
        }
        // Nearly always nothing is held: every operation of the stream
        // passes here, so that case costs two checks.
        if !self.open.holds_any() && self.held.is_empty() {
            return Ok(Some(op));
        }
        // A replayed transaction's operation may come before holds stored
        // since (see `HeldStore::supersede`): it supersedes only the
        // earlier ones, so the customer may still have some.
        let replayed = commit_lsn < self.horizon;
        let before = Lsn::from_u64(commit_lsn);
        for id in touched(&op) {
            // A later call cancels a held delete (the person is back), never
            // a held suppress: suppressing blocks whatever comes after it.
            self.open.supersede(id);
            if self.held.may_hold(id) {
                let what = "cannot mark held removals superseded";
                let superseded = retrying!(self, what, |s| s.supersede(id, before).await);
                if !replayed {
                    self.held.forget(id);
                }
                self.counters.deletes_held.fetch_sub(
                    superseded.min(Counters::get(&self.counters.deletes_held)),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
        Ok(Some(op))
    }

    /// At a transaction's commit: stores its holds (before the pipeline
    /// records the commit in the sink): the chunk directly when nothing
    /// was written before, else the chunk as `pending` and then every
    /// `pending` row as `held`. Retries while Postgres is unreachable; the
    /// holds stay with the transaction if this is dropped midway.
    pub async fn commit(&mut self, end_lsn: Lsn) -> Result<(), PgError> {
        if !self.open.holds_any() {
            return Ok(());
        }
        self.clear_leftovers().await?;
        let what = "cannot store held removals";
        let stored = if self.open.spilled() {
            self.spill().await?;
            retrying!(self, what, |s| s.commit_open(end_lsn).await)
        } else {
            retrying!(self, what, |s| s.record(end_lsn, self.open.chunk()).await)
        };
        self.open.reset();
        self.horizon = self.horizon.max(end_lsn.as_u64());
        Counters::add(&self.counters.deletes_held, stored);
        Counters::add(&self.counters.deletes_held_total, stored);
        tracing::debug!(held = stored, commit_lsn = %end_lsn, "removals held");
        Ok(())
    }

    /// Forgets the current transaction's holds: the stream broke, and the
    /// transaction will come again. What it wrote is deleted before the
    /// next write.
    pub fn abandon_transaction(&mut self) {
        if self.open.holds_any() {
            self.leftovers = true;
        }
        self.open.reset();
    }

    /// Writes the open transaction's chunk as `pending` and empties it.
    async fn spill(&mut self) -> Result<(), PgError> {
        self.clear_leftovers().await?;
        if self.open.chunk().is_empty() {
            return Ok(());
        }
        let what = "cannot store held removals";
        retrying!(self, what, |s| s.spill(self.open.chunk()).await);
        tracing::debug!(
            holds = self.open.chunk().len(),
            bytes = self.open.bytes(),
            "held removals of the open transaction written"
        );
        self.open.chunk_written();
        Ok(())
    }

    /// Deletes the rows an unfinished transaction left, once.
    async fn clear_leftovers(&mut self) -> Result<(), PgError> {
        if self.leftovers {
            let what = "cannot clear the held removals of an unfinished transaction";
            let cleared = retrying!(self, what, |s| s.clear_open().await);
            if cleared > 0 {
                tracing::info!(
                    rows = cleared,
                    "held removals of a transaction read only in part deleted: it comes again"
                );
            }
            self.leftovers = false;
        }
        Ok(())
    }

    /// When [`Breaker::check`] should run next, if ever.
    pub fn next_check(&self) -> Option<Instant> {
        match (self.next_poll, self.next_estimate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Refreshes the row estimate when due and, while tripped, counts the
    /// held rows: none left (approved, discarded or superseded) resets the
    /// breaker. Only between transactions' holds, so nothing of the open
    /// transaction is forgotten by a reset. A transient failure is logged
    /// and tried again.
    pub async fn check(&mut self) -> Result<(), PgError> {
        let now = Instant::now();
        if self.next_estimate.is_some_and(|at| at <= now) {
            match self.store.estimated_rows(&self.tables).await {
                Ok(rows) => {
                    self.guard.set_rows(rows);
                    let limit = self.guard.limit().unwrap_or(0);
                    Counters::set(&self.counters.delete_guard_limit, limit, None);
                    self.next_estimate = Some(now + ESTIMATE_INTERVAL);
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(error = %error_chain(&error), "cannot estimate the synced rows for delete_guard.max_share; retrying");
                    self.next_estimate = Some(now + POLL_INTERVAL * 5);
                }
                Err(error) => return Err(error),
            }
        }
        if self.next_poll.is_some_and(|at| at <= now) {
            self.next_poll = Some(now + POLL_INTERVAL);
            if self.open.holds_any() {
                return Ok(());
            }
            match self.store.count_held().await {
                Ok(0) => self.reset(),
                Ok(count) => Counters::set(&self.counters.deletes_held, count, None),
                Err(error) if error.is_transient() => {
                    tracing::warn!(error = %error_chain(&error), "cannot count held removals; retrying");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Whether removals are being held.
    pub fn is_tripped(&self) -> bool {
        self.guard.is_tripped()
    }

    /// Whether any removal may be held: tripped, holds of the open
    /// transaction, or customers in the filter (a replay holds without
    /// tripping).
    fn is_holding(&self) -> bool {
        self.guard.is_tripped() || self.open.holds_any() || !self.held.is_empty()
    }

    /// Logs the trip (counts only, never ids) and starts polling.
    fn tripped(&mut self, held_before: u64) {
        Counters::set(&self.counters.delete_guard_tripped, 1, None);
        self.next_poll = Some(Instant::now() + POLL_INTERVAL);
        tracing::error!(
            removed_in_window = self.guard.sent_in_window(),
            limit = self.guard.limit(),
            window_secs = self.guard.window().as_secs(),
            held_before,
            "mass-delete circuit breaker tripped: further deletes and suppressions are held in \
             ciosync.held_deletes (everything else keeps flowing); check why so many customers \
             are being removed, then run `ciosync deletes list` and `ciosync deletes approve \
             --all` or `ciosync deletes discard --all`"
        );
    }

    fn reset(&mut self) {
        self.guard.reset();
        self.held.clear();
        self.next_poll = None;
        Counters::set(&self.counters.delete_guard_tripped, 0, None);
        Counters::set(&self.counters.deletes_held, 0, None);
        tracing::info!("mass-delete circuit breaker reset: no removal is held any more");
    }
}

/// The customers an operation touches (both of a merge); an anonymous
/// event touches no person, nor does an object's operation (its ordering
/// key is no person id), nor a relationship: a membership added or removed
/// does not bring back a person whose removal is held (the membership
/// row of a deleted user goes with it, or stays without them); nor does a
/// device call: it says nothing of whether the person should exist, so it
/// cancels no held removal (the removal, approved, deletes the person with
/// their devices).
fn touched(op: &CustomerOp) -> impl Iterator<Item = &str> {
    let pair = match op {
        CustomerOp::Merge { primary, secondary } => [Some(primary.as_str()), Some(secondary)],
        CustomerOp::AnonymousEvent(_)
        | CustomerOp::Object(_)
        | CustomerOp::Relationship(_)
        | CustomerOp::AddDevice(_)
        | CustomerOp::DeleteDevice { .. } => [None, None],
        other => [other.customer_id(), None],
    };
    pair.into_iter().flatten()
}

/// Whether `op` gives its customer an email. In workspaces that identify
/// people by email too, Customer.io refuses (with an HTTP 200) an identify
/// whose email a held, not yet deleted, person still has: a customer that
/// re-registered with the email of one whose removal waits, or an id
/// changed while the row was soft-deleted and then restored. The customer
/// is noted, and `deletes approve` identifies it again once nothing is
/// held.
fn carries_email(op: &CustomerOp) -> bool {
    matches!(op, CustomerOp::Identify { attributes, .. } if attributes.contains_key(EMAIL))
}

/// Whether the operations of one change are a lone removal (a DELETE or a
/// soft delete), the only removals the guard counts.
pub fn is_lone_removal(ops: &[CustomerOp]) -> bool {
    matches!(ops, [op] if Action::of(op).is_some())
}

/// Waits the next backoff step after a transient error; a definite one is
/// returned.
async fn wait_or_fail(backoff: &mut Backoff, error: PgError, what: &str) -> Result<(), PgError> {
    if !error.is_transient() {
        return Err(error);
    }
    let delay = backoff.next_delay(None);
    tracing::warn!(
        error = %error_chain(&error),
        retry_in_ms = delay.as_millis() as u64,
        "{what}; retrying"
    );
    tokio::time::sleep(delay).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_removal_is_guarded() {
        let delete = CustomerOp::Delete { id: "1".into() };
        assert!(is_lone_removal(std::slice::from_ref(&delete)));
        assert!(is_lone_removal(&[CustomerOp::Suppress { id: "1".into() }]));
        // on_id_change = "delete_old": the rename's delete is never held.
        assert!(!is_lone_removal(&[delete, CustomerOp::Barrier]));
        assert!(!is_lone_removal(&[]));
    }

    #[test]
    fn a_device_call_is_no_removal_and_cancels_none() {
        let delete = CustomerOp::DeleteDevice { customer: "1".into(), token: "t".into() };
        assert!(!is_lone_removal(std::slice::from_ref(&delete)));
        assert_eq!(touched(&delete).count(), 0, "a held removal of 1 stays held");
        let add = CustomerOp::AddDevice(Box::new(crate::customer::Device {
            customer: "1".into(),
            token: "t".into(),
            platform: "ios",
            last_used: None,
            attributes: serde_json::Map::new(),
        }));
        assert_eq!(touched(&add).count(), 0);
        assert_eq!(touched(&CustomerOp::Delete { id: "1".into() }).collect::<Vec<_>>(), ["1"]);
    }

    /// A breaker for a config with `extra` appended; it connects to
    /// nothing until it stores or reads held removals.
    fn breaker(extra: &str) -> (Breaker, Arc<Counters>) {
        let text = format!(
            "[postgres]\nurl = \"postgres://ciosync@127.0.0.1/app\"\n\
             [customerio]\nsite_id = \"s\"\napi_key = \"k\"\n\
             [[sync]]\ntable = \"public.users\"\nid_column = \"id\"\n\
             [sync.attributes]\nemail = \"email\"\n{extra}"
        );
        let config = Config::from_toml(&text, Vec::new()).expect("valid config");
        let settings = config.postgres.connection();
        let counters = Arc::new(Counters::default());
        (Breaker::new(settings, &config, counters.clone()), counters)
    }

    #[test]
    fn a_trip_starts_polling_for_approvals_and_a_reset_stops_it() {
        let (mut b, counters) = breaker("");
        assert!(!b.is_tripped());
        assert_eq!(b.next_check(), None, "nothing to poll, no share to estimate");

        let before = Instant::now();
        b.guard.trip();
        b.tripped(0);
        assert!(b.is_tripped());
        let poll = b.next_check().expect("a tripped breaker polls");
        assert!(poll > before && poll <= Instant::now() + POLL_INTERVAL, "{poll:?}");
        assert_eq!(Counters::get(&counters.delete_guard_tripped), 1);

        b.held.insert("7");
        Counters::set(&counters.deletes_held, 3, None);
        b.reset();
        assert!(!b.is_tripped() && b.held.is_empty());
        assert_eq!(b.next_check(), None);
        assert_eq!(Counters::get(&counters.delete_guard_tripped), 0);
        assert_eq!(Counters::get(&counters.deletes_held), 0);
    }

    #[test]
    fn with_a_share_the_row_estimate_is_due_first() {
        let (mut b, _) = breaker("[delete_guard]\nmax_share = 0.1\n");
        let estimate = b.next_check().expect("the estimate is due at start");
        assert!(estimate <= Instant::now());
        b.guard.trip();
        b.tripped(0);
        assert_eq!(b.next_check(), Some(estimate), "the earlier of the estimate and the poll");
    }

    #[test]
    fn an_abandoned_transaction_leaves_rows_to_clear_only_if_it_held_any() {
        let (mut b, _) = breaker("");
        b.leftovers = false;
        b.abandon_transaction();
        assert!(!b.leftovers, "it held nothing");
        let hold = Hold { customer_id: "7".into(), action: Action::Delete, superseded: false };
        b.open.hold(hold);
        b.abandon_transaction();
        assert!(b.leftovers && !b.open.holds_any());
    }

    #[test]
    fn a_merge_touches_both_customers() {
        let merge = CustomerOp::Merge { primary: "a".into(), secondary: "b".into() };
        assert_eq!(touched(&merge).collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(touched(&CustomerOp::Barrier).next().is_none());
    }
}
