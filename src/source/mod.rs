//! The replication source: Postgres WAL in, row changes out.
//!
//! ```text
//!  Postgres ──pgoutput──▶ pgwire-replication ──bytes──▶ pgoutput::decode ──▶ RelationCache
//!                                                                              │
//!                       SourceEvent::{Begin, Change, Truncate, Commit, Keepalive} ◀┘
//! ```
//!
//! One [`Source`] is one replication session: it creates the publication and
//! slot if missing, starts streaming from the last acknowledged position, and
//! yields events in commit order, each Relation message resolved. A session
//! that breaks is dropped and a new one started (see `pipeline`); Postgres
//! then replays everything after the last acknowledgement.

pub mod keeper;
pub mod keys;
pub mod living;
pub mod message;
pub mod own_filters;
pub mod pgoutput;
#[cfg(test)]
mod pgoutput_roundtrip;
pub mod reader;
pub mod relation;
pub mod row_filter;
pub mod setup;
pub mod slot;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use tokio_util::sync::CancellationToken;

use crate::change::{Datum, Row, RowChange, RowOp, WalPosition};
use crate::config::Config;
use crate::pg::connection::ConnectionSettings;
use crate::pg::gated::Gated;
use crate::pg::PgError;
use crate::telemetry::Counters;
use pgoutput::{OldTupleKind, PgOutputMessage, Tuple, TupleValue};
use relation::RelationCache;
use setup::SlotState;

/// Seconds between the Unix epoch and Postgres's epoch (2000-01-01).
const PG_EPOCH_OFFSET_SECS: i64 = 946_684_800;
/// Events buffered between the replication connection and the pipeline; it
/// bounds memory while the pipeline waits on Customer.io (the slot holds the rest).
const BUFFER_EVENTS: usize = 1024;

/// What the source yields, in commit order.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// A transaction starts; its changes follow.
    Begin,
    /// A row change of a synced table.
    Change(RowChange),
    /// A TRUNCATE of these synced tables (`schema.table`).
    Truncate { tables: Vec<String> },
    /// The transaction committed; `end_lsn` is what acknowledging it means.
    /// `commit_time` in Unix seconds.
    Commit { end_lsn: Lsn, commit_time: i64 },
    /// The server's WAL position while nothing else is sent.
    Keepalive { wal_end: Lsn },
    /// This slot's heartbeat (see [`keeper`]) came back: its transaction's
    /// commit follows.
    Heartbeat,
    /// A backfill watermark of this slot, in its place in the stream.
    Watermark(message::Watermark),
    /// A table's description (a Relation message, resolved): before its
    /// first change in a session and after every ALTER.
    Relation(Arc<crate::change::Table>),
}

/// One replication session.
pub struct Source {
    client: ReplicationClient,
    sql: tokio_postgres::Client,
    /// Cancelled when `sql`'s connection ends.
    sql_ended: CancellationToken,
    relations: RelationCache,
    commit_time: i64,
    /// The next change's place in its transaction.
    position: WalPosition,
    /// The slot streamed from: its own logical messages carry it.
    slot: String,
    /// The replication origins of this slot's webhook write-backs and
    /// actions, whose transactions are skipped (they must not echo back to
    /// Customer.io).
    own_origins: Vec<String>,
    /// The current transaction carries one of [`Source::own_origins`].
    in_own_write_back: bool,
    /// The server's WAL history, from IDENTIFY_SYSTEM.
    history: Option<History>,
    started_over: bool,
    counters: Arc<Counters>,
}

/// Which WAL history an LSN belongs to: the cluster's system identifier and
/// timeline. A promoted standby keeps the identifier and starts a new
/// timeline, after which the same LSN may name different changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub system_id: String,
    pub timeline: u32,
}

/// IDENTIFY_SYSTEM on a gated session. `None` when the server refuses the
/// command but keeps the session (a proxy in between, say): the history is
/// then unknown and nothing is rebased. A session that ended (refused login,
/// unreachable host) is its error.
async fn identify(client: &mut Gated, config: &Config) -> Result<Option<History>, PgError> {
    match client.identify_system().await {
        Ok(id) => Ok(Some(History { system_id: id.system_id, timeline: id.timeline })),
        Err(error) if client.is_running() => {
            tracing::debug!(error = %error, "IDENTIFY_SYSTEM refused; the WAL history is unknown");
            Ok(None)
        }
        Err(error) => Err(classify_start_error(error, config)),
    }
}

/// Turns an existing ordinary slot into a failover slot when
/// `postgres.failover_slot` wants one and the server has them (17+), on the
/// gated session before it streams (the slot must not be in use). A refusal
/// is logged, not fatal: the slot still streams, and `check` says what is
/// missing.
async fn make_failover_slot(
    client: &mut Gated,
    sql: &tokio_postgres::Client,
    config: &Config,
) -> Result<(), PgError> {
    if !slot::failover_wanted(sql, config).await? {
        return Ok(());
    }
    let slot = &config.postgres.slot;
    match client.simple_query(&slot::alter_to_failover_command(slot)).await {
        Ok(_) => tracing::info!(%slot, "the replication slot is now a failover slot"),
        Err(error) if client.is_running() => tracing::warn!(
            %slot,
            error = %error,
            "could not make the replication slot a failover slot; it streams on, but a \
             promoted standby will not have it"
        ),
        Err(error) => return Err(classify_start_error(error, config)),
    }
    Ok(())
}

impl Source {
    /// Connects, creates the publication (if `check_publication`: not when
    /// it was checked just before) and the slot if missing, and starts
    /// streaming after `resume_from` (the last acknowledged position; 0 means
    /// the slot's own `confirmed_flush_lsn`). `previous` is the WAL history
    /// `resume_from` was reached on; on another one (a promoted standby) the
    /// stream starts at the slot's own position instead ([`Source::started_over`]).
    pub async fn start(
        settings: &ConnectionSettings,
        config: &Config,
        resume_from: Lsn,
        previous: Option<&History>,
        counters: Arc<Counters>,
        check_publication: bool,
    ) -> Result<Self, PgError> {
        let located = settings.connect_sql_located().await.map_err(PgError::sql("connect"))?;
        let (sql, sql_ended, host) = (located.client, located.ended, located.host);
        // This session idles between relation lookups, and its end stops the
        // stream (see `session_ended`): a server's idle_session_timeout (Postgres 14+)
        // must not end it. Older servers refuse the setting, which is fine.
        let _ = sql.batch_execute("SET idle_session_timeout = 0").await;
        let slot = setup::ensure(&sql, config, &counters, check_publication).await?;
        let open = |from: Lsn| async move {
            let mut relayed = settings
                .replication_config(
                    host,
                    &config.postgres.slot,
                    &config.postgres.publication,
                    config.status_interval(),
                )
                .await?;
            relayed.config = relayed.config.with_start_lsn(from).with_buffer_size(BUFFER_EVENTS);
            Gated::connect(relayed).await.map_err(PgError::replication)
        };
        let mut client = open(resume_from).await?;
        let mut history = identify(&mut client, config).await?;
        let mut resume_from = resume_from;
        let started_over = resume_from != Lsn::from_u64(0)
            && matches!((previous, &history), (Some(before), Some(now)) if before != now);
        if started_over {
            // The acknowledged position belongs to the old server's WAL; on
            // this one the same LSN may name a later change that was never
            // sent. The slot's own position is one this server's WAL agrees
            // with (a synced failover slot lags what was acknowledged, so
            // some changes come again: duplicates, never gaps).
            tracing::warn!(
                slot = %config.postgres.slot,
                acked = %resume_from,
                "the server's WAL history changed (a promoted standby, or a restore): streaming \
                 from the slot's own position; changes delivered since it may be sent again"
            );
            drop(client);
            resume_from = Lsn::from_u64(0);
            client = open(resume_from).await?;
            history = identify(&mut client, config).await?;
        }
        // Only a slot nobody streams from can be altered.
        if let SlotState::Usable { failover: Some(false), active: false, .. } = slot {
            make_failover_slot(&mut client, &sql, config).await?;
        }
        let mut client = client.into_client();
        client.start().await.map_err(PgError::replication)?;
        client.wait_started().await.map_err(|e| classify_start_error(e, config))?;
        tracing::info!(
            slot = %config.postgres.slot,
            resume_from = %resume_from,
            timeline = history.as_ref().map(|h| h.timeline),
            "streaming from the replication slot"
        );
        Ok(Self {
            client,
            sql,
            sql_ended,
            relations: RelationCache::default(),
            commit_time: 0,
            position: WalPosition::default(),
            own_origins: config.own_origins(),
            slot: config.postgres.slot.clone(),
            in_own_write_back: false,
            history,
            started_over,
            counters,
        })
    }

    /// The WAL history this session streams from, when the server said.
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// Whether this session started at the slot's own position because the
    /// server's WAL history differs from the previous session's: the
    /// pipeline's acknowledged position means nothing here any more.
    pub fn started_over(&self) -> bool {
        self.started_over
    }

    /// Waits for the next raw replication event. Cancellation safe: nothing
    /// is lost if the future is dropped, so this is what the pipeline races
    /// against its timers; [`Source::process`] then runs to completion (a
    /// Relation message being resolved must not be lost).
    pub async fn recv(&mut self) -> Result<ReplicationEvent, PgError> {
        match self.client.recv().await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(PgError::Ended),
            Err(error) => Err(PgError::Replication(error)),
        }
    }

    /// A token cancelled when the SQL session beside the stream ends; the
    /// pipeline then lets go of the stream ([`PgError::SqlSessionEnded`])
    /// whatever it waits for. A fast shutdown of Postgres terminates that
    /// session first and then waits for every walsender's client to confirm
    /// all WAL sent, which ciosync cannot do while Customer.io fails: holding
    /// on to the stream would hold the server's shutdown (and the
    /// application's database) until Customer.io recovers. Letting go loses
    /// nothing: what was not acknowledged is sent again after reconnecting.
    pub fn session_ended(&self) -> CancellationToken {
        self.sql_ended.clone()
    }

    /// Turns a raw event into what the pipeline sees; `None` for events that
    /// stay inside the source (Type, Origin, messages of other slots).
    pub async fn process(
        &mut self,
        event: ReplicationEvent,
    ) -> Result<Option<SourceEvent>, PgError> {
        match event {
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                Counters::raise(&self.counters.last_received_lsn, wal_end.as_u64());
                Ok(Some(SourceEvent::Keepalive { wal_end }))
            }
            ReplicationEvent::Begin { final_lsn, commit_time_micros, .. } => {
                self.commit_time = commit_time_micros.div_euclid(1_000_000) + PG_EPOCH_OFFSET_SECS;
                self.position = WalPosition { commit_lsn: final_lsn.as_u64(), index: 0 };
                self.in_own_write_back = false;
                Ok(Some(SourceEvent::Begin))
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                Counters::raise(&self.counters.last_received_lsn, end_lsn.as_u64());
                Ok(Some(SourceEvent::Commit { end_lsn, commit_time: self.commit_time }))
            }
            ReplicationEvent::XLogData { data, .. } => self.on_data(&data).await,
            ReplicationEvent::Message { prefix, content, .. } => {
                Ok(match message::recognize(&self.slot, &prefix, &content) {
                    Some(message::Own::Heartbeat) => Some(SourceEvent::Heartbeat),
                    Some(message::Own::Watermark(w)) => Some(SourceEvent::Watermark(w)),
                    None => None,
                })
            }
            ReplicationEvent::StoppedAt { .. } => Err(PgError::Ended),
        }
    }

    /// Decodes one pgoutput message. A row message that does not decode is
    /// logged, counted and skipped: one bad row never stops the stream. A
    /// Relation message that does not decode, or a change of a relation never
    /// described, ends the session instead: skipping would silently drop
    /// every later change of that table, while a new session starts with
    /// fresh Relation messages from the last acknowledgement.
    async fn on_data(&mut self, data: &Bytes) -> Result<Option<SourceEvent>, PgError> {
        let message = match pgoutput::decode(data) {
            Ok(m) => m,
            Err(error) if data.first() == Some(&b'R') => {
                return Err(PgError::Protocol(error.to_string()));
            }
            Err(error) => {
                self.skip_bad_row(&error.to_string());
                return Ok(None);
            }
        };
        // pgoutput names a transaction's origin before its changes.
        if let PgOutputMessage::Origin { name, .. } = &message {
            self.in_own_write_back =
                self.own_origins.iter().any(|own| crate::config::origin::is_pooled(name, own));
            return Ok(None);
        }
        if self.in_own_write_back
            && matches!(
                message,
                PgOutputMessage::Insert { .. }
                    | PgOutputMessage::Update { .. }
                    | PgOutputMessage::Delete { .. }
                    | PgOutputMessage::Truncate { .. }
            )
        {
            Counters::add(&self.counters.changes_skipped_write_back, 1);
            return Ok(None);
        }
        let (oid, op) = match message {
            PgOutputMessage::Relation { oid, namespace, name, replica_identity, columns } => {
                let table = self
                    .relations
                    .update(&self.sql, oid, namespace, name, replica_identity, columns)
                    .await?;
                return Ok(Some(SourceEvent::Relation(table)));
            }
            PgOutputMessage::Truncate { relation_oids, .. } => {
                let tables = relation_oids
                    .iter()
                    .filter_map(|oid| self.relations.get(*oid))
                    .map(|t| t.qualified_name())
                    .collect();
                return Ok(Some(SourceEvent::Truncate { tables }));
            }
            PgOutputMessage::Insert { relation_oid, new } => (relation_oid, RawOp::Insert { new }),
            PgOutputMessage::Update { relation_oid, old, new } => {
                (relation_oid, RawOp::Update { old, new })
            }
            PgOutputMessage::Delete { relation_oid, old } => {
                (relation_oid, RawOp::Delete { old: old.1 })
            }
            _ => return Ok(None),
        };
        let Some(table) = self.relations.get(oid).cloned() else {
            return Err(PgError::Protocol(format!(
                "a change of relation {oid}, which was never described"
            )));
        };
        let width = table.columns.len();
        let row = |tuple: Tuple| to_row(tuple, width);
        let op = match op {
            RawOp::Insert { new } => row(new).map(|new| RowOp::Insert { new }),
            RawOp::Update { old, new } => {
                let old_is_key_only = matches!(old, Some((OldTupleKind::Key, _)));
                let old = match old {
                    Some((_, tuple)) => row(tuple).map(Some),
                    None => Some(None),
                };
                old.zip(row(new)).map(|(old, new)| RowOp::Update { old, old_is_key_only, new })
            }
            RawOp::Delete { old } => row(old).map(|old| RowOp::Delete { old }),
        };
        match op {
            Some(op) => {
                let position = self.position;
                self.position.index += 1;
                Ok(Some(SourceEvent::Change(RowChange {
                    table,
                    op,
                    commit_time: self.commit_time,
                    position,
                })))
            }
            None => {
                self.skip_bad_row("tuple does not match its relation's columns");
                Ok(None)
            }
        }
    }

    fn skip_bad_row(&self, reason: &str) {
        Counters::add(&self.counters.bad_messages, 1);
        tracing::error!(reason, "skipped a replication message that could not be decoded");
    }

    /// Acknowledges `lsn`: everything before it was delivered. Sent to
    /// Postgres within the status interval.
    pub fn ack(&self, lsn: Lsn) {
        self.client.update_applied_lsn(lsn);
    }

    /// Sends `final_ack` to Postgres (waiting at most `wait` for the status
    /// update to go out), then ends the session cleanly.
    pub async fn close(mut self, final_ack: Lsn, wait: Duration) {
        self.client.update_applied_lsn(final_ack);
        let metrics = self.client.metrics();
        let deadline = tokio::time::Instant::now() + wait;
        // The worker sends the ack on its next status update; stopping first
        // would close the stream without it. Keep draining so a worker parked
        // on a full buffer can still send it.
        while metrics.last_applied_lsn() < final_ack && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(50), self.client.recv()).await {
                Ok(Ok(Some(_))) | Err(_) => {}
                Ok(_) => break,
            }
        }
        if metrics.last_applied_lsn() < final_ack {
            tracing::warn!(ack = %final_ack, "final acknowledgement not confirmed sent");
        }
        let _ = tokio::time::timeout(wait, self.client.shutdown()).await;
    }
}

enum RawOp {
    Insert { new: Tuple },
    Update { old: Option<(OldTupleKind, Tuple)>, new: Tuple },
    Delete { old: Tuple },
}

/// A tuple as a row of `width` columns; `None` if it does not fit the relation.
fn to_row(tuple: Tuple, width: usize) -> Option<Row> {
    if tuple.len() != width {
        return None;
    }
    tuple
        .into_iter()
        .map(|value| match value {
            TupleValue::Null => Some(Datum::Null),
            TupleValue::UnchangedToast => Some(Datum::UnchangedToast),
            TupleValue::Text(bytes) => Some(Datum::Text(bytes)),
            // Binary output is never requested.
            TupleValue::Binary(_) => None,
        })
        .collect()
}

/// Start errors that no retry fixes get the fix in their message.
fn classify_start_error(error: pgwire_replication::PgWireError, config: &Config) -> PgError {
    let text = error.to_string();
    if crate::pg::error::sqlstate_of(&text) == Some("55006") || text.contains("is active for PID") {
        // Another consumer holds the slot: transient (it may be a previous
        // instance of ours that has not exited yet).
        return PgError::SlotInUse(error);
    }
    if crate::pg::tls::refusal(&error).is_some() {
        return PgError::replication(error);
    }
    if error.is_auth() || crate::pg::error::sqlstate_of(&text) == Some("42501") {
        return PgError::Definite(format!(
            "postgres refused replication: the role needs LOGIN and REPLICATION \
             (ALTER ROLE <role> REPLICATION) and access to slot {}",
            config.postgres.slot
        ));
    }
    PgError::Replication(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_refusals_are_definite() {
        let error = pgwire_replication::PgWireError::Tls(
            "TLS handshake failed: invalid peer certificate: UnknownIssuer".to_owned(),
        );
        let config = Config::from_toml(include_str!("../../config/example.toml"), Vec::new())
            .expect("the example config is valid");
        let error = classify_start_error(error, &config);
        assert!(matches!(
            error,
            PgError::Tls { refusal: crate::pg::tls::TlsRefusal::Certificate, .. }
        ));
        assert!(!error.is_transient());
    }
}
