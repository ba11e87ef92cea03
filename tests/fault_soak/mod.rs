//! The fault soak: an application writes a mixed workload (inserts, updates
//! of synced and unsynced columns, deletes, soft deletes and restores, rows
//! leaving and entering the filter, id changes, event rows) while the
//! daemon is killed with SIGKILL at 20+ random moments, Postgres is
//! restarted fast and immediate, and Customer.io answers 5xx, 429, slowly
//! or not at all for stretches, once while a burst of writes must fill the
//! memory budget (asserted). Once each, faults that need an operator
//! (`operator`): operations of every kind refused for good, a backfill cut
//! between its watermarks, a mass DELETE through the breaker during the
//! writes with a `kill -9` while it is held. Then the operator replays
//! the dead letters (`ciosync dlq retry`), discards a few held removals
//! and approves the rest; then every customer in Customer.io (the
//! emulator) equals its row, or is absent when the row is deleted,
//! soft-deleted or filtered out (or present as it was when its held
//! removal was discarded); every event row produced exactly one event, and
//! every committed change of plan one `plan_changed` event
//! (`[[sync.events]]`, against a trigger-kept log); the slot is
//! acknowledged to the end; no dead letter or held removal is left; the
//! backfill is done. The summary prints the daemon's peak RSS beside the
//! memory budget.
//!
//! In CI it runs one to two minutes (a minute of faults, then
//! convergence). `scripts/soak.sh` runs it longer:
//! `CIOSYNC_SOAK_SECS` sets the duration and `CIOSYNC_SOAK_SEED` the random
//! seed (printed with the summary, to replay the same schedule of faults
//! and writes; the timing still differs).

mod faults;
mod operator;
mod verify;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use ciosync_testkit::throwaway::ThrowawayPostgres;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::daemon::{config_file, run_binary};
use crate::support::memory::mib;
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::proxy::{bind_below_ephemeral, RefusingProxy};
use crate::support::{emulator, leaks};
use faults::{Daemon, Injected, Targets, FAST_STOP_WAIT_SECS};
use verify::Calls;

/// Seconds of faults and writes in CI.
const CI_SECS: u64 = 60;
/// How long the daemon may take to converge after the last fault.
const CONVERGE_WITHIN: Duration = Duration::from_secs(300);

const SOAK_CONFIG: &str = r#"
score = "score"

[[sync.events]]
name = "plan_changed"
when_changed = "plan"

[[events]]
table = "public.soak_events"
customer_id_column = "user_id"
name_column = "kind"
data_column = "payload"
timestamp_column = "created_at"

# A second person table, suppressed on delete. (Its id_column is written
# with single quotes: the soak adds the users table's filter after the
# other spelling.)
[[sync]]
table = "public.soak_members"
id_column = 'id'
delete_action = "suppress"

[sync.attributes]
email = "email"

[pipeline]
# The smallest memory budget (MEMORY_BUDGET), so a stretch of failures
# fills it and the daemon stops reading the slot (backpressure) at times.
max_pending_bytes = 1048576

[delete_guard]
# The workload removes about 25 customers a second (750 in a window); the
# mass DELETE of 3,000 during the writes trips the breaker, which then holds
# the workload's removals too until they are approved.
max_deletes = 2000
window_secs = 30
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_under_faults_converges() {
    let secs = env_u64("CIOSYNC_SOAK_SECS").unwrap_or(CI_SECS);
    let seed = env_u64("CIOSYNC_SOAK_SEED").unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);

    // A cluster of its own: the soak restarts it.
    let postgres = tokio::task::spawn_blocking(ThrowawayPostgres::start).await.unwrap().unwrap();
    let db = TestDb::on(&postgres, "soak").await;
    db.exec(USERS_TABLE).await;
    db.exec(workload::SCHEMA).await;
    let first_id = workload::populate(&db.client, 300).await;

    let emulator = emulator::start().await;
    let proxy = RefusingProxy::start(emulator.addr()).await;
    // One metrics port for every daemon process, read as the run goes.
    let metrics_port = bind_below_ephemeral().await.local_addr().unwrap().port();
    let config = db
        .config(&proxy.url(), SOAK_CONFIG)
        .replace(
            "id_column = \"id\"\n",
            &format!(
                "id_column = \"id\"\nfilter = \"plan <> '{}'\"\nsoft_delete_column = \"deleted_at\"\n",
                workload::FILTERED_PLAN
            ),
        )
        .replace("linger_ms = 0", "linger_ms = 20\nrequest_timeout_secs = 2")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{metrics_port}\""))
        .replace("status_interval_ms = 200", "status_interval_ms = 200\nheartbeat_interval_secs = 2");
    let config = config_file(&config);
    let logs = KeptOnFailure(Some(tempfile::tempdir().unwrap()));
    let mut daemon = Daemon::start(config.path(), logs.path());
    let rss = daemon.rss.clone();

    // Transactions committed before the slot exists are the initial copy's
    // (which copies users, not events): write only once it does.
    wait_for_slot(&db).await;

    let started = Instant::now();
    let stop_writing = CancellationToken::new();
    let writer = tokio::spawn(workload::run(
        db.url.clone(),
        seed,
        first_id,
        Duration::from_millis(20),
        stop_writing.clone(),
    ));
    // The emulator keeps only its newest requests: read them as they come.
    let mut calls = Calls::default();
    let mut memory = Memory::default();
    let injected = {
        let targets = Targets {
            daemon: &mut daemon,
            postgres: &postgres,
            emulator: &emulator,
            proxy: &proxy,
            db_url: &db.url,
            metrics_port,
            db: &db,
            config: config.path(),
            refused: Default::default(),
        };
        let injecting = faults::inject(targets, &mut rng, Duration::from_secs(secs));
        tokio::pin!(injecting);
        loop {
            tokio::select! {
                injected = &mut injecting => break injected,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    calls.collect(&emulator);
                    memory.sample(metrics_port).await;
                    rss.sample();
                }
            }
        }
    };
    stop_writing.cancel();
    let written = writer.await.expect("the writer does not panic");
    let last_fault = Instant::now();
    let faulted_for = last_fault - started;

    // The database's final state, and the WAL position after the last write.
    // The restarts ended the first connection.
    let db = db.reconnected().await;
    let client = &db.client;
    let mut expected = verify::expected_customers(client).await;
    // People whose held removal the operator discarded stay.
    expected.extend(injected.operator.kept.clone());
    let event_rows = verify::event_rows(client).await;
    let plan_changes = verify::plan_changes(client).await;
    let events_expected = event_rows.len() + plan_changes.values().sum::<u64>() as usize;
    let end_lsn = db.current_lsn().await;

    // The operator's part: replay the dead letters (the refusals were
    // lifted), approve what the breaker still holds, as often as needed.
    let mut operator = Operator::default();
    let mut converged = None;
    while last_fault.elapsed() < CONVERGE_WITHIN {
        calls.collect(&emulator);
        memory.sample(metrics_port).await;
        rss.sample();
        daemon.ensure_running();
        let settled = operator.act(&db, config.path(), &emulator, &injected.operator).await;
        let customers_match = verify::actual_customers(&emulator) == expected;
        let events_arrived = emulator.view(|v| v.world().seen_event_ids().len()) == events_expected;
        if settled
            && customers_match
            && events_arrived
            && db.confirmed_flush(&db.name).await >= end_lsn
        {
            converged = Some(last_fault.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = daemon.terminate();
    calls.collect(&emulator);

    // Everything below is checked even when it did not converge, so a
    // failure names every difference at once.
    let mut problems = Vec::new();
    if converged.is_none() {
        problems
            .push(format!("not converged {} s after the last fault", CONVERGE_WITHIN.as_secs()));
    }
    problems.extend(verify::customer_differences(&expected, &verify::actual_customers(&emulator)));
    let accepted = emulator.view(|v| v.world().seen_event_ids().iter().cloned().collect());
    problems.extend(verify::event_differences(&event_rows, &plan_changes, &calls, &accepted));
    if !stopped.success() {
        problems.push(format!("SIGTERM ended the daemon with {stopped}"));
    }
    let pending = db.pending_in_slot().await;
    if pending != 0 {
        problems.push(format!("{pending} changes left unacknowledged in the slot"));
    }
    problems.extend(injected.problems.iter().cloned());
    problems.extend(operator.problems.iter().cloned());
    let letters = operator::letters(&db).await;
    if !letters.is_empty() {
        problems.push(format!("{} rows in ciosync.dead_letters: {letters:?}", letters.len()));
    }
    if operator.retries == 0 {
        problems.push("`dlq retry` never ran: no operation was dead-lettered".to_owned());
    }
    let holds = operator::holds(&db).await;
    for state in ["pending", "held"] {
        if let Some(n) = holds.get(state) {
            problems.push(format!("{n} rows {state} in ciosync.held_deletes"));
        }
    }
    let refreshes = operator::refreshes(&db).await;
    if refreshes > 0 {
        problems.push(format!("{refreshes} customers left in ciosync.held_refreshes"));
    }
    let discarded = operator::discarded(&db).await;
    let kept: std::collections::BTreeSet<String> = injected.operator.kept.keys().cloned().collect();
    if discarded != kept || kept.is_empty() {
        problems.push(format!(
            "{} held removals discarded, {} were chosen (the rest must be approved)",
            discarded.len(),
            kept.len()
        ));
    }
    let backfills = backfills(client).await;
    if backfills.keys().any(|state| state != "done") || backfills.is_empty() {
        problems.push(format!("backfills by state: {backfills:?}, all should be done"));
    }
    if injected.operator.backfill_cuts == 0 {
        problems.push("no backfill chunk was cut between its watermarks".to_owned());
    }
    let backpressure = injected.faults.get(&faults::Fault::Backpressure).copied().unwrap_or(0);
    if injected.budget_filled == 0 {
        problems.push(format!(
            "the memory budget never filled in {backpressure} backpressure stretch(es): \
             backpressure was not exercised"
        ));
    }
    if injected.fast_stops_escalated > 0 {
        problems.push(format!(
            "{} fast shutdown(s) waited {FAST_STOP_WAIT_SECS} s for the daemon's walsender",
            injected.fast_stops_escalated
        ));
    }
    for (status, log) in &daemon.unexpected_exits {
        problems.push(format!("the daemon exited by itself ({status}); see {}", log.display()));
    }
    for log in daemon.logs() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("panicked") {
            problems.push(format!("a panic in {}", log.display()));
        }
        if let Some(what) = leaks::leak_in(&text) {
            problems.push(format!("{} carries {what}", log.display()));
        }
    }

    let failures = emulator.view(|v| {
        let mut by_reason = BTreeMap::<String, u64>::new();
        for failure in v.failures() {
            *by_reason.entry(format!("{}: {}", failure.operation, failure.reason)).or_default() +=
                1;
        }
        by_reason
    });
    let duplicate_events = emulator.view(|v| v.world().duplicate_events());
    let summary = Summary {
        seed,
        faulted_for,
        injected: &injected,
        restarts: daemon.starts,
        written: &written,
        users: expected.len(),
        event_rows: event_rows.len(),
        plan_changes: plan_changes.values().sum(),
        calls: &calls,
        memory: &memory,
        rss: rss.peak_bytes(),
        operator: &operator,
        outcome: &injected.operator,
        holds: &holds,
        duplicate_events,
        failures: &failures,
        converged,
    };
    println!("{summary}");
    leaks::assert_none();
    assert!(
        problems.is_empty(),
        "the soak found {} problem(s):\n  {}\n{summary}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The daemon's log directory, kept (and named) when the test fails
/// anywhere, removed otherwise.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("until dropped").path()
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take().filter(|_| std::thread::panicking()) {
            eprintln!("the daemon's logs are kept in {}", dir.keep().display());
        }
    }
}

/// Waits until the daemon's slot exists and is consistent (it has a
/// confirmed position); the initial copy may still be running.
async fn wait_for_slot(db: &TestDb) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.confirmed_flush(&db.name).await == 0 {
        assert!(Instant::now() < deadline, "the daemon never created its slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The running daemon's `/metrics`, scanned for leaks; `None` while it is down.
async fn metrics_text(port: u16) -> Option<String> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::new();
    let response = client.get(&url).timeout(Duration::from_secs(1)).send().await.ok()?;
    let text = response.text().await.ok()?;
    leaks::scan("the soak daemon's /metrics", &text);
    Some(text)
}

fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The running daemon's `ciosync_pending_bytes`.
async fn pending_bytes(port: u16) -> Option<u64> {
    gauge(&metrics_text(port).await?, "ciosync_pending_bytes")
}

/// The daemon's `pipeline.max_pending_bytes` in the soak.
const MEMORY_BUDGET: u64 = 1_048_576;

/// The daemon's memory for waiting operations, sampled from `/metrics`.
#[derive(Debug, Default)]
struct Memory {
    samples: u64,
    /// Samples with the budget used up: the daemon was not reading the slot.
    full: u64,
    /// The highest `ciosync_pending_peak_bytes` of any process.
    peak: u64,
}

impl Memory {
    /// Reads the running daemon's gauges; nothing while it is down.
    async fn sample(&mut self, port: u16) {
        let Some(text) = metrics_text(port).await else { return };
        let (Some(pending), Some(peak)) =
            (gauge(&text, "ciosync_pending_bytes"), gauge(&text, "ciosync_pending_peak_bytes"))
        else {
            return;
        };
        self.samples += 1;
        self.full += u64::from(pending >= MEMORY_BUDGET);
        self.peak = self.peak.max(peak);
    }
}

/// One of `choices`, drawn with the chances their weights give.
fn weighted<T: Copy>(rng: &mut StdRng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, weight)| weight).sum();
    let mut roll = rng.random_range(0..total);
    for &(choice, weight) in choices {
        if roll < weight {
            return choice;
        }
        roll -= weight;
    }
    unreachable!("the roll is below the total weight")
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.parse().unwrap_or_else(|_| panic!("{name} must be a whole number, got {value:?}")))
}

/// The backfills by state.
async fn backfills(client: &tokio_postgres::Client) -> BTreeMap<String, i64> {
    client
        .query("SELECT state, count(*) FROM ciosync.backfills GROUP BY state", &[])
        .await
        .expect("read ciosync.backfills")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The operator after the faults: `ciosync dlq retry --all` while dead
/// letters wait, `ciosync deletes approve --all` while removals are held,
/// each at most every two seconds; the backfill must finish by itself.
#[derive(Debug, Default)]
struct Operator {
    last: Option<Instant>,
    /// Runs of `dlq retry`, and the summary line of each.
    retries: u32,
    retried: Vec<String>,
    /// Runs of `deletes approve`, and the output of each.
    approvals: Vec<String>,
    problems: Vec<String>,
}

impl Operator {
    /// Acts if something waits; true once nothing does (no dead letter, no
    /// held or pending removal, every backfill done).
    async fn act(
        &mut self,
        db: &TestDb,
        config: &std::path::Path,
        emulator: &ciosync_emulator::Emulator,
        outcome: &operator::Outcome,
    ) -> bool {
        let letters = !operator::letters(db).await.is_empty();
        let holds = operator::holds(db).await;
        let held = holds.contains_key("held") || holds.contains_key("pending");
        // Customers to identify again once nothing is held (`deletes approve`).
        let refreshes = operator::refreshes(db).await > 0;
        let backfills = backfills(&db.client).await;
        let backfilling = backfills.keys().any(|state| state != "done" && state != "failed");
        if !letters && !held && !refreshes {
            return !backfilling;
        }
        if self.last.is_some_and(|last| last.elapsed() < Duration::from_secs(2)) {
            return false;
        }
        self.last = Some(Instant::now());
        if letters {
            let out = run_binary(&["dlq", "retry", "--all"], config).await;
            self.retries += 1;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            self.retried.push(stdout.lines().next().unwrap_or_default().to_owned());
            if let Some((customer, plan)) = &outcome.stale_identify {
                // The requests since the last collection: the retry's among them.
                let stale = emulator.requests().iter().filter_map(|r| r.body.clone()).any(|b| {
                    b["batch"].as_array().is_some_and(|items| {
                        items.iter().any(|i| {
                            i["action"] == "identify"
                                && i["identifiers"]["id"] == customer.as_str()
                                && i["attributes"]["plan"] == plan.as_str()
                        })
                    })
                });
                if stale {
                    self.problems.push(format!(
                        "dlq retry sent customer {customer}'s refused (older) values"
                    ));
                }
            }
            if !out.status.success() {
                self.problems.push(format!(
                    "dlq retry failed: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        if holds.contains_key("held") || (refreshes && !held) {
            let out = run_binary(&["deletes", "approve", "--all"], config).await;
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !out.status.success() {
                self.problems.push(format!("deletes approve failed: {stdout}"));
            }
            self.approvals.push(stdout);
        }
        false
    }
}

struct Summary<'a> {
    seed: u64,
    faulted_for: Duration,
    injected: &'a Injected,
    restarts: u32,
    written: &'a workload::Written,
    users: usize,
    event_rows: usize,
    plan_changes: u64,
    calls: &'a Calls,
    memory: &'a Memory,
    /// The daemon's peak RSS, the highest of any of its processes.
    rss: u64,
    operator: &'a Operator,
    outcome: &'a operator::Outcome,
    holds: &'a BTreeMap<String, i64>,
    duplicate_events: usize,
    failures: &'a BTreeMap<String, u64>,
    converged: Option<Duration>,
}

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "fault soak summary (seed {})", self.seed);
        let _ = writeln!(out, "  faults and writes for {:.0} s", self.faulted_for.as_secs_f64());
        let total: u32 = self.injected.faults.values().sum();
        let _ = writeln!(out, "  faults injected: {total}");
        for (fault, n) in &self.injected.faults {
            let _ = writeln!(out, "    {fault:?}: {n}");
        }
        let _ = writeln!(
            out,
            "  fast shutdowns that waited {FAST_STOP_WAIT_SECS} s for the walsender, then went immediate: {}",
            self.injected.fast_stops_escalated
        );
        let _ = writeln!(out, "  daemon processes started: {}", self.restarts);
        let w = self.written;
        let _ = writeln!(
            out,
            "  transactions committed: {} (failed or cut by a restart: {}; writer reconnects: {})",
            w.committed, w.failed, w.reconnects
        );
        let statements: u64 = w.statements.values().sum();
        let _ = writeln!(out, "  statements committed: {statements}");
        for (kind, n) in &w.statements {
            let _ = writeln!(out, "    {kind}: {n}");
        }
        let _ = writeln!(
            out,
            "  at the end: {} synced customers, {} event rows, {} plan changes ([[sync.events]])",
            self.users, self.event_rows, self.plan_changes
        );
        let _ = writeln!(out, "  Track API calls made: {}", self.calls.requests());
        for (status, n) in &self.calls.by_status {
            let _ = writeln!(out, "    HTTP {status}: {n}");
        }
        let limited = self.injected.rate_limited_for.as_secs_f64();
        let too_many = self.calls.by_status.get(&429).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "  429s: {too_many} in {limited:.1} s of rate-limit stretches ({:.1} per second of them)",
            too_many as f64 / limited.max(1e-9)
        );
        let _ = writeln!(out, "  batch items sent (repeats included):");
        for (action, n) in &self.calls.items {
            let _ = writeln!(out, "    {action}: {n}");
        }
        let _ = writeln!(
            out,
            "  duplicates absorbed: {} events dropped by id, {} person items applied again",
            self.duplicate_events, self.calls.repeated_items
        );
        let m = self.memory;
        let _ = writeln!(
            out,
            "  memory budget ({} bytes): highest pending {} bytes; at the limit (reading paused) in {} of {} samples",
            MEMORY_BUDGET, m.peak, m.full, m.samples
        );
        let _ = writeln!(
            out,
            "  peak RSS of the daemon: {} (memory budget: max_pending_bytes {} + the breaker's \
             eighth {}; the rest is the program itself)",
            mib(self.rss),
            mib(MEMORY_BUDGET),
            mib(MEMORY_BUDGET / 8)
        );
        let o = self.outcome;
        let _ = writeln!(out, "  dead-lettered for good: {}", o.letters.len());
        for letter in &o.letters {
            let _ = writeln!(out, "    {letter}");
        }
        let _ = writeln!(out, "  dlq retry runs: {}", self.operator.retries);
        for line in &self.operator.retried {
            let _ = writeln!(out, "    {line}");
        }
        let approvals = o.approved.iter().chain(&self.operator.approvals);
        let _ = writeln!(
            out,
            "  held removals: {} discarded by choice, {:?} at the end; approvals:",
            o.kept.len(),
            self.holds
        );
        for line in approvals.flat_map(|text| text.lines()) {
            let _ = writeln!(out, "    {line}");
        }
        let _ = writeln!(
            out,
            "  backfill sessions ended between a chunk's watermarks: {}",
            o.backfill_cuts
        );
        let failures: u64 = self.failures.values().sum();
        let _ = writeln!(out, "  calls Customer.io accepted but did not apply: {failures}");
        for (reason, n) in self.failures {
            let _ = writeln!(out, "    {reason}: {n}");
        }
        match self.converged {
            Some(took) => {
                let _ =
                    writeln!(out, "  converged {:.1} s after the last fault", took.as_secs_f64());
            }
            None => {
                let _ = writeln!(out, "  did NOT converge");
            }
        }
        f.write_str(&out)
    }
}
