//! The daemon as the built binary, with its metrics endpoint on a known
//! port: for tests that measure the process itself (its peak memory) and
//! follow its progress through `/metrics` over minutes rather than seconds.

use std::process::{Child, ExitStatus};
use std::time::Duration;

use super::daemon::{config_file, signal, spawn_binary};
use super::endpoint;

/// A running `ciosync run`; stopped with SIGTERM by [`Measured::stop`],
/// killed if dropped first (a failed assert).
pub struct Measured {
    child: Option<Child>,
    metrics: String,
    _config: tempfile::NamedTempFile,
    _logs: tempfile::TempDir,
}

impl Measured {
    /// Starts the binary with `config` (as [`super::daemon::config_text`]
    /// writes it), its metrics endpoint moved to a free port.
    pub fn start(config: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let text = config.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        );
        assert_ne!(text, config, "the config has the usual metrics listen line");
        let config = config_file(&text);
        let logs = tempfile::tempdir().expect("a log directory");
        let child = spawn_binary(config.path(), &logs.path().join("ciosync.log"));
        Self {
            child: Some(child),
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            _config: config,
            _logs: logs,
        }
    }

    /// The process id, for [`super::memory::peak_rss_bytes`].
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The value of one series of `/metrics` (0 when absent or when the
    /// endpoint does not answer yet).
    pub async fn metric(&self, series: &str) -> f64 {
        match endpoint::status(&self.metrics).await {
            Some(200) => {
                endpoint::value(&endpoint::get(&self.metrics).await.1, series).unwrap_or(0.0)
            }
            _ => 0.0,
        }
    }

    /// Polls `series` until `cond` holds for its value (true) or `within`
    /// passes (false).
    pub async fn wait_for_metric(
        &self,
        series: &str,
        within: Duration,
        cond: impl Fn(f64) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if cond(self.metric(series).await) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, "TERM");
        child.wait().expect("wait for ciosync")
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
