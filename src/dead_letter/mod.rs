//! Dead letters: operations Customer.io refused for good, kept in
//! `ciosync.dead_letters` so they can be inspected and replayed.
//! (Interim store; the full module with `ciosync dlq` replaces it.)

use tokio_postgres::Client;

use crate::source::connection::ConnectionSettings;
use crate::source::SourceError;

/// One operation Customer.io refused for good.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub customer_id: String,
    pub operation: &'static str,
    pub attributes: Vec<String>,
    pub status: u16,
    pub error: String,
    pub payload: Vec<u8>,
    pub attempts: u32,
}

/// Writes dead letters for one slot; connects lazily, reconnects after an error.
pub struct DeadLetterStore {
    settings: ConnectionSettings,
    slot: String,
    client: tokio::sync::Mutex<Option<Client>>,
}

const TABLE: &str = "
CREATE SCHEMA IF NOT EXISTS ciosync;
CREATE TABLE IF NOT EXISTS ciosync.dead_letters (
    id bigserial PRIMARY KEY, slot text NOT NULL, customer_id text NOT NULL,
    operation text NOT NULL, attributes text[] NOT NULL, status integer NOT NULL,
    error text NOT NULL, payload jsonb NOT NULL, attempts integer NOT NULL,
    first_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz NOT NULL DEFAULT now());";

impl DeadLetterStore {
    pub fn new(settings: ConnectionSettings, slot: String) -> Self {
        Self { settings, slot, client: tokio::sync::Mutex::new(None) }
    }

    /// Inserts all of `letters` in one transaction.
    pub async fn record(&self, letters: &[DeadLetter]) -> Result<(), SourceError> {
        let mut guard = self.client.lock().await;
        let result = self.insert(&mut guard, letters).await;
        if result.is_err() {
            *guard = None;
        }
        result
    }

    async fn insert(
        &self,
        slot: &mut Option<Client>,
        letters: &[DeadLetter],
    ) -> Result<(), SourceError> {
        if slot.is_none() {
            let client = self
                .settings
                .connect_sql()
                .await
                .map_err(SourceError::sql("connect for dead letters"))?;
            client.batch_execute(TABLE).await.map_err(SourceError::sql("create dead_letters"))?;
            *slot = Some(client);
        }
        let Some(client) = slot.as_mut() else { return Ok(()) };
        let tx = client.transaction().await.map_err(SourceError::sql("begin"))?;
        for l in letters {
            let payload: serde_json::Value =
                serde_json::from_slice(&l.payload).unwrap_or(serde_json::Value::Null);
            tx.execute(
                "INSERT INTO ciosync.dead_letters (slot, customer_id, operation, attributes, \
                 status, error, payload, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &self.slot,
                    &l.customer_id,
                    &l.operation,
                    &l.attributes,
                    &i32::from(l.status),
                    &l.error,
                    &tokio_postgres::types::Json(payload),
                    &(l.attempts as i32),
                ],
            )
            .await
            .map_err(SourceError::sql("insert a dead letter"))?;
        }
        tx.commit().await.map_err(SourceError::sql("commit dead letters"))
    }
}
