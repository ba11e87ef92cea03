//! The operator's side of `ciosync.held_deletes` and
//! `ciosync.held_refreshes`, for `ciosync deletes list | approve | discard`
//! ([`crate::commands::deletes`]): reads, the locked batches `approve`
//! sends, and the decisions. The row states and who moves them are
//! described in [`super::store`].

use tokio_postgres::Client;

use super::store::Action;
use crate::pg::PgError;
use crate::state::State;

/// A held row as `ciosync deletes` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRow {
    pub id: i64,
    pub customer_id: String,
    pub action: String,
    pub commit_lsn: String,
    /// Unix seconds.
    pub held_at: i64,
    pub state: String,
}

/// The operator's side, over a borrowed connection.
pub struct HeldTable<'a> {
    sql: &'a Client,
    slot: &'a str,
}

impl<'a> HeldTable<'a> {
    /// Creates the schema and table if missing and returns a handle for `slot`.
    pub async fn open(sql: &'a Client, slot: &'a str) -> Result<Self, PgError> {
        State::open(sql, slot).await?;
        Ok(Self { sql, slot })
    }

    /// The rows in state `held`, in id order.
    pub async fn waiting(&self) -> Result<Vec<HeldRow>, PgError> {
        let rows = self
            .sql
            .query(
                "SELECT id, customer_id, action, commit_lsn::text, \
                 floor(extract(epoch FROM held_at))::bigint, state \
                 FROM ciosync.held_deletes WHERE slot = $1 AND state = 'held' ORDER BY id",
                &[&self.slot],
            )
            .await
            .map_err(PgError::sql("read ciosync.held_deletes"))?;
        Ok(rows
            .iter()
            .map(|r| HeldRow {
                id: r.get(0),
                customer_id: r.get(1),
                action: r.get(2),
                commit_lsn: r.get(3),
                held_at: r.get(4),
                state: r.get(5),
            })
            .collect())
    }

    /// The ids of this slot's rows among `wanted` that exist, in any state.
    pub async fn existing(&self, wanted: &[i64]) -> Result<Vec<i64>, PgError> {
        let rows = self
            .sql
            .query(
                "SELECT id FROM ciosync.held_deletes WHERE slot = $1 AND id = ANY($2) ORDER BY id",
                &[&self.slot, &wanted],
            )
            .await
            .map_err(PgError::sql("read ciosync.held_deletes"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// How many held rows (all, or those of `only`) belong to a transaction
    /// the slot has not confirmed yet, or one the daemon is still reading
    /// (`pending`). Approve skips them: once the slot confirms a
    /// transaction everything before it was delivered, so no earlier
    /// identify of the same person can still be on its way to re-create
    /// them after the delete.
    pub async fn unconfirmed(&self, only: Option<&[i64]>) -> Result<i64, PgError> {
        let row = self
            .sql
            .query_one(
                "SELECT count(*) FROM ciosync.held_deletes \
                 WHERE slot = $1 AND ($2::bigint[] IS NULL OR id = ANY($2)) \
                 AND (state = 'pending' OR state = 'held' AND commit_lsn > coalesce(( \
                     SELECT confirmed_flush_lsn FROM pg_catalog.pg_replication_slots \
                     WHERE slot_name = $1), '0/0'))",
                &[&self.slot, &only],
            )
            .await
            .map_err(PgError::sql("read ciosync.held_deletes"))?;
        Ok(row.get(0))
    }

    /// Starts a transaction and locks up to `limit` held rows after `after`
    /// (all, or those of `only`) whose transaction the slot confirmed, in id
    /// order: (id, customer, action); see [`HeldTable::unconfirmed`].
    pub async fn lock_batch(
        &self,
        only: Option<&[i64]>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String, Action)>, PgError> {
        self.sql.batch_execute("BEGIN").await.map_err(PgError::sql("begin"))?;
        let rows = self
            .sql
            .query(
                "SELECT id, customer_id, action FROM ciosync.held_deletes \
                 WHERE slot = $1 AND state = 'held' AND id > $2 \
                 AND ($3::bigint[] IS NULL OR id = ANY($3)) \
                 AND commit_lsn <= (SELECT confirmed_flush_lsn FROM pg_catalog.pg_replication_slots \
                                    WHERE slot_name = $1) \
                 ORDER BY id LIMIT $4 FOR UPDATE",
                &[&self.slot, &after, &only, &limit],
            )
            .await
            .map_err(PgError::sql("lock ciosync.held_deletes"))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let action = Action::parse(r.get(2))?;
                Some((r.get(0), r.get(1), action))
            })
            .collect())
    }

    /// Ends the transaction [`HeldTable::lock_batch`] began, with the rows
    /// of `ids` (still held) moved to `state`.
    pub async fn finish(&self, ids: &[i64], state: &str) -> Result<u64, PgError> {
        let moved = self.decide(ids, state).await?;
        self.sql.batch_execute("COMMIT").await.map_err(PgError::sql("commit"))?;
        Ok(moved)
    }

    /// Ends that transaction changing nothing.
    pub async fn abandon(&self) -> Result<(), PgError> {
        self.sql.batch_execute("ROLLBACK").await.map_err(PgError::sql("roll back"))
    }

    /// Moves the held rows among `ids` (all held rows for `None`) to
    /// `state`; returns how many moved.
    pub async fn decide_all(&self, ids: Option<&[i64]>, state: &str) -> Result<u64, PgError> {
        self.sql
            .execute(
                "UPDATE ciosync.held_deletes SET state = $3, decided_at = now() \
                 WHERE slot = $1 AND state = 'held' AND ($2::bigint[] IS NULL OR id = ANY($2))",
                &[&self.slot, &ids, &state],
            )
            .await
            .map_err(PgError::sql("update ciosync.held_deletes"))
    }

    /// Whether any removal still waits for a decision: `held`, or
    /// `pending` in a transaction the daemon is reading.
    pub async fn any_waiting(&self) -> Result<bool, PgError> {
        let row = self
            .sql
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM ciosync.held_deletes \
                 WHERE slot = $1 AND state IN ('held', 'pending'))",
                &[&self.slot],
            )
            .await
            .map_err(PgError::sql("read ciosync.held_deletes"))?;
        Ok(row.get(0))
    }

    /// Up to `limit` customers the daemon identified with an email while
    /// removals were held (in customer order, after `after`): Customer.io
    /// refuses (with an HTTP 200) to give a person an email that a held,
    /// not yet deleted, person still has, so each is identified again from
    /// its row once the removals are decided.
    pub async fn refreshes(&self, after: &str, limit: i64) -> Result<Vec<String>, PgError> {
        let rows = self
            .sql
            .query(
                "SELECT customer_id FROM ciosync.held_refreshes \
                 WHERE slot = $1 AND customer_id > $2 ORDER BY customer_id LIMIT $3",
                &[&self.slot, &after, &limit],
            )
            .await
            .map_err(PgError::sql("read ciosync.held_refreshes"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Forgets the refreshes of `customers`, settled.
    pub async fn forget_refreshes(&self, customers: &[String]) -> Result<u64, PgError> {
        self.sql
            .execute(
                "DELETE FROM ciosync.held_refreshes WHERE slot = $1 AND customer_id = ANY($2)",
                &[&self.slot, &customers],
            )
            .await
            .map_err(PgError::sql("update ciosync.held_refreshes"))
    }

    /// Discards the held rows among `ids` (all for `None`): their
    /// customers stay in Customer.io. Returns those customers.
    pub async fn discard(&self, ids: Option<&[i64]>) -> Result<Vec<String>, PgError> {
        let rows = self
            .sql
            .query(
                "UPDATE ciosync.held_deletes SET state = 'discarded', decided_at = now() \
                 WHERE slot = $1 AND state = 'held' AND ($2::bigint[] IS NULL OR id = ANY($2)) \
                 RETURNING customer_id",
                &[&self.slot, &ids],
            )
            .await
            .map_err(PgError::sql("update ciosync.held_deletes"))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn decide(&self, ids: &[i64], state: &str) -> Result<u64, PgError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.decide_all(Some(ids), state).await
    }
}
