//! How an emulator instance behaves: credentials, region, and the knobs for
//! the points where Customer.io's real behaviour is unconfirmed.

use ciosync_track_api::Secret;
use serde::{Deserialize, Serialize};

use crate::faults::Faults;
use crate::webhook::{is_known_metric, WebhookRetry, EMAIL_OBJECT};

/// Workspace id reported by `GET /api/v1/accounts/region` unless configured.
pub const DEFAULT_ENVIRONMENT_ID: u64 = 1;

/// Everything an emulator needs to start. `Default` gives site id `site`,
/// API key `key`, region `us`, no faults and the documented behaviour
/// wherever Customer.io documents one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// The Basic-auth user name Customer.io calls the Site ID.
    pub site_id: String,
    /// The Basic-auth password (the Track API key). Never logged.
    pub api_key: String,
    /// `us` or `eu`; decides the `url` that the region endpoint answers.
    pub region: String,
    /// The `environment_id` the region endpoint answers (default 1).
    pub environment_id: u64,
    /// Faults to inject from the first request on; change later with
    /// `Emulator::set_faults` or `PUT /_emulator/faults`.
    pub faults: Faults,
    /// Answer v2 batches with some invalid items as 200 plus an `errors`
    /// array instead of the documented 207. Seen in practice (Segment's
    /// destination handles it), so a client must cope with both. Items
    /// failed by injected faults are answered the same way.
    pub errors_with_200: bool,
    /// Whether an attribute value of `null` or `""` removes the attribute
    /// (default true). Documented for objects and relationships; UNCONFIRMED
    /// for people, hence the knob.
    pub empty_removes: bool,
    /// Whether v1 identify rejects attribute values other than string,
    /// integer and boolean with a 400 (default true). The published schema
    /// says floats, objects, arrays and `null` fail; whether the real API
    /// rejects them is UNCONFIRMED. Strict is the safe side: a client that
    /// passes here passes the documented contract.
    pub strict_v1_values: bool,
    /// Whether a person found by `id` may get a new `email` (default true),
    /// mirroring the workspace setting "Allow updates to email using ID".
    /// When false such a change is dropped and logged as a failure, as
    /// Customer.io does without the setting.
    pub allow_email_update_by_id: bool,
    /// Whether relating a person to an object that does not exist creates
    /// the object (default false). Customer.io's documents do not say
    /// (UNCONFIRMED); false is the safe side: a client that identifies its
    /// objects before relating people to them works either way. When false
    /// the relationship is dropped and logged in `/_emulator/failures`.
    pub relationships_create_objects: bool,
    /// Where to send reporting webhooks (`http://` or `https://`); none are
    /// sent unless set. Point it at ciosync's `[webhooks]` endpoint, by
    /// default `http://HOST:PORT/webhooks/customerio`.
    pub webhook_url: Option<String>,
    /// The key each webhook is signed with (`X-CIO-Signature`, lowercase hex
    /// HMAC-SHA256 of `v0:{timestamp}:{body}`); required with `webhook_url`.
    /// Never logged, listed or serialized.
    #[serde(skip_serializing)]
    pub webhook_signing_key: Option<Secret>,
    /// `email` metrics sent, in this order, for every person event the
    /// emulator accepts, as if the event triggered a campaign email: e.g.
    /// `["sent", "delivered"]` gives a `sent` then a `delivered` webhook
    /// sharing one fake `delivery_id`. Empty (the default) sends none.
    pub webhook_on_activity: Vec<String>,
    /// Send a `customer` `subscribed` webhook when a call creates a person
    /// (a first identify, or an event for an unknown id). Default false.
    pub webhook_on_new_person: bool,
    /// How failed webhooks are retried.
    pub webhook_retry: WebhookRetry,
    /// How failed campaign webhook-action deliveries are retried (see
    /// `campaign_sender`); the same defaults as `webhook_retry`. Customer.io
    /// retries them with backoff too; its timing for actions is UNCONFIRMED.
    pub campaign_retry: WebhookRetry,
    /// Accept-only mode, for throughput runs of a client: v2 requests are
    /// authenticated, framed and their items counted (`GET
    /// /_emulator/accepted`), but not applied; see `accept_only`.
    pub accept_only: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            site_id: "site".to_owned(),
            api_key: "key".to_owned(),
            region: "us".to_owned(),
            environment_id: DEFAULT_ENVIRONMENT_ID,
            faults: Faults::default(),
            errors_with_200: false,
            empty_removes: true,
            strict_v1_values: true,
            allow_email_update_by_id: true,
            relationships_create_objects: false,
            webhook_url: None,
            webhook_signing_key: None,
            webhook_on_activity: Vec::new(),
            webhook_on_new_person: false,
            webhook_retry: WebhookRetry::default(),
            campaign_retry: WebhookRetry::default(),
            accept_only: false,
        }
    }
}

impl EmulatorConfig {
    /// A default config with the given credentials.
    pub fn new(site_id: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self { site_id: site_id.into(), api_key: api_key.into(), ..Self::default() }
    }

    /// Checks the fields a user can get wrong, naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.site_id.is_empty() {
            return Err("site_id must not be empty".to_owned());
        }
        if self.api_key.is_empty() {
            return Err("api_key must not be empty".to_owned());
        }
        if self.site_id.contains(':') {
            // Basic auth splits user and password at the first colon.
            return Err("site_id must not contain ':'".to_owned());
        }
        if !matches!(self.region.as_str(), "us" | "eu") {
            return Err(format!("region must be \"us\" or \"eu\", not {:?}", self.region));
        }
        self.faults.validate()?;
        self.campaign_retry.validate_as("campaign_retry")?;
        self.validate_webhooks()
    }

    fn validate_webhooks(&self) -> Result<(), String> {
        for metric in &self.webhook_on_activity {
            if !is_known_metric(EMAIL_OBJECT, metric) {
                return Err(format!("webhook_on_activity: {metric:?} is not an email metric"));
            }
        }
        self.webhook_retry.validate()?;
        let Some(raw) = &self.webhook_url else {
            return Ok(());
        };
        let url =
            url::Url::parse(raw).map_err(|error| format!("webhook_url is not a URL: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("webhook_url must be http or https, not {}", url.scheme()));
        }
        if self.webhook_signing_key.as_ref().is_none_or(|key| key.expose().is_empty()) {
            return Err("webhook_signing_key must be set when webhook_url is".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(EmulatorConfig::default().validate(), Ok(()));
    }

    #[test]
    fn bad_region_is_named() {
        let config = EmulatorConfig { region: "ap".into(), ..EmulatorConfig::default() };
        assert!(config.validate().unwrap_err().contains("region"));
    }

    #[test]
    fn webhooks_need_a_key_and_email_metrics() {
        let url = Some("http://127.0.0.1:1/webhooks/customerio".to_owned());
        let config = EmulatorConfig { webhook_url: url.clone(), ..EmulatorConfig::default() };
        assert!(config.validate().unwrap_err().contains("webhook_signing_key"));
        let config = EmulatorConfig {
            webhook_url: url,
            webhook_signing_key: Some(Secret::new("k")),
            webhook_on_activity: vec!["sent".into(), "delivered".into()],
            ..EmulatorConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        let config = EmulatorConfig {
            webhook_on_activity: vec!["replied".into()],
            ..EmulatorConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("webhook_on_activity"));
        let config = EmulatorConfig {
            webhook_url: Some("ftp://x".into()),
            webhook_signing_key: Some(Secret::new("k")),
            ..EmulatorConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("webhook_url"));
        let config = EmulatorConfig {
            campaign_retry: WebhookRetry { initial_backoff_ms: 0, ..WebhookRetry::default() },
            ..EmulatorConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("campaign_retry.initial_backoff_ms"));
    }
}
