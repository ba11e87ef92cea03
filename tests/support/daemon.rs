//! The daemon under test: in-process (library entry point and a shutdown
//! token) or as the built binary (for kill -9 and exit codes).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use ciosync::config::Config;
use ciosync::daemon;
use ciosync::pipeline::{Progress, RunError};
use ciosync::telemetry::Counters;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Site id and API key of every test's emulator.
pub const SITE_ID: &str = "test-site";
pub const API_KEY: &str = "test-key-0123456789";

/// A config for `db_url` and the emulator at `track_url` syncing
/// `public.users` with the usual attributes, using `slot` as the slot and
/// publication name (slots are cluster-wide, so each test has its own);
/// `extra` is appended verbatim.
pub fn config_text(db_url: &str, slot: &str, track_url: &str, extra: &str) -> String {
    format!(
        r#"
[postgres]
url = "{db_url}"
slot = "{slot}"
publication = "{slot}"
status_interval_ms = 200

[metrics]
# A free port, so daemons run side by side; a test that reads the built
# binary's endpoint replaces this line with its own port.
listen = "127.0.0.1:0"
stall_timeout_secs = 120

[customerio]
site_id = "{SITE_ID}"
api_key = "{API_KEY}"
track_url = "{track_url}"
retry_max_backoff_secs = 1
# Send each change at once, so tests can watch one change become one call;
# the coalescing tests set their own linger.
linger_ms = 0

[[sync]]
table = "public.users"
id_column = "id"

[sync.attributes]
email = "email"
first_name = "first_name"
plan = "plan"
created_at = "created_at"
about = "bio"
{extra}
"#
    )
}

/// The daemon running in this process, its metrics endpoint on a free port.
pub struct InProcess {
    pub shutdown: CancellationToken,
    pub counters: Arc<Counters>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub endpoint: SocketAddr,
    /// Where the webhook receiver listens, when started with [`InProcess::start_with_webhooks`].
    pub webhooks: Option<SocketAddr>,
    handle: JoinHandle<Result<Progress, RunError>>,
}

impl InProcess {
    /// Starts the daemon with `text` as its config.
    pub fn start(text: &str) -> Self {
        Self::start_inner(text, false)
    }

    /// Starts the daemon with `text` as its config, which has a
    /// `[webhooks]` section; the receiver listens on a free port of its own.
    pub fn start_with_webhooks(text: &str) -> Self {
        Self::start_inner(text, true)
    }

    fn start_inner(text: &str, with_webhooks: bool) -> Self {
        // Logs go to the test's captured output (shown only when it fails),
        // and past the leak tripwire.
        super::leaks::init_logging();
        let config = Config::from_toml(text, Vec::new()).expect("test config is valid");
        let shutdown = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let (listener, endpoint) = free_listener();
        let (webhook_listener, webhooks) = if with_webhooks {
            assert!(config.webhooks.is_some(), "the config has a [webhooks] section");
            let (listener, addr) = free_listener();
            (Some(listener), Some(addr))
        } else {
            (None, None)
        };
        let handle = tokio::spawn(daemon::run_with_webhooks(
            config,
            listener,
            webhook_listener,
            shutdown.clone(),
            counters.clone(),
        ));
        Self { shutdown, counters, endpoint, webhooks, handle }
    }

    /// The URL of `path` on the webhook receiver's listener.
    pub fn webhook_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.webhooks.expect("started with webhooks"))
    }

    /// The URL of `path` (`/metrics`, `/readyz`, …) on its endpoint.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.endpoint)
    }

    /// Whether it still runs (it has not stopped by itself).
    pub fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }

    /// Asks it to stop and waits for the outcome.
    /// Fails if a secret or a customer value was logged meanwhile.
    pub async fn stop(self) -> Result<Progress, RunError> {
        self.shutdown.cancel();
        self.join().await
    }

    /// Waits for it to stop by itself. Fails if a secret or a customer
    /// value was logged meanwhile.
    pub async fn join(self) -> Result<Progress, RunError> {
        let outcome = self.handle.await.expect("daemon task does not panic");
        super::leaks::assert_none();
        outcome
    }
}

/// A listener on a free local port, and its address.
fn free_listener() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("bound address");
    listener.set_nonblocking(true).expect("non-blocking listener");
    (tokio::net::TcpListener::from_std(listener).expect("tokio listener"), addr)
}

/// Writes `text` to a temporary config file.
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write config");
    file
}

/// The built `ciosync` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ciosync"))
}

/// Starts `ciosync run --config FILE` as a child process, logs to a file.
pub fn spawn_binary(config: &std::path::Path, log: &std::path::Path) -> Child {
    let mut command = Command::new(binary());
    command.args(["run", "--log-format", "text", "--config"]).arg(config);
    spawn_logged(command, log)
}

/// Starts `ciosync run --config FILE` as systemd starts a `Type=notify`
/// unit: `env` (e.g. `NOTIFY_SOCKET`, `WATCHDOG_USEC`) added to its
/// environment and `WATCHDOG_PID` set to its own pid, which is known only
/// once it runs, hence `sh -c '… exec'` (the child's pid stays the daemon's).
pub fn spawn_binary_as_systemd_does(
    config: &std::path::Path,
    log: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> Child {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" run --log-format text --config "$1""#)
        .arg(binary())
        .arg(config)
        .envs(env.iter().copied());
    spawn_logged(command, log)
}

/// Spawns `command` at log level info, its stderr to `log`.
fn spawn_logged(mut command: Command, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn ciosync")
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Runs `ciosync <args> --config FILE` until `reached` completes true,
/// then interrupts it as an operator's Ctrl-C does (SIGINT: the commands
/// have no handler for it) and returns how it ended. Panics if `reached`
/// completes false (a timeout), after killing the command.
pub async fn interrupt_when(
    args: &[&str],
    config: &std::path::Path,
    reached: impl std::future::Future<Output = bool>,
) -> std::process::ExitStatus {
    let mut command = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ciosync");
    let reached = reached.await;
    signal(&command, if reached { "INT" } else { "KILL" });
    let status = tokio::task::spawn_blocking(move || command.wait().expect("wait for ciosync"))
        .await
        .expect("the wait does not panic");
    assert!(reached, "`ciosync {}` never reached the point to interrupt it at", args.join(" "));
    status
}

/// Runs `ciosync run` with `config` where it must stop by itself (a
/// definite error, not a retry loop): exit 1 within a minute; its stderr.
pub async fn run_stops(config: &std::path::Path) -> String {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        run_binary(&["run", "--log-format", "text"], config),
    )
    .await
    .expect("`ciosync run` gives up instead of retrying");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

/// Runs `ciosync <args> --config FILE` to completion (off the async thread).
pub async fn run_binary(args: &[&str], config: &std::path::Path) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(&args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run ciosync")
    })
    .await
    .expect("the command thread does not panic")
}
