//! One replication session's loop: read the stream (unless the memory
//! budget is used up), map each change, route it past the breaker into the
//! sink, and acknowledge each commit once it and everything before it was
//! delivered (the rule in the [`super`] module doc).

use std::collections::VecDeque;
use std::time::Duration;

use pgwire_replication::Lsn;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Progress;
use crate::backfill::{self, Watermark, Windows};
use crate::customer::CustomerOp;
use crate::delete_guard::breaker::{self, Breaker};
use crate::mapping::report::{report, Producer};
use crate::mapping::{DropReason, Mapper};
use crate::pg::PgError;
use crate::schema::guard::{Admit, SchemaGuard};
use crate::schema::Break;
use crate::sink::{Sink, SinkError};
use crate::source::{Source, SourceEvent};
use crate::telemetry::by_table::Operation;
use crate::telemetry::health::now_ms;
use crate::telemetry::lag::UnackedCommits;
use crate::telemetry::Counters;

fn session_ended() -> SessionError {
    SessionError::Source(PgError::SqlSessionEnded)
}

#[derive(Debug)]
pub(super) enum SessionError {
    Source(PgError),
    Sink(SinkError),
    /// Writing `ciosync.held_deletes` failed for good.
    Held(PgError),
    /// A change of a table broken under `on_schema_change = "pause"` came:
    /// what came before it was delivered (and acknowledged up to the
    /// transaction before); nothing from it on was sent.
    Paused(Vec<Break>),
}

/// One replication session's loop state.
pub(super) struct Session<'a> {
    pub(super) source: &'a mut Source,
    pub(super) sink: &'a mut Sink,
    /// The mass-delete circuit breaker, between the mapper and the sink.
    pub(super) breaker: &'a mut Breaker,
    pub(super) mapper: &'a Mapper,
    /// Judges Relation messages and admits each change of a broken table.
    pub(super) schema: &'a mut SchemaGuard,
    /// Backfill chunks between their watermarks.
    pub(super) windows: &'a Windows,
    pub(super) progress: &'a mut Progress,
    pub(super) counters: &'a Counters,
    pub(super) in_transaction: bool,
    /// Commit times of what is not acknowledged yet, for the lag in seconds.
    pub(super) unacked: UnackedCommits,
    /// Backfill chunks in the sink, by the sink's mark when they were
    /// pushed, each told once delivered (dropped with the session: the
    /// runner then resumes from its last recorded key).
    pub(super) chunks: VecDeque<(u64, oneshot::Sender<()>)>,
    /// Cancelled when the SQL session beside the stream ends: every wait of
    /// the session gives up then, so the stream is let go even while
    /// nothing is read from it (see `Source::session_ended`).
    pub(super) session_ended: CancellationToken,
}

impl Session<'_> {
    pub(super) async fn run(
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
                    self.tell_delivered();
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
                    match self.mapper.customer_ids(&change) {
                        Some(keys) => self.windows.observe(&table, &keys),
                        None => self.windows.observe_unknown(&table),
                    }
                }
                let strip = match self.schema.admit(&change).await.map_err(SessionError::Source)? {
                    Admit::Pass => None,
                    Admit::Strip(strip) => Some(strip),
                    Admit::Pause(breaks) => {
                        Counters::add(&self.counters.schema_pauses, 1);
                        if !self.flush(shutdown, shutdown_timeout).await? {
                            return Ok(false);
                        }
                        return Err(SessionError::Paused(breaks));
                    }
                };
                let mut mapped = self.mapper.map(&change);
                if let Some((ops, reason)) = mapped.if_held.take() {
                    let customer =
                        ops.iter().find_map(CustomerOp::customer_id).unwrap_or_default().to_owned();
                    let table = change.table.qualified_name();
                    let held = tokio::select! {
                        held = self.sink.may_hold(&customer, &table) => held,
                        _ = shutdown.cancelled() => {
                            self.drain(shutdown_timeout).await?;
                            return Ok(false);
                        }
                        _ = self.session_ended.cancelled() => return Err(session_ended()),
                    };
                    match held {
                        true => {
                            let removal = ops.iter().any(|op| {
                                matches!(
                                    op,
                                    CustomerOp::Delete { .. } | CustomerOp::Suppress { .. }
                                )
                            });
                            if removal {
                                // Decided, whatever the breaker makes of it.
                                self.sink.removing(&customer);
                            }
                            mapped.ops.extend(ops);
                        }
                        false => mapped.skipped = Some(reason),
                    }
                }
                if let Some(strip) = strip {
                    // The break was said once; its columns missing from
                    // the row are counted with it, not logged per change.
                    let missing = mapped.dropped.len();
                    mapped.dropped.retain(|d| d.reason != DropReason::MissingColumn);
                    let left_out = strip.apply(&mut mapped.ops) + missing - mapped.dropped.len();
                    Counters::add(&self.counters.schema_left_out, left_out as u64);
                }
                report(&mapped, &change.table, Producer::Stream, self.counters);
                let guarded = breaker::is_lone_removal(&mapped.ops);
                for op in mapped.ops {
                    if self.breaker.passes(&op, guarded) {
                        self.sink.push_releasing(op, &mapped.released);
                        continue;
                    }
                    let routed = tokio::select! {
                        routed = self.breaker.route(op, guarded, change.position.commit_lsn, &mapped.absent) => Some(routed),
                        _ = shutdown.cancelled() => None,
                        _ = self.session_ended.cancelled() => return Err(session_ended()),
                    };
                    let Some(routed) = routed else {
                        self.drain(shutdown_timeout).await?;
                        return Ok(false);
                    };
                    if let Some(op) = routed.map_err(SessionError::Held)? {
                        self.sink.push_releasing(op, &mapped.released);
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
            SourceEvent::Relation(table) => {
                self.schema.on_relation(&table).await.map_err(SessionError::Source)?;
            }
            SourceEvent::Heartbeat => {
                // Its transaction's commit is acknowledged like any other.
                Counters::add(&self.counters.heartbeats_received, 1);
            }
            SourceEvent::Watermark(Watermark::Low(id)) => self.windows.open(id),
            SourceEvent::Watermark(Watermark::High(id)) => {
                if !self.send_chunk(id, shutdown, shutdown_timeout).await? {
                    return Ok(false);
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

    /// At a chunk's high watermark: push what the stream left of it into
    /// the sink and tell the runner, which reads its next chunk meanwhile;
    /// the chunk is told delivered once its operations complete
    /// ([`Self::tell_delivered`]). `Ok(false)` when shutdown came.
    ///
    /// A chunk may hold far more than the memory budget (1,000 wide rows),
    /// so its operations go into the sink the way the stream's do: one at a
    /// time, each only while the budget has room ([`Self::wait_for_room`]).
    /// The sink therefore holds less than the budget plus the last
    /// operation pushed, as while streaming. Nothing else changes: the
    /// operations are pushed in the chunk's order at the high watermark's
    /// place in the stream (nothing is read meanwhile), so every later
    /// change of those rows follows them.
    async fn send_chunk(
        &mut self,
        id: backfill::ChunkId,
        shutdown: &CancellationToken,
        shutdown_timeout: Duration,
    ) -> Result<bool, SessionError> {
        let Some(closed) = self.windows.close(id) else { return Ok(true) };
        for op in closed.ops {
            if !self.wait_for_room(shutdown, shutdown_timeout).await? {
                return Ok(false);
            }
            self.sink.push(op);
        }
        let (done, delivered) = oneshot::channel();
        let _ = closed.handed.send(backfill::Handed { yielded: closed.yielded, delivered });
        self.chunks.push_back((self.sink.mark(), done));
        self.tell_delivered();
        Ok(true)
    }

    /// Tells each chunk whose operations all completed, oldest first.
    fn tell_delivered(&mut self) {
        while let Some((mark, _)) = self.chunks.front() {
            if !self.sink.delivered_through(*mark) {
                break;
            }
            if let Some((_, done)) = self.chunks.pop_front() {
                let _ = done.send(());
            }
        }
    }

    /// Returns once the memory budget has room, taking completed batches
    /// into account (and acknowledging what they complete) as the main
    /// loop does while backpressure keeps it from reading. `Ok(false)` when
    /// shutdown came first (what waits got its drain); an error when the
    /// SQL session ended, as everywhere in the session.
    async fn wait_for_room(
        &mut self,
        shutdown: &CancellationToken,
        shutdown_timeout: Duration,
    ) -> Result<bool, SessionError> {
        while self.sink.is_full() {
            let in_flight = self.sink.has_in_flight();
            let deadline = self.sink.deadline();
            if !in_flight && deadline.is_none() {
                // Full with nothing on its way out: only commits no longer
                // held by anything, which acknowledging frees, can be left.
                self.ack_completed();
                if self.sink.is_full() {
                    return Err(SessionError::Sink(SinkError::Stuck));
                }
                break;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.drain(shutdown_timeout).await?;
                    return Ok(false);
                }
                _ = self.session_ended.cancelled() => return Err(session_ended()),
                finished = self.sink.completion(), if in_flight => {
                    self.sink.complete(finished).map_err(SessionError::Sink)?;
                    self.ack_completed();
                    self.tell_delivered();
                }
                // A send held back (the quiet time after a reconnect).
                _ = sleep_until_opt(deadline) => self.sink.on_deadline(),
            }
        }
        Ok(true)
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
        self.tell_delivered();
        Ok(true)
    }

    /// At shutdown: give what waits `timeout` to be delivered, then stop.
    async fn drain(&mut self, timeout: Duration) -> Result<(), SessionError> {
        match tokio::time::timeout(timeout, self.sink.flush()).await {
            Ok(Ok(())) => {
                self.ack_completed();
                self.tell_delivered();
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
