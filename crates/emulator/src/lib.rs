//! A local stand-in for Customer.io's Track API, for tests, the demo and
//! staging runs: in-process ([`Emulator::start`]) or as the
//! `ciosync-emulator` binary (`src/main.rs`), which users' own CI can run in
//! place of Customer.io. It shares only the wire types (`ciosync-track-api`)
//! with ciosync. It keeps a workspace in memory, validates requests the way
//! Customer.io does (with its 400 messages where known), can inject faults,
//! and lets callers inspect everything it received.
//!
//! ```text
//!   client ──HTTP(S)─▶ middleware::record ─▶ middleware::inject_faults ─▶ auth::require ─▶ v1 / v1_more / v2
//!                      (request log, every     (500/429/latency)        (Basic, 401)       │ validate
//!                       route, known or not)          └──────────────▶ v1_open (no auth) ─┤
//!                                                                                          ▼
//!   tests ◀── Emulator / EmulatorView ◀──────── state::Shared ◀──── model::World (pure)
//!   curl  ◀── /_emulator/* (inspect)  ◀──────────────┘
//! ```
//!
//! It serves plain HTTP, or HTTPS with a given certificate or a throwaway
//! CA it makes and writes out for clients to trust (`tls`,
//! [`Emulator::start_tls`], [`serve_tls`]).
//!
//! With `webhook_url` set it also sends Customer.io's signed reporting
//! webhooks, on activity and on demand, one at a time (see `webhook_sender`).
//! Campaigns registered at `/_emulator/campaigns` send webhook actions
//! (Liquid-rendered requests) when a person enters or leaves a manual
//! segment or on demand (`campaign`, `campaign_log`, `campaign_sender`).
//!
//! Where Customer.io's behaviour is unconfirmed the emulator picks one and
//! says so where it does (see `EmulatorConfig` for the knobs); the facts it
//! follows are in the facts sheet, `shared/customerio-api.md`.

mod accept_only;
mod auth;
mod campaign;
mod campaign_log;
mod campaign_sender;
mod catalog;
mod config;
mod devices;
mod faults;
mod health;
mod identity;
mod inspect;
mod inspect_campaigns;
mod items;
mod journal;
mod liquid;
mod middleware;
mod model;
mod objects;
mod ops;
mod segments;
mod state;
mod tls;
mod v1;
mod v1_more;
mod v1_open;
mod v2;
mod validate;
mod webhook;
mod webhook_log;
mod webhook_sender;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use accept_only::Accepted;
pub use campaign::CampaignSpec;
pub use campaign_log::{ActionAttempt, Delivery};
pub use campaign_sender::ACTION_TIMEOUT;
pub use catalog::{TrackRoute, TRACK_ROUTES, UNMODELLED_HEADER};
/// The type [`EmulatorConfig`] takes its API key and signing key in.
pub use ciosync_track_api::Secret;
pub use config::{EmulatorConfig, DEFAULT_ENVIRONMENT_ID};
pub use devices::{Device, PLATFORMS as DEVICE_PLATFORMS};
pub use faults::{Faults, DEFAULT_FAIL_STATUS};
pub use health::{check_health, HEALTH_CHECK_TIMEOUT, HEALTH_PATH};
pub use journal::RecordedRequest;
pub use model::{Failure, StoredEvent, World};
pub use objects::{
    ObjectRef, ObjectSummary, ObjectView, RelatedPerson, Relationship, MAX_OBJECT_ATTRIBUTE_BYTES,
};
pub use state::EmulatorView;
pub use tls::{ServerTls, CA_FILE, CERT_FILE, KEY_FILE, LOCAL_NAMES};
pub use webhook::{
    is_known_metric, sign as sign_webhook, WebhookRequest, WebhookRetry,
    DEFAULT_WEBHOOK_GIVE_UP_AFTER_MS, DEFAULT_WEBHOOK_INITIAL_BACKOFF_MS,
    DEFAULT_WEBHOOK_MAX_ATTEMPTS, DEFAULT_WEBHOOK_MAX_BACKOFF_MS, METRICS as WEBHOOK_METRICS,
};
pub use webhook_log::{WebhookAttempt, WebhookRecord, WebhookStatus};
pub use webhook_sender::WEBHOOK_TIMEOUT;

use state::Shared;

/// How long `shutdown` waits for open requests before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running emulator, started in-process. Dropping it stops the server
/// too, but without waiting; `shutdown` waits.
pub struct Emulator {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Emulator {
    /// Serves plain HTTP on `listener` (bind port 0 for a free port) in a
    /// spawned task. Fails if the listener has no local address or
    /// `config` is invalid.
    pub async fn start(listener: TcpListener, config: EmulatorConfig) -> io::Result<Emulator> {
        Self::start_with(listener, config, None).await
    }

    /// Serves HTTPS on `listener` with `tls`, e.g. from
    /// `ServerTls::self_signed`; otherwise as `start`.
    pub async fn start_tls(
        listener: TcpListener,
        config: EmulatorConfig,
        tls: ServerTls,
    ) -> io::Result<Emulator> {
        Self::start_with(listener, config, Some(tls)).await
    }

    async fn start_with(
        listener: TcpListener,
        config: EmulatorConfig,
        tls: Option<ServerTls>,
    ) -> io::Result<Emulator> {
        config.validate().map_err(invalid_config)?;
        let addr = listener.local_addr()?;
        let ca_pem = tls.as_ref().and_then(|tls| tls.ca_pem().map(Arc::from));
        let shared = Shared::with_ca(config, ca_pem);
        let (stop, stopped) = oneshot::channel::<()>();
        // A dropped sender also means stop.
        let shutdown = async {
            let _ = stopped.await;
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = match tls {
            Some(tls) => {
                tokio::spawn(run(tls::TlsListener::new(listener, &tls)?, shared.clone(), shutdown))
            }
            None => tokio::spawn(run(listener, shared.clone(), shutdown)),
        };
        // Let the server task start polling before the caller sends
        // requests; not needed for correctness (the socket already accepts),
        // but keeps first-request latency out of timing-sensitive tests.
        tokio::task::yield_now().await;
        Ok(Emulator { addr, scheme, shared, stop: Some(stop), task: Some(task) })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (`https://` with TLS), the base URL to give a Track
    /// API client.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Runs `f` on a consistent snapshot view of the state.
    pub fn view<R>(&self, f: impl FnOnce(&EmulatorView<'_>) -> R) -> R {
        self.shared.read(|inner| f(&EmulatorView::new(inner)))
    }

    /// A person's current attributes (including `id`/`email` when set),
    /// named as in a v1 path: an id, an email (any case) or `cio_<cio_id>`.
    pub fn customer(&self, identifier: &str) -> Option<Map<String, Value>> {
        self.view(|v| v.customer(identifier))
    }

    /// Everyone's attributes, keyed by id, else email, else `cio_<cio_id>`.
    pub fn customers(&self) -> BTreeMap<String, Map<String, Value>> {
        self.view(|v| v.customers())
    }

    /// A person's events, oldest first (empty if no such person).
    pub fn events(&self, identifier: &str) -> Vec<StoredEvent> {
        self.view(|v| v.events(identifier))
    }

    /// Every object, by type then id, with its attributes and how many
    /// people it is related to (`GET /_emulator/objects`).
    pub fn objects(&self) -> Vec<ObjectSummary> {
        self.view(|v| v.objects())
    }

    /// One object with its related people (`GET
    /// /_emulator/objects/{object_type_id}/{object_id}`).
    pub fn object(&self, object_type_id: &str, object_id: &str) -> Option<ObjectView> {
        self.view(|v| v.object(object_type_id, object_id))
    }

    /// A person's devices (`GET /_emulator/customers/{identifier}/devices`);
    /// `None` if there is no such person.
    pub fn devices(&self, identifier: &str) -> Option<Vec<Device>> {
        self.view(|v| v.devices(identifier))
    }

    /// A person's relationships (`GET
    /// /_emulator/customers/{identifier}/relationships`); `None` if there is
    /// no such person.
    pub fn relationships(&self, identifier: &str) -> Option<Vec<Relationship>> {
        self.view(|v| v.relationships(identifier))
    }

    /// What accept-only mode counted since start or reset.
    pub fn accepted(&self) -> Accepted {
        self.shared.accepted().snapshot(self.shared.config().accept_only)
    }

    /// Every Track API request so far (since start, reset or clear).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.view(|v| v.requests())
    }

    /// Calls answered 200 but not applied (suppressed, identifier conflicts,
    /// `_update` misses, merges with a missing person…).
    pub fn failures(&self) -> Vec<Failure> {
        self.view(|v| v.failures().to_vec())
    }

    /// Queues one reporting webhook (see `WebhookRequest`) behind those
    /// already queued; returns it as listed, with its `event_id`. Fails when
    /// no `webhook_url` is configured or the metric is not one Customer.io
    /// sends for the object type.
    pub fn send_webhook(&self, request: WebhookRequest) -> Result<WebhookRecord, String> {
        self.shared.queue_webhook(&request)
    }

    /// Every webhook queued so far, oldest first, with each attempt.
    pub fn webhooks(&self) -> Vec<WebhookRecord> {
        self.view(|v| v.webhooks())
    }

    /// Registers a campaign with one webhook action (see `CampaignSpec`),
    /// as `POST /_emulator/campaigns` does; returns it as listed (no
    /// credentials). Fails on a bad spec or a name already taken.
    pub fn add_campaign(&self, spec: CampaignSpec) -> Result<Value, String> {
        let campaign = campaign::Campaign::from_spec(spec)?;
        self.shared.update(|inner| inner.campaigns.add(campaign))
    }

    /// Queues one delivery of campaign `name` to the person `customer`
    /// names (an id, an email or `cio_<cio_id>`), with `event` as the
    /// event's properties, as `POST /_emulator/campaigns/{name}/trigger`
    /// does. Fails naming the unknown campaign or person.
    pub fn trigger_campaign(
        &self,
        name: &str,
        customer: &str,
        event: Map<String, Value>,
    ) -> Result<Delivery, String> {
        let identifier = identity::parse_path_identifier(customer);
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.shared
            .update(|inner| {
                inner.campaigns.trigger(&inner.world, name, &identifier, &event, now_ms)
            })
            .map_err(|error| match error {
                campaign_log::TriggerError::UnknownCampaign => {
                    format!("no campaign named {name:?}")
                }
                campaign_log::TriggerError::UnknownPerson => "no such customer".to_owned(),
            })
    }

    /// Every campaign delivery kept, oldest first, with each attempt.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.view(|v| v.deliveries())
    }

    /// Sends a finished delivery again with the same headers and body, as
    /// `POST /_emulator/campaigns/deliveries/{id}/resend` does.
    pub fn resend_delivery(&self, delivery_id: &str) -> Result<Delivery, String> {
        self.shared.update(|inner| inner.campaigns.resend(delivery_id)).map_err(|error| match error
        {
            campaign_log::ResendError::Unknown => "no such delivery".to_owned(),
            campaign_log::ResendError::NotFinished => {
                "the delivery is still queued or retrying".to_owned()
            }
        })
    }

    /// Empties the request log and returns what it held, oldest first: for
    /// a long run, which reads the log as it goes (it keeps only the newest
    /// 10,000 requests).
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        self.shared.update(|inner| inner.take_requests())
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.update(|inner| inner.clear_requests());
    }

    /// The faults in force now (`fail_next` and `item_errors_next` count
    /// down as they fire).
    pub fn faults(&self) -> Faults {
        self.shared.read(|inner| inner.faults.clone())
    }

    /// Replaces the faults for the following requests.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.with_faults(|current| *current = faults);
    }

    /// Forgets people, events, objects, relationships, devices, requests,
    /// failures, webhooks, campaigns and their deliveries (queued ones too); faults go back to the configured
    /// ones.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Waits until `condition` holds, re-checking after every change, or
    /// until `timeout`; returns whether it held. The condition runs under
    /// the state lock, so it must be quick and must not call back into the
    /// emulator.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&EmulatorView<'_>) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.shared.subscribe();
        loop {
            // Mark the current version seen before checking, so a change
            // between the check and the wait still wakes us.
            changes.borrow_and_update();
            if self.view(&condition) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    /// Stops accepting connections, lets open requests finish (up to a few
    /// seconds) and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(SHUTDOWN_GRACE, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => {
                    tracing::warn!(%error, "emulator server stopped with an error")
                }
                Ok(Err(error)) => tracing::warn!(%error, "emulator server task failed"),
                Err(_) => tracing::warn!("emulator did not stop within the grace period"),
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves on `listener` until `shutdown` completes, then finishes open
/// requests and returns. The binary's entry point.
pub async fn serve(
    listener: TcpListener,
    config: EmulatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    config.validate().map_err(invalid_config)?;
    run(listener, Shared::new(config), shutdown).await
}

/// `serve`, over TLS.
pub async fn serve_tls(
    listener: TcpListener,
    config: EmulatorConfig,
    tls: ServerTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    config.validate().map_err(invalid_config)?;
    let shared = Shared::with_ca(config, tls.ca_pem().map(Arc::from));
    run(tls::TlsListener::new(listener, &tls)?, shared, shutdown).await
}

fn invalid_config(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("invalid emulator config: {message}"))
}

async fn run<L>(
    listener: L,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    // One sender per emulator, so webhooks leave one at a time, in order.
    let sender = webhook_sender(&shared).map(|sender| tokio::spawn(sender.run(shared.clone())));
    // And one for campaign actions, each campaign's in order.
    let actions =
        tokio::spawn(campaign_sender::run(shared.clone(), shared.config().campaign_retry.clone()));
    let served = axum::serve(listener, router(shared)).with_graceful_shutdown(shutdown).await;
    if let Some(sender) = sender {
        sender.abort();
    }
    actions.abort();
    served
}

fn webhook_sender(shared: &Shared) -> Option<webhook_sender::Sender> {
    let config = shared.config();
    Some(webhook_sender::Sender {
        url: config.webhook_url.clone()?,
        key: config.webhook_signing_key.clone()?,
        retry: config.webhook_retry.clone(),
    })
}

/// The whole HTTP surface. Layers apply to the routes (and fallback) of
/// the router they are added to; the last one added runs first. So the log
/// sees every answer, unknown routes included; faults come before auth;
/// routes Customer.io serves without auth skip it; and `/_emulator` is
/// untouched by all three.
fn router(shared: Shared) -> Router {
    let with_auth = Router::new()
        .merge(v1::routes())
        .merge(v1_more::routes())
        .merge(v2::routes())
        .layer(from_fn_with_state(shared.clone(), auth::require));
    let known = Router::new()
        .merge(with_auth)
        .merge(v1_open::routes())
        .layer(from_fn_with_state(shared.clone(), middleware::inject_faults));
    let logged = Router::new()
        .merge(known)
        .fallback(unknown_route)
        .layer(from_fn_with_state(shared.clone(), middleware::record));
    Router::new()
        .nest("/_emulator", inspect::routes().merge(inspect_campaigns::routes()))
        .merge(logged)
        // Size limits are Customer.io's (checked in v2) and the journal's.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

async fn unknown_route() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"meta": {"error": "not found"}}))).into_response()
}
