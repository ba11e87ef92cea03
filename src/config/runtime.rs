//! How the daemon runs: `[pipeline]`, `[metrics]`, `[log]` and
//! `[delete_guard]`; every key has a default.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::listener::Limits;

/// Default time allowed for in-flight work at shutdown, seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 10;

/// Default memory budget for operations not yet accepted: 16 MiB.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// Smallest memory budget accepted: 1 MiB.
pub const MIN_PENDING_BYTES: usize = 1024 * 1024;

/// Default address of the metrics and health endpoint. Not 9187, which
/// postgres_exporter uses beside the same database.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9820";

/// Default time operations may wait with none delivered before `/readyz`
/// reports the pipeline stalled, seconds: two retry backoffs at their default cap.
pub const DEFAULT_STALL_TIMEOUT_SECS: u64 = 120;

/// Default time a client of the metrics endpoint has to send a request's
/// headers, seconds.
pub const DEFAULT_METRICS_HEADER_TIMEOUT_SECS: u64 = 10;
/// Default time a kept-alive connection to the metrics endpoint may stay
/// silent, seconds: longer than Prometheus' usual scrape interval, so its
/// connection is reused.
pub const DEFAULT_METRICS_IDLE_TIMEOUT_SECS: u64 = 120;
/// Default most connections to the metrics endpoint at once: a Prometheus
/// or two, probes, an operator's curl.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: usize = 64;

/// Default log filter when `RUST_LOG` is not set.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Default of `delete_guard.max_deletes`: removals a window may send
/// before the rest are held for an operator.
pub const DEFAULT_MAX_DELETES: u64 = 1000;

/// Default of `delete_guard.window_secs`: one hour.
pub const DEFAULT_DELETE_WINDOW_SECS: u64 = 3600;

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
    /// slot, and the initial copy and a backfill chunk stop going into the
    /// sink, until requests complete. The mass-delete circuit breaker uses at most an eighth of
    /// it besides, the backfill chunk in progress about a quarter. Default
    /// 16 MiB.
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: usize,
    /// Keep a record of what Customer.io accepted (`ciosync.accepted`: a
    /// fingerprint per customer and attribute) and send only the attributes
    /// whose value differs from it, whatever the table's replica identity.
    /// `false` sends what the change says (under DEFAULT identity every
    /// mapped attribute of an UPDATE) and empties the record at start, since
    /// it would fall behind. Default `true`.
    #[serde(default = "default_record_accepted")]
    pub record_accepted: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout_secs: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            initial_sync: true,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            record_accepted: true,
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
    /// Time a client has to send a request's headers, seconds (1-300); a
    /// connection still sending them then is closed. Default 10.
    #[serde(default = "default_metrics_header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// Time a kept-alive connection may stay silent after an answer before
    /// it is closed, seconds (1-3600). Default 120.
    #[serde(default = "default_metrics_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Most connections open at once (1-65536); at the cap the oldest one
    /// without a request in progress is closed for a newcomer. Default 64.
    #[serde(default = "default_metrics_max_connections")]
    pub max_connections: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.to_owned(),
            stall_timeout_secs: DEFAULT_STALL_TIMEOUT_SECS,
            header_timeout_secs: DEFAULT_METRICS_HEADER_TIMEOUT_SECS,
            idle_timeout_secs: DEFAULT_METRICS_IDLE_TIMEOUT_SECS,
            max_connections: DEFAULT_METRICS_MAX_CONNECTIONS,
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

    /// What a client may hold of the endpoint's listener.
    pub fn limits(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections,
        }
    }
}

fn default_metrics_listen() -> String {
    DEFAULT_METRICS_LISTEN.to_owned()
}

fn default_stall_timeout_secs() -> u64 {
    DEFAULT_STALL_TIMEOUT_SECS
}

fn default_metrics_header_timeout_secs() -> u64 {
    DEFAULT_METRICS_HEADER_TIMEOUT_SECS
}

fn default_metrics_idle_timeout_secs() -> u64 {
    DEFAULT_METRICS_IDLE_TIMEOUT_SECS
}

fn default_metrics_max_connections() -> usize {
    DEFAULT_METRICS_MAX_CONNECTIONS
}

fn default_max_pending_bytes() -> usize {
    DEFAULT_MAX_PENDING_BYTES
}

fn default_shutdown_timeout_secs() -> u64 {
    DEFAULT_SHUTDOWN_TIMEOUT_SECS
}

fn default_initial_sync() -> bool {
    true
}

fn default_record_accepted() -> bool {
    true
}

impl PipelineConfig {
    /// Checks `[pipeline]`, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_pending_bytes < MIN_PENDING_BYTES {
            return Err(ConfigError::invalid(
                "pipeline.max_pending_bytes",
                "must be at least 1048576 (1 MiB): a batch alone can be 500 KB",
            ));
        }
        if !(1..=3600).contains(&self.shutdown_timeout_secs) {
            return Err(ConfigError::invalid(
                "pipeline.shutdown_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        Ok(())
    }
}

impl LogConfig {
    /// Checks `[log]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                format!(
                    "must be a level (error, warn, info, debug, trace) or tracing directives \
                     such as info,ciosync::sink=debug (got {:?})",
                    self.level
                ),
            ));
        }
        Ok(())
    }
}

impl DeleteGuardConfig {
    /// Checks `[delete_guard]`, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.max_share) {
            return Err(ConfigError::invalid(
                "delete_guard.max_share",
                "must be between 0.0 (off) and 1.0, e.g. 0.05 for 5% of the synced rows",
            ));
        }
        if !(1..=604_800).contains(&self.window_secs) {
            return Err(ConfigError::invalid(
                "delete_guard.window_secs",
                "must be between 1 and 604800 (7 days)",
            ));
        }
        Ok(())
    }
}

impl MetricsConfig {
    /// Checks `[metrics]` beyond the listen address (see [`Self::listen_addr`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.stall_timeout_secs) {
            return Err(ConfigError::invalid(
                "metrics.stall_timeout_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(1..=300).contains(&self.header_timeout_secs) {
            return Err(ConfigError::invalid(
                "metrics.header_timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if !(1..=3600).contains(&self.idle_timeout_secs) {
            return Err(ConfigError::invalid(
                "metrics.idle_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return Err(ConfigError::invalid(
                "metrics.max_connections",
                "must be between 1 and 65536",
            ));
        }
        Ok(())
    }
}
