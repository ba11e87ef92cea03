//! The daemon's health as `/readyz` reports it: which phase the pipeline is
//! in, and whether operations wait with none delivered.
//!
//! # When the daemon is ready
//!
//! Ready means "changes flow": connected to Postgres and streaming from the
//! slot, and either nothing is outstanding or something was delivered
//! within `metrics.stall_timeout_secs`. The clock of a stall starts at the
//! later of the last delivery and the moment work arrived at an idle sink,
//! so the first change after an hour of quiet does not look an hour late.
//!
//! Two failures make it not ready at once, whatever the stall clock says:
//! Customer.io refusing the credentials, and refused operations that cannot
//! be stored in `ciosync.dead_letters`. Both are retried for as long as it
//! takes, with nothing acknowledged meanwhile; the reason names the cause.
//!
//! A quiet database is ready, however long it stays quiet: with nothing to
//! deliver there is nothing to be late with, and Postgres sends no
//! keepalive to an idle consumer (only after it sent WAL), so requiring a
//! recent keepalive would flap the readiness of every quiet database. A
//! broken connection is seen by the pipeline itself (the session ends and
//! the phase turns to [`Phase::Connecting`]).
//!
//! The pure rule is [`judge`]; its stall half, [`Snapshot::stalled_for`],
//! also decides when the systemd watchdog stops being fed
//! (`super::systemd`). [`Health`] holds the atomics the pipeline and the
//! sink update (a few relaxed stores per batch or per transaction).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// Where the pipeline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The process started; nothing is connected yet.
    Starting,
    /// The first start's copy of existing rows runs; streaming follows it.
    InitialCopy,
    /// Connecting to Postgres, or waiting to reconnect after the stream broke.
    Connecting,
    /// Streaming from the replication slot.
    Streaming,
    /// Shutdown was asked for, or the pipeline stopped.
    Stopping,
    /// Another ciosync instance works the slot (it holds the slot's lease,
    /// or the slot is in use); this one takes over when that one stops.
    Standby,
    /// A schema change broke a table under `on_schema_change = "pause"`:
    /// nothing after it is sent until the config or the table is repaired.
    Paused,
}

impl Phase {
    /// Every phase, in the order above (the `phase` label's values).
    pub const ALL: [Phase; 7] = [
        Self::Starting,
        Self::InitialCopy,
        Self::Connecting,
        Self::Streaming,
        Self::Stopping,
        Self::Standby,
        Self::Paused,
    ];

    /// The phase as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::InitialCopy => "initial_copy",
            Self::Connecting => "connecting",
            Self::Streaming => "streaming",
            Self::Stopping => "stopping",
            Self::Standby => "standby",
            Self::Paused => "paused",
        }
    }

    fn from_u8(value: u8) -> Self {
        Self::ALL.get(usize::from(value)).copied().unwrap_or(Self::Starting)
    }

    fn to_u8(self) -> u8 {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0) as u8
    }
}

/// What the pipeline and the sink report, read by `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct Health {
    phase: AtomicU8,
    /// Operations were pushed and not all completed.
    busy: AtomicBool,
    /// When the sink last went from idle to busy (process clock, ms; 0 never).
    busy_since: AtomicU64,
    /// When a batch last completed (process clock, ms; 0 never).
    last_delivery: AtomicU64,
    /// Customer.io answered the last request with HTTP 401.
    unauthorized: AtomicBool,
    /// When a Customer.io request last ended, however (process clock, ms).
    last_attempt: AtomicU64,
    /// Delivery tasks failing to store refused operations in
    /// `ciosync.dead_letters` right now (see [`Health::failing_to_store_dead_letters`]).
    dead_letter_store_failing: AtomicU32,
    /// Delivery tasks failing to write what Customer.io accepted to
    /// `ciosync.accepted` right now (see [`Health::failing_to_store_record`]).
    record_store_failing: AtomicU32,
}

/// One reading of [`Health`], for [`judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Phase,
    pub busy: bool,
    /// Process clock, ms; 0 never.
    pub busy_since_ms: u64,
    /// Process clock, ms; 0 never.
    pub last_delivery_ms: u64,
    /// Customer.io refuses the credentials (HTTP 401).
    pub unauthorized: bool,
    /// Process clock, ms; 0 never.
    pub last_attempt_ms: u64,
    /// Refused operations cannot be stored in `ciosync.dead_letters`.
    pub dead_letter_store_failing: bool,
    /// What Customer.io accepted cannot be written to `ciosync.accepted`.
    pub record_store_failing: bool,
}

impl Snapshot {
    /// The stall half of the readiness rule, whatever the phase: how long
    /// operations have waited with none delivered, when that is longer than
    /// `stall_timeout`; `None` when nothing is outstanding or deliveries are
    /// recent enough. The clock starts at the later of the last delivery and
    /// the moment the sink turned busy.
    pub fn stalled_for(&self, now_ms: u64, stall_timeout: Duration) -> Option<Duration> {
        if !self.busy {
            return None;
        }
        let since = self.busy_since_ms.max(self.last_delivery_ms);
        let waited = Duration::from_millis(now_ms.saturating_sub(since));
        (waited > stall_timeout).then_some(waited)
    }

    /// How long operations have waited with no request to Customer.io even
    /// ending (accepted, refused or failed), when longer than
    /// `stall_timeout`: the daemon is wedged, not merely facing an outage
    /// (requests time out and are retried, so they keep ending).
    pub fn wedged_for(&self, now_ms: u64, stall_timeout: Duration) -> Option<Duration> {
        if !self.busy {
            return None;
        }
        let since = self.busy_since_ms.max(self.last_delivery_ms).max(self.last_attempt_ms);
        let waited = Duration::from_millis(now_ms.saturating_sub(since));
        (waited > stall_timeout).then_some(waited)
    }
}

impl Health {
    /// Records the pipeline's phase.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase.to_u8(), Ordering::Relaxed);
    }

    /// The pipeline's phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// Records whether operations are outstanding; the stall clock starts
    /// when the sink turns busy.
    pub fn set_busy(&self, busy: bool) {
        let was = self.busy.swap(busy, Ordering::Relaxed);
        if busy && !was {
            self.busy_since.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Records that a batch completed (accepted or dead-lettered).
    pub fn delivered(&self) {
        self.last_delivery.store(now_ms(), Ordering::Relaxed);
    }

    /// Records whether Customer.io refused the credentials (HTTP 401) the
    /// last time it answered.
    pub fn set_unauthorized(&self, refused: bool) {
        self.unauthorized.store(refused, Ordering::Relaxed);
    }

    /// Records that a Customer.io request ended, whatever its outcome.
    pub fn attempted(&self) {
        self.last_attempt.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether Customer.io refuses the credentials.
    pub fn unauthorized(&self) -> bool {
        self.unauthorized.load(Ordering::Relaxed)
    }

    /// Marks one delivery task as failing to store its refused operations
    /// in `ciosync.dead_letters` until the guard is dropped: stored at last,
    /// or the task aborted (the stream broke and it will be replayed). A
    /// count, not a flag, so one task storing its letters does not hide
    /// another that still fails.
    pub fn failing_to_store_dead_letters(&self) -> DeadLetterStoreFailing<'_> {
        self.dead_letter_store_failing.fetch_add(1, Ordering::Relaxed);
        DeadLetterStoreFailing(&self.dead_letter_store_failing)
    }

    /// Marks one delivery task as failing to write the record of what
    /// Customer.io accepted until the guard is dropped; counted as
    /// [`Health::failing_to_store_dead_letters`] is.
    pub fn failing_to_store_record(&self) -> DeadLetterStoreFailing<'_> {
        self.record_store_failing.fetch_add(1, Ordering::Relaxed);
        DeadLetterStoreFailing(&self.record_store_failing)
    }

    /// Whether what Customer.io accepted cannot be written to `ciosync.accepted` now.
    pub fn record_store_failing(&self) -> bool {
        self.record_store_failing.load(Ordering::Relaxed) > 0
    }

    /// Whether some refused operations cannot be stored in `ciosync.dead_letters` now.
    pub fn dead_letter_store_failing(&self) -> bool {
        self.dead_letter_store_failing.load(Ordering::Relaxed) > 0
    }

    /// When a batch last completed, on the wall clock; `None` if none has.
    pub fn last_delivery(&self) -> Option<SystemTime> {
        let at = self.last_delivery.load(Ordering::Relaxed);
        (at != 0).then(|| SystemTime::now() - Duration::from_millis(now_ms().saturating_sub(at)))
    }

    /// The current values.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            phase: self.phase(),
            busy: self.busy.load(Ordering::Relaxed),
            busy_since_ms: self.busy_since.load(Ordering::Relaxed),
            last_delivery_ms: self.last_delivery.load(Ordering::Relaxed),
            unauthorized: self.unauthorized(),
            last_attempt_ms: self.last_attempt.load(Ordering::Relaxed),
            dead_letter_store_failing: self.dead_letter_store_failing(),
            record_store_failing: self.record_store_failing(),
        }
    }

    /// Whether the daemon is ready now, or why not (one line).
    pub fn readiness(&self, stall_timeout: Duration) -> Result<(), String> {
        judge(&self.snapshot(), now_ms(), stall_timeout)
    }
}

/// One delivery task failing to store dead letters; see
/// [`Health::failing_to_store_dead_letters`].
#[derive(Debug)]
pub struct DeadLetterStoreFailing<'a>(&'a AtomicU32);

impl Drop for DeadLetterStoreFailing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The readiness rule (see the module doc): `Ok` when ready, else the reason.
pub fn judge(health: &Snapshot, now_ms: u64, stall_timeout: Duration) -> Result<(), String> {
    let delivering = matches!(health.phase, Phase::InitialCopy | Phase::Streaming);
    if health.unauthorized && delivering {
        return Err("Customer.io refuses the credentials (HTTP 401): fix customerio.site_id and \
                    customerio.api_key; nothing is acknowledged meanwhile"
            .to_owned());
    }
    if health.dead_letter_store_failing && delivering {
        return Err(
            "cannot store refused operations in ciosync.dead_letters (the log says why, \
                    e.g. a missing INSERT privilege); retrying, nothing is acknowledged meanwhile"
                .to_owned(),
        );
    }
    if health.record_store_failing && delivering {
        return Err("cannot write ciosync.accepted, the record of what Customer.io accepted \
                    (the log says why, e.g. a missing privilege); retrying, nothing is \
                    acknowledged meanwhile"
            .to_owned());
    }
    match health.phase {
        Phase::Starting => Err("starting: not connected to Postgres yet".to_owned()),
        Phase::InitialCopy => {
            Err("initial copy in progress: streaming starts once it is delivered".to_owned())
        }
        Phase::Connecting => {
            Err("not connected to Postgres: connecting or reconnecting (the log says why)"
                .to_owned())
        }
        Phase::Stopping => Err("shutting down".to_owned()),
        Phase::Paused => Err("paused: a schema change broke a synced table (the log and \
                              ciosync_schema_mismatch say which); nothing is sent until the \
                              config or the table is repaired"
            .to_owned()),
        Phase::Standby => Err("standing by: another ciosync instance works this slot; this one \
                               takes over when it stops"
            .to_owned()),
        Phase::Streaming => match health.stalled_for(now_ms, stall_timeout) {
            Some(waited) => Err(format!(
                "stalled: operations have waited {}s with none delivered (is Customer.io \
                 answering? the log says why)",
                waited.as_secs()
            )),
            None => Ok(()),
        },
    }
}

/// Milliseconds on the process's monotonic clock, from 1 (0 means never).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(60);

    fn streaming(busy: bool, busy_since_ms: u64, last_delivery_ms: u64) -> Snapshot {
        Snapshot {
            phase: Phase::Streaming,
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
    fn only_streaming_can_be_ready() {
        for phase in Phase::ALL {
            let health = Snapshot { phase, ..streaming(false, 0, 0) };
            assert_eq!(
                judge(&health, 1_000, STALL).is_ok(),
                phase == Phase::Streaming,
                "{phase:?}"
            );
        }
        let reason =
            judge(&Snapshot { phase: Phase::Connecting, ..streaming(false, 0, 0) }, 1, STALL);
        assert!(reason.unwrap_err().contains("not connected to Postgres"));
    }

    #[test]
    fn a_quiet_pipeline_is_ready_however_long_it_is_quiet() {
        assert!(judge(&streaming(false, 5, 10), 10_000_000, STALL).is_ok());
        assert!(judge(&streaming(false, 0, 0), 10_000_000, STALL).is_ok());
    }

    #[test]
    fn waiting_operations_with_no_delivery_stall_after_the_timeout() {
        // Work arrived at 1 s after an hour of quiet: not late yet.
        assert!(judge(&streaming(true, 3_600_000, 1_000), 3_601_000, STALL).is_ok());
        // Deliveries keep coming: ready.
        assert!(judge(&streaming(true, 1_000, 3_600_000), 3_650_000, STALL).is_ok());
        // Nothing delivered for 61 s while work waits: stalled.
        let reason = judge(&streaming(true, 1_000, 2_000), 63_001, STALL).unwrap_err();
        assert!(reason.starts_with("stalled: operations have waited 61s"), "{reason}");
        assert!(!reason.contains('\n'));
    }

    #[test]
    fn a_stall_is_seen_in_every_phase_but_judged_only_while_streaming() {
        let stalled = streaming(true, 1_000, 2_000);
        assert_eq!(stalled.stalled_for(63_001, STALL), Some(Duration::from_millis(61_001)));
        assert_eq!(stalled.stalled_for(62_000, STALL), None, "exactly the timeout is not late");
        assert_eq!(streaming(false, 1_000, 2_000).stalled_for(63_001, STALL), None, "idle");
        let copying = Snapshot { phase: Phase::InitialCopy, ..stalled };
        assert!(copying.stalled_for(63_001, STALL).is_some());
        let reason = judge(&copying, 63_001, STALL).unwrap_err();
        assert!(reason.starts_with("initial copy in progress"), "{reason}");
    }

    #[test]
    fn the_stall_clock_starts_when_the_sink_turns_busy() {
        let health = Health::default();
        health.set_phase(Phase::Streaming);
        health.set_busy(true);
        let first = health.snapshot().busy_since_ms;
        assert!(first > 0);
        std::thread::sleep(Duration::from_millis(5));
        health.set_busy(true);
        assert_eq!(health.snapshot().busy_since_ms, first, "still busy: the clock runs on");
        health.set_busy(false);
        health.set_busy(true);
        assert!(health.snapshot().busy_since_ms > first, "busy again: a new clock");
        assert!(health.readiness(STALL).is_ok());
        assert!(health.last_delivery().is_none());
        health.delivered();
        assert!(health.last_delivery().is_some());
    }

    #[test]
    fn dead_letters_that_cannot_be_stored_are_not_ready_until_every_task_stored_them() {
        let health = Health::default();
        health.set_phase(Phase::Streaming);
        let first = health.failing_to_store_dead_letters();
        let second = health.failing_to_store_dead_letters();
        let reason = health.readiness(STALL).unwrap_err();
        assert!(reason.contains("ciosync.dead_letters") && reason.contains("INSERT"), "{reason}");
        assert!(!reason.contains('\n'));
        drop(first);
        assert!(health.dead_letter_store_failing(), "another task still fails");
        drop(second);
        assert!(!health.dead_letter_store_failing());
        assert!(health.readiness(STALL).is_ok());
        // Reconnecting says so rather than blame the store.
        let connecting = Snapshot {
            phase: Phase::Connecting,
            dead_letter_store_failing: true,
            ..streaming(false, 0, 0)
        };
        assert!(judge(&connecting, 1, STALL).unwrap_err().contains("not connected"));
    }

    #[test]
    fn a_record_that_cannot_be_written_is_not_ready_until_it_is() {
        let health = Health::default();
        health.set_phase(Phase::Streaming);
        let failing = health.failing_to_store_record();
        let reason = health.readiness(STALL).unwrap_err();
        assert!(reason.contains("ciosync.accepted"), "{reason}");
        drop(failing);
        assert!(health.readiness(STALL).is_ok());
    }

    #[test]
    fn refused_credentials_are_not_ready_at_once_with_the_fix_named() {
        let health = Snapshot { unauthorized: true, ..streaming(true, 1_000, 0) };
        let reason = judge(&health, 1_001, STALL).unwrap_err();
        assert!(reason.contains("HTTP 401") && reason.contains("customerio.api_key"), "{reason}");
    }
}
