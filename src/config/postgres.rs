//! `[postgres]`: the source database, its slot and publication, and how
//! ciosync keeps the slot moving.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{validate_name, ConfigError};
use crate::pg::connection::ConnectionSettings;
use crate::secret::Secret;

/// Default replication slot name.
pub const DEFAULT_SLOT: &str = "ciosync";

/// Default publication name.
pub const DEFAULT_PUBLICATION: &str = "ciosync";

/// Default interval of standby status updates (acks) to Postgres, milliseconds.
pub const DEFAULT_STATUS_INTERVAL_MS: u64 = 1000;

/// Default connect timeout for Postgres, seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;

/// Default interval of heartbeats on a quiet database, seconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_SECS: u64 = 60;

/// Default retained WAL at which the slot's size is warned about: 4 GiB.
pub const DEFAULT_RETAINED_WAL_WARN_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// `[postgres]`: the source database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, `postgres://user:password@host:port/db?sslmode=…`.
    /// `sslmode` (disable, prefer, require, verify-ca, verify-full),
    /// `sslrootcert` and `require_auth` (libpq's values; default
    /// `!password,!md5`) are honoured. Env: `CIOSYNC_POSTGRES_URL`.
    pub url: PostgresUrl,
    /// Logical replication slot; created (pgoutput) if missing. Default `ciosync`.
    #[serde(default = "default_slot")]
    pub slot: String,
    /// Publication; created `FOR TABLE` the synced tables if missing. Default `ciosync`.
    #[serde(default = "default_publication")]
    pub publication: String,
    /// How often acknowledgements are sent to Postgres, ms. Default 1000.
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
    /// Timeout for connecting to Postgres, seconds. Default 10.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// What to do when the slot ciosync used is gone (dropped, or
    /// invalidated by `max_slot_wal_keep_size`). Default `stop`.
    #[serde(default)]
    pub on_slot_lost: OnSlotLost,
    /// Whether the slot is a failover slot (PostgreSQL 17+), which a standby
    /// with `sync_replication_slots = on` keeps in step so it survives a
    /// promotion. `auto` (default): on where the server supports it; `on`:
    /// required (an older server is refused); `off`: an ordinary slot.
    /// Env: `CIOSYNC_POSTGRES_FAILOVER_SLOT`.
    #[serde(default)]
    pub failover_slot: FailoverSlot,
    /// While no transaction of the synced tables arrives for this long, a
    /// heartbeat (`pg_logical_emit_message`) is written so the slot keeps
    /// advancing, seconds (0 turns heartbeats off, else 1-86400). Default 60.
    #[serde(default = "default_heartbeat_interval_secs")]
    pub heartbeat_interval_secs: u64,
    /// Retained WAL (bytes the server keeps for the slot) at which ciosync
    /// logs a warning and sets `ciosync_slot_retained_wal_warning`. Capped at
    /// 80% of `max_slot_wal_keep_size` when that is set. Default 4 GiB.
    #[serde(default = "default_retained_wal_warn_bytes")]
    pub retained_wal_warn_bytes: u64,
}

impl PostgresConfig {
    /// The connection settings `url` describes, with `connect_timeout_secs`.
    /// Each call is a copy of its own: what one connection learns under
    /// `verify-ca` (see [`crate::pg::tls`]) stays with its copy.
    pub fn connection(&self) -> ConnectionSettings {
        self.url.0.fresh(Duration::from_secs(self.connect_timeout_secs))
    }
}

/// `postgres.url`, parsed when the config is read: a bad URL is refused
/// there (naming the field, never repeating the URL, which holds the
/// password), and every user of the config gets its settings from
/// [`PostgresConfig::connection`] without parsing or failing again.
#[derive(Clone)]
pub struct PostgresUrl(ConnectionSettings);

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for PostgresUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let url = Secret::deserialize(deserializer)?;
        // The timeout is `connect_timeout_secs`, set by `connection`.
        ConnectionSettings::parse(&url, Duration::ZERO).map(Self).map_err(serde::de::Error::custom)
    }
}

/// `postgres.on_slot_lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSlotLost {
    /// Say so and exit (status 3): changes made since the slot was lost
    /// never reached Customer.io, and someone must decide what to do.
    #[default]
    Stop,
    /// Create the slot again and queue a backfill of every synced table,
    /// then of every `[[devices]]` table (rows deleted meanwhile stay in
    /// Customer.io).
    RecreateAndBackfill,
}

impl OnSlotLost {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::RecreateAndBackfill => "recreate_and_backfill",
        }
    }
}

/// `postgres.failover_slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverSlot {
    /// A failover slot on PostgreSQL 17 and newer, an ordinary one before.
    #[default]
    Auto,
    /// A failover slot, or refuse to start (PostgreSQL 15 and 16 have none).
    On,
    /// An ordinary slot: lost when a standby is promoted.
    Off,
}

impl FailoverSlot {
    /// Whether a server of `server_version_num` gets a failover slot; an
    /// error (for [`crate::pg::PgError::Definite`]) when `on` meets
    /// a server that has none.
    pub fn wanted(self, server_version_num: i32) -> Result<bool, String> {
        let supported = server_version_num >= 170_000;
        match self {
            Self::Off => Ok(false),
            Self::Auto => Ok(supported),
            Self::On if supported => Ok(true),
            Self::On => Err(format!(
                "postgres.failover_slot = \"on\" needs PostgreSQL 17 or newer (this server is \
                 {}.{}): upgrade, or set failover_slot = \"auto\" or \"off\" and know that the \
                 slot is lost when a standby is promoted",
                server_version_num / 10_000,
                server_version_num % 10_000 / 100
            )),
        }
    }
}

fn default_slot() -> String {
    DEFAULT_SLOT.to_owned()
}

fn default_publication() -> String {
    DEFAULT_PUBLICATION.to_owned()
}

fn default_status_interval_ms() -> u64 {
    DEFAULT_STATUS_INTERVAL_MS
}

fn default_connect_timeout_secs() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_SECS
}

fn default_heartbeat_interval_secs() -> u64 {
    DEFAULT_HEARTBEAT_INTERVAL_SECS
}

fn default_retained_wal_warn_bytes() -> u64 {
    DEFAULT_RETAINED_WAL_WARN_BYTES
}

impl PostgresConfig {
    /// Checks `[postgres]`, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_name("postgres.slot", &self.slot)?;
        validate_name("postgres.publication", &self.publication)?;
        if !(10..=60_000).contains(&self.status_interval_ms) {
            return Err(ConfigError::invalid(
                "postgres.status_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        if !(1..=600).contains(&self.connect_timeout_secs) {
            return Err(ConfigError::invalid(
                "postgres.connect_timeout_secs",
                "must be between 1 and 600",
            ));
        }
        if self.heartbeat_interval_secs > 86_400 {
            return Err(ConfigError::invalid(
                "postgres.heartbeat_interval_secs",
                "must be 0 (no heartbeats) or between 1 and 86400",
            ));
        }
        if self.retained_wal_warn_bytes < 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "postgres.retained_wal_warn_bytes",
                "must be at least 16777216 (16 MiB, one WAL segment)",
            ));
        }
        Ok(())
    }
}
