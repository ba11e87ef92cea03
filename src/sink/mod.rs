//! The Customer.io sink, the delivery engine: operations in, in commit
//! order; accepted (or dead-lettered) operations and acknowledgeable commits
//! out.
//!
//! ```text
//! push ─▶ Queue (coalesce, wait ≤ linger) ─take_batch─▶ up to the concurrency limit of delivery tasks ─▶ /api/v2/batch
//!            ▲                                                   │
//!            └──────────── finish (customers free again) ◀───────┘  ackable() → newest complete commit
//! ```
//!
//! Contract: an operation is *completed* when Customer.io accepted it or
//! refused it for good and it is stored in `ciosync.dead_letters`.
//! [`Sink::ackable`] names the newest commit whose operations, and all
//! before them, completed; [`Sink::flush`] returns once everything pushed
//! completed. Transient failures (connect errors, timeouts, 408, 429, 5xx,
//! transient item errors) are retried with capped exponential backoff and
//! jitter for as long as it takes, so nothing is acknowledged meanwhile;
//! so is storing a dead letter, whatever stops it (a missing privilege
//! too: the sink never exits over a refused operation, it says so on
//! `/readyz` and in `ciosync_dead_letter_store_failing`). One customer's operations reach Customer.io in the order pushed (see
//! [`queue`]), and an email's release reaches it before another customer's
//! claim of that email (`order.rs`). Repeating an operation is harmless, which is what makes
//! at-least-once delivery safe.
//!
//! Memory: operations pushed and not completed, and the commits not yet
//! acknowledged behind them, are counted against `pipeline.max_pending_bytes`;
//! [`Sink::is_full`] tells the caller to stop pushing (reading the stream,
//! feeding a backfill chunk) until requests complete. [`Sink::push`] itself
//! never refuses, so what is held exceeds the budget by at most what the
//! caller pushes after its last look.

pub mod batch;
pub mod client;
pub mod concurrency;
mod deliver;
mod merge;
mod object_items;
mod order;
pub mod queue;
mod recorded;
pub mod retry;
pub mod send;
mod size;

use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::Lsn;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{CustomerioConfig, PipelineConfig};
use crate::customer::{CustomerOp, Released};
use crate::dead_letter::DeadLetterStore;
use crate::record::store::RecordStore;
use crate::telemetry::Counters;
use crate::track_api::MAX_BATCH_BYTES;
use client::TrackClient;
use deliver::Delivery;
use queue::{Pushed, Queue, Ticket};

/// What to fix when Customer.io refuses in a way no retry fixes, in the
/// words both the daemon ([`SinkError`]) and the operator's commands
/// ([`send::Stop`]) use.
pub mod advice {
    /// HTTP 401.
    pub const UNAUTHORIZED: &str = "Customer.io refused the credentials (HTTP 401): check \
        customerio.site_id and customerio.api_key (or CIOSYNC_CUSTOMERIO_SITE_ID / \
        CIOSYNC_CUSTOMERIO_API_KEY)";

    /// A 3xx: the request went to the wrong place.
    pub fn redirected(status: u16) -> String {
        format!(
            "Customer.io answered HTTP {status} (a redirect): the workspace is probably in the \
             other region; set customerio.region (ciosync check shows the workspace's region) \
             or customerio.track_url"
        )
    }

    /// The request refused as a whole, for no one operation in it.
    pub fn refused(status: u16, message: &str) -> String {
        format!(
            "Customer.io refused the request (HTTP {status}: {message}): check \
             customerio.track_url and the workspace"
        )
    }
}

/// Why the sink cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Customer.io answered 401: definite, retrying cannot help.
    #[error("{}", advice::UNAUTHORIZED)]
    Unauthorized,
    /// Customer.io redirected the request: definite, the host is wrong.
    #[error("{}", advice::redirected(*.status))]
    Redirected { status: u16 },
    /// Customer.io (or something in front of it) refused the request for a
    /// reason no single operation caused.
    #[error("{}; nothing was skipped or acknowledged", advice::refused(*.status, .message))]
    Refused { status: u16, message: String },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// Operations wait with nothing in flight to wait for: a bug, reported
    /// rather than acknowledged.
    #[error("internal error: operations wait to be sent but none is in flight; restart ciosync")]
    Stuck,
    /// A one-off request (the region check) failed.
    #[error("request to Customer.io failed: {0}")]
    Request(String),
}

/// The daemon's policy never gives up or stops at a 401, so only a
/// redirect or a refusal of every request ends its send loop; the other
/// stops map for completeness.
impl From<send::Stop> for SinkError {
    fn from(stop: send::Stop) -> Self {
        match stop {
            send::Stop::Unauthorized => Self::Unauthorized,
            send::Stop::Redirected { status } => Self::Redirected { status },
            send::Stop::Refused { status, message } => Self::Refused { status, message },
            send::Stop::Unavailable { reason, .. } => Self::Request(reason),
        }
    }
}

impl SinkError {
    /// Whether retrying later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Request(_))
    }
}

/// The memory `op` is counted for while it waits or is in flight, as the
/// budget counts it: for producers that hold operations before they reach
/// the sink (a backfill chunk) and bound them the same way.
pub fn estimated_bytes(op: &CustomerOp) -> usize {
    size::estimate(op)
}

/// The delivery engine; see the module doc.
pub struct Sink {
    queue: Queue,
    tasks: JoinSet<Finished>,
    delivery: Arc<Delivery>,
    linger: Duration,
    max_batch_ops: usize,
    max_pending_bytes: usize,
    /// Everything waiting is held up by a batch in flight: only a
    /// completion (or a new operation) can change that, so the linger
    /// timer is off.
    stalled: bool,
    /// Nothing is sent before this: requests abandoned by [`Sink::discard`]
    /// may still be applied by Customer.io until their timeout, and a replay
    /// of the same customer must not overtake them.
    quiet_until: Option<Instant>,
    request_timeout: Duration,
    counters: Arc<Counters>,
    /// Customers the record was found not to know, with no operation of
    /// theirs pushed since (see [`Sink::may_hold`]).
    absent: recorded::Absent,
}

/// A batch that completed, or the definite error that stopped it.
pub struct Finished {
    ticket: Ticket,
    result: Result<(), SinkError>,
}

impl Sink {
    /// An engine for the configured workspace, storing dead letters in `dead_letters`.
    pub fn new(
        customerio: &CustomerioConfig,
        pipeline: &PipelineConfig,
        dead_letters: Arc<DeadLetterStore>,
        counters: Arc<Counters>,
    ) -> Result<Self, SinkError> {
        let delivery = Delivery {
            client: TrackClient::new(customerio, counters.clone())?,
            dead_letters,
            counters: counters.clone(),
            max_backoff: Duration::from_secs(customerio.retry_max_backoff_secs),
            transient_item_errors: customerio
                .transient_item_errors
                .iter()
                .map(|e| e.trim().to_lowercase())
                .collect(),
            recorded: None,
        };
        Ok(Self {
            queue: Queue::default(),
            tasks: JoinSet::new(),
            delivery: Arc::new(delivery),
            linger: customerio.linger(),
            max_batch_ops: customerio.max_batch_ops,
            max_pending_bytes: pipeline.max_pending_bytes,
            stalled: false,
            quiet_until: None,
            request_timeout: customerio.request_timeout(),
            counters,
            absent: recorded::Absent::default(),
        })
    }

    /// Diffs identifies against the record of what Customer.io accepted in
    /// `store` before they are sent, and writes what it accepts there
    /// before a batch counts as completed (see [`crate::record`]).
    pub fn with_record(mut self, store: Arc<RecordStore>) -> Self {
        let counters = self.counters.clone();
        let delivery = Arc::get_mut(&mut self.delivery)
            .expect("the record is set up before any delivery task shares the delivery");
        let max_backoff = delivery.max_backoff;
        delivery.recorded = Some(recorded::Recorded { store, counters, max_backoff });
        self
    }

    /// Queues `op` (merging it into a waiting one of the same customer where
    /// allowed) and sends what is ready. Never waits: the caller checks
    /// [`Sink::is_full`] before reading more.
    pub fn push(&mut self, op: CustomerOp) {
        self.push_releasing(op, &Released::Nothing);
    }

    /// [`Sink::push`] for an operation of a change that frees `released`
    /// (the old row's email): another customer's identify claiming that
    /// email goes after it (see [`queue`]).
    pub fn push_releasing(&mut self, op: CustomerOp, released: &Released) {
        // Any operation but a removal may make Customer.io hold the
        // customer: not absent any more (see `Sink::may_hold`).
        if !matches!(op, CustomerOp::Delete { .. } | CustomerOp::Suppress { .. }) {
            if let Some(customer) = op.customer_id() {
                self.absent.remove(customer);
            }
        }
        if self.queue.push_releasing(op, released, Instant::now()) == Pushed::Coalesced {
            Counters::add(&self.counters.ops_coalesced, 1);
        }
        self.pump(false);
        self.report_memory();
    }

    /// Records a commit boundary: its end LSN becomes ackable once every
    /// operation pushed so far completed.
    pub fn commit(&mut self, end_lsn: Lsn) {
        self.queue.commit(end_lsn);
        self.report_memory();
    }

    /// The newest commit whose operations, and all before, completed, and
    /// how many commits that covers. Each commit is returned once.
    pub fn ackable(&mut self) -> Option<(Lsn, usize)> {
        let ackable = self.queue.ackable();
        if ackable.is_some() {
            // The commits it covers no longer count toward the budget.
            self.report_memory();
        }
        ackable
    }

    /// A mark of everything pushed so far, for [`Sink::delivered_through`].
    pub fn mark(&self) -> u64 {
        self.queue.last_seq()
    }

    /// Whether everything pushed before `mark` was taken completed.
    pub fn delivered_through(&self, mark: u64) -> bool {
        self.queue.done_through(mark)
    }

    /// Whether every operation pushed completed.
    pub fn is_idle(&self) -> bool {
        self.queue.is_done()
    }

    /// Whether the memory budget is used up: read nothing more until a batch completes.
    pub fn is_full(&self) -> bool {
        self.queue.pending_bytes() >= self.max_pending_bytes
    }

    /// Whether a batch is in flight (so [`Sink::completion`] will return).
    pub fn has_in_flight(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// When waiting operations should be sent even though no batch is full:
    /// the oldest one's linger time. `None` if nothing waits or nothing more
    /// may be in flight (a completion comes first).
    pub fn deadline(&self) -> Option<Instant> {
        if self.tasks.len() >= self.delivery.client.concurrency_limit() {
            return None;
        }
        if self.stalled {
            return None;
        }
        let due = self.queue.oldest()? + self.linger;
        Some(self.quiet_until.map_or(due, |quiet| due.max(quiet)))
    }

    /// Sends what the linger time made due.
    pub fn on_deadline(&mut self) {
        self.pump(false);
    }

    /// The next batch to complete. Cancellation-safe; pending forever when
    /// nothing is in flight.
    pub async fn completion(&mut self) -> Finished {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(finished)) => return finished,
                Some(Err(error)) if error.is_panic() => {
                    std::panic::resume_unwind(error.into_panic())
                }
                // Aborted by `discard`.
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Takes every batch that completed meanwhile into account, without
    /// waiting: for a producer that does not wait on [`Sink::completion`]
    /// between pushes (the initial copy reading its next page).
    pub fn reap(&mut self) -> Result<(), SinkError> {
        while let Some(joined) = self.tasks.try_join_next() {
            match joined {
                Ok(finished) => self.complete(finished)?,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Aborted by `discard`.
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Takes a completed batch into account and sends what that unblocks.
    /// `Err` if the batch hit a refusal no retry fixes.
    pub fn complete(&mut self, finished: Finished) -> Result<(), SinkError> {
        finished.result?;
        self.queue.finish(&finished.ticket);
        self.counters.health.delivered();
        self.pump(false);
        self.report_memory();
        Ok(())
    }

    /// Returns once the memory budget has room, completing batches
    /// meanwhile. For a producer that records no commits (the initial
    /// copy): with commits, what completes may make one acknowledgeable,
    /// and only acknowledging frees its entry, so the replication session
    /// waits its own way (`pipeline::session`). Cancelling it loses
    /// nothing, as with [`Sink::flush`].
    pub async fn wait_for_room(&mut self) -> Result<(), SinkError> {
        while self.is_full() {
            if self.has_in_flight() {
                let finished = self.completion().await;
                self.complete(finished)?;
            } else if let Some(at) = self.deadline() {
                // A send held back (the quiet time after a discard).
                tokio::time::sleep_until(at).await;
                self.on_deadline();
            } else {
                // Full with nothing on its way out: say so rather than wait forever.
                return Err(SinkError::Stuck);
            }
        }
        Ok(())
    }

    /// Sends everything waiting and returns once every operation pushed so
    /// far completed. Cancelling it loses nothing: what is in flight stays
    /// in flight, what waits stays queued.
    pub async fn flush(&mut self) -> Result<(), SinkError> {
        loop {
            self.pump(true);
            if self.queue.is_done() {
                return Ok(());
            }
            if self.tasks.is_empty() {
                if let Some(quiet) = self.quiet_until {
                    tokio::time::sleep_until(quiet).await;
                    continue;
                }
                // Nothing in flight holds anything up, so pump sent all.
                // Should that ever not hold, say so rather than report
                // undelivered operations as delivered.
                return Err(SinkError::Stuck);
            }
            let finished = self.completion().await;
            self.complete(finished)?;
        }
    }

    /// Whether Customer.io may hold `customer` of `table` (`schema.name`),
    /// for a removal that only matters if it does
    /// ([`crate::mapping::Mapped::if_held`]):
    /// - not when this sink was given their removal last (see
    ///   [`Sink::removing`]): one removal per leave, as under FULL identity;
    /// - yes when an operation of theirs waits or is in flight here;
    /// - otherwise as the record of what Customer.io accepted says: with
    ///   nothing of theirs unfinished, everything sent of them was accepted
    ///   and recorded (or refused, and not recorded). A customer it lacks is
    ///   one Customer.io lacks only where the record is complete for the
    ///   table (an initial copy or a whole-table backfill recorded every
    ///   one); elsewhere (upgraded from a version without the record, or
    ///   emptied) the removal goes.
    ///
    /// A customer found not held is remembered, for at most
    /// [`recorded::ABSENT_FOR`], until an operation of theirs is pushed, so
    /// a row outside the filter costs a read per few minutes, not one per
    /// change. Without the record, or should it not be readable: `true` (a
    /// removal of someone Customer.io lacks changes nothing there).
    pub async fn may_hold(&mut self, customer: &str, table: &str) -> bool {
        if self.absent.contains(customer) {
            return false;
        }
        if self.queue.touches(customer) {
            return true;
        }
        let Some(recorded) = &self.delivery.recorded else { return true };
        let held = recorded.knows(customer, table).await;
        if !held {
            self.absent.insert(customer);
        }
        held
    }

    /// Notes that `customer`'s removal was decided by [`Sink::may_hold`]
    /// (pushed, or held by the circuit breaker): it says no until another
    /// operation of theirs is pushed.
    pub fn removing(&mut self, customer: &str) {
        self.absent.insert(customer);
    }

    /// Forgets what waits and aborts what is in flight (the source broke:
    /// all of it will be replayed from the slot).
    pub fn discard(&mut self) {
        // Another instance may hold the lease before this one streams again.
        self.absent.clear();
        if !self.tasks.is_empty() {
            self.quiet_until = Some(Instant::now() + self.request_timeout);
        }
        self.tasks.abort_all();
        self.tasks = JoinSet::new();
        self.queue.clear();
        self.report_memory();
    }

    /// Updates the gauges of what is outstanding, and whether anything is.
    fn report_memory(&self) {
        let held = self.queue.pending_bytes() as u64;
        Counters::set(&self.counters.pending_bytes, held, Some(&self.counters.pending_bytes_peak));
        Counters::set(&self.counters.pending_operations, self.queue.unfinished() as u64, None);
        self.counters.health.set_busy(!self.queue.is_done());
    }

    /// Starts batches while there is room in flight and something is due
    /// (a full batch, the linger time passed, a barrier, memory full with
    /// nothing in flight, or `force`).
    fn pump(&mut self, force: bool) {
        self.stalled = false;
        if let Some(quiet) = self.quiet_until {
            if Instant::now() < quiet {
                return;
            }
            self.quiet_until = None;
        }
        while self.tasks.len() < self.delivery.client.concurrency_limit() {
            if !force && !self.due() {
                return;
            }
            let Some(taken) = self.queue.take_batch(self.max_batch_ops) else {
                self.stalled = !self.tasks.is_empty();
                return;
            };
            for item in taken.items.iter().filter(|i| !i.trimmed.is_empty()) {
                Counters::add(&self.counters.attributes_dropped, item.trimmed.len() as u64);
                tracing::warn!(
                    operation = item.kind,
                    attributes = ?item.trimmed,
                    "attributes left out: the item would exceed Customer.io's 32 KB item limit"
                );
            }
            let delivery = self.delivery.clone();
            let ticket = taken.ticket;
            let items = taken.items;
            self.tasks.spawn(async move {
                let result = delivery.deliver(items).await;
                Finished { ticket, result }
            });
        }
    }

    fn due(&self) -> bool {
        self.queue.waiting() >= self.max_batch_ops
            || self.queue.waiting_wire_bytes() >= MAX_BATCH_BYTES
            || self.queue.has_barrier()
            // Full with a batch in flight: its completion makes room, and
            // the batch waiting fills meanwhile (a part-filled request
            // spends the request budget on fewer operations).
            || (self.is_full() && self.tasks.is_empty())
            || self.queue.oldest().is_some_and(|t| t + self.linger <= Instant::now())
    }
}

#[cfg(test)]
mod tests;
