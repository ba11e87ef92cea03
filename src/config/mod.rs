//! The configuration file: its types are its documentation.
//!
//! Loading is three steps, all before anything is created or sent: parse the
//! TOML (unknown keys are rejected by name), apply environment overrides
//! (`CIOSYNC_<SECTION>_<KEY>` for every key of `[postgres]`, `[customerio]`,
//! `[pipeline]`, `[metrics]`, `[log]`, `[delete_guard]` and `[webhooks]`, e.g.
//! `CIOSYNC_CUSTOMERIO_API_KEY`), then [`Config::validate`],
//! which names the bad field and what is allowed. `config/example.toml`
//! documents every key and is parsed by a test.

//!
//! - [`webhooks`]: the `[webhooks]` section and its write-backs, resolved
//!   to their statements.

pub mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::pg::connection::ConnectionSettings;
use crate::secret::Secret;
use crate::track_api;

/// Default replication slot name.
pub const DEFAULT_SLOT: &str = "ciosync";
/// Default publication name.
pub const DEFAULT_PUBLICATION: &str = "ciosync";
/// Default timeout for one Customer.io request, seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 10;
/// Default cap on the backoff between retries, seconds.
pub const DEFAULT_RETRY_MAX_BACKOFF_SECS: u64 = 60;
/// Default time allowed for in-flight work at shutdown, seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 10;
/// Default memory budget for operations not yet accepted: 16 MiB.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;
/// Smallest memory budget accepted: 1 MiB.
pub const MIN_PENDING_BYTES: usize = 1024 * 1024;
/// Default most operations in one `/api/v2/batch` request.
pub const DEFAULT_MAX_BATCH_OPS: usize = 500;
/// Default request budget, shared by the stream, the initial copy and
/// backfills: a tenth of Customer.io's documented 1000 requests/s.
pub const DEFAULT_MAX_REQUESTS_PER_SECOND: u32 = 100;
/// Default interval of standby status updates (acks) to Postgres, milliseconds.
pub const DEFAULT_STATUS_INTERVAL_MS: u64 = 1000;
/// Default connect timeout for Postgres, seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Default address of the metrics and health endpoint. Not 9187, which
/// postgres_exporter uses beside the same database.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9820";
/// Default time operations may wait with none delivered before `/readyz`
/// reports the pipeline stalled, seconds: two retry backoffs at their default cap.
pub const DEFAULT_STALL_TIMEOUT_SECS: u64 = 120;

/// Default interval of heartbeats on a quiet database, seconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_SECS: u64 = 60;
/// Default retained WAL at which the slot's size is warned about: 4 GiB.
pub const DEFAULT_RETAINED_WAL_WARN_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Default log filter when `RUST_LOG` is not set.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default of `delete_guard.max_deletes`: removals a window may send
/// before the rest are held for an operator.
pub const DEFAULT_MAX_DELETES: u64 = 1000;
/// Default of `delete_guard.window_secs`: one hour.
pub const DEFAULT_DELETE_WINDOW_SECS: u64 = 3600;

/// Sections whose scalar keys can be overridden from the environment.
/// A `CIOSYNC_WEBHOOKS_*` variable turns the optional `[webhooks]` on, as
/// the section would.
const ENV_SECTIONS: [&str; 7] =
    ["postgres", "customerio", "pipeline", "metrics", "log", "delete_guard", "webhooks"];

/// A configuration problem, naming the field and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key,
    /// wrong type, missing key). The message names the key.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value is out of its allowed range.
    #[error("invalid config: {field}: {message}")]
    Invalid { field: String, message: String },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the users live and how to replicate from there.
    pub postgres: PostgresConfig,
    /// Where the changes go.
    pub customerio: CustomerioConfig,
    /// Tables to sync; at least one.
    pub sync: Vec<SyncConfig>,
    /// Tables whose inserts become events.
    #[serde(default)]
    pub events: Vec<EventTableConfig>,
    /// How the daemon runs; every key has a default.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The HTTP endpoint for Prometheus and health probes; every key has a default.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Logging; every key has a default.
    #[serde(default)]
    pub log: LogConfig,
    /// The mass-delete circuit breaker; every key has a default.
    #[serde(default)]
    pub delete_guard: DeleteGuardConfig,
    /// The reporting-webhook receiver; off unless the section is present.
    #[serde(default)]
    pub webhooks: Option<webhooks::WebhooksConfig>,
}

/// `[postgres]`: the source database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, `postgres://user:password@host:port/db?sslmode=…`.
    /// `sslmode` (disable, prefer, require, verify-ca, verify-full) and
    /// `sslrootcert` are honoured. Env: `CIOSYNC_POSTGRES_URL`.
    pub url: Secret,
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
    /// The connection settings `url` describes; an error names `postgres.url`
    /// and never repeats the URL (it holds the password).
    pub fn connection(&self) -> Result<ConnectionSettings, ConfigError> {
        ConnectionSettings::parse(&self.url, Duration::from_secs(self.connect_timeout_secs))
            .map_err(|e| ConfigError::invalid("postgres.url", e.to_string()))
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
    /// Create the slot again and queue a backfill of every synced table
    /// (rows deleted meanwhile stay in Customer.io).
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

/// Customer.io's data centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `https://track.customer.io`
    Us,
    /// `https://track-eu.customer.io`
    Eu,
}

/// `[customerio]`: the Track API workspace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerioConfig {
    /// Track API site id. Env: `CIOSYNC_CUSTOMERIO_SITE_ID`.
    pub site_id: String,
    /// Track API key. Env: `CIOSYNC_CUSTOMERIO_API_KEY`.
    pub api_key: Secret,
    /// `us` or `eu`. Default `us`.
    #[serde(default = "default_region")]
    pub region: Region,
    /// Base URL overriding `region`, e.g. the emulator's `http://127.0.0.1:9090`.
    #[serde(default)]
    pub track_url: Option<String>,
    /// Timeout of one request, seconds. Default 10.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Longest wait between two retries of a failing request, seconds. Default 60.
    #[serde(default = "default_retry_max_backoff_secs")]
    pub retry_max_backoff_secs: u64,
    /// Most operations in one `/api/v2/batch` request (1–1000). Default 500.
    #[serde(default = "default_max_batch_ops")]
    pub max_batch_ops: usize,
    /// Most requests per second to the Track API, for everything ciosync
    /// sends (1–1000; Customer.io documents 1000/s per workspace). Default 100.
    #[serde(default = "default_max_requests_per_second")]
    pub max_requests_per_second: u32,
    /// Longest time an operation waits for more to join its batch (and for
    /// later changes of the same customer to merge into it), ms (0–10000).
    /// Default 100.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Most requests in flight at once (1–64). A customer never has two.
    /// Default 4.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Per-item errors (in a 207) worth retrying: an item error whose
    /// `reason` contains one of these (case-insensitive) is retried up to 5
    /// times before it is dead-lettered; any other item error is
    /// dead-lettered at once. Customer.io documents no transient item
    /// errors, so this is a guess kept configurable.
    #[serde(default = "default_transient_item_errors")]
    pub transient_item_errors: Vec<String>,
}

impl CustomerioConfig {
    /// The Track API base URL, without a trailing slash.
    pub fn base_url(&self) -> String {
        match &self.track_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => match self.region {
                Region::Us => track_api::US_TRACK_URL.to_owned(),
                Region::Eu => track_api::EU_TRACK_URL.to_owned(),
            },
        }
    }

    /// The linger time as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

/// What to do in Customer.io when a row's id column changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnIdChange {
    /// Identify the new id, then merge the old person into it, so the
    /// person's history follows them.
    #[default]
    Merge,
    /// Identify the new id, then delete the old person.
    DeleteOld,
}

/// One `[[sync]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// `schema.table`, or `table` for `public.table`.
    pub table: String,
    /// Column whose value is the Customer.io customer id; must be unique and
    /// not null (primary key or unique index).
    pub id_column: String,
    /// Customer.io attribute name = column name.
    pub attributes: BTreeMap<String, String>,
    /// `merge` (default) or `delete_old`.
    #[serde(default)]
    pub on_id_change: OnIdChange,
    /// What removing a customer sends: `delete` (default) or `suppress`
    /// (delete and block the id, for erasure requests). Applies to a DELETE,
    /// a soft delete, and a row leaving the filter.
    #[serde(default)]
    pub delete_action: DeleteAction,
    /// A column whose turning non-NULL means the row is deleted (e.g.
    /// `deleted_at`); turning NULL again identifies the customer in full.
    #[serde(default)]
    pub soft_delete_column: Option<String>,
    /// Events sent when a column of a row changes (`[[sync.events]]`).
    #[serde(default)]
    pub events: Vec<ChangeEventConfig>,
    /// Only rows for which this SQL boolean expression is true are synced,
    /// e.g. `email_verified AND NOT is_staff`. It becomes the publication's
    /// row filter (`FOR TABLE t WHERE (…)`, PostgreSQL 15), so a row that
    /// stops matching is deleted in Customer.io and one that starts matching
    /// is identified; the initial copy and backfills read matching rows only.
    /// Its columns must be in the table's replica identity. Default: none.
    #[serde(default)]
    pub filter: Option<String>,
}

impl SyncConfig {
    /// The table's schema and name, `public` when the config gives none.
    pub fn schema_and_name(&self) -> (&str, &str) {
        split_table(&self.table)
    }
}

/// `schema.table` as (schema, table), `public` when no schema is given.
fn split_table(table: &str) -> (&str, &str) {
    match table.split_once('.') {
        Some((schema, name)) => (schema, name),
        None => ("public", table),
    }
}

/// `delete_action`: what removing a customer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteAction {
    /// Delete the person; a later change of the row creates them again.
    #[default]
    Delete,
    /// Delete the person and block the id: later calls with it are ignored.
    Suppress,
}

/// `[[sync.events]]`: an event sent when a column of a synced row changes.
/// Needs the old row: `REPLICA IDENTITY FULL` on the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEventConfig {
    /// The event's name, e.g. `plan_changed`.
    pub name: String,
    /// Fire when this column's value changes; the data holds `from` and `to`.
    #[serde(default)]
    pub when_changed: Option<String>,
    /// Fire when this column changes to a non-NULL value (e.g.
    /// `password_updated_at`).
    #[serde(default)]
    pub when: Option<String>,
    /// Columns whose new values go into the event's data, by column name.
    #[serde(default)]
    pub data: Vec<String>,
}

impl ChangeEventConfig {
    /// The column the event watches.
    pub fn column(&self) -> &str {
        self.when_changed.as_deref().or(self.when.as_deref()).unwrap_or_default()
    }
}

/// `[[events]]`: every INSERT into a table becomes an event of the customer
/// the row names (an event table such as `campaign_signups`, or an outbox).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTableConfig {
    /// `schema.table`, or `table` for `public.table`.
    pub table: String,
    /// Column holding the Customer.io id of the person the event is for.
    pub customer_id_column: String,
    /// Where the customer id is NULL: a column holding an anonymous id (a
    /// cookie, a device id); the event is then sent as an anonymous event,
    /// which Customer.io attaches to the person later identified with it.
    #[serde(default)]
    pub anonymous_id_column: Option<String>,
    /// A fixed event name …
    #[serde(default)]
    pub name: Option<String>,
    /// … or the column holding it.
    #[serde(default)]
    pub name_column: Option<String>,
    /// Event data key = column.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// A `json`/`jsonb` column whose object is the event's data (keys of
    /// `data` are added to it).
    #[serde(default)]
    pub data_column: Option<String>,
    /// A timestamp column giving the event's time; default the commit time.
    #[serde(default)]
    pub timestamp_column: Option<String>,
}

impl EventTableConfig {
    /// The table's schema and name, `public` when the config gives none.
    pub fn schema_and_name(&self) -> (&str, &str) {
        split_table(&self.table)
    }
}

/// `[pipeline]`: how the daemon runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Time allowed at SIGTERM for in-flight requests before they are
    /// abandoned (unacked, so they are sent again next start), seconds. Default 10.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// On the first start (no slot yet), copy every existing row to
    /// Customer.io before streaming changes. `false` for workspaces whose
    /// customers already exist. Default `true`.
    #[serde(default = "default_initial_sync")]
    pub initial_sync: bool,
    /// Memory for operations read from the slot but not yet accepted by
    /// Customer.io, and for the commits not yet acknowledged behind them,
    /// bytes (at least 1 MiB). When it is full ciosync stops reading the
    /// slot until requests complete. The mass-delete circuit breaker uses at
    /// most an eighth of it besides. Default 16 MiB.
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout_secs: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            initial_sync: true,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
        }
    }
}

/// `[metrics]`: one small HTTP server, started by `ciosync run`, serving
/// `GET /metrics` (Prometheus text format), `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// IP address and port to listen on, e.g. `127.0.0.1:9820` (this host
    /// only) or `0.0.0.0:9820` (every interface, for a Prometheus or a
    /// Kubernetes probe on another host). Default `127.0.0.1:9820`. The
    /// daemon does not start when it cannot listen there.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
    /// `/readyz` answers 503 when operations have waited this long with
    /// none delivered (Customer.io unreachable or refusing), seconds
    /// (1-86400). Default 120.
    #[serde(default = "default_stall_timeout_secs")]
    pub stall_timeout_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.to_owned(),
            stall_timeout_secs: DEFAULT_STALL_TIMEOUT_SECS,
        }
    }
}

/// `[log]`: what the daemon logs (the format is `run --log-format`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`error`, `warn`, `info`, `debug`,
    /// `trace`) or directives such as `info,ciosync::sink=debug`. `RUST_LOG`,
    /// when set, wins. Default `info`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: DEFAULT_LOG_LEVEL.to_owned() }
    }
}

/// `[delete_guard]`: the mass-delete circuit breaker. When more customers
/// would be removed (deleted or suppressed) within `window_secs` than either
/// limit allows, further removals are held in `ciosync.held_deletes` until an
/// operator runs `ciosync deletes approve` or `discard`; everything else keeps
/// flowing. Both limits at 0 turn the breaker off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteGuardConfig {
    /// Removals allowed within a window; the next one trips the breaker.
    /// 0 turns this rule off. Default 1000.
    #[serde(default = "default_max_deletes")]
    pub max_deletes: u64,
    /// Removals allowed within a window as a share (0.0-1.0) of the synced
    /// tables' rows, estimated from `pg_class.reltuples` and read again
    /// hourly (at least 1 removal). 0.0 turns this rule off. Default 0.0.
    #[serde(default)]
    pub max_share: f64,
    /// The sliding window both limits count in, seconds (1-604800). Default 3600.
    #[serde(default = "default_delete_window_secs")]
    pub window_secs: u64,
}

impl Default for DeleteGuardConfig {
    fn default() -> Self {
        Self {
            max_deletes: DEFAULT_MAX_DELETES,
            max_share: 0.0,
            window_secs: DEFAULT_DELETE_WINDOW_SECS,
        }
    }
}

fn default_max_deletes() -> u64 {
    DEFAULT_MAX_DELETES
}
fn default_delete_window_secs() -> u64 {
    DEFAULT_DELETE_WINDOW_SECS
}

fn default_log_level() -> String {
    DEFAULT_LOG_LEVEL.to_owned()
}

impl MetricsConfig {
    /// The address to listen on; [`Config::validate`] checked that it parses.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.trim().parse().map_err(|_| {
            ConfigError::invalid(
                "metrics.listen",
                format!(
                    "must be an IP address and a port, such as {DEFAULT_METRICS_LISTEN} or \
                     0.0.0.0:9820 (got {:?})",
                    self.listen
                ),
            )
        })
    }

    /// The stall timeout as a duration.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.stall_timeout_secs)
    }
}

fn default_metrics_listen() -> String {
    DEFAULT_METRICS_LISTEN.to_owned()
}
fn default_stall_timeout_secs() -> u64 {
    DEFAULT_STALL_TIMEOUT_SECS
}

fn default_initial_sync() -> bool {
    true
}
fn default_max_pending_bytes() -> usize {
    DEFAULT_MAX_PENDING_BYTES
}
fn default_linger_ms() -> u64 {
    100
}
fn default_max_in_flight() -> usize {
    4
}
fn default_transient_item_errors() -> Vec<String> {
    ["internal", "timeout", "unavailable", "rate_limit", "try again"].map(String::from).to_vec()
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
fn default_region() -> Region {
    Region::Us
}
fn default_request_timeout_secs() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_SECS
}
fn default_retry_max_backoff_secs() -> u64 {
    DEFAULT_RETRY_MAX_BACKOFF_SECS
}
fn default_max_batch_ops() -> usize {
    DEFAULT_MAX_BATCH_OPS
}
fn default_max_requests_per_second() -> u32 {
    DEFAULT_MAX_REQUESTS_PER_SECOND
}
fn default_shutdown_timeout_secs() -> u64 {
    DEFAULT_SHUTDOWN_TIMEOUT_SECS
}

impl Config {
    /// Reads, overrides from the process environment, and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text, std::env::vars())
    }

    /// Parses `text`, applies overrides from `env` (name, value pairs), validates.
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut doc: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.message().to_owned()))?;
        apply_env_overrides(&mut doc, env)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().message().to_owned();
                if path == "." {
                    ConfigError::Parse(message)
                } else {
                    ConfigError::Parse(format!("{path}: {message}"))
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value against what it may be, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.postgres.connection()?;
        validate_name("postgres.slot", &self.postgres.slot)?;
        validate_name("postgres.publication", &self.postgres.publication)?;
        if !(10..=60_000).contains(&self.postgres.status_interval_ms) {
            return Err(ConfigError::invalid(
                "postgres.status_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        if !(1..=600).contains(&self.postgres.connect_timeout_secs) {
            return Err(ConfigError::invalid(
                "postgres.connect_timeout_secs",
                "must be between 1 and 600",
            ));
        }
        if self.postgres.heartbeat_interval_secs > 86_400 {
            return Err(ConfigError::invalid(
                "postgres.heartbeat_interval_secs",
                "must be 0 (no heartbeats) or between 1 and 86400",
            ));
        }
        if self.postgres.retained_wal_warn_bytes < 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "postgres.retained_wal_warn_bytes",
                "must be at least 16777216 (16 MiB, one WAL segment)",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                format!(
                    "must be a level (error, warn, info, debug, trace) or tracing directives \
                     such as info,ciosync::sink=debug (got {:?})",
                    self.log.level
                ),
            ));
        }
        let cio = &self.customerio;
        if cio.site_id.trim().is_empty() {
            return Err(ConfigError::invalid("customerio.site_id", "must not be empty"));
        }
        if cio.api_key.expose().trim().is_empty() {
            return Err(ConfigError::invalid("customerio.api_key", "must not be empty"));
        }
        if let Some(url) = &cio.track_url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "customerio.track_url",
                        "must be an http:// or https:// URL with a host",
                    ))
                }
            }
        }
        if !(1..=300).contains(&cio.request_timeout_secs) {
            return Err(ConfigError::invalid(
                "customerio.request_timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if !(1..=3600).contains(&cio.retry_max_backoff_secs) {
            return Err(ConfigError::invalid(
                "customerio.retry_max_backoff_secs",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=1000).contains(&cio.max_requests_per_second) {
            return Err(ConfigError::invalid(
                "customerio.max_requests_per_second",
                "must be between 1 and 1000 (Customer.io's documented limit)",
            ));
        }
        if !(1..=1000).contains(&cio.max_batch_ops) {
            return Err(ConfigError::invalid(
                "customerio.max_batch_ops",
                "must be between 1 and 1000",
            ));
        }
        if cio.linger_ms > 10_000 {
            return Err(ConfigError::invalid(
                "customerio.linger_ms",
                "must be between 0 and 10000",
            ));
        }
        if !(1..=64).contains(&cio.max_in_flight) {
            return Err(ConfigError::invalid(
                "customerio.max_in_flight",
                "must be between 1 and 64",
            ));
        }
        if cio.transient_item_errors.iter().any(|e| e.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "customerio.transient_item_errors",
                "must not contain an empty string (it would match every error)",
            ));
        }
        if self.pipeline.max_pending_bytes < MIN_PENDING_BYTES {
            return Err(ConfigError::invalid(
                "pipeline.max_pending_bytes",
                "must be at least 1048576 (1 MiB): a batch alone can be 500 KB",
            ));
        }
        if !(1..=3600).contains(&self.pipeline.shutdown_timeout_secs) {
            return Err(ConfigError::invalid(
                "pipeline.shutdown_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        let metrics_listen = self.metrics.listen_addr()?;
        if let Some(webhooks) = &self.webhooks {
            webhooks.validate(Some(metrics_listen))?;
            webhooks::resolve(self)?;
        }
        let guard = &self.delete_guard;
        if !(0.0..=1.0).contains(&guard.max_share) {
            return Err(ConfigError::invalid(
                "delete_guard.max_share",
                "must be between 0.0 (off) and 1.0, e.g. 0.05 for 5% of the synced rows",
            ));
        }
        if !(1..=604_800).contains(&guard.window_secs) {
            return Err(ConfigError::invalid(
                "delete_guard.window_secs",
                "must be between 1 and 604800 (7 days)",
            ));
        }
        if !(1..=86_400).contains(&self.metrics.stall_timeout_secs) {
            return Err(ConfigError::invalid(
                "metrics.stall_timeout_secs",
                "must be between 1 and 86400",
            ));
        }
        self.validate_sync()
    }

    fn validate_sync(&self) -> Result<(), ConfigError> {
        if self.sync.is_empty() {
            return Err(ConfigError::invalid("sync", "at least one [[sync]] table is required"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, sync) in self.sync.iter().enumerate() {
            let field = |key: &str| format!("sync[{i}].{key}");
            let (schema, name) = sync.schema_and_name();
            if schema.is_empty() || name.is_empty() || name.contains('.') {
                return Err(ConfigError::invalid(
                    field("table"),
                    "must be `schema.table` or `table`",
                ));
            }
            if !seen.insert((schema.to_owned(), name.to_owned())) {
                return Err(ConfigError::invalid(field("table"), "table is listed twice"));
            }
            if sync.id_column.is_empty() {
                return Err(ConfigError::invalid(field("id_column"), "must not be empty"));
            }
            if sync.attributes.is_empty() {
                return Err(ConfigError::invalid(
                    field("attributes"),
                    "map at least one attribute (Customer.io attribute = column)",
                ));
            }
            if sync.attributes.len() > track_api::MAX_ATTRIBUTES {
                return Err(ConfigError::invalid(
                    field("attributes"),
                    format!("at most {} attributes", track_api::MAX_ATTRIBUTES),
                ));
            }
            for (attribute, column) in &sync.attributes {
                if attribute.is_empty() || attribute.len() > track_api::MAX_ATTRIBUTE_NAME_BYTES {
                    return Err(ConfigError::invalid(
                        field(&format!("attributes.{attribute}")),
                        "attribute names must be 1 to 150 bytes",
                    ));
                }
                if attribute == "id" || attribute == "cio_id" {
                    return Err(ConfigError::invalid(
                        field(&format!("attributes.{attribute}")),
                        "`id` and `cio_id` are identifiers in Customer.io, not attributes; \
                         the id comes from id_column",
                    ));
                }
                if column.is_empty() {
                    return Err(ConfigError::invalid(
                        field(&format!("attributes.{attribute}")),
                        "column name must not be empty",
                    ));
                }
            }
            if let Some(filter) = &sync.filter {
                if filter.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        field("filter"),
                        "must be an SQL boolean expression such as `email_verified AND NOT \
                         is_staff`; leave it out to sync every row",
                    ));
                }
                // The expression is pasted into statements; one statement only.
                if filter.contains(';') {
                    return Err(ConfigError::invalid(
                        field("filter"),
                        "must be one SQL expression, without `;`",
                    ));
                }
            }
            if sync.soft_delete_column.as_deref().is_some_and(|c| c.trim().is_empty()) {
                return Err(ConfigError::invalid(field("soft_delete_column"), "must not be empty"));
            }
            for (j, event) in sync.events.iter().enumerate() {
                let field = |key: &str| format!("sync[{i}].events[{j}].{key}");
                validate_event_name(&field("name"), &event.name)?;
                match (&event.when_changed, &event.when) {
                    (Some(c), None) | (None, Some(c)) if !c.trim().is_empty() => {}
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::invalid(
                            field("when"),
                            "give when_changed or when, not both",
                        ))
                    }
                    _ => {
                        return Err(ConfigError::invalid(
                            field("when_changed"),
                            "give the column to watch: when_changed = \"plan\" (any change) or \
                             when = \"password_updated_at\" (changed to a non-NULL value)",
                        ))
                    }
                }
                if event.data.iter().any(|c| c.trim().is_empty()) {
                    return Err(ConfigError::invalid(
                        field("data"),
                        "column names must not be empty",
                    ));
                }
            }
        }
        self.validate_event_tables(&seen)
    }

    fn validate_event_tables(
        &self,
        synced: &std::collections::HashSet<(String, String)>,
    ) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, events) in self.events.iter().enumerate() {
            let field = |key: &str| format!("events[{i}].{key}");
            let (schema, name) = events.schema_and_name();
            if schema.is_empty() || name.is_empty() || name.contains('.') {
                return Err(ConfigError::invalid(
                    field("table"),
                    "must be `schema.table` or `table`",
                ));
            }
            let key = (schema.to_owned(), name.to_owned());
            if synced.contains(&key) {
                return Err(ConfigError::invalid(
                    field("table"),
                    "is a [[sync]] table too; derive events from its changes with [[sync.events]]",
                ));
            }
            if !seen.insert(key) {
                return Err(ConfigError::invalid(field("table"), "table is listed twice"));
            }
            if events.customer_id_column.trim().is_empty() {
                return Err(ConfigError::invalid(field("customer_id_column"), "must not be empty"));
            }
            match (&events.name, &events.name_column) {
                (Some(fixed), None) => validate_event_name(&field("name"), fixed)?,
                (None, Some(column)) if !column.trim().is_empty() => {}
                (Some(_), Some(_)) => {
                    return Err(ConfigError::invalid(
                        field("name"),
                        "give name (fixed) or name_column, not both",
                    ))
                }
                _ => {
                    return Err(ConfigError::invalid(
                        field("name"),
                        "give the event's name (name = \"signed_up\") or the column holding it \
                         (name_column = \"name\")",
                    ))
                }
            }
            for (key, column) in &events.data {
                if key.is_empty() || column.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        field(&format!("data.{key}")),
                        "keys and column names must not be empty",
                    ));
                }
            }
            for (key, value) in [
                ("anonymous_id_column", &events.anonymous_id_column),
                ("data_column", &events.data_column),
                ("timestamp_column", &events.timestamp_column),
            ] {
                if value.as_deref().is_some_and(|c| c.trim().is_empty()) {
                    return Err(ConfigError::invalid(field(key), "must not be empty"));
                }
            }
        }
        Ok(())
    }

    /// The status interval as a duration.
    pub fn status_interval(&self) -> Duration {
        Duration::from_millis(self.postgres.status_interval_ms)
    }
}

/// An event name Customer.io takes: 1 to 100 bytes, not blank.
fn validate_event_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() || name.len() > track_api::MAX_EVENT_NAME_BYTES {
        return Err(ConfigError::invalid(field, "event names must be 1 to 100 bytes, not blank"));
    }
    Ok(())
}

/// Slot and publication names go into replication commands unquoted, so they
/// are held to Postgres's slot-name rule.
fn validate_name(field: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            "must be 1 to 63 characters of lower-case letters, digits and underscores",
        ))
    }
}

/// Applies `CIOSYNC_<SECTION>_<KEY>` overrides. The value is read as TOML
/// (so `CIOSYNC_PIPELINE_SHUTDOWN_TIMEOUT_SECS=5` is a number) and otherwise
/// taken as a string; an override for a key the section does not have is
/// rejected like an unknown key in the file.
fn apply_env_overrides(
    doc: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("CIOSYNC_") else {
            continue;
        };
        let Some(section) =
            ENV_SECTIONS.iter().find(|s| rest.to_ascii_lowercase().starts_with(&format!("{s}_")))
        else {
            continue;
        };
        let key = rest[section.len() + 1..].to_ascii_lowercase();
        if key.is_empty() {
            continue;
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| !matches!(v, toml::Value::Table(_) | toml::Value::Array(_)))
            .filter(|_| !is_string_key(&key))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let table = doc
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match table {
            toml::Value::Table(t) => {
                t.insert(key, parsed);
            }
            _ => {
                return Err(ConfigError::invalid(*section, "must be a table"));
            }
        }
    }
    Ok(())
}

/// Keys that are always strings even when their value looks like a number
/// (a numeric site id, say).
fn is_string_key(key: &str) -> bool {
    matches!(
        key,
        "url"
            | "slot"
            | "publication"
            | "site_id"
            | "api_key"
            | "region"
            | "track_url"
            | "listen"
            | "level"
            | "on_slot_lost"
            | "failover_slot"
            | "signing_key"
            | "path"
            | "table"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[postgres]
url = "postgres://ciosync@127.0.0.1:5432/app"
slot = "ciosync"
publication = "ciosync"

[customerio]
site_id = "YOUR_SITE_ID"
api_key = "YOUR_API_KEY"
region = "us"

[[sync]]
table = "public.users"
id_column = "id"

[sync.attributes]
email = "email"
first_name = "first_name"
plan = "plan"
created_at = "created_at"
"#;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn error_of(text: &str) -> String {
        Config::from_toml(text, no_env()).unwrap_err().to_string()
    }

    #[test]
    fn the_minimal_config_from_the_readme_parses() {
        let config = Config::from_toml(MINIMAL, no_env()).unwrap();
        assert_eq!(config.postgres.slot, "ciosync");
        assert_eq!(config.customerio.base_url(), "https://track.customer.io");
        assert_eq!(config.sync[0].schema_and_name(), ("public", "users"));
        assert_eq!(config.sync[0].attributes["first_name"], "first_name");
        assert_eq!(config.sync[0].on_id_change, OnIdChange::Merge);
        assert_eq!(config.pipeline.shutdown_timeout_secs, DEFAULT_SHUTDOWN_TIMEOUT_SECS);
        assert_eq!(config.metrics.listen_addr().unwrap(), "127.0.0.1:9820".parse().unwrap());
        assert_eq!(config.metrics.stall_timeout_secs, DEFAULT_STALL_TIMEOUT_SECS);
    }

    #[test]
    fn a_filter_is_optional_and_kept_as_written() {
        let config = Config::from_toml(MINIMAL, no_env()).unwrap();
        assert_eq!(config.sync[0].filter, None);
        let text = MINIMAL.replace(
            "id_column = \"id\"",
            "id_column = \"id\"\nfilter = \"email_verified AND NOT is_staff\"",
        );
        let config = Config::from_toml(&text, no_env()).unwrap();
        assert_eq!(config.sync[0].filter.as_deref(), Some("email_verified AND NOT is_staff"));
    }

    #[test]
    fn metrics_listen_takes_ipv4_and_ipv6_and_the_environment() {
        let text = MINIMAL.to_owned() + "\n[metrics]\nlisten = \"[::1]:9900\"\n";
        let config = Config::from_toml(&text, no_env()).unwrap();
        assert_eq!(config.metrics.listen_addr().unwrap(), "[::1]:9900".parse().unwrap());
        let env = vec![("CIOSYNC_METRICS_LISTEN".to_owned(), "0.0.0.0:9821".to_owned())];
        let config = Config::from_toml(MINIMAL, env).unwrap();
        assert_eq!(config.metrics.listen_addr().unwrap(), "0.0.0.0:9821".parse().unwrap());
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../config/example.toml");
        let config = Config::from_toml(text, no_env()).unwrap();
        assert!(!config.sync.is_empty());
        assert_eq!(config.metrics.listen, DEFAULT_METRICS_LISTEN);
        assert_eq!(config.metrics.stall_timeout_secs, DEFAULT_STALL_TIMEOUT_SECS);
    }

    /// The commented-out `[webhooks]` section, uncommented, is valid and
    /// names only known keys, with the defaults it documents.
    #[test]
    fn the_example_webhooks_section_parses() {
        let text = include_str!("../../config/example.toml");
        let start = text.find("# [webhooks]").expect("the example has a [webhooks] section");
        let end = start + text[start..].find("\n\n").expect("the section ends");
        let section: String = text[start..end].lines().map(|l| format!("{}\n", &l[2..])).collect();
        let text = format!("{}{section}{}", &text[..start], &text[end..]);
        let config = Config::from_toml(&text, no_env()).unwrap();
        let webhooks = config.webhooks.expect("the section is read");
        assert_eq!(webhooks.header_timeout_secs, webhooks::DEFAULT_HEADER_TIMEOUT_SECS);
        assert_eq!(webhooks.max_connections, webhooks::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(webhooks.write_back.len(), 1);
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = MINIMAL.replace("region = \"us\"", "region = \"us\"\nregoin = \"eu\"");
        let err = error_of(&text);
        assert!(err.contains("regoin"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (MINIMAL.replace("region = \"us\"", "region = \"ap\""), "region"),
            (MINIMAL.replace("slot = \"ciosync\"", "slot = \"Bad-Slot\""), "postgres.slot"),
            (MINIMAL.replace("postgres://ciosync@", "mysql://ciosync@"), "postgres.url"),
            (MINIMAL.replace("id_column = \"id\"", "id_column = \"\""), "sync[0].id_column"),
            (
                MINIMAL.replace("region = \"us\"", "track_url = \"not a url\""),
                "customerio.track_url",
            ),
            (MINIMAL.replace("email = \"email\"", "id = \"email\""), "sync[0].attributes.id"),
            (
                MINIMAL.replace("id_column = \"id\"", "id_column = \"id\"\nfilter = \" \""),
                "sync[0].filter",
            ),
            (
                MINIMAL.replace(
                    "id_column = \"id\"",
                    "id_column = \"id\"\nfilter = \"a; DROP TABLE x\"",
                ),
                "sync[0].filter",
            ),
            (
                MINIMAL.to_owned() + "\n[pipeline]\nshutdown_timeout_secs = -1\n",
                "pipeline.shutdown_timeout_secs",
            ),
            (MINIMAL.to_owned() + "\n[metrics]\nlisten = \"localhost\"\n", "metrics.listen"),
            (MINIMAL.to_owned() + "\n[metrics]\nlisten = \"1.2.3.4:99999\"\n", "metrics.listen"),
            (MINIMAL.to_owned() + "\n[metrics]\nlisten = 9820\n", "metrics.listen"),
            (
                MINIMAL.to_owned() + "\n[metrics]\nstall_timeout_secs = 0\n",
                "metrics.stall_timeout_secs",
            ),
        ];
        for (text, field) in cases {
            let err = error_of(&text);
            assert!(err.contains(field), "expected {field} in: {err}");
        }
    }

    #[test]
    fn failover_slot_is_on_where_the_server_has_them_unless_told() {
        assert_eq!(FailoverSlot::Auto.wanted(160_004), Ok(false));
        assert_eq!(FailoverSlot::Auto.wanted(170_000), Ok(true));
        assert_eq!(FailoverSlot::Off.wanted(180_001), Ok(false));
        assert_eq!(FailoverSlot::On.wanted(170_002), Ok(true));
        let refused = FailoverSlot::On.wanted(160_004).unwrap_err();
        assert!(
            refused.contains("postgres.failover_slot") && refused.contains("16.0"),
            "{refused}"
        );
        let parsed = Config::from_toml(
            &MINIMAL
                .replace("slot = \"ciosync\"\n", "slot = \"ciosync\"\nfailover_slot = \"on\"\n"),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(parsed.postgres.failover_slot, FailoverSlot::On);
        let env = vec![("CIOSYNC_POSTGRES_FAILOVER_SLOT".to_owned(), "off".to_owned())];
        assert_eq!(
            Config::from_toml(MINIMAL, env).unwrap().postgres.failover_slot,
            FailoverSlot::Off
        );
        assert_eq!(
            Config::from_toml(MINIMAL, Vec::new()).unwrap().postgres.failover_slot,
            FailoverSlot::Auto
        );
    }

    #[test]
    fn env_overrides_the_file_and_keeps_strings_strings() {
        let env = vec![
            ("CIOSYNC_CUSTOMERIO_API_KEY".to_owned(), "from-env".to_owned()),
            ("CIOSYNC_CUSTOMERIO_SITE_ID".to_owned(), "12345".to_owned()),
            ("CIOSYNC_POSTGRES_URL".to_owned(), "postgres://other@db/app".to_owned()),
            ("CIOSYNC_PIPELINE_SHUTDOWN_TIMEOUT_SECS".to_owned(), "3".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = Config::from_toml(MINIMAL, env).unwrap();
        assert_eq!(config.customerio.api_key.expose(), "from-env");
        assert_eq!(config.customerio.site_id, "12345");
        assert_eq!(config.postgres.url.expose(), "postgres://other@db/app");
        assert_eq!(config.pipeline.shutdown_timeout_secs, 3);
    }

    #[test]
    fn env_can_supply_secrets_missing_from_the_file() {
        let text = MINIMAL.replace("api_key = \"YOUR_API_KEY\"\n", "");
        assert!(error_of(&text).contains("api_key"));
        let env = vec![("CIOSYNC_CUSTOMERIO_API_KEY".to_owned(), "k".to_owned())];
        assert!(Config::from_toml(&text, env).is_ok());
    }

    #[test]
    fn an_unknown_env_override_is_rejected_by_name() {
        let env = vec![("CIOSYNC_POSTGRES_SLOTT".to_owned(), "x".to_owned())];
        let err = Config::from_toml(MINIMAL, env).unwrap_err().to_string();
        assert!(err.contains("slott"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_output_or_errors() {
        let text = MINIMAL
            .replace("YOUR_API_KEY", "sk-very-secret")
            .replace("ciosync@127", "ciosync:pw-very-secret@127");
        let config = Config::from_toml(&text, no_env()).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-very-secret") && !debug.contains("pw-very-secret"), "{debug}");
        let bad = text.replace("sslmode", "x").replace("/app\"", "/app?sslmode=nope\"");
        let err = error_of(&bad);
        assert!(!err.contains("pw-very-secret"), "{err}");
    }

    #[test]
    fn slot_safety_and_log_keys_have_defaults_and_are_checked_by_name() {
        let config = Config::from_toml(MINIMAL, no_env()).unwrap();
        assert_eq!(config.postgres.on_slot_lost, OnSlotLost::Stop);
        assert_eq!(config.postgres.heartbeat_interval_secs, DEFAULT_HEARTBEAT_INTERVAL_SECS);
        assert_eq!(config.postgres.retained_wal_warn_bytes, DEFAULT_RETAINED_WAL_WARN_BYTES);
        assert_eq!(config.log.level, "info");

        let env = vec![
            ("CIOSYNC_POSTGRES_ON_SLOT_LOST".to_owned(), "recreate_and_backfill".to_owned()),
            ("CIOSYNC_POSTGRES_HEARTBEAT_INTERVAL_SECS".to_owned(), "0".to_owned()),
            ("CIOSYNC_LOG_LEVEL".to_owned(), "warn,ciosync::sink=debug".to_owned()),
        ];
        let config = Config::from_toml(MINIMAL, env).unwrap();
        assert_eq!(config.postgres.on_slot_lost, OnSlotLost::RecreateAndBackfill);
        assert_eq!(config.postgres.heartbeat_interval_secs, 0);
        assert_eq!(config.log.level, "warn,ciosync::sink=debug");

        let with = |section: &str, line: &str| {
            let text =
                MINIMAL.replace(&format!("[{section}]\n"), &format!("[{section}]\n{line}\n"));
            let text =
                if text == MINIMAL { format!("{MINIMAL}\n[{section}]\n{line}\n") } else { text };
            error_of(&text)
        };
        assert!(with("postgres", "on_slot_lost = \"recreate\"").contains("on_slot_lost"));
        assert!(with("postgres", "heartbeat_interval_secs = 100000")
            .contains("postgres.heartbeat_interval_secs"));
        assert!(with("postgres", "retained_wal_warn_bytes = 1000")
            .contains("postgres.retained_wal_warn_bytes"));
        assert!(with("log", "level = \"info,[\"").contains("log.level"));
        assert!(with("log", "format = \"json\"").contains("format"));
    }

    #[test]
    fn webhooks_are_off_unless_configured_and_take_the_key_from_the_environment() {
        let config = Config::from_toml(MINIMAL, no_env()).unwrap();
        assert!(config.webhooks.is_none());
        let text = format!("{MINIMAL}\n[webhooks]\nlisten = \"0.0.0.0:8080\"\n");
        assert!(error_of(&text).contains("signing_key"), "{}", error_of(&text));
        let env = vec![("CIOSYNC_WEBHOOKS_SIGNING_KEY".to_owned(), "0123abcd".to_owned())];
        let config = Config::from_toml(&text, env).unwrap();
        let webhooks = config.webhooks.unwrap();
        assert_eq!(webhooks.signing_key.expose(), "0123abcd");
        assert_eq!(webhooks.table, webhooks::DEFAULT_TABLE);
        let same = format!(
            "{MINIMAL}\n[metrics]\nlisten = \"0.0.0.0:9820\"\n\n[webhooks]\n\
             listen = \"0.0.0.0:9820\"\nsigning_key = \"k\"\n"
        );
        assert!(error_of(&same).contains("webhooks.listen"), "{}", error_of(&same));
    }

    #[test]
    fn delete_guard_has_defaults_env_overrides_and_named_limits() {
        let config = Config::from_toml(MINIMAL, no_env()).unwrap();
        assert_eq!(config.delete_guard.max_deletes, DEFAULT_MAX_DELETES);
        assert_eq!(config.delete_guard.max_share, 0.0);
        assert_eq!(config.delete_guard.window_secs, DEFAULT_DELETE_WINDOW_SECS);

        let env = vec![
            ("CIOSYNC_DELETE_GUARD_MAX_DELETES".to_owned(), "0".to_owned()),
            ("CIOSYNC_DELETE_GUARD_MAX_SHARE".to_owned(), "0.05".to_owned()),
        ];
        let config = Config::from_toml(MINIMAL, env).unwrap();
        assert_eq!((config.delete_guard.max_deletes, config.delete_guard.max_share), (0, 0.05));

        for (line, field) in [
            ("max_share = 1.5", "delete_guard.max_share"),
            ("max_share = -0.1", "delete_guard.max_share"),
            ("window_secs = 0", "delete_guard.window_secs"),
            ("max_delete = 3", "max_delete"),
        ] {
            let err = error_of(&format!("{MINIMAL}\n[delete_guard]\n{line}\n"));
            assert!(err.contains(field), "expected {field} in: {err}");
        }
    }
}
