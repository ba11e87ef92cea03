//! Telling systemd how the daemon is doing, for a `Type=notify` unit with a
//! watchdog (`deploy/systemd/ciosync.service`).
//!
//! ```text
//!  Health (phase, busy, last delivery) ──read every 250 ms──▶ Reported::update ──▶ READY=1, STATUS=…, STOPPING=1
//!                                      ──read every WATCHDOG_USEC/2──▶ making_progress ──▶ WATCHDOG=1
//! ```
//!
//! - `READY=1` once the pipeline has connected to Postgres for the first
//!   time (the initial copy or streaming started, or it stands by for
//!   another instance, see `lease`), so `systemctl start` returns when the
//!   daemon works, not when the process exists.
//! - `STATUS=` is what `/readyz` would answer: `streaming`, or its one-line
//!   reason (never a value, a secret or a URL), sent when it changes.
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC`, but only while the pipeline
//!   makes progress ([`making_progress`]): a stuck runtime sends nothing, and
//!   neither does a sink whose operations have waited longer than
//!   `metrics.stall_timeout_secs` with none delivered. systemd then restarts
//!   the daemon, which loses nothing: unacknowledged changes replay from the
//!   slot.
//! - `STOPPING=1` when shutdown starts (or the pipeline stopped by itself).
//!
//! Without `NOTIFY_SOCKET` in the environment nothing here runs at all.
//! Messages are datagrams to that socket (the `sd-notify` crate); the
//! decisions are the pure functions below, the task only reads [`Health`]
//! and sends.
//!
//! [`Health`]: super::Health

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::health::{self, now_ms, Phase, Snapshot};
use super::Counters;

/// How often the phase and the readiness answer are read for `READY=1` and
/// `STATUS=`: a fraction of a second, so `systemctl start` returns promptly.
const POLL: Duration = Duration::from_millis(250);

/// The shortest watchdog ping period, whatever `WATCHDOG_USEC` says.
const MIN_PING: Duration = Duration::from_millis(1);

/// `STATUS=` while the daemon is ready (`/readyz` answers 200).
pub const STATUS_STREAMING: &str = "streaming";

/// `STATUS=` from the moment shutdown starts.
pub const STATUS_SHUTTING_DOWN: &str = "shutting down";

/// One line of a notification datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// `READY=1`: start-up finished.
    Ready,
    /// `STATUS=…`: shown by `systemctl status`.
    Status(String),
    /// `WATCHDOG=1`: still alive and making progress.
    Watchdog,
    /// `STOPPING=1`: shutting down.
    Stopping,
}

impl Note {
    fn as_state(&self) -> NotifyState<'_> {
        match self {
            Self::Ready => NotifyState::Ready,
            Self::Status(text) => NotifyState::Status(text),
            Self::Watchdog => NotifyState::Watchdog,
            Self::Stopping => NotifyState::Stopping,
        }
    }
}

/// Whether the watchdog may be fed now: the pipeline is not stopping, and
/// it is not wedged: operations outstanding with no request to Customer.io
/// even ending (accepted, refused or failed) for longer than
/// `stall_timeout`, in any phase, the initial copy included. An outage is
/// not a wedge: failing requests time out and are retried, so they keep
/// ending, and restarting the daemon would not bring Customer.io back
/// (`/readyz` and `STATUS=` say "stalled" meanwhile). Waiting to reconnect
/// to Postgres is progress too: the reconnect loop retries by itself.
pub fn making_progress(health: &Snapshot, now_ms: u64, stall_timeout: Duration) -> bool {
    health.phase != Phase::Stopping && health.wedged_for(now_ms, stall_timeout).is_none()
}

/// The `STATUS=` text: [`STATUS_STREAMING`] when `/readyz` would answer
/// 200, otherwise its one-line reason; [`STATUS_SHUTTING_DOWN`] once
/// shutdown started.
pub fn status_line(
    health: &Snapshot,
    now_ms: u64,
    stall_timeout: Duration,
    shutting_down: bool,
) -> String {
    if shutting_down {
        return STATUS_SHUTTING_DOWN.to_owned();
    }
    match health::judge(health, now_ms, stall_timeout) {
        Ok(()) => STATUS_STREAMING.to_owned(),
        // Each line of a datagram is one assignment: keep it one line.
        Err(reason) => reason.replace(['\n', '\r'], " "),
    }
}

/// What systemd has been told so far; [`Reported::update`] says what is new.
#[derive(Debug, Default)]
pub struct Reported {
    ready: bool,
    status: Option<String>,
    stopping: bool,
}

impl Reported {
    /// The notes that bring systemd up to date with `health`: `READY=1` the
    /// first time the phase is the initial copy, streaming or standby (a
    /// standby instance started fine: it waits on purpose), `STATUS=` when
    /// the text changed, and `STOPPING=1` once (when `shutting_down` or the
    /// pipeline stopped), after which nothing more.
    pub fn update(
        &mut self,
        health: &Snapshot,
        now_ms: u64,
        stall_timeout: Duration,
        shutting_down: bool,
    ) -> Vec<Note> {
        let mut notes = Vec::new();
        if self.stopping {
            return notes;
        }
        let shutting_down = shutting_down || health.phase == Phase::Stopping;
        if shutting_down {
            self.stopping = true;
            notes.push(Note::Stopping);
        } else if !self.ready
            && matches!(health.phase, Phase::InitialCopy | Phase::Streaming | Phase::Standby)
        {
            self.ready = true;
            notes.push(Note::Ready);
        }
        let status = status_line(health, now_ms, stall_timeout, shutting_down);
        if self.status.as_ref() != Some(&status) {
            notes.push(Note::Status(status.clone()));
            self.status = Some(status);
        }
        notes
    }

    /// Whether `STOPPING=1` was sent.
    pub fn stopping(&self) -> bool {
        self.stopping
    }
}

/// Reports to systemd until `stop` is cancelled (the pipeline has stopped);
/// returns at once when `NOTIFY_SOCKET` is not set. `shutdown` is the
/// daemon's: once cancelled, `STOPPING=1` goes out at once; watchdog pings
/// go on while the pipeline drains and makes progress.
pub async fn run(
    counters: Arc<Counters>,
    stall_timeout: Duration,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    if std::env::var_os("NOTIFY_SOCKET").is_none_or(|socket| socket.is_empty()) {
        return;
    }
    // `None` unless WATCHDOG_USEC is set for this process (WATCHDOG_PID is
    // ours or absent).
    let watchdog = sd_notify::watchdog_enabled().filter(|timeout| !timeout.is_zero());
    let mut pings = watchdog.map(|timeout| ticker((timeout / 2).max(MIN_PING)));
    tracing::info!(
        watchdog_ms = watchdog.map(|t| t.as_millis() as u64),
        "reporting readiness to systemd (NOTIFY_SOCKET is set)"
    );
    let mut poll = ticker(POLL);
    let mut reported = Reported::default();
    let mut sender = Sender::default();
    loop {
        let ping = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = shutdown.cancelled(), if !reported.stopping() => false,
            _ = next_ping(&mut pings) => true,
            _ = poll.tick() => false,
        };
        let health = counters.health.snapshot();
        let now = now_ms();
        let mut notes = reported.update(&health, now, stall_timeout, shutdown.is_cancelled());
        if ping && making_progress(&health, now, stall_timeout) {
            notes.push(Note::Watchdog);
        }
        sender.send(notes).await;
    }
    // The pipeline stopped by itself (an error) or after shutdown.
    let notes = reported.update(&counters.health.snapshot(), now_ms(), stall_timeout, true);
    sender.send(notes).await;
}

fn ticker(period: Duration) -> Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// The next watchdog tick; never, without a watchdog.
async fn next_ping(pings: &mut Option<Interval>) {
    match pings {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sends notes, off the async threads (a datagram to a full socket blocks),
/// and says once when systemd cannot be told.
#[derive(Debug, Default)]
struct Sender {
    failed_before: bool,
}

impl Sender {
    async fn send(&mut self, notes: Vec<Note>) {
        if notes.is_empty() {
            return;
        }
        let sent = tokio::task::spawn_blocking(move || {
            let states: Vec<NotifyState<'_>> = notes.iter().map(Note::as_state).collect();
            sd_notify::notify(&states)
        })
        .await;
        let error = match sent {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        if !self.failed_before {
            tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET); the watchdog may restart the daemon");
        } else {
            tracing::debug!(%error, "cannot notify systemd");
        }
        self.failed_before = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(120);

    fn snapshot(phase: Phase, busy: bool, busy_since_ms: u64, last_delivery_ms: u64) -> Snapshot {
        Snapshot {
            phase,
            busy,
            busy_since_ms,
            last_delivery_ms,
            unauthorized: false,
            last_attempt_ms: 0,
            dead_letter_store_failing: false,
            record_store_failing: false,
        }
    }

    #[test]
    fn the_watchdog_is_fed_while_changes_flow_or_nothing_waits() {
        // Delivering: work waits, but something was delivered 10 s ago.
        assert!(making_progress(&snapshot(Phase::Streaming, true, 1_000, 290_000), 300_000, STALL));
        // Quiet for hours: nothing to be late with.
        assert!(making_progress(&snapshot(Phase::Streaming, false, 0, 0), 36_000_000, STALL));
        // Reconnecting to Postgres and starting up are alive too.
        for phase in [Phase::Starting, Phase::Connecting, Phase::InitialCopy] {
            assert!(making_progress(&snapshot(phase, false, 0, 0), 1_000_000, STALL), "{phase:?}");
        }
    }

    #[test]
    fn the_watchdog_starves_when_wedged_or_stopping() {
        // 121 s of waiting with no request even ending: wedged.
        let wedged = snapshot(Phase::Streaming, true, 1_000, 0);
        assert!(!making_progress(&wedged, 122_001, STALL));
        assert!(making_progress(&wedged, 121_000, STALL), "not before the stall timeout");
        // An outage: nothing delivered for long, but requests keep ending
        // (failing): stalled for /readyz, alive for the watchdog.
        let outage = Snapshot { last_attempt_ms: 120_000, ..wedged };
        assert!(outage.stalled_for(122_001, STALL).is_some());
        assert!(making_progress(&outage, 122_001, STALL));
        // The initial copy can stall the same way.
        assert!(!making_progress(&snapshot(Phase::InitialCopy, true, 1_000, 0), 122_001, STALL));
        assert!(!making_progress(&snapshot(Phase::Stopping, false, 0, 0), 1_000, STALL));
    }

    #[test]
    fn ready_comes_once_the_pipeline_reached_postgres() {
        let mut reported = Reported::default();
        let starting = snapshot(Phase::Starting, false, 0, 0);
        assert_eq!(
            reported.update(&starting, 1, STALL, false),
            [Note::Status("starting: not connected to Postgres yet".to_owned())]
        );
        assert_eq!(reported.update(&starting, 2, STALL, false), [], "nothing changed");
        // A first connection that is still being made is not ready.
        let connecting = snapshot(Phase::Connecting, false, 0, 0);
        let notes = reported.update(&connecting, 3, STALL, false);
        assert!(!notes.contains(&Note::Ready), "{notes:?}");
        let copying = snapshot(Phase::InitialCopy, true, 4, 0);
        let notes = reported.update(&copying, 5, STALL, false);
        assert_eq!(notes[0], Note::Ready);
        assert!(matches!(&notes[1], Note::Status(s) if s.starts_with("initial copy")));
        // Streaming after the copy: a new status, no second READY.
        let streaming = snapshot(Phase::Streaming, false, 4, 6);
        assert_eq!(
            reported.update(&streaming, 7, STALL, false),
            [Note::Status(STATUS_STREAMING.to_owned())]
        );
        // A reconnect later changes the status only.
        let notes = reported.update(&connecting, 8, STALL, false);
        assert!(matches!(&notes[..], [Note::Status(s)] if s.starts_with("not connected")));
    }

    #[test]
    fn the_status_says_why_the_daemon_is_not_ready() {
        let mut reported = Reported::default();
        let streaming = snapshot(Phase::Streaming, false, 0, 0);
        assert_eq!(reported.update(&streaming, 1, STALL, false).len(), 2, "READY and STATUS");
        let stalled = snapshot(Phase::Streaming, true, 1_000, 0);
        let notes = reported.update(&stalled, 200_000, STALL, false);
        assert!(
            matches!(&notes[..], [Note::Status(s)] if s.starts_with("stalled: operations have waited 199s")),
            "{notes:?}"
        );
        let recovered = snapshot(Phase::Streaming, false, 1_000, 200_500);
        assert_eq!(
            reported.update(&recovered, 201_000, STALL, false),
            [Note::Status(STATUS_STREAMING.to_owned())]
        );
    }

    #[test]
    fn shutdown_says_stopping_once_and_then_nothing() {
        let mut reported = Reported::default();
        let streaming = snapshot(Phase::Streaming, false, 0, 0);
        reported.update(&streaming, 1, STALL, false);
        assert_eq!(
            reported.update(&streaming, 2, STALL, true),
            [Note::Stopping, Note::Status(STATUS_SHUTTING_DOWN.to_owned())]
        );
        assert!(reported.stopping());
        assert_eq!(reported.update(&snapshot(Phase::Stopping, false, 0, 0), 3, STALL, true), []);
    }

    #[test]
    fn a_pipeline_that_stopped_by_itself_says_stopping_too() {
        let mut reported = Reported::default();
        let stopped = snapshot(Phase::Stopping, false, 0, 0);
        let notes = reported.update(&stopped, 1, STALL, false);
        assert_eq!(notes, [Note::Stopping, Note::Status(STATUS_SHUTTING_DOWN.to_owned())]);
        assert!(!notes.contains(&Note::Ready), "never ready without a connection");
    }
}
