//! The one Postgres connection of a webhook store (reporting events, or
//! the actions), shared behind a mutex, and what makes it safe to share:
//! a request whose future is dropped midway (its deadline passed while a
//! statement or a transaction was open) leaves the session marked in use,
//! and the next request then drops that connection instead of sending its
//! own statements into the abandoned transaction (which would commit the
//! abandoned one's half with them). Dropping the client closes the
//! connection once its last statement answered, and Postgres rolls back
//! what was open; [`STATEMENT_TIMEOUT_MS`] makes sure that answer comes.

use tokio_postgres::Client;

use crate::pg::PgError;

/// Longest one statement of a webhook session may run, waiting for locks
/// included: under the stores' 3 s deadline, so a statement blocked (on a
/// row a user's transaction holds, say) ends on the server too instead of
/// leaving a backend behind once its request is abandoned.
pub const STATEMENT_TIMEOUT_MS: u32 = 2500;

/// Sets [`STATEMENT_TIMEOUT_MS`] for the session `sql`.
pub async fn limit_statements(sql: &Client) -> Result<(), PgError> {
    sql.batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        .await
        .map_err(PgError::sql("set the webhook session's statement_timeout"))
}

/// A connection and whether a request is (or was left) using it.
#[derive(Default)]
pub struct Session {
    client: Option<Client>,
    in_use: bool,
}

impl Session {
    /// Whether the connection can be used: there is one, it is open, and
    /// no request was abandoned while using it. Forgets it otherwise.
    fn usable(&mut self) -> bool {
        if self.in_use || self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
            self.in_use = false;
        }
        self.client.is_some()
    }

    /// The connection for one request (opening it with `connect` when
    /// there is none), marked in use until [`Session::done`].
    pub async fn begin<E, F>(&mut self, connect: F) -> Result<&Client, E>
    where
        F: std::future::Future<Output = Result<Client, E>>,
    {
        if !self.usable() {
            self.client = Some(connect.await?);
        }
        self.in_use = true;
        Ok(self.client.as_ref().expect("set above"))
    }

    /// The request is over; `keep` false drops the connection (after an
    /// error, so the next request reconnects).
    pub fn done(&mut self, keep: bool) {
        self.in_use = false;
        if !keep {
            self.client = None;
        }
    }

    /// The connection while a request holds it, for a further step of the
    /// same request.
    pub fn current(&self) -> Option<&Client> {
        self.client.as_ref().filter(|_| self.in_use)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_session_has_nothing_to_use() {
        let mut session = Session::default();
        assert!(!session.usable());
        assert!(session.current().is_none());
        session.in_use = true;
        assert!(!session.usable());
        assert!(!session.in_use, "an abandoned mark is cleared with the connection");
    }
}
