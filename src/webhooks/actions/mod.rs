//! Customer.io's campaign webhook actions ("Send and receive data"): what
//! a campaign decided, written into the product's Postgres.
//!
//! ```text
//! campaign ──POST <webhooks.path>/actions/<name>──▶ serve: method, credentials (auth),
//!                                                      content type, size, JSON
//!                                                      │ call: the body's fields → what to write
//!                                                      ▼
//!              200 ◀── committed ◀── store: BEGIN; key (ON CONFLICT: duplicate); effect; COMMIT
//!              503 ◀── Postgres failed (Customer.io retries; nothing was written)
//! ```
//!
//! Unlike reporting webhooks these are unsigned and written by the campaign
//! author: [`auth`] checks the action's own secret, [`call`] reads the
//! fields the config names, and [`store`] applies each request once, by
//! its idempotency key, in one transaction with its effect. The answer is
//! 200 only after the commit, so a 2xx is never lost to a crash.
//!
//! One connection for all actions, opened lazily and dropped after any
//! error (as the reporting store's); with an `update` action, or an
//! `insert` into a table ciosync streams, its session carries the
//! write-back origin so nothing written here is sent back to Customer.io.

pub mod auth;
pub mod call;
pub mod serve;
pub mod store;

use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_postgres::Client;

use self::call::Call;
use self::store::{Applied, ApplyError};
use super::session::Session;
use crate::config::actions::Action;
use crate::pg::connection::ConnectionSettings;
use crate::pg::PgError;

/// How often keys past their window are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The actions and their Postgres session.
pub struct Actions {
    actions: Vec<Action>,
    settings: ConnectionSettings,
    origin: Option<String>,
    sql: Mutex<(Session, Option<Instant>)>,
}

impl Actions {
    /// The actions, writing through `settings`; `origin` when their
    /// session must carry the write-back origin. No connection yet.
    pub fn new(actions: Vec<Action>, settings: ConnectionSettings, origin: Option<String>) -> Self {
        Self { actions, settings, origin, sql: Mutex::new((Session::default(), None)) }
    }

    /// The action called `name`.
    pub fn find(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// Every action.
    pub fn all(&self) -> &[Action] {
        &self.actions
    }

    /// Connects now (creating the tables, binding the origin), so a missing
    /// privilege stops `run` at start; a transient failure is left to the
    /// first request.
    pub async fn prepare(&self) -> Result<(), PgError> {
        let mut guard = self.sql.lock().await;
        let session = &mut guard.0;
        let result = session.begin(self.connect()).await.map(drop);
        session.done(result.is_ok());
        match result {
            Err(error) if error.is_transient() => {
                tracing::warn!(error = %crate::error::error_chain(&error),
                    "the webhook actions cannot reach Postgres yet; retrying on the first call");
                Ok(())
            }
            other => other,
        }
    }

    /// Applies `call` within [`super::store::STORE_TIMEOUT`], waiting for
    /// the session included. `Err` carries a one-line reason without the
    /// body's values, and whether a retry may help (`true`: answer 503).
    /// A deadline that passes mid-transaction leaves the session marked in
    /// use, so the next request drops that connection (and Postgres rolls
    /// the transaction back) rather than commit it.
    pub async fn apply(
        &self,
        action: &Action,
        call: &Call,
        body: &serde_json::Value,
    ) -> Result<Applied, (bool, String)> {
        let attempt = async {
            let mut guard = self.sql.lock().await;
            let (session, pruned_at) = &mut *guard;
            let result = match session.begin(self.connect()).await {
                Ok(client) => store::apply(client, action, call, body).await,
                Err(error) => Err(ApplyError::Failed(error)),
            };
            let failed = matches!(result, Err(ApplyError::Failed(_)));
            if !failed && pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                *pruned_at = Some(Instant::now());
                self.prune(session).await;
            }
            session.done(!failed);
            result
        };
        match tokio::time::timeout(super::store::STORE_TIMEOUT, attempt).await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(ApplyError::Refused(reason))) => Err((false, reason)),
            Ok(Err(ApplyError::Failed(error))) => {
                Err((true, crate::error::error_chain(&error).replace('\n', " ")))
            }
            Err(_) => Err((
                true,
                format!(
                    "Postgres did not answer within {}s",
                    super::store::STORE_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    /// Whether the session works: `SELECT 1` within
    /// [`super::store::PING_TIMEOUT`], connecting first if needed.
    pub async fn ping(&self) -> Result<(), String> {
        let attempt = async {
            let mut guard = self.sql.lock().await;
            let session = &mut guard.0;
            let result = match session.begin(self.connect()).await {
                Ok(client) => client
                    .simple_query("SELECT 1")
                    .await
                    .map(drop)
                    .map_err(PgError::sql("run SELECT 1")),
                Err(error) => Err(error),
            };
            session.done(result.is_ok());
            result
        };
        match tokio::time::timeout(super::store::PING_TIMEOUT, attempt).await {
            Ok(result) => result.map_err(|e| crate::error::error_chain(&e).replace('\n', " ")),
            Err(_) => Err(format!(
                "Postgres did not answer within {}s",
                super::store::PING_TIMEOUT.as_secs()
            )),
        }
    }

    /// Forgets keys older than each action's window, now and then.
    async fn prune(&self, session: &Session) {
        let Some(client) = session.current() else { return };
        match store::prune(client, &self.actions).await {
            Ok(n) if n > 0 => tracing::debug!(keys = n, "old webhook action keys pruned"),
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %crate::error::error_chain(&error),
                "could not prune old webhook action keys; trying again later"),
        }
    }

    async fn connect(&self) -> Result<Client, PgError> {
        let mut sql = self.settings.connect_sql().await.map_err(PgError::sql("connect"))?;
        let tx = sql.transaction().await.map_err(PgError::sql("begin"))?;
        tx.batch_execute(&store::migration_sql(&self.actions))
            .await
            .map_err(PgError::sql("create the webhook action tables"))?;
        tx.commit().await.map_err(PgError::sql("create the webhook action tables"))?;
        super::session::limit_statements(&sql).await?;
        if let Some(origin) = &self.origin {
            super::write_back::bind_origin(&sql, origin).await?;
        }
        Ok(sql)
    }
}
