//! The replication slot's life: created once, on the first start, and never
//! again behind the operator's back.
//!
//! # Why a lost slot stops the daemon
//!
//! The slot is what makes "nothing is lost while ciosync is down" true: it
//! keeps every change since the last acknowledgement. When it is gone —
//! dropped by someone, or invalidated because it retained more WAL than
//! `max_slot_wal_keep_size` allows — the changes made since its last
//! acknowledged position are gone with it. Creating a new slot and
//! streaming on would look healthy and skip them for good, which is the
//! silent failure this daemon exists to prevent. So:
//!
//! - every slot ciosync streams from is recorded in `ciosync.slots`;
//! - a recorded slot that is missing, or one whose `wal_status` is `lost`,
//!   is [`Lost`]: with `postgres.on_slot_lost = "stop"` (the default) the
//!   daemon exits with status 3 and a message naming the slot and the way
//!   back; with `"recreate_and_backfill"` it drops what is left of it,
//!   creates it again, and queues a backfill of every synced table, then of
//!   every `[[devices]]` table, which re-sends every current row (deletes made while the slot was lost cannot
//!   be re-sent: those customers stay in Customer.io).
//!
//! A slot missing and never recorded is a first start: it is created (by the
//! initial copy, with its snapshot, or here when `initial_sync = false`).
//!
//! # Failover slots (PostgreSQL 17+)
//!
//! Before PostgreSQL 17 a slot lives on one server only: when a standby is
//! promoted, the slot is not there, which is the lost-slot case above. From
//! 17 a slot created with `FAILOVER` is copied to standbys that run with
//! `sync_replication_slots = on`, and survives the promotion
//! (`postgres.failover_slot`, [`failover_wanted`]). The copy is synced now
//! and then, so it may lag what ciosync acknowledged: after a promotion
//! Postgres replays from the copy's position, which sends some changes
//! again (harmless) but loses none, provided the standby had received every
//! change ciosync was sent: that is what `synchronized_standby_slots` on the
//! primary guarantees. See the pipeline's module doc for how the acknowledged
//! position is rebased onto the promoted server's WAL history.

use tokio_postgres::Client;

use super::setup::{slot_state, SlotState};
use crate::config::{Config, CopiedTable, OnSlotLost};
use crate::pg::{Lost, PgError};
use crate::state::{Queued, State};
use crate::telemetry::Counters;

/// Makes sure the configured slot can be streamed from, and returns its
/// state: `Usable`, or `Missing` on a first start when `create_if_new` is
/// off (the initial copy then creates it with its snapshot). A lost slot is
/// [`PgError::SlotLost`], or recovered when the config says so.
pub async fn ensure(
    sql: &Client,
    config: &Config,
    counters: &Counters,
    create_if_new: bool,
) -> Result<SlotState, PgError> {
    let slot = &config.postgres.slot;
    let state = State::open(sql, slot).await?;
    let lost = match slot_state(sql, config).await? {
        SlotState::Unusable(reason) => return Err(PgError::Definite(reason)),
        // Recording it now would make it ours; if its creator dies, Postgres
        // drops it and the next start would take it for lost.
        SlotState::Usable { active: true, confirmed_flush_lsn: None, .. } => {
            return Err(PgError::SlotBeingCreated(slot.clone()))
        }
        usable @ SlotState::Usable { .. } => {
            state.record_slot().await?;
            return Ok(usable);
        }
        SlotState::Missing if !state.slot_known().await? => {
            if !create_if_new {
                return Ok(SlotState::Missing);
            }
            create(sql, slot, failover_wanted(sql, config).await?).await?;
            state.record_slot().await?;
            tracing::info!(%slot, "replication slot created");
            return slot_state(sql, config).await;
        }
        SlotState::Missing => Lost::Dropped,
        SlotState::Invalidated => Lost::Invalidated,
    };
    match config.postgres.on_slot_lost {
        OnSlotLost::Stop => Err(PgError::SlotLost { slot: slot.clone(), how: lost }),
        OnSlotLost::RecreateAndBackfill => {
            recover(sql, config, &state, lost).await?;
            Counters::add(&counters.slots_recreated, 1);
            slot_state(sql, config).await
        }
    }
}

/// Queues a backfill of every synced and devices table and records the
/// recovery, in one committed transaction, then drops what is left of the
/// lost slot and creates it again. In that order: a crash in between leaves the slot lost
/// (so the next start recovers again, finding the backfills already queued),
/// never a new slot without its backfills. The backfills run once the daemon
/// streams from the new slot.
async fn recover(
    sql: &Client,
    config: &Config,
    state: &State<'_>,
    lost: Lost,
) -> Result<(), PgError> {
    let slot = &config.postgres.slot;
    tracing::error!(
        %slot,
        how = ?lost,
        "replication slot lost; postgres.on_slot_lost = recreate_and_backfill: recreating it \
         and backfilling every synced and [[devices]] table"
    );
    // A slot gone (not invalidated) on a server that was ever promoted may
    // be a failover: the last transactions Customer.io has may be missing
    // here, in the rows and in the record of what Customer.io accepted
    // alike, so the backfill sends every row whole.
    let ignore_record = lost == Lost::Dropped && ever_promoted(sql).await;
    sql.batch_execute("BEGIN").await.map_err(PgError::sql("begin the slot's recovery"))?;
    let queued = queue_backfills(sql, config, state, ignore_record).await;
    let committed = match queued {
        Ok(()) => sql.batch_execute("COMMIT").await.map_err(PgError::sql("commit")),
        Err(error) => Err(error),
    };
    if let Err(error) = committed {
        let _ = sql.batch_execute("ROLLBACK").await;
        return Err(error);
    }
    if lost == Lost::Invalidated {
        sql.execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[slot])
            .await
            .map_err(PgError::sql("drop the invalidated replication slot"))?;
    }
    create(sql, slot, failover_wanted(sql, config).await?).await?;
    tracing::warn!(
        %slot,
        "replication slot recreated; `ciosync backfill --status` follows the backfills, \
         `ciosync deletes gone` counts the customers deleted while no slot existed"
    );
    Ok(())
}

/// Whether the server's timeline is past the first (it was promoted at
/// some point); `true` when that cannot be read, the safe side.
async fn ever_promoted(sql: &Client) -> bool {
    let timeline = sql
        .query_one(
            "SELECT substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8)",
            &[],
        )
        .await
        .ok()
        .and_then(|row| u32::from_str_radix(&row.get::<_, String>(0), 16).ok());
    timeline.is_none_or(|timeline| timeline > 1)
}

/// Inside the recovery's transaction: a full backfill of each synced table
/// (people, objects, relationships), then of each `[[devices]]` table
/// (unless an earlier attempt queued one that still waits), and the record.
async fn queue_backfills(
    sql: &Client,
    config: &Config,
    state: &State<'_>,
    ignore_record: bool,
) -> Result<(), PgError> {
    let slot = &config.postgres.slot;
    for copied in CopiedTable::all(config) {
        let table = copied.name();
        if state.full_backfill_waits(&table).await? {
            continue;
        }
        let (schema, name) = copied.schema_and_name();
        // An estimate for progress reports; the backfill reads every row.
        let estimate: i64 = sql
            .query_one(
                "SELECT coalesce((SELECT greatest(c.reltuples, 0)::int8 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2), 0)",
                &[&schema, &name],
            )
            .await
            .map_err(PgError::sql("estimate a table's rows"))?
            .get(0);
        // Devices are never in the record: the flag would change nothing.
        let ignore_record = ignore_record && matches!(copied, CopiedTable::Sync(_));
        let queued =
            Queued { table: &table, rows_total: estimate, ignore_record, ..Queued::default() };
        let id = state.enqueue_backfill(&queued).await?;
        tracing::warn!(
            %slot,
            %table,
            backfill = id,
            ignore_record,
            "backfill queued for the recreated slot"
        );
    }
    state.record_slot_recreated().await
}

/// Creates the slot over SQL (when no initial copy needs its snapshot), as
/// a failover slot when `failover` (PostgreSQL 17+: the fifth argument).
async fn create(sql: &Client, slot: &str, failover: bool) -> Result<(), PgError> {
    let statement = if failover {
        "SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
    } else {
        "SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')"
    };
    sql.execute(statement, &[&slot]).await.map_err(PgError::sql("create the replication slot"))?;
    Ok(())
}

/// The server's `server_version_num` (e.g. 170004).
pub async fn server_version_num(sql: &Client) -> Result<i32, PgError> {
    let server = crate::pg::catalog::Server::read(sql)
        .await
        .map_err(PgError::sql("read server_version_num"))?;
    Ok(server.version_num)
}

/// Whether ciosync's slot on this server is (to be) a failover slot, as
/// `postgres.failover_slot` says; definite when it is `on` and the server
/// predates PostgreSQL 17.
pub async fn failover_wanted(sql: &Client, config: &Config) -> Result<bool, PgError> {
    config.postgres.failover_slot.wanted(server_version_num(sql).await?).map_err(PgError::Definite)
}

/// `ALTER_REPLICATION_SLOT` (a replication command, PostgreSQL 17+) that
/// makes an existing slot a failover slot.
pub fn alter_to_failover_command(slot: &str) -> String {
    format!("ALTER_REPLICATION_SLOT {} ( FAILOVER true )", crate::pg::quote::quote_ident(slot))
}
