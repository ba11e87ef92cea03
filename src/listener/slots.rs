//! The open connections of one listener, each with the phase it is in, and
//! the rule that makes room at the cap: shed the connection that has gone
//! longest without a request in progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Cut, Limits, ListenerStats, REQUEST_TIMEOUT};

/// Where a connection is in its request/answer cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    /// Connected, or sending a request's headers: bound by the header timeout.
    Headers = 0,
    /// A request is being served: bound by [`REQUEST_TIMEOUT`], never shed.
    Serving = 1,
    /// Answered and kept alive, nothing sent since: bound by the idle timeout.
    Idle = 2,
    /// A request whose handler reads a body it cannot trust yet (a webhook
    /// before its signature is checked): bound by [`REQUEST_TIMEOUT`], and
    /// shed like a connection without a request.
    Untrusted = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Headers,
            1 => Self::Serving,
            2 => Self::Idle,
            _ => Self::Untrusted,
        }
    }

    /// How long a connection may stay in this phase, and what it is cut for after.
    fn bound(self, limits: &Limits) -> (Duration, Cut) {
        match self {
            Self::Headers => (limits.header_timeout, Cut::HeaderTimeout),
            Self::Serving | Self::Untrusted => (REQUEST_TIMEOUT, Cut::RequestTimeout),
            Self::Idle => (limits.idle_timeout, Cut::IdleTimeout),
        }
    }
}

/// One connection's shared state: its phase, since when, and the signal
/// that it was shed.
#[derive(Debug)]
pub(super) struct Slot {
    id: u64,
    epoch: Instant,
    phase: AtomicU8,
    /// Milliseconds from `epoch` to the start of the phase.
    since_ms: AtomicU64,
    /// Told of each change of phase, so the connection's deadline follows.
    pub(super) changed: Notify,
    /// Cancelled when the connection is shed.
    pub(super) shed: CancellationToken,
}

impl Slot {
    pub(super) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Enters `phase` now.
    pub(super) fn enter(&self, phase: Phase) {
        self.since_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        if self.phase.swap(phase as u8, Ordering::AcqRel) != phase as u8 {
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: an idle connection starts its next request's headers.
    pub(super) fn bytes_arrived(&self) {
        if self.phase() == Phase::Idle {
            self.enter(Phase::Headers);
        }
    }

    /// When the current phase runs out, and what the connection is cut for then.
    pub(super) fn deadline(&self, limits: &Limits) -> (Instant, Cut) {
        let (bound, cut) = self.phase().bound(limits);
        let since = Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        (self.epoch + since + bound, cut)
    }
}

/// The open connections of one listener.
pub(super) struct Slots {
    max: usize,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    stats: Arc<ListenerStats>,
}

/// A connection's hold on its slot; released when dropped.
pub(super) struct Held {
    pub(super) slot: Arc<Slot>,
    slots: Arc<Slots>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.slots.release(self.slot.id);
    }
}

impl Slots {
    pub(super) fn new(max: usize, stats: Arc<ListenerStats>) -> Arc<Self> {
        Arc::new(Self {
            max,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            stats,
        })
    }

    /// A slot for a new connection. At the cap, the connection without a
    /// trusted request in progress that entered its phase longest ago is
    /// shed to make room; `None` when every connection is serving one.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Held> {
        let mut open = self.open.lock().expect("the slots' lock is never poisoned");
        if open.len() >= self.max {
            let victim = open
                .values()
                .filter(|slot| slot.phase() != Phase::Serving)
                .min_by_key(|slot| slot.since_ms.load(Ordering::Acquire))
                .map(|slot| slot.id)?;
            if let Some(slot) = open.remove(&victim) {
                slot.shed.cancel();
                self.stats.cut(Cut::Shed);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            epoch: self.epoch,
            phase: AtomicU8::new(Phase::Headers as u8),
            since_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            changed: Notify::new(),
            shed: CancellationToken::new(),
        });
        open.insert(id, slot.clone());
        self.stats.open.store(open.len() as u64, Ordering::Relaxed);
        Some(Held { slot, slots: self.clone() })
    }

    fn release(&self, id: u64) {
        let mut open = self.open.lock().expect("the slots' lock is never poisoned");
        open.remove(&id);
        self.stats.open.store(open.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_oldest_connection_without_a_request_is_shed() {
        let stats = Arc::new(ListenerStats::default());
        let slots = Slots::new(3, stats.clone());
        let first = slots.admit().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let serving = slots.admit().unwrap();
        serving.slot.enter(Phase::Serving);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let third = slots.admit().unwrap();
        let fourth = slots.admit();
        assert!(fourth.is_some(), "a fourth gets a slot by shedding one");
        assert!(first.slot.shed.is_cancelled(), "the oldest waiting one was shed");
        assert!(!serving.slot.shed.is_cancelled() && !third.slot.shed.is_cancelled());
        assert_eq!(stats.cut_count(Cut::Shed), 1);
        assert_eq!(stats.open.load(Ordering::Relaxed), 3);
        drop(first);
        assert_eq!(stats.open.load(Ordering::Relaxed), 3, "a shed slot is released once");
    }

    #[tokio::test]
    async fn with_every_connection_serving_a_newcomer_is_refused() {
        let slots = Slots::new(1, Arc::new(ListenerStats::default()));
        let held = slots.admit().unwrap();
        held.slot.enter(Phase::Serving);
        assert!(slots.admit().is_none());
        held.slot.enter(Phase::Idle);
        assert!(slots.admit().is_some(), "an idle one is shed");
    }

    #[tokio::test]
    async fn a_request_reading_an_untrusted_body_is_shed_too() {
        let slots = Slots::new(1, Arc::new(ListenerStats::default()));
        let held = slots.admit().unwrap();
        held.slot.enter(Phase::Serving);
        held.slot.enter(Phase::Untrusted);
        assert!(slots.admit().is_some());
        assert!(held.slot.shed.is_cancelled());
    }

    #[test]
    fn an_idle_connection_that_sends_a_byte_is_sending_headers() {
        let slots = Slots::new(1, Arc::new(ListenerStats::default()));
        let held = slots.admit().unwrap();
        held.slot.enter(Phase::Idle);
        held.slot.bytes_arrived();
        assert_eq!(held.slot.phase(), Phase::Headers);
        held.slot.enter(Phase::Serving);
        held.slot.bytes_arrived();
        assert_eq!(held.slot.phase(), Phase::Serving, "body bytes change nothing");
    }
}
