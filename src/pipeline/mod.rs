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
//! backfill chunk is sent when its high watermark comes by (`backfill`),
//! each of its operations only while the budget has room, as the stream's
//! are read (the copy waits the same way, row by row); the flush that
//! delivers a chunk acknowledges only commits already complete.
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

mod progress;
mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backfill::{self, Windows};
use crate::config::Config;
use crate::dead_letter::DeadLetterStore;
use crate::delete_guard::breaker::Breaker;
use crate::error::error_chain;
use crate::initial_copy::{self, CopyError, CopyOutcome};
use crate::lease::{self, Lease};
use crate::mapping::Mapper;
use crate::pg::connection::ConnectionSettings;
use crate::pg::PgError;
use crate::record::store::RecordStore;
use crate::schema::guard::SchemaGuard;
use crate::schema::Break;
use crate::sink::retry::Backoff;
use crate::sink::{Sink, SinkError};
use crate::source::{History, Source};
use crate::telemetry::lag::UnackedCommits;
use crate::telemetry::{Counters, Phase};
pub use progress::Progress;
use session::{Session, SessionError};

/// Longest wait between two reconnection attempts to Postgres.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(30);
/// How often a daemon paused by a schema break looks again (a new session
/// from the last acknowledgement, and the broken tables' columns).
const PAUSED_RECHECK: Duration = Duration::from_secs(10);

/// Why the daemon stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Postgres refused us in a way no retry fixes.
    #[error(transparent)]
    Source(PgError),
    /// Customer.io refused us in a way no retry fixes.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Held removals could not be stored or superseded for a reason no
    /// retry fixes.
    #[error(
        "cannot write ciosync.held_deletes (the mass-delete circuit breaker's held removals); \
         grant the role what the error names and restart: the transaction was not acknowledged"
    )]
    HeldDeletes(#[source] PgError),
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
    let settings = config.postgres.connection();
    let dead_letters =
        Arc::new(DeadLetterStore::new(settings.clone(), config.postgres.slot.clone()));
    let mut sink = Sink::new(&config.customerio, &config.pipeline, dead_letters, counters.clone())?;
    let record = Arc::new(RecordStore::new(settings.clone(), config.postgres.slot.clone()));
    let mut forget_record = None;
    if config.pipeline.record_accepted {
        sink = sink.with_record(record);
    } else {
        forget_record = Some(record);
    }
    let mut run = Leased {
        forget_record,
        mapper: Mapper::new(&config.sync)
            .with_event_tables(&config.events)
            .with_device_tables(&config.devices)
            .with_record(config.pipeline.record_accepted),
        schema: SchemaGuard::new(&config, counters.clone()),
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
    schema: SchemaGuard,
    progress: Progress,
    /// The WAL history `progress` was reached on (see `Progress::start_over`).
    history: Option<History>,
    /// With `pipeline.record_accepted = false`, the record to empty before
    /// anything is sent under each lease (it would fall behind Customer.io,
    /// and be wrong should it be turned on again, by a restart or by
    /// another instance with it on taking the lease meanwhile).
    forget_record: Option<Arc<RecordStore>>,
}

impl Leased {
    /// The initial copy, then the stream with the backfill runner and the
    /// breaker beside it, until shutdown, a definite error or the end of
    /// `lease`.
    async fn run(&mut self, lease: &Lease) -> Result<Held, RunError> {
        if let Some(held) = self.empty_record(lease).await? {
            return Ok(held);
        }
        if let Some(held) = self.copy_initial(lease).await? {
            return Ok(held);
        }
        let lease_ended = lease.ended();
        let mut breaker = Breaker::new(self.settings.clone(), &self.config, self.counters.clone());
        tokio::select! {
            loaded = breaker.load() => loaded.map_err(RunError::HeldDeletes)?,
            _ = self.shutdown.cancelled() => return Ok(Held::Stopped),
            _ = lease_ended.cancelled() => return Ok(Held::Lost),
        }
        // Backfills run beside the stream and stop with it, however it stops.
        let device_keys = self.config.devices.iter().filter_map(|devices| {
            let (schema, name) = devices.schema_and_name();
            let key = self.mapper.device_key(schema, name)?;
            Some((devices.table.to_string(), key.to_vec()))
        });
        let windows = Arc::new(Windows::noting(device_keys.collect()));
        let runner_stop = self.shutdown.child_token();
        let _stop_runner = runner_stop.clone().drop_guard();
        tokio::spawn(backfill::runner::run(
            self.settings.clone(),
            self.config.clone(),
            windows.clone(),
            self.counters.clone(),
            runner_stop,
        ));
        self.stream(lease, &mut breaker, &windows).await
    }

    /// Empties the record when it is turned off, before anything is sent
    /// under this lease. `Some` when the run ends here.
    async fn empty_record(&mut self, lease: &Lease) -> Result<Option<Held>, RunError> {
        let Some(record) = self.forget_record.clone() else { return Ok(None) };
        let lease_ended = lease.ended();
        let mut backoff = Backoff::new(MAX_RECONNECT_BACKOFF);
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let forgotten = tokio::select! {
                forgotten = record.forget_all() => forgotten,
                _ = lease_ended.cancelled() => return Ok(Some(Held::Lost)),
            };
            match forgotten {
                Ok(customers) => {
                    if customers > 0 {
                        tracing::info!(
                            customers,
                            "pipeline.record_accepted is off: emptied ciosync.accepted"
                        );
                    }
                    return Ok(None);
                }
                Err(error) if error.is_transient() => {
                    let (settings, shutdown) = (&self.settings, &self.shutdown);
                    let what = "cannot empty ciosync.accepted";
                    if !retry_later(&mut backoff, attempt, settings, &error, what, shutdown).await {
                        return Ok(Some(Held::Stopped));
                    }
                }
                Err(error) => return Err(RunError::Source(error)),
            }
        }
    }

    /// The initial copy (a no-op once done), retried from its checkpoint
    /// after transient errors. `Some` when the run ends here.
    async fn copy_initial(&mut self, lease: &Lease) -> Result<Option<Held>, RunError> {
        let Self { settings, config, counters, shutdown, sink, mapper, .. } = self;
        let lease_ended = lease.ended();
        let mut backoff = Backoff::new(MAX_RECONNECT_BACKOFF);
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            // Stopping the copy midway is safe: it resumes from its checkpoint.
            let copied = tokio::select! {
                copied = initial_copy::run(settings, config, sink, mapper, counters, shutdown) => copied,
                _ = lease_ended.cancelled() => return Ok(Some(Held::Lost)),
            };
            match copied {
                Ok(CopyOutcome::Complete) => return Ok(None),
                Ok(CopyOutcome::Interrupted) => return Ok(Some(Held::Stopped)),
                Err(CopyError::Sink(error)) => return Err(RunError::Sink(error)),
                Err(CopyError::Source(error)) if error.is_transient() => {
                    // What waits in the sink is copied again from the checkpoint.
                    sink.discard();
                    let what = "initial copy failed";
                    if !retry_later(&mut backoff, attempt, settings, &error, what, shutdown).await {
                        return Ok(Some(Held::Stopped));
                    }
                    if lease.is_lost() {
                        return Ok(Some(Held::Lost));
                    }
                }
                Err(CopyError::Source(error)) => return Err(RunError::Source(error)),
            }
        }
    }

    /// Replication sessions, one after another while the stream breaks
    /// transiently, until shutdown, a definite error or the end of `lease`.
    async fn stream(
        &mut self,
        lease: &Lease,
        breaker: &mut Breaker,
        windows: &Windows,
    ) -> Result<Held, RunError> {
        // `copy_initial` checked the publication just now (every run does,
        // with or without a copy); a reconnect checks it again.
        let mut starts = Starts { publication_checked: true, ..Starts::new() };
        // The final ack goes out with the next status update, at most one
        // status interval away.
        let final_ack_wait = self.config.status_interval() + Duration::from_secs(2);
        loop {
            let mut source = match self.start_source(lease, &mut starts).await? {
                Started::Streaming(source) => source,
                Started::Retry => continue,
                Started::Ended(held) => return Ok(held),
            };
            let outcome = self.session(lease, &mut source, breaker, windows).await;
            let error = match outcome {
                Ok(()) => {
                    source.close(self.progress.acked(), final_ack_wait).await;
                    tracing::info!(acked = %self.progress.acked(), "stopped");
                    return Ok(Held::Stopped);
                }
                Err(SessionError::Source(error)) if error.is_transient() => error,
                Err(SessionError::Paused(breaks)) => {
                    source.close(self.progress.acked(), final_ack_wait).await;
                    self.sink.discard();
                    breaker.abandon_transaction();
                    Counters::set(&self.counters.oldest_unacked_commit, 0, None);
                    if let Some(held) = self.paused(lease, &breaks).await {
                        return Ok(held);
                    }
                    continue;
                }
                Err(error) => {
                    source.close(self.progress.acked(), final_ack_wait).await;
                    return Err(error.into());
                }
            };
            self.counters.health.set_phase(Phase::Connecting);
            // Whatever waits in the sink will come again from the slot.
            self.sink.discard();
            breaker.abandon_transaction();
            Counters::set(&self.counters.oldest_unacked_commit, 0, None);
            Counters::add(&self.counters.source_reconnects, 1);
            drop(source);
            if lease.is_lost() {
                return Ok(Held::Lost);
            }
            tracing::warn!(
                error = %error_chain(&error),
                acked = %self.progress.acked(),
                "replication stream broke; reconnecting"
            );
        }
    }

    /// Paused by a schema break: waits [`PAUSED_RECHECK`], then lets a new
    /// session look again (the stream from the last acknowledgement, and
    /// each broken table as the database has it now: repaired there, its
    /// broken stretch is resumed as a skip). `Some` when the run ends here.
    async fn paused(&mut self, lease: &Lease, breaks: &[Break]) -> Option<Held> {
        self.counters.health.set_phase(Phase::Paused);
        let lease_ended = lease.ended();
        tokio::select! {
            _ = tokio::time::sleep(PAUSED_RECHECK) => {}
            _ = self.shutdown.cancelled() => return Some(Held::Stopped),
            _ = lease_ended.cancelled() => return Some(Held::Lost),
        }
        let mut tables: Vec<&str> = breaks.iter().map(|b| b.table.as_str()).collect();
        tables.dedup();
        for table in tables {
            let of_table: Vec<Break> =
                breaks.iter().filter(|b| b.table == table).cloned().collect();
            if let Err(error) = self.schema.resolve_if_repaired(table, &of_table).await {
                tracing::debug!(error = %error_chain(&error), "could not read a paused table's columns");
            }
        }
        None
    }

    /// Starts one replication session: streaming, a retry after waiting
    /// (the slot in use, a transient error), or the end of the run.
    async fn start_source(
        &mut self,
        lease: &Lease,
        starts: &mut Starts,
    ) -> Result<Started, RunError> {
        let Self { settings, config, counters, shutdown, progress, history, .. } = self;
        let lease_ended = lease.ended();
        starts.attempt += 1;
        counters.health.set_phase(Phase::Connecting);
        let publication = !std::mem::take(&mut starts.publication_checked);
        let acked = progress.acked();
        let started = tokio::select! {
            s = Source::start(settings, config, acked, history.as_ref(), counters.clone(), publication) => s,
            _ = shutdown.cancelled() => return Ok(Started::Ended(Held::Stopped)),
            _ = lease_ended.cancelled() => return Ok(Started::Ended(Held::Lost)),
        };
        match started {
            Ok(source) => {
                if source.started_over() {
                    progress.start_over();
                }
                *history = source.history().cloned().or(history.take());
                tracing::info!(postgres = %settings.display(), "connected to postgres");
                counters.health.set_phase(Phase::Streaming);
                *starts = Starts::new();
                Ok(Started::Streaming(Box::new(source)))
            }
            Err(PgError::SlotInUse(_)) => {
                // Another session streams from the slot (an instance of
                // an older ciosync, another consumer, or our previous
                // session not yet gone): stand by quietly.
                counters.health.set_phase(Phase::Standby);
                if !starts.slot_in_use_said {
                    starts.slot_in_use_said = true;
                    tracing::info!(
                        slot = %config.postgres.slot,
                        "the replication slot is in use by another session; standing by to \
                         stream once it is free"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(lease::STANDBY_RETRY) => Ok(Started::Retry),
                    _ = shutdown.cancelled() => Ok(Started::Ended(Held::Stopped)),
                }
            }
            Err(error) if error.is_transient() => {
                let what = "cannot start replication";
                let attempt = starts.attempt;
                if !retry_later(&mut starts.backoff, attempt, settings, &error, what, shutdown)
                    .await
                {
                    return Ok(Started::Ended(Held::Stopped));
                }
                if lease.is_lost() {
                    return Ok(Started::Ended(Held::Lost));
                }
                Ok(Started::Retry)
            }
            Err(error) => Err(RunError::Source(error)),
        }
    }

    /// One replication session, until shutdown or an error; it lets go of
    /// the stream when its SQL session or the lease's ends.
    async fn session(
        &mut self,
        lease: &Lease,
        source: &mut Source,
        breaker: &mut Breaker,
        windows: &Windows,
    ) -> Result<(), SessionError> {
        let session_ended = lease.ended().child_token();
        let sql_ended = source.session_ended();
        let forward = session_ended.clone();
        tokio::spawn(async move {
            sql_ended.cancelled().await;
            forward.cancel();
        });
        let shutdown_timeout = Duration::from_secs(self.config.pipeline.shutdown_timeout_secs);
        self.schema.start_session().await.map_err(SessionError::Source)?;
        let mut session = Session {
            source,
            sink: &mut self.sink,
            breaker,
            mapper: &self.mapper,
            schema: &mut self.schema,
            windows,
            progress: &mut self.progress,
            counters: &self.counters,
            in_transaction: false,
            unacked: UnackedCommits::default(),
            chunks: Default::default(),
            session_ended,
        };
        session.run(&self.shutdown, shutdown_timeout).await
    }
}

/// Where starting replication sessions stands: the backoff between failed
/// starts, whether standing by for a busy slot was said already, and
/// whether the publication was just checked (by the initial-copy phase,
/// right before the first session: not checked twice at start-up).
struct Starts {
    attempt: u64,
    backoff: Backoff,
    slot_in_use_said: bool,
    publication_checked: bool,
}

impl Starts {
    fn new() -> Self {
        let backoff = Backoff::new(MAX_RECONNECT_BACKOFF);
        Self { attempt: 0, backoff, slot_in_use_said: false, publication_checked: false }
    }
}

/// What starting a replication session came to.
enum Started {
    Streaming(Box<Source>),
    /// Waited (the slot in use, a transient error); try again.
    Retry,
    /// Shutdown or the lease's end came first.
    Ended(Held),
}

impl From<SessionError> for RunError {
    /// A session's error that ends the run (transient source errors are
    /// retried before they get here).
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Source(error) => RunError::Source(error),
            SessionError::Sink(error) => RunError::Sink(error),
            SessionError::Held(error) => RunError::HeldDeletes(error),
            // `stream` waits out a pause; it never ends the run.
            SessionError::Paused(_) => RunError::Source(PgError::SqlSessionEnded),
        }
    }
}

/// Logs a transient failure (without secrets) and waits the next backoff
/// step; `false` if shutdown came first.
async fn retry_later(
    backoff: &mut Backoff,
    attempt: u64,
    settings: &ConnectionSettings,
    error: &PgError,
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
