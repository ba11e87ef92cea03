//! The faults: `kill -9` of the daemon (restarted after a short pause, as
//! systemd would), Postgres restarted fast or immediate, and stretches of
//! Customer.io answering 5xx, 429, slowly, or not at all (connection
//! refused), each at a random moment; and once each, alone, the faults
//! that need an operator afterwards (see `operator`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ciosync_emulator::{Emulator, Faults};
use ciosync_testkit::throwaway::ThrowawayPostgres;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;
use tokio_postgres::NoTls;

use super::operator::{self, Outcome};
use crate::support::daemon::{signal, spawn_binary};
use crate::support::postgres::TestDb;
use crate::support::proxy::RefusingProxy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// `kill -9` of the daemon, restarted 0–1 s later.
    Kill9,
    /// `pg_ctl stop -m fast`, then start.
    PostgresRestartFast,
    /// `pg_ctl stop -m immediate` (a crash; recovery on start), then start.
    PostgresRestartImmediate,
    /// Customer.io answers 500 to most requests, or applies the next few
    /// and answers 500 anyway (the reply lost).
    CustomerioErrors,
    /// Customer.io answers 429, with or without Retry-After.
    CustomerioRateLimited,
    /// Customer.io answers after 0.5–3 s (past the 2 s request timeout for
    /// some).
    CustomerioSlow,
    /// Nothing listens at Customer.io's address; open connections are cut.
    CustomerioRefused,
    /// Customer.io answers 500 while one transaction inserts 800 users with
    /// about 1.9 KB of attributes each: more than the memory budget, so the
    /// daemon must stop reading the slot (backpressure) until it recovers.
    Backpressure,
    /// Customer.io refuses an identify, a delete, a merge, an event and a
    /// suppression for good (`reject_ids`, `reject_event_names`): each is
    /// dead-lettered while later commits are acknowledged, the identified
    /// and deleted customers then change again (so their letters are
    /// stale), and `dlq retry` replays the letters at the end
    /// ([`super::operator::refuse_items`]).
    ItemRefusals,
    /// A backfill's session is ended inside its chunks, between their
    /// watermarks ([`super::operator::cut_backfill`]).
    BackfillCut,
    /// One DELETE of [`super::operator::MASS_ROWS`] users trips the breaker
    /// while the workload goes on (every removal of the workload is held
    /// from then on, until approved); `kill -9` while they are held; a few
    /// are discarded, the rest approved ([`super::operator::mass_delete`]).
    MassDelete,
}

impl Fault {
    fn is_stretch(self) -> bool {
        !matches!(
            self,
            Self::Kill9
                | Self::PostgresRestartFast
                | Self::PostgresRestartImmediate
                | Self::ItemRefusals
                | Self::BackfillCut
                | Self::MassDelete
        )
    }

    /// A fault that needs Customer.io and Postgres answering throughout:
    /// any stretch ends before it.
    fn is_alone(self) -> bool {
        matches!(self, Self::ItemRefusals | Self::BackfillCut | Self::MassDelete)
    }
}

/// Faults every run injects at least (in a random order), whatever its
/// duration: the "kill -9 at ≥ 20 random points" and each other
/// kind twice.
/// The operator faults once each.
const MANDATORY: [(Fault, usize); 11] = [
    (Fault::ItemRefusals, 1),
    (Fault::MassDelete, 1),
    (Fault::BackfillCut, 1),
    (Fault::Kill9, 20),
    (Fault::PostgresRestartFast, 2),
    (Fault::PostgresRestartImmediate, 2),
    (Fault::CustomerioErrors, 2),
    (Fault::CustomerioRateLimited, 2),
    (Fault::CustomerioSlow, 2),
    (Fault::CustomerioRefused, 2),
    (Fault::Backpressure, 1),
];

/// Weights of the faults drawn once the mandatory ones are done.
const LATER: [(Fault, u32); 8] = [
    (Fault::Kill9, 40),
    (Fault::PostgresRestartFast, 8),
    (Fault::PostgresRestartImmediate, 8),
    (Fault::CustomerioErrors, 11),
    (Fault::CustomerioRateLimited, 11),
    (Fault::CustomerioSlow, 11),
    (Fault::CustomerioRefused, 11),
    (Fault::Backpressure, 2),
];

/// The daemon as a child process, restarted after each kill.
pub struct Daemon {
    config: PathBuf,
    logs: PathBuf,
    child: Option<Child>,
    /// Processes started so far (the current one's log is `<starts>.log`).
    pub starts: u32,
    /// Exits nobody asked for, with the log that holds the reason.
    pub unexpected_exits: Vec<(ExitStatus, PathBuf)>,
    /// The running process's peak RSS as sampled, the highest of any
    /// process (shared, so the soak samples it while faults run).
    pub rss: Rss,
}

/// The daemon's resident memory, read from `/proc/<pid>/status` (`VmHWM`,
/// the process's own peak) whenever sampled: before each kill and every
/// half second, so a process's last half second can be missed.
#[derive(Debug, Clone, Default)]
pub struct Rss {
    pid: Arc<AtomicU32>,
    peak: Arc<AtomicU64>,
}

impl Rss {
    /// Reads the running process's peak so far; nothing while none runs.
    pub fn sample(&self) {
        let pid = self.pid.load(Ordering::Relaxed);
        if pid == 0 {
            return;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        if let Some(kib) = kib {
            self.peak.fetch_max(kib * 1024, Ordering::Relaxed);
        }
    }

    /// The highest peak RSS seen, bytes.
    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Daemon {
    pub fn start(config: &Path, logs: &Path) -> Self {
        let mut daemon = Self {
            config: config.to_owned(),
            logs: logs.to_owned(),
            child: None,
            starts: 0,
            unexpected_exits: Vec::new(),
            rss: Rss::default(),
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = self.logs.join(format!("{}.log", self.starts));
        let child = spawn_binary(&self.config, &log);
        self.rss.pid.store(child.id(), Ordering::Relaxed);
        self.child = Some(child);
    }

    fn log(&self) -> PathBuf {
        self.logs.join(format!("{}.log", self.starts))
    }

    /// Restarts it if it exited by itself, recording that.
    pub fn ensure_running(&mut self) {
        let child = self.child.as_mut().expect("a daemon process");
        if let Some(status) = child.try_wait().expect("poll the daemon") {
            self.rss.pid.store(0, Ordering::Relaxed);
            self.unexpected_exits.push((status, self.log()));
            self.spawn();
        }
    }

    /// `kill -9`, and a new process at once.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    fn kill9(&mut self) {
        self.ensure_running();
        self.rss.sample();
        let mut child = self.child.take().expect("a daemon process");
        self.rss.pid.store(0, Ordering::Relaxed);
        signal(&child, "KILL");
        child.wait().expect("reap the daemon");
    }

    /// SIGTERM, and its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.rss.sample();
        let mut child = self.child.take().expect("a daemon process");
        self.rss.pid.store(0, Ordering::Relaxed);
        signal(&child, "TERM");
        child.wait().expect("reap the daemon")
    }

    /// Every log file so far.
    pub fn logs(&self) -> Vec<PathBuf> {
        (1..=self.starts).map(|n| self.logs.join(format!("{n}.log"))).collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the injector needs to reach.
pub struct Targets<'a> {
    pub daemon: &'a mut Daemon,
    pub postgres: &'a ThrowawayPostgres,
    pub emulator: &'a Emulator,
    pub proxy: &'a RefusingProxy,
    /// The database, for the writes of [`Fault::Backpressure`].
    pub db_url: &'a str,
    /// Where the daemon serves `/metrics`.
    pub metrics_port: u16,
    /// The database (reconnected by each operator fault).
    pub db: &'a TestDb,
    /// The daemon's config, for `ciosync dlq`, `deletes` and `backfill`.
    pub config: &'a Path,
    /// Ids and event names Customer.io refuses for good until the end of
    /// the run, whatever the other faults set.
    pub refused: Mutex<(Vec<String>, Vec<String>)>,
}

impl Targets<'_> {
    /// Sets the emulator's faults, with the lasting refusals added.
    pub fn set_faults(&self, faults: Faults) {
        let refused = self.refused.lock().expect("not poisoned");
        self.emulator.set_faults(Faults {
            reject_ids: refused.0.clone(),
            reject_event_names: refused.1.clone(),
            ..faults
        });
    }

    /// Refuses these ids and this event name from now on.
    pub fn refuse(&self, ids: &[i64], event: &str) {
        {
            let mut refused = self.refused.lock().expect("not poisoned");
            refused.0.extend(ids.iter().map(i64::to_string));
            refused.1.push(event.to_owned());
        }
        self.set_faults(self.emulator.faults());
    }

    /// Accepts these ids again.
    pub fn unrefuse(&self, ids: &[i64]) {
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        self.refused.lock().expect("not poisoned").0.retain(|id| !ids.contains(id));
        self.set_faults(self.emulator.faults());
    }

    /// Lifts every lasting refusal (the causes fixed, at the end of the run).
    pub fn lift_refusals(&self) {
        *self.refused.lock().expect("not poisoned") = Default::default();
        self.set_faults(self.emulator.faults());
    }
}

/// What the injector did.
#[derive(Debug, Default)]
pub struct Injected {
    /// Faults by kind.
    pub faults: BTreeMap<Fault, u32>,
    /// Fast shutdowns still waiting after [`FAST_STOP_WAIT_SECS`], then
    /// stopped immediate.
    pub fast_stops_escalated: u32,
    /// [`Fault::Backpressure`] stretches in which `/metrics` showed the
    /// memory budget used up.
    pub budget_filled: u32,
    /// What the operator faults left for the end of the run.
    pub operator: Outcome,
    /// How the operator faults failed, if they did.
    pub problems: Vec<String>,
    /// How long Customer.io answered 429s ([`Fault::CustomerioRateLimited`]
    /// stretches), for the 429s per second of them in the summary.
    pub rate_limited_for: Duration,
}

/// Time since a rate-limit stretch began, if one was running (it ends now).
fn rate_limit_ended(since: &mut Option<Instant>) -> Duration {
    since.take().map_or(Duration::ZERO, |began| began.elapsed())
}

/// Injects faults at random moments until `duration` has passed and every
/// mandatory fault was injected. Every fault has ended when it returns, and
/// the daemon runs.
pub async fn inject(targets: Targets<'_>, rng: &mut StdRng, duration: Duration) -> Injected {
    let deadline = Instant::now() + duration;
    let mut mandatory: Vec<Fault> =
        MANDATORY.iter().flat_map(|&(fault, n)| std::iter::repeat_n(fault, n)).collect();
    mandatory.shuffle(rng);
    // Taken from the end: the refusals come before the mass delete, whose
    // breaker holds every removal for a while (a refused delete would be
    // held instead of refused).
    let at = |fault| mandatory.iter().position(|&f| f == fault).expect("mandatory");
    let (refusals, mass) = (at(Fault::ItemRefusals), at(Fault::MassDelete));
    if refusals < mass {
        mandatory.swap(refusals, mass);
    }
    let mut report = Injected::default();
    let mut stretch_ends: Option<Instant> = None;
    let mut rate_limited_since: Option<Instant> = None;
    while Instant::now() < deadline || !mandatory.is_empty() {
        let next =
            Instant::now() + rng.random_range(Duration::from_millis(300)..Duration::from_secs(3));
        if let Some(ends) = stretch_ends.filter(|ends| *ends <= next) {
            tokio::time::sleep_until(ends).await;
            end_stretch(&targets).await;
            report.rate_limited_for += rate_limit_ended(&mut rate_limited_since);
            stretch_ends = None;
        }
        tokio::time::sleep_until(next).await;
        targets.daemon.ensure_running();

        let fault = mandatory.pop().unwrap_or_else(|| super::weighted(rng, &LATER));
        if (fault.is_stretch() || fault.is_alone()) && stretch_ends.take().is_some() {
            // One stretch at a time: the new one replaces the old.
            end_stretch(&targets).await;
            report.rate_limited_for += rate_limit_ended(&mut rate_limited_since);
        }
        match fault {
            Fault::Kill9 => {
                targets.daemon.kill9();
                tokio::time::sleep(rng.random_range(Duration::ZERO..Duration::from_secs(1))).await;
                targets.daemon.spawn();
            }
            Fault::PostgresRestartFast => {
                if restart_postgres(targets.postgres, "fast") {
                    report.fast_stops_escalated += 1;
                }
            }
            Fault::PostgresRestartImmediate => {
                restart_postgres(targets.postgres, "immediate");
            }
            Fault::CustomerioErrors => {
                targets.set_faults(if rng.random_bool(0.5) {
                    Faults { error_rate: rng.random_range(0.5..=1.0), ..Faults::default() }
                } else {
                    Faults {
                        fail_next: rng.random_range(1..=8),
                        fail_after_apply: true,
                        ..Faults::default()
                    }
                });
            }
            Fault::CustomerioRateLimited => {
                rate_limited_since = Some(Instant::now());
                targets.set_faults(Faults {
                    rate_limit_rate: rng.random_range(0.5..=1.0),
                    retry_after_secs: rng.random_bool(0.5).then_some(1),
                    ..Faults::default()
                });
            }
            Fault::CustomerioSlow => {
                targets.set_faults(Faults {
                    latency_ms: rng.random_range(500..=3000),
                    ..Faults::default()
                });
            }
            Fault::CustomerioRefused => targets.proxy.refuse().await,
            Fault::ItemRefusals | Fault::BackfillCut | Fault::MassDelete => {
                let n = report.faults.get(&fault).copied().unwrap_or(0);
                let outcome = &mut report.operator;
                let done = match fault {
                    Fault::ItemRefusals => operator::refuse_items(&targets, n, outcome).await,
                    Fault::MassDelete => {
                        let (db, config) = (targets.db, targets.config);
                        operator::mass_delete(db, config, targets.daemon, outcome).await
                    }
                    _ => operator::cut_backfill(&targets, outcome).await,
                };
                if let Err(problem) = done {
                    report.problems.push(format!("{fault:?}: {problem}"));
                }
            }
            Fault::Backpressure => {
                targets.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
                let burst = report.faults.get(&Fault::Backpressure).copied().unwrap_or(0);
                if fill_the_budget(&targets, burst).await {
                    report.budget_filled += 1;
                }
            }
        }
        if fault.is_stretch() {
            stretch_ends = Some(
                Instant::now() + rng.random_range(Duration::from_secs(1)..Duration::from_secs(5)),
            );
        }
        *report.faults.entry(fault).or_default() += 1;
    }
    if let Some(ends) = stretch_ends {
        tokio::time::sleep_until(ends).await;
        end_stretch(&targets).await;
        report.rate_limited_for += rate_limit_ended(&mut rate_limited_since);
    }
    // The causes of the refusals fixed: `dlq retry` may replay them now.
    targets.lift_refusals();
    targets.daemon.ensure_running();
    report
}

/// Writes more than the memory budget while Customer.io fails, and waits
/// until the daemon reports the budget used up; false when it never did.
/// The write is tried again when it fails (Postgres may be back from the
/// previous fault's restart only now), and the daemon gets two minutes, a
/// new burst every 30 s: after a restart of Postgres it may still be
/// waiting out its reconnect backoff (up to 30 s) before it reads the slot
/// again, and on a loaded machine a burst can be read before the budget is
/// full (a full suite run once missed it with one burst in a minute).
async fn fill_the_budget(targets: &Targets<'_>, burst: u32) -> bool {
    // Under a loaded machine one burst may be read while the daemon is still
    // restarting or catching up; another burst follows after 30 s, for at
    // most two minutes in all.
    let deadline = Instant::now() + Duration::from_secs(120);
    for round in 0..10 {
        // New users of their own id range (the workload never touches them),
        // each with two values just under Customer.io's 1,000-byte limit:
        // about 1.6 MB of identifies against a 1 MiB budget.
        let first = BURST_IDS + i64::from(burst) * 10_000 + round * 1_000;
        let insert = format!(
            "INSERT INTO users (id, email, first_name, plan, bio) \
             SELECT g, 'burst' || g || '@x.io', repeat('f', 950), 'free', repeat(md5(g::text), 29) \
             FROM generate_series({first}, {first} + 799) g ON CONFLICT (id) DO NOTHING"
        );
        while !insert_once(targets.db_url, &insert).await {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let next_burst = (Instant::now() + Duration::from_secs(30)).min(deadline);
        while Instant::now() < next_burst {
            if super::pending_bytes(targets.metrics_port)
                .await
                .is_some_and(|p| p >= super::MEMORY_BUDGET)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
    false
}

/// Runs `statement` on a connection of its own; false when it failed.
async fn insert_once(db_url: &str, statement: &str) -> bool {
    let Ok((client, connection)) = tokio_postgres::connect(db_url, NoTls).await else {
        return false;
    };
    tokio::spawn(connection);
    client.batch_execute(statement).await.is_ok()
}

async fn end_stretch(targets: &Targets<'_>) {
    targets.set_faults(Faults::default());
    targets.proxy.accept().await;
}

/// Stops Postgres with `mode` and starts it again. Blocks this worker
/// thread (the runtime is multi-threaded, so the writer and the emulator
/// keep running meanwhile).
///
/// A fast shutdown waits for every walsender to see its client confirm all
/// WAL sent; a daemon that cannot deliver (Customer.io failing) confirms
/// nothing, so after [`FAST_STOP_WAIT_SECS`] this gives up and stops
/// immediate, as an operator would. Returns whether that happened.
fn restart_postgres(postgres: &ThrowawayPostgres, mode: &str) -> bool {
    tokio::task::block_in_place(|| {
        let mut escalated = false;
        if postgres.stop_within(mode, FAST_STOP_WAIT_SECS).is_err() {
            assert_eq!(mode, "fast", "pg_ctl stop -m immediate failed");
            postgres.stop("immediate").expect("pg_ctl stop -m immediate");
            escalated = true;
        }
        postgres.restart().expect("pg_ctl start");
        escalated
    })
}

/// The first user id [`Fault::Backpressure`] inserts (10,000 a burst).
const BURST_IDS: i64 = 1_000_000_000;

/// How long a fast shutdown may wait for the walsender.
pub const FAST_STOP_WAIT_SECS: u32 = 20;
