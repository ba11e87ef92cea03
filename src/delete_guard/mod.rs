//! The mass-delete circuit breaker: when more customers would be removed
//! (deleted or suppressed) within a window than `[delete_guard]` allows, the
//! rest of the removals are held for an operator instead of being sent.
//!
//! ```text
//!                      ┌─ Admit::Send ─▶ sink ──▶ Customer.io
//! removal ─▶ Guard ────┤
//!                      └─ Admit::Hold ─▶ Breaker ──▶ ciosync.held_deletes: `pending` a chunk
//!                                                    at a time, `held` at the commit
//!                                                           │
//!        ciosync deletes list | approve (send them) | discard ◀─┘
//! any other operation of a held customer ─▶ its held rows become `superseded`
//! ```
//!
//! - [`Guard`] (this file) is the pure rule: a sliding window of the
//!   removals sent, and whether it tripped.
//! - [`breaker`] is the pipeline's side: the guard, the customers that may
//!   have held deletes, the open transaction's holds, their durable store,
//!   and the share of `pipeline.max_pending_bytes` all of that stays within.
//! - [`filter`] answers, in fixed memory, which customers may have a held
//!   delete; [`open`] keeps the open transaction's holds until a chunk is
//!   full.
//! - [`store`] holds the daemon's queries on `ciosync.held_deletes` and
//!   [`table`] the operator's (the tables are defined in [`crate::state`]'s
//!   migration).
//! - [`crate::commands::deletes`] is `ciosync deletes list | approve | discard`.
//!
//! Only removals that stand alone are guarded: a DELETE or a soft delete of
//! a row. The delete of an id change (`on_id_change = "delete_old"`) is part
//! of a rename whose identify depends on it, so it is never held.

pub mod breaker;
pub mod filter;
pub mod open;
pub mod store;
pub mod table;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::DeleteGuardConfig;

/// What to do with one removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send it: the window has room.
    Send,
    /// Hold it for an operator: the breaker is tripped.
    Hold,
}

/// The limits in force, from `[delete_guard]` and the estimated row count.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Removals per window; 0 is no limit by count.
    pub max_deletes: u64,
    /// Share of the synced rows per window; 0.0 is no limit by share.
    pub max_share: f64,
    /// How far back removals count.
    pub window: Duration,
}

impl Limits {
    /// The limits `config` sets.
    pub fn of(config: &DeleteGuardConfig) -> Self {
        Self {
            max_deletes: config.max_deletes,
            max_share: config.max_share,
            window: Duration::from_secs(config.window_secs),
        }
    }
}

/// How finely the window tells sends apart: sends less than a
/// 1/`WINDOW_SLOTS` of the window after the first of an entry share it, so
/// the window keeps about this many entries however many removals it allows
/// (a share of a table of millions would otherwise keep millions of times).
const WINDOW_SLOTS: u32 = 1024;

/// The pure rule. The caller passes the time, so tests need no clock.
///
/// A removal is sent while fewer than the limit were sent within the
/// window; the one that would exceed it trips the guard, and from then on
/// every removal is held, whatever the window says, until [`Guard::reset`]
/// (all held removals were approved, discarded or superseded). A sent
/// removal leaves the window with the last of its entry, at most 1/1024 of
/// the window late: never early, so no window sends more than the limit.
#[derive(Debug, Clone)]
pub struct Guard {
    limits: Limits,
    /// Rows of the synced tables (`pg_class.reltuples`); `None` until read.
    rows: Option<u64>,
    /// The removals sent within the window, oldest first.
    sent: VecDeque<Sent>,
    /// Their total.
    in_window: u64,
    tripped: bool,
}

/// Removals sent close together (see [`WINDOW_SLOTS`]).
#[derive(Debug, Clone, Copy)]
struct Sent {
    first: Instant,
    last: Instant,
    count: u64,
}

impl Guard {
    /// An untripped guard with an empty window.
    pub fn new(limits: Limits) -> Self {
        Self { limits, rows: None, sent: VecDeque::new(), in_window: 0, tripped: false }
    }

    /// Sets the estimated rows of the synced tables, for `max_share`.
    pub fn set_rows(&mut self, rows: u64) {
        self.rows = Some(rows);
    }

    /// Whether the share rule needs a row estimate.
    pub fn uses_share(&self) -> bool {
        self.limits.max_share > 0.0
    }

    /// Removals a window may send; `None` when no rule is in force (both
    /// off, or only the share rule and no estimate yet). The share rule
    /// allows at least one removal, so a small table is not blocked by
    /// rounding.
    pub fn limit(&self) -> Option<u64> {
        let by_count = (self.limits.max_deletes > 0).then_some(self.limits.max_deletes);
        let by_share = match self.rows {
            Some(rows) if self.uses_share() => {
                Some(((rows as f64 * self.limits.max_share).floor() as u64).max(1))
            }
            _ => None,
        };
        match (by_count, by_share) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The window in force.
    pub fn window(&self) -> Duration {
        self.limits.window
    }

    /// Decides one removal at `now`, counting it if it is sent.
    pub fn admit(&mut self, now: Instant) -> Admit {
        if self.tripped {
            return Admit::Hold;
        }
        let Some(limit) = self.limit() else { return Admit::Send };
        let window = self.window();
        while let Some(oldest) =
            self.sent.front().filter(|s| now.saturating_duration_since(s.last) >= window)
        {
            self.in_window -= oldest.count;
            self.sent.pop_front();
        }
        if self.in_window >= limit {
            self.tripped = true;
            return Admit::Hold;
        }
        match self.sent.back_mut() {
            Some(newest) if now.saturating_duration_since(newest.first) < window / WINDOW_SLOTS => {
                newest.last = now;
                newest.count += 1;
            }
            _ => self.sent.push_back(Sent { first: now, last: now, count: 1 }),
        }
        self.in_window += 1;
        Admit::Send
    }

    /// Removals sent within the window as of the last [`Guard::admit`].
    pub fn sent_in_window(&self) -> u64 {
        self.in_window
    }

    /// Whether removals are being held.
    pub fn is_tripped(&self) -> bool {
        self.tripped
    }

    /// Trips the guard without a removal: at start, when held removals from
    /// before wait for an operator.
    pub fn trip(&mut self) {
        self.tripped = true;
    }

    /// Closes the breaker once nothing is held any more, with an empty
    /// window: what was sent before the operator's decision is not counted
    /// again.
    pub fn reset(&mut self) {
        self.tripped = false;
        self.sent.clear();
        self.in_window = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max_deletes: u64, max_share: f64) -> Guard {
        Guard::new(Limits { max_deletes, max_share, window: Duration::from_secs(60) })
    }

    #[test]
    fn a_row_estimate_sets_no_limit_while_the_share_rule_is_off() {
        let mut g = guard(3, 0.0);
        g.set_rows(1_000_000);
        assert_eq!(g.limit(), Some(3));
        let mut g = guard(0, 0.0);
        g.set_rows(1_000_000);
        assert_eq!(g.limit(), None);
    }

    #[test]
    fn the_removal_past_the_limit_trips_and_everything_after_is_held() {
        let mut g = guard(3, 0.0);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(g.admit(t), Admit::Send);
        }
        assert!(!g.is_tripped());
        assert_eq!(g.admit(t), Admit::Hold);
        assert!(g.is_tripped());
        // Tripped: held even once the window has moved on.
        assert_eq!(g.admit(t + Duration::from_secs(3600)), Admit::Hold);
    }

    #[test]
    fn the_window_slides() {
        let mut g = guard(2, 0.0);
        let t = Instant::now();
        assert_eq!(g.admit(t), Admit::Send);
        assert_eq!(g.admit(t + Duration::from_secs(30)), Admit::Send);
        // The first left the window at t + 60.
        assert_eq!(g.admit(t + Duration::from_secs(60)), Admit::Send);
        assert_eq!(g.sent_in_window(), 2);
        assert_eq!(g.admit(t + Duration::from_secs(61)), Admit::Hold);
    }

    #[test]
    fn a_million_sends_keep_a_bounded_window_and_leave_it_never_early() {
        let mut g = guard(2_000_000, 0.0);
        let t = Instant::now();
        // A million removals over half the window.
        for i in 0..1_000_000u64 {
            assert_eq!(g.admit(t + Duration::from_micros(i * 30)), Admit::Send);
        }
        assert_eq!(g.sent_in_window(), 1_000_000);
        assert!(g.sent.len() <= WINDOW_SLOTS as usize + 1, "{} entries", g.sent.len());
        // The first left the window at t + 60 s, but shares its entry with
        // later ones: still counted, so never more than the limit per window.
        let mut one = guard(1, 0.0);
        assert_eq!(one.admit(t), Admit::Send);
        let later = t + Duration::from_millis(10);
        assert_eq!(one.admit(t + Duration::from_secs(60)), Admit::Send);
        let mut two = guard(2, 0.0);
        assert_eq!(two.admit(t), Admit::Send);
        assert_eq!(two.admit(later), Admit::Send);
        assert_eq!(two.admit(t + Duration::from_secs(60)), Admit::Hold, "the later one is in");
        let mut three = guard(2, 0.0);
        assert_eq!(three.admit(t), Admit::Send);
        assert_eq!(three.admit(later), Admit::Send);
        assert_eq!(three.admit(later + Duration::from_secs(60)), Admit::Send);
        assert_eq!(three.sent_in_window(), 1);
    }

    #[test]
    fn sends_share_an_entry_only_less_than_a_1024th_of_the_window_apart() {
        // One send exactly window/1024 after an entry's first starts the
        // next entry: an entry spans less than 1/1024 of the window, so the
        // first send of it is never counted a full 1/1024 late.
        let window = Duration::from_secs(60);
        let slot = window / WINDOW_SLOTS;
        let t = Instant::now();
        let mut apart = guard(2, 0.0);
        assert_eq!(apart.admit(t), Admit::Send);
        assert_eq!(apart.admit(t + slot), Admit::Send);
        assert_eq!(apart.admit(t + window), Admit::Send, "the first left on time");
        assert_eq!(apart.sent_in_window(), 2);
        let mut shared = guard(2, 0.0);
        assert_eq!(shared.admit(t), Admit::Send);
        assert_eq!(shared.admit(t + slot - Duration::from_nanos(1)), Admit::Send);
        assert_eq!(shared.admit(t + window), Admit::Hold, "the first leaves with the second");
    }

    #[test]
    fn reset_closes_the_breaker_with_an_empty_window() {
        let mut g = guard(1, 0.0);
        let t = Instant::now();
        assert_eq!(g.admit(t), Admit::Send);
        assert_eq!(g.admit(t), Admit::Hold);
        g.reset();
        assert!(!g.is_tripped());
        assert_eq!(g.admit(t), Admit::Send);
        assert_eq!(g.admit(t), Admit::Hold);
    }

    #[test]
    fn a_guard_tripped_at_start_holds_until_reset() {
        let mut g = guard(1000, 0.0);
        g.trip();
        assert_eq!(g.admit(Instant::now()), Admit::Hold);
    }

    #[test]
    fn both_rules_off_never_hold() {
        let mut g = guard(0, 0.0);
        let t = Instant::now();
        assert_eq!(g.limit(), None);
        assert!((0..10_000).all(|_| g.admit(t) == Admit::Send));
    }

    #[test]
    fn the_share_rule_needs_an_estimate_and_the_stricter_rule_wins() {
        let mut g = guard(0, 0.05);
        assert_eq!(g.limit(), None, "no estimate yet: not in force");
        g.set_rows(1000);
        assert_eq!(g.limit(), Some(50));
        g.set_rows(3);
        assert_eq!(g.limit(), Some(1), "at least one removal");
        let mut both = guard(10, 0.05);
        both.set_rows(1000);
        assert_eq!(both.limit(), Some(10));
        both.set_rows(100);
        assert_eq!(both.limit(), Some(5));
    }
}
