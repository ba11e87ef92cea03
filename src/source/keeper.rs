//! Keeps the slot from hurting the database: heartbeats while the synced
//! tables are quiet, and a warning before retained WAL fills the disk or
//! gets the slot invalidated.
//!
//! # Heartbeats
//!
//! A slot only advances when ciosync acknowledges something. While the
//! synced tables are idle, Postgres may still send keepalives (which the
//! pipeline acknowledges, see `pipeline`), but not always: a database whose
//! only writes are in other databases of the cluster, or none at all, sends
//! ciosync nothing to confirm, and the slot's `restart_lsn` holds WAL back.
//! So when no transaction arrived for `postgres.heartbeat_interval_secs`,
//! the keeper writes one: `pg_logical_emit_message(true, 'ciosync.heartbeat',
//! <slot>)`, a tiny transaction of its own that comes back through the
//! stream, is acknowledged like any other, and moves the slot forward. Its
//! coming back is counted too (`ciosync_heartbeats_received_total`), which
//! proves the whole loop (write, decode, receive, acknowledge) turns.
//! Other slots on the same database see the message and ignore it: its
//! content names the slot it is for.
//!
//! # Retained WAL
//!
//! Every [`CHECK_EVERY`] the keeper reads how much WAL the server keeps for
//! the slot (`pg_current_wal_lsn() - restart_lsn`). At
//! `postgres.retained_wal_warn_bytes` — capped at 80% of
//! `max_slot_wal_keep_size` when that is set, so the warning always comes
//! before Postgres invalidates the slot — it logs a warning (again every
//! [`REMIND_EVERY`] while it lasts) and sets `ciosync_slot_retained_wal_warning`.
//! A slot that is lost all the same is found by the pipeline when it next
//! starts streaming (see [`super::slot`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::message;
use crate::config::Config;
use crate::pg::connection::ConnectionSettings;
use crate::telemetry::health::now_ms;
use crate::telemetry::{Counters, Phase};

/// How often retained WAL is read (and heartbeats considered, unless their
/// interval is shorter).
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How often a warning is repeated while retained WAL stays above the threshold.
const REMIND_EVERY: Duration = Duration::from_secs(600);
/// Share of `max_slot_wal_keep_size` at which the warning comes at the latest.
const KEEP_SIZE_SHARE: (u64, u64) = (8, 10);

/// What the keeper needs from the config.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    pub slot: String,
    /// `None`: no heartbeats.
    pub heartbeat: Option<Duration>,
    pub retained_wal_warn_bytes: u64,
}

impl KeeperConfig {
    /// The keeper's part of `config`.
    pub fn of(config: &Config) -> Self {
        let every = config.postgres.heartbeat_interval_secs;
        Self {
            slot: config.postgres.slot.clone(),
            heartbeat: (every > 0).then(|| Duration::from_secs(every)),
            retained_wal_warn_bytes: config.postgres.retained_wal_warn_bytes,
        }
    }
}

/// Runs until `stop` is cancelled. Failures to reach Postgres are logged at
/// debug level and retried on the next tick: the pipeline reports them.
pub async fn run(
    settings: ConnectionSettings,
    config: KeeperConfig,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let tick = config.heartbeat.map_or(CHECK_EVERY, |h| h.min(CHECK_EVERY));
    let mut keeper = Keeper {
        config,
        counters,
        client: None,
        warning: Warning::default(),
        heartbeat_warned: None,
    };
    let mut next_check = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(error) = keeper.connect(&settings).await {
            tracing::debug!(%error, "slot keeper cannot connect to postgres");
            continue;
        }
        // The two jobs are independent: a role that may not write a
        // heartbeat still gets the retained-WAL warning.
        if let Err(error) = keeper.heartbeat_if_quiet().await {
            keeper.heartbeat_failed(&error);
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + CHECK_EVERY;
            if let Err(error) = keeper.check_retained_wal().await {
                tracing::debug!(%error, "slot keeper cannot read the slot");
                keeper.client = None;
            }
        }
    }
}

struct Keeper {
    config: KeeperConfig,
    counters: Arc<Counters>,
    client: Option<Client>,
    warning: Warning,
    /// When a failed heartbeat was last logged (at most every [`REMIND_EVERY`]).
    heartbeat_warned: Option<std::time::Instant>,
}

impl Keeper {
    async fn connect(
        &mut self,
        settings: &ConnectionSettings,
    ) -> Result<(), tokio_postgres::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(settings.connect_sql().await?);
        }
        Ok(())
    }

    fn sql(&self) -> &Client {
        self.client.as_ref().expect("connected before use")
    }

    /// Logs a failed heartbeat, at most every [`REMIND_EVERY`]; a broken
    /// connection is made again on the next tick.
    fn heartbeat_failed(&mut self, error: &tokio_postgres::Error) {
        let now = std::time::Instant::now();
        if self.heartbeat_warned.is_none_or(|at| now - at >= REMIND_EVERY) {
            self.heartbeat_warned = Some(now);
            tracing::warn!(
                %error,
                "cannot write a heartbeat (pg_logical_emit_message); retrying, said again in 10 \
                 minutes if it still fails"
            );
        }
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
    }

    /// Writes a heartbeat when streaming and nothing arrived for the interval.
    async fn heartbeat_if_quiet(&mut self) -> Result<(), tokio_postgres::Error> {
        let Some(interval) = self.config.heartbeat else { return Ok(()) };
        if self.counters.health.phase() != Phase::Streaming {
            return Ok(());
        }
        let last = Counters::get(&self.counters.last_commit_received_ms);
        if now_ms().saturating_sub(last) < interval.as_millis() as u64 {
            return Ok(());
        }
        self.sql()
            .execute(
                "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2)",
                &[&message::HEARTBEAT_PREFIX, &self.config.slot],
            )
            .await?;
        Counters::add(&self.counters.heartbeats_written, 1);
        // Counts as activity until it comes back (or something else does).
        Counters::set(&self.counters.last_commit_received_ms, now_ms(), None);
        tracing::debug!(slot = %self.config.slot, "heartbeat written");
        Ok(())
    }

    async fn check_retained_wal(&mut self) -> Result<(), tokio_postgres::Error> {
        let row = self
            .sql()
            .query_opt(
                "SELECT (pg_catalog.pg_current_wal_lsn() - s.restart_lsn)::int8, \
                        (SELECT setting::int8 FROM pg_catalog.pg_settings \
                         WHERE name = 'max_slot_wal_keep_size') \
                 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = $1",
                &[&self.config.slot],
            )
            .await?;
        // No slot (yet, or lost: the pipeline says which) or no position.
        let Some((Some(retained), keep_size_mb)) =
            row.map(|r| (r.get::<_, Option<i64>>(0), r.get::<_, Option<i64>>(1)))
        else {
            return Ok(());
        };
        let threshold = warn_threshold(self.config.retained_wal_warn_bytes, keep_size_mb);
        Counters::set(&self.counters.retained_wal_warn_bytes, threshold, None);
        let retained = retained.max(0) as u64;
        match self.warning.observe(retained >= threshold, std::time::Instant::now()) {
            Some(Notice::Over) => tracing::warn!(
                slot = %self.config.slot,
                retained_wal_bytes = retained,
                threshold_bytes = threshold,
                keep_size_mb,
                "the replication slot retains a lot of WAL: ciosync is stopped, stalled or \
                 behind (see /readyz and ciosync_replication_lag_seconds); the database's disk \
                 holds it, and past max_slot_wal_keep_size Postgres invalidates the slot"
            ),
            Some(Notice::Back) => tracing::info!(
                slot = %self.config.slot,
                retained_wal_bytes = retained,
                threshold_bytes = threshold,
                "retained WAL is below the warning threshold again"
            ),
            None => {}
        }
        Counters::set(&self.counters.retained_wal_warning, u64::from(self.warning.over), None);
        Ok(())
    }
}

/// The retained WAL at which to warn: the configured bytes, capped at 80% of
/// `max_slot_wal_keep_size` (in MB; -1 or NULL means no limit).
pub fn warn_threshold(configured: u64, keep_size_mb: Option<i64>) -> u64 {
    match keep_size_mb {
        Some(mb) if mb > 0 => {
            let limit = (mb as u64).saturating_mul(1024 * 1024);
            configured.min(limit / KEEP_SIZE_SHARE.1 * KEEP_SIZE_SHARE.0)
        }
        _ => configured,
    }
}

/// What the log should say after one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    /// Over the threshold: newly, or still after [`REMIND_EVERY`].
    Over,
    /// Back under it.
    Back,
}

/// Whether retained WAL is over the threshold, and when that was last said.
#[derive(Debug, Default)]
struct Warning {
    over: bool,
    last_said: Option<std::time::Instant>,
}

impl Warning {
    fn observe(&mut self, over: bool, now: std::time::Instant) -> Option<Notice> {
        let was = std::mem::replace(&mut self.over, over);
        match (was, over) {
            (false, true) => {
                self.last_said = Some(now);
                Some(Notice::Over)
            }
            (true, true) if self.last_said.is_none_or(|at| now - at >= REMIND_EVERY) => {
                self.last_said = Some(now);
                Some(Notice::Over)
            }
            (true, false) => Some(Notice::Back),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    fn keeper_config(heartbeat_line: &str) -> KeeperConfig {
        let text = format!(
            "[postgres]\nurl = \"postgres://ciosync@127.0.0.1/app\"\n{heartbeat_line}\n\
             [customerio]\nsite_id = \"s\"\napi_key = \"k\"\n\
             [[sync]]\ntable = \"public.users\"\nid_column = \"id\"\n\
             [sync.attributes]\nemail = \"email\"\n"
        );
        KeeperConfig::of(&Config::from_toml(&text, Vec::new()).unwrap())
    }

    #[test]
    fn zero_turns_heartbeats_off_and_anything_else_is_their_interval() {
        assert_eq!(keeper_config("heartbeat_interval_secs = 0").heartbeat, None);
        assert_eq!(
            keeper_config("heartbeat_interval_secs = 7").heartbeat,
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            keeper_config("").heartbeat,
            Some(Duration::from_secs(crate::config::DEFAULT_HEARTBEAT_INTERVAL_SECS))
        );
    }

    #[test]
    fn the_threshold_comes_before_max_slot_wal_keep_size() {
        assert_eq!(warn_threshold(4 * GIB, None), 4 * GIB);
        assert_eq!(warn_threshold(4 * GIB, Some(-1)), 4 * GIB);
        // 10 GB allowed: the configured 4 GiB comes first.
        assert_eq!(warn_threshold(4 * GIB, Some(10 * 1024)), 4 * GIB);
        // 2 GB allowed: warn at 80% of it, before Postgres invalidates the slot.
        assert_eq!(warn_threshold(4 * GIB, Some(2 * 1024)), 2 * GIB / 10 * 8);
    }

    #[test]
    fn a_warning_is_said_on_crossing_repeated_while_over_and_cleared_once() {
        let t0 = std::time::Instant::now();
        let mut w = Warning::default();
        assert_eq!(w.observe(false, t0), None);
        assert_eq!(w.observe(true, t0), Some(Notice::Over));
        assert_eq!(w.observe(true, t0 + Duration::from_secs(10)), None);
        assert_eq!(w.observe(true, t0 + REMIND_EVERY), Some(Notice::Over));
        assert_eq!(w.observe(false, t0 + REMIND_EVERY * 2), Some(Notice::Back));
        assert_eq!(w.observe(false, t0 + REMIND_EVERY * 3), None);
    }
}
