//! The HTTP side of the sink: one POST of a batch body within the request
//! budget, classified; and the region probe `check` uses.
//!
//! Every request, from the live stream, the initial copy, backfills or
//! `dlq retry`, waits for two things first:
//! - a token of the budget (`customerio.max_requests_per_second`, a GCRA
//!   limiter from `governor`), and
//! - the [`Throttle`], which after a 429 holds every request until the
//!   `Retry-After` has passed, lets one go alone and the others after its
//!   answer, and then lets the rate climb back gradually.
//!
//! Each request's round trip and outcome adjust how many may be in flight
//! ([`super::concurrency`]); the sink asks [`TrackClient::concurrency_limit`].

use super::batch::Route;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use tokio::time::Instant;

use super::concurrency::{Concurrency, Outcome};
use super::retry::{self, Verdict};
use super::SinkError;
use crate::config::CustomerioConfig;
use crate::telemetry::Counters;
use crate::track_api::RegionResponse;

/// Pause after a 429 that carries no `Retry-After`.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);

/// A client for the Track API of one workspace.
pub struct TrackClient {
    http: reqwest::Client,
    /// The request budget: every request waits for a token first.
    limiter: governor::DefaultDirectRateLimiter,
    throttle: Mutex<Throttle>,
    /// Wakes the requests waiting for the probe after a pause.
    probe_ended: tokio::sync::Notify,
    /// How many requests may be in flight, adapted to the round trips.
    concurrency: Mutex<Concurrency>,
    in_flight: AtomicUsize,
    base_url: String,
    auth: HeaderValue,
    /// Also the send loop's ([`super::send`]): its waits and the request sizes.
    pub(super) counters: Arc<Counters>,
}

impl TrackClient {
    /// A client for the configured workspace.
    pub fn new(config: &CustomerioConfig, counters: Arc<Counters>) -> Result<Self, SinkError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout())
            .connect_timeout(config.request_timeout().min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            // Redirects would replay the body with credentials to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ciosync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SinkError::Client)?;
        let concurrency = Concurrency::new(config.max_in_flight, Instant::now());
        Counters::set(&counters.concurrency_limit, concurrency.limit() as u64, None);
        let per_second = std::num::NonZeroU32::new(config.max_requests_per_second)
            .unwrap_or(std::num::NonZeroU32::MIN);
        Ok(Self {
            http,
            limiter: governor::RateLimiter::direct(governor::Quota::per_second(per_second)),
            throttle: Mutex::new(Throttle::new(per_second.get(), Instant::now())),
            probe_ended: tokio::sync::Notify::new(),
            concurrency: Mutex::new(concurrency),
            in_flight: AtomicUsize::new(0),
            base_url: config.base_url(),
            auth: basic_auth(&config.site_id, config.api_key.expose()),
            counters,
        })
    }

    /// One POST of a `/api/v2/batch` body, within the request budget,
    /// classified. A 429 slows every later request down (see [`Throttle`]).
    pub async fn post_batch(&self, body: bytes::Bytes) -> Verdict {
        self.post(Route::Batch, body).await
    }

    /// One POST of `body` to `route`'s endpoint, as [`TrackClient::post_batch`].
    /// Its round trip and outcome adjust the concurrency limit.
    pub async fn post(&self, route: Route, body: bytes::Bytes) -> Verdict {
        // Whether the budget held this request back, not how long the
        // await took (on a busy machine that is noise).
        let mut waited = self.limiter.check().is_err();
        if waited {
            self.limiter.until_ready().await;
        }
        let probe = self.admitted(&mut waited).await;
        // Counted out again however the request ends, also when its task
        // is aborted (`Sink::discard`).
        let in_flight = InFlight::enter(&self.in_flight);
        self.lock_concurrency().sending(in_flight.others, waited);
        let started = Instant::now();
        let verdict = self.send(route, body).await;
        drop(in_flight);
        if let Some(mut probe) = probe {
            // A 429 paused again already (`send`); a 5xx or no answer says
            // nothing of the limit: the next request probes again.
            probe.answered = !matches!(verdict, Verdict::Retry { .. });
        }
        let rtt = started.elapsed();
        self.counters.request_duration.observe(rtt.as_secs_f64());
        let outcome = match verdict {
            Verdict::Accepted | Verdict::PartlyRejected(_) => Outcome::Answered,
            Verdict::Retry { .. } => Outcome::Overloaded,
            _ => Outcome::Refused,
        };
        let limit = {
            let mut concurrency = self.lock_concurrency();
            concurrency.ended(Instant::now(), rtt, outcome);
            concurrency.limit()
        };
        Counters::set(&self.counters.concurrency_limit, limit as u64, None);
        verdict
    }

    /// Waits until the [`Throttle`] lets this request go (`waited` is set if
    /// it held it); the probe after a pause comes back as a guard that
    /// lets the others ask again when dropped.
    async fn admitted(&self, waited: &mut bool) -> Option<ProbeGuard<'_>> {
        loop {
            // Registered before asking, so a probe ending in between wakes it.
            let probe_ended = self.probe_ended.notified();
            tokio::pin!(probe_ended);
            probe_ended.as_mut().enable();
            let admit = self.lock_throttle().admit(Instant::now());
            match admit {
                // Built only for the probe: a guard dropped unused would
                // end a probe that never went.
                Admit::Go { probe } => {
                    return probe.then(|| ProbeGuard { client: self, answered: false })
                }
                Admit::Until(at) => tokio::time::sleep_until(at).await,
                Admit::AfterProbe => probe_ended.await,
            }
            *waited = true;
        }
    }

    /// Requests that may be in flight now (see [`Concurrency`]).
    pub fn concurrency_limit(&self) -> usize {
        self.lock_concurrency().limit()
    }

    fn lock_concurrency(&self) -> std::sync::MutexGuard<'_, Concurrency> {
        self.concurrency.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The request itself, counted by endpoint and status class, and classified.
    async fn send(&self, route: Route, body: bytes::Bytes) -> Verdict {
        let outcomes = match route {
            Route::Batch => &self.counters.requests,
            Route::AnonymousEvent => &self.counters.requests_events,
        };
        let response = self
            .http
            .post(format!("{}{}", self.base_url, route.path()))
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                outcomes.record(None);
                self.counters.health.attempted();
                return Verdict::Retry { after: None, reason: transport_reason(&e) };
            }
        };
        let status = response.status().as_u16();
        outcomes.record(Some(status));
        self.counters.health.attempted();
        let retry_after =
            response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let verdict = match response.bytes().await {
            Ok(bytes) => retry::classify(status, retry_after.as_deref(), &bytes),
            Err(e) => return Verdict::Retry { after: None, reason: transport_reason(&e) },
        };
        if status == 429 {
            Counters::add(&self.counters.rate_limited, 1);
            let pause = match &verdict {
                Verdict::Retry { after: Some(after), .. } => *after,
                _ => DEFAULT_RATE_LIMIT_PAUSE,
            };
            self.lock_throttle().rate_limited(Instant::now(), pause);
        } else if status < 300 {
            self.lock_throttle().succeeded(Instant::now());
        }
        verdict
    }

    fn lock_throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `GET /api/v1/accounts/region`: proves the credentials and the host.
    pub async fn region(&self) -> Result<RegionResponse, SinkError> {
        let response = self
            .http
            .get(format!("{}/api/v1/accounts/region", self.base_url))
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .map_err(|e| SinkError::Request(transport_reason(&e)))?;
        let status = response.status().as_u16();
        if status == 401 {
            return Err(SinkError::Unauthorized);
        }
        if status != 200 {
            return Err(SinkError::Request(format!("HTTP {status}")));
        }
        response
            .json::<RegionResponse>()
            .await
            .map_err(|_| SinkError::Request("unexpected answer body".to_owned()))
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

/// The probe after a 429's pause, in flight: when it ends, however, the
/// requests waiting for it ask the [`Throttle`] again.
struct ProbeGuard<'a> {
    client: &'a TrackClient,
    /// Customer.io answered it (a status other than 429 and 5xx).
    answered: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.client.lock_throttle().probe_ended(self.answered);
        self.client.probe_ended.notify_waiters();
    }
}

/// One request in flight, counted in the client's total while it lives.
struct InFlight<'a> {
    count: &'a AtomicUsize,
    /// Requests in flight when this one went.
    others: usize,
}

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        Self { count, others: count.fetch_add(1, Ordering::Relaxed) }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Slows requests down after a 429, on top of the fixed budget. Pure: the
/// caller passes the time.
///
/// A 429 (Customer.io documents none for the Track API, so this is the safe
/// side) holds every request until its `Retry-After` (or one second) has
/// passed and halves the allowed rate. Then one request goes alone, a
/// *probe*: the others wait for its answer, so a limit that still holds
/// costs one more 429, not one per request waiting. Each further second
/// without a 429 gives back a tenth of the budget, so the sender probes its
/// way back to full speed instead of hitting the wall again at once. 429s
/// that arrive while already paused (other requests that were in flight)
/// do not halve the rate again.
///
/// Nothing holds a slot while it waits: a request asks again when told
/// ([`Admit`]), so a 429 that arrives meanwhile holds it too.
#[derive(Debug, Clone)]
pub struct Throttle {
    /// The budget, requests per second.
    budget: f64,
    /// Share of the budget currently allowed, `MIN_SHARE..=1`.
    share: f64,
    /// No request before this.
    resume_at: Instant,
    /// The next request after the pause goes alone.
    probe_due: bool,
    /// That request is in flight; the others wait for its answer.
    probe_out: bool,
    /// Earliest time for the next request while `share < 1`.
    next_slot: Instant,
    /// Last time the share was raised (or lowered).
    last_change: Instant,
}

/// What a request that wants to go is told by the [`Throttle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go now; `probe` when it is the one request after a pause, whose end
    /// ([`Throttle::probe_ended`]) the others wait for.
    Go { probe: bool },
    /// Ask again at this time (a pause, or the reduced rate's next slot).
    Until(Instant),
    /// Ask again when the probe in flight has ended.
    AfterProbe,
}

/// The share never goes below this: a tenth of the budget.
const MIN_SHARE: f64 = 0.1;
/// Share given back per second without a 429.
const RECOVERY_PER_SECOND: f64 = 0.1;

impl Throttle {
    /// A throttle that lets the whole budget through.
    pub fn new(budget_per_second: u32, now: Instant) -> Self {
        Self {
            budget: f64::from(budget_per_second.max(1)),
            share: 1.0,
            resume_at: now,
            probe_due: false,
            probe_out: false,
            next_slot: now,
            last_change: now,
        }
    }

    /// Whether a request that wants to go at `now` may go; a `Go` takes
    /// its slot.
    pub fn admit(&mut self, now: Instant) -> Admit {
        self.recover(now);
        if now < self.resume_at {
            return Admit::Until(self.resume_at);
        }
        if self.probe_out {
            return Admit::AfterProbe;
        }
        if self.share < 1.0 {
            if now < self.next_slot {
                return Admit::Until(self.next_slot);
            }
            // From the slot, not from when this request woke for it (timers
            // fire late), unless the slot lies more than a spacing back.
            let spacing = Duration::from_secs_f64(1.0 / (self.budget * self.share));
            let from = if now < self.next_slot + spacing { self.next_slot } else { now };
            self.next_slot = from + spacing;
        }
        let probe = std::mem::take(&mut self.probe_due);
        self.probe_out = probe;
        Admit::Go { probe }
    }

    /// A 429 came back: pause for `pause`, and halve the rate unless already
    /// paused; the first request after the pause goes alone.
    pub fn rate_limited(&mut self, now: Instant, pause: Duration) {
        if now >= self.resume_at {
            self.share = (self.share / 2.0).max(MIN_SHARE);
        }
        self.resume_at = self.resume_at.max(now + pause);
        self.last_change = self.resume_at;
        self.probe_due = true;
    }

    /// A request was accepted.
    pub fn succeeded(&mut self, now: Instant) {
        self.recover(now);
    }

    /// The probe ended, however (after its answer was taken in, also when
    /// its task was aborted): the others may ask again. Without an answer
    /// (a timeout, a broken connection, an aborted task) nothing was
    /// learned of the limit: the next request probes again.
    pub fn probe_ended(&mut self, answered: bool) {
        self.probe_out = false;
        self.probe_due |= !answered;
    }

    /// The share of the budget currently allowed.
    pub fn share(&self) -> f64 {
        self.share
    }

    fn recover(&mut self, now: Instant) {
        if self.share >= 1.0 || now < self.last_change {
            return;
        }
        let seconds = now.duration_since(self.last_change).as_secs();
        if seconds > 0 {
            self.share = (self.share + RECOVERY_PER_SECOND * seconds as f64).min(1.0);
            self.last_change += Duration::from_secs(seconds);
        }
    }
}

/// `Basic base64(site_id:api_key)`, marked sensitive so it is never printed.
fn basic_auth(site_id: &str, api_key: &str) -> HeaderValue {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{site_id}:{api_key}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// A transport failure in a few words: the kind, never a body or a header.
fn transport_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else if error.is_body() || error.is_decode() {
        "connection broke while reading the answer".to_owned()
    } else {
        "request failed".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_to_the_configured_track_url() {
        let text = "[postgres]\nurl = \"postgres://ciosync@127.0.0.1/app\"\n\
                    [customerio]\nsite_id = \"s\"\napi_key = \"k\"\n\
                    track_url = \"http://127.0.0.1:9090/\"\n\
                    [[sync]]\ntable = \"public.users\"\nid_column = \"id\"\n\
                    [sync.attributes]\nemail = \"email\"\n";
        let config = crate::config::Config::from_toml(text, Vec::new()).expect("valid config");
        let client =
            TrackClient::new(&config.customerio, Arc::new(Counters::default())).expect("a client");
        assert_eq!(client.base_url(), "http://127.0.0.1:9090");
    }

    /// Only the probe after a pause holds a guard: a request admitted
    /// otherwise leaves the throttle as it found it (an unused guard built
    /// and dropped for every request made each next one a probe, one
    /// request in flight at a time: 0.13 of the budget at 150 ms).
    #[tokio::test]
    async fn a_request_admitted_without_a_pause_starts_no_probe() {
        let text = "[postgres]\nurl = \"postgres://ciosync@127.0.0.1/app\"\n\
                    [customerio]\nsite_id = \"s\"\napi_key = \"k\"\n\
                    [[sync]]\ntable = \"public.users\"\nid_column = \"id\"\n\
                    [sync.attributes]\nemail = \"email\"\n";
        let config = crate::config::Config::from_toml(text, Vec::new()).expect("valid config");
        let client =
            TrackClient::new(&config.customerio, Arc::new(Counters::default())).expect("a client");
        let mut waited = false;
        for _ in 0..3 {
            assert!(client.admitted(&mut waited).await.is_none(), "no pause: no probe");
        }
        assert!(!waited);
        assert_eq!(client.lock_throttle().admit(Instant::now()), Admit::Go { probe: false });
        // After a 429's pause, the probe's guard; dropped unanswered, the
        // next request probes again.
        client.lock_throttle().rate_limited(Instant::now(), Duration::ZERO);
        let probe = client.admitted(&mut waited).await;
        assert!(probe.is_some());
        drop(probe);
        assert!(client.admitted(&mut waited).await.is_some());
    }

    #[test]
    fn a_request_leaves_the_in_flight_count_however_it_ends() {
        let count = AtomicUsize::new(0);
        let first = InFlight::enter(&count);
        let second = InFlight::enter(&count);
        assert_eq!((first.others, second.others), (0, 1));
        // An aborted task drops its future, and with it the guard.
        drop(second);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        drop(first);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }

    const GO: Admit = Admit::Go { probe: false };
    const PROBE: Admit = Admit::Go { probe: true };

    #[test]
    fn the_full_budget_adds_no_delay() {
        let start = Instant::now();
        let mut t = Throttle::new(100, start);
        for _ in 0..10 {
            assert_eq!(t.admit(start), GO);
        }
    }

    #[test]
    fn a_429_pauses_then_halves_the_rate_then_recovers_gradually() {
        let start = Instant::now();
        let mut t = Throttle::new(100, start);
        t.rate_limited(start, Duration::from_secs(5));
        assert_eq!(t.share(), 0.5);
        // A second 429 from a request already in flight does not halve again.
        t.rate_limited(start + Duration::from_millis(10), Duration::from_secs(1));
        assert_eq!(t.share(), 0.5);
        let resume = start + Duration::from_secs(5);
        assert_eq!(t.admit(start + Duration::from_secs(1)), Admit::Until(resume));
        assert_eq!(t.admit(resume), PROBE);
        t.succeeded(resume + Duration::from_millis(5));
        t.probe_ended(true);
        // At half of 100/s, requests are 20 ms apart, counted from the
        // slots, not from when a request woke for one.
        let next = resume + Duration::from_millis(20);
        assert_eq!(t.admit(resume + Duration::from_millis(5)), Admit::Until(next));
        assert_eq!(t.admit(next + Duration::from_millis(3)), GO);
        assert_eq!(t.admit(next), Admit::Until(next + Duration::from_millis(20)));
        // After a quiet spell, from now: no burst of the slots missed.
        let idle = next + Duration::from_millis(500);
        assert_eq!(t.admit(idle), GO);
        assert_eq!(t.admit(idle), Admit::Until(idle + Duration::from_millis(20)));
        // Five quiet seconds after the pause give the whole budget back.
        let later = resume + Duration::from_secs(5);
        t.succeeded(later);
        assert!((t.share() - 1.0).abs() < 1e-9, "{}", t.share());
        assert_eq!(t.admit(later), GO);
        assert_eq!(t.admit(later), GO);
    }

    #[test]
    fn after_a_pause_one_request_goes_alone_until_it_ends() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut t = Throttle::new(1000, start);
        t.rate_limited(start, second);
        let resume = start + second;
        assert_eq!(t.admit(resume), PROBE);
        // However long the probe takes, nobody else goes meanwhile.
        for millis in [0, 1, 50, 900] {
            assert_eq!(t.admit(resume + Duration::from_millis(millis)), Admit::AfterProbe);
        }
        // Rate-limited again: the next pause, and again one probe after it.
        let answered = resume + Duration::from_millis(900);
        t.rate_limited(answered, second);
        t.probe_ended(false);
        assert_eq!(t.admit(answered), Admit::Until(answered + second));
        let resume = answered + second;
        assert_eq!(t.admit(resume), PROBE);
        // A probe with no answer (a timeout, a broken connection, its task
        // aborted) or a 5xx says nothing of the limit: the next probes again.
        t.probe_ended(false);
        let after = resume + Duration::from_millis(10);
        assert_eq!(t.admit(after), PROBE);
        assert_eq!(t.admit(after), Admit::AfterProbe);
        // One accepted lets the others go, at the reduced rate.
        t.probe_ended(true);
        let after = after + Duration::from_millis(10);
        assert_eq!(t.admit(after), GO);
        assert!(matches!(t.admit(after), Admit::Until(_)));
    }

    #[test]
    fn a_429_holds_requests_that_were_waiting_for_their_slot() {
        let start = Instant::now();
        let mut t = Throttle::new(100, start);
        t.rate_limited(start, Duration::from_millis(100));
        let resume = start + Duration::from_millis(100);
        assert_eq!(t.admit(resume), PROBE);
        t.probe_ended(true);
        // Paced at half of 100/s: the next may go 20 ms later ...
        let slot = resume + Duration::from_millis(20);
        assert_eq!(t.admit(resume), Admit::Until(slot));
        // ... but a 429 (from a request in flight) came before: it waits
        // for the new pause and its probe instead of going at its slot.
        t.rate_limited(resume + Duration::from_millis(10), Duration::from_secs(1));
        let resume = resume + Duration::from_millis(10) + Duration::from_secs(1);
        assert_eq!(t.admit(slot), Admit::Until(resume));
        assert_eq!(t.admit(resume), PROBE);
        assert_eq!(t.admit(resume), Admit::AfterProbe);
    }

    #[test]
    fn the_rate_comes_back_a_tenth_per_quiet_second() {
        let start = Instant::now();
        let mut t = Throttle::new(100, start);
        t.rate_limited(start, Duration::from_secs(1));
        let resume = start + Duration::from_secs(1);
        // Asked at odd times: only whole quiet seconds count, each once.
        for (millis, share) in
            [(1_500, 0.6), (2_500, 0.7), (2_900, 0.7), (4_500, 0.9), (9_500, 1.0)]
        {
            t.succeeded(resume + Duration::from_millis(millis));
            assert!((t.share() - share).abs() < 1e-9, "after {millis} ms: {}", t.share());
        }
    }

    #[test]
    fn the_rate_never_drops_below_a_tenth() {
        let start = Instant::now();
        let mut t = Throttle::new(10, start);
        let mut now = start;
        for _ in 0..20 {
            t.rate_limited(now, Duration::from_millis(1));
            now += Duration::from_millis(2);
        }
        assert!((t.share() - MIN_SHARE).abs() < 1e-9);
    }
}
