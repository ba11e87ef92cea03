//! Adaptive request concurrency: how many requests may be in flight, from
//! the round trips Customer.io answers with. Pure: the caller passes the
//! time and each request's outcome.
//!
//! Requests in flight needed to use the request budget grow with the round
//! trip (100 requests/s at 150 ms is 15 in flight), and the round trip
//! changes by hour and region, so no fixed number is right. The limit
//! follows AIMD, as TCP's congestion window and vector's adaptive request
//! concurrency do, once per *window* of one round trip:
//!
//! | in the window | the limit |
//! |---|---|
//! | a 429, a 5xx, a timeout or a broken connection | halved |
//! | (a refusal, a 4xx other than 429, is not a round trip sample) | |
//! | round trips over 1.5 × the baseline (+5 ms): Customer.io is queueing | × 0.9 |
//! | otherwise, if some request found the limit reached and none waited for the request budget | + 1 (× 2 in slow start) |
//! | otherwise | unchanged |
//!
//! Like TCP, it starts in *slow start*: the limit doubles per window until
//! the first window that was overloaded, saw latency rise or waited for the
//! request budget, and grows by one from then on. Adding one per round trip
//! from the start, the limit climbed 4 → 26 over the whole 5.5 s of a
//! 200,000-row initial copy at 150 ms with a memory budget that allowed
//! more (BENCHMARKS.md, "The initial copy at 150 ms").
//!
//! The baseline is the unloaded round trip: it falls to any lower window
//! mean at once and rises only slowly (a twentieth of the gap per window),
//! so a lasting change of latency is learned without chasing load. The limit
//! stays within 1 and `customerio.max_in_flight`, and starts at
//! [`INITIAL_LIMIT`] (or the ceiling if lower). Nothing here touches order or
//! acknowledgement: the queue decides what may go, this only how much.

use std::time::Duration;

use tokio::time::Instant;

/// The limit at start: the fixed value of earlier versions.
pub const INITIAL_LIMIT: usize = 4;
/// Shortest window, so a fast local answer does not make every request a window.
const MIN_WINDOW: Duration = Duration::from_millis(20);
/// Round trips this much over the baseline (and [`RISE_SLACK`]) mean a queue.
const RISE_FACTOR: f64 = 1.5;
const RISE_SLACK: Duration = Duration::from_millis(5);
/// Share of the gap the baseline closes per window when latency rises.
const BASELINE_CLIMB: f64 = 0.05;

/// How a request ended, for the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Customer.io took the request (a 2xx): its round trip counts.
    Answered,
    /// A 429, a 5xx, a timeout or a transport failure: back off.
    Overloaded,
    /// Refused (a 4xx other than 429, a redirect): a quick answer that says
    /// nothing about load, so its round trip does not count.
    Refused,
}

/// The adaptive limit; see the module doc.
#[derive(Debug, Clone)]
pub struct Concurrency {
    limit: f64,
    ceiling: usize,
    /// Doubling per window, until the first sign of a limit.
    slow_start: bool,
    baseline: Option<Duration>,
    window: Window,
}

#[derive(Debug, Clone)]
struct Window {
    ends: Instant,
    rtt_sum: Duration,
    answers: u32,
    overloaded: bool,
    reached_limit: bool,
    budget_bound: bool,
}

impl Window {
    fn new(ends: Instant) -> Self {
        Self {
            ends,
            rtt_sum: Duration::ZERO,
            answers: 0,
            overloaded: false,
            reached_limit: false,
            budget_bound: false,
        }
    }
}

impl Concurrency {
    /// A limit of at most `ceiling` (at least 1).
    pub fn new(ceiling: usize, now: Instant) -> Self {
        let ceiling = ceiling.max(1);
        Self {
            limit: INITIAL_LIMIT.min(ceiling) as f64,
            ceiling,
            slow_start: true,
            baseline: None,
            window: Window::new(now + MIN_WINDOW),
        }
    }

    /// Requests that may be in flight now.
    pub fn limit(&self) -> usize {
        (self.limit as usize).clamp(1, self.ceiling)
    }

    /// A request is about to go with `in_flight` others already out; it
    /// `waited` for the request budget (or a 429's pause) first.
    pub fn sending(&mut self, in_flight: usize, waited: bool) {
        self.window.reached_limit |= in_flight + 1 >= self.limit();
        self.window.budget_bound |= waited;
    }

    /// A request sent `rtt` ago ended with `outcome`.
    pub fn ended(&mut self, now: Instant, rtt: Duration, outcome: Outcome) {
        match outcome {
            Outcome::Answered => {
                self.window.rtt_sum += rtt;
                self.window.answers += 1;
            }
            Outcome::Overloaded => self.window.overloaded = true,
            Outcome::Refused => {}
        }
        if now >= self.window.ends {
            self.close_window(now);
        }
    }

    fn close_window(&mut self, now: Instant) {
        let window = std::mem::replace(&mut self.window, Window::new(now));
        let mean = (window.answers > 0).then(|| window.rtt_sum / window.answers);
        let rising = match (mean, self.baseline) {
            (Some(mean), Some(base)) => mean > base.mul_f64(RISE_FACTOR) + RISE_SLACK,
            _ => false,
        };
        if window.overloaded || rising || window.budget_bound {
            self.slow_start = false;
        }
        if window.overloaded {
            self.limit = (self.limit / 2.0).max(1.0);
        } else if rising {
            self.limit = (self.limit * 0.9).max(1.0);
        } else if window.reached_limit && !window.budget_bound {
            // Doubling needs round trips seen: refusals alone say nothing of load.
            let grown = if self.slow_start && window.answers > 0 {
                self.limit.floor() * 2.0
            } else {
                self.limit.floor() + 1.0
            };
            self.limit = grown.min(self.ceiling as f64);
        }
        if let Some(mean) = mean {
            self.baseline = Some(match self.baseline {
                Some(base) if mean > base => base + (mean - base).mul_f64(BASELINE_CLIMB),
                _ => mean,
            });
        }
        let length = self.baseline.unwrap_or(MIN_WINDOW).max(MIN_WINDOW);
        self.window.ends = now + length;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(150);

    /// Runs `windows` windows of `rtt`, each with requests that find the
    /// limit reached (when `busy`), and returns the limit after each.
    fn run(
        c: &mut Concurrency,
        now: &mut Instant,
        windows: usize,
        rtt: Duration,
        busy: bool,
    ) -> Vec<usize> {
        (0..windows)
            .map(|_| {
                let in_flight = if busy { c.limit() } else { 0 };
                c.sending(in_flight.saturating_sub(1), false);
                *now += rtt.max(MIN_WINDOW);
                c.ended(*now, rtt, Outcome::Answered);
                c.limit()
            })
            .collect()
    }

    /// Leaves slow start with a window that waited for the request budget.
    fn end_slow_start(c: &mut Concurrency, now: &mut Instant) {
        let before = c.limit();
        c.sending(c.limit() - 1, true);
        *now += RTT;
        c.ended(*now, RTT, Outcome::Answered);
        assert_eq!(c.limit(), before);
    }

    #[test]
    fn the_limit_doubles_per_round_trip_in_slow_start_then_grows_by_one() {
        let mut now = Instant::now();
        let mut c = Concurrency::new(64, now);
        assert_eq!(c.limit(), INITIAL_LIMIT);
        assert_eq!(run(&mut c, &mut now, 2, RTT, true), vec![8, 16]);
        end_slow_start(&mut c, &mut now);
        let limits = run(&mut c, &mut now, 6, RTT, true);
        assert_eq!(limits, vec![17, 18, 19, 20, 21, 22]);
    }

    #[test]
    fn slow_start_doubles_only_on_answered_round_trips_and_survives_quiet_windows() {
        let mut now = Instant::now();
        let mut c = Concurrency::new(64, now);
        // Windows of refusals only: by one.
        for _ in 0..2 {
            c.sending(c.limit() - 1, false);
            now += RTT;
            c.ended(now, RTT, Outcome::Refused);
        }
        assert_eq!(c.limit(), 6);
        // Quiet windows (the limit never reached) change nothing, nor end slow start.
        assert_eq!(run(&mut c, &mut now, 2, RTT, false), vec![6, 6]);
        assert_eq!(run(&mut c, &mut now, 2, RTT, true), vec![12, 24]);
    }

    #[test]
    fn slow_start_ends_at_the_first_overload_or_rise_in_latency() {
        let mut now = Instant::now();
        let mut c = Concurrency::new(64, now);
        run(&mut c, &mut now, 2, RTT, true);
        c.sending(0, false);
        now += RTT;
        c.ended(now, RTT, Outcome::Overloaded);
        assert_eq!(c.limit(), 8);
        assert_eq!(run(&mut c, &mut now, 3, RTT, true), vec![9, 10, 11]);

        let mut c = Concurrency::new(64, now);
        run(&mut c, &mut now, 1, RTT, true);
        c.sending(c.limit() - 1, false);
        now += RTT * 2;
        c.ended(now, RTT * 2, Outcome::Answered);
        assert_eq!(c.limit(), 7, "8 trimmed by a tenth");
        // The baseline has not caught up with 300 ms round trips yet.
        assert_eq!(run(&mut c, &mut now, 2, RTT * 2, true), vec![6, 5]);
        let limits = run(&mut c, &mut now, 4, RTT, true);
        assert!(limits[3] > 5, "growing again: {limits:?}");
        assert!(limits.windows(2).all(|w| w[1] <= w[0] + 1), "by one: {limits:?}");
    }

    #[test]
    fn it_stops_at_the_ceiling_and_starts_no_higher() {
        let mut now = Instant::now();
        let mut c = Concurrency::new(6, now);
        let limits = run(&mut c, &mut now, 3, RTT, true);
        assert_eq!(limits, vec![6, 6, 6]);
        assert_eq!(Concurrency::new(2, now).limit(), 2);
        assert_eq!(Concurrency::new(0, now).limit(), 1);
    }

    #[test]
    fn it_does_not_grow_while_requests_never_reach_it_or_wait_for_the_budget() {
        let mut now = Instant::now();
        let mut c = Concurrency::new(64, now);
        assert_eq!(run(&mut c, &mut now, 4, RTT, false), vec![4, 4, 4, 4]);
        for _ in 0..4 {
            c.sending(c.limit() - 1, true);
            now += RTT;
            c.ended(now, RTT, Outcome::Answered);
        }
        assert_eq!(c.limit(), 4, "the request budget, not concurrency, is the limit");
    }

    #[test]
    fn an_overloaded_answer_halves_it_and_rising_latency_trims_it() {
        let mut now = Instant::now();
        let mut c = Concurrency::new(64, now);
        run(&mut c, &mut now, 2, RTT, true);
        assert_eq!(c.limit(), 16);
        c.sending(0, false);
        now += RTT;
        c.ended(now, RTT, Outcome::Overloaded);
        assert_eq!(c.limit(), 8);
        // Round trips twice the baseline: Customer.io queues; trim by a tenth.
        c.sending(c.limit() - 1, false);
        now += RTT * 2;
        c.ended(now, RTT * 2, Outcome::Answered);
        assert_eq!(c.limit(), 7);
        // Never below one.
        for _ in 0..10 {
            now += RTT;
            c.ended(now, RTT, Outcome::Overloaded);
        }
        assert_eq!(c.limit(), 1);
    }

    #[test]
    fn quick_refusals_do_not_lower_the_baseline() {
        let mut now = Instant::now();
        let mut c = Concurrency::new(64, now);
        run(&mut c, &mut now, 3, RTT, true);
        let before = c.limit();
        // A window of 2 ms refusals, then the usual round trips again.
        c.sending(0, false);
        now += MIN_WINDOW * 10;
        c.ended(now, Duration::from_millis(2), Outcome::Refused);
        let limits = run(&mut c, &mut now, 3, RTT, true);
        assert!(limits.iter().all(|l| *l >= before), "{before} then {limits:?}");
    }

    #[test]
    fn a_lasting_change_of_latency_becomes_the_new_baseline() {
        let mut now = Instant::now();
        let mut c = Concurrency::new(64, now);
        run(&mut c, &mut now, 3, Duration::from_millis(50), true);
        let before = c.limit();
        // Latency triples for good: trimmed at first, then learned, and
        // growth resumes.
        let limits = run(&mut c, &mut now, 80, RTT, true);
        let lowest = *limits.iter().min().unwrap();
        assert!(limits[0] < before, "{before} then {limits:?}");
        assert!(limits[79] > lowest + 5, "{limits:?}");
    }
}
