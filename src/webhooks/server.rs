//! The receiver's HTTP side, on `[webhooks] listen` (never the metrics
//! endpoint's address: that one must not face the internet).
//!
//! - `POST <path>`: verify, parse, store; 200 once committed.
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 while the receiver's Postgres connection answers a
//!   `SELECT 1` within 2 s, else 503 with a reason code (`database_unavailable`,
//!   `shutting_down`); the Postgres error itself goes only to the log.
//!
//! Checks run cheapest first, and nothing is read whole before its size is
//! known to fit: path (404), method (405), content type (415), declared
//! length (413), timestamp (401), the body read up to `max_body_bytes`
//! (413) within the listener's budget of buffered bytes (503 when spent),
//! signature (401), JSON (400), then Postgres (503 on failure).
//!
//! The signature covers the body, so the body must be read before it can
//! be checked; what bounds unsigned bodies is the budget
//! (`max_buffered_bytes`, over all connections) and [`BODY_READ_TIMEOUT`].
//! The connections themselves (timeouts, cap, shedding) are
//! [`crate::listener`]'s.
//! Every refusal is counted by reason and logged at warn with the reason
//! only: never the body, the signature or the key.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::actions::Actions;
use super::event::ReportingEvent;
use super::store::{Stored, WebhookStore};
use super::verify::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::Rejection;
use crate::config::webhooks::WebhooksConfig;
use crate::config::ConfigError;
use crate::listener::budget::{BodyBudget, BodyError, Reserved};
use crate::listener::Connection;
use crate::telemetry::Counters;

/// Longest a client may take to send its body; a slow sender holds a
/// connection, and Customer.io itself gives up after 4 s.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The receiver's address could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// `webhooks.listen` does not parse (validation normally catches it first).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address is taken or not ours to listen on.
    #[error(
        "cannot listen on webhooks.listen = {addr} (stop what uses it, or set [webhooks] listen \
         or CIOSYNC_WEBHOOKS_LISTEN to a free address)"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `webhooks.listen`.
pub async fn bind(config: &WebhooksConfig) -> Result<TcpListener, BindError> {
    let addr = config.listen_addr()?;
    TcpListener::bind(addr).await.map_err(|source| BindError::Listen { addr, source })
}

/// What the handlers share.
pub struct Receiver {
    config: WebhooksConfig,
    /// The reporting webhooks' store; `None` without a signing key (only
    /// actions are served).
    store: Option<WebhookStore>,
    /// The campaign webhook actions, when configured.
    actions: Option<Arc<Actions>>,
    counters: Arc<Counters>,
    /// Cancelled once shutdown was asked for: `/readyz` answers 503.
    shutdown: CancellationToken,
    /// Whether `/readyz` last found the store unreachable (and said so in
    /// the log).
    unready: AtomicBool,
    /// Bytes of bodies held at once, over all connections.
    budget: BodyBudget,
}

impl Receiver {
    /// A receiver storing reporting events through `store` (when there is
    /// a signing key) and applying `actions`, counting into `counters`.
    pub fn new(
        config: WebhooksConfig,
        store: Option<WebhookStore>,
        actions: Option<Arc<Actions>>,
        counters: Arc<Counters>,
        shutdown: CancellationToken,
    ) -> Self {
        let budget = BodyBudget::new(config.max_buffered_bytes, counters.webhook_listener.clone());
        if let Some(actions) = &actions {
            actions.all().iter().for_each(|a| counters.actions.register(&a.name));
        }
        let unready = AtomicBool::new(false);
        Self { config, store, actions, counters, shutdown, unready, budget }
    }

    /// The campaign webhook actions, when configured.
    pub fn actions(&self) -> Option<&Actions> {
        self.actions.as_deref()
    }

    /// The counters requests are counted into.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The `[webhooks]` section.
    pub fn config(&self) -> &WebhooksConfig {
        &self.config
    }

    /// Reads a request body up to `max_body_bytes` within the listener's budget.
    pub async fn read_body(&self, body: Body) -> Result<(Bytes, Reserved), (Rejection, String)> {
        read_capped(&self.budget, body, self.config.max_body_bytes).await
    }

    /// Counts, logs (the reason only) and answers a refusal.
    pub fn refuse(&self, rejection: Rejection, why: &str) -> Response {
        refuse(self, rejection, why)
    }

    /// Whether Postgres answers, through the reporting store or else the
    /// actions' session.
    async fn ping(&self) -> Result<(), String> {
        match (&self.store, &self.actions) {
            (Some(store), _) => store.ping().await,
            (None, Some(actions)) => actions.ping().await,
            (None, None) => Ok(()),
        }
    }
}

/// The routes: the webhook path, `/healthz`, `/readyz`; anything else 404.
pub fn router(receiver: Arc<Receiver>) -> Router {
    let mut router = Router::new();
    if receiver.store.is_some() {
        router = router.route(&receiver.config.path, any(receive));
    }
    if receiver.actions.is_some() {
        let actions = format!("{}/actions/{{name}}", receiver.config.path.trim_end_matches('/'));
        router = router.route(&actions, any(super::actions::serve::receive));
    }
    router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(receiver)
}

/// Serves `receiver` on `listener` until `stop` is cancelled; requests in
/// flight then finish. Connects to Postgres (creating the table) at once,
/// so a problem shows in the log before the first event arrives.
pub async fn serve(
    listener: TcpListener,
    receiver: Arc<Receiver>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, path = %receiver.config.path, table = %receiver.config.table,
            "receiving Customer.io reporting webhooks");
    }
    let first = receiver.clone();
    tokio::spawn(async move {
        if let Err(reason) = first.ping().await {
            tracing::warn!(%reason, table = %first.config.table,
                "the webhook receiver cannot reach its table yet; it answers 503 until it can");
        }
    });
    let (limits, stats) = (receiver.config.limits(), receiver.counters.webhook_listener.clone());
    crate::listener::serve(listener, router(receiver), limits, stats, stop, "webhooks").await
}

async fn receive(State(receiver): State<Arc<Receiver>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let connection = parts.extensions.get::<Connection>();
    match accept(&receiver, &parts.method, &parts.headers, body, connection).await {
        Ok((event, stored)) => {
            let answer = match stored {
                Stored::New => {
                    Counters::add(&receiver.counters.webhooks.stored, 1);
                    "stored\n"
                }
                Stored::Duplicate => {
                    Counters::add(&receiver.counters.webhooks.duplicates, 1);
                    "already stored\n"
                }
            };
            tracing::debug!(event_id = %event.event_id, object_type = %event.labels().0,
                metric = %event.labels().1, duplicate = (stored == Stored::Duplicate),
                "webhook event stored");
            (StatusCode::OK, answer).into_response()
        }
        Err((rejection, why)) => refuse(&receiver, rejection, &why),
    }
}

/// Everything between the request and the committed row.
async fn accept(
    receiver: &Receiver,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
    connection: Option<&Connection>,
) -> Result<(ReportingEvent, Stored), (Rejection, String)> {
    let config = &receiver.config;
    let (Some(store), Some(signing_key)) = (&receiver.store, &config.signing_key) else {
        return Err((Rejection::Path, "no reporting webhooks without a signing key".into()));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if method != Method::POST {
        return Err((Rejection::Method, format!("method {method} is not POST")));
    }
    if !verify::is_json_content_type(header(header::CONTENT_TYPE.as_str())) {
        return Err((Rejection::ContentType, "the content type is not application/json".into()));
    }
    verify::check_content_length(header(header::CONTENT_LENGTH.as_str()), config.max_body_bytes)
        .map_err(|r| (r, format!("Content-Length is over {} bytes", config.max_body_bytes)))?;
    let timestamp = header(TIMESTAMP_HEADER).unwrap_or_default().to_owned();
    verify::check_timestamp(Some(&timestamp), now(), config.timestamp_tolerance_secs).map_err(
        |r| {
            (
                r,
                format!(
                    "X-CIO-Timestamp is missing, not Unix seconds, or more than {}s from now",
                    config.timestamp_tolerance_secs
                ),
            )
        },
    )?;
    // Until the signature matches, the connection may be shed at the cap.
    if let Some(connection) = connection {
        connection.untrusted();
    }
    // Held until the event is stored: the bytes stay in memory that long.
    let (body, _reserved) = read_capped(&receiver.budget, body, config.max_body_bytes).await?;
    let signature = header(SIGNATURE_HEADER).unwrap_or_default();
    let key = signing_key.expose().as_bytes();
    if !verify::signature_matches(key, &timestamp, &body, signature) {
        return Err((
            Rejection::Signature,
            format!("X-CIO-Signature is missing or does not match ({} byte body)", body.len()),
        ));
    }
    if let Some(connection) = connection {
        connection.trusted();
    }
    let event = ReportingEvent::parse(&body).map_err(|e| (Rejection::Malformed, e.to_string()))?;
    let (object_type, metric) = event.labels();
    receiver.counters.webhooks.received(object_type, metric);
    match store.store(&event).await {
        Ok(stored) => Ok((event, stored)),
        Err(reason) => Err((
            Rejection::Database,
            format!("event {} not stored, Customer.io will retry: {reason}", event.event_id),
        )),
    }
}

/// Reads the body, stopping at `max` bytes whatever Content-Length said,
/// within the listener's budget of buffered bytes.
async fn read_capped(
    budget: &BodyBudget,
    body: Body,
    max: usize,
) -> Result<(Bytes, Reserved), (Rejection, String)> {
    budget.read(body, max, BODY_READ_TIMEOUT).await.map_err(|error| match error {
        BodyError::TooLarge => (Rejection::TooLarge, format!("the body is over {max} bytes")),
        BodyError::OverBudget => (
            Rejection::Busy,
            "the listener's budget of buffered bytes (webhooks.max_buffered_bytes) is spent"
                .to_owned(),
        ),
        BodyError::Broken => (Rejection::Malformed, "the body could not be read".into()),
        BodyError::TimedOut => (
            Rejection::Malformed,
            format!("the body did not arrive within {}s", BODY_READ_TIMEOUT.as_secs()),
        ),
    })
}

/// Counts, logs (the reason only) and answers a refusal.
fn refuse(receiver: &Receiver, rejection: Rejection, why: &str) -> Response {
    receiver.counters.webhooks.rejected(rejection);
    let status = super::status(rejection);
    tracing::warn!(reason = rejection.as_str(), status = status.as_u16(), detail = %why,
        "webhook request refused");
    let mut response = (status, format!("{}\n", rejection.as_str())).into_response();
    if rejection == Rejection::Method {
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    }
    response
}

async fn not_found(State(receiver): State<Arc<Receiver>>) -> Response {
    refuse(&receiver, Rejection::Path, "no such path")
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready while the store's connection answers. The listener faces the
/// internet, so the answer is a reason code; the reason itself (a Postgres
/// error) goes to the log, once each time the receiver stops being ready.
async fn readyz(State(receiver): State<Arc<Receiver>>) -> Response {
    let verdict = if receiver.shutdown.is_cancelled() {
        Err("shutting_down")
    } else {
        receiver.ping().await.map_err(|reason| {
            if !receiver.unready.swap(true, Ordering::Relaxed) {
                tracing::warn!(%reason, table = %receiver.config.table,
                    "the webhook receiver cannot reach its table; /readyz answers 503");
            }
            "database_unavailable"
        })
    };
    if verdict.is_ok() {
        receiver.unready.store(false, Ordering::Relaxed);
    }
    match verdict {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(code) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {code}\n")).into_response()
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
