//! The metrics and health endpoint: one small HTTP server beside the
//! pipeline, on `metrics.listen`.
//!
//! - `GET /metrics`: every metric, Prometheus text format ([`super::exporter`]).
//! - `GET /healthz`: 200 while the process serves requests (liveness).
//! - `GET /readyz`: 200 while changes flow, else 503 with a one-line reason
//!   ([`super::health`] has the rule).
//!
//! It is bound before anything else starts, so a taken port fails the
//! daemon at once, naming `metrics.listen`, with nothing created or sent.
//! It is served by [`crate::listener`], like the webhook receiver: header
//! and idle timeouts, a connection cap (`[metrics]` sets them), a cap on
//! header size, each counted in `ciosync_listener_*{listener="metrics"}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::exporter::{self, Exporter};
use super::slot::SlotWatch;
use super::Counters;
use crate::config::{ConfigError, MetricsConfig};
use crate::listener::Limits;

/// The endpoint's address could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// `metrics.listen` does not parse (validation normally catches it first).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address is taken or not ours to listen on.
    #[error(
        "cannot listen on metrics.listen = {addr} (stop what uses it, another ciosync \
         perhaps, or set [metrics] listen or CIOSYNC_METRICS_LISTEN to a free address)"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `metrics.listen`.
pub async fn bind(config: &MetricsConfig) -> Result<TcpListener, BindError> {
    let addr = config.listen_addr()?;
    TcpListener::bind(addr).await.map_err(|source| BindError::Listen { addr, source })
}

/// What the handlers share.
struct Endpoint {
    exporter: Exporter,
    /// Read from Postgres at each scrape of `/metrics`.
    slot: Option<Arc<SlotWatch>>,
    counters: Arc<Counters>,
    stall_timeout: Duration,
    /// Cancelled once shutdown was asked for: not ready any more.
    shutdown: CancellationToken,
}

/// Serves the endpoint on `listener` within `limits` until `stop` is
/// cancelled. `shutdown` (the daemon's) only turns `/readyz` to 503;
/// `/metrics` stays up while the pipeline drains, so its last values can
/// still be scraped. With `slot`, each scrape also reads the slot's status
/// from Postgres.
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    counters: Arc<Counters>,
    slot: Option<Arc<SlotWatch>>,
    stall_timeout: Duration,
    shutdown: CancellationToken,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut exporter = Exporter::new(counters.clone(), stall_timeout);
    if let Some(watch) = &slot {
        exporter = exporter.with_slot_watch(watch.clone());
    }
    let stats = counters.metrics_listener.clone();
    let endpoint = Arc::new(Endpoint { exporter, slot, counters, stall_timeout, shutdown });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(endpoint);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    crate::listener::serve(listener, app, limits, stats, stop, "metrics").await
}

async fn metrics(State(endpoint): State<Arc<Endpoint>>) -> Response {
    if let Some(watch) = &endpoint.slot {
        watch.refresh().await;
    }
    let body = endpoint.exporter.render();
    ([(header::CONTENT_TYPE, exporter::CONTENT_TYPE)], body).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let verdict = if endpoint.shutdown.is_cancelled() {
        Err("shutting down".to_owned())
    } else {
        endpoint.counters.health.readiness(endpoint.stall_timeout)
    };
    match verdict {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response()
        }
    }
}
