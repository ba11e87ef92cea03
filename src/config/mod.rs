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
//! (with its write-backs resolved to their statements).

pub mod actions;
pub mod customerio;
pub mod devices;
pub mod exposure;
#[cfg(test)]
pub mod fixture;
pub mod origin;
pub mod postgres;
pub mod runtime;
pub mod sync;
pub mod webhooks;

pub use customerio::{
    CustomerioConfig, Region, DEFAULT_MAX_BATCH_OPS, DEFAULT_MAX_REQUESTS_PER_SECOND,
    DEFAULT_REQUEST_TIMEOUT_SECS, DEFAULT_RETRY_MAX_BACKOFF_SECS,
};
pub use devices::DevicesConfig;
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
    /// Tables to sync; at least one.
    pub sync: Vec<SyncConfig>,
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
        self.postgres.validate()?;
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
        let streamed =
            self.sync.iter().map(|s| &s.table).chain(self.events.iter().map(|e| &e.table));
        devices::validate(&self.devices, &streamed.collect())
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
        use actions::Action;
        let text = include_str!("../../config/example.toml");
        let start = text.find("# [webhooks]").expect("the example has a [webhooks] section");
        let end = start + text[start..].find("\n\n").expect("the section ends");
        let section: String = text[start..end].lines().map(|l| format!("{}\n", &l[2..])).collect();
        let text = format!("{}{section}{}", &text[..start], &text[end..]);
        let secret = "0123456789abcdef".to_owned();
        let env = vec![
            ("CIOSYNC_WEBHOOKS_ACTIONS_SEGMENTS_SECRET".to_owned(), secret.clone()),
            ("CIOSYNC_WEBHOOKS_ACTIONS_LEAD_SCORE_SECRET".to_owned(), secret),
        ];
        let config = Config::from_toml(&text, env).unwrap();
        let actions = actions::resolve(&config).unwrap();
        assert_eq!(actions.iter().map(Action::kind).collect::<Vec<_>>(), ["segment", "update"]);
        let webhooks = config.webhooks.expect("the section is read");
        assert_eq!(webhooks.header_timeout_secs, webhooks::DEFAULT_HEADER_TIMEOUT_SECS);
        assert_eq!(webhooks.max_connections, webhooks::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(webhooks.write_back.len(), 1);
        assert_eq!(webhooks.actions[0].dedupe_window_secs, actions::DEFAULT_DEDUPE_WINDOW_SECS);
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
            (
                MINIMAL.replace("region = \"us\"", "track_url = \"https://u:pw-zq@relay.io\""),
                "customerio.track_url: must not hold a user name or password",
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
            (
                MINIMAL.to_owned() + "\n[metrics]\nheader_timeout_secs = 0\n",
                "metrics.header_timeout_secs",
            ),
            (
                MINIMAL.to_owned() + "\n[metrics]\nidle_timeout_secs = 3601\n",
                "metrics.idle_timeout_secs",
            ),
            (MINIMAL.to_owned() + "\n[metrics]\nmax_connections = 0\n", "metrics.max_connections"),
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
        assert_eq!(config.postgres.connection().display(), "other@db:5432/app");
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
        assert_eq!(webhooks.signing_key.unwrap().expose(), "0123abcd");
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
