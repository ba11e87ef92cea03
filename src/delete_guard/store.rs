//! The daemon's writes to `ciosync.held_deletes` ([`HeldStore`]) and
//! `ciosync.held_refreshes` (the customers to identify again once the
//! removals are decided); the operator's reads and decisions are
//! [`super::table::HeldTable`].
//!
//! A row starts `pending` while the transaction it belongs to is still
//! being read: the daemon writes a long transaction's holds as they come,
//! under the commit LSN `0/0` (no commit is ever there; with the customer
//! it keys each customer's one row of the open transaction), and at the
//! commit moves them under the commit's LSN as `held`
//! ([`HeldStore::commit_open`]). Until then no command lists, approves or
//! discards them; rows still under `0/0` when the daemon starts again
//! belong to a transaction that comes again, so they are deleted.
//!
//! From `held` a row's `state` only moves forward: to `superseded` (a later
//! operation of the customer won), `sent` (approved and accepted by
//! Customer.io) or `discarded`. Each change is an `UPDATE … WHERE state =
//! 'held'`, so two writers (the daemon superseding, an operator approving)
//! never undo each other, and `approve` locks the rows it sends so a
//! supersede waits for it (see [`crate::commands::deletes`]).

use pgwire_replication::Lsn;
use tokio_postgres::Client;

use crate::customer::CustomerOp;
use crate::pg::connection::ConnectionSettings;
use crate::pg::PgError;
use crate::state::State;

/// How a held customer is to be removed, by its table's `delete_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Delete,
    Suppress,
}

impl Action {
    /// The action of a removal; `None` for any other operation.
    pub fn of(op: &CustomerOp) -> Option<Self> {
        match op {
            CustomerOp::Delete { .. } => Some(Self::Delete),
            CustomerOp::Suppress { .. } => Some(Self::Suppress),
            _ => None,
        }
    }

    /// The column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Suppress => "suppress",
        }
    }

    /// The column's value read back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "delete" => Some(Self::Delete),
            "suppress" => Some(Self::Suppress),
            _ => None,
        }
    }

    /// The operation that carries it out.
    pub fn op(self, id: String) -> CustomerOp {
        match self {
            Self::Delete => CustomerOp::Delete { id },
            Self::Suppress => CustomerOp::Suppress { id },
        }
    }
}

/// One removal held during a transaction: written with its chunk, or at
/// the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub customer_id: String,
    pub action: Action,
    /// A later operation of the same transaction touched the customer.
    pub superseded: bool,
}

/// The daemon's writes, over one connection opened lazily and again after
/// an error. The caller retries transient errors ([`PgError::is_transient`]).
pub struct HeldStore {
    settings: ConnectionSettings,
    slot: String,
    sql: Option<Client>,
}

impl HeldStore {
    /// A store for `slot`'s held removals; no connection is opened yet.
    pub fn new(settings: ConnectionSettings, slot: String) -> Self {
        Self { settings, slot, sql: None }
    }

    async fn client(&mut self) -> Result<&mut Client, PgError> {
        if self.sql.as_ref().is_some_and(Client::is_closed) {
            self.sql = None;
        }
        match &mut self.sql {
            Some(client) => Ok(client),
            slot @ None => {
                let sql = self.settings.connect_sql().await.map_err(PgError::sql("connect"))?;
                State::open(&sql, &self.slot).await?;
                Ok(slot.insert(sql))
            }
        }
    }

    /// Drops the connection after an error, so the next call reconnects.
    fn forget_on_error<T>(&mut self, result: Result<T, PgError>) -> Result<T, PgError> {
        if result.is_err() {
            self.sql = None;
        }
        result
    }

    /// Deletes the rows of a transaction the daemon did not finish reading
    /// (`commit_lsn` `0/0`): it stopped or the stream broke, and the
    /// transaction comes again. Returns how many.
    pub async fn clear_open(&mut self) -> Result<u64, PgError> {
        let slot = self.slot.clone();
        let result = async {
            self.client()
                .await?
                .execute(
                    "DELETE FROM ciosync.held_deletes WHERE slot = $1 AND commit_lsn = '0/0'",
                    &[&slot],
                )
                .await
                .map_err(PgError::stored("clear ciosync.held_deletes"))
        }
        .await;
        self.forget_on_error(result)
    }

    /// How many removals are held (state `held`), and the highest commit
    /// LSN stored (0 if none).
    pub async fn summary(&mut self) -> Result<(u64, u64), PgError> {
        let slot = self.slot.clone();
        let result = async {
            let row = self
                .client()
                .await?
                .query_one(
                    "SELECT (SELECT count(*) FROM ciosync.held_deletes \
                             WHERE slot = $1 AND state = 'held'), \
                            (SELECT coalesce(max(commit_lsn) - '0/0', 0)::int8 \
                             FROM ciosync.held_deletes WHERE slot = $1)",
                    &[&slot],
                )
                .await
                .map_err(PgError::sql("read ciosync.held_deletes"))?;
            Ok((row.get::<_, i64>(0).max(0) as u64, row.get::<_, i64>(1).max(0) as u64))
        }
        .await;
        self.forget_on_error(result)
    }

    /// How many removals are held (state `held`).
    pub async fn count_held(&mut self) -> Result<u64, PgError> {
        Ok(self.summary().await?.0)
    }

    /// Calls `each` with every customer that has a held delete (a later
    /// call cancels those), fetched `page` rows at a time through a cursor:
    /// one pass over the table, and never more than a page in memory.
    pub async fn each_held_delete(
        &mut self,
        page: i32,
        mut each: impl FnMut(&str),
    ) -> Result<(), PgError> {
        let slot = self.slot.clone();
        let read = || PgError::sql("read ciosync.held_deletes");
        let result = async {
            let tx = self.client().await?.transaction().await.map_err(read())?;
            let portal = tx
                .bind(
                    "SELECT customer_id FROM ciosync.held_deletes \
                     WHERE slot = $1 AND state = 'held' AND action = 'delete'",
                    &[&slot],
                )
                .await
                .map_err(read())?;
            loop {
                let rows = tx.query_portal(&portal, page).await.map_err(read())?;
                if rows.is_empty() {
                    break;
                }
                rows.iter().for_each(|r| each(r.get(0)));
            }
            tx.commit().await.map_err(read())
        }
        .await;
        self.forget_on_error(result)
    }

    /// Stores one transaction's holds in one statement; returns how many
    /// rows were stored in state `held`. A replayed transaction stores
    /// nothing again (its rows are known by commit and customer).
    pub async fn record(&mut self, commit_lsn: Lsn, holds: &[Hold]) -> Result<u64, PgError> {
        if holds.is_empty() {
            return Ok(0);
        }
        let slot = self.slot.clone();
        let lsn = commit_lsn.to_string();
        let (ids, actions, states) = columns(holds, "held");
        let result = async {
            let rows = self
                .client()
                .await?
                .query(
                    "INSERT INTO ciosync.held_deletes (slot, customer_id, action, commit_lsn, state) \
                     SELECT $1, c, a, $2::text::pg_lsn, s \
                     FROM unnest($3::text[], $4::text[], $5::text[]) AS t(c, a, s) \
                     ON CONFLICT (slot, commit_lsn, customer_id) DO NOTHING RETURNING state",
                    &[&slot, &lsn, &ids, &actions, &states],
                )
                .await
                .map_err(PgError::stored("write ciosync.held_deletes"))?;
            Ok(rows.iter().filter(|r| r.get::<_, &str>(0) == "held").count() as u64)
        }
        .await;
        self.forget_on_error(result)
    }

    /// Writes a chunk of the open transaction's holds as `pending` (or
    /// `superseded`) under `0/0`, in one statement. A customer
    /// written before in this transaction gets the later removal: the last
    /// one is kept.
    pub async fn spill(&mut self, holds: &[Hold]) -> Result<(), PgError> {
        if holds.is_empty() {
            return Ok(());
        }
        let slot = self.slot.clone();
        let (ids, actions, states) = columns(holds, "pending");
        let result = async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO ciosync.held_deletes \
                         (slot, customer_id, action, commit_lsn, state, decided_at) \
                     SELECT $1, c, a, '0/0', s, CASE WHEN s = 'superseded' THEN now() END \
                     FROM unnest($2::text[], $3::text[], $4::text[]) AS t(c, a, s) \
                     ON CONFLICT (slot, commit_lsn, customer_id) DO UPDATE \
                     SET action = excluded.action, state = excluded.state, \
                         held_at = excluded.held_at, decided_at = excluded.decided_at",
                    &[&slot, &ids, &actions, &states],
                )
                .await
                .map_err(PgError::stored("write ciosync.held_deletes"))?;
            Ok(())
        }
        .await;
        self.forget_on_error(result)
    }

    /// At the commit of a transaction whose holds were written as
    /// `pending`: moves them under `commit_lsn`, `pending` becoming `held`,
    /// in one statement, so either all are held or none. A customer this
    /// commit already has a row for (a replay of a transaction stored
    /// before) keeps that row, so nothing is held twice and a decided
    /// removal stays decided. Returns how many rows became `held`.
    ///
    /// Delete and insert (in the order they were written, so the ids keep
    /// it) rather than an update checking for such rows: the unique index
    /// answers each insert's check, whereas an update's check would scan
    /// the very range it is writing into, once per row (75 s for 20,000).
    pub async fn commit_open(&mut self, commit_lsn: Lsn) -> Result<u64, PgError> {
        let slot = self.slot.clone();
        let lsn = commit_lsn.to_string();
        let result = async {
            let row = self
                .client()
                .await?
                .query_one(
                    "WITH open AS ( \
                         DELETE FROM ciosync.held_deletes WHERE slot = $1 AND commit_lsn = '0/0' \
                         RETURNING id, customer_id, action, state, held_at, decided_at \
                     ), stored AS ( \
                         INSERT INTO ciosync.held_deletes \
                             (slot, customer_id, action, commit_lsn, state, held_at, decided_at) \
                         SELECT $1, customer_id, action, $2::text::pg_lsn, \
                             CASE state WHEN 'pending' THEN 'held' ELSE state END, held_at, decided_at \
                         FROM open ORDER BY id \
                         ON CONFLICT (slot, commit_lsn, customer_id) DO NOTHING RETURNING state \
                     ) \
                     SELECT count(*) FILTER (WHERE state = 'held')::int8 FROM stored",
                    &[&slot, &lsn],
                )
                .await
                .map_err(PgError::stored("write ciosync.held_deletes"))?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        }
        .await;
        self.forget_on_error(result)
    }

    /// Marks `customer_id`'s held deletes of transactions committed before
    /// `before` (the commit of the operation that supersedes them)
    /// superseded, and its `pending` one of the open transaction; returns
    /// how many `held` rows that was (the `ciosync_deletes_held` gauge
    /// counts only those).
    ///
    /// Only earlier ones: after a restart the stream replays transactions
    /// stored but not acknowledged, and an identify committed *before* a
    /// held delete must not cancel it. Its transaction's holds are already
    /// in the table, so the delete's replay would not hold it again either,
    /// and the person would stay in Customer.io with the row gone.
    pub async fn supersede(&mut self, customer_id: &str, before: Lsn) -> Result<u64, PgError> {
        let slot = self.slot.clone();
        let before = before.to_string();
        let result = async {
            let rows = self
                .client()
                .await?
                .query(
                    "UPDATE ciosync.held_deletes SET state = 'superseded', decided_at = now() \
                     WHERE slot = $1 AND customer_id = $2 AND action = 'delete' \
                     AND ((state = 'held' AND commit_lsn < $3::text::pg_lsn) \
                          OR (commit_lsn = '0/0' AND state = 'pending')) \
                     RETURNING commit_lsn = '0/0'",
                    &[&slot, &customer_id, &before],
                )
                .await
                .map_err(PgError::stored("update ciosync.held_deletes"))?;
            Ok(rows.iter().filter(|r| !r.get::<_, bool>(0)).count() as u64)
        }
        .await;
        self.forget_on_error(result)
    }

    /// Notes a customer identified with an email while removals are held,
    /// for `deletes approve` to identify again once none is (see
    /// [`super::table::HeldTable::refreshes`]). Noting one twice is harmless.
    pub async fn note_refresh(&mut self, customer_id: &str) -> Result<(), PgError> {
        let slot = self.slot.clone();
        let result = async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO ciosync.held_refreshes (slot, customer_id) VALUES ($1, $2) \
                     ON CONFLICT (slot, customer_id) DO NOTHING",
                    &[&slot, &customer_id],
                )
                .await
                .map_err(PgError::stored("write ciosync.held_refreshes"))?;
            Ok(())
        }
        .await;
        self.forget_on_error(result)
    }

    /// Rows of `tables` (quoted `schema.name`; a partitioned table by its leaf
    /// partitions) as the planner estimates them (`pg_class.reltuples`; a
    /// table never analysed counts 0). `pg_partition_tree` lists nothing for
    /// an ordinary table, hence the table itself beside it.
    pub async fn estimated_rows(&mut self, tables: &[String]) -> Result<u64, PgError> {
        let result = async {
            let row = self
                .client()
                .await?
                .query_one(
                    "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8 \
                     FROM unnest($1::text[]) AS t(name) \
                     CROSS JOIN LATERAL ( \
                         SELECT p.relid FROM pg_catalog.pg_partition_tree(to_regclass(t.name)) p \
                         WHERE p.isleaf \
                         UNION SELECT to_regclass(t.name) \
                     ) AS r(relid) \
                     JOIN pg_catalog.pg_class c ON c.oid = r.relid AND c.relkind <> 'p'",
                    &[&tables],
                )
                .await
                .map_err(PgError::sql("estimate the synced tables' rows"))?;
            Ok(row.get::<_, f64>(0) as u64)
        }
        .await;
        self.forget_on_error(result)
    }
}

/// The holds as the three text arrays an `unnest` reads: customer ids,
/// actions, and states (`state`, or `superseded`).
fn columns<'h>(
    holds: &'h [Hold],
    state: &'static str,
) -> (Vec<&'h str>, Vec<&'static str>, Vec<&'static str>) {
    let ids = holds.iter().map(|h| h.customer_id.as_str()).collect();
    let actions = holds.iter().map(|h| h.action.as_str()).collect();
    let states = holds.iter().map(|h| if h.superseded { "superseded" } else { state }).collect();
    (ids, actions, states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_and_only_removals_have_one() {
        for action in [Action::Delete, Action::Suppress] {
            assert_eq!(Action::parse(action.as_str()), Some(action));
            assert_eq!(Action::of(&action.op("7".into())), Some(action));
        }
        assert_eq!(Action::parse("merge"), None);
        assert_eq!(Action::of(&CustomerOp::Barrier), None);
    }
}
