//! The daemon's own state in Postgres, in the schema `ciosync`: what the
//! initial copy has done, so a restart resumes it instead of assuming it
//! finished, and the backfills asked for. This module owns that schema's
//! definition (one idempotent migration); the dead-letter table's queries
//! live with their only users in [`crate::dead_letter`], the held removals'
//! in [`crate::delete_guard::store`].
//!
//! Creating the schema needs `CREATE` on the database the first time
//! (`GRANT CREATE ON DATABASE app TO ciosync`), or create it for the role:
//! `CREATE SCHEMA ciosync AUTHORIZATION ciosync`.

use tokio_postgres::Client;

use crate::pg::PgError;

mod backfills;

pub use backfills::{Backfill, Queued};

/// The schema ciosync keeps its state in.
pub const SCHEMA: &str = "ciosync";

/// Creates the schema and tables if missing. Idempotent.
///
/// The schema is created only when missing: `CREATE SCHEMA IF NOT EXISTS`
/// checks for `CREATE` on the database before it looks, which would refuse
/// a role given the schema (`CREATE SCHEMA ciosync AUTHORIZATION ciosync`).
pub(crate) const MIGRATION: &str = "
SET LOCAL client_min_messages = warning;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'ciosync') THEN
        -- Another session (the webhook receiver, another command) may
        -- create it between the check and here.
        BEGIN
            CREATE SCHEMA ciosync;
        EXCEPTION WHEN duplicate_schema OR unique_violation THEN NULL;
        END;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS ciosync.initial_copy (
    slot         text        NOT NULL,
    table_name   text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('pending', 'copying', 'done')),
    last_key     text,
    rows_copied  bigint      NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot, table_name)
);
COMMENT ON TABLE ciosync.initial_copy IS
    'ciosync: progress of the first copy of each synced table into Customer.io';
CREATE TABLE IF NOT EXISTS ciosync.slots (
    slot             text        PRIMARY KEY,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    recreated_at     timestamptz,
    times_recreated  integer     NOT NULL DEFAULT 0
);
COMMENT ON TABLE ciosync.slots IS
    'ciosync: replication slots this database''s ciosync has streamed from; a slot listed '
    'here and missing from pg_replication_slots was lost, and is not recreated silently';
CREATE TABLE IF NOT EXISTS ciosync.backfills (
    id            bigserial   PRIMARY KEY,
    slot          text        NOT NULL,
    table_name    text        NOT NULL,
    where_clause  text,
    attributes    text[],
    state         text        NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'done', 'cancelled', 'failed')),
    last_key      text,
    rows_done     bigint      NOT NULL DEFAULT 0,
    rows_total    bigint,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
-- Since the record of what Customer.io accepted: send rows whole, whatever
-- the record says (ciosync backfill --ignore-record).
ALTER TABLE ciosync.backfills ADD COLUMN IF NOT EXISTS ignore_record boolean NOT NULL DEFAULT false;
-- Since event replays (ciosync backfill --events): the table is an event
-- table, its rows from `since` on are sent again as events.
ALTER TABLE ciosync.backfills ADD COLUMN IF NOT EXISTS events boolean NOT NULL DEFAULT false;
ALTER TABLE ciosync.backfills ADD COLUMN IF NOT EXISTS since timestamptz;
COMMENT ON TABLE ciosync.backfills IS
    'ciosync: backfills requested with ciosync backfill, run by the daemon of the slot';
CREATE TABLE IF NOT EXISTS ciosync.dead_letters (
    id                bigserial   PRIMARY KEY,
    slot              text        NOT NULL,
    customer_id       text        NOT NULL,
    operation         text        NOT NULL,
    attributes        text[]      NOT NULL,
    status            integer     NOT NULL,
    error             text        NOT NULL,
    payload           jsonb       NOT NULL,
    attempts          integer     NOT NULL,
    first_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dead_letters_slot_id ON ciosync.dead_letters (slot, id);
-- Every operation kind the sink sends; replaces the check of versions that
-- knew only identify, delete and merge (only when it is that older one).
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'ciosync.dead_letters'::regclass
                     AND conname IN ('dead_letters_operation_kinds',
                                     'dead_letters_operation_kinds_objects',
                                     'dead_letters_operation_kinds_devices',
                                     'dead_letters_operation_kinds_all')) THEN
        ALTER TABLE ciosync.dead_letters DROP CONSTRAINT IF EXISTS dead_letters_operation_check;
        ALTER TABLE ciosync.dead_letters ADD CONSTRAINT dead_letters_operation_kinds
            CHECK (operation IN ('identify', 'delete', 'suppress', 'merge', 'event'));
    END IF;
END $$;
-- Objects and relationships (issue 17) and [[devices]] add their kinds:
-- replaces the check above, or the one an install of either feature alone
-- added (`_objects` or `_devices`). The older ones are dropped every time,
-- not only when `_all` is missing: an older version started after this one
-- (a rollback, an old standby) adds its own back, which would refuse the
-- new kinds beside `_all`.
DO $$ BEGIN
    ALTER TABLE ciosync.dead_letters DROP CONSTRAINT IF EXISTS dead_letters_operation_check;
    ALTER TABLE ciosync.dead_letters DROP CONSTRAINT IF EXISTS dead_letters_operation_kinds;
    ALTER TABLE ciosync.dead_letters
        DROP CONSTRAINT IF EXISTS dead_letters_operation_kinds_objects;
    ALTER TABLE ciosync.dead_letters
        DROP CONSTRAINT IF EXISTS dead_letters_operation_kinds_devices;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'ciosync.dead_letters'::regclass
                     AND conname = 'dead_letters_operation_kinds_all') THEN
        ALTER TABLE ciosync.dead_letters ADD CONSTRAINT dead_letters_operation_kinds_all
            CHECK (operation IN ('identify', 'delete', 'suppress', 'merge', 'event',
                                 'add_device', 'delete_device', 'object_identify',
                                 'object_delete', 'add_relationship', 'delete_relationship'));
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS ciosync.held_deletes (
    id           bigserial   PRIMARY KEY,
    slot         text        NOT NULL,
    customer_id  text        NOT NULL,
    action       text        NOT NULL CHECK (action IN ('delete', 'suppress')),
    commit_lsn   pg_lsn      NOT NULL,
    held_at      timestamptz NOT NULL DEFAULT now(),
    state        text        NOT NULL DEFAULT 'held'
                 CHECK (state IN ('held', 'superseded', 'sent', 'discarded')),
    decided_at   timestamptz,
    -- A replayed transaction holds nothing twice, nor again once decided.
    UNIQUE (slot, commit_lsn, customer_id)
);
CREATE INDEX IF NOT EXISTS held_deletes_waiting
    ON ciosync.held_deletes (slot, customer_id) WHERE state = 'held';
-- 'pending': written while its transaction is still being read (commit_lsn
-- '0/0' until the commit moves it to 'held'); replaces the check of
-- versions that kept a transaction's holds in memory until its commit.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'ciosync.held_deletes'::regclass
                     AND conname = 'held_deletes_states') THEN
        -- Another session (the daemon's other connections, a command) may
        -- replace it between the check and here.
        BEGIN
            ALTER TABLE ciosync.held_deletes DROP CONSTRAINT IF EXISTS held_deletes_state_check;
            ALTER TABLE ciosync.held_deletes ADD CONSTRAINT held_deletes_states
                CHECK (state IN ('pending', 'held', 'superseded', 'sent', 'discarded'));
        EXCEPTION WHEN duplicate_object THEN NULL;
        END;
    END IF;
END $$;
COMMENT ON TABLE ciosync.held_deletes IS
    'ciosync: removals the mass-delete circuit breaker ([delete_guard]) held for an operator: '
    'ciosync deletes list | approve | discard';
-- Customers identified with an email while removals were held: Customer.io
-- refuses to give a person an email a held (not yet deleted) person still
-- has, so `deletes approve` identifies them again from their rows once
-- nothing is held any more.
CREATE TABLE IF NOT EXISTS ciosync.held_refreshes (
    slot         text        NOT NULL,
    customer_id  text        NOT NULL,
    noted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot, customer_id)
);
COMMENT ON TABLE ciosync.held_refreshes IS
    'ciosync: customers identified with an email while the mass-delete circuit breaker held '
    'removals; ciosync deletes approve identifies them again once nothing is held';
-- What each synced table looked like when ciosync last accepted it (see
-- src/schema): the JSON type each mapped attribute has had, so a schema
-- change that would give it another is caught, also across restarts; and
-- the attributes left out since a break under on_schema_change = 'skip',
-- re-sent by a backfill once the table or the config is repaired.
CREATE TABLE IF NOT EXISTS ciosync.table_shapes (
    slot        text        NOT NULL,
    table_name  text        NOT NULL,
    shape       jsonb       NOT NULL,
    skipped     text[]      NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot, table_name)
);
COMMENT ON TABLE ciosync.table_shapes IS
    'ciosync: the shape of each synced table as last accepted, to catch schema changes '
    'that would leave Customer.io stale or give an attribute another JSON type';
-- The record of what Customer.io accepted (see src/record): per customer,
-- a fingerprint of each attribute value last accepted, so an update sends
-- only what differs whatever the table's replica identity.
CREATE TABLE IF NOT EXISTS ciosync.accepted (
    slot         text   COLLATE pg_catalog.\"C\" NOT NULL,
    customer_id  text   COLLATE pg_catalog.\"C\" NOT NULL,
    attributes   jsonb  NOT NULL,
    PRIMARY KEY (slot, customer_id)
);
-- The last value of each column a change-derived event watches, where the
-- WAL has no old row to compare with (see src/record).
ALTER TABLE ciosync.accepted ADD COLUMN IF NOT EXISTS watched jsonb NOT NULL DEFAULT '{}';
-- Every accepted change rewrites its customer's row: room on each page lets
-- the new version stay there (a HOT update, no index entry, pruned in
-- place), which halved Postgres's work per change at full speed
-- (BENCHMARKS.md, section The record's writes).
ALTER TABLE ciosync.accepted SET (fillfactor = 50);
-- Its rows are found by slot and customer id, two lookups per change:
-- compared as bytes, not by the database's collation (an ICU en-US one
-- made a read half to twice as dear; BENCHMARKS.md, section The record's
-- lookups). The index is rebuilt once, when an older install is migrated.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
               WHERE attrelid = 'ciosync.accepted'::regclass
                 AND attname IN ('slot', 'customer_id')
                 AND attcollation <> 'pg_catalog.\"C\"'::regcollation) THEN
        ALTER TABLE ciosync.accepted
            ALTER COLUMN slot TYPE text COLLATE pg_catalog.\"C\",
            ALTER COLUMN customer_id TYPE text COLLATE pg_catalog.\"C\";
        ANALYZE ciosync.accepted;
    END IF;
END
$$;
COMMENT ON TABLE ciosync.accepted IS
    'ciosync: what Customer.io accepted, per customer: attribute name -> fingerprint of the '
    'value (no values), and the last values of columns [[sync.events]] watch; the row of the '
    'empty customer id names the tables it is complete for. Delete rows (or TRUNCATE) to have '
    'them sent whole again, then run ciosync backfill to make it complete again';
COMMENT ON TABLE ciosync.dead_letters IS
    'ciosync: operations Customer.io refused for good, kept for ciosync dlq. '
    'payload holds customer data (attribute values as sent): only the daemon''s role '
    'and operators should be able to read this table';
";

/// The schema's version, recorded as its comment by the last statement of
/// [`MIGRATION`] (in the same implicit transaction): a hash of the
/// migration's text, so any change to it migrates again.
pub fn schema_version() -> String {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let hash = MIGRATION
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("ciosync state schema {hash:016x}")
}

/// Whether the schema is current: one read-only query, which is all a
/// start does once the schema is migrated.
pub async fn schema_is_current(sql: &Client) -> Result<bool, tokio_postgres::Error> {
    let comment: Option<String> = sql
        .query_opt(
            "SELECT pg_catalog.obj_description(oid, 'pg_namespace')              FROM pg_catalog.pg_namespace WHERE nspname = 'ciosync'",
            &[],
        )
        .await?
        .and_then(|row| row.get(0));
    Ok(comment.as_deref() == Some(schema_version().as_str()))
}

/// Runs [`MIGRATION`] unless the schema records the current version. Safe
/// when several processes start at once: each may run the idempotent batch,
/// and the version is written only with it. A role that does not own the
/// schema cannot comment on it: it then runs the batch on every open, as
/// versions before the version check did.
pub async fn migrate(sql: &Client) -> Result<(), PgError> {
    if schema_is_current(sql).await.map_err(PgError::sql("read the ciosync schema version"))? {
        return Ok(());
    }
    let version_comment = format!(
        "DO $$ BEGIN
             COMMENT ON SCHEMA ciosync IS '{}';
         EXCEPTION WHEN insufficient_privilege THEN NULL;
         END $$;",
        schema_version()
    );
    sql.batch_execute(&format!("{MIGRATION}{version_comment}"))
        .await
        .map_err(PgError::sql("create the ciosync schema"))
}

/// How far the copy of one table got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyState {
    /// Recorded before the slot was created; nothing copied yet.
    Pending,
    /// Copying; every row with a key up to `last_key` was delivered.
    Copying { last_key: Option<String>, rows_copied: i64 },
    /// Every row was delivered.
    Done,
}

/// Whether ciosync streamed from `slot` before: it is recorded in
/// `ciosync.slots`, or it left traces that only a slot in use leaves (an
/// initial copy past its plan, a backfill that ran, a dead letter), which covers
/// slots used by versions without `ciosync.slots`. Read only, and safe
/// before the schema exists (`check` uses it too).
pub async fn slot_was_used(sql: &Client, slot: &str) -> Result<bool, tokio_postgres::Error> {
    let tables: Vec<String> = sql
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'ciosync' \
               AND c.relname IN ('slots', 'initial_copy', 'backfills', 'dead_letters')",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let traces = [
        ("slots", "SELECT EXISTS (SELECT 1 FROM ciosync.slots WHERE slot = $1)"),
        (
            "initial_copy",
            "SELECT EXISTS (SELECT 1 FROM ciosync.initial_copy WHERE slot = $1 AND state <> 'pending')",
        ),
        // Queued backfills prove nothing: `ciosync backfill` may run first.
        (
            "backfills",
            "SELECT EXISTS (SELECT 1 FROM ciosync.backfills \
             WHERE slot = $1 AND state IN ('running', 'done', 'failed'))",
        ),
        ("dead_letters", "SELECT EXISTS (SELECT 1 FROM ciosync.dead_letters WHERE slot = $1)"),
    ];
    for (table, query) in traces {
        if tables.iter().any(|t| t == table) && sql.query_one(query, &[&slot]).await?.get(0) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Access to the `ciosync` schema over one SQL connection.
pub struct State<'a> {
    sql: &'a Client,
    slot: &'a str,
}

impl<'a> State<'a> {
    /// Creates or migrates the schema unless it is current, and returns a
    /// handle for `slot`. Called several times per start and reconnect: on
    /// a current schema it costs one query (see [`migrate`]).
    pub async fn open(sql: &'a Client, slot: &'a str) -> Result<State<'a>, PgError> {
        migrate(sql).await?;
        Ok(Self { sql, slot })
    }

    /// Whether this slot was used before; see [`slot_was_used`].
    pub async fn slot_known(&self) -> Result<bool, PgError> {
        slot_was_used(self.sql, self.slot).await.map_err(PgError::sql("read ciosync.slots"))
    }

    /// Records that the slot exists and is ours (idempotent).
    pub async fn record_slot(&self) -> Result<(), PgError> {
        self.sql
            .execute(
                "INSERT INTO ciosync.slots (slot) VALUES ($1) ON CONFLICT (slot) DO NOTHING",
                &[&self.slot],
            )
            .await
            .map_err(PgError::sql("write ciosync.slots"))?;
        Ok(())
    }

    /// Whether a backfill of every row and attribute of `table` is queued or
    /// running for this slot.
    pub async fn full_backfill_waits(&self, table: &str) -> Result<bool, PgError> {
        let row = self
            .sql
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM ciosync.backfills WHERE slot = $1 \
                 AND table_name = $2 AND where_clause IS NULL AND attributes IS NULL \
                 AND state IN ('queued', 'running'))",
                &[&self.slot, &table],
            )
            .await
            .map_err(PgError::sql("read ciosync.backfills"))?;
        Ok(row.get(0))
    }

    /// Records that the slot was lost and created again.
    pub async fn record_slot_recreated(&self) -> Result<(), PgError> {
        self.sql
            .execute(
                "INSERT INTO ciosync.slots AS s (slot, recreated_at, times_recreated) \
                 VALUES ($1, now(), 1) ON CONFLICT (slot) DO UPDATE \
                 SET recreated_at = now(), times_recreated = s.times_recreated + 1",
                &[&self.slot],
            )
            .await
            .map_err(PgError::sql("write ciosync.slots"))?;
        Ok(())
    }

    /// The copy state of every table recorded for this slot.
    pub async fn copies(&self) -> Result<Vec<(String, CopyState)>, PgError> {
        let rows = self
            .sql
            .query(
                "SELECT table_name, state, last_key, rows_copied FROM ciosync.initial_copy \
                 WHERE slot = $1 ORDER BY table_name",
                &[&self.slot],
            )
            .await
            .map_err(PgError::sql("read ciosync.initial_copy"))?;
        Ok(rows
            .iter()
            .map(|row| {
                let state: String = row.get(1);
                let copy = match state.as_str() {
                    "pending" => CopyState::Pending,
                    "done" => CopyState::Done,
                    _ => CopyState::Copying { last_key: row.get(2), rows_copied: row.get(3) },
                };
                (row.get(0), copy)
            })
            .collect())
    }

    /// Records that a fresh copy of `tables` is about to start: before the
    /// slot exists, so a crash at any point afterwards is seen on restart.
    pub async fn plan(&self, tables: &[String]) -> Result<(), PgError> {
        self.sql
            .execute("DELETE FROM ciosync.initial_copy WHERE slot = $1", &[&self.slot])
            .await
            .map_err(PgError::sql("reset ciosync.initial_copy"))?;
        for table in tables {
            self.sql
                .execute(
                    "INSERT INTO ciosync.initial_copy (slot, table_name, state) \
                     VALUES ($1, $2, 'pending')",
                    &[&self.slot, table],
                )
                .await
                .map_err(PgError::sql("write ciosync.initial_copy"))?;
        }
        Ok(())
    }

    /// Records that every row of `table` up to `last_key` was delivered.
    pub async fn checkpoint(
        &self,
        table: &str,
        last_key: &str,
        rows_copied: i64,
    ) -> Result<(), PgError> {
        self.sql
            .execute(
                "UPDATE ciosync.initial_copy SET state = 'copying', last_key = $3, \
                 rows_copied = $4, updated_at = now() WHERE slot = $1 AND table_name = $2",
                &[&self.slot, &table, &last_key, &rows_copied],
            )
            .await
            .map_err(PgError::sql("write ciosync.initial_copy"))?;
        Ok(())
    }

    /// Records that `table` was copied completely.
    pub async fn finish(&self, table: &str, rows_copied: i64) -> Result<(), PgError> {
        self.sql
            .execute(
                "UPDATE ciosync.initial_copy SET state = 'done', rows_copied = $3, \
                 updated_at = now() WHERE slot = $1 AND table_name = $2",
                &[&self.slot, &table, &rows_copied],
            )
            .await
            .map_err(PgError::sql("write ciosync.initial_copy"))?;
        Ok(())
    }
}
