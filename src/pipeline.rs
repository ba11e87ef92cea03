//! The apply loop: source → mapper → sink, and the one place where the
//! replication slot is acknowledged.
//!
//! ```text
//!  Source ──SourceEvent──▶ Mapper ──CustomerOp──▶ Sink ──/api/v2/batch──▶ Customer.io
//!    ▲                                              │
//!    └──────── ack(commit end LSN) ◀── flushed ─────┘
//! ```
//!
//! # When an LSN is acknowledged, and why each ack is safe
//!
//! Acknowledging LSN X tells Postgres it may forget every transaction that
//! committed before X; after a crash it resumes from X. So an ack is safe
//! only when everything before X is already in Customer.io. There are two:
//!
//! 1. **A commit's end LSN**, once every operation of that transaction and
//!    of all before it *completed*: accepted by Customer.io, or refused for
//!    good and stored in `ciosync.dead_letters`. The sink numbers operations
//!    in the order the loop pushes them (commit order) and records each
//!    commit after its operations ([`Sink::commit`]); [`Sink::ackable`]
//!    names the newest commit with no unfinished operation at or before it.
//!    Batches complete out of order (several are in flight), so this is a
//!    low-water mark, not "the last batch that came back". A transaction
//!    that produced no operation (a no-op update, a TRUNCATE) is
//!    acknowledged the same way: nothing of it is outstanding. An operation
//!    merged into an earlier one of its customer (coalescing) keeps the
//!    earlier one's place, so the later commit waits for it; a commit whose
//!    operations all merged waits for nothing newer than the commit before
//!    it, so the sink keeps the two as one entry with the newer LSN.
//! 2. **A keepalive's WAL position**, only between transactions and with
//!    every pushed operation completed. pgoutput sends transactions in
//!    commit order, so by the time a keepalive reports position W, every
//!    transaction committed before W was already sent to us, and with
//!    nothing outstanding all of them are delivered. This keeps the slot
//!    advancing while the synced tables are idle but the database is busy;
//!    transactions still open are unaffected (the server keeps their WAL
//!    through the slot's `restart_lsn`).
//!
//! **Held removals** (the mass-delete circuit breaker, [`crate::delete_guard`])
//! count as handled once they are stored: a delete or suppress the guard
//! holds is not pushed to the sink but kept with its transaction (a long one
//! is written to `ciosync.held_deletes` a chunk at a time as `pending`,
//! which counts for nothing), and at the commit all of them become `held`
//! in one statement *before* the commit is recorded in the sink
//! ([`Sink::commit`]), so rule 1 cannot pass it until it is durable. While Postgres is unreachable the
//! write is retried (nothing is acknowledged meanwhile); a definite failure
//! stops the daemon with the commit unacknowledged. A later operation of a
//! customer whose removal is held marks that hold `superseded` before the
//! operation is pushed, so an approve never deletes a person re-created since.
//!
//! Nothing else is acknowledged: not an LSN in the middle of a transaction,
//! not an operation waiting in the queue, in flight or being retried. While
//! Customer.io is unreachable batches do not complete, the memory budget
//! (`pipeline.max_pending_bytes`) fills and the loop stops reading
//! (backpressure): memory holds the budget (operations, and the commits not
//! yet acknowledged behind them) plus the replication buffer, the slot holds
//! the rest. A large transaction is delivered in batches as it
//! arrives and acknowledged only at its commit.
//!
//! Two more producers feed the same sink, in stream order: before the first
//! session the initial copy runs to completion (`initial_copy`), and a
//! backfill chunk is sent when its high watermark comes by (`backfill`); the
//! flush that delivers a chunk acknowledges only commits already complete.
//!
//! **Across a failover** the acknowledged position is rebased. Each session
//! resumes after the last acknowledgement, which Postgres honours only on
//! the WAL history it was made on: after a standby is promoted (a new
//! timeline, seen by IDENTIFY_SYSTEM) the same LSN may name a change the
//! old primary never had, and resuming there would skip it. So a session on
//! a new history starts at the slot's own `confirmed_flush_lsn` (a failover
//! slot synced to the standby, which may lag: changes come again, none are
//! skipped) and `Progress` starts over. Nothing acknowledged is lost only if
//! the standby had every change ciosync was sent before the promotion:
//! `synchronized_standby_slots` on the primary makes Postgres hold changes
//! back from ciosync until the standby has them (`ciosync check` warns when
//! it is unset).
//!
//! Acks reach Postgres on the next status update (`postgres.status_interval_ms`).
//! At shutdown the final ack is sent before the connection closes. Postgres
//! may still replay a transaction we delivered (PG 15 can move
//! `confirmed_flush_lsn` back after a clean server restart), which is why
//! every operation is harmless when repeated: delivery is at least once.

use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::Lsn;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backfill::{self, Watermark, Windows};
use crate::config::Config;
use crate::dead_letter::DeadLetterStore;
use crate::delete_guard::breaker::{self, Breaker};
use crate::initial_copy::{self, CopyError, CopyOutcome};
use crate::lease::{self, Lease};
use crate::mapping::Mapper;
use crate::sink::retry::Backoff;
use crate::sink::{Sink, SinkError};
use crate::source::connection::ConnectionSettings;
use crate::source::{keeper, History, Source, SourceError, SourceEvent};
use crate::telemetry::by_table::Operation;
use crate::telemetry::health::now_ms;
use crate::telemetry::lag::UnackedCommits;
use crate::telemetry::{Counters, Phase};

/// Longest wait between two reconnection attempts to Postgres.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(30);

/// Why the daemon stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Postgres refused us in a way no retry fixes.
    #[error(transparent)]
    Source(SourceError),
    /// Customer.io refused us in a way no retry fixes.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Held removals could not be stored or superseded for a reason no
    /// retry fixes.
    #[error(
        "cannot write ciosync.held_deletes (the mass-delete circuit breaker's held removals); \
         grant the role what the error names and restart: the transaction was not acknowledged"
    )]
    HeldDeletes(#[source] SourceError),
}

/// The acknowledged position: only ever moves forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    acked: Lsn,
}

impl Progress {
    /// The last acknowledged LSN.
    pub fn acked(&self) -> Lsn {
        self.acked
    }

    /// Forgets the position: the server's WAL history changed (a standby
    /// was promoted), so LSNs of the old history say nothing about the new
    /// one, whose own acknowledgements may be lower. The only way back.
    pub fn start_over(&mut self) {
        self.acked = Lsn::from_u64(0);
    }

    /// Moves the position to `lsn` if that is forward; returns whether it moved.
    pub fn advance(&mut self, lsn: Lsn) -> bool {
        if lsn > self.acked {
            self.acked = lsn;
            true
        } else {
            false
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled (returns `Ok`) or a definite
/// error stops it. The phase it is in is kept in `counters.health`.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) -> Result<Progress, RunError> {
    counters.health.set_phase(Phase::Starting);
    let outcome = run_until_stopped(config, shutdown, counters.clone()).await;
    counters.health.set_phase(Phase::Stopping);
    outcome
}

async fn run_until_stopped(
    config: Config,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) -> Result<Progress, RunError> {
    let settings = ConnectionSettings::parse(&config.postgres)?;
    let dead_letters =
        Arc::new(DeadLetterStore::new(settings.clone(), config.postgres.slot.clone()));
    let sink = Sink::new(&config.customerio, &config.pipeline, dead_letters, counters.clone())?;
    let mut run = Leased {
        mapper: Mapper::new(&config.sync).with_event_tables(&config.events),
        sink,
        progress: Progress::default(),
        history: None,
        settings,
        config,
        counters,
        shutdown,
    };
    // Everything done with the slot happens while holding its lease (see
    // `lease`): a standby instance waits here.
    loop {
        let slot = &run.config.postgres.slot;
        let acquired = lease::acquire(&run.settings, slot, &run.counters, &run.shutdown).await;
        let Some(lease) = acquired.map_err(RunError::Source)? else {
            return Ok(run.progress);
        };
        match run.run(&lease).await? {
            Held::Stopped => return Ok(run.progress),
            Held::Lost => {
                run.counters.health.set_phase(Phase::Connecting);
                // Whatever waits in the sink comes again from the slot.
                run.sink.discard();
                Counters::set(&run.counters.oldest_unacked_commit, 0, None);
                tracing::warn!(
                    slot = %run.config.postgres.slot,
                    acked = %run.progress.acked(),
                    "lost the slot's lease (its Postgres session ended): stopped working the \
                     slot until this instance holds the lease again"
                );
            }
        }
    }
}

/// How a run under the lease ended.
enum Held {
    /// Shutdown was asked for; the daemon stops.
    Stopped,
    /// The lease's session ended: everything done under it has stopped, and
    /// the lease is to be acquired again.
    Lost,
}

/// What lasts across leases: the sink, the acknowledged position and the
/// WAL history it belongs to.
struct Leased {
    settings: ConnectionSettings,
    config: Config,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    sink: Sink,
    mapper: Mapper,
    progress: Progress,
    /// The WAL history `progress` was reached on (see `Progress::start_over`).
    history: Option<History>,
}

impl Leased {
    /// The initial copy, then the stream with the backfill runner and the
    /// breaker beside it, until shutdown, a definite error or the end of
    /// `lease`.
    async fn run(&mut self, lease: &Lease) -> Result<Held, RunError> {
        let Self { settings, config, counters, shutdown, sink, mapper, progress, history } = self;
        let lease_ended = lease.ended();
        let mut backoff = Backoff::new(MAX_RECONNECT_BACKOFF);
        let shutdown_timeout = Duration::from_secs(config.pipeline.shutdown_timeout_secs);
        // The final ack goes out with the next status update, at most one
        // status interval away.
        let final_ack_wait = config.status_interval() + Duration::from_secs(2);
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            // Stopping the copy midway is safe: it resumes from its checkpoint.
            let copied = tokio::select! {
                copied = initial_copy::run(settings, config, sink, mapper, counters, shutdown) => copied,
                _ = lease_ended.cancelled() => return Ok(Held::Lost),
            };
            match copied {
                Ok(CopyOutcome::Complete) => break,
                Ok(CopyOutcome::Interrupted) => return Ok(Held::Stopped),
                Err(CopyError::Sink(error)) => return Err(RunError::Sink(error)),
                Err(CopyError::Source(error)) if error.is_transient() => {
                    // What waits in the sink is copied again from the checkpoint.
                    sink.discard();
                    let what = "initial copy failed";
                    if !retry_later(&mut backoff, attempt, settings, &error, what, shutdown).await {
                        return Ok(Held::Stopped);
                    }
                    if lease.is_lost() {
                        return Ok(Held::Lost);
                    }
                }
                Err(CopyError::Source(error)) => return Err(RunError::Source(error)),
            }
        }
        backoff.reset();
        attempt = 0;
        let mut breaker = Breaker::new(settings.clone(), config, counters.clone());
        tokio::select! {
            loaded = breaker.load() => loaded.map_err(RunError::HeldDeletes)?,
            _ = shutdown.cancelled() => return Ok(Held::Stopped),
            _ = lease_ended.cancelled() => return Ok(Held::Lost),
        }
        // Backfills run beside the stream and stop with it, however it stops.
        let windows = Arc::new(Windows::default());
        let runner_stop = shutdown.child_token();
        let _stop_runner = runner_stop.clone().drop_guard();
        tokio::spawn(backfill::runner::run(
            settings.clone(),
            config.clone(),
            windows.clone(),
            runner_stop,
        ));
        let mut slot_in_use_said = false;
        loop {
            attempt += 1;
            counters.health.set_phase(Phase::Connecting);
            let started = tokio::select! {
                s = Source::start(settings, config, progress.acked(), history.as_ref(), counters.clone()) => s,
                _ = shutdown.cancelled() => return Ok(Held::Stopped),
                _ = lease_ended.cancelled() => return Ok(Held::Lost),
            };
            let mut source = match started {
                Ok(source) => {
                    if source.started_over() {
                        progress.start_over();
                    }
                    *history = source.history().cloned().or(history.take());
                    tracing::info!(postgres = %settings.display(), "connected to postgres");
                    counters.health.set_phase(Phase::Streaming);
                    backoff.reset();
                    attempt = 0;
                    slot_in_use_said = false;
                    source
                }
                Err(SourceError::SlotInUse(_)) => {
                    // Another session streams from the slot (an instance of
                    // an older ciosync, another consumer, or our previous
                    // session not yet gone): stand by quietly.
                    counters.health.set_phase(Phase::Standby);
                    if !slot_in_use_said {
                        slot_in_use_said = true;
                        tracing::info!(
                            slot = %config.postgres.slot,
                            "the replication slot is in use by another session; standing by to \
                             stream once it is free"
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(lease::STANDBY_RETRY) => continue,
                        _ = shutdown.cancelled() => return Ok(Held::Stopped),
                    }
                }
                Err(error) if error.is_transient() => {
                    let what = "cannot start replication";
                    if !retry_later(&mut backoff, attempt, settings, &error, what, shutdown).await {
                        return Ok(Held::Stopped);
                    }
                    if lease.is_lost() {
                        return Ok(Held::Lost);
                    }
                    continue;
                }
                Err(error) => return Err(RunError::Source(error)),
            };
            // The session lets go of the stream when its SQL session or the
            // lease's ends.
            let session_ended = lease_ended.child_token();
            let sql_ended = source.session_ended();
            let forward = session_ended.clone();
            tokio::spawn(async move {
                sql_ended.cancelled().await;
                forward.cancel();
            });
            let mut session = Session {
                source: &mut source,
                sink,
                breaker: &mut breaker,
                mapper,
                windows: &windows,
                slot: &config.postgres.slot,
                progress,
                counters,
                in_transaction: false,
                unacked: UnackedCommits::default(),
                session_ended,
            };
            let outcome = session.run(shutdown, shutdown_timeout).await;
            match outcome {
                Ok(()) => {
                    source.close(progress.acked(), final_ack_wait).await;
                    tracing::info!(acked = %progress.acked(), "stopped");
                    return Ok(Held::Stopped);
                }
                Err(SessionError::Sink(error)) => {
                    source.close(progress.acked(), final_ack_wait).await;
                    return Err(RunError::Sink(error));
                }
                Err(SessionError::Held(error)) => {
                    source.close(progress.acked(), final_ack_wait).await;
                    return Err(RunError::HeldDeletes(error));
                }
                Err(SessionError::Source(error)) if error.is_transient() => {
                    counters.health.set_phase(Phase::Connecting);
                    // Whatever waits in the sink will come again from the slot.
                    sink.discard();
                    breaker.abandon_transaction();
                    Counters::set(&counters.oldest_unacked_commit, 0, None);
                    Counters::add(&counters.source_reconnects, 1);
                    drop(source);
                    if lease.is_lost() {
                        return Ok(Held::Lost);
                    }
                    tracing::warn!(
                        error = %error_chain(&error),
                        acked = %progress.acked(),
                        "replication stream broke; reconnecting"
                    );
                }
                Err(SessionError::Source(error)) => return Err(RunError::Source(error)),
            }
        }
    }
}

/// Logs a transient failure (without secrets) and waits the next backoff
/// step; `false` if shutdown came first.
async fn retry_later(
    backoff: &mut Backoff,
    attempt: u64,
    settings: &ConnectionSettings,
    error: &SourceError,
    what: &str,
    shutdown: &CancellationToken,
) -> bool {
    let delay = backoff.next_delay(None);
    tracing::warn!(
        postgres = %settings.display(),
        attempt,
        retry_in_ms = delay.as_millis() as u64,
        error = %error_chain(error),
        "{what}; retrying"
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

fn session_ended() -> SessionError {
    SessionError::Source(SourceError::SqlSessionEnded)
}

#[derive(Debug)]
enum SessionError {
    Source(SourceError),
    Sink(SinkError),
    /// Writing `ciosync.held_deletes` failed for good.
    Held(SourceError),
}

/// One replication session's loop state.
struct Session<'a> {
    source: &'a mut Source,
    sink: &'a mut Sink,
    /// The mass-delete circuit breaker, between the mapper and the sink.
    breaker: &'a mut Breaker,
    mapper: &'a Mapper,
    /// Backfill chunks between their watermarks.
    windows: &'a Windows,
    slot: &'a str,
    progress: &'a mut Progress,
    counters: &'a Counters,
    in_transaction: bool,
    /// Commit times of what is not acknowledged yet, for the lag in seconds.
    unacked: UnackedCommits,
    /// Cancelled when the SQL session beside the stream ends: every wait of
    /// the session gives up then, so the stream is let go even while
    /// nothing is read from it (see `Source::session_ended`).
    session_ended: CancellationToken,
}

impl Session<'_> {
    async fn run(
        &mut self,
        shutdown: &CancellationToken,
        shutdown_timeout: Duration,
    ) -> Result<(), SessionError> {
        loop {
            let deadline = self.sink.deadline();
            let in_flight = self.sink.has_in_flight();
            // Backpressure: with the memory budget used up, the slot waits.
            let may_read = !self.sink.is_full();
            let check_at = self.breaker.next_check();
            // Only cancellation-safe waits race here; processing (which may
            // look up a type) runs to completion.
            let raw = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return self.drain(shutdown_timeout).await,
                // Before `recv`, and also while backpressure keeps it unpolled.
                _ = self.session_ended.cancelled() => return Err(session_ended()),
                finished = self.sink.completion(), if in_flight => {
                    self.sink.complete(finished).map_err(SessionError::Sink)?;
                    self.ack_completed();
                    continue;
                }
                _ = sleep_until_opt(deadline) => {
                    self.sink.on_deadline();
                    continue;
                }
                _ = sleep_until_opt(check_at) => {
                    self.breaker.check().await.map_err(SessionError::Held)?;
                    continue;
                }
                raw = self.source.recv(), if may_read => raw.map_err(SessionError::Source)?,
            };
            let Some(event) = self.source.process(raw).await.map_err(SessionError::Source)? else {
                continue;
            };
            if !self.handle(event, shutdown, shutdown_timeout).await? {
                return Ok(());
            }
        }
    }

    /// Handles one event; `Ok(false)` when shutdown came during a flush.
    async fn handle(
        &mut self,
        event: SourceEvent,
        shutdown: &CancellationToken,
        shutdown_timeout: Duration,
    ) -> Result<bool, SessionError> {
        match event {
            SourceEvent::Begin => self.in_transaction = true,
            SourceEvent::Change(change) => {
                self.counters.changes_received.add(&change.table, Operation::of(&change.op));
                if !self.windows.is_idle() {
                    let table = change.table.qualified_name();
                    self.windows.observe(&table, &self.mapper.customer_ids(&change));
                }
                let mapped = self.mapper.map(&change);
                if let Some(reason) = mapped.skipped {
                    self.count_skip(reason, &change);
                }
                for dropped in &mapped.dropped {
                    Counters::add(&self.counters.attributes_dropped, 1);
                    tracing::warn!(
                        table = %change.table.qualified_name(),
                        column = %dropped.column,
                        attribute = %dropped.attribute,
                        reason = dropped.reason.as_str(),
                        "attribute left out of the call"
                    );
                }
                let guarded = breaker::is_lone_removal(&mapped.ops);
                for op in mapped.ops {
                    let routed = tokio::select! {
                        routed = self.breaker.route(op, guarded, change.position.commit_lsn) => Some(routed),
                        _ = shutdown.cancelled() => None,
                        _ = self.session_ended.cancelled() => return Err(session_ended()),
                    };
                    let Some(routed) = routed else {
                        self.drain(shutdown_timeout).await?;
                        return Ok(false);
                    };
                    if let Some(op) = routed.map_err(SessionError::Held)? {
                        self.sink.push(op);
                    }
                }
            }
            SourceEvent::Truncate { tables } => {
                for table in tables {
                    Counters::add(&self.counters.truncates_ignored, 1);
                    tracing::warn!(
                        %table,
                        "TRUNCATE of a synced table ignored: customers are not deleted in bulk"
                    );
                }
            }
            SourceEvent::Commit { end_lsn, commit_time } => {
                // Held removals are stored before the commit can be acknowledged.
                let stored = tokio::select! {
                    stored = self.breaker.commit(end_lsn) => Some(stored),
                    _ = shutdown.cancelled() => None,
                    _ = self.session_ended.cancelled() => return Err(session_ended()),
                };
                let Some(stored) = stored else {
                    self.drain(shutdown_timeout).await?;
                    return Ok(false);
                };
                stored.map_err(SessionError::Held)?;
                self.in_transaction = false;
                Counters::set(&self.counters.last_commit_received_ms, now_ms(), None);
                self.sink.commit(end_lsn);
                self.unacked.commit(end_lsn, commit_time);
                if !self.ack_completed() {
                    self.report_lag();
                }
            }
            SourceEvent::Message { prefix, content } => {
                if prefix == keeper::HEARTBEAT_PREFIX && content == self.slot.as_bytes() {
                    // Its transaction's commit is acknowledged like any other.
                    Counters::add(&self.counters.heartbeats_received, 1);
                } else if prefix == backfill::WATERMARK_PREFIX {
                    match backfill::parse_watermark(self.slot, &content) {
                        Some(Watermark::Low(id)) => self.windows.open(id),
                        Some(Watermark::High(id))
                            if !self.send_chunk(id, shutdown, shutdown_timeout).await? =>
                        {
                            return Ok(false);
                        }
                        Some(Watermark::High(_)) | None => {}
                    }
                }
            }
            SourceEvent::Keepalive { wal_end } => {
                self.ack_completed();
                if !self.in_transaction && self.sink.is_idle() {
                    self.ack(wal_end);
                }
            }
        }
        Ok(true)
    }

    /// At a chunk's high watermark: send what the stream left of it, and
    /// tell the runner once it is accepted. `Ok(false)` when shutdown came.
    async fn send_chunk(
        &mut self,
        id: backfill::ChunkId,
        shutdown: &CancellationToken,
        shutdown_timeout: Duration,
    ) -> Result<bool, SessionError> {
        let Some(closed) = self.windows.close(id) else { return Ok(true) };
        for op in closed.ops {
            self.sink.push(op);
        }
        if !self.flush(shutdown, shutdown_timeout).await? {
            return Ok(false);
        }
        let _ = closed.delivered.send(closed.yielded);
        Ok(true)
    }

    fn count_skip(&self, reason: crate::mapping::SkipReason, change: &crate::change::RowChange) {
        use crate::mapping::SkipReason;
        let counter = match reason {
            SkipReason::NoChange => &self.counters.changes_skipped_no_change,
            SkipReason::InvalidId => &self.counters.changes_skipped_invalid_id,
            SkipReason::UnknownTable => &self.counters.changes_skipped_unknown_table,
            SkipReason::SoftDeleted => &self.counters.changes_skipped_soft_deleted,
            SkipReason::InvalidEvent => &self.counters.changes_skipped_invalid_event,
        };
        Counters::add(counter, 1);
        let why = match reason {
            SkipReason::NoChange | SkipReason::SoftDeleted => return,
            SkipReason::InvalidId | SkipReason::UnknownTable => {
                "change skipped: its customer id is NULL, empty, over 150 bytes or missing from \
                 the row (a DELETE needs the id column in the replica identity)"
            }
            SkipReason::InvalidEvent => {
                "event row skipped: its name column is NULL, blank or over 100 bytes"
            }
        };
        tracing::error!(table = %change.table.qualified_name(), reason = reason.as_str(), "{why}");
    }

    /// Sends what waits and acknowledges the newest fully delivered commit.
    /// `Ok(false)` when shutdown interrupted it.
    async fn flush(
        &mut self,
        shutdown: &CancellationToken,
        shutdown_timeout: Duration,
    ) -> Result<bool, SessionError> {
        let flushed = tokio::select! {
            flushed = self.sink.flush() => Some(flushed),
            _ = shutdown.cancelled() => None,
            _ = self.session_ended.cancelled() => return Err(session_ended()),
        };
        let Some(flushed) = flushed else {
            self.drain(shutdown_timeout).await?;
            return Ok(false);
        };
        flushed.map_err(SessionError::Sink)?;
        self.ack_completed();
        Ok(true)
    }

    /// At shutdown: give what waits `timeout` to be delivered, then stop.
    async fn drain(&mut self, timeout: Duration) -> Result<(), SessionError> {
        match tokio::time::timeout(timeout, self.sink.flush()).await {
            Ok(Ok(())) => {
                self.ack_completed();
                Ok(())
            }
            Ok(Err(error)) => Err(SessionError::Sink(error)),
            Err(_) => {
                // What completed meanwhile is still acknowledged.
                self.ack_completed();
                tracing::warn!(
                    timeout_secs = timeout.as_secs(),
                    "shutdown: undelivered operations abandoned; they will be sent again on restart"
                );
                Ok(())
            }
        }
    }

    /// Acknowledges the newest commit whose operations, and all before,
    /// completed; returns whether the acknowledged position moved.
    fn ack_completed(&mut self) -> bool {
        match self.sink.ackable() {
            Some((lsn, commits)) => {
                Counters::add(&self.counters.transactions_acked, commits as u64);
                self.ack(lsn)
            }
            None => false,
        }
    }

    /// Acknowledges `lsn` if it is forward; returns whether it was.
    fn ack(&mut self, lsn: Lsn) -> bool {
        let moved = self.progress.advance(lsn);
        if moved {
            self.source.ack(lsn);
            Counters::set(&self.counters.last_acked_lsn, lsn.as_u64(), None);
            self.unacked.acked(lsn);
            self.report_lag();
        }
        moved
    }

    /// Publishes the commit time of the oldest unacknowledged transaction.
    fn report_lag(&self) {
        Counters::set(&self.counters.oldest_unacked_commit, self.unacked.oldest(), None);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// An error with its causes, `a: b: c`, for one log field.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_moves_forward() {
        let mut p = Progress::default();
        assert!(p.advance(Lsn::from_u64(10)));
        assert!(!p.advance(Lsn::from_u64(5)));
        assert!(!p.advance(Lsn::from_u64(10)));
        assert_eq!(p.acked(), Lsn::from_u64(10));
    }

    #[test]
    fn starting_over_lets_a_lower_position_be_acknowledged() {
        let mut p = Progress::default();
        assert!(p.advance(Lsn::from_u64(500)));
        p.start_over();
        assert_eq!(p.acked(), Lsn::from_u64(0));
        assert!(p.advance(Lsn::from_u64(20)), "the new history's positions are lower");
        assert_eq!(p.acked(), Lsn::from_u64(20));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    #[test]
    fn an_error_chain_names_every_cause_in_order() {
        let inner = Layer { text: "connection refused", cause: None };
        let middle = Layer { text: "connect", cause: Some(Box::new(inner)) };
        let outer = Layer { text: "postgres unreachable", cause: Some(Box::new(middle)) };
        assert_eq!(error_chain(&outer), "postgres unreachable: connect: connection refused");
        assert_eq!(error_chain(&Layer { text: "alone", cause: None }), "alone");
    }
}
