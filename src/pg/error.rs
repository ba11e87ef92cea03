//! Postgres failures as every layer sees them, each classified once as
//! transient (reconnect and retry) or definite (the operator must fix it).

use super::tls;

/// A Postgres failure (SQL, replication, TLS, a lost slot), classified by
/// what happens next: [`PgError::is_transient`].
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A SQL statement failed; usually the connection (transient).
    #[error("postgres: could not {what}")]
    Sql {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The replication connection failed.
    #[error("replication connection failed")]
    Replication(#[source] pgwire_replication::PgWireError),
    /// The stream broke the protocol in a way that loses changes if skipped;
    /// a new session starts over from the last acknowledgement.
    #[error("replication stream out of step: {0}")]
    Protocol(String),
    /// Another session streams from the slot (SQLSTATE 55006): another
    /// ciosync instance, another consumer, or our previous session that the
    /// server has not ended yet. Retried quietly (see `pipeline`).
    #[error("the replication slot is in use by another session")]
    SlotInUse(#[source] pgwire_replication::PgWireError),
    /// Another session is still creating the slot (it is active and has
    /// no consistent point yet): a previous ciosync killed while it waited
    /// for running transactions, whose walsender has not noticed yet. The
    /// slot is dropped if that session dies, so it is neither used nor
    /// recorded as ours until it is finished. Retried.
    #[error(
        "replication slot {0} is still being created by another session (a previous ciosync \
         stopped while creating it?); waiting until it is created or dropped"
    )]
    SlotBeingCreated(String),
    /// The stream ended without being asked to.
    #[error("the replication stream ended")]
    Ended,
    /// The SQL session beside the stream ended (Postgres shutting down,
    /// the session terminated, the network gone); the stream is let go so
    /// it cannot hold up a server shutdown.
    #[error("the postgres session beside the replication stream ended (server shutting down?)")]
    SqlSessionEnded,
    /// Something the operator must fix; the message says what.
    #[error("{0}")]
    Definite(String),
    /// A TLS handshake that no retry fixes (a certificate that fails
    /// verification, a server without TLS); the message says what to change.
    #[error("{refusal}")]
    Tls {
        refusal: tls::TlsRefusal,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The slot ciosync streamed from is gone; changes since it was lost
    /// never reached Customer.io. Never recreated silently (see `source::slot`).
    #[error("{}", lost_message(slot, *how))]
    SlotLost { slot: String, how: Lost },
}

impl PgError {
    /// Builds a `map_err` closure for a failed SQL step; a TLS refusal
    /// (only possible while connecting) becomes [`PgError::Tls`].
    pub fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| match tls::refusal(&source) {
            Some(refusal) => Self::Tls { refusal, source: Box::new(source) },
            None => Self::Sql { what, source },
        }
    }

    /// Like [`PgError::sql`] for a statement that stores rows, except that
    /// Postgres refusing the data itself ([`data_refusal`]) is definite and
    /// keeps only its SQLSTATE: its DETAIL and message quote the row, which
    /// is customer data, and no retry would store it anyway.
    pub fn stored(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| match data_refusal(&source) {
            Some(code) => Self::Definite(format!(
                "postgres: could not {what}: the data was refused (SQLSTATE {code})"
            )),
            None => Self::sql(what)(source),
        }
    }

    /// Wraps a replication connection failure; a TLS refusal becomes
    /// [`PgError::Tls`].
    pub fn replication(error: pgwire_replication::PgWireError) -> Self {
        match tls::refusal(&error) {
            Some(refusal) => Self::Tls { refusal, source: Box::new(error) },
            None => Self::Replication(error),
        }
    }

    /// Whether reconnecting may help. Unknown means transient; a refused login
    /// or a missing privilege is definite.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Definite(_) | Self::Tls { .. } | Self::SlotLost { .. } => false,
            Self::Sql { source, .. } => {
                !source.code().is_some_and(|c| is_definite_sqlstate(c.code()))
            }
            Self::Replication(e) => {
                !e.is_auth() && !sqlstate_of(&e.to_string()).is_some_and(is_definite_sqlstate)
            }
            Self::Ended
            | Self::SqlSessionEnded
            | Self::Protocol(_)
            | Self::SlotInUse(_)
            | Self::SlotBeingCreated(_) => true,
        }
    }
}

/// The SQLSTATE of an error about the data itself (class 22, a value the
/// column cannot hold, or 23, a constraint the row breaks).
pub fn data_refusal(error: &tokio_postgres::Error) -> Option<String> {
    let code = error.code()?.code();
    (code.starts_with("22") || code.starts_with("23")).then(|| code.to_owned())
}

/// SQLSTATEs that no retry fixes: authentication (class 28), a missing
/// object or privilege and other rule violations (class 42), a missing
/// database (3D000), a server setting such as `wal_level` (55000).
/// Except 42710 (duplicate object): another instance created the same
/// publication or slot a moment earlier, and a retry finds it.
pub fn is_definite_sqlstate(code: &str) -> bool {
    code != "42710"
        && (code.starts_with("28") || code.starts_with("42") || code == "3D000" || code == "55000")
}

/// The SQLSTATE in pgwire-replication's error text, `… (SQLSTATE 42704)`.
pub fn sqlstate_of(text: &str) -> Option<&str> {
    let start = text.find("(SQLSTATE ")? + "(SQLSTATE ".len();
    text.get(start..start + 5)
}

/// How the slot was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// It no longer exists.
    Dropped,
    /// It exists but Postgres invalidated it (`wal_status` `lost`).
    Invalidated,
}

/// The error line of a lost slot: what happened, what it means, the way back.
pub fn lost_message(slot: &str, how: Lost) -> String {
    let what = match how {
        Lost::Dropped => {
            "was dropped, or this server took over from the one that had it (a promoted standby \
             keeps a slot only when it is a failover slot, PostgreSQL 17+ with \
             sync_replication_slots on the standby)"
        }
        Lost::Invalidated => {
            "was invalidated: Postgres removed WAL it still needed (it retained more than \
             max_slot_wal_keep_size)"
        }
    };
    format!(
        "replication slot {slot} is lost: it {what}. Changes committed since its last \
         acknowledged position never reached Customer.io, so ciosync does not create a new slot \
         by itself. To recover, start once with CIOSYNC_POSTGRES_ON_SLOT_LOST=recreate_and_backfill \
         (or set postgres.on_slot_lost = \"recreate_and_backfill\"): it recreates the slot and \
         backfills every synced table (sending only what Customer.io lacks), then every \
         [[devices]] table (every row's device); then `ciosync \
         deletes gone --send` removes the customers deleted meanwhile"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_classifies_sqlstates() {
        assert_eq!(sqlstate_of("publication \"p\" does not exist (SQLSTATE 42704)"), Some("42704"));
        assert_eq!(sqlstate_of("io error"), None);
        for definite in ["28P01", "42501", "42P01", "3D000", "55000"] {
            assert!(is_definite_sqlstate(definite), "{definite}");
        }
        for transient in ["55006", "57P01", "08006", "53300", "42710"] {
            assert!(!is_definite_sqlstate(transient), "{transient}");
        }
    }

    #[test]
    fn the_message_names_the_slot_the_cause_and_the_way_back() {
        for how in [Lost::Dropped, Lost::Invalidated] {
            let text = lost_message("users_sync", how);
            assert!(text.starts_with("replication slot users_sync is lost"), "{text}");
            assert!(text.contains("CIOSYNC_POSTGRES_ON_SLOT_LOST=recreate_and_backfill"), "{text}");
            assert!(text.contains("postgres.on_slot_lost"), "{text}");
        }
        assert!(lost_message("s", Lost::Invalidated).contains("max_slot_wal_keep_size"));
        assert!(lost_message("s", Lost::Dropped).contains("was dropped"));
    }
}
