//! Under systemd (`NOTIFY_SOCKET`, `WATCHDOG_USEC`) the daemon says
//! `READY=1` only once it reached Postgres, feeds the watchdog while changes
//! flow and through a Customer.io outage (requests keep ending), starves it
//! when no request even ends past the stall timeout (wedged), feeds it again
//! once deliveries resume, and says `STOPPING=1` at SIGTERM before exiting 0. The notification socket is a datagram socket
//! in a temporary directory, read as systemd would.

use std::ffi::OsStr;
use std::time::Duration;

use ciosync_emulator::Faults;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::support::daemon::{config_file, signal, spawn_binary_as_systemd_does, API_KEY};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{connect, TestDb, USERS_TABLE};
use crate::support::CONVERGE;

/// The watchdog timeout handed to the daemon: it pings every 200 ms.
const WATCHDOG_USEC: &str = "400000";

#[tokio::test]
async fn systemd_notify_reports_ready_and_watchdog() {
    let db = TestDb::new("systemd_notify").await;
    db.exec(USERS_TABLE).await;
    db.exec("CREATE TABLE unrelated (x int)").await;
    let emulator = emulator::start().await;
    let text = db
        .config(&emulator.url(), "")
        .replace("stall_timeout_secs = 120", "stall_timeout_secs = 2");
    let config = config_file(&text);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let mut notes = Notifications::bind(&dir.path().join("notify"));

    // Creating the slot waits for every running transaction with an xid to
    // end: holding one open keeps the daemon from reaching Postgres.
    let blocker = connect(&db.url).await;
    blocker.batch_execute("BEGIN; INSERT INTO unrelated VALUES (1)").await.unwrap();
    let mut daemon = spawn_binary_as_systemd_does(
        config.path(),
        &log,
        &[("NOTIFY_SOCKET", notes.path.as_os_str()), ("WATCHDOG_USEC", OsStr::new(WATCHDOG_USEC))],
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        notes.wait_for(CONVERGE, |l| l == "STATUS=starting: not connected to Postgres yet").await,
        "no starting status: {:?}\n{}",
        notes.seen,
        logs()
    );
    notes.collect(Duration::from_millis(1500)).await;
    assert!(!notes.seen.iter().any(|l| l == "READY=1"), "ready before Postgres: {:?}", notes.seen);

    blocker.batch_execute("COMMIT").await.unwrap();
    assert!(notes.wait_for(CONVERGE, |l| l == "READY=1").await, "never ready\n{}", logs());
    let slots = db
        .client
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", &[&db.name])
        .await
        .unwrap();
    assert_eq!(slots.get::<_, i64>(0), 1, "ready before the slot exists");
    assert!(notes.wait_for(CONVERGE, |l| l == "STATUS=streaming").await, "{:?}", notes.seen);
    db.wait_for_streaming().await;

    // Healthy: a ping every half of WATCHDOG_USEC.
    let pings = notes.collect(Duration::from_millis(1200)).await;
    let count = pings.iter().filter(|l| *l == "WATCHDOG=1").count();
    assert!(count >= 4, "{count} pings in 1.2 s while healthy: {pings:?}");

    // Customer.io fails everything: once the change has waited past the
    // 2 s stall timeout the status says so, but an outage is not a wedge:
    // failing requests keep ending, and the pings go on.
    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    assert!(
        notes.wait_for(CONVERGE, |l| l.starts_with("STATUS=stalled: operations have waited")).await,
        "never stalled: {:?}",
        notes.seen
    );
    let outage = notes.collect(Duration::from_millis(1200)).await;
    assert!(outage.iter().any(|l| l == "WATCHDOG=1"), "starved by an outage: {outage:?}");

    // Requests that never end (8 s each, under the 10 s request timeout):
    // past the stall timeout with none ending, the pings stop.
    emulator.set_faults(Faults { latency_ms: 8_000, ..Faults::default() });
    // The failing request in flight ends, its retry hangs, 2 s pass.
    notes.collect(Duration::from_millis(3_500)).await;
    let wedged = notes.collect(Duration::from_millis(1_500)).await;
    assert!(!wedged.iter().any(|l| l == "WATCHDOG=1"), "pinged while wedged: {wedged:?}");

    // Deliveries resume: so do the pings.
    emulator.set_faults(Faults::default());
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    assert!(notes.wait_for(CONVERGE, |l| l == "STATUS=streaming").await, "{:?}", notes.seen);
    assert!(notes.wait_for(CONVERGE, |l| l == "WATCHDOG=1").await, "pings never resumed");

    signal(&daemon, "TERM");
    assert!(notes.wait_for(CONVERGE, |l| l == "STOPPING=1").await, "no STOPPING=1\n{}", logs());
    let status = daemon.wait().unwrap();
    assert_eq!(status.code(), Some(0), "log: {}", logs());

    // What systemd shows is readiness, never a secret or a URL.
    for line in &notes.seen {
        assert!(!line.contains(API_KEY) && !line.contains("://"), "{line}");
    }
}

/// The notification socket, as systemd's end of it: every line of every
/// datagram, in order.
struct Notifications {
    path: std::path::PathBuf,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far, for assertions and failure messages.
    seen: Vec<String>,
}

impl Notifications {
    fn bind(path: &std::path::Path) -> Self {
        let socket = UnixDatagram::bind(path).expect("bind the notification socket");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    if tx.send(line.to_owned()).is_err() {
                        return;
                    }
                }
            }
        });
        Self { path: path.to_owned(), lines, seen: Vec::new() }
    }

    /// Reads lines until one satisfies `matches` (true) or `within` passes (false).
    async fn wait_for(&mut self, within: Duration, matches: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while let Ok(Some(line)) = tokio::time::timeout_at(deadline, self.lines.recv()).await {
            let hit = matches(&line);
            self.seen.push(line);
            if hit {
                return true;
            }
        }
        false
    }

    /// Every line that arrives during `period`.
    async fn collect(&mut self, period: Duration) -> Vec<String> {
        let deadline = Instant::now() + period;
        let mut lines = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout_at(deadline, self.lines.recv()).await {
            self.seen.push(line.clone());
            lines.push(line);
        }
        lines
    }
}
