//! A gated replication session: the commands ciosync runs on the
//! replication connection before START_REPLICATION (IDENTIFY_SYSTEM,
//! CREATE_REPLICATION_SLOT, ALTER_REPLICATION_SLOT), each answered or
//! failed, never awaited forever.
//!
//! pgwire-replication 0.5 hands a command to its worker task over a channel.
//! When the worker ends (the login refused, the connection lost) just as a
//! command goes out, the command and the means to answer it can stay in the
//! closed channel, and the client then waits forever: seen here about once
//! in 300 refused logins, a daemon hung at start instead of exiting or
//! retrying. The session's bytes pass through ciosync's own relay
//! ([`super::relay`]), whose end ciosync sees (the worker's side closed, or
//! the relay gave up waiting for it): a command still unanswered
//! [`ANSWER_AFTER_END`] after that fails with the worker's own error (a
//! live worker answers at once then: its socket is closed).

use std::future::Future;
use std::time::Duration;

use pgwire_replication::{
    IdentifySystem, PgWireError, QueryRow, ReplicationClient, ReplicationConfig,
};
use tokio_util::sync::CancellationToken;

/// How long a command may stay unanswered once the relay has ended.
pub const ANSWER_AFTER_END: Duration = Duration::from_secs(5);

/// The replication connection's settings, through a relay just opened
/// ([`super::connection::ConnectionSettings::replication_config`]).
pub struct Relayed {
    pub config: ReplicationConfig,
    /// Cancelled when the session's side of the relay closed (the worker
    /// ended), or when the relay ended (nobody connected in time, or the
    /// server closed).
    pub ended: CancellationToken,
    /// `connect_timeout_secs`: bounds the login with IDENTIFY_SYSTEM.
    pub login_timeout: Duration,
}

/// A replication session before START_REPLICATION.
pub struct Gated {
    client: ReplicationClient,
    relay_ended: CancellationToken,
    login_timeout: Duration,
}

impl Gated {
    /// Starts the session's worker (it connects and logs in on its own;
    /// a refusal is the error of the first command).
    pub async fn connect(relayed: Relayed) -> Result<Self, PgWireError> {
        let client = ReplicationClient::connect_gated(relayed.config).await?;
        Ok(Self { client, relay_ended: relayed.ended, login_timeout: relayed.login_timeout })
    }

    /// Runs `sql` (a replication command) and returns its rows.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<QueryRow>, PgWireError> {
        let ended = self.relay_ended.clone();
        match answered(self.client.simple_query(sql), &ended).await {
            Some(answer) => answer,
            None => Err(self.worker_error().await),
        }
    }

    /// IDENTIFY_SYSTEM, which the server answers at once: with the login
    /// before it (the first command waits for the login), within
    /// `connect_timeout_secs`, as libpq bounds a connection attempt. A
    /// server that accepts and then says nothing ends the session with a
    /// timeout error (not running any more, so not taken for a refusal of
    /// the command alone).
    pub async fn identify_system(&mut self) -> Result<IdentifySystem, PgWireError> {
        let ended = self.relay_ended.clone();
        let bounded = tokio::time::timeout(
            self.login_timeout,
            answered(self.client.identify_system(), &ended),
        );
        match bounded.await {
            Ok(Some(answer)) => answer,
            Ok(None) => Err(self.worker_error().await),
            // The session ended as the bound ran out: its own error says more.
            Err(_) if self.relay_ended.is_cancelled() => Err(self.worker_error().await),
            Err(_) => {
                self.client.abort();
                Err(PgWireError::Io(std::sync::Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer to the login and IDENTIFY_SYSTEM within connect_timeout_secs",
                ))))
            }
        }
    }

    /// Whether the worker still runs: a command it answered with an error
    /// leaves the session usable.
    pub fn is_running(&self) -> bool {
        self.client.is_running()
    }

    /// The client, to start streaming with (`start`, then `wait_started`,
    /// which end with the worker).
    pub fn into_client(self) -> ReplicationClient {
        self.client
    }

    /// Why the session ended, once the relay has: the worker's error.
    async fn worker_error(&mut self) -> PgWireError {
        tracing::debug!("the replication connection ended with a command unanswered");
        match tokio::time::timeout(ANSWER_AFTER_END, self.client.wait_started()).await {
            Ok(Err(error)) => error,
            Ok(Ok(())) | Err(_) => {
                // Not running on, so not taken for a refusal of one command.
                self.client.abort();
                PgWireError::Internal(
                    "the replication connection ended before the command was answered".into(),
                )
            }
        }
    }
}

/// `query`'s answer; `None` when the relay ended and `query` was still
/// unanswered [`ANSWER_AFTER_END`] later.
async fn answered<T>(query: impl Future<Output = T>, relay_ended: &CancellationToken) -> Option<T> {
    tokio::pin!(query);
    tokio::select! {
        biased;
        answer = &mut query => Some(answer),
        () = relay_ended.cancelled() => {
            tokio::time::timeout(ANSWER_AFTER_END, query).await.ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_answer_counts_also_after_the_relay_ended() {
        let ended = CancellationToken::new();
        ended.cancel();
        let late = async {
            tokio::time::sleep(ANSWER_AFTER_END / 2).await;
            7
        };
        assert_eq!(answered(late, &ended).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_never_answered_ends_once_the_relay_has() {
        let ended = CancellationToken::new();
        let cancel = {
            let ended = ended.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                ended.cancel();
            }
        };
        tokio::spawn(cancel);
        let started = tokio::time::Instant::now();
        assert_eq!(answered(std::future::pending::<()>(), &ended).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(3600) + ANSWER_AFTER_END);
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_relay_lasts_a_query_may_take_its_time() {
        let ended = CancellationToken::new();
        let slow = async {
            tokio::time::sleep(Duration::from_secs(7200)).await;
            "slot created"
        };
        assert_eq!(answered(slow, &ended).await, Some("slot created"));
    }
}
