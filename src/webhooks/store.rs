//! The events table (`[webhooks] table`, default `ciosync.message_events`):
//! its definition, created when missing, and the insert that stores each
//! event once.
//!
//! Exactly once: `event_id` is the primary key and the insert is
//! `ON CONFLICT (event_id) DO NOTHING`, a single statement in its own
//! transaction. When [`WebhookStore::store`] returns `Ok` the row is
//! committed (ours or an earlier delivery's); on `Err` it may or may not be,
//! and Customer.io's retry either stores it or finds it there.
//!
//! One connection, opened lazily and dropped after any error so the next
//! request reconnects (as the dead-letter store does). Customer.io sends
//! one request at a time (a failed one holds the later ones back), so one
//! connection is plenty.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::event::ReportingEvent;
use super::session::Session;
use super::write_back;
use crate::config::webhooks::WebhooksConfig;
use crate::config::webhooks::WriteBack;
use crate::pg::connection::ConnectionSettings;
use crate::pg::quote::{quote_ident, quote_literal, quoted_table};
use crate::pg::PgError;
use crate::telemetry::Counters;

/// Longest a store may take, connecting included: under Customer.io's 4 s
/// timeout, so it hears our 503 rather than giving up on us.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest the readiness probe's `SELECT 1` may take, connecting included.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What storing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new row was committed.
    New,
    /// A row with this `event_id` was already there; nothing changed.
    Duplicate,
}

/// The table's definition, for a validated (schema, table).
///
/// Created only when missing, so a role given the table by an administrator
/// (INSERT on it, USAGE on its schema) needs no CREATE privilege; the schema
/// likewise (`CREATE SCHEMA IF NOT EXISTS` would check CREATE on the database
/// before it looks).
pub fn migration_sql(schema: &str, table: &str) -> String {
    let qualified = quoted_table(schema, table);
    let regclass = quote_literal(&qualified);
    let schema_literal = quote_literal(schema);
    let schema_ident = quote_ident(schema);
    let customer_index = quote_ident(&format!("{table}_customer_id"));
    let occurred_index = quote_ident(&format!("{table}_occurred_at"));
    format!(
        "SET LOCAL client_min_messages = warning;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = {schema_literal}) THEN
        -- The pipeline may create `ciosync` at the same moment.
        BEGIN
            CREATE SCHEMA {schema_ident};
        EXCEPTION WHEN duplicate_schema OR unique_violation THEN NULL;
        END;
    END IF;
    IF to_regclass({regclass}) IS NULL THEN
        CREATE TABLE {qualified} (
            event_id                  text        PRIMARY KEY,
            metric                    text        NOT NULL,
            object_type               text        NOT NULL,
            occurred_at               timestamptz NOT NULL,
            customer_id               text,
            email                     text,
            cio_id                    text,
            delivery_id               text,
            campaign_id               bigint,
            broadcast_id              bigint,
            newsletter_id             bigint,
            transactional_message_id  bigint,
            action_id                 bigint,
            trigger_event_id          text,
            href                      text,
            failure_message           text,
            payload                   jsonb       NOT NULL,
            received_at               timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX {customer_index} ON {qualified} (customer_id);
        CREATE INDEX {occurred_index} ON {qualified} (occurred_at);
        COMMENT ON TABLE {qualified} IS
            'ciosync: Customer.io reporting webhook events, one row per event_id. '
            'customer_id, email and payload are customer data';
    END IF;
END $$;"
    )
}

/// The idempotent insert, for a validated (schema, table).
fn insert_sql(schema: &str, table: &str) -> String {
    format!(
        "INSERT INTO {} (event_id, metric, object_type, occurred_at, customer_id, email, cio_id, \
         delivery_id, campaign_id, broadcast_id, newsletter_id, transactional_message_id, \
         action_id, trigger_event_id, href, failure_message, payload) \
         VALUES ($1, $2, $3, to_timestamp($4::bigint), $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         $14, $15, $16, $17) \
         ON CONFLICT (event_id) DO NOTHING",
        quoted_table(schema, table)
    )
}

/// Creates the table if missing, inside the caller's transaction.
pub async fn migrate(
    tx: &tokio_postgres::Transaction<'_>,
    config: &WebhooksConfig,
) -> Result<(), PgError> {
    let (schema, table) = config.schema_and_table();
    tx.batch_execute(&migration_sql(schema, table))
        .await
        .map_err(PgError::sql("create the webhook events table"))
}

/// Inserts `event` with the caller's client (or transaction); whether it was new.
pub async fn insert(
    sql: &impl tokio_postgres::GenericClient,
    config: &WebhooksConfig,
    event: &ReportingEvent,
) -> Result<Stored, PgError> {
    let (schema, table) = config.schema_and_table();
    let params: [&(dyn ToSql + Sync); 17] = [
        &event.event_id,
        &event.metric,
        &event.object_type,
        &event.occurred_at,
        &event.customer_id,
        &event.email,
        &event.cio_id,
        &event.delivery_id,
        &event.campaign_id,
        &event.broadcast_id,
        &event.newsletter_id,
        &event.transactional_message_id,
        &event.action_id,
        &event.trigger_event_id,
        &event.href,
        &event.failure_message,
        &event.payload,
    ];
    let rows = sql
        .execute(&insert_sql(schema, table), &params)
        .await
        .map_err(PgError::sql("insert a webhook event"))?;
    Ok(if rows == 1 { Stored::New } else { Stored::Duplicate })
}

/// Stores events on one lazily opened, reconnecting connection.
pub struct WebhookStore {
    settings: ConnectionSettings,
    config: WebhooksConfig,
    sql: Mutex<Session>,
    /// Write-backs, and the replication origin their session carries.
    write_backs: Vec<WriteBack>,
    origin: Option<String>,
    counters: Option<Arc<Counters>>,
}

impl WebhookStore {
    /// A store for `config.table`; no connection is opened yet.
    pub fn new(settings: ConnectionSettings, config: WebhooksConfig) -> Self {
        Self {
            settings,
            config,
            sql: Mutex::new(Session::default()),
            write_backs: Vec::new(),
            origin: None,
            counters: None,
        }
    }

    /// Adds write-backs: each stored event that triggers one updates the
    /// synced row in the same transaction, in a session bound to `origin`
    /// (see [`super::write_back`]); changed rows are counted in `counters`.
    pub fn with_write_back(
        mut self,
        write_backs: Vec<WriteBack>,
        origin: String,
        counters: Arc<Counters>,
    ) -> Self {
        if !write_backs.is_empty() {
            self.write_backs = write_backs;
            self.origin = Some(origin);
            self.counters = Some(counters);
        }
        self
    }

    /// Connects now (creating the table, binding the write-back origin), so
    /// a missing privilege stops `run` at start; a transient failure is
    /// left to the first request.
    pub async fn prepare(&self) -> Result<(), PgError> {
        let mut session = self.sql.lock().await;
        let result = session.begin(self.connect()).await.map(drop);
        session.done(result.is_ok());
        match result {
            Err(error) if error.is_transient() => {
                tracing::warn!(error = %crate::error::error_chain(&error),
                    "the webhook store cannot reach Postgres yet; retrying on the first event");
                Ok(())
            }
            other => other,
        }
    }

    /// Stores `event` once, within [`STORE_TIMEOUT`] (waiting for the
    /// connection included). `Ok` means committed. Errors are one line and
    /// never carry the event's contents.
    pub async fn store(&self, event: &ReportingEvent) -> Result<Stored, String> {
        let attempt = async {
            let mut session = self.sql.lock().await;
            let result = match session.begin(self.connect()).await {
                Ok(client) if self.write_backs.is_empty() => {
                    insert(client, &self.config, event).await
                }
                Ok(client) => self.store_and_write_back(client, event).await,
                Err(error) => Err(error),
            };
            session.done(result.is_ok());
            result
        };
        self.within(STORE_TIMEOUT, attempt).await
    }

    /// Stores `event` and applies its write-backs in one transaction: the
    /// row and its write-back commit together, or neither (and Customer.io
    /// retries).
    async fn store_and_write_back(
        &self,
        client: &Client,
        event: &ReportingEvent,
    ) -> Result<Stored, PgError> {
        client.batch_execute("BEGIN").await.map_err(PgError::sql("begin"))?;
        let result = async {
            let stored = insert(client, &self.config, event).await?;
            let changed = match stored {
                Stored::New => write_back::apply(client, &self.write_backs, event).await?,
                Stored::Duplicate => 0,
            };
            client.batch_execute("COMMIT").await.map_err(PgError::sql("commit"))?;
            Ok((stored, changed))
        }
        .await;
        match result {
            Ok((stored, changed)) => {
                if let Some(counters) = &self.counters {
                    Counters::add(&counters.webhooks.write_backs, changed);
                }
                Ok(stored)
            }
            Err(error) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(error)
            }
        }
    }

    /// Whether the connection works: `SELECT 1` within [`PING_TIMEOUT`]
    /// (connecting, and creating the table, first if needed). The error is
    /// one line, for `/readyz` and the log.
    pub async fn ping(&self) -> Result<(), String> {
        let attempt = async {
            let mut session = self.sql.lock().await;
            let result = match session.begin(self.connect()).await {
                Ok(client) => {
                    client.simple_query("SELECT 1").await.map_err(PgError::sql("run SELECT 1"))
                }
                Err(error) => Err(error),
            };
            session.done(result.is_ok());
            result.map(drop)
        };
        self.within(PING_TIMEOUT, attempt).await
    }

    /// Awaits `attempt` for at most `limit` (waiting for the session
    /// included). A deadline passing midway leaves the session marked in
    /// use, so the next call drops that connection and reconnects (see
    /// [`Session`]); errors become one line.
    async fn within<T>(
        &self,
        limit: Duration,
        attempt: impl std::future::Future<Output = Result<T, PgError>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result.map_err(|e| crate::error::error_chain(&e).replace('\n', " ")),
            Err(_) => Err(format!("Postgres did not answer within {}s", limit.as_secs())),
        }
    }

    async fn connect(&self) -> Result<Client, PgError> {
        let mut sql = self.settings.connect_sql().await.map_err(PgError::sql("connect"))?;
        let tx = sql.transaction().await.map_err(PgError::sql("begin"))?;
        migrate(&tx, &self.config).await?;
        tx.commit().await.map_err(PgError::sql("create the webhook events table"))?;
        super::session::limit_statements(&sql).await?;
        if let Some(origin) = &self.origin {
            write_back::bind_origin(&sql, origin).await?;
        }
        Ok(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_names_the_configured_table_and_its_indexes() {
        let sql = migration_sql("analytics", "cio_events");
        assert!(sql.contains("CREATE TABLE \"analytics\".\"cio_events\" ("), "{sql}");
        assert!(sql.contains("to_regclass('\"analytics\".\"cio_events\"')"), "{sql}");
        assert!(sql.contains("nspname = 'analytics'"), "{sql}");
        assert!(sql
            .contains("\"cio_events_customer_id\" ON \"analytics\".\"cio_events\" (customer_id)"));
        assert!(sql
            .contains("\"cio_events_occurred_at\" ON \"analytics\".\"cio_events\" (occurred_at)"));
        assert!(insert_sql("analytics", "cio_events").contains("ON CONFLICT (event_id) DO NOTHING"));
    }
}
