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
//! Each section is a module that validates itself: [`postgres`],
//! [`customerio`], [`sync`] (`[[sync]]` and `[[events]]`), [`runtime`]
//! (`[pipeline]`, `[metrics]`, `[log]`, `[delete_guard]`) and [`webhooks`]
//! (with its write-backs resolved to their statements); `tables.rs`
//! checks across sections that each table is one entry's.

pub mod actions;
pub mod customerio;
pub mod devices;
pub mod exposure;
#[cfg(test)]
pub mod fixture;
pub mod objects;
pub mod origin;
pub mod postgres;
pub mod runtime;
pub mod sync;
mod tables;
pub mod webhooks;

pub use customerio::{
    CustomerioConfig, Region, DEFAULT_MAX_BATCH_OPS, DEFAULT_MAX_REQUESTS_PER_SECOND,
    DEFAULT_REQUEST_TIMEOUT_SECS, DEFAULT_RETRY_MAX_BACKOFF_SECS,
};
pub use devices::{CopiedTable, DevicesConfig};
pub use postgres::{
    FailoverSlot, OnSlotLost, PostgresConfig, DEFAULT_CONNECT_TIMEOUT_SECS,
    DEFAULT_HEARTBEAT_INTERVAL_SECS, DEFAULT_PUBLICATION, DEFAULT_RETAINED_WAL_WARN_BYTES,
    DEFAULT_SLOT, DEFAULT_STATUS_INTERVAL_MS,
};
pub use runtime::{
    DeleteGuardConfig, LogConfig, MetricsConfig, PipelineConfig, DEFAULT_DELETE_WINDOW_SECS,
    DEFAULT_LOG_LEVEL, DEFAULT_MAX_DELETES, DEFAULT_MAX_PENDING_BYTES, DEFAULT_METRICS_LISTEN,
    DEFAULT_SHUTDOWN_TIMEOUT_SECS, DEFAULT_STALL_TIMEOUT_SECS, MIN_PENDING_BYTES,
};
pub use sync::{
    ChangeEventConfig, DeleteAction, EventTableConfig, OnIdChange, OnSchemaChange, SyncConfig,
    Target,
};

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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
    /// Tables whose rows are people, then (appended as the file is read)
    /// the `[[objects]]` and `[[relationships]]` resolved; at least one.
    #[serde(default)]
    pub sync: Vec<SyncConfig>,
    /// Tables whose rows are Customer.io objects (accounts, companies).
    #[serde(default)]
    pub objects: Vec<objects::ObjectConfig>,
    /// Tables whose rows relate people to objects (memberships).
    #[serde(default)]
    pub relationships: Vec<objects::RelationshipConfig>,
    /// Tables whose inserts become events.
    #[serde(default)]
    pub events: Vec<EventTableConfig>,
    /// Tables of push device tokens (`[[devices]]`).
    #[serde(default)]
    pub devices: Vec<DevicesConfig>,
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
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(doc))
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().message().to_owned();
                if path == "." {
                    ConfigError::Parse(message)
                } else {
                    ConfigError::Parse(format!("{path}: {message}"))
                }
            })?;
        objects::resolve_into(&config.objects, &config.relationships, &mut config.sync)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value against what it may be, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.postgres.validate()?;
        tables::each_once(self)?;
        self.log.validate()?;
        self.customerio.validate()?;
        self.pipeline.validate()?;
        let metrics_listen = self.metrics.listen_addr()?;
        if let Some(webhooks) = &self.webhooks {
            webhooks.validate(Some(metrics_listen))?;
            webhooks::resolve(self)?;
            actions::resolve(self)?;
        }
        self.delete_guard.validate()?;
        self.metrics.validate()?;
        sync::validate(&self.sync, &self.events)?;
        devices::validate(&self.devices)
    }

    /// The `[[sync]]` tables (of people), without the `[[objects]]` and
    /// `[[relationships]]` entries resolved beside them.
    pub fn people(&self) -> impl Iterator<Item = &SyncConfig> {
        self.sync.iter().filter(|s| s.target == Target::Person)
    }

    /// The replication origin this slot's webhook write-backs carry, when
    /// there are write-backs: the source skips transactions with it, so a
    /// write-back never echoes back to Customer.io.
    pub fn write_back_origin(&self) -> Option<String> {
        let write_backs = self.webhooks.as_ref().is_some_and(|w| !w.write_back.is_empty());
        write_backs.then(|| format!("ciosync_write_back_{}", self.postgres.slot))
    }

    /// The replication origin this slot's webhook actions carry when one
    /// writes a table ciosync streams. Its own, since an origin is active
    /// in one session at a time and the write-backs have theirs.
    pub fn actions_origin(&self) -> Option<String> {
        let streamed = actions::resolve(self)
            .is_ok_and(|actions| actions.iter().any(|a| a.writes_streamed_table(self)));
        streamed.then(|| format!("ciosync_actions_{}", self.postgres.slot))
    }

    /// Every origin whose transactions the source skips: ciosync's own writes.
    pub fn own_origins(&self) -> Vec<String> {
        self.write_back_origin().into_iter().chain(self.actions_origin()).collect()
    }

    /// The status interval as a duration.
    pub fn status_interval(&self) -> Duration {
        Duration::from_millis(self.postgres.status_interval_ms)
    }
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
        if name.starts_with(actions::SECRET_ENV_PREFIX) && name.ends_with("_SECRET") {
            actions::apply_secret_env(doc, &name, &value)?;
            continue;
        }
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
mod tests;
