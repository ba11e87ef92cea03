//! Which of several ciosync instances works a slot: the one holding its
//! lease. Run two (on two hosts, or as two replicas) for high availability:
//! one streams, the other stands by and takes over within seconds of the
//! first one's end, however it ended.
//!
//! # Why a lease, and not just the slot
//!
//! Postgres lets one session at a time stream from a slot (a second one is
//! refused with SQLSTATE 55006), but the slot is not held all the time: the
//! initial copy runs before anything streams, and the backfill runner and
//! the mass-delete breaker work beside the stream. Two instances doing those
//! at once would copy twice and run each backfill chunk twice, with
//! watermarks the other instance's stream does not expect. So everything a
//! run does with the slot happens while holding the lease: a session-level
//! advisory lock, `pg_try_advisory_lock`, keyed by the slot's name, on a
//! connection of its own. Postgres releases it when that session ends, so a
//! killed instance (kill -9, a lost host) frees it as soon as the server
//! sees the connection close; a network partition frees it when the server's
//! TCP keepalives give up, the same moment it frees the slot.
//!
//! An instance that loses the lease (its session ended: a server restart, a
//! failover, a terminated backend) stops its stream and everything beside it
//! and queues for the lease again: it may find it free at once, or stand by.
//! Heartbeats are written only while streaming, so a standby writes nothing;
//! the webhook receiver runs on every instance (storing a reporting event is
//! idempotent).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::error_chain;
use crate::pg::connection::ConnectionSettings;
use crate::pg::PgError;
use crate::sink::retry::Backoff;
use crate::telemetry::{Counters, Phase};

/// How often a standing-by instance asks for the lease again: the longest
/// it lags behind the end of the active instance's session.
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts to reach Postgres for the lease.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(30);

/// The advisory-lock key of a slot's lease: a 64-bit hash of a fixed prefix
/// and the slot name, computed by Postgres (`hashtextextended`, 11+).
const LOCK_KEY_SQL: &str = "pg_catalog.hashtextextended('ciosync slot lease ' || $1, 0)";

/// The held lease: the session holding the lock. Dropping it ends the
/// session, which releases the lock.
pub struct Lease {
    _client: tokio_postgres::Client,
    ended: CancellationToken,
}

impl Lease {
    /// Cancelled when the lease's session ends: the lease is lost.
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }

    /// Whether the lease's session has ended.
    pub fn is_lost(&self) -> bool {
        self.ended.is_cancelled()
    }
}

/// Waits until this instance holds the lease on `slot`; `None` when
/// `shutdown` comes first, an error when Postgres refuses in a way no retry
/// fixes (a refused login, a TLS refusal). While another instance holds it, the phase is
/// [`Phase::Standby`] (`/readyz` says so), one info line says so, and the
/// lease is asked for every [`STANDBY_RETRY`]. Connection failures are
/// retried with a growing backoff, as the stream's are.
pub async fn acquire(
    settings: &ConnectionSettings,
    slot: &str,
    counters: &Counters,
    shutdown: &CancellationToken,
) -> Result<Option<Lease>, PgError> {
    let mut backoff = Backoff::new(MAX_CONNECT_BACKOFF);
    let mut standing_by = false;
    let mut session: Option<(tokio_postgres::Client, CancellationToken)> = None;
    loop {
        let attempt = async {
            if session.as_ref().is_none_or(|(_, ended)| ended.is_cancelled()) {
                let located = settings
                    .connect_sql_located()
                    .await
                    .map_err(PgError::sql("connect for the slot's lease"))?;
                // The lease lasts as long as this idle session.
                let _ = located.client.batch_execute("SET idle_session_timeout = 0").await;
                session = Some((located.client, located.ended));
            }
            let (client, _) = session.as_ref().expect("connected above");
            let row = client
                .query_one(
                    &format!("SELECT pg_catalog.pg_try_advisory_lock({LOCK_KEY_SQL})"),
                    &[&slot],
                )
                .await
                .map_err(PgError::sql("ask for the slot's lease"))?;
            Ok::<bool, PgError>(row.get(0))
        };
        let delay = match attempt.await {
            Ok(true) => {
                let (client, ended) = session.take().expect("connected");
                if standing_by {
                    tracing::info!(%slot, "took over the slot's lease: this instance works it now");
                }
                return Ok(Some(Lease { _client: client, ended }));
            }
            Ok(false) => {
                backoff.reset();
                counters.health.set_phase(Phase::Standby);
                if !standing_by {
                    standing_by = true;
                    tracing::info!(
                        %slot,
                        "another ciosync instance works this slot; standing by to take over \
                         when it stops"
                    );
                }
                STANDBY_RETRY
            }
            Err(error) if !error.is_transient() => return Err(error),
            Err(error) => {
                session = None;
                // `starting` stays until Postgres first answers.
                if counters.health.phase() == Phase::Standby {
                    counters.health.set_phase(Phase::Connecting);
                }
                let delay = backoff.next_delay(None);
                tracing::warn!(
                    postgres = %settings.display(),
                    retry_in_ms = delay.as_millis() as u64,
                    error = %error_chain(&error),
                    "cannot ask for the slot's lease; retrying"
                );
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}
