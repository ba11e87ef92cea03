//! `ciosync run`: the pipeline, with the metrics and health endpoint beside
//! it, and the systemd notifications when systemd asks for them.
//!
//! With `[webhooks]`, the reporting-webhook receiver runs beside them on its
//! own listener and its own Postgres connection ([`crate::webhooks`]).
//!
//! The binary binds `metrics.listen` (and `webhooks.listen`) first
//! ([`telemetry::server::bind`], [`webhooks::server::bind`]) and hands the
//! listeners in, so tests run the real daemon on port 0.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::webhooks::WebhooksConfig;
use crate::config::{Config, ConfigError};
use crate::pipeline::{self, Progress, RunError};
use crate::source::keeper::{self, KeeperConfig};
use crate::telemetry::slot::SlotWatch;
use crate::telemetry::{self, Counters};
use crate::webhooks::{self, actions::Actions, server::Receiver, store::WebhookStore};

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
    run_with_webhooks(config, endpoint, None, shutdown, counters).await
}

/// [`run`], with the reporting-webhook receiver on `webhooks` when
/// `[webhooks]` is configured (bound here from `webhooks.listen` when
/// `None`). It serves until the pipeline has stopped; `shutdown` turns its
/// `/readyz` to 503 at once.
pub async fn run_with_webhooks(
    config: Config,
    endpoint: TcpListener,
    webhooks: Option<TcpListener>,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) -> Result<Progress, RunError> {
    let stop_server = CancellationToken::new();
    let receiver = match &config.webhooks {
        Some(hooks) => {
            let listener = match webhooks {
                Some(listener) => listener,
                None => {
                    webhooks::server::bind(hooks).await.map_err(|error| ConfigError::Invalid {
                        field: "webhooks.listen".to_owned(),
                        message: crate::error::error_chain(&error),
                    })?
                }
            };
            let receiver = receiver(&config, hooks, &counters, &shutdown).await?;
            Some(tokio::spawn(webhooks::server::serve(listener, receiver, stop_server.clone())))
        }
        None => None,
    };
    let tables = config
        .sync
        .iter()
        .map(|s| s.table.to_string())
        .chain(config.events.iter().map(|e| e.table.to_string()))
        .chain(config.devices.iter().map(|d| d.table.to_string()))
        .collect();
    let slot = SlotWatch::new(
        config.postgres.connection(),
        config.postgres.slot.clone(),
        config.postgres.publication.clone(),
        tables,
    );
    let server = tokio::spawn(telemetry::server::serve(
        endpoint,
        config.metrics.limits(),
        counters.clone(),
        Some(slot),
        config.metrics.stall_timeout(),
        shutdown.clone(),
        stop_server.clone(),
    ));
    // Heartbeats and the retained-WAL warning, from the start (a long
    // initial copy retains WAL too) until the pipeline stops.
    tokio::spawn(keeper::run(
        config.postgres.connection(),
        KeeperConfig::of(&config),
        counters.clone(),
        stop_server.clone(),
    ));
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
    log_task_end(server.await, "the metrics endpoint");
    if let Some(task) = receiver {
        log_task_end(task.await, "the webhook receiver");
    }
    outcome
}

/// The webhook receiver with its store, prepared: a write-back without its
/// origin privileges would echo, so that stops the start.
async fn receiver(
    config: &Config,
    hooks: &WebhooksConfig,
    counters: &Arc<Counters>,
    shutdown: &CancellationToken,
) -> Result<Arc<Receiver>, RunError> {
    let write_backs = crate::config::webhooks::resolve(config)?;
    let store = match &hooks.signing_key {
        Some(_) => {
            let store = WebhookStore::new(config.postgres.connection(), hooks.clone());
            let store = match config.write_back_origin() {
                Some(origin) => store.with_write_back(write_backs, origin, counters.clone()),
                None => store,
            };
            store.prepare().await.map_err(RunError::Source)?;
            Some(store)
        }
        None => None,
    };
    let actions = crate::config::actions::resolve(config)?;
    let actions = if actions.is_empty() {
        None
    } else {
        let actions = Actions::new(actions, config.postgres.connection(), config.actions_origin());
        actions.prepare().await.map_err(RunError::Source)?;
        Some(Arc::new(actions))
    };
    let receiver = Receiver::new(hooks.clone(), store, actions, counters.clone(), shutdown.clone());
    Ok(Arc::new(receiver))
}

/// Logs how a server task ended, unless it ended well.
fn log_task_end<E: std::fmt::Display>(
    joined: Result<Result<(), E>, tokio::task::JoinError>,
    what: &str,
) {
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "{what} failed"),
        Err(error) => tracing::warn!(%error, "{what} task failed"),
    }
}

/// Cancels `token` on the first SIGTERM or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
    }
    token.cancel();
}
