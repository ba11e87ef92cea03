//! `ciosync run`: the pipeline, with the metrics and health endpoint beside
//! it, and the systemd notifications when systemd asks for them.
//!
//! The binary binds `metrics.listen` first ([`telemetry::server::bind`]) and
//! hands the listener in, so tests run the real daemon on port 0.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pipeline::{self, Progress, RunError};
use crate::source::connection::ConnectionSettings;
use crate::source::keeper::{self, KeeperConfig};
use crate::telemetry::slot::SlotWatch;
use crate::telemetry::{self, Counters};

/// Runs the pipeline until `shutdown` is cancelled or a definite error stops
/// it, serving `/metrics`, `/healthz` and `/readyz` on `endpoint` meanwhile
/// (until the pipeline has stopped, so the last values can be scraped while
/// it drains). Under systemd (`NOTIFY_SOCKET` set) it also reports
/// readiness, status and watchdog pings ([`telemetry::systemd`]).
pub async fn run(
    config: Config,
    endpoint: TcpListener,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) -> Result<Progress, RunError> {
    let stop_server = CancellationToken::new();
    let slot = ConnectionSettings::parse(&config.postgres)
        .ok()
        .map(|settings| SlotWatch::new(settings, config.postgres.slot.clone()));
    let server = tokio::spawn(telemetry::server::serve(
        endpoint,
        counters.clone(),
        slot,
        config.metrics.stall_timeout(),
        shutdown.clone(),
        stop_server.clone(),
    ));
    // Heartbeats and the retained-WAL warning, from the start (a long
    // initial copy retains WAL too) until the pipeline stops.
    if let Ok(settings) = ConnectionSettings::parse(&config.postgres) {
        tokio::spawn(keeper::run(
            settings,
            KeeperConfig::of(&config),
            counters.clone(),
            stop_server.clone(),
        ));
    }
    let notifier = tokio::spawn(telemetry::systemd::run(
        counters.clone(),
        config.metrics.stall_timeout(),
        shutdown.clone(),
        stop_server.clone(),
    ));
    let outcome = pipeline::run(config, shutdown, counters).await;
    stop_server.cancel();
    if let Err(error) = notifier.await {
        tracing::warn!(%error, "the systemd notification task failed");
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "the metrics endpoint failed"),
        Err(error) => tracing::warn!(%error, "the metrics endpoint task failed"),
    }
    outcome
}
