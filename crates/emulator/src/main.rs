//! A local stand-in for Customer.io's Track API.
//!
//! Only wiring: flags to `EmulatorConfig`, tracing to stderr, then
//! `ciosync_emulator::serve` until SIGTERM or SIGINT. Prints
//! `ciosync-emulator listening on http://ADDR` (`https://` with TLS) on
//! stdout once listening, so scripts and tests can start it on port 0 and
//! read the real port; with `--tls-self-signed` a second line,
//! `ciosync-emulator CA certificate: PATH`, names the CA file to trust.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ciosync_emulator::{
    check_health, serve, serve_tls, EmulatorConfig, Faults, Secret, ServerTls, WebhookRetry,
    DEFAULT_WEBHOOK_GIVE_UP_AFTER_MS, DEFAULT_WEBHOOK_INITIAL_BACKOFF_MS,
    DEFAULT_WEBHOOK_MAX_ATTEMPTS, DEFAULT_WEBHOOK_MAX_BACKOFF_MS,
};
use clap::Parser;
use tokio::net::TcpListener;

/// Emulates Customer.io's Track API (v1 and v2) in memory, with fault
/// injection and inspection endpoints under /_emulator/.
///
/// The fault flags set the faults at start; `PUT /_emulator/faults` replaces
/// them while running, as a JSON object with any of: error_rate,
/// rate_limit_rate, retry_after_secs, latency_ms, fail_next, pass_next (requests
/// let through before fail_next starts), fail_status (a 3xx points back at the
/// request), fail_after_apply, reject_ids (person ids refused as invalid: a 207 item
/// error in batches, a 400 elsewhere), reject_event_names (the same for
/// events by name, person or anonymous) and item_errors_next (the next N
/// batch items fail with a transient "internal_error"). Left-out fields mean no
/// fault; `GET /_emulator/faults` shows the current ones.
///
/// Reporting webhooks: with --webhook-url and --webhook-signing-key it sends
/// Customer.io-style signed webhooks (X-CIO-Timestamp, X-CIO-Signature), one
/// at a time; a failing one is retried with backoff and holds back the rest.
/// To feed ciosync's own receiver ([webhooks] in its config, default path
/// /webhooks/customerio), give both the same key (ciosync reads
/// CIOSYNC_WEBHOOKS_SIGNING_KEY, the emulator --webhook-signing-key or
/// CIOSYNC_EMULATOR_WEBHOOK_SIGNING_KEY) and pass --webhook-url
/// http://HOST:PORT/webhooks/customerio, plus e.g. --webhook-on-activity
/// sent,delivered for a sent and a delivered webhook per tracked event.
///
/// `POST /_emulator/webhooks` queues one on demand, e.g.
/// {"object_type":"email","metric":"bounced","customer_id":"42"};
/// `GET /_emulator/webhooks` lists them with every attempt.
///
/// Campaign webhook actions: `POST /_emulator/campaigns` registers a campaign
/// whose one action sends a Liquid-rendered request when a person enters or
/// leaves a manual segment, or on `POST /_emulator/campaigns/{name}/trigger`;
/// `GET /_emulator/campaigns/deliveries` lists what was sent. Failed
/// deliveries are retried with the --campaign-* timing.
#[derive(Debug, Parser)]
#[command(name = "ciosync-emulator", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Do not serve: ask the emulator at HOST:PORT for /_emulator/health
    /// (over HTTP, then HTTPS with any certificate) and exit 0 if it
    /// answers 200, 1 if not. The healthcheck of images without curl;
    /// the other flags are not needed and are ignored.
    #[arg(long, value_name = "HOST:PORT")]
    health_check: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (server first); needs
    /// --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a CA and a server certificate made at start-up for
    /// localhost, 127.0.0.1, ::1 and each --tls-name, written into DIR
    /// (created if missing) as ca.pem, the file clients must trust (e.g.
    /// REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS, SSL_CERT_FILE), server.pem and
    /// server-key.pem. New ones on every start. `GET /_emulator/ca.pem`
    /// serves the CA certificate too, for clients in another container.
    #[arg(long, env = "CIOSYNC_EMULATOR_TLS_SELF_SIGNED", value_name = "DIR")]
    tls_self_signed: Option<PathBuf>,
    /// Another host name or IP address for the self-signed certificate, e.g.
    /// a CI service container's name; repeatable (comma-separated in the
    /// variable, for service containers that take no arguments).
    #[arg(
        long = "tls-name",
        env = "CIOSYNC_EMULATOR_TLS_NAMES",
        value_name = "NAME",
        value_delimiter = ',',
        requires = "tls_self_signed"
    )]
    tls_names: Vec<String>,
    /// Site ID expected as the Basic-auth user name.
    #[arg(long, env = "CIOSYNC_EMULATOR_SITE_ID", required_unless_present = "health_check")]
    site_id: Option<String>,
    /// Track API key expected as the Basic-auth password.
    #[arg(
        long,
        env = "CIOSYNC_EMULATOR_API_KEY",
        hide_env_values = true,
        required_unless_present = "health_check"
    )]
    api_key: Option<String>,
    /// Region the /api/v1/accounts/region endpoint reports.
    #[arg(long, default_value = "us", value_parser = ["us", "eu"])]
    region: String,
    /// Share of Track API requests (0.0-1.0) answered 500.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    error_rate: f64,
    /// Share of Track API requests (0.0-1.0) answered 429.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    rate_limit_rate: f64,
    /// Retry-After header, in seconds, on injected 429s.
    #[arg(long = "retry-after", value_name = "SECS")]
    retry_after_secs: Option<u64>,
    /// Milliseconds to wait before answering each Track API request.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Refuse requests and batch items naming this person id as invalid
    /// (a 207 item error in batches, a 400 elsewhere); repeatable.
    #[arg(long = "reject-id", value_name = "ID")]
    reject_ids: Vec<String>,
    /// Refuse events (person or anonymous) with this name as invalid, the
    /// same way; repeatable.
    #[arg(long = "reject-event", value_name = "NAME")]
    reject_event_names: Vec<String>,
    /// Accept-only mode, for throughput runs: v2 requests are authenticated,
    /// framed and their items counted (GET /_emulator/accepted), but not
    /// applied to customers, and the request log keeps no bodies.
    #[arg(long)]
    accept_only: bool,
    /// Answer v2 batches with invalid items as 200 plus errors instead of 207.
    #[arg(long)]
    errors_with_200: bool,
    /// Keep people's attributes set to null or "" instead of removing them.
    /// Removal is documented for objects and relationships only; for people
    /// it is UNCONFIRMED, hence the flag.
    #[arg(long)]
    keep_empty: bool,
    /// Accept any JSON value as a v1 identify attribute. By default floats,
    /// null, objects and arrays get a 400, as the published schema
    /// (string, integer, boolean) says; whether Customer.io really refuses
    /// them is UNCONFIRMED, so strict is the safe default: what passes here
    /// passes the documented contract. (v2 takes any value.)
    #[arg(long)]
    lenient_v1_values: bool,
    /// Drop email changes sent by id (the workspace setting turned off).
    #[arg(long)]
    deny_email_update_by_id: bool,
    /// Create an object that does not exist when a person is related to it
    /// (Customer.io's behaviour is unconfirmed; by default the relationship
    /// is dropped and listed in /_emulator/failures).
    #[arg(long)]
    relationships_create_objects: bool,
    /// Send reporting webhooks to this URL, e.g. ciosync's
    /// http://HOST:PORT/webhooks/customerio. Off unless set.
    #[arg(long, env = "CIOSYNC_EMULATOR_WEBHOOK_URL", value_name = "URL")]
    webhook_url: Option<String>,
    /// Key to sign webhooks with; the same as ciosync's
    /// CIOSYNC_WEBHOOKS_SIGNING_KEY. Required with --webhook-url.
    #[arg(
        long,
        env = "CIOSYNC_EMULATOR_WEBHOOK_SIGNING_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_parser = secret
    )]
    webhook_signing_key: Option<Secret>,
    /// Email metrics sent for every person event accepted, in order, as
    /// one fake message (comma-separated, e.g. sent,delivered).
    #[arg(long, value_delimiter = ',', value_name = "METRICS")]
    webhook_on_activity: Vec<String>,
    /// Also send a customer "subscribed" webhook when a call creates a person.
    #[arg(long)]
    webhook_on_new_person: bool,
    /// Wait before a failed webhook's first retry; doubles per failure
    /// (Customer.io: 3600000, an hour).
    #[arg(long, default_value_t = DEFAULT_WEBHOOK_INITIAL_BACKOFF_MS, value_name = "MS")]
    webhook_initial_backoff_ms: u64,
    /// Longest wait between two attempts.
    #[arg(long, default_value_t = DEFAULT_WEBHOOK_MAX_BACKOFF_MS, value_name = "MS")]
    webhook_max_backoff_ms: u64,
    /// Most attempts per webhook, 0 for no limit (Customer.io: no limit).
    #[arg(long, default_value_t = DEFAULT_WEBHOOK_MAX_ATTEMPTS, value_name = "N")]
    webhook_max_attempts: u32,
    /// Give up on a webhook this long after its first attempt
    /// (Customer.io: 604800000, 7 days).
    #[arg(long, default_value_t = DEFAULT_WEBHOOK_GIVE_UP_AFTER_MS, value_name = "MS")]
    webhook_give_up_after_ms: u64,
    /// Campaign webhook actions (POST /_emulator/campaigns): wait before a
    /// failed delivery's first retry; doubles per failure.
    #[arg(long, default_value_t = DEFAULT_WEBHOOK_INITIAL_BACKOFF_MS, value_name = "MS")]
    campaign_initial_backoff_ms: u64,
    /// Longest wait between two attempts at a campaign delivery.
    #[arg(long, default_value_t = DEFAULT_WEBHOOK_MAX_BACKOFF_MS, value_name = "MS")]
    campaign_max_backoff_ms: u64,
    /// Most attempts per campaign delivery, 0 for no limit.
    #[arg(long, default_value_t = DEFAULT_WEBHOOK_MAX_ATTEMPTS, value_name = "N")]
    campaign_max_attempts: u32,
    /// Give up on a campaign delivery this long after its first attempt.
    #[arg(long, default_value_t = DEFAULT_WEBHOOK_GIVE_UP_AFTER_MS, value_name = "MS")]
    campaign_give_up_after_ms: u64,
}

fn rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = raw.parse().map_err(|_| format!("{raw:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0.0 and 1.0"))
    }
}

/// Wraps the value at once, so `Args`' `Debug` cannot show it.
fn secret(raw: &str) -> Result<Secret, String> {
    Ok(Secret::new(raw))
}

impl Args {
    fn config(&self) -> EmulatorConfig {
        EmulatorConfig {
            // Both are required unless probing (clap enforces it); an empty
            // one would fail `validate`.
            site_id: self.site_id.clone().unwrap_or_default(),
            api_key: self.api_key.clone().unwrap_or_default(),
            region: self.region.clone(),
            faults: Faults {
                error_rate: self.error_rate,
                rate_limit_rate: self.rate_limit_rate,
                retry_after_secs: self.retry_after_secs,
                latency_ms: self.latency_ms,
                reject_ids: self.reject_ids.clone(),
                reject_event_names: self.reject_event_names.clone(),
                ..Faults::default()
            },
            errors_with_200: self.errors_with_200,
            accept_only: self.accept_only,
            empty_removes: !self.keep_empty,
            strict_v1_values: !self.lenient_v1_values,
            allow_email_update_by_id: !self.deny_email_update_by_id,
            relationships_create_objects: self.relationships_create_objects,
            webhook_url: self.webhook_url.clone(),
            webhook_signing_key: self.webhook_signing_key.clone(),
            webhook_on_activity: self.webhook_on_activity.clone(),
            webhook_on_new_person: self.webhook_on_new_person,
            webhook_retry: WebhookRetry {
                initial_backoff_ms: self.webhook_initial_backoff_ms,
                max_backoff_ms: self.webhook_max_backoff_ms,
                max_attempts: self.webhook_max_attempts,
                give_up_after_ms: self.webhook_give_up_after_ms,
            },
            campaign_retry: WebhookRetry {
                initial_backoff_ms: self.campaign_initial_backoff_ms,
                max_backoff_ms: self.campaign_max_backoff_ms,
                max_attempts: self.campaign_max_attempts,
                give_up_after_ms: self.campaign_give_up_after_ms,
            },
            ..EmulatorConfig::default()
        }
    }
}

fn main() -> ExitCode {
    // Bad flags print clap's message and exit 2.
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ciosync-emulator: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = &args.health_check {
        return probe(&runtime, addr);
    }
    match runtime.block_on(try_main(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ciosync-emulator: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `--health-check`: one line on stderr when the emulator does not answer.
fn probe(runtime: &tokio::runtime::Runtime, addr: &str) -> ExitCode {
    match runtime.block_on(check_health(addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ciosync-emulator: not healthy: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn try_main(args: Args) -> Result<(), String> {
    let config = args.config();
    config.validate().map_err(|message| format!("invalid arguments: {message}"))?;
    let (tls, ca_path) = args.tls()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|error| format!("cannot read the listening address: {error}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut announcement = format!("ciosync-emulator listening on {scheme}://{addr}\n");
    if let Some(ca_path) = &ca_path {
        announcement.push_str(&format!("ciosync-emulator CA certificate: {}\n", ca_path.display()));
    }
    {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(announcement.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|error| format!("cannot write to stdout: {error}"))?;
    }
    // Never a key or the webhook URL (it may carry a token): only the site
    // id, the region and whether webhooks go out.
    let webhooks = config.webhook_url.is_some();
    tracing::info!(%addr, scheme, site_id = %config.site_id, region = %config.region, webhooks, "emulator ready");
    let served = match tls {
        Some(tls) => serve_tls(listener, config, tls, shutdown_signal()).await,
        None => serve(listener, config, shutdown_signal()).await,
    };
    served.map_err(|error| format!("server failed: {error}"))?;
    tracing::info!("emulator stopped");
    Ok(())
}

impl Args {
    /// The TLS configuration the flags ask for, and the CA file written.
    fn tls(&self) -> Result<(Option<ServerTls>, Option<PathBuf>), String> {
        if let Some(dir) = &self.tls_self_signed {
            let (tls, ca_path) = ServerTls::self_signed(dir, &self.tls_names).map_err(|error| {
                format!("cannot make a self-signed certificate in {}: {error}", dir.display())
            })?;
            return Ok((Some(tls), Some(ca_path)));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => ServerTls::from_pem_files(cert, key)
                .map(|tls| (Some(tls), None))
                .map_err(|error| format!("invalid --tls-cert/--tls-key: {error}")),
            _ => Ok((None, None)),
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the emulator");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
