//! `[customerio]`: the workspace, its region, and how the sink sends.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::secret::Secret;
use crate::track_api;

/// Default timeout for one Customer.io request, seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 10;

/// Default cap on the backoff between retries, seconds.
pub const DEFAULT_RETRY_MAX_BACKOFF_SECS: u64 = 60;

/// Default most operations in one `/api/v2/batch` request.
pub const DEFAULT_MAX_BATCH_OPS: usize = 500;

/// Default request budget, shared by the stream, the initial copy and
/// backfills: a tenth of Customer.io's documented 1000 requests/s.
pub const DEFAULT_MAX_REQUESTS_PER_SECOND: u32 = 100;

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
    /// Most requests in flight at once (1–64): the ceiling of the adaptive
    /// limit, which starts at 4 and follows the round trips and answers
    /// (see `sink::concurrency`). A customer never has two. Default 32.
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

fn default_linger_ms() -> u64 {
    100
}

fn default_max_in_flight() -> usize {
    32
}

fn default_transient_item_errors() -> Vec<String> {
    ["internal", "timeout", "unavailable", "rate_limit", "try again"].map(String::from).to_vec()
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

impl CustomerioConfig {
    /// Checks `[customerio]`, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.site_id.trim().is_empty() {
            return Err(ConfigError::invalid("customerio.site_id", "must not be empty"));
        }
        if self.api_key.expose().trim().is_empty() {
            return Err(ConfigError::invalid("customerio.api_key", "must not be empty"));
        }
        if let Some(url) = &self.track_url {
            match url::Url::parse(url) {
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    // The HTTP client would send them as Basic auth in place
                    // of site_id:api_key, and output would show them.
                    return Err(ConfigError::invalid(
                        "customerio.track_url",
                        "must not hold a user name or password: the Track API authenticates \
                         with customerio.site_id and customerio.api_key",
                    ));
                }
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "customerio.track_url",
                        "must be an http:// or https:// URL with a host",
                    ))
                }
            }
        }
        if !(1..=300).contains(&self.request_timeout_secs) {
            return Err(ConfigError::invalid(
                "customerio.request_timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if !(1..=3600).contains(&self.retry_max_backoff_secs) {
            return Err(ConfigError::invalid(
                "customerio.retry_max_backoff_secs",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=1000).contains(&self.max_requests_per_second) {
            return Err(ConfigError::invalid(
                "customerio.max_requests_per_second",
                "must be between 1 and 1000 (Customer.io's documented limit)",
            ));
        }
        if !(1..=1000).contains(&self.max_batch_ops) {
            return Err(ConfigError::invalid(
                "customerio.max_batch_ops",
                "must be between 1 and 1000",
            ));
        }
        if self.linger_ms > 10_000 {
            return Err(ConfigError::invalid(
                "customerio.linger_ms",
                "must be between 0 and 10000",
            ));
        }
        if !(1..=64).contains(&self.max_in_flight) {
            return Err(ConfigError::invalid(
                "customerio.max_in_flight",
                "must be between 1 and 64",
            ));
        }
        if self.transient_item_errors.iter().any(|e| e.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "customerio.transient_item_errors",
                "must not contain an empty string (it would match every error)",
            ));
        }
        Ok(())
    }
}
